//! The `simgate` binary: parses flags and hands over to [`simgate::Server`], or, for `card` and
//! `import`, to the client in [`simgate::cli`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use simgate::config::{Config, DEFAULT_LISTEN};
use simgate::store::{Store, StoreOptions};
use simgate::telemetry::Telemetry;
use simgate::Server;
use tracing::{error, info};

#[derive(Parser)]
#[command(name = "simgate", version, about = "IoT SIM card management over gRPC")]
struct Cli {
    #[command(subcommand)]
    command: TopCommand,
}

/// The server's own commands, then the client's, which talk to a running server.
#[derive(Subcommand)]
enum TopCommand {
    #[command(flatten)]
    Server(Command),
    /// Read and change cards on a running server (tables, or --output json).
    Card {
        #[command(flatten)]
        client: simgate::cli::ClientArgs,
        #[command(subcommand)]
        command: simgate::cli::CardCommand,
    },
    /// Import cards from a CSV file into a running server (--help lists the columns).
    Import {
        #[command(flatten)]
        client: simgate::cli::ClientArgs,
        #[command(flatten)]
        args: simgate::cli::ImportArgs,
    },
    /// The running server's carrier accounts: platform, health, budget use (reseller admin).
    Account {
        #[command(flatten)]
        client: simgate::cli::ClientArgs,
        #[command(subcommand)]
        command: simgate::cli::AccountCommand,
    },
}

/// Where the configuration comes from: the file, then `SIMGATE_*` variables, then these flags.
#[derive(Args, Clone)]
struct ConfigArgs {
    /// TOML configuration file. SIMGATE_* variables override it (SIMGATE_ENGINE_INTERVAL_MS,
    /// SIMGATE_LOG__FORMAT=json, ...; `__` separates nested keys) and flags override both.
    #[arg(long, env = "SIMGATE_CONFIG")]
    config: Option<PathBuf>,
    /// sqlite://PATH or postgres://USER@HOST/DB (also SIMGATE_DATABASE_URL).
    #[arg(long)]
    database_url: Option<String>,
    /// A file holding the database URL (it may contain a password).
    #[arg(long, env = "SIMGATE_DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
}

impl ConfigArgs {
    fn load(&self) -> Result<Config, String> {
        let mut cfg = Config::load(self.config.as_deref())?;
        if let Some(p) = &self.database_url_file {
            cfg.database_url = Some(read_secret(p)?);
        } else if let Some(u) = &self.database_url {
            cfg.database_url = Some(u.clone());
        }
        Ok(cfg)
    }
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a key and print it (once).
    Create {
        /// RESELLER_ADMIN, CUSTOMER_ADMIN, CUSTOMER_OPERATOR or CUSTOMER_VIEWER.
        #[arg(long)]
        role: String,
        /// Required for customer roles.
        #[arg(long)]
        customer: Option<String>,
        #[arg(long, default_value = "")]
        name: String,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate the configuration and print it as the server would run it, every default
    /// written out, the database password and the bootstrap key redacted.
    Print {
        #[command(flatten)]
        config: ConfigArgs,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service (embedded SQLite and simulated carriers unless configured otherwise).
    Serve {
        /// Address to listen on (also SIMGATE_LISTEN).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[command(flatten)]
        config: ConfigArgs,
        /// A file holding a reseller-admin key that must exist (sgk_<16 hex>_<secret>), for
        /// harnesses and CI; SIMGATE_BOOTSTRAP_KEY gives the key itself.
        #[arg(long, env = "SIMGATE_BOOTSTRAP_KEY_FILE")]
        bootstrap_key_file: Option<PathBuf>,
    },
    /// Manage API keys directly in the database (for operators).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[command(flatten)]
        config: ConfigArgs,
    },
    /// Show the effective configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Run wire-level carrier simulators: HTTP servers that speak China Mobile OneLink, China
    /// Unicom Control Center (Jasper) or China Telecom CMP, with the simulated carriers' rules,
    /// faults ([simulator.<account>] in the configuration) and clock: one per configured
    /// account (by default one per carrier). Prints each URL and the [[accounts]] entries that
    /// reach them.
    Simulate {
        /// Only this carrier's accounts: mobile, unicom or telecom.
        #[arg(long, required_unless_present = "all", conflicts_with = "all")]
        carrier: Option<simgate::domain::CarrierId>,
        /// Every account, on consecutive ports from --listen.
        #[arg(long)]
        all: bool,
        #[arg(long, default_value = "127.0.0.1:18080")]
        listen: SocketAddr,
        /// Also write the `simgate serve` configuration that reaches these simulators here.
        #[arg(long)]
        config_out: Option<PathBuf>,
        #[command(flatten)]
        config: ConfigArgs,
    },
}

/// Reads a secret from a file, without its trailing newline. The error names the file only.
fn read_secret(path: &std::path::Path) -> Result<String, String> {
    std::fs::read_to_string(path)
        .map(|s| s.trim_end_matches(['\r', '\n']).to_string())
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    info!("shutdown requested");
}

async fn serve(
    listen: Option<SocketAddr>,
    mut cfg: Config,
    bootstrap_key_file: Option<PathBuf>,
) -> Result<(), String> {
    if let Some(p) = bootstrap_key_file {
        cfg.bootstrap_key = Some(read_secret(&p)?);
    }
    let addr = listen.or(cfg.listen).unwrap_or(DEFAULT_LISTEN);
    let metrics = cfg.metrics;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("listen {addr}: {e}"))?;
    // The bound address, which differs from `addr` for port 0: printed (not only logged, whose
    // level may hide it) so that a supervisor or a test harness that asked for any free port
    // learns which one it got, with no window for another process to take it. On stderr:
    // stdout carries the logs, which must stay all JSON under `log.format = "json"`.
    let addr = listener
        .local_addr()
        .map_err(|e| format!("listen {addr}: {e}"))?;
    eprintln!("simgate listening on {addr}");
    let metrics_listener = if metrics.enabled {
        Some(
            tokio::net::TcpListener::bind(metrics.listen)
                .await
                .map_err(|e| format!("metrics.listen {}: {e}", metrics.listen))?,
        )
    } else {
        None
    };
    let mut app = Server::builder()
        .config(cfg)
        .build()
        .await
        .map_err(|e| e.to_string())?;
    if let Some(l) = metrics_listener {
        app = app.with_metrics_listener(l);
    }
    if let Some(b) = app.bootstrap() {
        // Printed once, to the terminal of whoever started the server; never logged.
        println!(
            "No API key existed, so a reseller-admin key was created. It is shown only now\n\
             (and kept, owner-readable only, in {}):\n\n    {}\n\n\
             Send it as metadata: authorization: Bearer <key>",
            b.path.display(),
            b.token
        );
    }
    info!(%addr, backend = ?app.store().backend(), "simgate serving");
    app.serve(listener, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}

async fn run(command: Command, cfg: Config) -> Result<(), String> {
    match command {
        Command::Serve {
            listen,
            bootstrap_key_file,
            ..
        } => serve(listen, cfg, bootstrap_key_file).await,
        Command::Keys {
            command:
                KeysCommand::Create {
                    role,
                    customer,
                    name,
                    ..
                },
        } => {
            let role = simgate::auth::Role::parse(&role).ok_or_else(|| {
                format!("--role {role:?}: expected RESELLER_ADMIN, CUSTOMER_ADMIN, CUSTOMER_OPERATOR or CUSTOMER_VIEWER")
            })?;
            let url = cfg
                .database_url
                .unwrap_or_else(|| simgate::config::DEFAULT_DATABASE_URL.to_string());
            let store = Store::connect(&url, StoreOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            let access = simgate::service::access::AccessService::new(store);
            let caller = simgate::service::Caller::system("KeysCreateCli");
            let (key, token) = access
                .create_key(
                    &caller,
                    role,
                    customer,
                    name,
                    None,
                    simgate::clock::Clock::now(&simgate::clock::SystemClock),
                )
                .await
                .map_err(|e| match e {
                    simgate::service::access::AccessError::Forbidden(f) => f.0,
                    simgate::service::access::AccessError::Service(s) => s.to_string(),
                })?;
            println!("{token}");
            info!(key_id = %key.key_id, role = key.role.as_str(), "key created");
            Ok(())
        }
        Command::Migrate { .. } => {
            let url = cfg
                .database_url
                .unwrap_or_else(|| simgate::config::DEFAULT_DATABASE_URL.to_string());
            Store::connect(&url, StoreOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            info!("migrations applied");
            Ok(())
        }
        Command::Simulate {
            carrier,
            listen,
            config_out,
            ..
        } => {
            let accounts: Vec<_> = cfg
                .simulated_accounts()?
                .into_iter()
                .filter(|a| carrier.is_none_or(|c| a.carrier == c))
                .collect();
            if accounts.is_empty() {
                return Err("no configured account of that carrier".into());
            }
            let database_url = cfg
                .database_url
                .clone()
                .unwrap_or_else(|| "sqlite://simgate-sim.db".to_string());
            simgate::simulate::Standalone {
                accounts,
                listen,
                database_url,
                config: cfg,
                config_out,
            }
            .run(shutdown_signal())
            .await
        }
        Command::Config {
            command: ConfigCommand::Print { .. },
        } => {
            print!("{}", cfg.to_redacted_toml()?);
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    // The client prints its own answers and errors for people; it needs no log lines.
    let command = match Cli::parse().command {
        TopCommand::Server(command) => command,
        TopCommand::Card { client, command } => {
            return simgate::cli::run(client, simgate::cli::Action::Card(command)).await
        }
        TopCommand::Import { client, args } => {
            return simgate::cli::run(client, simgate::cli::Action::Import(args)).await
        }
        TopCommand::Account { client, command } => {
            return simgate::cli::run(client, simgate::cli::Action::Account(command)).await
        }
    };
    let config = match &command {
        Command::Serve { config, .. }
        | Command::Migrate { config }
        | Command::Keys {
            command: KeysCommand::Create { config, .. },
        }
        | Command::Config {
            command: ConfigCommand::Print { config },
        }
        | Command::Simulate { config, .. } => config.clone(),
    };
    // Before logging exists: the configuration decides how to log.
    let cfg = match config.load() {
        Ok(cfg) => cfg,
        Err(e) => {
            eprintln!("simgate: configuration: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Only the server exports traces; the other commands make no calls worth tracing.
    let traces = matches!(command, Command::Serve { .. }).then(|| cfg.telemetry.clone());
    let telemetry = match Telemetry::init(&cfg.log, traces.as_ref()) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("simgate: {e}");
            return ExitCode::FAILURE;
        }
    };
    if telemetry.exporting() {
        info!(
            endpoint = %simgate::config::redact_url(&cfg.telemetry.otlp_endpoint),
            service_name = %cfg.telemetry.service_name,
            sampling_ratio = cfg.telemetry.sampling_ratio,
            "exporting traces over OTLP"
        );
    }
    let result = run(command, cfg).await;
    if let Err(e) = &result {
        error!("{e}");
    }
    // After the server stopped: the spans of its last calls are sent before the process ends.
    telemetry.shutdown().await;
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(_) => ExitCode::FAILURE,
    }
}
