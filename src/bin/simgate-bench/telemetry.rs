//! `telemetry`: what OpenTelemetry traces cost. Two `simgate serve` child processes with the
//! same cards, each in a fresh database: one as configured by default (no `[telemetry]`), one
//! exporting every span (`sampling_ratio = 1.0`) over OTLP/gRPC to a collector in this process
//! that counts what it receives. The same load goes to one, then the other, in alternating
//! rounds, so that load from elsewhere on the machine falls on both alike: GetCard (one span a
//! call, and the cheapest call, so the largest share of tracing in it) and SuspendCard +
//! ResumeCard (two RPC spans and two carrier-call spans a round trip).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use simgate::pb;

use crate::common::{
    card_input, cards_client, get_cards, start_server, suspend_resume, ChildServer, Db, Load, Res,
    IDLE_ENGINE_MS, UNLIMITED_RATE,
};

pub struct Args {
    pub cards: u64,
    pub concurrency: usize,
    pub seconds: u64,
    pub rounds: u32,
}

/// The collector: counts the spans it is sent, and does nothing else with them.
#[derive(Clone, Default)]
struct Sink(Arc<AtomicU64>);

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans: usize = request
            .into_inner()
            .resource_spans
            .iter()
            .flat_map(|r| &r.scope_spans)
            .map(|s| s.spans.len())
            .sum();
        self.0.fetch_add(spans as u64, Ordering::Relaxed);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// One of the two servers, with its cards imported.
struct Side {
    name: &'static str,
    db: Db,
    child: ChildServer,
    channel: tonic::transport::Channel,
}

async fn side(name: &'static str, cards: u64, env: Vec<(&str, String)>) -> Res<Side> {
    let db = Db::fresh(None)?;
    db.migrate().await?;
    let mut env = env;
    env.extend([
        ("SIMGATE_RATE_LIMIT_PER_KEY", UNLIMITED_RATE.to_string()),
        ("SIMGATE_ENGINE_INTERVAL_MS", IDLE_ENGINE_MS.to_string()),
        ("SIMGATE_USAGE_SYNC_INTERVAL_MS", IDLE_ENGINE_MS.to_string()),
    ]);
    let (child, addr) = start_server(&db, &env).await?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = cards_client(&channel)?;
    let now = chrono::Utc::now();
    let mut n = 0;
    while n < cards {
        let rows: Vec<_> = (n..(n + 10_000).min(cards))
            .map(|i| card_input(i, "bench", now))
            .collect();
        n += rows.len() as u64;
        client
            .import_cards(pb::ImportCardsRequest {
                cards: rows,
                request_id: String::new(),
            })
            .await?;
    }
    Ok(Side {
        name,
        db,
        child,
        channel,
    })
}

impl Side {
    async fn get_cards(&self, cards: u64, c: usize, d: Duration) -> Res<Load> {
        get_cards(cards_client(&self.channel)?, cards, c, d).await
    }

    async fn round_trips(&self, cards: u64, c: usize, d: Duration) -> Res<Load> {
        suspend_resume(cards_client(&self.channel)?, cards, c, d).await
    }

    /// SIGTERM, and the wait for the exit: the server sends its last spans before it ends.
    async fn stop(mut self) -> Res<()> {
        let pid = self.child.0.id().to_string();
        let sent = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()?;
        if !sent.success() {
            return Err(format!("kill -TERM {pid} failed").into());
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while self.child.0.try_wait()?.is_none() {
            if Instant::now() > deadline {
                return Err(format!("{} server did not stop within 60 s", self.name).into());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        drop(self.child);
        self.db.remove().await
    }
}

pub async fn run(a: Args) -> Res<()> {
    if a.concurrency == 0 || a.cards < a.concurrency as u64 {
        return Err("--cards must be at least --concurrency (each task owns its cards)".into());
    }
    let sink = Sink::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let collector = listener.local_addr()?;
    let spans = sink.0.clone();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let off = side("off", a.cards, vec![]).await?;
    let on = side(
        "on",
        a.cards,
        vec![
            (
                "SIMGATE_TELEMETRY__OTLP_ENDPOINT",
                format!("http://{collector}"),
            ),
            ("SIMGATE_TELEMETRY__SAMPLING_RATIO", "1.0".into()),
        ],
    )
    .await?;
    println!(
        "SQLite, {} cards per server, {} calls in flight, {} rounds of {} s per workload and side; \
         `on` exports every span to an OTLP collector in the load generator's process",
        a.cards, a.concurrency, a.rounds, a.seconds
    );

    let (cards, c) = (a.cards, a.concurrency);
    let warm = Duration::from_secs(2);
    let mut on_calls = 0u64;
    for s in [&off, &on] {
        let g = s.get_cards(cards, c, warm).await?;
        let w = s.round_trips(cards, c, warm).await?;
        if s.name == "on" {
            on_calls += g.calls + 4 * w.calls;
        }
    }
    let each = Duration::from_secs(a.seconds);
    let mut loads: Vec<Load> = (0..4).map(|_| Load::empty()).collect::<Res<_>>()?;
    for round in 1..=a.rounds {
        let mut line = format!("round {round}:");
        for (i, s) in [&off, &on].into_iter().enumerate() {
            let g = s.get_cards(cards, c, each).await?;
            line += &format!(" GetCard {} {:.0}/s", s.name, g.rate());
            loads[i].add(&g)?;
            if s.name == "on" {
                on_calls += g.calls;
            }
        }
        for (i, s) in [&off, &on].into_iter().enumerate() {
            let w = s.round_trips(cards, c, each).await?;
            line += &format!(", round trips {} {:.0}/s", s.name, w.rate());
            loads[2 + i].add(&w)?;
            if s.name == "on" {
                on_calls += 4 * w.calls;
            }
        }
        println!("{line}");
    }
    off.stop().await?;
    on.stop().await?;
    let received = spans.load(Ordering::Relaxed);

    println!("| workload | telemetry | calls/s | p50 ms | p99 ms |");
    println!("|---|---|---|---|---|");
    let names = [
        ("GetCard", "off"),
        ("GetCard", "on, sampling 1.0"),
        ("SuspendCard + ResumeCard", "off"),
        ("SuspendCard + ResumeCard", "on, sampling 1.0"),
    ];
    for ((w, t), l) in names.iter().zip(&loads) {
        println!(
            "| {w} | {t} | {:.0} | {:.2} | {:.2} |",
            l.rate(),
            l.ms(0.5),
            l.ms(0.99)
        );
    }
    println!(
        "on / off throughput: GetCard {:.2}, SuspendCard + ResumeCard {:.2}",
        loads[1].rate() / loads[0].rate(),
        loads[3].rate() / loads[2].rate()
    );
    // Spans the load made on the traced server (one per GetCard; two RPC spans and two
    // carrier calls per round trip), against what the collector got: the batch processor
    // drops spans when its queue is full rather than slow the calls down.
    println!(
        "spans exported: {received} received by the collector for {on_calls} made by the load \
         ({:.1}%; the imports add a few)",
        100.0 * received as f64 / on_calls.max(1) as f64
    );
    Ok(())
}
