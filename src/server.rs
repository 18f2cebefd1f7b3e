//! Assembly: opens the store, builds the carriers (simulated by default), and serves the gRPC
//! services with health and reflection. `main` and the end-to-end tests both start the service
//! through [`Server::builder`].

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_stream::wrappers::TcpListenerStream;

use crate::api::cards::CardApi;
use crate::api::simulator::SimulatorApi;
use crate::carrier::sim::{SimCarrier, Simulators};
use crate::carrier::Carriers;
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_DATABASE_URL};
use crate::domain::ids::CarrierCheck;
use crate::domain::{CarrierId, CarrierPolicy};
use crate::pb;
use crate::service::CardService;
use crate::store::{Store, StoreOptions};

/// Largest request simgate accepts: an import of 10,000 cards fits with room to spare.
pub const MAX_MESSAGE_BYTES: usize = 16 * 1024 * 1024;

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

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = Some(clock);
        self
    }

    /// Opens the store (applying migrations) and builds the carriers and services.
    pub async fn build(self) -> Result<App, StartError> {
        let policies: BTreeMap<CarrierId, CarrierPolicy> =
            self.config.policies().map_err(StartError::Config)?;
        let url = self
            .config
            .database_url
            .clone()
            .unwrap_or_else(|| DEFAULT_DATABASE_URL.to_string());
        let store = Store::connect(&url, self.store_options).await?;
        let clock = self.clock.unwrap_or_else(|| Arc::new(SystemClock));
        let mut carriers = Carriers::new();
        let mut sims = Simulators::default();
        for (id, policy) in policies {
            let sim = Arc::new(SimCarrier::new(policy, store.clone()));
            sims.by_id.insert(id, sim.clone());
            carriers = carriers.with(sim);
        }
        let check = if self.config.allow_foreign_identifiers {
            CarrierCheck::Allow
        } else {
            CarrierCheck::Enforce
        };
        Ok(App {
            service: CardService::new(store.clone(), carriers, clock),
            sims,
            store,
            check,
        })
    }
}

/// A built service, ready to serve.
pub struct App {
    service: CardService,
    sims: Simulators,
    store: Store,
    check: CarrierCheck,
}

impl App {
    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn service(&self) -> &CardService {
        &self.service
    }

    pub fn simulators(&self) -> &Simulators {
        &self.sims
    }

    /// Serves on `listener` until `shutdown` completes, then lets in-flight calls finish.
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
        ));
        tonic::transport::Server::builder()
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(cards)
            .add_service(sims)
            .serve_with_incoming_shutdown(TcpListenerStream::new(listener), shutdown)
            .await?;
        self.store.close().await;
        Ok(())
    }
}
