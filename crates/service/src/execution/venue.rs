//! The seam between the execution service and the exchange: every request the service makes per
//! intent, in the engine's terms (a [`Report`] about an order, sizing rules, a mark price, a
//! position amount). Binance's request and reply types stop here and in `reports.rs` (which
//! maps the user stream); placement, confirmation and results never see them. A second venue is
//! another adapter with these methods.
//!
//! With `execution.order_transport = "websocket"` the order's own requests (placement, its
//! lookups and its cancel) go over Binance's WebSocket API while the connection is up, and over
//! REST while it is down (nothing was sent on the socket, so nothing is doubled). The outcome
//! classes are the same either way: a lookup that got no reply is `Transient` (no answer; asked
//! again), a placement or cancel that got none is `Ambiguous` (never "not placed" or
//! "cancelled"). Everything else (rules, mark prices, positions, leverage, fees) stays on REST.
//!
//! Errors stay `binance::Error` for now: its classes (rejected, transient, ambiguous, not found)
//! are what the ambiguity and back-pressure policies decide on, and a second adapter would map
//! its failures onto the same classes.

use std::sync::Arc;

use binance::{NewOrder, OrderRef, ResponseType, RestClient};
use engine::{risk, sizing, OrderPlan, Report, ReportSource};
use model::ClientOrderId;
use rust_decimal::Decimal;

use super::reports::report_from_order;

/// An order as a lookup found it: what it says, and when it was created (ms).
#[derive(Debug, Clone)]
pub(super) struct FoundOrder {
    /// `None` when its status is one quantum does not know (logged by the caller).
    pub(super) report: Option<Report>,
    pub(super) status: String,
    pub(super) order_id: i64,
    pub(super) created_at: i64,
}

/// A symbol's trading rules, as sizing needs them.
#[derive(Debug, Clone)]
pub(super) struct Rules {
    /// The exchange's status of the symbol (`TRADING` when orders are taken).
    pub(super) status: String,
    pub(super) sizing: sizing::SymbolRules,
}

/// The Binance USDⓈ-M adapter. Cheap to clone (the clients are shared).
#[derive(Debug, Clone)]
pub(super) struct Venue {
    rest: RestClient,
    /// Order entry, lookups and cancels over the WebSocket API
    /// (`execution.order_transport = "websocket"`); REST carries them while this connection is
    /// down.
    ws: Option<binance::WsApiClient>,
}

impl Venue {
    pub(super) fn new(rest: RestClient) -> Venue {
        Venue { rest, ws: None }
    }

    /// Sends orders, their lookups and cancels over the WebSocket API from now on (REST stays
    /// the fallback).
    pub(super) fn with_ws_api(mut self, ws: binance::WsApiClient) -> Venue {
        self.ws = Some(ws);
        self
    }

    fn by_client_id(coid: &ClientOrderId) -> OrderRef {
        OrderRef::ClientOrderId(coid.to_string())
    }

    /// The symbol's rules (cached by the client, refreshed with exchangeInfo). An unknown symbol
    /// is `Ok(None)`.
    pub(super) async fn rules(&self, symbol: &str) -> Result<Option<Rules>, binance::Error> {
        let rules: Arc<binance::SymbolRules> = match self.rest.load_symbol_rules(symbol).await {
            Ok(rules) => rules,
            Err(binance::Error::InvalidRequest(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(Some(Rules {
            status: rules.status.clone(),
            sizing: sizing::SymbolRules {
                step_size: rules.market_lot.step_size,
                min_qty: rules.market_lot.min_qty,
                max_qty: if rules.market_lot.max_qty.is_zero() {
                    Decimal::MAX
                } else {
                    rules.market_lot.max_qty
                },
                min_notional: rules.min_notional.unwrap_or(Decimal::ZERO),
            },
        }))
    }

    /// The mark price over REST (`premiumIndex`).
    pub(super) async fn mark_price(&self, symbol: &str) -> Result<Decimal, binance::Error> {
        Ok(self.rest.premium_index(symbol).await?.mark_price)
    }

    /// The signed position amount of `symbol` on `side` over REST (`positionRisk`).
    pub(super) async fn position(
        &self,
        symbol: &str,
        side: model::PositionSide,
    ) -> Result<Decimal, binance::Error> {
        Ok(self
            .rest
            .position_risk(Some(symbol))
            .await?
            .iter()
            .filter(|p| p.symbol == symbol && p.position_side.to_model() == Some(side))
            .map(|p| p.position_amt)
            .sum())
    }

    /// Whether the account is in hedge mode (`GET /fapi/v1/positionSide/dual`, weight 30).
    pub(super) async fn hedge_mode(&self) -> Result<bool, binance::Error> {
        Ok(self.rest.position_mode().await?.dual_side_position)
    }

    pub(super) async fn set_leverage(
        &self,
        symbol: &str,
        leverage: u32,
    ) -> Result<(), binance::Error> {
        self.rest
            .change_leverage(symbol, leverage)
            .await
            .map(|_| ())
    }

    /// Places the approved order as a MARKET order that waits for its result
    /// (`newOrderRespType=RESULT`), and returns the reply as a report.
    pub(super) async fn place(
        &self,
        approved: &risk::RiskApproved<OrderPlan>,
    ) -> Result<FoundOrder, binance::Error> {
        let plan = approved.get();
        let order = NewOrder::market(
            plan.symbol.as_str(),
            plan.side,
            plan.quantity,
            plan.client_order_id.as_str(),
        )
        // Hedge mode takes no reduceOnly (-1106): there the position side says what closes.
        .reduce_only(plan.reduce_only && plan.position_side == model::PositionSide::Both);
        let order = NewOrder {
            position_side: (plan.position_side != model::PositionSide::Both)
                .then(|| plan.position_side.into()),
            ..order
        };
        if let Some(ws) = &self.ws {
            // ACK over the WebSocket API: replies on one connection come in order, so a RESULT
            // reply would hold back the other intents' requests; the fill is confirmed by the
            // user stream or a lookup, as always.
            let ack = order.clone().response_type(ResponseType::Ack);
            match ws.try_place_order(&ack).await {
                Some(reply) => return Ok(found(ReportSource::ResultReply, &reply?)),
                None => tracing::debug!(
                    "the WebSocket API is down; order {} goes over REST",
                    plan.client_order_id
                ),
            }
        }
        let order = order.response_type(ResponseType::Result);
        let reply = self.rest.place_order(&order).await?;
        Ok(found(ReportSource::ResultReply, &reply))
    }

    /// The order with client order id `coid`, if the exchange has it: `Ok(None)` only when the
    /// exchange said it does not exist, never for a request that got no answer. Its report's
    /// source is `RestPoll` whichever way it went: it means "a lookup" (`rest_poll` is the
    /// result JSON's name for that, and stays so).
    pub(super) async fn lookup(
        &self,
        symbol: &str,
        coid: &ClientOrderId,
    ) -> Result<Option<FoundOrder>, binance::Error> {
        let order_ref = Self::by_client_id(coid);
        let sent = match &self.ws {
            Some(ws) => ws.try_query_order(symbol, &order_ref).await,
            None => None,
        };
        let reply = match sent {
            Some(Ok(order)) => Ok(Some(order)),
            Some(Err(binance::Error::NotFound { .. })) => Ok(None),
            Some(Err(e)) => Err(e),
            None => {
                if self.ws.is_some() {
                    tracing::debug!(
                        "the WebSocket API is down; the lookup of {coid} goes over REST"
                    );
                }
                self.rest.find_order(symbol, &order_ref).await
            }
        };
        Ok(reply?.map(|order| found(ReportSource::RestPoll, &order)))
    }

    /// Cancels what is left of the order; its state after the cancel. An error is never
    /// "cancelled": an `Ambiguous` one means the cancel may or may not have happened.
    pub(super) async fn cancel(
        &self,
        symbol: &str,
        coid: &ClientOrderId,
    ) -> Result<FoundOrder, binance::Error> {
        let order_ref = Self::by_client_id(coid);
        let sent = match &self.ws {
            Some(ws) => ws.try_cancel_order(symbol, &order_ref).await,
            None => None,
        };
        let order = match sent {
            Some(reply) => reply?,
            None => {
                if self.ws.is_some() {
                    tracing::debug!(
                        "the WebSocket API is down; the cancel of {coid} goes over REST"
                    );
                }
                self.rest.cancel_order(symbol, &order_ref).await?
            }
        };
        Ok(found(ReportSource::RestPoll, &order))
    }

    /// The fees of the order's trades (`userTrades`): their sum and asset, `None` while the
    /// trades listed do not yet add up to `executed_qty` (a fee summed over part of the fills
    /// would be a wrong figure, not a smaller one). Sums that overflow are a decode error, not
    /// a panic: the figures are the exchange's, outside input.
    pub(super) async fn fees(
        &self,
        symbol: &str,
        order_id: i64,
        executed_qty: Decimal,
    ) -> Result<Option<(Decimal, String)>, binance::Error> {
        let trades = self.rest.user_trades(symbol, Some(order_id)).await?;
        let overflow = |what: &str| binance::Error::Decode {
            endpoint: "GET /fapi/v1/userTrades".into(),
            error: format!("the trades' {what} of order {order_id} overflow a decimal"),
            body: String::new(),
        };
        let sum = |field: fn(&binance::types::UserTrade) -> Decimal| {
            trades
                .iter()
                .try_fold(Decimal::ZERO, |acc, t| acc.checked_add(field(t)))
        };
        let listed = sum(|t| t.qty).ok_or_else(|| overflow("quantities"))?;
        if trades.is_empty() || listed < executed_qty {
            return Ok(None);
        }
        let commission = sum(|t| t.commission).ok_or_else(|| overflow("fees"))?;
        Ok(Some((commission, trades[0].commission_asset.clone())))
    }
}

fn found(source: ReportSource, order: &binance::Order) -> FoundOrder {
    FoundOrder {
        report: report_from_order(source, order),
        status: order.status.as_str().to_string(),
        order_id: order.order_id,
        created_at: order.time.unwrap_or(order.update_time),
    }
}
