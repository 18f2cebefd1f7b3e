//! Why a card is stopped (rules.md §1 and §5). A card can be stopped for several reasons at
//! once and is online only when it has none; each reason has its own way back.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum StopReason {
    /// 过期停机: cleared by renewal. Listed first: a card past validity heads for cancellation.
    Expired,
    /// 欠费停机: cleared by recharge (automatically or by a manual restore, per carrier).
    Arrears,
    /// 未实名违规停机: cleared by completing real-name verification.
    RealName,
    /// 机卡分离: the carrier found a bound card in another device; only the carrier can lift it.
    DeviceMismatch,
    /// 流量超停: cleared at the next billing cycle or by a data top-up.
    OverQuota,
    /// 流量池用完: cleared by a pool top-up or the next cycle.
    PoolExhausted,
    /// 测试期赠送流量用完: cleared when the card moves to billing.
    TestDataUsed,
    /// 人工停用: cleared only by a manual resume.
    Manual,
}

impl StopReason {
    /// Every reason in the order a customer has to clear them.
    pub const ALL: [StopReason; 8] = [
        StopReason::Expired,
        StopReason::Arrears,
        StopReason::RealName,
        StopReason::DeviceMismatch,
        StopReason::OverQuota,
        StopReason::PoolExhausted,
        StopReason::TestDataUsed,
        StopReason::Manual,
    ];

    /// Bit in the stored mask. Fixed forever: it is persisted.
    const fn bit(self) -> u32 {
        match self {
            StopReason::OverQuota => 1 << 1,
            StopReason::Manual => 1 << 2,
            StopReason::Arrears => 1 << 3,
            StopReason::Expired => 1 << 4,
            StopReason::RealName => 1 << 5,
            StopReason::PoolExhausted => 1 << 6,
            StopReason::TestDataUsed => 1 << 7,
            StopReason::DeviceMismatch => 1 << 8,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            StopReason::OverQuota => "OVER_QUOTA",
            StopReason::Manual => "MANUAL",
            StopReason::Arrears => "ARREARS",
            StopReason::Expired => "EXPIRED",
            StopReason::RealName => "REAL_NAME",
            StopReason::PoolExhausted => "POOL_EXHAUSTED",
            StopReason::TestDataUsed => "TEST_DATA_USED",
            StopReason::DeviceMismatch => "DEVICE_MISMATCH",
        }
    }
}

impl fmt::Display for StopReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for StopReason {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        StopReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown stop reason '{s}'"))
    }
}

/// A set of stop reasons, stored as a bit mask so that "cards stopped for X" is one indexed-free
/// integer test in SQL on both SQLite and PostgreSQL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct StopReasons(u32);

impl StopReasons {
    pub const NONE: StopReasons = StopReasons(0);

    pub fn from_bits(bits: u32) -> Option<StopReasons> {
        let known = StopReason::ALL.iter().fold(0, |acc, r| acc | r.bit());
        (bits & !known == 0).then_some(StopReasons(bits))
    }

    pub fn bits(self) -> u32 {
        self.0
    }

    pub fn mask(reason: StopReason) -> u32 {
        reason.bit()
    }

    pub fn contains(self, r: StopReason) -> bool {
        self.0 & r.bit() != 0
    }

    pub fn insert(&mut self, r: StopReason) {
        self.0 |= r.bit();
    }

    pub fn remove(&mut self, r: StopReason) {
        self.0 &= !r.bit();
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The reasons present, in clearing order.
    pub fn iter(self) -> impl Iterator<Item = StopReason> {
        StopReason::ALL
            .into_iter()
            .filter(move |r| self.contains(*r))
    }
}

impl FromIterator<StopReason> for StopReasons {
    fn from_iter<I: IntoIterator<Item = StopReason>>(iter: I) -> Self {
        let mut s = StopReasons::NONE;
        for r in iter {
            s.insert(r);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_through_bits_and_names() {
        let all: StopReasons = StopReason::ALL.into_iter().collect();
        assert_eq!(StopReasons::from_bits(all.bits()), Some(all));
        assert_eq!(all.iter().collect::<Vec<_>>(), StopReason::ALL.to_vec());
        for r in StopReason::ALL {
            assert_eq!(r.as_str().parse::<StopReason>(), Ok(r));
        }
    }

    #[test]
    fn unknown_bits_are_refused_rather_than_dropped() {
        assert_eq!(StopReasons::from_bits(1), None);
        assert_eq!(StopReasons::from_bits(1 << 20), None);
    }

    #[test]
    fn iteration_follows_clearing_order_not_insertion_order() {
        let s: StopReasons = [
            StopReason::Manual,
            StopReason::OverQuota,
            StopReason::Expired,
        ]
        .into_iter()
        .collect();
        assert_eq!(
            s.iter().collect::<Vec<_>>(),
            vec![
                StopReason::Expired,
                StopReason::OverQuota,
                StopReason::Manual
            ]
        );
    }
}
