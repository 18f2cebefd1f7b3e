//! The China Telecom 5G CMP adapter: against the dossier's fixtures
//! (`tests/fixtures/carrier-wire/cmp_5g/`, see its INDEX.md) and against its wire simulator
//! over loopback HTTP.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use simgate::carrier::http::cmp_5g::simulator::{router, WireOptions};
use simgate::carrier::http::cmp_5g::wire::{
    HttpMethods, DISABLED_PATH, FLOW_PATH, REAL_NAME_PATH, SERV_ACTIVE_PATH, SIM_INFO_PATH,
};
use simgate::carrier::http::cmp_5g::{
    sign, Cmp5g, Cmp5gConfig, SignBody, TimestampZone, MSISDN_MISMATCH, NOT_DISMANTLED, NOT_FOUND,
    NO_MSISDN,
};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::platform::{AccountCtx, CardNumbers, NumberBook};
use simgate::carrier::sim::SimCarrier;
use simgate::carrier::{Carrier, CarrierError, OnboardCard, Receipt, ServiceState};
use simgate::clock::ManualClock;
use simgate::domain::{AccountId, CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{recording, start_time, Backend, Exchanges, TestDb};

const SECRET: &str = "s3cr3t-key-0123";
const APP_KEY: &str = "simgate-app";
const CUST: &str = "cust-1";
const MIB: u64 = 1024 * 1024;

fn iccid(n: u32) -> Iccid {
    Iccid::parse_any(&format!("89861100{n:011}")).expect("test iccid")
}

fn ctx_with(numbers: NumberBook) -> AccountCtx {
    AccountCtx {
        numbers,
        ..AccountCtx::default_for(CarrierId::Telecom)
    }
}

fn config(base_url: &str) -> Cmp5gConfig {
    Cmp5gConfig {
        base_url: base_url.to_string(),
        cust_number: CUST.into(),
        app_key: APP_KEY.into(),
        secret: Secret::new(SECRET),
        timeouts: HttpTimeouts {
            connect_ms: 1_000,
            request_ms: 5_000,
        },
        timestamp_zone: TimestampZone::default(),
        sign_body: SignBody::default(),
        http_methods: HttpMethods::default(),
        flow_batch_size: 100,
    }
}

/// simgate's record of card numbers after an import: the simulated platform's.
struct SimNumbers(Arc<SimCarrier>);

#[async_trait::async_trait]
impl CardNumbers for SimNumbers {
    async fn msisdn(&self, _: &AccountId, iccid: &Iccid) -> Result<Option<String>, String> {
        self.0.number_of(iccid).await.map_err(|e| format!("{e:?}"))
    }
}

/// simgate's record of card numbers, fixed.
struct Book(HashMap<Iccid, String>);

#[async_trait::async_trait]
impl CardNumbers for Book {
    async fn msisdn(&self, _: &AccountId, iccid: &Iccid) -> Result<Option<String>, String> {
        Ok(self.0.get(iccid).cloned())
    }
}

fn book(pairs: &[(Iccid, &str)]) -> NumberBook {
    NumberBook(Arc::new(Book(
        pairs
            .iter()
            .map(|(i, n)| (i.clone(), n.to_string()))
            .collect(),
    )))
}

struct Rig {
    sim: Arc<SimCarrier>,
    cfg: Cmp5gConfig,
    /// Every request the simulator received, by path, and its answer.
    exchanges: Exchanges,
    _db: TestDb,
}

/// The simulator with cards 1 (active, 3 MiB) and 2 (stopped) and `extra` more active cards
/// (3, 4, …); the account's settings changed by `edit` (the simulator's and, through
/// [`Rig::adapter`], the adapter's).
async fn rig_with(extra: u32, opts: WireOptions, edit: impl FnOnce(&mut Cmp5gConfig)) -> Rig {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let sim = Arc::new(SimCarrier::new(
        CarrierPolicy::default_for(CarrierId::Telecom),
        db.store().await,
        Arc::new(ManualClock::new(start_time())),
    ));
    let mut cards = vec![
        OnboardCard {
            iccid: iccid(1),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        },
        OnboardCard {
            iccid: iccid(2),
            state: ServiceState::Stopped,
            cycle_usage_bytes: 0,
            msisdn: None,
        },
    ];
    cards.extend((3..3 + extra).map(|n| OnboardCard {
        iccid: iccid(n),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    }));
    sim.onboard(&cards).await.expect("onboard");
    sim.record_usage(&iccid(1), 3 * MIB).await.expect("usage");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let mut cfg = config(&format!("http://{}", listener.local_addr().expect("addr")));
    edit(&mut cfg);
    let exchanges = Exchanges::default();
    let app = recording(router(sim.clone(), &cfg, opts), exchanges.clone(), |uri| {
        uri.path().to_string()
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Rig {
        sim,
        cfg,
        exchanges,
        _db: db,
    }
}

async fn rig() -> Rig {
    rig_with(0, WireOptions::default(), |_| {}).await
}

impl Rig {
    fn adapter(&self) -> Cmp5g {
        self.adapter_with(|_| {})
    }

    fn adapter_with(&self, edit: impl FnOnce(&mut Cmp5gConfig)) -> Cmp5g {
        let mut cfg = self.cfg.clone();
        edit(&mut cfg);
        Cmp5g::new(
            &cfg,
            ctx_with(NumberBook(Arc::new(SimNumbers(self.sim.clone())))),
        )
        .expect("adapter")
    }

    async fn number(&self, n: u32) -> String {
        self.sim
            .number_of(&iccid(n))
            .await
            .expect("sim")
            .expect("every simulated card has a number")
    }

    async fn state(&self, n: u32) -> ServiceState {
        self.sim.card(&iccid(n)).await.expect("sim").state
    }

    /// How many requests went to each path.
    fn calls(&self) -> HashMap<String, usize> {
        let mut out = HashMap::new();
        for (path, _) in self.exchanges.lock().expect("exchanges").iter() {
            *out.entry(path.clone()).or_insert(0) += 1;
        }
        out
    }

    fn paths(&self) -> Vec<String> {
        let log = self.exchanges.lock().expect("exchanges");
        log.iter().map(|(p, _)| p.clone()).collect()
    }

    fn clear(&self) {
        self.exchanges.lock().expect("exchanges").clear();
    }
}

fn rejected(e: &CarrierError, code: &str) -> bool {
    matches!(e, CarrierError::Rejected { code: c, .. } if c == code)
}

fn is_transaction_id(r: &Receipt) -> bool {
    r.order_id
        .as_deref()
        .is_some_and(|id| id.len() == 28 && id.bytes().all(|b| b.is_ascii_digit()))
}

// ---------------------------------------------------------------------------------------------
// Adapter against the simulator.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wire_cmp_5g_card_reads_state_and_usage_with_two_calls() {
    let r = rig().await;
    let a = r.adapter();
    let one = a.card(&iccid(1)).await.expect("card 1");
    assert_eq!(
        (one.state, one.cycle_usage_bytes),
        (ServiceState::Active, 3 * MIB)
    );
    assert_eq!(one.unknown, None);
    let two = a.card(&iccid(2)).await.expect("card 2");
    assert_eq!(two.state, ServiceState::Stopped);
    assert_eq!(
        r.paths(),
        [SIM_INFO_PATH, FLOW_PATH, SIM_INFO_PATH, FLOW_PATH]
    );
    assert!(a.addresses_by_msisdn());
    assert_eq!(a.batch_limit(), 100);
    assert_eq!(
        a.msisdn_of(&iccid(1)).await.expect("stored"),
        Some(r.number(1).await)
    );
}

#[tokio::test]
async fn wire_cmp_5g_stop_and_restore_apply_once_with_the_platforms_transaction_id() {
    let r = rig().await;
    let a = r.adapter();
    let stop = a.stop(&iccid(1)).await.expect("stop");
    assert!(is_transaction_id(&stop) && !stop.in_progress, "{stop:?}");
    assert_eq!(r.state(1).await, ServiceState::Stopped);
    // A repeated stop is refused by the platform (-9 here); the card is read: applied.
    r.clear();
    let again = a.stop(&iccid(1)).await.expect("stop again");
    assert_eq!(again, Receipt::applied());
    assert_eq!(r.paths(), [DISABLED_PATH, SIM_INFO_PATH]);
    let restore = a.restore(&iccid(1)).await.expect("restore");
    assert!(is_transaction_id(&restore), "{restore:?}");
    a.restore(&iccid(1)).await.expect("restore again");
    assert_eq!(r.state(1).await, ServiceState::Active);
    assert_eq!(r.sim.card(&iccid(1)).await.expect("sim").changes, 2);
    assert!(!a.queries_orders());
}

#[tokio::test]
async fn wire_cmp_5g_a_restore_of_a_card_awaiting_activation_goes_through_request_serv_active() {
    let db_number = {
        // Card 2's number, as the simulator will give it (1064 + the ICCID's last nine digits).
        let i = iccid(2);
        format!("1064{}", &i.as_str()[i.as_str().len() - 9..])
    };
    let r = rig_with(
        0,
        WireOptions {
            awaiting_activation: vec![db_number.clone()],
            ..Default::default()
        },
        |_| {},
    )
    .await;
    assert_eq!(r.number(2).await, db_number);
    let a = r.adapter();
    // 测试去激活 (3): stopped.
    assert_eq!(
        a.card(&iccid(2)).await.expect("card 2").state,
        ServiceState::Stopped
    );
    r.clear();
    let restored = a.restore(&iccid(2)).await.expect("restore");
    assert_eq!(restored, Receipt::applied());
    assert_eq!(r.paths(), [DISABLED_PATH, SERV_ACTIVE_PATH]);
    let answers: Vec<String> = r
        .exchanges
        .lock()
        .expect("exchanges")
        .iter()
        .map(|(_, b)| b.clone())
        .collect();
    assert!(answers[0].contains("100008"), "{answers:?}");
    assert_eq!(r.state(2).await, ServiceState::Active);
    // Activated: the next stop and restore are ordinary ones.
    a.stop(&iccid(2)).await.expect("stop");
    r.clear();
    a.restore(&iccid(2)).await.expect("restore");
    assert_eq!(r.paths(), [DISABLED_PATH]);
}

#[tokio::test]
async fn wire_cmp_5g_cards_of_250_take_three_sim_info_and_three_flow_calls() {
    let r = rig_with(248, WireOptions::default(), |_| {}).await;
    let all: Vec<Iccid> = (1..=250).map(iccid).collect();
    let a = r.adapter();
    let cards = a.cards(&all).await.expect("cards");
    assert_eq!(cards.len(), 250);
    assert!(cards.iter().all(|c| c.unknown.is_none()));
    assert_eq!(cards[0].cycle_usage_bytes, 3 * MIB);
    assert_eq!(cards[1].state, ServiceState::Stopped);
    let calls = r.calls();
    assert_eq!(calls.get(SIM_INFO_PATH), Some(&3), "{calls:?}");
    assert_eq!(calls.get(FLOW_PATH), Some(&3), "{calls:?}");
    assert_eq!(calls.len(), 2, "{calls:?}");
    // A smaller flow_batch_size: 100, 100 and 50 numbers in calls of 40.
    r.clear();
    let small = r.adapter_with(|c| c.flow_batch_size = 40);
    assert_eq!(small.cards(&all).await.expect("cards").len(), 250);
    let calls = r.calls();
    assert_eq!(calls.get(SIM_INFO_PATH), Some(&3), "{calls:?}");
    assert_eq!(calls.get(FLOW_PATH), Some(&(3 + 3 + 2)), "{calls:?}");
}

#[tokio::test]
async fn wire_cmp_5g_a_card_without_a_stored_number_is_refused_before_anything_is_sent() {
    let r = rig().await;
    let a = Cmp5g::new(&r.cfg, ctx_with(NumberBook::none())).expect("adapter");
    for e in [
        a.card(&iccid(1)).await.expect_err("no number"),
        a.stop(&iccid(1)).await.expect_err("no number"),
        a.restore(&iccid(1)).await.expect_err("no number"),
        a.cancel(&iccid(1)).await.expect_err("no number"),
    ] {
        assert!(rejected(&e, NO_MSISDN), "{e:?}");
        assert!(a.card_not_known(&e));
    }
    assert!(a.cards(&[iccid(1)]).await.expect("cards").is_empty());
    assert_eq!(a.msisdn_of(&iccid(1)).await.expect("none"), None);
    assert!(r.paths().is_empty(), "{:?}", r.paths());
}

#[tokio::test]
async fn wire_cmp_5g_onboard_checks_each_number_names_its_card() {
    let r = rig().await;
    let a = Cmp5g::new(&r.cfg, ctx_with(NumberBook::none())).expect("adapter");
    let card = |n: u32, msisdn: Option<String>| OnboardCard {
        iccid: iccid(n),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn,
    };
    // Card 1 given card 2's number: the platform says it names another ICCID.
    let e = a
        .onboard(&[card(1, Some(r.number(2).await))])
        .await
        .expect_err("mismatch");
    assert!(rejected(&e, MSISDN_MISMATCH), "{e:?}");
    let e = a
        .onboard(&[card(1, Some("1064999999999".into()))])
        .await
        .expect_err("unknown number");
    assert!(rejected(&e, NOT_FOUND), "{e:?}");
    let e = a.onboard(&[card(1, None)]).await.expect_err("no number");
    assert!(rejected(&e, NO_MSISDN), "{e:?}");
    a.onboard(&[
        card(1, Some(r.number(1).await)),
        card(2, Some(r.number(2).await)),
    ])
    .await
    .expect("both");
    // The numbers are kept for the process.
    assert_eq!(
        a.card(&iccid(1)).await.expect("card").state,
        ServiceState::Active
    );
    assert_eq!(
        a.msisdn_of(&iccid(2)).await.expect("kept"),
        Some(r.number(2).await)
    );
    // A read whose number names another card is marked unknown, never taken as this card's.
    let crossed =
        Cmp5g::new(&r.cfg, ctx_with(book(&[(iccid(1), &r.number(2).await)]))).expect("adapter");
    let c = crossed.card(&iccid(1)).await.expect("read");
    assert!(
        c.unknown
            .as_deref()
            .is_some_and(|u| u.contains(MSISDN_MISMATCH)),
        "{c:?}"
    );
}

#[tokio::test]
async fn wire_cmp_5g_cancel_confirms_a_dismantled_card_only() {
    let r = rig().await;
    let a = r.adapter();
    let e = a.cancel(&iccid(1)).await.expect_err("not dismantled");
    assert!(rejected(&e, NOT_DISMANTLED), "{e:?}");
    r.sim
        .cancel(&iccid(1))
        .await
        .expect("the platform dismantles");
    a.cancel(&iccid(1)).await.expect("confirmed");
    assert_eq!(
        a.card(&iccid(1)).await.expect("card").state,
        ServiceState::Cancelled
    );
    // A change of a dismantled card is refused and not final (no code is published).
    let e = a.restore(&iccid(1)).await.expect_err("dismantled");
    assert!(
        matches!(e, CarrierError::Deferred { ref code, .. } if code == "-4"),
        "{e:?}"
    );
}

#[tokio::test]
async fn wire_cmp_5g_real_name_status_per_card() {
    let r = rig().await;
    let a = r.adapter();
    let got = a
        .real_name(&[iccid(1), iccid(2), iccid(404)])
        .await
        .expect("real name");
    assert_eq!(got, HashMap::from([(iccid(1), true), (iccid(2), true)]));
    assert_eq!(r.paths(), [REAL_NAME_PATH]);
}

#[tokio::test]
async fn wire_cmp_5g_every_setting_speaks_to_a_simulator_with_the_same_setting() {
    let settings: [fn(&mut Cmp5gConfig); 3] = [
        |c| c.timestamp_zone = TimestampZone::Beijing,
        |c| c.sign_body = SignBody::SortedFields,
        |c| c.http_methods = HttpMethods::AllPost,
    ];
    for edit in settings {
        let r = rig_with(0, WireOptions::default(), edit).await;
        let a = r.adapter();
        assert_eq!(
            a.card(&iccid(1)).await.expect("card").cycle_usage_bytes,
            3 * MIB
        );
        a.stop(&iccid(1)).await.expect("stop");
        a.restore(&iccid(1)).await.expect("restore");
        assert_eq!(a.real_name(&[iccid(1)]).await.expect("real name").len(), 1);
        // The default adapter against this simulator: refused by its gateway, nothing applied.
        let default = Cmp5g::new(
            &Cmp5gConfig {
                timestamp_zone: TimestampZone::default(),
                sign_body: SignBody::default(),
                http_methods: HttpMethods::default(),
                ..r.cfg.clone()
            },
            ctx_with(NumberBook(Arc::new(SimNumbers(r.sim.clone())))),
        )
        .expect("adapter");
        if r.cfg.http_methods == HttpMethods::AllPost {
            // Methods are not part of the sign: the simulator takes both.
            default.card(&iccid(1)).await.expect("GET or POST");
            continue;
        }
        // The batch calls POST: a wrong time zone or body form fails their sign.
        let e = default
            .card(&iccid(1))
            .await
            .expect_err("wrong sign or time");
        assert!(rejected(&e, "HTTP_401"), "{e:?}");
        if r.cfg.sign_body == SignBody::SortedFields {
            // A GET signs no body: both forms agree.
            default.stop(&iccid(1)).await.expect("GET");
            continue;
        }
        let e = default.stop(&iccid(1)).await.expect_err("wrong time");
        assert!(rejected(&e, "HTTP_401"), "{e:?}");
        assert_eq!(r.state(1).await, ServiceState::Active);
    }
}

#[tokio::test]
async fn wire_cmp_5g_a_wrong_secret_or_app_key_is_rejected() {
    let r = rig().await;
    for a in [
        r.adapter_with(|c| c.secret = Secret::new("wrong")),
        r.adapter_with(|c| c.app_key = "other".into()),
    ] {
        let e = a.card(&iccid(1)).await.expect_err("refused");
        assert!(rejected(&e, "HTTP_401"), "{e:?}");
        let e = a.stop(&iccid(1)).await.expect_err("refused");
        assert!(rejected(&e, "HTTP_401"), "{e:?}");
    }
    assert_eq!(r.state(1).await, ServiceState::Active);
}

#[tokio::test]
async fn wire_cmp_5g_a_change_answered_after_the_timeout_is_outcome_unknown() {
    let r = rig_with(
        0,
        WireOptions {
            timeout_after_apply_delay: Duration::from_millis(1_500),
            ..Default::default()
        },
        |c| c.timeouts.request_ms = 600,
    )
    .await;
    r.sim.set_faults(simgate::carrier::sim::SimFaults {
        timeout_after_apply_rate: 1.0,
        ..Default::default()
    });
    let e = r.adapter().stop(&iccid(1)).await.expect_err("unanswered");
    assert!(matches!(e, CarrierError::OutcomeUnknown(_)), "{e:?}");
    r.sim.set_faults(Default::default());
    assert_eq!(r.state(1).await, ServiceState::Stopped);
}

// ---------------------------------------------------------------------------------------------
// Golden fixtures from the dossier: the adapter parses each reply to the dossier's values and
// builds each request as the request fixtures show it.
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carrier-wire/cmp_5g")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// One request as a platform received it.
#[derive(Debug, Clone)]
struct Captured {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: HashMap<String, String>,
    body: String,
}

type Captures = Arc<Mutex<Vec<Captured>>>;

/// A platform that answers each path with a fixed body (a fixture) and records every request.
async fn platform_answering(bodies: &[(&'static str, String)]) -> (String, Captures) {
    let bodies: Arc<HashMap<&'static str, String>> = Arc::new(bodies.iter().cloned().collect());
    let captures = Captures::default();
    let log = captures.clone();
    let app = axum::Router::new().fallback(
        move |method: axum::http::Method,
              uri: axum::http::Uri,
              headers: axum::http::HeaderMap,
              body: String| {
            let bodies = bodies.clone();
            let log = log.clone();
            async move {
                let query = url::form_urlencoded::parse(uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect();
                let headers = headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.as_str().to_ascii_lowercase(),
                            v.to_str().unwrap_or("").to_string(),
                        )
                    })
                    .collect();
                log.lock().expect("captures").push(Captured {
                    method: method.to_string(),
                    path: uri.path().to_string(),
                    query,
                    headers,
                    body,
                });
                bodies
                    .get(uri.path())
                    .cloned()
                    .unwrap_or_else(|| format!("no fixture for {}", uri.path()))
            }
        },
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (base, captures)
}

/// The dossier's example access numbers (§1's verbatim sample, §3, §5, §6) and the fake
/// ICCIDs of the derived batchQrySimInfo reply.
const N1: &str = "1064900000001";
const N2: &str = "1064900000002";
const DOSSIER_NUMBER: &str = "14900000000";

fn fx(n: u32) -> Iccid {
    Iccid::parse_any(&format!("898611{n:014}")).expect("fixture iccid")
}

/// An adapter at a fixture platform: cards fx(1), fx(2) numbered as §1's sample, fx(3) as
/// §3/§5/§6's example; custNumber and AppKey the placeholders of the request fixtures.
async fn at_fixtures(bodies: &[(&'static str, String)]) -> (Cmp5g, Captures) {
    let (base, captures) = platform_answering(bodies).await;
    let cfg = Cmp5gConfig {
        cust_number: "<custNumber>".into(),
        app_key: "<app key>".into(),
        ..config(&base)
    };
    let numbers = book(&[(fx(1), N1), (fx(2), N2), (fx(3), DOSSIER_NUMBER)]);
    (
        Cmp5g::new(&cfg, ctx_with(numbers)).expect("adapter"),
        captures,
    )
}

#[test]
fn wire_cmp_5g_sign_matches_the_dossier_vector() {
    let text = fixture("sign.s0-3.vector.txt");
    let row: HashMap<&str, &str> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('\t'))
        .collect();
    let plain = format!(
        "{}{}{}{}",
        row["sorted query"], row["body"], row["secretKey"], row["Timestamp"]
    );
    assert_eq!(sign::md5_hex(&plain), row["MD5 (lower hex)"]);
    assert_eq!(
        sign::sign(
            row["sorted query"],
            row["body"],
            row["secretKey"],
            row["Timestamp"]
        ),
        row["Sign"]
    );
}

#[tokio::test]
async fn wire_cmp_5g_fixture_replies_parse_to_the_dossier_values() {
    // §1's verbatim reply, with the derived batchQrySimInfo reply for the same numbers.
    let (a, captures) = at_fixtures(&[
        (
            SIM_INFO_PATH,
            fixture("derived/batchQrySimInfo.s3.reply.derived.json"),
        ),
        (FLOW_PATH, fixture("batchQryFlowByMonth.s1.reply.json")),
    ])
    .await;
    let cards = a.cards(&[fx(1), fx(2), fx(3)]).await.expect("cards");
    // fx(3)'s number is not in the answer: left out.
    assert_eq!(cards.len(), 2, "{cards:?}");
    assert_eq!(
        (
            cards[0].iccid.clone(),
            cards[0].state,
            cards[0].cycle_usage_bytes
        ),
        // 42118.59 MB × 1024 × 1024, rounded to the byte.
        (fx(1), ServiceState::Active, 44_164_542_628)
    );
    assert_eq!(
        (
            cards[1].iccid.clone(),
            cards[1].state,
            cards[1].cycle_usage_bytes
        ),
        (fx(2), ServiceState::Stopped, 37_748_368_998)
    );
    assert!(cards.iter().all(|c| c.unknown.is_none()), "{cards:?}");
    let paths: Vec<String> = captures
        .lock()
        .expect("captures")
        .iter()
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(paths, [SIM_INFO_PATH, FLOW_PATH]);
    let e = a.card(&fx(3)).await.expect_err("not in the answer");
    assert!(rejected(&e, NOT_FOUND) && a.card_not_known(&e), "{e:?}");

    // A unit other than MB: that card's reading is unknown, never converted by guess.
    let (a, _) = at_fixtures(&[
        (
            SIM_INFO_PATH,
            fixture("derived/batchQrySimInfo.s3.reply.derived.json"),
        ),
        (
            FLOW_PATH,
            fixture("derived/batchQryFlowByMonth.s1.reply-kb.derived.json"),
        ),
    ])
    .await;
    let cards = a.cards(&[fx(1), fx(2)]).await.expect("cards");
    assert!(
        cards[0]
            .unknown
            .as_deref()
            .is_some_and(|u| u.contains("KB")),
        "{cards:?}"
    );
    // fx(2) is not in that flow answer at all: unknown too.
    assert!(cards[1].unknown.is_some(), "{cards:?}");
    assert_eq!(cards[1].known_state(), None);

    // §5's skeleton: status "1" = verified.
    let (a, _) = at_fixtures(&[(
        REAL_NAME_PATH,
        fixture("qryRealNameStatus.s5.reply-skeleton.json"),
    )])
    .await;
    assert_eq!(
        a.real_name(&[fx(3)]).await.expect("real name"),
        HashMap::from([(fx(3), true)])
    );
}

#[tokio::test]
async fn wire_cmp_5g_change_fixture_replies_parse_to_the_dossier_values() {
    // §6.2's XML skeleton (the §0.5 family disabledNumberService's reply is read as): RspCode
    // 0000 is success; its GROUP_TRANSACTIONID (a placeholder there) names the change.
    let (a, _) = at_fixtures(&[(
        DISABLED_PATH,
        fixture("singleCutNet.s6-2.reply-skeleton.xml"),
    )])
    .await;
    assert_eq!(
        a.stop(&fx(3)).await.expect("stop"),
        Receipt::applied_as("…")
    );
    let (a, _) = at_fixtures(&[(
        DISABLED_PATH,
        fixture("derived/disabledNumberService.s6.reply-ok.derived.xml"),
    )])
    .await;
    assert_eq!(
        a.restore(&fx(3)).await.expect("restore"),
        Receipt::applied_as("1000000190202401010000000001")
    );

    // 100008 on a restore: requestServActive instead, reported as the restore.
    let (a, captures) = at_fixtures(&[
        (
            DISABLED_PATH,
            fixture("derived/disabledNumberService.s6.reply-100008.derived.xml"),
        ),
        (
            SERV_ACTIVE_PATH,
            fixture("derived/requestServActive.s6-1.reply.derived.json"),
        ),
    ])
    .await;
    assert_eq!(
        a.restore(&fx(3)).await.expect("restore"),
        Receipt::applied()
    );
    let sent: Vec<String> = captures
        .lock()
        .expect("captures")
        .iter()
        .map(|c| c.path.clone())
        .collect();
    assert_eq!(sent, [DISABLED_PATH, SERV_ACTIVE_PATH]);

    // The refusal seen on singleCutNet (-9 不能重复订购): the card is read; in the target state
    // (fx(1) is 在用) it is applied, else deferred, never final.
    let (a, _) = at_fixtures(&[
        (
            DISABLED_PATH,
            fixture("derived/singleCutNet.s6-2.reply-refused.derived.xml"),
        ),
        (
            SIM_INFO_PATH,
            fixture("derived/batchQrySimInfo.s3.reply.derived.json"),
        ),
    ])
    .await;
    assert_eq!(
        a.restore(&fx(1)).await.expect("already active"),
        Receipt::applied()
    );
    let e = a.stop(&fx(1)).await.expect_err("refused");
    assert!(
        matches!(e, CarrierError::Deferred { ref code, retry_after: None, .. } if code == "-9"),
        "{e:?}"
    );

    // A reply no source explains, and a card that cannot be read: unknown, never success.
    let garbage = "{\"unexpected\": true}".to_string();
    let (a, _) = at_fixtures(&[(DISABLED_PATH, garbage.clone()), (SIM_INFO_PATH, garbage)]).await;
    let e = a.stop(&fx(1)).await.expect_err("garbage");
    assert!(matches!(e, CarrierError::OutcomeUnknown(_)), "{e:?}");
}

/// A request fixture: the method and URL line, the header lines, the body.
struct RequestFixture {
    method: String,
    path: String,
    query: Vec<(String, String)>,
    headers: Vec<(String, String)>,
    body: Option<serde_json::Value>,
}

fn request_fixture(name: &str) -> RequestFixture {
    let text = fixture(name);
    let mut lines = text.lines().filter(|l| !l.starts_with('#'));
    let first = lines.next().expect("a request line");
    let (method, url) = first.split_once(' ').expect("METHOD URL");
    let url = url::Url::parse(url).expect("url");
    let mut headers = Vec::new();
    let mut body = String::new();
    let mut in_body = false;
    for line in lines {
        if in_body {
            body.push_str(line);
        } else if line.trim().is_empty() {
            in_body = true;
        } else {
            let (k, v) = line.split_once(": ").expect("header line");
            headers.push((k.to_string(), v.to_string()));
        }
    }
    RequestFixture {
        method: method.to_string(),
        path: url.path().to_string(),
        query: url.query_pairs().into_owned().collect(),
        headers,
        body: (!body.trim().is_empty()).then(|| serde_json::from_str(&body).expect("json body")),
    }
}

/// The captured request matches the fixture: method, path, query, body, the headers (AppKey
/// and Content-Type as given; Timestamp 14 digits in GMT, close to now; Sign recomputed).
fn assert_matches(c: &Captured, name: &str) {
    let f = request_fixture(name);
    assert_eq!(
        (c.method.as_str(), c.path.as_str()),
        (f.method.as_str(), f.path.as_str()),
        "{name}"
    );
    let mut ours = c.query.clone();
    ours.sort();
    let mut theirs = f.query.clone();
    theirs.sort();
    assert_eq!(ours, theirs, "{name}: query");
    match &f.body {
        Some(body) => {
            let sent: serde_json::Value = serde_json::from_str(&c.body).expect("a JSON body");
            assert_eq!(&sent, body, "{name}: body");
        }
        None => assert!(c.body.is_empty(), "{name}: a GET has no body"),
    }
    for (k, v) in &f.headers {
        let sent = c
            .headers
            .get(&k.to_ascii_lowercase())
            .unwrap_or_else(|| panic!("{name}: header {k} not sent"));
        match k.as_str() {
            "Timestamp" => {
                assert_eq!(sent.len(), 14, "{name}: {sent}");
                let at = chrono::NaiveDateTime::parse_from_str(sent, "%Y%m%d%H%M%S")
                    .expect("yyyyMMddHHmmss")
                    .and_utc();
                assert!(
                    (chrono::Utc::now() - at).num_seconds().abs() < 60,
                    "GMT: {sent}"
                );
            }
            "Sign" => {
                let body = if f.method == "POST" {
                    c.body.as_str()
                } else {
                    ""
                };
                let ts = &c.headers["timestamp"];
                let expected = sign::sign(&sign::sorted_query(&c.query), body, SECRET, ts);
                assert_eq!(sent, &expected, "{name}: Sign");
                assert_eq!(sent.len(), 64);
            }
            _ => assert_eq!(sent, v, "{name}: header {k}"),
        }
    }
    if f.method == "GET" {
        assert!(
            !c.headers.contains_key("content-type"),
            "{name}: no Content-Type on GET"
        );
    }
}

#[tokio::test]
async fn wire_cmp_5g_requests_match_the_request_fixtures() {
    let (a, captures) = at_fixtures(&[
        (
            SIM_INFO_PATH,
            fixture("derived/batchQrySimInfo.s3.reply.derived.json"),
        ),
        (FLOW_PATH, fixture("batchQryFlowByMonth.s1.reply.json")),
        (
            REAL_NAME_PATH,
            fixture("qryRealNameStatus.s5.reply-skeleton.json"),
        ),
        (
            DISABLED_PATH,
            fixture("derived/disabledNumberService.s6.reply-100008.derived.xml"),
        ),
        (
            SERV_ACTIVE_PATH,
            fixture("derived/requestServActive.s6-1.reply.derived.json"),
        ),
    ])
    .await;
    let take = |path: &str| -> Captured {
        let mut log = captures.lock().expect("captures");
        let i = log
            .iter()
            .position(|c| c.path == path)
            .unwrap_or_else(|| panic!("nothing sent to {path}"));
        log.remove(i)
    };
    // §3's example: one number (the dossier's), read by card().
    let _ = a.card(&fx(3)).await;
    assert_matches(&take(SIM_INFO_PATH), "batchQrySimInfo.s3.request.txt");
    captures.lock().expect("captures").clear();
    // §1: the two numbers of the sample, read by cards().
    a.cards(&[fx(1), fx(2)]).await.expect("cards");
    assert_matches(
        &take(FLOW_PATH),
        "derived/batchQryFlowByMonth.s1.request.derived.txt",
    );
    // §5.
    a.real_name(&[fx(3)]).await.expect("real name");
    assert_matches(
        &take(REAL_NAME_PATH),
        "derived/qryRealNameStatus.s5.request.derived.txt",
    );
    // §6's example (orderTypeId 19), and a restore: 20, then §6.1 after 100008.
    let _ = a.stop(&fx(3)).await;
    assert_matches(&take(DISABLED_PATH), "disabledNumberService.s6.request.txt");
    a.restore(&fx(3)).await.expect("restore");
    let restore = take(DISABLED_PATH);
    assert!(
        restore.query.contains(&("orderTypeId".into(), "20".into())),
        "{restore:?}"
    );
    assert!(
        restore.query.contains(&("acctCd".into(), String::new())),
        "{restore:?}"
    );
    assert_matches(
        &take(SERV_ACTIVE_PATH),
        "derived/requestServActive.s6-1.request.derived.txt",
    );
}

/// Every fixture file is named by a test in this file.
#[test]
fn wire_cmp_5g_every_fixture_is_read_by_a_test() {
    let this = include_str!("wire_cmp_5g.rs");
    let files = crate::helpers::fixture_files("cmp_5g");
    assert!(files.len() >= 10, "{files:?}");
    let unread: Vec<&String> = files
        .iter()
        .filter(|f| !this.contains(&format!("\"{f}\"")))
        .collect();
    assert!(unread.is_empty(), "fixtures no test reads: {unread:?}");
    let index = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/carrier-wire/cmp_5g/INDEX.md"),
    )
    .expect("INDEX.md");
    let unlisted: Vec<&String> = files
        .iter()
        .filter(|f| !index.contains(f.as_str()))
        .collect();
    assert!(
        unlisted.is_empty(),
        "fixtures INDEX.md does not list: {unlisted:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// End to end: a server with a 5G CMP account, simulated behind its real adapter and wire
// simulator over loopback HTTP.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wire_cmp_5g_an_account_imports_cards_with_their_access_number_and_changes_them() {
    use crate::helpers::{card_input, serve_built, telecom_iccid, test_server};
    use simgate::pb;

    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite"));
    let clock = ManualClock::new(start_time());
    let entries = simgate::carrier::account::entries_from_toml(
        "[[accounts]]\nid = \"ct5g\"\ncarrier = \"telecom\"\nplatform = \"cmp_5g\"\n",
    )
    .expect("accounts parse");
    let built = test_server(&db, &clock)
        .accounts(entries)
        .build()
        .await
        .expect("build server");
    let mut app = serve_built(built, db, clock).await;
    let iccid = telecom_iccid(1);
    // No access number given and no lookup by ICCID: the platform's check at import refuses
    // it (NO_MSISDN, before anything is sent to it), nothing is stored.
    let err = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            // Another card: the simulated platform creates a card at its first onboarding with
            // the number given then (here its own), as a real platform holds it beforehand.
            cards: vec![card_input(&telecom_iccid(2), pb::Carrier::ChinaTelecom)],
            ..Default::default()
        })
        .await
        .expect_err("no msisdn");
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err:?}");
    assert!(err.message().contains(NO_MSISDN), "{err:?}");
    assert_eq!(app.store.count_cards().await.expect("count"), 0);
    // With it: stored, checked at the platform (batchQrySimInfo), and changes go by it.
    app.cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![pb::CardInput {
                msisdn: "14900000001".into(),
                ..card_input(&iccid, pb::Carrier::ChinaTelecom)
            }],
            ..Default::default()
        })
        .await
        .expect("import with the access number");
    app.cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: iccid.clone(),
            ..Default::default()
        })
        .await
        .expect("suspend");
    let at = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: "ct5g".into(),
            carrier: pb::Carrier::ChinaTelecom as i32,
            iccid: iccid.clone(),
        })
        .await
        .expect("carrier card")
        .into_inner();
    assert_eq!(
        (at.state(), at.changes),
        (pb::CarrierServiceState::Stopped, 1)
    );
}
