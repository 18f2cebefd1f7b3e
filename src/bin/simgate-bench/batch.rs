//! `batch`: times a BatchSuspend of N cards against a simulated carrier limited to RATE calls a
//! second; the carrier's limit is the physical bound.

use std::sync::Arc;
use std::time::Instant;

use chrono::Duration;
use simgate::clock::ManualClock;
use simgate::domain::rules::NewCard;
use simgate::domain::{CarrierId, Fen, Iccid, LifecycleStage, Plan, RealNameStatus};

use crate::common::{iccid, start_time, tempdir, Res};

/// BatchSuspend of `cards` cards against China Mobile limited to `rate` calls a second: the
/// carrier's limit is the physical bound, so the figure is the achieved share of it.
pub async fn run(cards: u64, rate: u32, database_url: Option<String>) -> Res<()> {
    use simgate::carrier::guard::CarrierLimits;
    use simgate::service::batch::Kind;
    use simgate::service::Caller;

    let dir = tempdir()?;
    let url = database_url.unwrap_or_else(|| format!("sqlite://{}/bench.db", dir.display()));
    let start = start_time()?;
    let app = crate::common::server_builder()?
        .database_url(url.clone())
        .clock(Arc::new(ManualClock::new(start)))
        .carrier_limits(
            CarrierId::Mobile,
            CarrierLimits {
                requests_per_second: rate,
                max_concurrency: 64,
                breaker_failures: 0,
                ..CarrierLimits::default()
            },
        )
        .build()
        .await?;
    let mut iccids = Vec::with_capacity(cards as usize);
    let caller = Caller::system("BenchImport");
    let mut n = 0;
    while n < cards {
        let rows: Vec<_> = (n..(n + 10_000).min(cards))
            .map(|i| {
                iccids.push(iccid(i));
                NewCard {
                    iccid: Iccid::from_trusted(iccid(i)),
                    msisdn: None,
                    imsi: None,
                    carrier: CarrierId::Mobile,
                    account: None,
                    customer_id: "bench".into(),
                    plan: Plan {
                        monthly_quota_bytes: 1 << 30,
                        monthly_fee: Fen(1200),
                        validity_end: start + Duration::days(365),
                        auto_suspend_over_quota: true,
                    },
                    real_name: RealNameStatus::Verified,
                    stage: LifecycleStage::Billing,
                    balance: Fen(100_000),
                    cycle_usage_bytes: 0,
                    warnings: vec![],
                }
            })
            .collect();
        n += rows.len() as u64;
        app.service().import(rows, &caller, None).await?;
    }
    println!(
        "backend: {:?}, cards: {cards}, carrier limit: {rate} calls/s",
        app.store().backend()
    );
    let t = Instant::now();
    let batch = app
        .batches()
        .create(
            &Caller::system("BatchSuspend"),
            Kind::Suspend,
            iccids,
            Fen::ZERO,
            None,
        )
        .await?;
    loop {
        app.batches().run_once().await?;
        let (_, counts) = app
            .batches()
            .get(&Caller::system("BenchRead"), &batch.id)
            .await?;
        if counts.pending == 0 {
            let secs = t.elapsed().as_secs_f64();
            let achieved = (counts.done + counts.failed) as f64 / secs;
            println!(
                "BatchSuspend: {} done, {} failed in {secs:.1}s = {achieved:.0} cards/s",
                counts.done, counts.failed
            );
            println!(
                "achieved / carrier limit: {:.3}",
                achieved / f64::from(rate)
            );
            break;
        }
    }
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
