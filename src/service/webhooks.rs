//! Webhook delivery for customers who do not speak gRPC: their events are POSTed as JSON, signed
//! with HMAC-SHA256, retried with exponential backoff and jitter, and parked as dead letters after
//! the last attempt (they can be put back in the queue with RetryWebhookDeliveries).
//!
//! Each webhook has a cursor into the event outbox; queuing moves it and inserts the deliveries
//! in one transaction, so every event is queued once. Sending is at least once: a receiver
//! dedupes on `X-Simgate-Event-Id`.
//!
//! Deliveries are fair: each is claimed in the database and sent on a task of its own, at most
//! `max_in_flight_per_webhook` at a time per webhook, so a slow or black-holed endpoint delays
//! only its own deliveries. Where a webhook may point is [`target`]'s business.

pub mod target;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tracing::{debug, warn};

use super::{Caller, FieldViolation, Result, ServiceError};
use crate::clock::Clock;
use crate::store::{AuditRecord, Delivery, DeliveryState, EventRow, Store, Webhook};
use target::{GuardedResolver, Lookup, SystemLookup, TargetPolicy};

/// `[webhooks]`: how deliveries are retried, where they may go and how many there may be.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhookConfig {
    /// Attempts before a delivery becomes a dead letter (default 8).
    pub max_attempts: u32,
    /// Wait after the first failure; doubled after each further one (default 1000).
    pub retry_base_ms: u64,
    /// Longest wait between attempts (default 600000: ten minutes).
    pub retry_max_ms: u64,
    /// Per-request timeout (default 5000).
    pub timeout_ms: u64,
    /// How often the queue is looked at (default 500).
    pub poll_ms: u64,
    /// Plain `http://` targets are accepted (default false: https only).
    pub allow_http: bool,
    /// Hosts (exact names), IP addresses and CIDRs reachable despite the refusal of loopback,
    /// private, link-local and metadata targets (default none), e.g. `["127.0.0.0/8"]` for a
    /// receiver on the same machine.
    pub allow_hosts: Vec<String>,
    /// Live webhooks one customer may have (default 10).
    pub max_per_customer: u32,
    /// Deliveries of one webhook attempted at the same time by one process (default 4).
    pub max_in_flight_per_webhook: u32,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 8,
            retry_base_ms: 1000,
            retry_max_ms: 600_000,
            timeout_ms: 5000,
            poll_ms: 500,
            allow_http: false,
            allow_hosts: Vec::new(),
            max_per_customer: 10,
            max_in_flight_per_webhook: 4,
        }
    }
}

impl WebhookConfig {
    pub fn validate(&self) -> std::result::Result<(), String> {
        if !(1..=100).contains(&self.max_attempts) {
            return Err("webhooks.max_attempts must be 1..=100".into());
        }
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err(
                "webhooks.retry_base_ms must be at least 1 and at most retry_max_ms".into(),
            );
        }
        if self.timeout_ms == 0 || self.poll_ms == 0 {
            return Err("webhooks.timeout_ms and webhooks.poll_ms must be at least 1".into());
        }
        if !(1..=1000).contains(&self.max_per_customer) {
            return Err("webhooks.max_per_customer must be 1..=1000".into());
        }
        if !(1..=64).contains(&self.max_in_flight_per_webhook) {
            return Err("webhooks.max_in_flight_per_webhook must be 1..=64".into());
        }
        self.policy()?;
        Ok(())
    }

    pub fn policy(&self) -> std::result::Result<TargetPolicy, String> {
        TargetPolicy::new(&self.allow_hosts, self.allow_http)
    }
}

/// The `X-Simgate-Signature` of a body sent at `timestamp` (Unix seconds): `v1=` and the hex
/// HMAC-SHA256 of `"{timestamp}.{body}"` under the webhook's secret. Signing the timestamp lets
/// a receiver refuse replays of an old delivery.
pub fn signature(secret: &str, timestamp: i64, body: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let bytes = mac.finalize().into_bytes();
    format!(
        "v1={}",
        bytes.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

/// The wait before attempt `attempts + 1` after `attempts` failures: base·2^(attempts−1), capped,
/// with up to half of it again as jitter so that many failing deliveries do not retry in step.
pub fn backoff(cfg: &WebhookConfig, attempts: u32, jitter: f64) -> Duration {
    let exp = attempts.saturating_sub(1).min(30);
    let base = cfg
        .retry_base_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.retry_max_ms);
    let d = Duration::from_millis(base);
    d + d.mul_f64(jitter.clamp(0.0, 1.0) / 2.0)
}

/// What an attempt that failed `attempts` times in total leads to.
pub fn after_failure(cfg: &WebhookConfig, attempts: u32) -> DeliveryState {
    if attempts >= cfg.max_attempts {
        DeliveryState::Dead
    } else {
        DeliveryState::Pending
    }
}

/// The JSON a receiver gets: the event as WatchEvents streams it.
#[derive(Debug, Serialize)]
pub struct Payload<'a> {
    pub event_id: i64,
    pub kind: &'a str,
    pub cause: &'a str,
    /// RFC 3339, UTC.
    pub at: String,
    pub customer_id: &'a str,
    pub carrier: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    pub iccid: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pool_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<&'a str>,
    pub stop_reasons: Vec<&'static str>,
    pub balance_fen: i64,
    pub amount_fen: i64,
    #[serde(flatten)]
    pub detail: &'a crate::store::EventDetail,
}

impl<'a> Payload<'a> {
    pub fn of(e: &'a EventRow) -> Payload<'a> {
        Payload {
            event_id: e.id,
            kind: &e.kind,
            cause: &e.cause,
            at: e.at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            customer_id: &e.customer_id,
            carrier: e.carrier.as_str(),
            iccid: &e.iccid,
            pool_id: e.pool_id.as_deref(),
            status: e.status.map(|s| s.as_str()),
            stop_reasons: e.stop_reasons.iter().map(|r| r.as_str()).collect(),
            balance_fen: e.balance.0,
            amount_fen: e.amount.0,
            detail: &e.detail,
        }
    }
}

/// How long past its request timeout a claimed delivery stays claimed: room to record the
/// outcome. After that a crashed attempt is due again.
const CLAIM_MARGIN_MS: i64 = 30_000;
/// Most deliveries started in one round, across webhooks.
const ROUND_LIMIT: u32 = 1000;

#[derive(Clone)]
pub struct WebhookService {
    store: Store,
    http: reqwest::Client,
    cfg: WebhookConfig,
    policy: Arc<TargetPolicy>,
    /// Wall time: retry waits are about the receiver being back, not about simulated card time.
    clock: std::sync::Arc<dyn Clock>,
    /// Attempts in flight in this process, per webhook.
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    tasks: tokio_util::task::TaskTracker,
}

/// One in-flight place of a webhook, given back when the attempt ends however it ends.
struct Slot {
    in_flight: Arc<Mutex<HashMap<String, u32>>>,
    webhook_id: String,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.webhook_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.webhook_id);
            }
        }
    }
}

/// A new webhook, validated, and the secret to show once.
pub struct NewWebhook {
    pub customer_id: String,
    pub url: String,
    pub kinds: Vec<String>,
    /// Empty: one is generated.
    pub secret: String,
}

impl WebhookService {
    pub fn new(store: Store, cfg: WebhookConfig) -> std::result::Result<WebhookService, String> {
        WebhookService::with_lookup(store, cfg, Arc::new(SystemLookup))
    }

    /// With names resolved by `lookup` (tests point names at loopback with it).
    pub fn with_lookup(
        store: Store,
        cfg: WebhookConfig,
        lookup: Arc<dyn Lookup>,
    ) -> std::result::Result<WebhookService, String> {
        let policy = Arc::new(cfg.policy()?);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            // A redirect would lead past the target check; a proxy would resolve for us.
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .https_only(!cfg.allow_http)
            .dns_resolver(Arc::new(GuardedResolver {
                policy: policy.clone(),
                lookup,
            }))
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(WebhookService {
            store,
            http,
            cfg,
            policy,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
            in_flight: Arc::default(),
            tasks: tokio_util::task::TaskTracker::new(),
        })
    }

    pub fn max_per_customer(&self) -> u32 {
        self.cfg.max_per_customer
    }

    /// Whether `url` may be a webhook's target (INVALID_ARGUMENT on `url` if not).
    pub fn check_target(&self, url: &str) -> Result<()> {
        let refused = |why: &str| {
            ServiceError::InvalidArgument(vec![FieldViolation::new("url", why.to_string())])
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| refused("is not a URL"))?;
        self.policy
            .check_url(&parsed)
            .map_err(|r| refused(r.describe()))
    }

    /// Writes the audit record of a refused webhook call; a failure is only logged, since the
    /// refusal must still be answered.
    pub async fn audit_refusal(
        &self,
        caller: &Caller,
        customer: Option<&str>,
        result: &str,
        detail: String,
    ) {
        let record = caller.audit(self.clock.now(), None, customer, result, detail);
        if let Err(e) = self.store.record_audit(&record).await {
            warn!(error = %e, method = caller.method, "could not write the audit record of a refused call");
        }
    }

    /// The new webhook, or None when its customer already has `max_per_customer`.
    pub async fn create(&self, new: NewWebhook, caller: &Caller) -> Result<Option<Webhook>> {
        if !caller.principal.sees(&new.customer_id) {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                "is not a customer this key may act for",
            )]));
        }
        self.check_target(&new.url)?;
        let secret = if new.secret.is_empty() {
            format!("whsec_{}", uuid::Uuid::new_v4().simple())
        } else {
            new.secret
        };
        let hook = Webhook {
            id: format!("wh_{}", uuid::Uuid::new_v4().simple()),
            customer_id: new.customer_id,
            url: new.url,
            secret,
            kinds: new.kinds,
            // Events from now on; history is in ListEvents.
            cursor_id: self.store.last_event_id().await?,
            created_at: self.clock.now(),
        };
        let host = reqwest::Url::parse(&hook.url)
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_default();
        let audit = caller.audit(
            hook.created_at,
            None,
            Some(&hook.customer_id),
            "OK",
            format!("webhook {} created (host {host})", hook.id),
        );
        let created = self
            .store
            .insert_webhook(&hook, self.cfg.max_per_customer, &audit)
            .await?;
        Ok(created.then_some(hook))
    }

    /// The webhook, if the caller may see it.
    pub async fn get(&self, id: &str, caller: &Caller) -> Result<Webhook> {
        match self.store.webhook(id).await? {
            Some(w) if caller.principal.sees(&w.customer_id) => Ok(w),
            _ => Err(ServiceError::WebhookNotFound(id.to_string())),
        }
    }

    pub async fn list(&self, caller: &Caller) -> Result<Vec<Webhook>> {
        Ok(self
            .store
            .webhooks(caller.principal.customer_id.as_deref())
            .await?)
    }

    pub async fn delete(&self, id: &str, caller: &Caller) -> Result<()> {
        let hook = self.get(id, caller).await?;
        let now = self.clock.now();
        let audit = caller.audit(
            now,
            None,
            Some(&hook.customer_id),
            "OK",
            format!("webhook {id} deleted"),
        );
        self.store
            .delete_webhook(id, now.timestamp_millis(), &audit)
            .await?;
        Ok(())
    }

    pub async fn deliveries(
        &self,
        id: &str,
        state: Option<DeliveryState>,
        limit: u32,
        caller: &Caller,
    ) -> Result<Vec<Delivery>> {
        self.get(id, caller).await?;
        Ok(self.store.deliveries(id, state, limit).await?)
    }

    pub async fn retry_dead(&self, id: &str, caller: &Caller) -> Result<u64> {
        let hook = self.get(id, caller).await?;
        let now = self.clock.now();
        let audit = |n: u64| -> AuditRecord {
            caller.audit(
                now,
                None,
                Some(&hook.customer_id),
                "OK",
                format!("webhook {id}: {n} dead letters requeued"),
            )
        };
        Ok(self
            .store
            .retry_dead(id, now.timestamp_millis(), audit)
            .await?)
    }

    /// A place for one more attempt of this webhook, if it has fewer than the cap in flight.
    fn slot(&self, webhook_id: &str) -> Option<Slot> {
        let mut m = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(webhook_id.to_string()).or_insert(0);
        if *n >= self.cfg.max_in_flight_per_webhook {
            return None;
        }
        *n += 1;
        Some(Slot {
            in_flight: self.in_flight.clone(),
            webhook_id: webhook_id.to_string(),
        })
    }

    /// Queues new events for every webhook and starts sending what is due, each attempt on its
    /// own task; it does not wait for them. Returns the attempts started.
    #[tracing::instrument(name = "webhooks.pass", skip_all, fields(idle = tracing::field::Empty))]
    pub async fn run_once(&self) -> Result<usize> {
        let now_ms = self.clock.now().timestamp_millis();
        let hooks = self.store.webhooks(None).await?;
        for hook in &hooks {
            // Up to 10 pages per round, so one busy webhook cannot starve the others.
            for _ in 0..10 {
                if self.store.queue_deliveries(hook, 500, now_ms).await? < 500 {
                    break;
                }
            }
        }
        // Cursors moved: read the webhooks again for the ones deleted meanwhile.
        let hooks: HashMap<String, Webhook> = self
            .store
            .webhooks(None)
            .await?
            .into_iter()
            .map(|w| (w.id.clone(), w))
            .collect();
        let due = self
            .store
            .due_deliveries(now_ms, self.cfg.max_in_flight_per_webhook, ROUND_LIMIT)
            .await?;
        let claim_ms = i64::try_from(self.cfg.timeout_ms).unwrap_or(i64::MAX / 4) + CLAIM_MARGIN_MS;
        let mut started = 0;
        for (mut d, e) in due {
            let Some(hook) = hooks.get(&d.webhook_id) else {
                continue;
            };
            let Some(slot) = self.slot(&hook.id) else {
                continue;
            };
            let until = self.clock.now().timestamp_millis().saturating_add(claim_ms);
            if !self.store.claim_delivery(&d, until).await? {
                continue;
            }
            d.next_attempt_ms = until;
            let (this, hook) = (self.clone(), hook.clone());
            self.tasks.spawn(async move {
                let _slot = slot;
                if let Err(err) = this.attempt(&hook, &d, &e).await {
                    warn!(error = %err, "recording a webhook attempt failed");
                }
            });
            started += 1;
        }
        if started == 0 {
            tracing::Span::current().record(crate::telemetry::IDLE_FIELD, true);
        }
        Ok(started)
    }

    /// Sends one delivery; the error is what the customer sees in `last_error`: the HTTP status
    /// or "connect failed", never the transport detail (which would map internal ports).
    async fn send(&self, hook: &Webhook, e: &EventRow) -> std::result::Result<(), String> {
        // IP literals never reach the resolver, and a webhook stored before a policy change
        // must not slip through: the URL is checked before every send.
        let url = reqwest::Url::parse(&hook.url).map_err(|_| "connect failed".to_string())?;
        if let Err(r) = self.policy.check_url(&url) {
            debug!(webhook = %hook.id, reason = r.describe(), "webhook target refused");
            return Err("connect failed".into());
        }
        let body = serde_json::to_vec(&Payload::of(e)).unwrap_or_default();
        let ts = self.clock.now().timestamp();
        let sent = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("x-simgate-event-id", e.id.to_string())
            .header("x-simgate-webhook-id", hook.id.clone())
            .header("x-simgate-timestamp", ts.to_string())
            .header("x-simgate-signature", signature(&hook.secret, ts, &body))
            .body(body)
            .send()
            .await;
        match sent {
            Ok(r) if r.status().is_success() => Ok(()),
            Ok(r) => Err(format!("HTTP {}", r.status().as_u16())),
            Err(err) => {
                debug!(webhook = %hook.id, error = %err, "webhook delivery failed");
                Err("connect failed".into())
            }
        }
    }

    async fn attempt(&self, hook: &Webhook, d: &Delivery, e: &EventRow) -> Result<()> {
        let error = self.send(hook, e).await.err();
        let now = self.clock.now();
        match error {
            None => {
                debug!(webhook = %hook.id, event = e.id, "webhook delivered");
                self.store
                    .mark_delivery(d, DeliveryState::Delivered, 0, "", now.timestamp_millis())
                    .await?;
            }
            Some(err) => {
                let attempts = d.attempts + 1;
                let state = after_failure(&self.cfg, attempts);
                let mut b = [0u8; 2];
                let jitter = getrandom::fill(&mut b)
                    .map(|_| f64::from(u16::from_le_bytes(b)) / f64::from(u16::MAX))
                    .unwrap_or(0.5);
                let wait = backoff(&self.cfg, attempts, jitter);
                let next = now + chrono::Duration::from_std(wait).unwrap_or_default();
                if state == DeliveryState::Dead {
                    warn!(webhook = %hook.id, event = e.id, attempts, error = %err, "webhook delivery dead-lettered");
                }
                self.store
                    .mark_delivery(
                        d,
                        state,
                        next.timestamp_millis(),
                        &err,
                        now.timestamp_millis(),
                    )
                    .await?;
            }
        }
        Ok(())
    }

    /// Delivers until `shutdown` turns true, then waits for the attempts in flight (each
    /// bounded by the request timeout).
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms));
        super::every(tick, shutdown, || async {
            if let Err(e) = self.run_once().await {
                warn!(error = %e, "webhook round failed; retrying");
            }
        })
        .await;
        self.tasks.close();
        self.tasks.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
        // Computed independently with Python's hmac module:
        // hmac.new(b"whsec_test", b"1700000000.{}", hashlib.sha256).hexdigest()
        assert_eq!(
            signature("whsec_test", 1_700_000_000, b"{}"),
            "v1=35495024f4ef3f94e5a93e22221544c4b75e9a42300cd965ab81cb85cd994e91"
        );
    }

    #[test]
    fn retries_back_off_exponentially_up_to_the_cap() {
        let cfg = WebhookConfig {
            retry_base_ms: 1000,
            retry_max_ms: 5000,
            ..WebhookConfig::default()
        };
        let ms = |a| backoff(&cfg, a, 0.0).as_millis();
        assert_eq!(
            [ms(1), ms(2), ms(3), ms(4), ms(10)],
            [1000, 2000, 4000, 5000, 5000]
        );
        // Jitter adds at most half.
        assert_eq!(backoff(&cfg, 1, 1.0).as_millis(), 1500);
    }

    #[test]
    fn the_last_failed_attempt_makes_a_dead_letter() {
        let cfg = WebhookConfig {
            max_attempts: 3,
            ..WebhookConfig::default()
        };
        assert_eq!(after_failure(&cfg, 2), DeliveryState::Pending);
        assert_eq!(after_failure(&cfg, 3), DeliveryState::Dead);
    }
}
