//! Authentication at the edge: reads `authorization: Bearer <key>`, checks the key, applies the
//! per-key request rate limit and the RPC's permission, and hands the service a [`Caller`]. Keys
//! read from the store are kept for a short time, so that a busy client does not cost a
//! database read per call for its key.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use governor::clock::{Clock as _, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use tonic::{Code, Request, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::error::ERROR_DOMAIN;
use crate::auth::{self, Permission};
use crate::clock::Clock;
use crate::service::access::{check, AccessError, Forbidden};
use crate::service::Caller;
use crate::store::Store;

/// Default per-key limit, requests per second (with a burst of the same size).
pub const DEFAULT_RATE_PER_KEY: u32 = 1000;
/// Default time a key read from the store is trusted: also the longest a key revoked by another
/// server process may still be accepted here.
pub const DEFAULT_KEY_CACHE_MS: u64 = 1000;

type CachedKey = (crate::auth::ApiKey, String, Instant);

#[derive(Clone)]
pub struct Authenticator {
    store: Store,
    clock: Arc<dyn Clock>,
    limiter: Arc<DefaultKeyedRateLimiter<String>>,
    /// Keys that exist, by key id, with their secret hash and when they were read. Only keys
    /// found in the store are kept, so its size is bounded by the number of real keys.
    keys: Arc<Mutex<HashMap<String, CachedKey>>>,
    key_ttl: Duration,
}

fn unauthenticated() -> Status {
    // The same answer for a missing, malformed, unknown, revoked or expired key: no hint which.
    Status::unauthenticated("a valid API key is required: authorization: Bearer <key>")
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

impl Authenticator {
    pub fn new(store: Store, clock: Arc<dyn Clock>, per_second: u32) -> Authenticator {
        let rate = NonZeroU32::new(per_second.max(1)).unwrap_or(NonZeroU32::MIN);
        Authenticator {
            store,
            clock,
            limiter: Arc::new(RateLimiter::keyed(Quota::per_second(rate))),
            keys: Arc::default(),
            key_ttl: Duration::from_millis(DEFAULT_KEY_CACHE_MS),
        }
    }

    /// How long a key read from the store is trusted (0: read it on every call).
    pub fn with_key_cache(mut self, ttl: Duration) -> Authenticator {
        self.key_ttl = ttl;
        self
    }

    /// Forgets a key at once (this process revoked it).
    pub fn forget(&self, key_id: &str) {
        self.keys
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key_id);
    }

    async fn key(&self, key_id: &str) -> Result<Option<(crate::auth::ApiKey, String)>, Status> {
        if !self.key_ttl.is_zero() {
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            if let Some((key, hash, read_at)) = keys.get(key_id) {
                if read_at.elapsed() < self.key_ttl {
                    return Ok(Some((key.clone(), hash.clone())));
                }
            }
        }
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
        Ok(found)
    }

    /// Authenticates the request and checks `perm` for `method`.
    pub async fn caller<T>(
        &self,
        req: &Request<T>,
        method: &'static str,
        perm: Permission,
    ) -> Result<Caller, Status> {
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let token = auth::bearer(header).ok_or_else(unauthenticated)?;
        let (key_id, secret) = auth::split(token).ok_or_else(unauthenticated)?;
        let (key, hash) = self.key(key_id).await?.ok_or_else(unauthenticated)?;
        if !auth::secret_matches(secret, &hash) || !key.usable_at(self.clock.now()) {
            return Err(unauthenticated());
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
            request_id: request_id(req),
            method,
        };
        check(&caller, perm).map_err(forbidden)?;
        Ok(caller)
    }
}
