//! Contract tests: the China Unicom Control Center (Jasper) adapter against its wire simulator
//! over loopback HTTP, with the simulator backed by a SimCarrier on a test database.

use std::sync::Arc;
use std::time::Duration;

use simgate::carrier::http::jasper::simulator::{router, Unreadable, WireOptions};
use simgate::carrier::http::jasper::{Jasper, JasperConfig};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{
    Carrier, CarrierError, LastSession, OnboardCard, Rebind, Receipt, ServiceState,
};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::{CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{assert_deferred, start_time, unicom_iccid, Backend, TestDb};

const USER: &str = "unicom-api-user";
const KEY: &str = "test-api-key-0123456789";
/// The adapter's whole-call timeout in these tests; slow answers go well past it.
const REQUEST_MS: u64 = 600;

struct Harness {
    sim: Arc<SimCarrier>,
    /// The simulated carrier's clock (the card clock).
    clock: Arc<dyn Clock>,
    jasper: Jasper,
    base_url: String,
    /// The simulator's test hook (cards whose answers cannot be read).
    unreadable: Arc<std::sync::Mutex<std::collections::BTreeMap<String, Unreadable>>>,
    /// Every request the simulator received: method and path.
    requests: Arc<std::sync::Mutex<Vec<(String, String)>>>,
    _db: TestDb,
}

impl Harness {
    /// The requests received since the last call, emptied.
    fn take_requests(&self) -> Vec<(String, String)> {
        std::mem::take(&mut *self.requests.lock().expect("requests"))
    }
}

fn config(base_url: &str, user: &str, key: &str) -> JasperConfig {
    JasperConfig {
        base_url: base_url.to_string(),
        username: user.to_string(),
        api_key: Secret::new(key),
        timeouts: HttpTimeouts {
            connect_ms: 1_000,
            request_ms: REQUEST_MS,
        },
        repeat_window_code: None,
    }
}

fn policy() -> CarrierPolicy {
    CarrierPolicy::default_for(CarrierId::Unicom)
}

/// Serves `app` on a random loopback port and returns its base URL with the platform's path.
async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}/rws/api/v1")
}

fn iccid(n: u64) -> Iccid {
    Iccid::parse_any(&unicom_iccid(n)).expect("test iccid")
}

async fn harness(cards: &[(u64, ServiceState, u64)]) -> Harness {
    harness_with(cards, WireOptions::default()).await
}

async fn harness_with(cards: &[(u64, ServiceState, u64)], opts: WireOptions) -> Harness {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let store = db.store().await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start_time()));
    let sim = Arc::new(SimCarrier::new(policy(), store, clock.clone()));
    let onboard: Vec<OnboardCard> = cards
        .iter()
        .map(|(n, state, usage)| OnboardCard {
            iccid: iccid(*n),
            state: *state,
            cycle_usage_bytes: *usage,
            msisdn: None,
        })
        .collect();
    sim.onboard(&onboard).await.expect("onboard into the sim");
    // The simulator reads its credentials from the same configuration as the adapter; its
    // address is only known once bound, and the router only uses the base URL's path.
    let wire_cfg = config("http://placeholder/rws/api/v1", USER, KEY);
    let opts = WireOptions {
        timeout_after_apply_delay: Duration::from_millis(REQUEST_MS * 3),
        ..opts
    };
    let unreadable = opts.unreadable.clone();
    let requests: Arc<std::sync::Mutex<Vec<(String, String)>>> = Arc::default();
    let log = requests.clone();
    let app = router(sim.clone(), &wire_cfg, opts).layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let log = log.clone();
            async move {
                log.lock()
                    .expect("requests")
                    .push((req.method().to_string(), req.uri().path().to_string()));
                next.run(req).await
            }
        },
    ));
    let base_url = serve(app).await;
    let jasper = Jasper::new(&config(&base_url, USER, KEY), ctx()).expect("adapter");
    Harness {
        sim,
        clock,
        jasper,
        base_url,
        unreadable,
        requests,
        _db: db,
    }
}

async fn sim_state(h: &Harness, n: u64) -> ServiceState {
    h.sim.set_faults(SimFaults::default());
    h.sim.card(&iccid(n)).await.expect("sim card").state
}

#[tokio::test]
async fn card_reads_status_and_cycle_usage() {
    let h = harness(&[
        (1, ServiceState::Active, 1_234_567),
        (2, ServiceState::Stopped, 0),
        (3, ServiceState::Cancelled, 5),
    ])
    .await;
    let c = h.jasper.card(&iccid(1)).await.expect("card 1");
    assert_eq!(c.iccid, iccid(1));
    assert_eq!(c.state, ServiceState::Active);
    assert_eq!(c.cycle_usage_bytes, 1_234_567);
    assert_eq!(c.changes, 0);
    assert_eq!(c.unknown, None);
    // The platform does not say which cycle it counted.
    assert_eq!(c.usage_cycle_start, None);
    // One call, ctdUsages: the session is not in it, and is left unknown (not "never").
    assert_eq!(c.last_session, LastSession::Unknown);
    assert!(h.jasper.reads_session_apart());
    // The traffic onboarded with the card is no session; recorded traffic is, to the millisecond.
    assert_eq!(
        h.jasper.last_session(&iccid(1)).await.expect("session"),
        LastSession::Never
    );
    h.sim.record_usage(&iccid(1), 1).await.expect("traffic");
    let at_sim = h.sim.card(&iccid(1)).await.expect("sim").last_session.at();
    assert!(at_sim.is_some());
    let seen = h
        .jasper
        .last_session(&iccid(1))
        .await
        .expect("session again");
    assert_eq!(
        seen.at().map(|t| t.timestamp_millis()),
        at_sim.map(|t| t.timestamp_millis())
    );
    assert_eq!(
        h.jasper.card(&iccid(2)).await.expect("card 2").state,
        ServiceState::Stopped
    );
    assert_eq!(
        h.jasper.card(&iccid(3)).await.expect("card 3").state,
        ServiceState::Cancelled
    );

    // Usage the device adds shows in the next read (on top of the 1 byte above).
    h.sim
        .record_usage(&iccid(1), 1_000)
        .await
        .expect("record usage");
    assert_eq!(
        h.jasper
            .card(&iccid(1))
            .await
            .expect("card")
            .cycle_usage_bytes,
        1_235_568
    );
}

#[tokio::test]
async fn extra_calls_report_usage_and_device_details() {
    let h = harness(&[(1, ServiceState::Stopped, 42)]).await;
    let u = h.jasper.ctd_usage(&iccid(1)).await.expect("ctd usage");
    assert_eq!(u.data_bytes, Some(42));
    assert!(!u.overage_limit_reached);
    assert_eq!(u.session_count, Some(0));

    let d = h.jasper.device_details(&iccid(1)).await.expect("details");
    assert_eq!(d.iccid, iccid(1));
    assert_eq!(d.status.as_deref(), Some("DEACTIVATED"));
    assert_eq!(d.state, Some(ServiceState::Stopped));
    assert_eq!(
        d.rate_plan.as_deref(),
        Some(WireOptions::default().rate_plan.as_str())
    );
    assert_eq!((d.imsi, d.msisdn, d.date_activated), (None, None, None));
}

#[tokio::test]
async fn cancel_confirms_a_retired_card_and_refuses_one_in_service() {
    let h = harness(&[(1, ServiceState::Stopped, 0), (2, ServiceState::Stopped, 0)]).await;
    // The platform releases the number itself (here: the simulator is told to).
    h.sim.cancel(&iccid(1)).await.expect("sim cancel");
    h.jasper.cancel(&iccid(1)).await.expect("cancel confirmed");
    h.jasper.cancel(&iccid(1)).await.expect("cancel again");

    match h.jasper.cancel(&iccid(2)).await {
        Err(CarrierError::Rejected { code, message }) => {
            assert_eq!(code, "NOT_RETIRED");
            assert!(message.contains("DEACTIVATED"), "{message}");
        }
        other => panic!("expected NOT_RETIRED, got {other:?}"),
    }
    assert_eq!(sim_state(&h, 2).await, ServiceState::Stopped);

    // A retired card cannot be brought back: refused with a published code (10000005, SIM 卡
    // 状态无效), never the simulator's own.
    match h.jasper.restore(&iccid(1)).await {
        Err(CarrierError::Rejected { code, .. }) => assert_eq!(code, "10000005"),
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn onboard_checks_that_the_platform_knows_every_card() {
    let h = harness(&[(1, ServiceState::Active, 0), (2, ServiceState::Stopped, 0)]).await;
    let card = |n| OnboardCard {
        iccid: iccid(n),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    };
    h.jasper
        .onboard(&[card(1), card(2)])
        .await
        .expect("known cards");
    match h.jasper.onboard(&[card(1), card(9)]).await {
        Err(CarrierError::Rejected { code, .. }) => assert_eq!(code, "20000001"),
        other => panic!("expected 20000001, got {other:?}"),
    }
}

#[tokio::test]
async fn unknown_card_is_the_platforms_invalid_iccid() {
    let h = harness(&[(1, ServiceState::Active, 0)]).await;
    for r in [
        h.jasper.card(&iccid(7)).await.map(|_| ()),
        h.jasper.stop(&iccid(7)).await.map(drop),
        h.jasper.restore(&iccid(7)).await.map(drop),
        h.jasper.cancel(&iccid(7)).await.map(drop),
        h.jasper.ctd_usage(&iccid(7)).await.map(|_| ()),
        h.jasper.device_details(&iccid(7)).await.map(|_| ()),
    ] {
        match r {
            Err(CarrierError::Rejected { code, message }) => {
                assert_eq!(code, "20000001");
                assert!(message.contains("Invalid ICCID"), "{message}");
            }
            other => panic!("expected 20000001, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_the_platforms_code() {
    let h = harness(&[(1, ServiceState::Active, 0)]).await;
    for (user, key) in [(USER, "wrong-key"), ("someone-else", KEY)] {
        let bad = Jasper::new(&config(&h.base_url, user, key), ctx()).expect("adapter");
        for r in [
            bad.card(&iccid(1)).await.map(|_| ()),
            bad.stop(&iccid(1)).await.map(drop),
        ] {
            let e = r.expect_err("wrong credentials must fail");
            // Credentials never reach an error message.
            let text = e.to_string();
            assert!(!text.contains("wrong-key") && !text.contains(KEY), "{text}");
            match e {
                CarrierError::Rejected { code, .. } => assert_eq!(code, "10000001"),
                other => panic!("expected 10000001, got {other:?}"),
            }
        }
    }
    assert_eq!(sim_state(&h, 1).await, ServiceState::Active);
}

/// A platform that answers 200 with something that is not Control Center's JSON.
async fn garbage_platform(body: &'static str) -> String {
    let app = axum::Router::new()
        .route(
            "/rws/api/v1/devices/{iccid}",
            axum::routing::get(move || async move { body }).put(move || async move { body }),
        )
        .route(
            "/rws/api/v1/devices/{iccid}/ctdUsages",
            axum::routing::get(move || async move { body }),
        );
    serve(app).await
}

#[tokio::test]
async fn malformed_answers_are_transient_for_reads_and_unknown_for_changes() {
    for body in [
        "<html>gateway</html>",
        "{\"iccid\": 5}",
        "{\"status\": \"ACTIVATED\"}",
    ] {
        let base = garbage_platform(body).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        let read = j.card(&iccid(1)).await;
        match read {
            Err(CarrierError::Transient(m)) => assert!(m.contains("malformed"), "{m}"),
            other => panic!("expected malformed, got {other:?}"),
        }
        let change = j.stop(&iccid(1)).await;
        match change {
            Err(CarrierError::OutcomeUnknown(m)) => assert!(m.contains("malformed"), "{m}"),
            other => panic!("expected malformed, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn an_unknown_device_status_is_never_guessed() {
    let odd = |axum::extract::Path(i): axum::extract::Path<String>| async move {
        format!("{{\"iccid\":\"{i}\",\"status\":\"SUSPENDED_FOREVER\",\"ctdDataUsage\":7}}")
    };
    let base = serve(
        axum::Router::new()
            .route("/rws/api/v1/devices/{iccid}", axum::routing::get(odd))
            .route(
                "/rws/api/v1/devices/{iccid}/ctdUsages",
                axum::routing::get(odd),
            ),
    )
    .await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    // A cancellation is never confirmed by it: unavailable.
    match j.cancel(&iccid(1)).await {
        Err(CarrierError::Transient(m)) => assert!(m.contains("SUSPENDED_FOREVER"), "{m}"),
        other => panic!("expected malformed, got {other:?}"),
    }
    // An import still finds the card: the platform answered about it.
    j.onboard(&[OnboardCard {
        iccid: iccid(1),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    }])
    .await
    .expect("a card with any status exists");
    // A read is the card, marked unknown at carrier, not an error.
    let c = j.card(&iccid(1)).await.expect("read");
    let why = c.unknown.clone().expect("unknown at carrier");
    assert!(why.contains("SUSPENDED_FOREVER"), "{why}");
    assert_eq!(c.known_state(), None);
}

#[tokio::test]
async fn the_simulator_speaks_control_centers_envelopes() {
    let h = harness(&[(1, ServiceState::Active, 0)]).await;
    let http = reqwest::Client::new();
    let url = format!("{}/devices/{}", h.base_url, iccid(1));
    let envelope = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.expect("JSON error body");
        (
            status,
            v["errorCode"].as_str().unwrap_or_default().to_string(),
            v["errorMessage"].is_string(),
        )
    };

    let no_auth = http.get(&url).send().await.expect("send");
    assert_eq!(envelope(no_auth).await, (401, "10000001".into(), true));

    let bad_json = http
        .put(&url)
        .basic_auth(USER, Some(KEY))
        .body("{status: DEACTIVATED")
        .send()
        .await
        .expect("send");
    assert_eq!(envelope(bad_json).await, (400, "10000023".into(), true));
    assert_eq!(sim_state(&h, 1).await, ServiceState::Active);

    let ok = http
        .get(&url)
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .expect("send");
    assert_eq!(ok.status().as_u16(), 200);
    let v: serde_json::Value = ok.json().await.expect("device JSON");
    assert_eq!(v["status"], "ACTIVATED");
    assert_eq!(v["iccid"], iccid(1).as_str());
    assert!(v.get("ratePlan").is_some() && v.get("dateActivated").is_some());
}

/// The adapter's account: the carrier's default, with the test's policy.
fn ctx() -> simgate::carrier::platform::AccountCtx {
    simgate::carrier::platform::AccountCtx {
        policy: policy(),
        ..simgate::carrier::platform::AccountCtx::default_for(CarrierId::Unicom)
    }
}

// ---------------------------------------------------------------------------------------------
// One call per read, the session apart, "unknown at carrier" per card, refusals of the account,
// fair use in the simulator.
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn wire_jasper_card_is_one_ctd_usages_call_and_the_session_one_more() {
    let h = harness(&[(1, ServiceState::Active, 5)]).await;
    h.take_requests();
    h.jasper.card(&iccid(1)).await.expect("card");
    let path = format!("/rws/api/v1/devices/{}", iccid(1));
    assert_eq!(
        h.take_requests(),
        vec![("GET".to_string(), format!("{path}/ctdUsages"))]
    );
    h.jasper.last_session(&iccid(1)).await.expect("session");
    assert_eq!(
        h.take_requests(),
        vec![("GET".to_string(), format!("{path}/sessionInfo"))]
    );
}

#[tokio::test]
async fn wire_jasper_unreadable_cards_are_read_as_unknown_and_the_sync_goes_on() {
    let h = harness(&[
        (1, ServiceState::Active, 10),
        (2, ServiceState::Active, 20),
        (3, ServiceState::Stopped, 30),
        (4, ServiceState::Active, 40),
    ])
    .await;
    {
        let mut u = h.unreadable.lock().expect("hook");
        let odd = |status: Option<Option<&str>>, null_usage| Unreadable {
            status: status.map(|s| s.map(str::to_string)),
            null_usage,
        };
        u.insert(
            iccid(2).as_str().into(),
            odd(Some(Some("SUSPENDED")), false),
        );
        u.insert(iccid(3).as_str().into(), odd(None, true));
        u.insert(iccid(4).as_str().into(), odd(Some(None), false));
    }
    // Card 9 is not at the platform (20000001): left out. The odd ones are cards, marked.
    let ids = [iccid(1), iccid(2), iccid(3), iccid(4), iccid(9)];
    let read = h.jasper.cards(&ids).await.expect("the sync's read");
    let by: std::collections::HashMap<_, _> = read.iter().map(|c| (c.iccid.clone(), c)).collect();
    assert_eq!(read.len(), 4, "{read:?}");
    assert_eq!(
        (
            by[&iccid(1)].unknown.as_deref(),
            by[&iccid(1)].known_state()
        ),
        (None, Some(ServiceState::Active))
    );
    let why = |n| by[&iccid(n)].unknown.clone().unwrap_or_default();
    assert!(why(2).contains("\"SUSPENDED\""), "{}", why(2));
    assert!(why(3).contains("ctdDataUsage is null"), "{}", why(3));
    assert!(!why(3).contains("status"), "{}", why(3));
    assert!(why(4).contains("status is null"), "{}", why(4));
    for n in [2, 3, 4] {
        assert_eq!(by[&iccid(n)].known_state(), None);
    }
}

#[tokio::test]
async fn wire_jasper_a_refusal_of_the_account_fails_the_sync_instead_of_dropping_cards() {
    let h = harness(&[(1, ServiceState::Active, 0)]).await;
    let bad = Jasper::new(&config(&h.base_url, USER, "wrong-key"), ctx()).expect("adapter");
    match bad.cards(&[iccid(1)]).await {
        Err(CarrierError::Rejected { code, .. }) => assert_eq!(code, "10000001"),
        other => panic!("expected the account's refusal, got {other:?}"),
    }
    let refused = |code: &str| CarrierError::Rejected {
        code: code.into(),
        message: String::new(),
    };
    // Only "no such card" drops a card; the account-wide codes, and any other refusal, fail.
    for code in ["20000001", "10000021"] {
        assert!(h.jasper.card_not_known(&refused(code)), "{code}");
    }
    for code in [
        "10000001", "10000024", "10000028", "10000030", "10000005", "HTTP_403",
    ] {
        assert!(!h.jasper.card_not_known(&refused(code)), "{code}");
    }
    assert!(!h
        .jasper
        .card_not_known(&CarrierError::Transient("x".into())));
}

#[tokio::test]
async fn wire_jasper_simulator_refuses_unknown_fields_and_a_second_call_at_once() {
    let h = harness_with(
        &[(1, ServiceState::Active, 0)],
        WireOptions {
            rate_limit_status: reqwest::StatusCode::OK,
            ..WireOptions::default()
        },
    )
    .await;
    let http = reqwest::Client::new();
    let url = format!("{}/devices/{}", h.base_url, iccid(1));
    let code = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let v: serde_json::Value = r.json().await.expect("JSON body");
        (
            status,
            v["errorCode"].as_str().unwrap_or_default().to_string(),
        )
    };
    let put = |body: &'static str| {
        http.put(&url)
            .basic_auth(USER, Some(KEY))
            .header("content-type", "application/json")
            .body(body)
            .send()
    };
    // §7 10000028: unrecognized parameters, in a body or a query.
    let r = put(r#"{"status":"DEACTIVATED","suspendReason":"x"}"#)
        .await
        .expect("send");
    assert_eq!(code(r).await, (400, "10000028".into()));
    let r = http
        .get(format!("{url}/ctdUsages?cycle=1"))
        .basic_auth(USER, Some(KEY))
        .send()
        .await
        .expect("send");
    assert_eq!(code(r).await, (400, "10000028".into()));
    // 10000011: none of the fields.
    assert_eq!(
        code(put("{}").await.expect("send")).await,
        (400, "10000011".into())
    );
    // A documented field the simulator does not change, or a status it cannot set: 10000005.
    for body in [r#"{"ratePlan":"X"}"#, r#"{"status":"INVENTORY"}"#] {
        assert_eq!(
            code(put(body).await.expect("send")).await,
            (400, "10000005".into())
        );
    }
    assert_eq!(sim_state(&h, 1).await, ServiceState::Active);

    // One call at a time (§8): a second call while the first is answered gets 40000029, here
    // with a 200 (the option), which the adapter still reads as the rate limit.
    h.sim.set_faults(SimFaults {
        latency_ms: 300,
        ..SimFaults::default()
    });
    let one = iccid(1);
    let (first, second) = tokio::join!(h.jasper.card(&one), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        h.jasper.card(&one).await
    });
    first.expect("the first call is answered");
    match second {
        Err(CarrierError::RateLimited { retry_after }) => {
            assert_eq!(retry_after, Some(Duration::from_secs(1)))
        }
        other => panic!("expected 40000029, got {other:?}"),
    }
    // Once the first is answered, the next call is served.
    h.jasper.card(&iccid(1)).await.expect("served again");
}

// ---------------------------------------------------------------------------------------------
// Golden fixtures from the dossier (`tests/fixtures/carrier-wire/jasper/`, see its INDEX.md):
// the adapter parses each reply to the dossier's values, builds each request as the dossier's
// request examples, and the simulator answers with the dossier's shapes.
// ---------------------------------------------------------------------------------------------

/// The dossier's fake ICCID (jasper.md, head).
const DOSSIER_ICCID: &str = "89860600000000000001";

/// Every fixture file, with what it is; a file in the folder but not here fails
/// `wire_jasper_every_fixture_is_in_the_table`.
const FIXTURES: &[&str] = &[
    "get-device-details.s1.request.txt",
    "get-device-details.s1.reply.json",
    "edit-device-details.s2.request-rate-plan.txt",
    "edit-device-details.s2.request-status.json",
    "edit-device-details.s2.reply.json",
    "get-device-usage.s3.request.txt",
    "get-device-usage.s3.reply.json",
    "get-session-details.s4.request.txt",
    "get-session-details.s4.reply-online.json",
    "search-devices.s5.request.txt",
    "search-devices.s5.reply.json",
    "any-call.s7.reply-20000001.json",
    "any-call.s7.reply-10000001.json",
    "derived/get-device-usage.s3.reply-status-outside-table.derived.json",
    "derived/get-device-usage.s3.reply-nulls.derived.json",
    "derived/get-session-details.s4.reply-ended.derived.json",
    "derived/get-session-details.s4.reply-never.derived.json",
    "derived/search-devices.s5.reply-status-outside-table.derived.json",
];

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/carrier-wire/jasper")
}

fn fixture(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn wire_jasper_every_fixture_is_in_the_table() {
    let found = crate::helpers::fixture_files("jasper");
    let mut table: Vec<String> = FIXTURES.iter().map(|s| s.to_string()).collect();
    table.sort();
    assert_eq!(found, table, "fixture files and the test's table differ");
    let index = fixture("INDEX.md");
    for f in FIXTURES {
        assert!(
            index.contains(&format!("`{f}`")),
            "INDEX.md does not list {f}"
        );
    }
}

/// One request as a fake platform saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: Option<String>,
    headers: reqwest::header::HeaderMap,
    body: Vec<u8>,
}

/// A fake platform answering each call (`device`, `usage`, `session`, `edit`, `search`) with
/// a fixed status and body, recording every request.
async fn platform_answering(
    answers: &[(&'static str, u16, String)],
) -> (String, Arc<std::sync::Mutex<Vec<Seen>>>) {
    let answers: Arc<std::collections::HashMap<&'static str, (u16, String)>> = Arc::new(
        answers
            .iter()
            .map(|(call, status, body)| (*call, (*status, body.clone())))
            .collect(),
    );
    let seen: Arc<std::sync::Mutex<Vec<Seen>>> = Arc::default();
    let log = seen.clone();
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let answers = answers.clone();
        let log = log.clone();
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20)
                .await
                .expect("request body")
                .to_vec();
            let path = parts.uri.path().to_string();
            let call = match (parts.method.as_str(), path.rsplit('/').next()) {
                ("PUT", _) => "edit",
                (_, Some("ctdUsages")) => "usage",
                (_, Some("sessionInfo")) => "session",
                (_, Some("devices")) => "search",
                _ => "device",
            };
            log.lock().expect("seen").push(Seen {
                method: parts.method.to_string(),
                path,
                query: parts.uri.query().map(str::to_string),
                headers: parts.headers.clone(),
                body,
            });
            let (status, body) = answers
                .get(call)
                .cloned()
                .unwrap_or((500, format!("no fixture for {call}")));
            (
                axum::http::StatusCode::from_u16(status).expect("status"),
                [("content-type", "application/json")],
                body,
            )
        }
    });
    (serve(app).await, seen)
}

fn dossier_iccid() -> Iccid {
    Iccid::parse_any(DOSSIER_ICCID).expect("the dossier's ICCID")
}

#[tokio::test]
async fn wire_jasper_fixture_replies_parse_to_the_dossier_values() {
    let ok = |call: &'static str, file: &str| (call, 200, fixture(file));
    let id = dossier_iccid();

    // §1 skeleton: placeholders are kept as text or unknown, never an error.
    let (base, _) = platform_answering(&[ok("device", "get-device-details.s1.reply.json")]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    let d = j.device_details(&id).await.expect("§1 reply");
    assert_eq!(
        (d.status.as_deref(), d.state),
        (Some("ACTIVATED"), Some(ServiceState::Active))
    );
    assert_eq!(d.rate_plan.as_deref(), Some("<rate plan name>"));
    assert_eq!(
        (d.date_activated, d.date_activated_text.as_deref()),
        (None, Some("<date>"))
    );
    assert_eq!(
        (d.imsi.as_deref(), d.msisdn.as_deref()),
        (Some("460060000000001"), Some("8614000000001"))
    );
    let card = OnboardCard {
        iccid: id.clone(),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    };
    j.onboard(&[card]).await.expect("§1 proves the card exists");
    assert!(
        matches!(j.cancel(&id).await, Err(CarrierError::Rejected { ref code, .. }) if code == "NOT_RETIRED")
    );

    // §3 skeleton: the whole card() answer in one body.
    let (base, _) = platform_answering(&[ok("usage", "get-device-usage.s3.reply.json")]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    let c = j.card(&id).await.expect("§3 reply");
    assert_eq!(
        (c.state, c.cycle_usage_bytes, c.unknown.as_deref()),
        (ServiceState::Active, 1_048_576, None)
    );
    assert_eq!(
        (c.last_session, c.usage_cycle_start),
        (LastSession::Unknown, None)
    );
    let u = j.ctd_usage(&id).await.expect("§3 usage");
    assert_eq!(
        (u.data_bytes, u.session_count, u.overage_limit_reached),
        (Some(1_048_576), Some(3), false)
    );
    // Derived from §3 and §6: a status outside the table, null status and usage.
    for (file, says) in [
        (
            "derived/get-device-usage.s3.reply-status-outside-table.derived.json",
            vec!["<status outside §6>"],
        ),
        (
            "derived/get-device-usage.s3.reply-nulls.derived.json",
            vec!["status is null", "ctdDataUsage is null"],
        ),
    ] {
        let (base, _) = platform_answering(&[ok("usage", file)]).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        let c = j
            .card(&id)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        let why = c
            .unknown
            .clone()
            .unwrap_or_else(|| panic!("{file}: not unknown"));
        for s in says {
            assert!(why.contains(s), "{file}: {why}");
        }
        assert_eq!(c.known_state(), None, "{file}");
    }

    // §4: online skeleton (started, not ended: in session now, whatever the date text says).
    let before = chrono::Utc::now();
    for (file, expect) in [
        ("get-session-details.s4.reply-online.json", None),
        (
            "derived/get-session-details.s4.reply-ended.derived.json",
            Some(LastSession::Unknown),
        ),
        (
            "derived/get-session-details.s4.reply-never.derived.json",
            Some(LastSession::Never),
        ),
    ] {
        let (base, _) = platform_answering(&[ok("session", file)]).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        let s = j
            .last_session(&id)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:?}"));
        match expect {
            Some(e) => assert_eq!(s, e, "{file}"),
            None => assert!(
                s.at()
                    .is_some_and(|t| t >= before && t <= chrono::Utc::now()),
                "{file}: {s:?}"
            ),
        }
    }

    // §2 reply skeleton: the change is done. `{"iccid"}` names no order: the receipt has no
    // id, and Control Center has no order query in the dossier.
    let (base, _) = platform_answering(&[ok("edit", "edit-device-details.s2.reply.json")]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    assert_eq!(j.stop(&id).await.expect("§2 reply"), Receipt::applied());
    assert_eq!(j.restore(&id).await.expect("§2 reply"), Receipt::applied());
    assert!(!j.queries_orders());

    // §7 verbatim errors: 20000001 drops the card from a sync, 10000001 fails it.
    for (file, status, code, dropped) in [
        ("any-call.s7.reply-20000001.json", 404, "20000001", true),
        ("any-call.s7.reply-10000001.json", 401, "10000001", false),
    ] {
        let answers: Vec<_> = ["device", "usage", "session", "edit"]
            .into_iter()
            .map(|call| (call, status, fixture(file)))
            .collect();
        let (base, _) = platform_answering(&answers).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        for r in [
            j.card(&id).await.map(|_| ()),
            j.last_session(&id).await.map(|_| ()),
            j.stop(&id).await.map(drop),
            j.cancel(&id).await.map(drop),
        ] {
            match r {
                Err(CarrierError::Rejected { code: c, message }) => {
                    assert_eq!(c, code, "{file}");
                    assert!(!message.is_empty(), "{file}");
                }
                other => panic!("{file}: expected {code}, got {other:?}"),
            }
        }
        let sync = j.cards(std::slice::from_ref(&id)).await;
        assert_eq!(sync.is_ok(), dropped, "{file}: {sync:?}");
        if let Ok(found) = sync {
            assert!(found.is_empty(), "{file}");
        }
    }
}

/// A request fixture: its method, the path after `rws/api/v1` and its header lines.
fn request_fixture(name: &str) -> (String, String, Vec<(String, String)>) {
    let text = fixture(name);
    let mut lines = text.lines();
    let first = lines.next().expect("request line");
    let (method, url) = first.split_once(' ').expect("METHOD URL");
    let path = url
        .split_once("/rws/api/v1")
        .map(|(_, p)| p.to_string())
        .unwrap_or_else(|| panic!("{name}: no /rws/api/v1 in {url}"));
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    (method.to_string(), path, headers)
}

fn json_keys(body: &[u8]) -> std::collections::BTreeSet<String> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(serde_json::Value::Object(m)) => m.keys().cloned().collect(),
        other => panic!("not a JSON object: {other:?}"),
    }
}

#[tokio::test]
async fn wire_jasper_requests_match_the_dossier_requests() {
    let ok = |call: &'static str, file: &str| (call, 200, fixture(file));
    let (base, seen) = platform_answering(&[
        ok("device", "get-device-details.s1.reply.json"),
        ok("usage", "get-device-usage.s3.reply.json"),
        ok("session", "get-session-details.s4.reply-online.json"),
        ok("edit", "edit-device-details.s2.reply.json"),
    ])
    .await;
    // The §1 example's Basic credentials are base64("user:key").
    let j = Jasper::new(&config(&base, "user", "key"), ctx()).expect("adapter");
    let id = dossier_iccid();
    j.device_details(&id).await.expect("device");
    j.card(&id).await.expect("usage");
    j.last_session(&id).await.expect("session");
    j.stop(&id).await.expect("stop");
    j.restore(&id).await.expect("restore");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 5, "{seen:?}");
    let (_, _, s1_headers) = request_fixture("get-device-details.s1.request.txt");
    let header = |s: &Seen, name: &str| {
        s.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    for (s, file) in seen.iter().zip([
        "get-device-details.s1.request.txt",
        "get-device-usage.s3.request.txt",
        "get-session-details.s4.request.txt",
        "edit-device-details.s2.request-rate-plan.txt",
        "edit-device-details.s2.request-rate-plan.txt",
    ]) {
        let (method, path, headers) = request_fixture(file);
        // The adapter's base_url ends in the dossier's `rws/api/v1` too.
        let ours = s.path.strip_prefix("/rws/api/v1");
        assert_eq!(
            (s.method.as_str(), ours),
            (method.as_str(), Some(path.as_str())),
            "{file}"
        );
        assert_eq!(s.query, None, "{file}: no query parameters");
        // The file's own headers, and §0.2/§0.3 for every call: Basic user:apiKey, Accept JSON.
        for (k, v) in headers.iter().chain(s1_headers.iter().take(2)) {
            assert_eq!(header(s, k).as_deref(), Some(v.as_str()), "{file}: {k}");
        }
        if method == "GET" {
            assert!(s.body.is_empty(), "{file}: a GET has no body");
        }
    }
    // §2: the body names the status only, with a §6 value.
    let status_keys = json_keys(fixture("edit-device-details.s2.request-status.json").as_bytes());
    for (s, status) in seen[3..].iter().zip(["DEACTIVATED", "ACTIVATED"]) {
        assert_eq!(json_keys(&s.body), status_keys);
        let v: serde_json::Value = serde_json::from_slice(&s.body).expect("PUT body");
        assert_eq!(v["status"], status);
    }
    assert_eq!(
        seen[3].body,
        fixture("edit-device-details.s2.request-status.json").into_bytes(),
        "stop sends the §2 example byte for byte"
    );
}

#[tokio::test]
async fn wire_jasper_simulator_answers_in_the_dossier_shapes() {
    let h = harness(&[(1, ServiceState::Active, 5)]).await;
    h.sim.record_usage(&iccid(1), 1).await.expect("a session");
    let http = reqwest::Client::new();
    let url = format!("{}/devices/{}", h.base_url, iccid(1));
    let body = |r: reqwest::RequestBuilder| async move {
        let r = r.send().await.expect("send");
        (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
    };
    for (tail, file) in [
        ("", "get-device-details.s1.reply.json"),
        ("/ctdUsages", "get-device-usage.s3.reply.json"),
        ("/sessionInfo", "get-session-details.s4.reply-online.json"),
    ] {
        let (status, ours) =
            body(http.get(format!("{url}{tail}")).basic_auth(USER, Some(KEY))).await;
        assert_eq!(status, 200, "{file}");
        assert_eq!(
            json_keys(&ours),
            json_keys(fixture(file).as_bytes()),
            "{file}"
        );
    }
    let (status, ours) = body(
        http.put(&url)
            .basic_auth(USER, Some(KEY))
            .json(&serde_json::json!({"status": "DEACTIVATED"})),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        json_keys(&ours),
        json_keys(fixture("edit-device-details.s2.reply.json").as_bytes())
    );
    // The two verbatim error bodies, byte for byte, with their statuses.
    let unknown = format!("{}/devices/{}", h.base_url, iccid(9));
    let (status, ours) = body(http.get(&unknown).basic_auth(USER, Some(KEY))).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&ours).into_owned()),
        (404, fixture("any-call.s7.reply-20000001.json"))
    );
    let (status, ours) = body(http.get(&url).basic_auth(USER, Some("nope"))).await;
    assert_eq!(
        (status, String::from_utf8_lossy(&ours).into_owned()),
        (401, fixture("any-call.s7.reply-10000001.json"))
    );
}

#[tokio::test]
async fn wire_jasper_get_card_shows_unknown_at_carrier_until_cleared() {
    use crate::helpers::{card_input, get, import, spawn_app};
    for backend in [Backend::Sqlite, Backend::Postgres] {
        let Some(mut app) = spawn_app(backend).await else {
            continue;
        };
        let id = unicom_iccid(77);
        import(
            &mut app,
            vec![card_input(&id, simgate::pb::Carrier::ChinaUnicom)],
        )
        .await;
        assert_eq!(get(&mut app, &id).await.carrier_unknown, "");
        let iccid = Iccid::parse_any(&id).expect("iccid");
        let why = "ctdUsages: status \"SUSPENDED\" is not one of Control Center's eight statuses";
        assert!(app
            .store
            .set_carrier_unknown(&iccid, Some(why))
            .await
            .expect("mark"));
        // Written once: the same mark again changes nothing.
        assert!(!app
            .store
            .set_carrier_unknown(&iccid, Some(why))
            .await
            .expect("mark again"));
        assert_eq!(get(&mut app, &id).await.carrier_unknown, why);
        assert!(app
            .store
            .set_carrier_unknown(&iccid, None)
            .await
            .expect("clear"));
        assert_eq!(get(&mut app, &id).await.carrier_unknown, "");
        app.stop().await;
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 20: repeat windows and refusals of changes; no binding call, no order query.
// ---------------------------------------------------------------------------------------------

/// An error body in the §7 shape (verbatim examples) with another code: the simulator's
/// invented window code, or a code outside the table.
fn error_body(code: &str) -> String {
    format!(r#"{{"errorMessage":"<message>","errorCode":"{code}"}}"#)
}

#[tokio::test]
async fn wire_jasper_a_change_refused_with_the_window_code_or_an_unlisted_code_is_deferred() {
    let window = simgate::carrier::http::jasper::simulator::INVENTED_REPEAT_WINDOW;
    let id = dossier_iccid();
    let answering = |code: &str| {
        vec![
            ("edit", 400, error_body(code)),
            ("usage", 400, error_body(code)),
        ]
    };
    for setting in [Some(window.to_string()), None] {
        let (base, _) = platform_answering(&answering(window)).await;
        let cfg = JasperConfig {
            repeat_window_code: setting.clone(),
            ..config(&base, USER, KEY)
        };
        let j = Jasper::new(&cfg, ctx()).expect("adapter");
        for e in [
            j.stop(&id).await.expect_err("stop"),
            j.restore(&id).await.expect_err("restore"),
        ] {
            assert_deferred(&e, window, setting.is_some());
        }
        // Reads are unchanged: an unlisted code is "unavailable".
        let read = j.card(&id).await.expect_err("read");
        assert!(matches!(read, CarrierError::Transient(_)), "{read:?}");
    }
    // A code of the table keeps its kind (10000005: refused), unless the account names it its
    // window code.
    for (setting, deferred) in [(Some("10000005".to_string()), true), (None, false)] {
        let (base, _) = platform_answering(&answering("10000005")).await;
        let cfg = JasperConfig {
            repeat_window_code: setting,
            ..config(&base, USER, KEY)
        };
        let j = Jasper::new(&cfg, ctx()).expect("adapter");
        let e = j.stop(&id).await.expect_err("10000005");
        assert_eq!(
            matches!(e, CarrierError::Deferred { .. }),
            deferred,
            "{e:?}"
        );
        assert_eq!(
            matches!(e, CarrierError::Rejected { ref code, .. } if code == "10000005"),
            !deferred,
            "{e:?}"
        );
    }
    // An unlisted code on a 5xx or a 2xx may hide an applied change: unknown, not deferred.
    for status in [500, 200] {
        let (base, _) = platform_answering(&[("edit", status, error_body("99999999"))]).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        let e = j.stop(&id).await.expect_err("unknown");
        assert!(
            matches!(e, CarrierError::OutcomeUnknown(_)),
            "{status}: {e:?}"
        );
    }
}

#[tokio::test]
async fn wire_jasper_has_no_binding_call_and_refuses_every_mode_before_sending() {
    let (base, seen) = platform_answering(&[]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    assert!(j.rebind_modes().is_empty());
    for mode in [
        Rebind::Unbind,
        Rebind::CurrentDevice,
        Rebind::Imei("860000000000001".into()),
    ] {
        let e = j
            .rebind(&dossier_iccid(), &mode)
            .await
            .expect_err("refused");
        assert!(
            matches!(e, CarrierError::Rejected { ref code, .. } if code == "REBIND_NOT_SUPPORTED"),
            "{e:?}"
        );
    }
    assert_eq!(j.binding(&dossier_iccid()).await, Ok(None));
    assert!(seen.lock().expect("seen").is_empty(), "nothing was sent");
}

/// Through the wire simulator: a change inside the simulated carrier's repeat window is
/// refused with the simulator's (invented) window code, configurable, and the adapter defers
/// it, naming it a window when the account sets that code.
#[tokio::test]
async fn wire_jasper_the_simulated_repeat_window_is_deferred() {
    for (code, setting) in [
        (
            simgate::carrier::http::jasper::simulator::INVENTED_REPEAT_WINDOW,
            None,
        ),
        ("90000042", Some("90000042".to_string())),
    ] {
        let opts = WireOptions {
            repeat_window_code: code.to_string(),
            ..WireOptions::default()
        };
        let h = harness_with(&[(1, ServiceState::Active, 0)], opts).await;
        h.sim.set_faults(SimFaults {
            repeat_window_s: Some(1800),
            ..SimFaults::default()
        });
        let j = Jasper::new(
            &JasperConfig {
                repeat_window_code: setting.clone(),
                ..config(&h.base_url, USER, KEY)
            },
            ctx(),
        )
        .expect("adapter");
        assert_eq!(j.stop(&iccid(1)).await.expect("stop"), Receipt::applied());
        let e = j.restore(&iccid(1)).await.expect_err("inside the window");
        assert_deferred(&e, code, setting.is_some());
        assert_eq!(
            sim_state(&h, 1).await,
            ServiceState::Stopped,
            "nothing applied"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// §5 Search Devices: the list of modified cards (`changes_since`), and usage alone (`usage_of`).
// ---------------------------------------------------------------------------------------------

/// The query pairs of a URL query, decoded, in order.
fn query_pairs(q: &str) -> Vec<(String, String)> {
    url::form_urlencoded::parse(q.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// A Search Devices reply of `n` devices (with the dossier's field set), `lastPage` as given
/// (None: left out).
fn search_reply(n: u64, last_page: Option<bool>) -> String {
    let devices: Vec<serde_json::Value> = (1..=n)
        .map(|i| {
            serde_json::json!({"iccid": unicom_iccid(i), "status": "ACTIVATED",
                "ratePlan": "<rate plan>", "communicationPlan": "<comm plan>"})
        })
        .collect();
    let mut v = serde_json::json!({"pageNumber": 1, "devices": devices});
    if let Some(last) = last_page {
        v["lastPage"] = serde_json::Value::Bool(last);
    }
    v.to_string()
}

#[tokio::test]
async fn wire_jasper_search_fixtures_parse_and_the_request_matches_the_dossier() {
    let (base, seen) =
        platform_answering(&[("search", 200, fixture("search-devices.s5.reply.json"))]).await;
    let j = Jasper::new(&config(&base, "user", "key"), ctx()).expect("adapter");
    assert!(j.lists_changes());
    // The dossier example's time, with sub-seconds the wire drops.
    let since = chrono::DateTime::parse_from_rfc3339("2016-04-18T17:31:34.250Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    let page = j.changes_since(since, 1).await.expect("§5 skeleton");
    assert_eq!(page.cards.len(), 1);
    assert_eq!(page.cards[0].iccid, dossier_iccid());
    assert_eq!(page.cards[0].state, Some(ServiceState::Active));
    assert_eq!(page.cards[0].status, "ACTIVATED");
    assert!(page.last_page);

    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 1, "one call a page");
    let s = &seen[0];
    let (method, target, _) = request_fixture("search-devices.s5.request.txt");
    let (path, query) = target.split_once('?').expect("the example has a query");
    assert_eq!(
        (s.method.as_str(), s.path.strip_prefix("/rws/api/v1")),
        (method.as_str(), Some(path))
    );
    // The example's parameters in its order, without `status` (the sweep wants every status);
    // the raw text as the example encodes it (offset `+00:00` as `%2B00%3A00`).
    let ours = s.query.clone().expect("a query");
    let mut want = query_pairs(query);
    want.retain(|(k, _)| k != "status");
    assert_eq!(query_pairs(&ours), want);
    assert!(
        ours.starts_with("modifiedSince=2016-04-18T17%3A31%3A34%2B00%3A00&"),
        "{ours}"
    );
    let size: u32 = query_pairs(&ours)
        .iter()
        .find(|(k, _)| k == "pageSize")
        .and_then(|(_, v)| v.parse().ok())
        .expect("pageSize");
    assert!(size <= 50, "{size}");
    assert!(s.body.is_empty());
    // §0.2/§0.3 on this call too: Basic user:apiKey, Accept JSON.
    let (_, _, s1_headers) = request_fixture("get-device-details.s1.request.txt");
    for (k, v) in s1_headers.iter().take(2) {
        assert_eq!(
            s.headers.get(k.as_str()).and_then(|h| h.to_str().ok()),
            Some(v.as_str()),
            "{k}"
        );
    }

    // A status outside the §6 table: listed, with no state and its word.
    let (base, _) = platform_answering(&[(
        "search",
        200,
        fixture("derived/search-devices.s5.reply-status-outside-table.derived.json"),
    )])
    .await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    let page = j.changes_since(since, 1).await.expect("derived");
    assert_eq!(page.cards[0].state, None);
    assert_eq!(page.cards[0].status, "<status outside §6>");
}

#[tokio::test]
async fn wire_jasper_search_reply_without_last_page() {
    // No source shows a reply without `lastPage`: a short page is the last, a full one is not
    // (one more call at worst, a card never left unlisted).
    let since = start_time();
    for (n, last) in [(3, true), (50, false), (0, true)] {
        let (base, _) = platform_answering(&[("search", 200, search_reply(n, None))]).await;
        let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
        let page = j.changes_since(since, 1).await.expect("page");
        assert_eq!((page.cards.len() as u64, page.last_page), (n, last), "{n}");
    }
    // `lastPage` sent wins.
    let (base, _) = platform_answering(&[("search", 200, search_reply(50, Some(true)))]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    assert!(j.changes_since(since, 1).await.expect("page").last_page);
    // Another page than asked for is malformed; page 0 is refused before sending.
    let (base, seen) = platform_answering(&[("search", 200, search_reply(1, Some(true)))]).await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    let e = j
        .changes_since(since, 2)
        .await
        .expect_err("page 1 for page 2");
    assert!(
        matches!(e, CarrierError::Transient(ref m) if m.contains("malformed")),
        "{e:?}"
    );
    let e = j.changes_since(since, 0).await.expect_err("page 0");
    assert!(matches!(e, CarrierError::Rejected { .. }), "{e:?}");
    assert_eq!(seen.lock().expect("seen").len(), 1, "page 0 sent nothing");
}

#[tokio::test]
async fn wire_jasper_changes_since_pages_the_cards_the_simulator_changed_after_t() {
    let cards: Vec<(u64, ServiceState, u64)> =
        (1..=121).map(|n| (n, ServiceState::Active, 0)).collect();
    let h = harness(&cards).await;
    let minute = chrono::Duration::minutes(1);
    h.clock.advance(minute).expect("clock");
    // Card 121 changes before T: not listed.
    h.sim.stop(&iccid(121)).await.expect("stop 121");
    h.clock.advance(minute).expect("clock");
    let t = h.clock.now();
    h.clock.advance(minute).expect("clock");
    for n in 1..=120 {
        h.sim.stop(&iccid(n)).await.expect("stop");
        // Distinct modification times, so the oldest-first order is the order stopped.
        h.clock
            .advance(chrono::Duration::seconds(1))
            .expect("clock");
    }
    h.take_requests();
    let mut listed = Vec::new();
    for (page, size, last) in [(1, 50, false), (2, 50, false), (3, 20, true)] {
        let p = h.jasper.changes_since(t, page).await.expect("page");
        assert_eq!((p.cards.len(), p.last_page), (size, last), "page {page}");
        assert!(
            p.cards
                .iter()
                .all(|c| c.state == Some(ServiceState::Stopped) && c.status == "DEACTIVATED"),
            "page {page}: {p:?}"
        );
        listed.extend(p.cards.into_iter().map(|c| c.iccid));
    }
    // Oldest change first: cards 1..=120 in the order stopped, once each, and not card 121.
    assert_eq!(listed, (1..=120).map(iccid).collect::<Vec<_>>());
    assert!(!listed.contains(&iccid(121)));
    // One call a page, each on the list's own path.
    let path = "/rws/api/v1/devices".to_string();
    assert_eq!(h.take_requests(), vec![("GET".to_string(), path); 3]);
    // From before card 121 changed, it is listed first.
    let p = h
        .jasper
        .changes_since(t - minute * 2, 1)
        .await
        .expect("page");
    assert_eq!(p.cards.first().map(|c| c.iccid.clone()), Some(iccid(121)));
}

#[tokio::test]
async fn wire_jasper_usage_of_is_one_ctd_usages_call() {
    let h = harness(&[
        (1, ServiceState::Stopped, 4_321),
        (2, ServiceState::Active, 9),
    ])
    .await;
    h.take_requests();
    let u = h.jasper.usage_of(&iccid(1)).await.expect("usage");
    assert_eq!(u.cycle_usage_bytes, 4_321);
    // As `card()`: the platform does not say which cycle it counted.
    assert_eq!(u.usage_cycle_start, None);
    assert_eq!(
        h.take_requests(),
        vec![(
            "GET".to_string(),
            format!("/rws/api/v1/devices/{}/ctdUsages", iccid(1))
        )]
    );
    // A null usage is never 0 bytes; an unknown card is the platform's 20000001.
    h.unreadable.lock().expect("hook").insert(
        iccid(2).as_str().into(),
        Unreadable {
            status: None,
            null_usage: true,
        },
    );
    match h.jasper.usage_of(&iccid(2)).await {
        Err(CarrierError::Rejected { code, .. }) => assert_eq!(code, "USAGE_UNKNOWN"),
        other => panic!("expected USAGE_UNKNOWN, got {other:?}"),
    }
    match h.jasper.usage_of(&iccid(9)).await {
        Err(CarrierError::Rejected { code, .. }) => assert_eq!(code, "20000001"),
        other => panic!("expected 20000001, got {other:?}"),
    }
}

#[tokio::test]
async fn wire_jasper_simulator_search_devices_in_the_dossier_shape_and_codes() {
    let h = harness(&[(1, ServiceState::Active, 0), (2, ServiceState::Active, 0)]).await;
    h.clock
        .advance(chrono::Duration::minutes(1))
        .expect("clock");
    let since = h.clock.now();
    h.clock
        .advance(chrono::Duration::minutes(1))
        .expect("clock");
    h.sim.stop(&iccid(1)).await.expect("stop");
    let http = reqwest::Client::new();
    let url = format!("{}/devices", h.base_url);
    let get = |q: String| {
        let r = http
            .get(format!("{url}?{q}"))
            .basic_auth(USER, Some(KEY))
            .send();
        async move {
            let r = r.await.expect("send");
            (r.status().as_u16(), r.bytes().await.expect("body").to_vec())
        }
    };
    let at = url::form_urlencoded::byte_serialize(
        simgate::carrier::http::jasper::wire::modified_since_text(since).as_bytes(),
    )
    .collect::<String>();
    let (status, body) = get(format!("modifiedSince={at}&pageSize=50&pageNumber=1")).await;
    assert_eq!(status, 200);
    assert_eq!(
        json_keys(&body),
        json_keys(fixture("search-devices.s5.reply.json").as_bytes())
    );
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    let device_keys = |v: &serde_json::Value| -> std::collections::BTreeSet<String> {
        v["devices"][0]
            .as_object()
            .expect("a device")
            .keys()
            .cloned()
            .collect()
    };
    let skeleton: serde_json::Value =
        serde_json::from_str(&fixture("search-devices.s5.reply.json")).expect("fixture");
    assert_eq!(device_keys(&v), device_keys(&skeleton));
    assert_eq!(v["devices"][0]["iccid"], iccid(1).as_str());
    assert_eq!(v["devices"][0]["status"], "DEACTIVATED");
    assert_eq!(
        (v["pageNumber"].clone(), v["lastPage"].clone()),
        (1.into(), true.into())
    );
    // The status filter.
    let (_, body) = get(format!("modifiedSince={at}&status=ACTIVATED")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(0));
    let (_, body) = get(format!("modifiedSince={at}&status=DEACTIVATED")).await;
    let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON");
    assert_eq!(v["devices"].as_array().map(Vec::len), Some(1));
    // Refusals with the §7 codes (HTTP 400: the status is not published).
    for (q, code) in [
        ("pageSize=50".to_string(), "10000003"),
        (format!("modifiedSince={at}&pageSize=51"), "10000006"),
        (format!("modifiedSince={at}&pageNumber=0"), "10000007"),
        ("modifiedSince=yesterday".to_string(), "10000012"),
        (format!("modifiedSince={at}&status=SUSPENDED"), "10000005"),
        (format!("modifiedSince={at}&sortBy=iccid"), "10000028"),
    ] {
        let (status, body) = get(q.clone()).await;
        let v: serde_json::Value = serde_json::from_slice(&body).expect("JSON error");
        assert_eq!((status, v["errorCode"].as_str()), (400, Some(code)), "{q}");
    }
    // The test hook's status outside the table reaches the list too: no state, word kept.
    h.unreadable.lock().expect("hook").insert(
        iccid(1).as_str().into(),
        Unreadable {
            status: Some(Some("SUSPENDED".into())),
            null_usage: false,
        },
    );
    let p = h.jasper.changes_since(since, 1).await.expect("page");
    assert_eq!(
        p.cards
            .iter()
            .map(|c| (c.iccid.clone(), c.state, c.status.as_str()))
            .collect::<Vec<_>>(),
        vec![(iccid(1), None, "SUSPENDED")]
    );
    // Credentials are checked like on every call.
    let r = http
        .get(format!("{url}?modifiedSince={at}"))
        .send()
        .await
        .expect("send");
    assert_eq!(r.status().as_u16(), 401);
}
