//! China Telecom CMP (m2m_ec): the adapter. (Skeleton: the helper for this carrier fills it in.)

use serde::{Deserialize, Serialize};

use super::{HttpTimeouts, Secret};

/// `[carrier_api.telecom]` with `platform = "cmp"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CmpConfig {
    /// Base URL of the platform, e.g. http://api.ct10649.com:9001/m2m_ec.
    pub base_url: String,
    pub user_id: String,
    pub password: Secret,
    /// The 9-character secret from which the three DES keys are taken.
    pub key: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
}
