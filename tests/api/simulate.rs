//! `simgate simulate --all` as a process of its own, serving one wire simulator per configured
//! account (two OneLink accounts, a Control Center and a CMP account), and `simgate serve` run
//! against it with `simulation = false`: the real adapters of all three carriers over HTTP, end
//! to end, the way a reseller's integration harness would run them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::TimeZone;
use simgate::carrier::sim::{SimCarrier, SimFaults};
use simgate::carrier::{Carrier, CarrierError, OnboardCard, OrderProgress, Rebind, ServiceState};
use simgate::clock::{Clock, ManualClock};
use simgate::domain::{CarrierId, CarrierPolicy, Iccid, StopReason};
use simgate::pb;

use crate::both_backends;
use crate::helpers::*;

async fn wait_for(path: &Path) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The harness controls of one account's simulator, from the written config.
fn controls(config: &toml::Table, account: &str) -> String {
    let entry = config["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["id"].as_str() == Some(account))
        .unwrap_or_else(|| panic!("no account {account} in {config:?}"));
    let base = entry["base_url"].as_str().unwrap();
    let url = url::Url::parse(base).unwrap();
    format!(
        "http://{}:{}/_simgate",
        url.host_str().unwrap(),
        url.port().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_against_one_wire_simulator_per_account_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let sim_toml = dir.path().join("sim.toml");
    let accounts = dir.path().join("accounts.toml");
    std::fs::write(
        &accounts,
        // No repeat window: the test suspends and resumes each card in one breath (windows are
        // tested in orders.rs).
        "[[accounts]]\nid = \"gd\"\ncarrier = \"mobile\"\nplatform = \"onelink\"\nrepeat_window_s = 0\n\
         [[accounts]]\nid = \"js\"\ncarrier = \"mobile\"\nplatform = \"onelink\"\nrepeat_window_s = 0\n\
         [[accounts]]\nid = \"cc\"\ncarrier = \"unicom\"\nplatform = \"jasper\"\n\
         [[accounts]]\nid = \"ct\"\ncarrier = \"telecom\"\nplatform = \"cmp\"\n",
    )
    .unwrap();
    let _sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args(["simulate", "--all", "--listen", "127.0.0.1:0", "--config"])
            .arg(&accounts)
            .arg("--config-out")
            .arg(&sim_toml)
            .arg("--database-url")
            .arg(format!("sqlite://{}/sim.db", dir.path().display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start simgate simulate"),
    );
    wait_for(&sim_toml).await;
    let config: toml::Table = std::fs::read_to_string(&sim_toml).unwrap().parse().unwrap();
    assert_eq!(config["simulation"].as_bool(), Some(false));

    let js_iccid = mobile_iccid(7);
    let cards_at = [
        ("gd", MOBILE_ICCID),
        ("js", js_iccid.as_str()),
        ("cc", UNICOM_ICCID),
        ("ct", TELECOM_ICCID),
    ];
    // The cards exist at their accounts before anyone imports them, as real cards do.
    for (carrier, iccid) in cards_at {
        sim_post(
            &format!("{}/cards", controls(&config, carrier)),
            &serde_json::json!([{ "iccid": iccid }]),
        )
        .await;
    }

    let mut serve = ServeProcess::command();
    serve
        .arg("--config")
        .arg(&sim_toml)
        .arg("--database-url")
        .arg(format!("sqlite://{}/simgate.db", dir.path().display()));
    let (_serve, channel) = ServeProcess::up(serve).await;
    let mut cards = cards_client(&channel, ADMIN_KEY);
    let on = |iccid: &str, carrier, account: &str| pb::CardInput {
        account_id: account.into(),
        ..card_input(iccid, carrier)
    };
    // A China Mobile card must name its account: there are two.
    let unnamed = cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unnamed.code(), tonic::Code::InvalidArgument);
    assert!(
        unnamed.message().contains("cards[0].account_id"),
        "{unnamed:?}"
    );
    // A card of one OneLink account is unknown at the other: each account is its own platform.
    let elsewhere = cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![on(MOBILE_ICCID, pb::Carrier::ChinaMobile, "js")],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(elsewhere.code(), tonic::Code::Ok);
    cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![
                on(MOBILE_ICCID, pb::Carrier::ChinaMobile, "gd"),
                on(&js_iccid, pb::Carrier::ChinaMobile, "js"),
                // The carrier's only account is chosen when none is named.
                card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom),
                card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom),
            ],
            ..Default::default()
        })
        .await
        .expect("import of cards the accounts know");
    let telecom = cards
        .get_card(pb::GetCardRequest {
            iccid: TELECOM_ICCID.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(telecom.account_id, "ct");

    for (carrier, iccid) in cards_at {
        let card = cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("suspend {carrier}: {e:?}"))
            .into_inner();
        assert_eq!(card.status(), pb::CardStatus::Suspended);
        let at_carrier = sim_get(&format!("{}/cards/{iccid}", controls(&config, carrier))).await;
        assert_eq!(at_carrier["state"], "STOPPED", "{carrier}: {at_carrier}");
        assert_eq!(at_carrier["changes"], 1, "{carrier}: {at_carrier}");

        // Traffic recorded at the carrier is what simgate reads back over the wire.
        sim_post(
            &format!("{}/usage", controls(&config, carrier)),
            &serde_json::json!({ "iccid": iccid, "bytes": 3 << 20 }),
        )
        .await;
        let usage = cards
            .get_usage(pb::GetUsageRequest {
                iccid: iccid.into(),
            })
            .await
            .unwrap_or_else(|e| panic!("usage {carrier}: {e:?}"))
            .into_inner();
        assert_eq!(usage.used_bytes, 3 << 20, "{carrier}: {usage:?}");

        let card = cards
            .resume_card(pb::ResumeCardRequest {
                iccid: iccid.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("resume {carrier}: {e:?}"))
            .into_inner();
        assert_eq!(card.status(), pb::CardStatus::Active);
    }

    // Each account counts its own calls; gd's show the OneLink paths it called.
    let gd = accounts_client(&channel, ADMIN_KEY)
        .get_carrier_account(pb::GetCarrierAccountRequest {
            account_id: "gd".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((gd.platform.as_str(), gd.cards), ("onelink", 1));
    let budget = gd.budget.unwrap_or_default();
    assert!(
        budget
            .methods
            .iter()
            .any(|m| m.method == "/change/sim-status" && m.calls_last_minute >= 2),
        "{budget:?}"
    );

    // The binding controls, last: this simulator runs on real time, and a daily check (16:00
    // UTC) during the rest of the test must find no card bound elsewhere.
    let gd = controls(&config, "gd");
    sim_post(
        &format!("{gd}/bind"),
        &serde_json::json!({ "iccid": MOBILE_ICCID, "imei": IMEI_A }),
    )
    .await;
    sim_post(
        &format!("{gd}/move"),
        &serde_json::json!({ "iccid": MOBILE_ICCID, "imei": IMEI_B }),
    )
    .await;
    let at_carrier = sim_get(&format!("{gd}/cards/{MOBILE_ICCID}")).await;
    assert_eq!(at_carrier["bound_imei"], IMEI_A, "{at_carrier}");
    assert_eq!(at_carrier["device_imei"], IMEI_B, "{at_carrier}");
    let bad = reqwest::Client::new()
        .post(format!("{gd}/move"))
        .json(&serde_json::json!({ "iccid": MOBILE_ICCID, "imei": "12345" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), reqwest::StatusCode::BAD_REQUEST);
    assert!(bad.text().await.unwrap().contains("imei"));
}

const IMEI_A: &str = "860000000000001";
const IMEI_B: &str = "860000000000002";

fn bind_request(iccid: &str, imei: &str) -> pb::BindCarrierCardRequest {
    pb::BindCarrierCardRequest {
        carrier: pb::Carrier::ChinaMobile as i32,
        iccid: iccid.into(),
        account_id: String::new(),
        imei: imei.into(),
    }
}

fn move_request(iccid: &str, imei: &str) -> pb::MoveCarrierCardRequest {
    pb::MoveCarrierCardRequest {
        carrier: pb::Carrier::ChinaMobile as i32,
        iccid: iccid.into(),
        account_id: String::new(),
        imei: imei.into(),
    }
}

async fn carrier_card(app: &mut TestApp, iccid: &str) -> pb::CarrierCard {
    app.sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            iccid: iccid.into(),
            account_id: String::new(),
        })
        .await
        .expect("carrier card")
        .into_inner()
}

async fn advance(app: &mut TestApp, by: chrono::Duration) {
    app.sim
        .advance_clock(pb::AdvanceClockRequest {
            by: Some(prost_types::Duration {
                seconds: by.num_seconds(),
                nanos: 0,
            }),
        })
        .await
        .expect("advance clock");
}

// A bound card moved to another device is stopped by the carrier at its daily check (00:00
// Beijing time, 16:00 UTC on the card clock) and not before; the stop is the carrier's, not a
// change simgate sent.
both_backends!(
    a_bound_card_in_another_device_is_stopped_at_the_daily_check,
    |mut app: TestApp| async move {
        import(
            &mut app,
            vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
        )
        .await;
        let bound = app
            .sim
            .bind_carrier_card(bind_request(MOBILE_ICCID, IMEI_A))
            .await
            .expect("bind")
            .into_inner();
        assert_eq!(
            (bound.bound_imei.as_str(), bound.device_imei.as_str()),
            (IMEI_A, IMEI_A)
        );
        let moved = app
            .sim
            .move_carrier_card(move_request(MOBILE_ICCID, IMEI_B))
            .await
            .expect("move")
            .into_inner();
        assert_eq!(
            (moved.bound_imei.as_str(), moved.device_imei.as_str()),
            (IMEI_A, IMEI_B)
        );
        assert!(!moved.device_stopped);
        // The test starts at 02:00 UTC: one minute before the check, still active.
        advance(
            &mut app,
            chrono::Duration::hours(13) + chrono::Duration::minutes(59),
        )
        .await;
        let before = carrier_card(&mut app, MOBILE_ICCID).await;
        assert_eq!(before.state(), pb::CarrierServiceState::Active);
        assert!(!before.device_stopped);
        advance(&mut app, chrono::Duration::minutes(1)).await;
        let after = carrier_card(&mut app, MOBILE_ICCID).await;
        assert_eq!(after.state(), pb::CarrierServiceState::Stopped);
        assert!(after.device_stopped);
        assert_eq!(after.changes, 0, "{after:?}");
        assert_eq!(after.device_imei, IMEI_B);
    }
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binding_controls_check_the_imei_and_the_card() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    import(
        &mut app,
        vec![card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile)],
    )
    .await;
    for imei in ["", "12345678901234", "1234567890123456", "86000000000000x"] {
        let e = app
            .sim
            .bind_carrier_card(bind_request(MOBILE_ICCID, imei))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{imei:?}: {e:?}");
        assert_eq!(details(&e).1, vec!["imei".to_string()], "{imei:?}: {e:?}");
        let e = app
            .sim
            .move_carrier_card(move_request(MOBILE_ICCID, imei))
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{imei:?}: {e:?}");
        assert_eq!(details(&e).1, vec!["imei".to_string()], "{imei:?}: {e:?}");
    }
    let unknown = mobile_iccid(99);
    let e = app
        .sim
        .bind_carrier_card(bind_request(&unknown, IMEI_A))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = app
        .sim
        .move_carrier_card(move_request(&unknown, IMEI_A))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    let e = app
        .sim
        .move_carrier_card(move_request("not-an-iccid", IMEI_A))
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument, "{e:?}");
    assert_eq!(details(&e).1, vec!["iccid".to_string()]);
    // Nothing was bound by the refused calls.
    let card = carrier_card(&mut app, MOBILE_ICCID).await;
    assert_eq!(
        (card.bound_imei.as_str(), card.device_imei.as_str()),
        ("", "")
    );
}

/// A simulated carrier straight on a test database, on a clock of its own (02:00 UTC).
fn sim_on(store: &simgate::store::Store, clock: &ManualClock, settings: SimFaults) -> SimCarrier {
    let sim = SimCarrier::new(
        CarrierPolicy::default_for(CarrierId::Mobile),
        store.clone(),
        Arc::new(clock.clone()),
    );
    sim.set_faults(settings);
    sim
}

/// The repeat window, an order across a restart and the rebind route out of a separation stop,
/// on one store: what the simulator keeps in the database, on each backend.
async fn orders_windows_and_binding_are_kept_in_the_database(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let store = db.store().await;
    let clock = ManualClock::new(chrono::Utc.with_ymd_and_hms(2026, 11, 25, 2, 0, 0).unwrap());
    let settings = SimFaults {
        repeat_window_s: Some(1800),
        orders: true,
        order_delay_s: 60,
        ..SimFaults::default()
    };
    let sim = sim_on(&store, &clock, settings);
    let iccid = Iccid::parse_any(MOBILE_ICCID).unwrap();
    sim.onboard(&[OnboardCard {
        iccid: iccid.clone(),
        state: ServiceState::Active,
        cycle_usage_bytes: 0,
        msisdn: None,
    }])
    .await
    .unwrap();
    let order = sim.stop(&iccid).await.unwrap();
    assert!(order.in_progress, "{order:?}");
    let num = order.order_id.unwrap();
    assert!(matches!(
        sim.restore(&iccid).await,
        Err(CarrierError::Deferred { code, retry_after: Some(d), .. })
            if code == "SIM_REPEAT_WINDOW" && d == Duration::from_secs(1800)
    ));
    // A new simulator on the same database: the order and its window are still there.
    drop(sim);
    let sim = sim_on(&store, &clock, settings);
    assert_eq!(
        sim.order(&iccid, &num).await.unwrap(),
        OrderProgress::Open("inProgress".into())
    );
    clock.advance(chrono::Duration::seconds(60)).unwrap();
    assert_eq!(
        sim.inspect(&iccid).await.unwrap().state,
        ServiceState::Stopped
    );
    assert_eq!(
        sim.order(&iccid, &num).await.unwrap(),
        OrderProgress::Completed
    );
    assert!(matches!(
        sim.restore(&iccid).await,
        Err(CarrierError::Deferred { .. })
    ));
    clock.advance(chrono::Duration::minutes(29)).unwrap();
    let restore = sim.restore(&iccid).await.unwrap();
    assert_ne!(restore.order_id.as_deref(), Some(num.as_str()));
    clock.advance(chrono::Duration::seconds(60)).unwrap();
    assert_eq!(
        sim.inspect(&iccid).await.unwrap().state,
        ServiceState::Active
    );

    // Bound to A, moved to B: stopped at 16:00 UTC, restore refused, a rebind lifts it a day on.
    sim.bind(&iccid, IMEI_A).await.unwrap();
    sim.move_to_device(&iccid, IMEI_B).await.unwrap();
    clock
        .set(
            chrono::Utc
                .with_ymd_and_hms(2026, 11, 25, 16, 0, 0)
                .unwrap(),
        )
        .unwrap();
    let stopped = sim.inspect(&iccid).await.unwrap();
    assert_eq!((stopped.state, stopped.changes), (ServiceState::Stopped, 2));
    assert_eq!(
        sim.stop_reasons(&iccid)
            .await
            .unwrap()
            .unwrap()
            .iter()
            .collect::<Vec<_>>(),
        vec![StopReason::DeviceMismatch]
    );
    assert!(matches!(
        sim.restore(&iccid).await,
        Err(CarrierError::Rejected { code, .. }) if code == "SIM_DEVICE_MISMATCH"
    ));
    sim.rebind(&iccid, &Rebind::CurrentDevice).await.unwrap();
    clock.advance(chrono::Duration::minutes(2)).unwrap();
    assert_eq!(
        sim.binding_of(&iccid).await.unwrap().bound_imei.as_deref(),
        Some(IMEI_B)
    );
    assert!(sim.binding_of(&iccid).await.unwrap().device_stopped);
    clock.advance(chrono::Duration::days(1)).unwrap();
    let lifted = sim.inspect(&iccid).await.unwrap();
    assert_eq!((lifted.state, lifted.changes), (ServiceState::Active, 2));
    assert!(!sim.binding_of(&iccid).await.unwrap().device_stopped);
}

#[tokio::test]
async fn orders_windows_and_binding_are_kept_in_the_database_sqlite() {
    orders_windows_and_binding_are_kept_in_the_database(Backend::Sqlite).await;
}

#[tokio::test]
async fn orders_windows_and_binding_are_kept_in_the_database_postgres() {
    orders_windows_and_binding_are_kept_in_the_database(Backend::Postgres).await;
}
