//! The envelope's bytes on the wire: writing the frame and splitting untrusted bytes back into
//! fields. Nothing here knows a secret; the tag that follows the frame is made and checked in
//! `sign.rs`. Decoding checks framing only (lengths, label charsets, nothing left
//! over) and says nothing about authenticity.
//!
//! Wire format:
//!
//! ```text
//! u8   format version (FORMAT_VERSION)
//! u8   kid length (1..=32), kid bytes ([A-Za-z0-9._-])
//! u8   type length (1..=32), type bytes (printable ASCII)
//! u64  expires_at_ms (unix ms)
//! u32  body length, body bytes
//! [32] tag = HMAC-SHA256(secret, DOMAIN ‖ lp(stream) ‖ [version] ‖ lp(kid) ‖ lp(type)
//!                                ‖ u64 expiry ‖ lp(body))
//! ```
//!
//! where `lp(x)` is a big-endian `u32` length followed by the bytes of `x`.

use super::keyring::is_valid_kid;
use super::Rejection;

/// The only envelope layout this module writes or accepts.
pub const FORMAT_VERSION: u8 = 1;

/// Longest key id or message type; both are length-prefixed with a single byte on the wire.
pub(super) const MAX_LABEL_LEN: usize = 32;

pub(super) const TAG_LEN: usize = 32;

/// Everything an envelope carries apart from its tag.
pub(super) struct Fields<'a> {
    pub(super) version: u8,
    pub(super) kid: &'a str,
    pub(super) msg_type: &'a str,
    pub(super) expires_at_ms: u64,
    pub(super) body: &'a [u8],
}

impl Fields<'_> {
    /// The wire bytes of the envelope up to its tag, with room for the tag that follows.
    pub(super) fn frame(&self) -> Vec<u8> {
        let capacity = 3 + self.kid.len() + self.msg_type.len() + 8 + 4 + self.body.len() + TAG_LEN;
        let mut out = Vec::with_capacity(capacity);
        out.push(self.version);
        // Both labels were validated to be at most MAX_LABEL_LEN bytes, so they fit in a u8.
        out.push(self.kid.len() as u8);
        out.extend_from_slice(self.kid.as_bytes());
        out.push(self.msg_type.len() as u8);
        out.extend_from_slice(self.msg_type.as_bytes());
        out.extend_from_slice(&self.expires_at_ms.to_be_bytes());
        out.extend_from_slice(&be_len(self.body.len()));
        out.extend_from_slice(self.body);
        out
    }
}

/// Splits wire bytes into fields and tag, checking only the framing: lengths, label charsets and
/// that nothing is left over. Says nothing about authenticity.
pub(super) fn decode(raw: &[u8]) -> Result<(Fields<'_>, &[u8]), Rejection> {
    let mut reader = Reader { rest: raw };
    let version = reader.byte()?;
    let kid = reader.label(is_valid_kid)?;
    let msg_type = reader.label(is_valid_type)?;
    let expires_at_ms = u64::from_be_bytes(reader.array()?);
    let body_len = u32::from_be_bytes(reader.array()?);
    let body = reader.take(usize::try_from(body_len).map_err(|_| Rejection::Malformed)?)?;
    let tag = reader.take(TAG_LEN)?;
    // Exact length: trailing bytes would be unauthenticated data riding along with the message.
    if !reader.rest.is_empty() {
        return Err(Rejection::Malformed);
    }
    let fields = Fields {
        version,
        kid,
        msg_type,
        expires_at_ms,
        body,
    };
    Ok((fields, tag))
}

/// Cursor over untrusted bytes; every read that runs past the end is `Malformed`.
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Rejection> {
        let (head, tail) = self.rest.split_at_checked(n).ok_or(Rejection::Malformed)?;
        self.rest = tail;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, Rejection> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], Rejection> {
        Ok(self.take(N)?.try_into().expect("take returns exactly N bytes"))
    }

    /// A u8-length-prefixed string that must pass `valid`.
    fn label(&mut self, valid: fn(&str) -> bool) -> Result<&'a str, Rejection> {
        let len = usize::from(self.byte()?);
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes)
            .ok()
            .filter(|label| valid(label))
            .ok_or(Rejection::Malformed)
    }
}

/// A length as the u32 the format uses. Nothing that reaches here can be 4 GiB: Redis caps keys
/// and values at 512 MB, and bodies are far below that.
pub(super) fn be_len(len: usize) -> [u8; 4] {
    u32::try_from(len)
        .expect("envelope field must be shorter than 4 GiB")
        .to_be_bytes()
}

/// Message types are printable ASCII without spaces, since they end up in logs and metric labels.
pub(super) fn is_valid_type(msg_type: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&msg_type.len()) && msg_type.bytes().all(|b| b.is_ascii_graphic())
}

#[cfg(test)]
mod tests {
    use hmac::Mac;

    use super::super::sign::HmacSha256;
    use super::super::testing::*;
    use super::*;

    #[test]
    fn wire_layout_matches_the_documented_format() {
        // Rebuilds the frame and tag by hand, so a change to either is caught here rather than
        // by a peer that no longer understands us.
        let secret = [0x11u8; 32];
        let raw = k1().sign(STREAM, "t", EXPIRY, b"xy");
        let mut frame = vec![FORMAT_VERSION, 2, b'k', b'1', 1, b't'];
        frame.extend_from_slice(&EXPIRY.to_be_bytes());
        frame.extend_from_slice(&[0, 0, 0, 2, b'x', b'y']);
        let mut mac = HmacSha256::new_from_slice(&secret).unwrap();
        mac.update(b"drover/envelope/v1");
        mac.update(&(STREAM.len() as u32).to_be_bytes());
        mac.update(STREAM.as_bytes());
        mac.update(&[1, 0, 0, 0, 2, b'k', b'1', 0, 0, 0, 1, b't']);
        mac.update(&EXPIRY.to_be_bytes());
        mac.update(&[0, 0, 0, 2, b'x', b'y']);
        frame.extend_from_slice(&mac.finalize().into_bytes());
        assert_eq!(raw, frame);
    }

    #[test]
    fn truncated_tag_is_malformed() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        for cut in 1..=TAG_LEN {
            assert_eq!(check(&keyring, &raw[..raw.len() - cut]), Err(Rejection::Malformed));
        }
        assert_eq!(check(&keyring, &[]), Err(Rejection::Malformed));
    }

    #[test]
    fn trailing_byte_is_malformed() {
        let keyring = k1();
        let mut raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        raw.push(0);
        assert_eq!(check(&keyring, &raw), Err(Rejection::Malformed));
    }
}
