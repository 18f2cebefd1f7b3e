//! The `simgate card` and `simgate import` client, run as the real binary against a server
//! started by the test; what it prints is checked against what the server then holds.

use std::net::SocketAddr;
use std::process::Output;
use std::sync::Arc;

use simgate::clock::ManualClock;
use simgate::pb;

use crate::helpers::*;

/// A server on a random port and the client side the test checks through.
struct Fixture {
    app: TestApp,
    addr: SocketAddr,
    /// The client's working directory: empty, so no ./bootstrap-key is picked up by accident.
    dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let db = Arc::new(TestDb::new(Backend::Sqlite).expect("sqlite test db"));
    let clock = ManualClock::new(start_time());
    let server = test_server(&db, &clock)
        .build()
        .await
        .expect("build server");
    let app = serve_built(server, db, clock).await;
    Fixture {
        addr: app.addr,
        app,
        dir: tempfile::tempdir().expect("temp dir"),
    }
}

struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    fn ok(&self) -> &Run {
        assert_eq!(
            self.code,
            Some(0),
            "exit {:?}\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

impl Fixture {
    /// Runs `simgate ARGS` with the admin key from the environment, as a person would after
    /// `export SIMGATE_API_KEY=...`.
    async fn simgate(&self, args: &[&str]) -> Run {
        self.simgate_with_key(args, Some(ADMIN_KEY)).await
    }

    /// Runs `simgate ARGS` with `SIMGATE_API_KEY` set to `key`, or unset.
    async fn simgate_with_key(&self, args: &[&str], key: Option<&str>) -> Run {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_simgate"));
        cmd.args(args)
            .arg("--server")
            .arg(format!("http://{}", self.addr))
            .env_remove("SIMGATE_API_KEY")
            .env_remove("SIMGATE_API_KEY_FILE");
        if let Some(k) = key {
            cmd.env("SIMGATE_API_KEY", k);
        }
        let out: Output = cmd
            .env_remove("SIMGATE_SERVER")
            .current_dir(self.dir.path())
            .output()
            .await
            .expect("run simgate");
        let run = Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        assert!(
            !run.stdout.contains(ADMIN_KEY) && !run.stderr.contains(ADMIN_KEY),
            "the API key was printed"
        );
        run
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).expect("write csv");
        path.display().to_string()
    }

    /// Every card the server lists, following the pages.
    async fn all_iccids(&mut self) -> Vec<String> {
        let mut iccids = Vec::new();
        let mut token = String::new();
        loop {
            let page = self
                .app
                .cards
                .list_cards(pb::ListCardsRequest {
                    page_size: 1000,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("list")
                .into_inner();
            iccids.extend(page.cards.into_iter().map(|c| c.iccid));
            if page.next_page_token.is_empty() {
                return iccids;
            }
            token = page.next_page_token;
        }
    }
}

async fn with_card(f: &mut Fixture) -> String {
    import(
        &mut f.app,
        vec![card_input(UNICOM_ICCID, pb::Carrier::ChinaUnicom)],
    )
    .await;
    UNICOM_ICCID.to_string()
}

const HEADER: &str = "iccid,carrier,customer_id,monthly_quota_bytes,monthly_fee_fen,validity_end,auto_suspend_over_quota,real_name\n";

fn csv_of(iccids: &[String]) -> String {
    let mut csv = HEADER.to_string();
    for i in iccids {
        csv.push_str(&format!(
            "{i},unicom,acme,1073741824,1200,2027-06-30,true,verified\n"
        ));
    }
    csv
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_shows_a_table_with_the_iccid_and_status() {
    let mut f = fixture().await;
    let iccid = with_card(&mut f).await;
    let run = f.simgate(&["card", "get", &iccid]).await;
    run.ok();
    assert!(run.stdout.contains(&iccid), "{}", run.stdout);
    assert!(run.stdout.contains("active"), "{}", run.stdout);
    assert!(run.stdout.contains("unicom"), "{}", run.stdout);
    assert!(run.stdout.contains("12.00 yuan"), "{}", run.stdout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_output_is_the_card_in_proto3_json() {
    let mut f = fixture().await;
    let iccid = with_card(&mut f).await;
    f.simgate(&["card", "recharge", &iccid, "--amount-fen", "250"])
        .await
        .ok();
    let run = f
        .simgate(&["card", "get", &iccid, "--output", "json"])
        .await;
    run.ok();
    let v: serde_json::Value = serde_json::from_str(&run.stdout).expect("valid JSON");
    let card = get(&mut f.app, &iccid).await;
    assert_eq!(v["iccid"], iccid.as_str());
    assert_eq!(v["carrier"], "CARRIER_CHINA_UNICOM");
    assert_eq!(v["status"], "CARD_STATUS_ACTIVE");
    assert_eq!(v["customerId"], "acme");
    // 64-bit integers are strings in proto3 JSON.
    assert_eq!(v["balanceFen"], card.balance_fen.to_string());
    assert_eq!(v["version"], card.version.to_string());
    assert_eq!(v["plan"]["monthlyQuotaBytes"], (1u64 << 30).to_string());
    let end = chrono::DateTime::parse_from_rfc3339(
        v["plan"]["validityEnd"]
            .as_str()
            .expect("a timestamp string"),
    )
    .expect("RFC 3339");
    assert_eq!(
        end.timestamp(),
        card.plan.and_then(|p| p.validity_end).expect("end").seconds
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_all_follows_every_page() {
    let mut f = fixture().await;
    let mut iccids: Vec<String> = (0..25).map(unicom_iccid).collect();
    import(
        &mut f.app,
        iccids
            .iter()
            .map(|i| card_input(i, pb::Carrier::ChinaUnicom))
            .collect(),
    )
    .await;
    iccids.sort();

    let run = f
        .simgate(&[
            "card",
            "list",
            "--all",
            "--page-size",
            "10",
            "--output",
            "json",
        ])
        .await;
    run.ok();
    let listed: Vec<String> = run
        .stdout
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("one card per line");
            v["iccid"].as_str().expect("iccid").to_string()
        })
        .collect();
    assert_eq!(listed, iccids);

    let table = f
        .simgate(&["card", "list", "--all", "--page-size", "10"])
        .await;
    table.ok();
    for i in &iccids {
        assert!(table.stdout.contains(i.as_str()), "{i} missing");
    }

    // Without --all: one page, and the way to the next.
    let page = f.simgate(&["card", "list", "--page-size", "10"]).await;
    page.ok();
    assert!(page.stdout.contains(iccids[9].as_str()));
    assert!(!page.stdout.contains(iccids[10].as_str()));
    assert!(page.stderr.contains("--page-token"), "{}", page.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_then_resume_changes_the_status() {
    let mut f = fixture().await;
    let iccid = with_card(&mut f).await;
    let run = f.simgate(&["card", "suspend", &iccid]).await;
    run.ok();
    assert!(run.stdout.contains("suspended"), "{}", run.stdout);
    assert_eq!(
        status_of(&get(&mut f.app, &iccid).await),
        pb::CardStatus::Suspended
    );
    assert_eq!(
        reasons_of(&get(&mut f.app, &iccid).await),
        vec![pb::StopReason::Manual]
    );

    f.simgate(&["card", "resume", &iccid]).await.ok();
    assert_eq!(
        status_of(&get(&mut f.app, &iccid).await),
        pb::CardStatus::Active
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recharge_changes_the_balance_once_per_idempotency_key() {
    let mut f = fixture().await;
    let iccid = with_card(&mut f).await;
    let args = [
        "card",
        "recharge",
        &iccid,
        "--amount-fen",
        "2000",
        "--idempotency-key",
        "pay-1",
    ];
    let run = f.simgate(&args).await;
    run.ok();
    assert!(
        run.stdout.contains("0.00 yuan -> 20.00 yuan"),
        "{}",
        run.stdout
    );
    assert_eq!(get(&mut f.app, &iccid).await.balance_fen, 2000);
    // A person retrying with the same key is answered, not charged twice.
    f.simgate(&args).await.ok();
    assert_eq!(get(&mut f.app, &iccid).await.balance_fen, 2000);
    // Without a key every run is a new recharge.
    f.simgate(&["card", "recharge", &iccid, "--amount-fen", "100"])
        .await
        .ok();
    assert_eq!(get(&mut f.app, &iccid).await.balance_fen, 2100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn diagnose_prints_the_findings_and_steps() {
    let mut f = fixture().await;
    let iccid = with_card(&mut f).await;
    f.simgate(&["card", "suspend", &iccid]).await.ok();
    let run = f.simgate(&["card", "diagnose", &iccid]).await;
    run.ok();
    assert!(run.stdout.contains("blocked-by-account"), "{}", run.stdout);
    assert!(run.stdout.contains("MANUAL_STOP"), "{}", run.stdout);
    assert!(run.stdout.contains("ResumeCard"), "{}", run.stdout);

    let zh = f
        .simgate(&["card", "diagnose", &iccid, "--lang", "zh", "-o", "json"])
        .await;
    zh.ok();
    let v: serde_json::Value = serde_json::from_str(&zh.stdout).expect("valid JSON");
    assert_eq!(v["language"], "zh-CN");
    assert_eq!(v["verdict"], "VERDICT_BLOCKED_BY_ACCOUNT");
    assert_eq!(v["findings"][0]["code"], "MANUAL_STOP");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_name_the_field_and_exit_non_zero() {
    let f = fixture().await;
    let run = f.simgate(&["card", "get", "123"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{}", run.stderr);
    assert!(run.stderr.contains("field iccid"), "{}", run.stderr);
    assert!(run.stdout.is_empty());

    let missing = f.simgate(&["card", "get", UNICOM_ICCID]).await;
    assert_eq!(missing.code, Some(1));
    assert!(missing.stderr.contains("NOT_FOUND"), "{}", missing.stderr);
    assert!(
        missing.stderr.contains("reason: CARD_NOT_FOUND"),
        "{}",
        missing.stderr
    );

    // Usage errors are clap's: exit 2.
    let usage = f.simgate(&["card", "list", "--page-size", "0"]).await;
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
    let usage = f.simgate(&["card", "list", "--carrier", "cmcc"]).await;
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_comes_from_a_file_or_the_bootstrap_key_and_is_never_shown() {
    let f = fixture().await;
    let wrong = "sgk_00000000000000ff_not-the-right-secret-000000";
    let wrong_file = f.write("wrong-key", &format!("{wrong}\n"));
    let run = f
        .simgate_with_key(&["card", "list", "--key-file", &wrong_file], None)
        .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("UNAUTHENTICATED"), "{}", run.stderr);
    assert!(
        !run.stderr.contains("not-the-right-secret"),
        "{}",
        run.stderr
    );

    // No key anywhere: a usage error that says where a key can come from.
    let none = f.simgate_with_key(&["card", "list"], None).await;
    assert_eq!(none.code, Some(2), "{}", none.stderr);
    assert!(none.stderr.contains("--key"), "{}", none.stderr);

    // Where `simgate serve` ran, its ./bootstrap-key is used.
    f.write("bootstrap-key", &format!("{ADMIN_KEY}\n"));
    f.simgate_with_key(&["card", "list"], None).await.ok();
    // --key wins over the file.
    let run = f
        .simgate_with_key(&["card", "list", "--key", wrong], None)
        .await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        !run.stderr.contains("not-the-right-secret"),
        "{}",
        run.stderr
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_of_2500_cards_in_batches_of_1000_is_idempotent() {
    let mut f = fixture().await;
    let mut iccids: Vec<String> = (0..2500).map(unicom_iccid).collect();
    let path = f.write("cards.csv", &csv_of(&iccids));
    iccids.sort();

    let run = f.simgate(&["import", &path, "--batch", "1000"]).await;
    run.ok();
    assert!(
        run.stdout.contains("Imported 2500 of 2500 cards"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("in 3 call(s)"), "{}", run.stdout);
    let mut listed = f.all_iccids().await;
    listed.sort();
    assert_eq!(listed, iccids);

    // The same command again: each call is a repeat of one the server already answered, so it
    // replays that answer and changes nothing.
    let again = f.simgate(&["import", &path, "--batch", "1000"]).await;
    again.ok();
    assert!(
        again.stdout.contains("Imported 2500 of 2500 cards"),
        "{}",
        again.stdout
    );
    assert_eq!(f.all_iccids().await.len(), 2500);
    let history = f
        .app
        .cards
        .list_card_events(pb::ListCardEventsRequest {
            iccid: iccids[1234].clone(),
            ..Default::default()
        })
        .await
        .expect("events")
        .into_inner();
    let kinds: Vec<&str> = history.events.iter().map(|e| e.kind.as_str()).collect();
    assert_eq!(kinds, vec!["card.imported"], "imported once");

    // Other batches are other requests: the server refuses the cards it already has, and the
    // client names the CSV line.
    let other = f.simgate(&["import", &path, "--batch", "700"]).await;
    assert_eq!(other.code, Some(1), "{}", other.stderr);
    assert!(other.stderr.contains("ALREADY_EXISTS"), "{}", other.stderr);
    assert!(
        other.stderr.contains("line 2, column iccid"),
        "{}",
        other.stderr
    );
    assert_eq!(f.all_iccids().await.len(), 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn import_names_the_line_of_a_broken_row_and_imports_nothing() {
    let mut f = fixture().await;
    let iccids: Vec<String> = (0..5).map(unicom_iccid).collect();
    let mut csv = csv_of(&iccids);
    // Line 4 (the header is line 1) gets a quota that is not a number.
    csv = csv.replacen(
        &format!("{},unicom,acme,1073741824", iccids[2]),
        &format!("{},unicom,acme,a-lot", iccids[2]),
        1,
    );
    let path = f.write("broken.csv", &csv);
    let run = f.simgate(&["import", &path]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(
        run.stderr.contains("line 4, column monthly_quota_bytes"),
        "{}",
        run.stderr
    );
    assert!(f.all_iccids().await.is_empty());

    // A row the server refuses (an ICCID of China Mobile's range declared as Unicom) is traced
    // back from cards[i] to its line.
    let mut rows = iccids.clone();
    rows[3] = mobile_iccid(1);
    let path = f.write("refused.csv", &csv_of(&rows));
    let run = f.simgate(&["import", &path, "--batch", "2"]).await;
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("INVALID_ARGUMENT"), "{}", run.stderr);
    assert!(
        run.stderr.contains("line 5, column iccid"),
        "{}",
        run.stderr
    );
    // The first call (lines 2-3) went through; the refused one (lines 4-5) did not.
    assert_eq!(f.all_iccids().await.len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn account_list_and_get_show_each_accounts_platform_and_cards() {
    let mut f = fixture().await;
    with_card(&mut f).await;
    let list = f.simgate(&["account", "list"]).await;
    list.ok();
    for account in ["mobile", "unicom", "telecom"] {
        assert!(list.stdout.contains(account), "{}", list.stdout);
    }
    // Reached by function call, or over Control Center's wire in the HTTP rerun.
    let platform = if std::env::var(TRANSPORT_ENV).as_deref() == Ok("http") {
        "jasper"
    } else {
        "simulated"
    };
    assert!(list.stdout.contains(platform), "{}", list.stdout);
    let json = f
        .simgate(&["account", "get", "unicom", "--output", "json"])
        .await;
    json.ok();
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("JSON");
    assert_eq!(v["accountId"], "unicom");
    assert_eq!(v["platform"], platform);
    // proto3 JSON writes 64-bit counts as strings.
    assert_eq!(v["cards"], "1");
    let missing = f.simgate(&["account", "get", "hb"]).await;
    assert_eq!(missing.code, Some(1), "{}", missing.stderr);
    assert!(missing.stderr.contains("hb"), "{}", missing.stderr);
}
