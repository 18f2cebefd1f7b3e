//! `write`: SuspendCard then ResumeCard round trips over gRPC with the simulated carriers (no
//! latency), against the ceiling: a raw sqlx loop doing the same two single-row UPDATEs of the
//! `cards` table, in the same database, with the same pool settings and concurrency. Each task
//! owns its own cards, so neither side waits on a card another task holds.

use std::time::Duration;

use simgate::clock::{Clock, ManualClock};
use simgate::domain::{CardStatus, StopReason, StopReasons};
use simgate::service::Caller;

use crate::common::{
    card_of, cards_client, drive, iccid, new_card, print_loads, start_time, suspend_resume, Db,
    Load, Res, Served, BENCH_KEY, IDLE_ENGINE_MS, UNLIMITED_RATE,
};

pub struct Args {
    pub cards: u64,
    pub concurrency: usize,
    pub seconds: u64,
    pub rounds: u32,
    pub database_url: Option<String>,
}

pub async fn run(a: Args) -> Res<()> {
    if a.concurrency == 0 || a.cards < a.concurrency as u64 {
        return Err("--cards must be at least --concurrency (each task owns its cards)".into());
    }
    let db = Db::fresh(a.database_url.as_deref())?;
    let start = start_time()?;
    let clock = ManualClock::new(start);
    let app = crate::common::server_on(&db, clock.clone())?
        .bootstrap_key(BENCH_KEY)
        .rate_limit_per_key(UNLIMITED_RATE)
        .engine_interval_ms(IDLE_ENGINE_MS)
        .build()
        .await?;
    // Through the service, so that the simulated carriers know every card.
    let caller = Caller::system("BenchImport");
    let mut n = 0;
    while n < a.cards {
        let rows: Vec<_> = (n..(n + 10_000).min(a.cards))
            .map(|i| new_card(i, "bench", start))
            .collect();
        n += rows.len() as u64;
        app.service().import(rows, &caller, None).await?;
    }
    let simgate = Served::app(app).await?;
    let client = cards_client(&simgate.channel().await?)?;
    let raw = db.raw_pool().await?;
    println!(
        "backend: {}, cards: {}, concurrency: {}, {} rounds of {} s each; a round trip is SuspendCard + ResumeCard (ceiling: two single-row UPDATEs)",
        db.backend(),
        a.cards,
        a.concurrency,
        a.rounds,
        a.seconds
    );

    let (c, cards) = (a.concurrency, a.cards);
    let simgate_load = |d: Duration| suspend_resume(client.clone(), cards, c, d);

    let manual = i64::from(StopReasons::mask(StopReason::Manual));
    let now_ms = clock.now().timestamp_millis();
    let raw_load = |d: Duration| {
        let raw = raw.clone();
        drive(c, d, move |task, n| {
            let raw = raw.clone();
            let iccid = iccid(card_of(task, n, c, cards));
            async move {
                for (status, reasons) in [
                    (CardStatus::Suspended.as_str(), manual),
                    (CardStatus::Active.as_str(), 0),
                ] {
                    let done = sqlx::query(
                        "UPDATE cards SET status = $1, stop_reasons = $2, version = version + 1, \
                         updated_ms = $3 WHERE iccid = $4",
                    )
                    .bind(status)
                    .bind(reasons)
                    .bind(now_ms)
                    .bind(iccid.clone())
                    .execute(&raw)
                    .await?;
                    if done.rows_affected() != 1 {
                        return Err(format!("card {iccid} not updated").into());
                    }
                }
                Ok(())
            }
        })
    };

    let warm = Duration::from_secs(2);
    simgate_load(warm).await?;
    raw_load(warm).await?;
    let each = Duration::from_secs(a.seconds);
    let (mut s, mut r) = (Load::empty()?, Load::empty()?);
    for round in 1..=a.rounds {
        let sl = simgate_load(each).await?;
        let rl = raw_load(each).await?;
        println!(
            "round {round}: simgate {:.0} round trips/s, raw sqlx {:.0} round trips/s",
            sl.rate(),
            rl.rate()
        );
        s.add(&sl)?;
        r.add(&rl)?;
    }
    print_loads(
        "round trips/s",
        &[
            ("raw sqlx UPDATE x2 (ceiling)", &r),
            ("SuspendCard + ResumeCard", &s),
        ],
    );
    println!("simgate / ceiling: {:.2}", s.rate() / r.rate());
    raw.close().await;
    simgate.stop().await?;
    db.remove().await
}
