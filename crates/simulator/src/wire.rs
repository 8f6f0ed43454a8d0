//! JSON shapes of the simulator's replies and stream events, field for field as Binance's
//! documentation prints them (see `testdata/binance/`): decimals as strings at the symbol's
//! precision, ids and times as integers.

use rust_decimal::Decimal;
use serde_json::{json, Value};

use crate::market::{AggTrade, PublicTrade};
use crate::model::{AlgoOrder, Order, Position, PositionSide, Trade};
use crate::symbols::{fixed, SymbolSpec};

/// Which endpoint an order object is rendered for; the documented shapes differ slightly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderShape {
    /// `POST /fapi/v1/order` and `DELETE /fapi/v1/order`: with `cumQty`, without `time`.
    Reply,
    /// Query and list endpoints: with `time`, without `cumQty`.
    Query,
}

pub(crate) fn order(order: &Order, spec: &SymbolSpec, shape: OrderShape) -> Value {
    let mut v = json!({
        "orderId": order.order_id,
        "symbol": order.symbol,
        "status": order.status.as_str(),
        "clientOrderId": order.client_order_id,
        "price": if order.price.is_zero() { "0".to_string() } else { spec.fmt_price(order.price) },
        "avgPrice": spec.fmt_avg(order.avg_price()),
        "origQty": spec.fmt_qty(order.orig_qty),
        "executedQty": spec.fmt_qty(order.executed_qty),
        "cumQuote": fmt_quote(order.cum_quote),
        "timeInForce": order.time_in_force.as_str(),
        "type": order.order_type.as_str(),
        "reduceOnly": order.reduce_only,
        "closePosition": order.close_position,
        "side": order.side.as_str(),
        "positionSide": order.position_side.as_str(),
        "stopPrice": if order.stop_price.is_zero() { "0".to_string() } else { spec.fmt_price(order.stop_price) },
        "workingType": order.working_type,
        "priceProtect": order.price_protect,
        "origType": order.orig_type.as_str(),
        "priceMatch": "NONE",
        "selfTradePreventionMode": "NONE",
        "goodTillDate": order.good_till_date,
        "updateTime": order.update_time,
    });
    match shape {
        OrderShape::Reply => v["cumQty"] = json!(spec.fmt_qty(order.executed_qty)),
        OrderShape::Query => v["time"] = json!(order.time),
    }
    v
}

/// Quote amounts (cumQuote, quoteQty) have no fixed precision on Binance: "0" when nothing has
/// traded, the exact product otherwise.
pub(crate) fn fmt_quote(value: Decimal) -> String {
    if value.is_zero() {
        "0".to_string()
    } else {
        value.normalize().to_string()
    }
}

/// Account amounts (balances, margins, PnL) carry eight decimals.
pub(crate) fn fmt8(value: Decimal) -> String {
    fixed(value, 8)
}

pub(crate) fn trade(trade: &Trade, spec: &SymbolSpec) -> Value {
    json!({
        "buyer": trade.side.as_str() == "BUY",
        "commission": fmt8(trade.commission),
        "commissionAsset": "USDT",
        "id": trade.id,
        "maker": trade.maker,
        "orderId": trade.order_id,
        "price": spec.fmt_price(trade.price),
        "qty": spec.fmt_qty(trade.qty),
        "quoteQty": fmt_quote(trade.price * trade.qty),
        "realizedPnl": fmt8(trade.realized_pnl),
        "side": trade.side.as_str(),
        "positionSide": trade.position_side.as_str(),
        "symbol": trade.symbol,
        "time": trade.time,
    })
}

/// A public trade, as `GET /fapi/v1/trades` and `historicalTrades` list it. The simulator has no
/// RPI orders, so no trade is an RPI trade.
pub(crate) fn public_trade(trade: &PublicTrade, spec: &SymbolSpec) -> Value {
    json!({
        "id": trade.id,
        "price": spec.fmt_price(trade.price),
        "qty": spec.fmt_qty(trade.qty),
        "quoteQty": fmt_quote(trade.price * trade.qty),
        "time": trade.time,
        "isBuyerMaker": trade.buyer_maker,
        "isRPITrade": false,
    })
}

/// An aggregate trade, as `GET /fapi/v1/aggTrades` lists it.
pub(crate) fn agg_trade(agg: &AggTrade, spec: &SymbolSpec) -> Value {
    json!({
        "a": agg.id,
        "p": spec.fmt_price(agg.price),
        "q": spec.fmt_qty(agg.qty),
        "f": agg.first_id,
        "l": agg.last_id,
        "T": agg.time,
        "m": agg.buyer_maker,
    })
}

/// `ORDER_TRADE_UPDATE` for an order change; `fill` is this event's trade, if it is one.
pub(crate) fn order_trade_update(
    order: &Order,
    spec: &SymbolSpec,
    execution_type: &str,
    fill: Option<&Trade>,
    event_time: i64,
) -> Value {
    let zero = "0".to_string();
    json!({
        "e": "ORDER_TRADE_UPDATE",
        "E": event_time,
        "T": order.update_time,
        "o": {
            "s": order.symbol,
            "c": order.client_order_id,
            "S": order.side.as_str(),
            "o": order.order_type.as_str(),
            "f": order.time_in_force.as_str(),
            "q": spec.fmt_qty(order.orig_qty),
            "p": if order.price.is_zero() { zero.clone() } else { spec.fmt_price(order.price) },
            "ap": spec.fmt_avg(order.avg_price()),
            "sp": if order.stop_price.is_zero() { zero.clone() } else { spec.fmt_price(order.stop_price) },
            "x": execution_type,
            "X": order.status.as_str(),
            "i": order.order_id,
            "l": fill.map_or(zero.clone(), |t| spec.fmt_qty(t.qty)),
            "z": spec.fmt_qty(order.executed_qty),
            "L": fill.map_or(zero.clone(), |t| spec.fmt_price(t.price)),
            "N": "USDT",
            "n": fill.map_or(zero.clone(), |t| fmt8(t.commission)),
            "T": fill.map_or(order.update_time, |t| t.time),
            "t": fill.map_or(0, |t| t.id),
            "b": "0",
            "a": "0",
            "m": fill.is_some_and(|t| t.maker),
            "R": order.reduce_only,
            "wt": order.working_type,
            "ot": order.orig_type.as_str(),
            "ps": order.position_side.as_str(),
            "cp": order.close_position,
            "pP": order.price_protect,
            "si": 0,
            "ss": 0,
            "rp": fill.map_or(zero, |t| fmt8(t.realized_pnl)),
            "V": "NONE",
            "pm": "NONE",
            "gtd": order.good_till_date,
            "er": order.expire_reason.to_string(),
        }
    })
}

pub(crate) fn trade_lite(order: &Order, spec: &SymbolSpec, fill: &Trade, event_time: i64) -> Value {
    json!({
        "e": "TRADE_LITE",
        "E": event_time,
        "T": fill.time,
        "s": order.symbol,
        "q": spec.fmt_qty(order.orig_qty),
        "p": if order.price.is_zero() { "0".to_string() } else { spec.fmt_price(order.price) },
        "m": fill.maker,
        "c": order.client_order_id,
        "S": order.side.as_str(),
        "L": spec.fmt_price(fill.price),
        "l": spec.fmt_qty(fill.qty),
        "t": fill.id,
        "i": order.order_id,
    })
}

/// One position row of `ACCOUNT_UPDATE`.
pub(crate) fn account_update_position(
    symbol: &str,
    side: PositionSide,
    position: &Position,
    spec: &SymbolSpec,
    mark: Decimal,
    margin_type: &str,
) -> Value {
    json!({
        "s": symbol,
        "pa": spec.fmt_qty(position.amount),
        "ep": spec.fmt_avg(position.entry_price),
        "bep": spec.fmt_avg(position.entry_price),
        "cr": fmt8(position.realized),
        "up": fmt8(unrealized(position, mark)),
        "mt": margin_type,
        "iw": "0",
        "ps": side.as_str(),
    })
}

pub(crate) fn unrealized(position: &Position, mark: Decimal) -> Decimal {
    (mark - position.entry_price) * position.amount
}

pub(crate) fn algo_order(algo: &AlgoOrder, spec: &SymbolSpec, with_actual: bool) -> Value {
    let mut v = json!({
        "algoId": algo.algo_id,
        "clientAlgoId": algo.client_algo_id,
        "algoType": "CONDITIONAL",
        "orderType": algo.order_type.as_str(),
        "symbol": algo.symbol,
        "side": algo.side.as_str(),
        "positionSide": algo.position_side.as_str(),
        "timeInForce": algo.time_in_force.as_str(),
        "quantity": algo.quantity.map_or("0".to_string(), |q| spec.fmt_qty(q)),
        "algoStatus": algo.status.as_str(),
        "triggerPrice": spec.fmt_price(algo.trigger_price),
        "price": spec.fmt_price(algo.price),
        "icebergQuantity": null,
        "selfTradePreventionMode": "NONE",
        "workingType": algo.working_type,
        "priceMatch": "NONE",
        "closePosition": algo.close_position,
        "priceProtect": algo.price_protect,
        "reduceOnly": algo.reduce_only,
        "activatePrice": algo.activate_price.map_or(String::new(), |p| spec.fmt_price(p)),
        "callbackRate": algo.callback_rate.map_or(String::new(), |r| r.normalize().to_string()),
        "createTime": algo.create_time,
        "updateTime": algo.update_time,
        "triggerTime": algo.trigger_time,
        "goodTillDate": 0,
    });
    if with_actual {
        // The documented query shape has no trailing fields; they stay for trailing stops only.
        if algo.order_type != crate::model::OrderType::TrailingStopMarket {
            if let Some(map) = v.as_object_mut() {
                map.remove("activatePrice");
                map.remove("callbackRate");
            }
        }
        let zero_price = spec.fmt_price(Decimal::ZERO);
        v["actualOrderId"] = json!(algo
            .actual_order_id
            .map_or(String::new(), |id| id.to_string()));
        v["actualPrice"] = json!(spec.fmt_avg(Decimal::ZERO));
        v["tpTriggerPrice"] = json!(zero_price);
        v["tpPrice"] = json!(zero_price);
        v["slTriggerPrice"] = json!(zero_price);
        v["slPrice"] = json!(zero_price);
        v["tpOrderType"] = json!("");
    }
    v
}

/// `ALGO_UPDATE`; `actual` is the triggered order's (id, avg price, executed qty), if any.
pub(crate) fn algo_update(
    algo: &AlgoOrder,
    spec: &SymbolSpec,
    actual: Option<&Order>,
    event_time: i64,
) -> Value {
    json!({
        "e": "ALGO_UPDATE",
        "T": algo.update_time,
        "E": event_time,
        "o": {
            "caid": algo.client_algo_id,
            "aid": algo.algo_id,
            "at": "CONDITIONAL",
            "o": algo.order_type.as_str(),
            "s": algo.symbol,
            "S": algo.side.as_str(),
            "ps": algo.position_side.as_str(),
            "f": algo.time_in_force.as_str(),
            "q": algo.quantity.map_or("0".to_string(), |q| spec.fmt_qty(q)),
            "X": algo.status.as_str(),
            "ai": actual.map_or(String::new(), |o| o.order_id.to_string()),
            "ap": spec.fmt_avg(actual.map_or(Decimal::ZERO, Order::avg_price)),
            "aq": spec.fmt_avg(actual.map_or(Decimal::ZERO, |o| o.executed_qty)),
            "act": "0",
            "tp": spec.fmt_price(algo.trigger_price),
            "p": spec.fmt_price(algo.price),
            "V": "NONE",
            "wt": algo.working_type,
            "pm": "NONE",
            "cp": algo.close_position,
            "pP": algo.price_protect,
            "R": algo.reduce_only,
            "tt": algo.trigger_time,
            "gtd": 0,
            "rm": algo.reject_reason,
        }
    })
}
