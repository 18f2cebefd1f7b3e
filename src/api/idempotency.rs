//! The request kit of mutating RPCs: the request id taken out of the request and checked, one
//! fingerprint of the rest, the replay of a stored first answer, and the [`Idem`] the service
//! stores the answer with. Every mutating handler goes through it, so a repeat is recognised
//! and answered the same way everywhere. A new one reads:
//!
//! ```ignore
//! let f = match self.begin(request, Rpc::RenewPlan).await? {
//!     Begun::Repeat(first) => return Ok(Response::new(first)),
//!     Begun::Fresh(f) => f,
//! };
//! let iccid = iccid(&f.req.iccid)?;
//! let respond = |(_, after): &(Card, Card)| self.card(after).encode_to_vec();
//! let idem = f.key.idem(&respond);
//! let card = self.service.renew(&iccid, f.req.months, &f.caller, idem.as_ref()).await?;
//! Ok(Response::new(self.card(&card)))
//! ```
//!
//! A handler that must validate some fields before the repeat check (so that the refusal does
//! not depend on what was stored) takes the steps itself: [`RequestKey::take`], then
//! [`RequestKey::replay`].

use prost::Message;
use sha2::{Digest, Sha256};
use tonic::{Request, Status};

use super::auth::Authenticator;
use super::error::invalid_field;
use super::rpc::Rpc;
use crate::service::{Caller, CardService, Idem};

/// Longest request id: it is stored and compared byte for byte.
const MAX_REQUEST_ID_LEN: usize = 128;

/// A request that carries a `request_id`.
pub(crate) trait Idempotent: Message + Sized {
    /// Takes the request id out, so that the fingerprint is of the request alone.
    fn take_request_id(&mut self) -> String;
}

/// Implements [`Idempotent`] for requests with a `request_id` field; each API file names its own.
macro_rules! idempotent {
    ($($t:ty),* $(,)?) => {$(
        impl $crate::api::idempotency::Idempotent for $t {
            fn take_request_id(&mut self) -> String {
                std::mem::take(&mut self.request_id)
            }
        }
    )*};
}
pub(crate) use idempotent;

/// An answer as it is stored with the change it reports, and read back for a repeat.
pub(crate) trait StoredAnswer: Sized {
    fn to_stored(&self) -> Vec<u8>;
    fn from_stored(bytes: &[u8]) -> Option<Self>;
}

/// Most answers are the response message itself.
impl<M: Message + Default> StoredAnswer for M {
    fn to_stored(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    fn from_stored(bytes: &[u8]) -> Option<Self> {
        M::decode(bytes).ok()
    }
}

/// A bulk operation's answer is its id: a repeat reports the operation as it is now, not as it
/// was when it was accepted. Stored as the id's bytes.
pub(crate) struct OperationId(pub String);

impl StoredAnswer for OperationId {
    fn to_stored(&self) -> Vec<u8> {
        self.0.as_bytes().to_vec()
    }

    fn from_stored(bytes: &[u8]) -> Option<Self> {
        Some(OperationId(String::from_utf8_lossy(bytes).to_string()))
    }
}

/// What a repeat of a request is recognised by: the caller's request id (empty: the request is
/// not idempotent) and the SHA-256 of the request without it.
pub(crate) struct RequestKey {
    request_id: String,
    fingerprint: String,
}

impl RequestKey {
    /// Takes the request id out of `req`, checks it, and fingerprints the rest.
    pub(crate) fn take<R: Idempotent>(req: &mut R) -> Result<RequestKey, Status> {
        let request_id = req.take_request_id();
        check_request_id(&request_id)?;
        let digest = Sha256::digest(req.encode_to_vec());
        Ok(RequestKey {
            request_id,
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        })
    }

    /// The first answer to this request, if the caller sent the same request before.
    pub(crate) async fn replay<A: StoredAnswer>(
        &self,
        service: &CardService,
        caller: &Caller,
    ) -> Result<Option<A>, Status> {
        match service
            .replay(caller, &self.request_id, &self.fingerprint)
            .await?
        {
            None => Ok(None),
            Some(bytes) => A::from_stored(&bytes)
                .map(Some)
                .ok_or_else(|| Status::internal("a stored answer could not be read")),
        }
    }

    /// What the service stores the answer under (encoded by `respond` from what the use case
    /// returns); None for a request without a request id.
    pub(crate) fn idem<'a, T: ?Sized>(
        &self,
        respond: &'a (dyn Fn(&T) -> Vec<u8> + Send + Sync),
    ) -> Option<Idem<'a, T>> {
        (!self.request_id.is_empty()).then(|| Idem {
            request_id: self.request_id.clone(),
            fingerprint: self.fingerprint.clone(),
            respond,
        })
    }
}

/// An idempotency key: up to 128 visible ASCII characters. Spaces are refused too (they are
/// printable, so the message says what is meant): a key is compared byte for byte, and a
/// trailing space a client's form adds would silently make it another key.
fn check_request_id(request_id: &str) -> Result<(), Status> {
    if request_id.len() > MAX_REQUEST_ID_LEN || !request_id.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid_field(
            "request_id",
            "must be at most 128 visible ASCII characters: letters, digits and punctuation, no spaces or control characters",
        ));
    }
    Ok(())
}

/// A mutating request after authentication and the repeat check.
pub(crate) enum Begun<R, A> {
    /// The same request came before: its first answer.
    Repeat(A),
    /// A request to carry out.
    Fresh(Fresh<R>),
}

/// A request to carry out, with what its answer is stored under.
pub(crate) struct Fresh<R> {
    pub caller: Caller,
    /// The request, its request id taken out.
    pub req: R,
    pub key: RequestKey,
}

/// Authenticates `request` for `rpc`, takes its request id out, and answers a repeat with its
/// first answer.
pub(crate) async fn begin<R: Idempotent, A: StoredAnswer>(
    auth: &Authenticator,
    service: &CardService,
    request: Request<R>,
    rpc: Rpc,
) -> Result<Begun<R, A>, Status> {
    let caller = auth.caller(&request, rpc).await?;
    let mut req = request.into_inner();
    let key = RequestKey::take(&mut req)?;
    Ok(match key.replay(service, &caller).await? {
        Some(first) => Begun::Repeat(first),
        None => Begun::Fresh(Fresh { caller, req, key }),
    })
}
