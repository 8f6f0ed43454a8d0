//! Stream wire types: the user-data events (`ORDER_TRADE_UPDATE`, `TRADE_LITE`,
//! `ACCOUNT_UPDATE`, `ALGO_UPDATE`, `listenKeyExpired`) and the market events (`markPriceUpdate`,
//! `bookTicker`), decoded from a frame's text. Decoding never panics: a frame becomes a known
//! event, [`Decoded::Unknown`] (an event type we do not handle) or [`Decoded::Invalid`] (with
//! the reason), and the stream tasks log the last two with the raw text.

use rust_decimal::Decimal;
use serde::Deserialize;

use model::Side;

use crate::types::{AlgoOrderType, AlgoStatus, OrderStatus, OrderType, PositionSide};
use crate::wire::{dec, loose_id, opt_dec, wire_enum};

wire_enum! {
    /// What happened to the order in this event (`x`).
    ExecutionType {
        New = "NEW",
        Canceled = "CANCELED",
        Calculated = "CALCULATED",
        Expired = "EXPIRED",
        Trade = "TRADE",
        Amendment = "AMENDMENT",
    }
}

/// `ORDER_TRADE_UPDATE`: an order changed. `x = TRADE` events are fills; deduplicate by
/// `(order_id, trade_id)`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderTradeUpdate {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Matching-engine time, ms.
    #[serde(rename = "T")]
    pub transaction_time: i64,
    /// The order.
    #[serde(rename = "o")]
    pub order: OrderUpdate,
}

/// The `o` object of `ORDER_TRADE_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct OrderUpdate {
    /// Symbol (`s`).
    #[serde(rename = "s")]
    pub symbol: String,
    /// Client order id (`c`).
    #[serde(rename = "c")]
    pub client_order_id: String,
    /// Side (`S`).
    #[serde(rename = "S")]
    pub side: Side,
    /// Order type (`o`).
    #[serde(rename = "o")]
    pub order_type: OrderType,
    /// Original quantity (`q`).
    #[serde(rename = "q", with = "dec")]
    pub orig_qty: Decimal,
    /// Original price (`p`).
    #[serde(rename = "p", with = "dec")]
    pub price: Decimal,
    /// Average fill price so far (`ap`).
    #[serde(rename = "ap", with = "dec")]
    pub avg_price: Decimal,
    /// Execution type of this event (`x`).
    #[serde(rename = "x")]
    pub execution_type: ExecutionType,
    /// Order status after this event (`X`).
    #[serde(rename = "X")]
    pub status: OrderStatus,
    /// Order id (`i`).
    #[serde(rename = "i")]
    pub order_id: i64,
    /// Quantity of this fill (`l`).
    #[serde(rename = "l", with = "dec")]
    pub last_filled_qty: Decimal,
    /// Price of this fill (`L`).
    #[serde(rename = "L", with = "dec")]
    pub last_filled_price: Decimal,
    /// Cumulative filled quantity (`z`).
    #[serde(rename = "z", with = "dec")]
    pub cumulative_filled_qty: Decimal,
    /// Commission asset of this fill (`N`); absent when there is no commission.
    #[serde(rename = "N", default)]
    pub commission_asset: Option<String>,
    /// Commission of this fill (`n`); absent when there is no commission.
    #[serde(rename = "n", default, with = "opt_dec")]
    pub commission: Option<Decimal>,
    /// Trade time (`T`).
    #[serde(rename = "T")]
    pub trade_time: i64,
    /// Trade id (`t`), 0 when this is not a trade.
    #[serde(rename = "t")]
    pub trade_id: i64,
    /// This fill was maker (`m`).
    #[serde(rename = "m", default)]
    pub is_maker: bool,
    /// Reduce-only (`R`).
    #[serde(rename = "R")]
    pub reduce_only: bool,
    /// Position side (`ps`).
    #[serde(rename = "ps", default)]
    pub position_side: Option<PositionSide>,
    /// Realized profit of this fill (`rp`).
    #[serde(rename = "rp", default, with = "opt_dec")]
    pub realized_profit: Option<Decimal>,
    /// Expiry reason (`er`), e.g. `"9"` for a MARKET order not completely filled.
    #[serde(rename = "er", default)]
    pub expiry_reason: Option<String>,
}

/// `TRADE_LITE`: a fast, fill-only duplicate of the `x = TRADE` information.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct TradeLite {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Transaction time, ms.
    #[serde(rename = "T")]
    pub transaction_time: i64,
    /// Symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// Original quantity.
    #[serde(rename = "q", with = "dec")]
    pub orig_qty: Decimal,
    /// Original price.
    #[serde(rename = "p", with = "dec")]
    pub price: Decimal,
    /// Maker fill.
    #[serde(rename = "m")]
    pub is_maker: bool,
    /// Client order id.
    #[serde(rename = "c")]
    pub client_order_id: String,
    /// Side.
    #[serde(rename = "S")]
    pub side: Side,
    /// Fill price.
    #[serde(rename = "L", with = "dec")]
    pub last_filled_price: Decimal,
    /// Fill quantity.
    #[serde(rename = "l", with = "dec")]
    pub last_filled_qty: Decimal,
    /// Trade id.
    #[serde(rename = "t")]
    pub trade_id: i64,
    /// Order id.
    #[serde(rename = "i")]
    pub order_id: i64,
}

/// `ACCOUNT_UPDATE`: balances and positions that changed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountUpdate {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Transaction time, ms.
    #[serde(rename = "T")]
    pub transaction_time: i64,
    /// The update.
    #[serde(rename = "a")]
    pub account: AccountData,
}

/// The `a` object of `ACCOUNT_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AccountData {
    /// Reason (`ORDER`, `FUNDING_FEE`, ...).
    #[serde(rename = "m")]
    pub reason: String,
    /// Changed balances.
    #[serde(rename = "B", default)]
    pub balances: Vec<BalanceUpdate>,
    /// Changed positions.
    #[serde(rename = "P", default)]
    pub positions: Vec<PositionUpdate>,
}

/// A balance in `ACCOUNT_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BalanceUpdate {
    /// Asset.
    #[serde(rename = "a")]
    pub asset: String,
    /// Wallet balance.
    #[serde(rename = "wb", with = "dec")]
    pub wallet_balance: Decimal,
    /// Cross wallet balance.
    #[serde(rename = "cw", with = "dec")]
    pub cross_wallet_balance: Decimal,
    /// Change excluding PnL and fees.
    #[serde(rename = "bc", default, with = "opt_dec")]
    pub balance_change: Option<Decimal>,
}

/// A position in `ACCOUNT_UPDATE`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct PositionUpdate {
    /// Symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// Signed amount.
    #[serde(rename = "pa", with = "dec")]
    pub position_amt: Decimal,
    /// Entry price.
    #[serde(rename = "ep", with = "dec")]
    pub entry_price: Decimal,
    /// Break-even price.
    #[serde(rename = "bep", default, with = "opt_dec")]
    pub break_even_price: Option<Decimal>,
    /// Accumulated realized PnL (pre-fee).
    #[serde(rename = "cr", with = "dec")]
    pub accumulated_realized: Decimal,
    /// Unrealized PnL.
    #[serde(rename = "up", with = "dec")]
    pub unrealized_pnl: Decimal,
    /// Margin type (`isolated`, `cross`).
    #[serde(rename = "mt")]
    pub margin_type: String,
    /// Isolated wallet.
    #[serde(rename = "iw", default, with = "opt_dec")]
    pub isolated_wallet: Option<Decimal>,
    /// Position side.
    #[serde(rename = "ps")]
    pub position_side: PositionSide,
}

/// `ALGO_UPDATE`: a conditional order changed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlgoUpdate {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Transaction time, ms.
    #[serde(rename = "T")]
    pub transaction_time: i64,
    /// The algo order.
    #[serde(rename = "o")]
    pub order: AlgoOrderUpdate,
}

/// The `o` object of `ALGO_UPDATE` (names by analogy with the REST fields; Binance documents no
/// per-field text).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct AlgoOrderUpdate {
    /// Client algo id (`caid`).
    #[serde(rename = "caid")]
    pub client_algo_id: String,
    /// Algo id (`aid`).
    #[serde(rename = "aid")]
    pub algo_id: i64,
    /// Algo type (`at`).
    #[serde(rename = "at")]
    pub algo_type: String,
    /// Conditional type (`o`).
    #[serde(rename = "o")]
    pub order_type: AlgoOrderType,
    /// Symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// Side.
    #[serde(rename = "S")]
    pub side: Side,
    /// Position side.
    #[serde(rename = "ps", default)]
    pub position_side: Option<PositionSide>,
    /// Quantity.
    #[serde(rename = "q", default, with = "opt_dec")]
    pub quantity: Option<Decimal>,
    /// Algo status (`X`).
    #[serde(rename = "X")]
    pub status: AlgoStatus,
    /// The order placed when it triggered (`ai`; `""` before).
    #[serde(rename = "ai", default, with = "loose_id")]
    pub actual_order_id: Option<i64>,
    /// Average fill price of the triggered order (`ap`).
    #[serde(rename = "ap", default, with = "opt_dec")]
    pub avg_price: Option<Decimal>,
    /// Executed quantity of the triggered order (`aq`).
    #[serde(rename = "aq", default, with = "opt_dec")]
    pub executed_qty: Option<Decimal>,
    /// Trigger price (`tp`).
    #[serde(rename = "tp", default, with = "opt_dec")]
    pub trigger_price: Option<Decimal>,
    /// Price (`p`).
    #[serde(rename = "p", default, with = "opt_dec")]
    pub price: Option<Decimal>,
    /// Close-position flag (`cp`).
    #[serde(rename = "cp", default)]
    pub close_position: bool,
    /// Reduce-only (`R`).
    #[serde(rename = "R", default)]
    pub reduce_only: bool,
    /// Trigger time (`tt`).
    #[serde(rename = "tt", default)]
    pub trigger_time: i64,
    /// Reject reason (`rm`).
    #[serde(rename = "rm", default)]
    pub reject_reason: Option<String>,
}

/// `listenKeyExpired`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ListenKeyExpired {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// The key that expired.
    #[serde(rename = "listenKey", default)]
    pub listen_key: String,
}

/// `<symbol>@markPrice[@1s]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct MarkPriceUpdate {
    /// Event time, ms.
    #[serde(rename = "E")]
    pub event_time: i64,
    /// Symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// Mark price.
    #[serde(rename = "p", with = "dec")]
    pub mark_price: Decimal,
    /// Index price.
    #[serde(rename = "i", default, with = "opt_dec")]
    pub index_price: Option<Decimal>,
    /// Estimated settle price.
    #[serde(rename = "P", default, with = "opt_dec")]
    pub estimated_settle_price: Option<Decimal>,
    /// Funding rate.
    #[serde(rename = "r", default, with = "opt_dec")]
    pub funding_rate: Option<Decimal>,
    /// Next funding time, ms.
    #[serde(rename = "T", default)]
    pub next_funding_time: i64,
}

/// `<symbol>@bookTicker`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BookTicker {
    /// Update id.
    #[serde(rename = "u")]
    pub update_id: i64,
    /// Event time, ms.
    #[serde(rename = "E", default)]
    pub event_time: i64,
    /// Transaction time, ms.
    #[serde(rename = "T", default)]
    pub transaction_time: i64,
    /// Symbol.
    #[serde(rename = "s")]
    pub symbol: String,
    /// Best bid.
    #[serde(rename = "b", with = "dec")]
    pub bid_price: Decimal,
    /// Best bid quantity.
    #[serde(rename = "B", with = "dec")]
    pub bid_qty: Decimal,
    /// Best ask.
    #[serde(rename = "a", with = "dec")]
    pub ask_price: Decimal,
    /// Best ask quantity.
    #[serde(rename = "A", with = "dec")]
    pub ask_qty: Decimal,
}

/// A decoded user-data frame.
#[derive(Debug, Clone, PartialEq)]
pub enum UserData {
    /// `ORDER_TRADE_UPDATE`.
    OrderTradeUpdate(OrderTradeUpdate),
    /// `TRADE_LITE`.
    TradeLite(TradeLite),
    /// `ACCOUNT_UPDATE`.
    AccountUpdate(AccountUpdate),
    /// `ALGO_UPDATE`.
    AlgoUpdate(AlgoUpdate),
    /// `listenKeyExpired`.
    ListenKeyExpired(ListenKeyExpired),
}

/// A decoded market-data frame.
#[derive(Debug, Clone, PartialEq)]
pub enum MarketData {
    /// `markPriceUpdate`.
    MarkPrice(MarkPriceUpdate),
    /// `bookTicker`.
    BookTicker(BookTicker),
    /// `!markPrice@arr[@1s]`: every symbol's mark price in one frame.
    MarkPrices(Vec<MarkPriceUpdate>),
}

/// What a frame turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded<T> {
    /// A known event.
    Event(T),
    /// A valid frame of a type this client does not handle (its `e`, if any).
    Unknown(String),
    /// A frame that could not be decoded, and why.
    Invalid(String),
}

/// Unwraps the combined-stream shape `{"stream": .., "data": ..}` when present.
fn unwrap_combined(value: serde_json::Value) -> serde_json::Value {
    match value {
        serde_json::Value::Object(mut map)
            if map.contains_key("stream") && map.contains_key("data") =>
        {
            map.remove("data").unwrap_or(serde_json::Value::Null)
        }
        other => other,
    }
}

fn decode_as<T: serde::de::DeserializeOwned, U>(
    value: serde_json::Value,
    wrap: impl FnOnce(T) -> U,
) -> Decoded<U> {
    match serde_json::from_value::<T>(value) {
        Ok(event) => Decoded::Event(wrap(event)),
        Err(e) => Decoded::Invalid(e.to_string()),
    }
}

fn event_type(value: &serde_json::Value) -> Option<String> {
    value.get("e")?.as_str().map(str::to_string)
}

/// Decodes one user-data frame (raw or combined).
pub fn decode_user_frame(text: &str) -> Decoded<UserData> {
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => unwrap_combined(value),
        Err(e) => return Decoded::Invalid(format!("not JSON: {e}")),
    };
    let Some(event) = event_type(&value) else {
        return Decoded::Unknown(String::new());
    };
    match event.as_str() {
        "ORDER_TRADE_UPDATE" => decode_as(value, UserData::OrderTradeUpdate),
        "TRADE_LITE" => decode_as(value, UserData::TradeLite),
        "ACCOUNT_UPDATE" => decode_as(value, UserData::AccountUpdate),
        "ALGO_UPDATE" => decode_as(value, UserData::AlgoUpdate),
        "listenKeyExpired" => decode_as(value, UserData::ListenKeyExpired),
        _ => Decoded::Unknown(event),
    }
}

/// Decodes one market-data frame (raw or combined).
pub fn decode_market_frame(text: &str) -> Decoded<MarketData> {
    let value = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => unwrap_combined(value),
        Err(e) => return Decoded::Invalid(format!("not JSON: {e}")),
    };
    if let serde_json::Value::Array(items) = value {
        // The all-market stream sends an array of markPriceUpdate objects.
        return match serde_json::from_value::<Vec<MarkPriceUpdate>>(serde_json::Value::Array(items))
        {
            Ok(updates) => Decoded::Event(MarketData::MarkPrices(updates)),
            Err(e) => Decoded::Invalid(format!("mark price array: {e}")),
        };
    }
    let Some(event) = event_type(&value) else {
        // Replies to SUBSCRIBE (`{"result":null,"id":1}`) have no `e`.
        return Decoded::Unknown(String::new());
    };
    match event.as_str() {
        "markPriceUpdate" => decode_as(value, MarketData::MarkPrice),
        "bookTicker" => decode_as(value, MarketData::BookTicker),
        _ => Decoded::Unknown(event),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../../../testdata/binance/", $name))
        };
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn order_trade_update_fixture() {
        let Decoded::Event(UserData::OrderTradeUpdate(update)) =
            decode_user_frame(fixture!("ws__order_trade_update_new.json"))
        else {
            panic!("not decoded");
        };
        let o = &update.order;
        assert_eq!(o.symbol, "BTCUSDT");
        assert_eq!(o.client_order_id, "TEST");
        assert_eq!(o.execution_type, ExecutionType::New);
        assert_eq!(o.status, OrderStatus::New);
        assert_eq!(o.order_type, OrderType::TrailingStopMarket);
        assert_eq!(o.order_id, 8_886_774);
        assert_eq!(o.orig_qty, d("0.001"));
        assert_eq!(o.commission, Some(Decimal::ZERO));
        assert_eq!(o.commission_asset.as_deref(), Some("USDT"));
        assert_eq!(o.trade_id, 0);
        assert_eq!(o.expiry_reason.as_deref(), Some("0"));
        assert_eq!(o.position_side, Some(PositionSide::Long));
    }

    #[test]
    fn trade_event_without_commission_fields() {
        // The reference's example fill, with `n`/`N` removed (Binance omits them when there is no
        // commission).
        let text = r#"{"e":"ORDER_TRADE_UPDATE","E":1685466798562,"T":1685466798560,"o":{"s":"XRPUSDT","c":"10002",
"S":"SELL","o":"LIMIT","f":"GTC","q":"20","p":"0.5332","ap":"0.53320","sp":"0","x":"TRADE","X":"FILLED",
"i":246411433,"l":"20","z":"20","L":"0.5332","T":1685466798560,"t":19334107,
"b":"10.59800","a":"0","m":true,"R":false,"wt":"CONTRACT_PRICE","ot":"LIMIT","ps":"BOTH","cp":false,
"rp":"0.24773076","pP":false,"si":0,"ss":0,"V":"NONE","pm":"NONE","gtd":0,"er":"0"}}"#;
        let Decoded::Event(UserData::OrderTradeUpdate(update)) = decode_user_frame(text) else {
            panic!("not decoded");
        };
        assert_eq!(update.order.execution_type, ExecutionType::Trade);
        assert_eq!(update.order.status, OrderStatus::Filled);
        assert_eq!(update.order.commission, None);
        assert_eq!(update.order.last_filled_price, d("0.5332"));
        assert_eq!(update.order.realized_profit, Some(d("0.24773076")));
    }

    #[test]
    fn other_user_fixtures() {
        assert!(matches!(
            decode_user_frame(fixture!("ws__trade_lite.json")),
            Decoded::Event(UserData::TradeLite(TradeLite {
                order_id: 8_886_774,
                ..
            }))
        ));
        let Decoded::Event(UserData::AccountUpdate(account)) =
            decode_user_frame(fixture!("ws__account_update.json"))
        else {
            panic!("account update not decoded");
        };
        assert_eq!(account.account.reason, "ORDER");
        assert_eq!(account.account.balances.len(), 2);
        assert_eq!(account.account.positions[2].position_amt, d("-10"));
        let Decoded::Event(UserData::AlgoUpdate(algo)) =
            decode_user_frame(fixture!("ws__algo_update.json"))
        else {
            panic!("algo update not decoded");
        };
        assert_eq!(algo.order.status, AlgoStatus::Canceled);
        assert_eq!(algo.order.actual_order_id, None);
        assert_eq!(
            algo.order.reject_reason.as_deref(),
            Some("Reduce Only reject")
        );
        assert!(matches!(
            decode_user_frame(fixture!("ws__listen_key_expired.json")),
            Decoded::Event(UserData::ListenKeyExpired(_))
        ));
    }

    #[test]
    fn unknown_and_broken_frames_do_not_panic() {
        assert_eq!(
            decode_user_frame(fixture!("ws__margin_call.json")),
            Decoded::Unknown("MARGIN_CALL".into())
        );
        assert_eq!(
            decode_user_frame(fixture!("ws__account_config_update_leverage.json")),
            Decoded::Unknown("ACCOUNT_CONFIG_UPDATE".into())
        );
        assert!(matches!(
            decode_user_frame("{not json"),
            Decoded::Invalid(_)
        ));
        assert!(matches!(
            decode_user_frame(r#"{"e":"ORDER_TRADE_UPDATE","E":1}"#),
            Decoded::Invalid(_)
        ));
        assert!(matches!(decode_user_frame("[]"), Decoded::Unknown(_)));
    }

    #[test]
    fn market_fixtures_raw_and_combined() {
        let Decoded::Event(MarketData::MarkPrice(mark)) =
            decode_market_frame(fixture!("ws__mark_price_update.json"))
        else {
            panic!("mark price not decoded");
        };
        assert_eq!(mark.mark_price, d("11794.15000000"));
        let combined = format!(
            r#"{{"stream":"bnbusdt@bookTicker","data":{}}}"#,
            fixture!("ws__book_ticker.json")
        );
        let Decoded::Event(MarketData::BookTicker(book)) = decode_market_frame(&combined) else {
            panic!("book ticker not decoded");
        };
        assert_eq!(book.bid_price, d("25.35190000"));
        assert_eq!(book.ask_qty, d("40.66000000"));
        assert_eq!(
            decode_market_frame(fixture!("ws__subscribe_response.json")),
            Decoded::Unknown(String::new())
        );
        assert_eq!(
            decode_market_frame(fixture!("ws__agg_trade.json")),
            Decoded::Unknown("aggTrade".into())
        );
        let combined = format!(
            r#"{{"stream":"!markPrice@arr@1s","data":{}}}"#,
            fixture!("ws__mark_price_update_arr.json")
        );
        let Decoded::Event(MarketData::MarkPrices(all)) = decode_market_frame(&combined) else {
            panic!("mark price array not decoded");
        };
        assert_eq!(all[0].mark_price, d("11185.87786614"));
    }
}
