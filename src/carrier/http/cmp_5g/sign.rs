//! The 5G CMP's request signature (dossier `cmp5g.md` §0.2–0.3): the `AppKey`, `Timestamp`
//! and `Sign` headers every call carries.
//!
//! ```text
//! plain = <query, keys sorted, "k=v" joined by "&"> + <raw body, or "" for GET> + secret + Timestamp
//! Sign  = UPPER(hex(ascii(lowercase_hex(MD5(plain)))))      -- 64 characters
//! ```
//!
//! The double hex ([YZ-5G] `SignUtil.signMD5`, [NEST5G] `signMd5Gateway`, [SIMCTL] L38-47 +
//! L55) is reproduced by the dossier's test vector (§0.3 table), a unit test here and the
//! fixture `sign.s0-3.vector.txt`. MD5 itself comes from the `md-5` crate.

use chrono::{DateTime, Utc};
use md5::{Digest, Md5};

/// The time zone `Timestamp` is written in (DISPUTED, §0.2), per account.
/// - `gmt` (default): [YZ-5G] `SignUtil` (`TimeZone.getTimeZone("GMT")`), [NEST5G]
///   `formatGmtTimestamp` (its test: 2020-11-01T02:14:35Z → `20201101021435`, doc "1.2.3").
/// - `beijing`: [SIMCTL] L51 (`time.Now()` without UTC, on a server in China).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimestampZone {
    #[default]
    Gmt,
    Beijing,
}

/// What a POST signs after the (empty) query string (DISPUTED, §0.3), per account.
/// - `raw` (default): the body exactly as sent ([NEST5G] `createAuthHeaders` uses `rawBody`;
///   the doc example in [YZ-5G] `SignUtil.main()` appends a JSON body).
/// - `sorted_fields`: the body's fields re-serialised as sorted `k=v&k=v`, arrays printed as
///   Go prints a slice (`[a b]`) ([SIMCTL] L23-37, every call). The dossier calls this form
///   "unlikely to match" for array bodies; it is here for an account that proves otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SignBody {
    #[default]
    Raw,
    SortedFields,
}

/// `Timestamp` (`yyyyMMddHHmmss`) of `now` in `zone`.
pub fn timestamp(now: DateTime<Utc>, zone: TimestampZone) -> String {
    const FORMAT: &str = "%Y%m%d%H%M%S";
    match zone {
        TimestampZone::Gmt => now.format(FORMAT).to_string(),
        TimestampZone::Beijing => now
            .with_timezone(&chrono_tz::Asia::Shanghai)
            .format(FORMAT)
            .to_string(),
    }
}

/// The query string as it is signed: pairs sorted by key (then value, so that a repeated key
/// signs the same however it was sent), `k=v` joined by `&`, no `?` ([YZ-5G] `order()`,
/// [NEST5G] `sortQueryString`). Values are the decoded ones.
pub fn sorted_query<K: AsRef<str>, V: AsRef<str>>(pairs: &[(K, V)]) -> String {
    let mut pairs: Vec<(&str, &str)> = pairs
        .iter()
        .map(|(k, v)| (k.as_ref(), v.as_ref()))
        .collect();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&")
}

/// A JSON body's fields as [SIMCTL] signs them: sorted `k=v` joined by `&`, a string as is, an
/// array as Go's `fmt` prints a slice (`[a b]`), anything else as JSON. A body that is not an
/// object signs as itself.
pub fn sorted_fields(body: &serde_json::Value) -> String {
    fn go(v: &serde_json::Value) -> String {
        match v {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Array(items) => {
                format!("[{}]", items.iter().map(go).collect::<Vec<_>>().join(" "))
            }
            other => other.to_string(),
        }
    }
    match body {
        serde_json::Value::Object(map) => {
            let pairs: Vec<(String, String)> =
                map.iter().map(|(k, v)| (k.clone(), go(v))).collect();
            sorted_query(&pairs)
        }
        other => other.to_string(),
    }
}

/// MD5 of `plain` as 32 lowercase hex characters.
pub fn md5_hex(plain: &str) -> String {
    let digest = Md5::digest(plain.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// `Sign` over an already sorted query, the signed body part ("" for GET), the secret and the
/// `Timestamp`: the MD5's lowercase hex, each of its characters' ASCII code as two uppercase hex
/// digits (64 characters, made of the pairs 30–39 and 61–66 only).
pub fn sign(sorted_query: &str, body: &str, secret: &str, timestamp: &str) -> String {
    let plain = format!("{sorted_query}{body}{secret}{timestamp}");
    md5_hex(&plain)
        .bytes()
        .map(|b| format!("{b:02X}"))
        .collect()
}

/// The body part a POST signs in `mode`: the raw body, or its fields ([`sorted_fields`]; a body
/// that is not JSON signs raw).
pub fn signed_body(raw: &str, mode: SignBody) -> String {
    match mode {
        SignBody::Raw => raw.to_string(),
        SignBody::SortedFields => serde_json::from_str::<serde_json::Value>(raw)
            .map(|v| sorted_fields(&v))
            .unwrap_or_else(|_| raw.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    /// The dossier's test vector (§0.3 table: the doc example reproduced in [NEST5G] test id
    /// 54640928222, recomputed with Python `hashlib`).
    #[test]
    fn the_dossier_test_vector_signs() {
        let q = sorted_query(&[("c", "3"), ("a", "1"), ("b", "2")]);
        assert_eq!(q, "a=1&b=2&c=3");
        let body = r#"{"name":"xf","age":"dd"}"#;
        let plain = format!("{q}{body}d1209cfefe895364e0320201101021435");
        assert_eq!(md5_hex(&plain), "8ca05e120f13211738677c32e61f1d94");
        let s = sign(&q, body, "d1209cfefe895364e03", "20201101021435");
        assert_eq!(
            s,
            "3863613035653132306631333231313733383637376333326536316631643934"
        );
        assert_eq!(s.len(), 64);
        assert!(s
            .as_bytes()
            .chunks(2)
            .all(|p| matches!(p, [b'3', b'0'..=b'9'] | [b'6', b'1'..=b'6'])));
        // Any change of input changes the sign.
        assert_ne!(s, sign(&q, body, "d1209cfefe895364e04", "20201101021435"));
        assert_ne!(s, sign(&q, body, "d1209cfefe895364e03", "20201101021436"));
        assert_ne!(s, sign("", body, "d1209cfefe895364e03", "20201101021435"));
    }

    #[test]
    fn timestamps_are_gmt_by_default_or_beijing() {
        // [NEST5G]'s test: 2020-11-01T02:14:35Z → 20201101021435.
        let t = Utc
            .with_ymd_and_hms(2020, 11, 1, 2, 14, 35)
            .single()
            .expect("time");
        assert_eq!(timestamp(t, TimestampZone::default()), "20201101021435");
        assert_eq!(timestamp(t, TimestampZone::Beijing), "20201101101435");
    }

    #[test]
    fn queries_sort_by_key_and_bodies_sign_raw_or_as_simctl_fields() {
        assert_eq!(
            sorted_query(&[
                ("orderTypeId", "19"),
                ("access_number", "1"),
                ("acctCd", "")
            ]),
            "access_number=1&acctCd=&orderTypeId=19"
        );
        assert_eq!(sorted_query::<&str, &str>(&[]), "");
        let raw = r#"{"custNumber":"c1","accessNumber":["1","2"]}"#;
        assert_eq!(signed_body(raw, SignBody::Raw), raw);
        assert_eq!(
            signed_body(raw, SignBody::SortedFields),
            "accessNumber=[1 2]&custNumber=c1"
        );
        assert_eq!(signed_body("not json", SignBody::SortedFields), "not json");
    }
}
