//! Benchmarks that need a real database. Every figure is printed next to a ceiling measured in
//! the same run on the same data, as a ratio.
//!
//! `simgate-bench rollover --cards 1000000 [--database-url URL]` imports N cards, then times the
//! lifecycle engine rolling all of them into the next billing cycle (fee charged, usage reset,
//! history written), against the ceiling: one set-based SQL statement doing the same arithmetic
//! for every card with no history and no rules.

use std::sync::Arc;
use std::time::Instant;

use chrono::{Duration, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use clap::{Parser, Subcommand};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::rules::{open_card, NewCard};
use simgate::domain::{CarrierId, CarrierPolicy, Fen, Iccid, LifecycleStage, Plan, RealNameStatus};
use simgate::store::{Store, StoreOptions};
use simgate::Server;

#[derive(Parser)]
#[command(name = "simgate-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time a billing-cycle rollover of N cards.
    Rollover {
        #[arg(long, default_value_t = 1_000_000)]
        cards: u64,
        /// sqlite://PATH or postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Cards per engine claim and write transaction.
        #[arg(long, default_value_t = simgate::service::engine::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Time a BatchSuspend of N cards against a simulated carrier limited to RATE calls/second.
    Batch {
        #[arg(long, default_value_t = 100_000)]
        cards: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long)]
        database_url: Option<String>,
    },
}

fn iccid(n: u64) -> String {
    let body = format!("898600{n:013}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|s| simgate::domain::ids::luhn_valid(s))
        .unwrap_or(body)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (cards, database_url, batch) = match Cli::parse().command {
        Command::Rollover {
            cards,
            database_url,
            batch,
        } => (cards, database_url, batch),
        Command::Batch {
            cards,
            rate,
            database_url,
        } => return bulk(cards, rate, database_url).await,
    };
    let dir = tempfile_dir()?;
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
    let start = Shanghai
        .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
        .single()
        .ok_or("start time")?
        .with_timezone(&Utc);
    let clock = ManualClock::new(start);
    let app = Server::builder()
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

    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let t = Instant::now();
    let mut n = 0;
    while n < cards {
        let chunk: Vec<_> = (n..(n + 10_000).min(cards))
            .map(|i| {
                open_card(
                    NewCard {
                        iccid: Iccid::from_trusted(iccid(i)),
                        msisdn: None,
                        imsi: None,
                        carrier: CarrierId::Mobile,
                        customer_id: format!("customer-{}", i % 100),
                        plan: Plan {
                            monthly_quota_bytes: 1 << 30,
                            monthly_fee: Fen(1200),
                            validity_end: start + Duration::days(365),
                            auto_suspend_over_quota: true,
                        },
                        real_name: RealNameStatus::Verified,
                        stage: LifecycleStage::Billing,
                        balance: Fen(100_000),
                        cycle_usage_bytes: 0,
                        warnings: vec![],
                    },
                    &policy,
                    start,
                )
            })
            .collect();
        n += chunk.len() as u64;
        store.insert_cards(&chunk, None, None).await?;
    }
    let import = t.elapsed();
    println!(
        "import: {cards} cards in {:.1}s ({:.0} cards/s)",
        import.as_secs_f64(),
        cards as f64 / import.as_secs_f64()
    );

    // The engine: 1 December, every card rolls over.
    let (_, first_rollover) = policy.cycle_bounds(start);
    clock.set(first_rollover)?;
    let engine = app.engine().clone().with_batch(batch);
    let t = Instant::now();
    let stats = engine.run_until_idle(clock.now()).await?;
    let engine_time = t.elapsed();
    if stats.applied != cards {
        return Err(format!(
            "engine applied {} of {cards} cards: {stats:?}",
            stats.applied
        )
        .into());
    }
    let engine_rate = cards as f64 / engine_time.as_secs_f64();
    println!(
        "engine rollover: {cards} cards in {:.1}s ({engine_rate:.0} cards/s)",
        engine_time.as_secs_f64()
    );

    // The ceiling: the same balance arithmetic as one set-based statement for the next cycle.
    let (_, second_rollover) = policy.cycle_bounds(first_rollover);
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

fn tempfile_dir() -> std::io::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("simgate-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// BatchSuspend of `cards` cards against China Mobile limited to `rate` calls a second: the
/// carrier's limit is the physical bound, so the figure is the achieved share of it.
async fn bulk(
    cards: u64,
    rate: u32,
    database_url: Option<String>,
) -> Result<(), Box<dyn std::error::Error>> {
    use simgate::carrier::guard::CarrierLimits;
    use simgate::service::batch::Kind;
    use simgate::service::Caller;

    let dir = tempfile_dir()?;
    let url = database_url.unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
    let start = Shanghai
        .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
        .single()
        .ok_or("start time")?
        .with_timezone(&Utc);
    let app = Server::builder()
        .database_url(url.clone())
        .clock(Arc::new(ManualClock::new(start)))
        .carrier_limits(
            CarrierId::Mobile,
            CarrierLimits {
                requests_per_second: rate,
                max_concurrency: 64,
                breaker_failures: 0,
                ..CarrierLimits::default()
            },
        )
        .build()
        .await?;
    let mut iccids = Vec::with_capacity(cards as usize);
    let caller = Caller::system("BenchImport");
    let mut n = 0;
    while n < cards {
        let rows: Vec<_> = (n..(n + 10_000).min(cards))
            .map(|i| {
                iccids.push(iccid(i));
                NewCard {
                    iccid: Iccid::from_trusted(iccid(i)),
                    msisdn: None,
                    imsi: None,
                    carrier: CarrierId::Mobile,
                    customer_id: "bench".into(),
                    plan: Plan {
                        monthly_quota_bytes: 1 << 30,
                        monthly_fee: Fen(1200),
                        validity_end: start + Duration::days(365),
                        auto_suspend_over_quota: true,
                    },
                    real_name: RealNameStatus::Verified,
                    stage: LifecycleStage::Billing,
                    balance: Fen(100_000),
                    cycle_usage_bytes: 0,
                    warnings: vec![],
                }
            })
            .collect();
        n += rows.len() as u64;
        app.service().import(rows, &caller, None).await?;
    }
    println!(
        "backend: {:?}, cards: {cards}, carrier limit: {rate} calls/s",
        app.store().backend()
    );
    let respond = |b: &simgate::store::Batch| b.id.as_bytes().to_vec();
    let t = Instant::now();
    let batch = app
        .batches()
        .create(
            &Caller::system("BatchSuspend"),
            Kind::Suspend,
            iccids,
            Fen::ZERO,
            None,
            &respond,
        )
        .await?;
    loop {
        app.batches().run_once().await?;
        let (_, counts) = app
            .batches()
            .get(&Caller::system("BenchRead"), &batch.id)
            .await?;
        if counts.pending == 0 {
            let secs = t.elapsed().as_secs_f64();
            let achieved = (counts.done + counts.failed) as f64 / secs;
            println!(
                "BatchSuspend: {} done, {} failed in {secs:.1}s = {achieved:.0} cards/s",
                counts.done, counts.failed
            );
            println!(
                "achieved / carrier limit: {:.3}",
                achieved / f64::from(rate)
            );
            break;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
