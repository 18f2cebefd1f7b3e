//! Webhooks against an attacker: internal targets refused at creation and at connect time, a
//! black-holed customer that cannot delay another, the per-customer cap, the audit of every
//! webhook change and refusal, and secrets sealed at rest in owner-only files. No test connects
//! anywhere but 127.0.0.1.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use simgate::pb;
use simgate::pb::monitoring_service_client::MonitoringServiceClient;
use simgate::service::webhooks::target::Lookup;
use simgate::service::webhooks::WebhookConfig;
use sqlx::{Connection, Row};
use tonic::Code;

use crate::helpers::*;

const SECRET: &str = "whsec_receiver_secret_0123456789";

fn monitor(app: &TestApp) -> MonitoringServiceClient<Authed> {
    monitoring_client(&app.channel, ADMIN_KEY)
}

/// Resolves the names it was given to their addresses, and nothing else.
struct Pointing(HashMap<String, IpAddr>);

impl Lookup for Pointing {
    fn lookup(&self, host: &str) -> BoxFuture<'static, std::io::Result<Vec<IpAddr>>> {
        let found = self.0.get(host).copied();
        Box::pin(async move {
            found
                .map(|ip| vec![ip])
                .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "unknown name"))
        })
    }
}

fn pointing(name: &str) -> Arc<dyn Lookup> {
    Arc::new(Pointing(HashMap::from([(
        name.to_string(),
        "127.0.0.1".parse().unwrap(),
    )])))
}

/// What a receiver got: (path, event id, whether the signature verified).
type Inbox = Arc<Mutex<Vec<(String, String, bool)>>>;

/// A receiver on 127.0.0.1 that accepts everything and records it.
async fn receiver() -> (std::net::SocketAddr, Inbox) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode, Uri};
    let inbox: Inbox = Default::default();
    async fn take(
        State(inbox): State<Inbox>,
        uri: Uri,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let ts: i64 = h("x-simgate-timestamp").parse().unwrap_or(0);
        let valid =
            h("x-simgate-signature") == simgate::service::webhooks::signature(SECRET, ts, &body);
        inbox
            .lock()
            .unwrap()
            .push((uri.path().to_string(), h("x-simgate-event-id"), valid));
        StatusCode::NO_CONTENT
    }
    let app = axum::Router::new()
        .fallback(axum::routing::post(take))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, inbox)
}

/// A black hole on 127.0.0.1: accepts connections and never answers. Counts the connections.
async fn black_hole() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(conn);
        }
    });
    (addr, accepted)
}

async fn app_with(
    backend: Backend,
    cfg: WebhookConfig,
    lookup: Option<Arc<dyn Lookup>>,
) -> Option<TestApp> {
    let db = Arc::new(TestDb::new(backend)?);
    let clock = simgate::clock::ManualClock::new(start_time());
    let mut b = test_server(&db, &clock).webhooks(cfg);
    if let Some(l) = lookup {
        b = b.webhook_lookup(l);
    }
    let built = b.build().await.expect("build");
    Some(serve_built(built, db, clock).await)
}

/// A server whose resolver points `name` at 127.0.0.1, with one China Mobile card of acme and
/// acme's webhook to `http://{name}:{port}/in`; None when the backend is not available.
async fn hooked_through(
    backend: Backend,
    cfg: WebhookConfig,
    name: &str,
    port: u16,
) -> Option<(TestApp, String)> {
    let mut app = app_with(backend, cfg, Some(pointing(name))).await?;
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let id = monitor(&app)
        .create_webhook(hook("acme", &format!("http://{name}:{port}/in")))
        .await
        .expect("a public-looking name is accepted")
        .into_inner()
        .webhook
        .unwrap()
        .webhook_id;
    Some((app, id))
}

fn hook(customer: &str, url: &str) -> pb::CreateWebhookRequest {
    pb::CreateWebhookRequest {
        customer_id: customer.into(),
        url: url.into(),
        kinds: vec![],
        secret: SECRET.into(),
    }
}

async fn deliveries(app: &TestApp, id: &str) -> Vec<pb::WebhookDelivery> {
    monitor(app)
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            webhook_id: id.into(),
            state: 0,
            page_size: 0,
        })
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries
}

async fn internal_targets_are_refused_at_creation(backend: Backend) {
    // Defaults: https only, no allow-list.
    let Some(app) = app_with(backend, WebhookConfig::default(), None).await else {
        return;
    };
    let mut m = monitor(&app);
    let refused = [
        "https://localhost/x",
        "https://2130706433/x",
        "https://0x7f000001/x",
        "https://127.1/x",
        "https://user:pw@127.0.0.1/x",
        "https://169.254.169.254/latest/meta-data/",
        "https://10.0.0.1/",
        "https://172.16.0.1/",
        "https://192.168.1.1/",
        "https://0.0.0.0/",
        "https://[::1]/",
        "https://[fd00::1]/",
        "https://[::ffff:169.254.169.254]/",
        "https://metadata.google.internal/",
        "http://example.com/hook",
    ];
    for url in refused {
        let e = m.create_webhook(hook("acme", url)).await.expect_err(url);
        assert_eq!(e.code(), Code::InvalidArgument, "{url}");
        assert_eq!(details(&e).1, ["url"], "{url}");
    }
    let listed = m
        .list_webhooks(pb::ListWebhooksRequest {})
        .await
        .expect("list")
        .into_inner()
        .webhooks;
    assert!(listed.is_empty(), "nothing was created");
    // A public https target is fine (it is never connected to: no event is raised).
    m.create_webhook(hook("acme", "https://hooks.example.com/simgate"))
        .await
        .expect("public https target");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_at_creation_sqlite() {
    internal_targets_are_refused_at_creation(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn internal_targets_are_refused_at_creation_postgres() {
    internal_targets_are_refused_at_creation(Backend::Postgres).await;
}

async fn a_name_resolving_to_loopback_is_refused_at_connect_time(backend: Backend) {
    let (addr, inbox) = receiver().await;
    // Plain http allowed, no allow-list: the name passes creation, its address does not pass
    // the connect-time check.
    let cfg = WebhookConfig {
        allow_http: true,
        poll_ms: 20,
        retry_base_ms: 10_000,
        retry_max_ms: 10_000,
        ..WebhookConfig::default()
    };
    let Some((mut app, id)) = hooked_through(backend, cfg, "rebind.example", addr.port()).await
    else {
        return;
    };
    app.suspend(MOBILE_ICCID).await.expect("suspend");
    eventually("the refused attempt to be recorded", 30, || async {
        deliveries(&app, &id).await.iter().any(|d| d.attempts >= 1)
    })
    .await;
    let d = deliveries(&app, &id).await;
    assert!(d
        .iter()
        .all(|d| d.state == pb::DeliveryState::Pending as i32));
    assert!(
        d.iter()
            .filter(|d| d.attempts >= 1)
            .all(|d| d.last_error == "connect failed"),
        "{d:?}"
    );
    assert!(
        inbox.lock().unwrap().is_empty(),
        "nothing reached the loopback receiver"
    );

    // The same name and resolver with 127.0.0.0/8 allowed: delivered, and signed with the
    // secret (which is stored sealed), so the refusal above was the policy's.
    let cfg = WebhookConfig {
        poll_ms: 20,
        ..local_webhooks()
    };
    let Some((mut app, id)) = hooked_through(backend, cfg, "receiver.example", addr.port()).await
    else {
        return;
    };
    app.suspend(MOBILE_ICCID).await.expect("suspend");
    eventually("the delivery", 30, || async {
        !inbox.lock().unwrap().is_empty()
    })
    .await;
    assert!(inbox.lock().unwrap().iter().all(|(_, _, valid)| *valid));
    assert_ne!(raw_secret(&app.db, &id).await, SECRET);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time_sqlite() {
    a_name_resolving_to_loopback_is_refused_at_connect_time(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_to_loopback_is_refused_at_connect_time_postgres() {
    a_name_resolving_to_loopback_is_refused_at_connect_time(Backend::Postgres).await;
}

async fn a_black_hole_customer_does_not_delay_another(backend: Backend) {
    let (hole, accepted) = black_hole().await;
    let (healthy, inbox) = receiver().await;
    // Black-hole requests never time out within the test: anything that waited for one would
    // never deliver the healthy customer's event.
    let cfg = WebhookConfig {
        timeout_ms: 600_000,
        poll_ms: 20,
        max_per_customer: 10,
        max_in_flight_per_webhook: 1,
        ..local_webhooks()
    };
    let Some(mut app) = app_with(backend, cfg, None).await else {
        return;
    };
    let hole_card = mobile_iccid(1);
    let healthy_card = mobile_iccid(2);
    import(
        &mut app,
        vec![
            pb::CardInput {
                customer_id: "hole".into(),
                ..card_input(&hole_card, pb::Carrier::ChinaMobile)
            },
            card_input(&healthy_card, pb::Carrier::ChinaMobile),
        ],
    )
    .await;
    let mut m = monitor(&app);
    let mut hole_ids = Vec::new();
    for i in 0..10 {
        let id = m
            .create_webhook(hook("hole", &format!("http://{hole}/h{i}")))
            .await
            .expect("create")
            .into_inner()
            .webhook
            .unwrap()
            .webhook_id;
        hole_ids.push(id);
    }
    // The cap: the 11th is refused by name and changes nothing.
    let e = m
        .create_webhook(hook("hole", &format!("http://{hole}/h10")))
        .await
        .expect_err("over the cap");
    assert_eq!(e.code(), Code::ResourceExhausted);
    assert!(e.message().contains("webhooks.max_per_customer"), "{e:?}");
    let count = |c: &str| {
        let c = c.to_string();
        let mut m = m.clone();
        async move {
            m.list_webhooks(pb::ListWebhooksRequest {})
                .await
                .expect("list")
                .into_inner()
                .webhooks
                .iter()
                .filter(|w| w.customer_id == c)
                .count()
        }
    };
    assert_eq!(count("hole").await, 10);
    let healthy_id = m
        .create_webhook(hook("acme", &format!("http://{healthy}/ok")))
        .await
        .expect("another customer is not capped by the first")
        .into_inner()
        .webhook
        .unwrap()
        .webhook_id;

    // Two events for every black-hole webhook: one in flight each (the cap), one waiting.
    app.suspend(&hole_card).await.expect("suspend");
    app.cards
        .resume_card(pb::ResumeCardRequest {
            iccid: hole_card.clone(),
            ..Default::default()
        })
        .await
        .expect("resume");
    eventually(
        "every black-hole webhook to have a request in flight",
        30,
        || async { accepted.load(Ordering::SeqCst) >= 10 },
    )
    .await;

    // Now the healthy customer's event goes out while all of those still hang.
    app.suspend(&healthy_card).await.expect("suspend");
    eventually("the healthy delivery", 30, || async {
        !inbox.lock().unwrap().is_empty()
    })
    .await;
    eventually("the healthy delivery to be recorded", 30, || async {
        deliveries(&app, &healthy_id)
            .await
            .iter()
            .any(|d| d.state == pb::DeliveryState::Delivered as i32)
    })
    .await;
    // No black-hole attempt finished or timed out, and none of their backlog was started
    // beyond the per-webhook cap.
    for id in &hole_ids {
        let d = deliveries(&app, id).await;
        assert!(d.len() >= 2, "{id}: {d:?}");
        assert!(
            d.iter()
                .all(|d| d.state == pb::DeliveryState::Pending as i32 && d.attempts == 0),
            "{id}: {d:?}"
        );
    }
    assert_eq!(
        accepted.load(Ordering::SeqCst),
        10,
        "one in flight per webhook"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_customer_does_not_delay_another_sqlite() {
    a_black_hole_customer_does_not_delay_another(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_black_hole_customer_does_not_delay_another_postgres() {
    a_black_hole_customer_does_not_delay_another(Backend::Postgres).await;
}

crate::both_backends!(
    webhook_changes_and_refusals_are_audited,
    |app: TestApp| async move {
        let mut m = monitor(&app);
        let id = m
            .create_webhook(hook("acme", "http://127.0.0.1:9/in"))
            .await
            .expect("create")
            .into_inner()
            .webhook
            .unwrap()
            .webhook_id;
        m.create_webhook(hook("acme", "ftp://127.0.0.1/in"))
            .await
            .expect_err("bad url");
        m.retry_webhook_deliveries(pb::RetryWebhookDeliveriesRequest {
            webhook_id: id.clone(),
        })
        .await
        .expect("retry");
        m.retry_webhook_deliveries(pb::RetryWebhookDeliveriesRequest {
            webhook_id: "nope".into(),
        })
        .await
        .expect_err("bad id");
        m.delete_webhook(pb::DeleteWebhookRequest {
            webhook_id: id.clone(),
        })
        .await
        .expect("delete");
        m.delete_webhook(pb::DeleteWebhookRequest {
            webhook_id: id.clone(),
        })
        .await
        .expect_err("already deleted");

        let results = |entries: Vec<pb::AuditEntry>| {
            let mut r: Vec<String> = entries.iter().map(|e| e.result.clone()).collect();
            r.sort();
            r
        };
        let created = app.audit("CreateWebhook").await;
        assert_eq!(results(created.clone()), ["INVALID_ARGUMENT", "OK"]);
        assert!(created.iter().all(|e| e.customer_id == "acme"));
        assert!(created
            .iter()
            .any(|e| e.result == "OK" && e.detail.contains(&id)));
        assert_eq!(
            results(app.audit("RetryWebhookDeliveries").await),
            ["INVALID_ARGUMENT", "OK"]
        );
        let deleted = app.audit("DeleteWebhook").await;
        assert_eq!(results(deleted.clone()), ["NOT_FOUND", "OK"]);
        assert!(deleted
            .iter()
            .all(|e| !e.key_id.is_empty() && !e.request_id.is_empty()));
    }
);

/// The stored secret column, read past the store.
async fn raw_secret(db: &TestDb, id: &str) -> String {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("raw connection");
    let table = match &db.options.pg_schema {
        Some(s) => format!("{s}.webhooks"),
        None => "webhooks".into(),
    };
    sqlx::query(&format!("SELECT secret FROM {table} WHERE id = $1"))
        .bind(id.to_string())
        .fetch_one(&mut conn)
        .await
        .expect("raw secret")
        .try_get("secret")
        .expect("secret column")
}

async fn set_raw_secret(db: &TestDb, id: &str, secret: &str) {
    let mut conn = sqlx::AnyConnection::connect(&db.url)
        .await
        .expect("raw connection");
    let table = match &db.options.pg_schema {
        Some(s) => format!("{s}.webhooks"),
        None => "webhooks".into(),
    };
    sqlx::query(&format!("UPDATE {table} SET secret = $1 WHERE id = $2"))
        .bind(secret.to_string())
        .bind(id.to_string())
        .execute(&mut conn)
        .await
        .expect("raw update");
}

#[cfg(unix)]
fn mode(path: &std::path::Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

async fn secrets_are_sealed_at_rest(backend: Backend) {
    let Some(app) = spawn_app(backend).await else {
        return;
    };
    let id = monitor(&app)
        .create_webhook(hook("acme", "http://127.0.0.1:9/in"))
        .await
        .expect("create")
        .into_inner()
        .webhook
        .unwrap()
        .webhook_id;
    let stored = raw_secret(&app.db, &id).await;
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    assert!(!stored.contains(SECRET));

    #[cfg(unix)]
    if backend == Backend::Sqlite {
        let db = simgate::store::sqlite_file_path(&app.db.url).expect("file database");
        let with = |suffix: &str| {
            let mut p = db.clone().into_os_string();
            p.push(suffix);
            std::path::PathBuf::from(p)
        };
        for p in [db.clone(), with("-wal"), with("-shm"), with(".key")] {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }

    // A secret stored in plain text (before sealing) is sealed at the next start, and still
    // the same secret.
    set_raw_secret(&app.db, &id, SECRET).await;
    let clock = app.clock.clone();
    let db = app.stop().await;
    let app = spawn_on(db, clock).await;
    let stored = raw_secret(&app.db, &id).await;
    assert!(stored.starts_with("enc:v1:"), "{stored}");
    let key = match backend {
        Backend::Postgres => simgate::store::sealing::DataKey::from_base64(TEST_DATA_KEY).unwrap(),
        Backend::Sqlite => {
            let mut p = simgate::store::sqlite_file_path(&app.db.url)
                .unwrap()
                .into_os_string();
            p.push(".key");
            simgate::store::sealing::DataKey::from_base64(&std::fs::read_to_string(p).unwrap())
                .unwrap()
        }
    };
    assert_eq!(key.open(&id, &stored), Some(Ok(SECRET.to_string())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_sqlite() {
    secrets_are_sealed_at_rest(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_sealed_at_rest_postgres() {
    secrets_are_sealed_at_rest(Backend::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_without_a_data_key_refuses_to_start() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let clock = simgate::clock::ManualClock::new(start_time());
    let built = simgate::Server::builder()
        .database_url(db.url.clone())
        .store_options(db.options.clone())
        .clock(Arc::new(clock))
        .bootstrap_key(ADMIN_KEY)
        .build()
        .await;
    let Err(e) = built else {
        panic!("started without a data key");
    };
    assert!(e.to_string().contains("data key"), "{e}");
}
