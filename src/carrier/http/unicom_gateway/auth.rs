//! The gateway's request authentication (dossier §0.3, §0.4): the `timestamp` and `trans_id`
//! every envelope carries and the `token` computed over them. Pure functions, shared by the
//! adapter (which signs) and the wire simulator (which recomputes and compares).
//!
//! The token is recomputed for every request: it covers `timestamp` and `trans_id`, which
//! change with every call. No source carries a self-check vector of the recipe (§0.4): the
//! tests pin the SM3 primitive to the GB/T 32905 vector and the recipe to a value computed
//! here (fixture `derived/token.s0-4.sm3-named.derived.txt`), labelled derived.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use sm3::{Digest, Sm3};

/// How the `token` is computed (DISPUTED, dossier §0.4): a per-account setting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenRecipe {
    /// lowercase hex SM3 of `"app_id" + app_id + "timestamp" + timestamp + "trans_id" +
    /// trans_id + app_secret`: the official SDK's Go port [UGW] sm3.go L28-59, [YJ] and [MEH]
    /// (three independent clients and the SDK; the default).
    #[default]
    Sm3Named,
    /// lowercase hex SHA-256 of `app_id + timestamp + trans_id + app_secret`, without key
    /// names ([NESTCU] id 54709528057, which itself flags it as uncertain).
    Sha256Plain,
}

/// How the envelope's `timestamp` is written, in Beijing time (DISPUTED, dossier §0.3).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
pub enum TimestampFormat {
    /// `2018-12-05 10:23:35 649` (a space before the milliseconds): [YJ], [SIMCTL], [GWU],
    /// [YZ-LT] and the manual's example via [NESTCU]. The default.
    #[default]
    #[serde(rename = "yyyy-MM-dd HH:mm:ss SSS")]
    Spaced,
    /// `20181205102335649` ([MEH] index.ts L127).
    #[serde(rename = "yyyyMMddHHmmssSSS")]
    Compact,
}

impl TimestampFormat {
    /// The chrono pattern (`%3f`: three digits of milliseconds, no dot).
    fn pattern(self) -> &'static str {
        match self {
            TimestampFormat::Spaced => "%Y-%m-%d %H:%M:%S %3f",
            TimestampFormat::Compact => "%Y%m%d%H%M%S%3f",
        }
    }

    /// `at` written in this format, in Beijing time (the platform's clock, §0.3).
    pub fn format(self, at: DateTime<Utc>) -> String {
        at.with_timezone(&chrono_tz::Asia::Shanghai)
            .format(self.pattern())
            .to_string()
    }

    /// A timestamp in this format (Beijing wall time), for the simulator's check; None when it
    /// is not in this format.
    pub fn parse(self, s: &str) -> Option<NaiveDateTime> {
        // chrono's `%3f` parses any number of digits; the format has exactly three.
        let millis = match self {
            TimestampFormat::Spaced => s.rsplit(' ').next(),
            TimestampFormat::Compact => s.get(14..),
        };
        if millis.is_none_or(|m| m.len() != 3) {
            return None;
        }
        NaiveDateTime::parse_from_str(s, self.pattern()).ok()
    }
}

/// `trans_id`: `yyyyMMddHHmmss` + `SSS` (Beijing time) + 6 random digits, 23 digits in all
/// ([YJ], [SIMCTL] L31, [GWU], [NESTCU]). `random` is taken modulo 10^6, zero-padded (the
/// SDK's port leaves it unpadded, §0.3: a bug, not followed).
pub fn trans_id(at: DateTime<Utc>, random: u32) -> String {
    format!(
        "{}{:06}",
        TimestampFormat::Compact.format(at),
        random % 1_000_000
    )
}

/// Whether `s` has the shape of a [`trans_id`]: 23 ASCII digits.
pub fn is_trans_id(s: &str) -> bool {
    s.len() == 23 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The `token` of one request.
pub fn token(
    recipe: TokenRecipe,
    app_id: &str,
    timestamp: &str,
    trans_id: &str,
    app_secret: &str,
) -> String {
    match recipe {
        TokenRecipe::Sm3Named => {
            let mut h = Sm3::new();
            for part in [
                "app_id",
                app_id,
                "timestamp",
                timestamp,
                "trans_id",
                trans_id,
                app_secret,
            ] {
                h.update(part.as_bytes());
            }
            lower_hex(&h.finalize())
        }
        TokenRecipe::Sha256Plain => {
            let mut h = Sha256::new();
            for part in [app_id, timestamp, trans_id, app_secret] {
                h.update(part.as_bytes());
            }
            lower_hex(&h.finalize())
        }
    }
}

fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// 2024-01-01 12:00:00.123 Beijing time (04:00:00.123 UTC): the dossier's example instant.
    fn example_instant() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2024, 1, 1, 4, 0, 0).unwrap() + chrono::Duration::milliseconds(123)
    }

    #[test]
    fn sm3_matches_the_gb_t_32905_vector() {
        // GB/T 32905-2016 appendix A, example 1: SM3("abc").
        assert_eq!(
            lower_hex(&Sm3::digest(b"abc")),
            "66c7f0f462eeedd9d1f2d46bdc10e4e24167c4875cf2f7a2297da02b8f4ba8e0"
        );
    }

    #[test]
    fn the_sm3_named_recipe_digests_key_names_values_and_the_secret_in_order() {
        let ts = "2024-01-01 12:00:00 123";
        let tid = "20240101120000123456789";
        let t = token(TokenRecipe::Sm3Named, "AAAAAAAAAA", ts, tid, "secret");
        let concatenated = format!("app_idAAAAAAAAAAtimestamp{ts}trans_id{tid}secret");
        assert_eq!(t, lower_hex(&Sm3::digest(concatenated.as_bytes())));
        assert_eq!(t.len(), 64);
        assert!(t
            .bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
        // Every part counts.
        assert_ne!(
            t,
            token(TokenRecipe::Sm3Named, "AAAAAAAAAB", ts, tid, "secret")
        );
        assert_ne!(
            t,
            token(TokenRecipe::Sm3Named, "AAAAAAAAAA", ts, tid, "secreT")
        );
    }

    #[test]
    fn the_sha256_plain_recipe_has_no_key_names() {
        let t = token(TokenRecipe::Sha256Plain, "A", "t", "1", "s");
        assert_eq!(t, lower_hex(&Sha256::digest(b"At1s")));
        assert_ne!(t, token(TokenRecipe::Sm3Named, "A", "t", "1", "s"));
    }

    #[test]
    fn timestamps_are_beijing_time_in_either_format() {
        let at = example_instant();
        assert_eq!(
            TimestampFormat::Spaced.format(at),
            "2024-01-01 12:00:00 123"
        );
        assert_eq!(TimestampFormat::Compact.format(at), "20240101120000123");
        for f in [TimestampFormat::Spaced, TimestampFormat::Compact] {
            let naive = f.parse(&f.format(at)).expect("parses its own form");
            assert_eq!(
                naive.and_utc().timestamp_millis() - 8 * 3_600_000,
                at.timestamp_millis()
            );
        }
        assert_eq!(TimestampFormat::Spaced.parse("20240101120000123"), None);
        assert_eq!(
            TimestampFormat::Compact.parse("2024-01-01 12:00:00 123"),
            None
        );
        // The SDK port's literal "000" reads as three digits; two or four digits do not.
        assert!(TimestampFormat::Spaced
            .parse("2024-01-01 12:00:00 000")
            .is_some());
        assert_eq!(
            TimestampFormat::Spaced.parse("2024-01-01 12:00:00 12"),
            None
        );
        assert_eq!(TimestampFormat::Compact.parse("202401011200001234"), None);
    }

    #[test]
    fn the_setting_names_are_the_formats_themselves() {
        #[derive(Deserialize)]
        struct S {
            f: TimestampFormat,
            r: TokenRecipe,
        }
        let s: S = serde_json::from_str(r#"{"f":"yyyyMMddHHmmssSSS","r":"sha256_plain"}"#)
            .expect("settings");
        assert_eq!(
            (s.f, s.r),
            (TimestampFormat::Compact, TokenRecipe::Sha256Plain)
        );
        assert_eq!(
            serde_json::to_string(&TimestampFormat::default()).unwrap_or_default(),
            "\"yyyy-MM-dd HH:mm:ss SSS\""
        );
    }

    #[test]
    fn a_trans_id_is_23_digits_timestamp_first() {
        let at = example_instant();
        assert_eq!(trans_id(at, 456_789), "20240101120000123456789");
        assert_eq!(trans_id(at, 7), "20240101120000123000007");
        assert_eq!(trans_id(at, 1_234_567), "20240101120000123234567");
        assert!(is_trans_id(&trans_id(at, u32::MAX)));
        assert!(!is_trans_id("2024010112000012345678"));
        assert!(!is_trans_id("2024010112000012345678a"));
    }
}
