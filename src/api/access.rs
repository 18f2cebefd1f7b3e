//! `simgate.v1.AccessService`: API keys and the audit log.

use tonic::{Request, Response, Status};

use super::auth::Authenticator;
use super::convert::{customer_id_field, from_timestamp, page_size, timestamp};
use super::error::{invalid_argument, invalid_field};
use super::paging::Page;
use super::rpc::Rpc;
use crate::auth::{ApiKey, Role};
use crate::clock::Clock;
use crate::pb;
use crate::service::access::AccessService;
use crate::service::FieldViolation;
use crate::store::AuditFilter;

pub struct AccessApi {
    access: AccessService,
    auth: Authenticator,
    /// Wall time: key creation, expiry and revocation are security facts.
    clock: std::sync::Arc<dyn Clock>,
}

impl AccessApi {
    pub fn new(
        access: AccessService,
        auth: Authenticator,
        clock: std::sync::Arc<dyn Clock>,
    ) -> AccessApi {
        AccessApi {
            access,
            auth,
            clock,
        }
    }
}

fn role_to_pb(r: Role) -> pb::Role {
    match r {
        Role::ResellerAdmin => pb::Role::ResellerAdmin,
        Role::CustomerAdmin => pb::Role::CustomerAdmin,
        Role::CustomerOperator => pb::Role::CustomerOperator,
        Role::CustomerViewer => pb::Role::CustomerViewer,
    }
}

fn key_to_pb(k: &ApiKey) -> pb::ApiKey {
    pb::ApiKey {
        key_id: k.key_id.clone(),
        role: role_to_pb(k.role) as i32,
        customer_id: k.customer_id.clone().unwrap_or_default(),
        name: k.name.clone(),
        created_at: Some(timestamp(k.created_at)),
        created_by: k.created_by.clone(),
        expires_at: k.expires_at.map(timestamp),
        revoked_at: k.revoked_at.map(timestamp),
    }
}

fn optional_customer(field: &str, raw: &str) -> Result<Option<String>, FieldViolation> {
    if raw.is_empty() {
        Ok(None)
    } else {
        customer_id_field(field, raw).map(Some)
    }
}

#[tonic::async_trait]
impl pb::access_service_server::AccessService for AccessApi {
    async fn create_api_key(
        &self,
        request: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::CreateApiKey).await?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        let role = match pb::Role::try_from(req.role) {
            Ok(pb::Role::ResellerAdmin) => Some(Role::ResellerAdmin),
            Ok(pb::Role::CustomerAdmin) => Some(Role::CustomerAdmin),
            Ok(pb::Role::CustomerOperator) => Some(Role::CustomerOperator),
            Ok(pb::Role::CustomerViewer) => Some(Role::CustomerViewer),
            _ => {
                violations.push(FieldViolation::new("role", "is required"));
                None
            }
        };
        let customer = optional_customer("customer_id", &req.customer_id)
            .map_err(|v| violations.push(v))
            .ok()
            .flatten();
        if req.name.chars().count() > 100 {
            violations.push(FieldViolation::new(
                "name",
                "must be at most 100 characters",
            ));
        }
        let expires_at = match &req.expires_at {
            None => None,
            Some(t) => {
                let parsed = from_timestamp(t);
                if parsed.is_none() {
                    violations.push(FieldViolation::new("expires_at", "is not a valid time"));
                }
                parsed
            }
        };
        let Some(role) = role.filter(|_| violations.is_empty()) else {
            return Err(invalid_argument(violations));
        };
        let (key, secret) = self
            .access
            .create_key(
                &caller,
                role,
                customer,
                req.name,
                expires_at,
                self.clock.now(),
            )
            .await?;
        self.auth.forget(&key.key_id);
        Ok(Response::new(pb::CreateApiKeyResponse {
            key: Some(key_to_pb(&key)),
            key_secret: secret,
        }))
    }

    async fn list_api_keys(
        &self,
        request: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListApiKeys).await?;
        let customer = optional_customer("customer_id", &request.get_ref().customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        let keys = self.access.list_keys(&caller, customer.as_deref()).await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            keys: keys.iter().map(key_to_pb).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        request: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::ApiKey>, Status> {
        let caller = self.auth.caller(&request, Rpc::RevokeApiKey).await?;
        let key_id = request.into_inner().key_id;
        if key_id.len() != 16 || !key_id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(invalid_field(
                "key_id",
                "must be the 16 hex digits of a key id",
            ));
        }
        let key = self
            .access
            .revoke_key(&caller, &key_id, self.clock.now())
            .await?;
        self.auth.forget(&key_id);
        Ok(Response::new(key_to_pb(&key)))
    }

    async fn list_audit_entries(
        &self,
        request: Request<pb::ListAuditEntriesRequest>,
    ) -> Result<Response<pb::ListAuditEntriesResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListAuditEntries).await?;
        let req = request.into_inner();
        let size = page_size(req.page_size, 100)?;
        let unpaged = pb::ListAuditEntriesRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        };
        let page = Page::<i64>::read(
            "page_token",
            &req.page_token,
            size,
            "ListAuditEntries",
            &unpaged,
        )?;
        let text = |v: String| (!v.is_empty()).then_some(v);
        let filter = AuditFilter {
            key_id: text(req.key_id),
            iccid: text(req.iccid),
            customer_id: text(req.customer_id),
            method: text(req.method),
        };
        let before = page.after.unwrap_or(0);
        let mut entries = self
            .access
            .audit(&caller, filter, before, page.limit())
            .await?;
        let next_page_token = page.next(&mut entries, |last| last.id);
        Ok(Response::new(pb::ListAuditEntriesResponse {
            entries: entries
                .into_iter()
                .map(|e| pb::AuditEntry {
                    id: e.id,
                    at: Some(timestamp(e.record.at)),
                    key_id: e.record.key_id,
                    method: e.record.method,
                    iccid: e.record.iccid.unwrap_or_default(),
                    customer_id: e.record.customer_id.unwrap_or_default(),
                    request_id: e.record.request_id,
                    result: e.record.result,
                    detail: e.record.detail,
                })
                .collect(),
            next_page_token,
        }))
    }
}
