//! Batch calls end to end, per platform kind, each account behind its real adapter and wire
//! simulator over loopback HTTP, its calls counted by the wire simulator (GetWireCalls): a usage
//! sync of 1,000 cards asks for usage in ⌈1,000 / batch size⌉ calls on every platform with a
//! batch usage call; Control Center's list of modified cards replaces its card-by-card state
//! reads after the first pass; a bulk suspend on OneLink goes out in batch calls and settles
//! through their job results, a card inside its repeat window kept out and done after it.

use std::collections::BTreeMap;
use std::sync::Arc;

use simgate::clock::Clock;
use simgate::pb;

use crate::helpers::*;

const CARDS: u64 = 1_000;

/// The accounts: one per platform kind, no repeat windows unless `window` says.
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

[[accounts]]
id = "ugw"
carrier = "unicom"
platform = "unicom_gateway"

[[accounts]]
id = "c5"
carrier = "telecom"
platform = "cmp_5g"

[[accounts]]
id = "ct"
carrier = "telecom"
platform = "cmp"
"#
    )
}

async fn serve(window: u64) -> TestApp {
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite"));
    let clock = simgate::clock::ManualClock::new(start_time());
    serve_with(test_server(&db, &clock), db, clock, window).await
}

async fn serve_with(
    builder: simgate::server::ServerBuilder,
    db: Arc<TestDb>,
    clock: simgate::clock::ManualClock,
    window: u64,
) -> TestApp {
    serve_accounts(builder, &accounts(window), db, clock).await
}

/// `n` cards of `carrier` on `account`, numbered from `from`.
async fn import_on(
    app: &mut TestApp,
    account: &str,
    carrier: pb::Carrier,
    iccid: fn(u64) -> String,
    from: u64,
    n: u64,
) -> Vec<String> {
    let iccids: Vec<String> = (from..from + n).map(iccid).collect();
    for (c, chunk) in iccids.chunks(500).enumerate() {
        let from = from + 500 * c as u64;
        let rows = chunk
            .iter()
            .enumerate()
            .map(|(k, i)| pb::CardInput {
                account_id: account.into(),
                // The 5G CMP names cards by access number, which simgate must be given.
                msisdn: if carrier == pb::Carrier::ChinaTelecom {
                    format!("149{:08}", from + k as u64)
                } else {
                    String::new()
                },
                ..card_input(i, carrier)
            })
            .collect();
        let r = import(app, rows).await;
        assert_eq!(r.imported as usize, chunk.len());
    }
    iccids
}

/// The requests the account's wire simulator has answered so far, by path.
async fn wire_calls(app: &mut TestApp, account: &str) -> BTreeMap<String, u64> {
    app.sim
        .get_wire_calls(pb::GetWireCallsRequest {
            account_id: account.into(),
            carrier: 0,
        })
        .await
        .expect("GetWireCalls")
        .into_inner()
        .paths
        .into_iter()
        .map(|p| (p.path, p.calls))
        .collect()
}

/// Calls per path between two counts, without the paths not called.
fn made(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(p, n)| (p.clone(), n - before.get(p).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

/// Calls to paths ending with `suffix`.
fn to(calls: &BTreeMap<String, u64>, suffix: &str) -> u64 {
    calls
        .iter()
        .filter(|(p, _)| p.ends_with(suffix))
        .map(|(_, n)| n)
        .sum()
}

const MIB: u64 = 1 << 20;

/// Every active card of `account` uses a MiB an hour from now on.
async fn traffic(app: &mut TestApp, account: &str) {
    app.sim
        .set_faults(pb::SetFaultsRequest {
            account_id: account.into(),
            traffic_bytes_per_hour: MIB,
            ..Default::default()
        })
        .await
        .expect("traffic profile");
}

async fn advance_hours(app: &mut TestApp, hours: i64) {
    app.sim
        .advance_clock(pb::AdvanceClockRequest {
            by: Some(prost_types::Duration {
                seconds: hours * 3600,
                nanos: 0,
            }),
        })
        .await
        .expect("advance");
}

/// A usage sync, and the requests it made of `account`'s wire simulator.
async fn sync_calls(app: &mut TestApp, account: &str) -> BTreeMap<String, u64> {
    let before = wire_calls(app, account).await;
    app.service.sync_all_usage().await.expect("sync");
    made(&before, &wire_calls(app, account).await)
}

#[tokio::test]
async fn a_usage_sync_of_a_thousand_cards_asks_for_usage_in_one_call_per_batch() {
    let mut app = serve(0).await;
    let ugw = import_on(
        &mut app,
        "ugw",
        pb::Carrier::ChinaUnicom,
        unicom_iccid,
        1,
        CARDS,
    )
    .await;
    let ol = import_on(
        &mut app,
        "ol",
        pb::Carrier::ChinaMobile,
        mobile_iccid,
        1,
        CARDS,
    )
    .await;
    let c5 = import_on(
        &mut app,
        "c5",
        pb::Carrier::ChinaTelecom,
        telecom_iccid,
        1,
        CARDS,
    )
    .await;
    for account in ["ugw", "ol", "c5"] {
        traffic(&mut app, account).await;
    }
    // 10:00 in Beijing on day one; 20 hours later it is 06:00 on day two, and OneLink's batch
    // usage, which runs up to yesterday, holds day one's 14 hours.
    advance_hours(&mut app, 20).await;

    // Unicom gateway: wsGetTerminalDetails carries state and usage, 50 cards a call.
    let sync = sync_calls(&mut app, "ugw").await;
    assert_eq!(
        to(&sync, "/wsGetTerminalDetails/V1/1Main/vV1.1"),
        CARDS.div_ceil(50),
        "{sync:?}"
    );
    assert_eq!(sync.values().sum::<u64>(), CARDS.div_ceil(50), "{sync:?}");
    assert_eq!(get(&mut app, &ugw[7]).await.cycle_usage_bytes, 20 * MIB);

    // 5G CMP: states from batchQrySimInfo and usage from batchQryFlowByMonth, 100 cards each.
    let sync = sync_calls(&mut app, "c5").await;
    assert_eq!(
        to(&sync, "/batchQryFlowByMonth"),
        CARDS.div_ceil(100),
        "{sync:?}"
    );
    assert_eq!(
        to(&sync, "/batchQrySimInfo"),
        CARDS.div_ceil(100),
        "{sync:?}"
    );
    assert_eq!(
        sync.values().sum::<u64>(),
        2 * CARDS.div_ceil(100),
        "{sync:?}"
    );
    assert_eq!(get(&mut app, &c5[7]).await.cycle_usage_bytes, 20 * MIB);

    // m2m_ec CMP has no batch call: state and usage, a call each per card (no session).
    let ct = import_on(
        &mut app,
        "ct",
        pb::Carrier::ChinaTelecom,
        telecom_iccid,
        5_001,
        100,
    )
    .await;
    traffic(&mut app, "ct").await;
    advance_hours(&mut app, 1).await;
    let sync = sync_calls(&mut app, "ct").await;
    assert_eq!(sync.values().sum::<u64>(), 200, "{sync:?}");
    assert!(get(&mut app, &ct[3]).await.cycle_usage_bytes >= MIB);

    // OneLink: usage 100 cards a call, up to yesterday; the state card by card (the platform
    // has no batch status call).
    let sync = sync_calls(&mut app, "ol").await;
    assert_eq!(
        to(&sync, "/query/sim-data-usage-monthly/batch"),
        CARDS.div_ceil(100),
        "{sync:?}"
    );
    assert_eq!(to(&sync, "/query/sim-data-usage"), 0, "{sync:?}");
    assert_eq!(to(&sync, "/query/sim-status"), CARDS, "{sync:?}");
    assert_eq!(get(&mut app, &ol[7]).await.cycle_usage_bytes, 14 * MIB);
}

#[tokio::test]
async fn control_center_is_read_in_full_once_then_through_its_list_of_modified_cards() {
    let mut app = serve(0).await;
    let cc = import_on(
        &mut app,
        "cc",
        pb::Carrier::ChinaUnicom,
        unicom_iccid,
        1,
        200,
    )
    .await;
    // The first pass has nothing to list from: every card read, one call each.
    let first = sync_calls(&mut app, "cc").await;
    assert_eq!(to(&first, "/ctdUsages"), 200, "{first:?}");
    assert_eq!(to(&first, "/devices"), 0, "{first:?}");
    // Behind simgate's back the carrier stops ten cards.
    for iccid in &cc[..10] {
        app.sim
            .set_carrier_card_state(pb::SetCarrierCardStateRequest {
                account_id: "cc".into(),
                carrier: 0,
                iccid: iccid.clone(),
                state: pb::CarrierServiceState::Stopped as i32,
            })
            .await
            .expect("stop at the carrier");
    }
    advance_hours(&mut app, 1).await;
    let second = sync_calls(&mut app, "cc").await;
    // One page lists the ten; only the 190 cards still active are asked for their usage.
    assert_eq!(to(&second, "/devices"), 1, "{second:?}");
    assert_eq!(to(&second, "/ctdUsages"), 190, "{second:?}");
    assert_eq!(second.values().sum::<u64>(), 191, "{second:?}");
    let stopped = get(&mut app, &cc[3]).await;
    assert!(
        stopped.drift.is_some(),
        "the listed stop is drift: {stopped:?}"
    );
    assert!(get(&mut app, &cc[50]).await.drift.is_none());
}

const WINDOW_S: i64 = 1800;

/// Moves both clocks (the cards' and the operations', which the bulk worker's and the
/// journal's backoffs run on) by `by`.
fn both(app: &TestApp, ops: &simgate::clock::ManualClock, by: chrono::Duration) {
    app.clock.advance(by).expect("card clock");
    ops.advance(by).expect("ops clock");
}

/// Waits (moving the operations clock, settling) until bulk operation `id` has `done` items
/// done; its items then.
async fn until_done(
    app: &mut TestApp,
    ops: &simgate::clock::ManualClock,
    id: &str,
    done: usize,
) -> Vec<pb::ItemResult> {
    let mut client = operations_client(&app.channel, ADMIN_KEY);
    for _ in 0..200 {
        ops.advance(chrono::Duration::seconds(2))
            .expect("ops clock");
        app.service.settle_open_intents_now().await.expect("settle");
        let o = client
            .get_operation(pb::GetOperationRequest {
                id: id.into(),
                results_page_size: 1000,
                ..Default::default()
            })
            .await
            .expect("GetOperation")
            .into_inner();
        if o.results.iter().filter(|r| r.status == "DONE").count() >= done {
            return o.results;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("operation {id} did not get {done} items done");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_suspend_goes_out_in_batch_calls_and_a_card_inside_its_window_after_it() {
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite"));
    let clock = simgate::clock::ManualClock::new(start_time());
    let ops = simgate::clock::ManualClock::new(chrono::Utc::now());
    let builder = test_server(&db, &clock).ops_clock(Arc::new(ops.clone()));
    let mut app = serve_with(builder, db, clock, WINDOW_S as u64).await;
    let ol = import_on(
        &mut app,
        "ol",
        pb::Carrier::ChinaMobile,
        mobile_iccid,
        1,
        250,
    )
    .await;
    // The first card was stopped and, once its window had passed, restored: a minute ago.
    app.suspend(&ol[0]).await.expect("suspend");
    both(&app, &ops, chrono::Duration::seconds(WINDOW_S + 60));
    app.cards
        .resume_card(pb::ResumeCardRequest {
            iccid: ol[0].clone(),
            ..Default::default()
        })
        .await
        .expect("resume");
    both(&app, &ops, chrono::Duration::seconds(60));
    let before = wire_calls(&mut app, "ol").await;

    let op = operations_client(&app.channel, ADMIN_KEY)
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: ol.clone(),
            request_id: String::new(),
        })
        .await
        .expect("BatchSuspend")
        .into_inner();
    // Every card's change is gathered before the operations clock moves: the settler sends
    // full batches at once and waits for a partial one's cards (tests below move that clock).
    let client = operations_client(&app.channel, ADMIN_KEY);
    eventually("every card tried", 20, || {
        let mut client = client.clone();
        let id = op.id.clone();
        async move {
            let o = client
                .get_operation(pb::GetOperationRequest {
                    id,
                    results_page_size: 1000,
                    ..Default::default()
                })
                .await
                .expect("GetOperation")
                .into_inner();
            o.results.len() == 250
                && o.results
                    .iter()
                    .all(|r| r.status == "DONE" || r.reason == "CARRIER_ORDER_OPEN")
        }
    })
    .await;
    let results = until_done(&mut app, &ops, &op.id, 249).await;
    let calls = made(&before, &wire_calls(&mut app, "ol").await);
    // 249 cards in batches of 100; the card inside its window in none of them.
    assert_eq!(to(&calls, "/change/sim-status/batch"), 3, "{calls:?}");
    assert_eq!(to(&calls, "/change/sim-status"), 0, "{calls:?}");
    assert!(to(&calls, "/query/sim-batch-result") >= 3, "{calls:?}");
    // The batch change names cards by MSISDN: looked up 100 a call, once.
    assert_eq!(to(&calls, "/query/sim-card-info/batch"), 3, "{calls:?}");
    let waiting: Vec<&pb::ItemResult> = results.iter().filter(|r| r.status != "DONE").collect();
    assert_eq!(waiting.len(), 1, "{results:?}");
    assert_eq!(waiting[0].iccid, ol[0]);
    assert_eq!(waiting[0].reason, "CARRIER_ORDER_OPEN");
    let orders = app
        .cards
        .list_carrier_orders(pb::ListCarrierOrdersRequest {
            iccid: ol[5].clone(),
            ..Default::default()
        })
        .await
        .expect("orders")
        .into_inner()
        .orders;
    assert!(!orders[0].carrier_job_id.is_empty(), "{orders:?}");
    assert_eq!(orders[0].carrier_order_id, orders[0].carrier_job_id);

    // Its window ends: it goes out on its own.
    both(&app, &ops, chrono::Duration::seconds(WINDOW_S));
    until_done(&mut app, &ops, &op.id, 250).await;
    let calls = made(&before, &wire_calls(&mut app, "ol").await);
    assert_eq!(to(&calls, "/change/sim-status/batch"), 3, "{calls:?}");
    assert_eq!(to(&calls, "/change/sim-status"), 1, "{calls:?}");
    for iccid in &ol {
        let card = get(&mut app, iccid).await;
        assert_eq!(status_of(&card), pb::CardStatus::Suspended, "{iccid}");
        let at_carrier = app
            .sim
            .get_carrier_card(pb::GetCarrierCardRequest {
                account_id: "ol".into(),
                carrier: 0,
                iccid: iccid.clone(),
            })
            .await
            .expect("carrier card")
            .into_inner();
        assert_eq!(
            at_carrier.state,
            pb::CarrierServiceState::Stopped as i32,
            "{iccid}"
        );
    }
}
