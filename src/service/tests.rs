//! The service layer against a mocked carrier: what happens to the store when the carrier
//! refuses, fails, or answers nothing.

use std::sync::Arc;

use chrono::Duration;

use super::*;
use crate::carrier::{CarrierCard, MockCarrier};
use crate::clock::ManualClock;
use crate::domain::rules::tests::{new_card, now};
use crate::domain::CarrierAction;
use crate::domain::{RealNameStatus, StopReason};
use crate::store::StoreOptions;

fn sys() -> Caller {
    Caller::system("test")
}

struct Fixture {
    service: CardService,
    store: Store,
    _dir: tempfile::TempDir,
}

async fn fixture(carrier: MockCarrier) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let service = CardService::new(
        store.clone(),
        Carriers::new().with(Arc::new(carrier)),
        Arc::new(ManualClock::new(now())),
    );
    Fixture {
        service,
        store,
        _dir: dir,
    }
}

/// A carrier mock that knows its id and policy; onboarding is left to the test.
fn bare_mock(id: CarrierId) -> MockCarrier {
    let mut m = MockCarrier::new();
    m.expect_id().return_const(id);
    m.expect_policy()
        .return_const(CarrierPolicy::default_for(id));
    m
}

fn mock(id: CarrierId) -> MockCarrier {
    let mut m = bare_mock(id);
    m.expect_onboard().returning(|_| Ok(()));
    m
}

async fn imported(f: &Fixture, row: NewCard) -> Card {
    let iccid = row.iccid.clone();
    f.service.import(vec![row], &sys(), None).await.unwrap();
    f.store.get_card(&iccid).await.unwrap().unwrap()
}

#[tokio::test]
async fn carrier_rejecting_the_stop_leaves_the_store_unchanged() {
    let mut m = mock(CarrierId::Mobile);
    m.expect_stop().times(1).returning(|_| {
        Err(CarrierError::Rejected {
            code: "12021".into(),
            message: "no".into(),
        })
    });
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let err = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Carrier {
            error: CarrierError::Rejected { .. },
            ..
        }
    ));
    assert_eq!(
        f.store.get_card(&before.iccid).await.unwrap().unwrap(),
        before
    );
}

#[tokio::test]
async fn transient_failure_of_the_restore_keeps_the_card_stopped_and_the_money_unmoved() {
    let mut m = mock(CarrierId::Mobile);
    // Every attempt fails: the request gives up after its retries.
    m.expect_restore()
        .times(CARRIER_ATTEMPTS as usize)
        .returning(|_| Err(CarrierError::Transient("connection refused".into())));
    // Whether or not a failed restore landed, the carrier is put back to the stored state.
    m.expect_stop().times(1).returning(|_| Ok(()));
    let f = fixture(m).await;
    let mut row = new_card(CarrierId::Mobile);
    row.balance = Fen(-100);
    let before = imported(&f, row).await;
    let err = f
        .service
        .recharge(&before.iccid, Fen(100), &sys(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::Carrier { .. }));
    let after = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert_eq!(
        after, before,
        "the balance must not move when the restore did not happen"
    );
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(
        (ops[0].action.as_str(), ops[0].status.as_str()),
        ("RESTORE", "FAILED")
    );
}

#[tokio::test]
async fn a_passing_carrier_failure_is_retried_and_journaled_as_applied() {
    let mut m = mock(CarrierId::Mobile);
    let mut seq = mockall::Sequence::new();
    m.expect_stop()
        .times(2)
        .in_sequence(&mut seq)
        .returning(|_| {
            Err(CarrierError::RateLimited {
                retry_after: Some(std::time::Duration::from_millis(5)),
            })
        });
    m.expect_stop()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(()));
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let card = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap();
    assert!(card.stop_reasons.contains(StopReason::Manual));
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!(
        (ops[0].action.as_str(), ops[0].status.as_str()),
        ("STOP", "APPLIED")
    );
}

#[tokio::test]
async fn an_interrupted_carrier_call_is_reconciled_to_the_stored_card() {
    let mut m = mock(CarrierId::Mobile);
    // The crashed process had stopped the card at the carrier but never stored the change:
    // the reconciler puts the carrier back to the stored (active) state.
    m.expect_restore().times(1).returning(|_| Ok(()));
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let op = f
        .store
        .journal_intent(
            &before.iccid,
            CarrierId::Mobile,
            CarrierAction::Stop,
            "crashed",
            0,
        )
        .await
        .unwrap();
    let n = f
        .service
        .reconcile_interrupted(chrono::Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(n, 1);
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!((ops[0].id, ops[0].status.as_str()), (op, "RECONCILED"));
    assert_eq!(
        f.service
            .reconcile_interrupted(chrono::Duration::seconds(60))
            .await
            .unwrap(),
        0
    );
}

#[tokio::test]
async fn an_unknown_outcome_counts_only_if_the_carrier_shows_the_change() {
    let card = |state| {
        move |iccid: &Iccid| {
            Ok(CarrierCard {
                iccid: iccid.clone(),
                state,
                cycle_usage_bytes: 0,
                changes: 0,
                last_session_at: None,
                usage_cycle_start: None,
            })
        }
    };
    let mut m = mock(CarrierId::Mobile);
    let mut seq = mockall::Sequence::new();
    m.expect_stop()
        .returning(|_| Err(CarrierError::OutcomeUnknown("timeout after send".into())));
    // After the first request gives up, the carrier is set back to the stored (active) state.
    m.expect_restore().times(1).returning(|_| Ok(()));
    // Every read after the first request's sends: the stop did not land.
    m.expect_card()
        .times(CARRIER_ATTEMPTS as usize)
        .in_sequence(&mut seq)
        .returning(card(ServiceState::Active));
    // The second request's read: it did.
    m.expect_card()
        .times(1)
        .in_sequence(&mut seq)
        .returning(card(ServiceState::Stopped));
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;

    let err = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::Carrier {
            error: CarrierError::OutcomeUnknown(_),
            ..
        }
    ));
    assert_eq!(
        f.store.get_card(&before.iccid).await.unwrap().unwrap(),
        before
    );

    let card = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap();
    assert!(card.stop_reasons.contains(StopReason::Manual));
}

#[tokio::test]
async fn no_carrier_call_when_the_cards_service_does_not_change() {
    let mut m = mock(CarrierId::Telecom);
    m.expect_stop().never();
    m.expect_restore().never();
    let f = fixture(m).await;
    let mut row = new_card(CarrierId::Telecom);
    row.real_name = RealNameStatus::Unverified;
    let card = imported(&f, row).await;
    let card2 = f.service.suspend(&card.iccid, &sys(), None).await.unwrap();
    assert!(card2.stop_reasons.contains(StopReason::Manual));
    let card3 = f.service.resume(&card.iccid, &sys(), None).await.unwrap();
    assert!(card3.stop_reasons.contains(StopReason::RealName));
    f.service.renew(&card.iccid, 2, &sys(), None).await.unwrap();
}

#[tokio::test]
async fn import_onboards_cards_with_the_state_derived_for_them() {
    let mut m = bare_mock(CarrierId::Unicom);
    m.expect_onboard()
        .times(1)
        .withf(|cards| {
            cards.len() == 2
                && cards[0].state == ServiceState::Active
                && cards[1].state == ServiceState::Stopped
        })
        .returning(|_| Ok(()));
    let f = fixture(m).await;
    let a = new_card(CarrierId::Unicom);
    let mut b = new_card(CarrierId::Unicom);
    b.iccid = crate::domain::Iccid::parse_any("89860117750006390075").unwrap();
    b.plan.validity_end = now() - Duration::days(1);
    let (n, _) = f.service.import(vec![a, b], &sys(), None).await.unwrap();
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_carrier_that_fails_onboarding_leaves_nothing_imported() {
    let mut m = bare_mock(CarrierId::Unicom);
    m.expect_onboard()
        .returning(|_| Err(CarrierError::Transient("down".into())));
    let f = fixture(m).await;
    assert!(f
        .service
        .import(vec![new_card(CarrierId::Unicom)], &sys(), None)
        .await
        .is_err());
    assert_eq!(f.store.count_cards().await.unwrap(), 0);
}

#[tokio::test]
async fn a_card_of_an_unconfigured_carrier_is_refused() {
    let f = fixture(mock(CarrierId::Mobile)).await;
    let err = f
        .service
        .import(vec![new_card(CarrierId::Telecom)], &sys(), None)
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        ServiceError::CarrierNotConfigured(CarrierId::Telecom)
    ));
}
