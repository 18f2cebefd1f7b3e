//! OneLink's authentication: the token from `/get/token` (cached, refreshed before it lapses,
//! fetched once for concurrent callers) and the `transid` every call carries.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Map};

use super::wire::{codes, parse_token};
use super::{Failure, OneLink};
use crate::carrier::CarrierError;

pub(super) struct Token {
    value: String,
    /// When to fetch a new one: somewhat before the platform says it expires.
    refresh_at: Instant,
}

impl OneLink {
    /// appid + yyyyMMddHHmmss (Beijing time) + an 8-digit sequence.
    pub(super) fn transid(&self) -> String {
        let now = chrono::Utc::now().with_timezone(&chrono_tz::Asia::Shanghai);
        let seq = self.seq.fetch_add(1, Ordering::Relaxed) % 100_000_000;
        format!("{}{}{seq:08}", self.appid, now.format("%Y%m%d%H%M%S"))
    }

    /// A token valid for a while; `stale` is one the platform just refused.
    pub(super) async fn token(&self, stale: Option<&str>) -> Result<String, CarrierError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref() {
            let refused = stale == Some(t.value.as_str());
            if !refused && Instant::now() < t.refresh_at {
                return Ok(t.value.clone());
            }
        }
        let mut body = Map::new();
        body.insert("appid".into(), json!(self.appid));
        body.insert("password".into(), json!(self.password.expose()));
        body.insert("transid".into(), json!(self.transid()));
        let result = match self
            .exchange("/get/token", &body, self.token_method, false)
            .await
        {
            Ok(r) => r,
            // Wrong appid or password: a configuration error, final (12022 is reseller
            // evidence, [COTONDA]; the message is the platform's, never the password).
            Err(Failure::Refused { code, message }) if code == codes::CREDENTIALS_REFUSED => {
                return Err(CarrierError::Rejected { code, message })
            }
            // No other refusal of the token call is published: unavailable, retried later.
            Err(Failure::Refused { code, message }) => {
                return Err(CarrierError::Transient(format!(
                    "/get/token unavailable: status {code}, message {message}"
                )))
            }
            Err(Failure::TokenInvalid) => {
                return Err(CarrierError::Transient(format!(
                    "/get/token unavailable: status {}",
                    codes::TOKEN_INVALID
                )))
            }
            Err(Failure::Carrier(e)) => return Err(e),
        };
        let (value, ttl) = parse_token(&result)?;
        // Refresh a little early so that a call in flight never carries a token that lapses
        // on its way; a fifth of a short TTL, at most a minute of a long one.
        let margin = (ttl / 5).min(Duration::from_secs(60));
        *slot = Some(Token {
            value: value.clone(),
            refresh_at: Instant::now() + ttl - margin,
        });
        Ok(value)
    }
}
