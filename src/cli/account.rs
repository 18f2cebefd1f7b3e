//! `simgate account list|get`: the server's carrier accounts with their platform, health,
//! budget use, open intents and cards (CarrierAccountService; reseller admin keys only).

use clap::Subcommand;

use super::output::{new_table, time, Printer};
use super::values::{carrier_name, CarrierArg};
use super::{Accounts, Failure};
use crate::pb;

#[derive(Subcommand)]
pub enum AccountCommand {
    /// Every account (or one carrier's), one row each.
    List {
        #[arg(long, value_enum)]
        carrier: Option<CarrierArg>,
    },
    /// One account in detail, with its calls in the last minute per platform method.
    Get {
        /// The account id, as configured in `[[accounts]]`.
        account_id: String,
    },
}

fn breaker(h: Option<&pb::AccountHealth>) -> String {
    match h.map(|h| h.breaker()) {
        Some(pb::BreakerState::Open) => {
            format!("OPEN until {}", time(h.and_then(|h| h.open_until.as_ref())))
        }
        Some(pb::BreakerState::Closed) => "closed".into(),
        _ => "-".into(),
    }
}

pub async fn run(mut client: Accounts, cmd: AccountCommand, out: &Printer) -> Result<(), Failure> {
    match cmd {
        AccountCommand::List { carrier } => {
            let list = client
                .list_carrier_accounts(pb::ListCarrierAccountsRequest {
                    carrier: carrier.map_or(0, |c| c.to_pb() as i32),
                })
                .await
                .map_err(Failure::Status)?
                .into_inner();
            if out.is_json() {
                return out.json(&list, "simgate.v1.ListCarrierAccountsResponse");
            }
            let mut t = new_table();
            t.set_header([
                "ACCOUNT",
                "CARRIER",
                "PLATFORM",
                "CIRCUIT",
                "CALLS/MIN",
                "OPEN INTENTS",
                "CARDS",
            ]);
            for a in &list.accounts {
                t.add_row([
                    a.account_id.clone(),
                    carrier_name(a.carrier),
                    a.platform.clone(),
                    breaker(a.health.as_ref()),
                    a.budget
                        .as_ref()
                        .map_or(0, |b| b.calls_last_minute)
                        .to_string(),
                    a.open_intents.to_string(),
                    a.cards.to_string(),
                ]);
            }
            out.line(&t.to_string())
        }
        AccountCommand::Get { account_id } => {
            let a = client
                .get_carrier_account(pb::GetCarrierAccountRequest { account_id })
                .await
                .map_err(Failure::Status)?
                .into_inner();
            if out.is_json() {
                return out.json(&a, "simgate.v1.CarrierAccount");
            }
            let h = a.health.clone().unwrap_or_default();
            let b = a.budget.clone().unwrap_or_default();
            let limit = |n: u32| {
                if n == 0 {
                    "none".to_string()
                } else {
                    n.to_string()
                }
            };
            let mut t = new_table();
            for (k, v) in [
                ("account", a.account_id.clone()),
                ("carrier", carrier_name(a.carrier)),
                ("platform", a.platform.clone()),
                ("circuit", breaker(Some(&h))),
                ("failures in a row", h.consecutive_failures.to_string()),
                (
                    "last error",
                    if h.last_error.is_empty() {
                        "-".into()
                    } else {
                        format!("{} ({})", h.last_error, time(h.last_error_at.as_ref()))
                    },
                ),
                (
                    "in flight",
                    format!("{} of {}", h.in_flight, b.max_concurrency),
                ),
                ("requests/s", limit(b.requests_per_second)),
                ("requests/s per method", limit(b.method_requests_per_second)),
                ("calls in the last minute", b.calls_last_minute.to_string()),
                ("open intents", a.open_intents.to_string()),
                ("cards", a.cards.to_string()),
            ] {
                t.add_row([k.to_string(), v]);
            }
            for m in &b.methods {
                t.add_row([format!("  {}", m.method), m.calls_last_minute.to_string()]);
            }
            out.line(&t.to_string())
        }
    }
}
