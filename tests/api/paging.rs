//! Every paged listing returns exactly the set it pages over: rows created concurrently (many in
//! the same millisecond of the test's manual clock) are neither lost nor repeated at page edges,
//! at page sizes 1, 7 and 50.

use std::collections::BTreeSet;
use std::future::Future;

use simgate::pb;

use crate::helpers::*;

const SIZES: [i32; 3] = [1, 7, 50];

/// Follows `fetch(page_size, token)` from the first page to the last and returns every id seen,
/// failing on a repeat.
async fn all_pages<F, Fut>(size: i32, mut fetch: F) -> Vec<String>
where
    F: FnMut(i32, String) -> Fut,
    Fut: Future<Output = (Vec<String>, String)>,
{
    let mut seen = Vec::new();
    let mut token = String::new();
    loop {
        let (ids, next) = fetch(size, token).await;
        assert!(ids.len() <= size as usize, "a page holds at most page_size");
        seen.extend(ids);
        if next.is_empty() {
            break;
        }
        token = next;
    }
    seen
}

type Monitoring = simgate::pb::monitoring_service_client::MonitoringServiceClient<Authed>;

/// One page of a customer's events, as ids (their cursors) and the next page's token.
async fn events_page(
    monitoring: &Monitoring,
    customer: &str,
    page_size: i32,
    page_token: String,
) -> (Vec<String>, String) {
    let r = monitoring
        .clone()
        .list_events(pb::ListEventsRequest {
            filter: Some(pb::EventFilter {
                customer_id: customer.into(),
                ..Default::default()
            }),
            page_size,
            page_token,
        })
        .await
        .unwrap()
        .into_inner();
    (
        r.events.into_iter().map(|e| e.cursor).collect(),
        r.next_page_token,
    )
}

fn assert_exactly(listing: &str, size: i32, got: Vec<String>, want: &BTreeSet<String>) {
    let set: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(
        set.len(),
        got.len(),
        "{listing} at page size {size} listed an entry twice"
    );
    let missing: Vec<_> = want.difference(&set).take(5).collect();
    let extra: Vec<_> = set.difference(want).take(5).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{listing} at page size {size}: missing {missing:?}, unexpected {extra:?} ({} of {})",
        set.len(),
        want.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_listing_pages_exactly_the_set_created_concurrently() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    let customer = "c-paging";

    // 320 cards, imported by 8 concurrent requests.
    let imports = (0..8u64).map(|chunk| {
        let mut cards = app.cards.clone();
        async move {
            let rows = (0..40u64)
                .map(|i| {
                    let mut c = card_input(&mobile_iccid(chunk * 40 + i), pb::Carrier::ChinaMobile);
                    c.customer_id = customer.into();
                    c.balance_fen = 5000;
                    c
                })
                .collect();
            cards
                .import_cards(pb::ImportCardsRequest {
                    cards: rows,
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
    });
    futures::future::join_all(imports).await;
    let iccids: BTreeSet<String> = (0..320).map(mobile_iccid).collect();

    // 320 operations created concurrently, all in one millisecond of the manual clock.
    let ops = operations_client(&app.channel, ADMIN_KEY);
    let creates = iccids.iter().map(|iccid| {
        let mut ops = ops.clone();
        let iccid = iccid.clone();
        async move {
            ops.batch_suspend(pb::BatchSuspendRequest {
                iccids: vec![iccid],
                request_id: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .id
        }
    });
    let op_ids: BTreeSet<String> = futures::future::join_all(creates)
        .await
        .into_iter()
        .collect();
    assert_eq!(op_ids.len(), 320);

    // One batch of every card, for its results pages.
    let big = ops
        .clone()
        .batch_recharge(pb::BatchRechargeRequest {
            iccids: iccids.iter().cloned().collect(),
            amount_fen: 100,
            request_id: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .id;

    // 60 history entries of one card, from concurrent recharges. The card's suspend above may
    // still be with its carrier (over HTTP, China Mobile's is gathered into a batch call): a
    // recharge meanwhile is refused CHANGE_PENDING, and tried again, as a client would.
    let one = mobile_iccid(0);
    let recharges = (0..60).map(|_| {
        let mut cards = app.cards.clone();
        let iccid = one.clone();
        async move {
            for _ in 0..500 {
                match cards
                    .recharge(pb::RechargeRequest {
                        iccid: iccid.clone(),
                        amount_fen: 1,
                        request_id: String::new(),
                    })
                    .await
                {
                    Ok(_) => return,
                    Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await
                    }
                    Err(s) => panic!("recharge: {s:?}"),
                }
            }
            panic!("the card's pending change never settled");
        }
    });
    futures::future::join_all(recharges).await;

    // 60 pools created concurrently.
    let monitoring = monitoring_client(&app.channel, ADMIN_KEY);
    let pools = (0..60).map(|i| {
        let mut m = monitoring.clone();
        async move {
            m.create_pool(pb::CreatePoolRequest {
                pool_id: format!("pool-{i:02}"),
                name: format!("pool {i}"),
                carrier: pb::Carrier::ChinaMobile as i32,
                customer_id: customer.into(),
                monthly_quota_bytes: 1 << 30,
                auto_suspend: false,
            })
            .await
            .unwrap();
        }
    });
    futures::future::join_all(pools).await;
    let pool_ids: BTreeSet<String> = (0..60).map(|i| format!("pool-{i:02}")).collect();

    // ListCards.
    for size in SIZES {
        let got = all_pages(size, |page_size, page_token| {
            let mut cards = app.cards.clone();
            async move {
                let r = cards
                    .list_cards(pb::ListCardsRequest {
                        page_size,
                        page_token,
                        customer_id: customer.into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.cards.into_iter().map(|c| c.iccid).collect(),
                    r.next_page_token,
                )
            }
        })
        .await;
        assert_exactly("ListCards", size, got, &iccids);
    }

    // ListOperations: the 320 single-card batches and the big one.
    let mut all_ops = op_ids.clone();
    all_ops.insert(big.clone());
    for size in SIZES {
        let got = all_pages(size, |page_size, page_token| {
            let mut ops = ops.clone();
            async move {
                let r = ops
                    .list_operations(pb::ListOperationsRequest {
                        page_size,
                        page_token,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.operations.into_iter().map(|o| o.id).collect(),
                    r.next_page_token,
                )
            }
        })
        .await;
        assert_exactly("ListOperations", size, got, &all_ops);
    }

    // GetOperation's results.
    for size in SIZES {
        let got = all_pages(size, |results_page_size, results_page_token| {
            let mut ops = ops.clone();
            let id = big.clone();
            async move {
                let r = ops
                    .get_operation(pb::GetOperationRequest {
                        id,
                        results_page_size,
                        results_page_token,
                        results_status: String::new(),
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.results.into_iter().map(|i| i.iccid).collect(),
                    r.next_results_page_token,
                )
            }
        })
        .await;
        assert_exactly("GetOperation.results", size, got, &iccids);
    }

    // ListCardEvents of the card recharged 60 times: compared with the store's own history.
    let history: BTreeSet<String> = app
        .store
        .card_events(&simgate::domain::Iccid::from_trusted(one.clone()))
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.id.to_string())
        .collect();
    assert!(history.len() > 60, "the recharges wrote history");
    for size in SIZES {
        let got = all_pages(size, |page_size, page_token| {
            let mut cards = app.cards.clone();
            let iccid = one.clone();
            async move {
                let r = cards
                    .list_card_events(pb::ListCardEventsRequest {
                        iccid,
                        page_size,
                        page_token,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.events.into_iter().map(|e| e.id.to_string()).collect(),
                    r.next_page_token,
                )
            }
        })
        .await;
        assert_exactly("ListCardEvents", size, got, &history);
    }

    // ListEvents of the customer: every outbox event, compared by its cursor.
    let outbox = all_pages(1000, |size, token| {
        events_page(&monitoring, customer, size, token)
    })
    .await;
    let outbox: BTreeSet<String> = outbox.into_iter().collect();
    assert!(
        outbox.len() >= 320 + 60,
        "imports and recharges wrote events"
    );
    for size in SIZES {
        let got = all_pages(size, |size, token| {
            events_page(&monitoring, customer, size, token)
        })
        .await;
        // Events written since the reference listing (the worker suspends cards meanwhile) may
        // appear; none of the reference set may go missing and none may repeat.
        let set: BTreeSet<String> = got.iter().cloned().collect();
        assert_eq!(
            set.len(),
            got.len(),
            "ListEvents at {size} repeated an event"
        );
        let missing: Vec<_> = outbox.difference(&set).take(5).collect();
        assert!(missing.is_empty(), "ListEvents at {size} lost {missing:?}");
    }

    // ListAuditEntries of the 320 concurrent BatchSuspend calls.
    for size in SIZES {
        let got = all_pages(size, |page_size, page_token| {
            let mut access = app.access.clone();
            async move {
                let r = access
                    .list_audit_entries(pb::ListAuditEntriesRequest {
                        page_size,
                        page_token,
                        method: "BatchSuspend".into(),
                        ..Default::default()
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.entries.into_iter().map(|e| e.request_id).collect(),
                    r.next_page_token,
                )
            }
        })
        .await;
        assert_eq!(got.len(), 320, "ListAuditEntries at {size}: one per call");
        let ids: BTreeSet<_> = got.iter().collect();
        assert_eq!(
            ids.len(),
            320,
            "ListAuditEntries at {size} repeated an entry"
        );
    }

    // ListPools.
    for size in SIZES {
        let got = all_pages(size, |page_size, page_token| {
            let mut m = monitoring.clone();
            async move {
                let r = m
                    .list_pools(pb::ListPoolsRequest {
                        page_size,
                        page_token,
                        customer_id: customer.into(),
                        carrier: 0,
                    })
                    .await
                    .unwrap()
                    .into_inner();
                (
                    r.pools.into_iter().map(|p| p.pool_id).collect(),
                    r.next_page_token,
                )
            }
        })
        .await;
        assert_exactly("ListPools", size, got, &pool_ids);
    }
    let _ = &mut app;
}
