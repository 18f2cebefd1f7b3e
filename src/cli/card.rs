//! `simgate card ...`: one subcommand per CardService call on one card (plus `list`), each
//! printing its answer as a table or as proto3 JSON. Changes carry an idempotency key so that a
//! person can retry one whose answer was lost without changing the card twice.

use clap::{Args, Subcommand};

use super::output::{self, Printer};
use super::values::{CarrierArg, LangArg, ReasonArg, StatusArg};
use super::{Cards, Failure};
use crate::pb;

#[derive(Subcommand)]
pub enum CardCommand {
    /// Show one card.
    Get { iccid: String },
    /// List cards in ICCID order, optionally filtered.
    ///
    /// Without --all, one page is shown and the next page's token is printed to stderr. With
    /// --output json: one ListCardsResponse object; with --all and --output json: JSON Lines,
    /// one Card object per line, across every page.
    List(ListArgs),
    /// Stop a card by hand (人工停用). Refused while its plan has expired, it is in arrears or it
    /// is over quota.
    Suspend {
        iccid: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Clear a manual stop (and arrears once paid, on carriers that need it). Other stop reasons
    /// remain.
    Resume {
        iccid: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Add money to a card's balance.
    Recharge {
        iccid: String,
        /// Amount in fen (1 yuan = 100 fen): 1 to 10,000,000.
        #[arg(long, value_name = "FEN", allow_negative_numbers = true)]
        amount_fen: i64,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Extend the plan by 1-60 months (from its end, or from now if it has expired).
    Renew {
        iccid: String,
        /// Months to add: 1 to 60.
        #[arg(long)]
        months: u32,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// Record that the card's real-name verification (实名认证) is done.
    VerifyRealName {
        iccid: String,
        #[command(flatten)]
        change: ChangeArgs,
    },
    /// This billing cycle's usage against the quota, read from the carrier.
    Usage { iccid: String },
    /// The card's history, oldest first.
    Events {
        iccid: String,
        /// Events per page: 1 to 1000.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
        page_size: i32,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
    },
    /// Why the card does not work (or soon will not), and what to do, in order.
    Diagnose {
        iccid: String,
        /// Language of the texts (default: the server's, English).
        #[arg(long, value_enum)]
        lang: Option<LangArg>,
    },
}

#[derive(Args)]
pub struct ListArgs {
    #[arg(long, value_enum)]
    pub carrier: Option<CarrierArg>,
    #[arg(long, value_enum)]
    pub status: Option<StatusArg>,
    /// Customer id.
    #[arg(long, value_name = "ID")]
    pub customer: Option<String>,
    /// Only cards stopped for this reason.
    #[arg(long, value_enum)]
    pub stop_reason: Option<ReasonArg>,
    /// Only the members of this pool (of --customer: pool ids are per customer).
    #[arg(long, value_name = "POOL_ID")]
    pub pool: Option<String>,
    /// Only the cards on this carrier account.
    #[arg(long, value_name = "ACCOUNT_ID")]
    pub account: Option<String>,
    /// Cards per page: 1 to 1000.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i32).range(1..=1000))]
    pub page_size: i32,
    /// Continue from the token a previous page printed.
    #[arg(long, conflicts_with = "all")]
    pub page_token: Option<String>,
    /// Follow the pages to the last one.
    #[arg(long)]
    pub all: bool,
}

#[derive(Args)]
pub struct ChangeArgs {
    /// Idempotency key (1-128 visible ASCII characters: letters, digits and punctuation, no spaces). Repeating a change with the same key
    /// returns the first answer and changes nothing. Default: a new random key.
    #[arg(long, value_name = "KEY")]
    pub idempotency_key: Option<String>,
}

impl ChangeArgs {
    fn key(&self) -> String {
        self.idempotency_key
            .clone()
            .unwrap_or_else(|| format!("cli-{}", uuid::Uuid::new_v4()))
    }
}

pub(super) async fn run(mut cards: Cards, cmd: CardCommand, out: &Printer) -> Result<(), Failure> {
    match cmd {
        CardCommand::Get { iccid } => {
            let card = cards
                .get_card(pb::GetCardRequest { iccid })
                .await?
                .into_inner();
            print_card(out, &card)
        }
        CardCommand::List(args) => list(&mut cards, args, out).await,
        CardCommand::Suspend { iccid, change } => {
            let request_id = change.key();
            let r = cards
                .suspend_card(pb::SuspendCardRequest {
                    iccid,
                    request_id: request_id.clone(),
                })
                .await;
            print_card(out, &retry_hint(r, &request_id)?.into_inner())
        }
        CardCommand::Resume { iccid, change } => {
            let request_id = change.key();
            let r = cards
                .resume_card(pb::ResumeCardRequest {
                    iccid,
                    request_id: request_id.clone(),
                })
                .await;
            print_card(out, &retry_hint(r, &request_id)?.into_inner())
        }
        CardCommand::Recharge {
            iccid,
            amount_fen,
            change,
        } => {
            let request_id = change.key();
            let r = cards
                .recharge(pb::RechargeRequest {
                    iccid,
                    amount_fen,
                    request_id: request_id.clone(),
                })
                .await;
            let r = retry_hint(r, &request_id)?.into_inner();
            if out.is_json() {
                return out.json(&r, "simgate.v1.RechargeResponse");
            }
            out.line(&format!(
                "balance {} -> {}",
                output::money(r.balance_before_fen),
                output::money(r.balance_after_fen)
            ))?;
            match &r.card {
                Some(card) => out.line(&output::card_detail(card).to_string()),
                None => Ok(()),
            }
        }
        CardCommand::Renew {
            iccid,
            months,
            change,
        } => {
            let request_id = change.key();
            let r = cards
                .renew_plan(pb::RenewPlanRequest {
                    iccid,
                    months,
                    request_id: request_id.clone(),
                })
                .await;
            print_card(out, &retry_hint(r, &request_id)?.into_inner())
        }
        CardCommand::VerifyRealName { iccid, change } => {
            let request_id = change.key();
            let r = cards
                .verify_real_name(pb::VerifyRealNameRequest {
                    iccid,
                    request_id: request_id.clone(),
                })
                .await;
            print_card(out, &retry_hint(r, &request_id)?.into_inner())
        }
        CardCommand::Usage { iccid } => {
            let u = cards
                .get_usage(pb::GetUsageRequest { iccid })
                .await?
                .into_inner();
            if out.is_json() {
                return out.json(&u, "simgate.v1.Usage");
            }
            out.line(&output::usage_table(&u).to_string())
        }
        CardCommand::Events {
            iccid,
            page_size,
            all,
        } => events(&mut cards, iccid, page_size, all, out).await,
        CardCommand::Diagnose { iccid, lang } => {
            let d = cards
                .diagnose_card(pb::DiagnoseCardRequest {
                    iccid,
                    language: lang.map(|l| l.tag().to_string()).unwrap_or_default(),
                })
                .await?
                .into_inner();
            if out.is_json() {
                return out.json(&d, "simgate.v1.Diagnosis");
            }
            out.line(output::diagnosis_text(&d).trim_end())
        }
    }
}

fn print_card(out: &Printer, card: &pb::Card) -> Result<(), Failure> {
    if out.is_json() {
        return out.json(card, "simgate.v1.Card");
    }
    out.line(&output::card_detail(card).to_string())
}

/// A change whose answer may have been lost: say how to retry it without doing it twice.
fn retry_hint<T>(
    r: Result<tonic::Response<T>, tonic::Status>,
    request_id: &str,
) -> Result<tonic::Response<T>, Failure> {
    use tonic::Code;
    match r {
        Ok(r) => Ok(r),
        Err(s) => {
            if matches!(
                s.code(),
                Code::Unavailable
                    | Code::DeadlineExceeded
                    | Code::Aborted
                    | Code::Unknown
                    | Code::Internal
                    | Code::Cancelled
            ) {
                eprintln!(
                    "note: the change may or may not have been made; repeat the command with \
                     --idempotency-key {request_id} to retry it safely"
                );
            }
            Err(Failure::Status(s))
        }
    }
}

async fn list(cards: &mut Cards, args: ListArgs, out: &Printer) -> Result<(), Failure> {
    let mut req = pb::ListCardsRequest {
        page_size: args.page_size,
        page_token: args.page_token.unwrap_or_default(),
        carrier: args.carrier.map_or(0, |c| c.to_pb() as i32),
        customer_id: args.customer.unwrap_or_default(),
        status: args.status.map_or(0, |s| s.to_pb() as i32),
        stop_reason: args.stop_reason.map_or(0, |r| r.to_pb() as i32),
        unassigned: false,
        pool_id: args.pool.unwrap_or_default(),
        account_id: args.account.unwrap_or_default(),
    };
    if !args.all {
        let page = cards.list_cards(req).await?.into_inner();
        if out.is_json() {
            return out.json(&page, "simgate.v1.ListCardsResponse");
        }
        out.line(&output::cards_table(&page.cards).to_string())?;
        if !page.next_page_token.is_empty() {
            eprintln!(
                "more cards: add --page-token {} (or use --all)",
                page.next_page_token
            );
        }
        return Ok(());
    }
    // Tables need every row before they can size their columns; JSON Lines stream page by page.
    let mut all = Vec::new();
    loop {
        let page = cards.list_cards(req.clone()).await?.into_inner();
        if out.is_json() {
            for c in &page.cards {
                out.json_line(c, "simgate.v1.Card")?;
            }
        } else {
            all.extend(page.cards);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        req.page_token = page.next_page_token;
    }
    if !out.is_json() {
        out.line(&output::cards_table(&all).to_string())?;
        eprintln!("{} cards", all.len());
    }
    Ok(())
}

async fn events(
    cards: &mut Cards,
    iccid: String,
    page_size: i32,
    all: bool,
    out: &Printer,
) -> Result<(), Failure> {
    let mut req = pb::ListCardEventsRequest {
        iccid,
        page_size,
        page_token: String::new(),
    };
    let mut events = Vec::new();
    loop {
        let page = cards.list_card_events(req.clone()).await?.into_inner();
        if out.is_json() && !all {
            return out.json(&page, "simgate.v1.ListCardEventsResponse");
        }
        if out.is_json() {
            for e in &page.events {
                out.json_line(e, "simgate.v1.CardEvent")?;
            }
        } else {
            events.extend(page.events);
        }
        if page.next_page_token.is_empty() {
            break;
        }
        if !all {
            eprintln!("more events: use --all");
            break;
        }
        req.page_token = page.next_page_token;
    }
    if !out.is_json() {
        out.line(&output::events_table(&events).to_string())?;
    }
    Ok(())
}
