//! simgate: a gRPC service that manages IoT SIM cards (物联网卡) of China Mobile, China Unicom
//! and China Telecom for resellers and their enterprise customers.
//!
//! # Layout
//! - [`domain`]: pure rules (why cards stop and how they come back), identifiers, money, policies.
//! - [`carrier`]: the [`carrier::Carrier`] trait that maps operations onto a carrier's platform,
//!   and the simulated carriers that follow the same rules.
//! - [`store`]: persistence with sqlx on SQLite (embedded default) or PostgreSQL.
//! - [`service`]: the use cases, one function per operation: load, apply a rule, tell the
//!   carrier, persist.
//! - [`api`]: the tonic services; they convert between protobuf and domain and map errors.
//! - [`cli`]: the `simgate card` / `simgate import` client for people.
//! - [`server`]: assembly (`Server::builder()`), used by `main` and by the tests.
//! - [`telemetry`]: the log subscriber, and OpenTelemetry traces over OTLP when configured.

pub mod api;
pub mod auth;
pub mod carrier;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod metrics;
pub mod server;
pub mod service;
pub mod simulate;
pub mod store;
pub mod telemetry;

/// Generated protobuf and gRPC code for `simgate.v1`.
pub mod pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("simgate.v1");

    /// Serialized descriptors of every simgate proto, served by gRPC reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        include_bytes!(concat!(env!("OUT_DIR"), "/simgate_descriptor.bin"));

    /// The gRPC services simgate serves, as health checks name them.
    pub const SERVICE_NAMES: [&str; 5] = [
        card_service_server::SERVICE_NAME,
        simulator_service_server::SERVICE_NAME,
        access_service_server::SERVICE_NAME,
        operation_service_server::SERVICE_NAME,
        monitoring_service_server::SERVICE_NAME,
    ];
}

pub use server::Server;
