//! The pure domain: cards, identifiers, stop reasons, carrier policies, billing cycles, money and
//! the rules of `shared/domain/rules.md`. Nothing here does IO or knows about tonic, sqlx or
//! tokio; the service layer and the simulated carriers both call this one copy of the rules.

pub mod account;
pub mod alerts;
pub mod card;
pub mod carrier;
pub mod diagnosis;
pub mod event;
pub mod ids;
pub mod lifecycle;
pub mod money;
pub mod policy;
pub mod pool;
pub mod reasons;
pub mod rules;

pub use account::AccountId;
pub use card::{
    Card, CardStatus, Drift, LastSession, LifecycleStage, OrderState, PendingChange, Plan,
    RealNameStatus,
};
pub use carrier::CarrierId;
pub use event::{CardEvent, Cause, PoolEvent};
pub use ids::{Iccid, Imsi, Msisdn};
pub use money::Fen;
pub use policy::{ArrearsRecovery, CarrierPolicy, RenewalRestore};
pub use reasons::{StopReason, StopReasons};
pub use rules::{CarrierAction, RuleViolation, Transition};
