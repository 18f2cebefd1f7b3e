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

impl From<ServiceError> for Status {
    fn from(e: ServiceError) -> Status {
        let message = e.to_string();
        match e {
            ServiceError::InvalidArgument(violations) => {
                let mut d = ErrorDetails::new();
                for v in violations {
                    d.add_bad_request_violation(v.field, v.description);
                }
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
