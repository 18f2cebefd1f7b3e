//! Test harness: every test gets its own database (a temporary SQLite file, or its own
//! PostgreSQL schema when `SIMGATE_TEST_POSTGRES_URL` is set), its own server on a random port,
//! a controllable clock and generated gRPC clients.

use std::io::Write;
use std::sync::{Arc, Once};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use simgate::clock::ManualClock;
use simgate::pb;
use simgate::pb::access_service_client::AccessServiceClient;
use simgate::pb::card_service_client::CardServiceClient;
use simgate::pb::operation_service_client::OperationServiceClient;
use simgate::pb::simulator_service_client::SimulatorServiceClient;
use simgate::store::{Store, StoreOptions};
use simgate::Server;
use tokio::sync::oneshot;
use tonic::transport::Channel;

pub const POSTGRES_ENV: &str = "SIMGATE_TEST_POSTGRES_URL";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database that exists for one test and is removed afterwards, even if the test fails.
pub struct TestDb {
    pub url: String,
    pub options: StoreOptions,
    _dir: Option<tempfile::TempDir>,
    pg_schema: Option<(String, String)>,
}

impl TestDb {
    /// None when the backend is PostgreSQL and no URL is configured: the caller skips.
    pub fn new(backend: Backend) -> Option<TestDb> {
        match backend {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("temp dir");
                let url = format!("sqlite://{}", dir.path().join("simgate.db").display());
                Some(TestDb {
                    url,
                    options: StoreOptions::default(),
                    _dir: Some(dir),
                    pg_schema: None,
                })
            }
            Backend::Postgres => {
                let url = match std::env::var(POSTGRES_ENV) {
                    Ok(u) if !u.is_empty() => u,
                    _ => {
                        announce_postgres_skip();
                        return None;
                    }
                };
                let schema = format!("t_{}", uuid::Uuid::new_v4().simple());
                Some(TestDb {
                    options: StoreOptions {
                        pg_schema: Some(schema.clone()),
                        max_connections: Some(8),
                    },
                    pg_schema: Some((url.clone(), schema)),
                    url,
                    _dir: None,
                })
            }
        }
    }

    pub async fn store(&self) -> Store {
        Store::connect(&self.url, self.options.clone())
            .await
            .expect("connect test store")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((url, schema)) = self.pg_schema.take() {
            // Drop runs inside the test's runtime, which cannot block on async work: clean up
            // on a thread with a runtime of its own.
            let _ = std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("cleanup runtime");
                if let Err(e) = rt.block_on(Store::drop_schema(&url, &schema)) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "could not drop test schema {schema}: {e}"
                    );
                }
            })
            .join();
        }
    }
}

/// Said once per test binary, straight to stderr so that cargo's output capture does not hide it.
fn announce_postgres_skip() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "NOTE: PostgreSQL tests SKIPPED (they pass without checking anything): set {POSTGRES_ENV}=postgres://postgres@127.0.0.1:5432/test to run them; .ci/run does."
        );
    });
}

/// 2026-11-25 10:00 in Shanghai: a fixed "now" so that cycles and expiries are predictable.
pub fn start_time() -> DateTime<Utc> {
    Shanghai
        .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
        .unwrap()
        .with_timezone(&Utc)
}

/// The reseller-admin key every test server is started with (as SIMGATE_BOOTSTRAP_KEY would).
pub const ADMIN_KEY: &str = "sgk_00000000000000a1_test-admin-secret-0123456789abcdefghijkl";

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(pub tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(key: &str) -> Bearer {
        Bearer(format!("Bearer {key}").parse().expect("ascii key"))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

pub fn cards_client(channel: &Channel, key: &str) -> CardServiceClient<Authed> {
    CardServiceClient::with_interceptor(channel.clone(), Bearer::new(key))
        .max_encoding_message_size(32 << 20)
}

pub fn access_client(channel: &Channel, key: &str) -> AccessServiceClient<Authed> {
    AccessServiceClient::with_interceptor(channel.clone(), Bearer::new(key))
}

pub fn operations_client(channel: &Channel, key: &str) -> OperationServiceClient<Authed> {
    OperationServiceClient::with_interceptor(channel.clone(), Bearer::new(key))
        .max_encoding_message_size(32 << 20)
}

pub fn accounts_client(
    channel: &Channel,
    key: &str,
) -> simgate::pb::carrier_account_service_client::CarrierAccountServiceClient<Authed> {
    simgate::pb::carrier_account_service_client::CarrierAccountServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(key),
    )
}

pub fn monitoring_client(
    channel: &Channel,
    key: &str,
) -> simgate::pb::monitoring_service_client::MonitoringServiceClient<Authed> {
    simgate::pb::monitoring_service_client::MonitoringServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(key),
    )
}

pub fn sim_client(channel: &Channel, key: &str) -> SimulatorServiceClient<Authed> {
    SimulatorServiceClient::with_interceptor(channel.clone(), Bearer::new(key))
}

pub struct TestApp {
    pub cards: CardServiceClient<Authed>,
    pub sim: SimulatorServiceClient<Authed>,
    pub access: AccessServiceClient<Authed>,
    pub channel: Channel,
    pub addr: std::net::SocketAddr,
    pub clock: ManualClock,
    pub store: Store,
    /// The service behind the server, for what only a process can do (reconciliation).
    pub service: simgate::service::CardService,
    pub db: Arc<TestDb>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
}

impl TestApp {
    /// Traffic of `bytes` on the card at its carrier (the simulator's RecordUsage); simgate
    /// reads it at once and answers with the card as it now stands.
    pub async fn use_data(&mut self, carrier: pb::Carrier, iccid: &str, bytes: u64) -> pb::Card {
        self.sim
            .record_usage(pb::RecordUsageRequest {
                account_id: String::new(),
                carrier: carrier as i32,
                iccid: iccid.into(),
                bytes,
            })
            .await
            .expect("record usage")
            .into_inner()
            .card
            .expect("simgate knows the card")
    }

    /// RechargeCard of `fen` without a request id.
    pub async fn recharge(&mut self, iccid: &str, fen: i64) -> pb::RechargeResponse {
        self.cards
            .recharge(pb::RechargeRequest {
                iccid: iccid.into(),
                amount_fen: fen,
                ..Default::default()
            })
            .await
            .expect("recharge")
            .into_inner()
    }

    /// SuspendCard without a request id: the card, or the refusal.
    pub async fn suspend(&mut self, iccid: &str) -> Result<pb::Card, tonic::Status> {
        self.cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.into(),
                ..Default::default()
            })
            .await
            .map(|r| r.into_inner())
    }

    /// The newest 100 audit entries, of `method` (`""`: of every method), as the admin sees them.
    pub async fn audit(&self, method: &str) -> Vec<pb::AuditEntry> {
        access_client(&self.channel, ADMIN_KEY)
            .list_audit_entries(pb::ListAuditEntriesRequest {
                method: method.into(),
                page_size: 100,
                ..Default::default()
            })
            .await
            .expect("ListAuditEntries")
            .into_inner()
            .entries
    }

    /// GetOperation of `id` with its counts and no results.
    pub async fn operation(&self, id: &str) -> pb::Operation {
        operation(&self.channel, id).await
    }

    /// Stops the server and waits for it, so that a restart can reuse the database.
    pub async fn stop(mut self) -> Arc<TestDb> {
        if let Some(h) = self.begin_stop() {
            let _ = h.await;
        }
        self.db.clone()
    }

    /// Signals the server to shut down and hands back its task, to watch the shutdown.
    pub fn begin_stop(&mut self) -> Option<tokio::task::JoinHandle<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.server.take()
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

pub async fn spawn_app(backend: Backend) -> Option<TestApp> {
    let db = Arc::new(TestDb::new(backend)?);
    Some(spawn_on(db, ManualClock::new(start_time())).await)
}

/// Waits (up to `seconds`) until `check` holds, looking every 50 ms; panics naming `what`.
pub async fn eventually<F, Fut>(what: &str, seconds: u64, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    for _ in 0..seconds * 20 {
        if check().await {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A `simgate serve` child process, killed when dropped: a failing assertion must not leave a
/// server running (and eating the CPU of every later test). It listens on a port of the
/// kernel's choosing (`--listen 127.0.0.1:0`) and prints the one it bound (on stderr), so no other process
/// can take the port between a check and the bind, and a test cannot reach another test's
/// server by mistake. Its stdout and stderr go to files: a server that exits at start says why.
pub struct ServeProcess {
    child: std::process::Child,
    out: tempfile::NamedTempFile,
    log: tempfile::NamedTempFile,
}

impl ServeProcess {
    /// `simgate serve --listen 127.0.0.1:0` with the test's bootstrap key, metrics off and
    /// warnings only; the caller adds its database, config and environment.
    pub fn command() -> std::process::Command {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"));
        cmd.args(["serve", "--listen", "127.0.0.1:0"])
            .env("SIMGATE_BOOTSTRAP_KEY", ADMIN_KEY)
            .env("SIMGATE_METRICS__ENABLED", "false")
            // No repeat windows unless a test asks, as in `test_server`.
            .env("SIMGATE_JOURNAL__REPEAT_WINDOW_S", "0")
            .env("RUST_LOG", "warn");
        cmd
    }

    /// Starts `cmd` (from [`ServeProcess::command`]) and connects once it serves.
    pub async fn up(mut cmd: std::process::Command) -> (ServeProcess, Channel) {
        let out = tempfile::NamedTempFile::new().expect("server output file");
        let log = tempfile::NamedTempFile::new().expect("server log file");
        let child = cmd
            .stdout(out.reopen().expect("server output file"))
            .stderr(log.reopen().expect("server log file"))
            .spawn()
            .expect("start simgate serve");
        let mut server = ServeProcess { child, out, log };
        match server.connect().await {
            Ok(channel) => (server, channel),
            Err(why) => panic!("simgate serve did not come up: {why}"),
        }
    }

    /// `Err` carries the log if the server exited first, or if it was not serving after a
    /// generous guard against a hang (a debug build's first start on a loaded machine runs
    /// every migration).
    async fn connect(&mut self) -> Result<Channel, String> {
        const GUARD: std::time::Duration = std::time::Duration::from_secs(180);
        let deadline = std::time::Instant::now() + GUARD;
        loop {
            let err = self.stderr();
            let addr = err
                .lines()
                .find_map(|l| l.strip_prefix("simgate listening on "));
            if let Some(addr) = addr {
                // The socket is bound (and accepts connections) before migrations and the
                // bootstrap key are done: up means health answers SERVING.
                let endpoint = Channel::from_shared(format!("http://{addr}")).unwrap();
                if let Ok(ch) = endpoint.connect().await {
                    let serving = tonic_health::pb::health_client::HealthClient::new(ch.clone())
                        .check(tonic_health::pb::HealthCheckRequest::default())
                        .await
                        .is_ok_and(|r| {
                            r.into_inner().status()
                                == tonic_health::pb::health_check_response::ServingStatus::Serving
                        });
                    if serving {
                        return Ok(ch);
                    }
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("exited with {status}: {}", self.stderr()));
            }
            if std::time::Instant::now() > deadline {
                return Err(format!("not serving after {GUARD:?}: {}", self.stderr()));
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// What the server printed so far.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(self.out.path()).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Whether it still runs, and everything it printed: for a failing test's message.
    pub fn report(&mut self) -> String {
        let status = match self.child.try_wait() {
            Ok(Some(s)) => format!("exited with {s}"),
            Ok(None) => "still running".to_string(),
            Err(e) => format!("unknown ({e})"),
        };
        format!(
            "{status}\nstdout:\n{}\nstderr:\n{}",
            self.stdout(),
            self.stderr()
        )
    }

    /// SIGTERM, the way an orchestrator stops it, and its exit status once it has stopped.
    pub async fn terminate(&mut self) -> std::process::ExitStatus {
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(sent.success());
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "server did not stop on SIGTERM"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }

    /// `kill -9`, and waits for the process to be gone.
    pub fn kill(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Set to `1` for the long drills at full size: the 100,000-card crash, the 10,000-card storm,
/// and the whole end-to-end suite a second time over HTTP (`.ci/run`'s `long` stage sets it).
/// Without it the same tests run at a size that still proves their point, so that the README's
/// `cargo test` finishes in minutes.
pub const LONG_DRILLS_ENV: &str = "SIMGATE_TEST_LONG_DRILLS";

pub fn long_drills() -> bool {
    std::env::var(LONG_DRILLS_ENV).is_ok_and(|v| v == "1")
}

/// `fast` in the default suite, `long` in the long drills.
pub fn drill_size(fast: u64, long: u64) -> u64 {
    if long_drills() {
        long
    } else {
        fast
    }
}

/// Set to `http` to run every end-to-end test through the real carrier adapters and the wire
/// simulators instead of function calls (`.ci/run` does both).
pub const TRANSPORT_ENV: &str = "SIMGATE_TEST_CARRIER_TRANSPORT";

/// A server as every test starts it: the test's database and clock, and the admin key.
pub fn test_server(db: &TestDb, clock: &ManualClock) -> simgate::server::ServerBuilder {
    let transport = match std::env::var(TRANSPORT_ENV).as_deref() {
        Ok("http") => simgate::simulate::SimulatorTransport::Http,
        Ok("in_process") | Err(_) => simgate::simulate::SimulatorTransport::InProcess,
        Ok(other) => panic!("{TRANSPORT_ENV}={other}: expected http or in_process"),
    };
    let builder = Server::builder()
        .database_url(db.url.clone())
        .store_options(db.options.clone())
        .clock(Arc::new(clock.clone()))
        .bootstrap_key(ADMIN_KEY)
        .simulator_transport(transport)
        // No repeat windows unless a test asks for them: most tests stop and restore a card in
        // one breath (tests/api/orders.rs is about windows).
        .repeat_window_s(Some(0))
        .webhooks(local_webhooks());
    with_test_data_key(builder, db)
}

/// The data key of every PostgreSQL test server (PostgreSQL has no default key; SQLite tests
/// get their generated `<db>.key`).
pub const TEST_DATA_KEY: &str = "dGVzdC1kYXRhLWtleS0wMTIzNDU2Nzg5YWJjZGVmMDE=";

pub fn with_test_data_key(
    builder: simgate::server::ServerBuilder,
    db: &TestDb,
) -> simgate::server::ServerBuilder {
    if db.options.pg_schema.is_some() {
        builder.data_key(
            simgate::store::sealing::DataKey::from_base64(TEST_DATA_KEY).expect("test data key"),
        )
    } else {
        builder
    }
}

/// Webhook settings of the test servers: receivers run on loopback over plain http, so the
/// allow-list opens 127.0.0.0/8 (the SSRF tests start servers without it). The access matrix
/// creates a webhook per role and RPC for one customer, so the per-customer cap is raised here;
/// `webhooks::a_black_hole_customer_does_not_delay_another` tests the cap itself.
pub fn local_webhooks() -> simgate::service::webhooks::WebhookConfig {
    simgate::service::webhooks::WebhookConfig {
        allow_http: true,
        allow_hosts: vec!["127.0.0.0/8".into()],
        max_per_customer: 1000,
        ..Default::default()
    }
}

pub async fn spawn_on(db: Arc<TestDb>, clock: ManualClock) -> TestApp {
    let app = test_server(&db, &clock)
        .build()
        .await
        .expect("build server");
    serve_built(app, db, clock).await
}

/// Serves a built server on a random port until the returned TestApp stops or is dropped.
/// A server built from `builder` with the `[[accounts]]` of `accounts_toml`, serving on `db`
/// and `clock`.
pub async fn serve_accounts(
    builder: simgate::server::ServerBuilder,
    accounts_toml: &str,
    db: Arc<TestDb>,
    clock: ManualClock,
) -> TestApp {
    let entries =
        simgate::carrier::account::entries_from_toml(accounts_toml).expect("accounts parse");
    let app = builder
        .accounts(entries)
        .build()
        .await
        .expect("build server");
    serve_built(app, db, clock).await
}

pub async fn serve_built(
    app: simgate::server::App,
    db: Arc<TestDb>,
    clock: ManualClock,
) -> TestApp {
    let store = app.store().clone();
    let service = app.service().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.serve(listener, async {
            let _ = rx.await;
        })
        .await
        .expect("serve");
    });
    let channel = Channel::from_shared(format!("http://{addr}"))
        .expect("uri")
        .connect()
        .await
        .expect("connect");
    TestApp {
        cards: cards_client(&channel, ADMIN_KEY),
        sim: sim_client(&channel, ADMIN_KEY),
        access: access_client(&channel, ADMIN_KEY),
        channel,
        addr,
        clock,
        store,
        service,
        db,
        shutdown: Some(tx),
        server: Some(server),
    }
}

/// Runs an async test body against SQLite and against PostgreSQL, as two tests.
#[macro_export]
macro_rules! both_backends {
    ($name:ident, $body:expr) => {
        mod $name {
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                if let Some(app) =
                    $crate::helpers::spawn_app($crate::helpers::Backend::Sqlite).await
                {
                    ($body)(app).await;
                }
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(app) =
                    $crate::helpers::spawn_app($crate::helpers::Backend::Postgres).await
                {
                    ($body)(app).await;
                }
            }
        }
    };
}

pub const MOBILE_ICCID: &str = "898602D9981700140197";
pub const UNICOM_ICCID: &str = "89860117750006390067";
pub const TELECOM_ICCID: &str = "8986031630200230821";

/// A valid import row: plan valid for 200 days, 1 GiB a month, 12 yuan, auto-suspend on.
pub fn card_input(iccid: &str, carrier: pb::Carrier) -> pb::CardInput {
    pb::CardInput {
        account_id: String::new(),
        iccid: iccid.to_string(),
        msisdn: String::new(),
        imsi: String::new(),
        carrier: carrier as i32,
        customer_id: "acme".into(),
        plan: Some(pb::Plan {
            monthly_quota_bytes: 1 << 30,
            monthly_fee_fen: 1200,
            validity_end: Some(ts(start_time() + chrono::Duration::days(200))),
            auto_suspend_over_quota: true,
        }),
        real_name: pb::RealNameStatus::Verified as i32,
        stage: pb::LifecycleStage::Billing as i32,
        balance_fen: 0,
        cycle_usage_bytes: 0,
    }
}

/// A 20-digit ICCID of the issuer `issuer`, numbered `n`, with a correct Luhn check digit.
pub fn iccid_with_luhn(issuer: &str, n: u64) -> String {
    let body = format!("8986{issuer}{n:013}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|s| simgate::domain::ids::luhn_valid(s))
        .expect("one check digit fits")
}

pub fn unicom_iccid(n: u64) -> String {
    iccid_with_luhn("01", n)
}

pub fn mobile_iccid(n: u64) -> String {
    iccid_with_luhn("00", n)
}

pub fn telecom_iccid(n: u64) -> String {
    iccid_with_luhn("03", n)
}

pub fn ts(t: DateTime<Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: 0,
    }
}

pub async fn import(app: &mut TestApp, cards: Vec<pb::CardInput>) -> pb::ImportCardsResponse {
    app.cards
        .import_cards(pb::ImportCardsRequest {
            cards,
            ..Default::default()
        })
        .await
        .expect("import")
        .into_inner()
}

pub async fn get(app: &mut TestApp, iccid: &str) -> pb::Card {
    app.cards
        .get_card(pb::GetCardRequest {
            iccid: iccid.into(),
        })
        .await
        .expect("get card")
        .into_inner()
}

pub async fn carrier_state(
    app: &mut TestApp,
    carrier: pb::Carrier,
    iccid: &str,
) -> pb::CarrierServiceState {
    let c = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: String::new(),
            carrier: carrier as i32,
            iccid: iccid.into(),
        })
        .await
        .expect("carrier card")
        .into_inner();
    pb::CarrierServiceState::try_from(c.state).expect("state")
}

/// The ErrorInfo reason and the BadRequest fields of a failed call.
pub fn details(status: &tonic::Status) -> (String, Vec<String>) {
    use tonic_types::StatusExt;
    let d = status.get_error_details();
    let reason = d.error_info().map(|i| i.reason.clone()).unwrap_or_default();
    let fields = d
        .bad_request()
        .map(|b| b.field_violations.iter().map(|v| v.field.clone()).collect())
        .unwrap_or_default();
    (reason, fields)
}

pub fn status_of(card: &pb::Card) -> pb::CardStatus {
    pb::CardStatus::try_from(card.status).expect("status")
}

pub fn reasons_of(card: &pb::Card) -> Vec<pb::StopReason> {
    card.stop_reasons
        .iter()
        .map(|r| pb::StopReason::try_from(*r).expect("reason"))
        .collect()
}

/// A server whose carriers have these account limits and breaker.
pub async fn spawn_with_limits(limits: simgate::carrier::guard::CarrierLimits) -> TestApp {
    let db = Arc::new(TestDb::new(Backend::Sqlite).unwrap());
    let clock = ManualClock::new(start_time());
    let mut builder = test_server(&db, &clock);
    for id in simgate::domain::CarrierId::ALL {
        builder = builder.carrier_limits(id, limits);
    }
    let app = builder.build().await.unwrap();
    serve_built(app, db, clock).await
}

/// Random SuspendCard and ResumeCard calls on `iccids`, `calls` per client, all clients at once.
/// Lost races (ABORTED), pending changes and refused resumes (FAILED_PRECONDITION) and unknown
/// outcomes (UNAVAILABLE) are expected; anything else fails the test.
pub async fn random_suspends_and_resumes(
    clients: Vec<CardServiceClient<Authed>>,
    iccids: &[String],
    calls: usize,
    seed: u64,
) {
    let mut workers = Vec::new();
    for (w, mut c) in clients.into_iter().enumerate() {
        let iccids = iccids.to_vec();
        workers.push(tokio::spawn(async move {
            let mut rng = fastrand::Rng::with_seed(seed + w as u64);
            for n in 0..calls {
                let iccid = iccids[rng.usize(..iccids.len())].clone();
                let request_id = format!("{seed}-w{w}-{n}");
                let r = if rng.bool() {
                    c.suspend_card(pb::SuspendCardRequest { iccid, request_id })
                        .await
                        .map(|_| ())
                } else {
                    c.resume_card(pb::ResumeCardRequest { iccid, request_id })
                        .await
                        .map(|_| ())
                };
                if let Err(e) = r {
                    assert!(
                        matches!(
                            e.code(),
                            tonic::Code::Aborted
                                | tonic::Code::FailedPrecondition
                                | tonic::Code::Unavailable
                        ),
                        "{e:?}"
                    );
                }
            }
        }));
    }
    for w in workers {
        w.await.expect("worker");
    }
}

/// Checks, until `stop` turns true, that no card ever has two open carrier intents; returns how
/// many checks it made.
pub fn watch_one_open_intent_per_card(
    store: Store,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<u32> {
    tokio::spawn(async move {
        let mut checks = 0;
        while !stop.load(std::sync::atomic::Ordering::Relaxed) {
            let twice = store
                .cards_with_several_open_intents()
                .await
                .expect("check");
            assert!(twice.is_empty(), "two open intents on {twice:?}");
            checks += 1;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        checks
    })
}

/// For every card: the carrier's change count equals simgate's history of stops and restores,
/// the carrier's state is the one the card implies, and nothing is pending. Returns the number
/// of changes in all.
pub async fn assert_carrier_matches_history(
    store: &Store,
    carrier: simgate::domain::CarrierId,
    iccids: &[String],
) -> usize {
    let mut changed = 0;
    for iccid in iccids {
        let iccid = simgate::domain::Iccid::parse_any(iccid).expect("iccid");
        let at_carrier = store
            .sim_card(carrier.as_str(), &iccid, 0)
            .await
            .expect("read")
            .expect("known to the carrier");
        let history = store
            .card_events(&iccid)
            .await
            .expect("events")
            .iter()
            .filter(|e| e.kind == "card.suspended" || e.kind == "card.resumed")
            .count();
        assert_eq!(
            at_carrier.changes as usize, history,
            "{iccid}: carrier changes = history"
        );
        let card = store.get_card(&iccid).await.expect("read").expect("card");
        let expected = if card.is_online() {
            simgate::carrier::ServiceState::Active
        } else {
            simgate::carrier::ServiceState::Stopped
        };
        assert_eq!(at_carrier.state, expected, "{iccid}: store = carrier");
        assert_eq!(card.pending, None, "{iccid}");
        changed += history;
    }
    changed
}

/// GetOperation of `id` (counts, no results) as the admin, on any server's channel.
pub async fn operation(channel: &Channel, id: &str) -> pb::Operation {
    operations_client(channel, ADMIN_KEY)
        .get_operation(pb::GetOperationRequest {
            id: id.into(),
            ..Default::default()
        })
        .await
        .expect("GetOperation")
        .into_inner()
}

/// Brings `db` to the migrations released before `before` (e.g. "0004": up to 0003), exactly
/// as shipped, and runs `sql` there: a database of an older release, which the next
/// `Store::connect` upgrades in place.
pub async fn db_at_migration(db: &TestDb, backend: Backend, before: &str, sql: &[&str]) {
    use sqlx::Executor;
    let dir_name = match backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    let src = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/store/migrations")
        .join(dir_name);
    let old = tempfile::tempdir().expect("temp dir");
    for entry in std::fs::read_dir(&src).expect("migrations") {
        let path = entry.expect("entry").path();
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        if name.as_str() < before {
            std::fs::copy(&path, old.path().join(&name)).expect("copy migration");
        }
    }
    let migrator = sqlx::migrate::Migrator::new(old.path())
        .await
        .expect("old migrations");
    match backend {
        Backend::Sqlite => {
            let opts: sqlx::sqlite::SqliteConnectOptions = db.url.parse().expect("sqlite url");
            let pool = sqlx::sqlite::SqlitePoolOptions::new()
                .max_connections(1)
                .connect_with(opts.create_if_missing(true))
                .await
                .expect("sqlite");
            migrator.run(&pool).await.expect("old migrations run");
            for q in sql {
                pool.execute(*q).await.expect("old data");
            }
            pool.close().await;
        }
        Backend::Postgres => {
            let schema = db.options.pg_schema.clone().expect("schema");
            let admin = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .connect(&db.url)
                .await
                .expect("postgres");
            admin
                .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await
                .expect("schema");
            admin.close().await;
            let pool = sqlx::postgres::PgPoolOptions::new()
                .max_connections(1)
                .after_connect(move |conn, _| {
                    let schema = schema.clone();
                    Box::pin(async move {
                        conn.execute(format!("SET search_path TO {schema}").as_str())
                            .await
                            .map(|_| ())
                    })
                })
                .connect(&db.url)
                .await
                .expect("postgres");
            migrator.run(&pool).await.expect("old migrations run");
            for q in sql {
                pool.execute(*q).await.expect("old data");
            }
            pool.close().await;
        }
    }
}

/// A PostgreSQL database of its own for one test (the server processes cannot be pointed at a
/// schema), dropped afterwards even if the test fails.
pub struct OwnDatabase {
    admin_url: String,
    name: String,
    pub url: String,
}

impl OwnDatabase {
    pub async fn create(base_url: &str) -> OwnDatabase {
        let name = format!("simgate_t_{}", uuid::Uuid::new_v4().simple());
        let admin = sqlx::PgPool::connect(base_url).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let mut url = url::Url::parse(base_url).unwrap();
        url.set_path(&format!("/{name}"));
        OwnDatabase {
            admin_url: base_url.to_string(),
            name,
            url: url.to_string(),
        }
    }
}

impl Drop for OwnDatabase {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

/// A child process killed (and reaped) when dropped.
pub struct Killed(pub std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// GET a simulator control (`/_simgate/...`) and read its JSON answer.
pub async fn sim_get(url: &str) -> serde_json::Value {
    let resp = reqwest::get(url)
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    resp.json()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
}

/// POST JSON to a simulator control (`/_simgate/...`); it must answer 2xx.
pub async fn sim_post(url: &str, body: &serde_json::Value) {
    let resp = reqwest::Client::new()
        .post(url)
        .json(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("POST {url}: {e}"));
    let status = resp.status();
    assert!(
        status.is_success(),
        "POST {url}: {status} {:?}",
        resp.text().await
    );
}

/// What a wire simulator received and answered: for each request, the part of its URI a test
/// reads (its path or its query string) and the body of the answer, in order.
pub type Exchanges = Arc<std::sync::Mutex<Vec<(String, String)>>>;

/// `app` with every exchange recorded into `log`, each request named by `name` of its URI.
pub fn recording(
    app: axum::Router,
    log: Exchanges,
    name: fn(&axum::http::Uri) -> String,
) -> axum::Router {
    app.layer(axum::middleware::from_fn(
        move |req: axum::extract::Request, next: axum::middleware::Next| {
            let log = log.clone();
            async move {
                let key = name(req.uri());
                let resp = next.run(req).await;
                let (parts, body) = resp.into_parts();
                let bytes = axum::body::to_bytes(body, 1 << 20)
                    .await
                    .expect("the simulator's answer");
                log.lock()
                    .expect("exchanges")
                    .push((key, String::from_utf8_lossy(&bytes).into_owned()));
                axum::response::Response::from_parts(parts, axum::body::Body::from(bytes))
            }
        },
    ))
}

/// `e` is a deferral with `code` and no retry time, whose message names a repeat window exactly
/// when the account's `repeat_window_code` was set (`named`); else an unrecognised refusal.
pub fn assert_deferred(e: &simgate::carrier::CarrierError, code: &str, named: bool) {
    match e {
        simgate::carrier::CarrierError::Deferred {
            code: got,
            message,
            retry_after: None,
        } => {
            assert_eq!(got, code);
            assert_eq!(message.contains("repeat window"), named, "{message}");
        }
        other => panic!("expected a deferral with {code}: {other:?}"),
    }
}

/// The fixture files of `platform` (`tests/fixtures/carrier-wire/<platform>/` and its
/// `derived/`), by their path in the folder, sorted; INDEX.md left out.
pub fn fixture_files(platform: &str) -> Vec<String> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/carrier-wire")
        .join(platform);
    let mut files = Vec::new();
    for sub in ["", "derived"] {
        let at = dir.join(sub);
        for entry in std::fs::read_dir(&at).unwrap_or_else(|e| panic!("{}: {e}", at.display())) {
            let entry = entry.expect("dir entry");
            if entry.file_type().expect("file type").is_file() {
                let name = entry.file_name().to_string_lossy().into_owned();
                if name != "INDEX.md" {
                    files.push(if sub.is_empty() {
                        name
                    } else {
                        format!("{sub}/{name}")
                    });
                }
            }
        }
    }
    files.sort();
    files
}
