//! Contract tests: the China Unicom Control Center (Jasper) adapter against its wire simulator
//! over loopback HTTP, with the simulator backed by a SimCarrier on a test database.

use std::sync::Arc;
use std::time::Duration;

use simgate::carrier::http::jasper::simulator::{router, WireOptions};
use simgate::carrier::http::jasper::{Jasper, JasperConfig};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{Carrier, CarrierError, OnboardCard, ServiceState};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::{CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{start_time, unicom_iccid, Backend, TestDb};

const USER: &str = "unicom-api-user";
const KEY: &str = "test-api-key-0123456789";
/// The adapter's whole-call timeout in these tests; slow answers go well past it.
const REQUEST_MS: u64 = 600;

struct Harness {
    sim: Arc<SimCarrier>,
    jasper: Jasper,
    base_url: String,
    _db: TestDb,
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
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let store = db.store().await;
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start_time()));
    let sim = Arc::new(SimCarrier::new(policy(), store, clock));
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
        ..WireOptions::default()
    };
    let base_url = serve(router(sim.clone(), &wire_cfg, opts)).await;
    let jasper = Jasper::new(&config(&base_url, USER, KEY), ctx()).expect("adapter");
    Harness {
        sim,
        jasper,
        base_url,
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
    // The platform does not say which cycle it counted.
    assert_eq!(c.usage_cycle_start, None);
    // The traffic onboarded with the card is no session; recorded traffic is, to the millisecond.
    assert_eq!(c.last_session, simgate::carrier::LastSession::Never);
    h.sim.record_usage(&iccid(1), 1).await.expect("traffic");
    let at_sim = h.sim.card(&iccid(1)).await.expect("sim").last_session.at();
    assert!(at_sim.is_some());
    let c = h.jasper.card(&iccid(1)).await.expect("card 1 again");
    assert_eq!(
        c.last_session.at().map(|t| t.timestamp_millis()),
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
    assert_eq!(u.data_bytes, 42);
    assert!(!u.overage_limit_reached);

    let d = h.jasper.device_details(&iccid(1)).await.expect("details");
    assert_eq!(d.iccid, iccid(1));
    assert_eq!(d.status, "DEACTIVATED");
    assert_eq!(d.state, ServiceState::Stopped);
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
        h.jasper.stop(&iccid(7)).await,
        h.jasper.restore(&iccid(7)).await,
        h.jasper.cancel(&iccid(7)).await,
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
            bad.stop(&iccid(1)).await,
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
    let app = axum::Router::new().route(
        "/rws/api/v1/devices/{iccid}",
        axum::routing::get(move || async move { body }).put(move || async move { body }),
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
async fn an_unknown_device_status_is_malformed_not_guessed() {
    let base = serve(axum::Router::new().route(
        "/rws/api/v1/devices/{iccid}",
        axum::routing::get(
            |axum::extract::Path(i): axum::extract::Path<String>| async move {
                format!("{{\"iccid\":\"{i}\",\"status\":\"SUSPENDED_FOREVER\"}}")
            },
        ),
    ))
    .await;
    let j = Jasper::new(&config(&base, USER, KEY), ctx()).expect("adapter");
    match j.cancel(&iccid(1)).await {
        Err(CarrierError::Transient(m)) => assert!(m.contains("SUSPENDED_FOREVER"), "{m}"),
        other => panic!("expected malformed, got {other:?}"),
    }
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
