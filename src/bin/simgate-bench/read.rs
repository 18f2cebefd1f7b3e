//! `read`: GetCard under N concurrent in-flight calls against its ceiling, a bare tonic unary
//! echo that answers with a prebuilt Card of the same size. Both servers run in this process on
//! the same runtime, are reached over one HTTP/2 channel each set up the same way, with the same
//! client, the same metadata and the same concurrency; the measurements alternate in rounds so
//! that load from elsewhere on the machine falls on both alike.

use std::time::Duration;

use simgate::clock::ManualClock;
use simgate::domain::Iccid;
use simgate::pb;
use simgate::store::Store;
use tonic::{Request, Response, Status};

use crate::common::{
    cards_client, drive, get_cards, iccid, print_loads, start_time, Bearer, Db, Load, Res, Served,
    BENCH_KEY, IDLE_ENGINE_MS, UNLIMITED_RATE,
};
use crate::echo_pb::echo_client::EchoClient;
use crate::echo_pb::echo_server::{Echo, EchoServer};

pub struct Args {
    pub cards: u64,
    pub concurrency: usize,
    pub seconds: u64,
    pub rounds: u32,
    pub database_url: Option<String>,
}

/// The ceiling's whole work: hand back the card it was built with.
struct Prebuilt(pb::Card);

#[tonic::async_trait]
impl Echo for Prebuilt {
    async fn echo(&self, _: Request<pb::GetCardRequest>) -> Result<Response<pb::Card>, Status> {
        Ok(Response::new(self.0.clone()))
    }
}

/// Serves the baseline with tonic's default server settings, as `App::serve` serves simgate.
async fn serve_echo(card: pb::Card) -> Res<Served> {
    Served::grpc(
        EchoServer::new(Prebuilt(card))
            .max_decoding_message_size(simgate::server::SMALL_MESSAGE_BYTES),
    )
    .await
}

/// GetCard on random cards of `cards`, `concurrency` calls in flight, for `duration`.
pub async fn get_card_load(
    served: &Served,
    cards: u64,
    concurrency: usize,
    duration: Duration,
) -> Res<Load> {
    get_cards(
        cards_client(&served.channel().await?)?,
        cards,
        concurrency,
        duration,
    )
    .await
}

async fn echo_load(
    served: &Served,
    cards: u64,
    concurrency: usize,
    duration: Duration,
) -> Res<Load> {
    let client = EchoClient::with_interceptor(served.channel().await?, Bearer::new(BENCH_KEY)?);
    drive(concurrency, duration, move |_, _| {
        let mut c = client.clone();
        let iccid = iccid(fastrand::u64(0..cards));
        async move {
            c.echo(pb::GetCardRequest { iccid }).await?;
            Ok(())
        }
    })
    .await
}

/// Where GetCard's time goes: the two reads it makes (the caller's key, then the card), each
/// alone under the same concurrency, straight on the store, without gRPC.
async fn breakdown(store: &Store, cards: u64, concurrency: usize, each: Duration) -> Res<()> {
    let key_id = BENCH_KEY.split('_').nth(1).ok_or("bench key")?.to_string();
    let s = store.clone();
    let keys = drive(concurrency, each, move |_, _| {
        let (s, key_id) = (s.clone(), key_id.clone());
        async move {
            s.get_key(&key_id).await?.ok_or("bench key missing")?;
            Ok(())
        }
    })
    .await?;
    let s = store.clone();
    let reads = drive(concurrency, each, move |_, _| {
        let s = s.clone();
        let iccid = Iccid::from_trusted(iccid(fastrand::u64(0..cards)));
        async move {
            s.get_card(&iccid).await?.ok_or("card missing")?;
            Ok(())
        }
    })
    .await?;
    println!("breakdown, straight on the store without gRPC, same concurrency:");
    for (name, l) in [("key lookup (auth)", &keys), ("card read", &reads)] {
        println!(
            "| {name} | {:.0}/s | p50 {:.2} ms | p99 {:.2} ms |",
            l.rate(),
            l.ms(0.5),
            l.ms(0.99)
        );
    }
    Ok(())
}

pub async fn run(a: Args) -> Res<()> {
    let db = Db::fresh(a.database_url.as_deref())?;
    let start = start_time()?;
    let app = crate::common::server_on(&db, ManualClock::new(start))?
        .bootstrap_key(BENCH_KEY)
        .rate_limit_per_key(UNLIMITED_RATE)
        .engine_interval_ms(IDLE_ENGINE_MS)
        .build()
        .await?;
    crate::rollover::insert_cards(app.store(), a.cards, start).await?;
    let store = app.store().clone();
    let simgate = Served::app(app).await?;
    let card = cards_client(&simgate.channel().await?)?
        .get_card(pb::GetCardRequest { iccid: iccid(0) })
        .await?
        .into_inner();
    let echo = serve_echo(card.clone()).await?;
    println!(
        "backend: {}, cards: {}, concurrency: {} (one HTTP/2 channel per server), {} rounds of {} s each, Card reply {} bytes",
        db.backend(),
        a.cards,
        a.concurrency,
        a.rounds,
        a.seconds,
        prost::Message::encoded_len(&card)
    );

    // Warm-up: connections, pools, page cache, allocator.
    let warm = Duration::from_secs(2);
    echo_load(&echo, a.cards, a.concurrency, warm).await?;
    get_card_load(&simgate, a.cards, a.concurrency, warm).await?;

    let each = Duration::from_secs(a.seconds);
    let (mut e, mut g) = (Load::empty()?, Load::empty()?);
    for round in 1..=a.rounds {
        let el = echo_load(&echo, a.cards, a.concurrency, each).await?;
        let gl = get_card_load(&simgate, a.cards, a.concurrency, each).await?;
        println!(
            "round {round}: echo {:.0}/s, GetCard {:.0}/s",
            el.rate(),
            gl.rate()
        );
        e.add(&el)?;
        g.add(&gl)?;
    }
    print_loads("calls/s", &[("echo (ceiling)", &e), ("GetCard", &g)]);
    let ratio = g.rate() / e.rate();
    println!(
        "GetCard / echo throughput: {ratio:.2} (target >= 0.6: {}); GetCard p99 {:.2} ms (target < 5 ms: {})",
        if ratio >= 0.6 { "met" } else { "MISSED" },
        g.ms(0.99),
        if g.ms(0.99) < 5.0 { "met" } else { "MISSED" }
    );
    breakdown(&store, a.cards, a.concurrency, each).await?;
    echo.stop().await?;
    simgate.stop().await?;
    db.remove().await
}
