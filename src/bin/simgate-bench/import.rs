//! `import`: ImportCards of N cards (calls of 10,000) over gRPC into a `simgate serve` child
//! process, with the child's peak resident memory, against the ceiling: a raw sqlx multi-row
//! INSERT of the same rows (every column, 1,000 rows a statement, one transaction per 10,000)
//! into a fresh database of the same backend.

use std::time::{Duration, Instant};

use chrono::Utc;
use simgate::domain::rules::open_card;
use simgate::domain::{Card, CarrierId, CarrierPolicy};
use simgate::pb;
use sqlx::AnyPool;

use crate::common::{card_input, cards_client, new_card, start_server, Db, Res};

pub struct Args {
    pub cards: u64,
    pub per_call: u64,
    pub database_url: Option<String>,
}

const GIB: u64 = 1 << 30;

/// `VmHWM` (peak resident set) of a process, in bytes.
fn peak_rss(pid: u32) -> Res<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .ok_or("no VmHWM in /proc/<pid>/status")?;
    Ok(kb * 1024)
}

/// The store's column order and types; the ceiling writes every column the import writes.
const COLUMNS: &str = "iccid, msisdn, imsi, carrier, customer_id, quota_bytes, monthly_fee_fen, \
    validity_end_ms, auto_suspend, cancelled, status, stop_reasons, stage, real_name, balance_fen, \
    cycle_usage_bytes, cycle_start_ms, stage_since_ms, test_used_bytes, retention_fee_next_ms, \
    retention_ends_ms, expiry_restore_ms, arrears_paid, warnings, created_ms, updated_ms, version, \
    next_due_ms";
const NUM_COLUMNS: usize = 28;
const ROWS_PER_STATEMENT: usize = 1000;

fn values(sqlite: bool, rows: usize) -> String {
    (0..rows)
        .map(|r| {
            let cols = (1..=NUM_COLUMNS)
                .map(|c| {
                    // SQLite gets `?`: it prepares `$N` placeholders far slower (see the store).
                    if sqlite {
                        "?".to_string()
                    } else {
                        format!("${}", r * NUM_COLUMNS + c)
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            format!("({cols})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

async fn raw_insert(pool: &AnyPool, sqlite: bool, cards: &[Card]) -> Res<()> {
    let mut tx = pool.begin().await?;
    for chunk in cards.chunks(ROWS_PER_STATEMENT) {
        let sql = format!(
            "INSERT INTO cards ({COLUMNS}) VALUES {}",
            values(sqlite, chunk.len())
        );
        let mut q = sqlx::query(&sql);
        for c in chunk {
            let ms = |t: Option<chrono::DateTime<Utc>>| t.map(|t| t.timestamp_millis());
            q = q
                .bind(c.iccid.as_str().to_string())
                .bind(c.msisdn.as_ref().map(|m| m.as_str().to_string()))
                .bind(c.imsi.as_ref().map(|m| m.as_str().to_string()))
                .bind(c.carrier.as_str())
                .bind(c.customer_id.clone())
                .bind(i64::try_from(c.plan.monthly_quota_bytes)?)
                .bind(c.plan.monthly_fee.0)
                .bind(c.plan.validity_end.timestamp_millis())
                .bind(i64::from(c.plan.auto_suspend_over_quota))
                .bind(i64::from(c.cancelled))
                .bind(c.status().as_str())
                .bind(i64::from(c.stop_reasons.bits()))
                .bind(c.stage.as_str())
                .bind(c.real_name.as_str())
                .bind(c.balance.0)
                .bind(i64::try_from(c.cycle_usage_bytes)?)
                .bind(c.cycle_start.timestamp_millis())
                .bind(c.stage_since.timestamp_millis())
                .bind(i64::try_from(c.test_used_bytes)?)
                .bind(ms(c.retention_fee_next_at))
                .bind(ms(c.retention_ends_at))
                .bind(ms(c.expiry_restore_at))
                .bind(i64::from(c.arrears_paid_awaiting_resume))
                .bind(serde_json::to_string(&c.warnings)?)
                .bind(c.created_at.timestamp_millis())
                .bind(c.updated_at.timestamp_millis())
                .bind(c.version)
                .bind(ms(c.next_due_at));
        }
        q.execute(&mut *tx).await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn run(a: Args) -> Res<()> {
    if a.per_call == 0 {
        return Err("--per-call must be positive".into());
    }
    let calls = a.cards.div_ceil(a.per_call);
    let served_db = Db::fresh(a.database_url.as_deref())?;
    served_db.migrate().await?;
    let (child, addr) = start_server(&served_db, &[]).await?;
    let pid = child.0.id();
    let idle_rss = peak_rss(pid)?;
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    let mut client = cards_client(&channel)?;
    println!(
        "backend: {}, cards: {}, {calls} ImportCards calls of {} (one at a time), server pid {pid}, peak RSS after start {:.0} MiB",
        served_db.backend(),
        a.cards,
        a.per_call,
        idle_rss as f64 / (1 << 20) as f64
    );

    // Only the calls are timed; building each request is the client's work.
    let now = Utc::now();
    let mut rpc_time = Duration::ZERO;
    let mut imported = 0u64;
    for call in 0..calls {
        let first = call * a.per_call;
        let rows: Vec<_> = (first..(first + a.per_call).min(a.cards))
            .map(|i| card_input(i, "bench", now))
            .collect();
        let t = Instant::now();
        let answer = client
            .import_cards(pb::ImportCardsRequest {
                cards: rows,
                request_id: String::new(),
            })
            .await?
            .into_inner();
        rpc_time += t.elapsed();
        imported += u64::from(answer.imported);
    }
    let peak = peak_rss(pid)?;
    drop(client);
    drop(child);
    if imported != a.cards {
        return Err(format!("server imported {imported} of {} cards", a.cards).into());
    }
    served_db.remove().await?;

    let ceiling_db = Db::fresh(a.database_url.as_deref())?;
    ceiling_db.migrate().await?;
    let pool = ceiling_db.raw_pool().await?;
    let sqlite = ceiling_db.schema.is_none();
    let policy = CarrierPolicy::default_for(CarrierId::Mobile);
    let mut raw_time = Duration::ZERO;
    for call in 0..calls {
        let first = call * a.per_call;
        let rows: Vec<Card> = (first..(first + a.per_call).min(a.cards))
            .map(|i| open_card(new_card(i, "bench", now), &policy, now))
            .collect();
        let t = Instant::now();
        raw_insert(&pool, sqlite, &rows).await?;
        raw_time += t.elapsed();
    }
    pool.close().await;
    ceiling_db.remove().await?;

    let rate = a.cards as f64 / rpc_time.as_secs_f64();
    let raw_rate = a.cards as f64 / raw_time.as_secs_f64();
    println!("| | cards/s | time |");
    println!("|---|---|---|");
    println!(
        "| raw sqlx multi-row INSERT (ceiling) | {raw_rate:.0} | {:.1} s |",
        raw_time.as_secs_f64()
    );
    println!(
        "| ImportCards over gRPC | {rate:.0} | {:.1} s |",
        rpc_time.as_secs_f64()
    );
    println!("ImportCards / ceiling: {:.2}", rate / raw_rate);
    println!(
        "server peak RSS (VmHWM): {:.0} MiB; under 1 GiB: {}",
        peak as f64 / (1 << 20) as f64,
        if peak < GIB { "PASS" } else { "FAIL" }
    );
    Ok(())
}
