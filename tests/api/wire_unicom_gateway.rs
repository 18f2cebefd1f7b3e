//! The China Unicom IoT gateway adapter: against the dossier's fixtures (a fake platform
//! answering each call with a fixture body, recording each request), and against its wire
//! simulator over loopback HTTP, with the simulator backed by a SimCarrier on a test database.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};
use simgate::carrier::http::unicom_gateway::auth::{self, TimestampFormat, TokenRecipe};
use simgate::carrier::http::unicom_gateway::simulator::{
    router, WireOptions, INVENTED_AUTH_REFUSED, INVENTED_TOO_MANY_ICCIDS,
};
use simgate::carrier::http::unicom_gateway::{
    UnicomGateway, UnicomGatewayConfig, CODE_CARD_NOT_KNOWN, CODE_NOT_RETIRED,
};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::platform::AccountCtx;
use simgate::carrier::sim::SimCarrier;
use simgate::carrier::{Carrier, CarrierError, OnboardCard, Receipt, ServiceState};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::{CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{start_time, unicom_iccid, Backend, TestDb};

/// The dossier's fakes (unicom-gateway.md, head).
const APP_ID: &str = "AAAAAAAAAA";
const OPEN_ID: &str = "00000ouAAAAAAAA";
const DOSSIER_ICCID: &str = "89860600000000000001";
const SECRET: &str = "0123456789abcdefghij";
const REQUEST_MS: u64 = 800;
const MIB: u64 = 1 << 20;

const DETAILS: &str = "/api/wsGetTerminalDetails/V1/1Main/vV1.1";
const EDIT: &str = "/api/wsEditTerminal/V1/1Main/vV1.1";
const USAGE: &str = "/api/wsGetTerminalUsage/V1/1Main/vV1.1";

fn config(base: &str) -> UnicomGatewayConfig {
    UnicomGatewayConfig {
        base_url: format!("{base}/api"),
        app_id: APP_ID.into(),
        app_secret: Secret::new(SECRET),
        open_id: OPEN_ID.into(),
        timeouts: HttpTimeouts {
            connect_ms: 1_000,
            request_ms: REQUEST_MS,
        },
        token_recipe: TokenRecipe::default(),
        timestamp_format: TimestampFormat::default(),
        version: "1.0".into(),
        asynchronous: "0".into(),
    }
}

fn ctx() -> AccountCtx {
    AccountCtx::default_for(CarrierId::Unicom)
}

async fn serve(app: axum::Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind loopback");
    let addr = listener.local_addr().expect("local addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    format!("http://{addr}")
}

// ---------------------------------------------------------------------------------------------
// Golden fixtures (`tests/fixtures/carrier-wire/unicom_gateway/`, see its INDEX.md).

const FIXTURES: &[&str] = &[
    "envelope.s0-3.request.json",
    "any.s0-5.reply-1104.json",
    "wsGetTerminalDetails.s1.request.json",
    "wsGetTerminalDetails.s1.reply.json",
    "wsEditTerminal.s2.request.json",
    "wsEditTerminal.s2.reply.json",
    "wsGetTerminalUsage.s5.reply.json",
    "derived/wsGetTerminalUsage.s5.request.derived.json",
    "derived/wsGetTerminalUsage.s5.reply-1074.derived.json",
    "derived/wsGetTerminalDetails.s1.reply-status-outside-table.derived.json",
    "derived/wsGetTerminalDetails.s1.reply-not-in-terminals.derived.json",
    "derived/wsGetTerminalDetails.s1.reply-retired.derived.json",
    "derived/wsGetTerminalDetails.s1.reply-too-many-iccids.ours.json",
    "derived/any.s0-5.reply-bad-token.ours.json",
    "derived/token.s0-4.vectors.derived.txt",
];

fn fixture_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carrier-wire/unicom_gateway")
}

fn fixture(name: &str) -> String {
    let path = fixture_dir().join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn fixture_json(name: &str) -> Value {
    serde_json::from_str(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn keys(v: &Value) -> BTreeSet<String> {
    v.as_object()
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

fn dossier_iccid() -> Iccid {
    Iccid::parse_any(DOSSIER_ICCID).expect("the dossier's ICCID")
}

#[test]
fn wire_unicom_gateway_every_fixture_is_in_the_table() {
    let found = crate::helpers::fixture_files("unicom_gateway");
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

#[test]
fn wire_unicom_gateway_token_vectors_recompute() {
    let v: BTreeMap<String, String> = fixture("derived/token.s0-4.vectors.derived.txt")
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    for (recipe, name) in [
        (TokenRecipe::Sm3Named, "sm3_named"),
        (TokenRecipe::Sha256Plain, "sha256_plain"),
    ] {
        assert_eq!(
            auth::token(
                recipe,
                &v["app_id"],
                &v["timestamp"],
                &v["trans_id"],
                &v["app_secret"]
            ),
            v[name],
            "{name}"
        );
    }
}

/// One request as the fake platform saw it.
#[derive(Debug, Clone)]
struct Seen {
    path: String,
    content_type: Option<String>,
    body: Value,
}

type Answers = Arc<Mutex<BTreeMap<&'static str, String>>>;

/// A fake gateway answering each path with the body set for it (200), recording requests.
async fn platform_answering(
    answers: &[(&'static str, &str)],
) -> (String, Answers, Arc<Mutex<Vec<Seen>>>) {
    let answers: Answers = Arc::new(Mutex::new(
        answers
            .iter()
            .map(|(p, f)| (*p, fixture(f)))
            .collect::<BTreeMap<_, _>>(),
    ));
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let (a, log) = (answers.clone(), seen.clone());
    let app = axum::Router::new().fallback(move |req: axum::extract::Request| {
        let (a, log) = (a.clone(), log.clone());
        async move {
            let (parts, body) = req.into_parts();
            let body = axum::body::to_bytes(body, 1 << 20).await.expect("body");
            let path = parts.uri.path().to_string();
            log.lock().expect("seen").push(Seen {
                path: path.clone(),
                content_type: parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                body: serde_json::from_slice(&body).unwrap_or(Value::Null),
            });
            let answer = a
                .lock()
                .expect("answers")
                .iter()
                .find(|(p, _)| path.ends_with(**p))
                .map(|(_, b)| b.clone());
            match answer {
                Some(b) => (axum::http::StatusCode::OK, b),
                None => (axum::http::StatusCode::NOT_FOUND, String::new()),
            }
        }
    });
    (serve(app).await, answers, seen)
}

fn set(answers: &Answers, path: &'static str, file: &str) {
    answers.lock().expect("answers").insert(path, fixture(file));
}

#[tokio::test]
async fn wire_unicom_gateway_fixture_replies_parse_to_the_dossier_values() {
    let (base, answers, _) = platform_answering(&[
        (
            "wsGetTerminalDetails/V1/1Main/vV1.1",
            "wsGetTerminalDetails.s1.reply.json",
        ),
        (
            "wsEditTerminal/V1/1Main/vV1.1",
            "wsEditTerminal.s2.reply.json",
        ),
        (
            "wsGetTerminalUsage/V1/1Main/vV1.1",
            "wsGetTerminalUsage.s5.reply.json",
        ),
    ])
    .await;
    let g = UnicomGateway::new(&config(&base), ctx()).expect("adapter");
    let id = dossier_iccid();

    // §1: simStatus 2 → active, realNameStatus 2 → verified, 12.5 MB → bytes.
    let d = g.terminal_details(&id).await.expect("details");
    assert_eq!(d.state, Some(ServiceState::Active));
    assert_eq!(d.real_name_verified, Some(true));
    assert_eq!(d.month_to_date_data_bytes, Some(13_107_200));
    assert_eq!(d.msisdn.as_deref(), Some("861400000000001"));
    assert_eq!(d.imsi.as_deref(), Some("460060000000001"));
    assert_eq!(d.rate_plan.as_deref(), Some("21000000"));
    assert_eq!(d.date_activated.as_deref(), Some("2024-01-01 10:00:00"));
    let c = g.card(&id).await.expect("card");
    assert_eq!(
        (c.known_state(), c.cycle_usage_bytes, c.usage_cycle_start),
        (Some(ServiceState::Active), 13_107_200, None)
    );
    assert_eq!(
        g.cards(std::slice::from_ref(&id))
            .await
            .expect("cards")
            .len(),
        1
    );
    g.onboard(&[OnboardCard {
        iccid: id.clone(),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    }])
    .await
    .expect("the card is in terminals");
    // §1 with simStatus 2: cancel is not confirmed.
    assert!(matches!(
        g.cancel(&id).await,
        Err(CarrierError::Rejected { ref code, .. }) if code == CODE_NOT_RETIRED
    ));

    // §2: 0000 naming the card → applied, no order id.
    assert_eq!(g.stop(&id).await, Ok(Receipt::applied()));
    assert_eq!(g.restore(&id).await, Ok(Receipt::applied()));

    // §5: totalDataVolume raw (unit not found).
    let u = g.terminal_usage(&id, "202412").await.expect("usage");
    assert_eq!(u.total_data_volume.as_deref(), Some("<value>"));
    assert!(matches!(
        g.terminal_usage(&id, "2024-12").await,
        Err(CarrierError::Rejected { .. })
    ));

    // §0.5 1104 on a change: the published refusal, final.
    set(
        &answers,
        "wsEditTerminal/V1/1Main/vV1.1",
        "any.s0-5.reply-1104.json",
    );
    assert!(matches!(
        g.stop(&id).await,
        Err(CarrierError::Rejected { ref code, ref message }) if code == "1104" && message.contains("预激活")
    ));
    // 1074 on the usage query (§5).
    set(
        &answers,
        "wsGetTerminalUsage/V1/1Main/vV1.1",
        "derived/wsGetTerminalUsage.s5.reply-1074.derived.json",
    );
    assert!(matches!(
        g.terminal_usage(&id, "201001").await,
        Err(CarrierError::Rejected { ref code, .. }) if code == "1074"
    ));

    // A status outside the table: unknown at carrier, not an error; cancel unavailable.
    set(
        &answers,
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "derived/wsGetTerminalDetails.s1.reply-status-outside-table.derived.json",
    );
    let c = g.card(&id).await.expect("card");
    assert!(c.unknown.as_deref().is_some_and(|w| w.contains("\"10\"")));
    assert!(matches!(
        g.cancel(&id).await,
        Err(CarrierError::Transient(_))
    ));

    // simStatus 4 已失效: the cancellation is confirmed.
    set(
        &answers,
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "derived/wsGetTerminalDetails.s1.reply-retired.derived.json",
    );
    assert_eq!(g.cancel(&id).await, Ok(Receipt::applied()));

    // Not in terminals: not known (left out of a batch read, rejected alone).
    set(
        &answers,
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "derived/wsGetTerminalDetails.s1.reply-not-in-terminals.derived.json",
    );
    let e = g.card(&id).await.expect_err("not known");
    assert!(matches!(&e, CarrierError::Rejected { code, .. } if code == CODE_CARD_NOT_KNOWN));
    assert!(g.card_not_known(&e));
    assert_eq!(
        g.cards(std::slice::from_ref(&id)).await.expect("cards"),
        vec![]
    );

    // An unpublished refusal of a change: the card decides, never final. Missing from
    // terminals → not known; in the target state → applied; otherwise deferred.
    set(
        &answers,
        "wsEditTerminal/V1/1Main/vV1.1",
        "derived/wsGetTerminalDetails.s1.reply-too-many-iccids.ours.json",
    );
    assert!(matches!(
        g.stop(&id).await,
        Err(CarrierError::Rejected { ref code, .. }) if code == CODE_CARD_NOT_KNOWN
    ));
    set(
        &answers,
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "wsGetTerminalDetails.s1.reply.json",
    );
    assert_eq!(
        g.restore(&id).await,
        Ok(Receipt::applied()),
        "already active"
    );
    assert!(matches!(
        g.stop(&id).await,
        Err(CarrierError::Deferred { ref code, retry_after: None, .. }) if code == "9050"
    ));
    // ... and on a read it is unavailable.
    set(
        &answers,
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "derived/wsGetTerminalDetails.s1.reply-too-many-iccids.ours.json",
    );
    assert!(matches!(g.card(&id).await, Err(CarrierError::Transient(_))));

    // The gateway's own refusal (outer status ≠ 0000): rejected for reads and changes, and
    // never "card not known" (a sync fails for the account instead of dropping the card).
    for path in [
        "wsGetTerminalDetails/V1/1Main/vV1.1",
        "wsEditTerminal/V1/1Main/vV1.1",
    ] {
        set(&answers, path, "derived/any.s0-5.reply-bad-token.ours.json");
    }
    let e = g.card(&id).await.expect_err("refused");
    assert!(matches!(&e, CarrierError::Rejected { code, .. } if code == INVENTED_AUTH_REFUSED));
    assert!(!g.card_not_known(&e));
    assert!(g.cards(std::slice::from_ref(&id)).await.is_err());
    assert!(matches!(
        g.stop(&id).await,
        Err(CarrierError::Rejected { .. })
    ));
}

#[tokio::test]
async fn wire_unicom_gateway_requests_match_the_dossier_requests() {
    let (base, _, seen) = platform_answering(&[
        (
            "wsGetTerminalDetails/V1/1Main/vV1.1",
            "wsGetTerminalDetails.s1.reply.json",
        ),
        (
            "wsEditTerminal/V1/1Main/vV1.1",
            "wsEditTerminal.s2.reply.json",
        ),
        (
            "wsGetTerminalUsage/V1/1Main/vV1.1",
            "wsGetTerminalUsage.s5.reply.json",
        ),
    ])
    .await;
    let g = UnicomGateway::new(&config(&base), ctx()).expect("adapter");
    let id = dossier_iccid();
    g.card(&id).await.expect("details");
    g.stop(&id).await.expect("stop");
    g.restore(&id).await.expect("restore");
    g.terminal_usage(&id, "202412").await.expect("usage");
    let seen = seen.lock().expect("seen").clone();
    assert_eq!(seen.len(), 4, "{seen:?}");
    let envelope = fixture_json("envelope.s0-3.request.json");
    for (s, (path, file)) in seen.iter().zip([
        (DETAILS, "wsGetTerminalDetails.s1.request.json"),
        (EDIT, "wsEditTerminal.s2.request.json"),
        (EDIT, "wsEditTerminal.s2.request.json"),
        (USAGE, "derived/wsGetTerminalUsage.s5.request.derived.json"),
    ]) {
        let want = fixture_json(file);
        assert_eq!(s.path, path, "{file}");
        assert_eq!(
            s.content_type.as_deref(),
            Some("application/json;charset=UTF-8"),
            "{file}"
        );
        // The §0.3 envelope, and the call's own data keys.
        assert_eq!(keys(&s.body), keys(&envelope), "{file}");
        assert_eq!(keys(&s.body["data"]), keys(&want["data"]), "{file}");
        assert_eq!(s.body["app_id"], want["app_id"]);
        for k in ["openId", "version"] {
            assert_eq!(s.body["data"][k], want["data"][k], "{file}: {k}");
        }
        let ts = s.body["timestamp"].as_str().expect("timestamp");
        let tid = s.body["trans_id"].as_str().expect("trans_id");
        assert!(TimestampFormat::Spaced.parse(ts).is_some(), "{ts}");
        assert!(auth::is_trans_id(tid), "{tid}");
        // The token recomputed from what was sent, with the secret that was not.
        assert_eq!(
            s.body["token"],
            json!(auth::token(TokenRecipe::Sm3Named, APP_ID, ts, tid, SECRET)),
            "{file}"
        );
        assert!(!s.body.to_string().contains(SECRET));
    }
    assert_eq!(seen[0].body["data"]["iccids"], json!([DOSSIER_ICCID]));
    for (s, target) in seen[1..3].iter().zip(["3", "2"]) {
        let d = &s.body["data"];
        assert_eq!(
            (
                &d["iccid"],
                &d["changeType"],
                &d["targetValue"],
                &d["asynchronous"]
            ),
            (
                &json!(DOSSIER_ICCID),
                &json!("3"),
                &json!(target),
                &json!("0")
            )
        );
    }
    assert_eq!(seen[3].body["data"]["billingCycle"], json!("202412"));
}

// ---------------------------------------------------------------------------------------------
// The adapter against its wire simulator.

struct Harness {
    sim: Arc<SimCarrier>,
    gw: UnicomGateway,
    base: String,
    /// Every request path the simulator received.
    requests: Arc<Mutex<Vec<String>>>,
    _db: TestDb,
}

impl Harness {
    /// Requests per path since the last call, emptied.
    fn take_counts(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for p in std::mem::take(&mut *self.requests.lock().expect("requests")) {
            *out.entry(p).or_default() += 1;
        }
        out
    }
}

fn iccid(n: u64) -> Iccid {
    Iccid::parse_any(&unicom_iccid(n)).expect("test iccid")
}

async fn harness(
    cards: &[(u64, ServiceState, u64)],
    cfg: impl Fn(&str) -> UnicomGatewayConfig,
) -> Harness {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let clock: Arc<dyn Clock> = Arc::new(ManualClock::new(start_time()));
    let sim = Arc::new(SimCarrier::new(
        CarrierPolicy::default_for(CarrierId::Unicom),
        db.store().await,
        clock,
    ));
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
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("addr"));
    let requests: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = requests.clone();
    let app =
        router(sim.clone(), &cfg(&base), WireOptions::default()).layer(axum::middleware::from_fn(
            move |req: axum::extract::Request, next: axum::middleware::Next| {
                let log = log.clone();
                async move {
                    log.lock()
                        .expect("requests")
                        .push(req.uri().path().to_string());
                    next.run(req).await
                }
            },
        ));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let gw = UnicomGateway::new(&cfg(&base), ctx()).expect("adapter");
    Harness {
        sim,
        gw,
        base,
        requests,
        _db: db,
    }
}

async fn at_sim(h: &Harness, n: u64) -> ServiceState {
    h.sim.card(&iccid(n)).await.expect("at the sim").state
}

fn counts(pairs: &[(&str, usize)]) -> BTreeMap<String, usize> {
    pairs.iter().map(|(p, n)| (p.to_string(), *n)).collect()
}

#[tokio::test]
async fn wire_unicom_gateway_stop_restore_and_cancel_against_the_simulator() {
    let h = harness(
        &[
            (1, ServiceState::Active, 3 * MIB),
            (2, ServiceState::Stopped, 0),
        ],
        config,
    )
    .await;
    let c = h.gw.card(&iccid(1)).await.expect("card 1");
    assert_eq!(
        (c.known_state(), c.cycle_usage_bytes),
        (Some(ServiceState::Active), 3 * MIB)
    );
    assert_eq!(h.take_counts(), counts(&[(DETAILS, 1)]));

    assert_eq!(h.gw.stop(&iccid(1)).await, Ok(Receipt::applied()));
    assert_eq!(at_sim(&h, 1).await, ServiceState::Stopped);
    assert_eq!(h.gw.restore(&iccid(2)).await, Ok(Receipt::applied()));
    assert_eq!(at_sim(&h, 2).await, ServiceState::Active);
    // One call per change: the answer names the card, no read to confirm it.
    assert_eq!(h.take_counts(), counts(&[(EDIT, 2)]));

    // Cancel only confirms: the card is stopped, not released.
    assert!(matches!(
        h.gw.cancel(&iccid(1)).await,
        Err(CarrierError::Rejected { ref code, .. }) if code == CODE_NOT_RETIRED
    ));
    h.sim.cancel(&iccid(1)).await.expect("released at the sim");
    assert_eq!(h.gw.cancel(&iccid(1)).await, Ok(Receipt::applied()));
    assert_eq!(h.take_counts(), counts(&[(DETAILS, 2)]));

    // A change the simulated carrier refuses (a cancelled card) is an unpublished refusal:
    // the card is read and the change deferred, never final.
    let e = h.gw.restore(&iccid(1)).await.expect_err("cancelled");
    assert!(matches!(e, CarrierError::Deferred { .. }), "{e:?}");
    assert_eq!(h.take_counts(), counts(&[(EDIT, 1), (DETAILS, 1)]));

    // An unknown card: not known, for reads and for changes.
    let e = h.gw.stop(&iccid(404)).await.expect_err("unknown");
    assert!(matches!(e, CarrierError::Rejected { ref code, .. } if code == CODE_CARD_NOT_KNOWN));
    assert_eq!(
        h.gw.terminal_usage(&iccid(2), "202401")
            .await
            .expect("usage")
            .total_data_volume
            .as_deref(),
        Some("0")
    );
}

#[tokio::test]
async fn wire_unicom_gateway_a_batch_read_of_120_cards_is_3_calls() {
    let cards: Vec<(u64, ServiceState, u64)> = (1..=120)
        .map(|n| {
            let state = if n % 2 == 0 {
                ServiceState::Stopped
            } else {
                ServiceState::Active
            };
            (n, state, n * 1_000)
        })
        .collect();
    let h = harness(&cards, config).await;
    assert_eq!(h.gw.batch_limit(), 50);
    let mut asked: Vec<Iccid> = (1..=120).map(iccid).collect();
    // Two cards the platform does not know are left out.
    asked.insert(10, iccid(9_001));
    asked.push(iccid(9_002));
    let got = h.gw.cards(&asked).await.expect("batch read");
    assert_eq!(got.len(), 120);
    for (c, n) in got.iter().zip(1..=120u64) {
        assert_eq!(c.iccid, iccid(n));
        assert_eq!(c.cycle_usage_bytes, n * 1_000, "{n}");
        assert_eq!(
            c.known_state(),
            Some(if n % 2 == 0 {
                ServiceState::Stopped
            } else {
                ServiceState::Active
            })
        );
    }
    // 122 ICCIDs: 50 + 50 + 22.
    assert_eq!(h.take_counts(), counts(&[(DETAILS, 3)]));
    // Onboarding checks them in the same batches.
    let onboard: Vec<OnboardCard> = (1..=120)
        .map(|n| OnboardCard {
            iccid: iccid(n),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
            msisdn: None,
        })
        .collect();
    h.gw.onboard(&onboard).await.expect("all known");
    assert_eq!(h.take_counts(), counts(&[(DETAILS, 3)]));
}

/// Posts an envelope signed like the adapter's to the simulator.
async fn post_signed(h: &Harness, path: &str, data: Value, secret: &str) -> Value {
    let now = chrono::Utc::now();
    let ts = TimestampFormat::Spaced.format(now);
    let tid = auth::trans_id(now, 42);
    let mut d = data.as_object().cloned().unwrap_or_default();
    d.insert("messageId".into(), json!("1"));
    d.insert("openId".into(), json!(OPEN_ID));
    d.insert("version".into(), json!("1.0"));
    let body = json!({
        "app_id": APP_ID,
        "timestamp": ts,
        "trans_id": tid,
        "token": auth::token(TokenRecipe::Sm3Named, APP_ID, &ts, &tid, secret),
        "data": d,
    });
    reqwest::Client::new()
        .post(format!("{}{path}", h.base))
        .json(&body)
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json answer")
}

#[tokio::test]
async fn wire_unicom_gateway_simulator_refuses_a_wrong_token_and_more_than_50_iccids() {
    let h = harness(&[(1, ServiceState::Active, 0)], config).await;
    let many: Vec<String> = (1..=51).map(unicom_iccid).collect();
    let r = post_signed(&h, DETAILS, json!({"iccids": many}), SECRET).await;
    assert_eq!(r["status"], "0000");
    assert_eq!(r["data"]["resultCode"], INVENTED_TOO_MANY_ICCIDS);
    // The simulator's refusal is the fixture's shape (ours, INDEX.md).
    let ours = fixture_json("derived/wsGetTerminalDetails.s1.reply-too-many-iccids.ours.json");
    assert_eq!(keys(&r), keys(&ours));
    assert_eq!(keys(&r["data"]), keys(&ours["data"]));
    let fifty: Vec<String> = (1..=50).map(unicom_iccid).collect();
    let r = post_signed(&h, DETAILS, json!({"iccids": fifty}), SECRET).await;
    assert_eq!(r["data"]["resultCode"], "0000");
    assert_eq!(r["data"]["terminals"].as_array().map(Vec::len), Some(1));

    let r = post_signed(&h, DETAILS, json!({"iccids": [unicom_iccid(1)]}), "wrong").await;
    assert_eq!(r["status"], INVENTED_AUTH_REFUSED);
    assert_eq!(
        keys(&r),
        keys(&fixture_json("derived/any.s0-5.reply-bad-token.ours.json"))
    );
    // A wrong secret at the adapter: rejected, nothing applied.
    let wrong = UnicomGateway::new(
        &UnicomGatewayConfig {
            app_secret: Secret::new("another-secret"),
            ..config(&h.base)
        },
        ctx(),
    )
    .expect("adapter");
    assert!(matches!(
        wrong.stop(&iccid(1)).await,
        Err(CarrierError::Rejected { .. })
    ));
    assert_eq!(at_sim(&h, 1).await, ServiceState::Active);
}

#[tokio::test]
async fn wire_unicom_gateway_simulator_answers_in_the_dossier_shapes() {
    let h = harness(&[(1, ServiceState::Active, 5)], config).await;
    let r = post_signed(&h, DETAILS, json!({"iccids": [unicom_iccid(1)]}), SECRET).await;
    let want = fixture_json("wsGetTerminalDetails.s1.reply.json");
    assert_eq!(keys(&r), keys(&want));
    assert_eq!(keys(&r["data"]), keys(&want["data"]));
    let mut want_terminal = keys(&want["data"]["terminals"][0]);
    want_terminal.remove("…");
    assert_eq!(keys(&r["data"]["terminals"][0]), want_terminal);
    assert!(
        r["data"]["terminals"][0]["ratePlan"].is_number(),
        "a JSON number (§1)"
    );
    let r = post_signed(
        &h,
        EDIT,
        json!({"asynchronous": "0", "iccid": unicom_iccid(1), "changeType": "3", "targetValue": "3"}),
        SECRET,
    )
    .await;
    let want = fixture_json("wsEditTerminal.s2.reply.json");
    assert_eq!(keys(&r["data"]), keys(&want["data"]));
    let r = post_signed(
        &h,
        USAGE,
        json!({"iccid": unicom_iccid(1), "billingCycle": "202401"}),
        SECRET,
    )
    .await;
    let want = fixture_json("wsGetTerminalUsage.s5.reply.json");
    assert_eq!(keys(&r["data"]), keys(&want["data"]));
    let r = post_signed(
        &h,
        USAGE,
        json!({"iccid": unicom_iccid(1), "billingCycle": "2024"}),
        SECRET,
    )
    .await;
    assert_eq!(r["data"]["resultCode"], "1074");
    assert_eq!(
        keys(&r["data"]),
        keys(&fixture_json("derived/wsGetTerminalUsage.s5.reply-1074.derived.json")["data"])
    );
}

#[tokio::test]
async fn wire_unicom_gateway_the_disputed_settings_must_match_the_gateway() {
    let other = |base: &str| UnicomGatewayConfig {
        token_recipe: TokenRecipe::Sha256Plain,
        timestamp_format: TimestampFormat::Compact,
        version: "V1.1".into(),
        asynchronous: "1".into(),
        ..config(base)
    };
    let h = harness(&[(1, ServiceState::Active, MIB)], other).await;
    assert_eq!(
        h.gw.card(&iccid(1)).await.expect("card").cycle_usage_bytes,
        MIB
    );
    h.gw.stop(&iccid(1)).await.expect("stop");
    assert_eq!(at_sim(&h, 1).await, ServiceState::Stopped);
    // The defaults against this gateway: the token (and timestamp) do not match, refused.
    let defaults = UnicomGateway::new(&config(&h.base), ctx()).expect("adapter");
    assert!(matches!(
        defaults.card(&iccid(1)).await,
        Err(CarrierError::Rejected { ref code, .. }) if code == INVENTED_AUTH_REFUSED
    ));
}
