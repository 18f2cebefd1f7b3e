//! What every benchmark shares: fresh databases (and their removal), the generated cards, an
//! in-process server, the authenticated gRPC client, the raw sqlx pool the ceilings use, and the
//! closed-loop load generator with its latency histogram.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Asia::Shanghai;
use hdrhistogram::Histogram;
use simgate::domain::rules::NewCard;
use simgate::domain::{CarrierId, Fen, Iccid, LifecycleStage, Msisdn, Plan, RealNameStatus};
use simgate::pb;
use simgate::store::{Store, StoreOptions};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor};
use tonic::transport::Channel;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Res<T> = Result<T, BoxError>;

/// The reseller-admin key every in-process or child server is started with, so that the client
/// authenticates exactly like a real one (the server checks it on every call).
pub const BENCH_KEY: &str = "sgk_00000000000000b1_bench-admin-secret-0123456789abcdefghij";

/// The per-key limit the read and write benchmarks run under. The default (1,000 requests a
/// second) would be the bound of the measurement instead of simgate's work.
pub const UNLIMITED_RATE: u32 = 10_000_000;

/// The engine's background interval for served benchmarks: long enough that it never runs
/// during a measurement (a rollover is timed by calling the engine directly).
pub const IDLE_ENGINE_MS: u64 = 24 * 3600 * 1000;

/// 2026-11-25 10:00 in Shanghai, the fixed "now" of the in-process benchmarks.
pub fn start_time() -> Res<DateTime<Utc>> {
    Ok(Shanghai
        .with_ymd_and_hms(2026, 11, 25, 10, 0, 0)
        .single()
        .ok_or("start time")?
        .with_timezone(&Utc))
}

/// A China Mobile ICCID numbered `n`, with a valid Luhn digit (so import adds no warning).
pub fn iccid(n: u64) -> String {
    let body = format!("898600{n:013}");
    (0..10)
        .map(|d| format!("{body}{d}"))
        .find(|s| simgate::domain::ids::luhn_valid(s))
        .unwrap_or(body)
}

/// A 13-digit IoT MSISDN numbered `n` (unique per card, as an import requires).
pub fn msisdn(n: u64) -> String {
    format!("1064{n:09}")
}

/// Every generated card's monthly quota.
pub const QUOTA: u64 = 1 << 30;
const FEE: i64 = 1200;
const BALANCE: i64 = 100_000;

/// Card `n` as the domain sees an import row: China Mobile, verified, billing, funded.
pub fn new_card(n: u64, customer: &str, now: DateTime<Utc>) -> NewCard {
    NewCard {
        iccid: Iccid::from_trusted(iccid(n)),
        msisdn: Some(Msisdn::from_trusted(msisdn(n))),
        imsi: None,
        carrier: CarrierId::Mobile,
        account: None,
        customer_id: customer.to_string(),
        plan: Plan {
            monthly_quota_bytes: QUOTA,
            monthly_fee: Fen(FEE),
            validity_end: now + chrono::Duration::days(365),
            auto_suspend_over_quota: true,
        },
        real_name: RealNameStatus::Verified,
        stage: LifecycleStage::Billing,
        balance: Fen(BALANCE),
        cycle_usage_bytes: 0,
        warnings: vec![],
    }
}

/// The same card as an `ImportCards` row.
pub fn card_input(n: u64, customer: &str, now: DateTime<Utc>) -> pb::CardInput {
    let end = now + chrono::Duration::days(365);
    pb::CardInput {
        iccid: iccid(n),
        msisdn: msisdn(n),
        imsi: String::new(),
        carrier: pb::Carrier::ChinaMobile as i32,
        account_id: String::new(),
        customer_id: customer.to_string(),
        plan: Some(pb::Plan {
            monthly_quota_bytes: QUOTA,
            monthly_fee_fen: FEE,
            validity_end: Some(prost_types::Timestamp {
                seconds: end.timestamp(),
                nanos: 0,
            }),
            auto_suspend_over_quota: true,
        }),
        real_name: pb::RealNameStatus::Verified as i32,
        stage: pb::LifecycleStage::Billing as i32,
        balance_fen: BALANCE,
        cycle_usage_bytes: 0,
    }
}

/// A new directory of this run under the system's temporary directory.
pub fn tempdir() -> Res<PathBuf> {
    let dir = std::env::temp_dir().join(format!("simgate-bench-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A database that exists for one measurement: a new SQLite file in a temporary directory, or a
/// new schema in the given PostgreSQL database. [`Db::remove`] deletes it.
pub struct Db {
    pub url: String,
    pub options: StoreOptions,
    pub schema: Option<String>,
    dir: PathBuf,
}

impl Db {
    /// `database_url`: None for SQLite, or a postgres:// URL. A sqlite:// URL is refused because
    /// the benchmarks need a database of their own that they may delete.
    pub fn fresh(database_url: Option<&str>) -> Res<Db> {
        let dir = tempdir()?;
        match database_url {
            Some(u) if u.starts_with("postgres") => {
                let schema = format!("bench_{}", uuid::Uuid::new_v4().simple());
                Ok(Db {
                    url: u.to_string(),
                    options: StoreOptions {
                        pg_schema: Some(schema.clone()),
                        max_connections: None,
                    },
                    schema: Some(schema),
                    dir,
                })
            }
            Some(u) => Err(format!(
                "--database-url {u}: only postgres:// URLs are taken (SQLite is a fresh temporary file)"
            )
            .into()),
            None => Ok(Db {
                url: format!("sqlite://{}/bench.db", dir.display()),
                options: StoreOptions::default(),
                schema: None,
                dir,
            }),
        }
    }

    pub fn dir(&self) -> &std::path::Path {
        &self.dir
    }

    pub fn backend(&self) -> &'static str {
        if self.schema.is_some() {
            "PostgreSQL"
        } else {
            "SQLite"
        }
    }

    /// The URL a separate `simgate serve` process needs to land in this database: PostgreSQL's
    /// `options` parameter sets the schema for every connection of its pool.
    pub fn url_for_child(&self) -> String {
        match &self.schema {
            Some(s) => {
                let sep = if self.url.contains('?') { '&' } else { '?' };
                format!("{}{sep}options=-c%20search_path%3D{s}", self.url)
            }
            None => self.url.clone(),
        }
    }

    /// Creates the schema and applies simgate's migrations, as the server's first start would.
    pub async fn migrate(&self) -> Res<()> {
        Store::connect(&self.url, self.options.clone())
            .await?
            .close()
            .await;
        Ok(())
    }

    /// A pool for the ceilings: plain sqlx with the connection count and settings the store
    /// uses, so that the only difference left is simgate's own work.
    pub async fn raw_pool(&self) -> Res<AnyPool> {
        sqlx::any::install_default_drivers();
        let schema = self.schema.clone();
        let sqlite = schema.is_none();
        let url = if sqlite {
            format!("{}?mode=rwc", self.url)
        } else {
            self.url.clone()
        };
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 8 } else { 16 })
            .test_before_acquire(!sqlite)
            .after_connect(move |conn, _| {
                let schema = schema.clone();
                Box::pin(async move {
                    match schema {
                        None => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 30000").await?;
                        }
                        Some(s) => {
                            conn.execute(format!("SET search_path TO {s}").as_str())
                                .await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        Ok(pool)
    }

    pub async fn remove(self) -> Res<()> {
        if let Some(schema) = &self.schema {
            Store::drop_schema(&self.url, schema).await?;
        }
        std::fs::remove_dir_all(&self.dir).ok();
        Ok(())
    }
}

/// A server running in this process, on a port of its own.
pub struct Served {
    pub addr: SocketAddr,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Res<()>>,
}

impl Served {
    pub async fn app(app: simgate::server::App) -> Res<Served> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            app.serve(listener, async {
                let _ = stopped.await;
            })
            .await
            .map_err(BoxError::from)
        });
        Ok(Served { addr, stop, task })
    }

    /// One gRPC service (a bench's baseline) with tonic's default server settings, as
    /// `App::serve` serves simgate, and simgate's limit on request size.
    pub async fn grpc<S>(svc: S) -> Res<Served>
    where
        S: tower::Service<http::Request<tonic::body::Body>, Error = std::convert::Infallible>
            + tonic::server::NamedService
            + Clone
            + Send
            + Sync
            + 'static,
        S::Response: axum::response::IntoResponse,
        S::Future: Send + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .map_err(Into::into)
        });
        Ok(Served { addr, stop, task })
    }

    pub async fn channel(&self) -> Res<Channel> {
        Ok(Channel::from_shared(format!("http://{}", self.addr))?
            .connect()
            .await?)
    }

    pub async fn stop(self) -> Res<()> {
        let _ = self.stop.send(());
        self.task.await?
    }
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Bearer {
    pub fn new(key: &str) -> Res<Bearer> {
        Ok(Bearer(format!("Bearer {key}").parse()?))
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub type Authed = tonic::service::interceptor::InterceptedService<Channel, Bearer>;

pub fn cards_client(channel: &Channel) -> Res<pb::card_service_client::CardServiceClient<Authed>> {
    Ok(
        pb::card_service_client::CardServiceClient::with_interceptor(
            channel.clone(),
            Bearer::new(BENCH_KEY)?,
        )
        .max_encoding_message_size(32 << 20),
    )
}

/// Latencies in microseconds, one histogram per measurement.
pub fn histogram() -> Res<Histogram<u64>> {
    Ok(Histogram::new_with_bounds(1, 60_000_000, 3)?)
}

/// A comparison's results table, one row per load: rate in `unit`, p50 and p99 latency.
pub fn print_loads(unit: &str, rows: &[(&str, &Load)]) {
    println!("| | {unit} | p50 ms | p99 ms |");
    println!("|---|---|---|---|");
    for (name, l) in rows {
        println!(
            "| {name} | {:.0} | {:.2} | {:.2} |",
            l.rate(),
            l.ms(0.5),
            l.ms(0.99)
        );
    }
}

/// What a closed-loop run measured.
pub struct Load {
    pub calls: u64,
    pub elapsed: Duration,
    pub latency: Histogram<u64>,
}

impl Load {
    pub fn empty() -> Res<Load> {
        Ok(Load {
            calls: 0,
            elapsed: Duration::ZERO,
            latency: histogram()?,
        })
    }

    pub fn add(&mut self, other: &Load) -> Res<()> {
        self.calls += other.calls;
        self.elapsed += other.elapsed;
        self.latency.add(&other.latency)?;
        Ok(())
    }

    pub fn rate(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    pub fn ms(&self, quantile: f64) -> f64 {
        self.latency.value_at_quantile(quantile) as f64 / 1000.0
    }
}

/// Runs `concurrency` tasks for `duration`, each calling `call(task, n)` again as soon as the
/// previous call answered (closed loop), and records every call's latency. Any failed call ends
/// the run with its error: a figure that includes refusals would measure the wrong thing.
pub async fn drive<F, Fut>(concurrency: usize, duration: Duration, call: F) -> Res<Load>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Res<()>> + Send,
{
    let call = Arc::new(call);
    let start = Instant::now();
    let deadline = start + duration;
    let mut tasks = Vec::with_capacity(concurrency);
    for task in 0..concurrency {
        let call = call.clone();
        tasks.push(tokio::spawn(async move {
            let mut h = histogram()?;
            let mut n = 0u64;
            while Instant::now() < deadline {
                let t = Instant::now();
                call(task, n).await?;
                h.saturating_record(t.elapsed().as_micros().try_into().unwrap_or(u64::MAX));
                n += 1;
            }
            Res::Ok((n, h))
        }));
    }
    let mut load = Load::empty()?;
    for t in tasks {
        let (n, h) = t.await??;
        load.calls += n;
        load.latency.add(&h)?;
    }
    load.elapsed = start.elapsed();
    Ok(load)
}

/// The card that `task`'s `n`-th round trip changes: tasks never share a card.
pub fn card_of(task: usize, n: u64, concurrency: usize, cards: u64) -> u64 {
    let per_task = cards / concurrency as u64;
    task as u64 + concurrency as u64 * (n % per_task)
}

/// GetCard on random cards of `cards`, `concurrency` calls in flight, for `duration`.
pub async fn get_cards(
    client: pb::card_service_client::CardServiceClient<Authed>,
    cards: u64,
    concurrency: usize,
    duration: Duration,
) -> Res<Load> {
    drive(concurrency, duration, move |_, _| {
        let mut cl = client.clone();
        let iccid = iccid(fastrand::u64(0..cards));
        async move {
            cl.get_card(pb::GetCardRequest { iccid }).await?;
            Ok(())
        }
    })
    .await
}

/// SuspendCard then ResumeCard of one card per round trip, each task on cards of its own
/// (`card_of`), `concurrency` round trips in flight, for `duration`.
pub async fn suspend_resume(
    client: pb::card_service_client::CardServiceClient<Authed>,
    cards: u64,
    concurrency: usize,
    duration: Duration,
) -> Res<Load> {
    drive(concurrency, duration, move |task, n| {
        let mut cl = client.clone();
        let iccid = iccid(card_of(task, n, concurrency, cards));
        async move {
            cl.suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                request_id: String::new(),
            })
            .await?;
            cl.resume_card(pb::ResumeCardRequest {
                iccid,
                request_id: String::new(),
            })
            .await?;
            Ok(())
        }
    })
    .await
}

/// A server builder with a throwaway data key: a benchmark's database lives only as long as the
/// run, and PostgreSQL refuses to start without a key that seals webhook secrets.
pub fn server_builder() -> Res<simgate::server::ServerBuilder> {
    // No repeat windows: the benchmarks change cards back and forth in one breath.
    Ok(simgate::Server::builder()
        .data_key(simgate::store::sealing::DataKey::generate()?)
        .repeat_window_s(Some(0)))
}

/// A bench server's builder on `db`, with card time on `clock`.
pub fn server_on(
    db: &Db,
    clock: simgate::clock::ManualClock,
) -> Res<simgate::server::ServerBuilder> {
    Ok(server_builder()?
        .database_url(db.url.clone())
        .store_options(db.options.clone())
        .clock(Arc::new(clock)))
}

/// Kills the child on every way out, so that a failed run leaves no server behind.
pub struct ChildServer(pub Child);

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `simgate serve` (the binary next to this one) on a free port, with `env` on top of
/// the benchmark's settings, and waits until it accepts connections.
pub async fn start_server(db: &Db, env: &[(&str, String)]) -> Res<(ChildServer, SocketAddr)> {
    let exe = std::env::current_exe()?
        .parent()
        .ok_or("bench binary has no directory")?
        .join("simgate");
    if !exe.exists() {
        return Err(format!(
            "{} not found: build both binaries (cargo build --release --bins)",
            exe.display()
        )
        .into());
    }
    // A port the kernel just handed out and released; free again unless someone races for it.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let log = db.dir().join("server.log");
    let child = Command::new(&exe)
        .arg("serve")
        .current_dir(db.dir())
        .env("SIMGATE_DATABASE_URL", db.url_for_child())
        .env("SIMGATE_LISTEN", addr.to_string())
        .env("SIMGATE_BOOTSTRAP_KEY", BENCH_KEY)
        .env(
            "SIMGATE_DATA_KEY",
            simgate::store::sealing::DataKey::generate()?.to_base64(),
        )
        // The metrics port is fixed by default; a second server on the machine would hold it.
        .env("SIMGATE_METRICS__ENABLED", "false")
        // The write path suspends and resumes a card in one breath: without this, China
        // Mobile's repeat window would schedule every resume for 30 minutes later.
        .env("SIMGATE_JOURNAL__REPEAT_WINDOW_S", "0")
        .env("RUST_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log)?)
        .spawn()?;
    let mut child = ChildServer(child);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.0.try_wait()? {
            let out = std::fs::read_to_string(&log).unwrap_or_default();
            return Err(format!(
                "simgate serve exited at start ({status}) on {addr}; if it names a port, another \
                 listener (such as a metrics port) is taken:\n{out}"
            )
            .into());
        }
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return Ok((child, addr));
        }
        if Instant::now() > deadline {
            return Err(format!("simgate serve did not listen on {addr} within 60 s").into());
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
