//! The carrier journal settles forward: an answer lost in an outage leaves the change pending
//! (never failed, never undone) until simgate reads the carrier; two servers on one database
//! never both change one card; drift behind simgate's back is reported. Waits run on the
//! injectable operational clock.

use std::sync::Arc;
use std::time::{Duration, Instant};

use simgate::carrier::guard::CarrierLimits;
use simgate::clock::{Clock, ManualClock};
use simgate::domain::Iccid;
use simgate::pb;
use tonic::Code;

use crate::helpers::*;

/// A server whose operational clock (journal leases, breaker windows, retry backoff) is `ops`,
/// and whose carriers open their breaker after `breaker_failures` failures for 30 s.
async fn spawn_with_ops(backend: Backend, breaker_failures: u32) -> Option<(TestApp, ManualClock)> {
    let db = Arc::new(TestDb::new(backend)?);
    let clock = ManualClock::new(start_time());
    let ops = ManualClock::new(start_time());
    let mut builder = test_server(&db, &clock).ops_clock(Arc::new(ops.clone()));
    for id in simgate::domain::CarrierId::ALL {
        builder = builder.carrier_limits(
            id,
            CarrierLimits {
                breaker_failures,
                breaker_open_ms: 30_000,
                ..CarrierLimits::default()
            },
        );
    }
    let app = builder.build().await.expect("build");
    Some((serve_built(app, db, clock.clone()).await, ops))
}

/// `n` China Unicom cards imported, with the carrier then losing every answer.
async fn unicom_cards_losing_answers(app: &mut TestApp, n: u64) -> Vec<String> {
    let iccids: Vec<String> = (0..n).map(unicom_iccid).collect();
    import(
        app,
        iccids
            .iter()
            .map(|i| card_input(i, pb::Carrier::ChinaUnicom))
            .collect(),
    )
    .await;
    set_faults(
        app,
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaUnicom as i32,
            responses_lost: true,
            ..Default::default()
        },
    )
    .await;
    iccids
}

/// Sets a card's state at its simulated carrier behind simgate's back.
async fn set_at_carrier(
    app: &mut TestApp,
    carrier: pb::Carrier,
    iccid: &str,
    state: pb::CarrierServiceState,
) {
    app.sim
        .set_carrier_card_state(pb::SetCarrierCardStateRequest {
            account_id: String::new(),
            carrier: carrier as i32,
            iccid: iccid.into(),
            state: state as i32,
        })
        .await
        .expect("set carrier state");
}

async fn set_faults(app: &mut TestApp, req: pb::SetFaultsRequest) {
    app.sim.set_faults(req).await.expect("set faults");
}

async fn carrier_card(app: &mut TestApp, carrier: pb::Carrier, iccid: &str) -> pb::CarrierCard {
    app.sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: String::new(),
            carrier: carrier as i32,
            iccid: iccid.into(),
        })
        .await
        .expect("carrier card")
        .into_inner()
}

async fn kinds_of(app: &mut TestApp, iccid: &str) -> Vec<String> {
    app.cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: iccid.into(),
            page_size: 1000,
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner()
        .events
        .into_iter()
        .map(|e| e.kind)
        .collect()
}

fn count(kinds: &[String], kind: &str) -> usize {
    kinds.iter().filter(|k| k.as_str() == kind).count()
}

/// Settles until nothing is open, moving the operational clock past any backoff; bounded.
async fn settle_everything(app: &TestApp, ops: &ManualClock) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        ops.advance(chrono::Duration::seconds(31)).unwrap();
        app.service.settle_open_intents_now().await.unwrap();
        if app.store.count_open_intents().await.unwrap() == 0 {
            return;
        }
        assert!(Instant::now() < deadline, "intents still open");
        // A background settler of the same server may hold one for a moment.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Lost answers, then an outage: 8 SuspendCards whose changes the carrier applied without
/// answering. None fails, none is undone: each is pending (or, refused by the open circuit
/// before it was sent, not made at all), and settles to the carrier's truth once it answers.
async fn lost_answers_then_an_outage(backend: Backend) {
    let Some((mut app, ops)) = spawn_with_ops(backend, 3).await else {
        return;
    };
    let iccids = unicom_cards_losing_answers(&mut app, 8).await;
    let calls = iccids.iter().enumerate().map(|(n, iccid)| {
        let mut c = app.cards.clone();
        let iccid = iccid.clone();
        async move {
            c.suspend_card(pb::SuspendCardRequest {
                iccid,
                request_id: format!("lost-{n}"),
            })
            .await
        }
    });
    let results = futures::future::join_all(calls).await;
    let mut pending = Vec::new();
    for (iccid, r) in iccids.iter().zip(&results) {
        let err = r.as_ref().expect_err("no answer came back");
        assert_eq!(err.code(), Code::Unavailable, "{err:?}");
        match details(err).0.as_str() {
            "CARRIER_OUTCOME_PENDING" => pending.push(iccid.clone()),
            // Refused by the open circuit: never sent.
            "CARRIER_CIRCUIT_OPEN" => {}
            other => panic!("{iccid}: unexpected {other}: {err:?}"),
        }
    }
    assert!(!pending.is_empty(), "at least the first change was sent");

    for iccid in &iccids {
        let card = get(&mut app, iccid).await;
        let sent = pending.contains(iccid);
        // simgate does not claim what it does not know: still ACTIVE, with the stop pending.
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert_eq!(
            card.pending_change.as_ref().map(|p| p.action),
            sent.then_some(pb::CarrierAction::Stop as i32),
            "{iccid}"
        );
    }
    let listed = app
        .cards
        .list_cards(pb::ListCardsRequest {
            page_size: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        listed
            .cards
            .iter()
            .filter(|c| c.pending_change.is_some())
            .count(),
        pending.len()
    );
    let first = &pending[0];
    // DiagnoseCard does not blame the device, and does not wait for the carrier.
    let d = app
        .cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: first.clone(),
            language: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.verdict, pb::Verdict::ChangePending as i32, "{d:?}");
    assert_eq!(d.findings[0].code, "CARRIER_CHANGE_PENDING");
    // Any other change waits for the pending one, and says which it is.
    let err = app
        .cards
        .recharge(pb::RechargeRequest {
            iccid: first.clone(),
            amount_fen: 100,
            request_id: "r-while-pending".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert_eq!(details(&err).0, "CHANGE_PENDING");
    assert!(err.message().contains("stop"), "{}", err.message());
    // The same request again: still pending, nothing sent twice.
    let n = iccids.iter().position(|i| i == first).unwrap();
    let again = app
        .cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: first.clone(),
            request_id: format!("lost-{n}"),
        })
        .await
        .unwrap_err();
    assert_eq!(details(&again).0, "CARRIER_OUTCOME_PENDING");
    // Hours of the carrier's silence turn nothing into a failure or an undo.
    ops.advance(chrono::Duration::hours(2)).unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    assert_eq!(
        app.store.count_open_intents().await.unwrap(),
        pending.len() as i64
    );

    // The carrier answers again: every pending stop is found applied and rolled forward.
    set_faults(
        &mut app,
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaUnicom as i32,
            ..Default::default()
        },
    )
    .await;
    settle_everything(&app, &ops).await;
    for (n, iccid) in iccids.iter().enumerate() {
        // Every request id answers its real outcome: the settled card, or (never sent) the
        // change made now.
        let card = app
            .cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                request_id: format!("lost-{n}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_of(&card), pb::CardStatus::Suspended, "{iccid}");
        assert_eq!(card.pending_change, None);
        let replay = app
            .cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                request_id: format!("lost-{n}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replay, card, "{iccid}: the answer stands");
        let at_carrier = carrier_card(&mut app, pb::Carrier::ChinaUnicom, iccid).await;
        assert_eq!(
            (at_carrier.state, at_carrier.changes),
            (pb::CarrierServiceState::Stopped as i32, 1),
            "{iccid}: changed exactly once at the carrier"
        );
        let kinds = kinds_of(&mut app, iccid).await;
        assert_eq!(count(&kinds, "card.suspended"), 1, "{iccid}: {kinds:?}");
    }
    let d = app
        .cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: first.clone(),
            language: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.verdict, pb::Verdict::BlockedByAccount as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_then_an_outage_leave_changes_pending_and_settle_forward_sqlite() {
    lost_answers_then_an_outage(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_answers_then_an_outage_leave_changes_pending_and_settle_forward_postgres() {
    lost_answers_then_an_outage(Backend::Postgres).await;
}

/// The same on a batch: its cards whose answers were lost wait for the journal instead of
/// failing, the rest are retried once the carrier is back, and each card changes once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_lost_answers_and_an_outage_changes_each_card_once() {
    let (mut app, ops) = spawn_with_ops(Backend::Sqlite, 5).await.unwrap();
    let iccids = unicom_cards_losing_answers(&mut app, 40).await;
    let op = operations_client(&app.channel, ADMIN_KEY)
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: iccids.clone(),
            request_id: "lost-batch".into(),
        })
        .await
        .unwrap()
        .into_inner();
    // Wait (bounded) until the worker has tried every card once: the operational clock stands
    // still, so nothing is tried twice meanwhile.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let tried = app.store.batch_items(&op.id, None, -1, 1000).await.unwrap();
        // A try is counted when it starts; it has ended once its outcome is recorded.
        if tried
            .iter()
            .all(|i| i.attempts >= 1 && (i.status != "PENDING" || !i.reason.is_empty()))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not try every card"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let open = app.store.count_open_intents().await.unwrap();
    assert!(open > 0, "some changes were sent and went unanswered");
    let p = app.operation(&op.id).await;
    assert_eq!(
        (p.failed, p.done),
        (0, 0),
        "nothing failed, nothing claimed done"
    );

    set_faults(
        &mut app,
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaUnicom as i32,
            ..Default::default()
        },
    )
    .await;
    let deadline = Instant::now() + Duration::from_secs(120);
    let done = loop {
        ops.advance(chrono::Duration::seconds(31)).unwrap();
        app.service.settle_open_intents_now().await.unwrap();
        let p = app.operation(&op.id).await;
        if p.state != pb::OperationState::Running as i32 {
            break p;
        }
        assert!(Instant::now() < deadline, "batch did not finish: {p:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!((done.done, done.failed), (40, 0), "{done:?}");
    assert_eq!(app.store.count_open_intents().await.unwrap(), 0);
    for iccid in &iccids {
        let at_carrier = carrier_card(&mut app, pb::Carrier::ChinaUnicom, iccid).await;
        assert_eq!(
            (at_carrier.state, at_carrier.changes),
            (pb::CarrierServiceState::Stopped as i32, 1),
            "{iccid}"
        );
        assert_eq!(
            status_of(&get(&mut app, iccid).await),
            pb::CardStatus::Suspended
        );
        assert_eq!(count(&kinds_of(&mut app, iccid).await, "card.suspended"), 1);
    }
    assert_eq!(
        app.store.count_events("card.suspended").await.unwrap(),
        40,
        "complete history, nothing twice"
    );
}

/// A card stopped at the carrier behind simgate's back is found by the next sync, reported once,
/// shown by GetCard and DiagnoseCard, and cleared when the two agree again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_behind_simgates_back_is_reported_after_the_next_sync() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom)],
    )
    .await;
    set_at_carrier(
        &mut app,
        pb::Carrier::ChinaTelecom,
        TELECOM_ICCID,
        pb::CarrierServiceState::Stopped,
    )
    .await;
    // Not yet synced: simgate's record has no drift.
    assert_eq!(get(&mut app, TELECOM_ICCID).await.drift, None);
    app.service.sync_all_usage().await.unwrap();
    let card = get(&mut app, TELECOM_ICCID).await;
    let drift = card.drift.clone().expect("drift recorded by the sync");
    assert_eq!(
        (drift.carrier_state.as_str(), drift.expected_state.as_str()),
        ("STOPPED", "ACTIVE")
    );
    assert_eq!(
        status_of(&card),
        pb::CardStatus::Active,
        "report only: nothing changed"
    );
    let d = app
        .cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: TELECOM_ICCID.into(),
            language: "en".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(d.verdict, pb::Verdict::CarrierStateDiffers as i32, "{d:?}");
    assert_eq!(d.findings[0].code, "CARRIER_STATE_DIFFERS");
    assert!(d.summary.contains("STOPPED"), "{}", d.summary);
    // Reported once, however often it is synced, with both states.
    app.service.sync_all_usage().await.unwrap();
    let kinds = kinds_of(&mut app, TELECOM_ICCID).await;
    assert_eq!(count(&kinds, "card.drift_detected"), 1, "{kinds:?}");
    let events = monitoring_client(&app.channel, ADMIN_KEY)
        .list_events(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                kinds: vec!["card.drift_detected".into()],
                ..Default::default()
            }),
            page_size: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .events;
    assert_eq!(
        events
            .iter()
            .map(|e| (e.carrier_state.as_str(), e.expected_state.as_str()))
            .collect::<Vec<_>>(),
        [("STOPPED", "ACTIVE")]
    );
    // Carrier and card agree again: the drift is cleared.
    set_at_carrier(
        &mut app,
        pb::Carrier::ChinaTelecom,
        TELECOM_ICCID,
        pb::CarrierServiceState::Active,
    )
    .await;
    app.service.sync_all_usage().await.unwrap();
    assert_eq!(get(&mut app, TELECOM_ICCID).await.drift, None);
    let kinds = kinds_of(&mut app, TELECOM_ICCID).await;
    assert_eq!(count(&kinds, "card.drift_resolved"), 1, "{kinds:?}");
}

/// With `journal.drift_repair = carrier_follows_card` the sync also sends the carrier the card's
/// state, as a journaled change of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_repair_sends_the_carrier_the_cards_state_when_configured() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).unwrap());
    let clock = ManualClock::new(start_time());
    let built = test_server(&db, &clock)
        .journal(simgate::service::JournalConfig {
            drift_repair: simgate::service::DriftRepair::CarrierFollowsCard,
            ..Default::default()
        })
        .build()
        .await
        .unwrap();
    let mut app = serve_built(built, db, clock).await;
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    set_at_carrier(
        &mut app,
        pb::Carrier::ChinaMobile,
        MOBILE_ICCID,
        pb::CarrierServiceState::Stopped,
    )
    .await;
    app.service.sync_all_usage().await.unwrap();
    let at_carrier = carrier_card(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await;
    assert_eq!(
        (at_carrier.state, at_carrier.changes),
        (pb::CarrierServiceState::Active as i32, 2),
        "stopped behind our back, restored by the repair"
    );
    let card = get(&mut app, MOBILE_ICCID).await;
    assert_eq!((card.drift, card.pending_change), (None, None));
    let kinds = kinds_of(&mut app, MOBILE_ICCID).await;
    assert_eq!(count(&kinds, "card.drift_detected"), 1, "{kinds:?}");
    assert_eq!(count(&kinds, "card.drift_repaired"), 1, "{kinds:?}");
    let ops = app
        .store
        .card_ops(&Iccid::parse_any(MOBILE_ICCID).unwrap())
        .await
        .unwrap();
    assert_eq!(
        ops.iter()
            .map(|o| (o.action.as_str(), o.status.as_str()))
            .collect::<Vec<_>>(),
        [("RESTORE", "APPLIED")]
    );
}

/// Two server processes on one database suspend and resume the same 200 cards at random, with
/// answers lost now and then. No card ever has two open intents, and every card's carrier
/// changes equal simgate's history of it.
async fn two_servers_on_one_database(backend: Backend) {
    if std::env::var(TRANSPORT_ENV).as_deref() == Ok("http") {
        // What this checks lives in the store; over HTTP each lost answer would only add the
        // adapter's 3 s timeout (about a minute in all). The wire's lost answers are drilled by
        // the tests above.
        return;
    }
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let db = Arc::new(db);
    let clock = ManualClock::new(start_time());
    let mut a = spawn_on(db.clone(), clock.clone()).await;
    let mut b = spawn_on(db.clone(), clock.clone()).await;
    let iccids: Vec<String> = (0..200).map(mobile_iccid).collect();
    import(
        &mut a,
        iccids
            .iter()
            .map(|i| card_input(i, pb::Carrier::ChinaMobile))
            .collect(),
    )
    .await;
    for app in [&mut a, &mut b] {
        set_faults(
            app,
            pb::SetFaultsRequest {
                carrier: pb::Carrier::ChinaMobile as i32,
                timeout_after_apply_rate: 0.2,
                ..Default::default()
            },
        )
        .await;
    }
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watcher = watch_one_open_intent_per_card(a.store.clone(), stop.clone());
    let clients = [&a, &b, &a, &b, &a, &b]
        .into_iter()
        .map(|app| app.cards.clone())
        .collect();
    random_suspends_and_resumes(clients, &iccids, 150, 7).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(watcher.await.unwrap() > 0);
    for app in [&mut a, &mut b] {
        set_faults(
            app,
            pb::SetFaultsRequest {
                carrier: pb::Carrier::ChinaMobile as i32,
                ..Default::default()
            },
        )
        .await;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while a.store.count_open_intents().await.unwrap() > 0 {
        a.service.settle_open_intents_now().await.unwrap();
        b.service.settle_open_intents_now().await.unwrap();
        assert!(Instant::now() < deadline, "intents left open");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let changed =
        assert_carrier_matches_history(&a.store, simgate::domain::CarrierId::Mobile, &iccids).await;
    assert!(changed > 200, "the workers changed cards: {changed}");
    let _ = (a.stop().await, b.stop().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_never_both_change_a_card_sqlite() {
    two_servers_on_one_database(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_servers_on_one_database_never_both_change_a_card_postgres() {
    two_servers_on_one_database(Backend::Postgres).await;
}

/// A bad SetCarrierCardState names its field and changes nothing at the carrier.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_carrier_card_state_refuses_a_missing_state_and_changes_nothing() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom)],
    )
    .await;
    let err = app
        .sim
        .set_carrier_card_state(pb::SetCarrierCardStateRequest {
            account_id: String::new(),
            carrier: pb::Carrier::ChinaTelecom as i32,
            iccid: TELECOM_ICCID.into(),
            state: pb::CarrierServiceState::Unspecified as i32,
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(details(&err).1, ["state"]);
    let at_carrier = carrier_card(&mut app, pb::Carrier::ChinaTelecom, TELECOM_ICCID).await;
    assert_eq!(
        (at_carrier.state, at_carrier.changes),
        (pb::CarrierServiceState::Active as i32, 0)
    );
}
