//! The lifecycle engine under stress: killed in the middle of a rollover, and two engines on one
//! database. Every card must end exactly as after one uninterrupted run: charged once.

use std::collections::BTreeMap;
use std::sync::Arc;

use simgate::clock::{Clock, ManualClock};
use simgate::domain::rules::NewCard;
use simgate::domain::{CarrierId, Fen, Iccid, LifecycleStage, Plan, RealNameStatus};
use simgate::server::App;
use simgate::Server;

use crate::helpers::*;

const CARDS: u64 = 4000;

async fn app_on(db: &TestDb, clock: &ManualClock) -> App {
    builder_on(db, clock).build().await.expect("build")
}

fn builder_on(db: &TestDb, clock: &ManualClock) -> simgate::server::ServerBuilder {
    with_test_data_key(Server::builder().repeat_window_s(Some(0)), db)
        .database_url(db.url.clone())
        .store_options(db.options.clone())
        .clock(Arc::new(clock.clone()))
}

/// The same, with leases and other operational waits on `ops`.
async fn app_with_ops(db: &TestDb, clock: &ManualClock, ops: &ManualClock) -> App {
    builder_on(db, clock)
        .ops_clock(Arc::new(ops.clone()))
        .build()
        .await
        .expect("build")
}

async fn seed(app: &App) {
    let rows: Vec<NewCard> = (0..CARDS)
        .map(|n| NewCard {
            account: None,
            iccid: Iccid::parse_any(&mobile_iccid(n)).unwrap(),
            msisdn: None,
            imsi: None,
            carrier: CarrierId::Mobile,
            customer_id: "acme".into(),
            plan: Plan {
                monthly_quota_bytes: 1 << 30,
                monthly_fee: Fen(1200),
                validity_end: start_time() + chrono::Duration::days(300),
                auto_suspend_over_quota: true,
            },
            real_name: RealNameStatus::Verified,
            stage: LifecycleStage::Billing,
            // Every third card cannot pay: it stops at the carrier, one by one.
            balance: Fen(if n % 3 == 0 { 1000 } else { 5000 }),
            cycle_usage_bytes: 0,
            warnings: vec![],
        })
        .collect();
    for chunk in rows.chunks(5000) {
        app.service()
            .import(
                chunk.to_vec(),
                &simgate::service::Caller::system("test"),
                None,
            )
            .await
            .expect("import");
    }
}

/// Every card's balance, reasons and version, and the number of monthly fees charged in all.
async fn snapshot(app: &App) -> (BTreeMap<String, (i64, u32, i64)>, i64) {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = app
            .store()
            .list_cards(&Default::default(), after.as_deref(), 1000)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some(last.iccid.to_string());
        for c in page {
            out.insert(
                c.iccid.to_string(),
                (c.balance.0, c.stop_reasons.bits(), c.version),
            );
        }
    }
    let fees = app
        .store()
        .count_events("card.monthly_fee_charged")
        .await
        .unwrap();
    (out, fees)
}

fn rollover_time() -> chrono::DateTime<chrono::Utc> {
    // Two cycles: 1 Dec and 1 Jan (Shanghai).
    start_time() + chrono::Duration::days(40)
}

async fn uninterrupted(backend: Backend) -> Option<(BTreeMap<String, (i64, u32, i64)>, i64)> {
    let db = TestDb::new(backend)?;
    let clock = ManualClock::new(start_time());
    let app = app_on(&db, &clock).await;
    seed(&app).await;
    clock.set(rollover_time()).unwrap();
    let stats = app.engine().run_until_idle(rollover_time()).await.unwrap();
    assert_eq!(stats.applied, CARDS);
    Some(snapshot(&app).await)
}

async fn killed_mid_rollover_then_restarted(backend: Backend) {
    let Some(reference) = uninterrupted(backend).await else {
        return;
    };
    let db = TestDb::new(backend).unwrap();
    let clock = ManualClock::new(start_time());
    let lease_clock = ManualClock::new(start_time());
    let app = app_with_ops(&db, &clock, &lease_clock).await;
    seed(&app).await;
    clock.set(rollover_time()).unwrap();

    let doomed = app
        .engine()
        .clone()
        .with_batch(50)
        .with_lease_clock(Arc::new(lease_clock.clone()), chrono::Duration::seconds(60));
    let run = tokio::spawn(async move { doomed.run_pass(rollover_time()).await });
    // Kill it once part, but not all, of the rollover is stored.
    loop {
        let due = app.store().count_due(rollover_time()).await.unwrap();
        if due < CARDS as i64 {
            break;
        }
        tokio::task::yield_now().await;
    }
    run.abort();
    let _ = run.await;
    let left = app.store().count_due(rollover_time()).await.unwrap();
    assert!(
        left > 0 && left < CARDS as i64,
        "killed mid-way: {left} cards still due"
    );

    // A new process: its leases are not the dead engine's, which keep those cards until they
    // expire.
    let restarted = app_with_ops(&db, &clock, &lease_clock).await;
    let engine = restarted
        .engine()
        .clone()
        .with_lease_clock(Arc::new(lease_clock.clone()), chrono::Duration::seconds(60));
    engine.run_until_idle(rollover_time()).await.unwrap();
    lease_clock.advance(chrono::Duration::seconds(61)).unwrap();
    // A carrier change the dead engine had sent is settled from the carrier's state once its
    // journal lease has run out too; then the engine finishes the rest.
    restarted.service().settle_open_intents().await.unwrap();
    engine.run_until_idle(rollover_time()).await.unwrap();
    assert_eq!(
        restarted.store().count_due(rollover_time()).await.unwrap(),
        0
    );
    let (after, fees) = snapshot(&restarted).await;
    assert_eq!(after.len(), reference.0.len());
    for (iccid, expected) in &reference.0 {
        assert_eq!(
            after.get(iccid),
            Some(expected),
            "{iccid} differs from the uninterrupted run"
        );
    }
    assert_eq!(fees, reference.1);
    assert_eq!(
        fees,
        2 * CARDS as i64,
        "two cycles, each card charged once per cycle"
    );
    assert_eq!(after[&mobile_iccid(1)].0, 5000 - 2 * 1200);
}

async fn two_engines_share_the_work(backend: Backend) {
    let Some(reference) = uninterrupted(backend).await else {
        return;
    };
    let db = TestDb::new(backend).unwrap();
    let clock = ManualClock::new(start_time());
    let a = app_on(&db, &clock).await;
    let b = app_on(&db, &clock).await;
    seed(&a).await;
    clock.set(rollover_time()).unwrap();
    let (ea, eb) = (
        a.engine().clone().with_batch(100),
        b.engine().clone().with_batch(100),
    );
    let (ra, rb) = tokio::join!(
        ea.run_until_idle(rollover_time()),
        eb.run_until_idle(rollover_time())
    );
    let (ra, rb) = (ra.unwrap(), rb.unwrap());
    assert_eq!(
        ra.applied + rb.applied,
        CARDS,
        "each card applied by exactly one engine"
    );
    assert!(
        ra.applied > 0 && rb.applied > 0,
        "both engines took work: {ra:?} {rb:?}"
    );
    assert_eq!(snapshot(&a).await, reference);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_rollover_leaves_no_card_charged_twice_sqlite() {
    killed_mid_rollover_then_restarted(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_engine_killed_mid_rollover_leaves_no_card_charged_twice_postgres() {
    killed_mid_rollover_then_restarted(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_database_charge_each_card_once_sqlite() {
    two_engines_share_the_work(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_engines_on_one_database_charge_each_card_once_postgres() {
    two_engines_share_the_work(Backend::Postgres).await;
}
