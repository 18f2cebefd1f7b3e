//! Telecom's `strEnc`/`strDec`: the text is cut into blocks of four UTF-16 code units (16
//! bits each, big-endian, zero padded), each block is DES-encrypted with key 1, then key 2,
//! then key 3 (three encryptions, not EDE), and written as 16 upper-case hex digits. Each key
//! is three characters of the 9-character secret, laid out the same way (zero padded), and
//! goes through des.js's own key schedule (see `js_key`).
//!
//! It is CMP's whole authentication: `passWord` is [`encrypt`] of the password and `sign` is
//! [`request_sign`] over the request.

use des::cipher::generic_array::GenericArray;
use des::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};
use des::Des;

fn block_of(units: &[u16]) -> [u8; 8] {
    let mut b = [0u8; 8];
    for (i, u) in units.iter().take(4).enumerate() {
        b[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
    }
    b
}

/// Standard DES PC-1 (1-based bit positions of the key).
const PC1: [usize; 56] = [
    57, 49, 41, 33, 25, 17, 9, 1, 58, 50, 42, 34, 26, 18, 10, 2, 59, 51, 43, 35, 27, 19, 11, 3, 60,
    52, 44, 36, 63, 55, 47, 39, 31, 23, 15, 7, 62, 54, 46, 38, 30, 22, 14, 6, 61, 53, 45, 37, 29,
    21, 13, 5, 28, 20, 12, 4,
];

fn bit(b: &[u8; 8], i: usize) -> bool {
    b[i / 8] & (0x80 >> (i % 8)) != 0
}

/// Telecom's des.js is standard DES except for its key schedule: its PC-1 reads the key as
/// `key[8 * (7 - j) + i]` for the i-th row, j-th column, which differs from the standard
/// table in the D half. Permuting the key's bits so that the standard PC-1 picks the same
/// bits makes the `des` crate compute exactly des.js (the public vectors prove it).
fn js_key(raw: [u8; 8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    for (p, std_pos) in PC1.iter().enumerate() {
        let (i, j) = (p / 8, p % 8);
        if bit(&raw, 8 * (7 - j) + i) {
            let dst = std_pos - 1;
            out[dst / 8] |= 0x80 >> (dst % 8);
        }
    }
    out
}

fn ciphers(secret: &str) -> Result<[Des; 3], String> {
    let units: Vec<u16> = secret.encode_utf16().collect();
    if units.len() != 9 {
        return Err(format!(
            "the CMP key must be 9 characters, got {}",
            units.len()
        ));
    }
    let make = |i: usize| {
        Des::new_from_slice(&js_key(block_of(&units[3 * i..3 * i + 3])))
            .map_err(|_| "invalid DES key".to_string())
    };
    Ok([make(0)?, make(1)?, make(2)?])
}

/// `strEnc(data, key[0..3], key[3..6], key[6..9])`. An empty text gives an empty string.
pub fn encrypt(data: &str, secret: &str) -> Result<String, String> {
    let keys = ciphers(secret)?;
    let units: Vec<u16> = data.encode_utf16().collect();
    let mut out = String::with_capacity(units.len().div_ceil(4) * 16);
    for chunk in units.chunks(4) {
        let mut block = GenericArray::from(block_of(chunk));
        for k in &keys {
            k.encrypt_block(&mut block);
        }
        for byte in block {
            out.push_str(&format!("{byte:02X}"));
        }
    }
    Ok(out)
}

/// `strDec`: the inverse of [`encrypt`]; trailing zero padding is dropped.
pub fn decrypt(hex: &str, secret: &str) -> Result<String, String> {
    let keys = ciphers(secret)?;
    if !hex.len().is_multiple_of(16) || !hex.is_ascii() {
        return Err("not a DES hex string".into());
    }
    let mut units = Vec::with_capacity(hex.len() / 4);
    for i in (0..hex.len()).step_by(16) {
        let mut b = [0u8; 8];
        for (j, byte) in b.iter_mut().enumerate() {
            let at = i + 2 * j;
            *byte = u8::from_str_radix(&hex[at..at + 2], 16)
                .map_err(|_| "not a DES hex string".to_string())?;
        }
        let mut block = GenericArray::from(b);
        for k in keys.iter().rev() {
            k.decrypt_block(&mut block);
        }
        for pair in block.chunks(2) {
            units.push(u16::from_be_bytes([pair[0], pair[1]]));
        }
    }
    while units.last() == Some(&0) {
        units.pop();
    }
    Ok(String::from_utf16_lossy(&units))
}

/// `sign`: [`encrypt`] over the values sorted in natural (Java `String`, UTF-16) order and
/// joined with commas.
pub fn sign(values: &[&str], secret: &str) -> Result<String, String> {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.encode_utf16().cmp(b.encode_utf16()));
    encrypt(&v.join(","), secret)
}

/// The `sign` of a `method` request: the values of the parameters that method signs
/// ([`super::wire::is_signed`], dossier §0.5) plus the plain password.
pub fn request_sign(
    method: &str,
    params: &[(&str, String)],
    password: &str,
    secret: &str,
    sign_need_dtl: bool,
) -> Result<String, String> {
    let mut values: Vec<&str> = params
        .iter()
        .filter(|(k, _)| super::wire::is_signed(method, k, sign_need_dtl))
        .map(|(_, v)| v.as_str())
        .collect();
    values.push(password);
    sign(&values, secret)
}
