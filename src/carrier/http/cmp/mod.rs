//! China Telecom CMP (m2m_ec), one folder: the adapter (here), its wire terms (`wire`: paths,
//! tables, envelopes), its signing scheme (`crypt`) and its wire simulator (`simulator`).
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
//! envelope in `wire`; the wire simulator (`simulator`) speaks exactly these choices.

pub mod crypt;
pub mod simulator;
pub mod wire;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{client, malformed, retry_after, send_error, status_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{Carrier, CarrierCard, CarrierError, OnboardCard, ServiceState};
use crate::domain::{CarrierId, Iccid};

/// An `[[accounts]]` entry with `platform = "cmp"`: endpoint and credentials.
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

pub use crypt::request_sign;
use wire::*;

/// CMP in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "cmp";
    const CARRIER: CarrierId = CarrierId::Telecom;
    const MAX_CONCURRENCY: u32 = 32;
    type Config = CmpConfig;

    fn adapter(cfg: &CmpConfig, ctx: AccountCtx) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(Cmp::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &CmpConfig,
        unanswered: std::time::Duration,
    ) -> axum::Router {
        simulator::router(
            sim,
            cfg,
            simulator::WireOptions {
                timeout_after_apply_delay: unanswered,
            },
        )
    }

    /// CMP's key is nine characters (three DES keys of three): the secret's first eight are
    /// the password, the next nine the key.
    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> CmpConfig {
        let chars: Vec<char> = secret
            .chars()
            .chain(std::iter::repeat('0'))
            .take(17)
            .collect();
        CmpConfig {
            base_url: format!("{base}/m2m_ec"),
            user_id: "simgate-sim".into(),
            password: Secret::new(chars[..8].iter().collect::<String>()),
            key: Secret::new(chars[8..17].iter().collect::<String>()),
            timeouts,
        }
    }

    fn secrets(cfg: &CmpConfig) -> Vec<(&'static str, String)> {
        vec![
            ("password", cfg.password.expose().to_string()),
            ("key", cfg.key.expose().to_string()),
        ]
    }
}

// ---------------------------------------------------------------------------------------------
// The adapter.
// ---------------------------------------------------------------------------------------------

pub struct Cmp {
    /// Whose account it is: carrier, rules and budget.
    ctx: AccountCtx,
    http: reqwest::Client,
    base_url: String,
    user_id: String,
    password: Secret,
    key: Secret,
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
    pub fn new(cfg: &CmpConfig, ctx: AccountCtx) -> Result<Cmp, String> {
        let base = url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") || base.query().is_some() {
            return Err("base_url must be an http(s) URL without a query".into());
        }
        // Fails now rather than on the first call when the key has the wrong length.
        crypt::encrypt("", cfg.key.expose()).map_err(|e| format!("key: {e}"))?;
        Ok(Cmp {
            ctx,
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            user_id: cfg.user_id.clone(),
            password: cfg.password.clone(),
            key: cfg.key.clone(),
        })
    }

    /// Sends one signed call and returns the body of a 2xx answer. The URL (with the password
    /// and sign) is never put in an error or a log line.
    async fn call(
        &self,
        path: &str,
        method: &'static str,
        iccid: &Iccid,
        extras: &[(&'static str, &str)],
        changes: bool,
    ) -> Result<String, CarrierError> {
        self.ctx.budget.spend(method).await;
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

#[async_trait]
impl Carrier for Cmp {
    crate::carrier::platform::account_methods!();

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
