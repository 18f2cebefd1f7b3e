//! Retried requests: the same request id returns the first answer and changes nothing.

use simgate::pb;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

fn recharge(iccid: &str, fen: i64, id: &str) -> pb::RechargeRequest {
    pb::RechargeRequest {
        iccid: iccid.into(),
        amount_fen: fen,
        request_id: id.into(),
    }
}

both_backends!(
    a_retried_recharge_credits_once_and_answers_the_same,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
        )
        .await;
        let first = app
            .cards
            .recharge(recharge(MOBILE_ICCID, 500, "pay-1"))
            .await
            .unwrap()
            .into_inner();
        let again = app
            .cards
            .recharge(recharge(MOBILE_ICCID, 500, "pay-1"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first, again, "the first answer, word for word");
        assert_eq!(
            get(&mut app, MOBILE_ICCID).await.balance_fen,
            500,
            "credited once"
        );

        // The same id with another amount is refused, not applied.
        let err = app
            .cards
            .recharge(recharge(MOBILE_ICCID, 900, "pay-1"))
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec!["request_id".to_string()])
        );
        // A new id is a new recharge.
        app.cards
            .recharge(recharge(MOBILE_ICCID, 500, "pay-2"))
            .await
            .unwrap();
        assert_eq!(get(&mut app, MOBILE_ICCID).await.balance_fen, 1000);
    }
);

both_backends!(
    concurrent_retries_of_one_request_credit_once,
    |app: TestApp| async move {
        let mut app = app;
        import(
            &mut app,
            vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
        )
        .await;
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let mut c = app.cards.clone();
            tasks.push(tokio::spawn(async move {
                c.recharge(recharge(UNICOM_ICCID, 7, "same")).await
            }));
        }
        for t in tasks {
            match t.await.unwrap() {
                Ok(r) => assert_eq!(r.into_inner().balance_after_fen, 7),
                // Lost the race for the same id: told to retry, and the retry gets the answer.
                Err(e) => assert_eq!(e.code(), Code::Aborted, "{e:?}"),
            }
        }
        assert_eq!(get(&mut app, UNICOM_ICCID).await.balance_fen, 7);
        let replay = app
            .cards
            .recharge(recharge(UNICOM_ICCID, 7, "same"))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(replay.balance_after_fen, 7);
    }
);

both_backends!(
    a_thousand_concurrent_recharges_all_count,
    |app: TestApp| async move {
        let mut app = app;
        import(
            &mut app,
            vec![card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom)],
        )
        .await;
        let mut tasks = Vec::new();
        for i in 0..1000 {
            let mut c = app.cards.clone();
            tasks.push(tokio::spawn(async move {
                c.recharge(recharge(TELECOM_ICCID, 1, &format!("r-{i}")))
                    .await
                    .map(|_| ())
            }));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(get(&mut app, TELECOM_ICCID).await.balance_fen, 1000);
    }
);

#[tokio::test]
async fn every_mutating_rpc_replays_its_first_answer() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom);
    row.real_name = pb::RealNameStatus::Unverified as i32;
    let req = pb::ImportCardsRequest {
        cards: vec![row],
        request_id: "imp-1".into(),
    };
    let first = app
        .cards
        .import_cards(req.clone())
        .await
        .unwrap()
        .into_inner();
    // Without the id this would be ALREADY_EXISTS; with it, the first answer.
    assert_eq!(
        app.cards.import_cards(req).await.unwrap().into_inner(),
        first
    );

    let s = pb::SuspendCardRequest {
        iccid: UNICOM_ICCID.into(),
        request_id: "s-1".into(),
    };
    let a = app
        .cards
        .suspend_card(s.clone())
        .await
        .unwrap()
        .into_inner();
    app.cards
        .resume_card(pb::ResumeCardRequest {
            iccid: UNICOM_ICCID.into(),
            request_id: "r-1".into(),
        })
        .await
        .unwrap();
    // Replaying the suspend does not stop the card again.
    assert_eq!(app.cards.suspend_card(s).await.unwrap().into_inner(), a);
    assert!(!reasons_of(&get(&mut app, UNICOM_ICCID).await).contains(&pb::StopReason::Manual));

    let renew = pb::RenewPlanRequest {
        iccid: UNICOM_ICCID.into(),
        months: 2,
        request_id: "n-1".into(),
    };
    let end = app
        .cards
        .renew_plan(renew.clone())
        .await
        .unwrap()
        .into_inner()
        .plan
        .unwrap()
        .validity_end;
    app.cards.renew_plan(renew).await.unwrap();
    assert_eq!(
        get(&mut app, UNICOM_ICCID).await.plan.unwrap().validity_end,
        end,
        "renewed once"
    );

    let v = pb::VerifyRealNameRequest {
        iccid: UNICOM_ICCID.into(),
        request_id: "v-1".into(),
    };
    assert_eq!(
        app.cards
            .verify_real_name(v.clone())
            .await
            .unwrap()
            .into_inner(),
        app.cards.verify_real_name(v).await.unwrap().into_inner()
    );

    // Ids are per API key: another key's "s-1" is its own request.
    let (_, other) = {
        let r = app
            .access
            .create_api_key(pb::CreateApiKeyRequest {
                role: pb::Role::ResellerAdmin as i32,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        (r.key.unwrap().key_id, r.key_secret)
    };
    let card = cards_client(&app.channel, &other)
        .suspend_card(pb::SuspendCardRequest {
            iccid: UNICOM_ICCID.into(),
            request_id: "s-1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(reasons_of(&card).contains(&pb::StopReason::Manual));

    let err = app
        .cards
        .recharge(recharge(UNICOM_ICCID, 1, &"x".repeat(129)))
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["request_id"]);
}
