//! DiagnoseCard over gRPC: drive a card into each stop reason (and combinations), diagnose it,
//! follow the remedy literally through the API, and check the card is back. A remedy that does
//! not work when followed fails the test.

use simgate::pb;
use tonic::Code;

use crate::helpers::*;

async fn diagnose(app: &mut TestApp, iccid: &str, language: &str) -> pb::Diagnosis {
    app.cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: iccid.into(),
            language: language.into(),
        })
        .await
        .expect("diagnose")
        .into_inner()
}

fn blocking(d: &pb::Diagnosis) -> Vec<String> {
    d.findings
        .iter()
        .filter(|f| f.severity == pb::Severity::Blocking as i32)
        .map(|f| f.code.clone())
        .collect()
}

/// Carries out every non-optional step of every blocking finding, in order, through the API,
/// then waits (on the simulated clock) until the last step has taken effect.
async fn follow(app: &mut TestApp, iccid: &str, d: &pb::Diagnosis) {
    let mut latest: Option<i64> = None;
    for f in d
        .findings
        .iter()
        .filter(|f| f.severity == pb::Severity::Blocking as i32)
    {
        for s in f.steps.iter().filter(|s| !s.optional) {
            let action = pb::RemedyAction::try_from(s.action).unwrap();
            match action {
                pb::RemedyAction::RenewPlan => {
                    assert_eq!(s.rpc, "RenewPlan");
                    app.cards
                        .renew_plan(pb::RenewPlanRequest {
                            iccid: iccid.into(),
                            months: s.months,
                            ..Default::default()
                        })
                        .await
                        .expect("renew as advised");
                }
                pb::RemedyAction::Recharge => {
                    assert_eq!(s.rpc, "Recharge");
                    app.cards
                        .recharge(pb::RechargeRequest {
                            iccid: iccid.into(),
                            amount_fen: s.cost_fen,
                            ..Default::default()
                        })
                        .await
                        .expect("recharge as advised");
                }
                pb::RemedyAction::ResumeCard => {
                    app.cards
                        .resume_card(pb::ResumeCardRequest {
                            iccid: iccid.into(),
                            ..Default::default()
                        })
                        .await
                        .expect("resume as advised");
                }
                pb::RemedyAction::VerifyRealName => {
                    app.cards
                        .verify_real_name(pb::VerifyRealNameRequest {
                            iccid: iccid.into(),
                            ..Default::default()
                        })
                        .await
                        .expect("verify as advised");
                }
                pb::RemedyAction::Wait => {}
                other => panic!(
                    "{}: step {other:?} cannot be followed through the API",
                    f.code
                ),
            }
            if let Some(t) = &s.takes_effect_at {
                latest = latest.max(Some(t.seconds));
            }
        }
    }
    if let Some(t) = latest {
        let now = app
            .sim
            .get_clock(pb::GetClockRequest {})
            .await
            .unwrap()
            .into_inner()
            .now
            .unwrap()
            .seconds;
        if t > now {
            app.sim
                .set_clock(pb::SetClockRequest {
                    to: Some(prost_types::Timestamp {
                        seconds: t,
                        nanos: 0,
                    }),
                })
                .await
                .unwrap();
        }
    }
}

/// Diagnoses, checks the expected blocking findings in order, follows the remedy, and asserts
/// the card is in service at simgate and at the carrier, with nothing blocking left.
async fn remedy_works(app: &mut TestApp, carrier: pb::Carrier, iccid: &str, expected: &[&str]) {
    let d = diagnose(app, iccid, "en").await;
    assert_eq!(
        d.verdict,
        pb::Verdict::BlockedByAccount as i32,
        "{carrier:?} {expected:?}"
    );
    assert_eq!(blocking(&d), expected, "{carrier:?}");
    follow(app, iccid, &d).await;
    let card = get(app, iccid).await;
    assert_eq!(
        status_of(&card),
        pb::CardStatus::Active,
        "{carrier:?} {expected:?}: still {:?} after following: {:#?}",
        reasons_of(&card),
        d.findings
    );
    assert_eq!(
        carrier_state(app, carrier, iccid).await,
        pb::CarrierServiceState::Active
    );
    let after = diagnose(app, iccid, "en").await;
    assert!(blocking(&after).is_empty(), "{:?}", blocking(&after));
}

const CARRIERS: [pb::Carrier; 3] = [
    pb::Carrier::ChinaMobile,
    pb::Carrier::ChinaUnicom,
    pb::Carrier::ChinaTelecom,
];

fn iccid_for(carrier: pb::Carrier, n: u64) -> String {
    match carrier {
        pb::Carrier::ChinaMobile => mobile_iccid(n),
        pb::Carrier::ChinaUnicom => unicom_iccid(n),
        _ => telecom_iccid(n),
    }
}

#[derive(Clone, Copy, Debug)]
enum Case {
    OverQuota,
    Arrears,
    Expired,
    RealName,
    Manual,
}

/// A fresh server with one card stopped for `case`.
async fn stopped_for(carrier: pb::Carrier, case: Case) -> (TestApp, String) {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccid = iccid_for(carrier, 1);
    let mut row = card_input(&iccid, carrier);
    row.balance_fen = 5000;
    match case {
        Case::Arrears => row.balance_fen = -730,
        Case::Expired => {
            row.plan.as_mut().unwrap().validity_end =
                Some(ts(start_time() - chrono::Duration::days(20)))
        }
        Case::RealName => row.real_name = pb::RealNameStatus::Unverified as i32,
        Case::OverQuota | Case::Manual => {}
    }
    import(&mut app, vec![row]).await;
    match case {
        Case::OverQuota => {
            app.use_data(carrier, &iccid, 2 << 30).await;
        }
        Case::Manual => {
            app.cards
                .suspend_card(pb::SuspendCardRequest {
                    iccid: iccid.clone(),
                    ..Default::default()
                })
                .await
                .unwrap();
        }
        _ => {}
    }
    (app, iccid)
}

#[tokio::test]
async fn each_stop_reason_is_cleared_by_following_its_remedy() {
    for carrier in CARRIERS {
        for (case, code) in [
            (Case::OverQuota, "OVER_QUOTA"),
            (Case::Arrears, "ARREARS"),
            (Case::Expired, "EXPIRED_IN_RETENTION"),
            (Case::RealName, "REAL_NAME_MISSING"),
            (Case::Manual, "MANUAL_STOP"),
        ] {
            let (mut app, iccid) = stopped_for(carrier, case).await;
            remedy_works(&mut app, carrier, &iccid, &[code]).await;
        }
    }
}

#[tokio::test]
async fn every_reason_at_once_is_cleared_in_the_advised_order() {
    for carrier in CARRIERS {
        let mut app = spawn_app(Backend::Sqlite).await.unwrap();
        let iccid = iccid_for(carrier, 9);
        let mut row = card_input(&iccid, carrier);
        row.plan.as_mut().unwrap().validity_end =
            Some(ts(start_time() + chrono::Duration::days(2)));
        row.balance_fen = 300;
        import(&mut app, vec![row]).await;
        app.cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
        app.use_data(carrier, &iccid, 2 << 30).await;
        // Expired three days ago, the retention fee pushed it into arrears.
        app.sim
            .advance_clock(pb::AdvanceClockRequest {
                by: Some(prost_types::Duration {
                    seconds: 3 * 86_400,
                    nanos: 0,
                }),
            })
            .await
            .unwrap();
        let card = get(&mut app, &iccid).await;
        assert!(
            reasons_of(&card).contains(&pb::StopReason::Expired),
            "{:?}",
            reasons_of(&card)
        );
        let mut expected = vec!["EXPIRED_IN_RETENTION", "ARREARS"];
        if reasons_of(&card).contains(&pb::StopReason::OverQuota) {
            expected.push("OVER_QUOTA");
        }
        expected.push("MANUAL_STOP");
        let d = diagnose(&mut app, &iccid, "en").await;
        assert!(d.summary.contains("Renew first"), "{}", d.summary);
        remedy_works(&mut app, carrier, &iccid, &expected).await;
    }
}

#[tokio::test]
async fn arrears_caused_by_the_test_gift_are_explained_and_cleared() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom);
    row.stage = pb::LifecycleStage::Test as i32;
    import(&mut app, vec![row]).await;
    app.use_data(pb::Carrier::ChinaUnicom, UNICOM_ICCID, 100 << 20)
        .await;
    let d = diagnose(&mut app, UNICOM_ICCID, "en").await;
    let codes: Vec<_> = d.findings.iter().map(|f| f.code.as_str()).collect();
    assert_eq!(codes[..2], ["ARREARS", "TEST_GIFT_USED_UP"]);
    remedy_works(
        &mut app,
        pb::Carrier::ChinaUnicom,
        UNICOM_ICCID,
        &["ARREARS"],
    )
    .await;
}

#[tokio::test]
async fn an_online_card_without_traffic_points_at_network_or_device() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let d = diagnose(&mut app, MOBILE_ICCID, "en").await;
    assert_eq!(d.verdict, pb::Verdict::LikelyNetworkOrDevice as i32);
    assert_eq!(d.findings[0].code, "NO_RECENT_SESSION");
    let actions: Vec<_> = d.findings[0].steps.iter().map(|s| s.action).collect();
    assert_eq!(
        actions,
        vec![
            pb::RemedyAction::RestartDevice as i32,
            pb::RemedyAction::MoveToAnotherDevice as i32,
            pb::RemedyAction::CheckCoverage as i32
        ]
    );
    app.use_data(pb::Carrier::ChinaMobile, MOBILE_ICCID, 1 << 20)
        .await;
    let d = diagnose(&mut app, MOBILE_ICCID, "en").await;
    assert_eq!(d.verdict, pb::Verdict::OnlineOk as i32);
}

#[tokio::test]
async fn a_cancelled_card_is_diagnosed_as_cancelled() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile);
    row.plan.as_mut().unwrap().validity_end = Some(ts(start_time() - chrono::Duration::days(150)));
    import(&mut app, vec![row]).await;
    let d = diagnose(&mut app, MOBILE_ICCID, "en").await;
    assert_eq!(d.verdict, pb::Verdict::Cancelled as i32);
    assert_eq!(
        d.findings[0].steps[0].action,
        pb::RemedyAction::ReplaceCard as i32
    );
}

#[tokio::test]
async fn language_comes_from_the_field_or_accept_language() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom);
    row.balance_fen = -1234;
    import(&mut app, vec![row]).await;
    let mut req = tonic::Request::new(pb::DiagnoseCardRequest {
        iccid: UNICOM_ICCID.into(),
        language: String::new(),
    });
    req.metadata_mut()
        .insert("accept-language", "zh-CN,zh;q=0.9".parse().unwrap());
    let zh = app.cards.diagnose_card(req).await.unwrap().into_inner();
    assert_eq!(zh.language, "zh-CN");
    assert!(
        zh.findings[0].message.contains("欠款 12.34 元"),
        "{}",
        zh.findings[0].message
    );
    assert!(zh.findings[0].steps[1].text.contains("中国联通"));
    let en = diagnose(&mut app, UNICOM_ICCID, "en").await;
    assert_eq!(en.language, "en");
    assert!(en.findings[0].steps[1]
        .text
        .contains("China Unicom needs a manual restore"));
    let same = |d: &pb::Diagnosis| {
        d.findings
            .iter()
            .map(|f| (f.code.clone(), f.evidence.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(same(&zh), same(&en));

    let err = app
        .cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: "bad".into(),
            language: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    let err = app
        .cards
        .diagnose_card(pb::DiagnoseCardRequest {
            iccid: telecom_iccid(77),
            language: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
}
