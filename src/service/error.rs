//! The service's errors: what a use case refuses and why, as the API layer maps it to gRPC
//! statuses and the audit log names it.

use crate::carrier::CarrierError;
use chrono::{DateTime, Utc};

use crate::domain::{AccountId, CarrierAction, CarrierId, RuleViolation};
use crate::store::StoreError;

/// A request field that is wrong, named as the caller sent it (`cards[3].iccid`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> FieldViolation {
        FieldViolation {
            field: field.into(),
            description: description.into(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("invalid argument: {}", .0.iter().map(|v| format!("{}: {}", v.field, v.description)).collect::<Vec<_>>().join("; "))]
    InvalidArgument(Vec<FieldViolation>),
    #[error("card {0} not found")]
    NotFound(String),
    #[error("pool {0} not found")]
    PoolNotFound(String),
    #[error("operation {0} not found")]
    OperationNotFound(String),
    /// A bulk request named cards the caller cannot see (or that do not exist); nothing was
    /// stored. `first` holds the first few, `total` counts them all.
    #[error("{total} of the cards named are not cards you can see: {}{}", first.join(", "), if *total > first.len() { format!(" and {} more", total - first.len()) } else { String::new() })]
    CardsNotFound { first: Vec<String>, total: usize },
    #[error("webhook {0} not found")]
    WebhookNotFound(String),
    #[error("API key {0} not found")]
    ApiKeyNotFound(String),
    #[error("{0}")]
    Rule(#[from] RuleViolation),
    #[error("{field} {value} already exists")]
    AlreadyExists { field: String, value: String },
    #[error("{}: {error}", carrier.display_name())]
    Carrier {
        carrier: CarrierId,
        error: CarrierError,
    },
    #[error("no adapter is configured for {0}")]
    CarrierNotConfigured(CarrierId),
    /// A card's account is not in this deployment's configuration (removed since the card was
    /// imported): nothing can be sent for it.
    #[error("carrier account {0} is not configured")]
    AccountNotConfigured(AccountId),
    #[error("the card changed while the operation ran; retry")]
    Conflict,
    /// The change was sent and its outcome is not known yet: the card shows it as pending, and
    /// simgate settles it by reading the carrier. Retrying with the same request id returns the
    /// settled answer once there is one.
    #[error("the {} was sent to {} at {since} and its outcome is not known yet; the card shows it as pending_change until simgate settles it from the carrier's state; retry with the same request_id for the outcome", action.verb(), carrier.display_name())]
    OutcomePending {
        carrier: CarrierId,
        action: CarrierAction,
        since: DateTime<Utc>,
    },
    #[error("storage failure: {0}")]
    Store(StoreError),
}

impl From<StoreError> for ServiceError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Conflict => ServiceError::Conflict,
            StoreError::Duplicate { field, value } => ServiceError::AlreadyExists {
                field: field.to_string(),
                value,
            },
            other => ServiceError::Store(other),
        }
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;

/// The audit log's name for how a call ended.
pub(crate) fn result_name(e: &ServiceError) -> String {
    match e {
        ServiceError::InvalidArgument(_) => "INVALID_ARGUMENT".into(),
        ServiceError::NotFound(_)
        | ServiceError::PoolNotFound(_)
        | ServiceError::OperationNotFound(_)
        | ServiceError::CardsNotFound { .. }
        | ServiceError::WebhookNotFound(_)
        | ServiceError::ApiKeyNotFound(_) => "NOT_FOUND".into(),
        ServiceError::Rule(r) => format!("FAILED_PRECONDITION:{}", r.reason()),
        ServiceError::AlreadyExists { .. } => "ALREADY_EXISTS".into(),
        ServiceError::Carrier { error, .. } => format!("CARRIER:{error}"),
        ServiceError::CarrierNotConfigured(_) => {
            "FAILED_PRECONDITION:CARRIER_NOT_CONFIGURED".into()
        }
        ServiceError::AccountNotConfigured(_) => {
            "FAILED_PRECONDITION:ACCOUNT_NOT_CONFIGURED".into()
        }
        ServiceError::Conflict => "ABORTED".into(),
        ServiceError::OutcomePending { .. } => "UNAVAILABLE:CARRIER_OUTCOME_PENDING".into(),
        ServiceError::Store(_) => "INTERNAL".into(),
    }
}
