use simgate::pb;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

both_backends!(
    imported_card_carries_its_full_state_and_policy,
    |mut app: TestApp| async move {
        let mut row = card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom);
        row.msisdn = "1064912345678".into();
        row.imsi = "460010123456789".into();
        row.balance_fen = 1500;
        let resp = import(&mut app, vec![row]).await;
        assert_eq!(resp.imported, 1);
        assert!(resp.warnings.is_empty());

        let card = get(&mut app, UNICOM_ICCID).await;
        assert_eq!(card.msisdn, "1064912345678");
        assert_eq!(card.imsi, "460010123456789");
        assert_eq!(card.customer_id, "acme");
        assert_eq!(status_of(&card), pb::CardStatus::Active);
        assert!(card.stop_reasons.is_empty());
        assert_eq!(card.balance_fen, 1500);
        assert_eq!(card.stage, pb::LifecycleStage::Billing as i32);
        let policy = card.policy.expect("policy");
        assert_eq!(policy.cycle_start_day, 27);
        assert_eq!(policy.arrears_recovery, pb::ArrearsRecovery::Manual as i32);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, UNICOM_ICCID).await,
            pb::CarrierServiceState::Active
        );
    }
);

both_backends!(
    import_derives_stop_reasons_from_the_cards_facts,
    |mut app: TestApp| async move {
        let mut arrears = card_input(&mobile_iccid(1), pb::Carrier::ChinaMobile);
        arrears.balance_fen = -300;
        let mut no_name = card_input(&mobile_iccid(2), pb::Carrier::ChinaMobile);
        no_name.real_name = pb::RealNameStatus::Unverified as i32;
        let mut over = card_input(&mobile_iccid(3), pb::Carrier::ChinaMobile);
        over.cycle_usage_bytes = 1 << 30;
        let mut expired = card_input(&mobile_iccid(4), pb::Carrier::ChinaMobile);
        expired.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() - chrono::Duration::days(5)));
        let mut gone = card_input(&mobile_iccid(5), pb::Carrier::ChinaMobile);
        gone.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() - chrono::Duration::days(120)));
        let resp = import(&mut app, vec![arrears, no_name, over, expired, gone]).await;
        assert_eq!(resp.imported, 5);
        assert_eq!(resp.warnings.len(), 1, "{:?}", resp.warnings);
        assert_eq!(resp.warnings[0].row, 4);
        assert!(resp.warnings[0].message.contains("CANCELLED"));

        let cases = [
            (1, pb::CardStatus::Suspended, vec![pb::StopReason::Arrears]),
            (2, pb::CardStatus::Suspended, vec![pb::StopReason::RealName]),
            (
                3,
                pb::CardStatus::Suspended,
                vec![pb::StopReason::OverQuota],
            ),
            (4, pb::CardStatus::Retained, vec![pb::StopReason::Expired]),
        ];
        for (n, status, reasons) in cases {
            let card = get(&mut app, &mobile_iccid(n)).await;
            assert_eq!(status_of(&card), status, "card {n}");
            assert_eq!(reasons_of(&card), reasons, "card {n}");
            assert_eq!(
                carrier_state(&mut app, pb::Carrier::ChinaMobile, &mobile_iccid(n)).await,
                pb::CarrierServiceState::Stopped,
                "card {n} must be stopped at the carrier too"
            );
        }
        let retained = get(&mut app, &mobile_iccid(4)).await;
        assert!(retained.retention_ends_at.is_some());
        let cancelled = get(&mut app, &mobile_iccid(5)).await;
        assert_eq!(status_of(&cancelled), pb::CardStatus::Cancelled);
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaMobile, &mobile_iccid(5)).await,
            pb::CarrierServiceState::Cancelled
        );
    }
);

both_backends!(
    import_is_all_or_nothing_and_names_the_bad_row,
    |mut app: TestApp| async move {
        let good = card_input(&unicom_iccid(1), pb::Carrier::ChinaUnicom);
        let mut bad = card_input(&unicom_iccid(2), pb::Carrier::ChinaUnicom);
        bad.iccid = "8986G117750006390067".into();
        bad.customer_id = "not a customer id".into();
        let err = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![good, bad],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        let (_, fields) = details(&err);
        assert_eq!(fields, vec!["cards[1].iccid", "cards[1].customer_id"]);
        let list = app
            .cards
            .list_cards(pb::ListCardsRequest::default())
            .await
            .unwrap()
            .into_inner();
        assert!(
            list.cards.is_empty(),
            "nothing may be imported from a refused call"
        );
    }
);

both_backends!(
    import_of_an_existing_card_is_refused_whole,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(&unicom_iccid(7), pb::Carrier::ChinaUnicom)],
        )
        .await;
        let err = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![
                    card_input(&unicom_iccid(8), pb::Carrier::ChinaUnicom),
                    card_input(&unicom_iccid(7), pb::Carrier::ChinaUnicom),
                ],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        let (reason, fields) = details(&err);
        assert_eq!(reason, "CARD_ALREADY_EXISTS");
        assert_eq!(fields, vec!["cards[1].iccid"]);
        let err = app
            .cards
            .get_card(pb::GetCardRequest {
                iccid: unicom_iccid(8),
            })
            .await
            .unwrap_err();
        assert_eq!(
            err.code(),
            Code::NotFound,
            "the good row must not have been stored"
        );
    }
);

both_backends!(
    a_refused_import_leaves_the_carrier_untouched,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(&unicom_iccid(7), pb::Carrier::ChinaUnicom)],
        )
        .await;
        let mut in_debt = card_input(&unicom_iccid(8), pb::Carrier::ChinaUnicom);
        in_debt.balance_fen = -5;
        let err = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![
                    in_debt,
                    card_input(&unicom_iccid(7), pb::Carrier::ChinaUnicom),
                ],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        // The corrected retry imports the card with money: the carrier must serve it.
        import(
            &mut app,
            vec![card_input(&unicom_iccid(8), pb::Carrier::ChinaUnicom)],
        )
        .await;
        assert_eq!(
            carrier_state(&mut app, pb::Carrier::ChinaUnicom, &unicom_iccid(8)).await,
            pb::CarrierServiceState::Active
        );
    }
);

both_backends!(
    import_of_a_taken_msisdn_is_refused,
    |mut app: TestApp| async move {
        let mut a = card_input(&telecom_iccid(1), pb::Carrier::ChinaTelecom);
        a.msisdn = "1064900000001".into();
        import(&mut app, vec![a]).await;
        let mut b = card_input(&telecom_iccid(2), pb::Carrier::ChinaTelecom);
        b.msisdn = "1064900000001".into();
        let err = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![b],
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::AlreadyExists);
        assert_eq!(details(&err).1, vec!["cards[0].msisdn"]);
    }
);

#[tokio::test]
async fn identifier_test_vectors_are_applied_at_import() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    // (iccid, carrier, imsi, accepted, warned)
    let vectors = [
        (
            "89860117750006390067",
            pb::Carrier::ChinaUnicom,
            "",
            true,
            false,
        ),
        (
            "898602D9981700140197",
            pb::Carrier::ChinaMobile,
            "",
            true,
            false,
        ),
        (
            "898602f2191880120110",
            pb::Carrier::ChinaMobile,
            "",
            true,
            false,
        ),
        (
            "8986031630200230821",
            pb::Carrier::ChinaTelecom,
            "",
            true,
            true,
        ),
        (
            "89860117750006390068",
            pb::Carrier::ChinaUnicom,
            "",
            true,
            true,
        ),
        (
            "89860117750006390067",
            pb::Carrier::ChinaMobile,
            "",
            false,
            false,
        ),
        (
            "898601177500063900677X",
            pb::Carrier::ChinaUnicom,
            "",
            false,
            false,
        ),
        (
            "8986G117750006390067",
            pb::Carrier::ChinaUnicom,
            "",
            false,
            false,
        ),
        ("12345", pb::Carrier::ChinaTelecom, "", false, false),
        (
            "898602D9981700140100",
            pb::Carrier::ChinaMobile,
            "460030123456789",
            false,
            false,
        ),
    ];
    for (iccid, carrier, imsi, accepted, warned) in vectors {
        let mut row = card_input(iccid, carrier);
        row.imsi = imsi.into();
        let result = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![row],
                ..Default::default()
            })
            .await;
        match (accepted, result) {
            (true, Ok(resp)) => {
                let resp = resp.into_inner();
                assert_eq!(!resp.warnings.is_empty(), warned, "{iccid}");
                let stored = get(&mut app, &iccid.to_ascii_uppercase()).await;
                assert_eq!(stored.iccid, iccid.to_ascii_uppercase());
                if warned {
                    assert!(
                        stored.warnings.iter().any(|w| w.contains("Luhn")),
                        "{iccid}"
                    );
                }
            }
            (false, Err(status)) => {
                assert_eq!(status.code(), Code::InvalidArgument, "{iccid}");
                let field = if imsi.is_empty() {
                    "cards[0].iccid"
                } else {
                    "cards[0].imsi"
                };
                assert_eq!(details(&status).1, vec![field], "{iccid}");
            }
            (expected, other) => panic!("{iccid}: expected accepted={expected}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn import_limits_are_enforced() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), details(&err).1),
        (Code::InvalidArgument, vec!["cards".to_string()])
    );

    let too_many: Vec<_> = (0..10_001)
        .map(|n| card_input(&unicom_iccid(n), pb::Carrier::ChinaUnicom))
        .collect();
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: too_many,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("10000"), "{}", err.message());
}

#[tokio::test]
async fn import_of_ten_thousand_cards_in_one_call_succeeds() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let rows: Vec<_> = (0..10_000)
        .map(|n| card_input(&telecom_iccid(n), pb::Carrier::ChinaTelecom))
        .collect();
    let resp = import(&mut app, rows).await;
    assert_eq!(resp.imported, 10_000);
    assert_eq!(app.store.count_cards().await.unwrap(), 10_000);
}

#[tokio::test]
async fn every_invalid_import_field_is_named() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(&unicom_iccid(1), pb::Carrier::ChinaUnicom);
    row.msisdn = "12345".into();
    row.imsi = "46001".into();
    row.customer_id = "has space".into();
    row.balance_fen = i64::MAX;
    row.cycle_usage_bytes = u64::MAX;
    row.real_name = 99;
    row.stage = 99;
    row.plan = Some(pb::Plan {
        monthly_quota_bytes: 0,
        monthly_fee_fen: -1,
        validity_end: None,
        auto_suspend_over_quota: false,
    });
    let mut lowest = card_input(&unicom_iccid(4), pb::Carrier::ChinaUnicom);
    lowest.balance_fen = i64::MIN;
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![lowest],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["cards[0].balance_fen"]);
    let mut no_carrier = card_input(&unicom_iccid(2), pb::Carrier::Unspecified);
    no_carrier.plan = None;
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![row, no_carrier],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let fields = details(&err).1;
    for f in [
        "cards[0].msisdn",
        "cards[0].imsi",
        "cards[0].customer_id",
        "cards[0].plan.monthly_quota_bytes",
        "cards[0].plan.monthly_fee_fen",
        "cards[0].plan.validity_end",
        "cards[0].real_name",
        "cards[0].stage",
        "cards[0].balance_fen",
        "cards[0].cycle_usage_bytes",
        "cards[1].carrier",
        "cards[1].plan",
    ] {
        assert!(fields.iter().any(|x| x == f), "{f} missing from {fields:?}");
    }
    let dup = card_input(&unicom_iccid(3), pb::Carrier::ChinaUnicom);
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![dup.clone(), dup],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["cards[1].iccid"]);
    assert_eq!(app.store.count_cards().await.unwrap(), 0);
}

both_backends!(
    cards_enter_through_the_reseller_and_are_assigned_from_inventory,
    |mut app: TestApp| async move {
        let key = app
            .access
            .create_api_key(pb::CreateApiKeyRequest {
                role: pb::Role::CustomerAdmin as i32,
                customer_id: "acme".into(),
                name: "acme admin".into(),
                expires_at: None,
            })
            .await
            .unwrap()
            .into_inner()
            .key_secret;
        let mut theirs = cards_client(&app.channel, &key);
        // A customer key cannot import, not even into its own customer.
        let err = theirs
            .import_cards(pb::ImportCardsRequest {
                cards: vec![card_input(&unicom_iccid(900), pb::Carrier::ChinaUnicom)],
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);

        // The reseller imports three cards into its inventory.
        let stock: Vec<String> = (1..=3).map(unicom_iccid).collect();
        let rows = stock
            .iter()
            .map(|i| {
                let mut r = card_input(i, pb::Carrier::ChinaUnicom);
                r.customer_id = String::new();
                r
            })
            .collect();
        assert_eq!(import(&mut app, rows).await.imported, 3);
        let inventory = app
            .cards
            .list_cards(pb::ListCardsRequest {
                unassigned: true,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(inventory.cards.len(), 3);
        assert!(inventory.cards.iter().all(|c| c.customer_id.is_empty()));
        // The customer sees none of them.
        let err = theirs
            .get_card(pb::GetCardRequest {
                iccid: stock[0].clone(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);

        // Two become acme's spares.
        let admin = app.cards.clone();
        let assign = |iccids: Vec<String>, customer: &str, request_id: &str| {
            let mut cards = admin.clone();
            let req = pb::AssignCardsRequest {
                iccids,
                customer_id: customer.into(),
                spare: true,
                request_id: request_id.into(),
            };
            async move { cards.assign_cards(req).await }
        };
        let first = assign(stock[..2].to_vec(), "acme", "assign-1")
            .await
            .unwrap()
            .into_inner();
        assert_eq!(first.changed, 2);
        let again = assign(stock[..2].to_vec(), "acme", "assign-1")
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, first, "a repeated request gets the first answer");
        let card = theirs
            .get_card(pb::GetCardRequest {
                iccid: stock[0].clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!((card.customer_id.as_str(), card.spare), ("acme", true));

        // Moving acme's card to another customer refuses the whole request: the third card,
        // still in inventory, stays there.
        let err = assign(vec![stock[2].clone(), stock[0].clone()], "globex", "")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(details(&err).0, "CARD_ASSIGNED_TO_ANOTHER_CUSTOMER");
        assert_eq!(get(&mut app, &stock[2]).await.customer_id, "");
        // An unknown card is NOT_FOUND and nothing changes either.
        let err = assign(vec![stock[2].clone(), unicom_iccid(999)], "globex", "")
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::NotFound);
        assert_eq!(get(&mut app, &stock[2]).await.customer_id, "");
        // A customer's key cannot assign.
        let err = theirs
            .assign_cards(pb::AssignCardsRequest {
                iccids: vec![stock[2].clone()],
                customer_id: "acme".into(),
                spare: false,
                request_id: String::new(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    }
);

/// A hundred bad rows answer INVALID_ARGUMENT to a client with gRPC's default 8 KB metadata
/// limit: a short message with the first violations and a count, details within bounds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_bad_rows_fit_a_default_clients_metadata_limit() {
    let app = spawn_app(Backend::Sqlite).await.unwrap();
    let strict = tonic::transport::Endpoint::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .http2_max_header_list_size(8 * 1024)
        .connect()
        .await
        .unwrap();
    let rows = (0..100)
        .map(|i| {
            let mut r = card_input(&format!("8986{i:016}"), pb::Carrier::ChinaUnicom);
            r.iccid = format!("not-an-iccid-{i}-{}", "x".repeat(40));
            r.customer_id = "bad customer id with spaces".into();
            r
        })
        .collect();
    let err = cards_client(&strict, ADMIN_KEY)
        .import_cards(pb::ImportCardsRequest {
            cards: rows,
            request_id: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{}", err.message());
    assert!(err.message().len() <= 1024, "{}", err.message());
    assert!(
        err.message().contains("cards[0].iccid"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("more"), "{}", err.message());
    let fields = details(&err).1;
    assert!(fields.len() > 3, "the details list more than the message");
    assert!(err.details().len() <= 6 * 1024);
}

both_backends!(
    renewals_stop_at_the_latest_validity_an_import_accepts,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
        )
        .await;
        let mut refused = None;
        for _ in 0..100 {
            match app
                .cards
                .renew_plan(pb::RenewPlanRequest {
                    iccid: UNICOM_ICCID.into(),
                    months: 60,
                    request_id: String::new(),
                })
                .await
            {
                Ok(_) => {}
                Err(e) => {
                    refused = Some(e);
                    break;
                }
            }
        }
        let err = refused.expect("renewals are bounded");
        assert_eq!(err.code(), Code::FailedPrecondition);
        assert_eq!(details(&err).0, "VALIDITY_LIMIT");
        let card = get(&mut app, UNICOM_ICCID).await;
        let end = card.plan.unwrap().validity_end.unwrap();
        let year_2201 = 7_289_654_400; // 2201-01-01T00:00:00Z
        assert!(end.seconds < year_2201, "validity stays within year 2200");
    }
);
