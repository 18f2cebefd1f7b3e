//! Contract tests: the OneLink adapter against the OneLink wire simulator over loopback HTTP.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::post;
use simgate::carrier::http::onelink::simulator::{router, WireOptions, WireStats, SIM_AUTH_FAILED};
use simgate::carrier::http::onelink::{OneLink, OneLinkConfig};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{Carrier, CarrierError, OnboardCard, ServiceState};
use simgate::clock::ManualClock;
use simgate::domain::{CarrierId, CarrierPolicy, Iccid, StopReason};

use crate::helpers::{mobile_iccid, start_time, Backend, TestDb};

const APPID: &str = "C5010000000001";
const PASSWORD: &str = "s3cret-pw";

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    addr
}

fn config(addr: SocketAddr, password: &str, request_ms: u64) -> OneLinkConfig {
    OneLinkConfig {
        base_url: format!("http://{addr}/v5/ec"),
        appid: APPID.into(),
        password: Secret::new(password),
        timeouts: HttpTimeouts {
            connect_ms: 1_000,
            request_ms,
        },
    }
}

fn iccid(n: u64) -> Iccid {
    Iccid::parse_any(&mobile_iccid(n)).expect("iccid")
}

struct Rig {
    adapter: OneLink,
    sim: Arc<SimCarrier>,
    stats: Arc<WireStats>,
    addr: SocketAddr,
    _db: TestDb,
}

/// Card 1: active with 5000 bytes used; card 2: stopped; card 3: active with 2048 bytes.
async fn rig_with(opts: WireOptions, request_ms: u64) -> Rig {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let sim = Arc::new(SimCarrier::new(
        policy.clone(),
        db.store().await,
        Arc::new(ManualClock::new(start_time())),
    ));
    sim.onboard(&[
        OnboardCard {
            iccid: iccid(1),
            state: ServiceState::Active,
            cycle_usage_bytes: 5_000,
            msisdn: None,
        },
        OnboardCard {
            iccid: iccid(2),
            state: ServiceState::Stopped,
            cycle_usage_bytes: 0,
            msisdn: None,
        },
        OnboardCard {
            iccid: iccid(3),
            state: ServiceState::Active,
            cycle_usage_bytes: 2_048,
            msisdn: None,
        },
    ])
    .await
    .expect("onboard into the sim");
    let stats = opts.stats.clone();
    // The simulator checks credentials against its own copy of the configuration.
    let server_cfg = config("127.0.0.1:1".parse().expect("addr"), PASSWORD, request_ms);
    let addr = serve(router(sim.clone(), &server_cfg, opts)).await;
    let adapter = OneLink::new(&config(addr, PASSWORD, request_ms), ctx(policy)).expect("adapter");
    Rig {
        adapter,
        sim,
        stats,
        addr,
        _db: db,
    }
}

async fn rig() -> Rig {
    rig_with(WireOptions::default(), 2_000).await
}

fn rejected_code(r: Result<impl std::fmt::Debug, CarrierError>) -> String {
    match r {
        Err(CarrierError::Rejected { code, .. }) => code,
        other => panic!("expected Rejected, got {other:?}"),
    }
}

#[tokio::test]
async fn card_reads_state_and_this_cycles_usage_in_bytes() {
    let r = rig().await;
    let a = r.adapter.card(&iccid(1)).await.expect("card 1");
    assert_eq!(a.iccid, iccid(1));
    assert_eq!(a.state, ServiceState::Active);
    assert_eq!(a.cycle_usage_bytes, 5_000);
    assert_eq!(a.changes, 0);
    assert_eq!(a.usage_cycle_start, None);
    assert_eq!(a.last_session, simgate::carrier::LastSession::Never);

    let b = r.adapter.card(&iccid(2)).await.expect("card 2");
    assert_eq!(b.state, ServiceState::Stopped);
    assert_eq!(b.cycle_usage_bytes, 0);

    r.sim
        .record_usage(&iccid(1), 1_000_001)
        .await
        .expect("usage");
    let a = r.adapter.card(&iccid(1)).await.expect("card 1 again");
    assert_eq!(a.cycle_usage_bytes, 1_005_001);
    // The traffic is the newest session, to the second (the platform writes no milliseconds).
    let at_sim = r.sim.card(&iccid(1)).await.expect("sim").last_session.at();
    let at_sim = at_sim.expect("the sim saw a session");
    assert_eq!(
        a.last_session.at().map(|t| t.timestamp()),
        Some(at_sim.timestamp())
    );
}

#[tokio::test]
async fn cancel_confirms_a_released_card_and_refuses_one_still_in_service() {
    let r = rig().await;
    assert_eq!(
        rejected_code(r.adapter.cancel(&iccid(1)).await),
        "NOT_CANCELLED"
    );
    assert_eq!(
        rejected_code(r.adapter.cancel(&iccid(2)).await),
        "NOT_CANCELLED"
    );
    // Nothing was changed by asking.
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );

    // The platform releases the number by itself.
    r.sim.cancel(&iccid(3)).await.expect("sim cancel");
    r.adapter.cancel(&iccid(3)).await.expect("confirmed");
    r.adapter.cancel(&iccid(3)).await.expect("confirmed again");
    assert_eq!(
        r.adapter.card(&iccid(3)).await.expect("card").state,
        ServiceState::Cancelled
    );
    // A released card cannot come back, with the platform's refusal passed on.
    assert_eq!(
        rejected_code(r.adapter.restore(&iccid(3)).await),
        "CARD_CANCELLED"
    );
}

#[tokio::test]
async fn onboard_checks_every_card_exists_at_the_platform() {
    let r = rig().await;
    let known: Vec<OnboardCard> = (1..=3)
        .map(|n| OnboardCard {
            iccid: iccid(n),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        })
        .collect();
    r.adapter.onboard(&known).await.expect("known cards");
    // The adapter does not change what the platform knows.
    assert_eq!(
        r.sim.card(&iccid(2)).await.expect("sim").state,
        ServiceState::Stopped
    );

    let mut with_unknown = known.clone();
    with_unknown.push(OnboardCard {
        iccid: iccid(99),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    });
    assert_eq!(
        rejected_code(r.adapter.onboard(&with_unknown).await),
        "11011"
    );
}

#[tokio::test]
async fn an_unknown_card_is_the_platforms_11011() {
    let r = rig().await;
    let unknown = iccid(77);
    assert_eq!(rejected_code(r.adapter.card(&unknown).await), "11011");
    assert_eq!(rejected_code(r.adapter.stop(&unknown).await), "11011");
    assert_eq!(rejected_code(r.adapter.restore(&unknown).await), "11011");
    assert_eq!(rejected_code(r.adapter.cancel(&unknown).await), "11011");
    assert_eq!(
        rejected_code(r.adapter.stop_reasons(&unknown).await),
        "11011"
    );
}

#[tokio::test]
async fn stop_reasons_real_name_and_pool_usage_map_to_simgate_terms() {
    let opts = WireOptions {
        groups: HashMap::from([("G1".to_string(), vec![iccid(1), iccid(3)])]),
        unregistered: HashSet::from([iccid(3)]),
        ..WireOptions::default()
    };
    let r = rig_with(opts, 2_000).await;

    let stopped = r.adapter.stop_reasons(&iccid(2)).await.expect("reasons");
    assert_eq!(stopped.raw, "000000002000");
    assert_eq!(stopped.reasons, vec![StopReason::Manual]);
    assert!(stopped.platform_only.is_empty());
    let active = r.adapter.stop_reasons(&iccid(1)).await.expect("reasons");
    assert!(active.reasons.is_empty());

    assert!(r.adapter.real_name_registered(&iccid(1)).await.expect("rn"));
    assert!(!r.adapter.real_name_registered(&iccid(3)).await.expect("rn"));

    assert_eq!(
        r.adapter.group_data_usage("G1").await.expect("pool"),
        5_000 + 2_048
    );
    r.sim.record_usage(&iccid(3), 10_240).await.expect("usage");
    assert_eq!(
        r.adapter.group_data_usage("G1").await.expect("pool"),
        5_000 + 2_048 + 10_240
    );
    assert!(matches!(
        r.adapter.group_data_usage("nope").await,
        Err(CarrierError::Rejected { .. })
    ));
}

#[tokio::test]
async fn wrong_credentials_are_refused_with_the_platforms_code() {
    let r = rig().await;
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let wrong =
        OneLink::new(&config(r.addr, "wrong-password", 2_000), ctx(policy)).expect("adapter");
    let err = wrong.card(&iccid(1)).await.expect_err("refused");
    assert!(
        matches!(&err, CarrierError::Rejected { code, .. } if code == SIM_AUTH_FAILED),
        "{err:?}"
    );
    // Neither credential leaks into the error.
    assert!(!err.to_string().contains("wrong-password"));
    assert!(matches!(
        wrong.stop(&iccid(1)).await,
        Err(CarrierError::Rejected { .. })
    ));
    assert_eq!(r.stats.tokens_issued(), 0);
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
}

#[tokio::test]
async fn a_token_is_reused_until_it_nears_expiry() {
    let r = rig().await;
    for _ in 0..3 {
        r.adapter.card(&iccid(1)).await.expect("card");
    }
    r.adapter.stop(&iccid(1)).await.expect("stop");
    r.adapter.restore(&iccid(1)).await.expect("restore");
    assert_eq!(r.stats.tokens_issued(), 1);
    assert_eq!(r.stats.tokens_refused(), 0);
    // Three card reads × three calls (status, usage, session), and the two changes.
    assert_eq!(r.stats.calls(), 11);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_once_and_the_call_retried() {
    // The platform drops tokens after 1 s but says they last an hour: the adapter only finds
    // out from the 12021.
    let opts = WireOptions {
        token_ttl: Duration::from_secs(1),
        reported_ttl: Some(Duration::from_secs(3600)),
        ..WireOptions::default()
    };
    let r = rig_with(opts, 2_000).await;
    r.adapter.card(&iccid(1)).await.expect("first");
    assert_eq!(r.stats.tokens_issued(), 1);
    tokio::time::sleep(Duration::from_millis(1_200)).await;

    r.adapter.stop(&iccid(1)).await.expect("stop after expiry");
    assert_eq!(r.stats.tokens_refused(), 1);
    assert_eq!(r.stats.tokens_issued(), 2);
    let at_sim = r.sim.card(&iccid(1)).await.expect("sim");
    assert_eq!(at_sim.state, ServiceState::Stopped);
    assert_eq!(at_sim.changes, 1, "the retried change applied once");

    r.adapter.card(&iccid(1)).await.expect("then");
    assert_eq!(r.stats.tokens_issued(), 2);
}

#[tokio::test]
async fn a_short_lived_token_is_refreshed_before_it_expires() {
    let opts = WireOptions {
        token_ttl: Duration::from_secs(1),
        ..WireOptions::default()
    };
    let r = rig_with(opts, 2_000).await;
    r.adapter.card(&iccid(1)).await.expect("first");
    tokio::time::sleep(Duration::from_millis(1_000)).await;
    r.adapter.card(&iccid(1)).await.expect("second");
    assert_eq!(r.stats.tokens_issued(), 2);
    assert_eq!(r.stats.tokens_refused(), 0);
}

#[tokio::test]
async fn the_platforms_rate_limit_is_rate_limited() {
    let r = rig().await;
    r.adapter.card(&iccid(1)).await.expect("warm token");
    r.sim.set_faults(SimFaults {
        rate_limit_rate: 1.0,
        ..SimFaults::default()
    });
    for res in [
        r.adapter.stop(&iccid(1)).await,
        r.adapter.restore(&iccid(2)).await,
    ] {
        match res {
            Err(CarrierError::RateLimited { retry_after }) => {
                assert_eq!(retry_after, Some(Duration::from_secs(1)))
            }
            other => panic!("expected RateLimited, got {other:?}"),
        }
    }
    r.sim.set_faults(SimFaults::default());
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
}

#[tokio::test]
async fn basic_info_answers_for_known_cards_and_refuses_unknown_ones() {
    let r = rig().await;
    let info = r.adapter.basic_info(&iccid(1)).await.expect("basic info");
    // The simulated carrier keeps none of these; the adapter reads empty fields as absent.
    assert_eq!(info.imsi, None);
    assert_eq!(info.active_date, None);
    assert!(matches!(
        r.adapter.basic_info(&iccid(77)).await,
        Err(CarrierError::Rejected { .. })
    ));
}

#[tokio::test]
async fn malformed_answers_are_transient_for_reads_and_unknown_for_changes() {
    let garbage = axum::Router::new()
        .route(
            "/v5/ec/get/token",
            post(|| async {
                r#"{"status":"0","message":"ok","result":[{"token":"t","ttl":"3600"}]}"#
            }),
        )
        .route(
            "/v5/ec/query/sim-status",
            post(|| async { "<html>gateway says hello</html>" }),
        )
        .route(
            "/v5/ec/query/sim-stop-reason",
            post(|| async { r#"{"status":"0","message":"ok","result":[{"stopReason":"0201"}]}"# }),
        )
        .route(
            "/v5/ec/change/sim-status",
            post(|| async { r#"{"status":"0","result":"# }),
        );
    let addr = serve(garbage).await;
    let a = OneLink::new(
        &config(addr, PASSWORD, 2_000),
        ctx(CarrierPolicy::default_for(CarrierId::Mobile)),
    )
    .expect("adapter");
    assert!(matches!(
        a.card(&iccid(1)).await,
        Err(CarrierError::Transient(m)) if m.contains("malformed")
    ));
    assert!(matches!(
        a.stop_reasons(&iccid(1)).await,
        Err(CarrierError::Transient(m)) if m.contains("malformed")
    ));
    assert!(matches!(
        a.stop(&iccid(1)).await,
        Err(CarrierError::OutcomeUnknown(m)) if m.contains("malformed")
    ));

    let no_token = axum::Router::new().route(
        "/v5/ec/get/token",
        post(|| async { r#"{"status":"0","message":"ok","result":[]}"# }),
    );
    let addr = serve(no_token).await;
    let a = OneLink::new(
        &config(addr, PASSWORD, 2_000),
        ctx(CarrierPolicy::default_for(CarrierId::Mobile)),
    )
    .expect("adapter");
    assert!(matches!(
        a.card(&iccid(1)).await,
        Err(CarrierError::Transient(m)) if m.contains("malformed")
    ));
}

/// The adapter's account: the carrier's default, with `policy`.
fn ctx(policy: CarrierPolicy) -> simgate::carrier::platform::AccountCtx {
    simgate::carrier::platform::AccountCtx {
        policy,
        ..simgate::carrier::platform::AccountCtx::default_for(CarrierId::Mobile)
    }
}

/// A OneLink platform answering `/query/sim-status` with the dossier's §2.1 fixture, its
/// `cardStatus` set to `status` (dossier §8).
async fn platform_with_card_status(status: &'static str) -> OneLink {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carrier-wire/onelink/query-sim-status.s2-1.reply.json");
    let fixture = std::fs::read_to_string(&path).expect("the §2.1 fixture");
    assert!(fixture.contains(r#""cardStatus":"2""#), "{fixture}");
    let body = fixture.replace(
        r#""cardStatus":"2""#,
        &format!(r#""cardStatus":"{status}""#),
    );
    let app = axum::Router::new()
        .route(
            "/v5/ec/get/token",
            post(|| async {
                r#"{"status":"0","message":"正确","result":[{"token":"t","ttl":3600}]}"#
            }),
        )
        .route(
            "/v5/ec/query/sim-status",
            post(move || {
                let body = body.clone();
                async move { body }
            }),
        );
    let addr = serve(app).await;
    OneLink::new(
        &config(addr, PASSWORD, 2_000),
        ctx(CarrierPolicy::default_for(CarrierId::Mobile)),
    )
    .expect("adapter")
}

#[tokio::test]
async fn wire_onelink_fixture_card_status_confirms_a_release_only_when_released() {
    // 9 已销户 and PB 04 销号 confirm it; 8 预销户 and PB 03 预销号 do not (no service yet).
    for released in ["9", "04"] {
        platform_with_card_status(released)
            .await
            .cancel(&iccid(1))
            .await
            .unwrap_or_else(|e| panic!("cardStatus {released}: {e:?}"));
    }
    for pending in ["8", "03"] {
        let a = platform_with_card_status(pending).await;
        let e = a.cancel(&iccid(1)).await.expect_err("not released yet");
        assert!(
            matches!(e, CarrierError::Rejected { ref code, .. } if code == "NOT_CANCELLED"),
            "{pending}: {e:?}"
        );
    }
    // The fixture as the dossier gives it: cardStatus 2 已激活.
    let a = platform_with_card_status("2").await;
    assert!(a.cancel(&iccid(1)).await.is_err());
    // PB 99 号码不存在: the platform has no such card.
    let e = platform_with_card_status("99")
        .await
        .cancel(&iccid(1))
        .await
        .expect_err("no such number");
    assert!(
        matches!(e, CarrierError::Rejected { ref code, .. } if code == "11011"),
        "{e:?}"
    );
}
