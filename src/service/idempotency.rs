//! Idempotent requests on the service side: what a use case is told about a request the caller
//! may repeat ([`Idem`]), the record that stores its first answer in the same transaction as the
//! change it reports, and the lookup of that answer when the request comes again.

use chrono::{DateTime, Utc};

use super::{Caller, CardService, FieldViolation, Result, ServiceError};
use crate::store::IdempotencyRecord;

/// A request the caller may repeat: its id, a fingerprint of its content, and how to encode its
/// answer from what the use case returns (`T`: the card before and after for a card change,
/// the pool for a top-up, the batch for a bulk operation ...). The answer is encoded inside the
/// use case so that it is stored with the change it reports, never apart from it.
pub struct Idem<'a, T: ?Sized> {
    pub request_id: String,
    pub fingerprint: String,
    pub respond: &'a (dyn Fn(&T) -> Vec<u8> + Send + Sync),
}

impl<T: ?Sized> Idem<'_, T> {
    /// The stored first answer to this request: `outcome` encoded, under the caller's key.
    pub(crate) fn record(
        &self,
        caller: &Caller,
        outcome: &T,
        now: DateTime<Utc>,
    ) -> IdempotencyRecord {
        IdempotencyRecord {
            key_id: caller.principal.key_id.clone(),
            request_id: self.request_id.clone(),
            method: caller.method.to_string(),
            fingerprint: self.fingerprint.clone(),
            response: (self.respond)(outcome),
            created_ms: now.timestamp_millis(),
        }
    }
}

impl CardService {
    /// The stored answer to `request_id` if the caller made this request before; refuses an id
    /// already used for a different request (or for another RPC).
    pub async fn replay(
        &self,
        caller: &Caller,
        request_id: &str,
        fingerprint: &str,
    ) -> Result<Option<Vec<u8>>> {
        if request_id.is_empty() {
            return Ok(None);
        }
        match self
            .store
            .get_idempotency(&caller.principal.key_id, request_id)
            .await?
        {
            None => Ok(None),
            Some(r) if r.method == caller.method && r.fingerprint == fingerprint => {
                Ok(Some(r.response))
            }
            Some(_) => Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "request_id",
                "was already used for a different request",
            )])),
        }
    }
}
