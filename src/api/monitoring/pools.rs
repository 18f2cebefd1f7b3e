//! Pools: create, read, list, the cards in a pool and top-ups.

use prost::Message;
use tonic::{Request, Response, Status};

use crate::api::convert::{self, carrier_from_pb, carrier_to_pb, timestamp};
use crate::api::error::{invalid_argument, invalid_field};
use crate::api::idempotency::{idempotent, RequestKey};
use crate::api::paging::Page;
use crate::api::rpc::Rpc;
use crate::domain::pool::MAX_TOPUP_BYTES;
use crate::domain::Iccid;
use crate::pb;
use crate::service::monitor::{valid_pool_id, NewPool, PoolMove, PoolView, MAX_POOL_CARDS};
use crate::service::FieldViolation;
use crate::store::PoolFilter;

use super::{own_customer, pool_id, MonitoringApi};

idempotent!(pb::TopUpPoolRequest);

fn pool_to_pb(v: &PoolView) -> pb::Pool {
    let p = &v.pool;
    pb::Pool {
        pool_id: p.id.clone(),
        name: p.name.clone(),
        carrier: carrier_to_pb(p.carrier) as i32,
        customer_id: p.customer_id.clone(),
        monthly_quota_bytes: p.quota_bytes,
        auto_suspend: p.auto_suspend,
        cycle_start: Some(timestamp(p.cycle_start)),
        topup_bytes: p.topup_bytes,
        used_bytes: v.used_bytes,
        capacity_bytes: p.capacity(),
        used_permille: u32::try_from(crate::domain::alerts::permille(v.used_bytes, p.capacity()))
            .unwrap_or(u32::MAX),
        exhausted: p.exhausted,
        member_count: u32::try_from(v.members).unwrap_or(u32::MAX),
        created_at: Some(timestamp(p.created_at)),
        updated_at: Some(timestamp(p.updated_at)),
    }
}

/// The optional customer a pool request names (pool ids are per customer).
fn pool_customer(raw: &str) -> Result<Option<String>, Status> {
    if raw.is_empty() {
        return Ok(None);
    }
    convert::customer_id_field("customer_id", raw)
        .map(Some)
        .map_err(|v| invalid_argument(vec![v]))
}

fn iccid_list(raw: &[String]) -> Result<Vec<Iccid>, Status> {
    if raw.is_empty() || raw.len() > MAX_POOL_CARDS {
        return Err(invalid_field(
            "iccids",
            format!("must name 1..={MAX_POOL_CARDS} cards"),
        ));
    }
    let mut violations = Vec::new();
    let mut out = Vec::with_capacity(raw.len());
    let mut seen = std::collections::HashSet::new();
    for (i, s) in raw.iter().enumerate() {
        match convert::iccid_field(&format!("iccids[{i}]"), s) {
            Ok(iccid) if !seen.insert(iccid.clone()) => violations.push(FieldViolation::new(
                format!("iccids[{i}]"),
                "is named twice",
            )),
            Ok(iccid) => out.push(iccid),
            Err(v) => violations.push(v),
        }
    }
    if violations.is_empty() {
        Ok(out)
    } else {
        Err(invalid_argument(violations))
    }
}

impl MonitoringApi {
    pub(super) async fn create_pool(
        &self,
        request: Request<pb::CreatePoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::CreatePool).await?;
        let req = request.into_inner();
        let mut violations = Vec::new();
        if !valid_pool_id(&req.pool_id) {
            violations.push(FieldViolation::new(
                "pool_id",
                "must be 1-64 characters of A-Z, a-z, 0-9, '-', '_'",
            ));
        }
        if req.name.chars().count() > 128 {
            violations.push(FieldViolation::new("name", "at most 128 characters"));
        }
        let carrier = carrier_from_pb(req.carrier);
        if carrier.is_none() {
            violations.push(FieldViolation::new("carrier", "is required"));
        }
        let customer = convert::customer_id_field("customer_id", &req.customer_id)
            .map_err(|v| violations.push(v))
            .ok();
        if req.monthly_quota_bytes == 0 || req.monthly_quota_bytes > MAX_TOPUP_BYTES {
            violations.push(FieldViolation::new(
                "monthly_quota_bytes",
                format!("must be 1..={MAX_TOPUP_BYTES}"),
            ));
        }
        let (Some(carrier), Some(customer_id), true) = (carrier, customer, violations.is_empty())
        else {
            return Err(invalid_argument(violations));
        };
        own_customer(&caller, &customer_id)?;
        let view = self
            .service
            .create_pool(
                NewPool {
                    id: req.pool_id,
                    name: req.name,
                    carrier,
                    customer_id,
                    quota_bytes: req.monthly_quota_bytes,
                    auto_suspend: req.auto_suspend,
                },
                &caller,
            )
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    pub(super) async fn get_pool(
        &self,
        request: Request<pb::GetPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetPool).await?;
        let id = pool_id("pool_id", &request.get_ref().pool_id)?;
        let customer = pool_customer(&request.get_ref().customer_id)?;
        let view = self
            .service
            .get_pool(&id, customer.as_deref(), &caller)
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    pub(super) async fn list_pools(
        &self,
        request: Request<pb::ListPoolsRequest>,
    ) -> Result<Response<pb::ListPoolsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListPools).await?;
        let req = request.into_inner();
        let size = convert::page_size(req.page_size, 100)?;
        let mut filter = PoolFilter::default();
        if !req.customer_id.is_empty() {
            filter.customer_id = Some(
                convert::customer_id_field("customer_id", &req.customer_id)
                    .map_err(|v| invalid_argument(vec![v]))?,
            );
        }
        if req.carrier != 0 {
            filter.carrier = Some(
                carrier_from_pb(req.carrier)
                    .ok_or_else(|| invalid_field("carrier", "is not a carrier"))?,
            );
        }
        // Pools page in (pool id, customer) order, since two customers may have a pool of the
        // same id.
        let unpaged = pb::ListPoolsRequest {
            page_size: 0,
            page_token: String::new(),
            ..req.clone()
        };
        let page = Page::<(String, String)>::read(
            "page_token",
            &req.page_token,
            size,
            "ListPools",
            &unpaged,
        )?;
        let (after_id, after_customer) = match &page.after {
            None => (String::new(), String::new()),
            // The position goes to the store as it is: only what a pool can be is taken.
            Some((id, customer))
                if valid_pool_id(id) && convert::customer_id_field("", customer).is_ok() =>
            {
                (id.clone(), customer.clone())
            }
            Some(_) => {
                return Err(invalid_field(
                    "page_token",
                    "is not a token this server issued",
                ))
            }
        };
        let mut pools = self
            .service
            .list_pools(&filter, (&after_id, &after_customer), page.limit(), &caller)
            .await?;
        let next_page_token = page.next(&mut pools, |last| {
            (last.pool.id.clone(), last.pool.customer_id.clone())
        });
        Ok(Response::new(pb::ListPoolsResponse {
            pools: pools.iter().map(pool_to_pb).collect(),
            next_page_token,
        }))
    }

    pub(super) async fn add_cards_to_pool(
        &self,
        request: Request<pb::AddCardsToPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        self.membership(request, Rpc::AddCardsToPool, PoolMove::Join)
            .await
    }

    pub(super) async fn remove_cards_from_pool(
        &self,
        request: Request<pb::RemoveCardsFromPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        self.membership(request, Rpc::RemoveCardsFromPool, PoolMove::Leave)
            .await
    }

    /// AddCardsToPool and RemoveCardsFromPool: the same fields, validated alike; the opposite
    /// change.
    async fn membership<R: PoolCards>(
        &self,
        request: Request<R>,
        rpc: Rpc,
        direction: PoolMove,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, rpc).await?;
        let (raw_id, raw_customer, raw_iccids) = request.into_inner().parts();
        let id = pool_id("pool_id", &raw_id)?;
        let customer = pool_customer(&raw_customer)?;
        let iccids = iccid_list(&raw_iccids)?;
        let view = self
            .service
            .move_cards(&id, customer.as_deref(), &iccids, &caller, direction)
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }

    pub(super) async fn top_up_pool(
        &self,
        request: Request<pb::TopUpPoolRequest>,
    ) -> Result<Response<pb::Pool>, Status> {
        let caller = self.auth.caller(&request, Rpc::TopUpPool).await?;
        let mut req = request.into_inner();
        let id = pool_id("pool_id", &req.pool_id)?;
        let customer = pool_customer(&req.customer_id)?;
        if req.bytes == 0 || req.bytes > MAX_TOPUP_BYTES {
            return Err(invalid_field(
                "bytes",
                format!("must be 1..={MAX_TOPUP_BYTES}"),
            ));
        }
        // The fields are checked before the repeat check, so that a refusal never depends on
        // what was stored under the request id.
        let key = RequestKey::take(&mut req)?;
        if let Some(first) = key.replay(&self.service, &caller).await? {
            return Ok(Response::new(first));
        }
        let respond = |v: &PoolView| pool_to_pb(v).encode_to_vec();
        let idem = key.idem(&respond);
        let view = self
            .service
            .top_up_pool(&id, customer.as_deref(), req.bytes, &caller, idem.as_ref())
            .await?;
        Ok(Response::new(pool_to_pb(&view)))
    }
}

/// The requests that name a pool and cards: (pool_id, customer_id, iccids).
trait PoolCards {
    fn parts(self) -> (String, String, Vec<String>);
}

impl PoolCards for pb::AddCardsToPoolRequest {
    fn parts(self) -> (String, String, Vec<String>) {
        (self.pool_id, self.customer_id, self.iccids)
    }
}

impl PoolCards for pb::RemoveCardsFromPoolRequest {
    fn parts(self) -> (String, String, Vec<String>) {
        (self.pool_id, self.customer_id, self.iccids)
    }
}
