//! Secrets at rest: the data key and the sealed form of a webhook secret. A secret is stored as
//! `enc:v1:` and the base64 of a random 12-byte nonce followed by its ChaCha20-Poly1305
//! ciphertext, with the webhook id as associated data (a sealed secret copied onto another row
//! does not open). The key is kept outside the database, so a copy of the database alone does
//! not reveal the secrets.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "enc:v1:";

/// The 32-byte key secrets are sealed with.
#[derive(Clone, PartialEq, Eq)]
pub struct DataKey([u8; 32]);

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate() -> Result<DataKey, String> {
        let mut k = [0u8; 32];
        getrandom::fill(&mut k).map_err(|e| format!("no randomness for a data key: {e}"))?;
        Ok(DataKey(k))
    }

    /// From its base64 text (as written in a key file or `SIMGATE_DATA_KEY`).
    pub fn from_base64(text: &str) -> Result<DataKey, String> {
        let bytes = STANDARD
            .decode(text.trim())
            .map_err(|_| "the data key is not base64".to_string())?;
        let k: [u8; 32] = bytes
            .try_into()
            .map_err(|_| "the data key must be 32 bytes (44 base64 characters)".to_string())?;
        Ok(DataKey(k))
    }

    pub fn to_base64(&self) -> String {
        STANDARD.encode(self.0)
    }

    /// The stored form of `secret` on the row `id`.
    pub fn seal(&self, id: &str, secret: &str) -> Result<String, String> {
        let mut nonce = [0u8; 12];
        getrandom::fill(&mut nonce).map_err(|e| format!("no randomness for a nonce: {e}"))?;
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: secret.as_bytes(),
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| "sealing failed".to_string())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(format!("{PREFIX}{}", STANDARD.encode(out)))
    }

    /// The secret of a stored value. None when it is not sealed (a row from before sealing).
    pub fn open(&self, id: &str, stored: &str) -> Option<Result<String, String>> {
        let b64 = stored.strip_prefix(PREFIX)?;
        Some(self.open_b64(id, b64))
    }

    fn open_b64(&self, id: &str, b64: &str) -> Result<String, String> {
        let bytes = STANDARD
            .decode(b64)
            .map_err(|_| "sealed secret is not base64".to_string())?;
        if bytes.len() < 12 {
            return Err("sealed secret is too short".into());
        }
        let (nonce, sealed) = bytes.split_at(12);
        let cipher = ChaCha20Poly1305::new(Key::from_slice(&self.0));
        let plain = cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: sealed,
                    aad: id.as_bytes(),
                },
            )
            .map_err(|_| "sealed secret does not open with this data key".to_string())?;
        String::from_utf8(plain).map_err(|_| "sealed secret is not text".to_string())
    }
}

/// Whether a stored value is sealed.
pub fn is_sealed(stored: &str) -> bool {
    stored.starts_with(PREFIX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sealed_secret_opens_only_with_its_key_and_row() {
        let key = DataKey::generate().unwrap();
        let sealed = key.seal("wh_1", "whsec_abc").unwrap();
        assert!(is_sealed(&sealed));
        assert!(!sealed.contains("whsec_abc"));
        assert_eq!(key.open("wh_1", &sealed), Some(Ok("whsec_abc".into())));
        assert!(matches!(key.open("wh_2", &sealed), Some(Err(_))));
        let other = DataKey::generate().unwrap();
        assert!(matches!(other.open("wh_1", &sealed), Some(Err(_))));
        assert_eq!(key.open("wh_1", "whsec_plain"), None);
        // Two seals of one secret differ (fresh nonce).
        assert_ne!(sealed, key.seal("wh_1", "whsec_abc").unwrap());
    }

    #[test]
    fn keys_round_trip_through_base64_and_bad_ones_are_refused() {
        let key = DataKey::generate().unwrap();
        assert_eq!(DataKey::from_base64(&key.to_base64()).unwrap(), key);
        assert!(DataKey::from_base64("c2hvcnQ=").is_err());
        assert!(DataKey::from_base64("not base64!").is_err());
    }
}
