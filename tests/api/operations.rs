//! Bulk operations over gRPC: per-card rules, progress, cancellation, idempotency, and a batch
//! through a storm of carrier failures.

use simgate::pb;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::helpers::*;

async fn seed(app: &mut TestApp, n: u64, arrears_every: u64) -> Vec<String> {
    let mut iccids = Vec::new();
    let mut rows = Vec::new();
    for i in 0..n {
        let iccid = mobile_iccid(i);
        let mut row = card_input(&iccid, pb::Carrier::ChinaMobile);
        row.balance_fen = if arrears_every > 0 && i % arrears_every == 0 {
            -100
        } else {
            5000
        };
        rows.push(row);
        iccids.push(iccid);
        if rows.len() == 5000 {
            import(app, std::mem::take(&mut rows)).await;
        }
    }
    if !rows.is_empty() {
        import(app, rows).await;
    }
    iccids
}

/// Follows WatchOperation to the end; returns the last state and how many updates came.
async fn watch(app: &TestApp, id: &str) -> (pb::Operation, usize) {
    let mut stream = operations_client(&app.channel, ADMIN_KEY)
        .watch_operation(pb::WatchOperationRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    let mut last = None;
    let mut updates = 0;
    while let Some(op) = stream.next().await {
        let op = op.unwrap();
        if let Some(prev) = &last {
            let prev: &pb::Operation = prev;
            assert!(
                op.done + op.failed >= prev.done + prev.failed,
                "progress never goes back"
            );
        }
        updates += 1;
        last = Some(op);
    }
    (last.expect("at least one update"), updates)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_suspends_each_card_once_and_reports_each_refusal() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccids = seed(&mut app, 2000, 10).await;
    let mut ops = operations_client(&app.channel, ADMIN_KEY);
    let req = pb::BatchSuspendRequest {
        iccids: iccids.clone(),
        request_id: "bulk-1".into(),
    };
    let op = ops.batch_suspend(req.clone()).await.unwrap().into_inner();
    assert_eq!((op.total, op.pending), (2000, 2000));
    // The same request again is the same operation, not a second one.
    assert_eq!(ops.batch_suspend(req).await.unwrap().into_inner().id, op.id);

    let (last, updates) = watch(&app, &op.id).await;
    assert!(updates >= 1);
    assert_eq!(last.state, pb::OperationState::Done as i32);
    assert_eq!((last.done, last.failed, last.pending), (1800, 200, 0));

    let failed = ops
        .get_operation(pb::GetOperationRequest {
            id: op.id.clone(),
            results_page_size: 1000,
            results_status: "FAILED".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(failed.results.len(), 200);
    assert!(failed
        .results
        .iter()
        .all(|r| r.reason == "FAILED_PRECONDITION:CARD_IN_ARREARS"));
    assert!(failed.results.iter().all(|r| r.index % 10 == 0));
    assert_eq!(
        app.store.count_events("card.suspended").await.unwrap(),
        1800,
        "each card once"
    );
    for i in [1usize, 555, 1999] {
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, &iccids[i]).await,
            pb::CarrierServiceState::Stopped
        );
    }
    let listed = ops
        .list_operations(pb::ListOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.operations.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_recharge_credits_each_card_once_and_bad_requests_are_refused() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccids = seed(&mut app, 500, 0).await;
    let mut ops = operations_client(&app.channel, ADMIN_KEY);
    let op = ops
        .batch_recharge(pb::BatchRechargeRequest {
            iccids: iccids.clone(),
            amount_fen: 250,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (last, _) = watch(&app, &op.id).await;
    assert_eq!(last.done, 500);
    for i in [0usize, 250, 499] {
        assert_eq!(get(&mut app, &iccids[i]).await.balance_fen, 5250);
    }
    for (req, field) in [
        (
            pb::BatchRechargeRequest {
                iccids: vec![],
                amount_fen: 1,
                ..Default::default()
            },
            "iccids",
        ),
        (
            pb::BatchRechargeRequest {
                iccids: vec![iccids[0].clone()],
                amount_fen: 0,
                ..Default::default()
            },
            "amount_fen",
        ),
        (
            pb::BatchRechargeRequest {
                iccids: vec![iccids[0].clone(), iccids[0].clone()],
                amount_fen: 1,
                ..Default::default()
            },
            "iccids[1]",
        ),
        (
            pb::BatchRechargeRequest {
                iccids: vec!["bad".into()],
                amount_fen: 1,
                ..Default::default()
            },
            "iccids[0]",
        ),
    ] {
        let err = ops.batch_recharge(req).await.unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec![field.to_string()])
        );
    }
    let err = ops
        .get_operation(pb::GetOperationRequest {
            id: "0".repeat(32),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_what_is_not_done() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccids = seed(&mut app, 100, 0).await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            down: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ops = operations_client(&app.channel, ADMIN_KEY);
    let op = ops
        .batch_suspend(pb::BatchSuspendRequest {
            iccids,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let cancelled = ops
        .cancel_operation(pb::CancelOperationRequest { id: op.id.clone() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.state, pb::OperationState::Cancelled as i32);
    assert_eq!(cancelled.pending, 0);
    assert_eq!(cancelled.cancelled + cancelled.done + cancelled.failed, 100);
    assert!(cancelled.cancelled > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_through_a_storm_of_carrier_failures_changes_each_card_exactly_once() {
    // No breaker: this storm is for the retries, not for failing fast.
    let mut app = spawn_with_limits(simgate::carrier::guard::CarrierLimits {
        breaker_failures: 0,
        ..Default::default()
    })
    .await;
    // 10,000 cards in the long drills; 2,000 (four batch passes) in the default suite.
    let n = drill_size(2_000, 10_000);
    let iccids = seed(&mut app, n, 0).await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            error_rate: 0.30,
            timeout_after_apply_rate: 0.05,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ops = operations_client(&app.channel, ADMIN_KEY);
    let op = ops
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: iccids.clone(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let (last, _) = watch(&app, &op.id).await;
    assert_eq!(last.state, pb::OperationState::Done as i32);
    assert_eq!(last.done + last.failed, n);
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            ..Default::default()
        })
        .await
        .unwrap();
    app.service.settle_open_intents_now().await.unwrap();
    assert_eq!(
        app.store.count_events("card.suspended").await.unwrap(),
        last.done as i64,
        "each done card once"
    );
    for iccid in &iccids {
        let card = get(&mut app, iccid).await;
        let expected = if card.status == pb::CardStatus::Active as i32 {
            pb::CarrierServiceState::Active
        } else {
            pb::CarrierServiceState::Stopped
        };
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, iccid).await,
            expected,
            "{iccid}"
        );
    }
}

/// Batches are served round-robin across customers: a one-card batch submitted behind another
/// tenant's 2,000-card batch is done while that batch still has most of its cards to go,
/// instead of waiting for all of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_batch_is_not_queued_behind_another_customers_big_batch() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let big = seed(&mut app, 2000, 0).await;
    let mut small_card = card_input(&telecom_iccid(1), pb::Carrier::ChinaTelecom);
    small_card.customer_id = "small-co".into();
    small_card.balance_fen = 5000;
    import(&mut app, vec![small_card]).await;
    let key = app
        .access
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::Role::CustomerAdmin as i32,
            customer_id: "small-co".into(),
            name: "small".into(),
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key_secret;
    // Every China Mobile call takes a while, so the big batch runs for many passes.
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            latency_ms: 20,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut ops = operations_client(&app.channel, ADMIN_KEY);
    let big_op = ops
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: big,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    let get = |id: String| {
        let mut ops = ops.clone();
        async move {
            ops.get_operation(pb::GetOperationRequest {
                id,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
        }
    };
    // The small customer submits once the big batch is under way.
    while get(big_op.clone()).await.done == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let small_op = operations_client(&app.channel, &key)
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: vec![telecom_iccid(1)],
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;
    loop {
        let small = get(small_op.clone()).await;
        if small.state == pb::OperationState::Done as i32 {
            assert_eq!(small.done, 1);
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let big = get(big_op).await;
    assert!(
        big.pending > 1000,
        "the small batch waited for only a pass of the big one, not for its end: \
         {} of 2000 were still pending when it was done",
        big.pending
    );
}

/// A batch naming another customer's cards is refused at submission, naming the first few,
/// and stores nothing: no operation, no per-card audit rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_naming_cards_the_caller_cannot_see_is_refused_at_submission() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let theirs = seed(&mut app, 20, 0).await; // customer acme
    let key = app
        .access
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::Role::CustomerOperator as i32,
            customer_id: "other-co".into(),
            name: "other".into(),
            expires_at: None,
        })
        .await
        .unwrap()
        .into_inner()
        .key_secret;
    let mut ops = operations_client(&app.channel, &key);
    let err = ops
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: theirs.clone(),
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    assert!(err.message().contains(&theirs[0]), "{}", err.message());
    assert!(err.message().contains("and 15 more"), "{}", err.message());
    let listed = ops
        .list_operations(pb::ListOperationsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert!(listed.operations.is_empty(), "nothing was stored");
    let audit = app.audit("BatchSuspend").await;
    assert_eq!(
        audit
            .iter()
            .map(|e| (e.iccid.as_str(), e.result.as_str()))
            .collect::<Vec<_>>(),
        vec![("", "NOT_FOUND")],
        "one row for the refused request, none per card"
    );
}
