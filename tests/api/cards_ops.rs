use simgate::pb;

use crate::both_backends;
use crate::helpers::*;

async fn resume(app: &mut TestApp, iccid: &str) -> Result<pb::Card, tonic::Status> {
    app.cards
        .resume_card(pb::ResumeCardRequest {
            iccid: iccid.into(),
            ..Default::default()
        })
        .await
        .map(|r| r.into_inner())
}

both_backends!(
    suspend_and_resume_agree_with_the_carrier,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
        )
        .await;
        let card = app.suspend(MOBILE_ICCID).await.unwrap();
        assert_eq!(status_of(&card), pb::CardStatus::Suspended);
        assert_eq!(reasons_of(&card), vec![pb::StopReason::Manual]);
        assert_eq!(card.version, 1);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
            pb::CarrierServiceState::Stopped
        );
        // Suspending again is a no-op, not a second carrier change.
        let again = app.suspend(MOBILE_ICCID).await.unwrap();
        assert_eq!(again.version, 1);

        let card = resume(&mut app, MOBILE_ICCID).await.unwrap();
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
            pb::CarrierServiceState::Active
        );
        let at_carrier = app
            .sim
            .get_carrier_card(pb::GetCarrierCardRequest {
                account_id: String::new(),
                carrier: pb::Carrier::ChinaMobile as i32,
                iccid: MOBILE_ICCID.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            at_carrier.changes, 2,
            "one stop and one restore, nothing doubled"
        );
        let events = app
            .store
            .card_events(&simgate::domain::Iccid::parse_any(MOBILE_ICCID).unwrap())
            .await
            .unwrap();
        let kinds: Vec<_> = events.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            kinds,
            vec!["card.imported", "card.suspended", "card.resumed"]
        );
    }
);

both_backends!(
    resume_keeps_a_card_stopped_that_has_another_reason,
    |mut app: TestApp| async move {
        let mut row = card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom);
        row.real_name = pb::RealNameStatus::Unverified as i32;
        import(&mut app, vec![row]).await;
        let card = app.suspend(TELECOM_ICCID).await.unwrap();
        assert_eq!(
            reasons_of(&card),
            vec![pb::StopReason::RealName, pb::StopReason::Manual]
        );
        let card = resume(&mut app, TELECOM_ICCID).await.unwrap();
        assert_eq!(reasons_of(&card), vec![pb::StopReason::RealName]);
        assert_eq!(status_of(&card), pb::CardStatus::Suspended);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaTelecom, TELECOM_ICCID).await,
            pb::CarrierServiceState::Stopped
        );
        let card = app
            .cards
            .verify_real_name(pb::VerifyRealNameRequest {
                iccid: TELECOM_ICCID.into(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert_eq!(card.real_name, pb::RealNameStatus::Verified as i32);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaTelecom, TELECOM_ICCID).await,
            pb::CarrierServiceState::Active
        );
    }
);

both_backends!(
    recharge_restores_automatically_on_china_mobile,
    |mut app: TestApp| async move {
        let mut row = card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile);
        row.balance_fen = -1200;
        import(&mut app, vec![row]).await;
        let r = app.recharge(MOBILE_ICCID, 1000).await;
        assert_eq!((r.balance_before_fen, r.balance_after_fen), (-1200, -200));
        assert_eq!(
            reasons_of(r.card.as_ref().unwrap()),
            vec![pb::StopReason::Arrears]
        );
        let r = app.recharge(MOBILE_ICCID, 200).await;
        let card = r.card.unwrap();
        assert_eq!(card.balance_fen, 0);
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
            pb::CarrierServiceState::Active
        );
    }
);

both_backends!(
    recharge_on_china_unicom_needs_a_manual_resume,
    |mut app: TestApp| async move {
        let mut row = card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom);
        row.balance_fen = -500;
        import(&mut app, vec![row]).await;
        let card = app.recharge(UNICOM_ICCID, 800).await.card.unwrap();
        assert_eq!(card.balance_fen, 300);
        assert_eq!(reasons_of(&card), vec![pb::StopReason::Arrears]);
        assert!(card.arrears_paid_awaiting_resume);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, UNICOM_ICCID).await,
            pb::CarrierServiceState::Stopped
        );
        let card = resume(&mut app, UNICOM_ICCID).await.unwrap();
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert!(!card.arrears_paid_awaiting_resume);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, UNICOM_ICCID).await,
            pb::CarrierServiceState::Active
        );
    }
);

both_backends!(
    renewal_restores_by_each_carriers_rule,
    |mut app: TestApp| async move {
        let expired_at = start_time() - chrono::Duration::days(10);
        let mut rows = Vec::new();
        for (iccid, carrier) in [
            (TELECOM_ICCID, pb::Carrier::ChinaTelecom),
            (MOBILE_ICCID, pb::Carrier::ChinaMobile),
            (UNICOM_ICCID, pb::Carrier::ChinaUnicom),
        ] {
            let mut row = card_input(iccid, carrier);
            row.plan.as_mut().unwrap().validity_end = Some(ts(expired_at));
            rows.push(row);
        }
        import(&mut app, rows).await;
        let renew = |iccid: &str| pb::RenewPlanRequest {
            iccid: iccid.into(),
            months: 12,
            ..Default::default()
        };

        // Telecom: immediate.
        let card = app
            .cards
            .renew_plan(renew(TELECOM_ICCID))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert_eq!(
            card.plan.unwrap().validity_end.unwrap().seconds,
            simgate::domain::policy::add_months(start_time(), 12).timestamp()
        );
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaTelecom, TELECOM_ICCID).await,
            pb::CarrierServiceState::Active
        );
        // Mobile: the same day; Unicom: the next cycle (27th). Both still stopped now.
        let card = app
            .cards
            .renew_plan(renew(MOBILE_ICCID))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(status_of(&card), pb::CardStatus::Retained);
        assert!(
            card.retention_ends_at.is_none(),
            "renewed: no longer heading for cancellation"
        );
        let due = card.expiry_restore_at.unwrap().seconds;
        assert!(due > start_time().timestamp() && due <= start_time().timestamp() + 86_400);
        let card = app
            .cards
            .renew_plan(renew(UNICOM_ICCID))
            .await
            .unwrap()
            .into_inner();
        let due = card.expiry_restore_at.unwrap().seconds;
        assert_eq!(
            due,
            (start_time() + chrono::Duration::days(2) - chrono::Duration::hours(10)).timestamp()
        );
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, UNICOM_ICCID).await,
            pb::CarrierServiceState::Stopped
        );
    }
);

both_backends!(
    usage_is_read_from_the_carrier_against_the_quota,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
        )
        .await;
        app.sim
            .record_usage(pb::RecordUsageRequest {
                account_id: String::new(),
                carrier: pb::Carrier::ChinaUnicom as i32,
                iccid: UNICOM_ICCID.into(),
                bytes: 3 << 28,
            })
            .await
            .unwrap();
        let u = app
            .cards
            .get_usage(pb::GetUsageRequest {
                iccid: UNICOM_ICCID.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (u.used_bytes, u.quota_bytes, u.remaining_bytes),
            (3 << 28, 1 << 30, 1 << 28)
        );
        assert_eq!(u.used_permille, 750);
        assert!(!u.over_quota);
        // Unicom's cycle: Oct 27 to Nov 27, Shanghai midnight (16:00 UTC the day before).
        let start = chrono::DateTime::from_timestamp(u.cycle_start.unwrap().seconds, 0).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-10-26T16:00:00+00:00");
    }
);

both_backends!(concurrent_recharges_all_count, |app: TestApp| async move {
    let mut app = app;
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let mut client = app.cards.clone();
        tasks.push(tokio::spawn(async move {
            client
                .recharge(pb::RechargeRequest {
                    iccid: MOBILE_ICCID.into(),
                    amount_fen: 1,
                    ..Default::default()
                })
                .await
                .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let card = get(&mut app, MOBILE_ICCID).await;
    assert_eq!(card.balance_fen, 200);
    assert_eq!(card.version, 200);
});

#[tokio::test]
async fn a_restarted_server_and_its_simulators_still_agree() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    app.suspend(MOBILE_ICCID).await.unwrap();
    let clock = app.clock.clone();
    let db = app.stop().await;
    let mut app = spawn_on(db, clock).await;
    let card = get(&mut app, MOBILE_ICCID).await;
    assert_eq!(status_of(&card), pb::CardStatus::Suspended);
    assert_eq!(
        carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
        pb::CarrierServiceState::Stopped
    );
    resume(&mut app, MOBILE_ICCID).await.unwrap();
    assert_eq!(
        carrier_state(&mut app, pb::Carrier::ChinaMobile, MOBILE_ICCID).await,
        pb::CarrierServiceState::Active
    );
}
