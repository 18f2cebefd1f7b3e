//! Contract tests: the China Telecom CMP adapter against its wire simulator over loopback HTTP.

use std::sync::Arc;
use std::time::Duration;

use simgate::carrier::http::cmp::simulator::{router, WireOptions};
use simgate::carrier::http::cmp::wire::{RealName, NOT_DISMANTLED};
use simgate::carrier::http::cmp::{Cmp, CmpConfig};
use simgate::carrier::http::{HttpTimeouts, Secret};
use simgate::carrier::sim::SimCarrier;
use simgate::carrier::{Carrier, CarrierError, OnboardCard, ServiceState};
use simgate::clock::ManualClock;
use simgate::domain::{CarrierId, CarrierPolicy, Iccid};

use crate::helpers::{start_time, Backend, TestDb};

const KEY: &str = "k3yS3cr3t";
const USER: &str = "simgate";
const PASSWORD: &str = "pa55word";
const MIB: u64 = 1024 * 1024;

struct Rig {
    sim: Arc<SimCarrier>,
    base_url: String,
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
    }
}

fn policy() -> CarrierPolicy {
    CarrierPolicy::default_for(CarrierId::Telecom)
}

/// Serves the wire simulator on a random loopback port, with two onboarded cards: 1 active
/// (3 MiB used), 2 stopped.
async fn rig() -> Rig {
    let db = TestDb::new(Backend::Sqlite).expect("sqlite test db");
    let store = db.store().await;
    let clock = Arc::new(ManualClock::new(start_time()));
    let sim = Arc::new(SimCarrier::new(policy(), store, clock));
    sim.onboard(&[
        OnboardCard {
            iccid: iccid(1),
            state: ServiceState::Active,
            cycle_usage_bytes: 0,
        },
        OnboardCard {
            iccid: iccid(2),
            state: ServiceState::Stopped,
            cycle_usage_bytes: 0,
        },
    ])
    .await
    .expect("onboard");
    sim.record_usage(&iccid(1), 3 * MIB).await.expect("usage");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base_url = format!("http://{}/m2m_ec", listener.local_addr().expect("addr"));
    let app = router(
        sim.clone(),
        &config(&base_url, PASSWORD, KEY, 10_000),
        WireOptions {
            timeout_after_apply_delay: Duration::from_millis(1_500),
        },
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Rig {
        sim,
        base_url,
        _db: db,
    }
}

impl Rig {
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
    assert!(
        sim_card.last_session_at.is_some(),
        "usage records a session"
    );
    assert!(on.online);
    // The platform reports to the second.
    assert_eq!(
        on.last_session_at.map(|t| t.timestamp()),
        sim_card.last_session_at.map(|t| t.timestamp())
    );
    // card() carries the same session time, for the diagnosis.
    assert_eq!(
        a.card(&iccid(1))
            .await
            .expect("card 1")
            .last_session_at
            .map(|t| t.timestamp()),
        sim_card.last_session_at.map(|t| t.timestamp())
    );
    let off = a.online_status(&iccid(2)).await.expect("online 2");
    assert!(!off.online);
    assert_eq!(off.last_session_at, None);
    assert_eq!(
        a.card(&iccid(2)).await.expect("card 2").last_session_at,
        None
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
    let a = Cmp::new(&config(&base, PASSWORD, KEY, 5_000), ctx()).expect("adapter");
    let e = a.card(&iccid(1)).await.expect_err("garbage read");
    assert!(
        matches!(e, CarrierError::Transient(ref m) if m.contains("malformed")),
        "{e:?}"
    );
    let e = a.stop(&iccid(1)).await.expect_err("garbage change");
    assert!(
        matches!(e, CarrierError::OutcomeUnknown(ref m) if m.contains("malformed")),
        "{e:?}"
    );
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
