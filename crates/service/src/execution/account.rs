//! What the execution service knows about the market and the account without asking REST per
//! intent: every symbol's mark price (the `!markPrice@arr@1s` stream), each symbol's leverage
//! (from the signed account call at start, then kept as the service changes it), and position
//! amounts (ACCOUNT_UPDATE events of the user stream, and REST reads). Every request per intent
//! costs rate capacity, so these replace a `premiumIndex` per order and a `positionRisk` (weight
//! 5) per close.
//!
//! Each value knows when it can be trusted. A mark price is used for [`MARK_FRESH`] after its
//! frame. A position amount is trusted only if it was learned on the current user-stream
//! connection: a reconnect may have missed events, so every amount learned before it is stale
//! until an event or a REST read renews it. A stale value is read over REST by the caller, which
//! hands the answer back here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use binance::MarketEvent;
use model::PositionSide;
use rust_decimal::Decimal;
use tokio::sync::{mpsc, Notify};
use tokio::time::Instant;
use tracing::debug;

/// A streamed mark price is used this long after its frame (the stream sends one a second).
pub(super) const MARK_FRESH: Duration = Duration::from_secs(3);

/// Shared by the intent tasks and the stream readers; one std mutex, never held across an await.
#[derive(Debug, Default, Clone)]
pub(super) struct AccountView {
    inner: Arc<Mutex<View>>,
    /// Woken by every position event, for a close waiting for the update of a fill.
    position_news: Arc<Notify>,
}

#[derive(Debug, Default)]
struct View {
    marks: HashMap<String, (Decimal, Instant)>,
    /// Signed amount per symbol and position side (`BOTH` on a one-way account), the
    /// user-stream connection it was learned on.
    positions: HashMap<(String, PositionSide), (Decimal, u64)>,
    /// The current user-stream connection (0: none yet).
    generation: u64,
    /// ACCOUNT_UPDATE position rows seen, so a REST answer older than an event is not kept.
    events: u64,
    leverage: HashMap<String, u32>,
}

/// A position amount with what it takes to store a REST answer later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Position {
    /// Learned on the current connection.
    Known(Decimal),
    /// Not known or not trusted: read it over REST and hand it to [`AccountView::read_position`]
    /// with this ticket.
    Ask(Ticket),
}

/// Taken before a REST position read: the connection and event count at that time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Ticket {
    generation: u64,
    events: u64,
}

impl AccountView {
    fn lock(&self) -> MutexGuard<'_, View> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A mark price frame.
    pub(super) fn mark(&self, symbol: &str, price: Decimal, at: Instant) {
        self.lock().marks.insert(symbol.to_string(), (price, at));
    }

    /// The streamed mark price of `symbol`, if it is fresh at `now`.
    #[cfg(test)]
    fn fresh_mark(&self, symbol: &str, now: Instant) -> Option<Decimal> {
        self.last_mark(symbol, now)
            .filter(|(_, age)| *age <= MARK_FRESH)
            .map(|(price, _)| price)
    }

    /// The last mark price of `symbol` (streamed, or read over REST) and its age at `now`.
    pub(super) fn last_mark(&self, symbol: &str, now: Instant) -> Option<(Decimal, Duration)> {
        let view = self.lock();
        let (price, at) = view.marks.get(symbol)?;
        Some((*price, now.saturating_duration_since(*at)))
    }

    /// The user stream (re)connected: what was learned before may have missed events.
    pub(super) fn connected(&self, generation: u64) {
        self.lock().generation = generation;
    }

    /// The user stream disconnected: nothing is trusted until it is back.
    pub(super) fn disconnected(&self) {
        self.lock().generation = 0;
    }

    /// A position row of an ACCOUNT_UPDATE (the amount after the event).
    pub(super) fn position_event(&self, symbol: &str, side: PositionSide, amount: Decimal) {
        let mut view = self.lock();
        view.events += 1;
        let generation = view.generation;
        if generation > 0 {
            view.positions
                .insert((symbol.to_string(), side), (amount, generation));
        }
        drop(view);
        self.position_news.notify_waiters();
    }

    /// The position of `symbol` once it is known and `enough` says it will do, waiting at most
    /// `wait` for position events (the ACCOUNT_UPDATE of a fill an instant ago can still be on
    /// its way); else what is known then.
    pub(super) async fn position_when(
        &self,
        symbol: &str,
        side: PositionSide,
        wait: Duration,
        enough: impl Fn(Decimal) -> bool,
    ) -> Position {
        let until = Instant::now() + wait;
        loop {
            // Registered before looking, so an event between the look and the wait wakes it.
            let news = self.position_news.notified();
            let position = self.position(symbol, side);
            match position {
                Position::Known(amount) if enough(amount) => return position,
                Position::Ask(ticket) if ticket.generation == 0 => return position,
                _ => {}
            }
            if tokio::time::timeout_at(until, news).await.is_err() {
                return self.position(symbol, side);
            }
        }
    }

    /// The position of `symbol` on `side` if it can be trusted, else a ticket for reading it.
    pub(super) fn position(&self, symbol: &str, side: PositionSide) -> Position {
        let view = self.lock();
        match view.positions.get(&(symbol.to_string(), side)) {
            Some((amount, generation)) if view.generation > 0 && *generation == view.generation => {
                Position::Known(*amount)
            }
            _ => Position::Ask(Ticket {
                generation: view.generation,
                events: view.events,
            }),
        }
    }

    /// A REST answer about `symbol`'s position, asked for with `ticket`. Kept only when no event
    /// arrived meanwhile (it could be older than the event) and the connection is the same.
    pub(super) fn read_position(
        &self,
        symbol: &str,
        side: PositionSide,
        amount: Decimal,
        ticket: Ticket,
    ) {
        let mut view = self.lock();
        if ticket.generation > 0
            && ticket.generation == view.generation
            && ticket.events == view.events
        {
            view.positions
                .insert((symbol.to_string(), side), (amount, ticket.generation));
        }
    }

    /// The leverage of `symbol`, as last set or read.
    pub(super) fn leverage(&self, symbol: &str) -> Option<u32> {
        self.lock().leverage.get(symbol).copied()
    }

    pub(super) fn set_leverage(&self, symbol: &str, leverage: u32) {
        self.lock().leverage.insert(symbol.to_string(), leverage);
    }

    /// The account snapshot taken at start: each symbol's leverage setting.
    pub(super) fn seed(&self, account: &binance::Account) {
        let mut view = self.lock();
        for row in &account.positions {
            view.leverage.insert(row.symbol.clone(), row.leverage);
        }
    }
}

/// Keeps `view`'s mark prices from a market stream until it ends.
pub(super) async fn follow_marks(view: AccountView, mut events: mpsc::Receiver<MarketEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            MarketEvent::MarkPrices(updates) => {
                let now = Instant::now();
                for update in updates {
                    view.mark(&update.symbol, update.mark_price, now);
                }
            }
            MarketEvent::MarkPrice(update) => {
                view.mark(&update.symbol, update.mark_price, Instant::now())
            }
            MarketEvent::Disconnected { reason, .. } => {
                debug!("mark price stream disconnected ({reason}); sizing reads the mark price over REST until it is back");
            }
            MarketEvent::Connected { .. } | MarketEvent::BookTicker(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_close_waits_briefly_for_the_update_of_a_fill() {
        let view = AccountView::default();
        view.connected(1);
        view.position_event("BTCUSDT", PositionSide::Both, d("0.5"));
        let later = view.clone();
        let event = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            later.position_event("BTCUSDT", PositionSide::Both, d("1.5"));
        });
        let got = view
            .position_when("BTCUSDT", PositionSide::Both, Duration::from_secs(1), |a| {
                a >= d("1")
            })
            .await;
        assert_eq!(got, Position::Known(d("1.5")));
        event.await.unwrap();
        // Nothing comes: after the wait, what is known.
        let got = view
            .position_when("BTCUSDT", PositionSide::Both, Duration::from_secs(1), |a| {
                a >= d("9")
            })
            .await;
        assert_eq!(got, Position::Known(d("1.5")));
    }

    fn d(text: &str) -> Decimal {
        text.parse().unwrap()
    }

    #[test]
    fn a_mark_price_is_used_while_fresh() {
        let view = AccountView::default();
        let t0 = Instant::now();
        view.mark("BTCUSDT", d("100.5"), t0);
        assert_eq!(
            view.fresh_mark("BTCUSDT", t0 + MARK_FRESH),
            Some(d("100.5"))
        );
        assert_eq!(view.fresh_mark("BTCUSDT", t0 + MARK_FRESH * 2), None);
        assert_eq!(view.fresh_mark("ETHUSDT", t0), None);
    }

    #[test]
    fn positions_are_trusted_only_on_the_connection_they_were_learned_on() {
        let view = AccountView::default();
        // Before any connection, an event is not trusted (events may be missing).
        view.position_event("BTCUSDT", PositionSide::Both, d("1"));
        assert!(matches!(
            view.position("BTCUSDT", PositionSide::Both),
            Position::Ask(_)
        ));
        view.connected(1);
        view.position_event("BTCUSDT", PositionSide::Both, d("0.5"));
        assert_eq!(
            view.position("BTCUSDT", PositionSide::Both),
            Position::Known(d("0.5"))
        );
        // A reconnect may have missed events: ask again.
        view.connected(2);
        let Position::Ask(ticket) = view.position("BTCUSDT", PositionSide::Both) else {
            panic!("stale after a reconnect")
        };
        view.read_position("BTCUSDT", PositionSide::Both, d("0.25"), ticket);
        assert_eq!(
            view.position("BTCUSDT", PositionSide::Both),
            Position::Known(d("0.25"))
        );
        view.disconnected();
        assert!(matches!(
            view.position("BTCUSDT", PositionSide::Both),
            Position::Ask(_)
        ));
    }

    #[test]
    fn a_rest_answer_older_than_an_event_is_not_kept() {
        let view = AccountView::default();
        view.connected(1);
        let Position::Ask(ticket) = view.position("ETHUSDT", PositionSide::Both) else {
            panic!("unknown")
        };
        view.position_event("ETHUSDT", PositionSide::Both, d("-2"));
        view.read_position("ETHUSDT", PositionSide::Both, d("0"), ticket);
        assert_eq!(
            view.position("ETHUSDT", PositionSide::Both),
            Position::Known(d("-2"))
        );
    }
}
