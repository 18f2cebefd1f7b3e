//! `usage-sync`: stores N cards that their simulated carrier knows, gives every card traffic on
//! the carrier's side (a fifth of them past the 80% alert threshold, none over quota), then times
//! one scheduled usage sync (`CardService::sync_all_usage`: batched carrier reads, lifecycle rules,
//! alerts, usage + daily history + alert events written in batched transactions) against the
//! ceiling: one set-based UPDATE copying the carrier's usage into every card, with no rules, no
//! alerts and no history.

use std::time::{Duration, Instant};

use simgate::carrier::sim::SimCarrier;
use simgate::carrier::{Carrier, OnboardCard, ServiceState};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::event::alert;
use simgate::domain::{CarrierId, Iccid};
use simgate::store::Store;
use sqlx::{AnyPool, Row};

use crate::common::{iccid, start_time, Db, Res, QUOTA};

pub struct Args {
    pub cards: u64,
    pub database_url: Option<String>,
}

/// Card `n`'s usage in per mille of its quota. Multiplying by 7 spreads neighbouring cards over
/// the whole range, so every sync batch meets the same mix of quiet and alerting cards.
fn permille(n: u64) -> u64 {
    (n * 7) % 1000
}

/// Card `n`'s carrier-side usage: `permille(n)` of the quota plus one byte, so that every card
/// (even at 0 per mille) has traffic to sync and none reaches its quota (which would stop it
/// through the carrier, one card at a time: another benchmark's subject).
fn usage(n: u64) -> u64 {
    QUOTA * permille(n) / 1000 + 1
}

/// The same formula in SQL, for the bulk UPDATE of the simulator's table: the card number is
/// the 13 digits after the ICCID's "898600" prefix (see `common::iccid`).
const USAGE_SQL: &str = "((CAST(SUBSTR(iccid, 7, 13) AS BIGINT) * 7) % 1000) * $1 / 1000 + 1";

/// Threshold of the default rule (800, 900, 1000 per mille) that the bench checks against.
const ALERT_PERMILLE: u64 = 800;

/// Tells the simulated carrier about every card, 10,000 per call as an import would.
async fn onboard(sim: &SimCarrier, cards: u64) -> Res<Duration> {
    let t = Instant::now();
    let mut n = 0;
    while n < cards {
        let chunk: Vec<OnboardCard> = (n..(n + 10_000).min(cards))
            .map(|i| OnboardCard {
                iccid: Iccid::from_trusted(iccid(i)),
                state: ServiceState::Active,
                cycle_usage_bytes: 0,
                msisdn: None,
            })
            .collect();
        n += chunk.len() as u64;
        sim.onboard(&chunk).await?;
    }
    Ok(t.elapsed())
}

/// Cards, and cards whose usage equals their carrier's, joined on (carrier, ICCID).
async fn agreeing(raw: &AnyPool) -> Res<(i64, i64)> {
    let row = sqlx::query(
        "SELECT CAST(COUNT(*) AS BIGINT) AS n, \
         CAST(COALESCE(SUM(CASE WHEN c.cycle_usage_bytes = s.cycle_usage_bytes THEN 1 ELSE 0 END), 0) AS BIGINT) AS same \
         FROM cards AS c JOIN sim_cards AS s ON s.carrier = c.carrier AND s.iccid = c.iccid",
    )
    .fetch_one(raw)
    .await?;
    Ok((row.try_get("n")?, row.try_get("same")?))
}

/// Refuses a result in which any card's usage differs from its carrier's.
async fn check_all_agree(raw: &AnyPool, cards: u64, after: &str) -> Res<()> {
    let (n, same) = agreeing(raw).await?;
    if n != cards as i64 || same != n {
        return Err(format!(
            "after {after}: {same} of {n} cards (expected {cards}) hold their carrier's usage"
        )
        .into());
    }
    Ok(())
}

/// Looks at `samples` random cards one by one through the carrier and the store: usage as the
/// carrier says, the day's history row, the alert event and its key exactly when 80% was reached.
async fn spot_check(
    store: &Store,
    sim: &SimCarrier,
    cards: u64,
    samples: u64,
    cycle: chrono::DateTime<chrono::Utc>,
) -> Res<()> {
    for _ in 0..samples {
        let n = fastrand::u64(0..cards);
        let id = Iccid::from_trusted(iccid(n));
        let carrier = sim.inspect(&id).await?;
        let card = store
            .get_card(&id)
            .await?
            .ok_or_else(|| format!("card {id} missing"))?;
        let history: u64 = store
            .daily_usage(&id, cycle)
            .await?
            .iter()
            .map(|d| d.bytes)
            .sum();
        let alerted = store
            .card_events(&id)
            .await?
            .iter()
            .any(|e| e.kind == alert::CARD_USAGE);
        let should_alert = permille(n) >= ALERT_PERMILLE;
        if carrier.cycle_usage_bytes != usage(n)
            || card.cycle_usage_bytes != usage(n)
            || history != usage(n)
            || alerted != should_alert
            || card.alert_keys.is_empty() == should_alert
        {
            return Err(format!(
                "card {n} ({id}): carrier {} bytes, card {} bytes, history {history} bytes, \
                 expected {}; alert event {alerted}, keys {:?}, expected alert {should_alert}",
                carrier.cycle_usage_bytes,
                card.cycle_usage_bytes,
                usage(n),
                card.alert_keys
            )
            .into());
        }
    }
    Ok(())
}

pub async fn run(a: Args) -> Res<()> {
    let cards = a.cards;
    let db = Db::fresh(a.database_url.as_deref())?;
    let start = start_time()?;
    let clock = ManualClock::new(start);
    let app = crate::common::server_on(&db, clock.clone())?
        .build()
        .await?;
    let store = app.store().clone();
    let sim = app
        .simulators()
        .get(&simgate::domain::AccountId::default_for(CarrierId::Mobile))
        .ok_or("no simulated China Mobile")?
        .clone();
    let raw = db.raw_pool().await?;
    println!("backend: {}, cards: {cards}", db.backend());

    let stored = crate::rollover::insert_cards(&store, cards, start).await?;
    let onboarded = onboard(&sim, cards).await?;
    // The carrier's current cycle, as its usage counters are kept (`SimCarrier::cycle_ms`).
    let cycle = sim
        .inspect(&Iccid::from_trusted(iccid(0)))
        .await?
        .usage_cycle_start
        .ok_or("the simulator reports no usage cycle")?;
    let t = Instant::now();
    let traffic = sqlx::query(&format!(
        "UPDATE sim_cards SET cycle_usage_bytes = {USAGE_SQL}, usage_cycle_ms = $2, \
         last_session_ms = $3 WHERE carrier = $4"
    ))
    .bind(QUOTA as i64)
    .bind(cycle.timestamp_millis())
    .bind(clock.now().timestamp_millis())
    .bind(CarrierId::Mobile.as_str())
    .execute(&raw)
    .await?
    .rows_affected();
    let traffic_time = t.elapsed();
    if traffic != cards {
        return Err(format!("traffic reached {traffic} of {cards} simulated cards").into());
    }
    let expected_alerts = (0..cards)
        .filter(|n| permille(*n) >= ALERT_PERMILLE)
        .count() as i64;
    if db.schema.is_some() {
        // What autovacuum would have done by now on a table loaded minutes ago.
        sqlx::query("ANALYZE").execute(&raw).await?;
    }
    println!(
        "setup: cards stored in {:.1}s, onboarded at the simulated carrier in {:.1}s, traffic (one UPDATE of sim_cards) in {:.1}s; {expected_alerts} cards at >= {}% of quota, none over",
        stored.as_secs_f64(),
        onboarded.as_secs_f64(),
        traffic_time.as_secs_f64(),
        ALERT_PERMILLE / 10
    );

    let events_before = store.last_event_id().await?;
    let t = Instant::now();
    let stats = app.service().sync_all_usage().await?;
    let sync_time = t.elapsed();
    let sync_rate = stats.read as f64 / sync_time.as_secs_f64();
    println!(
        "sync_all_usage: {} cards read, {} written in {:.1}s ({sync_rate:.0} cards/s); {stats:?}",
        stats.read,
        stats.updated,
        sync_time.as_secs_f64()
    );
    if stats.read != cards
        || stats.updated != cards
        || stats.skipped != 0
        || stats.carrier_failures != 0
    {
        return Err(format!("sync of {cards} cards did not read and write each: {stats:?}").into());
    }
    check_all_agree(&raw, cards, "the sync").await?;
    spot_check(&store, &sim, cards, 200, cycle).await?;
    let alerts = store.count_events(alert::CARD_USAGE).await?;
    let written = store.last_event_id().await? - events_before;
    println!(
        "alert events written ({}): {alerts} (expected {expected_alerts}); events written in all: {written}",
        alert::CARD_USAGE
    );
    if alerts != expected_alerts || written != expected_alerts {
        return Err(format!(
            "expected {expected_alerts} alert events and no other event, found {alerts} alerts among {written} events"
        )
        .into());
    }
    println!(
        "verified: every card's usage equals its carrier's; 200 random cards checked one by one (carrier reading, stored usage, daily history, alert event and key)"
    );

    // The ceiling moves new values: the carrier counts another MiB on every card first.
    sqlx::query(
        "UPDATE sim_cards SET cycle_usage_bytes = cycle_usage_bytes + $1 WHERE carrier = $2",
    )
    .bind(1i64 << 20)
    .bind(CarrierId::Mobile.as_str())
    .execute(&raw)
    .await?;
    let t = Instant::now();
    let touched = store
        .bench_set_based_usage_sync(cycle.timestamp_millis(), clock.now().timestamp_millis())
        .await?;
    let ceiling_time = t.elapsed();
    let ceiling_rate = touched as f64 / ceiling_time.as_secs_f64();
    if touched != cards {
        return Err(format!("the ceiling updated {touched} of {cards} cards").into());
    }
    check_all_agree(&raw, cards, "the ceiling").await?;
    println!(
        "ceiling (one UPDATE cards ... FROM sim_cards, no rules, no alerts, no history): {touched} cards in {:.1}s ({ceiling_rate:.0} cards/s)",
        ceiling_time.as_secs_f64()
    );
    println!("sync / ceiling: {:.2}", sync_rate / ceiling_rate);

    raw.close().await;
    store.close().await;
    db.remove().await
}
