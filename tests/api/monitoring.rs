//! Usage monitoring end to end: shared pools exhausting, topping up and rolling over; alerts
//! firing once per threshold per cycle; the scheduled usage sync with its daily history; and the
//! event stream resuming from a cursor with nothing lost and nothing repeated.

use std::collections::HashSet;
use std::time::Duration;

use chrono::TimeZone;
use chrono_tz::Asia::Shanghai;
use simgate::clock::Clock;
use simgate::pb;
use simgate::pb::monitoring_service_client::MonitoringServiceClient;
use tokio_stream::StreamExt;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

const MIB: u64 = 1 << 20;

fn monitor(app: &TestApp) -> MonitoringServiceClient<Authed> {
    monitoring_client(&app.channel, ADMIN_KEY)
}

async fn pool(app: &TestApp, id: &str) -> pb::Pool {
    monitor(app)
        .get_pool(pb::GetPoolRequest {
            pool_id: id.into(),
            ..Default::default()
        })
        .await
        .expect("get pool")
        .into_inner()
}

/// Every event of `kinds` (prefixes allowed), oldest first, paged through ListEvents.
async fn events(app: &TestApp, filter: pb::EventFilter) -> Vec<pb::Event> {
    let mut out = Vec::new();
    let mut token = String::new();
    loop {
        let page = monitor(app)
            .list_events(pb::ListEventsRequest {
                filter: Some(filter.clone()),
                page_size: 1000,
                page_token: token,
            })
            .await
            .expect("list events")
            .into_inner();
        out.extend(page.events);
        if page.next_page_token.is_empty() {
            return out;
        }
        token = page.next_page_token;
    }
}

/// The thresholds of the card's usage alerts so far, oldest first.
async fn usage_alerts(app: &TestApp, iccid: &str) -> Vec<i64> {
    events(
        app,
        pb::EventFilter {
            iccid: iccid.into(),
            kinds: vec!["alert.card_usage".into()],
            ..Default::default()
        },
    )
    .await
    .iter()
    .map(|e| e.alert.as_ref().map_or(0, |a| a.threshold))
    .collect()
}

/// Moves the clock into China Mobile's next billing cycle (1 December), applying what is due.
async fn to_next_cycle(app: &mut TestApp) {
    let next_cycle = Shanghai
        .with_ymd_and_hms(2026, 12, 1, 0, 30, 0)
        .unwrap()
        .with_timezone(&chrono::Utc);
    app.sim
        .set_clock(pb::SetClockRequest {
            to: Some(ts(next_cycle)),
        })
        .await
        .expect("set clock");
}

fn kinds_filter(kinds: &[&str]) -> pb::EventFilter {
    pb::EventFilter {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    }
}

async fn expect_members(app: &mut TestApp, iccids: &[String], stopped: bool, step: &str) {
    for iccid in iccids {
        let card = get(app, iccid).await;
        let has = reasons_of(&card).contains(&pb::StopReason::PoolExhausted);
        assert_eq!(has, stopped, "{step}: {iccid} POOL_EXHAUSTED");
        assert_eq!(
            status_of(&card),
            if stopped {
                pb::CardStatus::Suspended
            } else {
                pb::CardStatus::Active
            },
            "{step}: {iccid} status"
        );
        let at_carrier = carrier_state(app, pb::Carrier::ChinaMobile, iccid).await;
        assert_eq!(
            at_carrier,
            if stopped {
                pb::CarrierServiceState::Stopped
            } else {
                pb::CarrierServiceState::Active
            },
            "{step}: {iccid} at the carrier"
        );
    }
}

both_backends!(
    three_cards_share_a_pool_that_exhausts_tops_up_and_resets_next_cycle,
    |mut app: TestApp| async move {
        let iccids: Vec<String> = (1..=3).map(mobile_iccid).collect();
        let mut rows: Vec<pb::CardInput> = iccids
            .iter()
            .map(|i| {
                let mut c = card_input(i, pb::Carrier::ChinaMobile);
                c.balance_fen = 100_000;
                c
            })
            .collect();
        // Refused members: another carrier's card and another customer's.
        rows.push(card_input(&unicom_iccid(9), pb::Carrier::ChinaUnicom));
        let mut foreign = card_input(&mobile_iccid(9), pb::Carrier::ChinaMobile);
        foreign.customer_id = "globex".into();
        rows.push(foreign);
        import(&mut app, rows).await;
        let mut m = monitor(&app);
        let created = m
            .create_pool(pb::CreatePoolRequest {
                pool_id: "fleet".into(),
                name: "delivery fleet".into(),
                carrier: pb::Carrier::ChinaMobile as i32,
                customer_id: "acme".into(),
                monthly_quota_bytes: 30 * MIB,
                auto_suspend: true,
            })
            .await
            .expect("create pool")
            .into_inner();
        assert_eq!(created.capacity_bytes, 30 * MIB);
        let again = m
            .create_pool(pb::CreatePoolRequest {
                pool_id: "fleet".into(),
                carrier: pb::Carrier::ChinaMobile as i32,
                customer_id: "acme".into(),
                monthly_quota_bytes: 1,
                ..Default::default()
            })
            .await
            .expect_err("the id is taken");
        assert_eq!(again.code(), Code::AlreadyExists);

        for (bad, reason) in [
            (unicom_iccid(9), "POOL_CARRIER_MISMATCH"),
            (mobile_iccid(9), "POOL_CUSTOMER_MISMATCH"),
        ] {
            let err = m
                .add_cards_to_pool(pb::AddCardsToPoolRequest {
                    pool_id: "fleet".into(),
                    iccids: vec![iccids[0].clone(), bad],
                    ..Default::default()
                })
                .await
                .expect_err("refused");
            assert_eq!(err.code(), Code::FailedPrecondition);
            assert_eq!(details(&err).0, reason);
        }
        // All or nothing: the good card of the refused call was not moved either.
        assert_eq!(pool(&app, "fleet").await.member_count, 0);
        assert_eq!(get(&mut app, &iccids[0]).await.customer_id, "acme");

        let joined = m
            .add_cards_to_pool(pb::AddCardsToPoolRequest {
                pool_id: "fleet".into(),
                iccids: iccids.clone(),
                ..Default::default()
            })
            .await
            .expect("add cards")
            .into_inner();
        assert_eq!(joined.member_count, 3);

        // 25 MiB between them: 83% of the pool, nobody stops.
        for (iccid, mib) in iccids.iter().zip([10, 10, 5]) {
            app.use_data(pb::Carrier::ChinaMobile, iccid, mib * MIB)
                .await;
        }
        let p = pool(&app, "fleet").await;
        assert_eq!((p.used_bytes, p.exhausted), (25 * MIB, false));
        expect_members(&mut app, &iccids, false, "at 83%").await;

        // The third card's traffic empties the pool: all three stop.
        app.use_data(pb::Carrier::ChinaMobile, &iccids[2], 5 * MIB)
            .await;
        let p = pool(&app, "fleet").await;
        assert!(p.exhausted, "{p:?}");
        assert_eq!(p.used_permille, 1000);
        expect_members(&mut app, &iccids, true, "exhausted").await;

        // A top-up restores all three; its repeat adds nothing.
        let top_up = pb::TopUpPoolRequest {
            pool_id: "fleet".into(),
            bytes: 10 * MIB,
            request_id: "topup-1".into(),
            ..Default::default()
        };
        let first = m
            .top_up_pool(top_up.clone())
            .await
            .expect("top up")
            .into_inner();
        assert_eq!((first.capacity_bytes, first.exhausted), (40 * MIB, false));
        let repeat = m.top_up_pool(top_up).await.expect("repeat").into_inner();
        assert_eq!(repeat, first);
        assert_eq!(pool(&app, "fleet").await.capacity_bytes, 40 * MIB);
        expect_members(&mut app, &iccids, false, "topped up").await;

        // Used up again, then the next cycle (1 December for China Mobile) resets the pool.
        app.use_data(pb::Carrier::ChinaMobile, &iccids[0], 10 * MIB)
            .await;
        expect_members(&mut app, &iccids, true, "exhausted again").await;
        to_next_cycle(&mut app).await;
        let p = pool(&app, "fleet").await;
        assert_eq!(
            (p.used_bytes, p.topup_bytes, p.capacity_bytes, p.exhausted),
            (0, 0, 30 * MIB, false),
            "{p:?}"
        );
        expect_members(&mut app, &iccids, false, "next cycle").await;

        let history: Vec<String> = events(
            &app,
            pb::EventFilter {
                pool_id: "fleet".into(),
                kinds: vec!["pool.*".into()],
                ..Default::default()
            },
        )
        .await
        .into_iter()
        .map(|e| e.kind)
        .collect();
        assert_eq!(
            history,
            [
                "pool.created",
                "pool.exhausted",
                "pool.topped_up",
                "pool.restored",
                "pool.exhausted",
                "pool.cycle_started",
                "pool.restored",
            ],
        );

        // Leaving the pool puts the card back on its own quota.
        let left = m
            .remove_cards_from_pool(pb::RemoveCardsFromPoolRequest {
                pool_id: "fleet".into(),
                iccids: vec![iccids[0].clone()],
                ..Default::default()
            })
            .await
            .expect("remove")
            .into_inner();
        assert_eq!(left.member_count, 2);
        assert_eq!(
            get(&mut app, &iccids[0]).await.status,
            pb::CardStatus::Active as i32
        );
    }
);

both_backends!(
    usage_alerts_fire_once_per_threshold_and_rearm_at_rollover,
    |mut app: TestApp| async move {
        let iccid = mobile_iccid(1);
        let mut row = card_input(&iccid, pb::Carrier::ChinaMobile);
        row.balance_fen = 100_000;
        import(&mut app, vec![row]).await;
        let quota: u64 = 1 << 30;
        app.use_data(pb::Carrier::ChinaMobile, &iccid, quota * 81 / 100)
            .await;
        assert_eq!(
            usage_alerts(&app, &iccid).await,
            [800],
            "crossing 80% fires once"
        );
        app.use_data(pb::Carrier::ChinaMobile, &iccid, quota * 4 / 100)
            .await;
        assert_eq!(usage_alerts(&app, &iccid).await, [800], "85% fires nothing");
        app.use_data(pb::Carrier::ChinaMobile, &iccid, quota * 6 / 100)
            .await;
        assert_eq!(
            usage_alerts(&app, &iccid).await,
            [800, 900],
            "90% fires the next"
        );
        // Syncing the same usage again changes nothing.
        app.service.sync_all_usage().await.expect("sync");
        assert_eq!(usage_alerts(&app, &iccid).await, [800, 900]);

        to_next_cycle(&mut app).await;
        app.use_data(pb::Carrier::ChinaMobile, &iccid, quota * 82 / 100)
            .await;
        assert_eq!(
            usage_alerts(&app, &iccid).await,
            [800, 900, 800],
            "a new cycle re-arms the thresholds"
        );

        // A customer's own rules: only 50%.
        let mut m = monitor(&app);
        m.set_alert_rules(pb::SetAlertRulesRequest {
            rules: Some(pb::AlertRules {
                customer_id: "acme".into(),
                card_usage_permille: vec![500],
                ..Default::default()
            }),
        })
        .await
        .expect("set rules");
        let bad = m
            .set_alert_rules(pb::SetAlertRulesRequest {
                rules: Some(pb::AlertRules {
                    customer_id: "acme".into(),
                    card_usage_permille: vec![900, 900],
                    ..Default::default()
                }),
            })
            .await
            .expect_err("repeated threshold");
        assert_eq!(bad.code(), Code::InvalidArgument);
        assert_eq!(details(&bad).1, ["rules.card_usage_permille"]);
        let rules = m
            .get_alert_rules(pb::GetAlertRulesRequest {
                customer_id: "acme".into(),
            })
            .await
            .expect("get rules")
            .into_inner();
        assert_eq!(
            (rules.card_usage_permille, rules.customised),
            (vec![500], true)
        );
    }
);

both_backends!(
    the_scheduled_sync_reads_usage_in_batches_and_keeps_a_daily_history,
    |mut app: TestApp| async move {
        // Control Center: its usage is read as it stands also over HTTP (OneLink's batch usage
        // runs up to yesterday, so over HTTP a China Mobile card's traffic of today shows
        // tomorrow: tests/api/batch_calls.rs).
        let iccids: Vec<String> = (1..=30).map(unicom_iccid).collect();
        let rows = iccids
            .iter()
            .map(|i| card_input(i, pb::Carrier::ChinaUnicom))
            .collect();
        import(&mut app, rows).await;
        // Traffic the carrier counted without telling simgate (no RecordUsage sync).
        // China Unicom's cycle starts on the 27th.
        let cycle_ms = Shanghai
            .with_ymd_and_hms(2026, 10, 27, 0, 0, 0)
            .unwrap()
            .timestamp_millis();
        for (n, iccid) in iccids.iter().enumerate() {
            let iccid = simgate::domain::Iccid::parse_any(iccid).unwrap();
            app.store
                .sim_add_usage(
                    "unicom",
                    &iccid,
                    (n as u64 + 1) * MIB,
                    cycle_ms,
                    start_time().timestamp_millis(),
                )
                .await
                .expect("carrier-side usage");
        }
        let stats = app.service.sync_all_usage().await.expect("sync");
        assert_eq!(stats.read, 30);
        assert_eq!(stats.updated, 30);
        for (n, iccid) in iccids.iter().enumerate() {
            assert_eq!(
                get(&mut app, iccid).await.cycle_usage_bytes,
                (n as u64 + 1) * MIB
            );
        }
        // The next day brings more traffic for one card.
        app.clock.advance(chrono::Duration::days(1)).expect("clock");
        let first = simgate::domain::Iccid::parse_any(&iccids[0]).unwrap();
        app.store
            .sim_add_usage(
                "unicom",
                &first,
                3 * MIB,
                cycle_ms,
                start_time().timestamp_millis(),
            )
            .await
            .unwrap();
        let again = app.service.sync_all_usage().await.expect("sync");
        assert_eq!(
            again.updated, 1,
            "only the card with new traffic is written"
        );
        let history = monitor(&app)
            .get_usage_history(pb::GetUsageHistoryRequest {
                iccid: iccids[0].clone(),
                days: 7,
            })
            .await
            .expect("history")
            .into_inner();
        let days: Vec<u64> = history.days.iter().map(|d| d.bytes).collect();
        assert_eq!(days, [MIB, 3 * MIB]);
        assert_eq!(history.average_bytes_per_day, 4 * MIB / 7);
    }
);

both_backends!(
    a_watcher_that_reconnects_with_its_cursor_gets_exactly_the_missed_events,
    |app: TestApp| async move {
        const TOTAL: usize = 10_000;
        const CHUNK: usize = 500;
        let filter = kinds_filter(&["card.imported"]);
        let mut m = monitor(&app);
        let mut stream = m
            .watch_events(pb::WatchEventsRequest {
                filter: Some(filter.clone()),
                after_cursor: String::new(),
            })
            .await
            .expect("watch")
            .into_inner();
        // Produce 10,000 events in 20 imports while the watcher reads.
        let producer = {
            let mut cards = cards_client(&app.channel, ADMIN_KEY);
            tokio::spawn(async move {
                for chunk in 0..TOTAL / CHUNK {
                    let rows = (0..CHUNK)
                        .map(|i| {
                            card_input(
                                &mobile_iccid((chunk * CHUNK + i) as u64 + 1),
                                pb::Carrier::ChinaMobile,
                            )
                        })
                        .collect();
                    cards
                        .import_cards(pb::ImportCardsRequest {
                            cards: rows,
                            ..Default::default()
                        })
                        .await
                        .expect("import");
                }
            })
        };
        let mut got: Vec<pb::Event> = Vec::new();
        while got.len() < 2_500 {
            let e = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("an event within a minute")
                .expect("stream open")
                .expect("event");
            got.push(e);
        }
        // Disconnect mid-stream; production goes on meanwhile.
        drop(stream);
        drop(m);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cursor = got.last().unwrap().cursor.clone();
        let mut m = monitor(&app);
        let mut stream = m
            .watch_events(pb::WatchEventsRequest {
                filter: Some(filter.clone()),
                after_cursor: cursor,
            })
            .await
            .expect("watch again")
            .into_inner();
        while got.len() < TOTAL {
            let e = tokio::time::timeout(Duration::from_secs(60), stream.next())
                .await
                .expect("an event within a minute")
                .expect("stream open")
                .expect("event");
            got.push(e);
        }
        producer.await.expect("producer");
        // Nothing more arrives: no event is sent twice.
        let extra = tokio::time::timeout(Duration::from_millis(500), stream.next()).await;
        assert!(extra.is_err(), "an extra event arrived: {extra:?}");

        let all = events(&app, filter).await;
        assert_eq!(all.len(), TOTAL);
        let got_cursors: Vec<&str> = got.iter().map(|e| e.cursor.as_str()).collect();
        let all_cursors: Vec<&str> = all.iter().map(|e| e.cursor.as_str()).collect();
        assert_eq!(got_cursors, all_cursors, "the same events, in commit order");
        let unique: HashSet<&str> = got.iter().map(|e| e.iccid.as_str()).collect();
        assert_eq!(unique.len(), TOTAL);
    }
);

both_backends!(
    bad_monitoring_requests_name_the_field_and_change_nothing,
    |app: TestApp| async move {
        let mut m = monitor(&app);
        let err = m
            .create_pool(pb::CreatePoolRequest {
                pool_id: "bad id!".into(),
                carrier: 0,
                customer_id: String::new(),
                monthly_quota_bytes: 0,
                ..Default::default()
            })
            .await
            .expect_err("invalid");
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(
            details(&err).1,
            ["pool_id", "carrier", "customer_id", "monthly_quota_bytes"]
        );
        let err = m
            .get_pool(pb::GetPoolRequest {
                pool_id: "missing".into(),
                ..Default::default()
            })
            .await
            .expect_err("no such pool");
        assert_eq!(err.code(), Code::NotFound);
        let err = m
            .top_up_pool(pb::TopUpPoolRequest {
                pool_id: "missing".into(),
                bytes: 0,
                request_id: String::new(),
                ..Default::default()
            })
            .await
            .expect_err("zero bytes");
        assert_eq!(details(&err).1, ["bytes"]);
        let err = m
            .watch_events(pb::WatchEventsRequest {
                filter: Some(kinds_filter(&["Card Imported"])),
                after_cursor: "not-a-cursor".into(),
            })
            .await
            .expect_err("bad filter");
        assert_eq!(err.code(), Code::InvalidArgument);
        let err = m
            .list_events(pb::ListEventsRequest {
                page_token: "not-a-cursor".into(),
                ..Default::default()
            })
            .await
            .expect_err("bad token");
        assert_eq!(details(&err).1, ["page_token"]);
        let pools = m
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .expect("list")
            .into_inner();
        assert!(pools.pools.is_empty());
    }
);

/// What the test receiver saw: (event id, kind, signature valid) per successful delivery, and
/// how many requests it answered in all.
#[derive(Default)]
struct Received {
    delivered: Vec<(String, String, bool)>,
    requests: usize,
}

type Inbox = std::sync::Arc<std::sync::Mutex<Received>>;

const SECRET: &str = "whsec_receiver_secret_0123456789";

/// A webhook receiver on a random port: `/flaky` fails its first two requests with 500, then
/// accepts; `/down` always answers 503.
async fn receiver() -> (String, Inbox) {
    use axum::extract::State;
    use axum::http::{HeaderMap, StatusCode};
    let inbox: Inbox = Default::default();
    async fn flaky(
        State(inbox): State<Inbox>,
        headers: HeaderMap,
        body: axum::body::Bytes,
    ) -> StatusCode {
        let mut r = inbox.lock().unwrap();
        r.requests += 1;
        if r.requests <= 2 {
            return StatusCode::INTERNAL_SERVER_ERROR;
        }
        let h = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string()
        };
        let ts: i64 = h("x-simgate-timestamp").parse().unwrap_or(0);
        let valid =
            h("x-simgate-signature") == simgate::service::webhooks::signature(SECRET, ts, &body);
        let json: serde_json::Value = serde_json::from_slice(&body).expect("JSON body");
        assert_eq!(json["event_id"].to_string(), h("x-simgate-event-id"));
        r.delivered.push((
            h("x-simgate-event-id"),
            json["kind"].as_str().unwrap_or_default().to_string(),
            valid,
        ));
        StatusCode::NO_CONTENT
    }
    async fn down() -> StatusCode {
        StatusCode::SERVICE_UNAVAILABLE
    }
    let app = axum::Router::new()
        .route("/flaky", axum::routing::post(flaky))
        .route("/down", axum::routing::post(down))
        .with_state(inbox.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), inbox)
}

async fn deliveries(app: &TestApp, id: &str, state: pb::DeliveryState) -> Vec<pb::WebhookDelivery> {
    monitor(app)
        .list_webhook_deliveries(pb::ListWebhookDeliveriesRequest {
            webhook_id: id.into(),
            state: state as i32,
            page_size: 0,
        })
        .await
        .expect("deliveries")
        .into_inner()
        .deliveries
}

async fn webhooks_are_signed_retried_and_dead_lettered(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let db = std::sync::Arc::new(db);
    let clock = simgate::clock::ManualClock::new(start_time());
    let built = test_server(&db, &clock)
        .webhooks(simgate::service::webhooks::WebhookConfig {
            max_attempts: 3,
            retry_base_ms: 50,
            retry_max_ms: 200,
            timeout_ms: 2000,
            poll_ms: 20,
            ..local_webhooks()
        })
        .build()
        .await
        .expect("build");
    let mut app = serve_built(built, db, clock).await;
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    let (base, inbox) = receiver().await;
    let mut m = monitor(&app);
    let flaky = m
        .create_webhook(pb::CreateWebhookRequest {
            customer_id: "acme".into(),
            url: format!("{base}/flaky"),
            kinds: vec!["card.*".into()],
            secret: SECRET.into(),
        })
        .await
        .expect("create webhook")
        .into_inner();
    assert_eq!(flaky.secret, SECRET);
    let flaky_id = flaky.webhook.unwrap().webhook_id;
    let down_id = m
        .create_webhook(pb::CreateWebhookRequest {
            customer_id: "acme".into(),
            url: format!("{base}/down"),
            kinds: vec!["card.suspended".into()],
            secret: String::new(),
        })
        .await
        .expect("create webhook")
        .into_inner()
        .webhook
        .unwrap()
        .webhook_id;
    let bad = m
        .create_webhook(pb::CreateWebhookRequest {
            customer_id: "acme".into(),
            url: "ftp://example.com/x".into(),
            ..Default::default()
        })
        .await
        .expect_err("not http");
    assert_eq!(details(&bad).1, ["url"]);

    app.cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: MOBILE_ICCID.into(),
            ..Default::default()
        })
        .await
        .expect("suspend");

    // Two 500s, then accepted on the third attempt: one delivery, correctly signed.
    eventually("the flaky receiver to accept", 20, || async {
        !inbox.lock().unwrap().delivered.is_empty()
    })
    .await;
    eventually("the delivery to be recorded", 20, || async {
        deliveries(&app, &flaky_id, pb::DeliveryState::Delivered)
            .await
            .len()
            == 1
    })
    .await;
    let done = deliveries(&app, &flaky_id, pb::DeliveryState::Delivered).await;
    assert_eq!(done[0].attempts, 3);
    {
        let r = inbox.lock().unwrap();
        assert_eq!(r.delivered.len(), 1, "one event, delivered once");
        let (_, kind, valid) = &r.delivered[0];
        assert_eq!(kind, "card.suspended");
        assert!(valid, "the signature verifies with the shared secret");
        assert_eq!(r.requests, 3);
    }

    // The endpoint that is always down: three attempts, then the dead letter.
    eventually("the dead letter", 20, || async {
        deliveries(&app, &down_id, pb::DeliveryState::Dead)
            .await
            .len()
            == 1
    })
    .await;
    let dead = deliveries(&app, &down_id, pb::DeliveryState::Dead).await;
    assert_eq!(dead[0].attempts, 3);
    assert_eq!(dead[0].last_error, "HTTP 503");
    let requeued = m
        .retry_webhook_deliveries(pb::RetryWebhookDeliveriesRequest {
            webhook_id: down_id.clone(),
        })
        .await
        .expect("retry")
        .into_inner()
        .requeued;
    assert_eq!(requeued, 1);
    eventually("the retried dead letter to die again", 20, || async {
        let d = deliveries(&app, &down_id, pb::DeliveryState::Dead).await;
        d.len() == 1 && d[0].attempts == 3
    })
    .await;

    m.delete_webhook(pb::DeleteWebhookRequest {
        webhook_id: flaky_id.clone(),
    })
    .await
    .expect("delete");
    let listed = m
        .list_webhooks(pb::ListWebhooksRequest {})
        .await
        .expect("list")
        .into_inner()
        .webhooks;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].webhook_id, down_id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_dead_lettered_sqlite() {
    webhooks_are_signed_retried_and_dead_lettered(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhooks_are_signed_retried_and_dead_lettered_postgres() {
    webhooks_are_signed_retried_and_dead_lettered(Backend::Postgres).await;
}

both_backends!(
    a_traffic_profile_makes_simulated_cards_use_data_by_the_hour,
    |mut app: TestApp| async move {
        // Control Center: usage read as it stands, in process and over HTTP alike (OneLink's
        // batch usage runs up to yesterday: tests/api/batch_calls.rs).
        let active = unicom_iccid(1);
        let stopped = unicom_iccid(2);
        import(
            &mut app,
            vec![
                card_input(&active, pb::Carrier::ChinaUnicom),
                card_input(&stopped, pb::Carrier::ChinaUnicom),
            ],
        )
        .await;
        app.cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: stopped.clone(),
                ..Default::default()
            })
            .await
            .expect("suspend");
        app.sim
            .set_faults(pb::SetFaultsRequest {
                carrier: pb::Carrier::ChinaUnicom as i32,
                traffic_bytes_per_hour: MIB,
                ..Default::default()
            })
            .await
            .expect("profile");
        app.sim
            .advance_clock(pb::AdvanceClockRequest {
                by: Some(prost_types::Duration {
                    seconds: 10 * 3600,
                    nanos: 0,
                }),
            })
            .await
            .expect("advance");
        app.service.sync_all_usage().await.expect("sync");
        assert_eq!(get(&mut app, &active).await.cycle_usage_bytes, 10 * MIB);
        // A stopped card carries no traffic.
        assert_eq!(get(&mut app, &stopped).await.cycle_usage_bytes, 0);
        // Reading again without time passing adds nothing.
        app.service.sync_all_usage().await.expect("sync");
        assert_eq!(get(&mut app, &active).await.cycle_usage_bytes, 10 * MIB);
    }
);

/// A server on `backend` with these WatchEvents settings, and its metrics.
async fn spawn_with_events(
    backend: Backend,
    cfg: simgate::service::events::EventsConfig,
) -> Option<(TestApp, simgate::metrics::Metrics)> {
    let db = std::sync::Arc::new(TestDb::new(backend)?);
    let clock = simgate::clock::ManualClock::new(start_time());
    let built = test_server(&db, &clock).events(cfg).build().await.unwrap();
    let metrics = built.metrics().clone();
    Some((serve_built(built, db, clock).await, metrics))
}

fn reason(status: &tonic::Status) -> (String, std::collections::HashMap<String, String>) {
    use tonic_types::StatusExt;
    let info = status
        .get_error_details()
        .error_info()
        .cloned()
        .expect("error info");
    (info.reason, info.metadata)
}

async fn watch_streams_are_capped_per_key_and_per_connection(backend: Backend) {
    let Some((mut app, _)) = spawn_with_events(
        backend,
        simgate::service::events::EventsConfig {
            max_streams_per_key: 2,
            max_streams_per_connection: 3,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let watch = |channel: &tonic::transport::Channel, key: &str| {
        let mut m = monitoring_client(channel, key);
        async move {
            m.watch_events(pb::WatchEventsRequest::default())
                .await
                .map(|r| r.into_inner())
        }
    };
    let first = watch(&app.channel, ADMIN_KEY).await.expect("first");
    let _second = watch(&app.channel, ADMIN_KEY).await.expect("second");
    let err = watch(&app.channel, ADMIN_KEY).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted);
    let (r, meta) = reason(&err);
    assert_eq!(r, "WATCH_STREAMS_LIMITED");
    assert_eq!(meta["limit"], "events.max_streams_per_key");
    // A stream that ends gives its place back.
    drop(first);
    let mut reopened = None;
    for _ in 0..200 {
        match watch(&app.channel, ADMIN_KEY).await {
            Ok(s) => {
                reopened = Some(s);
                break;
            }
            Err(e) => {
                assert_eq!(e.code(), Code::ResourceExhausted);
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
    assert!(reopened.is_some(), "the dropped stream's slot came back");
    // The connection holds two; one more key may open one, the next is over the connection cap.
    let viewer = app
        .access
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::Role::ResellerAdmin as i32,
            name: "second admin".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .key_secret;
    let _third = watch(&app.channel, &viewer)
        .await
        .expect("third on the connection");
    let err = watch(&app.channel, &viewer).await.unwrap_err();
    assert_eq!(reason(&err).1["limit"], "events.max_streams_per_connection");
    // Another connection of the same key is under its own cap.
    let other = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    watch(&other, &viewer).await.expect("another connection");
    let _ = &mut app;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_key_and_per_connection_sqlite() {
    watch_streams_are_capped_per_key_and_per_connection(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_streams_are_capped_per_key_and_per_connection_postgres() {
    watch_streams_are_capped_per_key_and_per_connection(Backend::Postgres).await;
}

/// A watcher that does not read (a small HTTP/2 window, nothing taken off it) while many events
/// are written is ended with its resume cursor instead of being buffered for; resuming from that
/// cursor gives exactly the rest.
async fn a_watcher_that_stops_reading_is_ended_with_its_cursor_and_resumes_exactly(
    backend: Backend,
) {
    const TOTAL: usize = 3000;
    let Some((mut app, metrics)) = spawn_with_events(
        backend,
        simgate::service::events::EventsConfig {
            stream_buffer: 16,
            stall_ms: 100,
            ..Default::default()
        },
    )
    .await
    else {
        return;
    };
    let filter = kinds_filter(&["card.imported"]);
    let slow_channel = tonic::transport::Channel::from_shared(format!("http://{}", app.addr))
        .unwrap()
        .initial_stream_window_size(Some(1024))
        .initial_connection_window_size(Some(1024))
        .connect()
        .await
        .unwrap();
    let mut slow = monitoring_client(&slow_channel, ADMIN_KEY)
        .watch_events(pb::WatchEventsRequest {
            filter: Some(filter.clone()),
            after_cursor: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    for chunk in 0..3 {
        let rows = (0..TOTAL / 3)
            .map(|i| {
                card_input(
                    &mobile_iccid((chunk * TOTAL / 3 + i) as u64 + 1),
                    pb::Carrier::ChinaMobile,
                )
            })
            .collect();
        import(&mut app, rows).await;
    }
    // Wait (for the server, not for a time) until it has given up on the watcher.
    for _ in 0..6000 {
        if metrics.event_stream_count("ended_slow_consumer") == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(metrics.event_stream_count("ended_slow_consumer"), 1);
    let mut got: Vec<pb::Event> = Vec::new();
    let status = loop {
        match tokio::time::timeout(Duration::from_secs(60), slow.next())
            .await
            .expect("the stream answers")
        {
            Some(Ok(e)) => got.push(e),
            Some(Err(s)) => break s,
            None => panic!("the stream ended without saying why after {}", got.len()),
        }
    };
    assert_eq!(status.code(), Code::ResourceExhausted);
    let (r, meta) = reason(&status);
    assert_eq!(r, "WATCH_CONSUMER_TOO_SLOW");
    assert!(
        !got.is_empty() && got.len() < TOTAL,
        "some events, not all: {}",
        got.len()
    );
    let cursor = meta["resume_after_cursor"].clone();
    assert_eq!(
        cursor,
        got.last().unwrap().cursor,
        "the last event delivered"
    );
    let mut rest = monitor(&app)
        .watch_events(pb::WatchEventsRequest {
            filter: Some(filter.clone()),
            after_cursor: cursor,
        })
        .await
        .expect("resume")
        .into_inner();
    while got.len() < TOTAL {
        let e = tokio::time::timeout(Duration::from_secs(60), rest.next())
            .await
            .expect("an event within a minute")
            .expect("stream open")
            .expect("event");
        got.push(e);
    }
    let all = events(&app, filter).await;
    let got_cursors: Vec<&str> = got.iter().map(|e| e.cursor.as_str()).collect();
    let all_cursors: Vec<&str> = all.iter().map(|e| e.cursor.as_str()).collect();
    assert_eq!(got_cursors, all_cursors, "no gap, no duplicate, in order");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_ended_with_its_cursor_and_resumes_exactly_sqlite() {
    a_watcher_that_stops_reading_is_ended_with_its_cursor_and_resumes_exactly(Backend::Sqlite)
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_that_stops_reading_is_ended_with_its_cursor_and_resumes_exactly_postgres() {
    a_watcher_that_stops_reading_is_ended_with_its_cursor_and_resumes_exactly(Backend::Postgres)
        .await;
}
