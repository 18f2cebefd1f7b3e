//! Money as integer fen (1 yuan = 100 fen). Never a float: a balance must come out to the fen.

use std::fmt;

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(transparent)]
pub struct Fen(pub i64);

/// Largest amount one recharge may carry: 100,000 yuan.
pub const MAX_RECHARGE: Fen = Fen(10_000_000);

impl Fen {
    pub const ZERO: Fen = Fen(0);

    pub fn checked_add(self, other: Fen) -> Option<Fen> {
        self.0.checked_add(other.0).map(Fen)
    }

    pub fn checked_sub(self, other: Fen) -> Option<Fen> {
        self.0.checked_sub(other.0).map(Fen)
    }

    pub fn is_negative(self) -> bool {
        self.0 < 0
    }
}

impl fmt::Display for Fen {
    /// Renders yuan with two decimals, e.g. `-12.05 yuan`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        write!(f, "{sign}{}.{:02} yuan", abs / 100, abs % 100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn displays_yuan_with_two_decimals() {
        assert_eq!(Fen(1205).to_string(), "12.05 yuan");
        assert_eq!(Fen(-5).to_string(), "-0.05 yuan");
        assert_eq!(Fen(0).to_string(), "0.00 yuan");
    }

    #[test]
    fn arithmetic_refuses_overflow_instead_of_wrapping() {
        assert_eq!(Fen(i64::MAX).checked_add(Fen(1)), None);
        assert_eq!(Fen(i64::MIN).checked_sub(Fen(1)), None);
        assert_eq!(Fen(10).checked_sub(Fen(15)), Some(Fen(-5)));
    }
}
