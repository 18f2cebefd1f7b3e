//! What an operator sees and does: Prometheus metrics, request ids in responses and in every
//! log line of a call, and an orderly shutdown (health first, streams ended, in-flight calls
//! finished or cut at the deadline).

use std::sync::Arc;
use std::time::Duration;

use simgate::config::ShutdownConfig;
use simgate::pb;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use crate::helpers::*;

struct Running {
    app: TestApp,
    metrics_url: String,
}

async fn start(shutdown: ShutdownConfig) -> Option<Running> {
    let db = Arc::new(TestDb::new(Backend::Sqlite)?);
    let clock = simgate::clock::ManualClock::new(start_time());
    let app = test_server(&db, &clock)
        .shutdown(shutdown)
        .build()
        .await
        .expect("build");
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_url = format!("http://{}/metrics", metrics_listener.local_addr().unwrap());
    let app = serve_built(app.with_metrics_listener(metrics_listener), db, clock).await;
    Some(Running { app, metrics_url })
}

/// A mobile card whose carrier now answers after `latency_ms`, and a suspend of it under way.
async fn slow_suspend(
    app: &mut TestApp,
    latency_ms: u32,
) -> tokio::task::JoinHandle<Result<tonic::Response<pb::Card>, tonic::Status>> {
    import(
        app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            latency_ms,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut cards = app.cards.clone();
    let call = tokio::spawn(async move {
        cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: MOBILE_ICCID.into(),
                ..Default::default()
            })
            .await
    });
    // Let the call reach the carrier before the signal.
    tokio::time::sleep(Duration::from_millis(300)).await;
    call
}

async fn scrape(url: &str) -> String {
    let resp = reqwest::get(url).await.expect("scrape");
    assert_eq!(resp.status(), 200);
    resp.text().await.expect("body")
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn with_request_id<T>(msg: T, id: &str) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.metadata_mut()
        .insert("x-request-id", id.parse().expect("ascii"));
    req
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_calls_by_method_and_code_carrier_calls_and_cards_by_status() {
    let Some(mut run) = start(ShutdownConfig::default()).await else {
        return;
    };
    let app = &mut run.app;
    import(
        app,
        vec![
            card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile),
            card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom),
        ],
    )
    .await;
    get(app, MOBILE_ICCID).await;
    get(app, MOBILE_ICCID).await;
    let missing = app
        .cards
        .get_card(pb::GetCardRequest {
            iccid: mobile_iccid(999),
        })
        .await
        .unwrap_err();
    assert_eq!(missing.code(), tonic::Code::NotFound);
    app.cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: MOBILE_ICCID.into(),
            ..Default::default()
        })
        .await
        .unwrap();

    let text = scrape(&run.metrics_url).await;
    let get_ok = r#"simgate_rpc_requests_total{code="Ok",rpc="simgate.v1.CardService/GetCard"}"#;
    let get_missing =
        r#"simgate_rpc_requests_total{code="NotFound",rpc="simgate.v1.CardService/GetCard"}"#;
    assert_eq!(sample(&text, get_ok), Some(2.0), "{text}");
    assert_eq!(sample(&text, get_missing), Some(1.0), "{text}");
    assert_eq!(
        sample(
            &text,
            r#"simgate_rpc_duration_seconds_count{code="Ok",rpc="simgate.v1.CardService/GetCard"}"#
        ),
        Some(2.0),
        "{text}"
    );
    assert_eq!(
        sample(
            &text,
            r#"simgate_carrier_calls_total{account="mobile",carrier="mobile",operation="stop",outcome="ok"}"#
        ),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"simgate_cards{status="ACTIVE"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"simgate_cards{status="SUSPENDED"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"simgate_cards_stopped{reason="MANUAL"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"simgate_cards_stopped{reason="ARREARS"}"#),
        Some(0.0),
        "{text}"
    );
    assert_eq!(sample(&text, "simgate_pending_batch_items"), Some(0.0));
    // The scrape itself is not a gRPC call, and nothing else is in flight.
    assert_eq!(sample(&text, "simgate_rpc_in_flight"), Some(0.0), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_id_is_echoed_or_generated() {
    let Some(mut run) = start(ShutdownConfig::default()).await else {
        return;
    };
    let app = &mut run.app;
    import(
        app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let resp = app
        .cards
        .get_card(with_request_id(
            pb::GetCardRequest {
                iccid: MOBILE_ICCID.into(),
            },
            "trace-7f3a",
        ))
        .await
        .unwrap();
    assert_eq!(resp.metadata().get("x-request-id").unwrap(), "trace-7f3a");
    // An error answer carries it too, and a missing one is generated.
    let err = app
        .cards
        .get_card(pb::GetCardRequest {
            iccid: "bad".into(),
        })
        .await
        .unwrap_err();
    let generated = err.metadata().get("x-request-id").expect("generated id");
    assert!(uuid::Uuid::parse_str(generated.to_str().unwrap()).is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_turns_health_not_serving_ends_streams_and_finishes_in_flight_calls() {
    let Some(mut run) = start(ShutdownConfig {
        drain_ms: 0,
        grace_ms: 30_000,
    })
    .await
    else {
        return;
    };
    let mut health = HealthClient::new(run.app.channel.clone());
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "simgate.v1.CardService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status(), ServingStatus::Serving);

    let in_flight = slow_suspend(&mut run.app, 1500).await;
    let served = run.app.begin_stop().expect("running");

    let next = watch.message().await.unwrap().expect("a status update");
    assert_eq!(next.status(), ServingStatus::NotServing);
    let ended = watch.message().await.unwrap_err();
    assert_eq!(ended.code(), tonic::Code::Unavailable, "{ended:?}");

    // The call that was running when the signal came finishes, with its carrier call.
    let card = in_flight.await.unwrap().expect("in-flight call finished");
    assert_eq!(card.into_inner().status(), pb::CardStatus::Suspended);
    tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("server stopped")
        .unwrap();
    // New callers are refused: the listener is gone.
    let mut late = HealthClient::new(run.app.channel.clone());
    assert!(late
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_still_running_at_the_end_of_the_grace_time_are_cut_with_unavailable() {
    let Some(mut run) = start(ShutdownConfig {
        drain_ms: 0,
        grace_ms: 300,
    })
    .await
    else {
        return;
    };
    let in_flight = slow_suspend(&mut run.app, 20_000).await;
    let served = run.app.begin_stop().expect("running");
    // Well before the carrier's 20 s: the grace time, not the slow call, bounds the shutdown.
    tokio::time::timeout(Duration::from_secs(10), served)
        .await
        .expect("server stopped at its deadline")
        .unwrap();
    let err = tokio::time::timeout(Duration::from_secs(5), in_flight)
        .await
        .expect("the cut call was answered")
        .unwrap()
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    assert!(err.message().contains("shutting down"), "{err:?}");
}

/// Every log line written while a call is answered carries that call's request id, in JSON.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_log_line_of_a_call_carries_its_request_id() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = ServeProcess::command();
    serve
        .current_dir(dir.path())
        .env("SIMGATE_LOG__FORMAT", "json")
        .env("RUST_LOG", "info,simgate=debug,sqlx=warn");
    let (mut server, channel) = ServeProcess::up(serve).await;
    let mut cards = cards_client(&channel, ADMIN_KEY);
    cards
        .import_cards(with_request_id(
            pb::ImportCardsRequest {
                cards: vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
                ..Default::default()
            },
            "import-req-1",
        ))
        .await
        .unwrap();
    cards
        .suspend_card(with_request_id(
            pb::SuspendCardRequest {
                iccid: MOBILE_ICCID.into(),
                ..Default::default()
            },
            "suspend-req-2",
        ))
        .await
        .unwrap();
    // SIGTERM: the server stops in order and its output ends.
    let status = server.terminate().await;
    assert!(status.success(), "exit: {status:?}");
    let lines: Vec<serde_json::Value> = server
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let id_of = |line: &serde_json::Value| line["span"]["request_id"].as_str().map(str::to_string);
    let message = |line: &serde_json::Value| line["message"].as_str().unwrap_or("").to_string();
    let imported = lines
        .iter()
        .find(|l| message(l) == "cards imported")
        .expect("an import log line");
    assert_eq!(id_of(imported).as_deref(), Some("import-req-1"));
    let changed = lines
        .iter()
        .find(|l| message(l) == "card changed")
        .expect("a card-change log line");
    assert_eq!(id_of(changed).as_deref(), Some("suspend-req-2"));
    // Every line inside a call names the call's method and id; both calls logged their end.
    // (The harness's own readiness probes, health checks, are calls too, with generated ids.)
    let in_calls: Vec<_> = lines
        .iter()
        .filter(|l| l["span"]["name"] == "rpc")
        .filter(|l| l["span"]["rpc"] != "grpc.health.v1.Health/Check")
        .collect();
    assert!(in_calls.len() >= 4, "{lines:#?}");
    for l in &in_calls {
        let id = id_of(l).expect("request id");
        let rpc = l["span"]["rpc"].as_str().unwrap_or("");
        match id.as_str() {
            "import-req-1" => assert_eq!(rpc, "simgate.v1.CardService/ImportCards"),
            "suspend-req-2" => assert_eq!(rpc, "simgate.v1.CardService/SuspendCard"),
            other => panic!("unexpected request id {other} in {l}"),
        }
    }
    let finished: Vec<_> = in_calls
        .iter()
        .filter(|l| message(l) == "call finished")
        .collect();
    assert_eq!(finished.len(), 2, "{finished:#?}");
    assert!(
        lines.iter().any(|l| message(l).contains("NOT_SERVING")),
        "shutdown was not logged: {lines:#?}"
    );
}
