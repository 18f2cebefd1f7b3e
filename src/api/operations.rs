//! `simgate.v1.OperationService`: bulk operations and their progress.

use std::pin::Pin;
use std::time::Duration;

use tokio_stream::Stream;
use tonic::{Request, Response, Status};

use super::auth::Authenticator;
use super::convert::{page_size, timestamp, MAX_RECHARGE_FEN};
use super::error::{invalid_argument, invalid_field};
use super::idempotency::{idempotent, OperationId, RequestKey, StoredAnswer};
use super::paging::Page;
use super::rpc::Rpc;
use crate::domain::Fen;
use crate::pb;
use crate::service::batch::{BatchService, Kind, MAX_BATCH};
use crate::service::{Caller, CardService};
use crate::store::{Batch, BatchCounts};

idempotent!(
    pb::BatchSuspendRequest,
    pb::BatchResumeRequest,
    pb::BatchRechargeRequest
);

pub struct OperationApi {
    batches: BatchService,
    cards: CardService,
    auth: Authenticator,
}

impl OperationApi {
    pub fn new(batches: BatchService, cards: CardService, auth: Authenticator) -> OperationApi {
        OperationApi {
            batches,
            cards,
            auth,
        }
    }

    /// Starts a bulk operation; a repeat reports the operation the first request started.
    async fn start(
        &self,
        caller: Caller,
        kind: Kind,
        iccids: Vec<String>,
        amount: Fen,
        key: RequestKey,
    ) -> Result<Response<pb::Operation>, Status> {
        if let Some(OperationId(id)) = key.replay(&self.cards, &caller).await? {
            let (b, c) = self.batches.get(&caller, &id).await?;
            return Ok(Response::new(operation(&b, c)));
        }
        if iccids.is_empty() || iccids.len() > MAX_BATCH {
            return Err(invalid_field(
                "iccids",
                format!("must hold 1 to {MAX_BATCH} ICCIDs, got {}", iccids.len()),
            ));
        }
        let (clean, violations) = super::convert::iccid_list(&iccids);
        let clean: Vec<String> = clean.iter().map(|i| i.to_string()).collect();
        if !violations.is_empty() {
            return Err(invalid_argument(violations));
        }
        let respond = |b: &Batch| OperationId(b.id.clone()).to_stored();
        let b = self
            .batches
            .create(&caller, kind, clean, amount, key.idem(&respond).as_ref())
            .await?;
        let counts = BatchCounts {
            pending: b.total as u64,
            ..BatchCounts::default()
        };
        Ok(Response::new(operation(&b, counts)))
    }
}

fn state(s: &str) -> pb::OperationState {
    match s {
        "RUNNING" => pb::OperationState::Running,
        "DONE" => pb::OperationState::Done,
        "CANCELLED" => pb::OperationState::Cancelled,
        _ => pb::OperationState::Unspecified,
    }
}

fn operation(b: &Batch, c: BatchCounts) -> pb::Operation {
    pb::Operation {
        id: b.id.clone(),
        kind: b.kind.clone(),
        state: state(&b.state) as i32,
        total: b.total as u64,
        done: c.done,
        failed: c.failed,
        pending: c.pending,
        cancelled: c.cancelled,
        created_at: chrono::DateTime::from_timestamp_millis(b.created_ms).map(timestamp),
        results: Vec::new(),
        next_results_page_token: String::new(),
    }
}

fn operation_id(raw: &str) -> Result<String, Status> {
    if raw.len() == 32 && raw.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(raw.to_string())
    } else {
        Err(invalid_field("id", "is not an operation id"))
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::Operation, Status>> + Send>>;

#[tonic::async_trait]
impl pb::operation_service_server::OperationService for OperationApi {
    async fn batch_suspend(
        &self,
        request: Request<pb::BatchSuspendRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = self.auth.caller(&request, Rpc::BatchSuspend).await?;
        let mut req = request.into_inner();
        let key = RequestKey::take(&mut req)?;
        self.start(caller, Kind::Suspend, req.iccids, Fen::ZERO, key)
            .await
    }

    async fn batch_resume(
        &self,
        request: Request<pb::BatchResumeRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = self.auth.caller(&request, Rpc::BatchResume).await?;
        let mut req = request.into_inner();
        let key = RequestKey::take(&mut req)?;
        self.start(caller, Kind::Resume, req.iccids, Fen::ZERO, key)
            .await
    }

    async fn batch_recharge(
        &self,
        request: Request<pb::BatchRechargeRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = self.auth.caller(&request, Rpc::BatchRecharge).await?;
        let mut req = request.into_inner();
        if !(1..=MAX_RECHARGE_FEN).contains(&req.amount_fen) {
            return Err(invalid_field(
                "amount_fen",
                format!("must be 1..={MAX_RECHARGE_FEN} fen"),
            ));
        }
        let key = RequestKey::take(&mut req)?;
        let amount = Fen(req.amount_fen);
        self.start(caller, Kind::Recharge, req.iccids, amount, key)
            .await
    }

    async fn get_operation(
        &self,
        request: Request<pb::GetOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetOperation).await?;
        let req = request.into_inner();
        let id = operation_id(&req.id)?;
        if !(0..=10_000).contains(&req.results_page_size) {
            return Err(invalid_field("results_page_size", "must be 0..=10000"));
        }
        let status = match req.results_status.as_str() {
            "" => None,
            s @ ("PENDING" | "DONE" | "FAILED" | "CANCELLED") => Some(s),
            _ => {
                return Err(invalid_field(
                    "results_status",
                    "must be PENDING, DONE, FAILED or CANCELLED",
                ))
            }
        };
        // A token pages the results of the operation and status it was issued for.
        let unpaged = pb::GetOperationRequest {
            id: id.clone(),
            results_status: req.results_status.clone(),
            ..Default::default()
        };
        let page = Page::<i64>::read(
            "results_page_token",
            &req.results_page_token,
            req.results_page_size as u32,
            "GetOperation",
            &unpaged,
        )?;
        let (b, c) = self.batches.get(&caller, &id).await?;
        let mut op = operation(&b, c);
        if page.size > 0 {
            let after = page.after.unwrap_or(-1);
            let mut items = self.batches.items(&id, status, after, page.limit()).await?;
            op.next_results_page_token = page.next(&mut items, |last| last.seq);
            op.results = items
                .into_iter()
                .map(|i| pb::ItemResult {
                    index: i.seq as u64,
                    iccid: i.iccid,
                    status: i.status,
                    reason: i.reason,
                    attempts: u32::try_from(i.attempts).unwrap_or(u32::MAX),
                })
                .collect();
        }
        Ok(Response::new(op))
    }

    async fn list_operations(
        &self,
        request: Request<pb::ListOperationsRequest>,
    ) -> Result<Response<pb::ListOperationsResponse>, Status> {
        let caller = self.auth.caller(&request, Rpc::ListOperations).await?;
        let req = request.into_inner();
        let size = page_size(req.page_size, 50)?;
        // Operations page by creation time, which is not unique: the position holds the id too,
        // so that operations sharing a millisecond are never split or skipped at a page edge.
        let unpaged = pb::ListOperationsRequest::default();
        let page = Page::<(i64, String)>::read(
            "page_token",
            &req.page_token,
            size,
            "ListOperations",
            &unpaged,
        )?;
        let before = page.after.as_ref().map(|(ms, id)| (*ms, id.as_str()));
        let mut list = self.batches.list(&caller, before, page.limit()).await?;
        let next_page_token = page.next(&mut list, |(b, _)| (b.created_ms, b.id.clone()));
        Ok(Response::new(pb::ListOperationsResponse {
            operations: list.iter().map(|(b, c)| operation(b, *c)).collect(),
            next_page_token,
        }))
    }

    async fn cancel_operation(
        &self,
        request: Request<pb::CancelOperationRequest>,
    ) -> Result<Response<pb::Operation>, Status> {
        let caller = self.auth.caller(&request, Rpc::CancelOperation).await?;
        let id = operation_id(&request.get_ref().id)?;
        let (b, c) = self.batches.cancel(&caller, &id).await?;
        Ok(Response::new(operation(&b, c)))
    }

    type WatchOperationStream = WatchStream;

    async fn watch_operation(
        &self,
        request: Request<pb::WatchOperationRequest>,
    ) -> Result<Response<Self::WatchOperationStream>, Status> {
        let caller = self.auth.caller(&request, Rpc::WatchOperation).await?;
        let id = operation_id(&request.get_ref().id)?;
        // Fails now, not inside the stream, for an unknown or foreign operation.
        self.batches.get(&caller, &id).await?;
        let batches = self.batches.clone();
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        tokio::spawn(async move {
            let mut last: Option<pb::Operation> = None;
            loop {
                let next = batches
                    .get(&caller, &id)
                    .await
                    .map(|(b, c)| operation(&b, c));
                match next {
                    Ok(op) => {
                        let finished = op.state != pb::OperationState::Running as i32;
                        if last.as_ref() != Some(&op) {
                            if tx.send(Ok(op.clone())).await.is_err() {
                                return;
                            }
                            last = Some(op);
                        }
                        if finished {
                            return;
                        }
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e.into())).await;
                        return;
                    }
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }
}
