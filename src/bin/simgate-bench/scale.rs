//! `scale`: how GetCard latency and the engine's rollover time change with the number of stored
//! cards. Each size gets a fresh database; GetCard runs under the read benchmark's load on
//! random cards, then the engine rolls every card over, as `rollover` times it. Ratios are to
//! the smallest size: latency for GetCard, time per card for the rollover.

use std::time::Duration;

use simgate::clock::ManualClock;

use crate::common::{start_time, Db, Res, Served, BENCH_KEY, IDLE_ENGINE_MS, UNLIMITED_RATE};

pub struct Args {
    pub sizes: Vec<u64>,
    pub concurrency: usize,
    pub seconds: u64,
    pub database_url: Option<String>,
}

struct Row {
    cards: u64,
    rate: f64,
    p50: f64,
    p99: f64,
    rollover: Duration,
}

async fn measure(a: &Args, cards: u64) -> Res<(Row, &'static str)> {
    let db = Db::fresh(a.database_url.as_deref())?;
    let start = start_time()?;
    let clock = ManualClock::new(start);
    let app = crate::common::server_on(&db, clock.clone())?
        .bootstrap_key(BENCH_KEY)
        .rate_limit_per_key(UNLIMITED_RATE)
        .engine_interval_ms(IDLE_ENGINE_MS)
        .build()
        .await?;
    let import = crate::rollover::insert_cards(app.store(), cards, start).await?;
    let engine = app.engine().clone();
    let served = Served::app(app).await?;
    crate::read::get_card_load(&served, cards, a.concurrency, Duration::from_secs(2)).await?;
    let load = crate::read::get_card_load(
        &served,
        cards,
        a.concurrency,
        Duration::from_secs(a.seconds),
    )
    .await?;
    // The server stays up but idle: stopping it would close the store the engine writes to.
    let rollover = crate::rollover::time_engine(&engine, &clock, start, cards).await?;
    served.stop().await?;
    let backend = db.backend();
    db.remove().await?;
    let row = Row {
        cards,
        rate: load.rate(),
        p50: load.ms(0.5),
        p99: load.ms(0.99),
        rollover,
    };
    println!(
        "{cards} cards: stored in {:.1}s; GetCard {:.0}/s p50 {:.2} ms p99 {:.2} ms; rollover {:.1}s",
        import.as_secs_f64(),
        row.rate,
        row.p50,
        row.p99,
        rollover.as_secs_f64()
    );
    Ok((row, backend))
}

pub async fn run(a: Args) -> Res<()> {
    let mut rows = Vec::new();
    let mut backend = "";
    for &cards in &a.sizes {
        let (row, b) = measure(&a, cards).await?;
        backend = b;
        rows.push(row);
    }
    let Some(base) = rows.first() else {
        return Err("--sizes is empty".into());
    };
    let base_per_card = base.rollover.as_secs_f64() / base.cards as f64;
    println!(
        "backend: {backend}, GetCard under {} calls in flight for {} s per size",
        a.concurrency, a.seconds
    );
    println!("| cards | GetCard calls/s | p50 ms | p99 ms | p50 / first | p99 / first | rollover | µs per card | per card / first |");
    println!("|---|---|---|---|---|---|---|---|---|");
    for r in &rows {
        let per_card = r.rollover.as_secs_f64() / r.cards as f64;
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.1} s | {:.1} | {:.2} |",
            r.cards,
            r.rate,
            r.p50,
            r.p99,
            r.p50 / base.p50,
            r.p99 / base.p99,
            r.rollover.as_secs_f64(),
            per_card * 1e6,
            per_card / base_per_card
        );
    }
    Ok(())
}
