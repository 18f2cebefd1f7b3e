//! A carrier account's id: the name a reseller gives one of its accounts at a carrier (one
//! OneLink appid, one Control Center login, one CMP user). Every card belongs to exactly one
//! account, and every carrier call goes out through it. Without configuration there is one
//! account per carrier, named after the carrier.

use std::fmt;

use super::CarrierId;

/// At most this many characters: it is a database key, a metrics label and a log field.
pub const MAX_LEN: usize = 64;

#[derive(
    Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub struct AccountId(String);

impl AccountId {
    /// 1-64 characters: lower-case letters, digits, `-` and `_`, starting with a letter or a
    /// digit, so that it is safe in URLs, metric labels and file names alike.
    pub fn parse(s: &str) -> Result<AccountId, String> {
        let ok_char =
            |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_';
        let first_ok = s
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if s.is_empty() || s.len() > MAX_LEN || !first_ok || !s.chars().all(ok_char) {
            return Err(format!(
                "account id {s:?} must be 1-{MAX_LEN} lower-case letters, digits, '-' or '_', \
                 starting with a letter or a digit"
            ));
        }
        Ok(AccountId(s.to_string()))
    }

    /// The account a carrier has when none is configured: named after the carrier.
    pub fn default_for(carrier: CarrierId) -> AccountId {
        AccountId(carrier.as_str().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for AccountId {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        AccountId::parse(&s)
    }
}

impl From<AccountId> for String {
    fn from(a: AccountId) -> String {
        a.0
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for AccountId {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AccountId::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn account_ids_are_plain_names() {
        for ok in ["mobile", "gd-onelink", "cc_01", "9x"] {
            assert_eq!(
                AccountId::parse(ok).map(|a| a.to_string()),
                Ok(ok.to_string())
            );
        }
        for bad in [
            "",
            "Mobile",
            "-x",
            "a b",
            "a/b",
            "ä",
            &"x".repeat(MAX_LEN + 1),
        ] {
            assert!(AccountId::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(AccountId::default_for(CarrierId::Unicom).as_str(), "unicom");
    }
}
