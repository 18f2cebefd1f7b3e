//! `simgate-bench`: benchmarks that need a real database and a real server. Every figure is
//! printed next to a ceiling measured in the same run on the same data, as a ratio. Build with
//! `--release`; see the README's Performance section for the commands and the recorded results.

mod batch;
mod common;
mod import;
mod read;
mod replicas;
mod rollover;
mod scale;
mod telemetry;
mod usage_sync;
mod watch;
mod write;

/// The read and watch benchmarks' ceilings (`proto/` in this directory), reusing the library's
/// message types.
mod echo_pb {
    #![allow(clippy::all, missing_docs)]
    tonic::include_proto!("simgate.bench.v1");
}

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "simgate-bench")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Time a billing-cycle rollover of N cards.
    Rollover {
        #[arg(long, default_value_t = 1_000_000)]
        cards: u64,
        /// sqlite://PATH or postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
        /// Cards per engine claim and write transaction.
        #[arg(long, default_value_t = simgate::service::engine::DEFAULT_BATCH)]
        batch: u32,
    },
    /// Time a BatchSuspend of N cards against a simulated carrier limited to RATE calls/second.
    Batch {
        #[arg(long, default_value_t = 100_000)]
        cards: u64,
        #[arg(long, default_value_t = 1000)]
        rate: u32,
        #[arg(long)]
        database_url: Option<String>,
    },
    /// GetCard throughput and latency against a bare tonic echo (the ceiling).
    Read {
        #[arg(long, default_value_t = 100_000)]
        cards: u64,
        /// Calls in flight.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        /// Seconds per round and side.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// Rounds, alternating echo and GetCard.
        #[arg(long, default_value_t = 3)]
        rounds: u32,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// SuspendCard + ResumeCard round trips against a raw sqlx single-row UPDATE loop.
    Write {
        #[arg(long, default_value_t = 1000)]
        cards: u64,
        /// Round trips in flight (each task owns cards/concurrency cards).
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        #[arg(long, default_value_t = 2)]
        rounds: u32,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// ImportCards into a `simgate serve` child process against a raw sqlx multi-row insert.
    Import {
        #[arg(long, default_value_t = 1_000_000)]
        cards: u64,
        #[arg(long, default_value_t = 10_000)]
        per_call: u64,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// GetCard latency and rollover time at several numbers of cards.
    Scale {
        #[arg(long, value_delimiter = ',', default_value = "10000,100000,1000000")]
        sizes: Vec<u64>,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// One scheduled usage sync of N cards against a set-based UPDATE from the carrier table.
    UsageSync {
        #[arg(long, default_value_t = 1_000_000)]
        cards: u64,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
    /// GetCard and SuspendCard + ResumeCard on a `simgate serve` child without traces against
    /// one exporting every span over OTLP to a collector in this process.
    Telemetry {
        #[arg(long, default_value_t = 1000)]
        cards: u64,
        /// Calls in flight (each round-trip task owns cards/concurrency cards).
        #[arg(long, default_value_t = 32)]
        concurrency: usize,
        /// Seconds per round, workload and side.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
        #[arg(long, default_value_t = 3)]
        rounds: u32,
    },
    /// One account's rate limit shared by replicas through PostgreSQL: calls/s against it.
    Replicas {
        /// A PostgreSQL URL (the limits are shared only there).
        #[arg(long)]
        database_url: String,
        #[arg(long, default_value_t = 3)]
        replicas: usize,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long, default_value_t = 400)]
        calls: usize,
    },
    /// WatchEvents fan-out to N streams against a bare tonic streaming fan-out (the ceiling).
    Watch {
        #[arg(long, default_value_t = 1000)]
        watchers: usize,
        /// Events produced per side, after the warm-up.
        #[arg(long, default_value_t = 10_000)]
        events: u64,
        /// Events produced per second, steady; 0: as fast as the producer goes (a burst, which
        /// measures the fan-out's capacity; the delays then are mostly queueing).
        #[arg(long, default_value_t = 100)]
        rate: u64,
        /// Events per producing call (cards per ImportCards).
        #[arg(long, default_value_t = 10)]
        per_call: u64,
        /// HTTP/2 connections the watchers share, per server.
        #[arg(long, default_value_t = 4)]
        channels: usize,
        /// postgres://...; default: a fresh SQLite file in a temp directory.
        #[arg(long)]
        database_url: Option<String>,
    },
}

#[tokio::main]
async fn main() -> Result<(), common::BoxError> {
    match Cli::parse().command {
        Command::Rollover {
            cards,
            database_url,
            batch,
        } => rollover::run(cards, database_url, batch).await,
        Command::Replicas {
            database_url,
            replicas,
            limit,
            calls,
        } => {
            replicas::run(replicas::Args {
                database_url,
                replicas,
                limit,
                calls,
            })
            .await
        }
        Command::Batch {
            cards,
            rate,
            database_url,
        } => batch::run(cards, rate, database_url).await,
        Command::Read {
            cards,
            concurrency,
            seconds,
            rounds,
            database_url,
        } => {
            read::run(read::Args {
                cards,
                concurrency,
                seconds,
                rounds,
                database_url,
            })
            .await
        }
        Command::Write {
            cards,
            concurrency,
            seconds,
            rounds,
            database_url,
        } => {
            write::run(write::Args {
                cards,
                concurrency,
                seconds,
                rounds,
                database_url,
            })
            .await
        }
        Command::Import {
            cards,
            per_call,
            database_url,
        } => {
            import::run(import::Args {
                cards,
                per_call,
                database_url,
            })
            .await
        }
        Command::Scale {
            sizes,
            concurrency,
            seconds,
            database_url,
        } => {
            scale::run(scale::Args {
                sizes,
                concurrency,
                seconds,
                database_url,
            })
            .await
        }
        Command::UsageSync {
            cards,
            database_url,
        } => {
            usage_sync::run(usage_sync::Args {
                cards,
                database_url,
            })
            .await
        }
        Command::Telemetry {
            cards,
            concurrency,
            seconds,
            rounds,
        } => {
            telemetry::run(telemetry::Args {
                cards,
                concurrency,
                seconds,
                rounds,
            })
            .await
        }
        Command::Watch {
            watchers,
            events,
            rate,
            per_call,
            channels,
            database_url,
        } => {
            watch::run(watch::Args {
                watchers,
                events,
                rate,
                per_call,
                channels,
                database_url,
            })
            .await
        }
    }
}
