//! New orders (`POST /fapi/v1/order`, each element of `POST /fapi/v1/batchOrders`, the WebSocket
//! API's `order.place`, and `POST /fapi/v1/order/test`).
//!
//! The request is read once at the edge into a typed [`NewOrderRequest`]: what a parameter says
//! on its own (a known side and type, a well-formed client id, a quantity, a price where the type
//! needs one) is checked there. [`Exchange::new_order`] then applies the rules that depend on the
//! exchange's state, in Binance's order: the symbol, a duplicate client id among open orders, the
//! position mode, the symbol's filters, PERCENT_PRICE, the minimum notional, reduce-only, the open
//! order cap, margin, and post-only. Both are synchronous and take the time as an argument.

use rust_decimal::Decimal;
use serde_json::Value;

use super::{check_client_id, check_price, check_quantity, Exchange};
use crate::auth::Params;
use crate::error::ApiError;
use crate::model::{Order, OrderStatus, OrderType, PositionSide, Side, TimeInForce};
use crate::wire::{self, OrderShape};

/// A new order, as sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewOrderRequest {
    pub(crate) symbol: String,
    pub(crate) side: Side,
    pub(crate) order_type: OrderType,
    /// `newClientOrderId`; one is generated when it is not sent.
    pub(crate) client_order_id: Option<String>,
    /// `positionSide`; `BOTH` when it is not sent.
    pub(crate) position_side: Option<PositionSide>,
    pub(crate) reduce_only: bool,
    pub(crate) quantity: Decimal,
    /// LIMIT: the time in force and the price; MARKET: GTC and zero.
    pub(crate) time_in_force: TimeInForce,
    pub(crate) price: Decimal,
    /// GTD only.
    pub(crate) good_till_date: Option<i64>,
}

impl NewOrderRequest {
    pub(crate) fn from_params(params: &Params) -> Result<NewOrderRequest, ApiError> {
        let symbol = params
            .symbol()
            .ok_or_else(|| ApiError::mandatory("symbol"))?;
        let side = Side::parse(params.required("side")?)?;
        let order_type = OrderType::parse(params.required("type")?)?;
        if order_type.is_conditional() {
            return Err(ApiError::bad(
                -4120,
                "Order type not supported for this endpoint. Please use the Algo Order API endpoints instead.",
            ));
        }
        let client_order_id = match params.get("newClientOrderId") {
            Some(id) => {
                check_client_id(id, "newClientOrderId")?;
                Some(id.to_string())
            }
            None => None,
        };
        let position_side = params
            .get("positionSide")
            .map(PositionSide::parse)
            .transpose()?;
        let reduce_only = params.boolean("reduceOnly")?.unwrap_or(false);
        if params.get("closePosition").is_some() {
            return Err(ApiError::bad(
                -1106,
                "Parameter 'closePosition' sent when not required.",
            ));
        }
        let quantity = params
            .decimal("quantity")?
            .ok_or_else(|| ApiError::mandatory("quantity"))?;
        let (time_in_force, price) = match order_type {
            OrderType::Limit => {
                let tif = TimeInForce::parse(params.required("timeInForce")?)?;
                let price = params
                    .decimal("price")?
                    .ok_or_else(|| ApiError::mandatory("price"))?;
                (tif, price)
            }
            _ => {
                if params.get("price").is_some() {
                    return Err(ApiError::bad(
                        -1106,
                        "Parameter 'price' sent when not required.",
                    ));
                }
                (TimeInForce::Gtc, Decimal::ZERO)
            }
        };
        let good_till_date = if time_in_force == TimeInForce::Gtd {
            Some(
                params
                    .int("goodTillDate")?
                    .ok_or_else(|| ApiError::mandatory("goodTillDate"))?,
            )
        } else {
            None
        };
        Ok(NewOrderRequest {
            symbol,
            side,
            order_type,
            client_order_id,
            position_side,
            reduce_only,
            quantity,
            time_in_force,
            price,
            good_till_date,
        })
    }
}

impl Exchange {
    /// `POST /fapi/v1/order` from its parameters (the edge's parse, then [`Exchange::place`]).
    pub(crate) fn place_order(&mut self, params: &Params, now: i64) -> Result<i64, ApiError> {
        let request = NewOrderRequest::from_params(params)?;
        self.place(&request, now)
    }

    /// Records the order as `NEW` and queues the `NEW` user event. Fills never happen here: taker
    /// orders go to the asynchronous filler; IOC and FOK orders with nothing to take expire.
    pub(crate) fn place(&mut self, request: &NewOrderRequest, now: i64) -> Result<i64, ApiError> {
        let (order, marketable) = self.new_order(request, now)?;
        let order_id = order.order_id;
        let time_in_force = order.time_in_force;
        self.next_order_id += 1;
        self.orders.insert(order_id, order);
        self.emit_order(order_id, "NEW", None, now);
        if marketable {
            self.to_fill.push(order_id);
        } else if matches!(time_in_force, TimeInForce::Ioc | TimeInForce::Fok) {
            // Nothing to take and nothing may rest.
            self.finish(order_id, OrderStatus::Expired, 2, now);
        }
        Ok(order_id)
    }

    /// `POST /fapi/v1/order/test`: every check `place` makes, and nothing else: no order is
    /// stored, sent to the book or announced. The reply is the order as it would have been
    /// accepted (Binance's documented shape for this endpoint), with `orderId` 0 since none exists.
    pub(crate) fn test_order(&mut self, params: &Params, now: i64) -> Result<Value, ApiError> {
        let request = NewOrderRequest::from_params(params)?;
        let (mut order, _) = self.new_order(&request, now)?;
        order.order_id = 0;
        Ok(wire::order(
            &order,
            &self.markets[&order.symbol].spec,
            OrderShape::Reply,
        ))
    }

    /// The order `request` would create (the state's rules, in Binance's order; see the module
    /// doc), with the id it would get, and whether it takes liquidity at once. Nothing is changed
    /// but the random source of generated client order ids.
    pub(super) fn new_order(
        &mut self,
        request: &NewOrderRequest,
        now: i64,
    ) -> Result<(Order, bool), ApiError> {
        let NewOrderRequest {
            ref symbol,
            side,
            order_type,
            ref client_order_id,
            position_side,
            reduce_only,
            quantity,
            time_in_force,
            price,
            good_till_date,
        } = *request;
        let spec = self.spec(symbol)?.clone();
        let market = self.market(symbol)?.clone();
        let client_order_id = match client_order_id {
            Some(id) => id.clone(),
            None => self.random_id(22),
        };
        if self
            .orders
            .values()
            .any(|o| o.is_open() && o.client_order_id == client_order_id)
        {
            return Err(ApiError::bad(-4116, "ClientOrderId is duplicated."));
        }
        let position_side = position_side.unwrap_or(PositionSide::Both);
        let fits = if self.dual_side {
            position_side != PositionSide::Both
        } else {
            position_side == PositionSide::Both
        };
        if !fits {
            return Err(ApiError::bad(
                -4061,
                "Order's position side does not match user's setting.",
            ));
        }
        if reduce_only && self.dual_side {
            return Err(ApiError::bad(
                -1106,
                "Parameter 'reduceonly' sent when not required.",
            ));
        }
        check_quantity(&spec, quantity, order_type == OrderType::Market)?;
        if order_type == OrderType::Limit {
            check_price(&spec, price)?;
            if side == Side::Buy && price > market.mark * spec.multiplier_up {
                let cap = spec.fmt_price(spec.round_price_down(market.mark * spec.multiplier_up));
                return Err(ApiError::bad(
                    -4016,
                    format!("Limit price can't be higher than {cap}."),
                ));
            }
            if side == Side::Sell && price < market.mark * spec.multiplier_down {
                let floor = spec.fmt_price(spec.round_price_up(market.mark * spec.multiplier_down));
                return Err(ApiError::bad(
                    -4024,
                    format!("Limit price can't be lower than {floor}."),
                ));
            }
        } else {
            let counter = if side == Side::Buy {
                market.best_ask()
            } else {
                market.best_bid()
            };
            if counter > market.mark * spec.multiplier_up
                || counter < market.mark * spec.multiplier_down
            {
                return Err(ApiError::bad(
                    -4131,
                    "The counterparty's best price does not meet the PERCENT_PRICE filter limit.",
                ));
            }
        }
        let good_till_date = match good_till_date {
            Some(gtd) if gtd <= now.saturating_add(600_000) => {
                return Err(ApiError::bad(
                    -4187,
                    "goodTillDate must be greater than current time plus 600 seconds.",
                ));
            }
            Some(gtd) => gtd,
            None => 0,
        };
        let reference_price = if price.is_zero() { market.mark } else { price };
        let notional = reference_price * quantity;
        if !reduce_only && notional < spec.min_notional {
            return Err(ApiError::bad(
                -4164,
                format!(
                    "Order's notional must be no smaller than {} (unless you choose reduce only).",
                    spec.min_notional.normalize()
                ),
            ));
        }
        let position = self.position(symbol, position_side);
        let increases = match position_side {
            PositionSide::Both => {
                position.amount.is_zero()
                    || position.amount.is_sign_positive() == (side == Side::Buy)
            }
            PositionSide::Long => side == Side::Buy,
            PositionSide::Short => side == Side::Sell,
        };
        if reduce_only && increases {
            return Err(ApiError::bad(-2022, "ReduceOnly Order is rejected."));
        }
        // In hedge mode a closing order (SELL LONG, BUY SHORT) may not exceed its position.
        if position_side != PositionSide::Both && !increases && quantity > position.amount.abs() {
            return Err(ApiError::bad(-2022, "ReduceOnly Order is rejected."));
        }
        let open_for_symbol = self
            .orders
            .values()
            .filter(|o| o.is_open() && o.symbol == *symbol)
            .count();
        if open_for_symbol >= spec.max_num_orders as usize {
            return Err(ApiError::bad(-2025, "Reach max open order limit."));
        }
        if increases && !reduce_only {
            let required = notional / Decimal::from(self.leverage_of(symbol));
            if required > self.available_balance() {
                return Err(ApiError::bad(-2019, "Margin is insufficient."));
            }
        }
        // Which part of a LIMIT order would take liquidity at once.
        let marketable = match order_type {
            OrderType::Market => true,
            _ => {
                (side == Side::Buy && price >= market.best_ask())
                    || (side == Side::Sell && price <= market.best_bid())
            }
        };
        if time_in_force == TimeInForce::Gtx && marketable {
            return Err(ApiError::bad(
                -5022,
                "Due to the order could not be executed as maker, the Post Only order will be rejected.",
            ));
        }
        let order = Order {
            order_id: self.next_order_id,
            symbol: symbol.clone(),
            client_order_id,
            side,
            position_side,
            order_type,
            orig_type: order_type,
            time_in_force,
            orig_qty: quantity,
            price,
            stop_price: Decimal::ZERO,
            status: OrderStatus::New,
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            reduce_only,
            close_position: false,
            working_type: "CONTRACT_PRICE",
            price_protect: false,
            good_till_date,
            time: now,
            update_time: now,
            expire_reason: 0,
            chunks_left: self.faults.partial_fills.max(1),
            taker_pending: marketable,
            algo_id: None,
        };
        Ok((order, marketable))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    const NOW: i64 = 1_800_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Params::parse(&query.join("&"), "")
    }

    fn exchange() -> Exchange {
        let mut ex = Exchange::new(&SimConfig::default()).expect("default config");
        ex.start(NOW);
        ex
    }

    /// A BTCUSDT request: a 0.010 MARKET buy, changed by `f`.
    fn request(f: impl FnOnce(&mut NewOrderRequest)) -> NewOrderRequest {
        let mut r = NewOrderRequest {
            symbol: "BTCUSDT".into(),
            side: Side::Buy,
            order_type: OrderType::Market,
            client_order_id: None,
            position_side: None,
            reduce_only: false,
            quantity: "0.010".parse().unwrap(),
            time_in_force: TimeInForce::Gtc,
            price: Decimal::ZERO,
            good_till_date: None,
        };
        f(&mut r);
        r
    }

    /// A LIMIT request at `pct` percent of the mark, rounded to the tick.
    fn limit_at(ex: &Exchange, side: Side, tif: TimeInForce, pct: i64) -> NewOrderRequest {
        let market = &ex.markets["BTCUSDT"];
        let price = market
            .spec
            .round_price_down(market.mark * Decimal::new(pct, 2));
        request(|r| {
            r.side = side;
            r.order_type = OrderType::Limit;
            r.time_in_force = tif;
            r.price = price;
        })
    }

    #[test]
    fn what_a_parameter_says_on_its_own_is_checked_at_the_edge() {
        let base = [
            ("symbol", "btcusdt"),
            ("side", "BUY"),
            ("type", "MARKET"),
            ("quantity", "0.010"),
        ];
        let parsed = NewOrderRequest::from_params(&params(&base)).unwrap();
        assert_eq!(parsed, request(|_| {}), "the symbol in either case");
        let with = |extra: &[(&'static str, &'static str)], drop: &str| {
            let mut all: Vec<(&str, &str)> =
                base.iter().copied().filter(|(k, _)| *k != drop).collect();
            all.extend_from_slice(extra);
            NewOrderRequest::from_params(&params(&all))
                .unwrap_err()
                .code
        };
        assert_eq!(with(&[], "side"), -1102);
        assert_eq!(with(&[("side", "UP")], "side"), -1117);
        assert_eq!(with(&[("type", "STOP_MARKET")], "type"), -4120);
        assert_eq!(with(&[], "quantity"), -1102);
        assert_eq!(
            with(&[("price", "1")], ""),
            -1106,
            "a MARKET order takes no price"
        );
        assert_eq!(with(&[("closePosition", "true")], ""), -1106);
        assert_eq!(with(&[("newClientOrderId", "has space")], ""), -1100);
        assert_eq!(
            with(&[("type", "LIMIT"), ("price", "1")], "type"),
            -1102,
            "timeInForce"
        );
        assert_eq!(
            with(
                &[("type", "LIMIT"), ("timeInForce", "GTD"), ("price", "1")],
                "type"
            ),
            -1102,
            "goodTillDate"
        );
    }

    #[test]
    fn a_market_order_is_new_then_goes_to_the_filler() {
        let mut ex = exchange();
        let id = ex.place(&request(|_| {}), NOW).unwrap();
        let order = ex.order_by_id(id).unwrap();
        assert_eq!(
            (order.status, order.executed_qty),
            (OrderStatus::New, Decimal::ZERO)
        );
        assert_eq!(
            ex.drain_to_fill(),
            [id],
            "fills are asynchronous, never in the reply"
        );
    }

    #[test]
    fn the_states_rules_refuse_with_binances_codes() {
        let mut ex = exchange();
        ex.place(&request(|r| r.client_order_id = Some("mine".into())), NOW)
            .unwrap();
        let cases: Vec<(NewOrderRequest, i64)> = vec![
            (request(|r| r.symbol = "NOPEUSDT".into()), -1121),
            (request(|r| r.client_order_id = Some("mine".into())), -4116),
            (
                request(|r| r.position_side = Some(PositionSide::Long)),
                -4061,
            ),
            (request(|r| r.quantity = "0.0105".parse().unwrap()), -1111),
            (request(|r| r.quantity = "0.001".parse().unwrap()), -4164),
            (
                request(|r| {
                    r.side = Side::Sell;
                    r.reduce_only = true;
                }),
                -2022,
            ),
            (request(|r| r.quantity = "100".parse().unwrap()), -2019),
            (limit_at(&ex, Side::Buy, TimeInForce::Gtx, 101), -5022),
            (limit_at(&ex, Side::Buy, TimeInForce::Gtc, 200), -4016),
        ];
        for (request, code) in cases {
            let refused = ex.place(&request, NOW).unwrap_err();
            assert_eq!(refused.code, code, "{request:?}: {refused:?}");
        }
    }

    #[test]
    fn an_ioc_bid_with_nothing_to_take_expires_at_once_and_a_gtc_one_rests() {
        let mut ex = exchange();
        let ioc = ex
            .place(&limit_at(&ex, Side::Buy, TimeInForce::Ioc, 98), NOW)
            .unwrap();
        assert_eq!(ex.order_by_id(ioc).unwrap().status, OrderStatus::Expired);
        let gtc = ex
            .place(&limit_at(&ex, Side::Buy, TimeInForce::Gtc, 98), NOW)
            .unwrap();
        assert_eq!(ex.order_by_id(gtc).unwrap().status, OrderStatus::New);
        assert!(ex.drain_to_fill().is_empty(), "neither takes liquidity");
    }

    #[test]
    fn a_gtd_order_must_live_more_than_ten_minutes() {
        let mut ex = exchange();
        let soon = request(|r| {
            *r = limit_at(&exchange(), Side::Buy, TimeInForce::Gtd, 98);
            r.good_till_date = Some(NOW + 600_000);
        });
        assert_eq!(ex.place(&soon, NOW).unwrap_err().code, -4187);
        let later = NewOrderRequest {
            good_till_date: Some(NOW + 600_001),
            ..soon
        };
        let id = ex.place(&later, NOW).unwrap();
        assert_eq!(ex.order_by_id(id).unwrap().good_till_date, NOW + 600_001);
    }

    #[test]
    fn a_test_order_changes_nothing() {
        let mut ex = exchange();
        let reply = ex
            .test_order(
                &params(&[
                    ("symbol", "BTCUSDT"),
                    ("side", "BUY"),
                    ("type", "MARKET"),
                    ("quantity", "0.010"),
                ]),
                NOW,
            )
            .unwrap();
        assert_eq!(reply["orderId"], 0);
        assert!(ex.drain_outbox().is_empty() && ex.drain_to_fill().is_empty());
        assert!(ex.open_orders(None).is_empty());
    }
}
