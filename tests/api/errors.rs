//! Every refusal path: FAILED_PRECONDITION with its ErrorInfo reason, INVALID_ARGUMENT naming the
//! field, NOT_FOUND, and carrier failures. Each refused call must leave the card as it was.

use simgate::pb;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

/// Calls one mutating RPC by name.
async fn call(app: &mut TestApp, op: &str, iccid: &str) -> Result<pb::Card, tonic::Status> {
    let iccid = iccid.to_string();
    let c = &mut app.cards;
    let r = match op {
        "suspend" => {
            c.suspend_card(pb::SuspendCardRequest {
                iccid,
                ..Default::default()
            })
            .await
        }
        "resume" => {
            c.resume_card(pb::ResumeCardRequest {
                iccid,
                ..Default::default()
            })
            .await
        }
        "recharge" => c
            .recharge(pb::RechargeRequest {
                iccid,
                amount_fen: 100,
                ..Default::default()
            })
            .await
            .map(|r| r.map(|x| x.card.unwrap_or_default())),
        "renew" => {
            c.renew_plan(pb::RenewPlanRequest {
                iccid,
                months: 1,
                ..Default::default()
            })
            .await
        }
        "verify" => {
            c.verify_real_name(pb::VerifyRealNameRequest {
                iccid,
                ..Default::default()
            })
            .await
        }
        other => panic!("unknown op {other}"),
    };
    r.map(|r| r.into_inner())
}

/// Asserts the call is refused with FAILED_PRECONDITION and `reason`, and changed nothing.
async fn refused(app: &mut TestApp, op: &str, iccid: &str, reason: &str) {
    let before = get(app, iccid).await;
    let err = call(app, op, iccid).await.expect_err(op);
    assert_eq!(err.code(), Code::FailedPrecondition, "{op}: {err:?}");
    assert_eq!(details(&err).0, reason, "{op}");
    assert_eq!(get(app, iccid).await, before, "{op} must change nothing");
}

both_backends!(
    manual_stop_is_refused_by_each_rule,
    |mut app: TestApp| async move {
        let mut expired = card_input(&mobile_iccid(1), pb::Carrier::ChinaMobile);
        expired.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() - chrono::Duration::days(1)));
        let mut arrears = card_input(&mobile_iccid(2), pb::Carrier::ChinaMobile);
        arrears.balance_fen = -1;
        let mut over = card_input(&mobile_iccid(3), pb::Carrier::ChinaMobile);
        over.cycle_usage_bytes = 2 << 30;
        import(&mut app, vec![expired, arrears, over]).await;
        refused(&mut app, "suspend", &mobile_iccid(1), "PLAN_EXPIRED").await;
        refused(&mut app, "suspend", &mobile_iccid(2), "CARD_IN_ARREARS").await;
        refused(&mut app, "suspend", &mobile_iccid(3), "CARD_OVER_QUOTA").await;
    }
);

both_backends!(
    resume_is_refused_for_reasons_it_cannot_clear,
    |mut app: TestApp| async move {
        let mut no_name = card_input(&telecom_iccid(1), pb::Carrier::ChinaTelecom);
        no_name.real_name = pb::RealNameStatus::Unverified as i32;
        let mut over = card_input(&telecom_iccid(2), pb::Carrier::ChinaTelecom);
        over.cycle_usage_bytes = 1 << 30;
        let mut expired = card_input(&telecom_iccid(3), pb::Carrier::ChinaTelecom);
        expired.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() - chrono::Duration::days(1)));
        let mut unpaid = card_input(&unicom_iccid(4), pb::Carrier::ChinaUnicom);
        unpaid.balance_fen = -50;
        import(&mut app, vec![no_name, over, expired, unpaid]).await;
        refused(&mut app, "resume", &telecom_iccid(1), "REAL_NAME_REQUIRED").await;
        refused(&mut app, "resume", &telecom_iccid(2), "CARD_OVER_QUOTA").await;
        refused(&mut app, "resume", &telecom_iccid(3), "PLAN_EXPIRED").await;
        refused(&mut app, "resume", &unicom_iccid(4), "CARD_IN_ARREARS").await;
    }
);

both_backends!(
    a_cancelled_card_refuses_every_operation,
    |mut app: TestApp| async move {
        let mut gone = card_input(&mobile_iccid(9), pb::Carrier::ChinaMobile);
        gone.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() - chrono::Duration::days(200)));
        import(&mut app, vec![gone]).await;
        for op in ["suspend", "resume", "recharge", "renew", "verify"] {
            refused(&mut app, op, &mobile_iccid(9), "CARD_CANCELLED").await;
        }
    }
);

both_backends!(
    a_carrier_rejection_changes_nothing,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
        )
        .await;
        app.sim
            .inject_fault(pb::InjectFaultRequest {
                account_id: String::new(),
                carrier: pb::Carrier::ChinaUnicom as i32,
                kind: pb::FaultKind::Reject as i32,
                count: 1,
            })
            .await
            .unwrap();
        let before = get(&mut app, UNICOM_ICCID).await;
        let err = call(&mut app, "suspend", UNICOM_ICCID).await.unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(details(&err).0, "CARRIER_REJECTED");
        assert_eq!(get(&mut app, UNICOM_ICCID).await, before);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, UNICOM_ICCID).await,
            pb::CarrierServiceState::Active
        );
        // The fault was used up: the next call goes through.
        let card = call(&mut app, "suspend", UNICOM_ICCID).await.unwrap();
        assert_eq!(status_of(&card), pb::CardStatus::Suspended);
    }
);

both_backends!(
    an_unreachable_carrier_gives_unavailable_and_changes_nothing,
    |mut app: TestApp| async move {
        let mut row = card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile);
        row.balance_fen = -10;
        import(&mut app, vec![row]).await;
        app.sim
            .inject_fault(pb::InjectFaultRequest {
                account_id: String::new(),
                carrier: pb::Carrier::ChinaMobile as i32,
                kind: pb::FaultKind::Unavailable as i32,
                // More failures than a request's retries: it gives up.
                count: 10,
            })
            .await
            .unwrap();
        let before = get(&mut app, MOBILE_ICCID).await;
        // The recharge would restore the card, so it needs the carrier: no money moves without it.
        let err = app
            .cards
            .recharge(pb::RechargeRequest {
                iccid: MOBILE_ICCID.into(),
                amount_fen: 10,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::Unavailable);
        assert_eq!(details(&err).0, "CARRIER_UNAVAILABLE");
        assert_eq!(get(&mut app, MOBILE_ICCID).await, before);
    }
);

both_backends!(
    a_passing_carrier_failure_is_retried_transparently,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
        )
        .await;
        app.sim
            .inject_fault(pb::InjectFaultRequest {
                account_id: String::new(),
                carrier: pb::Carrier::ChinaMobile as i32,
                kind: pb::FaultKind::Unavailable as i32,
                count: 2,
            })
            .await
            .unwrap();
        let card = call(&mut app, "suspend", MOBILE_ICCID).await.unwrap();
        assert_eq!(status_of(&card), pb::CardStatus::Suspended);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
            pb::CarrierServiceState::Stopped
        );
        let ops = app
            .store
            .card_ops(&simgate::domain::Iccid::parse_any(MOBILE_ICCID).unwrap())
            .await
            .unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(
            (ops[0].action.as_str(), ops[0].status.as_str()),
            ("STOP", "APPLIED")
        );
    }
);

#[tokio::test]
async fn unknown_cards_are_not_found_on_every_rpc() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccid = unicom_iccid(424242);
    for op in ["suspend", "resume", "recharge", "renew", "verify"] {
        let err = call(&mut app, op, &iccid).await.unwrap_err();
        assert_eq!(err.code(), Code::NotFound, "{op}");
        assert_eq!(details(&err).0, "CARD_NOT_FOUND", "{op}");
    }
    let err = app
        .cards
        .get_card(pb::GetCardRequest {
            iccid: iccid.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .cards
        .get_usage(pb::GetUsageRequest { iccid })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}

#[tokio::test]
async fn malformed_iccids_are_invalid_arguments_on_every_rpc() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    for bad in ["", "12345", "8986G117750006390067"] {
        for op in ["suspend", "resume", "recharge", "renew", "verify"] {
            let err = call(&mut app, op, bad).await.unwrap_err();
            assert_eq!(
                (err.code(), details(&err).1),
                (Code::InvalidArgument, vec!["iccid".to_string()]),
                "{op} {bad:?}"
            );
        }
        let err = app
            .cards
            .get_card(pb::GetCardRequest { iccid: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = app
            .cards
            .get_usage(pb::GetUsageRequest { iccid: bad.into() })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
    }
}

#[tokio::test]
async fn bad_amounts_and_terms_are_invalid_arguments_and_change_nothing() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let before = get(&mut app, MOBILE_ICCID).await;
    for amount in [0, -5, 10_000_001] {
        let err = app
            .cards
            .recharge(pb::RechargeRequest {
                iccid: MOBILE_ICCID.into(),
                amount_fen: amount,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec!["amount_fen".to_string()])
        );
    }
    for months in [0, 61] {
        let err = app
            .cards
            .renew_plan(pb::RenewPlanRequest {
                iccid: MOBILE_ICCID.into(),
                months,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec!["months".to_string()])
        );
    }
    // Both fields wrong: both named.
    let err = app
        .cards
        .recharge(pb::RechargeRequest {
            iccid: "x".into(),
            amount_fen: 0,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["iccid", "amount_fen"]);
    assert_eq!(get(&mut app, MOBILE_ICCID).await, before);
}

#[tokio::test]
async fn simulator_calls_validate_their_arguments() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let err = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: String::new(),
            carrier: 0,
            iccid: UNICOM_ICCID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: String::new(),
            carrier: pb::Carrier::ChinaUnicom as i32,
            iccid: UNICOM_ICCID.into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .sim
        .inject_fault(pb::InjectFaultRequest {
            account_id: String::new(),
            carrier: pb::Carrier::ChinaUnicom as i32,
            kind: 0,
            count: 1,
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["kind"]);
}
