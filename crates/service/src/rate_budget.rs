//! The exchange's rate limits as one budget for every quantum process on the bus: Binance counts
//! request weight per IP and orders per account, so two execution workers (or a worker and the
//! exit monitor) must draw from the same counters. This adapter gives the REST client
//! ([`binance::SharedBudget`]) the bus's atomic take ([`Bus::rate_take`]): IP weight per
//! minute under `ip:weight:1m`, orders per 10 s and per minute under the API key's tag, and one
//! ban deadline per IP that a 429 or 418 seen by any process sets for all.
//!
//! "Per IP" assumes the processes sharing a bus run on one host (the deployment we document: a
//! VPS with its Redis). Workers on several hosts behind one Redis would be counted as one IP:
//! stricter than needed, never looser.

use std::sync::Arc;

use binance::{Limits, RestClient, SharedBudget, Verdict};
use bus::{Bus, RateDecision, RateWindow};
use futures_util::future::BoxFuture;

use crate::clock;

/// The shared budget of one account on one bus.
#[derive(Debug, Clone)]
pub struct BusBudget {
    bus: Bus,
    account: String,
}

impl BusBudget {
    /// The budget of the account whose key has tag `key_tag` ([`binance::Config::key_tag`]).
    pub fn new(bus: Bus, key_tag: &str) -> BusBudget {
        BusBudget {
            bus,
            account: format!("account:{key_tag}"),
        }
    }

    /// The counters one request takes from.
    fn windows(&self, weight: u32, is_order: bool, limits: Limits) -> Vec<RateWindow> {
        let order = u64::from(is_order);
        vec![
            RateWindow {
                name: "ip:weight:1m".into(),
                len_ms: 60_000,
                limit: limits.weight_1m.into(),
                cost: weight.into(),
            },
            RateWindow {
                name: format!("{}:orders:10s", self.account),
                len_ms: 10_000,
                limit: limits.orders_10s.into(),
                cost: order,
            },
            RateWindow {
                name: format!("{}:orders:1m", self.account),
                len_ms: 60_000,
                limit: limits.orders_1m.into(),
                cost: order,
            },
        ]
    }
}

/// The one ban deadline: bans are per IP.
const BAN: &str = "ip";

impl SharedBudget for BusBudget {
    fn take(
        &self,
        now_ms: i64,
        weight: u32,
        is_order: bool,
        limits: Limits,
    ) -> BoxFuture<'_, Result<Verdict, String>> {
        Box::pin(async move {
            let windows = self.windows(weight, is_order, limits);
            // Windows on the exchange's clock, the ban on the wall clock (see `Bus::rate_take`).
            match self
                .bus
                .rate_take(BAN, &windows, now_ms, clock::now_ms())
                .await
            {
                Ok(RateDecision::Granted) => Ok(Verdict::Go),
                Ok(RateDecision::Wait(wait)) => Ok(Verdict::Wait(wait)),
                Ok(RateDecision::Banned(wait)) => Ok(Verdict::Banned(wait)),
                Err(e) => Err(e.to_string()),
            }
        })
    }

    fn ban(&self, now_ms: i64, until_ms: i64) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // The ban's length, counted on the wall clock that every taker compares it with.
            let wall = clock::now_ms();
            self.bus
                .rate_ban(BAN, wall.saturating_add(until_ms - now_ms), wall)
                .await
                .map_err(|e| e.to_string())
        })
    }
}

/// Makes `rest` draw from the budget shared on `bus`.
pub fn share(rest: &RestClient, bus: &Bus) {
    let budget = BusBudget::new(bus.clone(), &rest.config().key_tag());
    // A client that already shares a budget keeps it (clones share one client).
    let _ = rest.share_budget(Arc::new(budget));
}
