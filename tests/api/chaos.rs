//! Carriers that fail: a breaker that fails fast, and a storm of transient errors and timeouts
//! after the change was applied. Afterwards simgate and every carrier agree on every card, and
//! every fen is accounted for.

use std::collections::HashMap;
use std::sync::Arc;

use simgate::carrier::guard::CarrierLimits;
use simgate::pb;
use tonic::Code;

use crate::helpers::*;

#[tokio::test]
async fn a_carrier_that_is_down_trips_the_breaker_and_reads_keep_working() {
    let mut app = spawn_with_limits(CarrierLimits {
        breaker_failures: 3,
        breaker_open_ms: 60_000,
        ..CarrierLimits::default()
    })
    .await;
    import(
        &mut app,
        vec![card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom)],
    )
    .await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaTelecom as i32,
            down: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = app
        .cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: TELECOM_ICCID.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    let err = app
        .cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: TELECOM_ICCID.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    // Refused by the open circuit itself: the carrier was not asked again.
    assert_eq!(details(&err).0, "CARRIER_CIRCUIT_OPEN");
    assert!(err.message().contains("circuit open"), "{}", err.message());
    // Reads of stored cards do not need the carrier.
    let card = get(&mut app, TELECOM_ICCID).await;
    assert_eq!(status_of(&card), pb::CardStatus::Active);
}

#[tokio::test]
async fn fault_settings_are_validated() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    for req in [
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            error_rate: 1.5,
            ..Default::default()
        },
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            timeout_after_apply_rate: -0.1,
            ..Default::default()
        },
        pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            latency_ms: 120_000,
            ..Default::default()
        },
        pb::SetFaultsRequest {
            carrier: 0,
            ..Default::default()
        },
    ] {
        assert_eq!(
            app.sim.set_faults(req).await.unwrap_err().code(),
            Code::InvalidArgument
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_carrier_failures_leaves_simgate_and_the_carriers_agreeing() {
    let mut app = spawn_with_limits(CarrierLimits {
        breaker_failures: 0,
        ..CarrierLimits::default()
    })
    .await;
    let mut iccids = Vec::new();
    let mut rows = Vec::new();
    for n in 0..300u64 {
        let (iccid, carrier) = match n % 3 {
            0 => (mobile_iccid(n), pb::Carrier::ChinaMobile),
            1 => (unicom_iccid(n), pb::Carrier::ChinaUnicom),
            _ => (telecom_iccid(n), pb::Carrier::ChinaTelecom),
        };
        let mut row = card_input(&iccid, carrier);
        row.balance_fen = 10_000;
        rows.push(row);
        iccids.push((iccid, carrier));
    }
    import(&mut app, rows).await;
    for c in [
        pb::Carrier::ChinaMobile,
        pb::Carrier::ChinaUnicom,
        pb::Carrier::ChinaTelecom,
    ] {
        app.sim
            .set_faults(pb::SetFaultsRequest {
                carrier: c as i32,
                error_rate: 0.30,
                timeout_after_apply_rate: 0.05,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let iccids = Arc::new(iccids);
    let mut tasks = Vec::new();
    for worker in 0..16u64 {
        let mut c = app.cards.clone();
        let iccids = iccids.clone();
        tasks.push(tokio::spawn(async move {
            let mut credited: HashMap<String, i64> = HashMap::new();
            let mut failed_recharges = Vec::new();
            let mut unavailable = 0;
            for i in 0..60u64 {
                let (iccid, _) = &iccids[((worker * 7919 + i * 104_729) % 300) as usize];
                let result = match i % 3 {
                    0 => c
                        .suspend_card(pb::SuspendCardRequest {
                            iccid: iccid.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    1 => c
                        .resume_card(pb::ResumeCardRequest {
                            iccid: iccid.clone(),
                            ..Default::default()
                        })
                        .await
                        .map(|_| ()),
                    _ => {
                        let id = format!("chaos-{worker}-{i}");
                        let amount = (i % 97 + 1) as i64;
                        match c
                            .recharge(pb::RechargeRequest {
                                iccid: iccid.clone(),
                                amount_fen: amount,
                                request_id: id.clone(),
                            })
                            .await
                        {
                            Ok(r) => {
                                let r = r.into_inner();
                                *credited.entry(iccid.clone()).or_default() +=
                                    r.balance_after_fen - r.balance_before_fen;
                                Ok(())
                            }
                            Err(e) => {
                                failed_recharges.push((iccid.clone(), amount, id));
                                Err(e)
                            }
                        }
                    }
                };
                if let Err(e) = result {
                    assert!(
                        matches!(e.code(), Code::Unavailable | Code::FailedPrecondition),
                        "unexpected {e:?}"
                    );
                    if e.code() == Code::Unavailable {
                        unavailable += 1;
                    }
                }
            }
            (credited, failed_recharges, unavailable)
        }));
    }
    let mut credited: HashMap<String, i64> = HashMap::new();
    let mut failed = Vec::new();
    for t in tasks {
        let (c, f, _) = t.await.unwrap();
        for (k, v) in c {
            *credited.entry(k).or_default() += v;
        }
        failed.extend(f);
    }

    // The storm passes. Interrupted calls are repaired, and refused recharges retried with
    // their request ids now land exactly once.
    for c in [
        pb::Carrier::ChinaMobile,
        pb::Carrier::ChinaUnicom,
        pb::Carrier::ChinaTelecom,
    ] {
        app.sim
            .set_faults(pb::SetFaultsRequest {
                carrier: c as i32,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    app.service.settle_open_intents_now().await.unwrap();
    for (iccid, amount, id) in &failed {
        let r = app
            .cards
            .recharge(pb::RechargeRequest {
                iccid: iccid.clone(),
                amount_fen: *amount,
                request_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        *credited.entry(iccid.clone()).or_default() += r.balance_after_fen - r.balance_before_fen;
        // Retrying once more changes nothing.
        let again = app
            .cards
            .recharge(pb::RechargeRequest {
                iccid: iccid.clone(),
                amount_fen: *amount,
                request_id: id.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(again, r);
    }
    for (iccid, carrier) in iccids.iter() {
        let card = get(&mut app, iccid).await;
        let expected = match status_of(&card) {
            pb::CardStatus::Active => pb::CarrierServiceState::Active,
            _ => pb::CarrierServiceState::Stopped,
        };
        assert_eq!(
            carrier_state(&mut app, *carrier, iccid).await,
            expected,
            "{iccid} disagrees"
        );
        assert_eq!(
            card.balance_fen,
            10_000 + credited.get(iccid).copied().unwrap_or(0),
            "{iccid}: every fen accounted for"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_carrier_account_rate_limit_is_never_exceeded() {
    let mut app = spawn_with_limits(CarrierLimits {
        requests_per_second: 20,
        ..CarrierLimits::default()
    })
    .await;
    let rows: Vec<_> = (0..60)
        .map(|n| card_input(&unicom_iccid(n), pb::Carrier::ChinaUnicom))
        .collect();
    import(&mut app, rows).await;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for n in 0..60 {
        let mut c = app.cards.clone();
        tasks.push(tokio::spawn(async move {
            c.suspend_card(pb::SuspendCardRequest {
                iccid: unicom_iccid(n),
                ..Default::default()
            })
            .await
            .map(|_| ())
        }));
    }
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    // 60 stops at 20 a second (a burst of 20 allowed): at least two seconds, whatever the load.
    assert!(
        started.elapsed() >= std::time::Duration::from_millis(1900),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn slow_and_rate_limiting_carriers_are_waited_for_and_reported() {
    let mut app = spawn_with_limits(CarrierLimits {
        breaker_failures: 0,
        ..CarrierLimits::default()
    })
    .await;
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            latency_ms: 150,
            ..Default::default()
        })
        .await
        .unwrap();
    let started = std::time::Instant::now();
    app.cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: MOBILE_ICCID.into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(started.elapsed() >= std::time::Duration::from_millis(150));

    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            rate_limit_rate: 1.0,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = app
        .cards
        .resume_card(pb::ResumeCardRequest {
            iccid: MOBILE_ICCID.into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::Unavailable);
    assert_eq!(details(&err).0, "CARRIER_RATE_LIMITED");
    use tonic_types::StatusExt;
    assert!(err.get_error_details().retry_info().is_some());
    assert_eq!(
        status_of(&get(&mut app, MOBILE_ICCID).await),
        pb::CardStatus::Suspended,
        "nothing changed"
    );
}
