//! Every RPC simgate serves and the permission it needs, in one table. The method names come
//! from the table (for the audit log) and the service names from the generated servers'
//! `SERVICE_NAME`; a unit test holds the table to the proto descriptors, so an RPC added to a
//! proto without an entry here (or an entry naming no RPC) fails the build's tests, and a
//! handler cannot name an RPC the table does not have.

use crate::auth::Permission;
use crate::pb;

macro_rules! rpcs {
    ($($server:ident { $($method:ident => $perm:ident,)* })*) => {
        /// One RPC of simgate's gRPC services.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Rpc {
            $($($method,)*)*
        }

        impl Rpc {
            /// Every RPC, service by service.
            pub const ALL: &'static [Rpc] = &[$($(Rpc::$method,)*)*];

            /// The method's name, as the proto and the audit log name it (`SuspendCard`).
            pub const fn name(self) -> &'static str {
                match self {
                    $($(Rpc::$method => stringify!($method),)*)*
                }
            }

            /// The full name of the service that serves it (`simgate.v1.CardService`).
            pub const fn service(self) -> &'static str {
                match self {
                    $($(Rpc::$method => pb::$server::SERVICE_NAME,)*)*
                }
            }

            /// What the caller's role must allow.
            pub const fn permission(self) -> Permission {
                match self {
                    $($(Rpc::$method => Permission::$perm,)*)*
                }
            }
        }
    };
}

rpcs! {
    card_service_server {
        ImportCards => Import,
        AssignCards => Import,
        GetCard => Read,
        ListCards => Read,
        SuspendCard => Operate,
        ResumeCard => Operate,
        Recharge => Operate,
        RenewPlan => Operate,
        VerifyRealName => Operate,
        GetUsage => Read,
        ListCardEvents => Read,
        DiagnoseCard => Read,
        RebindCard => Operate,
        ListCarrierOrders => Read,
    }
    simulator_service_server {
        GetClock => Simulate,
        AdvanceClock => Simulate,
        SetClock => Simulate,
        GetCarrierCard => Simulate,
        RecordUsage => Simulate,
        InjectFault => Simulate,
        SetFaults => Simulate,
        SetCarrierCardState => Simulate,
        BindCarrierCard => Simulate,
        MoveCarrierCard => Simulate,
        GetWireCalls => Simulate,
    }
    access_service_server {
        CreateApiKey => ManageKeys,
        ListApiKeys => ManageKeys,
        RevokeApiKey => ManageKeys,
        ListAuditEntries => ReadAudit,
    }
    operation_service_server {
        BatchSuspend => Operate,
        BatchResume => Operate,
        BatchRecharge => Operate,
        GetOperation => Read,
        ListOperations => Read,
        CancelOperation => Operate,
        WatchOperation => Read,
    }
    monitoring_service_server {
        CreatePool => Operate,
        GetPool => Read,
        ListPools => Read,
        AddCardsToPool => Operate,
        RemoveCardsFromPool => Operate,
        TopUpPool => Operate,
        GetAlertRules => Read,
        SetAlertRules => Operate,
        GetUsageHistory => Read,
        ListEvents => Read,
        WatchEvents => Read,
        CreateWebhook => Operate,
        ListWebhooks => Read,
        DeleteWebhook => Operate,
        ListWebhookDeliveries => Read,
        RetryWebhookDeliveries => Operate,
    }
    carrier_account_service_server {
        ListCarrierAccounts => ReadAccounts,
        GetCarrierAccount => ReadAccounts,
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    /// `service/method` of every RPC in the served protos.
    fn described() -> BTreeSet<String> {
        let pool = prost_reflect::DescriptorPool::decode(pb::FILE_DESCRIPTOR_SET).unwrap();
        pool.services()
            .filter(|s| s.package_name() == "simgate.v1")
            .flat_map(|s| {
                let service = s.full_name().to_string();
                s.methods()
                    .map(move |m| format!("{service}/{}", m.name()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_rpc_of_the_protos_has_exactly_one_permission_entry() {
        let table: Vec<String> = Rpc::ALL
            .iter()
            .map(|r| format!("{}/{}", r.service(), r.name()))
            .collect();
        let listed: BTreeSet<String> = table.iter().cloned().collect();
        assert_eq!(listed.len(), table.len(), "an RPC is listed twice");
        let described = described();
        let missing: Vec<_> = described.difference(&listed).collect();
        let extra: Vec<_> = listed.difference(&described).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "RPCs without a permission entry in api::rpc: {missing:?}; entries naming no RPC: {extra:?}"
        );
    }

    #[test]
    fn the_served_service_names_are_the_tables() {
        let services: BTreeSet<&str> = Rpc::ALL.iter().map(|r| r.service()).collect();
        assert_eq!(services, pb::SERVICE_NAMES.into_iter().collect());
    }
}
