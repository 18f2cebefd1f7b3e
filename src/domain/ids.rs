//! Validated card identifiers (ICCID, IMSI, MSISDN) by the rules of
//! `shared/domain/identifiers.md`. They reject typing mistakes without rejecting real inventory:
//! China Mobile ICCIDs carry letters A-F, and a failed Luhn check digit is only a warning.

use std::fmt;

use super::CarrierId;

/// Why an identifier was refused; the text is shown to the caller as a field violation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(pub String);

/// Whether an identifier of another carrier's range may be declared for a carrier. Cards bought
/// through virtual operators exist, so an operator can turn the check off in configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CarrierCheck {
    #[default]
    Enforce,
    Allow,
}

/// Refuses an identifier whose carrier range (`found`) is not the declared carrier's.
fn belongs_to(
    what: &str,
    code: &str,
    found: Option<CarrierId>,
    declared: CarrierId,
    check: CarrierCheck,
) -> Result<(), IdError> {
    match found {
        Some(c) if c == declared => Ok(()),
        _ if check == CarrierCheck::Allow => Ok(()),
        Some(c) => Err(IdError(format!(
            "{what} {code} belongs to {}, not {}",
            c.display_name(),
            declared.display_name()
        ))),
        None => Err(IdError(format!(
            "{what} {code} is not a known Chinese carrier's"
        ))),
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Iccid(String);

impl Iccid {
    /// Parses an ICCID declared for `carrier`. Returns the upper-cased ICCID and, when the ICCID
    /// is all digits and its Luhn check digit does not match, a warning.
    pub fn parse(
        raw: &str,
        carrier: CarrierId,
        check: CarrierCheck,
    ) -> Result<(Iccid, Option<String>), IdError> {
        let iccid = Iccid::parse_any(raw)?;
        let issuer = &iccid.0[4..6];
        belongs_to(
            "issuer code",
            issuer,
            CarrierId::from_iccid_issuer(issuer),
            carrier,
            check,
        )?;
        let warning =
            (iccid.0.bytes().all(|b| b.is_ascii_digit()) && !luhn_valid(&iccid.0)).then(|| {
                "ICCID Luhn check digit does not match (kept: not all real cards carry one)"
                    .to_string()
            });
        Ok((iccid, warning))
    }

    /// Checks the shape only (length, prefix, characters), for lookups by ICCID where no carrier
    /// is declared.
    pub fn parse_any(raw: &str) -> Result<Iccid, IdError> {
        let s = raw.trim().to_ascii_uppercase();
        if s.is_empty() {
            return Err(IdError("is required".into()));
        }
        if !(19..=20).contains(&s.len()) {
            return Err(IdError(format!(
                "must be 19 or 20 characters, got {}",
                s.chars().count()
            )));
        }
        if let Some(bad) = s.chars().find(|c| !c.is_ascii_hexdigit()) {
            return Err(IdError(format!(
                "contains '{bad}': only digits and, on China Mobile cards, the letters A-F are allowed"
            )));
        }
        if !s.starts_with("8986") {
            return Err(IdError("must start with 8986 (telecom, China)".into()));
        }
        if s[4..6].bytes().any(|b| !b.is_ascii_digit()) {
            return Err(IdError(
                "issuer code (characters 5-6) must be digits".into(),
            ));
        }
        Ok(Iccid(s))
    }

    /// Rebuilds an ICCID already validated on its way into the store.
    pub fn from_trusted(s: String) -> Iccid {
        Iccid(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Iccid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `imei` is an IMEI as simgate takes one: exactly 15 digits.
pub fn is_imei(imei: &str) -> bool {
    imei.len() == 15 && imei.bytes().all(|b| b.is_ascii_digit())
}

/// ITU-T E.118 / ISO 7812 Luhn check over all digits, the last being the check digit.
pub fn luhn_valid(digits: &str) -> bool {
    let mut sum = 0u32;
    for (i, b) in digits.bytes().rev().enumerate() {
        let mut d = u32::from(b - b'0');
        if i % 2 == 1 {
            d *= 2;
            if d > 9 {
                d -= 9;
            }
        }
        sum += d;
    }
    sum.is_multiple_of(10)
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Imsi(String);

impl Imsi {
    pub fn parse(raw: &str, carrier: CarrierId, check: CarrierCheck) -> Result<Imsi, IdError> {
        let s = raw.trim();
        if s.len() != 15 || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(IdError("must be 15 digits".into()));
        }
        if !s.starts_with("460") {
            return Err(IdError("must start with MCC 460 (China)".into()));
        }
        let mnc = &s[3..5];
        belongs_to("MNC", mnc, CarrierId::from_imsi_mnc(mnc), carrier, check)?;
        Ok(Imsi(s.to_string()))
    }

    pub fn from_trusted(s: String) -> Imsi {
        Imsi(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Msisdn(String);

impl Msisdn {
    pub fn parse(raw: &str) -> Result<Msisdn, IdError> {
        let s = raw.trim();
        if !s.bytes().all(|b| b.is_ascii_digit()) || !(s.len() == 11 || s.len() == 13) {
            return Err(IdError(
                "must be 11 or 13 digits (IoT numbers are usually 13 digits starting 1064)".into(),
            ));
        }
        if !s.starts_with('1') {
            return Err(IdError("must start with 1".into()));
        }
        Ok(Msisdn(s.to_string()))
    }

    pub fn from_trusted(s: String) -> Msisdn {
        Msisdn(s)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use CarrierId::*;

    fn parse(raw: &str, c: CarrierId) -> Result<(Iccid, Option<String>), IdError> {
        Iccid::parse(raw, c, CarrierCheck::Enforce)
    }

    #[test]
    fn unicom_iccid_with_valid_luhn_is_accepted_without_warning() {
        let (iccid, warning) = parse("89860117750006390067", Unicom).unwrap();
        assert_eq!(iccid.as_str(), "89860117750006390067");
        assert_eq!(warning, None);
    }

    #[test]
    fn mobile_iccid_with_letters_is_accepted_and_not_luhn_checked() {
        let (iccid, warning) = parse("898602D9981700140197", Mobile).unwrap();
        assert_eq!(iccid.as_str(), "898602D9981700140197");
        assert_eq!(warning, None);
        assert!(parse("898602F2191880120110", Mobile).is_ok());
    }

    #[test]
    fn lower_case_iccid_is_stored_upper_cased() {
        let (iccid, _) = parse("898602d9981700140197", Mobile).unwrap();
        assert_eq!(iccid.as_str(), "898602D9981700140197");
    }

    #[test]
    fn nineteen_digit_telecom_iccid_failing_luhn_is_a_warning_not_an_error() {
        let (iccid, warning) = parse("8986031630200230821", Telecom).unwrap();
        assert_eq!(iccid.as_str(), "8986031630200230821");
        assert!(warning.unwrap().contains("Luhn"));
    }

    #[test]
    fn unicom_iccid_with_wrong_check_digit_is_a_warning() {
        let (_, warning) = parse("89860117750006390068", Unicom).unwrap();
        assert!(warning.is_some());
    }

    #[test]
    fn iccid_with_another_carriers_issuer_code_is_refused() {
        let err = parse("89860117750006390067", Mobile).unwrap_err();
        assert!(err.0.contains("China Unicom"), "{err}");
    }

    #[test]
    fn issuer_mismatch_is_allowed_when_the_operator_overrides_the_check() {
        assert!(Iccid::parse("89860117750006390067", Mobile, CarrierCheck::Allow).is_ok());
    }

    #[test]
    fn iccid_of_21_characters_is_refused() {
        for c in CarrierId::ALL {
            assert!(parse("898601177500063900677X", c).is_err());
            assert!(parse("898601177500063900677", c)
                .unwrap_err()
                .0
                .contains("19 or 20"));
        }
    }

    #[test]
    fn iccid_with_a_letter_beyond_f_is_refused() {
        for c in CarrierId::ALL {
            assert!(parse("8986G117750006390067", c)
                .unwrap_err()
                .0
                .contains("'G'"));
        }
    }

    #[test]
    fn short_iccid_is_refused() {
        assert!(parse("12345", Mobile).is_err());
        assert!(parse("", Mobile).unwrap_err().0.contains("required"));
    }

    #[test]
    fn iccid_without_the_chinese_prefix_is_refused() {
        assert!(parse("89440117750006390067", Unicom)
            .unwrap_err()
            .0
            .contains("8986"));
    }

    #[test]
    fn imsi_with_another_carriers_mnc_is_refused() {
        let err = Imsi::parse("460030123456789", Mobile, CarrierCheck::Enforce).unwrap_err();
        assert!(err.0.contains("China Telecom"), "{err}");
        assert!(Imsi::parse("460030123456789", Telecom, CarrierCheck::Enforce).is_ok());
        assert!(Imsi::parse("460050123456789", Telecom, CarrierCheck::Enforce).is_ok());
        assert!(Imsi::parse("460000123456789", Mobile, CarrierCheck::Enforce).is_ok());
    }

    #[test]
    fn imsi_shape_is_checked() {
        assert!(Imsi::parse("46000012345678", Mobile, CarrierCheck::Enforce).is_err());
        assert!(Imsi::parse("310000123456789", Mobile, CarrierCheck::Enforce).is_err());
        assert!(Imsi::parse("46000012345678a", Mobile, CarrierCheck::Enforce).is_err());
    }

    #[test]
    fn msisdn_accepts_11_and_13_digit_numbers_only() {
        assert!(Msisdn::parse("1064912345678").is_ok());
        assert!(Msisdn::parse("14512345678").is_ok());
        assert!(Msisdn::parse("106491234567").is_err());
        assert!(Msisdn::parse("10649123456a8").is_err());
        assert!(Msisdn::parse("2064912345678").is_err());
    }

    #[test]
    fn luhn_matches_known_vectors() {
        assert!(luhn_valid("89860117750006390067"));
        assert!(!luhn_valid("89860117750006390068"));
        assert!(!luhn_valid("8986031630200230821"));
    }
}
