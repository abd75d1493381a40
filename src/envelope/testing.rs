//! Fixtures the envelope unit tests share: one stream, one expiry, one body and the keyrings made
//! from fixed secrets, so every test file signs and verifies the same way.

use super::{Keyring, Rejection, DEFAULT_MAX_ENVELOPE_BYTES};

pub const STREAM: &str = "drover:tasks";
pub const EXPIRY: u64 = 1_700_000_000_000;
pub const BEFORE: u64 = EXPIRY - 1_000;
pub const BODY: &[u8] = br#"{"id":7}"#;

pub fn secret_hex(byte: u8) -> String {
    hex::encode([byte; 32])
}

pub fn ring(spec: &str, active: Option<&str>) -> Keyring {
    Keyring::parse(spec, active).expect("valid spec")
}

pub fn k1() -> Keyring {
    ring(&format!("k1:{}", secret_hex(0x11)), None)
}

pub fn check(keyring: &Keyring, raw: &[u8]) -> Result<(), Rejection> {
    keyring
        .verify(STREAM, raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
        .map(|_| ())
}
