//! `watch`: N concurrent WatchEvents streams (empty cursor: "from now on"), multiplexed over a few
//! HTTP/2 connections, while a producer commits events at a steady rate (ImportCards of a few
//! cards: one `card.imported` event each). Every watcher must receive every event exactly once,
//! in commit order; the figures are deliveries per second across all watchers and the delay from
//! the producing call to each delivery.
//!
//! The ceiling is a bare tonic server stream in the same process, on the same runtime, reached
//! the same way (same number of connections, same client, same metadata), whose handler only
//! forwards what an in-process tokio broadcast channel carries: no database, no outbox tailer,
//! no per-watcher task. Its producer hands the same number of events, each a clone of a real
//! `card.imported` Event (so the same size on the wire), to the channel at the same rate.

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::Stream;
use hdrhistogram::Histogram;
use simgate::clock::ManualClock;
use simgate::pb;
use tokio::sync::broadcast;
use tonic::transport::Channel;
use tonic::{Request, Response, Status, Streaming};

use crate::common::{
    card_input, cards_client, histogram, iccid, start_time, Authed, Bearer, Db, Res, Served,
    BENCH_KEY, IDLE_ENGINE_MS, UNLIMITED_RATE,
};
use crate::echo_pb::fanout_client::FanoutClient;
use crate::echo_pb::fanout_server::{Fanout, FanoutServer};

pub struct Args {
    pub watchers: usize,
    pub events: u64,
    pub rate: u64,
    pub per_call: u64,
    pub channels: usize,
    pub database_url: Option<String>,
}

/// Cards produced only to learn that every watcher is live are numbered from here: above any
/// measured event, below the 10^9 that `common::msisdn` has digits for.
const SENTINEL_BASE: u64 = 900_000_000;
/// The card whose real event is the ceiling's template.
const TEMPLATE_CARD: u64 = SENTINEL_BASE - 1;
/// A watcher that receives nothing for this long has lost events: the run fails.
const STALL: Duration = Duration::from_secs(120);
const CUSTOMER: &str = "customer-watch";

/// The ceiling's whole work: hand each subscriber what the channel carries.
struct Broadcast(broadcast::Sender<Arc<pb::Event>>);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl Fanout for Broadcast {
    type WatchStream = EventStream;

    async fn watch(
        &self,
        _: Request<pb::WatchEventsRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let rx = self.0.subscribe();
        let stream = futures::stream::unfold(rx, |mut rx| async move {
            match rx.recv().await {
                Ok(e) => Some((Ok((*e).clone()), rx)),
                // The channel holds every event of the run, so this is a broken run, not load.
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    Some((Err(Status::data_loss(format!("ceiling lagged by {n}"))), rx))
                }
                Err(broadcast::error::RecvError::Closed) => None,
            }
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// Serves the baseline with tonic's default server settings, as `App::serve` serves simgate.
async fn serve_fanout(tx: broadcast::Sender<Arc<pb::Event>>) -> Res<Served> {
    Served::grpc(
        FanoutServer::new(Broadcast(tx))
            .max_decoding_message_size(simgate::server::SMALL_MESSAGE_BYTES),
    )
    .await
}

/// Where events come from and where they are watched.
enum Side {
    Simgate {
        cards: pb::card_service_client::CardServiceClient<Authed>,
    },
    Ceiling {
        tx: broadcast::Sender<Arc<pb::Event>>,
        template: pb::Event,
        /// The position in the ceiling's cursors, rising like an outbox id.
        sent: std::sync::atomic::AtomicI64,
    },
}

impl Side {
    fn name(&self) -> &'static str {
        match self {
            Side::Simgate { .. } => "WatchEvents",
            Side::Ceiling { .. } => "tonic fan-out (ceiling)",
        }
    }

    async fn open(&self, channel: &Channel) -> Res<Streaming<pb::Event>> {
        let request = pb::WatchEventsRequest {
            filter: None,
            after_cursor: String::new(),
        };
        let bearer = Bearer::new(BENCH_KEY)?;
        Ok(match self {
            Side::Simgate { .. } => {
                pb::monitoring_service_client::MonitoringServiceClient::with_interceptor(
                    channel.clone(),
                    bearer,
                )
                .watch_events(request)
                .await?
                .into_inner()
            }
            Side::Ceiling { .. } => FanoutClient::with_interceptor(channel.clone(), bearer)
                .watch(request)
                .await?
                .into_inner(),
        })
    }

    /// Produces the events of cards `from..to` and returns once they are committed (simgate:
    /// the ImportCards call answered) or handed over (the ceiling).
    async fn produce(&self, from: u64, to: u64, now: chrono::DateTime<chrono::Utc>) -> Res<()> {
        match self {
            Side::Simgate { cards } => {
                let rows = (from..to).map(|n| card_input(n, CUSTOMER, now)).collect();
                let answer = cards
                    .clone()
                    .import_cards(pb::ImportCardsRequest {
                        cards: rows,
                        request_id: String::new(),
                    })
                    .await?
                    .into_inner();
                if u64::from(answer.imported) != to - from {
                    return Err(
                        format!("imported {} of {} cards", answer.imported, to - from).into(),
                    );
                }
            }
            Side::Ceiling { tx, template, sent } => {
                for n in from..to {
                    let position = sent.fetch_add(1, Ordering::Relaxed) + 1;
                    let e = pb::Event {
                        iccid: iccid(n),
                        cursor: base64::engine::general_purpose::URL_SAFE_NO_PAD
                            .encode(format!("bench:{position}")),
                        ..template.clone()
                    };
                    tx.send(Arc::new(e))
                        .map_err(|_| "the ceiling has no subscriber")?;
                }
            }
        }
        Ok(())
    }
}

/// The card number an event is about (see `common::iccid`).
fn number(e: &pb::Event) -> Res<u64> {
    e.iccid
        .get(6..19)
        .and_then(|d| d.parse().ok())
        .ok_or_else(|| format!("event {:?} about an unexpected ICCID {:?}", e.kind, e.iccid).into())
}

/// The position inside a cursor: base64 of "scope:position", simgate's outbox id or the
/// ceiling's count of events sent. Used only to check that positions rise.
fn cursor_id(cursor: &str) -> Option<i64> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())?;
    raw.rsplit(':').next()?.parse().ok()
}

/// Microseconds since `origin`: every timestamp of a run is on this one monotonic clock.
fn micros(origin: Instant) -> u64 {
    origin.elapsed().as_micros().try_into().unwrap_or(u64::MAX)
}

/// One watcher: skips sentinels (counting itself ready at the first), then requires events
/// 0..events in that order with rising cursors, and records when each arrived.
async fn watcher(
    mut stream: Streaming<pb::Event>,
    events: u64,
    origin: Instant,
    ready: Arc<AtomicUsize>,
) -> Res<Vec<u64>> {
    let mut arrived = Vec::with_capacity(events as usize);
    let mut live = false;
    let mut last_id = i64::MIN;
    while (arrived.len() as u64) < events {
        let e = tokio::time::timeout(STALL, stream.message())
            .await
            .map_err(|_| format!("no event for {STALL:?} after event {}", arrived.len()))??
            .ok_or_else(|| format!("stream ended after {} events", arrived.len()))?;
        let at = micros(origin);
        let n = number(&e)?;
        let id = cursor_id(&e.cursor).ok_or_else(|| format!("cursor {:?}", e.cursor))?;
        if id <= last_id {
            return Err(format!("cursor went from {last_id} to {id}").into());
        }
        last_id = id;
        if n >= SENTINEL_BASE {
            if !arrived.is_empty() {
                return Err(format!("sentinel {n} after measured event {}", arrived.len()).into());
            }
            if !live {
                live = true;
                ready.fetch_add(1, Ordering::AcqRel);
            }
            continue;
        }
        if !live || n != arrived.len() as u64 {
            return Err(format!(
                "expected event {} (live: {live}), received event {n}",
                arrived.len()
            )
            .into());
        }
        arrived.push(at);
    }
    Ok(arrived)
}

/// What one side measured.
struct Round {
    deliveries: u64,
    /// From the first producing call to the last delivery.
    span: Duration,
    /// Events produced per second, as achieved.
    produced_rate: f64,
    after_return: Histogram<u64>,
    /// Deliveries that arrived before the producer had its answer (counted as 0 above).
    early: u64,
    after_send: Histogram<u64>,
}

impl Round {
    fn rate(&self) -> f64 {
        self.deliveries as f64 / self.span.as_secs_f64().max(1e-9)
    }
}

fn ms(h: &Histogram<u64>, q: f64) -> f64 {
    h.value_at_quantile(q) as f64 / 1000.0
}

/// Opens every watcher, waits until all are live, produces the events at `a.rate` and collects
/// every watcher's arrivals.
async fn round(side: &Side, addr: std::net::SocketAddr, a: &Args) -> Res<Round> {
    let now = start_time()?;
    let origin = Instant::now();
    let mut channels = Vec::with_capacity(a.channels);
    for _ in 0..a.channels.max(1) {
        channels.push(
            Channel::from_shared(format!("http://{addr}"))?
                .connect()
                .await?,
        );
    }
    let ready = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::with_capacity(a.watchers);
    for w in 0..a.watchers {
        let stream = side.open(&channels[w % channels.len()]).await?;
        tasks.push(tokio::spawn(watcher(
            stream,
            a.events,
            origin,
            ready.clone(),
        )));
    }
    // A stream's answer can reach the client before the server has taken its starting point,
    // so sentinels are produced until every watcher has seen one: only then is it live.
    let mut sentinel = SENTINEL_BASE;
    let deadline = Instant::now() + Duration::from_secs(60);
    while ready.load(Ordering::Acquire) < a.watchers {
        if let Some(i) = tasks.iter().position(|t| t.is_finished()) {
            let ended = tasks.swap_remove(i).await?.err();
            return Err(format!("a watcher ended before the run: {ended:?}").into());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "only {} of {} watchers live after 60 s",
                ready.load(Ordering::Acquire),
                a.watchers
            )
            .into());
        }
        side.produce(sentinel, sentinel + 1, now).await?;
        sentinel += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let per_call = a.per_call.max(1);
    let mut sent = Vec::with_capacity(a.events as usize);
    let mut returned = Vec::with_capacity(a.events as usize);
    let mut ticker = (a.rate > 0)
        .then(|| tokio::time::interval(Duration::from_secs_f64(per_call as f64 / a.rate as f64)));
    let first = micros(origin);
    let mut n = 0;
    while n < a.events {
        if let Some(t) = ticker.as_mut() {
            t.tick().await;
        }
        let to = (n + per_call).min(a.events);
        let before = micros(origin);
        side.produce(n, to, now).await?;
        let after = micros(origin);
        for _ in n..to {
            sent.push(before);
            returned.push(after);
        }
        n = to;
    }
    let produced = Duration::from_micros(micros(origin) - first);

    let (mut after_return, mut after_send) = (histogram()?, histogram()?);
    let (mut early, mut last) = (0, 0);
    for t in tasks {
        let arrived = t.await??;
        for (i, at) in arrived.iter().enumerate() {
            last = last.max(*at);
            match at.checked_sub(returned[i]) {
                Some(d) => after_return.saturating_record(d),
                None => {
                    early += 1;
                    after_return.saturating_record(0);
                }
            }
            after_send.saturating_record(at.saturating_sub(sent[i]));
        }
    }
    Ok(Round {
        deliveries: a.watchers as u64 * a.events,
        span: Duration::from_micros(last.saturating_sub(first)),
        produced_rate: a.events as f64 / produced.as_secs_f64().max(1e-9),
        after_return,
        early,
        after_send,
    })
}

/// Every event after `after` as simgate's outbox orders them: sentinels, then 0..events in
/// order, all `card.imported`. Shows that the order the watchers checked is the commit order.
async fn check_outbox(channel: &Channel, after: String, events: u64) -> Res<()> {
    let mut client = pb::monitoring_service_client::MonitoringServiceClient::with_interceptor(
        channel.clone(),
        Bearer::new(BENCH_KEY)?,
    );
    let mut token = after;
    let mut next = 0u64;
    loop {
        let page = client
            .list_events(pb::ListEventsRequest {
                filter: None,
                page_size: 1000,
                page_token: token,
            })
            .await?
            .into_inner();
        for e in &page.events {
            let n = number(e)?;
            if e.kind != "card.imported" || (n < SENTINEL_BASE && n != next) {
                return Err(format!(
                    "outbox has {} of card {n} where event {next} was due",
                    e.kind
                )
                .into());
            }
            if n < SENTINEL_BASE {
                next += 1;
            } else if next > 0 {
                return Err(format!("outbox has sentinel {n} after event {next}").into());
            }
        }
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    if next != events {
        return Err(format!("outbox holds {next} of {events} events").into());
    }
    Ok(())
}

fn print(r: &Round, name: &str) {
    println!(
        "| {name} | {:.0} | {:.0} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} |",
        r.rate(),
        r.produced_rate,
        r.span.as_secs_f64(),
        ms(&r.after_return, 0.5),
        ms(&r.after_return, 0.99),
        ms(&r.after_return, 1.0),
        ms(&r.after_send, 0.5),
        ms(&r.after_send, 0.99),
        ms(&r.after_send, 1.0),
    );
}

pub async fn run(a: Args) -> Res<()> {
    let db = Db::fresh(a.database_url.as_deref())?;
    let start = start_time()?;
    let app = crate::common::server_on(&db, ManualClock::new(start))?
        .bootstrap_key(BENCH_KEY)
        .rate_limit_per_key(UNLIMITED_RATE)
        .engine_interval_ms(IDLE_ENGINE_MS)
        .usage_sync_interval_ms(IDLE_ENGINE_MS)
        // One key holds every stream, hundreds per connection: lift the stream caps.
        .events(simgate::service::events::EventsConfig {
            max_streams_per_key: usize::MAX,
            max_streams_per_connection: usize::MAX,
            ..Default::default()
        })
        .build()
        .await?;
    let simgate = Served::app(app).await?;
    // The producer has a connection of its own, so its calls never queue behind the streams.
    let producer = simgate.channel().await?;
    let cards = cards_client(&producer)?;
    cards
        .clone()
        .import_cards(pb::ImportCardsRequest {
            cards: vec![card_input(TEMPLATE_CARD, CUSTOMER, start)],
            request_id: String::new(),
        })
        .await?;
    let template = pb::monitoring_service_client::MonitoringServiceClient::with_interceptor(
        producer.clone(),
        Bearer::new(BENCH_KEY)?,
    )
    .list_events(pb::ListEventsRequest {
        filter: None,
        page_size: 1,
        page_token: String::new(),
    })
    .await?
    .into_inner()
    .events
    .pop()
    .ok_or("no event for the template card")?;
    println!(
        "backend: {}, watchers: {} over {} HTTP/2 connections per server, events: {} at {} events/s, {} per producing call; Event {} bytes",
        db.backend(),
        a.watchers,
        a.channels,
        a.events,
        if a.rate == 0 { "as many".to_string() } else { a.rate.to_string() },
        a.per_call,
        prost::Message::encoded_len(&template)
    );

    // Room for every event of the run: the ceiling never drops one.
    let (tx, _) = broadcast::channel(a.events as usize + 100_000);
    let fanout = serve_fanout(tx.clone()).await?;
    let ceiling = Side::Ceiling {
        tx,
        template: template.clone(),
        sent: Default::default(),
    };
    let c = round(&ceiling, fanout.addr, &a).await?;
    fanout.stop().await?;

    let side = Side::Simgate { cards };
    let s = round(&side, simgate.addr, &a).await?;
    check_outbox(&producer, template.cursor.clone(), a.events).await?;
    println!(
        "verified: each of the {} watchers received events 0..{} exactly once, in order, with rising cursors, on both sides; simgate's outbox holds them in that order",
        a.watchers, a.events
    );

    println!("| | deliveries/s | produced events/s | first produce to last delivery s | p50 ms | p99 ms | max ms | p50 ms (from send) | p99 ms (from send) | max ms (from send) |");
    println!("|---|---|---|---|---|---|---|---|---|---|");
    print(&c, Side::name(&ceiling));
    print(&s, Side::name(&side));
    println!(
        "delay: receive time minus the time the producing call returned (simgate: ImportCards answered, after its commit; a lower bound of commit-to-delivery; {} of {} deliveries arrived before the answer and count as 0), and minus the time it was sent (an upper bound)",
        s.early, s.deliveries
    );
    if a.rate == 0 {
        println!("burst: every event was produced as fast as possible, so deliveries/s is each side's capacity and the delays are mostly time spent queued");
    } else {
        println!("steady rate: a side that keeps up delivers watchers x rate per second; the delays are the figure that tells the sides apart");
    }
    println!(
        "WatchEvents / ceiling deliveries/s: {:.2}",
        s.rate() / c.rate()
    );
    simgate.stop().await?;
    db.remove().await
}
