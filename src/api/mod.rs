//! The gRPC edge: tonic services that validate and convert requests into domain values, call the
//! service layer, and convert results back. No SQL and no carrier calls here.

pub mod access;
pub mod accounts;
pub mod auth;
pub mod cards;
pub mod convert;
pub mod error;
pub(crate) mod idempotency;
pub mod monitoring;
pub mod observe;
pub mod operations;
pub(crate) mod paging;
pub mod rpc;
pub mod simulator;
