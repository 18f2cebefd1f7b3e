//! Authentication at the edge: reads `authorization: Bearer <key>`, checks the key, applies the
//! per-key request rate limit and the RPC's permission, and hands the service a [`Caller`]. Keys
//! read from the store are kept for a short time, so that a busy client does not cost a
//! database read per call for its key; key ids the store does not have are remembered briefly
//! too, so that a flood of one made-up id costs one read. Failed authentications are limited
//! per peer address: past the limit a peer's calls that would need a store read are refused
//! without one, and its refusals are counted in a metric instead of each written to the audit
//! log. Refusals within the limit (UNAUTHENTICATED) and every PERMISSION_DENIED are audited.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::warn;

use super::error::ERROR_DOMAIN;
use super::rpc::Rpc;
use crate::auth;
use crate::clock::Clock;
use crate::metrics::Metrics;
use crate::service::access::{check, AccessError, Forbidden};
use crate::service::Caller;
use crate::store::{AuditRecord, Store};

/// Default per-key limit, requests per second (with a burst of the same size).
pub const DEFAULT_RATE_PER_KEY: u32 = 1000;
/// Default time a key read from the store is trusted: also the longest a key revoked by another
/// server process may still be accepted here.
pub const DEFAULT_KEY_CACHE_MS: u64 = 1000;

type CachedKey = (crate::auth::ApiKey, String, Instant);

/// `[auth]`: the unknown-key cache and the per-peer limit of failed authentications.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// How long a key id the store does not have is answered as unknown without reading the
    /// store again, in milliseconds (default 5000; 0: never remembered). A key created through
    /// another server process under an id probed here just before is refused here for up to
    /// this long; one created through this process is usable at once.
    pub unknown_key_cache_ms: u64,
    /// Most unknown key ids remembered at once (default 10000).
    pub unknown_key_cache_size: usize,
    /// Failed authentications per minute one peer address may make (default 600) ...
    pub failures_per_minute_per_peer: u32,
    /// ... after a burst of this many (default 100). Past it, the peer's calls that would need
    /// a store read are refused with RESOURCE_EXHAUSTED until the limit allows one again, and
    /// its refusals are counted in `simgate_auth_total{outcome="refused_unaudited"}` instead
    /// of being written to the audit log.
    pub failure_burst_per_peer: u32,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            unknown_key_cache_ms: 5000,
            unknown_key_cache_size: 10_000,
            failures_per_minute_per_peer: 600,
            failure_burst_per_peer: 100,
        }
    }
}

impl AuthConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.failures_per_minute_per_peer == 0 || self.failure_burst_per_peer == 0 {
            return Err(
                "auth.failures_per_minute_per_peer and auth.failure_burst_per_peer must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

/// Most peers remembered as over their failure limit at once; past it the oldest are dropped
/// (their next failure is still limited, it only costs one store read).
const MAX_BLOCKED_PEERS: usize = 100_000;

#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    /// Wall time, for key expiry: AdvanceClock moves card time and must not expire keys.
    clock: Arc<dyn Clock>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Keys that exist, by key id, with their secret hash and when they were read. Only keys
    /// found in the store are kept, so its size is bounded by the number of real keys.
    keys: Arc<Mutex<HashMap<String, CachedKey>>>,
    key_ttl: Duration,
    /// Key ids the store did not have, with when it said so; at most `cfg.unknown_key_cache_size`.
    misses: Arc<Mutex<HashMap<String, Instant>>>,
    /// Failed authentications by peer address.
    failures: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Peers over their failure limit, until when.
    blocked: Arc<Mutex<HashMap<IpAddr, Instant>>>,
    failures_seen: Arc<AtomicU64>,
    cfg: AuthConfig,
    metrics: Option<Metrics>,
}

fn unauthenticated() -> Status {
    // The same answer for a missing, malformed, unknown, revoked or expired key: no hint which.
    Status::unauthenticated("a valid API key is required: authorization: Bearer <key>")
}

fn peer_limited() -> Status {
    let mut d = ErrorDetails::new();
    d.set_error_info("AUTH_FAILURES_LIMITED", ERROR_DOMAIN, HashMap::new());
    d.set_retry_info(Some(Duration::from_secs(1)));
    Status::with_error_details(
        Code::ResourceExhausted,
        "too many failed authentications from this address; retry later",
        d,
    )
}

pub fn forbidden(f: Forbidden) -> Status {
    let mut d = ErrorDetails::new();
    d.set_error_info("PERMISSION_DENIED", ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::PermissionDenied, f.0, d)
}

impl From<AccessError> for Status {
    fn from(e: AccessError) -> Status {
        match e {
            AccessError::Forbidden(f) => forbidden(f),
            AccessError::Service(s) => s.into(),
        }
    }
}

/// A request id the caller sent that is safe to store and log, or a new one.
fn request_id<T>(req: &Request<T>) -> String {
    req.metadata()
        .get(super::observe::REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| super::observe::is_sane_request_id(v.as_bytes()))
        .map(str::to_string)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn failure_quota(cfg: &AuthConfig) -> Quota {
    let rate = NonZeroU32::new(cfg.failures_per_minute_per_peer).unwrap_or(NonZeroU32::MIN);
    let burst = NonZeroU32::new(cfg.failure_burst_per_peer).unwrap_or(NonZeroU32::MIN);
    Quota::per_minute(rate).allow_burst(burst)
}

/// Why a presented credential was refused, as the audit log says it (the caller only ever hears
/// "a valid API key is required").
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Malformed,
    UnknownKey,
    WrongSecret,
    NotUsable,
}

impl Refusal {
    fn detail(self) -> &'static str {
        match self {
            Refusal::Malformed => "missing or malformed API key",
            Refusal::UnknownKey => "unknown key id",
            Refusal::WrongSecret => "wrong secret for this key id",
            Refusal::NotUsable => "revoked or expired key",
        }
    }
}

impl Authenticator {
    /// `clock` is the wall clock: key expiry is a security fact, not card time.
    pub fn new(store: Store, clock: Arc<dyn Clock>, per_second: u32) -> Authenticator {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        let cfg = AuthConfig::default();
        Authenticator {
            store,
            clock,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))),
            keys: Arc::default(),
            key_ttl: Duration::from_millis(DEFAULT_KEY_CACHE_MS),
            misses: Arc::default(),
            failures: Arc::new(RateLimiter::keyed(failure_quota(&cfg))),
            blocked: Arc::default(),
            failures_seen: Arc::default(),
            cfg,
            metrics: None,
        }
    }

    /// The unknown-key cache and the per-peer failure limit.
    pub fn with_config(mut self, cfg: AuthConfig) -> Authenticator {
        self.failures = Arc::new(RateLimiter::keyed(failure_quota(&cfg)));
        self.cfg = cfg;
        self
    }

    /// Where the lookups and unaudited refusals are counted.
    pub fn with_metrics(mut self, metrics: Metrics) -> Authenticator {
        self.metrics = Some(metrics);
        self
    }

    fn count(&self, outcome: &str) {
        if let Some(m) = &self.metrics {
            m.auth(outcome);
        }
    }

    /// How long a key read from the store is trusted (0: read it on every call).
    pub fn with_key_cache(mut self, ttl: Duration) -> Authenticator {
        self.key_ttl = ttl;
        self
    }

    /// Forgets what is known of a key id at once (this process revoked or created it): a
    /// revoked key is read again, and a created one is not shadowed by a remembered miss.
    pub fn forget(&self, key_id: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_id);
        self.misses
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_id);
    }

    /// A key from memory only (None: it would take a store read).
    fn cached_key(&self, key_id: &str) -> Option<(crate::auth::ApiKey, String)> {
        if self.key_ttl.is_zero() {
            return None;
        }
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        keys.get(key_id)
            .filter(|(_, _, read_at)| read_at.elapsed() < self.key_ttl)
            .map(|(key, hash, _)| (key.clone(), hash.clone()))
    }

    fn known_missing(&self, key_id: &str) -> bool {
        let ttl = Duration::from_millis(self.cfg.unknown_key_cache_ms);
        !ttl.is_zero()
            && self
                .misses
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(key_id)
                .is_some_and(|at| at.elapsed() < ttl)
    }

    fn remember_missing(&self, key_id: &str) {
        let ttl = Duration::from_millis(self.cfg.unknown_key_cache_ms);
        if ttl.is_zero() || self.cfg.unknown_key_cache_size == 0 {
            return;
        }
        let mut misses = self.misses.lock().unwrap_or_else(|e| e.into_inner());
        if misses.len() >= self.cfg.unknown_key_cache_size {
            misses.retain(|_, at| at.elapsed() < ttl);
        }
        if misses.len() >= self.cfg.unknown_key_cache_size {
            // Still full of fresh misses (ids are being made up faster than they expire): start
            // over rather than grow. The per-peer failure limit bounds the reads this costs.
            misses.clear();
        }
        misses.insert(key_id.to_string(), Instant::now());
    }

    async fn key(&self, key_id: &str) -> Result<Option<(crate::auth::ApiKey, String)>, Status> {
        if let Some(found) = self.cached_key(key_id) {
            return Ok(Some(found));
        }
        if self.known_missing(key_id) {
            self.count("unknown_key_cached");
            return Ok(None);
        }
        self.count("key_lookup");
        let found = self
            .store
            .get_key(key_id)
            .await
            .map_err(|e| Status::from(crate::service::ServiceError::from(e)))?;
        if !self.key_ttl.is_zero() {
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            match &found {
                Some((key, hash)) => {
                    keys.insert(
                        key_id.to_string(),
                        (key.clone(), hash.clone(), Instant::now()),
                    );
                }
                None => {
                    keys.remove(key_id);
                }
            }
        }
        if found.is_none() {
            self.remember_missing(key_id);
        }
        Ok(found)
    }

    /// Whether `peer` is over its failure limit right now.
    fn is_blocked(&self, peer: IpAddr) -> bool {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        match blocked.get(&peer) {
            Some(until) if Instant::now() < *until => true,
            Some(_) => {
                blocked.remove(&peer);
                false
            }
            None => false,
        }
    }

    fn block(&self, peer: IpAddr, wait: Duration) {
        let mut blocked = self.blocked.lock().unwrap_or_else(|e| e.into_inner());
        if blocked.len() >= MAX_BLOCKED_PEERS {
            let now = Instant::now();
            blocked.retain(|_, until| now < *until);
            if blocked.len() >= MAX_BLOCKED_PEERS {
                blocked.clear();
            }
        }
        blocked.insert(peer, Instant::now() + wait);
    }

    async fn audit(&self, record: AuditRecord) {
        if let Err(e) = self.store.record_audit(&record).await {
            warn!(error = %e, method = %record.method, "could not write the audit record of a refused call");
        }
    }

    /// Answers a failed authentication: audited while `peer` is within its failure limit,
    /// only counted once it is over it (and then its next calls skip the store).
    #[allow(clippy::too_many_arguments)]
    async fn refuse(
        &self,
        peer: IpAddr,
        key_id: &str,
        customer_id: Option<String>,
        method: &'static str,
        request_id: &str,
        why: Refusal,
    ) -> Status {
        if self.failures_seen.fetch_add(1, Ordering::Relaxed) % 4096 == 4095 {
            // The limiter keeps a cell per peer it has seen; drop the ones back at full burst.
            self.failures.retain_recent();
        }
        match self.failures.check_key(&peer) {
            Ok(()) => {
                self.count("refused_audited");
                self.audit(AuditRecord {
                    at: self.clock.now(),
                    key_id: key_id.to_string(),
                    method: method.to_string(),
                    iccid: None,
                    customer_id,
                    request_id: request_id.to_string(),
                    result: "UNAUTHENTICATED".into(),
                    detail: format!("{} (peer {peer})", why.detail()),
                })
                .await;
            }
            Err(not_until) => {
                self.count("refused_unaudited");
                self.block(
                    peer,
                    not_until.wait_time_from(DefaultClock::default().now()),
                );
            }
        }
        unauthenticated()
    }

    /// Authenticates the request and checks the permission `rpc` needs (see [`Rpc`]).
    pub async fn caller<T>(&self, req: &Request<T>, rpc: Rpc) -> Result<Caller, Status> {
        let (method, perm) = (rpc.name(), rpc.permission());
        let peer = req
            .remote_addr()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |a| a.ip());
        let request_id = request_id(req);
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let Some((key_id, secret)) = auth::bearer(header).and_then(auth::split) else {
            return Err(self
                .refuse(peer, "", None, method, &request_id, Refusal::Malformed)
                .await);
        };
        let found = if self.is_blocked(peer) {
            // Over the failure limit: only what memory can answer, never a store read.
            match self.cached_key(key_id) {
                Some(found) => Some(found),
                None => {
                    self.count("refused_unaudited");
                    return Err(peer_limited());
                }
            }
        } else {
            self.key(key_id).await?
        };
        let Some((key, hash)) = found else {
            return Err(self
                .refuse(peer, key_id, None, method, &request_id, Refusal::UnknownKey)
                .await);
        };
        let why = if !auth::secret_matches(secret, &hash) {
            Some(Refusal::WrongSecret)
        } else if !key.usable_at(self.clock.now()) {
            Some(Refusal::NotUsable)
        } else {
            None
        };
        if let Some(why) = why {
            return Err(self
                .refuse(
                    peer,
                    key_id,
                    key.customer_id.clone(),
                    method,
                    &request_id,
                    why,
                )
                .await);
        }
        if let Err(not_until) = self.limiter.check_key(&key.key_id) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let mut d = ErrorDetails::new();
            d.set_error_info("RATE_LIMITED", ERROR_DOMAIN, HashMap::new());
            d.set_retry_info(Some(wait));
            return Err(Status::with_error_details(
                Code::ResourceExhausted,
                "request rate limit of this API key reached; retry later",
                d,
            ));
        }
        let caller = Caller {
            principal: key.principal(),
            request_id,
            method,
        };
        if let Err(f) = check(&caller, perm) {
            // Bounded by the key's own rate limit, checked above.
            self.audit(AuditRecord {
                at: self.clock.now(),
                key_id: caller.principal.key_id.clone(),
                method: method.to_string(),
                iccid: None,
                customer_id: caller.principal.customer_id.clone(),
                request_id: caller.request_id.clone(),
                result: "PERMISSION_DENIED".into(),
                detail: f.0.clone(),
            })
            .await;
            return Err(forbidden(f));
        }
        Ok(caller)
    }
}
