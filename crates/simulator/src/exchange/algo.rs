//! Conditional orders on the Algo Order API (`/fapi/v1/algoOrder`, `algoOpenOrders`,
//! `openAlgoOrders`, `allAlgoOrders`): placing, cancelling and listing them, watching the mark or
//! contract price for their trigger, and turning a triggered one into a MARKET or LIMIT order
//! that the filler executes. Binance caps open conditional orders at 200 per account.

use super::*;

impl Exchange {
    pub(crate) fn place_algo(&mut self, params: &Params, now: i64) -> Result<Value, ApiError> {
        match params.get("algoType") {
            Some("CONDITIONAL") => {}
            Some(_) => return Err(ApiError::bad(-1102, "Invalid algoType.")),
            None => return Err(ApiError::mandatory("algoType")),
        }
        let symbol = self.symbol_param(params)?;
        let side = Side::parse(params.required("side")?)?;
        let order_type = OrderType::parse(params.required("type")?)?;
        if !order_type.is_conditional() {
            return Err(ApiError::bad(-1116, "Invalid orderType."));
        }
        let position_side = self.position_side_param(params)?;
        let client_algo_id = self.client_order_id(params, "clientAlgoId")?;
        if self
            .algos
            .values()
            .any(|a| a.status == AlgoStatus::New && a.client_algo_id == client_algo_id)
        {
            return Err(ApiError::bad(-4116, "ClientOrderId is duplicated."));
        }
        let spec = self.spec(&symbol)?.clone();
        let close_position = params.boolean("closePosition")?.unwrap_or(false);
        let reduce_only = params.boolean("reduceOnly")?.unwrap_or(false);
        let quantity = params.decimal("quantity")?;
        let quantity = if close_position {
            if quantity.is_some() {
                return Err(ApiError::bad(
                    -1106,
                    "Parameter 'quantity' sent when not required.",
                ));
            }
            if reduce_only {
                return Err(ApiError::bad(
                    -1106,
                    "Parameter 'reduceOnly' sent when not required.",
                ));
            }
            None
        } else {
            let q = quantity.ok_or_else(|| ApiError::mandatory("quantity"))?;
            check_quantity(&spec, q, true)?;
            Some(q)
        };
        let mark = self.mark(&symbol);
        let working_type = match params.get("workingType") {
            None | Some("CONTRACT_PRICE") => "CONTRACT_PRICE",
            Some("MARK_PRICE") => "MARK_PRICE",
            Some(_) => return Err(ApiError::malformed("workingType")),
        };
        let (trigger_price, activate_price, callback_rate) =
            if order_type == OrderType::TrailingStopMarket {
                let rate = params
                    .decimal("callbackRate")?
                    .ok_or_else(|| ApiError::mandatory("callbackRate"))?;
                if rate < Decimal::new(1, 1) || rate > Decimal::TEN {
                    return Err(ApiError::bad(-2007, "Invalid callBack rate."));
                }
                let activate = params.decimal("activatePrice")?;
                if let Some(p) = activate {
                    check_price(&spec, p)?;
                    let immediate = if side == Side::Sell {
                        p <= mark
                    } else {
                        p >= mark
                    };
                    if immediate {
                        return Err(ApiError::bad(-2021, "Order would immediately trigger."));
                    }
                }
                (Decimal::ZERO, activate, Some(rate))
            } else {
                let trigger = params
                    .decimal("triggerPrice")?
                    .ok_or_else(|| ApiError::mandatory("triggerPrice"))?;
                check_price(&spec, trigger)?;
                if algo_condition_met(order_type, side, trigger, mark) {
                    return Err(ApiError::bad(-2021, "Order would immediately trigger."));
                }
                (trigger, None, None)
            };
        let (time_in_force, price) =
            if matches!(order_type, OrderType::Stop | OrderType::TakeProfit) {
                let price = params
                    .decimal("price")?
                    .ok_or_else(|| ApiError::mandatory("price"))?;
                check_price(&spec, price)?;
                let tif = params
                    .get("timeInForce")
                    .map(TimeInForce::parse)
                    .transpose()?
                    .unwrap_or(TimeInForce::Gtc);
                (tif, price)
            } else {
                (TimeInForce::Gtc, Decimal::ZERO)
            };
        if self
            .algos
            .values()
            .filter(|a| a.status == AlgoStatus::New)
            .count()
            >= MAX_OPEN_ALGO_ORDERS
        {
            return Err(ApiError::bad(-4045, "Reach max stop order limit."));
        }
        let algo_id = self.next_algo_id;
        self.next_algo_id += 1;
        let algo = AlgoOrder {
            algo_id,
            client_algo_id,
            order_type,
            symbol,
            side,
            position_side,
            time_in_force,
            quantity,
            price,
            trigger_price,
            working_type,
            close_position,
            price_protect: params.boolean("priceProtect")?.unwrap_or(false),
            reduce_only,
            activate_price,
            callback_rate,
            status: AlgoStatus::New,
            create_time: now,
            update_time: now,
            trigger_time: 0,
            actual_order_id: None,
            reject_reason: String::new(),
            trailing_active: activate_price.is_none(),
            trailing_extreme: mark,
        };
        let reply = wire::algo_order(&algo, &spec, false);
        self.algos.insert(algo_id, algo);
        self.emit_algo(algo_id, now);
        Ok(reply)
    }

    pub(super) fn find_algo(&self, params: &Params) -> Result<&AlgoOrder, ApiError> {
        let found = if let Some(id) = params.int("algoId")? {
            self.algos.get(&id)
        } else if let Some(client_id) = params.get("clientAlgoId") {
            self.algos
                .values()
                .rev()
                .find(|a| a.client_algo_id == client_id)
        } else {
            return Err(ApiError::bad(
                -1102,
                "Either algoId or clientAlgoId must be sent.",
            ));
        };
        found.ok_or_else(|| ApiError::bad(-2013, "Order does not exist."))
    }

    pub(crate) fn query_algo(&self, params: &Params) -> Result<Value, ApiError> {
        let algo = self.find_algo(params)?;
        Ok(wire::algo_order(
            algo,
            &self.markets[&algo.symbol].spec,
            true,
        ))
    }

    pub(crate) fn cancel_algo(&mut self, params: &Params, now: i64) -> Result<Value, ApiError> {
        let algo = self
            .find_algo(params)
            .map_err(|_| ApiError::bad(-2011, "Unknown order sent."))?;
        if algo.status != AlgoStatus::New {
            return Err(ApiError::bad(-2011, "Unknown order sent."));
        }
        let (algo_id, client_algo_id) = (algo.algo_id, algo.client_algo_id.clone());
        self.set_algo_status(algo_id, AlgoStatus::Canceled, "", now);
        Ok(
            json!({ "algoId": algo_id, "clientAlgoId": client_algo_id, "code": "200", "msg": "success" }),
        )
    }

    pub(crate) fn cancel_all_algos(&mut self, symbol: &str, now: i64) {
        let ids: Vec<i64> = self
            .algos
            .values()
            .filter(|a| a.symbol == symbol && a.status == AlgoStatus::New)
            .map(|a| a.algo_id)
            .collect();
        for id in ids {
            self.set_algo_status(id, AlgoStatus::Canceled, "", now);
        }
    }

    pub(crate) fn open_algos(&self, symbol: Option<&str>) -> Vec<Value> {
        self.algos
            .values()
            .filter(|a| a.status == AlgoStatus::New && symbol.is_none_or(|s| a.symbol == s))
            .map(|a| wire::algo_order(a, &self.markets[&a.symbol].spec, true))
            .collect()
    }

    pub(crate) fn all_algos(&self, params: &Params) -> Result<Vec<Value>, ApiError> {
        let symbol = self.symbol_param(params)?;
        let limit = params.int("limit")?.unwrap_or(500).clamp(1, 1000) as usize;
        let mut rows: Vec<&AlgoOrder> =
            self.algos.values().filter(|a| a.symbol == symbol).collect();
        page(&mut rows, false, limit);
        Ok(rows
            .into_iter()
            .map(|a| wire::algo_order(a, &self.markets[&a.symbol].spec, true))
            .collect())
    }

    pub(super) fn set_algo_status(
        &mut self,
        algo_id: i64,
        status: AlgoStatus,
        reason: &str,
        now: i64,
    ) {
        let Some(algo) = self.algos.get_mut(&algo_id) else {
            return;
        };
        if algo.status == status {
            return;
        }
        algo.status = status;
        algo.update_time = now;
        algo.reject_reason = reason.to_string();
        self.emit_algo(algo_id, now);
    }

    pub(super) fn emit_algo(&mut self, algo_id: i64, now: i64) {
        let algo = &self.algos[&algo_id];
        let actual = algo.actual_order_id.and_then(|id| self.orders.get(&id));
        let payload = wire::algo_update(algo, &self.markets[&algo.symbol].spec, actual, now);
        self.outbox.push(Outgoing::User {
            event: "ALGO_UPDATE",
            payload,
        });
    }

    /// Checks every waiting algo order of `symbol` against its mark price, and triggers those
    /// whose condition holds: the algo order places a MARKET (or LIMIT) order that fills like any
    /// other, and ends `FINISHED` when that order is final.
    pub(super) fn evaluate_algos(&mut self, symbol: &str, now: i64) {
        let mark = self.mark(symbol);
        let ids: Vec<i64> = self
            .algos
            .values()
            .filter(|a| a.symbol == symbol && a.status == AlgoStatus::New)
            .map(|a| a.algo_id)
            .collect();
        for id in ids {
            let algo = self.algos.get_mut(&id).expect("algo exists");
            let fire = if algo.order_type == OrderType::TrailingStopMarket {
                let rate = algo.callback_rate.unwrap_or(Decimal::ONE) / Decimal::ONE_HUNDRED;
                if !algo.trailing_active {
                    let reached = algo.activate_price.is_some_and(|p| {
                        if algo.side == Side::Sell {
                            mark >= p
                        } else {
                            mark <= p
                        }
                    });
                    if reached {
                        algo.trailing_active = true;
                        algo.trailing_extreme = mark;
                    }
                }
                if algo.trailing_active {
                    // The extreme only moves in the position's favour; the trigger trails it.
                    if algo.side == Side::Sell {
                        algo.trailing_extreme = algo.trailing_extreme.max(mark);
                        mark <= algo.trailing_extreme * (Decimal::ONE - rate)
                    } else {
                        algo.trailing_extreme = algo.trailing_extreme.min(mark);
                        mark >= algo.trailing_extreme * (Decimal::ONE + rate)
                    }
                } else {
                    false
                }
            } else {
                algo_condition_met(algo.order_type, algo.side, algo.trigger_price, mark)
            };
            if fire {
                self.trigger_algo(id, now);
            }
        }
    }

    pub(super) fn trigger_algo(&mut self, algo_id: i64, now: i64) {
        let algo = self.algos[&algo_id].clone();
        {
            let a = self.algos.get_mut(&algo_id).expect("algo exists");
            a.trigger_time = now;
        }
        self.set_algo_status(algo_id, AlgoStatus::Triggering, "", now);
        let position = self.position(&algo.symbol, algo.position_side);
        let closes = match algo.position_side {
            PositionSide::Both => {
                !position.amount.is_zero()
                    && position.amount.is_sign_positive() != (algo.side == Side::Buy)
            }
            PositionSide::Long => algo.side == Side::Sell && !position.amount.is_zero(),
            PositionSide::Short => algo.side == Side::Buy && !position.amount.is_zero(),
        };
        let quantity = match algo.quantity {
            Some(q) => q,
            None if closes => position.amount.abs(),
            None => {
                self.set_algo_status(algo_id, AlgoStatus::Expired, "No position to close", now);
                return;
            }
        };
        if (algo.reduce_only || algo.close_position) && !closes {
            self.set_algo_status(algo_id, AlgoStatus::Rejected, "Reduce Only reject", now);
            return;
        }
        let market_type = matches!(
            algo.order_type,
            OrderType::StopMarket | OrderType::TakeProfitMarket | OrderType::TrailingStopMarket
        );
        let order_id = self.next_order_id;
        self.next_order_id += 1;
        let order = Order {
            order_id,
            symbol: algo.symbol.clone(),
            // The triggered order carries the algo order's client id, so a client can tie the fill
            // to the protective order it placed.
            client_order_id: algo.client_algo_id.clone(),
            side: algo.side,
            position_side: algo.position_side,
            order_type: if market_type {
                OrderType::Market
            } else {
                OrderType::Limit
            },
            orig_type: algo.order_type,
            time_in_force: algo.time_in_force,
            orig_qty: quantity,
            price: if market_type {
                Decimal::ZERO
            } else {
                algo.price
            },
            stop_price: algo.trigger_price,
            status: OrderStatus::New,
            executed_qty: Decimal::ZERO,
            cum_quote: Decimal::ZERO,
            reduce_only: algo.reduce_only || algo.close_position,
            close_position: algo.close_position,
            working_type: algo.working_type,
            price_protect: algo.price_protect,
            good_till_date: 0,
            time: now,
            update_time: now,
            expire_reason: 0,
            chunks_left: 1,
            taker_pending: true,
            algo_id: Some(algo_id),
        };
        self.orders.insert(order_id, order);
        self.algos
            .get_mut(&algo_id)
            .expect("algo exists")
            .actual_order_id = Some(order_id);
        self.set_algo_status(algo_id, AlgoStatus::Triggered, "", now);
        self.emit_order(order_id, "NEW", None, now);
        self.to_fill.push(order_id);
    }
}

/// STOP fires when the price moves against the order's side beyond the trigger (a SELL stop when
/// the price falls to it); TAKE_PROFIT is the reverse.
fn algo_condition_met(order_type: OrderType, side: Side, trigger: Decimal, price: Decimal) -> bool {
    match (order_type, side) {
        (OrderType::Stop | OrderType::StopMarket, Side::Buy) => price >= trigger,
        (OrderType::Stop | OrderType::StopMarket, Side::Sell) => price <= trigger,
        (OrderType::TakeProfit | OrderType::TakeProfitMarket, Side::Buy) => price <= trigger,
        (OrderType::TakeProfit | OrderType::TakeProfitMarket, Side::Sell) => price >= trigger,
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_800_000_000_000;

    fn params(pairs: &[(&str, &str)]) -> Params {
        let query: Vec<String> = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect();
        Params::parse(&query.join("&"), "")
    }

    #[test]
    fn stops_fire_against_the_side_and_take_profits_with_it() {
        let d = |s: &str| s.parse::<Decimal>().unwrap();
        let cases = [
            (OrderType::StopMarket, Side::Sell, "100", "100", true),
            (OrderType::StopMarket, Side::Sell, "100", "100.1", false),
            (OrderType::StopMarket, Side::Buy, "100", "100", true),
            (OrderType::StopMarket, Side::Buy, "100", "99.9", false),
            (OrderType::TakeProfitMarket, Side::Sell, "100", "100", true),
            (
                OrderType::TakeProfitMarket,
                Side::Sell,
                "100",
                "99.9",
                false,
            ),
            (OrderType::TakeProfitMarket, Side::Buy, "100", "99", true),
            (OrderType::TakeProfitMarket, Side::Buy, "100", "101", false),
        ];
        for (kind, side, trigger, price, fires) in cases {
            assert_eq!(
                algo_condition_met(kind, side, d(trigger), d(price)),
                fires,
                "{kind:?} {side:?} trigger {trigger} at {price}"
            );
        }
    }

    #[test]
    fn a_closing_stop_triggers_once_the_mark_crosses_and_becomes_an_order() {
        let mut ex = Exchange::new(&SimConfig::default()).expect("default config");
        ex.start(NOW);
        let buy = ex
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
        let last = ex.markets["BTCUSDT"].last;
        ex.apply_fill(buy, last, "0.010".parse().unwrap(), false, NOW);
        let spec = ex.markets["BTCUSDT"].spec.clone();
        let trigger = spec.round_price_down(last * Decimal::new(95, 2));
        let reply = ex
            .place_algo(
                &params(&[
                    ("algoType", "CONDITIONAL"),
                    ("symbol", "BTCUSDT"),
                    ("side", "SELL"),
                    ("type", "STOP_MARKET"),
                    ("triggerPrice", &trigger.to_string()),
                    ("closePosition", "true"),
                    ("workingType", "MARK_PRICE"),
                ]),
                NOW,
            )
            .unwrap();
        let algo_id = reply["algoId"].as_i64().unwrap();
        ex.drain_to_fill();
        ex.evaluate_algos("BTCUSDT", NOW + 1);
        assert_eq!(
            ex.algos[&algo_id].status,
            AlgoStatus::New,
            "not crossed yet"
        );
        ex.markets.get_mut("BTCUSDT").unwrap().mark = trigger - spec.tick_size;
        ex.evaluate_algos("BTCUSDT", NOW + 2);
        assert_eq!(ex.algos[&algo_id].status, AlgoStatus::Triggered);
        let to_fill = ex.drain_to_fill();
        assert_eq!(to_fill.len(), 1, "the triggered stop became one order");
        assert_eq!(ex.orders[&to_fill[0]].side, Side::Sell);
        ex.evaluate_algos("BTCUSDT", NOW + 3);
        assert!(ex.drain_to_fill().is_empty(), "a stop triggers once");
    }
}
