//! `simgate.v1.SimulatorService`: a window onto the simulated carriers for test harnesses.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::auth::Authenticator;
use super::convert::{
    card_to_pb, carrier_from_pb, carrier_to_pb, from_timestamp, iccid_field, timestamp,
};
use super::error::{invalid_argument, invalid_field, ERROR_DOMAIN};
use super::rpc::Rpc;
use crate::carrier::sim::{is_imei, Fault, SimCarrier, SimFaults, Simulators};
use crate::carrier::{CarrierCard, CarrierError, ServiceState};
use crate::clock::{Clock, ClockError};
use crate::domain::{AccountId, CarrierId, Iccid};
use crate::pb;
use crate::service::engine::Engine;
use crate::service::{CardService, FieldViolation, ServiceError};

fn clock_status(e: ClockError) -> Status {
    let reason = match e {
        ClockError::NotControllable => "CLOCK_NOT_CONTROLLABLE",
        ClockError::Backwards { .. } => "CLOCK_CANNOT_GO_BACK",
    };
    let mut d = ErrorDetails::new();
    d.set_error_info(reason, ERROR_DOMAIN, HashMap::new());
    Status::with_error_details(Code::FailedPrecondition, e.to_string(), d)
}

pub struct SimulatorApi {
    sims: Simulators,
    service: CardService,
    engine: Engine,
    clock: Arc<dyn Clock>,
    auth: Authenticator,
}

/// The furthest one AdvanceClock or SetClock may jump: ten years of card life.
const MAX_JUMP_DAYS: i64 = 3660;

impl SimulatorApi {
    pub fn new(
        sims: Simulators,
        service: CardService,
        engine: Engine,
        clock: Arc<dyn Clock>,
        auth: Authenticator,
    ) -> SimulatorApi {
        SimulatorApi {
            sims,
            service,
            engine,
            clock,
            auth,
        }
    }

    /// Applies everything due at the new time before answering.
    async fn after_move(
        &self,
        moved: Result<DateTime<Utc>, ClockError>,
    ) -> Result<pb::ClockResponse, Status> {
        let now = moved.map_err(clock_status)?;
        let stats = self.engine.run_until_idle(now).await?;
        Ok(pb::ClockResponse {
            now: Some(timestamp(now)),
            cards_changed: stats.applied,
            cards_failed: stats.failed,
        })
    }

    /// The simulated account a request names: by `account_id`, or by `carrier` when it has
    /// exactly one; both, when given, must agree.
    fn target(
        &self,
        carrier: i32,
        account_id: &str,
        iccid: Option<&str>,
    ) -> Result<(&SimCarrier, Option<Iccid>), Status> {
        let mut violations = Vec::new();
        let id = carrier_from_pb(carrier);
        let account = if account_id.is_empty() {
            None
        } else {
            AccountId::parse(account_id)
                .map_err(|e| violations.push(FieldViolation::new("account_id", e)))
                .ok()
        };
        if id.is_none() && account_id.is_empty() {
            violations.push(FieldViolation::new(
                "carrier",
                "is required (or name the account_id)",
            ));
        }
        let iccid = iccid.and_then(|raw| {
            iccid_field("iccid", raw)
                .map_err(|v| violations.push(v))
                .ok()
        });
        if !violations.is_empty() {
            return Err(invalid_argument(violations));
        }
        let sim = match (account, id) {
            (Some(a), id) => {
                let sim = self.sims.get(&a).ok_or_else(|| {
                    Status::not_found(format!("account {a} is not simulated on this server"))
                })?;
                if id.is_some_and(|c| c != crate::carrier::Carrier::id(sim.as_ref())) {
                    return Err(invalid_field(
                        "carrier",
                        format!("account {a} is not an account of this carrier"),
                    ));
                }
                sim
            }
            (None, Some(c)) => {
                let all: Vec<&Arc<SimCarrier>> = self.sims.of(c).collect();
                match all.as_slice() {
                    [one] => *one,
                    [] => {
                        return Err(Status::failed_precondition(format!(
                            "{c} is not simulated on this server"
                        )))
                    }
                    several => {
                        let ids: Vec<String> = several
                            .iter()
                            .map(|s| crate::carrier::Carrier::account(s.as_ref()).to_string())
                            .collect();
                        return Err(invalid_field(
                            "account_id",
                            format!(
                                "{} has several simulated accounts ({}): name one",
                                c.display_name(),
                                ids.join(", ")
                            ),
                        ));
                    }
                }
            }
            (None, None) => return Err(invalid_field("carrier", "is required")),
        };
        Ok((sim.as_ref(), iccid))
    }
}

impl SimulatorApi {
    /// BindCarrierCard (`bind`) and MoveCarrierCard: the card put in device `imei`.
    async fn put_in_device(
        &self,
        carrier: i32,
        account_id: &str,
        iccid: &str,
        imei: &str,
        bind: bool,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        let (sim, iccid) = self.target(carrier, account_id, Some(iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        let imei = imei_field(imei)?;
        let placed = if bind {
            sim.bind(&iccid, imei).await
        } else {
            sim.move_to_device(&iccid, imei).await
        };
        let card = placed.map_err(|e| carrier_status(crate::carrier::Carrier::id(sim), e))?;
        Ok(Response::new(carrier_card_to_pb(sim, card).await?))
    }
}

/// The card as the simulated carrier holds it, with its machine-card binding.
async fn carrier_card_to_pb(sim: &SimCarrier, c: CarrierCard) -> Result<pb::CarrierCard, Status> {
    let id = crate::carrier::Carrier::id(sim);
    let binding = sim
        .binding_of(&c.iccid)
        .await
        .map_err(|e| carrier_status(id, e))?;
    Ok(pb::CarrierCard {
        carrier: carrier_to_pb(id) as i32,
        account_id: crate::carrier::Carrier::account(sim).to_string(),
        iccid: c.iccid.to_string(),
        state: match c.state {
            ServiceState::Active => pb::CarrierServiceState::Active,
            ServiceState::Stopped => pb::CarrierServiceState::Stopped,
            ServiceState::Cancelled => pb::CarrierServiceState::Cancelled,
        } as i32,
        cycle_usage_bytes: c.cycle_usage_bytes,
        changes: c.changes,
        bound_imei: binding.bound_imei.unwrap_or_default(),
        device_imei: binding.device_imei.unwrap_or_default(),
        device_stopped: binding.device_stopped,
    })
}

/// The `imei` of a binding control: exactly 15 digits.
fn imei_field(imei: &str) -> Result<&str, Status> {
    if is_imei(imei) {
        Ok(imei)
    } else {
        Err(invalid_field("imei", "must be exactly 15 digits"))
    }
}

fn carrier_status(carrier: CarrierId, error: CarrierError) -> Status {
    match &error {
        CarrierError::Rejected { .. } => Status::not_found(format!(
            "{} does not know this card: {error}",
            carrier.display_name()
        )),
        _ => ServiceError::Carrier { carrier, error }.into(),
    }
}

#[tonic::async_trait]
impl pb::simulator_service_server::SimulatorService for SimulatorApi {
    async fn bind_carrier_card(
        &self,
        request: Request<pb::BindCarrierCardRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        self.auth.caller(&request, Rpc::BindCarrierCard).await?;
        let r = request.into_inner();
        self.put_in_device(r.carrier, &r.account_id, &r.iccid, &r.imei, true)
            .await
    }

    async fn move_carrier_card(
        &self,
        request: Request<pb::MoveCarrierCardRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        self.auth.caller(&request, Rpc::MoveCarrierCard).await?;
        let r = request.into_inner();
        self.put_in_device(r.carrier, &r.account_id, &r.iccid, &r.imei, false)
            .await
    }

    async fn get_clock(
        &self,
        request: Request<pb::GetClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        self.auth.caller(&request, Rpc::GetClock).await?;
        Ok(Response::new(pb::ClockResponse {
            now: Some(timestamp(self.clock.now())),
            cards_changed: 0,
            cards_failed: 0,
        }))
    }

    async fn advance_clock(
        &self,
        request: Request<pb::AdvanceClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        self.auth.caller(&request, Rpc::AdvanceClock).await?;
        let by = request
            .into_inner()
            .by
            .and_then(|d| {
                chrono::Duration::try_seconds(d.seconds)
                    .map(|s| s + chrono::Duration::nanoseconds(i64::from(d.nanos)))
            })
            .filter(|d| {
                *d > chrono::Duration::zero() && *d <= chrono::Duration::days(MAX_JUMP_DAYS)
            })
            .ok_or_else(|| {
                invalid_field(
                    "by",
                    format!("must be a positive duration of at most {MAX_JUMP_DAYS} days"),
                )
            })?;
        let moved = self.clock.advance(by);
        Ok(Response::new(self.after_move(moved).await?))
    }

    async fn set_clock(
        &self,
        request: Request<pb::SetClockRequest>,
    ) -> Result<Response<pb::ClockResponse>, Status> {
        self.auth.caller(&request, Rpc::SetClock).await?;
        let now = self.clock.now();
        let to = request
            .into_inner()
            .to
            .as_ref()
            .and_then(from_timestamp)
            .filter(|t| *t <= now + chrono::Duration::days(MAX_JUMP_DAYS))
            .ok_or_else(|| {
                invalid_field(
                    "to",
                    format!("must be a valid time at most {MAX_JUMP_DAYS} days ahead"),
                )
            })?;
        let moved = self.clock.set(to);
        Ok(Response::new(self.after_move(moved).await?))
    }

    async fn get_carrier_card(
        &self,
        request: Request<pb::GetCarrierCardRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        self.auth.caller(&request, Rpc::GetCarrierCard).await?;
        let req = request.into_inner();
        let (sim, iccid) = self.target(req.carrier, &req.account_id, Some(&req.iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        let id = crate::carrier::Carrier::id(sim);
        let card = crate::carrier::Carrier::card(sim, &iccid)
            .await
            .map_err(|e| carrier_status(id, e))?;
        Ok(Response::new(carrier_card_to_pb(sim, card).await?))
    }

    async fn get_wire_calls(
        &self,
        request: Request<pb::GetWireCallsRequest>,
    ) -> Result<Response<pb::GetWireCallsResponse>, Status> {
        self.auth.caller(&request, Rpc::GetWireCalls).await?;
        let req = request.into_inner();
        let (sim, _) = self.target(req.carrier, &req.account_id, None)?;
        let calls = sim.wire_calls();
        Ok(Response::new(pb::GetWireCallsResponse {
            total: calls.values().sum(),
            paths: calls
                .into_iter()
                .map(|(path, calls)| pb::WireCalls { path, calls })
                .collect(),
        }))
    }

    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::RecordUsageResponse>, Status> {
        self.auth.caller(&request, Rpc::RecordUsage).await?;
        let req = request.into_inner();
        let (sim, iccid) = self.target(req.carrier, &req.account_id, Some(&req.iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        if req.bytes == 0 || req.bytes > i64::MAX as u64 / 2 {
            return Err(invalid_field(
                "bytes",
                "must be greater than 0 and below 2^62",
            ));
        }
        let id = crate::carrier::Carrier::id(sim);
        let at_carrier = sim
            .record_usage(&iccid, req.bytes)
            .await
            .map_err(|e| carrier_status(id, e))?;
        // simgate reads the new usage at once, as its usage sync would.
        let card = match self.service.sync_usage(&iccid).await {
            Ok(card) => Some(card_to_pb(&card, self.service.policy(card.carrier).ok())),
            Err(ServiceError::NotFound(_)) => None,
            Err(e) => return Err(e.into()),
        };
        Ok(Response::new(pb::RecordUsageResponse {
            carrier_card: Some(carrier_card_to_pb(sim, at_carrier).await?),
            card,
        }))
    }

    async fn set_faults(
        &self,
        request: Request<pb::SetFaultsRequest>,
    ) -> Result<Response<pb::SetFaultsResponse>, Status> {
        self.auth.caller(&request, Rpc::SetFaults).await?;
        let req = request.into_inner();
        let (sim, _) = self.target(req.carrier, &req.account_id, None)?;
        let faults = SimFaults {
            error_rate: req.error_rate,
            latency_ms: u64::from(req.latency_ms),
            rate_limit_rate: req.rate_limit_rate,
            timeout_after_apply_rate: req.timeout_after_apply_rate,
            down: req.down,
            traffic_bytes_per_hour: req.traffic_bytes_per_hour,
            responses_lost: req.responses_lost,
            ..SimFaults::default()
        }
        // SetFaults sets the misbehaviour; how the account takes changes stays as configured.
        .with_change_settings_of(sim.settings());
        faults.validate().map_err(|e| {
            let field = e.split(' ').next().unwrap_or("faults").to_string();
            invalid_field(&field, e)
        })?;
        sim.set_faults(faults);
        Ok(Response::new(pb::SetFaultsResponse {}))
    }

    async fn set_carrier_card_state(
        &self,
        request: Request<pb::SetCarrierCardStateRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        self.auth.caller(&request, Rpc::SetCarrierCardState).await?;
        let req = request.into_inner();
        let (sim, iccid) = self.target(req.carrier, &req.account_id, Some(&req.iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        let state = match pb::CarrierServiceState::try_from(req.state) {
            Ok(pb::CarrierServiceState::Active) => crate::carrier::ServiceState::Active,
            Ok(pb::CarrierServiceState::Stopped) => crate::carrier::ServiceState::Stopped,
            Ok(pb::CarrierServiceState::Cancelled) => crate::carrier::ServiceState::Cancelled,
            _ => {
                return Err(invalid_field(
                    "state",
                    "must be ACTIVE, STOPPED or CANCELLED",
                ))
            }
        };
        let id = crate::carrier::Carrier::id(sim);
        let card = sim
            .set_state_behind_simgate(&iccid, state)
            .await
            .map_err(|e| carrier_status(id, e))?;
        Ok(Response::new(carrier_card_to_pb(sim, card).await?))
    }

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        self.auth.caller(&request, Rpc::InjectFault).await?;
        let req = request.into_inner();
        let (sim, _) = self.target(req.carrier, &req.account_id, None)?;
        let fault = match pb::FaultKind::try_from(req.kind) {
            Ok(pb::FaultKind::Reject) => Fault::Reject,
            Ok(pb::FaultKind::Unavailable) => Fault::Unavailable,
            _ => {
                return Err(invalid_field(
                    "kind",
                    "must be FAULT_KIND_REJECT or FAULT_KIND_UNAVAILABLE",
                ))
            }
        };
        if req.count > 1_000_000 {
            return Err(invalid_field("count", "must be at most 1000000"));
        }
        sim.inject(fault, req.count);
        Ok(Response::new(pb::InjectFaultResponse {}))
    }
}
