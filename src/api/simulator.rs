//! `simgate.v1.SimulatorService`: a window onto the simulated carriers for test harnesses.

use tonic::{Request, Response, Status};

use super::convert::{carrier_from_pb, carrier_to_pb, iccid_field};
use super::error::{invalid_argument, invalid_field};
use crate::carrier::sim::{Fault, SimCarrier, Simulators};
use crate::carrier::{CarrierCard, CarrierError, ServiceState};
use crate::domain::{CarrierId, Iccid};
use crate::pb;
use crate::service::{FieldViolation, ServiceError};

pub struct SimulatorApi {
    sims: Simulators,
}

impl SimulatorApi {
    pub fn new(sims: Simulators) -> SimulatorApi {
        SimulatorApi { sims }
    }

    fn target(
        &self,
        carrier: i32,
        iccid: Option<&str>,
    ) -> Result<(&SimCarrier, Option<Iccid>), Status> {
        let mut violations = Vec::new();
        let id = carrier_from_pb(carrier);
        if id.is_none() {
            violations.push(FieldViolation::new("carrier", "is required"));
        }
        let iccid = iccid.and_then(|raw| {
            iccid_field("iccid", raw)
                .map_err(|v| violations.push(v))
                .ok()
        });
        if !violations.is_empty() {
            return Err(invalid_argument(violations));
        }
        let id: CarrierId = id.ok_or_else(|| invalid_field("carrier", "is required"))?;
        let sim = self.sims.get(id).ok_or_else(|| {
            Status::failed_precondition(format!("{id} is not simulated on this server"))
        })?;
        Ok((sim.as_ref(), iccid))
    }
}

fn card_to_pb(carrier: CarrierId, c: CarrierCard) -> pb::CarrierCard {
    pb::CarrierCard {
        carrier: carrier_to_pb(carrier) as i32,
        iccid: c.iccid.to_string(),
        state: match c.state {
            ServiceState::Active => pb::CarrierServiceState::Active,
            ServiceState::Stopped => pb::CarrierServiceState::Stopped,
            ServiceState::Cancelled => pb::CarrierServiceState::Cancelled,
        } as i32,
        cycle_usage_bytes: c.cycle_usage_bytes,
        changes: c.changes,
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
    async fn get_carrier_card(
        &self,
        request: Request<pb::GetCarrierCardRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        let req = request.into_inner();
        let (sim, iccid) = self.target(req.carrier, Some(&req.iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        let id = crate::carrier::Carrier::id(sim);
        let card = crate::carrier::Carrier::card(sim, &iccid)
            .await
            .map_err(|e| carrier_status(id, e))?;
        Ok(Response::new(card_to_pb(id, card)))
    }

    async fn record_usage(
        &self,
        request: Request<pb::RecordUsageRequest>,
    ) -> Result<Response<pb::CarrierCard>, Status> {
        let req = request.into_inner();
        let (sim, iccid) = self.target(req.carrier, Some(&req.iccid))?;
        let iccid = iccid.ok_or_else(|| invalid_field("iccid", "is required"))?;
        if req.bytes == 0 || req.bytes > i64::MAX as u64 / 2 {
            return Err(invalid_field(
                "bytes",
                "must be greater than 0 and below 2^62",
            ));
        }
        let id = crate::carrier::Carrier::id(sim);
        let card = sim
            .record_usage(&iccid, req.bytes)
            .await
            .map_err(|e| carrier_status(id, e))?;
        Ok(Response::new(card_to_pb(id, card)))
    }

    async fn inject_fault(
        &self,
        request: Request<pb::InjectFaultRequest>,
    ) -> Result<Response<pb::InjectFaultResponse>, Status> {
        let req = request.into_inner();
        let (sim, _) = self.target(req.carrier, None)?;
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
