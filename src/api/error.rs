//! The one place service errors become gRPC statuses, with google.rpc details callers can match
//! on: ErrorInfo (stable reason), BadRequest (field violations), PreconditionFailure, RetryInfo.

use std::collections::HashMap;

use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};
use tracing::error;

use crate::carrier::CarrierError;
use crate::service::{FieldViolation, ServiceError};

/// ErrorInfo domain of every simgate error.
pub const ERROR_DOMAIN: &str = "simgate.v1";

pub fn invalid_argument(violations: Vec<FieldViolation>) -> Status {
    ServiceError::InvalidArgument(violations).into()
}

pub fn invalid_field(field: &str, description: impl Into<String>) -> Status {
    invalid_argument(vec![FieldViolation::new(field, description)])
}

fn info(reason: &str, metadata: HashMap<String, String>) -> ErrorDetails {
    let mut d = ErrorDetails::new();
    d.set_error_info(reason, ERROR_DOMAIN, metadata);
    d
}

/// The longest `grpc-message` simgate sends. Clients' default metadata limits are about 8 KB
/// for all headers together (gRPC core's soft limit); a longer message makes a stock client
/// report RESOURCE_EXHAUSTED instead of the real error.
pub const MAX_MESSAGE_BYTES: usize = 1024;
/// Bytes of field violations put in the details; base64 on the wire makes them 4/3 larger, so
/// message and details together stay within 8 KB.
pub const MAX_VIOLATION_BYTES: usize = 4500;
/// Violations quoted in the message itself; the rest are counted.
const VIOLATIONS_IN_MESSAGE: usize = 3;

/// `s` cut to at most `max` bytes on a character boundary, marked as cut.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &s[..end])
}

/// The short message of an INVALID_ARGUMENT: the first violations and how many there are.
fn violations_message(violations: &[FieldViolation]) -> String {
    let first = violations
        .iter()
        .take(VIOLATIONS_IN_MESSAGE)
        .map(|v| format!("{}: {}", v.field, clip(&v.description, 200)))
        .collect::<Vec<_>>()
        .join("; ");
    match violations.len() {
        n if n > VIOLATIONS_IN_MESSAGE => format!(
            "invalid argument: {first}; and {} more (each is a field violation in the details)",
            n - VIOLATIONS_IN_MESSAGE
        ),
        _ => format!("invalid argument: {first}"),
    }
}

/// Field violations as BadRequest details, as many as fit in [`MAX_VIOLATION_BYTES`]; a last
/// entry counts the ones left out.
fn violation_details(violations: Vec<FieldViolation>) -> ErrorDetails {
    let mut d = ErrorDetails::new();
    let total = violations.len();
    let mut used = 0;
    for (i, v) in violations.into_iter().enumerate() {
        let description = clip(&v.description, 300);
        // A violation costs its two strings and a few bytes of protobuf framing.
        let cost = v.field.len() + description.len() + 8;
        if used + cost > MAX_VIOLATION_BYTES {
            d.add_bad_request_violation(
                "",
                format!("and {} more violations, not listed", total - i),
            );
            break;
        }
        used += cost;
        d.add_bad_request_violation(v.field, description);
    }
    d
}

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let status = status_of(e);
        if status.message().len() <= MAX_MESSAGE_BYTES {
            return status;
        }
        Status::with_details_and_metadata(
            status.code(),
            clip(status.message(), MAX_MESSAGE_BYTES),
            status.details().to_vec().into(),
            status.metadata().clone(),
        )
    }
}

fn status_of(e: ServiceError) -> Status {
    {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(violations) => {
                let message = violations_message(&violations);
                let d = violation_details(violations);
                Status::with_error_details(Code::InvalidArgument, message, d)
            }
            ServiceError::NotFound(iccid) => {
                let mut d = info("CARD_NOT_FOUND", HashMap::new());
                d.set_resource_info("card", iccid, "", "no card with this ICCID");
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::WebhookNotFound(id) => {
                let mut d = info("WEBHOOK_NOT_FOUND", HashMap::new());
                d.set_resource_info("webhook", id, "", "no webhook with this id");
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::OperationNotFound(id) => {
                let mut d = info("OPERATION_NOT_FOUND", HashMap::new());
                d.set_resource_info("operation", id, "", "no operation with this id");
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::CardsNotFound { first, total } => {
                let mut d = info(
                    "CARD_NOT_FOUND",
                    HashMap::from([("count".to_string(), total.to_string())]),
                );
                for iccid in &first {
                    d.add_bad_request_violation("iccids", format!("{iccid}: no such card"));
                }
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::ApiKeyNotFound(id) => {
                let mut d = info("API_KEY_NOT_FOUND", HashMap::new());
                d.set_resource_info("api_key", id, "", "no API key with this id");
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::PoolNotFound(id) => {
                let mut d = info("POOL_NOT_FOUND", HashMap::new());
                d.set_resource_info("pool", id, "", "no pool with this id");
                Status::with_error_details(Code::NotFound, message, d)
            }
            ServiceError::Rule(rule) => {
                let mut d = info(rule.reason(), HashMap::new());
                d.add_precondition_failure_violation(rule.reason(), "card", rule.to_string());
                Status::with_error_details(Code::FailedPrecondition, message, d)
            }
            ServiceError::AlreadyExists { field, value } => {
                let mut d = info(
                    "CARD_ALREADY_EXISTS",
                    HashMap::from([("value".to_string(), value.clone())]),
                );
                d.add_bad_request_violation(field, format!("{value} already exists"));
                Status::with_error_details(Code::AlreadyExists, message, d)
            }
            ServiceError::CarrierNotConfigured(c) => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                info(
                    "CARRIER_NOT_CONFIGURED",
                    HashMap::from([("carrier".into(), c.to_string())]),
                ),
            ),
            ServiceError::AccountNotConfigured(a) => Status::with_error_details(
                Code::FailedPrecondition,
                message,
                info(
                    "ACCOUNT_NOT_CONFIGURED",
                    HashMap::from([("account_id".into(), a.to_string())]),
                ),
            ),
            ServiceError::Carrier { carrier, error } => {
                let mut meta = HashMap::from([("carrier".to_string(), carrier.to_string())]);
                match error {
                    CarrierError::Transient(_) => Status::with_error_details(
                        Code::Unavailable,
                        message,
                        info("CARRIER_UNAVAILABLE", meta),
                    ),
                    CarrierError::RateLimited { retry_after } => {
                        let mut d = info("CARRIER_RATE_LIMITED", meta);
                        d.set_retry_info(retry_after);
                        Status::with_error_details(Code::Unavailable, message, d)
                    }
                    CarrierError::Rejected { code, message: m } => {
                        meta.insert("carrier_code".into(), code);
                        meta.insert("carrier_message".into(), m);
                        Status::with_error_details(
                            Code::FailedPrecondition,
                            message,
                            info("CARRIER_REJECTED", meta),
                        )
                    }
                    CarrierError::CircuitOpen(_) => Status::with_error_details(
                        Code::Unavailable,
                        message,
                        info("CARRIER_CIRCUIT_OPEN", meta),
                    ),
                    CarrierError::OutcomeUnknown(_) => Status::with_error_details(
                        Code::Unavailable,
                        message,
                        info("CARRIER_OUTCOME_UNKNOWN", meta),
                    ),
                    CarrierError::Deferred {
                        code,
                        message: m,
                        retry_after,
                    } => {
                        meta.insert("carrier_code".into(), code);
                        meta.insert("carrier_message".into(), m);
                        let mut d = info("CARRIER_DEFERRED", meta);
                        d.set_retry_info(retry_after);
                        Status::with_error_details(Code::Unavailable, message, d)
                    }
                }
            }
            ServiceError::OutcomePending {
                carrier,
                action,
                since,
            } => {
                let mut d = info(
                    "CARRIER_OUTCOME_PENDING",
                    HashMap::from([
                        ("carrier".to_string(), carrier.to_string()),
                        ("action".to_string(), action.as_str().to_string()),
                        ("since".to_string(), since.to_rfc3339()),
                    ]),
                );
                // The settler reads the carrier about once a second while it answers.
                d.set_retry_info(Some(std::time::Duration::from_secs(1)));
                Status::with_error_details(Code::Unavailable, message, d)
            }
            ServiceError::Conflict => Status::with_error_details(
                Code::Aborted,
                message,
                info("CONCURRENT_MODIFICATION", HashMap::new()),
            ),
            ServiceError::Store(e) => {
                // Details stay in the log: they may name tables or connection strings.
                error!(error = %e, "store failure");
                Status::internal("storage failure; see the server log")
            }
        }
    }
}
