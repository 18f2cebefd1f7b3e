//! China Mobile OneLink (EC API v5): the adapter. (Skeleton: the helper for this carrier fills it in.)

use serde::{Deserialize, Serialize};

use super::{HttpTimeouts, Secret};

/// `[carrier_api.mobile]` with `platform = "onelink"`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct OneLinkConfig {
    /// Base URL of the platform, e.g. https://api.iot.10086.cn/v5/ec.
    pub base_url: String,
    pub appid: String,
    pub password: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
}
