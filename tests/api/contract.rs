//! The carrier contract: what every platform's adapter, talking to that platform's wire
//! simulator over loopback HTTP, and the in-process simulated carrier must do alike. One
//! suite, run by `contract!` for every platform in the registry; each is built only from the
//! registry (generated settings, the simulator's router, the adapter), so a new platform joins
//! with one `contract!` line. Platform specifics (codes, tokens, envelopes, extra calls) stay
//! in `wire_<platform>.rs`.

use std::sync::Arc;
use std::time::Duration;

use simgate::carrier::http::HttpTimeouts;
use simgate::carrier::platform::{AccountCtx, ApiConfig, CardNumbers, NumberBook, Platform};
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{Carrier, CarrierError, OnboardCard, Rebind, Receipt, ServiceState};
use simgate::clock::ManualClock;
use simgate::domain::{AccountId, CarrierId, Iccid};

use crate::helpers::{recording, start_time, Backend, Exchanges, TestDb};

/// Every call's limit: short, so that the slow and unanswered cases take a second, not ten.
const REQUEST_MS: u64 = 800;
const SECRET: &str = "0123456789abcdefghij";
const MIB: u64 = 1 << 20;

/// A platform under test: the adapter (or the in-process simulator itself) in front of a
/// simulated carrier with two cards, 1 (active, 3 MiB used) and 2 (stopped).
struct Subject {
    platform: Platform,
    carrier: Arc<dyn Carrier>,
    sim: Arc<SimCarrier>,
    /// The wire simulator's settings; None in process.
    api: Option<ApiConfig>,
    base: String,
    /// Every request the wire simulator received (path and query) and its answer; empty in
    /// process.
    exchanges: Exchanges,
    /// The account's context, with simgate's record of the cards' access numbers.
    ctx: AccountCtx,
    _db: TestDb,
}

/// simgate's record of card numbers as the store keeps them after an import: each card's
/// number is the one the simulated platform holds (a platform that names cards by number
/// and has no lookup by ICCID, the 5G CMP, finds it only here).
struct SimNumbers(Arc<SimCarrier>);

#[async_trait::async_trait]
impl CardNumbers for SimNumbers {
    async fn msisdn(&self, _: &AccountId, iccid: &Iccid) -> Result<Option<String>, String> {
        self.0.number_of(iccid).await.map_err(|e| format!("{e:?}"))
    }
}

fn carrier_of(platform: Platform) -> CarrierId {
    platform.carrier().unwrap_or(CarrierId::Mobile)
}

/// An ICCID of `carrier`'s issuer range.
fn iccid(carrier: CarrierId, n: u64) -> Iccid {
    let issuer = carrier.iccid_issuers()[0];
    Iccid::parse_any(&format!("8986{issuer}{n:013}")).expect("test iccid")
}

fn timeouts() -> HttpTimeouts {
    HttpTimeouts {
        connect_ms: 1_000,
        request_ms: REQUEST_MS,
    }
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    base
}

impl Subject {
    async fn new(platform: Platform) -> Subject {
        let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
        let carrier = carrier_of(platform);
        let mut ctx = AccountCtx::default_for(carrier);
        let sim = Arc::new(SimCarrier::new(
            ctx.policy.clone(),
            db.store().await,
            Arc::new(ManualClock::new(start_time())),
        ));
        ctx.numbers = NumberBook(Arc::new(SimNumbers(sim.clone())));
        let cards = [
            OnboardCard {
                iccid: iccid(carrier, 1),
                state: ServiceState::Active,
                cycle_usage_bytes: 0,
                msisdn: None,
            },
            OnboardCard {
                iccid: iccid(carrier, 2),
                state: ServiceState::Stopped,
                cycle_usage_bytes: 0,
                msisdn: None,
            },
        ];
        sim.onboard(&cards).await.expect("onboard at the simulator");
        sim.record_usage(&iccid(carrier, 1), 3 * MIB)
            .await
            .expect("usage");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("addr"));
        let exchanges = Exchanges::default();
        let (adapter, api): (Arc<dyn Carrier>, _) =
            match platform.generated(&base, SECRET, timeouts()) {
                None => (sim.clone(), None),
                Some(api) => {
                    // Answers to a change the faults hold back arrive after the client gave up.
                    let app = recording(
                        api.simulator(sim.clone(), Duration::from_millis(REQUEST_MS + 1_000)),
                        exchanges.clone(),
                        |uri| format!("{}?{}", uri.path(), uri.query().unwrap_or("")),
                    );
                    tokio::spawn(async move {
                        let _ = axum::serve(listener, app).await;
                    });
                    (api.adapter(ctx.clone()).expect("adapter"), Some(api))
                }
            };
        // As an import does: the adapter checks the cards at its platform (and learns their
        // access numbers where the platform names cards by them).
        adapter
            .onboard(&cards)
            .await
            .expect("onboard through the adapter");
        Subject {
            platform,
            carrier: adapter,
            sim,
            api,
            base,
            exchanges,
            ctx,
            _db: db,
        }
    }

    /// How many requests the wire simulator has received.
    fn sent(&self) -> usize {
        self.exchanges.lock().expect("exchanges").len()
    }

    fn card(&self, n: u64) -> Iccid {
        iccid(carrier_of(self.platform), n)
    }

    /// The same platform's adapter with other settings at `base` and `secret`.
    fn adapter_at(&self, base: &str, secret: &str) -> Arc<dyn Carrier> {
        self.platform
            .generated(base, secret, timeouts())
            .expect("a wire platform")
            .adapter(self.ctx.clone())
            .expect("adapter")
    }

    async fn at_sim(&self, n: u64) -> ServiceState {
        self.sim
            .card(&self.card(n))
            .await
            .expect("at the simulator")
            .state
    }
}

fn is_rejected<T: std::fmt::Debug>(r: &Result<T, CarrierError>) -> bool {
    matches!(r, Err(CarrierError::Rejected { .. }))
}

async fn card_reads_state_and_cycle_usage(s: Subject) {
    let one = s.carrier.card(&s.card(1)).await.expect("card 1");
    assert_eq!(
        (one.state, one.cycle_usage_bytes),
        (ServiceState::Active, 3 * MIB)
    );
    let two = s.carrier.card(&s.card(2)).await.expect("card 2");
    assert_eq!(two.state, ServiceState::Stopped);
    let both = s
        .carrier
        .cards(&[s.card(1), s.card(9), s.card(2)])
        .await
        .expect("batch read");
    // A card the platform does not know is left out of a batch read.
    assert_eq!(
        both.iter().map(|c| c.iccid.clone()).collect::<Vec<_>>(),
        [s.card(1), s.card(2)]
    );
}

async fn stop_and_restore_apply_once_and_are_idempotent(s: Subject) {
    for _ in 0..2 {
        s.carrier.stop(&s.card(1)).await.expect("stop");
        assert_eq!(s.at_sim(1).await, ServiceState::Stopped);
    }
    for _ in 0..2 {
        s.carrier.restore(&s.card(1)).await.expect("restore");
        assert_eq!(s.at_sim(1).await, ServiceState::Active);
    }
    let at = s.sim.card(&s.card(1)).await.expect("sim");
    assert_eq!(at.changes, 2, "a repeated change is applied once");
}

async fn an_unknown_card_is_rejected_for_reads_and_changes(s: Subject) {
    let unknown = s.card(404);
    assert!(is_rejected(&s.carrier.card(&unknown).await));
    assert!(is_rejected(&s.carrier.stop(&unknown).await));
    assert!(is_rejected(&s.carrier.restore(&unknown).await));
    // Onboarding checks that every card exists at the platform.
    let onboard = |iccid| OnboardCard {
        iccid,
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    };
    if s.api.is_some() {
        assert!(is_rejected(
            &s.carrier
                .onboard(&[onboard(s.card(1)), onboard(unknown)])
                .await
        ));
    }
    s.carrier
        .onboard(&[onboard(s.card(1)), onboard(s.card(2))])
        .await
        .expect("known cards onboard");
}

async fn cancel_confirms_only_a_released_card(s: Subject) {
    if s.api.is_some() {
        // A real platform releases the number itself: an adapter only confirms it.
        assert!(is_rejected(&s.carrier.cancel(&s.card(1)).await));
        assert_eq!(s.at_sim(1).await, ServiceState::Active);
        s.sim
            .cancel(&s.card(1))
            .await
            .expect("released at the simulator");
    }
    s.carrier.cancel(&s.card(1)).await.expect("confirmed");
    assert_eq!(s.at_sim(1).await, ServiceState::Cancelled);
    s.carrier.cancel(&s.card(1)).await.expect("idempotent");
}

/// (The simulated carriers limit changes, not reads.)
async fn the_rate_limit_is_rate_limited_and_applies_nothing(s: Subject) {
    s.sim.set_faults(SimFaults {
        rate_limit_rate: 1.0,
        ..SimFaults::default()
    });
    let stop = s.carrier.stop(&s.card(1)).await;
    assert!(
        matches!(stop, Err(CarrierError::RateLimited { .. })),
        "{stop:?}"
    );
    s.sim.set_faults(SimFaults::default());
    assert_eq!(s.at_sim(1).await, ServiceState::Active);
}

async fn an_outage_is_transient_and_applies_nothing(s: Subject) {
    s.sim.set_faults(SimFaults {
        down: true,
        ..SimFaults::default()
    });
    let read = s.carrier.card(&s.card(1)).await;
    assert!(matches!(read, Err(CarrierError::Transient(_))), "{read:?}");
    let stop = s.carrier.stop(&s.card(1)).await;
    assert!(
        matches!(stop, Err(CarrierError::Transient(_))),
        "nothing applied: {stop:?}"
    );
    s.sim.set_faults(SimFaults::default());
    assert_eq!(s.at_sim(1).await, ServiceState::Active);
}

async fn a_change_applied_but_unanswered_is_outcome_unknown(s: Subject) {
    s.sim.set_faults(SimFaults {
        timeout_after_apply_rate: 1.0,
        ..SimFaults::default()
    });
    let stop = s.carrier.stop(&s.card(1)).await;
    assert!(
        matches!(stop, Err(CarrierError::OutcomeUnknown(_))),
        "{stop:?}"
    );
    s.sim.set_faults(SimFaults::default());
    assert_eq!(s.at_sim(1).await, ServiceState::Stopped, "it was applied");
}

/// A change's receipt agrees with the platform's order query: a change taken as an order still
/// to complete (`in_progress`) can only come from a platform that can say where its orders
/// stand, and a platform without an order query refuses `order()`.
async fn a_changes_receipt_agrees_with_queries_orders(s: Subject) {
    let queries = s.carrier.queries_orders();
    let receipts: Vec<Receipt> = vec![
        s.carrier.stop(&s.card(1)).await.expect("stop"),
        s.carrier.restore(&s.card(1)).await.expect("restore"),
    ];
    for r in &receipts {
        if r.in_progress {
            assert!(
                queries,
                "{:?}: an order in progress from a platform with no order query: {r:?}",
                s.platform
            );
        }
        if let (true, Some(id)) = (queries && r.in_progress, &r.order_id) {
            let progress = s.carrier.order(&s.card(1), id).await;
            assert!(progress.is_ok(), "order {id}: {progress:?}");
        }
    }
    if !queries {
        let order = s.carrier.order(&s.card(1), "1").await;
        assert!(is_rejected(&order), "{order:?}");
    }
}

/// `rebind_modes()` tells the truth: a mode it leaves out is refused before anything is sent;
/// a mode it lists is sent, and answered as the simulated carrier itself answers it (a card
/// of its own, 3, gets the same mode directly).
async fn rebind_modes_are_refused_and_accepted_consistently(s: Subject) {
    let modes = s.carrier.rebind_modes();
    let three = s.card(3);
    s.sim
        .onboard(&[OnboardCard {
            iccid: three.clone(),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        }])
        .await
        .expect("card 3 at the simulator");
    for mode in [
        Rebind::Unbind,
        Rebind::CurrentDevice,
        Rebind::Imei("860000000000001".into()),
    ] {
        let before = s.sent();
        let got = s.carrier.rebind(&s.card(1), &mode).await;
        if !modes.contains(&mode.mode()) {
            assert!(is_rejected(&got), "{}: {got:?}", mode.mode());
            assert_eq!(s.sent(), before, "{}: refused before sending", mode.mode());
            continue;
        }
        if s.api.is_some() {
            assert!(s.sent() > before, "{}: a listed mode is sent", mode.mode());
        }
        let direct = s.sim.rebind(&three, &mode).await;
        assert_eq!(
            got.as_ref().err().map(std::mem::discriminant),
            direct.as_ref().err().map(std::mem::discriminant),
            "{}: the adapter {got:?}, the simulated carrier {direct:?}",
            mode.mode()
        );
    }
}

// Wire only: what cannot happen to a function call.

async fn latency_past_the_timeout_is_transient_for_reads_and_unknown_for_changes(s: Subject) {
    s.sim.set_faults(SimFaults {
        latency_ms: REQUEST_MS + 700,
        ..SimFaults::default()
    });
    let read = s.carrier.card(&s.card(1)).await;
    assert!(matches!(read, Err(CarrierError::Transient(_))), "{read:?}");
    let stop = s.carrier.stop(&s.card(1)).await;
    assert!(
        matches!(stop, Err(CarrierError::OutcomeUnknown(_))),
        "{stop:?}"
    );
}

async fn wrong_credentials_are_rejected_not_retried(s: Subject) {
    let wrong = s.adapter_at(&s.base, "zyxwvutsrqponmlkjihg");
    let read = wrong.card(&s.card(1)).await;
    assert!(is_rejected(&read), "{read:?}");
    assert!(is_rejected(&wrong.stop(&s.card(1)).await));
    assert_eq!(s.at_sim(1).await, ServiceState::Active);
}

/// A change answered with garbage is never taken for success nor for a refusal: it is unknown
/// whether it applied, or, where the garbage came before the change was sent (OneLink's token
/// call), unavailable. Each `wire_<platform>.rs` pins down the garbage answer to the change
/// call itself as OutcomeUnknown.
async fn a_garbage_body_is_transient_for_reads_and_never_success_for_changes(s: Subject) {
    let base = serve(axum::Router::new().fallback(|| async { "{\"unexpected\": true}" })).await;
    let garbage = s.adapter_at(&base, SECRET);
    let read = garbage.card(&s.card(1)).await;
    assert!(matches!(read, Err(CarrierError::Transient(_))), "{read:?}");
    let stop = garbage.stop(&s.card(1)).await;
    assert!(
        matches!(
            stop,
            Err(CarrierError::OutcomeUnknown(_) | CarrierError::Transient(_))
        ),
        "{stop:?}"
    );
}

async fn an_unreachable_platform_is_transient_even_for_changes(s: Subject) {
    // Nothing listens on port 1: the request never left, so nothing can have been applied.
    let gone = s.adapter_at("http://127.0.0.1:1", SECRET);
    assert!(matches!(
        gone.card(&s.card(1)).await,
        Err(CarrierError::Transient(_))
    ));
    let stop = gone.stop(&s.card(1)).await;
    assert!(matches!(stop, Err(CarrierError::Transient(_))), "{stop:?}");
    // The error names no credential, whatever the platform puts in its requests.
    let shown = format!("{stop:?}");
    assert!(
        !shown.contains(SECRET) && !shown.contains(&SECRET[..8]),
        "{shown}"
    );
}

macro_rules! case {
    ($platform:expr, $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name(super::Subject::new($platform).await).await;
            }
        )*
    };
}

/// The whole contract for one platform of the registry.
macro_rules! contract {
    ($module:ident, $platform:expr, wire) => {
        contract!($module, $platform);
        mod wire {
            use super::*;
            case!(
                $platform,
                latency_past_the_timeout_is_transient_for_reads_and_unknown_for_changes,
                wrong_credentials_are_rejected_not_retried,
                a_garbage_body_is_transient_for_reads_and_never_success_for_changes,
                an_unreachable_platform_is_transient_even_for_changes,
            );
        }
    };
    ($module:ident, $platform:expr) => {
        case!(
            $platform,
            card_reads_state_and_cycle_usage,
            stop_and_restore_apply_once_and_are_idempotent,
            an_unknown_card_is_rejected_for_reads_and_changes,
            cancel_confirms_only_a_released_card,
            the_rate_limit_is_rate_limited_and_applies_nothing,
            an_outage_is_transient_and_applies_nothing,
            a_change_applied_but_unanswered_is_outcome_unknown,
            a_changes_receipt_agrees_with_queries_orders,
            rebind_modes_are_refused_and_accepted_consistently,
        );
    };
}

mod onelink {
    use super::*;
    contract!(onelink, Platform::Onelink, wire);
}

mod jasper {
    use super::*;
    contract!(jasper, Platform::Jasper, wire);
}

mod unicom_gateway {
    use super::*;
    contract!(unicom_gateway, Platform::UnicomGateway, wire);
}

mod cmp {
    use super::*;
    contract!(cmp, Platform::Cmp, wire);
}

mod cmp_5g {
    use super::*;
    contract!(cmp_5g, Platform::Cmp5g, wire);
}

mod simulated {
    use super::*;
    contract!(simulated, Platform::Simulated);
}

/// Every platform of the registry has its contract module above.
#[test]
fn every_registered_platform_runs_the_contract() {
    let covered = [
        Platform::Onelink,
        Platform::Jasper,
        Platform::UnicomGateway,
        Platform::Cmp,
        Platform::Cmp5g,
        Platform::Simulated,
    ];
    for p in Platform::ALL {
        assert!(covered.contains(&p), "{p} has no contract! line");
    }
}
