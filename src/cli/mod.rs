//! The `simgate card ...`, `simgate import ...` and `simgate account ...` client for people: connection and key
//! options, the command enums that `main` embeds, and [`run`], which carries a command out
//! against a running server and turns every failure into plain words and an exit code.
//!
//! Exit codes: 0 success; 1 the server refused, the connection failed or the input file is
//! wrong; 2 the command line cannot be carried out as given (clap's own usage errors are 2 too).

mod account;
mod card;
mod import;
mod output;
mod values;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, ValueEnum};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

use crate::pb::card_service_client::CardServiceClient;
use crate::pb::carrier_account_service_client::CarrierAccountServiceClient as AccountsClient;

pub use account::AccountCommand;
pub use card::{CardCommand, ListArgs};
pub use import::ImportArgs;
pub use values::{CarrierArg, LangArg, ReasonArg, StatusArg};

/// Where `simgate serve` writes the first reseller-admin key; used when no key is given.
pub const BOOTSTRAP_KEY_FILE: &str = "bootstrap-key";
pub const DEFAULT_SERVER: &str = "http://127.0.0.1:50051";

/// How to reach the server and how to print its answers. Global, so that they may come
/// before or after the subcommand.
#[derive(Args, Clone)]
#[command(next_help_heading = "Server and output")]
pub struct ClientArgs {
    /// Server URL (http://HOST:PORT, or https:// with --ca-cert).
    #[arg(long, global = true, env = "SIMGATE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// API key (sgk_...). Wins over --key-file. Without either, ./bootstrap-key is read.
    #[arg(
        long,
        global = true,
        env = "SIMGATE_API_KEY",
        hide_env_values = true,
        value_name = "KEY"
    )]
    pub key: Option<String>,
    /// A file holding the API key.
    #[arg(long, global = true, env = "SIMGATE_API_KEY_FILE", value_name = "PATH")]
    pub key_file: Option<PathBuf>,
    /// PEM file of the CA that signed the server's certificate (https servers).
    #[arg(long, global = true, value_name = "PEM")]
    pub ca_cert: Option<PathBuf>,
    /// Deadline of each call, e.g. 30s, 2m, 500ms.
    #[arg(long, global = true, default_value = "30s", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
    /// table: for people; json: canonical proto3 JSON of each response.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Output::Table)]
    pub output: Output,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Table,
    Json,
}

/// What `main` asks the client to do.
pub enum Action {
    Card(CardCommand),
    Import(ImportArgs),
    Account(AccountCommand),
}

/// Carries out one client command and says how it went; errors are already printed.
pub async fn run(client: ClientArgs, action: Action) -> ExitCode {
    match execute(&client, action).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::OutputClosed) => Failure::OutputClosed.exit_code(),
        Err(e) => {
            eprintln!("{e}");
            e.exit_code()
        }
    }
}

async fn execute(client: &ClientArgs, action: Action) -> Result<(), Failure> {
    let key = resolve_key(client)?;
    let channel = connect(client).await?;
    let out = output::Printer::new(client.output)?;
    let bearer = Bearer(key);
    match action {
        Action::Card(cmd) => {
            card::run(
                CardServiceClient::with_interceptor(channel, bearer),
                cmd,
                &out,
            )
            .await
        }
        Action::Import(args) => {
            import::run(
                CardServiceClient::with_interceptor(channel, bearer),
                args,
                &out,
            )
            .await
        }
        Action::Account(cmd) => {
            account::run(AccountsClient::with_interceptor(channel, bearer), cmd, &out).await
        }
    }
}

/// A failed command, described for a person.
#[derive(Debug)]
pub enum Failure {
    /// The command line cannot be carried out as given.
    Usage(String),
    /// The server answered with an error.
    Status(tonic::Status),
    /// Anything else that went wrong while carrying it out (connection, files).
    Other(String),
    /// A refusal already written out in full, over several lines.
    Explained(String),
    /// Whoever read the output stopped reading (`simgate card list --all | head`): not an
    /// error to the person who did it, so nothing is said.
    OutputClosed,
}

impl Failure {
    fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Usage(_) => ExitCode::from(2),
            Failure::Status(_) | Failure::Other(_) | Failure::Explained(_) => ExitCode::FAILURE,
            Failure::OutputClosed => ExitCode::SUCCESS,
        }
    }
}

impl From<tonic::Status> for Failure {
    fn from(s: tonic::Status) -> Failure {
        Failure::Status(s)
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Usage(m) => write!(f, "error: {m}"),
            Failure::Other(m) => write!(f, "error: {m}"),
            Failure::Explained(m) => f.write_str(m),
            Failure::OutputClosed => Ok(()),
            Failure::Status(s) => f.write_str(&output::describe_status(s)),
        }
    }
}

/// The key as metadata. Only its validity is ever reported, never its text.
fn resolve_key(client: &ClientArgs) -> Result<MetadataValue<Ascii>, Failure> {
    let (key, source) = match (&client.key, &client.key_file) {
        (Some(k), _) => (k.clone(), "--key".to_string()),
        (None, Some(path)) => (read_key(path)?, path.display().to_string()),
        (None, None) => {
            let path = Path::new(BOOTSTRAP_KEY_FILE);
            if !path.exists() {
                return Err(Failure::Usage(format!(
                    "no API key: pass --key or --key-file, set SIMGATE_API_KEY or \
                     SIMGATE_API_KEY_FILE, or run where `simgate serve` wrote ./{BOOTSTRAP_KEY_FILE}"
                )));
            }
            (read_key(path)?, format!("./{BOOTSTRAP_KEY_FILE}"))
        }
    };
    let key = key.trim();
    if key.is_empty() {
        return Err(Failure::Usage(format!(
            "the API key from {source} is empty"
        )));
    }
    format!("Bearer {key}").parse().map_err(|_| {
        Failure::Usage(format!(
            "the API key from {source} has characters that cannot be sent in a header"
        ))
    })
}

fn read_key(path: &Path) -> Result<String, Failure> {
    std::fs::read_to_string(path).map_err(|e| {
        Failure::Usage(format!(
            "cannot read the API key file {}: {e}",
            path.display()
        ))
    })
}

async fn connect(client: &ClientArgs) -> Result<Channel, Failure> {
    let server = client.server.trim_end_matches('/');
    let mut endpoint = Endpoint::from_shared(server.to_string())
        .map_err(|e| Failure::Usage(format!("--server {server:?} is not a URL: {e}")))?
        .timeout(client.timeout)
        .connect_timeout(client.timeout);
    let https = server.starts_with("https://");
    match (&client.ca_cert, https) {
        (Some(path), true) => {
            let pem = std::fs::read(path).map_err(|e| {
                Failure::Usage(format!("cannot read --ca-cert {}: {e}", path.display()))
            })?;
            endpoint = endpoint
                .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(pem)))
                .map_err(|e| Failure::Usage(format!("--ca-cert {}: {e}", path.display())))?;
        }
        (Some(_), false) => {
            return Err(Failure::Usage(format!(
                "--ca-cert is for https servers, but --server is {server}"
            )))
        }
        // No system trust store is built in: an https server's CA must be named.
        (None, true) => {
            return Err(Failure::Usage(format!(
                "--server {server} is https: pass --ca-cert PEM with the CA that signed its certificate"
            )))
        }
        (None, false) => {}
    }
    endpoint
        .connect()
        .await
        .map_err(|e| Failure::Other(format!("cannot connect to {server}: {}", error_chain(&e))))
}

/// An error and its causes on one line: transport errors hide the useful part in the source.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Adds `authorization: Bearer <key>` to every call.
#[derive(Clone)]
pub struct Bearer(MetadataValue<Ascii>);

impl tonic::service::Interceptor for Bearer {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(crate) type Cards = CardServiceClient<InterceptedService<Channel, Bearer>>;
pub(crate) type Accounts = AccountsClient<InterceptedService<Channel, Bearer>>;
