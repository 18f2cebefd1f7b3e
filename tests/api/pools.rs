//! Pools end to end as issue 15 left them: pool ids are per customer (two customers may each
//! have pool `fleet-a` and each sees, fills and tops up only its own), ListCards pages through a
//! pool's members, and DiagnoseCard on a card of an exhausted pool quotes the pool and names the
//! TopUpPool that brings it back, with the pool id and the bytes needed.

use simgate::pb;
use simgate::pb::monitoring_service_client::MonitoringServiceClient;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

const MIB: u64 = 1 << 20;

async fn customer_key(app: &mut TestApp, customer: &str) -> String {
    app.access
        .create_api_key(pb::CreateApiKeyRequest {
            role: pb::Role::CustomerAdmin as i32,
            customer_id: customer.into(),
            name: format!("{customer} admin"),
            expires_at: None,
        })
        .await
        .expect("create key")
        .into_inner()
        .key_secret
}

fn mobile_card(iccid: &str, customer: &str) -> pb::CardInput {
    let mut c = card_input(iccid, pb::Carrier::ChinaMobile);
    c.customer_id = customer.into();
    c.balance_fen = 100_000;
    c
}

async fn create(
    m: &mut MonitoringServiceClient<Authed>,
    id: &str,
    customer: &str,
    quota: u64,
) -> Result<pb::Pool, tonic::Status> {
    m.create_pool(pb::CreatePoolRequest {
        pool_id: id.into(),
        name: format!("{customer} {id}"),
        carrier: pb::Carrier::ChinaMobile as i32,
        customer_id: customer.into(),
        monthly_quota_bytes: quota,
        auto_suspend: true,
    })
    .await
    .map(|r| r.into_inner())
}

async fn get_pool(
    m: &mut MonitoringServiceClient<Authed>,
    id: &str,
    customer: &str,
) -> Result<pb::Pool, tonic::Status> {
    m.get_pool(pb::GetPoolRequest {
        pool_id: id.into(),
        customer_id: customer.into(),
    })
    .await
    .map(|r| r.into_inner())
}

async fn add(m: &mut MonitoringServiceClient<Authed>, id: &str, customer: &str, iccids: &[String]) {
    m.add_cards_to_pool(pb::AddCardsToPoolRequest {
        pool_id: id.into(),
        iccids: iccids.to_vec(),
        customer_id: customer.into(),
    })
    .await
    .expect("add cards");
}

async fn pool_event_kinds(m: &mut MonitoringServiceClient<Authed>, id: &str) -> Vec<String> {
    m.list_events(pb::ListEventsRequest {
        filter: Some(pb::EventFilter {
            pool_id: id.into(),
            kinds: vec!["pool.*".into()],
            ..Default::default()
        }),
        page_size: 1000,
        page_token: String::new(),
    })
    .await
    .expect("list events")
    .into_inner()
    .events
    .into_iter()
    .map(|e| format!("{}:{}", e.customer_id, e.kind))
    .collect()
}

both_backends!(
    two_customers_each_have_their_own_pool_of_the_same_id,
    |mut app: TestApp| async move {
        let (acme_card, globex_card) = (mobile_iccid(1), mobile_iccid(2));
        import(
            &mut app,
            vec![
                mobile_card(&acme_card, "acme"),
                mobile_card(&globex_card, "globex"),
            ],
        )
        .await;
        let acme_key = customer_key(&mut app, "acme").await;
        let globex_key = customer_key(&mut app, "globex").await;
        let mut acme = monitoring_client(&app.channel, &acme_key);
        let mut globex = monitoring_client(&app.channel, &globex_key);
        let mut admin = monitoring_client(&app.channel, ADMIN_KEY);

        create(&mut acme, "fleet-a", "acme", 10 * MIB)
            .await
            .expect("acme's fleet-a");
        // globex is not told that acme has a fleet-a: it gets its own.
        let theirs = create(&mut globex, "fleet-a", "globex", 20 * MIB)
            .await
            .expect("globex's own fleet-a");
        assert_eq!(
            (theirs.customer_id.as_str(), theirs.monthly_quota_bytes),
            ("globex", 20 * MIB)
        );
        // A repeat within one customer is still ALREADY_EXISTS.
        let again = create(&mut globex, "fleet-a", "globex", 1)
            .await
            .unwrap_err();
        assert_eq!(again.code(), Code::AlreadyExists);

        // Each sees only its own.
        let ours = get_pool(&mut acme, "fleet-a", "").await.expect("acme get");
        assert_eq!(
            (ours.customer_id.as_str(), ours.monthly_quota_bytes),
            ("acme", 10 * MIB)
        );
        let theirs = get_pool(&mut globex, "fleet-a", "")
            .await
            .expect("globex get");
        assert_eq!(
            (theirs.customer_id.as_str(), theirs.monthly_quota_bytes),
            ("globex", 20 * MIB)
        );
        let peek = get_pool(&mut acme, "fleet-a", "globex").await.unwrap_err();
        assert_eq!(
            peek.code(),
            Code::NotFound,
            "another customer's pool is absent"
        );
        let listed = acme
            .list_pools(pb::ListPoolsRequest::default())
            .await
            .expect("list")
            .into_inner()
            .pools;
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].customer_id, "acme");

        // The card->pool link is (card's customer, pool id).
        add(&mut acme, "fleet-a", "", std::slice::from_ref(&acme_card)).await;
        add(
            &mut globex,
            "fleet-a",
            "",
            std::slice::from_ref(&globex_card),
        )
        .await;
        assert_eq!(
            get_pool(&mut acme, "fleet-a", "")
                .await
                .unwrap()
                .member_count,
            1
        );
        assert_eq!(
            get_pool(&mut globex, "fleet-a", "")
                .await
                .unwrap()
                .member_count,
            1
        );

        // acme's card empties acme's pool: acme's member stops, globex's pool and card do not.
        app.use_data(pb::Carrier::ChinaMobile, &acme_card, 11 * MIB)
            .await;
        let ours = get_pool(&mut acme, "fleet-a", "").await.unwrap();
        assert!(ours.exhausted && ours.used_bytes == 11 * MIB, "{ours:?}");
        let theirs = get_pool(&mut globex, "fleet-a", "").await.unwrap();
        assert!(!theirs.exhausted && theirs.used_bytes == 0, "{theirs:?}");
        assert!(
            reasons_of(&get(&mut app, &acme_card).await).contains(&pb::StopReason::PoolExhausted)
        );
        let g = get(&mut app, &globex_card).await;
        assert_eq!(status_of(&g), pb::CardStatus::Active);
        assert_eq!(g.pool_id, "fleet-a");

        // Pool events belong to their customer's pool.
        assert_eq!(
            pool_event_kinds(&mut acme, "fleet-a").await,
            ["acme:pool.created", "acme:pool.exhausted"]
        );
        assert_eq!(
            pool_event_kinds(&mut globex, "fleet-a").await,
            ["globex:pool.created"]
        );

        // A reseller key must say whose fleet-a it means once two customers have one.
        let ambiguous = get_pool(&mut admin, "fleet-a", "").await.unwrap_err();
        assert_eq!(ambiguous.code(), Code::InvalidArgument);
        assert_eq!(details(&ambiguous).1, ["customer_id"]);
        let named = get_pool(&mut admin, "fleet-a", "globex")
            .await
            .expect("named");
        assert_eq!(named.customer_id, "globex");
        // ...and pages through both, one per page.
        let mut seen = Vec::new();
        let mut token = String::new();
        loop {
            let page = admin
                .list_pools(pb::ListPoolsRequest {
                    page_size: 1,
                    page_token: token,
                    ..Default::default()
                })
                .await
                .expect("list pools")
                .into_inner();
            seen.extend(
                page.pools
                    .iter()
                    .map(|p| format!("{}/{}", p.customer_id, p.pool_id)),
            );
            if page.next_page_token.is_empty() {
                break;
            }
            token = page.next_page_token;
        }
        assert_eq!(seen, ["acme/fleet-a", "globex/fleet-a"]);

        // globex's top-up is globex's: acme's pool stays exhausted.
        let topped = globex
            .top_up_pool(pb::TopUpPoolRequest {
                pool_id: "fleet-a".into(),
                bytes: MIB,
                ..Default::default()
            })
            .await
            .expect("top up")
            .into_inner();
        assert_eq!(
            (topped.customer_id.as_str(), topped.capacity_bytes),
            ("globex", 21 * MIB)
        );
        let ours = get_pool(&mut acme, "fleet-a", "").await.unwrap();
        assert!(
            ours.exhausted && ours.capacity_bytes == 10 * MIB,
            "{ours:?}"
        );

        // acme's fleet-a cannot take globex's card out of globex's fleet-a.
        let refused = admin
            .remove_cards_from_pool(pb::RemoveCardsFromPoolRequest {
                pool_id: "fleet-a".into(),
                iccids: vec![globex_card.clone()],
                customer_id: "acme".into(),
            })
            .await
            .unwrap_err();
        assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
        assert_eq!(get(&mut app, &globex_card).await.pool_id, "fleet-a");
        assert_eq!(
            get_pool(&mut globex, "fleet-a", "")
                .await
                .unwrap()
                .member_count,
            1
        );
    }
);

both_backends!(
    list_cards_pool_id_filter_pages_through_the_pools_members,
    |mut app: TestApp| async move {
        let members: Vec<String> = (1..=5).map(mobile_iccid).collect();
        let outsider = mobile_iccid(6);
        let foreign = mobile_iccid(7);
        let mut rows: Vec<pb::CardInput> = members.iter().map(|i| mobile_card(i, "acme")).collect();
        rows.push(mobile_card(&outsider, "acme"));
        rows.push(mobile_card(&foreign, "globex"));
        import(&mut app, rows).await;
        let mut admin = monitoring_client(&app.channel, ADMIN_KEY);
        create(&mut admin, "fleet-a", "acme", 100 * MIB)
            .await
            .expect("acme pool");
        create(&mut admin, "fleet-a", "globex", 100 * MIB)
            .await
            .expect("globex pool");
        add(&mut admin, "fleet-a", "acme", &members).await;
        add(
            &mut admin,
            "fleet-a",
            "globex",
            std::slice::from_ref(&foreign),
        )
        .await;

        let acme_key = customer_key(&mut app, "acme").await;
        let mut cards = cards_client(&app.channel, &acme_key);
        let mut seen = Vec::new();
        let mut pages = 0;
        let mut token = String::new();
        loop {
            let page = cards
                .list_cards(pb::ListCardsRequest {
                    page_size: 2,
                    page_token: token,
                    pool_id: "fleet-a".into(),
                    ..Default::default()
                })
                .await
                .expect("list cards")
                .into_inner();
            pages += 1;
            assert!(page
                .cards
                .iter()
                .all(|c| c.pool_id == "fleet-a" && c.customer_id == "acme"));
            seen.extend(page.cards.into_iter().map(|c| c.iccid));
            if page.next_page_token.is_empty() {
                break;
            }
            // A token is bound to its pool: replayed for another pool it is refused.
            let replay = cards
                .list_cards(pb::ListCardsRequest {
                    page_size: 2,
                    page_token: page.next_page_token.clone(),
                    pool_id: "fleet-b".into(),
                    ..Default::default()
                })
                .await
                .unwrap_err();
            assert_eq!(details(&replay).1, ["page_token"]);
            token = page.next_page_token;
        }
        assert_eq!(pages, 3, "5 members, 2 a page");
        assert_eq!(
            seen, members,
            "every member once, in ICCID order; no outsider"
        );
        let outside = get(&mut app, &outsider).await;
        assert_eq!(outside.pool_id, "");

        // A reseller key names the customer: pool ids are per customer.
        let mut admin_cards = cards_client(&app.channel, ADMIN_KEY);
        let unscoped = admin_cards
            .list_cards(pb::ListCardsRequest {
                pool_id: "fleet-a".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(unscoped.code(), Code::InvalidArgument);
        assert_eq!(details(&unscoped).1, ["customer_id"]);
        let globex = admin_cards
            .list_cards(pb::ListCardsRequest {
                pool_id: "fleet-a".into(),
                customer_id: "globex".into(),
                ..Default::default()
            })
            .await
            .expect("globex's members")
            .into_inner()
            .cards;
        assert_eq!(
            globex.iter().map(|c| c.iccid.clone()).collect::<Vec<_>>(),
            [foreign]
        );
        let bad = admin_cards
            .list_cards(pb::ListCardsRequest {
                pool_id: "bad id!".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(details(&bad).1, ["pool_id"]);
    }
);

both_backends!(
    diagnose_card_on_a_pool_exhausted_card_names_top_up_pool_the_pool_and_the_bytes_needed,
    |mut app: TestApp| async move {
        let iccids: Vec<String> = (1..=2).map(mobile_iccid).collect();
        import(
            &mut app,
            iccids.iter().map(|i| mobile_card(i, "acme")).collect(),
        )
        .await;
        let mut m = monitoring_client(&app.channel, ADMIN_KEY);
        create(&mut m, "fleet-a", "acme", 10 * MIB)
            .await
            .expect("pool");
        add(&mut m, "fleet-a", "acme", &iccids).await;
        app.use_data(pb::Carrier::ChinaMobile, &iccids[0], 6 * MIB)
            .await;
        app.use_data(pb::Carrier::ChinaMobile, &iccids[1], 6 * MIB)
            .await;
        let card = get(&mut app, &iccids[0]).await;
        assert!(reasons_of(&card).contains(&pb::StopReason::PoolExhausted));

        let d = app
            .cards
            .diagnose_card(pb::DiagnoseCardRequest {
                iccid: iccids[0].clone(),
                language: "en".into(),
            })
            .await
            .expect("diagnose")
            .into_inner();
        let f = d
            .findings
            .iter()
            .find(|f| f.code == "POOL_EXHAUSTED")
            .expect("POOL_EXHAUSTED finding");
        let ev = |name: &str| {
            f.evidence
                .iter()
                .find(|e| e.name == name)
                .map(|e| e.value)
                .unwrap_or_else(|| panic!("no {name} in {:?}", f.evidence))
        };
        // The pool's figures, not the card's own 6 MiB of its 1 GiB quota.
        assert_eq!(ev("pool_used_bytes"), (12 * MIB) as i64);
        assert_eq!(ev("pool_capacity_bytes"), (10 * MIB) as i64);
        let needed = 2 * MIB + 1;
        assert_eq!(ev("pool_bytes_needed"), needed as i64);
        assert!(
            !f.evidence.iter().any(|e| e.name == "quota_bytes"),
            "{:?}",
            f.evidence
        );
        let step = f
            .steps
            .iter()
            .find(|s| s.action == pb::RemedyAction::TopUpPool as i32)
            .expect("a TopUpPool step");
        assert_eq!(step.rpc, "TopUpPool");
        assert_eq!(step.pool_id, "fleet-a");
        assert_eq!(step.bytes, needed);
        assert!(step.text.contains("fleet-a"), "{}", step.text);

        // Following the step brings both members back.
        let topped = m
            .top_up_pool(pb::TopUpPoolRequest {
                pool_id: step.pool_id.clone(),
                bytes: step.bytes,
                customer_id: "acme".into(),
                ..Default::default()
            })
            .await
            .expect("top up")
            .into_inner();
        assert!(!topped.exhausted, "{topped:?}");
        for iccid in &iccids {
            assert_eq!(
                status_of(&get(&mut app, iccid).await),
                pb::CardStatus::Active
            );
        }
    }
);

/// A database at migration 0003 with one pool, then the full migrations (0005 re-keys `pools`
/// by (customer, id), on SQLite by rebuilding the table): the pool is still there, whole, and
/// another customer may now take its id.
async fn pools_survive_the_per_customer_key(backend: Backend) {
    let Some(db) = TestDb::new(backend) else {
        return;
    };
    let insert = "INSERT INTO pools (id, name, carrier, customer_id, quota_bytes, auto_suspend, \
        cycle_start_ms, topup_bytes, exhausted, alert_keys, created_ms, updated_ms, version) \
        VALUES ('fleet-a', 'acme fleet', 'mobile', 'acme', 3000, 1, 1764518400000, 500, 1, \
        'pool_usage:800@1764518400000', 1764000000000, 1764100000000, 7)";
    db_at_migration(&db, backend, "0004", &[insert]).await;

    let store = db.store().await;
    let kept = store
        .get_pool("acme", "fleet-a")
        .await
        .expect("read")
        .expect("the pool survived the migration");
    assert_eq!(
        (
            kept.name.as_str(),
            kept.quota_bytes,
            kept.topup_bytes,
            kept.exhausted,
            kept.auto_suspend,
            kept.version,
            kept.alert_keys.clone(),
        ),
        (
            "acme fleet",
            3000,
            500,
            true,
            true,
            7,
            vec!["pool_usage:800@1764518400000".to_string()]
        )
    );
    assert_eq!(kept.created_at.timestamp_millis(), 1764000000000);
    // globex may now have a fleet-a of its own; acme still may not have two.
    let theirs = simgate::domain::pool::Pool {
        customer_id: "globex".into(),
        version: 1,
        ..kept.clone()
    };
    store
        .insert_pool(&theirs, &[], None, None)
        .await
        .expect("globex's fleet-a");
    let twice = store.insert_pool(&kept, &[], None, None).await;
    assert!(
        matches!(twice, Err(simgate::store::StoreError::Duplicate { .. })),
        "{twice:?}"
    );
    assert_eq!(
        store
            .get_pool("globex", "fleet-a")
            .await
            .expect("read")
            .map(|p| p.customer_id),
        Some("globex".to_string())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0005_keeps_every_pool_sqlite() {
    pools_survive_the_per_customer_key(Backend::Sqlite).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_0005_keeps_every_pool_postgres() {
    pools_survive_the_per_customer_key(Backend::Postgres).await;
}
