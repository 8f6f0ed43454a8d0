//! Binance REST replies: the first byte picks an HTTP status for `classify_reply`, the rest is
//! the body, decoded as every reply type the client reads. exchangeInfo's symbols become rules,
//! and every rounding and check runs on a few figures. Never a panic.
#![no_main]

use binance::error::{classify_reply, Effect};
use binance::types::{
    Account, AlgoCancel, AlgoOrder, Balance, ExchangeInfo, LeverageChange, ListenKey, Order,
    PositionMode, PositionRisk, PremiumIndex, ServerTime, UserTrade,
};
use binance::{LotKind, Rounding, Side, SymbolRules};
use libfuzzer_sys::fuzz_target;
use rust_decimal::Decimal;

const STATUSES: [u16; 16] = [
    200, 400, 401, 403, 404, 408, 418, 429, 500, 502, 503, 504, 302, 0, 999, 451,
];

fn de<T: serde::de::DeserializeOwned>(body: &str) -> Option<T> {
    serde_json::from_str(body).ok()
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let body = String::from_utf8_lossy(rest);
    let status = STATUSES[usize::from(first) % STATUSES.len()];
    let effect = if first & 0x80 == 0 { Effect::Read } else { Effect::Write };
    let _ = classify_reply(effect, status, None, &body).to_string();

    let _ = de::<ServerTime>(&body);
    let _ = de::<Vec<PremiumIndex>>(&body);
    let _ = de::<PremiumIndex>(&body);
    let _ = de::<LeverageChange>(&body);
    let _ = de::<PositionMode>(&body);
    let _ = de::<Vec<Order>>(&body);
    let _ = de::<Vec<UserTrade>>(&body);
    let _ = de::<Vec<PositionRisk>>(&body);
    let _ = de::<Account>(&body);
    let _ = de::<Vec<Balance>>(&body);
    let _ = de::<ListenKey>(&body);
    let _ = de::<Vec<AlgoOrder>>(&body);
    let _ = de::<AlgoOrder>(&body);
    let _ = de::<AlgoCancel>(&body);
    if let Some(order) = de::<Order>(&body) {
        let _ = order.status.is_final();
    }
    if let Some(info) = de::<ExchangeInfo>(&body) {
        let figures = [
            Decimal::ONE,
            Decimal::new(1, 3),
            Decimal::from(95_000),
            Decimal::MAX,
            Decimal::new(1, 28),
        ];
        for symbol in info.symbols.iter().take(8) {
            let rules = SymbolRules::from_info(symbol);
            for &x in &figures {
                let _ = rules.round_qty(x, LotKind::Market);
                let _ = rules.round_qty(x, LotKind::Limit);
                for rounding in [Rounding::Down, Rounding::Up, Rounding::Nearest] {
                    let _ = rules.round_price(x, rounding);
                }
                for &y in &figures {
                    let _ = rules.market_qty(x, y, false);
                    let _ = rules.check_percent_price(Side::Buy, x, y);
                    let _ = rules.check_percent_price(Side::Sell, x, y);
                }
            }
        }
    }
});
