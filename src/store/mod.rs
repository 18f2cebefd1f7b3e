//! Persistence: one sqlx `Any` pool over SQLite (embedded default, WAL) or PostgreSQL, chosen by
//! the URL, with per-backend migrations applied at connect. SQL is written once in the dialect
//! both accept (`$n` placeholders, `ON CONFLICT`, integer columns), so one store serves both and
//! one test suite checks both.

mod access;
mod batches;
mod budgets;
mod cards;
mod events;
mod idempotency;
mod journal;
#[cfg(test)]
mod migrations_pinned;
mod pools;
pub mod sealing;
mod sim;
pub use sim::simulated_access_number;
mod webhooks;

pub use access::{AuditEntry, AuditFilter, AuditRecord};
pub use batches::{Batch, BatchCounts, BatchItem, BATCH_COUNTS, DUE_ITEMS_OF_BATCH};
pub use cards::CardFilter;
pub use events::{EventDetail, EventFilter, EventRow};
pub use idempotency::IdempotencyRecord;
pub use journal::{action_name, CarrierOp, IntentPlan, NewIntent, OrderFilter, Settle, SettledBy};
pub use pools::{DailyUsage, PoolFilter};
pub use webhooks::{Delivery, DeliveryState, Webhook};

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::AnyPoolOptions;
use sqlx::migrate::Migrator;
use sqlx::{AnyPool, Executor};

static SQLITE_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/sqlite");
static POSTGRES_MIGRATIONS: Migrator = sqlx::migrate!("src/store/migrations/postgres");

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The row changed since it was read (optimistic concurrency).
    #[error("the card was changed concurrently; retry")]
    Conflict,
    #[error("{field} {value} already exists")]
    Duplicate { field: &'static str, value: String },
    #[error("stored data is not valid: {0}")]
    Corrupt(String),
    #[error("database URL is not usable: {0}")]
    Url(String),
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Webhook secrets are sealed with the data key, which this store was opened without.
    #[error("no data key: webhook secrets cannot be read or written")]
    NoDataKey,
}

/// Connection settings beyond the URL.
#[derive(Debug, Clone, Default)]
pub struct StoreOptions {
    /// PostgreSQL schema to work in (created if missing); lets tests share one database.
    pub pg_schema: Option<String>,
    pub max_connections: Option<u32>,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Bumped after every commit that wrote events, so the event stream wakes at once instead
    /// of polling (writes by other processes are found by its periodic poll).
    events_written: Arc<tokio::sync::watch::Sender<u64>>,
    /// Seals webhook secrets; kept outside the database.
    data_key: Option<Arc<sealing::DataKey>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("backend", &self.backend)
            .finish()
    }
}

pub fn backend_of(url: &str) -> Result<Backend, StoreError> {
    if url.starts_with("sqlite:") {
        Ok(Backend::Sqlite)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Backend::Postgres)
    } else {
        Err(StoreError::Url(
            "expected sqlite://PATH or postgres://USER@HOST/DB".into(),
        ))
    }
}

/// SQLite must be allowed to create the file on first start (zero configuration).
fn sqlite_url_with_create(url: &str) -> String {
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

/// The file of an SQLite URL; None for an in-memory database.
pub fn sqlite_file_path(url: &str) -> Option<std::path::PathBuf> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    if path.is_empty() || path == ":memory:" || query.contains("mode=memory") {
        return None;
    }
    Some(std::path::PathBuf::from(path))
}

/// The database holds webhook secrets and card data: it is created readable by its owner only
/// before SQLite opens it (SQLite gives its -wal and -shm files the database file's mode), and
/// an existing one left readable by others from before is narrowed.
fn owner_only_database(path: &std::path::Path) -> Result<(), StoreError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let io = |e: std::io::Error| StoreError::Url(format!("{}: {e}", path.display()));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                for suffix in ["", "-wal", "-shm"] {
                    let mut p = path.as_os_str().to_owned();
                    p.push(suffix);
                    let p = std::path::PathBuf::from(p);
                    if let Ok(meta) = std::fs::metadata(&p) {
                        if meta.permissions().mode() & 0o077 != 0 {
                            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600))
                                .map_err(io)?;
                        }
                    }
                }
            }
            // A missing folder and the like: SQLite reports it in its own words.
            Err(_) => {}
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn valid_schema_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

impl Store {
    pub async fn connect(url: &str, opts: StoreOptions) -> Result<Store, StoreError> {
        sqlx::any::install_default_drivers();
        let backend = backend_of(url)?;
        if backend == Backend::Sqlite {
            if let Some(path) = sqlite_file_path(url) {
                owner_only_database(&path)?;
            }
        }
        let url = match backend {
            Backend::Sqlite => sqlite_url_with_create(url),
            Backend::Postgres => url.to_string(),
        };
        if let Some(schema) = &opts.pg_schema {
            if !valid_schema_name(schema) {
                return Err(StoreError::Url(format!("invalid schema name {schema:?}")));
            }
        }
        let schema = opts.pg_schema.clone();
        if let (Backend::Postgres, Some(schema)) = (backend, &schema) {
            let admin = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&url)
                .await?;
            admin
                .execute(format!("CREATE SCHEMA IF NOT EXISTS {schema}").as_str())
                .await?;
            admin.close().await;
        }
        // SQLite has one writer at a time; more connections only help readers.
        let max = opts.max_connections.unwrap_or(match backend {
            Backend::Sqlite => 8,
            Backend::Postgres => 16,
        });
        let pool = AnyPoolOptions::new()
            .max_connections(max)
            .acquire_timeout(Duration::from_secs(30))
            // sqlx pings every connection it hands out by default. An embedded SQLite connection
            // cannot go stale like a network one, and the ping is one more hop to its worker
            // thread: it was half the thread switches of a GetCard (see the read benchmark).
            .test_before_acquire(backend == Backend::Postgres)
            .after_connect(move |conn, _meta| {
                let schema = schema.clone();
                Box::pin(async move {
                    match backend {
                        Backend::Sqlite => {
                            conn.execute("PRAGMA journal_mode = WAL").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            conn.execute("PRAGMA busy_timeout = 30000").await?;
                        }
                        Backend::Postgres => {
                            if let Some(schema) = schema {
                                conn.execute(format!("SET search_path TO {schema}").as_str())
                                    .await?;
                            }
                        }
                    }
                    Ok(())
                })
            })
            .connect(&url)
            .await?;
        match backend {
            Backend::Sqlite => SQLITE_MIGRATIONS.run(&pool).await?,
            Backend::Postgres => POSTGRES_MIGRATIONS.run(&pool).await?,
        }
        Ok(Store {
            pool,
            backend,
            events_written: Arc::new(tokio::sync::watch::channel(0).0),
            data_key: None,
        })
    }

    /// The key webhook secrets are sealed with.
    pub fn with_data_key(mut self, key: sealing::DataKey) -> Store {
        self.data_key = Some(Arc::new(key));
        self
    }

    /// Changes after each commit of this process that wrote events.
    pub fn event_writes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.events_written.subscribe()
    }

    fn wrote_events(&self) {
        self.events_written.send_modify(|n| *n = n.wrapping_add(1));
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Moves SQLite's write-ahead log into the database file, so that a stopped server leaves
    /// one self-contained file behind. PostgreSQL has nothing to flush.
    pub async fn flush(&self) {
        if self.backend == Backend::Sqlite {
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                .execute(&self.pool)
                .await
            {
                tracing::warn!(error = %e, "cannot checkpoint the SQLite log");
            }
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Drops a test schema with everything in it (PostgreSQL only).
    pub async fn drop_schema(url: &str, schema: &str) -> Result<(), StoreError> {
        if !valid_schema_name(schema) {
            return Err(StoreError::Url(format!("invalid schema name {schema:?}")));
        }
        sqlx::any::install_default_drivers();
        let admin = AnyPoolOptions::new()
            .max_connections(1)
            .connect(url)
            .await?;
        admin
            .execute(format!("DROP SCHEMA IF EXISTS {schema} CASCADE").as_str())
            .await?;
        admin.close().await;
        Ok(())
    }
}

/// Placeholders for parameters `offset+1 ..= offset+n` of a statement built at run time, bound in
/// order. SQLite gets anonymous `?`: it keeps `$N` and `?N` in a list it searches linearly for
/// each new one, which made a 28,000-parameter insert 40 times slower to prepare.
/// Numbered placeholders `$first ..` for `n` parameters, for a statement that also names its
/// fixed parameters `$1 ..`: SQLite takes `$N` as the Nth parameter too, where an anonymous `?`
/// after `$3` would not be numbered from 4. For short lists only (see [`placeholders`]).
fn numbered(first: usize, n: usize) -> String {
    (first..first + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn placeholders(backend: Backend, offset: usize, n: usize) -> String {
    (offset + 1..=offset + n)
        .map(|i| match backend {
            Backend::Sqlite => "?".to_string(),
            Backend::Postgres => format!("${i}"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn millis_to_time(ms: i64) -> Result<chrono::DateTime<chrono::Utc>, StoreError> {
    chrono::DateTime::from_timestamp_millis(ms)
        .ok_or_else(|| StoreError::Corrupt(format!("timestamp {ms} out of range")))
}

fn u64_to_db(v: u64) -> Result<i64, StoreError> {
    i64::try_from(v).map_err(|_| StoreError::Corrupt(format!("{v} does not fit a BIGINT")))
}

fn db_to_u64(v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::Corrupt(format!("negative count {v}")))
}

fn parse_text<T: FromStr>(what: &str, s: &str) -> Result<T, StoreError> {
    s.parse()
        .map_err(|_| StoreError::Corrupt(format!("unknown {what} {s:?}")))
}
