//! Key management and the audit log as use cases: who may create, see and revoke which keys,
//! and whose audit entries a caller may read.

use chrono::{DateTime, Utc};

use super::{Caller, FieldViolation, Result, ServiceError};
use crate::auth::{self, ApiKey, Permission, Role};
use crate::store::{AuditEntry, AuditFilter, Store};

#[derive(Clone)]
pub struct AccessService {
    store: Store,
}

/// A refusal because of the caller's role; the API maps it to PERMISSION_DENIED.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Forbidden(pub String);

pub enum AccessError {
    Forbidden(Forbidden),
    Service(ServiceError),
}

impl From<ServiceError> for AccessError {
    fn from(e: ServiceError) -> Self {
        AccessError::Service(e)
    }
}

impl From<crate::store::StoreError> for AccessError {
    fn from(e: crate::store::StoreError) -> Self {
        AccessError::Service(e.into())
    }
}

impl AccessService {
    pub fn new(store: Store) -> AccessService {
        AccessService { store }
    }

    /// Creates a key the caller is allowed to grant. Returns it with its one-time secret.
    pub async fn create_key(
        &self,
        caller: &Caller,
        role: Role,
        customer_id: Option<String>,
        name: String,
        expires_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
    ) -> std::result::Result<(ApiKey, String), AccessError> {
        if role.needs_customer() != customer_id.is_some() {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "customer_id",
                if role.needs_customer() {
                    "is required for customer roles"
                } else {
                    "must be empty for the reseller admin"
                },
            )])
            .into());
        }
        if expires_at.is_some_and(|e| e <= now) {
            return Err(ServiceError::InvalidArgument(vec![FieldViolation::new(
                "expires_at",
                "must be in the future",
            )])
            .into());
        }
        if !caller.principal.may_grant(role, customer_id.as_deref()) {
            return Err(AccessError::Forbidden(Forbidden(format!(
                "a {} key cannot create a {} key for this customer",
                caller.principal.role.as_str(),
                role.as_str()
            ))));
        }
        let new = auth::generate().map_err(|e| {
            AccessError::Service(ServiceError::Store(crate::store::StoreError::Corrupt(
                format!("no randomness for a key: {e}"),
            )))
        })?;
        let key = ApiKey {
            key_id: new.key_id.clone(),
            role,
            customer_id: customer_id.clone(),
            name,
            created_at: now,
            created_by: caller.principal.key_id.clone(),
            expires_at,
            revoked_at: None,
        };
        let audit = caller.audit(
            now,
            None,
            customer_id.as_deref(),
            "OK",
            format!("created key {} ({})", key.key_id, role.as_str()),
        );
        self.store.insert_key(&new, &key, Some(&audit)).await?;
        Ok((key, new.token))
    }

    /// Keys the caller may see: all (or one customer's) for the reseller admin, its own
    /// customer's for a customer admin.
    pub async fn list_keys(
        &self,
        caller: &Caller,
        customer_id: Option<&str>,
    ) -> Result<Vec<ApiKey>> {
        let scope = caller.principal.customer_id.as_deref().or(customer_id);
        if caller.principal.customer_id.is_some() && customer_id.is_some_and(|c| Some(c) != scope) {
            return Ok(Vec::new());
        }
        Ok(self.store.list_keys(scope).await?)
    }

    /// Revokes a key the caller may see; another customer's key is NOT_FOUND.
    pub async fn revoke_key(
        &self,
        caller: &Caller,
        key_id: &str,
        now: DateTime<Utc>,
    ) -> Result<ApiKey> {
        let visible = self
            .store
            .get_key(key_id)
            .await?
            .map(|(k, _)| k)
            .filter(|k| match &caller.principal.customer_id {
                None => true,
                Some(own) => k.customer_id.as_deref() == Some(own.as_str()),
            });
        let Some(mut key) = visible else {
            return Err(ServiceError::ApiKeyNotFound(key_id.to_string()));
        };
        let audit = caller.audit(
            now,
            None,
            key.customer_id.as_deref(),
            "OK",
            format!("revoked key {key_id}"),
        );
        self.store.revoke_key(key_id, now, &audit).await?;
        key.revoked_at = key.revoked_at.or(Some(now));
        Ok(key)
    }

    /// Audit entries the caller may read, newest first.
    pub async fn audit(
        &self,
        caller: &Caller,
        mut filter: AuditFilter,
        before_id: i64,
        limit: u32,
    ) -> Result<Vec<AuditEntry>> {
        if let Some(own) = &caller.principal.customer_id {
            if filter.customer_id.as_ref().is_some_and(|c| c != own) {
                return Ok(Vec::new());
            }
            filter.customer_id = Some(own.clone());
        }
        Ok(self.store.list_audit(&filter, before_id, limit).await?)
    }

    /// Makes sure a reseller-admin key exists: the given one (from SIMGATE_BOOTSTRAP_KEY), or
    /// on an empty key table a new one. Returns the token when one was created.
    pub async fn bootstrap(
        &self,
        given: Option<&str>,
        now: DateTime<Utc>,
    ) -> std::result::Result<Option<String>, String> {
        let new = match given {
            Some(token) => {
                let new = auth::from_token(token).ok_or(
                    "SIMGATE_BOOTSTRAP_KEY is not a key: expected sgk_<16 hex>_<at least 22 characters of [A-Za-z0-9_-]>",
                )?;
                if self
                    .store
                    .get_key(&new.key_id)
                    .await
                    .map_err(|e| e.to_string())?
                    .is_some()
                {
                    return Ok(None);
                }
                new
            }
            None => {
                if self.store.count_keys().await.map_err(|e| e.to_string())? > 0 {
                    return Ok(None);
                }
                auth::generate().map_err(|e| e.to_string())?
            }
        };
        let key = ApiKey {
            key_id: new.key_id.clone(),
            role: Role::ResellerAdmin,
            customer_id: None,
            name: "bootstrap".into(),
            created_at: now,
            created_by: "bootstrap".into(),
            expires_at: None,
            revoked_at: None,
        };
        if given.is_none() {
            // The generated key is made once, whichever replica gets there first.
            let made = self
                .store
                .insert_first_key(&new, &key)
                .await
                .map_err(|e| e.to_string())?;
            return Ok(made.then_some(new.token));
        }
        if let Err(e) = self.store.insert_key(&new, &key, None).await {
            // Another replica starting at the same time inserted the same key first: it
            // exists, which is all a given bootstrap key asks for.
            if given.is_some() && matches!(self.store.get_key(&new.key_id).await, Ok(Some(_))) {
                return Ok(None);
            }
            return Err(e.to_string());
        }
        Ok(Some(new.token))
    }
}

/// Whether `p` may do `perm`, as a FAILED check message.
pub fn check(caller: &Caller, perm: Permission) -> std::result::Result<(), Forbidden> {
    if caller.principal.may(perm) {
        Ok(())
    } else {
        Err(Forbidden(format!(
            "role {} may not call {}",
            caller.principal.role.as_str(),
            caller.method
        )))
    }
}
