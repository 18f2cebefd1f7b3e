//! Alert rules and the usage history.

use tonic::{Request, Response, Status};

use crate::api::convert::{self, timestamp};
use crate::api::error::{invalid_argument, invalid_field};
use crate::api::rpc::Rpc;
use crate::domain::alerts::AlertRules;
use crate::pb;

use super::{own_customer, MonitoringApi};

const MAX_HISTORY_DAYS: u32 = 400;

fn rules_to_pb(customer: &str, r: &AlertRules, customised: bool) -> pb::AlertRules {
    pb::AlertRules {
        customer_id: customer.to_string(),
        card_usage_permille: r.card_usage_permille.clone(),
        pool_usage_permille: r.pool_usage_permille.clone(),
        validity_days: r.validity_days.clone(),
        balance_below_next_fee: r.balance_below_next_fee,
        retention_cancel_days: r.retention_cancel_days.clone(),
        card_stopped: r.card_stopped,
        card_restored: r.card_restored,
        customised,
    }
}

impl MonitoringApi {
    pub(super) async fn get_alert_rules(
        &self,
        request: Request<pb::GetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetAlertRules).await?;
        let customer = convert::customer_id_field("customer_id", &request.get_ref().customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        own_customer(&caller, &customer)?;
        let (rules, customised) = self.service.get_alert_rules(&customer, &caller).await?;
        Ok(Response::new(rules_to_pb(&customer, &rules, customised)))
    }

    pub(super) async fn set_alert_rules(
        &self,
        request: Request<pb::SetAlertRulesRequest>,
    ) -> Result<Response<pb::AlertRules>, Status> {
        let caller = self.auth.caller(&request, Rpc::SetAlertRules).await?;
        let r = request
            .into_inner()
            .rules
            .ok_or_else(|| invalid_field("rules", "is required"))?;
        let customer = convert::customer_id_field("rules.customer_id", &r.customer_id)
            .map_err(|v| invalid_argument(vec![v]))?;
        own_customer(&caller, &customer)?;
        let rules = AlertRules {
            card_usage_permille: r.card_usage_permille,
            pool_usage_permille: r.pool_usage_permille,
            validity_days: r.validity_days,
            balance_below_next_fee: r.balance_below_next_fee,
            retention_cancel_days: r.retention_cancel_days,
            card_stopped: r.card_stopped,
            card_restored: r.card_restored,
        };
        let rules = self
            .service
            .set_alert_rules(&customer, rules, &caller)
            .await?;
        Ok(Response::new(rules_to_pb(&customer, &rules, true)))
    }

    pub(super) async fn get_usage_history(
        &self,
        request: Request<pb::GetUsageHistoryRequest>,
    ) -> Result<Response<pb::UsageHistory>, Status> {
        let caller = self.auth.caller(&request, Rpc::GetUsageHistory).await?;
        let req = request.into_inner();
        let iccid =
            convert::iccid_field("iccid", &req.iccid).map_err(|v| invalid_argument(vec![v]))?;
        let days = match req.days {
            0 => 31,
            d if d <= MAX_HISTORY_DAYS => d,
            _ => {
                return Err(invalid_field(
                    "days",
                    format!("must be 1..={MAX_HISTORY_DAYS} (0 means 31)"),
                ))
            }
        };
        let history = self.service.usage_history(&iccid, days, &caller).await?;
        let total: u64 = history.iter().map(|d| d.bytes).sum();
        Ok(Response::new(pb::UsageHistory {
            iccid: iccid.as_str().to_string(),
            average_bytes_per_day: total / u64::from(days),
            days: history
                .iter()
                .map(|d| pb::DailyUsage {
                    day: Some(timestamp(d.day)),
                    bytes: d.bytes,
                })
                .collect(),
        }))
    }
}
