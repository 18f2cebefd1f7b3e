//! A carrier account's fair-use budget: the calls per second the account may make in all
//! (`requests_per_second`) and per platform method (`method_requests_per_second`; IoTLink runs
//! 1 req/s per account × method), and a count of the calls made in the last minute per method,
//! which `GetCarrierAccount` shows against the limits.
//!
//! A budget is spent where a call leaves for the carrier: by each HTTP adapter once per upstream
//! request (a OneLink `card()` is four requests, each named by its path), and by the guard once
//! per trait call for an in-process simulated account.
//!
//! On SQLite (one process) the rates are governor limiters in this process. On PostgreSQL they
//! are shared by every replica ([`Budget::shared`]): each call takes its turn from a schedule
//! row in the database (`store::budgets`), paced [`SHARED_MARGIN`] below the limit, so that the
//! calls a carrier receives from all replicas together, with their network jitter, stay within
//! it in every second. The last-minute counts are this process's.

use std::collections::{BTreeMap, HashMap};
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::time::Instant;

use governor::{DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::store::Store;

/// Shared budgets pace calls this far below the limit: calls granted one interval apart can
/// reach the carrier closer together (network and scheduling jitter), and the carrier counts
/// what it receives.
pub const SHARED_MARGIN: f64 = 0.05;

/// A budget kept in the database for every replica.
struct Shared {
    store: Store,
    /// The schedule keys: `<account>` for the account's rate, `<account>|<method>` per method.
    account: String,
}

/// Seconds in the window the call counts cover.
const WINDOW_SECS: u64 = 60;

/// Per-method call counts in one-second buckets over the last minute.
#[derive(Default)]
struct Window {
    /// Method → (second since `start`, calls in it), oldest first, at most 60 entries each.
    by_method: HashMap<&'static str, Vec<(u64, u64)>>,
}

pub struct Budget {
    requests_per_second: u32,
    method_requests_per_second: u32,
    account: Option<DefaultDirectRateLimiter>,
    method: Option<DefaultKeyedRateLimiter<&'static str>>,
    start: Instant,
    window: Mutex<Window>,
    shared: Option<Shared>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("requests_per_second", &self.requests_per_second)
            .field(
                "method_requests_per_second",
                &self.method_requests_per_second,
            )
            .finish()
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::new(0, 0)
    }
}

impl Budget {
    /// 0 means no limit, for either.
    pub fn new(requests_per_second: u32, method_requests_per_second: u32) -> Budget {
        Budget {
            requests_per_second,
            method_requests_per_second,
            account: NonZeroU32::new(requests_per_second)
                .map(|r| RateLimiter::direct(Quota::per_second(r))),
            method: NonZeroU32::new(method_requests_per_second)
                .map(|r| RateLimiter::keyed(Quota::per_second(r))),
            start: Instant::now(),
            window: Mutex::new(Window::default()),
            shared: None,
        }
    }

    /// The same limits, shared with every replica through `store` (PostgreSQL) under the
    /// account's id.
    pub fn shared(
        requests_per_second: u32,
        method_requests_per_second: u32,
        store: Store,
        account: &str,
    ) -> Budget {
        Budget {
            shared: Some(Shared {
                store,
                account: account.to_string(),
            }),
            ..Budget::new(requests_per_second, method_requests_per_second)
        }
    }

    /// Whether the limits are kept in the database for every replica.
    pub fn is_shared(&self) -> bool {
        self.shared.is_some()
    }

    pub fn requests_per_second(&self) -> u32 {
        self.requests_per_second
    }

    pub fn method_requests_per_second(&self) -> u32 {
        self.method_requests_per_second
    }

    /// Waits until the account and `method` may make one more call, then counts it.
    pub async fn spend(&self, method: &'static str) {
        match &self.shared {
            Some(shared) => {
                if self.method_requests_per_second > 0 {
                    let key = format!("{}|{method}", shared.account);
                    take_turn(&shared.store, &key, self.method_requests_per_second).await;
                }
                if self.requests_per_second > 0 {
                    take_turn(&shared.store, &shared.account, self.requests_per_second).await;
                }
            }
            None => {
                if let Some(m) = &self.method {
                    m.until_key_ready(&method).await;
                }
                if let Some(a) = &self.account {
                    a.until_ready().await;
                }
            }
        }
        self.count(method);
    }

    fn count(&self, method: &'static str) {
        let now = self.start.elapsed().as_secs();
        let mut w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        let buckets = w.by_method.entry(method).or_default();
        match buckets.last_mut() {
            Some((sec, n)) if *sec == now => *n += 1,
            _ => buckets.push((now, 1)),
        }
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        buckets.retain(|(sec, _)| *sec >= oldest);
    }

    /// Calls per method in the last minute (methods with none left out).
    pub fn last_minute(&self) -> BTreeMap<&'static str, u64> {
        let now = self.start.elapsed().as_secs();
        let oldest = now.saturating_sub(WINDOW_SECS - 1);
        let w = self.window.lock().unwrap_or_else(|p| p.into_inner());
        w.by_method
            .iter()
            .map(|(m, b)| {
                (
                    *m,
                    b.iter().filter(|(s, _)| *s >= oldest).map(|(_, n)| n).sum(),
                )
            })
            .filter(|(_, n)| *n > 0)
            .collect()
    }
}

/// The interval between calls of a shared budget of `per_second`, with the margin.
pub fn shared_interval(per_second: u32) -> std::time::Duration {
    std::time::Duration::from_secs_f64(1.0 / (f64::from(per_second.max(1)) * (1.0 - SHARED_MARGIN)))
}

/// Waits for a turn on the shared schedule `key`. A database that cannot be reached does not
/// let calls through unpaced: the turn is asked again after a short pause.
async fn take_turn(store: &Store, key: &str, per_second: u32) {
    let interval = shared_interval(per_second);
    loop {
        match store.take_budget(key, interval).await {
            Ok(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                return;
            }
            Err(e) => {
                tracing::warn!(key, error = %e, "shared carrier budget unreadable; waiting");
                tokio::time::sleep(interval.max(std::time::Duration::from_millis(200))).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn calls_are_counted_per_method_over_the_last_minute() {
        let b = Budget::default();
        for _ in 0..3 {
            b.spend("/query/sim-status").await;
        }
        b.spend("/change/sim-status").await;
        let seen = b.last_minute();
        assert_eq!(seen.get("/query/sim-status"), Some(&3));
        assert_eq!(seen.get("/change/sim-status"), Some(&1));
        assert_eq!(seen.len(), 2);
    }

    #[tokio::test]
    async fn a_method_limit_holds_each_method_without_holding_the_others() {
        // 1 per second per method: after one call of `a`, `a` must wait and `b` need not.
        let b = Budget::new(0, 1);
        b.spend("a").await;
        let limiter = b.method.as_ref().expect("a method limit");
        assert!(
            limiter.check_key(&"a").is_err(),
            "a second `a` within the second passed"
        );
        assert!(
            limiter.check_key(&"b").is_ok(),
            "`b` was held by `a`'s limit"
        );
        assert!(Budget::new(0, 0).method.is_none() && Budget::new(0, 0).account.is_none());
    }
}
