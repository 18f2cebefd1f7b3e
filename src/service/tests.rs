//! The service layer against a mocked carrier: what happens to the store when the carrier
//! refuses, fails, or answers nothing.

use std::sync::Arc;

use chrono::Duration;

use super::journal::CARRIER_ATTEMPTS;
use super::*;
use crate::carrier::{CarrierCard, CarrierError, MockCarrier, ServiceState};
use crate::clock::ManualClock;
use crate::domain::event;
use crate::domain::rules::tests::{new_card, now};
use crate::domain::rules::{self, NewCard};
use crate::domain::CarrierAction;
use crate::domain::{Card, Fen, Iccid, RuleViolation, Transition};
use crate::domain::{RealNameStatus, StopReason};
use crate::store::StoreError;
use crate::store::StoreOptions;

fn sys() -> Caller {
    Caller::system("test")
}

struct Fixture {
    service: CardService,
    store: Store,
    /// The journal's wall clock (leases), moved by hand.
    ops: ManualClock,
    _dir: tempfile::TempDir,
}

async fn fixture(carrier: MockCarrier) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let ops = ManualClock::new(now());
    let service = CardService::new(
        store.clone(),
        Carriers::new().with(Arc::new(carrier)),
        Arc::new(ManualClock::new(now())),
    )
    .with_ops_clock(Arc::new(ops.clone()));
    Fixture {
        service,
        store,
        ops,
        _dir: dir,
    }
}

/// A carrier mock that knows its id and policy; onboarding is left to the test.
fn bare_mock(id: CarrierId) -> MockCarrier {
    shaped_mock(id, 1, false)
}

/// [`bare_mock`] with a batch change call of up to `batch` cards (1: none), and a list of
/// modified cards when `lists`.
fn shaped_mock(id: CarrierId, batch: usize, lists: bool) -> MockCarrier {
    let mut m = MockCarrier::new();
    m.expect_batch_change_limit().return_const(batch);
    m.expect_lists_changes().return_const(lists);
    m.expect_id().return_const(id);
    m.expect_account()
        .return_const(crate::domain::AccountId::default_for(id));
    m.expect_spends_budget().return_const(false);
    m.expect_addresses_by_msisdn().return_const(false);
    m.expect_policy()
        .return_const(CarrierPolicy::default_for(id));
    platform_defaults(&mut m);
    m
}

/// What a platform without order queries, stop reasons or binding calls answers (the trait's
/// defaults), for the calls a mock's test does not set itself.
fn platform_defaults(m: &mut MockCarrier) {
    m.expect_queries_orders().return_const(false);
    m.expect_rebind_modes().returning(Vec::new);
    m.expect_stop_reasons().returning(|_| Ok(None));
    m.expect_binding().returning(|_| Ok(None));
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
    // "Unavailable" means nothing was applied: there is nothing to put back.
    m.expect_stop().never();
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
        ("RESTORE", "ABANDONED")
    );
    assert_eq!(after.pending, None);
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
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
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

fn at_carrier(state: ServiceState) -> impl Fn(&Iccid) -> Result<CarrierCard, CarrierError> {
    move |iccid: &Iccid| {
        Ok(CarrierCard {
            iccid: iccid.clone(),
            state,
            cycle_usage_bytes: 0,
            changes: 0,
            unknown: None,
            last_session: crate::carrier::LastSession::Never,
            usage_cycle_start: None,
        })
    }
}

/// Opens a stop intent for `planned` as process `owner` would, holding it until `lease_until_ms`,
/// and marks it sent, as that process does right before its carrier call.
async fn open_stop(
    f: &Fixture,
    carrier: CarrierId,
    planned: &Transition,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<i64, StoreError> {
    let op = open_unsent_stop(f, carrier, planned, owner, now_ms, lease_until_ms).await?;
    assert!(f.store.mark_intent_sent(op, owner, now_ms).await?);
    Ok(op)
}

/// Opens a stop intent as a process would that dies before it calls the carrier.
async fn open_unsent_stop(
    f: &Fixture,
    carrier: CarrierId,
    planned: &Transition,
    owner: &str,
    now_ms: i64,
    lease_until_ms: i64,
) -> Result<i64, StoreError> {
    f.store
        .open_intent(
            &crate::store::NewIntent {
                carrier,
                account: &crate::domain::AccountId::default_for(carrier),
                action: CarrierAction::Stop,
                source: "SuspendCard:elsewhere",
                key_id: "k",
                request_id: "",
                owner,
                now_ms,
                lease_until_ms,
                not_before_ms: None,
                params: "",
                sent_ms: None,
            },
            &crate::store::IntentPlan {
                card: &planned.card,
                events: &planned.events,
                audit: None,
                answer: None,
                usage_bytes: 0,
            },
        )
        .await
}

fn idem_for<'a>(
    request_id: &str,
    respond: &'a (dyn Fn(&(Card, Card)) -> Vec<u8> + Send + Sync),
) -> Idem<'a, (Card, Card)> {
    Idem {
        request_id: request_id.into(),
        fingerprint: "fp".into(),
        respond,
    }
}

#[tokio::test]
async fn an_unknown_outcome_is_pending_never_failed_and_settles_forward_from_the_carrier() {
    let mut m = mock(CarrierId::Unicom);
    let mut reads = mockall::Sequence::new();
    // Applied, answer lost; then the carrier cannot be read at all.
    m.expect_stop()
        .times(1)
        .returning(|_| Err(CarrierError::OutcomeUnknown("timeout after send".into())));
    m.expect_card()
        .times(1)
        .in_sequence(&mut reads)
        .returning(|_| Err(CarrierError::CircuitOpen("circuit open".into())));
    // The settler's first pass: still down (each of its quick retries too); its next: the stop
    // is there.
    m.expect_card()
        .times(CARRIER_ATTEMPTS as usize)
        .in_sequence(&mut reads)
        .returning(|_| Err(CarrierError::Transient("down".into())));
    m.expect_card()
        .times(1)
        .in_sequence(&mut reads)
        .returning(at_carrier(ServiceState::Stopped));
    // Nothing ever sets the carrier back.
    m.expect_restore().never();
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Unicom)).await;
    let respond = |(_, after): &(Card, Card)| after.version.to_le_bytes().to_vec();
    let caller = Caller {
        request_id: "r-1".into(),
        ..sys()
    };

    let err = f
        .service
        .suspend(&before.iccid, &caller, Some(&idem_for("r-1", &respond)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            ServiceError::OutcomePending {
                action: CarrierAction::Stop,
                ..
            }
        ),
        "{err}"
    );
    let pending = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert_eq!(
        pending.pending.as_ref().map(|p| p.action),
        Some(CarrierAction::Stop)
    );
    assert_eq!(pending.stop_reasons, before.stop_reasons, "not settled yet");
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!(ops[0].status, "OPEN");

    // The same request again: still pending. Any other change: CHANGE_PENDING, nothing moves.
    let again = f
        .service
        .suspend(&before.iccid, &caller, Some(&idem_for("r-1", &respond)))
        .await
        .unwrap_err();
    assert!(
        matches!(again, ServiceError::OutcomePending { .. }),
        "{again}"
    );
    let other = f
        .service
        .recharge(&before.iccid, Fen(500), &sys(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(
            other,
            ServiceError::Rule(RuleViolation::ChangePending(CarrierAction::Stop))
        ),
        "{other}"
    );
    assert!(other.to_string().contains("stop"), "{other}");
    assert_eq!(
        f.store
            .get_card(&before.iccid)
            .await
            .unwrap()
            .unwrap()
            .balance,
        before.balance
    );

    // The settler: the carrier is down (left open, backed off), then shows the stop.
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 0);
    assert_eq!(
        f.service.settle_open_intents().await.unwrap(),
        0,
        "backed off: not read again at once"
    );
    f.ops.advance(Duration::seconds(2)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 1);
    let after = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert!(after.stop_reasons.contains(StopReason::Manual));
    assert_eq!(
        (after.pending.clone(), after.version),
        (None, before.version + 1)
    );
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!((ops.len(), ops[0].status.as_str()), (1, "APPLIED"));
    // The request's answer is the settled outcome, and the history has the stop once.
    let answer = f
        .service
        .replay(&caller, "r-1", "fp")
        .await
        .unwrap()
        .expect("answer stored when settled");
    assert_eq!(answer, after.version.to_le_bytes().to_vec());
    assert_eq!(
        f.store.count_events(event::card::SUSPENDED).await.unwrap(),
        1
    );
}

#[tokio::test]
async fn a_pending_change_the_carrier_shows_not_applied_is_abandoned_and_can_be_made_again() {
    let mut m = mock(CarrierId::Mobile);
    let mut seq = mockall::Sequence::new();
    m.expect_stop()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(CarrierError::OutcomeUnknown("timeout".into())));
    m.expect_card()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Err(CarrierError::Transient("down".into())));
    // The settler reads the card: still active, the stop never landed.
    m.expect_card()
        .times(1)
        .in_sequence(&mut seq)
        .returning(at_carrier(ServiceState::Active));
    // A new request then stops it for real.
    m.expect_stop()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let err = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap_err();
    assert!(matches!(err, ServiceError::OutcomePending { .. }), "{err}");
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 1);
    let card = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert_eq!(card, before, "abandoned: the card is as it was");
    let card = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap();
    assert!(card.stop_reasons.contains(StopReason::Manual));
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    let statuses: Vec<&str> = ops.iter().map(|o| o.status.as_str()).collect();
    assert_eq!(statuses, ["ABANDONED", "APPLIED"]);
}

#[tokio::test]
async fn an_intent_is_owned_by_a_lease_not_by_its_age() {
    let mut m = mock(CarrierId::Telecom);
    // Only once the dead owner's lease ran out is the card read, and the stop it shows is
    // rolled forward; nothing is ever sent to undo it.
    m.expect_card()
        .times(1)
        .returning(at_carrier(ServiceState::Stopped));
    m.expect_stop().never();
    m.expect_restore().never();
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Telecom)).await;
    let planned = rules::suspend(&before, now()).unwrap();
    let start = f.ops.now().timestamp_millis();
    // Another process opened the intent and is calling the carrier; its lease runs 15 s.
    let op = open_stop(
        &f,
        CarrierId::Telecom,
        &planned,
        "another-process",
        start,
        start + 15_000,
    )
    .await
    .unwrap();
    // At most one open intent per card: a second one is refused by the store.
    let second = open_stop(
        &f,
        CarrierId::Telecom,
        &planned,
        "this-process",
        start,
        start + 15_000,
    )
    .await;
    assert!(matches!(second, Err(StoreError::Conflict)), "{second:?}");
    // However old, an intent whose owner still holds it is left alone.
    f.ops.advance(Duration::seconds(14)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 0);
    // Its owner died: once the lease has run out it is settled forward.
    f.ops.advance(Duration::seconds(2)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 1);
    let after = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert!(after.stop_reasons.contains(StopReason::Manual));
    assert_eq!(after.pending, None);
    assert_eq!(
        f.store.carrier_op(op).await.unwrap().unwrap().status,
        "APPLIED"
    );
    // Hours later nothing is left to do, and nothing was undone.
    f.ops.advance(Duration::hours(3)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 0);
}

#[tokio::test]
async fn writes_other_than_the_journals_are_refused_while_a_change_is_pending() {
    let f = fixture(mock(CarrierId::Mobile)).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let planned = rules::suspend(&before, now()).unwrap();
    open_stop(&f, CarrierId::Mobile, &planned, "someone", 0, i64::MAX)
        .await
        .unwrap();
    // A writer that read the card before the intent (same version) still loses.
    let mut stale = before.clone();
    stale.balance = Fen(999);
    assert!(matches!(
        f.store.update_card(&stale, &[], None, None, 0).await,
        Err(StoreError::Conflict)
    ));
    let batch = f
        .store
        .update_cards(&[(stale.clone(), Vec::new(), 0)])
        .await
        .unwrap();
    assert_eq!(batch, [false]);
    assert!(f
        .store
        .claim_due("engine", now() + Duration::days(9999), 0, 1, 10)
        .await
        .unwrap()
        .is_empty());
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
                unknown: None,
                last_session: crate::carrier::LastSession::Never,
                usage_cycle_start: None,
            })
        }
    };
    let mut m = mock(CarrierId::Mobile);
    let mut seq = mockall::Sequence::new();
    m.expect_stop()
        .returning(|_| Err(CarrierError::OutcomeUnknown("timeout after send".into())));
    // The carrier showed every time that the stop did not land: nothing to put back.
    m.expect_restore().never();
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

/// A mock of one carrier account.
fn account_mock(id: CarrierId, account: &str) -> MockCarrier {
    let mut m = MockCarrier::new();
    m.expect_id().return_const(id);
    m.expect_account()
        .return_const(crate::domain::AccountId::parse(account).unwrap());
    m.expect_spends_budget().return_const(false);
    m.expect_addresses_by_msisdn().return_const(false);
    m.expect_policy()
        .return_const(CarrierPolicy::default_for(id));
    platform_defaults(&mut m);
    m.expect_batch_change_limit().return_const(1usize);
    m.expect_lists_changes().return_const(false);
    m
}

#[tokio::test]
async fn an_account_that_names_cards_by_access_number_gets_each_msisdn_once_at_import() {
    let mut m = MockCarrier::new();
    m.expect_id().return_const(CarrierId::Telecom);
    m.expect_account()
        .return_const(crate::domain::AccountId::default_for(CarrierId::Telecom));
    m.expect_spends_budget().return_const(false);
    m.expect_addresses_by_msisdn().return_const(true);
    m.expect_policy()
        .return_const(CarrierPolicy::default_for(CarrierId::Telecom));
    platform_defaults(&mut m);
    m.expect_batch_change_limit().return_const(1usize);
    m.expect_lists_changes().return_const(false);
    m.expect_onboard().returning(|_| Ok(()));
    // Asked once, for the card imported without one; the other card's is taken as given.
    m.expect_msisdn_of()
        .times(1)
        .returning(|_| Ok(Some("14914000000".into())));
    let f = fixture(m).await;
    let looked_up = imported(&f, new_card(CarrierId::Telecom)).await;
    assert_eq!(
        looked_up.msisdn.map(|m| m.as_str().to_string()),
        Some("14914000000".into())
    );
    let mut given = new_card(CarrierId::Telecom);
    given.iccid = Iccid::parse_any("89860316302002308210").unwrap();
    given.msisdn = Some(crate::domain::Msisdn::parse("14914000001").unwrap());
    let kept = imported(&f, given).await;
    assert_eq!(
        kept.msisdn.map(|m| m.as_str().to_string()),
        Some("14914000001".into())
    );
}

#[tokio::test]
async fn import_needs_the_account_when_a_carrier_has_several_and_checks_the_one_named() {
    let mut gd = account_mock(CarrierId::Mobile, "gd");
    // Only the named account hears of its card.
    gd.expect_onboard().times(1).returning(|_| Ok(()));
    let mut js = account_mock(CarrierId::Mobile, "js");
    js.expect_onboard().never();
    let cc = account_mock(CarrierId::Unicom, "cc");
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let clock = Arc::new(ManualClock::new(now()));
    let carriers = Carriers::new()
        .with(Arc::new(gd))
        .with(Arc::new(js))
        .with(Arc::new(cc));
    let service = CardService::new(store.clone(), carriers, clock);
    let field_of = |e: ServiceError| match e {
        ServiceError::InvalidArgument(v) => v[0].field.clone(),
        other => panic!("not a field error: {other:?}"),
    };
    // Two China Mobile accounts: which one must be said.
    let err = service
        .import(vec![new_card(CarrierId::Mobile)], &sys(), None)
        .await
        .unwrap_err();
    assert_eq!(field_of(err), "cards[0].account_id");
    // An account of another carrier, and one that does not exist, are refused the same way.
    for account in ["cc", "nope"] {
        let mut row = new_card(CarrierId::Mobile);
        row.account = Some(crate::domain::AccountId::parse(account).unwrap());
        let err = service.import(vec![row], &sys(), None).await.unwrap_err();
        assert_eq!(field_of(err), "cards[0].account_id", "{account}");
    }
    assert_eq!(store.count_cards().await.unwrap(), 0);
    // Named: stored on that account.
    let mut row = new_card(CarrierId::Mobile);
    row.account = Some(crate::domain::AccountId::parse("gd").unwrap());
    let iccid = row.iccid.clone();
    service.import(vec![row], &sys(), None).await.unwrap();
    let card = store.get_card(&iccid).await.unwrap().unwrap();
    assert_eq!(card.account.as_str(), "gd");
}

#[tokio::test]
async fn a_renewed_lease_keeps_an_intent_from_other_settlers() {
    let f = fixture(mock(CarrierId::Mobile)).await;
    let before = imported(&f, new_card(CarrierId::Mobile)).await;
    let planned = rules::suspend(&before, now()).unwrap();
    let op = open_stop(&f, CarrierId::Mobile, &planned, "alive", 0, 15_000)
        .await
        .unwrap();
    // Renewing only what it names: an id it does not hold changes nothing.
    assert_eq!(
        f.store
            .renew_intent_leases("alive", &[op + 1], 100_000)
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        f.store
            .renew_intent_leases("alive", &[op], 100_000)
            .await
            .unwrap(),
        1
    );
    let claimed = f
        .store
        .claim_open_intents("other", 50_000, 50_000, 80_000, 10, i64::MAX)
        .await
        .unwrap();
    assert!(claimed.is_empty(), "still held: {claimed:?}");
    let claimed = f
        .store
        .claim_open_intents("other", 100_001, 100_001, 200_000, 10, i64::MAX)
        .await
        .unwrap();
    assert_eq!(claimed.iter().map(|o| o.id).collect::<Vec<_>>(), [op]);
}

/// A carrier whose changes never answer (the call hangs) and whose reads show the card stopped.
/// `calling` is raised once a change reaches it, so a test knows the call is in flight.
struct Hanging(CarrierPolicy, Arc<tokio::sync::Notify>);

#[async_trait::async_trait]
impl Carrier for Hanging {
    fn id(&self) -> CarrierId {
        self.0.carrier
    }
    fn policy(&self) -> &CarrierPolicy {
        &self.0
    }
    async fn onboard(&self, _: &[crate::carrier::OnboardCard]) -> Result<(), CarrierError> {
        Ok(())
    }
    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        at_carrier(ServiceState::Stopped)(iccid)
    }
    async fn stop(&self, _: &Iccid) -> Result<crate::carrier::Receipt, CarrierError> {
        self.1.notify_one();
        std::future::pending().await
    }
    async fn restore(&self, _: &Iccid) -> Result<crate::carrier::Receipt, CarrierError> {
        self.1.notify_one();
        std::future::pending().await
    }
    async fn cancel(&self, _: &Iccid) -> Result<crate::carrier::Receipt, CarrierError> {
        self.1.notify_one();
        std::future::pending().await
    }
}

#[tokio::test]
async fn a_dropped_call_gives_up_its_hold_and_its_intent_is_settled_after_the_lease() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("t.db").display());
    let store = Store::connect(&url, StoreOptions::default()).await.unwrap();
    let ops = ManualClock::new(now());
    let calling = Arc::new(tokio::sync::Notify::new());
    let service = CardService::new(
        store.clone(),
        Carriers::new().with(Arc::new(Hanging(
            CarrierPolicy::default_for(CarrierId::Mobile),
            calling.clone(),
        ))),
        Arc::new(ManualClock::new(now())),
    )
    .with_ops_clock(Arc::new(ops.clone()));
    let row = new_card(CarrierId::Mobile);
    let iccid = row.iccid.clone();
    service.import(vec![row], &sys(), None).await.unwrap();
    let call = {
        let (service, iccid) = (service.clone(), iccid.clone());
        tokio::spawn(async move { service.suspend(&iccid, &sys(), None).await })
    };
    // The intent is committed before the call takes its hold, so wait for the carrier call
    // itself: by then the hold is taken (waiting on the intent alone raced the hold).
    calling.notified().await;
    assert!(store.open_intent_of(&iccid).await.unwrap().is_some());
    assert_eq!(
        service.renew_leases().await.unwrap(),
        1,
        "held while calling"
    );
    // The client goes away: tonic drops the call's future.
    call.abort();
    let _ = call.await;
    assert_eq!(service.renew_leases().await.unwrap(), 0, "no longer held");
    assert_eq!(
        service.settle_open_intents().await.unwrap(),
        0,
        "lease still runs"
    );
    ops.advance(Duration::seconds(16)).unwrap();
    assert_eq!(service.settle_open_intents().await.unwrap(), 1);
    let card = store.get_card(&iccid).await.unwrap().unwrap();
    assert!(card.stop_reasons.contains(StopReason::Manual));
    assert_eq!(card.pending, None);
}

/// A try that a crash cut short (the worker took the item, then died) still counts: the item
/// redone after the restart reports two attempts, not one.
#[tokio::test]
async fn a_batch_item_redone_after_a_crash_counts_both_attempts() {
    let mut m = mock(CarrierId::Mobile);
    m.expect_stop()
        .times(1)
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
    let f = fixture(m).await;
    let card = imported(&f, new_card(CarrierId::Mobile)).await;
    let batches = batch::BatchService::new(f.service.clone(), f.store.clone())
        .with_clock(Arc::new(f.ops.clone()));
    let b = batches
        .create(
            &sys(),
            batch::Kind::Suspend,
            vec![card.iccid.to_string()],
            Fen(0),
            None,
        )
        .await
        .unwrap();
    // The first worker takes the item and dies before recording anything.
    let (items, _) = f
        .store
        .due_items(f.ops.now().timestamp_millis(), 64)
        .await
        .unwrap();
    assert_eq!(items.len(), 1);
    // Its claim lasts a journal lease; the clock moves past it.
    let now_ms = f.ops.now().timestamp_millis();
    let claim = || f.store.claim_items(&items, now_ms, now_ms + 15_000);
    assert_eq!(claim().await.unwrap().len(), 1);
    assert!(
        claim().await.unwrap().is_empty(),
        "a claimed item is not claimed twice"
    );
    f.ops.advance(chrono::Duration::seconds(16)).unwrap();
    // The next worker redoes it.
    assert_eq!(batches.run_once().await.unwrap(), 1);
    let items = f.store.batch_items(&b.id, None, -1, 10).await.unwrap();
    assert_eq!(
        (items[0].status.as_str(), items[0].attempts),
        ("DONE", 2),
        "the cut-short try and the one that finished"
    );
}

/// Naming a card the caller cannot see refuses the whole batch before anything is stored.
#[tokio::test]
async fn a_batch_naming_unknown_cards_is_refused_whole_and_stores_nothing() {
    let f = fixture(mock(CarrierId::Mobile)).await;
    let card = imported(&f, new_card(CarrierId::Mobile)).await;
    let batches = batch::BatchService::new(f.service.clone(), f.store.clone());
    let mut iccids = vec![card.iccid.to_string()];
    iccids.extend((0..8).map(|i| format!("8986000000000000000{i}")));
    let err = batches
        .create(&sys(), batch::Kind::Suspend, iccids, Fen(0), None)
        .await
        .unwrap_err();
    match err {
        ServiceError::CardsNotFound { first, total } => {
            assert_eq!(total, 8);
            assert_eq!(first.len(), 5, "the first few are named");
            assert_eq!(first[0], "89860000000000000000");
        }
        other => panic!("expected CardsNotFound, got {other:?}"),
    }
    assert!(f
        .store
        .list_batches(None, None, 10)
        .await
        .unwrap()
        .is_empty());
}

/// A reading the carrier answered but simgate could not read ("unknown at carrier").
fn unreadable_at_carrier(
    state: ServiceState,
    bytes: u64,
) -> impl Fn(&Iccid) -> Result<CarrierCard, CarrierError> {
    move |iccid: &Iccid| {
        Ok(CarrierCard {
            iccid: iccid.clone(),
            state,
            cycle_usage_bytes: bytes,
            changes: 0,
            unknown: Some("ctdUsages: status \"SUSPENDED\" is not one of the eight".into()),
            last_session: crate::carrier::LastSession::Unknown,
            usage_cycle_start: None,
        })
    }
}

#[tokio::test]
async fn a_card_unknown_at_carrier_is_marked_applies_nothing_and_is_cleared_by_a_read() {
    let mut m = mock(CarrierId::Unicom);
    m.expect_batch_limit().return_const(1usize);
    // The diagnosis does not ask again for a session the adapter reads with card().
    m.expect_reads_session_apart().return_const(false);
    m.expect_last_session().never();
    let mut seq = mockall::Sequence::new();
    let odd = unreadable_at_carrier(ServiceState::Stopped, 999_999_999_999);
    m.expect_cards()
        .times(1)
        .in_sequence(&mut seq)
        .returning(move |ids| ids.iter().map(&odd).collect());
    // The diagnosis and the usage report read the same.
    m.expect_card()
        .times(2)
        .in_sequence(&mut seq)
        .returning(unreadable_at_carrier(
            ServiceState::Stopped,
            999_999_999_999,
        ));
    m.expect_cards()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|ids| {
            ids.iter()
                .map(|i| {
                    at_carrier(ServiceState::Active)(i).map(|c| CarrierCard {
                        cycle_usage_bytes: 5,
                        ..c
                    })
                })
                .collect()
        });
    m.expect_stop().never();
    m.expect_restore().never();
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Unicom)).await;

    f.service.sync_all_usage().await.unwrap();
    let marked = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    let why = marked
        .carrier_unknown
        .clone()
        .expect("marked unknown at carrier");
    assert!(why.contains("SUSPENDED"), "{why}");
    // Neither the state (no drift, no stop) nor the usage of that answer was applied.
    assert_eq!(marked.drift, None);
    assert_eq!(marked.cycle_usage_bytes, before.cycle_usage_bytes);
    assert_eq!(marked.stop_reasons, before.stop_reasons);

    let (d, _) = f
        .service
        .diagnose(&before.iccid, crate::domain::diagnosis::Lang::En, &sys())
        .await
        .unwrap();
    let codes: Vec<&str> = d.findings.iter().map(|f| f.code).collect();
    assert!(codes.contains(&"CARRIER_STATE_UNKNOWN"), "{codes:?}");
    assert!(!codes.contains(&"CARRIER_STATE_DIFFERS"), "{codes:?}");
    let unknown = d
        .findings
        .iter()
        .find(|f| f.code == "CARRIER_STATE_UNKNOWN")
        .unwrap();
    assert!(unknown.message.contains("SUSPENDED"), "{}", unknown.message);
    assert!(unknown
        .steps
        .iter()
        .any(|s| s.action == crate::domain::diagnosis::Action::ContactCarrier));

    // The usage report has no usage to give: unavailable, not 0 or the unread number.
    match f.service.usage(&before.iccid, &sys()).await {
        Err(ServiceError::Carrier {
            error: CarrierError::Transient(m),
            ..
        }) => assert!(m.contains("unknown at carrier"), "{m}"),
        other => panic!("expected unavailable, got {other:?}"),
    }

    // A later read that can be read clears the mark and applies.
    f.service.sync_all_usage().await.unwrap();
    let cleared = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert_eq!(cleared.carrier_unknown, None);
    assert_eq!(cleared.cycle_usage_bytes, 5);
}

#[tokio::test]
async fn a_settling_read_unknown_at_carrier_settles_nothing() {
    let mut m = mock(CarrierId::Unicom);
    let mut reads = mockall::Sequence::new();
    m.expect_stop()
        .times(1)
        .returning(|_| Err(CarrierError::OutcomeUnknown("timeout after send".into())));
    // The read right after the send, and the settler's first pass: an answer simgate cannot
    // read, which must neither confirm the stop nor call it "not applied".
    m.expect_card()
        .times(2)
        .in_sequence(&mut reads)
        .returning(unreadable_at_carrier(ServiceState::Stopped, 0));
    m.expect_card()
        .times(1)
        .in_sequence(&mut reads)
        .returning(at_carrier(ServiceState::Stopped));
    m.expect_restore().never();
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Unicom)).await;
    let err = f
        .service
        .suspend(&before.iccid, &sys(), None)
        .await
        .unwrap_err();
    assert!(
        matches!(err, ServiceError::OutcomePending { .. }),
        "never a resend or a guess: {err}"
    );
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 0);
    let ops = f.store.card_ops(&before.iccid).await.unwrap();
    assert_eq!(ops[0].status, "OPEN");
    f.ops.advance(Duration::seconds(2)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 1);
    let after = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert!(after.stop_reasons.contains(StopReason::Manual));
}

#[tokio::test]
async fn an_intent_whose_process_died_before_sending_it_is_sent_by_the_settler() {
    let mut m = mock(CarrierId::Telecom);
    // Never sent by the dead process, so nothing to read back: the settler sends it once.
    m.expect_card().never();
    m.expect_stop().times(1).returning(|_| {
        Ok(crate::carrier::Receipt::applied_as(
            "1000000190202004162026784683",
        ))
    });
    let f = fixture(m).await;
    let before = imported(&f, new_card(CarrierId::Telecom)).await;
    let planned = rules::suspend(&before, now()).unwrap();
    let start = f.ops.now().timestamp_millis();
    let op = open_unsent_stop(
        &f,
        CarrierId::Telecom,
        &planned,
        "died-before-sending",
        start,
        start + 15_000,
    )
    .await
    .unwrap();
    let pending = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert_eq!(
        pending.pending.as_ref().map(|p| p.state()),
        Some(crate::domain::OrderState::Scheduled)
    );
    f.ops.advance(Duration::seconds(16)).unwrap();
    assert_eq!(f.service.settle_open_intents().await.unwrap(), 1);
    let row = f.store.carrier_op(op).await.unwrap().unwrap();
    assert_eq!(row.status, "APPLIED");
    assert_eq!(row.settled_by, "ANSWER");
    assert_eq!(row.order_id, "1000000190202004162026784683");
    assert!(row.sent_ms.is_some());
    let after = f.store.get_card(&before.iccid).await.unwrap().unwrap();
    assert!(after.stop_reasons.contains(StopReason::Manual));
    assert_eq!(after.pending, None);
}

/// `n` Mobile cards, imported.
async fn imported_cards(f: &Fixture, n: usize) -> Vec<Iccid> {
    let mut out = Vec::new();
    for i in 0..n {
        let iccid = Iccid::from_trusted(format!("8986040000000000{i:04}"));
        let row = NewCard {
            iccid: iccid.clone(),
            ..new_card(CarrierId::Mobile)
        };
        imported(f, row).await;
        out.push(iccid);
    }
    out
}

/// A Mobile account mock with a batch change call of up to 100 cards.
fn batch_mock() -> MockCarrier {
    let mut m = shaped_mock(CarrierId::Mobile, 100, false);
    m.expect_onboard().returning(|_| Ok(()));
    m
}

/// Runs a bulk suspend of `cards` to the end: the worker gathers the changes, the settler
/// sends and settles them, the worker sees them done.
async fn bulk_suspend(f: &Fixture, cards: &[Iccid]) -> Vec<crate::store::BatchItem> {
    let batches = batch::BatchService::new(f.service.clone(), f.store.clone())
        .with_clock(Arc::new(f.ops.clone()));
    let b = batches
        .create(
            &sys(),
            batch::Kind::Suspend,
            cards.iter().map(|c| c.to_string()).collect(),
            Fen(0),
            None,
        )
        .await
        .unwrap();
    for _ in 0..6 {
        batches.run_once().await.unwrap();
        f.service.settle_open_intents_now().await.unwrap();
        f.ops.advance(Duration::seconds(30)).unwrap();
    }
    f.store.batch_items(&b.id, None, -1, 1000).await.unwrap()
}

#[tokio::test]
async fn a_bulk_suspend_goes_out_in_one_batch_call_settled_through_its_job() {
    let mut m = batch_mock();
    m.expect_stop().never();
    m.expect_change_batch()
        .times(1)
        .withf(|ids, change| ids.len() == 5 && *change == crate::carrier::Change::Stop)
        .returning(|_, _| {
            Ok(crate::carrier::BatchReceipt {
                job_id: "J1".into(),
            })
        });
    m.expect_batch_job()
        .times(1)
        .withf(|job, ids| job == "J1" && ids.len() == 5)
        .returning(|_, ids| {
            Ok(crate::carrier::BatchJob {
                finished: true,
                status: "2".into(),
                items: ids
                    .iter()
                    .map(|i| (i.clone(), crate::carrier::BatchItem::Applied))
                    .collect(),
            })
        });
    let f = fixture(m).await;
    let cards = imported_cards(&f, 5).await;
    let items = bulk_suspend(&f, &cards).await;
    assert!(items.iter().all(|i| i.status == "DONE"), "{items:?}");
    for c in &cards {
        let card = f.store.get_card(c).await.unwrap().unwrap();
        assert!(card.pending.is_none());
        assert!(!card.is_online(), "{c} suspended");
    }
    let ops = f.store.card_ops(&cards[0]).await.unwrap();
    assert_eq!(ops[0].job_id, "J1");
    assert_eq!(ops[0].status, "APPLIED");
    assert_eq!(ops[0].settled_by, "ORDER_QUERY");
}

#[tokio::test]
async fn a_refused_batch_falls_back_to_single_changes_for_its_cards() {
    let mut m = batch_mock();
    m.expect_change_batch().times(1).returning(|_, _| {
        Err(CarrierError::Deferred {
            code: "12345".into(),
            message: "批量办理中有卡号在30分钟内有成功调用".into(),
            retry_after: None,
        })
    });
    m.expect_batch_job().never();
    m.expect_stop()
        .times(3)
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
    let f = fixture(m).await;
    let cards = imported_cards(&f, 3).await;
    let items = bulk_suspend(&f, &cards).await;
    assert!(items.iter().all(|i| i.status == "DONE"), "{items:?}");
    for c in &cards {
        assert!(!f.store.get_card(c).await.unwrap().unwrap().is_online());
    }
}

#[tokio::test]
async fn a_card_its_batch_job_failed_is_read_then_changed_on_its_own() {
    let mut m = batch_mock();
    m.expect_change_batch().times(1).returning(|_, _| {
        Ok(crate::carrier::BatchReceipt {
            job_id: "J2".into(),
        })
    });
    m.expect_batch_job().times(1).returning(|_, ids| {
        // The second card imported (the items come in the order the worker opened them).
        let items: Vec<_> = ids
            .iter()
            .map(|i| {
                let item = if i.as_str() == "89860400000000000001" {
                    crate::carrier::BatchItem::Failed {
                        code: "1".into(),
                        message: "failed in the job".into(),
                    }
                } else {
                    crate::carrier::BatchItem::Applied
                };
                (i.clone(), item)
            })
            .collect();
        Ok(crate::carrier::BatchJob {
            finished: true,
            status: "3".into(),
            items,
        })
    });
    // The failed card reads active, so it is stopped on its own, once.
    m.expect_card()
        .times(1)
        .returning(at_carrier(ServiceState::Active));
    m.expect_stop()
        .times(1)
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
    let f = fixture(m).await;
    let cards = imported_cards(&f, 3).await;
    let items = bulk_suspend(&f, &cards).await;
    assert!(items.iter().all(|i| i.status == "DONE"), "{items:?}");
    assert_eq!(cards[1].as_str(), "89860400000000000001");
    let ops = f.store.card_ops(&cards[1]).await.unwrap();
    assert_eq!(
        (ops[0].status.as_str(), ops[0].job_id.as_str()),
        ("APPLIED", "")
    );
    let ops = f.store.card_ops(&cards[0]).await.unwrap();
    assert_eq!(ops[0].job_id, "J2");
}

#[tokio::test]
async fn a_single_change_on_a_batch_account_goes_out_at_once_on_its_own() {
    let mut m = batch_mock();
    m.expect_change_batch().never();
    m.expect_stop()
        .times(1)
        .returning(|_| Ok(crate::carrier::Receipt::applied()));
    let f = fixture(m).await;
    let cards = imported_cards(&f, 1).await;
    let card = f.service.suspend(&cards[0], &sys(), None).await.unwrap();
    assert!(card.pending.is_none() && !card.is_online());
}

#[tokio::test]
async fn a_platform_that_lists_modified_cards_is_read_in_full_once_then_by_its_list() {
    let mut m = shaped_mock(CarrierId::Unicom, 1, true);
    m.expect_onboard().returning(|_| Ok(()));
    m.expect_batch_limit().return_const(1usize);
    let mut seq = mockall::Sequence::new();
    // The first pass has no mark: every card in full.
    m.expect_cards()
        .times(2)
        .in_sequence(&mut seq)
        .returning(|ids| ids.iter().map(at_carrier(ServiceState::Active)).collect());
    // The second lists what changed since: card 0 was stopped at the carrier.
    m.expect_changes_since()
        .times(1)
        .in_sequence(&mut seq)
        .returning(|_, page| {
            assert_eq!(page, 1);
            Ok(crate::carrier::ChangePage {
                cards: vec![crate::carrier::ListedCard {
                    iccid: Iccid::from_trusted("89860400000000000000".into()),
                    state: Some(ServiceState::Stopped),
                    status: "DEACTIVATED".into(),
                }],
                last_page: true,
            })
        });
    // Only the card still active is asked for its usage; nothing is read in full.
    m.expect_usage_of()
        .times(1)
        .withf(|i| i.as_str() == "89860400000000000001")
        .returning(|_| {
            Ok(crate::carrier::UsageReading {
                cycle_usage_bytes: 7 << 20,
                usage_cycle_start: None,
            })
        });
    m.expect_card().never();
    m.expect_stop().never();
    m.expect_restore().never();
    let f = fixture(m).await;
    let mut cards = Vec::new();
    for i in 0..2 {
        let iccid = Iccid::from_trusted(format!("8986040000000000{i:04}"));
        imported(
            &f,
            NewCard {
                iccid: iccid.clone(),
                ..new_card(CarrierId::Unicom)
            },
        )
        .await;
        cards.push(iccid);
    }
    f.service.sync_all_usage().await.unwrap();
    let account = crate::domain::AccountId::default_for(CarrierId::Unicom);
    assert!(f.store.swept_to(&account).await.unwrap().is_some());
    f.service.sync_all_usage().await.unwrap();
    let stopped = f.store.get_card(&cards[0]).await.unwrap().unwrap();
    assert!(stopped.drift.is_some(), "the listed stop is seen as drift");
    let active = f.store.get_card(&cards[1]).await.unwrap().unwrap();
    assert_eq!(active.cycle_usage_bytes, 7 << 20);
    assert!(active.drift.is_none());
}
