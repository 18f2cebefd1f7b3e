//! `rollover`: imports N cards, then times the lifecycle engine rolling all of them into the next
//! billing cycle (fee charged, usage reset, history written), against the ceiling: one set-based
//! SQL statement doing the same arithmetic for every card with no history and no rules.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::rules::open_card;
use simgate::domain::{CarrierId, CarrierPolicy};
use simgate::service::engine::Engine;
use simgate::store::{Store, StoreOptions};

use crate::common::{new_card, start_time, tempdir, Res};

/// Stores `cards` cards straight through the store (10,000 per transaction, with their history
/// rows), skipping the carriers: the benchmarks that use it only read or roll them over.
pub async fn insert_cards(store: &Store, cards: u64, start: DateTime<Utc>) -> Res<Duration> {
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let t = Instant::now();
    let mut n = 0;
    while n < cards {
        let chunk: Vec<_> = (n..(n + 10_000).min(cards))
            .map(|i| {
                open_card(
                    new_card(i, &format!("customer-{}", i % 100), start),
                    &policy,
                    start,
                )
            })
            .collect();
        n += chunk.len() as u64;
        store.insert_cards(&chunk, None, None).await?;
    }
    Ok(t.elapsed())
}

/// Moves `clock` to the first rollover after `start` and times the engine applying every due
/// card. Refuses a result in which not every card rolled over.
pub async fn time_engine(
    engine: &Engine,
    clock: &ManualClock,
    start: DateTime<Utc>,
    cards: u64,
) -> Res<Duration> {
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let (_, first_rollover) = policy.cycle_bounds(start);
    clock.set(first_rollover)?;
    let t = Instant::now();
    let stats = engine.run_until_idle(clock.now()).await?;
    let elapsed = t.elapsed();
    if stats.applied != cards {
        return Err(format!(
            "engine applied {} of {cards} cards: {stats:?}",
            stats.applied
        )
        .into());
    }
    Ok(elapsed)
}

pub async fn run(cards: u64, database_url: Option<String>, batch: u32) -> Res<()> {
    let dir = tempdir()?;
    let (url, options, schema) = match database_url {
        Some(u) if u.starts_with("postgres") => {
            let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
            let opts = StoreOptions {
                pg_schema: Some(schema.clone()),
                max_connections: None,
            };
            (u, opts, Some(schema))
        }
        Some(u) => (u, StoreOptions::default(), None),
        None => (
            format!("sqlite://{}/bench.db", dir.display()),
            StoreOptions::default(),
            None,
        ),
    };
    let start = start_time()?;
    let clock = ManualClock::new(start);
    let app = crate::common::server_builder()?
        .database_url(url.clone())
        .store_options(options.clone())
        .clock(Arc::new(clock.clone()))
        .build()
        .await?;
    let store: Store = app.store().clone();
    println!(
        "backend: {:?}, cards: {cards}, batch: {batch}",
        store.backend()
    );

    let import = insert_cards(&store, cards, start).await?;
    println!(
        "import: {cards} cards in {:.1}s ({:.0} cards/s)",
        import.as_secs_f64(),
        cards as f64 / import.as_secs_f64()
    );

    // The engine: 1 December, every card rolls over.
    let engine = app.engine().clone().with_batch(batch);
    let engine_time = time_engine(&engine, &clock, start, cards).await?;
    let engine_rate = cards as f64 / engine_time.as_secs_f64();
    println!(
        "engine rollover: {cards} cards in {:.1}s ({engine_rate:.0} cards/s)",
        engine_time.as_secs_f64()
    );

    // The ceiling: the same balance arithmetic as one set-based statement for the next cycle.
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let (_, second_rollover) = policy.cycle_bounds(clock.now());
    let t = Instant::now();
    let touched = store
        .bench_set_based_rollover(second_rollover.timestamp_millis())
        .await?;
    let ceiling_time = t.elapsed();
    let ceiling_rate = touched as f64 / ceiling_time.as_secs_f64();
    println!(
        "ceiling (one UPDATE, no rules, no history): {touched} cards in {:.1}s ({ceiling_rate:.0} cards/s)",
        ceiling_time.as_secs_f64()
    );
    println!("engine / ceiling: {:.2}", engine_rate / ceiling_rate);

    store.close().await;
    if let Some(schema) = schema {
        Store::drop_schema(&url, &schema).await?;
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
