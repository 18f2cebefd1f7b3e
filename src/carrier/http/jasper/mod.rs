//! China Unicom Control Center (Cisco Jasper REST), one folder: the adapter (here), its wire
//! types and every mapping table between the platform's terms and simgate's (`wire`: device
//! statuses both ways, error codes, the readings), and its wire simulator (`simulator`), which
//! shares them. Evidence: the dossier `shared/domain/carrier-wire/jasper.md` (§ below; source
//! keys in its README); golden fixtures in `tests/fixtures/carrier-wire/jasper/`.
//!
//! Transport (§0): relative to `base_url` (`https://api.10646.cn/rws/api/v1` [NKY][SSU][MEH];
//! Cisco's `https://restapi1.jasper.com/rws/api/v1` [CCTS] is the same setting), HTTP Basic
//! `username:apiKey`, `Accept: application/json`; fair use is one call at a time per account
//! (§8, `MAX_CONCURRENCY` 1).
//!
//! Upstream calls, and what each [`Carrier`] method costs:
//! - `GET devices/{iccid}/ctdUsages` (§3): `status`, `ctdDataUsage` (bytes), `ctdSessionCount`,
//!   `overageLimitReached`. The **only** call behind [`Carrier::card`] (so behind the usage
//!   sync, `usage()`, `sync_usage()` and journal settling), and [`Jasper::ctd_usage`]. A status
//!   outside the eight of §6, a null status or a null usage makes the card "unknown at
//!   carrier" (`CarrierCard::unknown`), never an error. Still unknown: which cycle it counts
//!   (no cycle field: `usage_cycle_start` stays None), whether `ctdDataUsage` is ever null in
//!   practice, whether the platform sends statuses outside the eight.
//! - `GET devices?modifiedSince=<ISO 8601, +00:00>&pageSize=50&pageNumber=<n>` (§5, Search
//!   Devices [CISCO-SD]; request as [SSU] getdata.go L33-55 sends it; reply `{pageNumber,
//!   devices[{iccid, status, ratePlan, communicationPlan}], lastPage}` [SSU] unicommodel.go
//!   L4-13): [`Carrier::changes_since`] (`lists_changes()` true). Always the largest page
//!   (50, §5's maximum and default), no `status` filter (the sweep wants every status), no
//!   `accountId` (the credentials' account). `modifiedSince` is sent in whole seconds with an
//!   explicit `+00:00` offset (sub-seconds dropped: earlier, so a card may be listed twice,
//!   never missed). Each device's status goes through the §6 table; one outside it, or null,
//!   is listed with `state: None` and its word (empty for null), for the sweep to read the
//!   card itself. `lastPage` missing: a page shorter than 50 is the last, a full one is not
//!   (one more call, an empty page, at worst; an empty page is always the last). A
//!   `pageNumber` other than the one asked for, or an ICCID that is not one, is a malformed
//!   answer (skipping a device could lose its change). Still unknown: what "modified" covers
//!   (a status change surely; a rate-plan, comm-plan or custom-field change probably too:
//!   the sweep reads the status only, so extra cards cost page room, never correctness);
//!   whether `modifiedSince` is compared `>` or `>=`; how the paging behaves when a card is
//!   modified during a sweep (sorted by modification date ascending, [CISCO-SD]: a card
//!   modified between two page calls moves to the end, which can shift a not-yet-read card
//!   onto an already-read page; the next sweep, from the cursor, lists it again only if the
//!   cursor was not moved past it); the date format of any date in the reply (none is read);
//!   `totalCount` ([CCTS] only: read, not used).
//! - `GET devices/{iccid}/ctdUsages` again, alone: [`Carrier::usage_of`], one call, the same
//!   parsing as `card()` (`usage_cycle_start` None, as there). A null `ctdDataUsage` is
//!   `Rejected` `USAGE_UNKNOWN` (never 0 bytes; not a breaker failure).
//!
//! Budget (§8: one call at a time per account, a calls-per-second limit not published): a
//! usage sync reading card by card costs 2 calls a card in the old shape (`devices/{iccid}` for
//! the status + `ctdUsages`) or 1 (`ctdUsages` alone, `card()`); with the sweep, states come 50
//! cards a call (⌈changed/50⌉ pages) and usage 1 call a card whose usage is read. At one call
//! at a time, calls are the cost: the sweep is what lets a large account's state sync fit.
//! - `GET devices/{iccid}/sessionInfo` (§4, names confirmed by [CISCO-GSD], [OSGP], [CCTS]):
//!   [`Carrier::last_session`], called only by the diagnosis. Started and not ended is a
//!   session now; an unparseable date is `LastSession::Unknown`, never `Never`. Still unknown:
//!   the date format (§0.4, §10); no verbatim body; `ipv6Address` [CISCO-GSD] vs `ipV6Address`
//!   [OSGP] (DISPUTED, not read; both accepted).
//! - `GET devices/{iccid}` (§1): [`Carrier::onboard`] (a 200 about the card proves it exists,
//!   whatever its status), [`Carrier::cancel`] (RETIRED, PURGED, REPLACED confirm; an unknown
//!   or null status is unavailable, never confirmed), [`Jasper::device_details`]. Still unknown:
//!   the date format (an unreadable `dateActivated` is None, text kept); whether a malformed
//!   ICCID gives 10000021 or 20000001; no verbatim success body.
//! - `PUT devices/{iccid}` `{"status": "DEACTIVATED" | "ACTIVATED"}` (§2, no `effectiveDate`:
//!   now): [`Carrier::stop`], [`Carrier::restore`]; reply `{"iccid"}` [MEH]. Still unknown: the
//!   reply when the status already is the target; whether the change is applied synchronously;
//!   the HTTP status of 10000005/10000011; no verbatim body. Not from the dossier, flagged:
//!   `restore()` of a TEST_READY or ACTIVATION_READY card sends ACTIVATED and starts billing,
//!   and `cancel()` takes RETIRED as released although [MEH] says a user may move a RETIRED
//!   card back.
//!
//! Receipts, orders, binding: the `PUT` reply is `{"iccid"}` ([MEH]) with no order or
//! transaction id, so `stop`/`restore` return `Receipt::applied()` (whether the change is
//! applied synchronously is not published; the journal settles it by reading the card). The
//! dossier has no order query (`queries_orders()` false) and no binding call (only the
//! `IMEI_CHANGE` push event, §9, whose signature is not found): `rebind_modes()` is empty and
//! `rebind` refuses every mode before sending; `binding()` is None.
//!
//! Repeat windows and unrecognised refusals of changes (`wire::change_error_of`): no window
//! code is published; setting `repeat_window_code` (default none: set it when you learn the
//! code your platform answers) makes a change refused with it `Deferred { retry_after: None }`.
//! A change refused on a 4xx with a code outside the table is `Deferred` as well (read the
//! card, retry later, never final); codes of the table keep their kind. Reads are unchanged.
//!
//! Errors (§7): `{"errorMessage" (or "message"), "errorCode" (string or number)}` on any
//! status, 2xx included. The whole code table is in `wire::ERROR_CODES`: 40000029 is the rate
//! limit whatever the HTTP status (1 s wait without `Retry-After`); 20000001 and 10000021 mean
//! "no such card" (a sync leaves the card out); 10000001, 10000024, 10000028 and 10000030
//! refuse the account (a sync fails, [`Carrier::card_not_known`]); unlisted codes, and codes on
//! a 2xx, fail safe (a read unavailable; a change deferred when refused on a 4xx, of unknown
//! outcome on a 2xx or a 5xx). Still unknown: the HTTP
//! status of most codes (of 40000029 too: 429 likely, not stated); the numeric calls-per-second
//! limit (§8, §10).

pub mod simulator;
pub mod wire;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use chrono::Utc;

use super::{client, malformed, retry_after, send_error, HttpTimeouts, Secret};
use crate::carrier::platform::{AccountCtx, WirePlatform};
use crate::carrier::{
    Carrier, CarrierCard, CarrierError, ChangePage, LastSession, OnboardCard, Receipt,
    ServiceState, UsageReading,
};
use crate::domain::{CarrierId, Iccid};

/// An `[[accounts]]` entry with `platform = "jasper"`: endpoint and credentials.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct JasperConfig {
    /// Base URL of the platform, e.g. https://api.10646.cn/rws/api/v1.
    pub base_url: String,
    pub username: String,
    pub api_key: Secret,
    #[serde(default)]
    pub timeouts: HttpTimeouts,
    /// The code the platform refuses a repeated status change with inside its repeat window.
    /// None is published (dossier §7, §10): none by default; set it when you learn the code
    /// your platform answers. A change refused with it is deferred.
    // Left out when unset: TOML has no null (`simgate simulate` writes these settings out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repeat_window_code: Option<String>,
}

use wire::*;

/// Control Center in the platform registry.
pub struct Platform;

impl WirePlatform for Platform {
    const NAME: &'static str = "jasper";
    const CARRIER: CarrierId = CarrierId::Unicom;
    /// Control Center's fair use is one call at a time per account.
    const MAX_CONCURRENCY: u32 = 1;
    type Config = JasperConfig;

    fn adapter(cfg: &JasperConfig, ctx: AccountCtx) -> Result<std::sync::Arc<dyn Carrier>, String> {
        Ok(std::sync::Arc::new(Jasper::new(cfg, ctx)?))
    }

    fn simulator(
        sim: std::sync::Arc<crate::carrier::sim::SimCarrier>,
        cfg: &JasperConfig,
        unanswered: std::time::Duration,
    ) -> axum::Router {
        simulator::router(
            sim,
            cfg,
            simulator::WireOptions {
                timeout_after_apply_delay: unanswered,
                // The simulator behind a deployment's (and the over-HTTP test run's) account
                // follows the account's configured concurrency, which the legacy
                // `carrier_limits` may set above the platform's 1; the fair-use refusal itself
                // is tested against the simulator directly (wire_jasper).
                one_call_at_a_time: false,
                ..Default::default()
            },
        )
    }

    fn generated(base: &str, secret: &str, timeouts: HttpTimeouts) -> JasperConfig {
        JasperConfig {
            base_url: format!("{base}/rws/api/v1"),
            username: "simgate-sim".into(),
            api_key: Secret::new(secret),
            timeouts,
            repeat_window_code: None,
        }
    }

    fn secrets(cfg: &JasperConfig) -> Vec<(&'static str, String)> {
        vec![("api_key", cfg.api_key.expose().to_string())]
    }
}

/// The names the budget counts calls under, one per upstream call.
const GET_DEVICE: &str = "GET devices/{iccid}";
const GET_SESSION: &str = "GET devices/{iccid}/sessionInfo";
const GET_USAGE: &str = "GET devices/{iccid}/ctdUsages";
const PUT_DEVICE: &str = "PUT devices/{iccid}";
const SEARCH_DEVICES: &str = "GET devices";

pub struct Jasper {
    /// Whose account it is: carrier, rules and budget.
    ctx: AccountCtx,
    http: reqwest::Client,
    base_url: String,
    username: String,
    api_key: Secret,
    repeat_window_code: Option<String>,
}

impl Jasper {
    pub fn new(cfg: &JasperConfig, ctx: AccountCtx) -> Result<Jasper, String> {
        let base =
            url::Url::parse(&cfg.base_url).map_err(|e| format!("base_url is not a URL: {e}"))?;
        if !matches!(base.scheme(), "http" | "https") {
            return Err("base_url must be http or https".into());
        }
        if cfg.username.is_empty() || cfg.api_key.expose().is_empty() {
            return Err("a username and an api_key are required".into());
        }
        Ok(Jasper {
            ctx,
            http: client(&cfg.timeouts)?,
            base_url: cfg.base_url.trim_end_matches('/').to_string(),
            username: cfg.username.clone(),
            api_key: cfg.api_key.clone(),
            repeat_window_code: cfg
                .repeat_window_code
                .as_deref()
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .map(str::to_string),
        })
    }

    fn url(&self, iccid: &Iccid, tail: &str) -> String {
        // ICCIDs are validated hex digits: nothing in them needs escaping in a path.
        format!("{}/devices/{}{tail}", self.base_url, iccid.as_str())
    }

    /// Sends a request and returns the body of a 2xx answer; anything else as a CarrierError.
    async fn exchange(
        &self,
        req: reqwest::RequestBuilder,
        method: &'static str,
        changes: bool,
    ) -> Result<Vec<u8>, CarrierError> {
        self.ctx.budget.spend(method).await;
        let resp = req
            .basic_auth(&self.username, Some(self.api_key.expose()))
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| send_error(e, changes))?;
        let status = resp.status();
        let retry = retry_after(resp.headers());
        let body = resp.bytes().await.map_err(|e| send_error(e, changes))?;
        let envelope = serde_json::from_slice::<ErrorBody>(&body).ok();
        let error = |e: Option<&ErrorBody>| {
            if changes {
                change_error_of(status, e, retry, self.repeat_window_code.as_deref())
            } else {
                error_of(status, e, retry, false)
            }
        };
        if status.is_success() {
            // A 2xx answer may still carry an error code (40000029 whatever the status).
            match envelope.as_ref().filter(|e| e.error_code.is_some()) {
                Some(e) => return Err(error(Some(e))),
                None => return Ok(body.to_vec()),
            }
        }
        Err(error(envelope.as_ref()))
    }

    async fn get<T: serde::de::DeserializeOwned>(
        &self,
        iccid: &Iccid,
        tail: &str,
        what: &'static str,
    ) -> Result<T, CarrierError> {
        let body = self
            .exchange(self.http.get(self.url(iccid, tail)), what, false)
            .await?;
        serde_json::from_slice(&body).map_err(|e| malformed(&format!("{what}: {e}"), false))
    }

    /// `GET devices/{iccid}`, checked to be about `iccid`. The status is not interpreted here:
    /// a 200 about the card proves it exists whatever its status (onboard), and `cancel`
    /// decides itself what an unreadable status means.
    async fn device(&self, iccid: &Iccid) -> Result<DeviceBody, CarrierError> {
        let d: DeviceBody = self.get(iccid, "", GET_DEVICE).await?;
        if !d.iccid.eq_ignore_ascii_case(iccid.as_str()) {
            return Err(malformed("device answer for another ICCID", false));
        }
        Ok(d)
    }

    /// `GET devices/{iccid}`: status, msisdn, imsi, dateActivated and ratePlan. A status or a
    /// date simgate cannot read is None (the text is kept), not a failed read.
    pub async fn device_details(&self, iccid: &Iccid) -> Result<DeviceDetails, CarrierError> {
        let d = self.device(iccid).await?;
        let date_activated_text = d.date_activated.clone().filter(|s| !s.is_empty());
        Ok(DeviceDetails {
            iccid: iccid.clone(),
            state: d.status.as_deref().and_then(state_of),
            status: d.status,
            rate_plan: d.rate_plan,
            date_activated: date_activated_text.as_deref().and_then(parse_date),
            date_activated_text,
            imsi: d.imsi,
            msisdn: d.msisdn,
        })
    }

    /// `GET devices/{iccid}/ctdUsages`, checked to be about `iccid`.
    async fn ctd_usage_body(&self, iccid: &Iccid) -> Result<CtdUsageBody, CarrierError> {
        let u: CtdUsageBody = self.get(iccid, "/ctdUsages", GET_USAGE).await?;
        if !u.iccid.eq_ignore_ascii_case(iccid.as_str()) {
            return Err(malformed("usage answer for another ICCID", false));
        }
        Ok(u)
    }

    /// `GET devices/{iccid}/ctdUsages`: data used this billing cycle, data sessions, and
    /// whether the rate plan's overage limit is reached.
    pub async fn ctd_usage(&self, iccid: &Iccid) -> Result<CtdUsage, CarrierError> {
        let u = self.ctd_usage_body(iccid).await?;
        Ok(CtdUsage {
            data_bytes: u.ctd_data_usage,
            overage_limit_reached: u.overage_limit_reached.unwrap_or(false),
            session_count: u.ctd_session_count,
        })
    }

    async fn set_status(&self, iccid: &Iccid, to: ServiceState) -> Result<(), CarrierError> {
        let req = self.http.put(self.url(iccid, "")).json(&EditBody {
            status: status_for(to).to_string(),
        });
        let body = self.exchange(req, PUT_DEVICE, true).await?;
        let answer: EditAnswer = serde_json::from_slice(&body)
            .map_err(|e| malformed(&format!("edit answer: {e}"), true))?;
        if !answer.iccid.eq_ignore_ascii_case(iccid.as_str()) {
            return Err(malformed("edit answer for another ICCID", true));
        }
        Ok(())
    }
}

#[async_trait]
impl Carrier for Jasper {
    crate::carrier::platform::account_methods!();

    /// The platform already knows its cards: confirm each exists, so an import of an ICCID the
    /// account does not hold fails with the platform's own code (20000001). A 200 about the
    /// card is the proof, whatever its status (one outside the table included).
    async fn onboard(&self, cards: &[OnboardCard]) -> Result<(), CarrierError> {
        for c in cards {
            self.device(&c.iccid).await?;
        }
        Ok(())
    }

    /// One call, `ctdUsages`: it carries the status and the cycle's usage (§3). A status or a
    /// usage that cannot be read makes the card "unknown at carrier" (`unknown`), not an error:
    /// one odd card must not fail, or trip the breaker of, the account's whole sync. The last
    /// session is `Unknown` here (fair use is one call at a time: the sync does not need it);
    /// [`Carrier::last_session`] asks `sessionInfo`.
    async fn card(&self, iccid: &Iccid) -> Result<CarrierCard, CarrierError> {
        let u = self.ctd_usage_body(iccid).await?;
        Ok(reading_of(iccid, &u))
    }

    fn reads_session_apart(&self) -> bool {
        true
    }

    /// Search Devices (§5) lists the cards modified since a time, 50 a page.
    fn lists_changes(&self) -> bool {
        true
    }

    /// `GET devices?modifiedSince=<since, +00:00>&pageSize=50&pageNumber=<page>` (§5), one
    /// call. Each device's status is mapped by the §6 table; one outside it (or null) is listed
    /// with no state. A missing `lastPage` is decided fail-safe by [`page_of`] (a short page is
    /// the last). Pages start at 1 (§5 `pageNumber`): page 0 is refused before sending.
    async fn changes_since(
        &self,
        since: chrono::DateTime<Utc>,
        page: u32,
    ) -> Result<ChangePage, CarrierError> {
        if page == 0 {
            return Err(CarrierError::Rejected {
                code: "INVALID_PAGE".into(),
                message: "Control Center numbers pages from 1".into(),
            });
        }
        let url = format!("{}/devices?{}", self.base_url, search_query(since, page));
        let body = self
            .exchange(self.http.get(url), SEARCH_DEVICES, false)
            .await?;
        let answer: SearchDevicesBody = serde_json::from_slice(&body)
            .map_err(|e| malformed(&format!("{SEARCH_DEVICES}: {e}"), false))?;
        page_of(&answer, page).map_err(|e| malformed(&format!("{SEARCH_DEVICES}: {e}"), false))
    }

    /// `ctdUsages` alone (§3), one call, parsed as `card()` parses it (the cycle start is
    /// unknown there too). A null `ctdDataUsage` is never 0 bytes: it is refused with
    /// `USAGE_UNKNOWN` (a `Rejected`, so one odd card neither trips the account's breaker nor
    /// counts as a card the platform does not know).
    async fn usage_of(&self, iccid: &Iccid) -> Result<UsageReading, CarrierError> {
        let u = self.ctd_usage_body(iccid).await?;
        usage_reading_of(iccid, &u).ok_or_else(|| CarrierError::Rejected {
            code: CODE_USAGE_UNKNOWN.into(),
            message: format!("ctdUsages: ctdDataUsage is null for {iccid}"),
        })
    }

    /// `GET devices/{iccid}/sessionInfo`, for the diagnosis only (§4).
    async fn last_session(&self, iccid: &Iccid) -> Result<LastSession, CarrierError> {
        let s: SessionInfoBody = self.get(iccid, "/sessionInfo", GET_SESSION).await?;
        if !s.iccid.eq_ignore_ascii_case(iccid.as_str()) {
            return Err(malformed("session answer for another ICCID", false));
        }
        Ok(last_session_of(&s, Utc::now()))
    }

    /// Only the platform's "no such card" codes (20000001, 10000021) leave a card out of a
    /// sync; a refusal of the account (10000001 credentials or IP, 10000024 apiVersion,
    /// 10000028 unrecognised parameters, 10000030 role), or any other refusal, fails it.
    fn card_not_known(&self, error: &CarrierError) -> bool {
        matches!(error, CarrierError::Rejected { code, .. }
            if code_kind(code) == Some(CodeKind::CardUnknown))
    }

    async fn stop(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.set_status(iccid, ServiceState::Stopped)
            .await
            .map(|()| Receipt::applied())
    }

    async fn restore(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        self.set_status(iccid, ServiceState::Active)
            .await
            .map(|()| Receipt::applied())
    }

    /// Confirms the platform released the number (RETIRED, PURGED, REPLACED). A null status
    /// or one outside the table is "unavailable" (`Transient`): never a confirmation.
    async fn cancel(&self, iccid: &Iccid) -> Result<Receipt, CarrierError> {
        let d = self.device(iccid).await?;
        match d.status.as_deref().map(|s| (s, state_of(s))) {
            Some((_, Some(ServiceState::Cancelled))) => Ok(Receipt::applied()),
            Some((status, Some(_))) => Err(CarrierError::Rejected {
                code: CODE_NOT_RETIRED.into(),
                message: format!(
                    "{iccid} is {status} at China Unicom Control Center, not retired: the platform has not released the number yet"
                ),
            }),
            Some((status, None)) => Err(malformed(
                &format!("unknown device status {status:?}: cannot confirm the cancellation"),
                false,
            )),
            None => Err(malformed(
                "device status is null: cannot confirm the cancellation",
                false,
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::StatusCode;

    #[test]
    fn every_status_maps_to_a_service_state() {
        let expect = [
            ("TEST_READY", ServiceState::Active),
            ("ACTIVATION_READY", ServiceState::Active),
            ("ACTIVATED", ServiceState::Active),
            ("INVENTORY", ServiceState::Stopped),
            ("DEACTIVATED", ServiceState::Stopped),
            ("RETIRED", ServiceState::Cancelled),
            ("REPLACED", ServiceState::Cancelled),
            ("PURGED", ServiceState::Cancelled),
        ];
        assert_eq!(STATUSES.len(), expect.len());
        for (status, state) in expect {
            assert_eq!(state_of(status), Some(state), "{status}");
        }
        assert_eq!(state_of("activated"), None);
        assert_eq!(state_of("SUSPENDED"), None);
    }

    #[test]
    fn every_service_state_maps_to_a_status_that_maps_back() {
        for state in [
            ServiceState::Active,
            ServiceState::Stopped,
            ServiceState::Cancelled,
        ] {
            assert_eq!(state_of(status_for(state)), Some(state));
        }
        assert_eq!(status_for(ServiceState::Active), "ACTIVATED");
        assert_eq!(status_for(ServiceState::Stopped), "DEACTIVATED");
        assert_eq!(status_for(ServiceState::Cancelled), "RETIRED");
    }

    fn body(code: &str) -> ErrorBody {
        ErrorBody {
            error_message: Some("msg".into()),
            error_code: Some(code.into()),
        }
    }

    #[test]
    fn every_error_code_maps_to_its_kind() {
        let cases = [
            (
                CODE_INVALID_CREDENTIALS,
                StatusCode::UNAUTHORIZED,
                CodeKind::AccountRefused,
            ),
            (
                CODE_JSON_NOT_WELL_FORMED,
                StatusCode::BAD_REQUEST,
                CodeKind::Refused,
            ),
            (
                CODE_INVALID_REQUEST,
                StatusCode::BAD_REQUEST,
                CodeKind::AccountRefused,
            ),
            (
                CODE_INVALID_API_VERSION,
                StatusCode::BAD_REQUEST,
                CodeKind::AccountRefused,
            ),
            (
                CODE_NO_ACCESS,
                StatusCode::BAD_REQUEST,
                CodeKind::AccountRefused,
            ),
            (
                CODE_INVALID_ICCID,
                StatusCode::NOT_FOUND,
                CodeKind::CardUnknown,
            ),
            (
                CODE_ICCID_INVALID,
                StatusCode::BAD_REQUEST,
                CodeKind::CardUnknown,
            ),
            ("10000005", StatusCode::BAD_REQUEST, CodeKind::Refused),
        ];
        for (code, status, kind) in cases {
            assert_eq!(code_kind(code), Some(kind), "{code}");
            for changes in [false, true] {
                assert_eq!(
                    error_of(status, Some(&body(code)), None, changes),
                    CarrierError::Rejected {
                        code: code.into(),
                        message: "msg".into()
                    }
                );
            }
        }
        assert_eq!(code_kind(CODE_RATE_LIMIT), Some(CodeKind::RateLimit));
        // The fair-use code means a rate limit whatever HTTP status carries it, 2xx included,
        // with the one-second wait public clients use when no Retry-After is given.
        for status in [
            StatusCode::TOO_MANY_REQUESTS,
            StatusCode::BAD_REQUEST,
            StatusCode::OK,
        ] {
            assert_eq!(
                error_of(status, Some(&body(CODE_RATE_LIMIT)), None, true),
                CarrierError::RateLimited {
                    retry_after: Some(RATE_LIMIT_WAIT)
                }
            );
        }
        // ... and a numeric errorCode is read as the same code.
        let numeric: ErrorBody =
            serde_json::from_str(r#"{"message":"slow down","errorCode":40000029}"#).unwrap();
        assert_eq!(numeric.error_code.as_deref(), Some(CODE_RATE_LIMIT));
        assert_eq!(numeric.error_message.as_deref(), Some("slow down"));
        assert_eq!(code_kind(CODE_SERVER_ERROR), Some(CodeKind::ServerFault));
        let e = StatusCode::INTERNAL_SERVER_ERROR;
        assert!(matches!(
            error_of(e, Some(&body(CODE_SERVER_ERROR)), None, false),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            error_of(e, Some(&body(CODE_SERVER_ERROR)), None, true),
            CarrierError::OutcomeUnknown(_)
        ));
        // The dossier's whole table (§7).
        assert_eq!(ERROR_CODES.len(), 38);
        // A code the table does not know fails safe: a read is unavailable, a change unknown.
        assert_eq!(code_kind("99999999"), None);
        assert!(matches!(
            error_of(
                StatusCode::BAD_REQUEST,
                Some(&body("99999999")),
                None,
                false
            ),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            error_of(StatusCode::BAD_REQUEST, Some(&body("99999999")), None, true),
            CarrierError::OutcomeUnknown(_)
        ));
        // So does a published refusal on a 2xx answer.
        assert!(matches!(
            error_of(StatusCode::OK, Some(&body("10000005")), None, true),
            CarrierError::OutcomeUnknown(_)
        ));
    }

    #[test]
    fn a_change_refused_with_the_window_or_an_unlisted_code_is_deferred() {
        let deferred = |e: CarrierError, want: &str| matches!(e, CarrierError::Deferred { ref code, retry_after: None, .. } if code == want);
        let bad = StatusCode::BAD_REQUEST;
        assert!(deferred(
            change_error_of(bad, Some(&body("90000001")), None, Some("90000001")),
            "90000001"
        ));
        // The window code names the window even where it is a code of the table.
        assert!(deferred(
            change_error_of(bad, Some(&body("10000005")), None, Some("10000005")),
            "10000005"
        ));
        // ... and on a 2xx; never on a server fault (unknown outcome).
        assert!(deferred(
            change_error_of(StatusCode::OK, Some(&body("9")), None, Some("9")),
            "9"
        ));
        assert!(matches!(
            change_error_of(
                StatusCode::INTERNAL_SERVER_ERROR,
                Some(&body("9")),
                None,
                Some("9")
            ),
            CarrierError::OutcomeUnknown(_)
        ));
        // An unlisted code on a 4xx: deferred, with or without the setting.
        assert!(deferred(
            change_error_of(bad, Some(&body("99999999")), None, None),
            "99999999"
        ));
        // Listed codes keep their kind; a code on a 2xx stays an unknown outcome.
        assert_eq!(
            change_error_of(bad, Some(&body("10000005")), None, Some("90000001")),
            error_of(bad, Some(&body("10000005")), None, true)
        );
        assert!(matches!(
            change_error_of(StatusCode::OK, Some(&body("99999999")), None, None),
            CarrierError::OutcomeUnknown(_)
        ));
        assert!(matches!(
            change_error_of(
                StatusCode::TOO_MANY_REQUESTS,
                Some(&body(CODE_RATE_LIMIT)),
                None,
                None
            ),
            CarrierError::RateLimited { .. }
        ));
    }

    #[test]
    fn answers_without_an_envelope_map_by_http_status() {
        assert!(matches!(
            error_of(StatusCode::SERVICE_UNAVAILABLE, None, None, true),
            CarrierError::Transient(_)
        ));
        assert!(matches!(
            error_of(StatusCode::TOO_MANY_REQUESTS, None, None, false),
            CarrierError::RateLimited { .. }
        ));
        assert!(matches!(
            error_of(StatusCode::FORBIDDEN, None, None, false),
            CarrierError::Rejected { ref code, .. } if code == "HTTP_403"
        ));
    }

    #[test]
    fn a_ctd_usages_answer_is_the_reading_or_unknown_at_carrier() {
        let iccid = Iccid::parse_any("89860600000000000001").unwrap();
        let body = |status: Option<&str>, usage: Option<u64>| CtdUsageBody {
            iccid: iccid.as_str().into(),
            status: status.map(str::to_string),
            ctd_data_usage: usage,
            ..CtdUsageBody::default()
        };
        for (status, state) in STATUSES {
            let c = reading_of(&iccid, &body(Some(status), Some(9)));
            assert_eq!(
                (c.known_state(), c.cycle_usage_bytes, c.unknown),
                (Some(*state), 9, None),
                "{status}"
            );
        }
        // Zero is a reading; null is not.
        assert_eq!(
            reading_of(&iccid, &body(Some("ACTIVATED"), Some(0))).unknown,
            None
        );
        let c = reading_of(&iccid, &body(Some("ACTIVATED"), None));
        assert_eq!(
            c.unknown.as_deref(),
            Some("ctdUsages: ctdDataUsage is null")
        );
        assert_eq!(c.known_state(), None);
        let c = reading_of(&iccid, &body(Some("activated"), Some(1)));
        assert!(c
            .unknown
            .as_deref()
            .is_some_and(|w| w.contains("\"activated\"")));
        let c = reading_of(&iccid, &body(None, None));
        assert_eq!(
            c.unknown.as_deref(),
            Some("ctdUsages: status is null; ctdDataUsage is null")
        );
        assert_eq!(c.last_session, LastSession::Unknown);
    }

    #[test]
    fn session_info_is_now_the_end_never_or_unknown() {
        let now = Utc::now();
        let s = |started: Option<&str>, ended: Option<&str>| SessionInfoBody {
            iccid: "89860600000000000001".into(),
            date_session_started: started.map(str::to_string),
            date_session_ended: ended.map(str::to_string),
            ..SessionInfoBody::default()
        };
        let at = "2016-06-27 07:00:00.000+0000";
        let t = parse_date(at).unwrap();
        assert_eq!(
            last_session_of(&s(Some(at), None), now),
            LastSession::At(now)
        );
        assert_eq!(
            last_session_of(&s(Some("<date>"), Some("")), now),
            LastSession::At(now)
        );
        assert_eq!(
            last_session_of(&s(Some(at), Some(at)), now),
            LastSession::At(t)
        );
        assert_eq!(
            last_session_of(&s(Some(at), Some("<date>")), now),
            LastSession::Unknown
        );
        assert_eq!(last_session_of(&s(None, None), now), LastSession::Never);
        // The disputed IPv6 spelling is read either way.
        let v: SessionInfoBody = serde_json::from_str(
            r#"{"iccid":"1","dateSessionStarted":null,"dateSessionEnded":null,"ipAddress":null,"ipV6Address":"::1"}"#,
        )
        .unwrap();
        assert_eq!(v.ipv6_address.as_deref(), Some("::1"));
    }

    #[test]
    fn modified_since_is_iso_8601_with_an_offset_in_whole_seconds() {
        let t = chrono::DateTime::parse_from_rfc3339("2016-04-18T17:31:34.987Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(modified_since_text(t), "2016-04-18T17:31:34+00:00");
        // The dossier's example (§5, [SSU]), URL-encoded, in its order.
        assert_eq!(
            search_query(t, 1),
            "modifiedSince=2016-04-18T17%3A31%3A34%2B00%3A00&pageSize=50&pageNumber=1"
        );
        assert_eq!(SEARCH_PAGE_SIZE, 50);
    }

    fn devices(n: usize, status: Option<&str>) -> Vec<SearchDevice> {
        (0..n)
            .map(|i| SearchDevice {
                iccid: format!("898606{:014}", i + 1),
                status: status.map(str::to_string),
                ..SearchDevice::default()
            })
            .collect()
    }

    #[test]
    fn a_search_page_maps_statuses_and_decides_the_last_page_fail_safe() {
        let body = |n, status, last| SearchDevicesBody {
            page_number: Some(2),
            devices: devices(n, status),
            last_page: last,
            total_count: None,
        };
        let p = page_of(&body(3, Some("DEACTIVATED"), Some(false)), 2).unwrap();
        assert_eq!(p.cards.len(), 3);
        assert!(p
            .cards
            .iter()
            .all(|c| c.state == Some(ServiceState::Stopped) && c.status == "DEACTIVATED"));
        // lastPage as sent wins for a page with devices...
        assert!(!p.last_page);
        assert!(
            page_of(&body(50, Some("ACTIVATED"), Some(true)), 2)
                .unwrap()
                .last_page
        );
        // ... missing: a short page is the last, a full one is not.
        assert!(
            page_of(&body(49, Some("ACTIVATED"), None), 2)
                .unwrap()
                .last_page
        );
        assert!(
            !page_of(&body(50, Some("ACTIVATED"), None), 2)
                .unwrap()
                .last_page
        );
        // An empty page is the last whatever it says.
        assert!(page_of(&body(0, None, Some(false)), 2).unwrap().last_page);
        // A status outside the table, or null: listed, with no state.
        let odd = page_of(&body(1, Some("SUSPENDED"), None), 2).unwrap();
        assert_eq!(
            (odd.cards[0].state, odd.cards[0].status.as_str()),
            (None, "SUSPENDED")
        );
        let null = page_of(&body(1, None, None), 2).unwrap();
        assert_eq!(
            (null.cards[0].state, null.cards[0].status.as_str()),
            (None, "")
        );
        // Another page than asked, or a bad ICCID: malformed, never skipped.
        assert!(page_of(&body(1, Some("ACTIVATED"), None), 3).is_err());
        let mut bad = body(1, Some("ACTIVATED"), None);
        bad.devices[0].iccid = "not-an-iccid".into();
        assert!(page_of(&bad, 2).is_err());
        // No pageNumber: not checked.
        let mut unnumbered = body(1, Some("ACTIVATED"), None);
        unnumbered.page_number = None;
        assert!(page_of(&unnumbered, 7).is_ok());
    }

    #[test]
    fn usage_alone_is_the_ctd_usage_or_none_when_null() {
        let iccid = Iccid::parse_any("89860600000000000001").unwrap();
        let body = |status: Option<&str>, usage| CtdUsageBody {
            iccid: iccid.as_str().into(),
            status: status.map(str::to_string),
            ctd_data_usage: usage,
            ..CtdUsageBody::default()
        };
        let r = usage_reading_of(&iccid, &body(Some("ACTIVATED"), Some(7))).unwrap();
        assert_eq!((r.cycle_usage_bytes, r.usage_cycle_start), (7, None));
        assert_eq!(
            usage_reading_of(&iccid, &body(Some("ACTIVATED"), Some(0)))
                .map(|r| r.cycle_usage_bytes),
            Some(0)
        );
        // The status does not matter for the usage; a null usage is no reading.
        assert!(usage_reading_of(&iccid, &body(Some("SUSPENDED"), Some(1))).is_some());
        assert_eq!(
            usage_reading_of(&iccid, &body(Some("ACTIVATED"), None)),
            None
        );
    }

    #[test]
    fn control_center_dates_parse() {
        let d = parse_date("2016-06-27 07:00:00.000+0000");
        assert_eq!(
            d.map(|d| d.to_rfc3339()),
            Some("2016-06-27T07:00:00+00:00".to_string())
        );
        assert_eq!(parse_date("yesterday"), None);
    }

    #[test]
    fn construction_checks_the_configuration_and_hides_the_key() {
        let cfg = JasperConfig {
            base_url: "ftp://x".into(),
            username: "u".into(),
            api_key: Secret::new("k3y-value"),
            timeouts: HttpTimeouts::default(),
            repeat_window_code: None,
        };
        let policy = AccountCtx::default_for(CarrierId::Unicom);
        assert!(Jasper::new(&cfg, policy.clone()).is_err());
        let ok = JasperConfig {
            base_url: "https://api.10646.cn/rws/api/v1/".into(),
            ..cfg.clone()
        };
        assert!(Jasper::new(&ok, policy).is_ok());
        assert!(!format!("{ok:?}").contains("k3y-value"));
    }
}
