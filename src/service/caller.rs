//! Who is calling: the principal, the request id and the RPC, for scoping and the audit log.

use chrono::{DateTime, Utc};

use crate::auth::Principal;
use crate::domain::Iccid;
use crate::store::AuditRecord;

/// Who is calling, for scoping and the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub principal: Principal,
    /// From the `x-request-id` metadata, or generated.
    pub request_id: String,
    /// The RPC, as the audit log names it.
    pub method: &'static str,
}

impl Caller {
    /// simgate itself (simulated traffic, tests): every customer, audited as `system`.
    pub fn system(method: &'static str) -> Caller {
        Caller {
            principal: Principal {
                key_id: "system".into(),
                role: crate::auth::Role::ResellerAdmin,
                customer_id: None,
            },
            request_id: uuid::Uuid::new_v4().to_string(),
            method,
        }
    }

    pub(super) fn audit(
        &self,
        at: DateTime<Utc>,
        iccid: Option<&Iccid>,
        customer: Option<&str>,
        result: &str,
        detail: String,
    ) -> AuditRecord {
        AuditRecord {
            at,
            key_id: self.principal.key_id.clone(),
            method: self.method.to_string(),
            iccid: iccid.map(|i| i.to_string()),
            customer_id: customer.map(str::to_string),
            request_id: self.request_id.clone(),
            result: result.to_string(),
            detail,
        }
    }
}
