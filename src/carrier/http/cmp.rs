//! China Telecom CMP (m2m_ec): the adapter, its signing scheme and its mapping tables.
//!
//! Upstream calls (all `GET`, account in the query string):
//! - `{base_url}/query.do?method=queryCardMainStatus` (JSON): the card's main status, for
//!   `card()`, `cancel()` (is it dismantled?), `onboard()` (does it exist?) and to confirm an
//!   idempotent stop/restore answered `-5`.
//! - `{base_url}/query.do?method=queryTraffic&needDtl=0` (XML): this month's data usage, for `card()`.
//! - `{base_url}/app/serviceAccept.do?method=disabledNumber&orderTypeId=19|20&acctCd=` (XML):
//!   stop with number retention (停机保号) and restore, for `stop()` / `restore()`.
//! - `{base_url}/query.do?method=getOnlineStatus` (JSON): the last session, for `card()` and
//!   [`Cmp::online_status`].
//! - `{base_url}/query.do?method=realNameQueryIot` (XML or JSON): [`Cmp::real_name`].
//!
//! Auth: `user_id`, `passWord` = [`crypt::encrypt`] of the password, and `sign` =
//! [`crypt::sign`] over every other parameter value plus the plain password. The module owns
//! Telecom's JS-style triple-key DES (the cipher itself comes from the `des` crate).
//!
//! What public client code confirms and what it does not is written next to each table and
//! envelope below; the wire simulator (`crate::simulate::cmp`) speaks exactly these choices.

use async_trait::async_trait;
use chrono::{DateTime, NaiveDateTime, TimeZone, Utc};
use serde::{Deserialize, Serialize};

use super::{client, malformed, retry_after, send_error, status_error, HttpTimeouts, Secret};
use crate::carrier::{Carrier, CarrierCard, CarrierError, OnboardCard, ServiceState};
use crate::domain::{CarrierId, CarrierPolicy, Iccid};

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

pub const QUERY_PATH: &str = "/query.do";
pub const CHANGE_PATH: &str = "/app/serviceAccept.do";

pub const M_STATUS: &str = "queryCardMainStatus";
pub const M_TRAFFIC: &str = "queryTraffic";
pub const M_DISABLE: &str = "disabledNumber";
pub const M_ONLINE: &str = "getOnlineStatus";
pub const M_REAL_NAME: &str = "realNameQueryIot";

/// `orderTypeId` of `disabledNumber`: 19 stops with number retention (停机保号), 20 restores.
pub const ORDER_STOP: &str = "19";
pub const ORDER_RESTORE: &str = "20";

// ---------------------------------------------------------------------------------------------
// Mapping tables: the only place platform codes are interpreted.
// ---------------------------------------------------------------------------------------------

/// `productMainStatusCd` → simgate's service state.
pub fn main_status(code: &str) -> Option<ServiceState> {
    Some(match code {
        // 可激活: not yet used; the card attaches and starts service on first use, nobody stopped it.
        "1" => ServiceState::Active,
        // 测试激活: test period, the card has service.
        "2" => ServiceState::Active,
        // 测试去激活: the test period ended without activation: no service until activated.
        "3" => ServiceState::Stopped,
        // 在用: in use.
        "4" => ServiceState::Active,
        // 停机: stopped, whether 停机保号 or deactivated.
        "5" => ServiceState::Stopped,
        // 运营商管理状态: pre-opened, arrears stop or emergency stop by the carrier. The card has
        // no service and simgate cannot restore it, but it is not cancelled: Stopped.
        "6" => ServiceState::Stopped,
        // 拆机: dismantled, the number is released.
        "7" => ServiceState::Cancelled,
        _ => return None,
    })
}

/// simgate's service state → `productMainStatusCd`, for the simulator.
pub fn main_status_code(state: ServiceState) -> &'static str {
    match state {
        ServiceState::Active => "4",
        ServiceState::Stopped => "5",
        ServiceState::Cancelled => "7",
    }
}

/// The main status code of a dismantled card.
pub const DISMANTLED: &str = "7";

/// The platform's documented error codes and what they mean.
pub const ERROR_CODES: &[(&str, &str)] = &[
    ("-1", "bad user or password"),
    ("-2", "missing parameter"),
    ("-3", "bad sign"),
    ("-4", "bad iccid"),
    ("-5", "already ordered"),
    ("-7", "a request is already in progress for this number"),
    (RATE_LIMITED, "too many requests"),
];

/// Too many requests.
pub const RATE_LIMITED: &str = "101004";
/// Already ordered: answered to a stop of a stopped card (and a restore of an active one).
pub const ALREADY_ORDERED: &str = "-5";
/// Code simgate uses when `cancel()` finds the card not dismantled at the platform.
pub const NOT_DISMANTLED: &str = "NOT_DISMANTLED";

/// A platform result code (not "0") → the trait's error kind. The platform's own code and
/// message are kept; a missing message is filled from [`ERROR_CODES`]. `-7` (a change in
/// progress) is a refusal of this request: nothing was applied, the caller decides.
pub fn platform_error(code: &str, message: &str) -> CarrierError {
    if code == RATE_LIMITED {
        // The platform sends no retry time with 101004.
        return CarrierError::RateLimited { retry_after: None };
    }
    let message = if message.trim().is_empty() {
        ERROR_CODES
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, m)| (*m).to_string())
            .unwrap_or_else(|| "refused by the platform".to_string())
    } else {
        message.to_string()
    };
    CarrierError::Rejected {
        code: code.to_string(),
        message,
    }
}

// ---------------------------------------------------------------------------------------------
// Envelopes. Field names follow public client code (nkypy/carrier-api `china_telecom`, and
// Java/C#/Go clients found by search):
// - queryCardMainStatus: JSON resultCode/resultMsg/productInfo[].productMainStatusCd — confirmed.
// - queryTraffic: XML <root><web:NEW_DATA_TICKET_QRsp><IRESULT/><TOTAL_BYTES_CNT>1.23MB</..> —
//   confirmed, the unit is MB with two decimals.
// - disabledNumber: XML <SvcCont><Response><RspType/><RspCode/><RspDesc/></Response> — the
//   platform's change answer as public clients parse it for other changes; not confirmed for
//   disabledNumber itself.
// - realNameQueryIot: resultCode (0 = real-name registered) and prodMainStatusName/certNumber,
//   answered as XML by some accounts and JSON by others — both accepted.
// - getOnlineStatus: NOT confirmed by any public code found; JSON resultCode/resultMsg plus
//   `onlineStatus` ("1" online) and `startTime` (session start, yyyy-MM-dd HH:mm:ss, Beijing).
// - Refusals (bad auth, bad iccid, 101004...): JSON {"resultCode": code, "resultMsg": msg},
//   the queryCardMainStatus envelope; `RESULT`/`SMSG` (getTelephone's envelope) is accepted too.
//   That XML methods refuse in JSON is an assumption.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize, Serialize)]
pub struct JsonResult {
    #[serde(rename = "resultCode", alias = "RESULT", default)]
    pub result_code: Option<String>,
    #[serde(rename = "resultMsg", alias = "SMSG", default)]
    pub result_msg: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ProductInfo {
    #[serde(rename = "productMainStatusCd")]
    pub status_code: String,
    #[serde(rename = "productMainStatusName", default)]
    pub status_name: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct StatusReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub number: String,
    #[serde(rename = "servCreateDate", default)]
    pub serv_create_date: String,
    #[serde(rename = "productInfo", default)]
    pub product_info: Vec<ProductInfo>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "root")]
pub struct TrafficRoot {
    // quick-xml matches the qualified name; accept the prefix-less form as well.
    #[serde(rename = "web:NEW_DATA_TICKET_QRsp", alias = "NEW_DATA_TICKET_QRsp")]
    pub rsp: TrafficRsp,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct TrafficRsp {
    #[serde(rename = "IRESULT")]
    pub iresult: String,
    #[serde(rename = "TOTAL_BYTES_CNT", default)]
    pub total_bytes_cnt: String,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
    #[serde(default)]
    pub number: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "SvcCont")]
pub struct ChangeReply {
    #[serde(rename = "Response")]
    pub response: ChangeResponse,
    #[serde(rename = "GROUP_TRANSACTIONID", default)]
    pub transaction_id: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct ChangeResponse {
    #[serde(rename = "RspType")]
    pub rsp_type: String,
    #[serde(rename = "RspCode")]
    pub rsp_code: String,
    #[serde(rename = "RspDesc", default)]
    pub rsp_desc: String,
}

/// Success of a change: `RspType` 0 with `RspCode` 0000.
pub const CHANGE_OK: &str = "0000";

#[derive(Debug, Deserialize, Serialize)]
#[serde(rename = "SvcCont")]
pub struct RealNameReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(rename = "prodMainStatusName", default)]
    pub prod_main_status_name: String,
    #[serde(rename = "certNumber", default)]
    pub cert_number: String,
}

#[derive(Debug, Deserialize, Serialize)]
pub struct OnlineReply {
    #[serde(rename = "resultCode")]
    pub result_code: String,
    #[serde(rename = "resultMsg", default)]
    pub result_msg: String,
    #[serde(default)]
    pub number: String,
    #[serde(rename = "onlineStatus", default)]
    pub online_status: String,
    #[serde(rename = "startTime", default)]
    pub start_time: String,
}

/// Time format of the platform's timestamps, in Beijing time.
pub const TIME_FORMAT: &str = "%Y-%m-%d %H:%M:%S";

/// A platform timestamp (Beijing time) in UTC.
pub fn parse_time(s: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(s.trim(), TIME_FORMAT).ok()?;
    chrono_tz::Asia::Shanghai
        .from_local_datetime(&naive)
        .single()
        .map(|t| t.with_timezone(&Utc))
}

const MIB: u64 = 1024 * 1024;

/// `TOTAL_BYTES_CNT` ("12.34MB") in bytes. The platform rounds to 1/100 MB, so the result is
/// exact only to about 10 KB.
pub fn parse_mb(s: &str) -> Option<u64> {
    let num = s.trim().strip_suffix("MB")?.trim();
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.is_empty()
        || frac.len() > 2
        || !(int.bytes().chain(frac.bytes())).all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let int: u64 = int.parse().ok()?;
    let hundredths: u64 = format!("{frac:0<2}").parse().ok()?;
    let whole = int.checked_mul(MIB)?;
    whole.checked_add((hundredths * MIB + 50) / 100)
}

/// Bytes as the platform writes them ("12.34MB"), for the simulator.
pub fn format_mb(bytes: u64) -> String {
    let hundredths = (bytes as u128 * 100 + (MIB as u128) / 2) / MIB as u128;
    format!("{}.{:02}MB", hundredths / 100, hundredths % 100)
}

/// Real-name status of a card, as `realNameQueryIot` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RealName {
    Registered,
    /// Not (yet) registered, with the platform's code and message.
    NotRegistered {
        code: String,
        message: String,
    },
}

/// Online state, as `getOnlineStatus` says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OnlineStatus {
    pub online: bool,
    /// Start of the current or last data session, when the platform gives one.
    pub last_session_at: Option<DateTime<Utc>>,
}

// ---------------------------------------------------------------------------------------------
// Telecom's JS-style DES (the `strEnc(data, k1, k2, k3)` of the platform's demo code).
// ---------------------------------------------------------------------------------------------

pub mod crypt {
    //! Telecom's `strEnc`/`strDec`: the text is cut into blocks of four UTF-16 code units (16
    //! bits each, big-endian, zero padded), each block is DES-encrypted with key 1, then key 2,
    //! then key 3 (three encryptions, not EDE), and written as 16 upper-case hex digits. Each key
    //! is three characters of the 9-character secret, laid out the same way (zero padded), and
    //! goes through des.js's own key schedule (see `js_key`).

    use des::cipher::generic_array::GenericArray;
    use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
    use des::Des;

    fn block_of(units: &[u16]) -> [u8; 8] {
        let mut b = [0u8; 8];
        for (i, u) in units.iter().take(4).enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
        }
        b
    }

    /// Standard DES PC-1 (1-based bit positions of the key).
    const PC1: [usize; 56] = [
        57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3,
        60, 52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45,
        37, 29, 21, 13, 5, 28, 20, 12, 4,
    ];

    fn bit(b: &[u8; 8], i: usize) -> bool {
        b[i / 8] & (0x80 >> (i % 8)) != 0
    }

    /// Telecom's des.js is standard DES except for its key schedule: its PC-1 reads the key as
    /// `key[8 * (7 - j) + i]` for the i-th row, j-th column, which differs from the standard
    /// table in the D half. Permuting the key's bits so that the standard PC-1 picks the same
    /// bits makes the `des` crate compute exactly des.js (the public vectors prove it).
    fn js_key(raw: [u8; 8]) -> [u8; 8] {
        let mut out = [0u8; 8];
        for (p, std_pos) in PC1.iter().enumerate() {
            let (i, j) = (p / 8, p % 8);
            if bit(&raw, 8 * (7 - j) + i) {
                let dst = std_pos - 1;
                out[dst / 8] |= 0x80 >> (dst % 8);
            }
        }
        out
    }

    fn ciphers(secret: &str) -> Result<[Des; 3], String> {
        let units: Vec<u16> = secret.encode_utf16().collect();
        if units.len() != 9 {
            return Err(format!(
                "the CMP key must be 9 characters, got {}",
                units.len()
            ));
        }
        let make = |i: usize| {
            Des::new_from_slice(&js_key(block_of(&units[3 * i..3 * i + 3])))
                .map_err(|_| "invalid DES key".to_string())
        };
        Ok([make(0)?, make(1)?, make(2)?])
    }

    /// `strEnc(data, key[0..3], key[3..6], key[6..9])`. An empty text gives an empty string.
    pub fn encrypt(data: &str, secret: &str) -> Result<String, String> {
        let keys = ciphers(secret)?;
        let units: Vec<u16> = data.encode_utf16().collect();
        let mut out = String::with_capacity(units.len().div_ceil(4) * 16);
        for chunk in units.chunks(4) {
            let mut block = GenericArray::from(block_of(chunk));
            for k in &keys {
                k.encrypt_block(&mut block);
            }
            for byte in block {
                out.push_str(&format!("{byte:02X}"));
            }
        }
        Ok(out)
    }

    /// `strDec`: the inverse of [`encrypt`]; trailing zero padding is dropped.
    pub fn decrypt(hex: &str, secret: &str) -> Result<String, String> {
        let keys = ciphers(secret)?;
        if !hex.len().is_multiple_of(16) || !hex.is_ascii() {
            return Err("not a DES hex string".into());
        }
        let mut units = Vec::with_capacity(hex.len() / 4);
        for i in (0..hex.len()).step_by(16) {
            let mut b = [0u8; 8];
            for (j, byte) in b.iter_mut().enumerate() {
                let at = i + 2 * j;
                *byte = u8::from_str_radix(&hex[at..at + 2], 16)
                    .map_err(|_| "not a DES hex string".to_string())?;
            }
            let mut block = GenericArray::from(b);
            for k in keys.iter().rev() {
                k.decrypt_block(&mut block);
            }
            for pair in block.chunks(2) {
                units.push(u16::from_be_bytes([pair[0], pair[1]]));
            }
        }
        while units.last() == Some(&0) {
            units.pop();
        }
        Ok(String::from_utf16_lossy(&units))
    }

    /// `sign`: [`encrypt`] over the values sorted in natural (Java `String`, UTF-16) order and
    /// joined with commas.
    pub fn sign(values: &[&str], secret: &str) -> Result<String, String> {
        let mut v = values.to_vec();
        v.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
        encrypt(&v.join(","), secret)
    }
}

/// The `sign` of a request: every parameter value except `passWord` and `sign`, plus the plain
/// password. (The C++ client's `strEncSign6` for disabledNumber signs access number, user,
/// password, method, acctCd and orderTypeId: the same rule.)
pub fn request_sign(
    params: &[(&str, String)],
    password: &str,
    secret: &str,
) -> Result<String, String> {
    let mut values: Vec<&str> = params
        .iter()
        .filter(|(k, _)| *k != "passWord" && *k != "sign")
        .map(|(_, v)| v.as_str())
        .collect();
    values.push(password);
    crypt::sign(&values, secret)
}

// ---------------------------------------------------------------------------------------------
// The adapter.
// ---------------------------------------------------------------------------------------------

pub struct Cmp {
    http: reqwest::Client,
    base_url: String,
    user_id: String,
    password: Secret,
    key: Secret,
    policy: CarrierPolicy,
}

impl std::fmt::Debug for Cmp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cmp")
            .field("base_url", &self.base_url)
            .field("user_id", &self.user_id)
            .finish_non_exhaustive()
    }
}

impl Cmp {
    pub fn new(cfg: &CmpConfig, policy: CarrierPolicy) -> Result<Cmp, String> {
        let base = url::Url::parse(&cfg.base_url)
            .map_err(|e| format!("carrier_api.telecom.base_url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err(
                "carrier_api.telecom.base_url must be an http(s) URL without a query".into(),
            );
        }
        // Fails now rather than on the first call when the key has the wrong length.
        crypt::encrypt("", cfg.key.expose())
            .map_err(|e| format!("carrier_api.telecom.key: {e}"))?;
        Ok(Cmp {
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            user_id: cfg.user_id.clone(),
            password: cfg.password.clone(),
            key: cfg.key.clone(),
            policy,
        })
    }

    /// Sends one signed call and returns the body of a 2xx answer. The URL (with the password
    /// and sign) is never put in an error or a log line.
    async fn call(
        &self,
        path: &str,
        method: &str,
        iccid: &Iccid,
        extras: &[(&'static str, &str)],
        changes: bool,
    ) -> Result<String, CarrierError> {
        let mut params: Vec<(&str, String)> = vec![
            ("method", method.to_string()),
            ("user_id", self.user_id.clone()),
            // The platform takes an ICCID (19-20 characters) as `iccid`, anything shorter as
            // `access_number`; simgate only knows ICCIDs.
            ("iccid", iccid.as_str().to_string()),
        ];
        params.extend(extras.iter().map(|(k, v)| (*k, v.to_string())));
        let secret = self.key.expose();
        let password = self.password.expose();
        let sign = request_sign(&params, password, secret).map_err(CarrierError::Transient)?;
        let pass = crypt::encrypt(password, secret).map_err(CarrierError::Transient)?;
        params.push(("passWord", pass));
        params.push(("sign", sign));
        let resp = self
            .http
            .get(format!("{}{}", self.base_url, path))
            .query(&params)
            .send()
            .await
            .map_err(|e| send_error(e, changes))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(status_error(status, retry_after(resp.headers())));
        }
        resp.text().await.map_err(|e| send_error(e, changes))
    }

    async fn status(&self, iccid: &Iccid) -> Result<StatusReply, CarrierError> {
        let body = self.call(QUERY_PATH, M_STATUS, iccid, &[], false).await?;
        let reply: StatusReply = parse_json(&body, M_STATUS, false)?;
        if reply.result_code != "0" {
            return Err(platform_error(&reply.result_code, &reply.result_msg));
        }
        Ok(reply)
    }

    async fn state(&self, iccid: &Iccid) -> Result<(String, ServiceState), CarrierError> {
        let reply = self.status(iccid).await?;
        // A card can list several products; 6 (carrier-managed) sits next to the real status,
        // so the first other one wins (as nkypy/carrier-api does).
        let info = reply
            .product_info
            .iter()
            .find(|p| p.status_code != "6")
            .or_else(|| reply.product_info.first())
            .ok_or_else(|| malformed("queryCardMainStatus without productInfo", false))?;
        let state = main_status(&info.status_code).ok_or_else(|| {
            malformed(
                &format!("unknown productMainStatusCd {:?}", info.status_code),
                false,
            )
        })?;
        Ok((info.status_code.clone(), state))
    }

    async fn usage(&self, iccid: &Iccid) -> Result<u64, CarrierError> {
        let body = self
            .call(QUERY_PATH, M_TRAFFIC, iccid, &[("needDtl", "0")], false)
            .await?;
        let root: TrafficRoot = parse_xml(&body, M_TRAFFIC, false)?;
        if root.rsp.iresult != "0" {
            return Err(platform_error(&root.rsp.iresult, ""));
        }
        parse_mb(&root.rsp.total_bytes_cnt)
            .ok_or_else(|| malformed("queryTraffic TOTAL_BYTES_CNT is not N.NNMB", false))
    }

    async fn change(
        &self,
        iccid: &Iccid,
        order: &str,
        to: ServiceState,
    ) -> Result<(), CarrierError> {
        let body = self
            .call(
                CHANGE_PATH,
                M_DISABLE,
                iccid,
                &[("orderTypeId", order), ("acctCd", "")],
                true,
            )
            .await?;
        let (code, message) = match parse_xml::<ChangeReply>(&body, M_DISABLE, true) {
            Ok(r) if r.response.rsp_type == "0" && r.response.rsp_code == CHANGE_OK => {
                return Ok(())
            }
            Ok(r) => (r.response.rsp_code, r.response.rsp_desc),
            Err(e) => return Err(e),
        };
        if code == ALREADY_ORDERED {
            // -5 also answers an order that is pending for another reason: only the card's
            // state tells whether the change is already in effect.
            let (_, now) = self.state(iccid).await?;
            if now == to {
                return Ok(());
            }
        }
        Err(platform_error(&code, &message))
    }

    /// `getOnlineStatus`: whether the card has a data session now, and when it started.
    pub async fn online_status(&self, iccid: &Iccid) -> Result<OnlineStatus, CarrierError> {
        let body = self.call(QUERY_PATH, M_ONLINE, iccid, &[], false).await?;
        let reply: OnlineReply = parse_json(&body, M_ONLINE, false)?;
        if reply.result_code != "0" {
            return Err(platform_error(&reply.result_code, &reply.result_msg));
        }
        Ok(OnlineStatus {
            online: reply.online_status == "1",
            last_session_at: parse_time(&reply.start_time),
        })
    }

    /// `realNameQueryIot`: whether the card's real-name registration (实名) is done.
    pub async fn real_name(&self, iccid: &Iccid) -> Result<RealName, CarrierError> {
        let body = self
            .call(QUERY_PATH, M_REAL_NAME, iccid, &[], false)
            .await?;
        let reply: RealNameReply = if body.trim_start().starts_with('{') {
            parse_json(&body, M_REAL_NAME, false)?
        } else {
            parse_xml(&body, M_REAL_NAME, false)?
        };
        if reply.result_code == "0" {
            return Ok(RealName::Registered);
        }
        // Documented codes are failures of the call; any other code is the platform's way of
        // saying "not registered" (public clients treat every non-zero code so).
        if ERROR_CODES.iter().any(|(c, _)| *c == reply.result_code) {
            return Err(platform_error(&reply.result_code, &reply.result_msg));
        }
        Ok(RealName::NotRegistered {
            code: reply.result_code,
            message: reply.result_msg,
        })
    }
}

/// A refusal in the JSON error envelope, if the body is one.
fn refusal(body: &str) -> Option<CarrierError> {
    if !body.trim_start().starts_with('{') {
        return None;
    }
    let r: JsonResult = serde_json::from_str(body).ok()?;
    let code = r.result_code?;
    (code != "0").then(|| platform_error(&code, r.result_msg.as_deref().unwrap_or("")))
}

fn parse_json<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    serde_json::from_str(body)
        .map_err(|e| refusal(body).unwrap_or_else(|| malformed(&format!("{method}: {e}"), changes)))
}

fn parse_xml<T: serde::de::DeserializeOwned>(
    body: &str,
    method: &str,
    changes: bool,
) -> Result<T, CarrierError> {
    if let Some(e) = refusal(body) {
        return Err(e);
    }
    quick_xml::de::from_str(body).map_err(|e| malformed(&format!("{method}: {e}"), changes))
}

#[async_trait]
impl Carrier for Cmp {
    fn id(&self) -> CarrierId {
        CarrierId::Telecom
    }

    fn policy(&self) -> &CarrierPolicy {
        &self.policy
    }

    /// The platform already knows its cards: check that each one exists there.
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        for c in cards {
            self.status(&c.iccid).await.map_err(|e| match e {
                CarrierError::Rejected { code, message } => CarrierError::Rejected {
                    code,
                    message: format!("{}: {message}", c.iccid),
                },
                other => other,
            })?;
        }
        Ok(())
    }

    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let (_, state) = self.state(iccid).await?;
        let cycle_usage_bytes = self.usage(iccid).await?;
        // A third call, because the diagnosis must tell "stopped" from "never connects", and
        // only getOnlineStatus knows sessions.
        let last_session_at = self.online_status(iccid).await?.last_session_at;
        Ok(CarrierCard {
            iccid: iccid.clone(),
            state,
            cycle_usage_bytes,
            // queryTraffic says "this month" without dates; the platform does not tell.
            usage_cycle_start: None,
            last_session_at,
            changes: 0,
        })
    }

    async fn stop(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.change(iccid, ORDER_STOP, ServiceState::Stopped).await
    }

    async fn restore(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        self.change(iccid, ORDER_RESTORE, ServiceState::Active)
            .await
    }

    /// Telecom dismantles (拆机) by itself: confirm it happened.
    async fn cancel(&self, iccid: &Iccid) -> Result<(), CarrierError> {
        let (code, _) = self.state(iccid).await?;
        if code == DISMANTLED {
            Ok(())
        } else {
            Err(CarrierError::Rejected {
                code: NOT_DISMANTLED.into(),
                message: format!(
                    "{iccid} is not dismantled at China Telecom (productMainStatusCd {code})"
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "abcdefghi";

    /// Public vectors of nkypy/carrier-api (`china_telecom` controllers test, key "abcdefghi").
    #[test]
    fn des_matches_the_public_test_vectors() {
        assert_eq!(crypt::sign(&["test"], KEY).unwrap(), "41894168BD86A2CC");
        assert_eq!(
            crypt::sign(&["14914000000", "test", "test", "queryPakage"], KEY).unwrap(),
            "45E8B9924DE397A8F7E5764767810CF774CC7E1685BA702C9C4C367EFDAE5D932B37C0C8F0F8EB0CAD6372289F407CA941894168BD86A2CC32E5804EA05BAA5099649468B9418E52"
        );
    }

    #[test]
    fn des_round_trips_and_rejects_bad_keys() {
        for s in ["", "a", "abcd", "password123", "实名制,Test"] {
            let enc = crypt::encrypt(s, KEY).unwrap();
            assert_eq!(enc.len(), s.encode_utf16().count().div_ceil(4) * 16);
            assert_eq!(crypt::decrypt(&enc, KEY).unwrap(), s);
        }
        assert_ne!(
            crypt::encrypt("password", KEY).unwrap(),
            crypt::encrypt("password", "abcdefghj").unwrap()
        );
        assert!(crypt::encrypt("x", "short").is_err());
        assert!(crypt::decrypt("ABC", KEY).is_err());
    }

    #[test]
    fn sign_sorts_values_and_covers_the_plain_password() {
        let params = vec![
            ("method", "queryTraffic".to_string()),
            ("user_id", "test".to_string()),
            ("iccid", "8986031540025047173".to_string()),
            ("passWord", "IGNORED".to_string()),
        ];
        let s = request_sign(&params, "pw", KEY).unwrap();
        assert_eq!(
            s,
            crypt::sign(&["pw", "queryTraffic", "test", "8986031540025047173"], KEY).unwrap()
        );
        assert_ne!(s, request_sign(&params, "pw2", KEY).unwrap());
    }

    #[test]
    fn every_main_status_code_maps() {
        let expected = [
            ("1", ServiceState::Active),
            ("2", ServiceState::Active),
            ("3", ServiceState::Stopped),
            ("4", ServiceState::Active),
            ("5", ServiceState::Stopped),
            ("6", ServiceState::Stopped),
            ("7", ServiceState::Cancelled),
        ];
        for (code, state) in expected {
            assert_eq!(main_status(code), Some(state), "code {code}");
        }
        assert_eq!(main_status("8"), None);
        assert_eq!(main_status(""), None);
        for s in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(main_status(main_status_code(s)), Some(s));
        }
        assert_eq!(main_status(DISMANTLED), Some(ServiceState::Cancelled));
    }

    #[test]
    fn every_error_code_maps() {
        for (code, meaning) in ERROR_CODES {
            let e = platform_error(code, "");
            if *code == RATE_LIMITED {
                assert_eq!(e, CarrierError::RateLimited { retry_after: None });
            } else {
                assert_eq!(
                    e,
                    CarrierError::Rejected {
                        code: code.to_string(),
                        message: meaning.to_string()
                    }
                );
            }
        }
        assert_eq!(
            platform_error("-4", "无此号码"),
            CarrierError::Rejected {
                code: "-4".into(),
                message: "无此号码".into()
            }
        );
        assert!(matches!(
            platform_error("-99", ""),
            CarrierError::Rejected { ref code, .. } if code == "-99"
        ));
    }

    #[test]
    fn traffic_units_parse_and_format() {
        assert_eq!(parse_mb("0.00MB"), Some(0));
        assert_eq!(parse_mb("1.00MB"), Some(MIB));
        assert_eq!(parse_mb("2.5MB"), Some(2 * MIB + MIB / 2));
        assert_eq!(
            parse_mb("42118.59MB"),
            Some(42118 * MIB + (59 * MIB + 50) / 100)
        );
        for bad in ["", "MB", "1.234MB", "1.00", "-1.00MB", "1,00MB", "1.00KB"] {
            assert_eq!(parse_mb(bad), None, "{bad}");
        }
        assert_eq!(format_mb(0), "0.00MB");
        assert_eq!(format_mb(3 * MIB), "3.00MB");
        for bytes in [0, MIB, 7 * MIB, 123 * MIB + MIB / 4] {
            assert_eq!(parse_mb(&format_mb(bytes)), Some(bytes));
        }
    }

    #[test]
    fn envelopes_parse_as_public_clients_show_them() {
        let xml = "<root><web:NEW_DATA_TICKET_QRsp xmlns:web=\"http://www.example.org/webservice\"><CHARGE_CNT_CH>0元</CHARGE_CNT_CH><DURATION_CNT_CH></DURATION_CNT_CH><IRESULT>0</IRESULT><TOTALCOUNT></TOTALCOUNT><TOTALPAGE></TOTALPAGE><TOTAL_BYTES_CNT>1.50MB</TOTAL_BYTES_CNT><GROUP_TRANSACTIONID>1000000190201909030824413635</GROUP_TRANSACTIONID><number>1410028214051</number></web:NEW_DATA_TICKET_QRsp></root>";
        let t: TrafficRoot = parse_xml(xml, M_TRAFFIC, false).unwrap();
        assert_eq!(t.rsp.iresult, "0");
        assert_eq!(parse_mb(&t.rsp.total_bytes_cnt), Some(MIB + MIB / 2));

        let json = r#"{"resultCode":"0","resultMsg":"处理成功！","GROUP_TRANSACTIONID":"1","number":"1410","servCreateDate":"20190101","productInfo":[{"productMainStatusCd":"4","productMainStatusName":"在用"}]}"#;
        let s: StatusReply = parse_json(json, M_STATUS, false).unwrap();
        assert_eq!(s.product_info[0].status_code, "4");

        let change = "<SvcCont><Response><RspType>0</RspType><RspCode>0000</RspCode><RspDesc>成功</RspDesc></Response><GROUP_TRANSACTIONID>1</GROUP_TRANSACTIONID></SvcCont>";
        let c: ChangeReply = parse_xml(change, M_DISABLE, true).unwrap();
        assert_eq!(c.response.rsp_code, CHANGE_OK);

        // A refusal in JSON where XML was expected is the refusal, not a malformed body.
        let r =
            parse_xml::<ChangeReply>(r#"{"resultCode":"-3","resultMsg":"sign"}"#, M_DISABLE, true);
        assert_eq!(
            r.unwrap_err(),
            CarrierError::Rejected {
                code: "-3".into(),
                message: "sign".into()
            }
        );
        let r = parse_json::<StatusReply>(r#"{"RESULT":"101004","SMSG":"busy"}"#, M_STATUS, false);
        assert_eq!(
            r.unwrap_err(),
            CarrierError::RateLimited { retry_after: None }
        );
        assert!(matches!(
            parse_xml::<ChangeReply>("<html>oops", M_DISABLE, true),
            Err(CarrierError::OutcomeUnknown(_))
        ));
        assert!(matches!(
            parse_json::<StatusReply>("garbage", M_STATUS, false),
            Err(CarrierError::Transient(_))
        ));
    }

    #[test]
    fn platform_times_are_beijing_time() {
        let t = parse_time("2026-11-25 10:00:00").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-25T02:00:00+00:00");
        assert_eq!(parse_time(""), None);
    }
}
