//! Carrier accounts end to end: a reseller with two China Mobile OneLink accounts, a China
//! Unicom Control Center account and a China Telecom CMP account, every one simulated behind
//! its real adapter and wire simulator over loopback HTTP. Cards are imported onto accounts,
//! changed, synced and listed by account; one account failing leaves the others working; the
//! accounts RPCs show each account's platform, health, budget use, open intents and cards.

use simgate::pb;

use crate::helpers::*;

/// Two OneLink accounts (one with a per-method limit, one whose circuit opens after two
/// failures), Control Center (one call at a time by default) and CMP.
const ACCOUNTS: &str = r#"
[[accounts]]
id = "gd"
carrier = "mobile"
platform = "onelink"
breaker_failures = 2
breaker_open_ms = 600000

[[accounts]]
id = "js"
carrier = "mobile"
platform = "onelink"
method_requests_per_second = 50

[[accounts]]
id = "cc"
carrier = "unicom"
platform = "jasper"

[[accounts]]
id = "ct"
carrier = "telecom"
platform = "cmp"
"#;

async fn spawn_accounts(backend: Backend) -> Option<TestApp> {
    let db = std::sync::Arc::new(TestDb::new(backend)?);
    let clock = simgate::clock::ManualClock::new(start_time());
    let entries =
        simgate::carrier::account::entries_from_toml(ACCOUNTS).expect("the accounts parse");
    let app = test_server(&db, &clock)
        .accounts(entries)
        .build()
        .await
        .expect("build server");
    Some(serve_built(app, db, clock).await)
}

fn on(iccid: &str, carrier: pb::Carrier, account: &str) -> pb::CardInput {
    pb::CardInput {
        account_id: account.into(),
        ..card_input(iccid, carrier)
    }
}

async fn account(app: &TestApp, id: &str) -> pb::CarrierAccount {
    accounts_client(&app.channel, ADMIN_KEY)
        .get_carrier_account(pb::GetCarrierAccountRequest {
            account_id: id.into(),
        })
        .await
        .unwrap_or_else(|e| panic!("GetCarrierAccount {id}: {e:?}"))
        .into_inner()
}

/// Imports one card per account: gd, js (China Mobile, named), cc and ct (the carrier's only
/// account, not named).
async fn import_one_each(app: &mut TestApp) -> [String; 4] {
    let cards = [
        mobile_iccid(1),
        mobile_iccid(2),
        unicom_iccid(1),
        telecom_iccid(1),
    ];
    app.cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![
                on(&cards[0], pb::Carrier::ChinaMobile, "gd"),
                on(&cards[1], pb::Carrier::ChinaMobile, "js"),
                card_input(&cards[2], pb::Carrier::ChinaUnicom),
                card_input(&cards[3], pb::Carrier::ChinaTelecom),
            ],
            ..Default::default()
        })
        .await
        .expect("import onto the accounts");
    cards
}

async fn cards_go_through_their_own_account(mut app: TestApp) {
    // With two China Mobile accounts, a card must name one, and only a configured account of
    // the card's own carrier is taken; nothing is stored when a row is refused.
    for (account, why) in [
        ("", "several accounts"),
        ("cc", "not China Mobile"),
        ("hb", "no carrier account"),
    ] {
        let err = app
            .cards
            .import_cards(pb::ImportCardsRequest {
                cards: vec![on(&mobile_iccid(9), pb::Carrier::ChinaMobile, account)],
                ..Default::default()
            })
            .await
            .expect_err(why);
        assert_eq!(
            err.code(),
            tonic::Code::InvalidArgument,
            "{account}: {err:?}"
        );
        assert!(
            err.message().contains("cards[0].account_id"),
            "{account}: {err:?}"
        );
    }
    let bad = app
        .cards
        .import_cards(pb::ImportCardsRequest {
            cards: vec![on(&mobile_iccid(9), pb::Carrier::ChinaMobile, "GD!")],
            ..Default::default()
        })
        .await
        .expect_err("a malformed account id");
    assert!(bad.message().contains("cards[0].account_id"), "{bad:?}");
    assert_eq!(app.store.count_cards().await.unwrap(), 0);

    let cards = import_one_each(&mut app).await;
    for (iccid, account) in cards.iter().zip(["gd", "js", "cc", "ct"]) {
        let card = app
            .cards
            .get_card(pb::GetCardRequest {
                iccid: iccid.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(card.account_id, account);
        // A change reaches the card's own account and no other.
        app.cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("suspend on {account}: {e:?}"));
        let at = app
            .sim
            .get_carrier_card(pb::GetCarrierCardRequest {
                account_id: account.into(),
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(
            (at.state(), at.changes),
            (pb::CarrierServiceState::Stopped, 1)
        );
        assert_eq!(at.account_id, account);
    }
    // The other OneLink account never heard of gd's card.
    let elsewhere = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            account_id: "js".into(),
            iccid: cards[0].clone(),
            ..Default::default()
        })
        .await
        .expect_err("gd's card at js");
    assert_eq!(elsewhere.code(), tonic::Code::NotFound);
    // Naming the carrier alone is ambiguous for China Mobile, and fine for China Unicom.
    let ambiguous = app
        .sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
            iccid: cards[0].clone(),
            ..Default::default()
        })
        .await
        .expect_err("China Mobile alone");
    assert_eq!(ambiguous.code(), tonic::Code::InvalidArgument);
    assert!(ambiguous.message().contains("account_id"), "{ambiguous:?}");
    app.sim
        .get_carrier_card(pb::GetCarrierCardRequest {
            carrier: pb::Carrier::ChinaUnicom as i32,
            iccid: cards[2].clone(),
            ..Default::default()
        })
        .await
        .expect("China Unicom has one account");

    // Traffic at each OneLink account is read back by the usage sync, account by account.
    for (iccid, account, bytes) in [(&cards[0], "gd", 5u64 << 20), (&cards[1], "js", 7 << 20)] {
        app.sim
            .record_usage(pb::RecordUsageRequest {
                account_id: account.into(),
                iccid: iccid.clone(),
                bytes,
                ..Default::default()
            })
            .await
            .unwrap();
    }
    let stats = app.service.sync_all_usage().await.expect("sync");
    assert_eq!(stats.read, 4, "{stats:?}");
    for (iccid, bytes) in [(&cards[0], 5u64 << 20), (&cards[1], 7 << 20)] {
        let usage = app
            .cards
            .get_usage(pb::GetUsageRequest {
                iccid: iccid.clone(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(usage.used_bytes, bytes);
    }

    // ListCards by account, also next to other filters.
    let listed = |account: &str| pb::ListCardsRequest {
        account_id: account.into(),
        ..Default::default()
    };
    let js = app
        .cards
        .list_cards(listed("js"))
        .await
        .unwrap()
        .into_inner()
        .cards;
    assert_eq!(
        js.iter().map(|c| c.iccid.as_str()).collect::<Vec<_>>(),
        [cards[1].as_str()]
    );
    let none = app
        .cards
        .list_cards(pb::ListCardsRequest {
            carrier: pb::Carrier::ChinaUnicom as i32,
            ..listed("gd")
        })
        .await
        .unwrap()
        .into_inner()
        .cards;
    assert!(none.is_empty());
    let err = app
        .cards
        .list_cards(listed("G D"))
        .await
        .expect_err("bad account id");
    assert!(err.message().contains("account_id"), "{err:?}");

    // The accounts as they run.
    let list = accounts_client(&app.channel, ADMIN_KEY)
        .list_carrier_accounts(pb::ListCarrierAccountsRequest::default())
        .await
        .unwrap()
        .into_inner()
        .accounts;
    let shown: Vec<(&str, &str, u64)> = list
        .iter()
        .map(|a| (a.account_id.as_str(), a.platform.as_str(), a.cards))
        .collect();
    assert_eq!(
        shown,
        [
            ("cc", "jasper", 1),
            ("ct", "cmp", 1),
            ("gd", "onelink", 1),
            ("js", "onelink", 1)
        ]
    );
    let mobile = accounts_client(&app.channel, ADMIN_KEY)
        .list_carrier_accounts(pb::ListCarrierAccountsRequest {
            carrier: pb::Carrier::ChinaMobile as i32,
        })
        .await
        .unwrap()
        .into_inner()
        .accounts;
    assert_eq!(mobile.len(), 2);
    let js = account(&app, "js").await;
    let budget = js.budget.unwrap_or_default();
    assert_eq!(budget.method_requests_per_second, 50);
    // OneLink calls are counted per upstream path: the stop went to /change/sim-status.
    let stop_calls = budget
        .methods
        .iter()
        .find(|m| m.method == "/change/sim-status")
        .map(|m| m.calls_last_minute);
    assert_eq!(stop_calls, Some(1), "{budget:?}");
    assert!(budget.calls_last_minute >= budget.methods.len() as u64);
    // Control Center's fair use: one call at a time unless configured otherwise.
    assert_eq!(
        account(&app, "cc")
            .await
            .budget
            .unwrap_or_default()
            .max_concurrency,
        1
    );
    let missing = accounts_client(&app.channel, ADMIN_KEY)
        .get_carrier_account(pb::GetCarrierAccountRequest {
            account_id: "hb".into(),
        })
        .await
        .expect_err("not configured");
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_go_through_their_own_account_sqlite() {
    if let Some(app) = spawn_accounts(Backend::Sqlite).await {
        cards_go_through_their_own_account(app).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cards_go_through_their_own_account_postgres() {
    if let Some(app) = spawn_accounts(Backend::Postgres).await {
        cards_go_through_their_own_account(app).await;
    }
}

/// One OneLink account down: its cards' changes fail fast once its circuit opens, which its
/// health shows; the other OneLink account and the other carriers go on as if nothing happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_account_down_leaves_the_other_accounts_working() {
    let Some(mut app) = spawn_accounts(Backend::Sqlite).await else {
        return;
    };
    let cards = import_one_each(&mut app).await;
    app.sim
        .set_faults(pb::SetFaultsRequest {
            account_id: "gd".into(),
            down: true,
            ..Default::default()
        })
        .await
        .unwrap();
    for _ in 0..2 {
        let err = app
            .cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: cards[0].clone(),
                ..Default::default()
            })
            .await
            .expect_err("gd is down");
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");
    }
    let gd = account(&app, "gd").await;
    let health = gd.health.unwrap_or_default();
    assert_eq!(health.breaker(), pb::BreakerState::Open, "{health:?}");
    assert!(
        !health.last_error.is_empty() && health.last_error_at.is_some(),
        "{health:?}"
    );
    // Fails fast now, without reaching the platform.
    let fast = app
        .cards
        .suspend_card(pb::SuspendCardRequest {
            iccid: cards[0].clone(),
            ..Default::default()
        })
        .await
        .expect_err("circuit open");
    assert_eq!(fast.code(), tonic::Code::Unavailable);
    for iccid in &cards[1..] {
        app.cards
            .suspend_card(pb::SuspendCardRequest {
                iccid: iccid.clone(),
                ..Default::default()
            })
            .await
            .unwrap_or_else(|e| panic!("{iccid} on a healthy account: {e:?}"));
    }
    let js = account(&app, "js").await.health.unwrap_or_default();
    assert_eq!(js.breaker(), pb::BreakerState::Closed);
    assert_eq!(js.consecutive_failures, 0);
    let card = app
        .cards
        .get_card(pb::GetCardRequest {
            iccid: cards[0].clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        card.status(),
        pb::CardStatus::Active,
        "nothing changed on gd's card"
    );
}

/// A database of the release before accounts (migrations up to 0006) with a China Unicom card
/// and an open journal intent for it; the upgrade puts the card, and the intent, on the
/// carrier's default account, and the card is served from it.
async fn cards_move_onto_their_carriers_default_account(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let iccid = unicom_iccid(77);
    let card = format!(
        "INSERT INTO cards (iccid, msisdn, imsi, carrier, customer_id, quota_bytes, \
         monthly_fee_fen, validity_end_ms, auto_suspend, cancelled, status, stop_reasons, stage, \
         real_name, balance_fen, cycle_usage_bytes, cycle_start_ms, stage_since_ms, \
         test_used_bytes, arrears_paid, warnings, created_ms, updated_ms, version) VALUES \
         ('{iccid}', NULL, NULL, 'unicom', 'acme', 1073741824, 1200, 1800000000000, 1, 0, \
         'ACTIVE', 0, 'BILLING', 'VERIFIED', 5000, 0, 1764518400000, 1764518400000, 0, 0, '[]', \
         1764518400000, 1764518400000, 1)"
    );
    let op = format!(
        "INSERT INTO carrier_ops (iccid, carrier, action, status, attempts, last_error, source, \
         created_ms, updated_ms) VALUES ('{iccid}', 'unicom', 'STOP', 'ABANDONED', 1, '', \
         'SuspendCard:old', 1764518400000, 1764518400000)"
    );
    db_at_migration(&db, backend, "0007", &[&card, &op]).await;
    let store = db.store().await;
    let parsed = simgate::domain::Iccid::parse_any(&iccid).unwrap();
    let moved = store
        .get_card(&parsed)
        .await
        .unwrap()
        .expect("the card survived");
    assert_eq!(moved.account.as_str(), "unicom");
    assert_eq!(moved.version, 1);
    let ops = store.card_ops(&parsed).await.unwrap();
    assert_eq!(ops.len(), 1);
    assert_eq!(ops[0].account_id, "unicom");
    assert_eq!(
        store.cards_by_account().await.unwrap().get("unicom"),
        Some(&1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0007_puts_every_card_on_its_default_account_sqlite() {
    cards_move_onto_their_carriers_default_account(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0007_puts_every_card_on_its_default_account_postgres() {
    cards_move_onto_their_carriers_default_account(Backend::Postgres).await;
}
