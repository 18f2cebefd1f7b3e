//! `simgate.v1.CardService`: request validation, paging tokens, and delegation to the service.

use std::collections::HashMap;

use tonic::{Request, Response, Status};

use super::auth::{forbidden, Authenticator};
use super::convert::{self, card_to_pb, MAX_RECHARGE_FEN, MAX_RENEW_MONTHS};
use super::error::{invalid_argument, invalid_field};
use super::idempotency::{self, idempotent, Begun, Idempotent, StoredAnswer};
use super::paging::Page;
use super::rpc::Rpc;
use crate::carrier::Rebind;
use crate::domain::diagnosis::Lang;
use crate::domain::ids::CarrierCheck;
use crate::domain::{Card, Fen, Iccid};
use crate::pb;
use crate::service::access::Forbidden;
use crate::service::{CardService, FieldViolation, ImportWarning};
use crate::store::CardFilter;
use prost::Message;

pub const MAX_IMPORT: usize = 10_000;
pub const DEFAULT_PAGE_SIZE: u32 = 100;

idempotent!(
    pb::ImportCardsRequest,
    pb::AssignCardsRequest,
    pb::SuspendCardRequest,
    pb::ResumeCardRequest,
    pb::VerifyRealNameRequest,
    pb::RechargeRequest,
    pb::RenewPlanRequest,
    pb::RebindCardRequest,
);

pub struct CardApi {
    service: CardService,
    check: CarrierCheck,
    auth: Authenticator,
}

/// An ICCID and one bounded number, both checked, every problem named.
fn iccid_and(raw: &str, field: &str, ok: bool, problem: String) -> Result<Iccid, Status> {
    let mut violations = Vec::new();
    let iccid = convert::iccid_field("iccid", raw)
        .map_err(|v| violations.push(v))
        .ok();
    if !ok {
        violations.push(FieldViolation::new(field, problem));
    }
    match iccid.filter(|_| violations.is_empty()) {
        Some(iccid) => Ok(iccid),
        None => Err(invalid_argument(violations)),
    }
}

/// The single-card changes that take only an ICCID.
#[derive(Clone, Copy)]
enum StateChange {
    Suspend,
    Resume,
    VerifyRealName,
}

impl CardApi {
    /// Authenticates a card change and answers a repeated request with its first answer.
    async fn begin<R: Idempotent, A: StoredAnswer>(
        &self,
        request: Request<R>,
        rpc: Rpc,
    ) -> Result<Begun<R, A>, Status> {
        idempotency::begin(&self.auth, &self.service, request, rpc).await
    }

    /// Suspend, resume and verify: authenticate, replay a repeated request, validate, change.
    async fn change_state<R: Idempotent>(
        &self,
        request: Request<R>,
        rpc: Rpc,
        change: StateChange,
        iccid_of: fn(&R) -> &str,
    ) -> Result<Response<pb::Card>, Status> {
        let f = match self.begin(request, rpc).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let iccid = iccid(iccid_of(&f.req))?;
        let respond = |(_, after): &(Card, Card)| self.card(after).encode_to_vec();
        let idem = f.key.idem(&respond);
        let (service, caller) = (&self.service, &f.caller);
        let card = match change {
            StateChange::Suspend => service.suspend(&iccid, caller, idem.as_ref()).await?,
            StateChange::Resume => service.resume(&iccid, caller, idem.as_ref()).await?,
            StateChange::VerifyRealName => {
                service
                    .verify_real_name(&iccid, caller, idem.as_ref())
                    .await?
            }
        };
        Ok(Response::new(self.card(&card)))
    }

    pub fn new(service: CardService, check: CarrierCheck, auth: Authenticator) -> CardApi {
        CardApi {
            service,
            check,
            auth,
        }
    }

    fn card(&self, c: &Card) -> pb::Card {
        card_to_pb(c, self.service.policy(c.carrier).ok())
    }
}

fn iccid(raw: &str) -> Result<Iccid, Status> {
    convert::iccid_field("iccid", raw).map_err(|v| invalid_argument(vec![v]))
}

fn page_size(requested: i32) -> Result<u32, Status> {
    convert::page_size(requested, DEFAULT_PAGE_SIZE)
}

fn list_filter(req: &pb::ListCardsRequest) -> Result<CardFilter, Status> {
    let mut violations = Vec::new();
    let carrier = match pb::Carrier::try_from(req.carrier) {
        Ok(pb::Carrier::Unspecified) => None,
        Ok(_) => convert::carrier_from_pb(req.carrier),
        Err(_) => {
            violations.push(FieldViolation::new("carrier", "unknown value"));
            None
        }
    };
    let customer_id = if req.unassigned {
        if !req.customer_id.is_empty() {
            violations.push(FieldViolation::new(
                "unassigned",
                "lists cards of no customer; leave customer_id empty",
            ));
        }
        // The inventory's cards have an empty customer.
        Some(String::new())
    } else if req.customer_id.is_empty() {
        None
    } else {
        convert::customer_id_field("customer_id", &req.customer_id)
            .map_err(|v| violations.push(v))
            .ok()
    };
    let status = match pb::CardStatus::try_from(req.status) {
        Ok(pb::CardStatus::Unspecified) => None,
        Ok(s) => convert::status_from_pb(s),
        Err(_) => {
            violations.push(FieldViolation::new("status", "unknown value"));
            None
        }
    };
    let stop_reason = match pb::StopReason::try_from(req.stop_reason) {
        Ok(pb::StopReason::Unspecified) => None,
        Ok(r) => convert::reason_from_pb(r),
        Err(_) => {
            violations.push(FieldViolation::new("stop_reason", "unknown value"));
            None
        }
    };
    let pool_id = if req.pool_id.is_empty() {
        None
    } else if crate::service::monitor::valid_pool_id(&req.pool_id) {
        Some(req.pool_id.clone())
    } else {
        violations.push(FieldViolation::new("pool_id", "is not a pool id"));
        None
    };
    let account_id = if req.account_id.is_empty() {
        None
    } else {
        match crate::domain::AccountId::parse(&req.account_id) {
            Ok(a) => Some(a),
            Err(e) => {
                violations.push(FieldViolation::new("account_id", e));
                None
            }
        }
    };
    if !violations.is_empty() {
        return Err(invalid_argument(violations));
    }
    Ok(CardFilter {
        carrier,
        account_id,
        customer_id,
        status,
        stop_reason,
        pool_id,
    })
}

#[tonic::async_trait]
impl pb::card_service_server::CardService for CardApi {
    async fn import_cards(
        &self,
        request: Request<pb::ImportCardsRequest>,
    ) -> Result<Response<pb::ImportCardsResponse>, Status> {
        let f = match self.begin(request, Rpc::ImportCards).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let (caller, req, key) = (f.caller, f.req, f.key);
        if req.cards.is_empty() {
            return Err(invalid_field("cards", "at least one card is required"));
        }
        if req.cards.len() > MAX_IMPORT {
            return Err(invalid_field(
                "cards",
                format!(
                    "at most {MAX_IMPORT} cards per call, got {}",
                    req.cards.len()
                ),
            ));
        }
        let mut violations = Vec::new();
        let mut rows = Vec::with_capacity(req.cards.len());
        let mut seen_iccid: HashMap<String, usize> = HashMap::new();
        let mut seen_msisdn: HashMap<String, usize> = HashMap::new();
        for (i, input) in req.cards.iter().enumerate() {
            let Some(row) = convert::new_card(i, input, self.check, &mut violations) else {
                continue;
            };
            if !caller.principal.sees(&row.customer_id) {
                return Err(forbidden(Forbidden(format!(
                    "cards[{i}].customer_id: this key may import only its own customer's cards"
                ))));
            }
            if let Some(first) = seen_iccid.insert(row.iccid.to_string(), i) {
                violations.push(FieldViolation::new(
                    format!("cards[{i}].iccid"),
                    format!("duplicates cards[{first}].iccid"),
                ));
            }
            if let Some(m) = &row.msisdn {
                if let Some(first) = seen_msisdn.insert(m.as_str().to_string(), i) {
                    violations.push(FieldViolation::new(
                        format!("cards[{i}].msisdn"),
                        format!("duplicates cards[{first}].msisdn"),
                    ));
                }
            }
            rows.push(row);
        }
        if !violations.is_empty() {
            return Err(invalid_argument(violations));
        }
        let answer = |(imported, warnings): &(usize, Vec<ImportWarning>)| pb::ImportCardsResponse {
            imported: *imported as u32,
            warnings: warnings
                .iter()
                .map(|w| pb::ImportWarning {
                    row: w.row as u32,
                    iccid: w.iccid.clone(),
                    message: w.message.clone(),
                })
                .collect(),
        };
        let respond = |outcome: &(usize, Vec<ImportWarning>)| answer(outcome).encode_to_vec();
        let outcome = self
            .service
            .import(rows, &caller, key.idem(&respond).as_ref())
            .await?;
        Ok(Response::new(answer(&outcome)))
    }

    async fn assign_cards(
        &self,
        request: Request<pb::AssignCardsRequest>,
    ) -> Result<Response<pb::AssignCardsResponse>, Status> {
        let f = match self.begin(request, Rpc::AssignCards).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let (caller, req, key) = (f.caller, f.req, f.key);
        let mut violations = Vec::new();
        let customer = convert::customer_id_field("customer_id", &req.customer_id)
            .map_err(|v| violations.push(v))
            .ok();
        if req.iccids.is_empty() || req.iccids.len() > MAX_IMPORT {
            violations.push(FieldViolation::new(
                "iccids",
                format!(
                    "must hold 1 to {MAX_IMPORT} ICCIDs, got {}",
                    req.iccids.len()
                ),
            ));
        }
        let (iccids, bad) = convert::iccid_list(&req.iccids);
        violations.extend(bad);
        let Some(customer) = customer.filter(|_| violations.is_empty()) else {
            return Err(invalid_argument(violations));
        };
        let answer = |n: &usize| pb::AssignCardsResponse { changed: *n as u32 };
        let respond = |n: &usize| answer(n).encode_to_vec();
        let idem = key.idem(&respond);
        let changed = self
            .service
            .assign(&iccids, &customer, req.spare, &caller, idem.as_ref())
            .await?;
        Ok(Response::new(answer(&changed)))
    }

    async fn get_card(
        &self,
        request: Request<pb::GetCardRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetCard).await?;
        let iccid = iccid(&request.get_ref().iccid)?;
        let card = self.service.get(&iccid, &caller).await?;
        Ok(Response::new(self.card(&card)))
    }

    async fn list_cards(
        &self,
        request: Request<pb::ListCardsRequest>,
    ) -> Result<Response<pb::ListCardsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListCards).await?;
        let req = request.into_inner();
        let size = page_size(req.page_size)?;
        let filter = list_filter(&req)?;
        let unpaged = pb::ListCardsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        };
        let page =
            Page::<String>::read("page_token", &req.page_token, size, "ListCards", &unpaged)?;
        let mut cards = self
            .service
            .list(&filter, page.after.as_deref(), page.limit(), &caller)
            .await?;
        let next_page_token = page.next(&mut cards, |last| last.iccid.to_string());
        Ok(Response::new(pb::ListCardsResponse {
            cards: cards.iter().map(|c| self.card(c)).collect(),
            next_page_token,
        }))
    }

    async fn suspend_card(
        &self,
        request: Request<pb::SuspendCardRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        self.change_state(request, Rpc::SuspendCard, StateChange::Suspend, |r| {
            &r.iccid
        })
        .await
    }

    async fn resume_card(
        &self,
        request: Request<pb::ResumeCardRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        self.change_state(request, Rpc::ResumeCard, StateChange::Resume, |r| &r.iccid)
            .await
    }

    async fn recharge(
        &self,
        request: Request<pb::RechargeRequest>,
    ) -> Result<Response<pb::RechargeResponse>, Status> {
        let f = match self.begin(request, Rpc::Recharge).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let req = &f.req;
        let iccid = iccid_and(
            &req.iccid,
            "amount_fen",
            (1..=MAX_RECHARGE_FEN).contains(&req.amount_fen),
            format!("must be 1..={MAX_RECHARGE_FEN} fen, got {}", req.amount_fen),
        )?;
        let answer = |(before, after): &(Card, Card)| pb::RechargeResponse {
            balance_before_fen: before.balance.0,
            balance_after_fen: after.balance.0,
            card: Some(self.card(after)),
        };
        let respond = |change: &(Card, Card)| answer(change).encode_to_vec();
        let idem = f.key.idem(&respond);
        let change = self
            .service
            .recharge(&iccid, Fen(req.amount_fen), &f.caller, idem.as_ref())
            .await?;
        Ok(Response::new(answer(&change)))
    }

    async fn renew_plan(
        &self,
        request: Request<pb::RenewPlanRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        let f = match self.begin(request, Rpc::RenewPlan).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let req = &f.req;
        let iccid = iccid_and(
            &req.iccid,
            "months",
            (1..=MAX_RENEW_MONTHS).contains(&req.months),
            format!("must be 1..={MAX_RENEW_MONTHS}, got {}", req.months),
        )?;
        let respond = |(_, after): &(Card, Card)| self.card(after).encode_to_vec();
        let idem = f.key.idem(&respond);
        let card = self
            .service
            .renew(&iccid, req.months, &f.caller, idem.as_ref())
            .await?;
        Ok(Response::new(self.card(&card)))
    }

    async fn verify_real_name(
        &self,
        request: Request<pb::VerifyRealNameRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        self.change_state(
            request,
            Rpc::VerifyRealName,
            StateChange::VerifyRealName,
            |r| &r.iccid,
        )
        .await
    }

    async fn list_card_events(
        &self,
        request: Request<pb::ListCardEventsRequest>,
    ) -> Result<Response<pb::ListCardEventsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListCardEvents).await?;
        let req = request.into_inner();
        let iccid = iccid(&req.iccid)?;
        let size = page_size(req.page_size)?;
        // A token pages the history of the card it was issued for.
        let unpaged = pb::ListCardEventsRequest {
            iccid: iccid.to_string(),
            ..Default::default()
        };
        let page = Page::<i64>::read(
            "page_token",
            &req.page_token,
            size,
            "ListCardEvents",
            &unpaged,
        )?;
        // NOT_FOUND for an unknown (or another customer's) card, not an empty history.
        let mut events = self
            .service
            .events(&iccid, page.after.unwrap_or(0), page.limit(), &caller)
            .await?;
        let next_page_token = page.next(&mut events, |last| last.id);
        Ok(Response::new(pb::ListCardEventsResponse {
            events: events.iter().map(convert::event_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn rebind_card(
        &self,
        request: Request<pb::RebindCardRequest>,
    ) -> Result<Response<pb::Card>, Status> {
        let f = match self.begin(request, Rpc::RebindCard).await? {
            Begun::Repeat(first) => return Ok(Response::new(first)),
            Begun::Fresh(f) => f,
        };
        let req = &f.req;
        let mut violations = Vec::new();
        let iccid = convert::iccid_field("iccid", &req.iccid)
            .map_err(|v| violations.push(v))
            .ok();
        let target = match &req.target {
            Some(pb::rebind_card_request::Target::Unbind(true)) => Some(Rebind::Unbind),
            Some(pb::rebind_card_request::Target::CurrentDevice(true)) => {
                Some(Rebind::CurrentDevice)
            }
            Some(pb::rebind_card_request::Target::Imei(imei)) => {
                if crate::domain::ids::is_imei(imei) {
                    Some(Rebind::Imei(imei.clone()))
                } else {
                    violations.push(FieldViolation::new("imei", "must be 15 digits"));
                    None
                }
            }
            _ => {
                violations.push(FieldViolation::new(
                    "target",
                    "is required: unbind = true, current_device = true, or imei",
                ));
                None
            }
        };
        let (Some(iccid), Some(target)) = (iccid, target) else {
            return Err(invalid_argument(violations));
        };
        let respond = |(_, after): &(Card, Card)| self.card(after).encode_to_vec();
        let idem = f.key.idem(&respond);
        let card = self
            .service
            .rebind(&iccid, &f.caller, idem.as_ref(), target)
            .await?;
        Ok(Response::new(self.card(&card)))
    }

    async fn list_carrier_orders(
        &self,
        request: Request<pb::ListCarrierOrdersRequest>,
    ) -> Result<Response<pb::ListCarrierOrdersResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListCarrierOrders).await?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        let iccid = (!req.iccid.is_empty())
            .then(|| convert::iccid_field("iccid", &req.iccid))
            .transpose()
            .map_err(|v| violations.push(v))
            .ok()
            .flatten();
        let account = (!req.account_id.is_empty())
            .then(|| crate::domain::AccountId::parse(&req.account_id))
            .transpose()
            .map_err(|m| violations.push(FieldViolation::new("account_id", m)))
            .ok()
            .flatten();
        let state = match pb::CarrierOrderState::try_from(req.state) {
            Ok(pb::CarrierOrderState::Unspecified) => None,
            Ok(s) => Some(convert::order_state_from_pb(s)),
            Err(_) => {
                violations.push(FieldViolation::new("state", "is not a CarrierOrderState"));
                None
            }
        };
        if !violations.is_empty() {
            return Err(invalid_argument(violations));
        }
        let size = page_size(req.page_size)?;
        let unpaged = pb::ListCarrierOrdersRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        };
        let page = Page::<i64>::read(
            "page_token",
            &req.page_token,
            size,
            "ListCarrierOrders",
            &unpaged,
        )?;
        let filter = crate::store::OrderFilter {
            iccid: iccid.map(|i| i.to_string()),
            account: account.map(|a| a.to_string()),
            state,
            customer: None,
        };
        let mut orders = self
            .service
            .list_orders(&filter, page.after.unwrap_or(0), page.limit(), &caller)
            .await?;
        let next_page_token = page.next(&mut orders, |last| last.id);
        Ok(Response::new(pb::ListCarrierOrdersResponse {
            orders: orders.iter().map(convert::order_to_pb).collect(),
            next_page_token,
        }))
    }

    async fn diagnose_card(
        &self,
        request: Request<pb::DiagnoseCardRequest>,
    ) -> Result<Response<pb::Diagnosis>, Status> {
        let caller = self.auth.caller(&request, Rpc::DiagnoseCard).await?;
        let accept = request
            .metadata()
            .get("accept-language")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let req = request.into_inner();
        let iccid = iccid(&req.iccid)?;
        let lang = Lang::pick(&req.language, accept.as_deref());
        let (d, at) = self.service.diagnose(&iccid, lang, &caller).await?;
        Ok(Response::new(convert::diagnosis_to_pb(&iccid, &d, at)))
    }

    async fn get_usage(
        &self,
        request: Request<pb::GetUsageRequest>,
    ) -> Result<Response<pb::Usage>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetUsage).await?;
        let iccid = iccid(&request.get_ref().iccid)?;
        let u = self.service.usage(&iccid, &caller).await?;
        let permille = u.used_bytes.saturating_mul(1000) / u.quota_bytes.max(1);
        Ok(Response::new(pb::Usage {
            iccid: u.iccid.to_string(),
            cycle_start: Some(convert::timestamp(u.cycle_start)),
            cycle_end: Some(convert::timestamp(u.cycle_end)),
            used_bytes: u.used_bytes,
            quota_bytes: u.quota_bytes,
            remaining_bytes: u.quota_bytes.saturating_sub(u.used_bytes),
            used_permille: u32::try_from(permille).unwrap_or(u32::MAX),
            over_quota: u.used_bytes >= u.quota_bytes,
        }))
    }
}
