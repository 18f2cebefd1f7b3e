//! `simgate simulate --all` as a process of its own, and `simgate serve` run against it with
//! `simulation = false`: the real adapters of all three carriers over HTTP, end to end, the way
//! a reseller's integration harness would run them.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use simgate::pb;

use crate::helpers::*;

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

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

/// The simulator's base URL (scheme, host and port) of one carrier, from the written config.
fn controls(config: &toml::Table, carrier: &str) -> String {
    let base = config["carrier_api"][carrier]["base_url"].as_str().unwrap();
    let url = url::Url::parse(base).unwrap();
    format!(
        "http://{}:{}/_simgate",
        url.host_str().unwrap(),
        url.port().unwrap()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_against_the_three_wire_simulators_over_http() {
    let dir = tempfile::tempdir().unwrap();
    let sim_toml = dir.path().join("sim.toml");
    let _sim = Killed(
        Command::new(env!("CARGO_BIN_EXE_simgate"))
            .args([
                "simulate",
                "--all",
                "--listen",
                "127.0.0.1:0",
                "--config-out",
            ])
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

    // The cards exist at their carriers before anyone imports them, as real cards do.
    let http = reqwest::Client::new();
    for (carrier, iccid) in [
        ("mobile", MOBILE_ICCID),
        ("unicom", UNICOM_ICCID),
        ("telecom", TELECOM_ICCID),
    ] {
        let resp = http
            .post(format!("{}/cards", controls(&config, carrier)))
            .json(&serde_json::json!([{ "iccid": iccid }]))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{carrier}: {:?}", resp.text().await);
    }

    let mut serve = ServeProcess::command();
    serve
        .arg("--config")
        .arg(&sim_toml)
        .arg("--database-url")
        .arg(format!("sqlite://{}/simgate.db", dir.path().display()));
    let (_serve, channel) = ServeProcess::up(serve).await;
    let mut cards = cards_client(&channel, ADMIN_KEY);
    cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![
                card_input(MOBILE_ICCID, pb::Carrier::ChinaMobile),
                card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom),
                card_input(TELECOM_ICCID, pb::Carrier::ChinaTelecom),
            ],
            ..Default::default()
        })
        .await
        .expect("import of cards the carriers know");

    // A card no carrier knows is refused at import: the adapter asked the platform.
    let unknown = cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![card_input(&mobile_iccid(4242), pb::Carrier::ChinaMobile)],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(unknown.code(), tonic::Code::Ok);

    for (carrier, iccid) in [
        ("mobile", MOBILE_ICCID),
        ("unicom", UNICOM_ICCID),
        ("telecom", TELECOM_ICCID),
    ] {
        let card = cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.into(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("suspend {carrier}: {e:?}"))
            .into_inner();
        assert_eq!(card.status(), pb::CardStatus::Suspended);
        let at_carrier: serde_json::Value = http
            .get(format!("{}/cards/{iccid}", controls(&config, carrier)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(at_carrier["state"], "STOPPED", "{carrier}: {at_carrier}");
        assert_eq!(at_carrier["changes"], 1, "{carrier}: {at_carrier}");

        // Traffic recorded at the carrier is what simgate reads back over the wire.
        http.post(format!("{}/usage", controls(&config, carrier)))
            .json(&serde_json::json!({ "iccid": iccid, "bytes": 3 << 20 }))
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
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
}
