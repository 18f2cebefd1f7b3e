//! The `simgate` binary: parses flags and hands over to [`simgate::Server`], or, for `card` and
//! `import`, to the client in [`simgate::cli`].

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use simgate::config::{Config, DEFAULT_LISTEN};
use simgate::store::{Store, StoreOptions};
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
        #[arg(long, env = "SIMGATE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
    },
}

#[derive(Subcommand)]
enum Command {
    /// Run the gRPC service (embedded SQLite and simulated carriers unless configured otherwise).
    Serve {
        /// Address to listen on.
        #[arg(long, env = "SIMGATE_LISTEN")]
        listen: Option<SocketAddr>,
        /// sqlite://PATH or postgres://USER@HOST/DB.
        #[arg(long, env = "SIMGATE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// TOML configuration file.
        #[arg(long, env = "SIMGATE_CONFIG")]
        config: Option<PathBuf>,
        /// A reseller-admin key that must exist (sgk_<16 hex>_<secret>), for harnesses and CI.
        #[arg(long, env = "SIMGATE_BOOTSTRAP_KEY", hide_env_values = true)]
        bootstrap_key: Option<String>,
        /// A file holding the bootstrap key (for secret stores that mount files).
        #[arg(long, env = "SIMGATE_BOOTSTRAP_KEY_FILE")]
        bootstrap_key_file: Option<PathBuf>,
        /// A file holding the database URL (it may contain a password).
        #[arg(long, env = "SIMGATE_DATABASE_URL_FILE")]
        database_url_file: Option<PathBuf>,
    },
    /// Manage API keys directly in the database (for operators).
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, env = "SIMGATE_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        #[arg(long, env = "SIMGATE_CONFIG")]
        config: Option<PathBuf>,
    },
}

fn load_config(path: Option<PathBuf>, database_url: Option<String>) -> Result<Config, String> {
    let mut cfg = match path {
        Some(p) => Config::from_file(&p)?,
        None => Config::default(),
    };
    if database_url.is_some() {
        cfg.database_url = database_url;
    }
    Ok(cfg)
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
    info!("shutdown requested; finishing in-flight calls");
}

async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve {
            listen,
            database_url,
            config,
            bootstrap_key,
            bootstrap_key_file,
            database_url_file,
        } => {
            let database_url = match database_url_file {
                Some(p) => Some(read_secret(&p)?),
                None => database_url,
            };
            let mut cfg = load_config(config, database_url)?;
            let bootstrap_key = match bootstrap_key_file {
                Some(p) => Some(read_secret(&p)?),
                None => bootstrap_key,
            };
            if bootstrap_key.is_some() {
                cfg.bootstrap_key = bootstrap_key;
            }
            let addr = listen.or(cfg.listen).unwrap_or(DEFAULT_LISTEN);
            let app = Server::builder()
                .config(cfg)
                .build()
                .await
                .map_err(|e| e.to_string())?;
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
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
        Command::Keys {
            command:
                KeysCommand::Create {
                    role,
                    customer,
                    name,
                    database_url,
                },
        } => {
            let role = simgate::auth::Role::parse(&role).ok_or_else(|| {
                format!("--role {role:?}: expected RESELLER_ADMIN, CUSTOMER_ADMIN, CUSTOMER_OPERATOR or CUSTOMER_VIEWER")
            })?;
            let url =
                database_url.unwrap_or_else(|| simgate::config::DEFAULT_DATABASE_URL.to_string());
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
        Command::Migrate {
            database_url,
            config,
        } => {
            let cfg = load_config(config, database_url)?;
            let url = cfg
                .database_url
                .unwrap_or_else(|| simgate::config::DEFAULT_DATABASE_URL.to_string());
            Store::connect(&url, StoreOptions::default())
                .await
                .map_err(|e| e.to_string())?;
            info!("migrations applied");
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
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,sqlx=warn".into()),
        )
        .init();
    match run(command).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
