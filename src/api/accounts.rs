//! `simgate.v1.CarrierAccountService`: the configured carrier accounts as they run, with each
//! one's health (circuit breaker, newest error), budget use (calls in the last minute per
//! method against its limits), open journal intents and number of cards. Reseller admins only.

use std::collections::BTreeMap;

use tonic::{Request, Response, Status};

use super::auth::Authenticator;
use super::convert::{carrier_from_pb, carrier_to_pb, timestamp};
use super::error::invalid_field;
use super::rpc::Rpc;
use crate::carrier::{Account, Carriers};
use crate::domain::AccountId;
use crate::pb;
use crate::store::Store;

pub struct AccountApi {
    carriers: Carriers,
    store: Store,
    auth: Authenticator,
}

impl AccountApi {
    pub fn new(carriers: Carriers, store: Store, auth: Authenticator) -> AccountApi {
        AccountApi {
            carriers,
            store,
            auth,
        }
    }

    /// Per account: (open intents, cards), read once for a whole answer.
    async fn counts(&self) -> Result<(BTreeMap<String, i64>, BTreeMap<String, i64>), Status> {
        let intents = self
            .store
            .open_intents_by_account()
            .await
            .map_err(store_status)?;
        let cards = self.store.cards_by_account().await.map_err(store_status)?;
        Ok((intents, cards))
    }
}

fn store_status(e: crate::store::StoreError) -> Status {
    crate::service::ServiceError::from(e).into()
}

fn account_to_pb(
    a: &Account,
    intents: &BTreeMap<String, i64>,
    cards: &BTreeMap<String, i64>,
) -> pb::CarrierAccount {
    let count = |m: &BTreeMap<String, i64>| {
        m.get(a.id.as_str())
            .map_or(0, |n| u64::try_from(*n).unwrap_or(0))
    };
    let (health, budget) = match &a.guard {
        Some(g) => {
            let h = g.health();
            let limits = g.limits();
            let calls = g.budget().last_minute();
            (
                pb::AccountHealth {
                    breaker: if h.open_until.is_some() {
                        pb::BreakerState::Open
                    } else {
                        pb::BreakerState::Closed
                    } as i32,
                    open_until: h.open_until.map(timestamp),
                    consecutive_failures: h.consecutive_failures,
                    last_error: h
                        .last_error
                        .as_ref()
                        .map(|(_, e)| e.clone())
                        .unwrap_or_default(),
                    last_error_at: h.last_error.as_ref().map(|(at, _)| timestamp(*at)),
                    in_flight: h.in_flight,
                },
                pb::AccountBudget {
                    requests_per_second: limits.requests_per_second,
                    method_requests_per_second: limits.method_requests_per_second,
                    max_concurrency: limits.max_concurrency,
                    breaker_failures: limits.breaker_failures,
                    breaker_open_ms: limits.breaker_open_ms,
                    calls_last_minute: calls.values().sum(),
                    methods: calls
                        .iter()
                        .map(|(m, n)| pb::MethodCalls {
                            method: (*m).to_string(),
                            calls_last_minute: *n,
                        })
                        .collect(),
                },
            )
        }
        None => (pb::AccountHealth::default(), pb::AccountBudget::default()),
    };
    pb::CarrierAccount {
        account_id: a.id.to_string(),
        carrier: carrier_to_pb(a.carrier) as i32,
        platform: a.platform.to_string(),
        health: Some(health),
        budget: Some(budget),
        open_intents: count(intents),
        cards: count(cards),
    }
}

#[tonic::async_trait]
impl pb::carrier_account_service_server::CarrierAccountService for AccountApi {
    async fn list_carrier_accounts(
        &self,
        request: Request<pb::ListCarrierAccountsRequest>,
    ) -> Result<Response<pb::ListCarrierAccountsResponse>, Status> {
        self.auth.caller(&request, Rpc::ListCarrierAccounts).await?;
        let req = request.into_inner();
        let carrier = match req.carrier {
            0 => None,
            c => Some(carrier_from_pb(c).ok_or_else(|| invalid_field("carrier", "unknown value"))?),
        };
        let (intents, cards) = self.counts().await?;
        let accounts = self
            .carriers
            .accounts()
            .filter(|a| carrier.is_none_or(|c| a.carrier == c))
            .map(|a| account_to_pb(a, &intents, &cards))
            .collect();
        Ok(Response::new(pb::ListCarrierAccountsResponse { accounts }))
    }

    async fn get_carrier_account(
        &self,
        request: Request<pb::GetCarrierAccountRequest>,
    ) -> Result<Response<pb::CarrierAccount>, Status> {
        self.auth.caller(&request, Rpc::GetCarrierAccount).await?;
        let req = request.into_inner();
        if req.account_id.is_empty() {
            return Err(invalid_field("account_id", "is required"));
        }
        let id = AccountId::parse(&req.account_id).map_err(|e| invalid_field("account_id", e))?;
        let account = self
            .carriers
            .account(&id)
            .ok_or_else(|| Status::not_found(format!("carrier account {id} is not configured")))?;
        let (intents, cards) = self.counts().await?;
        Ok(Response::new(account_to_pb(account, &intents, &cards)))
    }
}
