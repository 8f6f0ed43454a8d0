//! What the exchange says about an order, as the engine's [`Report`]s: the RESULT reply and REST
//! polls ([`report_from_order`]) and the user stream's events, routed by client order id to the
//! order waiting for them ([`Router`]). Binance's types stop here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use binance::UserEvent;
use engine::{Report, ReportSource, TradeReport};
use rust_decimal::Decimal;
use tokio::sync::mpsc;
use tracing::{info, warn};

use crate::clock::now_ms;
use crate::metrics;

use super::account::AccountView;

/// What the user-stream router hands an order waiting for its confirmation.
#[derive(Debug)]
pub(super) enum Signal {
    Report(Report),
    /// The stream reconnected: events may have been missed, so ask REST now.
    Reconcile,
}

/// Routes user-stream events to the order they are about, by client order id.
#[derive(Debug, Default, Clone)]
pub(super) struct Router {
    /// One std mutex: held only to look up or change the map, never across an await.
    pub(super) waiters: Arc<Mutex<HashMap<String, mpsc::UnboundedSender<Signal>>>>,
    /// When the stream last connected or delivered an event (ms), and whether it is connected:
    /// the user-stream staleness gauges.
    pub(super) last_event_ms: Arc<std::sync::atomic::AtomicI64>,
    pub(super) connected: Arc<std::sync::atomic::AtomicBool>,
    /// Positions learned from ACCOUNT_UPDATE, and whether they can be trusted (the connection).
    pub(super) account: AccountView,
}

impl Router {
    pub(super) fn register(&self, client_order_id: &str) -> mpsc::UnboundedReceiver<Signal> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().insert(client_order_id.to_string(), tx);
        rx
    }

    pub(super) fn unregister(&self, client_order_id: &str) {
        self.lock().remove(client_order_id);
    }

    pub(super) fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Signal>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn send(&self, client_order_id: &str, signal: Signal) {
        if let Some(tx) = self.lock().get(client_order_id) {
            let _ = tx.send(signal);
        }
    }

    pub(super) fn reconcile_all(&self) {
        for tx in self.lock().values() {
            let _ = tx.send(Signal::Reconcile);
        }
    }

    /// Consumes the user stream until it ends.
    pub(super) async fn run(self, mut events: mpsc::Receiver<UserEvent>) {
        use std::sync::atomic::Ordering;
        while let Some(event) = events.recv().await {
            self.last_event_ms.store(now_ms(), Ordering::Relaxed);
            match &event {
                UserEvent::Connected { generation } => {
                    self.connected.store(true, Ordering::Relaxed);
                    self.account.connected(*generation);
                }
                UserEvent::Disconnected { .. } => {
                    self.connected.store(false, Ordering::Relaxed);
                    self.account.disconnected();
                }
                _ => {}
            }
            match event {
                UserEvent::Connected { generation } => {
                    metrics::global()
                        .user_stream_events
                        .get_or_create(&metrics::StreamEventLabels {
                            event: metrics::StreamEvent::Connected,
                        })
                        .inc();
                    info!("user stream connected (generation {generation})");
                    if generation > 1 {
                        info!("user stream reconnected: reconciling in-flight orders over REST");
                        self.reconcile_all();
                    }
                }
                UserEvent::Disconnected { generation, reason } => {
                    metrics::global()
                        .user_stream_events
                        .get_or_create(&metrics::StreamEventLabels {
                            event: metrics::StreamEvent::Disconnected,
                        })
                        .inc();
                    warn!("user stream disconnected (generation {generation}): {reason}; in-flight orders fall back to REST polls");
                }
                UserEvent::OrderTradeUpdate(update) => {
                    let o = &update.order;
                    let Some(status) = model::OrderStatus::from_binance(o.status.as_str()) else {
                        warn!(
                            "ORDER_TRADE_UPDATE with unknown status {:?} for {}",
                            o.status.as_str(),
                            o.client_order_id
                        );
                        continue;
                    };
                    let trade =
                        (o.execution_type.as_str() == "TRADE" && o.trade_id > 0).then(|| {
                            TradeReport {
                                trade_id: o.trade_id,
                                qty: o.last_filled_qty,
                                price: o.last_filled_price,
                                commission: o.commission,
                                commission_asset: o.commission_asset.clone(),
                                time: o.trade_time,
                            }
                        });
                    let report = Report {
                        source: ReportSource::UserStream,
                        order_id: o.order_id,
                        status,
                        cumulative_qty: o.cumulative_filled_qty,
                        avg_price: o.avg_price,
                        trade,
                        time: update.transaction_time,
                    };
                    self.send(&o.client_order_id, Signal::Report(report));
                }
                UserEvent::TradeLite(lite) => {
                    // TRADE_LITE carries the fill but not the order's status; the fill counts
                    // (deduplicated by trade id) and the status comes from the other reports.
                    let report = Report {
                        source: ReportSource::UserStream,
                        order_id: lite.order_id,
                        status: model::OrderStatus::PartiallyFilled,
                        cumulative_qty: Decimal::ZERO,
                        avg_price: Decimal::ZERO,
                        trade: Some(TradeReport {
                            trade_id: lite.trade_id,
                            qty: lite.last_filled_qty,
                            price: lite.last_filled_price,
                            commission: None,
                            commission_asset: None,
                            time: lite.transaction_time,
                        }),
                        time: lite.transaction_time,
                    };
                    self.send(&lite.client_order_id, Signal::Report(report));
                }
                UserEvent::AccountUpdate(update) => {
                    // One row per position: BOTH on a one-way account, LONG and SHORT on a
                    // hedge-mode one (a side this client does not know is not a position).
                    for row in &update.account.positions {
                        if let Some(side) = row.position_side.to_model() {
                            self.account
                                .position_event(&row.symbol, side, row.position_amt);
                        }
                    }
                }
                UserEvent::AlgoUpdate(_) => {}
            }
        }
    }
}

pub(super) fn report_from_order(source: ReportSource, order: &binance::Order) -> Option<Report> {
    let status = model::OrderStatus::from_binance(order.status.as_str())?;
    Some(Report {
        source,
        order_id: order.order_id,
        status,
        cumulative_qty: order.executed_qty,
        avg_price: order.avg_price,
        trade: None,
        time: order.update_time,
    })
}
