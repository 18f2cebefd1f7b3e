//! Webhook delivery for customers who do not speak gRPC: their events are POSTed as JSON, signed
//! with HMAC-SHA256, retried with exponential backoff and jitter, and parked as dead letters after
//! the last attempt (they can be put back in the queue with RetryWebhookDeliveries).
//!
//! Each webhook has a cursor into the event outbox; queuing moves it and inserts the deliveries
//! in one transaction, so every event is queued once. Sending is at least once: a receiver
//! dedupes on `X-Simgate-Event-Id`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use tracing::{debug, warn};

use super::{Caller, FieldViolation, Result, ServiceError};
use crate::clock::Clock;
use crate::store::{Delivery, DeliveryState, EventRow, Store, Webhook};

/// `[webhooks]`: how deliveries are retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
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
}

impl Default for WebhookConfig {
    fn default() -> Self {
        WebhookConfig {
            max_attempts: 8,
            retry_base_ms: 1000,
            retry_max_ms: 600_000,
            timeout_ms: 5000,
            poll_ms: 500,
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
        Ok(())
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

#[derive(Clone)]
pub struct WebhookService {
    store: Store,
    http: reqwest::Client,
    cfg: WebhookConfig,
    /// Wall time: retry waits are about the receiver being back, not about simulated card time.
    clock: std::sync::Arc<dyn Clock>,
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
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("webhook HTTP client: {e}"))?;
        Ok(WebhookService {
            store,
            http,
            cfg,
            clock: std::sync::Arc::new(crate::clock::SystemClock),
        })
    }

    pub async fn create(&self, new: NewWebhook, caller: &Caller) -> Result<Webhook> {
        if !caller.principal.sees(&new.customer_id) {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                "is not a customer this key may act for",
            )]));
        }
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
        self.store.insert_webhook(&hook).await?;
        Ok(hook)
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
        self.get(id, caller).await?;
        self.store
            .delete_webhook(id, self.clock.now().timestamp_millis())
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
        self.get(id, caller).await?;
        Ok(self
            .store
            .retry_dead(id, self.clock.now().timestamp_millis())
            .await?)
    }

    /// Queues new events for every webhook and sends what is due. Returns deliveries attempted.
    pub async fn run_once(&self) -> Result<usize> {
        let now_ms = self.clock.now().timestamp_millis();
        for hook in self.store.webhooks(None).await? {
            // Up to 10 pages per round, so one busy webhook cannot starve the others.
            for _ in 0..10 {
                if self.store.queue_deliveries(&hook, 500, now_ms).await? < 500 {
                    break;
                }
            }
        }
        let due = self.store.due_deliveries(now_ms, 200).await?;
        let hooks: std::collections::HashMap<String, Webhook> = self
            .store
            .webhooks(None)
            .await?
            .into_iter()
            .map(|w| (w.id.clone(), w))
            .collect();
        let sends = due.iter().filter_map(|(d, e)| {
            hooks
                .get(&d.webhook_id)
                .map(|hook| self.attempt(hook, d, e))
        });
        let results = futures::future::join_all(sends).await;
        for r in &results {
            if let Err(e) = r {
                warn!(error = %e, "recording a webhook attempt failed");
            }
        }
        Ok(results.len())
    }

    async fn attempt(&self, hook: &Webhook, d: &Delivery, e: &EventRow) -> Result<()> {
        let body = serde_json::to_vec(&Payload::of(e)).unwrap_or_default();
        let ts = self.clock.now().timestamp();
        let sent = self
            .http
            .post(&hook.url)
            .header("content-type", "application/json")
            .header("x-simgate-event-id", e.id.to_string())
            .header("x-simgate-webhook-id", hook.id.clone())
            .header("x-simgate-timestamp", ts.to_string())
            .header("x-simgate-signature", signature(&hook.secret, ts, &body))
            .body(body)
            .send()
            .await;
        let error = match sent {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => Some(format!("HTTP {}", r.status().as_u16())),
            Err(err) => Some(format!("{err}")),
        };
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

    /// Delivers until `shutdown` turns true.
    pub async fn run(self, shutdown: tokio::sync::watch::Receiver<bool>) {
        let tick = tokio::time::interval(Duration::from_millis(self.cfg.poll_ms));
        super::every(tick, shutdown, || async {
            if let Err(e) = self.run_once().await {
                warn!(error = %e, "webhook round failed; retrying");
            }
        })
        .await
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
