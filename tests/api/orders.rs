//! Carrier orders, repeat windows and machine-card binding end to end: a reseller with a China
//! Mobile OneLink account, a China Unicom Control Center account, a China Telecom CMP account
//! (each behind its real adapter and wire simulator over loopback HTTP) and an in-process
//! simulated China Mobile account. Every change is an order in the journal (ListCarrierOrders);
//! a change inside a card's repeat window is scheduled for the window's end and sent then; a
//! change the carrier takes as an order is pending until its order query says it completed, also
//! across a restart; a bound card found in another device is stopped at the carrier's next daily
//! check with DEVICE_MISMATCH, and RebindCard brings it back.

use std::sync::Arc;

use chrono::Duration;
use simgate::carrier::sim::{RebindLiftsStop, SimFaults};
use simgate::clock::Clock;
use simgate::domain::AccountId;
use simgate::pb;

use crate::helpers::*;

const WINDOW_S: i64 = 1800;

/// The accounts of every test here; `window` is each account's repeat window.
fn accounts(window: u64) -> String {
    format!(
        r#"
[[accounts]]
id = "ol"
carrier = "mobile"
platform = "onelink"
repeat_window_s = {window}

[[accounts]]
id = "cc"
carrier = "unicom"
platform = "jasper"
repeat_window_s = {window}

[[accounts]]
id = "ct"
carrier = "telecom"
platform = "cmp"
repeat_window_s = {window}

[[accounts]]
id = "sim"
carrier = "mobile"
platform = "simulated"
repeat_window_s = {window}
"#
    )
}

/// A server with [`accounts`], the simulated carriers set as `sims` says, on `db` and `clock`.
async fn serve_orders(
    db: Arc<TestDb>,
    clock: simgate::clock::ManualClock,
    window: u64,
    sims: &[(&str, SimFaults)],
) -> TestApp {
    serve_orders_with(test_server(&db, &clock), db, clock, window, sims).await
}

async fn serve_orders_with(
    mut builder: simgate::server::ServerBuilder,
    db: Arc<TestDb>,
    clock: simgate::clock::ManualClock,
    window: u64,
    sims: &[(&str, SimFaults)],
) -> TestApp {
    for (id, s) in sims {
        builder = builder.simulator(AccountId::parse(id).expect("account id"), *s);
    }
    serve_accounts(builder, &accounts(window), db, clock).await
}

async fn spawn_orders(window: u64, sims: &[(&str, SimFaults)]) -> TestApp {
    spawn_orders_on(Backend::Sqlite, window, sims)
        .await
        .expect("sqlite")
}

/// None when the backend is not available (PostgreSQL without its URL).
async fn spawn_orders_on(
    backend: Backend,
    window: u64,
    sims: &[(&str, SimFaults)],
) -> Option<TestApp> {
    let db = Arc::new(TestDb::new(backend)?);
    let clock = simgate::clock::ManualClock::new(start_time());
    Some(serve_orders(db, clock, window, sims).await)
}

/// One card on each account: (account, carrier, iccid).
fn cards() -> Vec<(&'static str, pb::Carrier, String)> {
    vec![
        ("ol", pb::Carrier::ChinaMobile, mobile_iccid(31)),
        ("cc", pb::Carrier::ChinaUnicom, unicom_iccid(32)),
        ("ct", pb::Carrier::ChinaTelecom, telecom_iccid(33)),
        ("sim", pb::Carrier::ChinaMobile, mobile_iccid(34)),
    ]
}

async fn import_all(app: &mut TestApp) {
    let rows = cards()
        .into_iter()
        .map(|(account, carrier, iccid)| pb::CardInput {
            account_id: account.into(),
            ..card_input(&iccid, carrier)
        })
        .collect();
    import(app, rows).await;
}

async fn carrier_card(
    app: &mut TestApp,
    account: &str,
    carrier: pb::Carrier,
    iccid: &str,
) -> pb::CarrierCard {
    app.sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: account.into(),
            carrier: carrier as i32,
            iccid: iccid.into(),
        })
        .await
        .expect("carrier card")
        .into_inner()
}

async fn orders_of(app: &mut TestApp, iccid: &str) -> Vec<pb::CarrierOrder> {
    app.cards
        .list_carrier_orders(pb::ListCarrierOrdersRequest {
            iccid: iccid.into(),
            ..Default::default()
        })
        .await
        .expect("orders")
        .into_inner()
        .orders
}

async fn suspend(app: &mut TestApp, iccid: &str) -> pb::Card {
    app.cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: iccid.into(),
            ..Default::default()
        })
        .await
        .unwrap_or_else(|e| panic!("suspend {iccid}: {e:?}"))
        .into_inner()
}

async fn resume(
    app: &mut TestApp,
    iccid: &str,
    request_id: &str,
) -> Result<pb::Card, tonic::Status> {
    app.cards
        .resume_card(pb::ResumeCardRequest {
            iccid: iccid.into(),
            request_id: request_id.into(),
        })
        .await
        .map(|r| r.into_inner())
}

fn order_state(o: &pb::CarrierOrder) -> pb::CarrierOrderState {
    pb::CarrierOrderState::try_from(o.state).expect("state")
}

fn pending_state(c: &pb::Card) -> Option<pb::CarrierOrderState> {
    c.pending_change
        .as_ref()
        .map(|p| pb::CarrierOrderState::try_from(p.state).expect("state"))
}

async fn diagnosis_codes(app: &mut TestApp, iccid: &str) -> Vec<String> {
    app.cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: iccid.into(),
            language: String::new(),
        })
        .await
        .expect("diagnose")
        .into_inner()
        .findings
        .into_iter()
        .map(|f| f.code)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_inside_the_repeat_window_is_scheduled_and_sent_when_the_window_ends() {
    resume_inside_the_window(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_inside_the_repeat_window_is_scheduled_and_sent_when_the_window_ends_postgres() {
    resume_inside_the_window(Backend::Postgres).await;
}

async fn resume_inside_the_window(backend: Backend) {
    let Some(mut app) = spawn_orders_on(backend, WINDOW_S as u64, &[]).await else {
        return;
    };
    import_all(&mut app).await;
    let start = app.clock.now();
    for (account, carrier, iccid) in cards() {
        let stopped = suspend(&mut app, &iccid).await;
        assert_eq!(status_of(&stopped), pb::CardStatus::Suspended, "{account}");
        assert!(stopped.pending_change.is_none(), "{account}: {stopped:?}");
        // Accepted at once, and scheduled for the end of the window: shown with its time.
        let scheduled = resume(&mut app, &iccid, &format!("resume-{account}"))
            .await
            .unwrap_or_else(|e| panic!("{account}: {e:?}"));
        assert_eq!(
            pending_state(&scheduled),
            Some(pb::CarrierOrderState::Scheduled),
            "{account}: {scheduled:?}"
        );
        let p = scheduled.pending_change.clone().unwrap();
        assert_eq!(p.action, pb::CarrierAction::Restore as i32);
        let not_before = p.not_before.expect("not_before").seconds;
        assert!(
            not_before >= start.timestamp() + WINDOW_S
                && not_before <= start.timestamp() + WINDOW_S + 5,
            "{account}: not_before {not_before}"
        );
        // The same request again gets the same answer; another change is refused.
        let again = resume(&mut app, &iccid, &format!("resume-{account}"))
            .await
            .unwrap_or_else(|e| panic!("{account}: {e:?}"));
        assert_eq!(again.pending_change.map(|p| p.order), Some(p.order));
        let other = app
            .cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(other.code(), tonic::Code::FailedPrecondition);
        assert_eq!(details(&other).0, "CHANGE_PENDING");
        assert!(diagnosis_codes(&mut app, &iccid)
            .await
            .contains(&"CARRIER_CHANGE_SCHEDULED".to_string()));
        // Settling does not cut the window short: the carrier saw the stop only.
        app.service.settle_open_intents_now().await.unwrap();
        let at_carrier = carrier_card(&mut app, account, carrier, &iccid).await;
        assert_eq!(at_carrier.changes, 1, "{account}");
        assert_eq!(at_carrier.state, pb::CarrierServiceState::Stopped as i32);
    }
    // The window ends: every scheduled resume is sent, once.
    app.clock.advance(Duration::seconds(WINDOW_S + 2)).unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    for (account, carrier, iccid) in cards() {
        let card = get(&mut app, &iccid).await;
        assert_eq!(
            status_of(&card),
            pb::CardStatus::Active,
            "{account}: {card:?}"
        );
        assert!(card.pending_change.is_none(), "{account}");
        let at_carrier = carrier_card(&mut app, account, carrier, &iccid).await;
        assert_eq!(
            at_carrier.changes, 2,
            "{account}: exactly the stop and the restore"
        );
        assert_eq!(at_carrier.state, pb::CarrierServiceState::Active as i32);
        let orders = orders_of(&mut app, &iccid).await;
        assert_eq!(orders.len(), 2, "{account}: {orders:?}");
        // Newest first: the restore, scheduled then sent; the stop, sent at once.
        assert_eq!(orders[0].action, pb::CarrierAction::Restore as i32);
        assert!(orders[0].not_before.is_some());
        assert!(orders[0].sent.as_ref().unwrap().seconds >= not_before_of(&orders[0]));
        assert_eq!(orders[1].action, pb::CarrierAction::Stop as i32);
        assert!(orders[1].not_before.is_none());
        for o in &orders {
            assert_eq!(
                order_state(o),
                pb::CarrierOrderState::Applied,
                "{account}: {o:?}"
            );
            assert_eq!(o.account_id, account);
        }
    }
}

fn not_before_of(o: &pb::CarrierOrder) -> i64 {
    o.not_before.as_ref().map(|t| t.seconds).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_taken_as_an_order_is_pending_until_the_order_query_completes_it() {
    order_completes_later(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_taken_as_an_order_is_pending_until_the_order_query_completes_it_postgres() {
    order_completes_later(Backend::Postgres).await;
}

async fn order_completes_later(backend: Backend) {
    let orders = SimFaults {
        orders: true,
        order_delay_s: 60,
        ..SimFaults::default()
    };
    let Some(mut app) = spawn_orders_on(backend, 0, &[("ol", orders), ("sim", orders)]).await
    else {
        return;
    };
    import_all(&mut app).await;
    for (account, carrier, iccid) in cards() {
        let answered = suspend(&mut app, &iccid).await;
        let orders = orders_of(&mut app, &iccid).await;
        assert_eq!(orders.len(), 1, "{account}");
        let o = &orders[0];
        match account {
            // OneLink answers orderNum and is asked /query/order-info; the simulated carrier
            // answers an order number and is asked the same way.
            "ol" | "sim" => {
                assert_eq!(
                    pending_state(&answered),
                    Some(pb::CarrierOrderState::Submitted),
                    "{account}: {answered:?}"
                );
                let id = answered.pending_change.as_ref().unwrap().order_id.clone();
                assert!(!id.is_empty(), "{account}");
                assert_eq!(o.carrier_order_id, id);
                assert_eq!(order_state(o), pb::CarrierOrderState::Submitted);
                let at_carrier = carrier_card(&mut app, account, carrier, &iccid).await;
                assert_eq!(at_carrier.state, pb::CarrierServiceState::Active as i32);
                assert!(diagnosis_codes(&mut app, &iccid)
                    .await
                    .contains(&"CARRIER_ORDER_IN_PROGRESS".to_string()));
            }
            // CMP answers a GROUP_TRANSACTIONID with a success that is proof; Control Center
            // answers the device, with no order id.
            "ct" => {
                assert_eq!(status_of(&answered), pb::CardStatus::Suspended);
                assert_eq!(o.carrier_order_id.len(), 28, "{o:?}");
                assert!(o.carrier_order_id.bytes().all(|b| b.is_ascii_digit()));
                assert_eq!(o.settled_by, pb::OrderSettledBy::Answer as i32);
            }
            _ => {
                assert_eq!(status_of(&answered), pb::CardStatus::Suspended);
                assert_eq!(o.carrier_order_id, "");
                assert_eq!(o.settled_by, pb::OrderSettledBy::Answer as i32);
            }
        }
    }
    // Not completed yet: the order query says so, nothing is settled.
    app.service.settle_open_intents_now().await.unwrap();
    let submitted = app
        .cards
        .list_carrier_orders(pb::ListCarrierOrdersRequest {
            state: pb::CarrierOrderState::Submitted as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(submitted.len(), 2, "{submitted:?}");
    app.clock.advance(Duration::seconds(61)).unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    for (account, carrier, iccid) in cards() {
        let card = get(&mut app, &iccid).await;
        assert_eq!(status_of(&card), pb::CardStatus::Suspended, "{account}");
        assert!(card.pending_change.is_none(), "{account}");
        let o = &orders_of(&mut app, &iccid).await[0];
        assert_eq!(
            order_state(o),
            pb::CarrierOrderState::Applied,
            "{account}: {o:?}"
        );
        if account == "ol" || account == "sim" {
            assert_eq!(o.settled_by, pb::OrderSettledBy::OrderQuery as i32, "{o:?}");
            assert_eq!(o.carrier_order_status, "completed");
        }
        let at_carrier = carrier_card(&mut app, account, carrier, &iccid).await;
        assert_eq!(at_carrier.state, pb::CarrierServiceState::Stopped as i32);
        assert_eq!(at_carrier.changes, 1, "{account}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_left_open_across_a_restart_is_settled_by_the_order_query() {
    let orders = SimFaults {
        orders: true,
        order_delay_s: 300,
        ..SimFaults::default()
    };
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite"));
    let clock = simgate::clock::ManualClock::new(start_time());
    let mut app = serve_orders(db, clock.clone(), 0, &[("ol", orders)]).await;
    import_all(&mut app).await;
    let iccid = mobile_iccid(31);
    let answered = suspend(&mut app, &iccid).await;
    assert_eq!(
        pending_state(&answered),
        Some(pb::CarrierOrderState::Submitted)
    );
    let db = app.stop().await;
    clock.advance(Duration::seconds(301)).unwrap();
    let mut app = serve_orders(db, clock, 0, &[("ol", orders)]).await;
    app.service.settle_open_intents_now().await.unwrap();
    let card = get(&mut app, &iccid).await;
    assert_eq!(status_of(&card), pb::CardStatus::Suspended);
    assert!(card.pending_change.is_none());
    let o = &orders_of(&mut app, &iccid).await[0];
    assert_eq!(order_state(o), pb::CarrierOrderState::Applied);
    assert_eq!(o.settled_by, pb::OrderSettledBy::OrderQuery as i32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_the_adapter_does_not_know_is_read_and_sent_again_later_never_final() {
    // simgate knows no window for these accounts, but their carriers keep one (answered with
    // a code no adapter knows): the resume is read back, deferred and sent again until the
    // carrier takes it.
    let window = SimFaults {
        repeat_window_s: Some(WINDOW_S as u64),
        ..SimFaults::default()
    };
    let mut app = spawn_orders(0, &[("ct", window), ("cc", window)]).await;
    import_all(&mut app).await;
    for (account, carrier, iccid) in cards().into_iter().filter(|c| c.0 == "ct" || c.0 == "cc") {
        suspend(&mut app, &iccid).await;
        let deferred = resume(&mut app, &iccid, "").await.unwrap();
        assert_eq!(
            pending_state(&deferred),
            Some(pb::CarrierOrderState::Scheduled),
            "{account}: {deferred:?}"
        );
        let mut waited = 0;
        while get(&mut app, &iccid).await.pending_change.is_some() {
            assert!(waited < 3 * WINDOW_S, "{account}: never sent");
            app.clock.advance(Duration::seconds(30)).unwrap();
            waited += 30;
            app.service.settle_open_intents_now().await.unwrap();
        }
        assert!(
            waited >= WINDOW_S,
            "{account}: sent inside the carrier's window"
        );
        let card = get(&mut app, &iccid).await;
        assert_eq!(status_of(&card), pb::CardStatus::Active, "{account}");
        let at_carrier = carrier_card(&mut app, account, carrier, &iccid).await;
        assert_eq!(at_carrier.changes, 2, "{account}");
        let o = &orders_of(&mut app, &iccid).await[0];
        assert_eq!(order_state(o), pb::CarrierOrderState::Applied);
        assert!(o.attempts >= 3, "{account}: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bound_card_moved_to_another_device_is_stopped_the_next_day_and_rebind_card_brings_it_back(
) {
    let never = SimFaults {
        rebind_lifts_stop: RebindLiftsStop::Never,
        ..SimFaults::default()
    };
    // OneLink lifts its stop at the next daily check after the rebind; the in-process
    // simulated account is set to never lift it (simgate restores the card itself).
    let mut app = spawn_orders(0, &[("sim", never)]).await;
    import_all(&mut app).await;
    for (account, iccid) in [("ol", mobile_iccid(31)), ("sim", mobile_iccid(34))] {
        let bind = |imei: &str| pb::BindCarrierCardRequest {
            account_id: account.into(),
            carrier: pb::Carrier::ChinaMobile as i32,
            iccid: iccid.clone(),
            imei: imei.into(),
        };
        app.sim
            .bind_carrier_card(bind("860000000000001"))
            .await
            .unwrap();
        app.sim
            .move_carrier_card(pb::MoveCarrierCardRequest {
                account_id: account.into(),
                carrier: pb::Carrier::ChinaMobile as i32,
                iccid: iccid.clone(),
                imei: "860000000000002".into(),
            })
            .await
            .unwrap();
    }
    // 10:00 Beijing: the carrier checks at midnight. Nothing yet.
    app.service.sync_all_usage().await.unwrap();
    for (_, _, iccid) in cards() {
        assert_eq!(
            status_of(&get(&mut app, &iccid).await),
            pb::CardStatus::Active
        );
    }
    app.clock
        .advance(Duration::hours(14) + Duration::minutes(1))
        .unwrap();
    app.service.sync_all_usage().await.unwrap();
    for (account, iccid) in [("ol", mobile_iccid(31)), ("sim", mobile_iccid(34))] {
        let card = get(&mut app, &iccid).await;
        assert_eq!(
            status_of(&card),
            pb::CardStatus::Suspended,
            "{account}: {card:?}"
        );
        assert_eq!(
            reasons_of(&card),
            vec![pb::StopReason::DeviceMismatch],
            "{account}"
        );
        assert!(
            card.drift.is_none(),
            "{account}: the reason explains the stop"
        );
        // A plain restore does not bring it back; the diagnosis names RebindCard.
        let refused = resume(&mut app, &iccid, "").await.unwrap_err();
        assert_eq!(details(&refused).0, "DEVICE_MISMATCH", "{account}");
        let d = app
            .cards
            .diagnose_card(pb::DiagnoseCardRequest {
                iccid: iccid.clone(),
                language: String::new(),
            })
            .await
            .unwrap()
            .into_inner();
        let f = d
            .findings
            .iter()
            .find(|f| f.code == "DEVICE_MISMATCH")
            .unwrap();
        assert_eq!(
            f.steps[0].action,
            pb::RemedyAction::RebindCard as i32,
            "{f:?}"
        );
        assert_eq!(f.steps[0].rpc, "RebindCard");
        assert!(f.steps[0].text.contains("860000000000002"), "{f:?}");
        // Following it: an order through the journal.
        let rebound = app
            .cards
            .rebind_card(pb::RebindCardRequest {
                iccid: iccid.clone(),
                target: Some(pb::rebind_card_request::Target::CurrentDevice(true)),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{account}: {e:?}"))
            .into_inner();
        assert!(rebound.pending_change.is_none(), "{account}: {rebound:?}");
        assert_eq!(reasons_of(&rebound), vec![pb::StopReason::DeviceMismatch]);
        let all = orders_of(&mut app, &iccid).await;
        assert!(!all.is_empty(), "{account}: no orders; card {rebound:?}");
        let o = &all[0];
        assert_eq!(o.action, pb::CarrierAction::Rebind as i32);
        assert_eq!(o.rebind_mode, "CURRENT_DEVICE");
        assert_eq!(order_state(o), pb::CarrierOrderState::Applied);
        let at_carrier = carrier_card(&mut app, account, pb::Carrier::ChinaMobile, &iccid).await;
        assert_eq!(at_carrier.bound_imei, "860000000000002");
    }
    // The reason stays until the carrier's own stop reason clears, at its next daily check.
    app.service.sync_all_usage().await.unwrap();
    assert_eq!(
        reasons_of(&get(&mut app, &mobile_iccid(31)).await),
        vec![pb::StopReason::DeviceMismatch]
    );
    app.clock.advance(Duration::days(1)).unwrap();
    app.service.sync_all_usage().await.unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    for (account, iccid) in [("ol", mobile_iccid(31)), ("sim", mobile_iccid(34))] {
        let card = get(&mut app, &iccid).await;
        assert_eq!(
            status_of(&card),
            pb::CardStatus::Active,
            "{account}: {card:?}"
        );
        assert!(card.pending_change.is_none(), "{account}");
        let at_carrier = carrier_card(&mut app, account, pb::Carrier::ChinaMobile, &iccid).await;
        assert_eq!(
            at_carrier.state,
            pb::CarrierServiceState::Active as i32,
            "{account}"
        );
        assert!(!at_carrier.device_stopped);
        let orders = orders_of(&mut app, &iccid).await;
        let restores = orders
            .iter()
            .filter(|o| o.action == pb::CarrierAction::Restore as i32)
            .count();
        // OneLink lifted its own stop: nothing to send. The "never" carrier needed a restore.
        assert_eq!(
            restores,
            usize::from(account == "sim"),
            "{account}: {orders:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebind_card_and_list_carrier_orders_refuse_bad_input_and_unsupported_modes() {
    let mut app = spawn_orders(0, &[]).await;
    import_all(&mut app).await;
    let rebind = |iccid: &str, target| pb::RebindCardRequest {
        iccid: iccid.into(),
        target,
        ..Default::default()
    };
    use pb::rebind_card_request::Target;
    let mobile = mobile_iccid(31);
    for (target, field) in [
        (None, "target"),
        (Some(Target::Unbind(false)), "target"),
        (Some(Target::Imei("86000000000000".into())), "imei"),
        (Some(Target::Imei("86000000000000x".into())), "imei"),
    ] {
        let e = app
            .cards
            .rebind_card(rebind(&mobile, target))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
        assert_eq!(details(&e).1, vec![field.to_string()]);
    }
    // Control Center has no binding call; CMP cannot unbind.
    for (iccid, target) in [
        (unicom_iccid(32), Target::CurrentDevice(true)),
        (telecom_iccid(33), Target::Unbind(true)),
    ] {
        let e = app
            .cards
            .rebind_card(rebind(&iccid, Some(target)))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::FailedPrecondition, "{e:?}");
        assert_eq!(details(&e).0, "REBIND_NOT_SUPPORTED");
        assert!(
            orders_of(&mut app, &iccid).await.is_empty(),
            "nothing was journaled"
        );
    }
    // CMP binds to a given IMEI (IMEIReRecord bind_type 2), answered with its transaction id.
    let ct = telecom_iccid(33);
    app.cards
        .rebind_card(rebind(&ct, Some(Target::Imei("860000000000003".into()))))
        .await
        .unwrap();
    let o = &orders_of(&mut app, &ct).await[0];
    assert_eq!(o.rebind_mode, "IMEI");
    assert_eq!(o.rebind_imei, "860000000000003");
    assert_eq!(o.carrier_order_id.len(), 28, "{o:?}");

    for req in [
        pb::ListCarrierOrdersRequest {
            account_id: "Not An Id".into(),
            ..Default::default()
        },
        pb::ListCarrierOrdersRequest {
            state: 99,
            ..Default::default()
        },
        pb::ListCarrierOrdersRequest {
            iccid: "123".into(),
            ..Default::default()
        },
    ] {
        let e = app.cards.list_carrier_orders(req).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    }
    // Paging: newest first, every order once.
    for (_, _, iccid) in cards() {
        suspend(&mut app, &iccid).await;
    }
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .cards
            .list_carrier_orders(pb::ListCarrierOrdersRequest {
                page_size: 1,
                page_token: token.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.orders.iter().map(|o| o.id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    assert_eq!(seen.len(), 5, "{seen:?}");
    assert!(seen.windows(2).all(|w| w[0] > w[1]), "{seen:?}");
    let by_account = app
        .cards
        .list_carrier_orders(pb::ListCarrierOrdersRequest {
            account_id: "ct".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(by_account.len(), 2);
    assert!(by_account.iter().all(|o| o.account_id == "ct"));
    // A customer's key sees its own cards' orders only.
    for (customer, expected) in [("acme", 5), ("someone-else", 0)] {
        let key = app
            .access
            .create_api_key(pb::CreateApiKeyRequest {
                role: pb::Role::CustomerViewer as i32,
                customer_id: customer.into(),
                name: "viewer".into(),
                expires_at: None,
            })
            .await
            .unwrap()
            .into_inner()
            .key_secret;
        let seen = cards_client(&app.channel, &key)
            .list_carrier_orders(pb::ListCarrierOrdersRequest::default())
            .await
            .unwrap()
            .into_inner()
            .orders;
        assert_eq!(seen.len(), expected, "{customer}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_item_inside_the_repeat_window_stays_pending_until_its_change_lands() {
    // The bulk worker's backoff runs on the operations clock: moved by hand here.
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite"));
    let clock = simgate::clock::ManualClock::new(start_time());
    let ops = simgate::clock::ManualClock::new(chrono::Utc::now());
    let builder = test_server(&db, &clock).ops_clock(Arc::new(ops.clone()));
    let mut app = serve_orders_with(builder, db, clock, WINDOW_S as u64, &[]).await;
    import_all(&mut app).await;
    let iccid = mobile_iccid(34);
    suspend(&mut app, &iccid).await;
    let mut ops_client = operations_client(&app.channel, ADMIN_KEY);
    let op = ops_client
        .batch_resume(pb::BatchResumeRequest {
            iccids: vec![iccid.clone()],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let item = |client: pb::operation_service_client::OperationServiceClient<Authed>,
                id: String| async move {
        let mut client = client;
        let o = client
            .get_operation(pb::GetOperationRequest {
                id,
                results_page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (o.state, o.results.first().cloned())
    };
    eventually("the item is tried and left pending", 10, || {
        let (c, id) = (ops_client.clone(), op.id.clone());
        async move {
            matches!(item(c, id).await.1, Some(r) if r.reason == "CARRIER_ORDER_OPEN" && r.status == "PENDING")
        }
    })
    .await;
    let card = get(&mut app, &iccid).await;
    assert_eq!(pending_state(&card), Some(pb::CarrierOrderState::Scheduled));
    assert_eq!(
        carrier_card(&mut app, "sim", pb::Carrier::ChinaMobile, &iccid)
            .await
            .changes,
        1
    );
    // The window passes on both clocks: the change lands, then the item is done.
    app.clock.advance(Duration::seconds(WINDOW_S + 2)).unwrap();
    ops.advance(Duration::seconds(WINDOW_S + 2)).unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    eventually("the operation is done", 10, || {
        let (c, id) = (ops_client.clone(), op.id.clone());
        async move { item(c, id).await.0 == pb::OperationState::Done as i32 }
    })
    .await;
    let (_, result) = item(ops_client.clone(), op.id.clone()).await;
    assert_eq!(result.unwrap().status, "DONE");
    assert_eq!(
        status_of(&get(&mut app, &iccid).await),
        pb::CardStatus::Active
    );
    assert_eq!(
        carrier_card(&mut app, "sim", pb::Carrier::ChinaMobile, &iccid)
            .await
            .changes,
        2
    );
}
