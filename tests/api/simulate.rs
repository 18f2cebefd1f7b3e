//! `simgate simulate --all` as a process of its own, serving one wire simulator per configured
//! account (two OneLink accounts, a Control Center and a CMP account), and `simgate serve` run
//! against it with `simulation = false`: the real adapters of all three carriers over HTTP, end
//! to end, the way a reseller's integration harness would run them.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use simgate::pb;

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
}
