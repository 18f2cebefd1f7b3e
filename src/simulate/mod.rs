//! Wire-level carrier simulators: HTTP servers that speak each carrier platform's protocol
//! (paths, auth, envelopes, codes) in front of the same [`SimCarrier`] state and rules as the
//! in-process simulators, with the same fault injection and simulated clock.
//!
//! [`SimCarrier`]: crate::carrier::sim::SimCarrier

pub mod cmp;
pub mod jasper;
pub mod onelink;
