//! The three carriers simgate serves, and their identifier ranges (issuer codes in the ICCID,
//! MNCs in the IMSI) from `shared/domain/identifiers.md`.

use std::fmt;
use std::str::FromStr;

#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum CarrierId {
    Mobile,
    Unicom,
    Telecom,
}

impl CarrierId {
    pub const ALL: [CarrierId; 3] = [CarrierId::Mobile, CarrierId::Unicom, CarrierId::Telecom];

    /// Stable name used in the database, configuration and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            CarrierId::Mobile => "mobile",
            CarrierId::Unicom => "unicom",
            CarrierId::Telecom => "telecom",
        }
    }

    pub fn display_name(self) -> &'static str {
        match self {
            CarrierId::Mobile => "China Mobile",
            CarrierId::Unicom => "China Unicom",
            CarrierId::Telecom => "China Telecom",
        }
    }

    /// Which carrier issued an ICCID, from its characters 5-6.
    pub fn from_iccid_issuer(code: &str) -> Option<CarrierId> {
        match code {
            "00" | "02" | "04" | "07" | "08" => Some(CarrierId::Mobile),
            "01" | "06" | "09" => Some(CarrierId::Unicom),
            "03" | "11" => Some(CarrierId::Telecom),
            _ => None,
        }
    }

    /// Which carrier an IMSI's mobile network code (after MCC 460) belongs to.
    pub fn from_imsi_mnc(mnc: &str) -> Option<CarrierId> {
        match mnc {
            "00" | "02" | "04" | "07" | "08" => Some(CarrierId::Mobile),
            "01" | "06" | "09" => Some(CarrierId::Unicom),
            "03" | "05" | "11" => Some(CarrierId::Telecom),
            _ => None,
        }
    }
}

impl fmt::Display for CarrierId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for CarrierId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "mobile" => Ok(CarrierId::Mobile),
            "unicom" => Ok(CarrierId::Unicom),
            "telecom" => Ok(CarrierId::Telecom),
            other => Err(format!(
                "unknown carrier '{other}' (expected mobile, unicom or telecom)"
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn carrier_names_round_trip() {
        for c in CarrierId::ALL {
            assert_eq!(c.as_str().parse::<CarrierId>(), Ok(c));
        }
        assert!("cmcc".parse::<CarrierId>().is_err());
    }

    #[test]
    fn issuer_and_mnc_tables_differ_only_in_telecom_05() {
        assert_eq!(CarrierId::from_imsi_mnc("05"), Some(CarrierId::Telecom));
        assert_eq!(CarrierId::from_iccid_issuer("05"), None);
        assert_eq!(CarrierId::from_iccid_issuer("11"), Some(CarrierId::Telecom));
        assert_eq!(CarrierId::from_iccid_issuer("06"), Some(CarrierId::Unicom));
        assert_eq!(CarrierId::from_iccid_issuer("08"), Some(CarrierId::Mobile));
    }
}
