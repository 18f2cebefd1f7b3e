//! Who may do what. API keys (`sgk_<id>_<secret>`: a public id to look the key up and 256
//! random bits of secret, of which only a SHA-256 is stored), the four roles, and the rules that
//! scope every principal to its own customer. Pure: the store keeps keys, the API layer asks.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// Every customer, every operation, key management and the simulation.
    ResellerAdmin,
    /// Everything on its own customer's cards, and that customer's keys.
    CustomerAdmin,
    /// Reads, and suspend/resume/recharge/renew/verify on its own customer's cards.
    CustomerOperator,
    /// Reads its own customer's cards.
    CustomerViewer,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::ResellerAdmin,
        Role::CustomerAdmin,
        Role::CustomerOperator,
        Role::CustomerViewer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::ResellerAdmin => "RESELLER_ADMIN",
            Role::CustomerAdmin => "CUSTOMER_ADMIN",
            Role::CustomerOperator => "CUSTOMER_OPERATOR",
            Role::CustomerViewer => "CUSTOMER_VIEWER",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.as_str() == s)
    }

    /// Customer roles need a customer; the reseller admin has none.
    pub fn needs_customer(self) -> bool {
        self != Role::ResellerAdmin
    }
}

/// What an RPC needs; `api::rpc` says which RPC needs which.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Read,
    Operate,
    Import,
    ManageKeys,
    ReadAudit,
    Simulate,
    /// The reseller's carrier accounts: their platforms, health and budgets.
    ReadAccounts,
}

/// An authenticated caller.
#[derive(Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub role: Role,
    /// The customer a customer role is confined to; None for the reseller admin.
    pub customer_id: Option<String>,
}

impl fmt::Debug for Principal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Principal")
            .field("key_id", &self.key_id)
            .field("role", &self.role)
            .field("customer_id", &self.customer_id)
            .finish()
    }
}

impl Principal {
    pub fn may(&self, p: Permission) -> bool {
        use Permission::*;
        use Role::*;
        matches!(
            (self.role, p),
            (ResellerAdmin, _)
                | (_, Read)
                | (CustomerAdmin | CustomerOperator, Operate)
                // Import stays the reseller's: cards enter through its inventory, so a customer
                // key can never claim an unregistered card of the reseller's carrier account.
                | (CustomerAdmin, ManageKeys | ReadAudit)
        )
    }

    /// Whether this principal may see a card or record of `customer_id` at all. A customer's
    /// principal asking for another customer's card gets NOT_FOUND, as for a missing one.
    pub fn sees(&self, customer_id: &str) -> bool {
        self.customer_id.as_deref().is_none_or(|c| c == customer_id)
    }

    /// Whether this principal may create a key of `role` for `customer`.
    pub fn may_grant(&self, role: Role, customer: Option<&str>) -> bool {
        match self.role {
            Role::ResellerAdmin => true,
            Role::CustomerAdmin => {
                role != Role::ResellerAdmin && customer == self.customer_id.as_deref()
            }
            _ => false,
        }
    }
}

/// A stored key, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub key_id: String,
    pub role: Role,
    pub customer_id: Option<String>,
    pub name: String,
    pub created_at: DateTime<Utc>,
    pub created_by: String,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl ApiKey {
    pub fn usable_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }

    pub fn principal(&self) -> Principal {
        Principal {
            key_id: self.key_id.clone(),
            role: self.role,
            customer_id: self.customer_id.clone(),
        }
    }
}

/// A freshly made key: the full text to hand out once, and what is stored.
pub struct NewKey {
    pub key_id: String,
    pub secret_hash: String,
    /// The whole key, `sgk_<id>_<secret>`. Never logged, never stored.
    pub token: String,
}

impl fmt::Debug for NewKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewKey")
            .field("key_id", &self.key_id)
            .field("token", &"<redacted>")
            .finish()
    }
}

const PREFIX: &str = "sgk_";

pub fn hash_secret(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Makes a new random key. Fails only if the operating system has no randomness to give.
pub fn generate() -> Result<NewKey, getrandom::Error> {
    let mut id = [0u8; 8];
    let mut secret = [0u8; 32];
    getrandom::fill(&mut id)?;
    getrandom::fill(&mut secret)?;
    let key_id: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let secret = URL_SAFE_NO_PAD.encode(secret);
    Ok(NewKey {
        token: format!("{PREFIX}{key_id}_{secret}"),
        secret_hash: hash_secret(&secret),
        key_id,
    })
}

/// Builds the stored form of a key given in full (the bootstrap key from the environment).
pub fn from_token(token: &str) -> Option<NewKey> {
    let (key_id, secret) = split(token)?;
    if secret.len() < 22 {
        // Under 128 bits of base64 text: not a key anyone should be able to guess.
        return None;
    }
    Some(NewKey {
        key_id: key_id.to_string(),
        secret_hash: hash_secret(secret),
        token: token.to_string(),
    })
}

/// Splits `sgk_<id>_<secret>` into id and secret; None for anything else.
pub fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix(PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let id_ok = id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit());
    let secret_ok = !secret.is_empty()
        && secret.len() <= 128
        && secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    (id_ok && secret_ok).then_some((id, secret))
}

/// Compares a presented secret with a stored hash in constant time.
pub fn secret_matches(secret: &str, stored_hash: &str) -> bool {
    hash_secret(secret)
        .as_bytes()
        .ct_eq(stored_hash.as_bytes())
        .into()
}

/// Reads `authorization: Bearer <key>`; None when missing or malformed (the caller answers
/// UNAUTHENTICATED without saying which).
pub fn bearer(header: Option<&str>) -> Option<&str> {
    let v = header?.trim();
    let (scheme, token) = v.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_parse_back_and_match_only_their_own_hash() {
        let k = generate().unwrap();
        let (id, secret) = split(&k.token).unwrap();
        assert_eq!(id, k.key_id);
        assert!(secret_matches(secret, &k.secret_hash));
        let other = generate().unwrap();
        assert_ne!(k.token, other.token);
        assert!(!secret_matches(secret, &other.secret_hash));
        assert!(secret.len() >= 43, "256 bits of secret");
        assert!(
            !format!("{k:?}").contains(secret),
            "Debug never shows the secret"
        );
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for bad in [
            "",
            "sgk_",
            "sgk_zz_abc",
            "Bearer x",
            "sgk_0123456789abcdef_",
            "sgk_0123456789abcdef_a b",
            "xyz_0123456789abcdef_abc",
        ] {
            assert!(split(bad).is_none(), "{bad:?}");
        }
        assert!(from_token("sgk_0123456789abcdef_short").is_none());
        assert!(from_token("sgk_0123456789abcdef_0123456789abcdefghijklmn").is_some());
    }

    #[test]
    fn bearer_header_is_read_case_insensitively() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(None), None);
    }

    fn p(role: Role, customer: Option<&str>) -> Principal {
        Principal {
            key_id: "k".into(),
            role,
            customer_id: customer.map(str::to_string),
        }
    }

    #[test]
    fn roles_grant_what_they_say() {
        use Permission::*;
        let admin = p(Role::ResellerAdmin, None);
        let cadmin = p(Role::CustomerAdmin, Some("acme"));
        let op = p(Role::CustomerOperator, Some("acme"));
        let viewer = p(Role::CustomerViewer, Some("acme"));
        for perm in [Read, Operate, Import, ManageKeys, ReadAudit, Simulate] {
            assert!(admin.may(perm));
        }
        // Cards enter through the reseller only.
        assert!(!cadmin.may(Import) && cadmin.may(ManageKeys) && !cadmin.may(Simulate));
        assert!(op.may(Operate) && op.may(Read) && !op.may(Import) && !op.may(ManageKeys));
        assert!(viewer.may(Read) && !viewer.may(Operate));
        assert!(op.sees("acme") && !op.sees("globex") && admin.sees("globex"));
        assert!(cadmin.may_grant(Role::CustomerViewer, Some("acme")));
        assert!(!cadmin.may_grant(Role::CustomerViewer, Some("globex")));
        assert!(!cadmin.may_grant(Role::ResellerAdmin, None));
        assert!(!op.may_grant(Role::CustomerViewer, Some("acme")));
    }

    #[test]
    fn expired_and_revoked_keys_are_not_usable() {
        let now = Utc::now();
        let mut k = ApiKey {
            key_id: "k".into(),
            role: Role::CustomerViewer,
            customer_id: Some("acme".into()),
            name: "n".into(),
            created_at: now,
            created_by: "boot".into(),
            expires_at: None,
            revoked_at: None,
        };
        assert!(k.usable_at(now));
        k.expires_at = Some(now);
        assert!(!k.usable_at(now));
        k.expires_at = None;
        k.revoked_at = Some(now);
        assert!(!k.usable_at(now));
    }
}
