//! How answers and errors look: tables and plain text for people, canonical proto3 JSON (through
//! the descriptor set, never a hand-written serializer) for scripts, and gRPC errors with their
//! google.rpc details in plain words.

use std::io::Write;

use chrono::{DateTime, Utc};
use chrono_tz::Asia::Shanghai;
use comfy_table::{presets, ContentArrangement, Table};
use indicatif::HumanBytes;
use prost_reflect::{DescriptorPool, DynamicMessage};
use tonic_types::StatusExt;

use super::values::*;
use super::{Failure, Output};
use crate::domain::Fen;
use crate::pb;

/// Writes answers to stdout in the chosen form.
pub struct Printer {
    pub output: Output,
    /// Decoded only when JSON is asked for.
    pool: Option<DescriptorPool>,
}

impl Printer {
    pub fn new(output: Output) -> Result<Printer, Failure> {
        let pool = match output {
            Output::Table => None,
            Output::Json => Some(
                DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).map_err(|e| {
                    Failure::Other(format!(
                        "the built-in proto descriptors are unreadable: {e}"
                    ))
                })?,
            ),
        };
        Ok(Printer { output, pool })
    }

    pub fn is_json(&self) -> bool {
        self.output == Output::Json
    }

    /// `msg` as canonical proto3 JSON; `full_name` is its proto type (`simgate.v1.Card`).
    pub fn json_value<M: prost::Message>(
        &self,
        msg: &M,
        full_name: &str,
    ) -> Result<serde_json::Value, Failure> {
        let pool = self.pool.as_ref().ok_or_else(|| {
            Failure::Other("JSON output needs the proto descriptors, which were not loaded".into())
        })?;
        let desc = pool
            .get_message_by_name(full_name)
            .ok_or_else(|| Failure::Other(format!("no proto message named {full_name}")))?;
        let dynamic = DynamicMessage::decode(desc, msg.encode_to_vec().as_slice())
            .map_err(|e| Failure::Other(format!("cannot re-read a {full_name}: {e}")))?;
        serde_json::to_value(&dynamic)
            .map_err(|e| Failure::Other(format!("cannot write a {full_name} as JSON: {e}")))
    }

    /// One message, pretty-printed.
    pub fn json<M: prost::Message>(&self, msg: &M, full_name: &str) -> Result<(), Failure> {
        let value = self.json_value(msg, full_name)?;
        let text = serde_json::to_string_pretty(&value)
            .map_err(|e| Failure::Other(format!("cannot write JSON: {e}")))?;
        self.line(&text)
    }

    /// One message on one line (JSON Lines), for streams of cards.
    pub fn json_line<M: prost::Message>(&self, msg: &M, full_name: &str) -> Result<(), Failure> {
        let value = self.json_value(msg, full_name)?;
        self.line(&value.to_string())
    }

    pub fn line(&self, text: &str) -> Result<(), Failure> {
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}")
            .and_then(|()| out.flush())
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::BrokenPipe => Failure::OutputClosed,
                _ => Failure::Other(format!("cannot write to standard output: {e}")),
            })
    }
}

pub fn new_table() -> Table {
    let mut t = Table::new();
    t.load_style(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic);
    t
}

pub fn money(fen: i64) -> String {
    Fen(fen).to_string()
}

pub fn bytes(n: u64) -> String {
    HumanBytes(n).to_string()
}

/// Shanghai time: the carriers' billing days and expiries are Shanghai days.
pub fn time(t: Option<&prost_types::Timestamp>) -> String {
    let Some(t) = t else {
        return "-".into();
    };
    match DateTime::<Utc>::from_timestamp(t.seconds, t.nanos.clamp(0, 999_999_999) as u32) {
        Some(d) => d
            .with_timezone(&Shanghai)
            .format("%Y-%m-%d %H:%M %:z")
            .to_string(),
        None => format!("{}s", t.seconds),
    }
}

fn usage(card: &pb::Card) -> String {
    match &card.plan {
        Some(p) => format!(
            "{} / {}",
            bytes(card.cycle_usage_bytes),
            bytes(p.monthly_quota_bytes)
        ),
        None => bytes(card.cycle_usage_bytes),
    }
}

/// One row per card: what a person scans a list for.
pub fn cards_table(cards: &[pb::Card]) -> Table {
    let mut t = new_table();
    t.set_header([
        "ICCID",
        "CARRIER",
        "CUSTOMER",
        "STATUS",
        "REASONS",
        "BALANCE",
        "USAGE / QUOTA",
        "VALID UNTIL",
    ]);
    for c in cards {
        t.add_row([
            c.iccid.clone(),
            carrier_name(c.carrier),
            c.customer_id.clone(),
            status_name(c.status),
            reasons(&c.stop_reasons),
            money(c.balance_fen),
            usage(c),
            time(c.plan.as_ref().and_then(|p| p.validity_end.as_ref())),
        ]);
    }
    t
}

/// Everything about one card, one field a line.
pub fn card_detail(c: &pb::Card) -> Table {
    let mut t = new_table();
    let or_dash = |s: &str| {
        if s.is_empty() {
            "-".to_string()
        } else {
            s.to_string()
        }
    };
    let mut rows: Vec<(&str, String)> = vec![
        ("ICCID", c.iccid.clone()),
        ("MSISDN", or_dash(&c.msisdn)),
        ("IMSI", or_dash(&c.imsi)),
        ("carrier", carrier_name(c.carrier)),
        ("customer", c.customer_id.clone()),
        ("status", status_name(c.status)),
        ("stop reasons", reasons(&c.stop_reasons)),
        ("stage", stage_name(c.stage)),
        ("real-name", real_name_name(c.real_name)),
        ("balance", money(c.balance_fen)),
        ("usage / quota", usage(c)),
    ];
    if let Some(p) = &c.plan {
        rows.push(("monthly fee", money(p.monthly_fee_fen)));
        rows.push(("valid until", time(p.validity_end.as_ref())));
        let auto = if p.auto_suspend_over_quota {
            "yes"
        } else {
            "no"
        };
        rows.push(("stop when over quota", auto.into()));
    }
    if c.retention_ends_at.is_some() {
        rows.push(("number kept until", time(c.retention_ends_at.as_ref())));
    }
    if c.expiry_restore_at.is_some() {
        rows.push(("restored at", time(c.expiry_restore_at.as_ref())));
    }
    if c.arrears_paid_awaiting_resume {
        rows.push((
            "arrears",
            "paid; `simgate card resume` restores the card".into(),
        ));
    }
    if let Some(p) = &c.pending_change {
        let action = pb::CarrierAction::try_from(p.action)
            .map(|a| {
                a.as_str_name()
                    .trim_start_matches("CARRIER_ACTION_")
                    .to_lowercase()
            })
            .unwrap_or_else(|_| p.action.to_string());
        rows.push((
            "pending change",
            format!(
                "{action} sent {}; outcome not known yet, settled from the carrier's state",
                time(p.since.as_ref())
            ),
        ));
    }
    if let Some(d) = &c.drift {
        rows.push((
            "drift",
            format!(
                "the carrier shows {} where the card implies {} (since {})",
                d.carrier_state,
                d.expected_state,
                time(d.since.as_ref())
            ),
        ));
    }
    for w in &c.warnings {
        rows.push(("warning", w.clone()));
    }
    rows.push(("updated", time(c.updated_at.as_ref())));
    rows.push(("version", c.version.to_string()));
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t
}

pub fn usage_table(u: &pb::Usage) -> Table {
    let mut t = new_table();
    let rows = [
        ("ICCID", u.iccid.clone()),
        (
            "cycle",
            format!(
                "{} to {}",
                time(u.cycle_start.as_ref()),
                time(u.cycle_end.as_ref())
            ),
        ),
        ("used", bytes(u.used_bytes)),
        ("quota", bytes(u.quota_bytes)),
        ("remaining", bytes(u.remaining_bytes)),
        (
            "used share",
            format!("{}.{}%", u.used_permille / 10, u.used_permille % 10),
        ),
        ("over quota", if u.over_quota { "yes" } else { "no" }.into()),
    ];
    for (k, v) in rows {
        t.add_row([k.to_string(), v]);
    }
    t
}

pub fn events_table(events: &[pb::CardEvent]) -> Table {
    let mut t = new_table();
    t.set_header([
        "AT", "EVENT", "CAUSE", "AMOUNT", "STATUS", "REASONS", "BALANCE",
    ]);
    for e in events {
        let amount = if e.amount_fen == 0 {
            "-".into()
        } else {
            money(e.amount_fen)
        };
        t.add_row([
            time(e.at.as_ref()),
            e.kind.clone(),
            e.cause.clone(),
            amount,
            status_name(e.status),
            reasons(&e.stop_reasons),
            money(e.balance_fen),
        ]);
    }
    t
}

fn evidence(e: &pb::Evidence) -> String {
    let value = match e.unit.as_str() {
        "fen" => money(e.value),
        "bytes" => bytes(e.value.max(0) as u64),
        "permille" => format!("{}.{}%", e.value / 10, (e.value % 10).abs()),
        "unix_seconds" => time(Some(&prost_types::Timestamp {
            seconds: e.value,
            nanos: 0,
        })),
        "" => e.value.to_string(),
        unit => format!("{} {unit}", e.value),
    };
    format!("{} = {value}", e.name)
}

/// The verdict, then each finding with its evidence and its steps, in the order to take them.
pub fn diagnosis_text(d: &pb::Diagnosis) -> String {
    let mut out = format!(
        "{}  verdict: {}  status: {}  ({}, {})\n{}\n",
        d.iccid,
        verdict_name(d.verdict),
        status_name(d.status),
        d.language,
        time(d.diagnosed_at.as_ref()),
        d.summary.trim_end()
    );
    if d.findings.is_empty() {
        out.push_str("\nNo findings.\n");
    }
    for (i, f) in d.findings.iter().enumerate() {
        out.push_str(&format!(
            "\n{}. [{}] {}\n   {}\n",
            i + 1,
            severity_name(f.severity),
            f.code,
            f.message
        ));
        if !f.evidence.is_empty() {
            let ev: Vec<String> = f.evidence.iter().map(evidence).collect();
            out.push_str(&format!("   evidence: {}\n", ev.join("; ")));
        }
        for (j, s) in f.steps.iter().enumerate() {
            let mut notes = Vec::new();
            if !s.rpc.is_empty() {
                notes.push(format!("via {}", s.rpc));
            }
            if s.months > 0 {
                notes.push(format!("{} months", s.months));
            }
            if s.cost_fen != 0 {
                notes.push(format!("cost {}", money(s.cost_fen)));
            }
            if s.takes_effect_at.is_some() {
                notes.push(format!("takes effect {}", time(s.takes_effect_at.as_ref())));
            }
            if s.optional {
                notes.push("optional".into());
            }
            let notes = if notes.is_empty() {
                String::new()
            } else {
                format!(" ({})", notes.join(", "))
            };
            out.push_str(&format!(
                "   step {} ({}): {}{}\n",
                j + 1,
                action_name(s.action),
                s.text,
                notes
            ));
        }
    }
    out
}

/// `InvalidArgument` as gRPC spells it: `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> String {
    let mut name = String::new();
    for (i, ch) in format!("{code:?}").chars().enumerate() {
        if ch.is_ascii_uppercase() && i > 0 {
            name.push('_');
        }
        name.push(ch.to_ascii_uppercase());
    }
    name
}

/// A refusal with everything its google.rpc details say, one fact a line.
pub fn describe_status(s: &tonic::Status) -> String {
    let mut out = format!("error: {}: {}", code_name(s.code()), s.message());
    let mut source = std::error::Error::source(s);
    while let Some(e) = source {
        out.push_str(&format!(": {e}"));
        source = e.source();
    }
    let d = s.get_error_details();
    if let Some(info) = d.error_info() {
        out.push_str(&format!("\n  reason: {}", info.reason));
        let mut meta: Vec<_> = info.metadata.iter().collect();
        meta.sort();
        for (k, v) in meta {
            out.push_str(&format!("\n  {k}: {v}"));
        }
    }
    if let Some(b) = d.bad_request() {
        for v in &b.field_violations {
            out.push_str(&format!("\n  field {}: {}", v.field, v.description));
        }
    }
    if let Some(p) = d.precondition_failure() {
        for v in &p.violations {
            out.push_str(&format!("\n  precondition {}: {}", v.r#type, v.description));
        }
    }
    if let Some(r) = d.resource_info() {
        if !r.description.is_empty() {
            out.push_str(&format!(
                "\n  {} {}: {}",
                r.resource_type, r.resource_name, r.description
            ));
        }
    }
    if let Some(delay) = d.retry_info().and_then(|r| r.retry_delay) {
        out.push_str(&format!(
            "\n  retry after {}",
            humantime::format_duration(delay)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn code_names_are_the_grpc_spelling() {
        assert_eq!(code_name(tonic::Code::InvalidArgument), "INVALID_ARGUMENT");
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
    }

    #[test]
    fn field_violations_are_named_in_the_error_text() {
        let mut d = tonic_types::ErrorDetails::new();
        d.add_bad_request_violation("amount_fen", "must be 1..=10000000 fen");
        let s = tonic::Status::with_error_details(tonic::Code::InvalidArgument, "bad", d);
        let text = describe_status(&s);
        assert!(text.starts_with("error: INVALID_ARGUMENT: bad"), "{text}");
        assert!(
            text.contains("field amount_fen: must be 1..=10000000 fen"),
            "{text}"
        );
    }

    #[test]
    fn times_are_shown_in_shanghai() {
        let t = prost_types::Timestamp {
            seconds: 1_782_835_200, // 2026-06-30T16:00:00Z
            nanos: 0,
        };
        assert_eq!(time(Some(&t)), "2026-07-01 00:00 +08:00");
    }

    #[test]
    fn json_is_canonical_proto3() {
        let p = Printer::new(Output::Json).expect("descriptors");
        let card = pb::Card {
            iccid: "89860117750006390067".into(),
            carrier: pb::Carrier::ChinaUnicom as i32,
            balance_fen: 1200,
            ..Default::default()
        };
        let v = p.json_value(&card, "simgate.v1.Card").expect("json");
        assert_eq!(v["iccid"], "89860117750006390067");
        assert_eq!(v["carrier"], "CARRIER_CHINA_UNICOM");
        // int64 is a string in proto3 JSON; defaults are left out.
        assert_eq!(v["balanceFen"], "1200");
        assert!(v.get("version").is_none());
    }
}
