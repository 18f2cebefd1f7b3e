//! Assembly: opens the store, builds the carriers (simulated by default), the lifecycle engine,
//! and serves the gRPC services with health and reflection. `main` and the end-to-end tests both
//! start the service through [`Server::builder`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;
use tracing::info;

use crate::api::cards::CardApi;
use crate::api::simulator::SimulatorApi;
use crate::carrier::sim::{SimCarrier, Simulators};
use crate::carrier::Carriers;
use crate::clock::{Clock, OffsetClock};
use crate::config::{Config, DEFAULT_DATABASE_URL};
use crate::domain::ids::CarrierCheck;
use crate::domain::{CarrierId, CarrierPolicy};
use crate::pb;
use crate::service::engine::Engine;
use crate::service::CardService;
use crate::store::{Store, StoreOptions};

/// Largest request simgate accepts: an import of 10,000 cards fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_ENGINE_INTERVAL_MS: u64 = 1000;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("configuration: {0}")]
    Config(String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error("transport: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
}

pub struct Server;

impl Server {
    pub fn builder() -> ServerBuilder {
        ServerBuilder::default()
    }
}

#[derive(Default)]
pub struct ServerBuilder {
    config: Config,
    store_options: StoreOptions,
    clock: Option<Arc<dyn Clock>>,
}

impl ServerBuilder {
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.config.database_url = Some(url.into());
        self
    }

    pub fn store_options(mut self, opts: StoreOptions) -> Self {
        self.store_options = opts;
        self
    }

    /// The clock the service and the simulation run on (default: real time plus a simulated
    /// offset that AdvanceClock grows).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    pub fn engine_interval_ms(mut self, ms: u64) -> Self {
        self.config.engine_interval_ms = Some(ms.max(1));
        self
    }

    /// Opens the store (applying migrations) and builds the carriers, services and engine.
    pub async fn build(self) -> Result<App, StartError> {
        if self.config.simulation == Some(false) {
            return Err(StartError::Config(
                "simulation = false needs real carrier adapters, which simgate does not have yet; \
                 remove the setting to run with simulated carriers"
                    .into(),
            ));
        }
        let policies: BTreeMap<CarrierId, CarrierPolicy> =
            self.config.policies().map_err(StartError::Config)?;
        let url = self
            .config
            .database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let store = Store::connect(&url, self.store_options).await?;
        let clock: Arc<dyn Clock> = self
            .clock
            .unwrap_or_else(|| Arc::new(OffsetClock::default()));
        let mut carriers = Carriers::new();
        let mut sims = Simulators::default();
        for (id, policy) in policies {
            let sim = Arc::new(SimCarrier::new(policy, store.clone(), clock.clone()));
            sims.by_id.insert(id, sim.clone());
            carriers = carriers.with(sim);
        }
        let check = if self.config.allow_foreign_identifiers {
            CarrierCheck::Allow
        } else {
            CarrierCheck::Enforce
        };
        let service = CardService::new(store.clone(), carriers, clock.clone());
        Ok(App {
            engine: Engine::new(service.clone()),
            engine_interval: std::time::Duration::from_millis(
                self.config
                    .engine_interval_ms
                    .unwrap_or(DEFAULT_ENGINE_INTERVAL_MS),
            ),
            service,
            sims,
            store,
            check,
            clock,
        })
    }
}

/// A built service, ready to serve.
pub struct App {
    service: CardService,
    engine: Engine,
    engine_interval: std::time::Duration,
    sims: Simulators,
    store: Store,
    check: CarrierCheck,
    clock: Arc<dyn Clock>,
}

impl App {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn service(&self) -> &CardService {
        &self.service
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn simulators(&self) -> &Simulators {
        &self.sims
    }

    /// Serves on `listener` until `shutdown` completes, then lets in-flight calls finish. The
    /// lifecycle engine runs alongside and first catches up on anything missed while down.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<(), StartError> {
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_serving::<pb::card_service_server::CardServiceServer<CardApi>>()
            .await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()?;
        let cards = pb::card_service_server::CardServiceServer::new(CardApi::new(
            self.service.clone(),
            self.check,
        ))
        .max_decoding_message_size(MAX_MESSAGE_BYTES);
        let sims = pb::simulator_service_server::SimulatorServiceServer::new(SimulatorApi::new(
            self.sims.clone(),
            self.service.clone(),
            self.engine.clone(),
            self.clock.clone(),
        ));
        let (stop_engine, engine_stopped) = tokio::sync::watch::channel(false);
        let engine = tokio::spawn(
            self.engine
                .clone()
                .run(self.engine_interval, engine_stopped),
        );
        info!(interval = ?self.engine_interval, "lifecycle engine started");
        let served = tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(cards)
            .add_service(sims)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await;
        let _ = stop_engine.send(true);
        let _ = engine.await;
        self.store.close().await;
        Ok(served?)
    }
}
