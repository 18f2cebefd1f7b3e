//! Contract tests: the China Telecom CMP adapter against its wire simulator over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use simgate::carrier::http::cmp::simulator::{router, WireOptions};
use simgate::carrier::http::cmp::wire::ImeiReRecordForm;
use simgate::carrier::http::cmp::wire::{RealName, NOT_DISMANTLED};
use simgate::carrier::http::cmp::{Cmp, CmpConfig};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::SimCarrier;
use simgate::carrier::{
    Carrier, CarrierError, LastSession, OnboardCard, Rebind, Receipt, ServiceState,
};
use simgate::clock::ManualClock;
use simgate::domain::{CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{assert_deferred, recording, start_time, Backend, Exchanges, TestDb};

const KEY: &str = "k3yS3cr3t";
const USER: &str = "simgate";
const PASSWORD: &str = "pa55word";
const MIB: u64 = 1024 * 1024;

struct Rig {
    sim: Arc<SimCarrier>,
    base_url: String,
    /// Every request the simulator received (its query string) and the body it answered.
    exchanges: Exchanges,
    _db: TestDb,
}

fn iccid(n: u32) -> Iccid {
    Iccid::parse_any(&format!("89860311{n:011}")).expect("test iccid")
}

fn config(base_url: &str, password: &str, key: &str, request_ms: u64) -> CmpConfig {
    CmpConfig {
        base_url: base_url.to_string(),
        user_id: USER.to_string(),
        password: Secret::new(password),
        key: Secret::new(key),
        timeouts: HttpTimeouts {
            connect_ms: 1_000,
            request_ms,
        },
        sign_need_dtl: false,
        card_identifier: Default::default(),
        imei_rerecord_form: Default::default(),
        repeat_window_code: None,
    }
}

fn policy() -> CarrierPolicy {
    CarrierPolicy::default_for(CarrierId::Telecom)
}

/// Serves the wire simulator on a random loopback port, with two onboarded cards: 1 active
/// (3 MiB used), 2 stopped.
async fn rig() -> Rig {
    rig_with(|_| {}, |uri| uri.query().unwrap_or("").to_string()).await
}

/// [`rig`] with the simulator's account settings changed by `edit`, and each exchange named by
/// `name` of its URI.
async fn rig_with(edit: impl FnOnce(&mut CmpConfig), name: fn(&axum::http::Uri) -> String) -> Rig {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let store = db.store().await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let sim = Arc::new(SimCarrier::new(policy(), store, clock));
    sim.onboard(&[
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
    ])
    .await
    .expect("onboard");
    sim.record_usage(&iccid(1), 3 * MIB).await.expect("usage");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base_url = format!("http://{}/m2m_ec", listener.local_addr().expect("addr"));
    let exchanges = Exchanges::default();
    let mut cfg = config(&base_url, PASSWORD, KEY, 10_000);
    edit(&mut cfg);
    let app = recording(
        router(
            sim.clone(),
            &cfg,
            WireOptions {
                timeout_after_apply_delay: Duration::from_millis(1_500),
                ..Default::default()
            },
        ),
        exchanges.clone(),
        name,
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Rig {
        sim,
        base_url,
        exchanges,
        _db: db,
    }
}

impl Rig {
    /// The access number the simulated platform holds for card `n`.
    async fn number(&self, n: u32) -> String {
        self.sim
            .number_of(&iccid(n))
            .await
            .expect("sim")
            .expect("every simulated card has a number")
    }

    fn adapter(&self) -> Cmp {
        self.adapter_with(PASSWORD, KEY, 5_000)
    }

    fn adapter_with(&self, password: &str, key: &str, request_ms: u64) -> Cmp {
        Cmp::new(&config(&self.base_url, password, key, request_ms), ctx()).expect("adapter")
    }
}

fn rejected(code: &str) -> impl Fn(&CarrierError) -> bool + '_ {
    move |e| matches!(e, CarrierError::Rejected { code: c, .. } if c == code)
}

#[tokio::test]
async fn wire_cmp_card_reads_status_and_usage() {
    let r = rig().await;
    let a = r.adapter();
    let c = a.card(&iccid(1)).await.expect("card 1");
    assert_eq!(c.iccid, iccid(1));
    assert_eq!(c.state, ServiceState::Active);
    assert_eq!(c.cycle_usage_bytes, 3 * MIB);
    assert_eq!(c.changes, 0);
    let c = a.card(&iccid(2)).await.expect("card 2");
    assert_eq!(c.state, ServiceState::Stopped);
    assert_eq!(c.cycle_usage_bytes, 0);
}

#[tokio::test]
async fn wire_cmp_cancel_confirms_dismantling_only() {
    let r = rig().await;
    let a = r.adapter();
    let e = a.cancel(&iccid(1)).await.expect_err("not dismantled");
    assert!(rejected(NOT_DISMANTLED)(&e), "{e:?}");
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
    r.sim.cancel(&iccid(1)).await.expect("platform dismantles");
    a.cancel(&iccid(1)).await.expect("confirmed");
    assert_eq!(
        a.card(&iccid(1)).await.expect("card").state,
        ServiceState::Cancelled
    );
    // A dismantled card cannot be restored.
    let e = a
        .restore(&iccid(1))
        .await
        .expect_err("restore of a dismantled card");
    assert!(matches!(e, CarrierError::Rejected { .. }), "{e:?}");
}

#[tokio::test]
async fn wire_cmp_onboard_checks_cards_exist() {
    let r = rig().await;
    let a = r.adapter();
    let known = OnboardCard {
        iccid: iccid(1),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    };
    a.onboard(std::slice::from_ref(&known))
        .await
        .expect("known card");
    let unknown = OnboardCard {
        iccid: iccid(99),
        ..known.clone()
    };
    let e = a
        .onboard(&[known, unknown])
        .await
        .expect_err("unknown card");
    assert!(rejected("-4")(&e), "{e:?}");
}

#[tokio::test]
async fn wire_cmp_unknown_card_is_minus_4_everywhere() {
    let r = rig().await;
    let a = r.adapter();
    let x = iccid(98);
    assert!(rejected("-4")(&a.card(&x).await.expect_err("card")));
    assert!(rejected("-4")(&a.stop(&x).await.expect_err("stop")));
    assert!(rejected("-4")(&a.restore(&x).await.expect_err("restore")));
    assert!(rejected("-4")(&a.cancel(&x).await.expect_err("cancel")));
    assert!(rejected("-4")(
        &a.online_status(&x).await.expect_err("online")
    ));
    assert!(rejected("-4")(
        &a.real_name(&x).await.expect_err("real name")
    ));
}

#[tokio::test]
async fn wire_cmp_online_status_and_real_name() {
    let r = rig().await;
    let a = r.adapter();
    let on = a.online_status(&iccid(1)).await.expect("online 1");
    let sim_card = r.sim.card(&iccid(1)).await.expect("sim");
    let at = sim_card.last_session.at().expect("usage records a session");
    // Whether a card is online now is never guessed: the values that say so are unpublished.
    assert_eq!(on.online, None);
    // The session time is read from the description object, to the second.
    assert_eq!(
        on.last_session.at().map(|t| t.timestamp()),
        Some(at.timestamp())
    );
    assert_eq!(on.apn.as_deref(), Some("ctnet"));
    // card() carries the same session time, for the diagnosis.
    assert_eq!(
        a.card(&iccid(1))
            .await
            .expect("card 1")
            .last_session
            .at()
            .map(|t| t.timestamp()),
        Some(at.timestamp())
    );
    // Without a description nothing is known: unknown, never "no session".
    let off = a.online_status(&iccid(2)).await.expect("online 2");
    assert_eq!(off.last_session, LastSession::Unknown);
    assert_eq!(
        a.card(&iccid(2)).await.expect("card 2").last_session,
        LastSession::Unknown
    );
    assert_eq!(
        a.real_name(&iccid(1)).await.expect("real name"),
        RealName::Registered
    );
}

#[tokio::test]
async fn wire_cmp_bad_password_and_bad_key_are_refused_with_their_codes() {
    let r = rig().await;
    let e = r
        .adapter_with("wrong", KEY, 5_000)
        .card(&iccid(1))
        .await
        .expect_err("bad password");
    assert!(rejected("-1")(&e), "{e:?}");
    let e = r
        .adapter_with(PASSWORD, "wrongkey!", 5_000)
        .stop(&iccid(1))
        .await
        .expect_err("bad key");
    assert!(rejected("-3")(&e), "{e:?}");
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active
    );
    // Credentials never reach the error text.
    for secret in [PASSWORD, KEY, "wrongkey!"] {
        assert!(!format!("{e:?} {e}").contains(secret));
    }
}

#[tokio::test]
async fn wire_cmp_malformed_answers() {
    let app = axum::Router::new()
        .route(
            "/m2m_ec/query.do",
            axum::routing::get(|| async { "<html>not the platform</html>" }),
        )
        .route(
            "/m2m_ec/app/serviceAccept.do",
            axum::routing::get(|| async { "{\"unexpected\": true}" }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/m2m_ec", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    // The card's number is stored, so the change below is really sent.
    let a = Cmp::new(&config(&base, PASSWORD, KEY, 5_000), ctx_with_numbers()).expect("adapter");
    let e = a.card(&iccid(1)).await.expect_err("garbage read");
    assert!(
        matches!(e, CarrierError::Transient(ref m) if m.contains("malformed")),
        "{e:?}"
    );
    // An answer to a change that no source explains is an unknown outcome, never a success.
    let e = a.stop(&iccid(1)).await.expect_err("garbage change");
    assert!(matches!(e, CarrierError::OutcomeUnknown(_)), "{e:?}");
    let e = a
        .online_status(&iccid(1))
        .await
        .expect_err("garbage online");
    assert!(matches!(e, CarrierError::Transient(_)), "{e:?}");
}

#[tokio::test]
async fn wire_cmp_config_is_checked() {
    let bad_key = config("http://127.0.0.1:1/m2m_ec", PASSWORD, "short", 1_000);
    assert!(Cmp::new(&bad_key, ctx()).is_err());
    let bad_url = config("ftp://x/m2m_ec", PASSWORD, KEY, 1_000);
    assert!(Cmp::new(&bad_url, ctx()).is_err());
    // Nothing listens: a read is Transient, and the error shows no credentials.
    let a = Cmp::new(
        &config("http://127.0.0.1:1/m2m_ec", PASSWORD, KEY, 1_000),
        ctx(),
    )
    .expect("adapter");
    let e = a.stop(&iccid(1)).await.expect_err("refused");
    assert!(matches!(e, CarrierError::Transient(_)), "{e:?}");
    assert!(!format!("{e}").contains("passWord"), "{e}");
}

/// The adapter's account: the carrier's default, with the test's policy.
fn ctx() -> simgate::carrier::platform::AccountCtx {
    simgate::carrier::platform::AccountCtx {
        policy: policy(),
        ..simgate::carrier::platform::AccountCtx::default_for(CarrierId::Telecom)
    }
}

// ---------------------------------------------------------------------------------------------
// Golden fixtures from the dossier (`tests/fixtures/carrier-wire/cmp/`, see its INDEX.md): the
// adapter parses each reply to the dossier's values, builds each request with the dossier's
// parameters and sign set, and the simulator answers with the dossier's shapes.
// ---------------------------------------------------------------------------------------------

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carrier-wire/cmp")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A platform that answers each method with a fixed body (a fixture).
async fn platform_answering(bodies: &[(&'static str, String)]) -> Cmp {
    platform_answering_to(bodies, |_| {}).await
}

/// [`platform_answering`] (on both paths) for an adapter whose settings `edit` changes.
async fn platform_answering_to(
    bodies: &[(&'static str, String)],
    edit: impl FnOnce(&mut CmpConfig),
) -> Cmp {
    let bodies: Arc<std::collections::HashMap<&'static str, String>> =
        Arc::new(bodies.iter().cloned().collect());
    let answer = move |axum::extract::Query(p): axum::extract::Query<
        std::collections::HashMap<String, String>,
    >| {
        let bodies = bodies.clone();
        async move {
            let method = p.get("method").cloned().unwrap_or_default();
            bodies
                .get(method.as_str())
                .cloned()
                .unwrap_or_else(|| format!("no fixture for {method}"))
        }
    };
    let app = axum::Router::new()
        .route("/m2m_ec/query.do", axum::routing::get(answer.clone()))
        .route("/m2m_ec/app/serviceAccept.do", axum::routing::get(answer));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}/m2m_ec", listener.local_addr().expect("addr"));
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    let mut cfg = config(&base, PASSWORD, KEY, 5_000);
    edit(&mut cfg);
    Cmp::new(&cfg, ctx_with_numbers()).expect("adapter")
}

/// simgate's record of card numbers as the store keeps them after an import: every card has
/// the dossier's example access number.
struct Numbers;

#[async_trait::async_trait]
impl simgate::carrier::platform::CardNumbers for Numbers {
    async fn msisdn(
        &self,
        _: &simgate::domain::AccountId,
        _: &Iccid,
    ) -> Result<Option<String>, String> {
        Ok(Some(DOSSIER_NUMBER.to_string()))
    }
}

/// The access number of the dossier's examples (§1, §5).
const DOSSIER_NUMBER: &str = "14914000000";

fn ctx_with_numbers() -> simgate::carrier::platform::AccountCtx {
    simgate::carrier::platform::AccountCtx {
        numbers: simgate::carrier::platform::NumberBook(Arc::new(Numbers)),
        ..ctx()
    }
}

#[tokio::test]
async fn wire_cmp_fixture_replies_parse_to_the_dossier_values() {
    let reads = [
        (
            "queryCardMainStatus",
            fixture("queryCardMainStatus.s2.reply.json"),
        ),
        ("queryTraffic", fixture("queryTraffic.s1.reply.xml")),
        ("getOnlineStatus", fixture("getOnlineStatus.s3.reply.json")),
    ];
    let a = platform_answering(&reads).await;
    // §2 productMainStatusCd 4 (在用), §1 0.00MB, §3 a skeleton whose times are placeholders:
    // the session is unknown, not "none".
    let c = a.card(&iccid(1)).await.expect("card from the fixtures");
    assert_eq!(
        (c.state, c.cycle_usage_bytes, c.last_session),
        (ServiceState::Active, 0, LastSession::Unknown)
    );
    let on = a.online_status(&iccid(1)).await.expect("online");
    assert_eq!(on.online, None, "no published value says online");
    assert_eq!(on.framed_ip_address.as_deref(), Some("10.0.0.1"));

    // §5: every published form of the disabledNumber reply. The card reads Active (§2).
    let change = |body: String| {
        let mut bodies = reads.to_vec();
        bodies.push(("disabledNumber", body));
        bodies
    };
    for accepted in [
        fixture("disabledNumber.s5.reply.xml"),
        fixture("derived/disabledNumber.s5.reply-json.derived.json"),
        fixture("derived/disabledNumber.s5.reply-nested.derived.xml"),
    ] {
        let a = platform_answering(&change(accepted.clone())).await;
        // The reply is the proof, and its GROUP_TRANSACTIONID names the change.
        let receipt = a
            .stop(&iccid(1))
            .await
            .unwrap_or_else(|e| panic!("{accepted}: {e:?}"));
        assert_eq!(
            receipt,
            Receipt::applied_as("1000000190202004162026784683"),
            "{accepted}"
        );
        assert!(!a.queries_orders(), "CMP has no order query");
    }
    // 1999 (a stop record exists) and -5 in text are confirmed by reading the card: a restore
    // of the Active card is done, a stop is refused with the platform's code.
    for (body, code) in [
        (
            fixture("derived/disabledNumber.s5.reply-1999.derived.json"),
            "1999",
        ),
        (fixture("derived/any.s9.error-text.derived.txt"), "-5"),
    ] {
        let a = platform_answering(&change(body.clone())).await;
        // Confirmed by the read: applied, and the refusal named no change.
        assert_eq!(
            a.restore(&iccid(1))
                .await
                .unwrap_or_else(|e| panic!("{body}: {e:?}")),
            Receipt::applied()
        );
        let e = a.stop(&iccid(1)).await.expect_err("stop refused");
        assert!(rejected(code)(&e), "{body}: {e:?}");
    }
    // A placeholder code (`<code>`) is no published code: a refusal simgate cannot classify,
    // deferred (read the card, retry later), never success, never final.
    let a = platform_answering(&change(fixture(
        "derived/disabledNumber.s5.reply-top-level-result.derived.json",
    )))
    .await;
    let e = a.stop(&iccid(1)).await.expect_err("deferred");
    assert!(
        matches!(e, CarrierError::Deferred { ref code, retry_after: None, .. } if code == "<code>"),
        "{e:?}"
    );

    // §9: a JSON refusal is the refusal, for a read.
    let a = platform_answering(&[(
        "queryCardMainStatus",
        fixture("derived/any.s9.error-json.derived.json"),
    )])
    .await;
    assert!(rejected("-3")(&a.card(&iccid(1)).await.expect_err("-3")));

    // §4: -5 on realNameQueryIot is "no real-name record", not an error. The skeleton's root
    // name is a placeholder; the fields are read under any root.
    let a = platform_answering(&[(
        "realNameQueryIot",
        fixture("realNameQueryIot.s4.reply-not-found.xml"),
    )])
    .await;
    assert_eq!(
        a.real_name(&iccid(1)).await.expect("real name"),
        RealName::NotRegistered {
            code: "-5".into(),
            message: "未能查询到实名制信息".into()
        }
    );
}

/// The parameters of a request fixture: (name, signed), from its table rows.
fn request_params(text: &str) -> Vec<(String, bool)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && l.contains('\t'))
        .filter_map(|l| {
            let cols: Vec<&str> = l.split('\t').collect();
            let (name, signed) = if cols[0].chars().all(|c| c.is_ascii_digit()) {
                (*cols.get(1)?, *cols.get(3)?)
            } else {
                (cols[0], *cols.get(1)?)
            };
            Some((name.to_string(), signed.starts_with("yes")))
        })
        .collect()
}

/// A rig after the adapter made every call it implements once (card: status, traffic, online;
/// real name; a stop), with what the simulator received and answered.
async fn every_call_exchanged() -> (Rig, Vec<(String, String)>) {
    let r = rig().await;
    let a = r.adapter();
    a.card(&iccid(1)).await.expect("card");
    a.real_name(&iccid(1)).await.expect("real name");
    a.stop(&iccid(1)).await.expect("stop");
    // Sent whatever the simulated carrier answers (it may not bind cards).
    let _ = a.rebind(&iccid(1), &Rebind::CurrentDevice).await;
    let sent = r.exchanges.lock().unwrap().clone();
    (r, sent)
}

/// The first exchange whose request is a `method` call.
fn exchange_of<'a>(sent: &'a [(String, String)], method: &str) -> &'a (String, String) {
    sent.iter()
        .find(|(q, _)| {
            q.contains(&format!("method={method}&")) || q.ends_with(&format!("method={method}"))
        })
        .unwrap_or_else(|| panic!("no {method} call"))
}

#[tokio::test]
async fn wire_cmp_requests_carry_the_dossier_parameters_and_sign_sets() {
    let (_rig, sent) = every_call_exchanged().await;
    for (method, file) in [
        ("queryCardMainStatus", "queryCardMainStatus.s2.request.txt"),
        ("queryTraffic", "queryTraffic.s1.request.txt"),
        ("getOnlineStatus", "getOnlineStatus.s3.request.txt"),
        ("realNameQueryIot", "realNameQueryIot.s4.request.txt"),
        ("disabledNumber", "disabledNumber.s5.request.txt"),
        (
            "getTelephonePlus",
            "derived/getTelephonePlus.s7-2.request.derived.txt",
        ),
        (
            "IMEIReRecord",
            "derived/IMEIReRecord.s6-1.request-query-access-number.derived.txt",
        ),
    ] {
        let expected = request_params(&fixture(file));
        assert!(!expected.is_empty(), "{file} has a parameter table");
        let (query, _) = exchange_of(&sent, method);
        let got: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        // The card is named by access number (the default `card_identifier`), as in every
        // fixture: `iccid` is not one of their parameters.
        let name_of = |k: &str| k.to_string();
        for (k, _) in &got {
            assert!(
                expected.iter().any(|(e, _)| *e == name_of(k)),
                "{method}: {k} is not a dossier parameter"
            );
        }
        for (e, signed) in &expected {
            let optional = fixture(file)
                .lines()
                .any(|l| l.starts_with(&format!("{e}\t")) && l.contains("optional"));
            if !optional {
                assert!(
                    got.iter().any(|(k, _)| name_of(k) == *e),
                    "{method}: {e} missing"
                );
            }
            // The sign covers exactly the dossier's signed parameters.
            if let Some((k, _)) = got.iter().find(|(k, _)| name_of(k) == *e) {
                assert_eq!(
                    simgate::carrier::http::cmp::wire::is_signed(method, k, false),
                    *signed && !matches!(k.as_str(), "passWord" | "sign"),
                    "{method}: is {k} signed?"
                );
            }
        }
        let mut values: Vec<&str> = expected
            .iter()
            .filter(|(_, signed)| *signed)
            .filter_map(|(e, _)| got.iter().find(|(k, _)| name_of(k) == *e))
            .map(|(_, v)| v.as_str())
            .collect();
        values.push(PASSWORD);
        let sign = simgate::carrier::http::cmp::crypt::sign(&values, KEY).expect("sign");
        let sent_sign = &got.iter().find(|(k, _)| k == "sign").expect("a sign").1;
        assert_eq!(
            sent_sign, &sign,
            "{method}: the sign over the dossier's set"
        );
    }
    // disabledNumber went to query.do, not app/serviceAccept.do (the simulator answers 404 there).
    assert!(sent
        .iter()
        .any(|(q, _)| q.contains("method=disabledNumber")));
}

#[test]
fn wire_cmp_des_matches_the_dossier_vectors() {
    let text = fixture("des.s0-3.vectors.txt");
    let mut rows = 0;
    for line in text.lines().filter(|l| l.starts_with('[')) {
        let (input, output) = line.split_once('\t').expect("input<TAB>output");
        let values: Vec<String> = serde_json::from_str(input).expect("a JSON list");
        let values: Vec<&str> = values.iter().map(String::as_str).collect();
        assert_eq!(
            simgate::carrier::http::cmp::crypt::sign(&values, "abcdefghi").expect("sign"),
            output.trim()
        );
        rows += 1;
    }
    assert_eq!(rows, 2);
}

/// The names of a body's leaf fields.
fn leaf_names(body: &str) -> std::collections::BTreeSet<String> {
    simgate::carrier::http::cmp::wire::leaf_fields(body)
        .unwrap_or_else(|| panic!("not XML or JSON: {body}"))
        .into_keys()
        .collect()
}

#[tokio::test]
async fn wire_cmp_simulator_answers_in_the_dossier_shapes() {
    let (r, sent) = every_call_exchanged().await;
    for (method, file, xml) in [
        (
            "queryCardMainStatus",
            "queryCardMainStatus.s2.reply.json",
            false,
        ),
        ("queryTraffic", "queryTraffic.s1.reply.xml", true),
        ("getOnlineStatus", "getOnlineStatus.s3.reply.json", false),
        (
            "realNameQueryIot",
            "realNameQueryIot.s4.reply-not-found.xml",
            true,
        ),
        ("disabledNumber", "disabledNumber.s5.reply.xml", true),
        (
            "getTelephonePlus",
            "derived/getTelephonePlus.s7-2.reply.derived.json",
            false,
        ),
        ("IMEIReRecord", "IMEIReRecord.s6-1.reply-ok.json", false),
    ] {
        let ours = exchange_of(&sent, method).1.clone();
        assert_eq!(ours.trim_start().starts_with('<'), xml, "{method}: {ours}");
        let theirs = leaf_names(&fixture(file));
        let ours = leaf_names(&ours);
        assert!(
            theirs.is_subset(&ours),
            "{method}: the simulator leaves out {:?}",
            theirs.difference(&ours).collect::<Vec<_>>()
        );
    }
    // And it refuses what the platform refuses: disabledNumber on app/serviceAccept.do.
    let resp = reqwest::get(format!(
        "{}/app/serviceAccept.do?method=disabledNumber",
        r.base_url
    ))
    .await
    .expect("answer");
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn wire_cmp_simulator_refuses_a_wrong_sign_set_and_a_missing_acct_cd() {
    let r = rig().await;
    // An account that signs needDtl ([XUYU]'s reading) against a platform that does not.
    let mut cfg = config(&r.base_url, PASSWORD, KEY, 5_000);
    cfg.sign_need_dtl = true;
    let a = Cmp::new(&cfg, ctx()).expect("adapter");
    let e = a.card(&iccid(1)).await.expect_err("needDtl signed");
    assert!(rejected("-3")(&e), "{e:?}");
    // disabledNumber without acctCd, correctly signed otherwise: a missing parameter.
    let params = vec![
        ("method", "disabledNumber".to_string()),
        ("user_id", USER.to_string()),
        ("iccid", iccid(1).to_string()),
        ("orderTypeId", "19".to_string()),
    ];
    let sign = simgate::carrier::http::cmp::crypt::request_sign(
        "disabledNumber",
        &params,
        PASSWORD,
        KEY,
        false,
    )
    .expect("sign");
    let pass = simgate::carrier::http::cmp::crypt::encrypt(PASSWORD, KEY).expect("passWord");
    let mut query: Vec<(&str, String)> = params.clone();
    query.push(("passWord", pass));
    query.push(("sign", sign));
    let body = reqwest::Client::new()
        .get(format!("{}/query.do", r.base_url))
        .query(&query)
        .send()
        .await
        .expect("answer")
        .text()
        .await
        .expect("body");
    assert!(body.contains("\"-2\""), "{body}");
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Active,
        "nothing changed"
    );
}

// ---------------------------------------------------------------------------------------------
// How calls name a card (dossier §0.4): by access number (default) or by ICCID.
// ---------------------------------------------------------------------------------------------

/// The parameters of the `method` requests the simulator received.
fn params_of(
    sent: &[(String, String)],
    method: &str,
) -> Vec<std::collections::HashMap<String, String>> {
    sent.iter()
        .map(|(q, _)| {
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect::<std::collections::HashMap<String, String>>()
        })
        .filter(|p| p.get("method").map(String::as_str) == Some(method))
        .collect()
}

#[tokio::test]
async fn wire_cmp_cards_are_named_by_access_number_learnt_once() {
    let r = rig().await;
    let a = r.adapter();
    let number = r.number(1).await;
    assert_eq!(
        a.msisdn_of(&iccid(1)).await.expect("getTelephonePlus"),
        Some(number.clone())
    );
    assert!(a.addresses_by_msisdn());
    a.card(&iccid(1)).await.expect("card");
    a.stop(&iccid(1)).await.expect("stop");
    a.card(&iccid(1)).await.expect("card again");
    let sent = r.exchanges.lock().unwrap().clone();
    let lookups = params_of(&sent, "getTelephonePlus");
    assert_eq!(lookups.len(), 1, "the number is asked once: {lookups:?}");
    assert_eq!(
        lookups[0].get("iccid").map(String::as_str),
        Some(iccid(1).as_str())
    );
    for method in [
        "queryCardMainStatus",
        "queryTraffic",
        "getOnlineStatus",
        "disabledNumber",
    ] {
        let calls = params_of(&sent, method);
        assert!(!calls.is_empty(), "{method} was called");
        for p in calls {
            assert_eq!(p.get("access_number"), Some(&number), "{method}: {p:?}");
            assert!(
                !p.contains_key("iccid"),
                "{method} names the card once: {p:?}"
            );
        }
    }
    assert_eq!(
        r.sim.card(&iccid(1)).await.expect("sim").state,
        ServiceState::Stopped
    );
}

#[tokio::test]
async fn wire_cmp_a_stored_number_costs_no_lookup_and_a_card_without_one_is_refused_before_sending()
{
    let r = rig().await;
    // simgate's record says the card is 14914000000, which the simulator does not hold: the
    // platform answers -4 for it, and no getTelephonePlus is made.
    let a = Cmp::new(
        &config(&r.base_url, PASSWORD, KEY, 5_000),
        ctx_with_numbers(),
    )
    .expect("adapter");
    let e = a
        .card(&iccid(1))
        .await
        .expect_err("a number the platform lacks");
    assert!(rejected("-4")(&e), "{e:?}");
    let sent = r.exchanges.lock().unwrap().clone();
    assert!(params_of(&sent, "getTelephonePlus").is_empty());
    assert_eq!(
        params_of(&sent, "queryCardMainStatus")[0]
            .get("access_number")
            .map(String::as_str),
        Some(DOSSIER_NUMBER)
    );
    // A card the platform does not know has no number: a stop of it is refused (nothing sent),
    // not an unknown outcome.
    let a = r.adapter();
    let e = a.stop(&iccid(99)).await.expect_err("unknown card");
    assert!(matches!(e, CarrierError::Rejected { .. }), "{e:?}");
    let sent = r.exchanges.lock().unwrap().clone();
    assert!(
        params_of(&sent, "disabledNumber").is_empty(),
        "no change was sent"
    );
}

#[tokio::test]
async fn wire_cmp_onboard_checks_the_given_number_against_the_platform() {
    let r = rig().await;
    let a = r.adapter();
    let number = r.number(1).await;
    let given = |msisdn: &str| OnboardCard {
        iccid: iccid(1),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: Some(msisdn.to_string()),
    };
    a.onboard(&[given(&number)])
        .await
        .expect("the platform's number");
    let e = a
        .onboard(&[given("14900000000")])
        .await
        .expect_err("another card's number");
    assert!(rejected("MSISDN_MISMATCH")(&e), "{e:?}");
    // Learnt at onboarding: the card's calls need no lookup.
    let fresh = r.adapter();
    fresh.onboard(&[given(&number)]).await.expect("onboard");
    let before = params_of(&r.exchanges.lock().unwrap(), "getTelephonePlus").len();
    fresh.card(&iccid(1)).await.expect("card");
    assert_eq!(
        params_of(&r.exchanges.lock().unwrap(), "getTelephonePlus").len(),
        before
    );
}

#[tokio::test]
async fn wire_cmp_iccid_setting_names_cards_by_iccid_except_the_real_name_query() {
    let r = rig().await;
    let cfg = CmpConfig {
        card_identifier: simgate::carrier::http::cmp::wire::CardIdentifier::Iccid,
        ..config(&r.base_url, PASSWORD, KEY, 5_000)
    };
    let a = Cmp::new(&cfg, ctx()).expect("adapter");
    assert!(!a.addresses_by_msisdn());
    a.card(&iccid(1)).await.expect("card");
    a.stop(&iccid(1)).await.expect("stop");
    a.real_name(&iccid(1)).await.expect("real name");
    let sent = r.exchanges.lock().unwrap().clone();
    for method in [
        "queryCardMainStatus",
        "queryTraffic",
        "getOnlineStatus",
        "disabledNumber",
    ] {
        for p in params_of(&sent, method) {
            assert_eq!(
                p.get("iccid").map(String::as_str),
                Some(iccid(1).as_str()),
                "{method}"
            );
            assert!(!p.contains_key("access_number"), "{method}: {p:?}");
        }
    }
    // No source queries real-name status by ICCID: it still goes by access number.
    let number = r.sim.number_of(&iccid(1)).await.expect("sim");
    assert_eq!(
        params_of(&sent, "realNameQueryIot")[0].get("access_number"),
        number.as_ref()
    );
    assert_eq!(params_of(&sent, "getTelephonePlus").len(), 1);
}

#[tokio::test]
async fn wire_cmp_simulator_refuses_an_access_number_it_does_not_hold_and_a_real_name_query_by_iccid(
) {
    let r = rig().await;
    let a = Cmp::new(
        &config(&r.base_url, PASSWORD, KEY, 5_000),
        ctx_with_numbers(),
    )
    .expect("adapter");
    assert!(rejected("-4")(
        &a.stop(&iccid(1)).await.expect_err("unknown number")
    ));
    // A hand-built realNameQueryIot naming the card by ICCID: -2 (access_number is required).
    let params = vec![
        ("method", "realNameQueryIot".to_string()),
        ("user_id", USER.to_string()),
        ("iccid", iccid(1).as_str().to_string()),
    ];
    let sign = simgate::carrier::http::cmp::request_sign(
        "realNameQueryIot",
        &params,
        PASSWORD,
        KEY,
        false,
    )
    .expect("sign");
    let pass = simgate::carrier::http::cmp::crypt::encrypt(PASSWORD, KEY).expect("des");
    let mut q = params;
    q.push(("passWord", pass));
    q.push(("sign", sign));
    let body = reqwest::Client::new()
        .get(format!("{}/query.do", r.base_url))
        .query(&q)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("body");
    assert!(
        body.contains("\"-2\"") && body.contains("access_number"),
        "{body}"
    );
}

/// The whole import over the wire: a Telecom card imported without a number gets the one
/// China Telecom holds (learnt while onboarding, stored with the card, shown by GetCard); a
/// suspension then reaches the card by its number.
#[tokio::test]
async fn wire_cmp_import_over_the_wire_stores_the_platforms_access_number() {
    use crate::helpers::{card_input, get, serve_built, telecom_iccid, test_server};
    use simgate::pb;
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite test db"));
    let clock = ManualClock::new(start_time());
    let app = test_server(&db, &clock)
        .simulator_transport(simgate::simulate::SimulatorTransport::Http)
        .build()
        .await
        .expect("build server");
    let mut app = serve_built(app, db, clock).await;
    let one = telecom_iccid(1);
    crate::helpers::import(&mut app, vec![card_input(&one, pb::Carrier::ChinaTelecom)]).await;
    let card = get(&mut app, &one).await;
    let expected = simgate::store::simulated_access_number(&Iccid::parse_any(&one).expect("iccid"));
    assert_eq!(card.msisdn, expected, "the platform's number, stored");

    // A number given at import is the card's at the simulated platform too (a real platform
    // refuses one it does not hold: wire_cmp_onboard_checks_the_given_number_against_the_platform).
    let two = telecom_iccid(2);
    let given = pb::CardInput {
        msisdn: "14900000002".into(),
        ..card_input(&two, pb::Carrier::ChinaTelecom)
    };
    crate::helpers::import(&mut app, vec![given]).await;
    assert_eq!(get(&mut app, &two).await.msisdn, "14900000002");

    app.suspend(&one).await.expect("suspend by access number");
    let at_carrier = crate::helpers::carrier_state(&mut app, pb::Carrier::ChinaTelecom, &one).await;
    assert_eq!(
        at_carrier,
        pb::CarrierServiceState::Stopped,
        "stopped at the platform"
    );
}

#[tokio::test]
async fn wire_cmp_get_telephone_plus_fixture_gives_the_cards_number_and_only_that_cards() {
    let reply = fixture("derived/getTelephonePlus.s7-2.reply.derived.json");
    let a = platform_answering(&[("getTelephonePlus", reply.clone())]).await;
    let card = Iccid::parse_any("8986031540025047173").expect("the fixture's ICCID");
    assert_eq!(
        a.msisdn_of(&card).await.expect("number"),
        Some(DOSSIER_NUMBER.to_string())
    );
    // Its 20-digit form ([ESIM7] sends 19 of 20 digits): the same card.
    let longer = Iccid::parse_any("89860315400250471731").expect("20 digits");
    assert!(a.msisdn_of(&longer).await.is_ok());
    // A reply about another card is not this card's number.
    let e = a
        .msisdn_of(&iccid(1))
        .await
        .expect_err("another card's reply");
    assert!(matches!(e, CarrierError::Transient(_)), "{e:?}");
    // A number that is not one (the placeholder of an IMSI in its place) is unavailable.
    let garbled = reply.replace("14914000000", "<number>");
    let a = platform_answering(&[("getTelephonePlus", garbled)]).await;
    assert!(matches!(
        a.msisdn_of(&card).await,
        Err(CarrierError::Transient(_))
    ));
}

/// Every fixture file is named by a test in this file (so one added to the folder without a
/// test fails here).
#[test]
fn wire_cmp_every_fixture_is_read_by_a_test() {
    let this = include_str!("wire_cmp.rs");
    let files = crate::helpers::fixture_files("cmp");
    assert!(files.len() >= 10, "{files:?}");
    let unread: Vec<&String> = files
        .iter()
        .filter(|f| !this.contains(&format!("\"{f}\"")))
        .collect();
    assert!(unread.is_empty(), "fixtures no test reads: {unread:?}");
}

/// The usage sync's read of many cards: a card the platform lacks (`-4`) is left out, but a
/// refusal of the account (`-1`, wrong password) fails the read instead of dropping every card.
#[tokio::test]
async fn wire_cmp_a_sync_leaves_out_unknown_cards_and_fails_on_an_account_refusal() {
    let r = rig().await;
    let a = Cmp::new(
        &config(&r.base_url, PASSWORD, KEY, 5_000),
        ctx_with_numbers_of(&r).await,
    )
    .expect("adapter");
    let read = a.cards(&[iccid(1), iccid(99)]).await.expect("a sync read");
    assert_eq!(
        read.iter().map(|c| c.iccid.clone()).collect::<Vec<_>>(),
        vec![iccid(1)]
    );
    let wrong = r.adapter_with("wrong-pw", KEY, 5_000);
    let e = wrong
        .cards(&[iccid(1), iccid(2)])
        .await
        .expect_err("the account is refused");
    assert!(rejected("-1")(&e), "{e:?}");
}

/// The store's record for the rig's cards: card 1's number, none for the others.
async fn ctx_with_numbers_of(r: &Rig) -> simgate::carrier::platform::AccountCtx {
    struct One(Iccid, String);
    #[async_trait::async_trait]
    impl simgate::carrier::platform::CardNumbers for One {
        async fn msisdn(
            &self,
            _: &simgate::domain::AccountId,
            iccid: &Iccid,
        ) -> Result<Option<String>, String> {
            Ok((*iccid == self.0).then(|| self.1.clone()))
        }
    }
    simgate::carrier::platform::AccountCtx {
        numbers: simgate::carrier::platform::NumberBook(Arc::new(One(iccid(1), r.number(1).await))),
        ..ctx()
    }
}

// ---------------------------------------------------------------------------------------------
// Issue 20: receipts, IMEIReRecord (dossier §6.1) and refusals of changes.
// ---------------------------------------------------------------------------------------------

const IMEI: &str = "860000000000001";

fn form_b(cfg: &mut CmpConfig) {
    cfg.imei_rerecord_form = ImeiReRecordForm::ServiceAcceptIccid;
}

#[tokio::test]
async fn wire_cmp_imei_rerecord_fixture_replies_parse_to_the_dossier_values() {
    for edit in [|_: &mut CmpConfig| {}, form_b as fn(&mut CmpConfig)] {
        // RspType 0: applied, named by its GROUP_TRANSACTIONID (no order query exists).
        let ok = [("IMEIReRecord", fixture("IMEIReRecord.s6-1.reply-ok.json"))];
        let a = platform_answering_to(&ok, edit).await;
        assert_eq!(
            a.rebind(&iccid(1), &Rebind::CurrentDevice)
                .await
                .expect("accepted"),
            Receipt::applied_as("1000000190202103293055805587")
        );
        // RspType 1, RspCode -5: the per-card monthly limit, a refusal in the platform's words.
        let limit = [(
            "IMEIReRecord",
            fixture("IMEIReRecord.s6-1.reply-monthly-limit.json"),
        )];
        let a = platform_answering_to(&limit, edit).await;
        assert_eq!(
            a.rebind(&iccid(1), &Rebind::CurrentDevice)
                .await
                .expect_err("limit"),
            CarrierError::Rejected {
                code: "-5".into(),
                message: "业务校验失败（单卡本月调用次数已超过限定次数！）".into()
            }
        );
    }
    // Form A binds to an IMEI with the same reply.
    let ok = [("IMEIReRecord", fixture("IMEIReRecord.s6-1.reply-ok.json"))];
    let a = platform_answering(&ok).await;
    assert_eq!(
        a.rebind(&iccid(1), &Rebind::Imei(IMEI.into()))
            .await
            .expect("accepted"),
        Receipt::applied_as("1000000190202103293055805587")
    );
}

/// A rig whose exchanges are named by path and query (`/m2m_ec/query.do?method=…`).
async fn rig_by_path(edit: impl FnOnce(&mut CmpConfig)) -> Rig {
    rig_with(edit, |uri| {
        format!("{}?{}", uri.path(), uri.query().unwrap_or(""))
    })
    .await
}

/// The IMEIReRecord requests of a rig named by path: (path, parameters in order).
fn rerecords(r: &Rig) -> Vec<(String, Vec<(String, String)>)> {
    r.exchanges
        .lock()
        .unwrap()
        .iter()
        .filter_map(|(name, _)| {
            let (path, query) = name.split_once('?')?;
            let params: Vec<(String, String)> = url::form_urlencoded::parse(query.as_bytes())
                .into_owned()
                .collect();
            params
                .iter()
                .any(|(k, v)| k == "method" && v == "IMEIReRecord")
                .then(|| (path.to_string(), params))
        })
        .collect()
}

/// Checks one captured IMEIReRecord request against its fixture's table: the path, every
/// parameter a dossier one (the optional ones only when `with_optional`), the signed set as
/// `is_signed` says and the DES sign over exactly it.
fn check_rerecord(
    (path, got): &(String, Vec<(String, String)>),
    file: &str,
    want_path: &str,
    with_optional: bool,
) {
    assert_eq!(path, want_path, "{file}");
    let text = fixture(file);
    let expected = request_params(&text);
    for (k, _) in got {
        assert!(
            expected.iter().any(|(e, _)| e == k),
            "{file}: {k} is not a parameter of this form"
        );
    }
    for (e, signed) in &expected {
        let optional = text
            .lines()
            .any(|l| l.starts_with(&format!("{e}\t")) && l.contains("optional"));
        let present = got.iter().any(|(k, _)| k == e);
        if !optional || with_optional {
            assert!(present, "{file}: {e} missing");
        } else {
            assert!(!present, "{file}: {e} sent");
        }
        if present {
            assert_eq!(
                simgate::carrier::http::cmp::wire::is_signed("IMEIReRecord", e, false),
                *signed && !matches!(e.as_str(), "passWord" | "sign"),
                "{file}: is {e} signed?"
            );
        }
    }
    let value = |k: &str| got.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
    assert_eq!(value("action"), Some("ADD"));
    let mut values: Vec<&str> = expected
        .iter()
        .filter(|(e, signed)| *signed && !matches!(e.as_str(), "passWord" | "sign"))
        .filter_map(|(e, _)| value(e))
        .collect();
    values.push(PASSWORD);
    assert_eq!(
        value("sign"),
        Some(
            simgate::carrier::http::cmp::crypt::sign(&values, KEY)
                .expect("sign")
                .as_str()
        ),
        "{file}: the sign over the dossier's set"
    );
    assert_eq!(
        value("passWord").map(str::to_string),
        Some(simgate::carrier::http::cmp::crypt::encrypt(PASSWORD, KEY).expect("des"))
    );
}

#[tokio::test]
async fn wire_cmp_imei_rerecord_requests_carry_each_forms_parameters() {
    // Form A (the default): query.do, by access number; bind_type 2 + imei for an IMEI.
    let r = rig_by_path(|_| {}).await;
    let a = r.adapter();
    assert_eq!(a.rebind_modes(), vec!["CURRENT_DEVICE", "IMEI"]);
    let _ = a.rebind(&iccid(1), &Rebind::CurrentDevice).await;
    let _ = a.rebind(&iccid(1), &Rebind::Imei(IMEI.into())).await;
    let sent = rerecords(&r);
    assert_eq!(sent.len(), 2, "{sent:?}");
    let file = "derived/IMEIReRecord.s6-1.request-query-access-number.derived.txt";
    check_rerecord(&sent[0], file, "/m2m_ec/query.do", false);
    check_rerecord(&sent[1], file, "/m2m_ec/query.do", true);
    let number = r.number(1).await;
    let value = |i: usize, k: &str| {
        sent[i]
            .1
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(value(0, "access_number"), Some(number));
    assert_eq!(value(1, "bind_type").as_deref(), Some("2"));
    assert_eq!(value(1, "imei").as_deref(), Some(IMEI));
    // No call removes a binding: refused before anything is sent.
    let e = a
        .rebind(&iccid(1), &Rebind::Unbind)
        .await
        .expect_err("unbind");
    assert!(rejected("REBIND_NOT_SUPPORTED")(&e), "{e:?}");
    assert_eq!(rerecords(&r).len(), 2, "nothing sent for UNBIND");

    // Form B: app/serviceAccept.do, by ICCID, ordinary rebind only.
    let r = rig_by_path(form_b).await;
    let mut cfg = config(&r.base_url, PASSWORD, KEY, 5_000);
    form_b(&mut cfg);
    let b = Cmp::new(&cfg, ctx()).expect("adapter");
    assert_eq!(b.rebind_modes(), vec!["CURRENT_DEVICE"]);
    let _ = b.rebind(&iccid(1), &Rebind::CurrentDevice).await;
    for refused in [Rebind::Imei(IMEI.into()), Rebind::Unbind] {
        let e = b.rebind(&iccid(1), &refused).await.expect_err("refused");
        assert!(rejected("REBIND_NOT_SUPPORTED")(&e), "{e:?}");
    }
    let sent = rerecords(&r);
    assert_eq!(sent.len(), 1, "only the ordinary rebind was sent: {sent:?}");
    check_rerecord(
        &sent[0],
        "IMEIReRecord.s6-1.request-service-accept.txt",
        "/m2m_ec/app/serviceAccept.do",
        false,
    );
    assert!(sent[0]
        .1
        .iter()
        .any(|(k, v)| k == "iccid" && v == iccid(1).as_str()));
    // A form the platform does not serve is never a success: 404 on serviceAccept.do is an
    // unknown outcome (the simulator of rig A serves form A only).
    let r = rig_by_path(|_| {}).await;
    let mut cfg = config(&r.base_url, PASSWORD, KEY, 5_000);
    form_b(&mut cfg);
    let b = Cmp::new(&cfg, ctx()).expect("adapter");
    let e = b
        .rebind(&iccid(1), &Rebind::CurrentDevice)
        .await
        .expect_err("not served");
    assert!(matches!(e, CarrierError::OutcomeUnknown(_)), "{e:?}");
}

#[tokio::test]
async fn wire_cmp_a_change_refused_with_the_window_code_or_an_unrecognised_code_is_deferred() {
    // The simulator's invented window code, in the common refusal envelope (§9) for
    // disabledNumber and in IMEIReRecord's own (§6.1).
    let refusal =
        |code: &str| format!(r#"{{"resultCode":"{code}","resultMsg":"同一卡号请稍后办理"}}"#);
    let rsp = |code: &str| {
        format!(
            r#"{{"Response":{{"RspType":"1","RspCode":"{code}","RspDesc":"请稍后"}},"GROUP_TRANSACTIONID":"1000000190202103293103373268"}}"#
        )
    };
    let window = simgate::carrier::http::cmp::simulator::INVENTED_REPEAT_WINDOW;
    let bodies = |code: &str| {
        vec![
            ("disabledNumber", refusal(code)),
            ("IMEIReRecord", rsp(code)),
            ("queryCardMainStatus", refusal(code)),
        ]
    };
    for setting in [Some(window.to_string()), None] {
        let a = platform_answering_to(&bodies(window), |c| c.repeat_window_code = setting.clone())
            .await;
        for e in [
            a.stop(&iccid(1)).await.expect_err("stop"),
            a.restore(&iccid(1)).await.expect_err("restore"),
            a.rebind(&iccid(1), &Rebind::CurrentDevice)
                .await
                .expect_err("rebind"),
        ] {
            // The setting names it a window; without, it is an unrecognised refusal.
            assert_deferred(&e, window, setting.is_some());
        }
        // Reads are unchanged: an unpublished code is "unavailable".
        let read = a.card(&iccid(1)).await.expect_err("read");
        assert!(matches!(read, CarrierError::Transient(_)), "{read:?}");
    }
    // A published code the account names its window is deferred too; unset, it keeps its
    // refusal.
    for (setting, deferred) in [(Some("-7".to_string()), true), (None, false)] {
        let a =
            platform_answering_to(&bodies("-7"), |c| c.repeat_window_code = setting.clone()).await;
        let e = a.stop(&iccid(1)).await.expect_err("-7");
        assert_eq!(
            matches!(e, CarrierError::Deferred { .. }),
            deferred,
            "{e:?}"
        );
        assert_eq!(rejected("-7")(&e), !deferred, "{e:?}");
    }
    // Codes the adapter knows keep their mapping for IMEIReRecord too.
    for (code, check) in [
        (
            "-4",
            (|e: &CarrierError| matches!(e, CarrierError::Rejected { code, .. } if code == "-4"))
                as fn(&CarrierError) -> bool,
        ),
        (
            "-1",
            |e: &CarrierError| matches!(e, CarrierError::Rejected { code, .. } if code == "-1"),
        ),
        ("101004", |e: &CarrierError| {
            matches!(e, CarrierError::RateLimited { .. })
        }),
    ] {
        let a = platform_answering(&bodies(code)).await;
        let e = a
            .rebind(&iccid(1), &Rebind::CurrentDevice)
            .await
            .expect_err(code);
        assert!(check(&e), "{code}: {e:?}");
    }
}

#[tokio::test]
async fn wire_cmp_a_change_through_the_simulator_is_named_by_its_transaction_id() {
    let r = rig().await;
    let a = r.adapter();
    let receipt = a.stop(&iccid(1)).await.expect("stop");
    assert!(!receipt.in_progress, "the reply is the proof");
    let id = receipt.order_id.clone().expect("a GROUP_TRANSACTIONID");
    assert_eq!(id.len(), 28, "28 digits like the samples: {id}");
    assert!(id.bytes().all(|b| b.is_ascii_digit()), "{id}");
    let sent = r.exchanges.lock().unwrap().clone();
    let (_, reply) = exchange_of(&sent, "disabledNumber");
    assert!(reply.contains(&id), "{reply}");
    // Another change, another id.
    let again = a.restore(&iccid(1)).await.expect("restore");
    assert_ne!(again.order_id, receipt.order_id);
    assert!(!a.queries_orders());
}

/// The IMEIReRecord form names the card, whatever `card_identifier` says: form A by access
/// number even for an account that names its other calls by ICCID.
#[tokio::test]
async fn wire_cmp_imei_rerecord_form_a_names_the_card_by_access_number_in_the_iccid_setting() {
    let r = rig_by_path(|_| {}).await;
    let cfg = CmpConfig {
        card_identifier: simgate::carrier::http::cmp::wire::CardIdentifier::Iccid,
        ..config(&r.base_url, PASSWORD, KEY, 5_000)
    };
    let a = Cmp::new(&cfg, ctx()).expect("adapter");
    let _ = a.rebind(&iccid(1), &Rebind::CurrentDevice).await;
    let sent = rerecords(&r);
    assert_eq!(sent.len(), 1, "{sent:?}");
    let number = r.number(1).await;
    assert!(sent[0]
        .1
        .iter()
        .any(|(k, v)| k == "access_number" && *v == number));
    assert!(!sent[0].1.iter().any(|(k, _)| k == "iccid"));
}

/// Through the wire simulator, backed by the simulated carrier's binding and repeat window: a
/// rebind reaches the carrier in both forms and comes back named by a 28-digit transaction id;
/// a change inside the carrier's window is refused with the simulator's window code, which
/// the adapter defers (named a window when the account sets `repeat_window_code`).
#[tokio::test]
async fn wire_cmp_rebind_and_the_repeat_window_through_the_simulator() {
    for form_b_on in [false, true] {
        let r = rig_by_path(|c| {
            if form_b_on {
                form_b(c)
            }
        })
        .await;
        let mut cfg = config(&r.base_url, PASSWORD, KEY, 5_000);
        if form_b_on {
            form_b(&mut cfg);
        }
        let a = Cmp::new(&cfg, ctx()).expect("adapter");
        r.sim
            .move_to_device(&iccid(1), IMEI)
            .await
            .expect("in a device");
        let receipt = a
            .rebind(&iccid(1), &Rebind::CurrentDevice)
            .await
            .expect("rebound");
        let id = receipt.order_id.clone().expect("a transaction id");
        assert!(
            id.len() == 28 && id.bytes().all(|b| b.is_ascii_digit()),
            "{id}"
        );
        assert!(!receipt.in_progress);
        assert_eq!(
            r.sim
                .binding_of(&iccid(1))
                .await
                .expect("binding")
                .bound_imei
                .as_deref(),
            Some(IMEI),
            "form B: {form_b_on}"
        );
    }
    {
        let imei_rig = rig().await;
        let a = imei_rig.adapter();
        a.rebind(&iccid(2), &Rebind::Imei("860000000000002".into()))
            .await
            .expect("bound to the IMEI");
        assert_eq!(
            imei_rig
                .sim
                .binding_of(&iccid(2))
                .await
                .expect("binding")
                .bound_imei
                .as_deref(),
            Some("860000000000002")
        );
    }

    let window = simgate::carrier::http::cmp::simulator::INVENTED_REPEAT_WINDOW;
    for setting in [None, Some(window.to_string())] {
        let r = rig().await;
        r.sim.set_faults(simgate::carrier::sim::SimFaults {
            repeat_window_s: Some(1800),
            ..Default::default()
        });
        let a = Cmp::new(
            &CmpConfig {
                repeat_window_code: setting.clone(),
                ..config(&r.base_url, PASSWORD, KEY, 5_000)
            },
            ctx(),
        )
        .expect("adapter");
        a.stop(&iccid(1)).await.expect("stop");
        let e = a.restore(&iccid(1)).await.expect_err("inside the window");
        assert_deferred(&e, window, setting.is_some());
        assert_eq!(
            r.sim.card(&iccid(1)).await.expect("sim").state,
            ServiceState::Stopped,
            "nothing applied"
        );
    }
}
