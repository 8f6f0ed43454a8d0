//! Order modification (`PUT /fapi/v1/order`, each element of `PUT /fapi/v1/batchOrders`, the
//! WebSocket API's `order.modify`) and its history (`GET /fapi/v1/orderAmendment`).
//!
//! The request is parsed once at the edge into a typed [`ModifyRequest`]; the rules are in
//! [`Exchange::modify`], synchronous, with the time as an argument, so the unit tests below drive
//! them directly. Binance's documented rules (Modify Order, USDⓈ-M):
//! - only LIMIT orders can be modified (`-5025`); both `quantity` and `price` are sent;
//! - new figures that break PRICE_FILTER / PERCENT_PRICE / LOT_SIZE are refused and the order
//!   stays as it is; an unchanged order is `-5027`; at most 10,000 modifications (`-5026`);
//! - the order is cancelled instead when it is partially filled and the new quantity is not
//!   above what has executed, or when it is GTX (post-only) and the new price would take;
//! - a modified order goes to the back of the queue, and takes liquidity if it now crosses.
//!
//! Where the documentation is silent the simulator chooses, and `ENDPOINTS.md` says so: a `side`
//! other than the order's is refused as malformed (`-1102`); `priceMatch` is not simulated and is
//! refused (`-1106`); a cancelled-by-amendment order sends `AMENDMENT` then `CANCELED` events.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use super::{check_price, check_quantity, Exchange};
use crate::auth::Params;
use crate::error::ApiError;
use crate::model::{OrderStatus, OrderType, Side, TimeInForce};
use crate::wire::{self, OrderShape};

/// Binance: "One order can only be modified for less than 10000 times".
const MAX_MODIFICATIONS: u32 = 9_999;
/// `GET /fapi/v1/orderAmendment`: default and maximum `limit`.
const HISTORY_DEFAULT_LIMIT: i64 = 50;
const HISTORY_MAX_LIMIT: i64 = 100;

/// Which order a request names: `orderId` prevails over `origClientOrderId` when both are sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum OrderRef {
    Id(i64),
    ClientId(String),
}

impl OrderRef {
    pub(crate) fn from_params(params: &Params) -> Result<OrderRef, ApiError> {
        if let Some(id) = params.int("orderId")? {
            Ok(OrderRef::Id(id))
        } else if let Some(client_id) = params.get("origClientOrderId") {
            Ok(OrderRef::ClientId(client_id.to_string()))
        } else {
            Err(ApiError::bad(
                -1102,
                "Either orderId or origClientOrderId must be sent.",
            ))
        }
    }
}

/// A modification, as sent: the order, and its side, quantity and price after the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ModifyRequest {
    pub(crate) symbol: String,
    pub(crate) order: OrderRef,
    pub(crate) side: Side,
    pub(crate) quantity: Decimal,
    pub(crate) price: Decimal,
}

impl ModifyRequest {
    pub(crate) fn from_params(params: &Params) -> Result<ModifyRequest, ApiError> {
        let symbol = params
            .symbol()
            .ok_or_else(|| ApiError::mandatory("symbol"))?;
        let order = OrderRef::from_params(params)?;
        let side = Side::parse(params.required("side")?)?;
        if params.get("priceMatch").is_some() {
            return Err(ApiError::bad(
                -1106,
                "Parameter 'priceMatch' sent when not required.",
            ));
        }
        let quantity = params
            .decimal("quantity")?
            .ok_or_else(|| ApiError::mandatory("quantity"))?;
        let price = params
            .decimal("price")?
            .ok_or_else(|| ApiError::mandatory("price"))?;
        Ok(ModifyRequest {
            symbol,
            order,
            side,
            quantity,
            price,
        })
    }
}

/// One entry of an order's modification history.
#[derive(Debug, Clone)]
pub(crate) struct Amendment {
    pub(crate) amendment_id: i64,
    pub(crate) order_id: i64,
    pub(crate) symbol: String,
    pub(crate) client_order_id: String,
    pub(crate) time: i64,
    pub(crate) price: (Decimal, Decimal),
    pub(crate) qty: (Decimal, Decimal),
    pub(crate) count: u32,
}

impl Exchange {
    /// Modifies a resting LIMIT order (see the module doc for the rules). Returns the order id;
    /// the order is then as the reply shows it (modified, or cancelled by the amendment).
    pub(crate) fn modify(&mut self, request: &ModifyRequest, now: i64) -> Result<i64, ApiError> {
        let spec = self.spec(&request.symbol)?.clone();
        let market = self.market(&request.symbol)?.clone();
        let order = match &request.order {
            OrderRef::Id(id) => self.orders.get(id).filter(|o| o.symbol == request.symbol),
            OrderRef::ClientId(client_id) => self
                .orders
                .values()
                .rev()
                .find(|o| o.symbol == request.symbol && o.client_order_id == *client_id),
        }
        .filter(|o| o.is_open())
        .ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))?
        .clone();
        if order.order_type != OrderType::Limit {
            return Err(ApiError::bad(-5025, "Only limit order is supported."));
        }
        if request.side != order.side {
            return Err(ApiError::malformed("side"));
        }
        check_quantity(&spec, request.quantity, false)?;
        check_price(&spec, request.price)?;
        if request.side == Side::Buy && request.price > market.mark * spec.multiplier_up {
            let cap = spec.fmt_price(spec.round_price_down(market.mark * spec.multiplier_up));
            return Err(ApiError::bad(
                -4016,
                format!("Limit price can't be higher than {cap}."),
            ));
        }
        if request.side == Side::Sell && request.price < market.mark * spec.multiplier_down {
            let floor = spec.fmt_price(spec.round_price_up(market.mark * spec.multiplier_down));
            return Err(ApiError::bad(
                -4024,
                format!("Limit price can't be lower than {floor}."),
            ));
        }
        if request.quantity == order.orig_qty && request.price == order.price {
            return Err(ApiError::bad(-5027, "No need to modify the order."));
        }
        let count = self
            .amendments
            .iter()
            .filter(|a| a.order_id == order.order_id)
            .count() as u32;
        if count >= MAX_MODIFICATIONS {
            return Err(ApiError::bad(-5026, "Exceed maximum modify order limit."));
        }
        let notional = request.price * request.quantity;
        if !order.reduce_only && notional < spec.min_notional {
            return Err(ApiError::bad(
                -5029,
                format!(
                    "Order's notional must be no smaller than {}",
                    spec.min_notional.normalize()
                ),
            ));
        }
        // More margin only for what the change adds to the order's open notional.
        let old_open = order.remaining() * order.price;
        let new_open = (request.quantity - order.executed_qty).max(Decimal::ZERO) * request.price;
        if !order.reduce_only && new_open > old_open {
            let required = (new_open - old_open) / Decimal::from(self.leverage_of(&order.symbol));
            if required > self.available_balance() {
                return Err(ApiError::bad(-2019, "Margin is insufficient."));
            }
        }
        let marketable = (order.side == Side::Buy && request.price >= market.best_ask())
            || (order.side == Side::Sell && request.price <= market.best_bid());

        self.amendments.push(Amendment {
            amendment_id: self.next_amendment_id,
            order_id: order.order_id,
            symbol: order.symbol.clone(),
            client_order_id: order.client_order_id.clone(),
            time: now,
            price: (order.price, request.price),
            qty: (order.orig_qty, request.quantity),
            count: count + 1,
        });
        self.next_amendment_id += 1;
        let stored = self.orders.get_mut(&order.order_id).expect("order exists");
        stored.price = request.price;
        stored.orig_qty = request.quantity;
        stored.update_time = now;
        self.emit_order(order.order_id, "AMENDMENT", None, now);

        let order_id = order.order_id;
        // Binance cancels instead of modifying when nothing would be left to execute, or when a
        // post-only order would take.
        let cut_to_executed =
            order.status == OrderStatus::PartiallyFilled && request.quantity <= order.executed_qty;
        let post_only_takes = order.time_in_force == TimeInForce::Gtx && marketable;
        if cut_to_executed || post_only_takes {
            self.finish(order_id, OrderStatus::Canceled, 0, now);
        } else if marketable {
            // Now crossing the book: it takes liquidity like a new order would.
            let chunks = self.faults.partial_fills.max(1);
            let stored = self.orders.get_mut(&order_id).expect("order exists");
            stored.taker_pending = true;
            stored.chunks_left = chunks;
            if !self.to_fill.contains(&order_id) {
                self.to_fill.push(order_id);
            }
        }
        Ok(order_id)
    }

    /// The modify reply: the order as it is now, in the Reply shape (`cumQty`, `cumQuote`).
    pub(crate) fn modify_reply(&self, order_id: i64) -> Value {
        let order = &self.orders[&order_id];
        wire::order(order, &self.markets[&order.symbol].spec, OrderShape::Reply)
    }

    /// `GET /fapi/v1/orderAmendment`: one order's modifications, newest first.
    pub(crate) fn order_amendments(&self, params: &Params) -> Result<Vec<Value>, ApiError> {
        let symbol = self.symbol_param(params)?;
        let order = OrderRef::from_params(params)?;
        let start = params.int("startTime")?;
        let end = params.int("endTime")?;
        let limit = params.int("limit")?.unwrap_or(HISTORY_DEFAULT_LIMIT);
        if !(1..=HISTORY_MAX_LIMIT).contains(&limit) {
            return Err(ApiError::bad(-1130, "Invalid data sent for a parameter."));
        }
        let order_id = match order {
            OrderRef::Id(id) => self
                .orders
                .get(&id)
                .filter(|o| o.symbol == symbol)
                .map(|o| o.order_id),
            OrderRef::ClientId(client_id) => self
                .orders
                .values()
                .rev()
                .find(|o| o.symbol == symbol && o.client_order_id == client_id)
                .map(|o| o.order_id),
        }
        .ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))?;
        let spec = &self.markets[&symbol].spec;
        Ok(self
            .amendments
            .iter()
            .rev()
            .filter(|a| a.order_id == order_id)
            .filter(|a| start.is_none_or(|t| a.time >= t) && end.is_none_or(|t| a.time <= t))
            .take(limit as usize)
            .map(|a| {
                json!({
                    "amendmentId": a.amendment_id,
                    "symbol": a.symbol,
                    "pair": a.symbol,
                    "orderId": a.order_id,
                    "clientOrderId": a.client_order_id,
                    "time": a.time,
                    "amendment": {
                        "price": {
                            "before": spec.fmt_price(a.price.0),
                            "after": spec.fmt_price(a.price.1),
                        },
                        "origQty": {
                            "before": spec.fmt_qty(a.qty.0),
                            "after": spec.fmt_qty(a.qty.1),
                        },
                        "count": a.count,
                    },
                })
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use crate::exchange::Outgoing;

    const NOW: i64 = 1_800_000_000_000;

    fn exchange() -> Exchange {
        let mut ex = Exchange::new(&SimConfig::default()).expect("default config");
        ex.start(NOW);
        ex
    }

    fn params(pairs: &[(&str, &str)]) -> Params {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Params::parse(&query.join("&"), "")
    }

    /// A GTC bid 2% under the mark, for 0.010 BTC: rests, far from any fill.
    fn resting_bid(ex: &mut Exchange, tif: &str) -> (i64, Decimal) {
        let mark = ex.markets["BTCUSDT"].mark;
        let spec = ex.markets["BTCUSDT"].spec.clone();
        let price = spec.round_price_down(mark * Decimal::new(98, 2));
        let id = ex
            .place_order(
                &params(&[
                    ("symbol", "BTCUSDT"),
                    ("side", "BUY"),
                    ("type", "LIMIT"),
                    ("timeInForce", tif),
                    ("quantity", "0.010"),
                    ("price", &price.to_string()),
                ]),
                NOW,
            )
            .expect("a resting bid is accepted");
        ex.drain_outbox();
        (id, price)
    }

    fn modify(id: i64, qty: &str, price: Decimal) -> ModifyRequest {
        ModifyRequest {
            symbol: "BTCUSDT".into(),
            order: OrderRef::Id(id),
            side: Side::Buy,
            quantity: qty.parse().unwrap(),
            price,
        }
    }

    fn executions(ex: &mut Exchange) -> Vec<String> {
        ex.drain_outbox()
            .into_iter()
            .filter_map(|o| match o {
                Outgoing::User { payload, .. } if payload["e"] == "ORDER_TRADE_UPDATE" => {
                    Some(format!("{}/{}", payload["o"]["x"], payload["o"]["X"]).replace('"', ""))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_modified_order_keeps_its_id_takes_the_new_figures_and_says_amendment() {
        let mut ex = exchange();
        let (id, price) = resting_bid(&mut ex, "GTC");
        let tick = ex.markets["BTCUSDT"].spec.tick_size;
        let lower = price - tick * Decimal::from(10);
        assert_eq!(ex.modify(&modify(id, "0.020", lower), NOW + 5), Ok(id));
        let order = ex.order_by_id(id).unwrap();
        assert_eq!(
            (order.price, order.orig_qty),
            (lower, "0.020".parse().unwrap())
        );
        assert_eq!(order.status, OrderStatus::New);
        assert_eq!(order.update_time, NOW + 5);
        assert_eq!(executions(&mut ex), ["AMENDMENT/NEW"]);
        let history = ex
            .order_amendments(&params(&[
                ("symbol", "BTCUSDT"),
                ("orderId", &id.to_string()),
            ]))
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(history[0]["amendment"]["count"], 1);
        assert_eq!(history[0]["amendment"]["origQty"]["before"], "0.010");
        assert_eq!(history[0]["amendment"]["origQty"]["after"], "0.020");
        assert_eq!(history[0]["time"], NOW + 5);
    }

    #[test]
    fn the_history_is_newest_first_and_counts_every_modification() {
        let mut ex = exchange();
        let (id, price) = resting_bid(&mut ex, "GTC");
        let tick = ex.markets["BTCUSDT"].spec.tick_size;
        for n in 1..=3i64 {
            let p = price - tick * Decimal::from(n);
            ex.modify(&modify(id, "0.010", p), NOW + n).unwrap();
        }
        let history = ex
            .order_amendments(&params(&[
                ("symbol", "BTCUSDT"),
                ("orderId", &id.to_string()),
                ("limit", "2"),
            ]))
            .unwrap();
        let counts: Vec<i64> = history
            .iter()
            .map(|h| h["amendment"]["count"].as_i64().unwrap())
            .collect();
        assert_eq!(counts, [3, 2]);
        let ids: Vec<i64> = history
            .iter()
            .map(|h| h["amendmentId"].as_i64().unwrap())
            .collect();
        assert!(ids[0] > ids[1], "{ids:?}");
    }

    #[test]
    fn refused_modifications_leave_the_order_as_it_was() {
        let mut ex = exchange();
        let (id, price) = resting_bid(&mut ex, "GTC");
        let spec = ex.markets["BTCUSDT"].spec.clone();
        let cases: Vec<(ModifyRequest, i64)> = vec![
            (modify(id, "0.010", price), -5027),
            (modify(id, "0.0105", price), -1111),
            (
                modify(id, "0.010", price + spec.tick_size / Decimal::TWO),
                -4014,
            ),
            (
                modify(id, "0.010", spec.round_price_down(price * Decimal::TWO)),
                -4016,
            ),
            (modify(id + 1000, "0.010", price), -2013),
            (
                ModifyRequest {
                    side: Side::Sell,
                    ..modify(id, "0.020", price)
                },
                -1102,
            ),
        ];
        for (request, code) in cases {
            let refused = ex.modify(&request, NOW + 1).unwrap_err();
            assert_eq!(refused.code, code, "{request:?}: {refused:?}");
        }
        let order = ex.order_by_id(id).unwrap();
        assert_eq!((order.price, order.update_time), (price, NOW));
        assert!(executions(&mut ex).is_empty());
        assert!(ex.amendments.is_empty());
    }

    #[test]
    fn only_open_limit_orders_can_be_modified() {
        let mut ex = exchange();
        let (id, price) = resting_bid(&mut ex, "GTC");
        ex.cancel_order(
            &params(&[("symbol", "BTCUSDT"), ("orderId", &id.to_string())]),
            NOW,
        )
        .unwrap();
        let refused = ex.modify(&modify(id, "0.020", price), NOW).unwrap_err();
        assert_eq!(refused.code, -2013);

        let market = ex
            .place_order(
                &params(&[
                    ("symbol", "BTCUSDT"),
                    ("side", "BUY"),
                    ("type", "MARKET"),
                    ("quantity", "0.010"),
                ]),
                NOW,
            )
            .unwrap();
        let refused = ex.modify(&modify(market, "0.020", price), NOW).unwrap_err();
        assert_eq!(refused.code, -5025);
    }

    #[test]
    fn a_post_only_order_moved_across_the_book_is_cancelled_by_the_amendment() {
        let mut ex = exchange();
        let (id, _) = resting_bid(&mut ex, "GTX");
        let ask = ex.markets["BTCUSDT"].best_ask();
        assert_eq!(ex.modify(&modify(id, "0.010", ask), NOW + 1), Ok(id));
        assert_eq!(ex.order_by_id(id).unwrap().status, OrderStatus::Canceled);
        assert_eq!(executions(&mut ex), ["AMENDMENT/NEW", "CANCELED/CANCELED"]);
    }

    #[test]
    fn a_bid_moved_across_the_book_goes_to_the_filler_like_a_new_taker_order() {
        let mut ex = exchange();
        let (id, _) = resting_bid(&mut ex, "GTC");
        let ask = ex.markets["BTCUSDT"].best_ask();
        ex.modify(&modify(id, "0.010", ask), NOW + 1).unwrap();
        assert_eq!(ex.drain_to_fill(), [id]);
        assert!(ex.order_by_id(id).unwrap().taker_pending);
    }

    #[test]
    fn a_partially_filled_order_cut_to_what_executed_is_cancelled() {
        let mut ex = exchange();
        let (id, price) = resting_bid(&mut ex, "GTC");
        // Half of it executes at its price, as a resting maker fill would.
        ex.apply_fill(id, price, "0.005".parse().unwrap(), true, NOW + 1);
        ex.drain_outbox();
        assert_eq!(ex.modify(&modify(id, "0.005", price), NOW + 2), Ok(id));
        let order = ex.order_by_id(id).unwrap();
        assert_eq!(order.status, OrderStatus::Canceled);
        assert_eq!(order.executed_qty, "0.005".parse().unwrap());
        assert_eq!(
            executions(&mut ex),
            ["AMENDMENT/PARTIALLY_FILLED", "CANCELED/CANCELED"]
        );
    }

    #[test]
    fn a_request_without_an_order_or_a_figure_is_refused_at_the_edge() {
        let missing = [
            (
                vec![
                    ("symbol", "BTCUSDT"),
                    ("side", "BUY"),
                    ("quantity", "1"),
                    ("price", "1"),
                ],
                -1102,
            ),
            (
                vec![
                    ("symbol", "BTCUSDT"),
                    ("orderId", "1"),
                    ("side", "BUY"),
                    ("price", "1"),
                ],
                -1102,
            ),
            (
                vec![
                    ("symbol", "BTCUSDT"),
                    ("orderId", "1"),
                    ("side", "BUY"),
                    ("quantity", "1"),
                ],
                -1102,
            ),
            (
                vec![
                    ("symbol", "BTCUSDT"),
                    ("orderId", "1"),
                    ("side", "UP"),
                    ("quantity", "1"),
                    ("price", "1"),
                ],
                -1117,
            ),
            (
                vec![
                    ("symbol", "BTCUSDT"),
                    ("orderId", "1"),
                    ("side", "BUY"),
                    ("quantity", "1"),
                    ("priceMatch", "QUEUE"),
                ],
                -1106,
            ),
        ];
        for (pairs, code) in missing {
            let refused = ModifyRequest::from_params(&params(&pairs)).unwrap_err();
            assert_eq!(refused.code, code, "{pairs:?}");
        }
        let both = ModifyRequest::from_params(&params(&[
            ("symbol", "BTCUSDT"),
            ("orderId", "7"),
            ("origClientOrderId", "x"),
            ("side", "BUY"),
            ("quantity", "1"),
            ("price", "2"),
        ]))
        .unwrap();
        assert_eq!(both.order, OrderRef::Id(7), "orderId prevails");
    }
}
