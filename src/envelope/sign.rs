//! Signing and verifying: the HMAC-SHA256 tag over an envelope's fields and the name of the
//! stream it is meant for, and the order in which [`Keyring::verify`] checks untrusted bytes
//! (size, then framing, then the tag in constant time, then version and expiry).

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::wire::{self, be_len, is_valid_type, Fields, FORMAT_VERSION, MAX_LABEL_LEN};
use super::{Keyring, Rejection, Verified};

pub(super) type HmacSha256 = Hmac<Sha256>;

/// Size limit receivers apply unless configured otherwise.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Prefix of every MAC input, so a tag made for envelopes can never be mistaken for an HMAC
/// computed with the same secret for some other purpose.
const DOMAIN: &[u8] = b"drover/envelope/v1";

impl Keyring {
    /// Signs `body` as a message of type `msg_type` for the stream named `stream`, with the active
    /// key. The result is the complete envelope, ready to be stored as field `m` of an entry.
    ///
    /// # Panics
    ///
    /// If `msg_type` is not 1-32 printable ASCII characters, or `body` is 4 GiB or more. Message
    /// types are constants in drover's code, so either is a bug in the caller, not bad input.
    pub fn sign(&self, stream: &str, msg_type: &str, expires_at_ms: u64, body: &[u8]) -> Vec<u8> {
        assert!(
            is_valid_type(msg_type),
            "message type {msg_type:?} must be 1-{MAX_LABEL_LEN} printable ASCII characters"
        );
        let fields = Fields {
            version: FORMAT_VERSION,
            kid: self.active_kid(),
            msg_type,
            expires_at_ms,
            body,
        };
        fields.seal(self.active_secret(), stream)
    }

    /// Checks an envelope read from the stream named `stream` and returns its contents.
    ///
    /// Order: size (> max_bytes → Oversize) before anything else; framing → Malformed; unknown kid
    /// → Signature; tag (constant time, hmac's verify_slice) → Signature; version != 1 →
    /// Malformed; now_ms > expires_at_ms → Expired.
    pub fn verify<'a>(
        &self,
        stream: &str,
        raw: &'a [u8],
        now_ms: u64,
        max_bytes: usize,
    ) -> Result<Verified<'a>, Rejection> {
        // Size first: it costs nothing and bounds the work anyone can make us do.
        if raw.len() > max_bytes {
            return Err(Rejection::Oversize);
        }
        let (fields, tag) = wire::decode(raw)?;
        let secret = self.secret(fields.kid).ok_or(Rejection::Signature)?;
        fields
            .mac(secret, stream)
            .verify_slice(tag)
            .map_err(|_| Rejection::Signature)?;
        // The version byte is covered by the tag, so checking it here (after the tag) still
        // refuses forged versions; it only stops a future, authentic layout from being misread.
        if fields.version != FORMAT_VERSION {
            return Err(Rejection::Malformed);
        }
        if now_ms > fields.expires_at_ms {
            return Err(Rejection::Expired);
        }
        Ok(Verified {
            kid: fields.kid,
            msg_type: fields.msg_type,
            expires_at_ms: fields.expires_at_ms,
            body: fields.body,
        })
    }
}

impl Fields<'_> {
    /// A MAC fed with everything the tag covers, ready to finalize or verify.
    fn mac(&self, secret: &[u8], stream: &str) -> HmacSha256 {
        let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes keys of any length");
        mac.update(DOMAIN);
        // Every variable-length part is length-prefixed so that no two different messages feed
        // the MAC the same bytes (e.g. moving a character from the stream name into the kid).
        update_prefixed(&mut mac, stream.as_bytes());
        mac.update(&[self.version]);
        update_prefixed(&mut mac, self.kid.as_bytes());
        update_prefixed(&mut mac, self.msg_type.as_bytes());
        mac.update(&self.expires_at_ms.to_be_bytes());
        update_prefixed(&mut mac, self.body);
        mac
    }

    /// The wire bytes of the envelope, tag included.
    fn seal(&self, secret: &[u8], stream: &str) -> Vec<u8> {
        let mut out = self.frame();
        out.extend_from_slice(&self.mac(secret, stream).finalize().into_bytes());
        out
    }
}

fn update_prefixed(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&be_len(bytes.len()));
    mac.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn round_trip() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "task.submit", EXPIRY, BODY);
        let verified = keyring
            .verify(STREAM, &raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .unwrap();
        assert_eq!(verified.kid(), "k1");
        assert_eq!(verified.msg_type(), "task.submit");
        assert_eq!(verified.expires_at_ms(), EXPIRY);
        assert_eq!(verified.body(), BODY);
        #[derive(serde::Deserialize)]
        struct Msg {
            id: u32,
        }
        assert_eq!(verified.parse::<Msg>().unwrap().id, 7);
    }

    #[test]
    fn any_flipped_bit_is_rejected() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, b"{}");
        assert_eq!(check(&keyring, &raw), Ok(()));
        for pos in 0..raw.len() {
            for bit in 0..8 {
                let mut bad = raw.clone();
                bad[pos] ^= 1 << bit;
                let result = check(&keyring, &bad);
                assert!(
                    matches!(result, Err(Rejection::Signature | Rejection::Malformed)),
                    "byte {pos} bit {bit}: {result:?}"
                );
            }
        }
    }

    #[test]
    fn unknown_kid_is_signature() {
        let other = ring(&format!("k9:{}", secret_hex(0x11)), None);
        let raw = other.sign(STREAM, "t", EXPIRY, BODY);
        assert_eq!(check(&k1(), &raw), Err(Rejection::Signature));
    }

    #[test]
    fn moved_to_another_stream_is_signature() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        let result = keyring.verify("drover:other", &raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES);
        assert_eq!(result.unwrap_err(), Rejection::Signature);
    }

    #[test]
    fn changed_type_is_signature() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "task.a", EXPIRY, BODY);
        let type_at = 1 + 1 + 2 + 1;
        assert_eq!(&raw[type_at..type_at + 6], b"task.a");
        let mut retyped = raw.clone();
        retyped[type_at + 5] = b'b';
        assert_eq!(check(&keyring, &retyped), Err(Rejection::Signature));
    }

    #[test]
    fn expiry_is_inclusive() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        let max = DEFAULT_MAX_ENVELOPE_BYTES;
        assert!(keyring.verify(STREAM, &raw, EXPIRY, max).is_ok());
        assert_eq!(
            keyring.verify(STREAM, &raw, EXPIRY + 1, max).unwrap_err(),
            Rejection::Expired
        );
    }

    #[test]
    fn oversize_is_checked_before_parsing() {
        let keyring = k1();
        let garbage = vec![0xff; 101];
        assert_eq!(
            keyring.verify(STREAM, &garbage, BEFORE, 100).unwrap_err(),
            Rejection::Oversize
        );
        let raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        assert_eq!(
            keyring.verify(STREAM, &raw, BEFORE, raw.len() - 1).unwrap_err(),
            Rejection::Oversize
        );
        assert!(keyring.verify(STREAM, &raw, BEFORE, raw.len()).is_ok());
    }

    #[test]
    fn other_version_is_malformed_even_with_a_valid_tag() {
        let keyring = k1();
        let fields = Fields {
            version: 2,
            kid: "k1",
            msg_type: "t",
            expires_at_ms: EXPIRY,
            body: BODY,
        };
        let raw = fields.seal(&[0x11; 32], STREAM);
        assert_eq!(check(&keyring, &raw), Err(Rejection::Malformed));
    }

    #[test]
    fn key_rotation() {
        let old = k1();
        let both = ring(&format!("k1:{},k2:{}", secret_hex(0x11), secret_hex(0x22)), Some("k2"));
        let new_only = ring(&format!("k2:{}", secret_hex(0x22)), None);
        assert_eq!(both.active_kid(), "k2");
        assert_eq!(both.kids(), ["k1", "k2"]);

        let from_old = old.sign(STREAM, "t", EXPIRY, BODY);
        let from_both = both.sign(STREAM, "t", EXPIRY, BODY);
        let verified = both
            .verify(STREAM, &from_old, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .unwrap();
        assert_eq!(verified.kid(), "k1");
        let verified = both
            .verify(STREAM, &from_both, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .unwrap();
        assert_eq!(verified.kid(), "k2");
        assert_eq!(check(&new_only, &from_both), Ok(()));
        assert_eq!(check(&new_only, &from_old), Err(Rejection::Signature));
    }

    #[test]
    #[should_panic(expected = "message type")]
    fn signing_with_an_invalid_type_panics() {
        k1().sign(STREAM, "has space", EXPIRY, BODY);
    }
}
