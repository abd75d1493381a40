//! The contents of an envelope that passed [`Keyring::verify`](super::Keyring::verify). Only
//! `verify` builds a [`Verified`], and the body is reachable only through it, so no code path can
//! hand unauthenticated bytes to a JSON parser.

use serde::de::DeserializeOwned;

use super::Rejection;

/// A verified envelope: the body is reachable only through this type.
#[derive(Debug)]
pub struct Verified<'a> {
    pub(super) kid: &'a str,
    pub(super) msg_type: &'a str,
    pub(super) expires_at_ms: u64,
    pub(super) body: &'a [u8],
}

impl<'a> Verified<'a> {
    /// Id of the key that signed the envelope.
    pub fn kid(&self) -> &'a str {
        self.kid
    }

    pub fn msg_type(&self) -> &'a str {
        self.msg_type
    }

    pub fn expires_at_ms(&self) -> u64 {
        self.expires_at_ms
    }

    pub fn body(&self) -> &'a [u8] {
        self.body
    }

    /// serde_json parse of the body; failure → Rejection::Malformed
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, Rejection> {
        serde_json::from_slice(self.body).map_err(|_| Rejection::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::super::DEFAULT_MAX_ENVELOPE_BYTES;
    use super::*;

    #[test]
    fn invalid_json_body_is_malformed() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, b"{not json");
        let verified = keyring
            .verify(STREAM, &raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .unwrap();
        assert_eq!(verified.parse::<serde_json::Value>().unwrap_err(), Rejection::Malformed);
    }
}
