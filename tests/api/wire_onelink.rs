//! Contract tests: the OneLink adapter against the OneLink wire simulator over loopback HTTP.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::any;
use simgate::carrier::http::onelink::simulator::{router, WireOptions, WireStats};
use simgate::carrier::http::onelink::{
    BatchResultKey, HttpMethod, ImeiReading, OneLink, OneLinkConfig, WireDate,
};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{Carrier, CarrierError, OnboardCard, Receipt, ServiceState};
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
        token_method: HttpMethod::default(),
        request_method: HttpMethod::default(),
        repeat_window_code: None,
        bind_test_type: "0".into(),
        bind_tac_digits: 14,
        sim_imei_reports: ImeiReading::default(),
        batch_result_key: BatchResultKey::default(),
    }
}

/// `config` with both calls sent as `method`.
fn config_sending(addr: SocketAddr, method: HttpMethod) -> OneLinkConfig {
    OneLinkConfig {
        token_method: method,
        request_method: method,
        ..config(addr, PASSWORD, 2_000)
    }
}

fn iccid(n: u64) -> Iccid {
    Iccid::parse_any(&mobile_iccid(n)).expect("iccid")
}

struct Rig {
    adapter: OneLink,
    sim: Arc<SimCarrier>,
    /// The simulated carrier's clock (orders complete and windows end on it).
    clock: ManualClock,
    stats: Arc<WireStats>,
    addr: SocketAddr,
    _db: TestDb,
}

/// Card 1's access number at the simulated carrier.
const RIG_MSISDN: &str = "1440000000001";

/// Card 1: active with 5000 bytes used, number [`RIG_MSISDN`]; card 2: stopped; card 3:
/// active with 2048 bytes.
async fn rig_with(opts: WireOptions, request_ms: u64) -> Rig {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let clock = ManualClock::new(start_time());
    let sim = Arc::new(SimCarrier::new(
        policy.clone(),
        db.store().await,
        Arc::new(clock.clone()),
    ));
    sim.onboard(&[
        OnboardCard {
            iccid: iccid(1),
            state: ServiceState::Active,
            cycle_usage_bytes: 5_000,
            msisdn: Some(RIG_MSISDN.into()),
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
        clock,
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
    // A released card cannot come back: the simulator refuses the restart (SIM_WRONG_STATE, an
    // invented code) and the adapter, reading the card again, names it cancelled.
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

    let stopped = r
        .adapter
        .stop_reason_flags(&iccid(2))
        .await
        .expect("reasons");
    assert_eq!(stopped.raw, "000000002000");
    assert_eq!(stopped.reasons, vec![StopReason::Manual]);
    assert!(stopped.platform_only.is_empty());
    let active = r
        .adapter
        .stop_reason_flags(&iccid(1))
        .await
        .expect("reasons");
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
    // The simulator's own code for an unknown group is no published code: unavailable.
    assert!(matches!(
        r.adapter.group_data_usage("nope").await,
        Err(CarrierError::Transient(m)) if m.contains("SIM_BAD_REQUEST")
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
        matches!(&err, CarrierError::Rejected { code, .. } if code == "12022"),
        "{err:?}"
    );
    // A sync's read of many cards fails on it instead of leaving every card out.
    let e = wrong
        .cards(&[iccid(1), iccid(2)])
        .await
        .expect_err("the account is refused");
    assert!(
        matches!(&e, CarrierError::Rejected { code, .. } if code == "12022"),
        "{e:?}"
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
    // While a card the platform lacks (11011) is only left out.
    let read = r
        .adapter
        .cards(&[iccid(1), iccid(99)])
        .await
        .expect("a sync read");
    assert_eq!(read.len(), 1);
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
    assert_eq!(info.active_date, WireDate::Absent);
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
            any(|| async {
                r#"{"status":"0","message":"ok","result":[{"token":"t","ttl":"3600"}]}"#
            }),
        )
        .route(
            "/v5/ec/query/sim-status",
            any(|| async { "<html>gateway says hello</html>" }),
        )
        .route(
            "/v5/ec/query/sim-stop-reason",
            any(|| async { r#"{"status":"0","message":"ok","result":[{"stopReason":"0201"}]}"# }),
        )
        .route(
            "/v5/ec/change/sim-status",
            any(|| async { r#"{"status":"0","result":"# }),
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
        any(|| async { r#"{"status":"0","message":"ok","result":[]}"# }),
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
            any(|| async {
                r#"{"status":"0","message":"正确","result":[{"token":"t","ttl":3600}]}"#
            }),
        )
        .route(
            "/v5/ec/query/sim-status",
            any(move || {
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

// ---------------------------------------------------------------------------------------------
// Golden fixtures from the dossier (`tests/fixtures/carrier-wire/onelink/`, see its INDEX.md):
// the adapter parses each reply to the dossier's values, builds each request with the
// dossier's parameter names (GET and POST), and the simulator answers in the same shapes.
// ---------------------------------------------------------------------------------------------

use simgate::carrier::http::onelink::simulator::TOKEN_INVALID_MESSAGE;
use simgate::carrier::http::onelink::{
    parse_basic_info, parse_bind_status, parse_card_status, parse_change_reply, parse_data_usage,
    parse_envelope, parse_imei, parse_last_session, parse_order_info, parse_real_name,
    parse_stop_reasons, parse_token, BindStatus, ChangeReply,
};
use simgate::carrier::http::onelink::{
    parse_batch_receipt, parse_batch_result, parse_batch_usage, parse_card_info, UsageItem,
};
use simgate::carrier::{LastSession, OrderProgress};

const FIXTURE_DIR: &str = "tests/fixtures/carrier-wire/onelink";

/// Every reply fixture, each checked by `check_reply`.
const REPLY_FIXTURES: [&str; 22] = [
    "any-call.s0-4.reply-12021.json",
    "any-call.s0-4.reply-ok-empty.json",
    "get-token.s1.reply.json",
    "query-sim-status.s2-1.reply.json",
    "query-sim-basic-info.s2-2.reply.json",
    "query-sim-data-usage.s2-3.reply.json",
    "query-sim-session.s2-6.reply.json",
    "query-sim-stop-reason.s2-7.reply.json",
    "query-sim-real-name-status.s2-8.reply.json",
    "change-sim-status.s3.reply-identifier.json",
    "change-sim-status.s3.reply-ordernum.json",
    "query-order-info.s3-1.reply.json",
    "query-sim-imei.s2-9.reply.json",
    "query-card-bind-status.s7-1.reply.json",
    "derived/query-sim-stop-reason.s2-7.reply-position-2.json",
    "derived/query-card-bind-status.s7-1.reply-separated.json",
    "derived/query-card-bind-status.s7-1.reply-query-failed.json",
    "change-sim-status-batch.s4.reply.json",
    "query-sim-batch-result.s4-1.reply.json",
    "query-sim-data-usage-monthly-batch.s5-2.reply.json",
    "query-sim-card-info-batch.s5-3.reply.json",
    "derived/query-sim-data-usage-monthly-batch.s5-2.reply-flat.json",
];

/// The request fixtures of the batch calls, each compared with what the adapter sends.
const BATCH_REQUEST_FIXTURES: [&str; 4] = [
    "change-sim-status-batch.s4.request.txt",
    "derived/query-sim-data-usage-monthly-batch.s5-2.request.txt",
    "derived/query-sim-card-info-batch.s5-3.request.txt",
    "derived/query-sim-batch-result.s4-1.request.txt",
];

/// The derived request fixtures of `order()`, `binding()` and `rebind()` (issue 20), each
/// compared with what the adapter sends.
const ORDER_BINDING_REQUEST_FIXTURES: [&str; 5] = [
    "derived/query-order-info.s3-1.request.txt",
    "derived/query-card-bind-status.s7-1.request.txt",
    "derived/operate-card-bind-by-bill.s7-2.request-unbind.txt",
    "derived/operate-card-bind-by-bill.s7-2.request-current-device.txt",
    "derived/operate-card-bind-by-bill.s7-2.request-imei.txt",
];

/// Every request fixture, each compared with what the adapter sends.
const REQUEST_FIXTURES: [&str; 3] = [
    "get-token.s1.request.txt",
    "query-sim-status.s2-1.request.txt",
    "change-sim-status.s3.request.txt",
];

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(FIXTURE_DIR)
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The fixture's first record, through the adapter's envelope parser.
fn record_of(body: &str) -> serde_json::Map<String, serde_json::Value> {
    let env = parse_envelope(body.as_bytes()).unwrap_or_else(|e| panic!("{e}: {body}"));
    assert_eq!((env.status.as_str(), env.message.as_str()), ("0", "正确"));
    env.result[0].as_object().expect("a record").clone()
}

/// The dossier's values (INDEX.md, "What an adapter should parse out of it").
fn check_reply(file: &str, body: &str) {
    let beijing_noon = chrono::DateTime::parse_from_rfc3339("2024-01-01T04:00:00Z")
        .expect("time")
        .with_timezone(&chrono::Utc);
    match file {
        "any-call.s0-4.reply-12021.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(env.status, "12021");
            assert_eq!(env.message, TOKEN_INVALID_MESSAGE);
            assert!(env.result.is_empty());
        }
        "any-call.s0-4.reply-ok-empty.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!((env.status.as_str(), env.result.len()), ("0", 0));
            // As a change's answer it proves nothing: the card must be read again.
            assert_eq!(
                parse_change_reply(&env.result, "89860400000000000001"),
                ChangeReply::NotProof
            );
        }
        "get-token.s1.reply.json" => {
            // `<ttl>` unquoted: not JSON at all, an unavailable answer, not a panic.
            assert!(parse_envelope(body.as_bytes()).is_err());
            // Quoted, the placeholder is no number: the token call is unavailable.
            let quoted =
                parse_envelope(body.replace("<ttl>", "\"<ttl>\"").as_bytes()).expect("envelope");
            assert!(matches!(
                parse_token(&quoted.result),
                Err(CarrierError::Transient(_))
            ));
            let env = parse_envelope(body.replace("<ttl>", "3600").as_bytes()).expect("envelope");
            let (token, ttl) = parse_token(&env.result).expect("token");
            assert_eq!(
                (token.as_str(), ttl),
                ("<token>", Duration::from_secs(3600))
            );
        }
        "query-sim-status.s2-1.reply.json" => {
            // lastChangeDate `<time>` is not read (format not found).
            let (code, state) = parse_card_status(&record_of(body)).expect("cardStatus");
            assert_eq!((code.as_str(), state), ("2", ServiceState::Active));
        }
        "query-sim-basic-info.s2-2.reply.json" => {
            let info = parse_basic_info(&record_of(body));
            assert_eq!(info.msisdn.as_deref(), Some("1440000000001"));
            assert_eq!(info.imsi.as_deref(), Some("460040000000001"));
            assert_eq!(info.active_date, WireDate::At(beijing_noon));
            // `<time>`: that field is unavailable, the rest of the answer stands.
            assert_eq!(info.open_date, WireDate::Unreadable("<time>".into()));
        }
        "query-sim-data-usage.s2-3.reply.json" => {
            assert_eq!(
                parse_data_usage(&record_of(body)).expect("usage"),
                10_240 * 1024
            );
        }
        "query-sim-session.s2-6.reply.json" => {
            // createDate `<time>`: a session whose time is unknown, never "no session".
            assert_eq!(parse_last_session(&record_of(body)), LastSession::Unknown);
            let dated = body.replace("<time>", "2024-01-01 12:00:00");
            assert_eq!(
                parse_last_session(&record_of(&dated)),
                LastSession::At(beijing_noon)
            );
            let compact = body.replace("<time>", "20240101120000");
            assert_eq!(
                parse_last_session(&record_of(&compact)),
                LastSession::At(beijing_noon)
            );
        }
        "query-sim-stop-reason.s2-7.reply.json" => {
            let r = parse_stop_reasons(&record_of(body)).expect("stopReason");
            assert_eq!(r.reasons, vec![StopReason::Manual]);
            assert!(r.platform_only.is_empty());
        }
        "query-sim-real-name-status.s2-8.reply.json" => {
            assert!(parse_real_name(&record_of(body)).expect("realNameStatus"));
        }
        "change-sim-status.s3.reply-identifier.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(
                parse_change_reply(&env.result, "89860400000000000001"),
                ChangeReply::Applied
            );
            // An echo of another card is no proof for this one.
            assert_eq!(
                parse_change_reply(&env.result, "89860400000000000002"),
                ChangeReply::NotProof
            );
        }
        "change-sim-status.s3.reply-ordernum.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(
                parse_change_reply(&env.result, "89860400000000000001"),
                ChangeReply::Order {
                    order_num: "<orderNum>".into()
                }
            );
        }
        "query-order-info.s3-1.reply.json" => {
            let info = parse_order_info(&record_of(body)).expect("order-info");
            assert_eq!(info.order_num.as_deref(), Some("<orderNum>"));
            assert_eq!(
                (info.progress, info.unlisted),
                (OrderProgress::Completed, false)
            );
            let at = |s: &str| {
                chrono::DateTime::parse_from_rfc3339(s)
                    .expect("time")
                    .with_timezone(&chrono::Utc)
            };
            assert_eq!(info.status_date, WireDate::At(at("2024-01-01T04:05:00Z")));
            assert_eq!(info.create_date, WireDate::At(at("2024-01-01T04:00:00Z")));
            // Every listed word (§3.1), and one that is not.
            for (word, want) in [
                ("failed", OrderProgress::Failed("failed".into())),
                ("aborted", OrderProgress::Failed("aborted".into())),
                ("cancelled", OrderProgress::Failed("cancelled".into())),
                ("acknowledged", OrderProgress::Open("acknowledged".into())),
                ("ready", OrderProgress::Open("ready".into())),
                ("future", OrderProgress::Open("future".into())),
                ("inProgress", OrderProgress::Open("inProgress".into())),
                ("amending", OrderProgress::Open("amending".into())),
                ("suspended", OrderProgress::Open("suspended".into())),
                ("cancelling", OrderProgress::Open("cancelling".into())),
                ("completed", OrderProgress::Completed),
            ] {
                let b = body.replace(r#""status":"completed""#, &format!(r#""status":"{word}""#));
                let info = parse_order_info(&record_of(&b)).expect(word);
                assert_eq!((info.progress, info.unlisted), (want, false), "{word}");
            }
            let b = body.replace(r#""status":"completed""#, r#""status":"done""#);
            let info = parse_order_info(&record_of(&b)).expect("unlisted");
            assert_eq!(
                (info.progress, info.unlisted),
                (OrderProgress::Open("done".into()), true)
            );
            // Missing dates are tolerated; a missing status is not.
            let b = body.replace(
                r#","statusDate":"20240101120500","createDate":"20240101120000""#,
                "",
            );
            let info = parse_order_info(&record_of(&b)).expect("no dates");
            assert_eq!(info.status_date, WireDate::Absent);
            let b = body.replace(r#""status":"completed","#, "");
            assert!(matches!(
                parse_order_info(&record_of(&b)),
                Err(CarrierError::Transient(_))
            ));
        }
        "query-sim-imei.s2-9.reply.json" => {
            assert_eq!(
                parse_imei(&record_of(body)).as_deref(),
                Some("860000000000001")
            );
            let blank = body.replace("860000000000001", " ");
            assert_eq!(parse_imei(&record_of(&blank)), None);
        }
        "query-card-bind-status.s7-1.reply.json" => {
            assert_eq!(
                parse_bind_status(&record_of(body)).expect("bind status"),
                BindStatus::NotSeparated
            );
        }
        "derived/query-sim-stop-reason.s2-7.reply-position-2.json" => {
            let r = parse_stop_reasons(&record_of(body)).expect("stopReason");
            assert_eq!(r.reasons, vec![StopReason::DeviceMismatch]);
            assert!(r.platform_only.is_empty());
        }
        "derived/query-card-bind-status.s7-1.reply-separated.json" => {
            assert_eq!(
                parse_bind_status(&record_of(body)).expect("bind status"),
                BindStatus::Separated {
                    since: WireDate::Unreadable("<time>".into())
                }
            );
            for dated in ["2024-01-01 12:00:00", "20240101120000"] {
                let b = body.replace("<time>", dated);
                assert_eq!(
                    parse_bind_status(&record_of(&b)).expect("bind status"),
                    BindStatus::Separated {
                        since: WireDate::At(beijing_noon)
                    }
                );
            }
        }
        "derived/query-card-bind-status.s7-1.reply-query-failed.json" => {
            let e = parse_bind_status(&record_of(body)).expect_err("查询失败");
            assert!(
                matches!(&e, CarrierError::Transient(m) if m.contains("<code>") && m.contains("<text>")),
                "{e:?}"
            );
        }
        "change-sim-status-batch.s4.reply.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(parse_batch_receipt(&env.result).as_deref(), Some("<jobId>"));
        }
        "query-sim-batch-result.s4-1.reply.json" => {
            let r = parse_batch_result(&record_of(body)).expect("batch result");
            // jobStatus 3: 包含有处理失败记录的处理完成, over.
            assert_eq!(
                (r.job_status.as_str(), r.finished, r.unlisted),
                ("3", true, false)
            );
            let items: Vec<_> = r
                .items
                .iter()
                .map(|i| (i.msisdn(), i.status.as_deref(), i.message.as_str()))
                .collect();
            assert_eq!(
                items,
                vec![
                    (Some("1440000000001"), Some("0"), "正确"),
                    (Some("1440000000002"), Some("<code>"), "<text>"),
                ]
            );
        }
        "query-sim-data-usage-monthly-batch.s5-2.reply.json"
        | "derived/query-sim-data-usage-monthly-batch.s5-2.reply-flat.json" => {
            // [GOSDK]'s result[]{deadLine, dataAmountList[]} and items directly in result[].
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            assert_eq!(
                parse_batch_usage(&env.result),
                vec![UsageItem {
                    iccid: None,
                    msisdn: Some("1440000000001".into()),
                    imsi: None,
                    bytes: Some(2048 * 1024),
                }]
            );
        }
        "query-sim-card-info-batch.s5-3.reply.json" => {
            let env = parse_envelope(body.as_bytes()).expect("envelope");
            let infos = parse_card_info(&env.result);
            assert_eq!(infos.len(), 1);
            assert_eq!(infos[0].iccid.as_deref(), Some("89860400000000000001"));
            assert_eq!(infos[0].found_msisdn(), Some("1440000000001"));
            assert_eq!(infos[0].imsi.as_deref(), Some("460040000000001"));
        }
        other => panic!("{other} has no expected values"),
    }
}

#[test]
fn wire_onelink_fixture_replies_parse_to_the_dossier_values() {
    // A fixture added to the folder but not to the tables fails here.
    // Files in the folder and in `derived/`, named relative to the folder.
    fn files(dir: &std::path::Path, prefix: &str, out: &mut std::collections::BTreeSet<String>) {
        for e in std::fs::read_dir(dir).expect("the fixture folder") {
            let e = e.expect("entry");
            let name = format!("{prefix}{}", e.file_name().to_string_lossy());
            if e.file_type().expect("type").is_dir() {
                files(&e.path(), &format!("{name}/"), out);
            } else {
                out.insert(name);
            }
        }
    }
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(FIXTURE_DIR);
    let mut on_disk = std::collections::BTreeSet::new();
    files(&dir, "", &mut on_disk);
    let listed: std::collections::BTreeSet<String> = REPLY_FIXTURES
        .iter()
        .chain(REQUEST_FIXTURES.iter())
        .chain(ORDER_BINDING_REQUEST_FIXTURES.iter())
        .chain(BATCH_REQUEST_FIXTURES.iter())
        .chain(["INDEX.md"].iter())
        .map(|s| s.to_string())
        .collect();
    assert_eq!(on_disk, listed, "every fixture is in a table of this test");
    for file in REPLY_FIXTURES {
        check_reply(file, &fixture(file));
    }
    // And INDEX.md documents every one, derived ones in its derived table.
    for file in REPLY_FIXTURES
        .iter()
        .chain(REQUEST_FIXTURES.iter())
        .chain(ORDER_BINDING_REQUEST_FIXTURES.iter())
        .chain(BATCH_REQUEST_FIXTURES.iter())
    {
        assert!(fixture("INDEX.md").contains(&format!("`{file}`")), "{file}");
    }
}

/// What a platform received: method, path, query string, body.
type Received = Arc<std::sync::Mutex<Vec<(String, String, String, String)>>>;

/// A platform answering each path with a fixed body (by default the fixtures; `/get/token`
/// with its skeleton, `<ttl>` as 3600), recording every request.
async fn platform_answering(
    bodies: &[(&'static str, String)],
    method: HttpMethod,
) -> (OneLink, Received) {
    platform_answering_as(bodies, |addr| config_sending(addr, method), ctx_default()).await
}

fn ctx_default() -> simgate::carrier::platform::AccountCtx {
    ctx(CarrierPolicy::default_for(CarrierId::Mobile))
}

/// `platform_answering` with the adapter's settings from `cfg` and its account `ctx`.
async fn platform_answering_as(
    bodies: &[(&'static str, String)],
    cfg: impl FnOnce(SocketAddr) -> OneLinkConfig,
    account: simgate::carrier::platform::AccountCtx,
) -> (OneLink, Received) {
    let mut map: HashMap<String, String> = HashMap::from([(
        "/v5/ec/get/token".to_string(),
        fixture("get-token.s1.reply.json").replace("<ttl>", "3600"),
    )]);
    for (path, body) in bodies {
        map.insert(format!("/v5/ec{path}"), body.clone());
    }
    let map = Arc::new(map);
    let received: Received = Arc::default();
    let log = received.clone();
    let app = axum::Router::new().fallback(any(move |req: axum::extract::Request| {
        let map = map.clone();
        let log = log.clone();
        async move {
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let body = axum::body::to_bytes(req.into_body(), 1 << 20)
                .await
                .expect("body");
            log.lock().unwrap().push((
                method,
                path.clone(),
                query,
                String::from_utf8_lossy(&body).into_owned(),
            ));
            map.get(&path)
                .cloned()
                .unwrap_or_else(|| format!("no fixture for {path}"))
        }
    }));
    let addr = serve(app).await;
    let a = OneLink::new(&cfg(addr), account).expect("adapter");
    (a, received)
}

/// The read fixtures of `card()` and the other reads, by path.
fn read_fixtures() -> Vec<(&'static str, String)> {
    vec![
        (
            "/query/sim-status",
            fixture("query-sim-status.s2-1.reply.json"),
        ),
        (
            "/query/sim-data-usage",
            fixture("query-sim-data-usage.s2-3.reply.json"),
        ),
        (
            "/query/sim-session",
            fixture("query-sim-session.s2-6.reply.json"),
        ),
        (
            "/query/sim-basic-info",
            fixture("query-sim-basic-info.s2-2.reply.json"),
        ),
        (
            "/query/sim-stop-reason",
            fixture("query-sim-stop-reason.s2-7.reply.json"),
        ),
        (
            "/query/sim-real-name-status",
            fixture("query-sim-real-name-status.s2-8.reply.json"),
        ),
    ]
}

/// The dossier's card (fixture ids).
fn dossier_card() -> Iccid {
    Iccid::parse_any("89860400000000000001").expect("the dossier's ICCID")
}

#[tokio::test]
async fn wire_onelink_fixture_replies_read_through_the_adapter() {
    let (a, _) = platform_answering(&read_fixtures(), HttpMethod::Get).await;
    let c = a
        .card(&dossier_card())
        .await
        .expect("card from the fixtures");
    // §2.1 cardStatus 2, §2.3 10240 KB, §2.6 a session whose time is a placeholder.
    assert_eq!(
        (c.state, c.cycle_usage_bytes, c.last_session),
        (ServiceState::Active, 10_240 * 1024, LastSession::Unknown)
    );
    let info = a.basic_info(&dossier_card()).await.expect("basic info");
    assert_eq!(info.msisdn.as_deref(), Some("1440000000001"));
    assert!(matches!(info.open_date, WireDate::Unreadable(_)));
    assert_eq!(
        a.stop_reason_flags(&dossier_card())
            .await
            .expect("reasons")
            .reasons,
        vec![StopReason::Manual]
    );
    assert!(a.real_name_registered(&dossier_card()).await.expect("rn"));
}

#[tokio::test]
async fn wire_onelink_change_replies_are_proof_only_when_they_echo_the_card() {
    let with_change = |body: String| {
        let mut b = read_fixtures();
        b.push(("/change/sim-status", body));
        b
    };
    // The echo of the ICCID sent: applied.
    let (a, _) = platform_answering(
        &with_change(fixture("change-sim-status.s3.reply-identifier.json")),
        HttpMethod::Get,
    )
    .await;
    a.stop(&dossier_card()).await.expect("echo = applied");

    // orderNum: an order in progress, for the journal to settle with order(); the card is
    // not read again.
    let (a, received) = platform_answering(
        &with_change(fixture("change-sim-status.s3.reply-ordernum.json")),
        HttpMethod::Get,
    )
    .await;
    for receipt in [
        a.restore(&dossier_card()).await.expect("an order"),
        a.stop(&dossier_card()).await.expect("an order"),
    ] {
        assert_eq!(receipt, Receipt::in_progress(Some("<orderNum>".into())));
    }
    assert!(
        !received
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.1 == "/v5/ec/query/sim-status"),
        "no re-read after an orderNum"
    );
    // An empty record proves nothing either.
    let (a, _) = platform_answering(
        &with_change(fixture("any-call.s0-4.reply-ok-empty.json")),
        HttpMethod::Get,
    )
    .await;
    assert!(matches!(
        a.stop(&dossier_card()).await,
        Err(CarrierError::OutcomeUnknown(_))
    ));

    // Refusals: 11011 at once; an unpublished code (13012) settled by the re-read; a card
    // read as cancelled names the domain's CARD_CANCELLED.
    let refusal = |code: &str| format!(r#"{{"status":"{code}","message":"x","result":[]}}"#);
    let (a, received) = platform_answering(&with_change(refusal("11011")), HttpMethod::Get).await;
    assert_eq!(rejected_code(a.stop(&dossier_card()).await), "11011");
    let reads = received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.1 == "/v5/ec/query/sim-status")
        .count();
    assert_eq!(reads, 0, "no re-read after 11011");
    let (a, _) = platform_answering(&with_change(refusal("13012")), HttpMethod::Get).await;
    a.restore(&dossier_card())
        .await
        .expect("target state: done");
    // Not in the target state: Deferred (the platform said no; read later, never final).
    assert!(matches!(
        a.stop(&dossier_card()).await,
        Err(CarrierError::Deferred { code, retry_after: None, .. }) if code == "13012"
    ));
    let mut cancelled = with_change(refusal("12098"));
    cancelled[0].1 = fixture("query-sim-status.s2-1.reply.json")
        .replace(r#""cardStatus":"2""#, r#""cardStatus":"9""#);
    let (a, _) = platform_answering(&cancelled, HttpMethod::Get).await;
    assert_eq!(
        rejected_code(a.restore(&dossier_card()).await),
        "CARD_CANCELLED"
    );
    // An accepted order on that card is not turned into a refusal: an order in progress.
    let mut ordered = cancelled.clone();
    ordered.last_mut().expect("the change").1 = fixture("change-sim-status.s3.reply-ordernum.json");
    let (a, _) = platform_answering(&ordered, HttpMethod::Get).await;
    assert_eq!(
        a.restore(&dossier_card()).await.expect("an order"),
        Receipt::in_progress(Some("<orderNum>".into()))
    );
}

#[tokio::test]
async fn wire_onelink_unpublished_codes_and_http_errors_fail_safe() {
    // An envelope code nobody published, on a read: unavailable, with the code shown.
    let (a, _) = platform_answering(
        &[(
            "/query/sim-status",
            r#"{"status":"500","message":"系统繁忙","result":[]}"#.to_string(),
        )],
        HttpMethod::Get,
    )
    .await;
    assert!(matches!(
        a.card(&dossier_card()).await,
        Err(CarrierError::Transient(m)) if m.contains("status 500")
    ));
    // The token call: 12022 is a configuration error, anything else unavailable.
    for (code, rejected) in [("12022", true), ("12021", false), ("500", false)] {
        let (a, _) = platform_answering(
            &[(
                "/get/token",
                format!(r#"{{"status":"{code}","message":"x","result":[]}}"#),
            )],
            HttpMethod::Get,
        )
        .await;
        let e = a.card(&dossier_card()).await.expect_err("no token");
        assert_eq!(
            matches!(e, CarrierError::Rejected { .. }),
            rejected,
            "{code}: {e:?}"
        );
        if !rejected {
            assert!(matches!(e, CarrierError::Transient(_)), "{code}: {e:?}");
        }
    }
    // HTTP statuses: (status, read, change).
    for (status, read, change) in [
        (429, "rate", "rate"),
        (500, "transient", "unknown"),
        (502, "transient", "transient"),
        (503, "transient", "transient"),
        (504, "transient", "unknown"),
        (400, "transient", "unknown"),
        (401, "transient", "unknown"),
    ] {
        let app = axum::Router::new()
            .route(
                "/v5/ec/get/token",
                any(|| async {
                    r#"{"status":"0","message":"正确","result":[{"token":"t","ttl":3600}]}"#
                }),
            )
            .fallback(any(move || async move {
                axum::http::StatusCode::from_u16(status).expect("status")
            }));
        let addr = serve(app).await;
        let a = OneLink::new(
            &config_sending(addr, HttpMethod::Get),
            ctx(CarrierPolicy::default_for(CarrierId::Mobile)),
        )
        .expect("adapter");
        let kind = |r: Result<(), CarrierError>| match r {
            Err(CarrierError::RateLimited { .. }) => "rate",
            Err(CarrierError::Transient(_)) => "transient",
            Err(CarrierError::OutcomeUnknown(_)) => "unknown",
            other => panic!("HTTP {status}: {other:?}"),
        };
        assert_eq!(
            kind(a.card(&dossier_card()).await.map(|_| ())),
            read,
            "read, HTTP {status}"
        );
        assert_eq!(
            kind(a.stop(&dossier_card()).await.map(drop)),
            change,
            "change, HTTP {status}"
        );
    }
}

/// A request fixture: its method, path, and parameter names (query string or JSON body).
fn request_fixture(text: &str) -> (String, String, std::collections::BTreeSet<String>) {
    let mut lines = text.lines();
    let first = lines.next().expect("a request line");
    let (method, url) = first.split_once(' ').expect("METHOD URL");
    let url = url::Url::parse(url).expect("a URL");
    let names = match lines.next() {
        Some(body) if !body.trim().is_empty() => {
            let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
            v.as_object().expect("an object").keys().cloned().collect()
        }
        _ => url.query_pairs().map(|(k, _)| k.into_owned()).collect(),
    };
    (method.to_string(), url.path().to_string(), names)
}

/// The parameter names of a received request, and whether each value is a string.
fn received_names(
    r: &(String, String, String, String),
) -> (std::collections::BTreeSet<String>, bool) {
    if r.0 == "GET" {
        assert!(r.3.is_empty(), "a GET has no body: {}", r.3);
        let names = url::form_urlencoded::parse(r.2.as_bytes())
            .map(|(k, _)| k.into_owned())
            .collect();
        (names, true)
    } else {
        assert!(r.2.is_empty(), "a POST has no query string: {}", r.2);
        let v: serde_json::Value = serde_json::from_str(&r.3).expect("a JSON body");
        let m = v.as_object().expect("an object");
        (
            m.keys().cloned().collect(),
            m.values().all(|v| v.is_string()),
        )
    }
}

#[tokio::test]
async fn wire_onelink_requests_carry_the_dossier_parameters_in_get_and_post() {
    let mut bodies = read_fixtures();
    bodies.push((
        "/change/sim-status",
        fixture("change-sim-status.s3.reply-identifier.json"),
    ));
    for method in [HttpMethod::Get, HttpMethod::Post] {
        let (a, received) = platform_answering(&bodies, method).await;
        a.card(&dossier_card()).await.expect("card");
        a.stop(&dossier_card()).await.expect("stop");
        let received = received.lock().unwrap().clone();
        let wanted = if method == HttpMethod::Get {
            "GET"
        } else {
            "POST"
        };
        assert!(
            received.iter().all(|r| r.0 == wanted),
            "{method:?}: {received:?}"
        );
        for file in REQUEST_FIXTURES {
            let (_, path, names) = request_fixture(&fixture(file));
            let r = received
                .iter()
                .find(|r| r.1 == path)
                .unwrap_or_else(|| panic!("{method:?}: no request to {path}"));
            let (got, all_strings) = received_names(r);
            assert_eq!(
                got, names,
                "{method:?} {path}: the dossier's parameter names"
            );
            assert!(
                all_strings,
                "{method:?} {path}: every value a string (operType \"0\")"
            );
        }
        // Every other card query names the card the same way (§0.3, §2).
        for r in &received {
            if r.1 != "/v5/ec/get/token" && r.1 != "/v5/ec/change/sim-status" {
                let (got, _) = received_names(r);
                let want: std::collections::BTreeSet<String> =
                    ["transid", "token", "iccid"].map(String::from).into();
                assert_eq!(got, want, "{}", r.1);
            }
        }
    }
}

/// The shape of a JSON body: every leaf's path (arrays as `[]`) and its JSON type.
fn shape(body: &str) -> std::collections::BTreeSet<(String, &'static str)> {
    fn walk(
        v: &serde_json::Value,
        at: String,
        out: &mut std::collections::BTreeSet<(String, &'static str)>,
    ) {
        use serde_json::Value;
        match v {
            Value::Object(m) => {
                for (k, v) in m {
                    walk(v, format!("{at}.{k}"), out);
                }
            }
            Value::Array(items) if items.is_empty() => {
                out.insert((at, "empty list"));
            }
            Value::Array(items) => {
                for v in items {
                    walk(v, format!("{at}[]"), out);
                }
            }
            Value::String(_) => {
                out.insert((at, "string"));
            }
            Value::Number(_) => {
                out.insert((at, "number"));
            }
            Value::Bool(_) => {
                out.insert((at, "bool"));
            }
            Value::Null => {
                out.insert((at, "null"));
            }
        }
    }
    let v: serde_json::Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"));
    let mut out = std::collections::BTreeSet::new();
    walk(&v, String::new(), &mut out);
    out
}

/// The simulator's answers to every call the adapter makes, once.
async fn simulator_answers(opts: WireOptions, method: HttpMethod) -> Vec<(String, String)> {
    let r = rig_with(opts.clone(), 2_000).await;
    let log = crate::helpers::Exchanges::default();
    let server_cfg = config("127.0.0.1:1".parse().expect("addr"), PASSWORD, 2_000);
    let app = crate::helpers::recording(
        router(r.sim.clone(), &server_cfg, opts),
        log.clone(),
        |uri| uri.path().to_string(),
    );
    let addr = serve(app).await;
    let a = OneLink::new(
        &config_sending(addr, method),
        ctx(CarrierPolicy::default_for(CarrierId::Mobile)),
    )
    .expect("adapter");
    // A session to report, then every call.
    r.sim.record_usage(&iccid(1), 4_096).await.expect("usage");
    a.card(&iccid(1)).await.expect("card");
    a.basic_info(&iccid(1)).await.expect("basic info");
    a.stop_reasons(&iccid(1)).await.expect("reasons");
    a.real_name_registered(&iccid(1)).await.expect("real name");
    let receipt = a.stop(&iccid(1)).await.expect("stop");
    if let Some(order) = receipt.order_id.as_deref() {
        a.order(&iccid(1), order).await.expect("order");
    }
    // The binding calls (the simulated carrier may keep no binding: result 2, unavailable).
    let _ = a.bind_status(&iccid(1)).await;
    a.imei(&iccid(1)).await.expect("imei");
    // And a call with a token the platform never issued: 12021.
    let resp = reqwest::Client::new()
        .get(format!("http://{addr}/v5/ec/query/sim-status"))
        .query(&[
            ("transid", "x"),
            ("token", "forged"),
            ("iccid", iccid(1).as_str()),
        ])
        .send()
        .await
        .expect("answer");
    assert_eq!(resp.status(), 200);
    let answers = log.lock().unwrap().clone();
    answers
}

#[tokio::test]
async fn wire_onelink_simulator_answers_in_the_dossier_shapes() {
    for method in [HttpMethod::Get, HttpMethod::Post] {
        let answers = simulator_answers(WireOptions::default(), method).await;
        let answer_to = |path: &str| {
            answers
                .iter()
                .find(|(p, _)| p == &format!("/v5/ec{path}"))
                .unwrap_or_else(|| panic!("no answer on {path}"))
                .1
                .clone()
        };
        for (path, file) in [
            ("/get/token", "get-token.s1.reply.json"),
            ("/query/sim-status", "query-sim-status.s2-1.reply.json"),
            (
                "/query/sim-basic-info",
                "query-sim-basic-info.s2-2.reply.json",
            ),
            (
                "/query/sim-data-usage",
                "query-sim-data-usage.s2-3.reply.json",
            ),
            ("/query/sim-session", "query-sim-session.s2-6.reply.json"),
            (
                "/query/sim-stop-reason",
                "query-sim-stop-reason.s2-7.reply.json",
            ),
            (
                "/query/sim-real-name-status",
                "query-sim-real-name-status.s2-8.reply.json",
            ),
            (
                "/change/sim-status",
                "change-sim-status.s3.reply-identifier.json",
            ),
            (
                "/query/card-bind-status",
                "query-card-bind-status.s7-1.reply.json",
            ),
            ("/query/sim-imei", "query-sim-imei.s2-9.reply.json"),
        ] {
            // `<ttl>` stands for a JSON integer ([SIMCTL]).
            let theirs = shape(&fixture(file).replace("<ttl>", "3600"));
            assert_eq!(
                shape(&answer_to(path)),
                theirs,
                "{method:?} {path} vs {file}"
            );
        }
        let forged = answers.last().expect("the forged call").1.clone();
        assert_eq!(
            shape(&forged),
            shape(&fixture("any-call.s0-4.reply-12021.json"))
        );
        assert_eq!(
            parse_envelope(forged.as_bytes()).expect("envelope").message,
            TOKEN_INVALID_MESSAGE
        );
    }
    // The disputed change reply, as an option; the adapter confirms it by reading the card.
    let answers = simulator_answers(
        WireOptions {
            change_reply_order_num: true,
            ..WireOptions::default()
        },
        HttpMethod::Post,
    )
    .await;
    let change = &answers
        .iter()
        .find(|(p, _)| p.ends_with("/change/sim-status"))
        .expect("a change")
        .1;
    assert_eq!(
        shape(change),
        shape(&fixture("change-sim-status.s3.reply-ordernum.json"))
    );
    let order = &answers
        .iter()
        .find(|(p, _)| p.ends_with("/query/order-info"))
        .expect("an order query")
        .1;
    assert_eq!(
        shape(order),
        shape(&fixture("query-order-info.s3-1.reply.json"))
    );
}

#[tokio::test]
async fn wire_onelink_simulator_checks_the_transid_strictly_only_when_asked() {
    for (strict, accepted) in [(false, true), (true, false)] {
        let r = rig_with(
            WireOptions {
                strict_transid: strict,
                ..WireOptions::default()
            },
            2_000,
        )
        .await;
        // A transid as IoTOS builds it: appid + 14 characters, no sequence (§0.3).
        let body = reqwest::Client::new()
            .get(format!("http://{}/v5/ec/get/token", r.addr))
            .query(&[
                ("appid", APPID),
                ("password", PASSWORD),
                ("transid", &format!("{APPID}20240101120000")),
            ])
            .send()
            .await
            .expect("answer")
            .text()
            .await
            .expect("body");
        let env = parse_envelope(body.as_bytes()).expect("envelope");
        assert_eq!(env.status == "0", accepted, "strict {strict}: {body}");
    }
    // A missing transid is refused either way.
    let r = rig().await;
    let body = reqwest::Client::new()
        .post(format!("http://{}/v5/ec/get/token", r.addr))
        .json(&serde_json::json!({"appid": APPID, "password": PASSWORD}))
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert_ne!(
        parse_envelope(body.as_bytes()).expect("envelope").status,
        "0"
    );
}

#[tokio::test]
async fn wire_onelink_simulator_refuses_a_change_the_state_does_not_allow() {
    let r = rig().await;
    // Card 2 is stopped: a second stop is refused by the simulator (SIM_WRONG_STATE) and
    // settled by the adapter from the card's state, applied nothing.
    r.adapter.stop(&iccid(2)).await.expect("already stopped");
    assert_eq!(r.sim.card(&iccid(2)).await.expect("sim").changes, 0);
    r.adapter.restore(&iccid(1)).await.expect("already active");
    assert_eq!(r.sim.card(&iccid(1)).await.expect("sim").changes, 0);
    r.adapter.stop(&iccid(1)).await.expect("stop");
    assert_eq!(r.sim.card(&iccid(1)).await.expect("sim").changes, 1);
}

// ---------------------------------------------------------------------------------------------
// Issue 20: orders, the repeat window, stop reasons and machine-card binding.
// ---------------------------------------------------------------------------------------------

use simgate::carrier::sim::Fault;
use simgate::carrier::{Binding, Rebind};
use simgate::domain::StopReasons;

/// The fixtures of `card()` and the reads, with the order-info, card-bind-status and sim-imei
/// fixtures, and `extra` over them (by path).
fn order_binding_fixtures(extra: &[(&'static str, String)]) -> Vec<(&'static str, String)> {
    let mut b = read_fixtures();
    b.push((
        "/query/order-info",
        fixture("query-order-info.s3-1.reply.json"),
    ));
    b.push((
        "/query/card-bind-status",
        fixture("query-card-bind-status.s7-1.reply.json"),
    ));
    b.push(("/query/sim-imei", fixture("query-sim-imei.s2-9.reply.json")));
    b.extend(extra.iter().cloned());
    b
}

fn requests_to(received: &Received, path: &str) -> usize {
    received
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.1 == format!("/v5/ec{path}"))
        .count()
}

#[tokio::test]
async fn wire_onelink_fixture_orders_and_binding_read_through_the_adapter() {
    let (a, received) = platform_answering(&order_binding_fixtures(&[]), HttpMethod::Get).await;
    assert!(a.queries_orders());
    assert_eq!(
        a.rebind_modes(),
        vec!["UNBIND", "CURRENT_DEVICE", "IMEI"],
        "all three modes"
    );
    // §3.1 completed.
    assert_eq!(
        a.order(&dossier_card(), "<orderNum>").await.expect("order"),
        OrderProgress::Completed
    );
    // An answer about another order never settles this one.
    assert!(matches!(
        a.order(&dossier_card(), "OTHER").await,
        Err(CarrierError::Transient(m)) if m.contains("OTHER")
    ));
    // §7.1 未分离 and §2.9's IMEI (by default the device's: not known to be bound); the
    // msisdn from §2.2's basic-info, asked once.
    let want = Binding {
        bound: false,
        imei: Some("860000000000001".into()),
        separated: false,
        separated_since: None,
    };
    for _ in 0..2 {
        assert_eq!(
            a.binding(&dossier_card()).await.expect("binding"),
            Some(want.clone())
        );
    }
    assert_eq!(requests_to(&received, "/query/sim-basic-info"), 1);
    assert_eq!(requests_to(&received, "/query/card-bind-status"), 2);
    // [PHP]'s reading (单卡绑定IMEI): the IMEI is the bound one.
    let (by_binding, _) = platform_answering_as(
        &order_binding_fixtures(&[]),
        |addr| OneLinkConfig {
            sim_imei_reports: ImeiReading::Binding,
            ..config_sending(addr, HttpMethod::Get)
        },
        ctx_default(),
    )
    .await;
    assert_eq!(
        by_binding.binding(&dossier_card()).await.expect("binding"),
        Some(Binding {
            bound: true,
            ..want.clone()
        })
    );
    // §2.7 position 9 → Manual, through the trait.
    assert_eq!(
        Carrier::stop_reasons(&a, &dossier_card())
            .await
            .expect("reasons"),
        Some(StopReasons::from_iter([StopReason::Manual]))
    );

    // Derived: position 2 机卡分离 → DeviceMismatch; 已分离 with a placeholder sepTime; an
    // unlisted order status word.
    let order = fixture("query-order-info.s3-1.reply.json")
        .replace(r#""status":"completed""#, r#""status":"done""#);
    let (a, _) = platform_answering(
        &order_binding_fixtures(&[
            (
                "/query/sim-stop-reason",
                fixture("derived/query-sim-stop-reason.s2-7.reply-position-2.json"),
            ),
            (
                "/query/card-bind-status",
                fixture("derived/query-card-bind-status.s7-1.reply-separated.json"),
            ),
            ("/query/order-info", order),
        ]),
        HttpMethod::Post,
    )
    .await;
    assert_eq!(
        Carrier::stop_reasons(&a, &dossier_card())
            .await
            .expect("reasons"),
        Some(StopReasons::from_iter([StopReason::DeviceMismatch]))
    );
    let b = a
        .binding(&dossier_card())
        .await
        .expect("binding")
        .expect("a binding");
    assert_eq!(
        (b.bound, b.separated, b.separated_since),
        (true, true, None)
    );
    assert_eq!(
        a.order(&dossier_card(), "<orderNum>").await.expect("order"),
        OrderProgress::Open("done".into()),
        "an unlisted word is open, never a guessed outcome"
    );
    // With a readable sepTime, the time of separation; and with the IMEI blank.
    let sep = fixture("derived/query-card-bind-status.s7-1.reply-separated.json")
        .replace("<time>", "20240101120000");
    let (a, _) = platform_answering(
        &order_binding_fixtures(&[
            ("/query/card-bind-status", sep),
            (
                "/query/sim-imei",
                fixture("query-sim-imei.s2-9.reply.json").replace("860000000000001", ""),
            ),
        ]),
        HttpMethod::Get,
    )
    .await;
    let b = a
        .binding(&dossier_card())
        .await
        .expect("binding")
        .expect("a binding");
    assert_eq!(
        b,
        Binding {
            bound: true,
            imei: None,
            separated: true,
            separated_since: beijing("2024-01-01 12:00:00"),
        }
    );
    // 查询失败: unavailable, with the platform's errorCode and errorDes.
    let (a, _) = platform_answering(
        &order_binding_fixtures(&[(
            "/query/card-bind-status",
            fixture("derived/query-card-bind-status.s7-1.reply-query-failed.json"),
        )]),
        HttpMethod::Get,
    )
    .await;
    assert!(matches!(
        a.binding(&dossier_card()).await,
        Err(CarrierError::Transient(m)) if m.contains("<code>") && m.contains("<text>")
    ));
    // No msisdn in basic-info and none stored: refused before card-bind-status is sent.
    let (a, received) = platform_answering(
        &order_binding_fixtures(&[(
            "/query/sim-basic-info",
            fixture("query-sim-basic-info.s2-2.reply.json").replace("1440000000001", ""),
        )]),
        HttpMethod::Get,
    )
    .await;
    assert_eq!(rejected_code(a.binding(&dossier_card()).await), "NO_MSISDN");
    assert_eq!(requests_to(&received, "/query/card-bind-status"), 0);
}

fn beijing(s: &str) -> Option<chrono::DateTime<chrono::Utc>> {
    simgate::carrier::http::onelink::beijing_time(s)
}

/// A request's parameters: the query string of a GET, the JSON body of a POST (values as
/// text), without `transid` and `token` (their values vary).
fn params_of(method: &str, query: &str, body: &str) -> std::collections::BTreeMap<String, String> {
    let mut out: std::collections::BTreeMap<String, String> = if method == "GET" {
        url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    } else {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON body");
        v.as_object()
            .expect("an object")
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().expect("a string value").to_string()))
            .collect()
    };
    out.remove("transid");
    out.remove("token");
    out
}

fn fixture_params(file: &str) -> (String, String, std::collections::BTreeMap<String, String>) {
    let text = fixture(file);
    let mut lines = text.lines();
    let (method, url) = lines
        .next()
        .expect("a request line")
        .split_once(' ')
        .expect("METHOD URL");
    let url = url::Url::parse(url).expect("a URL");
    let params = params_of(
        method,
        url.query().unwrap_or(""),
        lines.next().unwrap_or(""),
    );
    (method.to_string(), url.path().to_string(), params)
}

#[tokio::test]
async fn wire_onelink_order_and_binding_requests_carry_the_dossier_parameters() {
    let ok_empty = fixture("any-call.s0-4.reply-ok-empty.json");
    for method in [HttpMethod::Get, HttpMethod::Post] {
        let (a, received) = platform_answering(
            &order_binding_fixtures(&[("/operate/card-bind-by-bill", ok_empty.clone())]),
            method,
        )
        .await;
        a.order(&dossier_card(), "<orderNum>").await.expect("order");
        a.binding(&dossier_card()).await.expect("binding");
        for r in [
            Rebind::Unbind,
            Rebind::CurrentDevice,
            Rebind::Imei("860000000000001".into()),
        ] {
            assert_eq!(
                a.rebind(&dossier_card(), &r).await.expect("rebind"),
                Receipt::applied(),
                "{r:?}: status 0 is applied"
            );
        }
        let received = received.lock().unwrap().clone();
        let wanted = if method == HttpMethod::Get {
            "GET"
        } else {
            "POST"
        };
        let mut binds = received
            .iter()
            .filter(|r| r.1 == "/v5/ec/operate/card-bind-by-bill");
        for file in ORDER_BINDING_REQUEST_FIXTURES {
            let (_, path, want) = fixture_params(file);
            let r = if path.ends_with("/operate/card-bind-by-bill") {
                binds.next().expect("a rebind request")
            } else {
                received
                    .iter()
                    .find(|r| r.1 == path)
                    .unwrap_or_else(|| panic!("{method:?}: no request to {path}"))
            };
            assert_eq!(r.0, wanted, "{file}");
            // Names and values, every value a string (a POST's too).
            assert_eq!(params_of(&r.0, &r.2, &r.3), want, "{method:?} {file}");
            let (_, all_strings) = received_names(r);
            assert!(all_strings, "{file}");
        }
        // sim-imei names the card like every card query.
        let imei = received
            .iter()
            .find(|r| r.1 == "/v5/ec/query/sim-imei")
            .expect("sim-imei");
        assert_eq!(
            params_of(&imei.0, &imei.2, &imei.3),
            [("iccid".to_string(), "89860400000000000001".to_string())].into()
        );
    }
}

/// simgate's record of card numbers, for the adapter's account.
struct Book(&'static str);

#[async_trait::async_trait]
impl simgate::carrier::platform::CardNumbers for Book {
    async fn msisdn(
        &self,
        _: &simgate::domain::AccountId,
        _: &Iccid,
    ) -> Result<Option<String>, String> {
        Ok(Some(self.0.to_string()))
    }
}

#[tokio::test]
async fn wire_onelink_binding_settings_and_the_stored_number() {
    // The stored number names the card; basic-info is not asked. testType 1 and an 8-digit TAC.
    let account = simgate::carrier::platform::AccountCtx {
        numbers: simgate::carrier::platform::NumberBook(Arc::new(Book("1440000000009"))),
        ..ctx_default()
    };
    let (a, received) = platform_answering_as(
        &order_binding_fixtures(&[(
            "/operate/card-bind-by-bill",
            fixture("change-sim-status.s3.reply-ordernum.json"),
        )]),
        |addr| OneLinkConfig {
            bind_test_type: "1".into(),
            bind_tac_digits: 8,
            ..config_sending(addr, HttpMethod::Get)
        },
        account,
    )
    .await;
    a.binding(&dossier_card()).await.expect("binding");
    // A reply with an orderNum (the change call's [GOSDK] form): in progress.
    assert_eq!(
        a.rebind(&dossier_card(), &Rebind::Imei("860000000000001".into()))
            .await
            .expect("rebind"),
        Receipt::in_progress(Some("<orderNum>".into()))
    );
    // Too short for the TAC, or not digits: refused, nothing sent.
    for bad in ["8600000", "86000000000000x"] {
        assert_eq!(
            rejected_code(a.rebind(&dossier_card(), &Rebind::Imei(bad.into())).await),
            "IMEI_INVALID"
        );
    }
    let received = received.lock().unwrap().clone();
    assert!(!received
        .iter()
        .any(|r| r.1.ends_with("/query/sim-basic-info")));
    let status = received
        .iter()
        .find(|r| r.1.ends_with("/query/card-bind-status"))
        .expect("card-bind-status");
    assert_eq!(
        params_of(&status.0, &status.2, &status.3),
        [
            ("msisdn".to_string(), "1440000000009".to_string()),
            ("testType".to_string(), "1".to_string())
        ]
        .into()
    );
    let binds: Vec<_> = received
        .iter()
        .filter(|r| r.1.ends_with("/operate/card-bind-by-bill"))
        .collect();
    assert_eq!(binds.len(), 1, "the refused IMEIs were never sent");
    assert_eq!(
        params_of(&binds[0].0, &binds[0].2, &binds[0].3)
            .get("tac")
            .map(String::as_str),
        Some("86000000")
    );

    // Settings outside the dossier's values are refused at start.
    for (test_type, digits) in [("2", 14), ("0", 7), ("0", 15)] {
        let cfg = OneLinkConfig {
            bind_test_type: test_type.into(),
            bind_tac_digits: digits,
            ..config("127.0.0.1:1".parse().expect("addr"), PASSWORD, 2_000)
        };
        assert!(
            OneLink::new(&cfg, ctx_default()).is_err(),
            "{test_type} {digits}"
        );
    }
    // Defaults: testType 0, 14 digits, no window code.
    let cfg: OneLinkConfig = serde_json::from_value(serde_json::json!({
        "base_url": "http://h/v5/ec", "appid": "a", "password": "p"
    }))
    .expect("config");
    assert_eq!(
        (
            cfg.bind_test_type.as_str(),
            cfg.bind_tac_digits,
            cfg.repeat_window_code
        ),
        ("0", 14, None)
    );
}

#[tokio::test]
async fn wire_onelink_refused_changes_are_deferred_unless_final() {
    let refusal = |code: &str| format!(r#"{{"status":"{code}","message":"x","result":[]}}"#);
    // The account's window code: Deferred at once, the card not read again; a change and a
    // rebind alike.
    let bodies = order_binding_fixtures(&[
        ("/change/sim-status", refusal("19999")),
        ("/operate/card-bind-by-bill", refusal("19999")),
    ]);
    let (a, received) = platform_answering_as(
        &bodies,
        |addr| OneLinkConfig {
            repeat_window_code: Some("19999".into()),
            ..config_sending(addr, HttpMethod::Get)
        },
        ctx_default(),
    )
    .await;
    for r in [
        a.restore(&dossier_card()).await,
        a.rebind(&dossier_card(), &Rebind::Unbind).await,
    ] {
        assert!(
            matches!(&r, Err(CarrierError::Deferred { code, message, retry_after: None })
                if code == "19999" && message.contains("repeat window")),
            "{r:?}"
        );
    }
    assert_eq!(requests_to(&received, "/query/sim-status"), 0);

    // Without the setting the same code is unrecognised: the card is read (cardStatus 2), a
    // restore is thereby done and a stop Deferred; a rebind Deferred without a re-read.
    let (a, received) = platform_answering(&bodies, HttpMethod::Get).await;
    assert_eq!(
        a.restore(&dossier_card()).await.expect("done"),
        Receipt::applied()
    );
    assert!(matches!(
        a.stop(&dossier_card()).await,
        Err(CarrierError::Deferred { code, retry_after: None, .. }) if code == "19999"
    ));
    let reads = requests_to(&received, "/query/sim-status");
    assert!(matches!(
        a.rebind(&dossier_card(), &Rebind::CurrentDevice).await,
        Err(CarrierError::Deferred { code, .. }) if code == "19999"
    ));
    assert_eq!(requests_to(&received, "/query/sim-status"), reads);

    // A refused bind to the current device of a card sim-imei reports in no device: nothing
    // to bind to, final (NO_DEVICE, ours).
    let (a, _) = platform_answering(
        &order_binding_fixtures(&[
            ("/operate/card-bind-by-bill", refusal("19999")),
            (
                "/query/sim-imei",
                fixture("query-sim-imei.s2-9.reply.json").replace("860000000000001", ""),
            ),
        ]),
        HttpMethod::Get,
    )
    .await;
    assert_eq!(
        rejected_code(a.rebind(&dossier_card(), &Rebind::CurrentDevice).await),
        "NO_DEVICE"
    );
    assert!(matches!(
        a.rebind(&dossier_card(), &Rebind::Unbind).await,
        Err(CarrierError::Deferred { .. })
    ));

    // 11011 stays final for both.
    let (a, _) = platform_answering(
        &order_binding_fixtures(&[
            ("/change/sim-status", refusal("11011")),
            ("/operate/card-bind-by-bill", refusal("11011")),
        ]),
        HttpMethod::Get,
    )
    .await;
    assert_eq!(rejected_code(a.stop(&dossier_card()).await), "11011");
    assert_eq!(
        rejected_code(a.rebind(&dossier_card(), &Rebind::Unbind).await),
        "11011"
    );
    // A window code that would shadow a code the adapter acts on is refused at start.
    for code in ["0", "12021", "11011"] {
        let cfg = OneLinkConfig {
            repeat_window_code: Some(code.into()),
            ..config("127.0.0.1:1".parse().expect("addr"), PASSWORD, 2_000)
        };
        assert!(OneLink::new(&cfg, ctx_default()).is_err(), "{code}");
    }
}

#[tokio::test]
async fn wire_onelink_simulator_order_replies_settle_with_order_info() {
    let r = rig_with(
        WireOptions {
            change_reply_order_num: true,
            ..WireOptions::default()
        },
        2_000,
    )
    .await;
    let receipt = r.adapter.stop(&iccid(1)).await.expect("stop");
    assert!(receipt.in_progress, "{receipt:?}");
    let order = receipt.order_id.expect("an orderNum");
    // The simulated carrier applied it at once: the order is completed.
    assert_eq!(
        r.adapter.order(&iccid(1), &order).await.expect("order"),
        OrderProgress::Completed
    );
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Stopped
    );
    // An order the platform never gave: its (invented) refusal is unavailable, not an outcome.
    assert!(matches!(
        r.adapter.order(&iccid(1), "SIM999999999999").await,
        Err(CarrierError::Transient(m)) if m.contains("SIM_UNKNOWN_ORDER")
    ));
    assert!(matches!(
        r.adapter
            .order(&iccid(1), &format!("SIM0000009999-{}", iccid(1)))
            .await,
        Err(CarrierError::Transient(m)) if m.contains("SIM_UNKNOWN_ORDER")
    ));
    // Without the option the identifier reply is proof.
    let r = rig().await;
    assert_eq!(
        r.adapter.stop(&iccid(1)).await.expect("stop"),
        Receipt::applied()
    );
}

#[tokio::test]
async fn wire_onelink_simulator_unrecognised_refusal_is_deferred() {
    let r = rig().await;
    // The simulated carrier refuses with a code the adapter does not know (SIM_INJECTED): the
    // card is read, not in the target state, Deferred; nothing applied.
    r.sim.inject(Fault::Reject, 1);
    let e = r.adapter.stop(&iccid(1)).await.expect_err("refused");
    assert!(
        matches!(&e, CarrierError::Deferred { code, retry_after: None, .. } if code == "SIM_INJECTED"),
        "{e:?}"
    );
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
    // And then it goes through.
    r.adapter.stop(&iccid(1)).await.expect("stop");
}

#[tokio::test]
async fn wire_onelink_simulator_binding_calls_follow_the_simulated_carrier() {
    let r = rig().await;
    // A card the platform lacks: its 11011 (from basic-info, asked for the number).
    assert_eq!(rejected_code(r.adapter.binding(&iccid(77)).await), "11011");
    // Card 1's number (RIG_MSISDN) finds it at the simulator; what the simulated carrier
    // says of its binding decides the answer.
    match r.sim.binding(&iccid(1)).await.expect("sim binding") {
        None => assert!(matches!(
            r.adapter.binding(&iccid(1)).await,
            Err(CarrierError::Transient(m)) if m.contains("SIM_NO_BINDING")
        )),
        Some(b) => assert_eq!(
            r.adapter.binding(&iccid(1)).await.expect("binding"),
            Some(Binding {
                // Only a separation shows a binding (sim_imei_reports "device").
                bound: b.separated,
                separated_since: b
                    .separated_since
                    .map(|t| { chrono::DateTime::from_timestamp(t.timestamp(), 0).expect("time") }),
                ..b
            })
        ),
    }
    // The simulated carrier's stop reasons come through the flag.
    assert_eq!(
        Carrier::stop_reasons(&r.adapter, &iccid(2))
            .await
            .expect("reasons"),
        Some(StopReasons::from_iter([StopReason::Manual]))
    );
    assert_eq!(
        Carrier::stop_reasons(&r.adapter, &iccid(1))
            .await
            .expect("reasons"),
        Some(StopReasons::NONE)
    );
}

// Backed by the simulated carrier's orders, repeat window and binding (issue 20).

use simgate::clock::Clock;

/// A second simulator in front of the rig's simulated carrier, recording its answers, and an
/// adapter talking to it.
async fn recorded(r: &Rig) -> (OneLink, crate::helpers::Exchanges) {
    let log = crate::helpers::Exchanges::default();
    let server_cfg = config("127.0.0.1:1".parse().expect("addr"), PASSWORD, 2_000);
    let app = crate::helpers::recording(
        router(r.sim.clone(), &server_cfg, WireOptions::default()),
        log.clone(),
        |uri| uri.path().to_string(),
    );
    let addr = serve(app).await;
    let a = OneLink::new(&config_sending(addr, HttpMethod::Get), ctx_default()).expect("adapter");
    (a, log)
}

/// Two IMEIs with valid check digits.
const IMEI_A: &str = "490154203237518";
const IMEI_B: &str = "860000000000009";

#[tokio::test]
async fn wire_onelink_simulator_orders_are_open_then_completed() {
    let r = rig().await;
    r.sim.set_faults(SimFaults {
        orders: true,
        order_delay_s: 60,
        ..SimFaults::default()
    });
    let receipt = r.adapter.stop(&iccid(1)).await.expect("stop");
    assert!(receipt.in_progress, "{receipt:?}");
    let order = receipt
        .order_id
        .expect("the simulated carrier's order number");
    match r.adapter.order(&iccid(1), &order).await.expect("order") {
        OrderProgress::Open(word) => assert!(
            simgate::carrier::http::onelink::codes::order_kind(&word).is_some(),
            "a listed word: {word}"
        ),
        other => panic!("expected Open, got {other:?}"),
    }
    assert_eq!(
        r.sim.inspect(&iccid(1)).await.expect("sim").state,
        ServiceState::Active,
        "not applied before the order completes"
    );
    r.clock
        .advance(chrono::Duration::seconds(61))
        .expect("clock");
    assert_eq!(
        r.adapter.order(&iccid(1), &order).await.expect("order"),
        OrderProgress::Completed
    );
    assert_eq!(
        r.sim.inspect(&iccid(1)).await.expect("sim").state,
        ServiceState::Stopped
    );
    // The change reply had the order shape of the fixture, with the card's number.
    let (a, log) = recorded(&r).await;
    let receipt = a.restore(&iccid(1)).await.expect("restore");
    a.order(&iccid(1), receipt.order_id.as_deref().expect("an order"))
        .await
        .expect("order");
    let answers = log.lock().unwrap().clone();
    let answer = |path: &str| {
        answers
            .iter()
            .find(|(p, _)| p.ends_with(path))
            .unwrap_or_else(|| panic!("no {path}"))
            .1
            .clone()
    };
    let change = answer("/change/sim-status");
    assert_eq!(
        shape(&change),
        shape(&fixture("change-sim-status.s3.reply-ordernum.json"))
    );
    assert!(change.contains(RIG_MSISDN), "{change}");
    assert_eq!(
        shape(&answer("/query/order-info")),
        shape(&fixture("query-order-info.s3-1.reply.json"))
    );
}

#[tokio::test]
async fn wire_onelink_simulator_window_code_is_deferred() {
    for (sim_code, adapter_code) in [
        (None, Some("19999")),
        (Some("77777"), Some("77777")),
        // The adapter not told the code: unrecognised, read, Deferred all the same.
        (None, None),
    ] {
        let opts = WireOptions {
            repeat_window_code: sim_code
                .unwrap_or(simgate::carrier::http::onelink::simulator::INVENTED_REPEAT_WINDOW)
                .to_string(),
            ..WireOptions::default()
        };
        let r = rig_with(opts, 2_000).await;
        r.sim.set_faults(SimFaults {
            repeat_window_s: Some(1800),
            ..SimFaults::default()
        });
        let a = OneLink::new(
            &OneLinkConfig {
                repeat_window_code: adapter_code.map(String::from),
                ..config(r.addr, PASSWORD, 2_000)
            },
            ctx_default(),
        )
        .expect("adapter");
        a.stop(&iccid(1)).await.expect("the first change");
        let e = a.restore(&iccid(1)).await.expect_err("inside the window");
        let want = sim_code.unwrap_or("19999");
        assert!(
            matches!(&e, CarrierError::Deferred { code, retry_after: None, .. } if code == want),
            "{adapter_code:?}: {e:?}"
        );
        assert_eq!(
            r.sim.inspect(&iccid(1)).await.expect("sim").state,
            ServiceState::Stopped
        );
        // After the window the change goes through.
        r.clock
            .advance(chrono::Duration::seconds(1801))
            .expect("clock");
        a.restore(&iccid(1)).await.expect("after the window");
    }
}

#[tokio::test]
async fn wire_onelink_simulator_binding_round_trips() {
    let r = rig().await;
    // In IMEI_A's device, bound to it.
    r.sim.bind(&iccid(1), IMEI_A).await.expect("bind");
    let b = r
        .adapter
        .binding(&iccid(1))
        .await
        .expect("binding")
        .expect("a binding");
    // sim-imei is the device's IMEI (sim_imei_reports "device"); 未分离 shows no binding.
    assert_eq!(
        b,
        Binding {
            bound: false,
            imei: Some(IMEI_A.into()),
            separated: false,
            separated_since: None,
        }
    );
    // Moved to another device: 已分离, since the move (to the second: the wire has no more).
    r.clock
        .advance(chrono::Duration::seconds(5))
        .expect("clock");
    let moved_at = r.clock.now();
    r.sim.move_to_device(&iccid(1), IMEI_B).await.expect("move");
    let b = r
        .adapter
        .binding(&iccid(1))
        .await
        .expect("binding")
        .expect("a binding");
    let at_sim = r
        .sim
        .binding(&iccid(1))
        .await
        .expect("sim")
        .expect("binding");
    assert!(at_sim.separated && b.separated, "{b:?}");
    assert_eq!(b.imei.as_deref(), Some(IMEI_B));
    assert!(b.bound, "a separation shows a binding");
    assert_eq!(
        b.separated_since.map(|t| t.timestamp()),
        Some(moved_at.timestamp())
    );
    // Bind it to the device it is in now (首话单自动绑定): no longer separated.
    assert_eq!(
        r.adapter
            .rebind(&iccid(1), &Rebind::CurrentDevice)
            .await
            .expect("rebind"),
        Receipt::applied()
    );
    let at_sim = r.sim.binding_of(&iccid(1)).await.expect("sim");
    assert_eq!(at_sim.bound_imei.as_deref(), Some(IMEI_B));
    assert!(
        !r.adapter
            .binding(&iccid(1))
            .await
            .expect("b")
            .expect("b")
            .separated
    );
    // Bind to IMEI_A by its TAC: the simulated carrier binds the IMEI those 14 digits begin.
    r.clock
        .advance(chrono::Duration::seconds(5))
        .expect("clock");
    r.adapter
        .rebind(&iccid(1), &Rebind::Imei(IMEI_A.into()))
        .await
        .expect("rebind");
    let at_sim = r.sim.binding_of(&iccid(1)).await.expect("sim");
    assert_eq!(at_sim.bound_imei.as_deref(), Some(IMEI_A));
    assert!(
        r.adapter
            .binding(&iccid(1))
            .await
            .expect("b")
            .expect("b")
            .separated
    );
    // Unbind.
    r.adapter
        .rebind(&iccid(1), &Rebind::Unbind)
        .await
        .expect("unbind");
    assert_eq!(
        r.sim.binding_of(&iccid(1)).await.expect("sim").bound_imei,
        None
    );
    // The rebind reply (not found in the dossier) is the §0.4 verbatim success shape.
    let (a, log) = recorded(&r).await;
    a.rebind(&iccid(1), &Rebind::Unbind).await.expect("unbind");
    let answers = log.lock().unwrap().clone();
    let reply = &answers
        .iter()
        .find(|(p, _)| p.ends_with("/operate/card-bind-by-bill"))
        .expect("a rebind")
        .1;
    let json = |b: &str| serde_json::from_str::<serde_json::Value>(b).expect("JSON");
    assert_eq!(
        json(reply),
        json(&fixture("any-call.s0-4.reply-ok-empty.json"))
    );
    // With orders on, a rebind is an order too.
    r.sim.set_faults(SimFaults {
        orders: true,
        ..SimFaults::default()
    });
    let receipt = r
        .adapter
        .rebind(&iccid(1), &Rebind::CurrentDevice)
        .await
        .expect("rebind");
    assert!(
        receipt.in_progress && receipt.order_id.is_some(),
        "{receipt:?}"
    );
}

// Batch calls (§4, §4.1, §5.1-5.3).

use simgate::carrier::{BatchItem, BatchJob, Change};

/// The dossier's second card (its number `1440000000002` is the batch fixtures' second).
fn dossier_card_2() -> Iccid {
    Iccid::parse_any("89860400000000000002").expect("the second dossier ICCID")
}

/// simgate's stored numbers: the dossier's two cards.
struct DossierNumbers;

#[async_trait::async_trait]
impl simgate::carrier::platform::CardNumbers for DossierNumbers {
    async fn msisdn(
        &self,
        _: &simgate::domain::AccountId,
        iccid: &Iccid,
    ) -> Result<Option<String>, String> {
        Ok(match iccid.as_str() {
            "89860400000000000001" => Some("1440000000001".into()),
            "89860400000000000002" => Some("1440000000002".into()),
            _ => None,
        })
    }
}

fn batch_fixtures() -> Vec<(&'static str, String)> {
    let mut b = read_fixtures();
    for (path, file) in [
        (
            "/query/sim-data-usage-monthly/batch",
            "query-sim-data-usage-monthly-batch.s5-2.reply.json",
        ),
        (
            "/query/sim-card-info/batch",
            "query-sim-card-info-batch.s5-3.reply.json",
        ),
        (
            "/change/sim-status/batch",
            "change-sim-status-batch.s4.reply.json",
        ),
        (
            "/query/sim-batch-result",
            "query-sim-batch-result.s4-1.reply.json",
        ),
    ] {
        b.push((path, fixture(file)));
    }
    b
}

/// The clock of the derived monthly request (queryDate 202401): 2024-01-15 12:00 Beijing.
fn january_2024() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(
        beijing("2024-01-15 12:00:00").expect("a time"),
    ))
}

#[tokio::test]
async fn wire_onelink_batch_fixtures_read_through_the_adapter() {
    // No number stored: the monthly items (by msisdn only) name no card simgate knows the
    // number of, so the usage is read alone; a batch change looks the number up once.
    let (a, received) = platform_answering_as(
        &batch_fixtures(),
        |addr| config_sending(addr, HttpMethod::Get),
        ctx_default(),
    )
    .await;
    let a = a.with_clock(january_2024());
    let c = a.cards(&[dossier_card()]).await.expect("cards");
    assert_eq!(
        (c[0].state, c[0].cycle_usage_bytes, c[0].last_session),
        (ServiceState::Active, 10_240 * 1024, LastSession::Unknown),
        "the single call's fixture"
    );
    assert_eq!(requests_to(&received, "/query/sim-data-usage"), 1);
    let receipt = a
        .change_batch(&[dossier_card()], &Change::Stop)
        .await
        .expect("batch stop");
    assert_eq!(receipt.job_id, "<jobId>");
    assert_eq!(requests_to(&received, "/query/sim-card-info/batch"), 1);
    // Now the number is kept: the monthly item is the card's, and no lookup is repeated.
    let c = a.cards(&[dossier_card()]).await.expect("cards");
    assert_eq!(c[0].cycle_usage_bytes, 2048 * 1024, "the monthly fixture");
    assert_eq!(requests_to(&received, "/query/sim-data-usage"), 1);
    let job = a
        .batch_job("<jobId>", &[dossier_card()])
        .await
        .expect("job");
    // The second item's number names no card of the job: not taken.
    assert_eq!(
        job,
        BatchJob {
            finished: true,
            status: "3".into(),
            items: vec![(dossier_card(), BatchItem::Applied)],
        }
    );
    assert_eq!(requests_to(&received, "/query/sim-card-info/batch"), 1);
}

#[tokio::test]
async fn wire_onelink_batch_requests_match_the_dossier() {
    let cards = [dossier_card(), dossier_card_2()];
    for method in [HttpMethod::Get, HttpMethod::Post] {
        // Stored numbers: no lookup before the batch change.
        let stored = simgate::carrier::platform::AccountCtx {
            numbers: simgate::carrier::platform::NumberBook(Arc::new(DossierNumbers)),
            ..ctx_default()
        };
        let (a, received) = platform_answering_as(
            &batch_fixtures(),
            |addr| config_sending(addr, method),
            stored,
        )
        .await;
        let a = a.with_clock(january_2024());
        a.cards(&cards).await.expect("cards");
        a.change_batch(&cards, &Change::Stop).await.expect("stop");
        let job = a.batch_job("<jobId>", &cards).await.expect("job");
        assert_eq!(
            job.items,
            vec![
                (dossier_card(), BatchItem::Applied),
                (
                    dossier_card_2(),
                    BatchItem::Failed {
                        code: "<code>".into(),
                        message: "<text>".into()
                    }
                ),
            ]
        );
        assert_eq!(requests_to(&received, "/query/sim-card-info/batch"), 0);
        // Without stored numbers: one card-info lookup for both.
        let (b, received_b) = platform_answering_as(
            &batch_fixtures(),
            |addr| config_sending(addr, method),
            ctx_default(),
        )
        .await;
        // The card-info fixture knows only the first card: the second has no number.
        assert_eq!(
            rejected_code(b.change_batch(&cards, &Change::Restore).await),
            "NO_MSISDN"
        );
        assert_eq!(requests_to(&received_b, "/change/sim-status/batch"), 0);
        let received: Vec<_> = received
            .lock()
            .unwrap()
            .iter()
            .chain(received_b.lock().unwrap().iter())
            .cloned()
            .collect();
        for file in BATCH_REQUEST_FIXTURES {
            let (_, path, want) = fixture_params(file);
            let r = received
                .iter()
                .find(|r| r.1 == path)
                .unwrap_or_else(|| panic!("{method:?}: no request to {path}"));
            let wanted = if method == HttpMethod::Get {
                "GET"
            } else {
                "POST"
            };
            assert_eq!(r.0, wanted);
            let got = params_of(&r.0, &r.2, &r.3);
            // The dossier's values, `_`-joined (the job id is the reply fixture's placeholder).
            assert_eq!(got, want, "{method:?} {path}");
        }
    }
    // batch_result_key = "orderNum" ([IOTOS]) names the job under that key.
    let (a, received) = platform_answering_as(
        &batch_fixtures(),
        |addr| OneLinkConfig {
            batch_result_key: BatchResultKey::OrderNum,
            ..config_sending(addr, HttpMethod::Get)
        },
        simgate::carrier::platform::AccountCtx {
            numbers: simgate::carrier::platform::NumberBook(Arc::new(DossierNumbers)),
            ..ctx_default()
        },
    )
    .await;
    a.batch_job("<jobId>", &cards).await.expect("job");
    let r = received
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.1.ends_with("/query/sim-batch-result"))
        .cloned()
        .expect("a batch-result request");
    let got = params_of(&r.0, &r.2, &r.3);
    assert_eq!(got.get("orderNum").map(String::as_str), Some("<jobId>"));
    assert!(!got.contains_key("jobId"));
}

#[tokio::test]
async fn wire_onelink_batch_limits_and_dates_are_checked_before_sending() {
    let (a, received) = platform_answering(&batch_fixtures(), HttpMethod::Get).await;
    let a = a.with_clock(january_2024());
    let many: Vec<Iccid> = (1..=101).map(iccid).collect();
    for r in [
        rejected_code(a.change_batch(&many, &Change::Stop).await),
        rejected_code(a.change_batch(&[], &Change::Stop).await),
        rejected_code(a.card_info(&many).await),
        rejected_code(a.monthly_usage(&many).await),
    ] {
        assert_eq!(r, "BATCH_REFUSED_LOCALLY");
    }
    assert_eq!(
        rejected_code(a.change_batch(&[dossier_card()], &Change::Cancel).await),
        "BATCH_NOT_SUPPORTED"
    );
    let day = |d: u32| chrono::NaiveDate::from_ymd_opt(2024, 1, d).expect("a day");
    for out_of_range in [day(15), day(7), day(16)] {
        assert_eq!(
            rejected_code(a.daily_usage(&[dossier_card()], out_of_range).await),
            "BATCH_REFUSED_LOCALLY"
        );
    }
    assert!(received
        .lock()
        .unwrap()
        .iter()
        .all(|r| !r.1.contains("batch")));
    // A refused batch change is Deferred with the platform's code.
    let mut bodies = batch_fixtures();
    bodies.push((
        "/change/sim-status/batch",
        r#"{"status":"19998","message":"批量办理中有卡号在30分钟内有成功调用","result":[]}"#.into(),
    ));
    let (a, _) = platform_answering_as(
        &bodies,
        |addr| config_sending(addr, HttpMethod::Get),
        simgate::carrier::platform::AccountCtx {
            numbers: simgate::carrier::platform::NumberBook(Arc::new(DossierNumbers)),
            ..ctx_default()
        },
    )
    .await;
    match a.change_batch(&[dossier_card()], &Change::Stop).await {
        Err(CarrierError::Deferred { code, .. }) => assert_eq!(code, "19998"),
        other => panic!("expected Deferred, got {other:?}"),
    }
}

/// The rig with `extra` more active cards (4, 5, …) and an adapter on the simulated carrier's
/// clock.
async fn batch_rig(extra: u64, faults: SimFaults) -> (Rig, OneLink) {
    let r = rig().await;
    r.sim.set_faults(faults);
    let more: Vec<OnboardCard> = (4..4 + extra)
        .map(|n| OnboardCard {
            iccid: iccid(n),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        })
        .collect();
    if !more.is_empty() {
        r.sim.onboard(&more).await.expect("more cards");
    }
    let a = OneLink::new(&config(r.addr, PASSWORD, 5_000), ctx_default())
        .expect("adapter")
        .with_clock(Arc::new(r.clock.clone()));
    (r, a)
}

fn no_window() -> SimFaults {
    SimFaults {
        repeat_window_s: Some(0),
        ..SimFaults::default()
    }
}

#[tokio::test]
async fn wire_onelink_simulator_cards_read_usage_up_to_yesterday_in_three_batch_calls() {
    let (r, a) = batch_rig(247, no_window()).await;
    // Yesterday: card 1 uses 1 MiB (on top of the 5000 bytes it was onboarded with that day).
    r.sim.record_usage(&iccid(1), 1 << 20).await.expect("usage");
    r.clock.advance(chrono::Duration::days(1)).expect("clock");
    // Today: not in the batch answer yet.
    r.sim.record_usage(&iccid(1), 7 << 20).await.expect("usage");
    r.sim.record_usage(&iccid(3), 1 << 20).await.expect("usage");
    let all: Vec<Iccid> = (1..=250).map(iccid).collect();
    let read = a.cards(&all).await.expect("cards");
    assert_eq!(read.len(), 250);
    assert_eq!(
        r.stats.calls_to("/query/sim-data-usage-monthly/batch"),
        3,
        "one per 100 cards"
    );
    assert_eq!(r.stats.calls_to("/query/sim-data-usage"), 0);
    assert_eq!(r.stats.calls_to("/query/sim-session"), 0);
    assert_eq!(r.stats.calls_to("/query/sim-status"), 250);
    let one = &read[0];
    assert_eq!(
        (one.iccid.clone(), one.state, one.cycle_usage_bytes),
        (iccid(1), ServiceState::Active, 5_000 + (1 << 20))
    );
    assert_eq!(one.last_session, LastSession::Unknown);
    assert_eq!(
        (read[1].state, read[2].cycle_usage_bytes),
        (ServiceState::Stopped, 2_048)
    );
    // The single call is real time (the simulated carrier has no PB lag).
    assert_eq!(
        a.card(&iccid(1)).await.expect("card").cycle_usage_bytes,
        5_000 + (8 << 20)
    );
    // The daily batch: one day's usage (an import's usage counts on the day before it).
    let yesterday =
        simgate::carrier::http::onelink::beijing_day(r.clock.now()) - chrono::Duration::days(1);
    let three = [iccid(1), iccid(2), iccid(3)];
    let daily = a.daily_usage(&three, yesterday).await.expect("daily");
    assert_eq!(
        (
            daily.get(&iccid(1)),
            daily.get(&iccid(2)),
            daily.get(&iccid(3))
        ),
        (Some(&(1 << 20)), Some(&0), Some(&0))
    );
    let before = yesterday - chrono::Duration::days(1);
    let daily = a.daily_usage(&three, before).await.expect("daily");
    assert_eq!(
        (daily.get(&iccid(1)), daily.get(&iccid(3))),
        (Some(&5_000), Some(&2_048))
    );
    // A card the platform does not know is left out.
    let read = a.cards(&[iccid(1), iccid(900)]).await.expect("cards");
    assert_eq!(read.len(), 1);
}

#[tokio::test]
async fn wire_onelink_simulator_batch_change_is_a_job_applied_card_by_card() {
    let (r, a) = batch_rig(0, no_window()).await;
    let cards = [iccid(1), iccid(2), iccid(3)];
    let receipt = a
        .change_batch(&cards, &Change::Stop)
        .await
        .expect("batch stop");
    assert!(receipt.job_id.starts_with("JOB"), "{receipt:?}");
    let job = a.batch_job(&receipt.job_id, &cards).await.expect("job");
    assert!(job.finished, "{job:?}");
    assert_eq!(job.status, "2");
    for c in &cards {
        assert!(
            job.items.contains(&(c.clone(), BatchItem::Applied)),
            "{c}: {job:?}"
        );
        assert_eq!(
            r.sim.inspect(c).await.expect("sim").state,
            ServiceState::Stopped
        );
    }
    assert_eq!(r.stats.calls_to("/query/sim-card-info/batch"), 1);
    // The numbers are kept: a second batch and its job make no lookup.
    let receipt = a
        .change_batch(&cards, &Change::Restore)
        .await
        .expect("restore");
    a.batch_job(&receipt.job_id, &cards).await.expect("job");
    assert_eq!(r.stats.calls_to("/query/sim-card-info/batch"), 1);
    assert_eq!(r.stats.calls_to("/change/sim-status/batch"), 2);
    assert_eq!(
        r.sim.inspect(&iccid(2)).await.expect("sim").state,
        ServiceState::Active
    );
}

#[tokio::test]
async fn wire_onelink_simulator_batch_orders_are_open_then_applied() {
    let (r, a) = batch_rig(
        0,
        SimFaults {
            orders: true,
            order_delay_s: 60,
            ..no_window()
        },
    )
    .await;
    let cards = [iccid(1), iccid(3)];
    let receipt = a
        .change_batch(&cards, &Change::Stop)
        .await
        .expect("batch stop");
    let job = a.batch_job(&receipt.job_id, &cards).await.expect("job");
    assert_eq!((job.finished, job.status.as_str()), (false, "1"), "{job:?}");
    assert_eq!(
        job.items,
        vec![(iccid(1), BatchItem::Open), (iccid(3), BatchItem::Open)]
    );
    r.clock
        .advance(chrono::Duration::seconds(61))
        .expect("clock");
    let job = a.batch_job(&receipt.job_id, &cards).await.expect("job");
    assert!(job.finished, "{job:?}");
    assert_eq!(
        job.items,
        vec![
            (iccid(1), BatchItem::Applied),
            (iccid(3), BatchItem::Applied)
        ]
    );
}

#[tokio::test]
async fn wire_onelink_simulator_a_card_inside_its_window_fails_the_batch() {
    let (r, a) = batch_rig(
        0,
        SimFaults {
            repeat_window_s: Some(1800),
            ..SimFaults::default()
        },
    )
    .await;
    a.stop(&iccid(3))
        .await
        .expect("a single stop opens card 3's window");
    match a.change_batch(&[iccid(1), iccid(3)], &Change::Stop).await {
        Err(CarrierError::Deferred { code, .. }) => assert_eq!(
            code,
            simgate::carrier::http::onelink::simulator::SIM_BATCH_REPEAT_WINDOW
        ),
        other => panic!("expected Deferred, got {other:?}"),
    }
    // No card of the batch changed.
    assert_eq!(
        r.sim.inspect(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
}

#[tokio::test]
async fn wire_onelink_simulator_refuses_batches_over_100_and_unknown_numbers() {
    let (r, a) = batch_rig(0, no_window()).await;
    // Straight to the simulator: the adapter refuses such batches itself.
    let token = reqwest::Client::new()
        .get(format!("http://{}/v5/ec/get/token", r.addr))
        .query(&[("appid", APPID), ("password", PASSWORD), ("transid", "t")])
        .send()
        .await
        .expect("token")
        .json::<serde_json::Value>()
        .await
        .expect("json")["result"][0]["token"]
        .as_str()
        .expect("a token")
        .to_string();
    let many = (1..=101)
        .map(|n| format!("1440000000{n:03}"))
        .collect::<Vec<_>>()
        .join("_");
    for (path, key, ids) in [
        ("/change/sim-status/batch", "msisdns", many.clone()),
        (
            "/query/sim-card-info/batch",
            "iccids",
            (1..=101)
                .map(|n| iccid(n).to_string())
                .collect::<Vec<_>>()
                .join("_"),
        ),
    ] {
        let body = reqwest::Client::new()
            .get(format!("http://{}/v5/ec{path}", r.addr))
            .query(&[
                ("transid", "t"),
                ("token", token.as_str()),
                (key, ids.as_str()),
                ("operType", "9"),
                ("reason", "01"),
            ])
            .send()
            .await
            .expect("answer")
            .json::<serde_json::Value>()
            .await
            .expect("json");
        assert_eq!(
            body["status"],
            simgate::carrier::http::onelink::simulator::SIM_BATCH_TOO_LARGE,
            "{path}: {body}"
        );
    }
    // An unknown number is reported failed (11011) in the job, the others applied.
    let job = a
        .change_batch(&[iccid(1)], &Change::Stop)
        .await
        .expect("batch");
    let j = a.batch_job(&job.job_id, &[iccid(1)]).await.expect("job");
    assert_eq!(j.items, vec![(iccid(1), BatchItem::Applied)]);
}
