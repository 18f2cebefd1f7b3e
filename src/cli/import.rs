//! `simgate import cards.csv`: reads and checks the whole CSV first (every problem named by its
//! line and column), then sends it as ImportCards calls of at most `--batch` cards, each under an
//! idempotency key made from its own content, with a progress bar. Server refusals are traced
//! back from `cards[i].field` to the CSV line.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::path::PathBuf;

use chrono::{DateTime, NaiveDate, TimeZone};
use chrono_tz::Asia::Shanghai;
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use prost::Message;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tonic_types::StatusExt;

use super::output::Printer;
use super::values::{parse_friendly, CarrierArg, RealNameArg, StageArg};
use super::{Cards, Failure};
use crate::pb;

/// Most cards one ImportCards call may carry (the server's limit).
pub const MAX_BATCH: u32 = 10_000;

/// Most problems listed before the rest are only counted.
const MAX_LISTED: usize = 50;

const COLUMNS: &str = "\
CSV columns (a header row names them, in any order; an empty cell means the default):
  iccid                    required. 19-20 characters, 8986...
  carrier                  required. mobile | unicom | telecom
  customer_id              required. The enterprise customer the card belongs to
  monthly_quota_bytes      required. Plan quota per month, bytes
  validity_end             required. Plan end: RFC 3339 (2027-06-30T16:00:00Z), or a date
                           (2027-06-30 = to the end of that day, Shanghai time)
  monthly_fee_fen          Plan fee per month in fen (1 yuan = 100 fen). Default 0
  auto_suspend_over_quota  true | false: stop the card when the quota is used up. Default false
  msisdn                   11 or 13 digits, unique
  imsi                     15 digits, MCC 460
  real_name                verified | unverified | unknown. Default unknown
  stage                    test | silent | billing. Default billing
  balance_fen              Opening balance in fen; negative means arrears. Default 0
  cycle_usage_bytes        Usage already consumed this cycle, bytes. Default 0
  account_id               The carrier account the card is on. Required when the card's
                           carrier has several accounts (see `simgate account list`)

Each call is all or nothing and carries an idempotency key made from its cards, so running the
same command again after a failure imports nothing twice: calls that succeeded before are
answered with their first answer (and counted again in the total). A refused call stops the
import and names the CSV line; fix it and run the same command again.";

#[derive(Args)]
#[command(after_long_help = COLUMNS)]
pub struct ImportArgs {
    /// CSV file of cards (see --help for its columns).
    pub file: PathBuf,
    /// Cards per ImportCards call: 1 to 10000.
    #[arg(long, default_value_t = MAX_BATCH, value_parser = clap::value_parser!(u32).range(1..=MAX_BATCH as i64))]
    pub batch: u32,
    /// No progress bar (it is also hidden when stderr is not a terminal).
    #[arg(long, short)]
    pub quiet: bool,
}

const KNOWN: &[&str] = &[
    "iccid",
    "carrier",
    "customer_id",
    "monthly_quota_bytes",
    "validity_end",
    "monthly_fee_fen",
    "auto_suspend_over_quota",
    "msisdn",
    "imsi",
    "real_name",
    "stage",
    "balance_fen",
    "cycle_usage_bytes",
    "account_id",
];
const REQUIRED: &[&str] = &[
    "iccid",
    "carrier",
    "customer_id",
    "monthly_quota_bytes",
    "validity_end",
];

/// One CSV row as written; the text columns are checked by [`to_input`].
#[derive(Deserialize)]
struct Row {
    #[serde(default)]
    iccid: String,
    #[serde(default)]
    carrier: String,
    #[serde(default)]
    customer_id: String,
    monthly_quota_bytes: Option<u64>,
    #[serde(default)]
    validity_end: String,
    monthly_fee_fen: Option<i64>,
    #[serde(default)]
    auto_suspend_over_quota: String,
    #[serde(default)]
    msisdn: String,
    #[serde(default)]
    imsi: String,
    #[serde(default)]
    real_name: String,
    #[serde(default)]
    stage: String,
    balance_fen: Option<i64>,
    cycle_usage_bytes: Option<u64>,
    #[serde(default)]
    account_id: String,
}

/// The cards of a file, each with the CSV line it starts on.
pub struct Parsed {
    pub cards: Vec<pb::CardInput>,
    pub lines: Vec<u64>,
}

/// Reads and checks every row; the error lists each problem by line and column.
pub fn parse(data: &[u8]) -> Result<Parsed, Vec<String>> {
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .from_reader(data);
    let headers = reader
        .headers()
        .map_err(|e| vec![csv_error(&e, None)])?
        .clone();
    let mut problems = Vec::new();
    for h in headers.iter() {
        if !KNOWN.contains(&h) {
            problems.push(format!(
                "line 1: column {h:?} is not a card field (known: {})",
                KNOWN.join(", ")
            ));
        }
    }
    for r in REQUIRED {
        if !headers.iter().any(|h| h == *r) {
            problems.push(format!("line 1: the required column {r:?} is missing"));
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut parsed = Parsed {
        cards: Vec::new(),
        lines: Vec::new(),
    };
    let mut seen: HashMap<String, u64> = HashMap::new();
    for record in reader.records() {
        let record = match record {
            Ok(r) => r,
            Err(e) => {
                problems.push(csv_error(&e, Some(&headers)));
                continue;
            }
        };
        let line = record.position().map_or(0, |p| p.line());
        let row: Row = match record.deserialize(Some(&headers)) {
            Ok(r) => r,
            Err(e) => {
                problems.push(csv_error(&e, Some(&headers)));
                continue;
            }
        };
        match to_input(row) {
            Ok(card) => {
                if let Some(first) = seen.insert(card.iccid.clone(), line) {
                    problems.push(format!(
                        "line {line}, column iccid: {} is already on line {first}",
                        card.iccid
                    ));
                }
                parsed.cards.push(card);
                parsed.lines.push(line);
            }
            Err((column, why)) => problems.push(format!("line {line}, column {column}: {why}")),
        }
    }
    if parsed.cards.is_empty() && problems.is_empty() {
        problems.push("the file has no cards, only a header".into());
    }
    if problems.is_empty() {
        Ok(parsed)
    } else {
        Err(problems)
    }
}

fn csv_error(e: &csv::Error, headers: Option<&csv::StringRecord>) -> String {
    let line = e
        .position()
        .map_or_else(|| "line ?".to_string(), |p| format!("line {}", p.line()));
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let column = err
                .field()
                .and_then(|i| headers.and_then(|h| h.get(i as usize)))
                .map_or_else(String::new, |c| format!(", column {c}"));
            format!("{line}{column}: {}", err.kind())
        }
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("{line}: {len} cells, but the header has {expected_len}"),
        _ => format!("{line}: {e}"),
    }
}

type Bad = (&'static str, String);

fn to_input(row: Row) -> Result<pb::CardInput, Bad> {
    let required = |column: &'static str, v: &str| {
        if v.is_empty() {
            Err((column, "is required".to_string()))
        } else {
            Ok(())
        }
    };
    required("iccid", &row.iccid)?;
    required("customer_id", &row.customer_id)?;
    let carrier = if row.carrier.is_empty() {
        return Err(("carrier", "is required: mobile, unicom or telecom".into()));
    } else {
        parse_friendly(&row.carrier, CarrierArg::to_pb, pb::Carrier::from_str_name)
            .map_err(|e| ("carrier", e))?
    };
    let quota = row
        .monthly_quota_bytes
        .ok_or(("monthly_quota_bytes", "is required".to_string()))?;
    required("validity_end", &row.validity_end)?;
    let validity_end = validity_end(&row.validity_end).map_err(|e| ("validity_end", e))?;
    let auto_suspend = match row.auto_suspend_over_quota.to_ascii_lowercase().as_str() {
        "" | "false" | "no" | "0" => false,
        "true" | "yes" | "1" => true,
        other => {
            return Err((
                "auto_suspend_over_quota",
                format!("{other:?} is not true or false"),
            ))
        }
    };
    let real_name = if row.real_name.is_empty() {
        pb::RealNameStatus::Unspecified
    } else {
        parse_friendly(
            &row.real_name,
            RealNameArg::to_pb,
            pb::RealNameStatus::from_str_name,
        )
        .map_err(|e| ("real_name", e))?
    };
    let stage = if row.stage.is_empty() {
        pb::LifecycleStage::Unspecified
    } else {
        parse_friendly(
            &row.stage,
            StageArg::to_pb,
            pb::LifecycleStage::from_str_name,
        )
        .map_err(|e| ("stage", e))?
    };
    Ok(pb::CardInput {
        iccid: row.iccid,
        msisdn: row.msisdn,
        imsi: row.imsi,
        carrier: carrier as i32,
        customer_id: row.customer_id,
        plan: Some(pb::Plan {
            monthly_quota_bytes: quota,
            monthly_fee_fen: row.monthly_fee_fen.unwrap_or(0),
            validity_end: Some(validity_end),
            auto_suspend_over_quota: auto_suspend,
        }),
        real_name: real_name as i32,
        stage: stage as i32,
        balance_fen: row.balance_fen.unwrap_or(0),
        cycle_usage_bytes: row.cycle_usage_bytes.unwrap_or(0),
        account_id: row.account_id,
    })
}

/// RFC 3339, or a date meaning "valid through that day", which in China is a Shanghai day.
fn validity_end(raw: &str) -> Result<prost_types::Timestamp, String> {
    let at = if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        t.timestamp()
    } else if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        let next = d
            .succ_opt()
            .and_then(|n| n.and_hms_opt(0, 0, 0))
            .and_then(|n| Shanghai.from_local_datetime(&n).single())
            .ok_or_else(|| format!("{raw:?} is not a day that can be ended"))?;
        next.timestamp()
    } else {
        return Err(format!(
            "{raw:?} is neither an RFC 3339 time (2027-06-30T16:00:00Z) nor a date (2027-06-30)"
        ));
    };
    Ok(prost_types::Timestamp {
        seconds: at,
        nanos: 0,
    })
}

/// The idempotency key of one call: its position and a hash of exactly the cards it carries, so
/// a repeat of the same call replays and a call whose cards changed is a new request.
fn chunk_key(index: usize, cards: &[pb::CardInput]) -> String {
    let mut hash = Sha256::new();
    for c in cards {
        hash.update(c.encode_length_delimited_to_vec());
    }
    let digest: String = hash.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("csv-import-{index}-{digest}")
}

pub(super) async fn run(mut cards: Cards, args: ImportArgs, out: &Printer) -> Result<(), Failure> {
    let path = args.file.display().to_string();
    let data = std::fs::read(&args.file).map_err(|e| Failure::Other(format!("{path}: {e}")))?;
    let parsed = parse(&data).map_err(|problems| {
        let mut text = format!("{path}: {} problem(s), nothing imported:", problems.len());
        for p in problems.iter().take(MAX_LISTED) {
            text.push_str(&format!("\n  {p}"));
        }
        if problems.len() > MAX_LISTED {
            text.push_str(&format!("\n  ... and {} more", problems.len() - MAX_LISTED));
        }
        Failure::Other(text)
    })?;
    let total = parsed.cards.len();
    let batch = (args.batch.clamp(1, MAX_BATCH)) as usize;
    let bar = if args.quiet || !std::io::stderr().is_terminal() {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total as u64)
    };
    if let Ok(style) =
        ProgressStyle::with_template("{bar:40.cyan/blue} {pos}/{len} cards ({per_sec}, ETA {eta})")
    {
        bar.set_style(style);
    }
    let mut summary = pb::ImportCardsResponse::default();
    let mut calls = 0usize;
    for (index, chunk) in parsed.cards.chunks(batch).enumerate() {
        let first_row = index * batch;
        let request = pb::ImportCardsRequest {
            cards: chunk.to_vec(),
            request_id: chunk_key(index, chunk),
        };
        let answer = match cards.import_cards(request).await {
            Ok(a) => a.into_inner(),
            Err(status) => {
                bar.abandon();
                return Err(refusal(&status, &parsed.lines, first_row, &summary, &path));
            }
        };
        calls += 1;
        summary.imported += answer.imported;
        summary
            .warnings
            .extend(answer.warnings.into_iter().map(|mut w| {
                w.row += first_row as u32;
                w
            }));
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    if out.is_json() {
        // The answers of every call as one ImportCardsResponse; a warning's row is its data row
        // in the file (0 = the first card).
        return out.json(&summary, "simgate.v1.ImportCardsResponse");
    }
    out.line(&format!(
        "Imported {} of {total} cards from {path} in {calls} call(s).",
        summary.imported
    ))?;
    if !summary.warnings.is_empty() {
        out.line(&format!("{} warning(s):", summary.warnings.len()))?;
        for w in summary.warnings.iter().take(MAX_LISTED) {
            let line = parsed.lines.get(w.row as usize).copied().unwrap_or(0);
            out.line(&format!("  line {line} ({}): {}", w.iccid, w.message))?;
        }
        if summary.warnings.len() > MAX_LISTED {
            out.line(&format!(
                "  ... and {} more (--output json lists all)",
                summary.warnings.len() - MAX_LISTED
            ))?;
        }
    }
    Ok(())
}

/// The server's refusal with each `cards[i].field` it names turned into a CSV line and column,
/// plus what was imported before it.
fn refusal(
    status: &tonic::Status,
    lines: &[u64],
    first_row: usize,
    done: &pb::ImportCardsResponse,
    path: &str,
) -> Failure {
    let mut text = super::output::describe_status(status);
    let details = status.get_error_details();
    let fields = details
        .bad_request()
        .map(|b| b.field_violations.clone())
        .unwrap_or_default();
    for v in fields {
        if let Some((row, column)) = row_of(&v.field) {
            let line = lines
                .get(first_row + row)
                .map_or_else(|| "?".to_string(), |l| l.to_string());
            text.push_str(&format!(
                "\n  {path} line {line}, column {column}: {}",
                v.description
            ));
        }
    }
    text.push_str(&format!(
        "\n{} card(s) of {path} were imported before this call; the rest were not. Fix the \
         line(s) and run the same command again: the calls that succeeded are not repeated.",
        done.imported
    ));
    Failure::Explained(text)
}

/// `cards[12].plan.validity_end` -> (12, `validity_end`): the row in the call and the CSV column.
fn row_of(field: &str) -> Option<(usize, String)> {
    let rest = field.strip_prefix("cards[")?;
    let (index, rest) = rest.split_once(']')?;
    let row = index.parse().ok()?;
    let column = rest.trim_start_matches('.');
    let column = column.strip_prefix("plan.").unwrap_or(column);
    let column = if column.is_empty() { "-" } else { column };
    Some((row, column.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEADER: &str = "iccid,carrier,customer_id,monthly_quota_bytes,validity_end\n";

    #[test]
    fn rows_become_card_inputs_with_their_lines() {
        let csv = format!(
            "{HEADER}89860117750006390067,unicom,acme,1024,2027-06-30\n\
             898602D9981700140197,CARRIER_CHINA_MOBILE,acme,2048,2027-06-30T16:00:00Z\n"
        );
        let p = parse(csv.as_bytes()).expect("valid");
        assert_eq!(p.lines, vec![2, 3]);
        assert_eq!(p.cards[0].carrier, pb::Carrier::ChinaUnicom as i32);
        assert_eq!(p.cards[1].carrier, pb::Carrier::ChinaMobile as i32);
        // A date means through that day in Shanghai: the same instant as 16:00 UTC.
        assert_eq!(
            p.cards[0].plan.as_ref().and_then(|p| p.validity_end),
            p.cards[1].plan.as_ref().and_then(|p| p.validity_end)
        );
    }

    #[test]
    fn every_bad_line_is_named_with_its_column() {
        let csv = format!(
            "{HEADER}89860117750006390067,unicom,acme,lots,2027-06-30\n\
             898602D9981700140197,cmcc,acme,1,2027-06-30\n\
             8986031630200230821,telecom,acme,1,someday\n"
        );
        let problems = parse(csv.as_bytes()).err().expect("refused");
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems[0].starts_with("line 2, column monthly_quota_bytes"),
            "{problems:?}"
        );
        assert!(
            problems[1].starts_with("line 3, column carrier"),
            "{problems:?}"
        );
        assert!(
            problems[2].starts_with("line 4, column validity_end"),
            "{problems:?}"
        );
    }

    #[test]
    fn unknown_and_missing_columns_are_refused_by_name() {
        let problems = parse(b"iccid,carrier,customer,monthly_quota_bytes\n1,2,3,4\n")
            .err()
            .expect("refused");
        let text = problems.join("\n");
        assert!(text.contains("column \"customer\" is not"), "{text}");
        assert!(text.contains("\"customer_id\" is missing"), "{text}");
        assert!(text.contains("\"validity_end\" is missing"), "{text}");
    }

    #[test]
    fn server_fields_map_to_rows_and_columns() {
        assert_eq!(
            row_of("cards[12].plan.validity_end"),
            Some((12, "validity_end".into()))
        );
        assert_eq!(row_of("cards[0].iccid"), Some((0, "iccid".into())));
        assert_eq!(row_of("request_id"), None);
    }

    #[test]
    fn chunk_keys_follow_the_content() {
        let csv = format!("{HEADER}89860117750006390067,unicom,acme,1024,2027-06-30\n");
        let p = parse(csv.as_bytes()).expect("valid");
        let mut other = p.cards.clone();
        other[0].customer_id = "globex".into();
        assert_eq!(chunk_key(0, &p.cards), chunk_key(0, &p.cards));
        assert_ne!(chunk_key(0, &p.cards), chunk_key(0, &other));
        assert_ne!(chunk_key(0, &p.cards), chunk_key(1, &p.cards));
        assert!(chunk_key(0, &p.cards).len() <= 128);
    }
}
