//! simgate: a gRPC service that manages IoT SIM cards (物联网卡) of China Mobile, China Unicom
//! and China Telecom for resellers and their enterprise customers.
//!
//! # Layout
//! Each folder's `mod.rs` says what it owns. Dependencies point down this list: `api` calls
//! `service`, which calls `domain`, `carrier` and `store`; `domain` calls nothing.
//! - [`api`]: the tonic services. Per service `cards`, `operations`, `access`, `accounts`,
//!   `simulator` and `monitoring/` (`pools`, `alerts`, `events`, `webhooks`); the request kit every handler uses:
//!   `auth` (the caller of a request), `rpc` (the permission table, keyed by method),
//!   `idempotency` (one request fingerprint and replay path), `paging` (page tokens bound to
//!   their filter), `error` (statuses with details), `convert` (protobuf ⇄ domain) and
//!   `observe` (per-call logs and metrics).
//! - [`service`]: the use cases. `cards` (one method per card operation), `change` (the one path
//!   every change takes), `journal` (intents before carrier calls, settled after a lost answer or
//!   a crash), `batch` (bulk operations), `engine` (the lifecycle and usage passes), `monitor`
//!   (pools and alert rules), `events` (the outbox and WatchEvents fan-out), `webhooks`,
//!   `access` (API keys and the audit log), `error`, `caller`, `idempotency`, `locks`.
//! - [`domain`]: pure rules (why cards stop and how they come back): `card`, `rules` (the
//!   operations), `lifecycle` (time), `policy` and `carrier` (each carrier's rules), `pool`,
//!   `alerts`, `event` (event types and every kind's name), `diagnosis/` (`findings`, `texts`),
//!   `ids`, `money`, `reasons`.
//! - [`carrier`]: the [`carrier::Carrier`] trait and the configured accounts ([`carrier::Carriers`]):
//!   `account` (`[[accounts]]`), `platform` (the registry of platforms), `budget` (rates per
//!   account and method), `guard` (concurrency, breaker, spans and metrics around every call),
//!   `sim` (the in-process simulated carrier) and `http/<platform>/`, one folder per platform
//!   (OneLink, Control Center (`jasper`), CMP, 5G CMP (`cmp_5g`)): adapter, `wire` terms, auth and
//!   `simulator`.
//! - [`simulate`]: wire simulators served for simulated accounts, the adapter-over-the-wire
//!   carrier, and `simgate simulate`.
//! - [`store`]: sqlx on SQLite (embedded default) or PostgreSQL: `cards`, `journal`, `batches`,
//!   `events`, `pools`, `webhooks`, `access`, `idempotency`, `sim` (the simulators' state),
//!   `sealing` (secrets at rest) and the per-backend `migrations/`.
//! - [`cli`]: the `simgate card` / `simgate import` / `simgate account` client for people.
//! - [`server`]: assembly (`Server::builder()`), used by `main` and by the tests.
//! - [`config`]: defaults, TOML, `SIMGATE_*` variables and flags. [`auth`]: keys and roles.
//!   [`clock`]: card time and wall time, injectable. [`metrics`]: Prometheus.
//!   [`telemetry`]: the log subscriber, and OpenTelemetry traces over OTLP when configured.
//! - `bin/simgate-bench`: the benchmarks (README, Performance).

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
    pub const SERVICE_NAMES: [&str; 6] = [
        card_service_server::SERVICE_NAME,
        simulator_service_server::SERVICE_NAME,
        access_service_server::SERVICE_NAME,
        operation_service_server::SERVICE_NAME,
        monitoring_service_server::SERVICE_NAME,
        carrier_account_service_server::SERVICE_NAME,
    ];
}

pub use server::Server;
