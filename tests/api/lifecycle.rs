//! A card's life over real gRPC on the simulated clock: 15+ months per carrier, from the test
//! period to cancellation, with the balance checked to the fen after every step.

use chrono::{DateTime, Datelike, Months, NaiveDate, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use simgate::pb;
use tonic::Code;

use crate::helpers::*;

const MIB: u64 = 1 << 20;
const FEE: i64 = 1200;

fn shanghai(d: NaiveDate, hour: u32) -> DateTime<Utc> {
    Shanghai
        .with_ymd_and_hms(d.year(), d.month(), d.day(), hour, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// Start of the k-th billing cycle after 2026-11-25: the 1st of the month, or the 27th for
/// China Unicom (whose cycle runs from the 27th to the 26th).
fn cycle(carrier: pb::Carrier, k: u32) -> NaiveDate {
    let first = match carrier {
        pb::Carrier::ChinaUnicom => NaiveDate::from_ymd_opt(2026, 11, 27).unwrap(),
        _ => NaiveDate::from_ymd_opt(2026, 12, 1).unwrap(),
    };
    first.checked_add_months(Months::new(k - 1)).unwrap()
}

async fn set_clock(app: &mut TestApp, to: DateTime<Utc>) -> pb::ClockResponse {
    let resp = app
        .sim
        .set_clock(pb::SetClockRequest { to: Some(ts(to)) })
        .await
        .expect("set clock")
        .into_inner();
    assert_eq!(resp.cards_failed, 0);
    resp
}

/// Asserts the card's status, stop reasons and balance, and that the carrier agrees.
async fn expect(
    app: &mut TestApp,
    carrier: pb::Carrier,
    iccid: &str,
    step: &str,
    status: pb::CardStatus,
    reasons: &[pb::StopReason],
    balance: i64,
) -> pb::Card {
    let card = get(app, iccid).await;
    assert_eq!(status_of(&card), status, "{carrier:?} {step}: status");
    assert_eq!(reasons_of(&card), reasons, "{carrier:?} {step}: reasons");
    assert_eq!(card.balance_fen, balance, "{carrier:?} {step}: balance");
    let at_carrier = carrier_state(app, carrier, iccid).await;
    let expected = match status {
        pb::CardStatus::Active => pb::CarrierServiceState::Active,
        pb::CardStatus::Cancelled => pb::CarrierServiceState::Cancelled,
        _ => pb::CarrierServiceState::Stopped,
    };
    assert_eq!(at_carrier, expected, "{carrier:?} {step}: carrier state");
    card
}

async fn live_a_card(carrier: pb::Carrier) {
    use pb::CardStatus::*;
    use pb::StopReason::*;
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let iccid = match carrier {
        pb::Carrier::ChinaMobile => mobile_iccid(1),
        pb::Carrier::ChinaUnicom => unicom_iccid(1),
        _ => telecom_iccid(1),
    };
    let c = |k| cycle(carrier, k);
    // Telecom charges the first month per day: 25 Nov 10:00 to 1 Dec is 6 started days of 30.
    let first_fee = if carrier == pb::Carrier::ChinaTelecom {
        FEE * 6 / 30
    } else {
        FEE
    };

    // Test period, with a balance that lasts exactly two cycles minus 4 yuan.
    let mut row = card_input(&iccid, carrier);
    row.stage = pb::LifecycleStage::Test as i32;
    row.balance_fen = first_fee + 2000;
    row.plan.as_mut().unwrap().validity_end = Some(ts(shanghai(c(8), 0)));
    import(&mut app, vec![row]).await;
    let mut balance = first_fee + 2000;
    let card = expect(&mut app, carrier, &iccid, "imported", Active, &[], balance).await;
    assert_eq!(card.stage, pb::LifecycleStage::Test as i32);

    // Part of the 100 MiB gift: still testing, nothing charged.
    let card = app.use_data(carrier, &iccid, 60 * MIB).await;
    assert_eq!(card.stage, pb::LifecycleStage::Test as i32);
    expect(
        &mut app,
        carrier,
        &iccid,
        "gift partly used",
        Active,
        &[],
        balance,
    )
    .await;

    // Gift used up: billing starts and the first month is charged.
    let card = app.use_data(carrier, &iccid, 40 * MIB).await;
    assert_eq!(card.stage, pb::LifecycleStage::Billing as i32);
    balance -= first_fee;
    expect(
        &mut app,
        carrier,
        &iccid,
        "gift used up",
        Active,
        &[],
        balance,
    )
    .await;

    // Over quota with auto-suspend.
    app.use_data(carrier, &iccid, 1 << 30).await;
    expect(
        &mut app,
        carrier,
        &iccid,
        "over quota",
        Suspended,
        &[OverQuota],
        balance,
    )
    .await;

    // Restored at rollover; the month's fee is charged.
    set_clock(&mut app, shanghai(c(1), 0)).await;
    balance -= FEE;
    let card = expect(
        &mut app,
        carrier,
        &iccid,
        "rollover 1",
        Active,
        &[],
        balance,
    )
    .await;
    assert_eq!(card.cycle_usage_bytes, 0);

    // The next fee cannot be covered: arrears.
    set_clock(&mut app, shanghai(c(2), 0)).await;
    balance -= FEE;
    assert_eq!(balance, -400);
    expect(
        &mut app,
        carrier,
        &iccid,
        "arrears",
        Suspended,
        &[Arrears],
        balance,
    )
    .await;

    // Recharge: China Mobile and China Telecom restore by themselves, China Unicom needs a resume.
    set_clock(&mut app, shanghai(c(2), 9)).await;
    let card = app.recharge(&iccid, 1000).await.card.unwrap();
    balance += 1000;
    if carrier == pb::Carrier::ChinaUnicom {
        assert!(card.arrears_paid_awaiting_resume);
        expect(
            &mut app,
            carrier,
            &iccid,
            "paid, awaiting resume",
            Suspended,
            &[Arrears],
            balance,
        )
        .await;
        app.cards
            .resume_card(pb::ResumeCardRequest {
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap();
    }
    expect(&mut app, carrier, &iccid, "recharged", Active, &[], balance).await;

    // Five more billed months, then the plan expires at a cycle start: no fee for the expired
    // plan, the first month of 停机保号 instead.
    app.recharge(&iccid, 7000).await;
    balance += 7000;
    set_clock(&mut app, shanghai(c(7), 12)).await;
    balance -= 5 * FEE;
    expect(
        &mut app,
        carrier,
        &iccid,
        "five months on",
        Active,
        &[],
        balance,
    )
    .await;
    set_clock(&mut app, shanghai(c(8), 0)).await;
    balance -= 500;
    let card = expect(
        &mut app,
        carrier,
        &iccid,
        "expired",
        Retained,
        &[Expired],
        balance,
    )
    .await;
    let retention_end = shanghai(c(11), 0);
    assert_eq!(
        card.retention_ends_at.unwrap().seconds,
        retention_end.timestamp()
    );

    // The retention fee again a month later.
    set_clock(&mut app, shanghai(c(9), 0)).await;
    balance -= 500;
    expect(
        &mut app,
        carrier,
        &iccid,
        "retention month 2",
        Retained,
        &[Expired],
        balance,
    )
    .await;

    // Renewal inside the window; restore timing per carrier.
    let renewed_at = shanghai(c(9) + chrono::Duration::days(9), 10);
    set_clock(&mut app, renewed_at).await;
    app.recharge(&iccid, 4200).await;
    balance += 4200;
    let card = app
        .cards
        .renew_plan(pb::RenewPlanRequest {
            iccid: iccid.clone(),
            months: 4,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    match carrier {
        pb::Carrier::ChinaTelecom => {
            expect(
                &mut app,
                carrier,
                &iccid,
                "renewed: immediate",
                Active,
                &[],
                balance,
            )
            .await;
        }
        pb::Carrier::ChinaMobile => {
            // Renewed at 10:00: restored the same day, after the 2 h processing delay.
            let due = renewed_at + chrono::Duration::hours(2);
            assert_eq!(card.expiry_restore_at.unwrap().seconds, due.timestamp());
            expect(
                &mut app,
                carrier,
                &iccid,
                "renewed: same day",
                Retained,
                &[Expired],
                balance,
            )
            .await;
            set_clock(&mut app, due).await;
            expect(
                &mut app,
                carrier,
                &iccid,
                "restored that day",
                Active,
                &[],
                balance,
            )
            .await;
        }
        _ => {
            assert_eq!(
                card.expiry_restore_at.unwrap().seconds,
                shanghai(c(10), 0).timestamp()
            );
            set_clock(&mut app, renewed_at + chrono::Duration::days(5)).await;
            expect(
                &mut app,
                carrier,
                &iccid,
                "renewed: next cycle",
                Retained,
                &[Expired],
                balance,
            )
            .await;
        }
    }
    // Restored before the rollover that charges the renewed plan.
    set_clock(&mut app, shanghai(c(10), 0)).await;
    balance -= FEE;
    expect(
        &mut app,
        carrier,
        &iccid,
        "renewed plan billed",
        Active,
        &[],
        balance,
    )
    .await;

    // Second expiry, 4 months after the renewal; nothing left to pay the retention fee with.
    set_clock(&mut app, shanghai(c(13), 0)).await;
    balance -= 3 * FEE;
    assert_eq!(balance, 0);
    // The renewed months run from the restore: at once (Telecom), 2 h later the same day (Mobile),
    // the next cycle start (Unicom).
    let restored_at = match carrier {
        pb::Carrier::ChinaTelecom => renewed_at,
        pb::Carrier::ChinaMobile => renewed_at + chrono::Duration::hours(2),
        _ => shanghai(c(10), 0),
    };
    let second_end = restored_at
        .with_timezone(&Shanghai)
        .checked_add_months(Months::new(4))
        .unwrap()
        .with_timezone(&Utc);
    set_clock(&mut app, second_end).await;
    balance -= 500;
    expect(
        &mut app,
        carrier,
        &iccid,
        "expired again",
        Retained,
        &[Expired, Arrears],
        balance,
    )
    .await;
    set_clock(
        &mut app,
        second_end
            .with_timezone(&Shanghai)
            .checked_add_months(Months::new(2))
            .unwrap()
            .with_timezone(&Utc),
    )
    .await;
    balance -= 2 * 500;
    expect(
        &mut app,
        carrier,
        &iccid,
        "retained, unpaid",
        Retained,
        &[Expired, Arrears],
        balance,
    )
    .await;

    // The window runs out: cancelled, for good.
    let cancel_at = second_end
        .with_timezone(&Shanghai)
        .checked_add_months(Months::new(3))
        .unwrap()
        .with_timezone(&Utc);
    set_clock(&mut app, cancel_at).await;
    expect(
        &mut app,
        carrier,
        &iccid,
        "cancelled",
        Cancelled,
        &[Expired, Arrears],
        balance,
    )
    .await;
    assert!(
        cancel_at - start_time() >= chrono::Duration::days(15 * 30),
        "15 months of life"
    );
    let err = app
        .cards
        .recharge(pb::RechargeRequest {
            iccid: iccid.clone(),
            amount_fen: 100,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), details(&err).0),
        (Code::FailedPrecondition, "CARD_CANCELLED".to_string())
    );

    // The history explains every fen.
    let mut events = Vec::new();
    let mut token = String::new();
    loop {
        let page = app
            .cards
            .list_card_events(pb::ListCardEventsRequest {
                iccid: iccid.clone(),
                page_size: 7,
                page_token: token,
            })
            .await
            .unwrap()
            .into_inner();
        events.extend(page.events);
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let moved: i64 = events.iter().map(|e| e.amount_fen).sum();
    assert_eq!(
        moved,
        balance - (first_fee + 2000),
        "{carrier:?}: events explain the balance"
    );
    assert!(events
        .windows(2)
        .all(|w| w[0].id < w[1].id && w[0].at.unwrap().seconds <= w[1].at.unwrap().seconds));
    let count = |kind: &str| events.iter().filter(|e| e.kind == kind).count();
    assert_eq!(
        count("card.monthly_fee_charged"),
        1 + 1 + 1 + 5 + 1 + 3,
        "{carrier:?}"
    );
    assert_eq!(count("card.retention_fee_charged"), 2 + 3, "{carrier:?}");
    assert_eq!(count("card.cancelled"), 1);
    assert_eq!(events.last().unwrap().kind, "card.cancelled");
    assert_eq!(events.last().unwrap().cause, "schedule");
}

#[tokio::test]
async fn a_china_mobile_card_lives_fifteen_months() {
    live_a_card(pb::Carrier::ChinaMobile).await;
}

#[tokio::test]
async fn a_china_unicom_card_lives_fifteen_months() {
    live_a_card(pb::Carrier::ChinaUnicom).await;
}

#[tokio::test]
async fn a_china_telecom_card_lives_fifteen_months() {
    live_a_card(pb::Carrier::ChinaTelecom).await;
}

#[tokio::test]
async fn the_clock_only_moves_forward_and_within_bounds() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let err = app
        .sim
        .set_clock(pb::SetClockRequest {
            to: Some(ts(start_time() - chrono::Duration::days(1))),
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), details(&err).0),
        (Code::FailedPrecondition, "CLOCK_CANNOT_GO_BACK".to_string())
    );
    for by in [
        None,
        Some(prost_types::Duration {
            seconds: -5,
            nanos: 0,
        }),
        Some(prost_types::Duration {
            seconds: 0,
            nanos: 0,
        }),
        Some(prost_types::Duration {
            seconds: 400 * 86_400 * 10,
            nanos: 0,
        }),
    ] {
        let err = app
            .sim
            .advance_clock(pb::AdvanceClockRequest { by })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec!["by".to_string()])
        );
    }
    let err = app
        .sim
        .set_clock(pb::SetClockRequest { to: None })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["to"]);
    let now = app
        .sim
        .get_clock(pb::GetClockRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        now.now.unwrap().seconds,
        start_time().timestamp(),
        "refused moves changed nothing"
    );
    let moved = app
        .sim
        .advance_clock(pb::AdvanceClockRequest {
            by: Some(prost_types::Duration {
                seconds: 3600,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(moved.now.unwrap().seconds, start_time().timestamp() + 3600);
}

#[tokio::test]
async fn advancing_the_clock_applies_every_due_card_before_returning() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let rows: Vec<_> = (0..2500)
        .map(|n| {
            let mut r = card_input(&unicom_iccid(n), pb::Carrier::ChinaUnicom);
            r.balance_fen = 1000;
            r
        })
        .collect();
    import(&mut app, rows).await;
    // Two days on is Unicom's cycle start (the 27th): every card is charged, 2,500 go into arrears.
    let resp = app
        .sim
        .advance_clock(pb::AdvanceClockRequest {
            by: Some(prost_types::Duration {
                seconds: 2 * 86_400,
                nanos: 0,
            }),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(resp.cards_changed, 2500);
    let arrears = app
        .cards
        .list_cards(pb::ListCardsRequest {
            page_size: 1000,
            stop_reason: pb::StopReason::Arrears as i32,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(arrears.cards.len(), 1000);
    assert!(!arrears.next_page_token.is_empty());
    assert!(arrears.cards.iter().all(|c| c.balance_fen == -200));
}

#[tokio::test]
async fn card_history_pages_and_refuses_bad_requests() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    for _ in 0..3 {
        app.cards
            .recharge(pb::RechargeRequest {
                iccid: MOBILE_ICCID.into(),
                amount_fen: 10,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let page = app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: MOBILE_ICCID.into(),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let kinds: Vec<_> = page.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(
        kinds,
        vec!["card.imported", "card.recharged", "card.recharged"]
    );
    assert_eq!(page.events[1].amount_fen, 10);
    assert_eq!(page.events[1].cause, "request");
    let rest = app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: MOBILE_ICCID.into(),
            page_size: 3,
            page_token: page.next_page_token.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rest.events.len(), 1);
    assert!(rest.next_page_token.is_empty());
    // A token is bound to its card.
    import(
        &mut app,
        vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
    )
    .await;
    let err = app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: UNICOM_ICCID.into(),
            page_size: 3,
            page_token: page.next_page_token,
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["page_token"]);
    let err = app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: telecom_iccid(5),
            page_size: 3,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let err = app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: MOBILE_ICCID.into(),
            page_size: -3,
            page_token: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["page_size"]);
}

#[tokio::test]
async fn months_missed_while_the_server_was_down_are_caught_up_on_start() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let mut row = card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom);
    row.balance_fen = 10_000;
    import(&mut app, vec![row]).await;
    let clock = app.clock.clone();
    let db = app.stop().await;
    // Down over three month ends.
    simgate::clock::Clock::set(
        &clock,
        shanghai(NaiveDate::from_ymd_opt(2027, 2, 15).unwrap(), 0),
    )
    .unwrap();
    let mut app = spawn_on(db, clock).await;
    let mut card = get(&mut app, TELECOM_ICCID).await;
    for _ in 0..200 {
        if card.balance_fen != 10_000 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        card = get(&mut app, TELECOM_ICCID).await;
    }
    assert_eq!(
        card.balance_fen,
        10_000 - 3 * FEE,
        "Dec, Jan and Feb charged once each, in order"
    );
    let events = app
        .store
        .card_events(&simgate::domain::Iccid::parse_any(TELECOM_ICCID).unwrap())
        .await
        .unwrap();
    let fees: Vec<_> = events
        .iter()
        .filter(|e| e.kind == "card.monthly_fee_charged")
        .map(|e| e.at)
        .collect();
    assert_eq!(
        fees,
        vec![
            shanghai(cycle(pb::Carrier::ChinaTelecom, 1), 0),
            shanghai(cycle(pb::Carrier::ChinaTelecom, 2), 0),
            shanghai(cycle(pb::Carrier::ChinaTelecom, 3), 0),
        ]
    );
}
