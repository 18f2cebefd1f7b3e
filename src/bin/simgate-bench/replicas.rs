//! `simgate-bench replicas`: one carrier account's rate limit shared by several replicas
//! through PostgreSQL (`carrier::budget` shared schedules). Each replica is its own store
//! (its own connection pool, as a process has); their calls together are timed and set
//! against the limit: the calls per second achieved ÷ the limit (the ceiling), and the most
//! calls in any one second ÷ the limit (which must not pass 1).

use std::sync::Arc;
use std::time::{Duration, Instant};

use simgate::carrier::budget::Budget;
use simgate::store::{Store, StoreOptions};

use crate::common::BoxError;

pub struct Args {
    pub database_url: String,
    pub replicas: usize,
    pub limit: u32,
    pub calls: usize,
}

pub async fn run(a: Args) -> Result<(), BoxError> {
    if !a.database_url.starts_with("postgres") {
        return Err(
            "--database-url must be PostgreSQL: on SQLite the limits stay in one process".into(),
        );
    }
    let account = format!("bench-{}", uuid::Uuid::new_v4().simple());
    let mut budgets = Vec::with_capacity(a.replicas);
    for _ in 0..a.replicas.max(1) {
        let store = Store::connect(&a.database_url, StoreOptions::default()).await?;
        budgets.push(Arc::new(Budget::shared(a.limit, 0, store, &account)));
    }
    let start = Instant::now();
    let mut at: Vec<Duration> = futures::future::join_all((0..a.calls).map(|i| {
        let b = budgets[i % budgets.len()].clone();
        async move {
            b.spend("bench").await;
            start.elapsed()
        }
    }))
    .await;
    at.sort();
    let elapsed = at.last().copied().unwrap_or_default();
    // Calls after the first one, over the time they took: the steady rate.
    let rate = (a.calls.saturating_sub(1)) as f64 / elapsed.as_secs_f64().max(1e-9);
    let busiest = (0..at.len())
        .map(|i| {
            at[i..]
                .iter()
                .take_while(|t| **t < at[i] + Duration::from_secs(1))
                .count()
        })
        .max()
        .unwrap_or(0);
    let limit = f64::from(a.limit);
    println!(
        "{} replicas, limit {} calls/s, {} calls in {:.2} s: {rate:.2} calls/s = {:.3} of the limit; \
         busiest second {busiest} calls = {:.3} of the limit",
        a.replicas,
        a.limit,
        a.calls,
        elapsed.as_secs_f64(),
        rate / limit,
        busiest as f64 / limit
    );
    Ok(())
}
