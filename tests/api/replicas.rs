//! Several `simgate serve` replicas on one PostgreSQL: each carrier account's limits hold for
//! all of them together (shared rate schedules and calls-in-flight slots in the database),
//! batches are carried out once by whichever replicas are alive, WatchEvents on any replica
//! delivers every replica's events in order, and replicas refuse to run with account settings
//! other than those recorded. Structure, not wall-clock figures: the throughput against the
//! limit is measured by `simgate-bench replicas`.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use simgate::carrier::budget::Budget;
use simgate::pb;
use tokio_stream::StreamExt;

use crate::helpers::*;

/// Calls per whole second (Unix seconds), the first second of the run left out (it may hold
/// the start of the schedule).
fn per_second(received_ms: &[i64], from_ms: i64) -> BTreeMap<i64, usize> {
    let mut out = BTreeMap::new();
    for &t in received_ms.iter().filter(|&&t| t >= from_ms) {
        *out.entry(t.div_euclid(1000)).or_insert(0) += 1;
    }
    let first = out.keys().next().copied();
    if let Some(first) = first {
        out.remove(&first);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_budgets_and_slots_pace_every_replica_together_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    // Two processes' stores on one database, each with the account's budget of 20 calls/s.
    let stores = [db.store().await, db.store().await];
    let budgets: Vec<std::sync::Arc<Budget>> = stores
        .iter()
        .map(|s| std::sync::Arc::new(Budget::shared(20, 0, s.clone(), "cc")))
        .collect();
    let start = Instant::now();
    let calls = futures::future::join_all((0..40).map(|i| {
        let b = budgets[i % 2].clone();
        async move {
            b.spend("PUT devices/{iccid}").await;
            start.elapsed()
        }
    }))
    .await;
    let mut at: Vec<Duration> = calls;
    at.sort();
    // However the calls were spread over the two, no second holds more than 20 of them.
    for (i, t) in at.iter().enumerate() {
        let within = at[i..]
            .iter()
            .take_while(|u| **u < *t + Duration::from_secs(1))
            .count();
        assert!(
            within <= 20,
            "{within} calls in the second from {t:?}: {at:?}"
        );
    }
    // Forty calls at most 20 a second cannot all be done within the first 1.9 s.
    assert!(at[39] >= Duration::from_millis(1_900), "{at:?}");

    // Calls in flight: two slots for the account across the replicas.
    let s = &stores[0];
    s.ensure_slots("cc", 2).await.unwrap();
    let hold = Duration::from_secs(60);
    let a = s
        .take_slot("cc", "replica-a", hold)
        .await
        .unwrap()
        .expect("a slot");
    let b = stores[1]
        .take_slot("cc", "replica-b", hold)
        .await
        .unwrap()
        .expect("a slot");
    assert_ne!(a, b);
    assert!(
        s.take_slot("cc", "replica-c", hold)
            .await
            .unwrap()
            .is_none(),
        "a third in flight"
    );
    s.release_slot("cc", a, "replica-a").await.unwrap();
    assert!(s
        .take_slot("cc", "replica-c", hold)
        .await
        .unwrap()
        .is_some());
    // A replica that died: its hold runs out and the slot is free again.
    s.ensure_slots("cc", 3).await.unwrap();
    let dead = s
        .take_slot("cc", "replica-dead", Duration::from_millis(1))
        .await
        .unwrap()
        .expect("the third slot");
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        s.take_slot("cc", "replica-d", hold).await.unwrap(),
        Some(dead)
    );
    // A lowered limit drops the slots above it.
    s.ensure_slots("cc", 1).await.unwrap();
    assert!(s
        .take_slot("cc", "replica-e", hold)
        .await
        .unwrap()
        .is_none());
}

/// A replica started with other settings for an account than the running ones refuses to
/// start, naming the account and the setting; started to replace them, it does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replica_with_other_account_settings_refuses_to_start_postgres() {
    let Some(db) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let clock = simgate::clock::ManualClock::new(start_time());
    let limits = |rps| simgate::carrier::guard::CarrierLimits {
        requests_per_second: rps,
        ..Default::default()
    };
    let first = test_server(&db, &clock)
        .carrier_limits(simgate::domain::CarrierId::Unicom, limits(20))
        .build()
        .await
        .expect("the first replica");
    drop(first);
    let err = test_server(&db, &clock)
        .carrier_limits(simgate::domain::CarrierId::Unicom, limits(30))
        .build()
        .await
        .err()
        .expect("other settings refused");
    let text = err.to_string();
    assert!(
        text.contains("account unicom") && text.contains("requests_per_second"),
        "{text}"
    );
    test_server(&db, &clock)
        .carrier_limits(simgate::domain::CarrierId::Unicom, limits(30))
        .replace_account_settings(true)
        .build()
        .await
        .expect("replacing the recorded settings");
    test_server(&db, &clock)
        .carrier_limits(simgate::domain::CarrierId::Unicom, limits(30))
        .build()
        .await
        .expect("the new settings are the recorded ones");
}

/// The written `[[accounts]]` entry of `simgate simulate`, with `rps` as its limit.
fn limited(sim_toml: &str, rps: u32) -> String {
    let mut config: toml::Table = sim_toml.parse().expect("simulate's config");
    if let Some(toml::Value::Array(accounts)) = config.get_mut("accounts") {
        for a in accounts.iter_mut() {
            if let toml::Value::Table(t) = a {
                t.insert(
                    "requests_per_second".into(),
                    toml::Value::Integer(rps.into()),
                );
            }
        }
    }
    toml::to_string(&config).expect("config")
}

fn controls(config: &str) -> String {
    let config: toml::Table = config.parse().expect("config");
    let base = config["accounts"][0]["base_url"]
        .as_str()
        .expect("base_url");
    let url = url::Url::parse(base).expect("url");
    format!(
        "http://{}:{}/_simgate",
        url.host_str().unwrap_or(""),
        url.port().unwrap_or(0)
    )
}

/// Three replicas against one Control Center account (limit 20 calls/s, one call at a time):
/// a batch submitted through the first, watched on the second, followed on the third; the
/// first is killed (SIGKILL) a third of the way through. The simulator's record of every call
/// it received: no whole second over the limit, every card changed exactly once, and the
/// watcher got every card's event once, in cursor order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_an_accounts_limit_carry_a_batch_out_once_and_survive_a_kill_postgres() {
    let Some(pg) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let n = drill_size(100, 2_000);
    let db = OwnDatabase::create(&pg.url).await;
    let dir = tempfile::tempdir().unwrap();
    let sim_toml = dir.path().join("sim.toml");
    let mut simulate = std::process::Command::new(env!("CARGO_BIN_EXE_simgate"));
    simulate
        .args([
            "simulate",
            "--carrier",
            "unicom",
            "--listen",
            "127.0.0.1:0",
            "--config-out",
        ])
        .arg(&sim_toml)
        .arg("--database-url")
        .arg(format!("sqlite://{}/sim.db", dir.path().display()))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let _simulate = Killed(simulate.spawn().expect("simgate simulate"));
    let deadline = Instant::now() + Duration::from_secs(60);
    while !sim_toml.exists() {
        assert!(
            Instant::now() < deadline,
            "simgate simulate wrote no config"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let written = std::fs::read_to_string(&sim_toml).unwrap();
    let ctl = controls(&written);
    let iccids: Vec<String> = (0..n).map(unicom_iccid).collect();
    let cards: Vec<serde_json::Value> = iccids
        .iter()
        .map(|i| serde_json::json!({ "iccid": i }))
        .collect();
    sim_post(&format!("{ctl}/cards"), &serde_json::Value::Array(cards)).await;

    // The cards are imported by one replica without a limit (onboarding asks the platform for
    // every card); the limited replicas then replace the recorded settings.
    let open = dir.path().join("open.toml");
    std::fs::write(&open, &written).unwrap();
    let key = [
        ("SIMGATE_DATA_KEY", TEST_DATA_KEY),
        ("SIMGATE_JOURNAL__LEASE_MS", "1500"),
    ];
    let start = |config: &std::path::Path, replace: bool| {
        let mut cmd = ServeProcess::command();
        cmd.arg("--config")
            .arg(config)
            .args(["--database-url", &db.url])
            .envs(key.iter().copied());
        if replace {
            cmd.env("SIMGATE_REPLACE_ACCOUNT_SETTINGS", "true");
        }
        ServeProcess::up(cmd)
    };
    {
        let (_importer, ch) = start(&open, false).await;
        for chunk in iccids.chunks(1_000) {
            cards_client(&ch, ADMIN_KEY)
                .import_cards(pb::ImportCardsRequest {
                    cards: chunk
                        .iter()
                        .map(|i| card_input(i, pb::Carrier::ChinaUnicom))
                        .collect(),
                    ..Default::default()
                })
                .await
                .expect("import");
        }
    }
    let limited_toml = dir.path().join("limited.toml");
    std::fs::write(&limited_toml, limited(&written, 20)).unwrap();
    let (mut first, ch1) = start(&limited_toml, true).await;
    let (_second, ch2) = start(&limited_toml, false).await;
    let (_third, ch3) = start(&limited_toml, false).await;

    let mut watch = monitoring_client(&ch2, ADMIN_KEY)
        .watch_events(pb::WatchEventsRequest {
            filter: Some(pb::EventFilter {
                kinds: vec!["card.suspended".into()],
                ..Default::default()
            }),
            after_cursor: String::new(),
        })
        .await
        .expect("watch")
        .into_inner();
    let batch_started = chrono::Utc::now().timestamp_millis();
    let op = operations_client(&ch1, ADMIN_KEY)
        .batch_suspend(pb::BatchSuspendRequest {
            iccids: iccids.clone(),
            request_id: "replicas-1".into(),
        })
        .await
        .expect("batch")
        .into_inner()
        .id;
    let mut seen: Vec<pb::Event> = Vec::new();
    let mut killed = false;
    while seen.len() < n as usize {
        let e = tokio::time::timeout(Duration::from_secs(120), watch.next())
            .await
            .expect("events keep coming")
            .expect("the stream stays open")
            .expect("an event");
        seen.push(e);
        if !killed && seen.len() >= n as usize / 3 {
            first.kill();
            killed = true;
        }
    }
    // The third replica reports the batch done.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let o = operation(&ch3, &op).await;
        if o.state() == pb::OperationState::Done {
            assert_eq!((o.done, o.failed), (n, 0), "{o:?}");
            break;
        }
        assert!(Instant::now() < deadline, "batch not done: {o:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // Every card's event once, in cursor order (a cursor is opaque to clients; here it is
    // read as the event's position, `ev:<n>` in unpadded URL-safe base64, to check the order).
    let position = |e: &pb::Event| -> u64 {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(&e.cursor)
            .expect("a base64 cursor");
        String::from_utf8_lossy(&raw)
            .trim_start_matches("ev:")
            .parse()
            .expect("a position")
    };
    let mut by_card = std::collections::HashSet::new();
    for pair in seen.windows(2) {
        assert!(
            position(&pair[0]) < position(&pair[1]),
            "out of order: {pair:?}"
        );
    }
    for e in &seen {
        assert!(by_card.insert(e.iccid.clone()), "{} twice", e.iccid);
    }
    // Every card changed exactly once at the carrier.
    for iccid in &iccids {
        let c = sim_get(&format!("{ctl}/cards/{iccid}")).await;
        assert_eq!(
            (c["state"].as_str(), c["changes"].as_u64()),
            (Some("STOPPED"), Some(1)),
            "{iccid}"
        );
    }
    // The carrier never received more than the account's limit in a whole second.
    let calls = sim_get(&format!("{ctl}/calls")).await;
    let received: Vec<i64> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|c| c["at_ms"].as_i64())
        .collect();
    let seconds = per_second(&received, batch_started);
    assert!(!seconds.is_empty());
    // The rate achieved, for the closing note and README (a figure, not an assertion).
    let mut during: Vec<i64> = received
        .iter()
        .copied()
        .filter(|&t| t >= batch_started)
        .collect();
    during.sort_unstable();
    if let (Some(first), Some(last)) = (during.first(), during.last()) {
        let rate = (during.len() - 1) as f64 * 1000.0 / ((last - first).max(1) as f64);
        let mut by_method = BTreeMap::new();
        for c in calls["calls"].as_array().unwrap() {
            if c["at_ms"].as_i64().is_some_and(|t| t >= batch_started) {
                *by_method
                    .entry(c["method"].as_str().unwrap_or("?").to_string())
                    .or_insert(0) += 1;
            }
        }
        eprintln!(
            "replicas drill: {} carrier calls ({by_method:?}) in {:.1} s = {rate:.2} calls/s = \
             {:.3} of the limit",
            during.len(),
            (last - first) as f64 / 1000.0,
            rate / 20.0
        );
    }
    for (second, count) in &seconds {
        assert!(
            *count <= 20,
            "{count} calls in second {second}: {seconds:?}"
        );
    }
}

/// Four replicas started at the same moment on an empty database, with no bootstrap key given,
/// all come up: migrations, the generated bootstrap key (made by exactly one of them), the
/// recorded account settings and the carrier slots are race-free. Then four more at once on
/// the database as it is now: all come up and make no second key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_started_at_the_same_moment_all_come_up_postgres() {
    let Some(pg) = TestDb::new(Backend::Postgres) else {
        return;
    };
    let db = OwnDatabase::create(&pg.url).await;
    let dirs: Vec<tempfile::TempDir> = (0..8).map(|_| tempfile::tempdir().unwrap()).collect();
    let start = |dir: &tempfile::TempDir| {
        let mut cmd = ServeProcess::command();
        cmd.env_remove("SIMGATE_BOOTSTRAP_KEY")
            .args(["--database-url", &db.url])
            .env("SIMGATE_DATA_KEY", TEST_DATA_KEY)
            .env("SIMGATE_DATA_DIR", dir.path());
        ServeProcess::up(cmd)
    };
    let key_files = |dirs: &[tempfile::TempDir]| {
        dirs.iter()
            .filter(|d| d.path().join("bootstrap-key").exists())
            .count()
    };
    let keys = || async {
        let pool = sqlx::PgPool::connect(&db.url).await.unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM api_keys")
            .fetch_one(&pool)
            .await
            .unwrap();
        pool.close().await;
        n
    };

    let first = futures::future::join_all(dirs[..4].iter().map(start)).await;
    assert_eq!(first.len(), 4);
    assert_eq!(keys().await, 1, "one generated bootstrap key");
    assert_eq!(
        key_files(&dirs[..4]),
        1,
        "written by the replica that made it"
    );
    drop(first);

    let again = futures::future::join_all(dirs[4..].iter().map(start)).await;
    assert_eq!(again.len(), 4);
    assert_eq!(keys().await, 1, "no second key on an existing database");
    assert_eq!(key_files(&dirs[4..]), 0);
}
