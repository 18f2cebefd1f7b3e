//! End-to-end tests: the real server on a random port, simulated carriers, generated clients.

mod helpers;

mod access;
mod accounts;
mod cards_import;
mod cards_list;
mod cards_ops;
mod chaos;
mod cli;
mod contract;
mod crash;
mod diagnosis;
mod engine;
mod errors;
mod idempotency;
mod journal;
mod lifecycle;
mod monitoring;
mod operability;
mod operations;
mod orders;
mod over_http;
mod paging;
mod platform;
mod pools;
mod replicas;
mod simulate;
mod store_suite;
mod telemetry;
mod tls;
mod webhooks;
mod wire_cmp;
mod wire_cmp_5g;
mod wire_jasper;
mod wire_onelink;
