use std::collections::BTreeSet;

use simgate::pb;
use tonic::Code;

use crate::both_backends;
use crate::helpers::*;

async fn list_all(app: &mut TestApp, mut req: pb::ListCardsRequest) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let page = app
            .cards
            .list_cards(req.clone())
            .await
            .unwrap()
            .into_inner();
        assert!(page.cards.len() <= req.page_size.max(1) as usize || req.page_size == 0);
        seen.extend(page.cards.into_iter().map(|c| c.iccid));
        if page.next_page_token.is_empty() {
            return seen;
        }
        req.page_token = page.next_page_token;
    }
}

async fn seed(app: &mut TestApp) {
    let mut rows = Vec::new();
    for n in 0..10 {
        let mut r = card_input(&unicom_iccid(n), pb::Carrier::ChinaUnicom);
        r.customer_id = if n % 2 == 0 {
            "even".into()
        } else {
            "odd".into()
        };
        if n % 5 == 0 {
            r.balance_fen = -100;
        }
        rows.push(r);
    }
    for n in 0..7 {
        rows.push(card_input(&mobile_iccid(n), pb::Carrier::ChinaMobile));
    }
    for n in 0..8 {
        let mut r = card_input(&telecom_iccid(n), pb::Carrier::ChinaTelecom);
        if n < 3 {
            r.real_name = pb::RealNameStatus::Unverified as i32;
        }
        rows.push(r);
    }
    import(app, rows).await;
}

both_backends!(
    pages_cover_every_card_once_in_iccid_order,
    |mut app: TestApp| async move {
        seed(&mut app).await;
        let all = list_all(
            &mut app,
            pb::ListCardsRequest {
                page_size: 4,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(all.len(), 25);
        let mut sorted = all.clone();
        sorted.sort();
        sorted.dedup();
        assert_eq!(all, sorted, "stable order, no duplicates");

        // Exactly one page: no token to a page that would be empty.
        let page = app
            .cards
            .list_cards(pb::ListCardsRequest {
                page_size: 25,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(page.cards.len(), 25);
        assert!(page.next_page_token.is_empty());
    }
);

both_backends!(filters_narrow_the_listing, |mut app: TestApp| async move {
    seed(&mut app).await;
    let by = |f: fn(&mut pb::ListCardsRequest)| {
        let mut r = pb::ListCardsRequest {
            page_size: 3,
            ..Default::default()
        };
        f(&mut r);
        r
    };
    let unicom = list_all(
        &mut app,
        by(|r| r.carrier = pb::Carrier::ChinaUnicom as i32),
    )
    .await;
    assert_eq!(unicom.len(), 10);
    assert!(unicom.iter().all(|i| i.starts_with("898601")));

    let odd = list_all(&mut app, by(|r| r.customer_id = "odd".into())).await;
    assert_eq!(odd.len(), 5);

    let suspended = list_all(
        &mut app,
        by(|r| r.status = pb::CardStatus::Suspended as i32),
    )
    .await;
    assert_eq!(suspended.len(), 5, "2 in arrears + 3 without real-name");

    let arrears = list_all(
        &mut app,
        by(|r| r.stop_reason = pb::StopReason::Arrears as i32),
    )
    .await;
    assert_eq!(arrears, vec![unicom_iccid(0), unicom_iccid(5)]);

    let combined = list_all(
        &mut app,
        by(|r| {
            r.customer_id = "even".into();
            r.stop_reason = pb::StopReason::Arrears as i32;
        }),
    )
    .await;
    assert_eq!(combined, vec![unicom_iccid(0)]);
});

both_backends!(
    cards_added_between_pages_are_neither_repeated_nor_skipped,
    |mut app: TestApp| async move {
        seed(&mut app).await;
        let first = app
            .cards
            .list_cards(pb::ListCardsRequest {
                page_size: 10,
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        let last_seen = first.cards.last().unwrap().iccid.clone();
        // One card sorts before the cursor (already passed), one after (still ahead).
        import(
            &mut app,
            vec![
                card_input(&mobile_iccid(100), pb::Carrier::ChinaMobile),
                card_input(&telecom_iccid(100), pb::Carrier::ChinaTelecom),
            ],
        )
        .await;
        assert!(mobile_iccid(100) < last_seen && telecom_iccid(100) > last_seen);
        let mut rest = list_all(
            &mut app,
            pb::ListCardsRequest {
                page_size: 10,
                page_token: first.next_page_token,
                ..Default::default()
            },
        )
        .await;
        let mut all: Vec<String> = first.cards.into_iter().map(|c| c.iccid).collect();
        all.append(&mut rest);
        let unique: BTreeSet<_> = all.iter().cloned().collect();
        assert_eq!(unique.len(), all.len(), "no duplicates");
        assert_eq!(
            all.len(),
            26,
            "25 seeded + the one added ahead of the cursor"
        );
        assert!(unique.contains(&telecom_iccid(100)));
    }
);

#[tokio::test]
async fn bad_paging_arguments_are_refused() {
    let mut app = spawn_app(Backend::Sqlite).await.unwrap();
    seed(&mut app).await;
    for size in [-1, 1001] {
        let err = app
            .cards
            .list_cards(pb::ListCardsRequest {
                page_size: size,
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(
            (err.code(), details(&err).1),
            (Code::InvalidArgument, vec!["page_size".to_string()])
        );
    }
    let err = app
        .cards
        .list_cards(pb::ListCardsRequest {
            page_token: "garbage!".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(details(&err).1, vec!["page_token"]);

    let page = app
        .cards
        .list_cards(pb::ListCardsRequest {
            page_size: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
    let err = app
        .cards
        .list_cards(pb::ListCardsRequest {
            page_size: 2,
            page_token: page.next_page_token,
            carrier: pb::Carrier::ChinaMobile as i32,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("different filter"));

    for req in [
        pb::ListCardsRequest {
            carrier: 42,
            ..Default::default()
        },
        pb::ListCardsRequest {
            status: 42,
            ..Default::default()
        },
        pb::ListCardsRequest {
            stop_reason: 42,
            ..Default::default()
        },
        pb::ListCardsRequest {
            customer_id: "no spaces allowed".into(),
            ..Default::default()
        },
    ] {
        let err = app.cards.list_cards(req).await.unwrap_err();
        assert_eq!(err.code(), Code::InvalidArgument);
        assert_eq!(details(&err).1.len(), 1);
    }

    // page_size 0 means the default of 100.
    let page = app
        .cards
        .list_cards(pb::ListCardsRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(page.cards.len(), 25);
}
