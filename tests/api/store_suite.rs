//! One conformance suite for the store, run against SQLite and PostgreSQL alike.

use chrono::Duration;
use simgate::carrier::{OnboardCard, ServiceState};
use simgate::domain::rules::{open_card, NewCard};
use simgate::domain::{
    Card, CardEvent, CarrierId, CarrierPolicy, Cause, Fen, Iccid, LifecycleStage, Msisdn, Plan,
    RealNameStatus, StopReason,
};
use simgate::store::{CardFilter, Store, StoreError};

use crate::helpers::*;

const CYCLE: i64 = 1_000;

fn event(card: &Card, kind: &'static str) -> CardEvent {
    CardEvent::of(card, start_time(), kind, Cause::Request, Fen(0))
}

fn card(iccid: &str, carrier: CarrierId) -> Card {
    let now = start_time();
    open_card(
        NewCard {
            account: None,
            iccid: Iccid::parse_any(iccid).unwrap(),
            msisdn: Some(Msisdn::parse("1064900000042").unwrap()),
            imsi: None,
            carrier,
            customer_id: "acme".into(),
            plan: Plan {
                monthly_quota_bytes: u64::MAX >> 1,
                monthly_fee: Fen(1200),
                validity_end: now + Duration::days(10),
                auto_suspend_over_quota: false,
            },
            real_name: RealNameStatus::Unverified,
            stage: LifecycleStage::Test,
            balance: Fen(-7),
            cycle_usage_bytes: 5,
            warnings: vec!["a warning".into()],
        },
        &CarrierPolicy::default_for(carrier),
        now,
    )
}

macro_rules! store_suite {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                use super::*;

                #[tokio::test]
                async fn sqlite() {
                    let db = TestDb::new(Backend::Sqlite).unwrap();
                    super::$name(db.store().await).await;
                }

                #[tokio::test]
                async fn postgres() {
                    if let Some(db) = TestDb::new(Backend::Postgres) {
                        super::$name(db.store().await).await;
                    }
                }
            }
        )*
    };
}

store_suite!(
    cards_round_trip_unchanged,
    stale_versions_are_refused,
    duplicates_are_reported_by_field,
    listing_filters_and_pages,
    simulator_state_is_kept_apart,
    simulated_usage_restarts_with_each_cycle,
    due_cards_are_claimed_once_and_batches_skip_stale_cards,
    migrations_can_run_twice,
);

async fn simulated_usage_restarts_with_each_cycle(store: Store) {
    let iccid = Iccid::parse_any(MOBILE_ICCID).unwrap();
    let onboard = OnboardCard {
        iccid: iccid.clone(),
        state: ServiceState::Active,
        cycle_usage_bytes: 7,
        msisdn: None,
    };
    store
        .sim_onboard("mobile", &[onboard], CYCLE, CYCLE)
        .await
        .unwrap();
    store
        .sim_add_usage("mobile", &iccid, 3, CYCLE, 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .sim_card("mobile", &iccid, CYCLE)
            .await
            .unwrap()
            .unwrap()
            .cycle_usage_bytes,
        10
    );
    // A new cycle: the old count is gone, new usage starts from zero.
    assert_eq!(
        store
            .sim_card("mobile", &iccid, CYCLE + 1)
            .await
            .unwrap()
            .unwrap()
            .cycle_usage_bytes,
        0
    );
    store
        .sim_add_usage("mobile", &iccid, 4, CYCLE + 1, 0)
        .await
        .unwrap();
    assert_eq!(
        store
            .sim_card("mobile", &iccid, CYCLE + 1)
            .await
            .unwrap()
            .unwrap()
            .cycle_usage_bytes,
        4
    );
}

async fn due_cards_are_claimed_once_and_batches_skip_stale_cards(store: Store) {
    let mut cards = Vec::new();
    for n in 0..5u64 {
        let mut c = card(&mobile_iccid(n), CarrierId::Mobile);
        c.msisdn = None;
        c.next_due_at = Some(start_time() + Duration::minutes(n as i64));
        cards.push(c);
    }
    store.insert_cards(&cards, None, None).await.unwrap();
    let due_by = start_time() + Duration::minutes(3);
    assert_eq!(store.count_due(due_by).await.unwrap(), 4);
    let a = store.claim_due("a", due_by, 0, 60_000, 3).await.unwrap();
    assert_eq!(a.len(), 3);
    assert_eq!(a[0].iccid.to_string(), mobile_iccid(0), "oldest due first");
    // A second engine gets only what the first did not lease.
    let b = store.claim_due("b", due_by, 0, 60_000, 10).await.unwrap();
    assert_eq!(b.len(), 1);
    assert_eq!(b[0].iccid.to_string(), mobile_iccid(3));
    // After the lease runs out (wall clock 60,001), the cards can be claimed again.
    assert!(store
        .claim_due("c", due_by, 1, 60_000, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(
        store
            .claim_due("c", due_by, 60_001, 120_000, 10)
            .await
            .unwrap()
            .len(),
        4
    );
    assert_eq!(store.release_leases("c").await.unwrap(), 4);

    // One card changed behind the batch's back: only that one is skipped.
    let mut stale = a[1].clone();
    stale.balance = Fen(1);
    store.update_card(&stale, &[], None, None, 0).await.unwrap();
    let batch: Vec<_> = a
        .iter()
        .map(|c| {
            let mut next = c.clone();
            next.balance = Fen(-1200);
            next.next_due_at = None;
            (
                next.clone(),
                vec![event(&next, "card.monthly_fee_charged")],
                0,
            )
        })
        .collect();
    assert_eq!(
        store.update_cards(&batch).await.unwrap(),
        vec![true, false, true]
    );
    assert_eq!(store.count_due(due_by).await.unwrap(), 2);
    let kept = store.get_card(&a[1].iccid).await.unwrap().unwrap();
    assert_eq!(kept.balance, Fen(1));
}

async fn cards_round_trip_unchanged(store: Store) {
    let c = card(UNICOM_ICCID, CarrierId::Unicom);
    store
        .insert_cards(std::slice::from_ref(&c), None, None)
        .await
        .unwrap();
    let back = store.get_card(&c.iccid).await.unwrap().unwrap();
    assert_eq!(back, c);
    assert!(back.stop_reasons.contains(StopReason::Arrears));
    assert!(store
        .get_card(&Iccid::parse_any(MOBILE_ICCID).unwrap())
        .await
        .unwrap()
        .is_none());
}

async fn stale_versions_are_refused(store: Store) {
    let c = card(UNICOM_ICCID, CarrierId::Unicom);
    store
        .insert_cards(std::slice::from_ref(&c), None, None)
        .await
        .unwrap();
    let mut changed = c.clone();
    changed.balance = Fen(100);
    let v1 = store
        .update_card(
            &changed,
            &[event(&changed, "card.recharged")],
            None,
            None,
            0,
        )
        .await
        .unwrap();
    assert_eq!(v1.version, 1);
    // A writer that read version 0 loses: its update must not land.
    let mut stale = c.clone();
    stale.balance = Fen(999);
    assert!(matches!(
        store
            .update_card(&stale, &[event(&stale, "card.recharged")], None, None, 0)
            .await,
        Err(StoreError::Conflict)
    ));
    let now = store.get_card(&c.iccid).await.unwrap().unwrap();
    assert_eq!((now.balance, now.version), (Fen(100), 1));
    let kinds: Vec<_> = store
        .card_events(&c.iccid)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.kind)
        .collect();
    assert_eq!(
        kinds,
        vec!["card.imported", "card.recharged"],
        "the refused write left no event"
    );
}

async fn duplicates_are_reported_by_field(store: Store) {
    let a = card(UNICOM_ICCID, CarrierId::Unicom);
    store
        .insert_cards(std::slice::from_ref(&a), None, None)
        .await
        .unwrap();
    match store
        .insert_cards(std::slice::from_ref(&a), None, None)
        .await
    {
        Err(StoreError::Duplicate {
            field: "iccid",
            value,
        }) => assert_eq!(value, UNICOM_ICCID),
        other => panic!("{other:?}"),
    }
    let b = card(MOBILE_ICCID, CarrierId::Mobile); // same MSISDN as a
    match store.insert_cards(&[b], None, None).await {
        Err(StoreError::Duplicate {
            field: "msisdn", ..
        }) => {}
        other => panic!("{other:?}"),
    }
    assert_eq!(store.count_cards().await.unwrap(), 1);
}

async fn listing_filters_and_pages(store: Store) {
    let mut cards = Vec::new();
    for n in 0..30u64 {
        let (iccid, carrier) = match n % 3 {
            0 => (mobile_iccid(n), CarrierId::Mobile),
            1 => (unicom_iccid(n), CarrierId::Unicom),
            _ => (telecom_iccid(n), CarrierId::Telecom),
        };
        let mut c = card(&iccid, carrier);
        c.msisdn = None;
        cards.push(c);
    }
    store.insert_cards(&cards, None, None).await.unwrap();
    let mut after: Option<String> = None;
    let mut seen = Vec::new();
    loop {
        let page = store
            .list_cards(&CardFilter::default(), after.as_deref(), 7)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        after = Some(page.last().unwrap().iccid.to_string());
        seen.extend(page.into_iter().map(|c| c.iccid.to_string()));
    }
    let mut expected: Vec<_> = cards.iter().map(|c| c.iccid.to_string()).collect();
    expected.sort();
    assert_eq!(seen, expected);
    let telecom = store
        .list_cards(
            &CardFilter {
                carrier: Some(CarrierId::Telecom),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(telecom.len(), 10);
    let real_name = store
        .list_cards(
            &CardFilter {
                stop_reason: Some(StopReason::RealName),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert_eq!(real_name.len(), 30);
    let manual = store
        .list_cards(
            &CardFilter {
                stop_reason: Some(StopReason::Manual),
                ..Default::default()
            },
            None,
            100,
        )
        .await
        .unwrap();
    assert!(manual.is_empty());
}

async fn simulator_state_is_kept_apart(store: Store) {
    let iccid = Iccid::parse_any(MOBILE_ICCID).unwrap();
    let onboard = OnboardCard {
        iccid: iccid.clone(),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    };
    store
        .sim_onboard("mobile", std::slice::from_ref(&onboard), CYCLE, CYCLE)
        .await
        .unwrap();
    store
        .sim_set_state("mobile", &iccid, ServiceState::Stopped, CYCLE)
        .await
        .unwrap();
    // Onboarding again (a retried import) must not reset what the carrier holds.
    store
        .sim_onboard("mobile", &[onboard], CYCLE, CYCLE)
        .await
        .unwrap();
    let c = store
        .sim_card("mobile", &iccid, CYCLE)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((c.state, c.changes), (ServiceState::Stopped, 1));
    assert!(store
        .sim_add_usage("mobile", &iccid, 10, CYCLE, 0)
        .await
        .unwrap());
    assert!(!store
        .sim_add_usage("unicom", &iccid, 10, CYCLE, 0)
        .await
        .unwrap());
    assert!(store
        .sim_card("unicom", &iccid, CYCLE)
        .await
        .unwrap()
        .is_none());
}

async fn migrations_can_run_twice(store: Store) {
    // Connecting again re-runs the migrator, which must find everything applied.
    let _ = store.count_cards().await.unwrap();
    drop(store);
}

/// What SQLite does with `sql`, bound to `binds` (each step's `detail`).
async fn sqlite_plan(url: &str, sql: &str, binds: &[&str]) -> String {
    let pool = sqlx::SqlitePool::connect(url).await.unwrap();
    let explain = format!("EXPLAIN QUERY PLAN {sql}");
    let mut q = sqlx::query(&explain);
    for b in binds {
        q = q.bind(*b);
    }
    let rows = q.fetch_all(&pool).await.unwrap();
    rows.iter()
        .map(|r| sqlx::Row::get::<String, _>(r, "detail"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// The batch worker's read of a batch's next due items walks the pending-items index in order
/// and stops at its limit, and GetOperation's counts walk the status index: neither plan sorts
/// the batch. (Both once sorted every item of the batch, on every pass and every call, which
/// made a 100,000-card batch quadratic.)
#[tokio::test]
async fn batch_reads_walk_an_index_instead_of_sorting_the_batch() {
    let db = TestDb::new(Backend::Sqlite).unwrap();
    // Connecting runs the migrations: the plans are of the real schema.
    let _store = db.store().await;
    let due = sqlite_plan(
        &db.url,
        simgate::store::DUE_ITEMS_OF_BATCH,
        &["batch", "0", "512"],
    )
    .await;
    assert!(due.contains("batch_items_pending"), "{due}");
    assert!(!due.contains("TEMP B-TREE"), "{due}");
    let counts = sqlite_plan(&db.url, simgate::store::BATCH_COUNTS, &["batch"]).await;
    assert!(counts.contains("batch_items_by_status"), "{counts}");
    assert!(!counts.contains("TEMP B-TREE"), "{counts}");
}
