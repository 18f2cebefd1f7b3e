//! China Unicom Control Center (Cisco Jasper REST): the adapter. (Skeleton: the helper for this carrier fills it in.)

use serde::{Deserialize, Serialize};

use super::{HttpTimeouts, Secret};

/// `[carrier_api.unicom]` with `platform = "jasper"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JasperConfig {
    /// Base URL of the platform, e.g. https://api.10646.cn/rws/api/v1.
    pub base_url: String,
    pub username: String,
    pub api_key: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
}
