//! The three carriers simgate serves, and their identifier ranges (issuer codes in the ICCID,
//! MNCs in the IMSI) from `shared/domain/identifiers.md`.

use std::fmt;
use std::str::FromStr;

/// Declares the carriers once: the enum, [`CarrierId::ALL`] and every per-carrier table below
/// come from this one list, so a carrier added here cannot be missing from any of them (and
/// every `match` on the enum elsewhere stops compiling until it handles the new one).
macro_rules! carriers {
    ($(
        $variant:ident {
            name: $name:literal,
            display: $display:literal,
            iccid_issuers: [$($issuer:literal),*],
            imsi_mncs: [$($mnc:literal),*] $(,)?
        }
    ),* $(,)?) => {
        #[derive(
            Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize,
            serde::Deserialize,
        )]
        #[serde(rename_all = "snake_case")]
        pub enum CarrierId {
            $($variant),*
        }

        impl CarrierId {
            pub const ALL: [CarrierId; [$(CarrierId::$variant),*].len()] =
                [$(CarrierId::$variant),*];

            /// Stable name used in the database, configuration and logs.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(CarrierId::$variant => $name),*
                }
            }

            pub fn display_name(self) -> &'static str {
                match self {
                    $(CarrierId::$variant => $display),*
                }
            }

            /// The ICCID issuer codes (characters 5-6) this carrier issues.
            pub fn iccid_issuers(self) -> &'static [&'static str] {
                match self {
                    $(CarrierId::$variant => &[$($issuer),*]),*
                }
            }

            /// The IMSI mobile network codes (after MCC 460) this carrier holds.
            pub fn imsi_mncs(self) -> &'static [&'static str] {
                match self {
                    $(CarrierId::$variant => &[$($mnc),*]),*
                }
            }
        }
    };
}

carriers! {
    Mobile {
        name: "mobile",
        display: "China Mobile",
        iccid_issuers: ["00", "02", "04", "07", "08"],
        imsi_mncs: ["00", "02", "04", "07", "08"],
    },
    Unicom {
        name: "unicom",
        display: "China Unicom",
        iccid_issuers: ["01", "06", "09"],
        imsi_mncs: ["01", "06", "09"],
    },
    Telecom {
        name: "telecom",
        display: "China Telecom",
        iccid_issuers: ["03", "11"],
        imsi_mncs: ["03", "05", "11"],
    },
}

impl CarrierId {
    /// Which carrier issued an ICCID, from its characters 5-6.
    pub fn from_iccid_issuer(code: &str) -> Option<CarrierId> {
        CarrierId::ALL
            .iter()
            .copied()
            .find(|c| c.iccid_issuers().contains(&code))
    }

    /// Which carrier an IMSI's mobile network code (after MCC 460) belongs to.
    pub fn from_imsi_mnc(mnc: &str) -> Option<CarrierId> {
        CarrierId::ALL
            .iter()
            .copied()
            .find(|c| c.imsi_mncs().contains(&mnc))
    }

    /// The carrier names, for error messages: "mobile, unicom or telecom".
    pub fn names() -> String {
        let names: Vec<&str> = CarrierId::ALL.iter().map(|c| c.as_str()).collect();
        match names.split_last() {
            Some((last, [])) => (*last).to_string(),
            Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
            None => String::new(),
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
        CarrierId::ALL
            .iter()
            .copied()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown carrier '{s}' (expected {})", CarrierId::names()))
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
        assert_eq!(CarrierId::names(), "mobile, unicom or telecom");
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
