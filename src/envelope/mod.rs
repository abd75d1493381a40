//! Signed envelopes: the only form in which drover messages travel through Redis Streams.
//!
//! Every stream entry carries one field, `m`, holding an envelope built here. Signing happens in
//! Rust; the Lua scripts only append the signed bytes verbatim, so nothing on the Redis side ever
//! needs a secret. An envelope is a small big-endian binary frame (format version, key id,
//! message type, expiry, body) followed by an HMAC-SHA256 tag. The tag also covers the name of
//! the stream the message is meant for, which is not on the wire: a message copied to another
//! stream, or relabelled with another type, fails verification. Receivers go through
//! [`Keyring::verify`], which checks the cheapest and least trusting things first (size, then
//! framing, then the tag in constant time, then expiry) and hands the body out only inside a
//! [`Verified`], so unauthenticated bytes never reach a JSON parser. Several keys may be trusted
//! at once, named by key id, so secrets can be rotated without dropping messages in flight.
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

use std::collections::btree_map::{BTreeMap, Entry};
use std::fmt;

use hmac::{Hmac, Mac};
use serde::de::DeserializeOwned;
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The only envelope layout this module writes or accepts.
pub const FORMAT_VERSION: u8 = 1;

/// Size limit receivers apply unless configured otherwise.
pub const DEFAULT_MAX_ENVELOPE_BYTES: usize = 1 << 20;

/// Prefix of every MAC input, so a tag made for envelopes can never be mistaken for an HMAC
/// computed with the same secret for some other purpose.
const DOMAIN: &[u8] = b"drover/envelope/v1";

/// Longest key id or message type; both are length-prefixed with a single byte on the wire.
const MAX_LABEL_LEN: usize = 32;

/// Shortest secret accepted: the full output size of SHA-256.
const MIN_SECRET_BYTES: usize = 32;

const TAG_LEN: usize = 32;

/// Key id of the keyring made by [`Keyring::generate`].
const GENERATED_KID: &str = "dev";

/// Why a message was refused; `reason()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    #[error("envelope is larger than the size limit")]
    Oversize,
    #[error("envelope is malformed")]
    Malformed,
    #[error("envelope signature is invalid or signed with an unknown key")]
    Signature,
    #[error("envelope has expired")]
    Expired,
}

impl Rejection {
    /// Short, stable label for metrics and logs.
    pub fn reason(self) -> &'static str {
        match self {
            Rejection::Oversize => "oversize",
            Rejection::Malformed => "malformed",
            Rejection::Signature => "signature",
            Rejection::Expired => "expired",
        }
    }
}

/// A keyring spec that cannot be used.
///
/// Messages never contain secret material. Key ids are shown only once they are known to be
/// valid, or when they are short enough that they cannot be a misplaced secret (a valid secret
/// is at least 64 hex characters; see [`show_id`]).
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error("no signing keys given")]
    Empty,
    /// `entry` counts from 1. The entry itself is not shown: without a colon it may well be a
    /// bare secret.
    #[error("keyring entry #{entry} is not KID:HEXSECRET")]
    NotKidSecret { entry: usize },
    /// `kid` is already rendered for display (quoted, or only its length if it is long).
    #[error("key id {kid} must be 1-32 characters of A-Z a-z 0-9 . _ -")]
    BadKid { kid: String },
    #[error("signing key {kid:?}: secret is not valid hex ({detail})")]
    BadHex { kid: String, detail: String },
    #[error(
        "signing key {kid:?}: secret must be at least {MIN_SECRET_BYTES} bytes \
         ({} hex characters), got {got}",
        MIN_SECRET_BYTES * 2
    )]
    ShortSecret { kid: String, got: usize },
    #[error("duplicate key id {kid:?}")]
    DuplicateKid { kid: String },
    /// `kid` is already rendered for display, as for [`KeyringError::BadKid`].
    #[error("active key id {kid} is not in the keyring")]
    UnknownActive { kid: String },
}

/// Secret bytes of one key. Deliberately has no `Debug` impl so it cannot end up in a log line
/// through a derive somewhere else.
#[derive(Clone)]
struct Secret(Vec<u8>);

/// The keys a process trusts, and the one it signs with.
#[derive(Clone)]
pub struct Keyring {
    // A BTreeMap keeps `kids()` and `to_spec()` independent of the order keys were listed in.
    keys: BTreeMap<String, Secret>,
    /// Always a key of `keys`.
    active: String,
}

impl Keyring {
    /// Parses "kid:hexsecret" entries separated by commas, semicolons, whitespace or newlines; the
    /// active (signing) key is `active` if given, else the first entry. Secrets are hex, >= 32
    /// bytes.
    pub fn parse(spec: &str, active: Option<&str>) -> Result<Keyring, KeyringError> {
        let mut keys = BTreeMap::new();
        let mut first = None;
        let entries = spec
            .split(|c: char| c == ',' || c == ';' || c.is_whitespace())
            .filter(|entry| !entry.is_empty());
        for (index, entry) in entries.enumerate() {
            let (kid, secret_hex) = entry
                .split_once(':')
                .ok_or(KeyringError::NotKidSecret { entry: index + 1 })?;
            // Validate the id before touching the secret, so that every later error which names
            // the id names a real id and not, say, a secret written on the wrong side of the colon.
            if !is_valid_kid(kid) {
                return Err(KeyringError::BadKid { kid: show_id(kid) });
            }
            let secret = hex::decode(secret_hex).map_err(|err| KeyringError::BadHex {
                kid: kid.to_owned(),
                detail: describe_hex_error(&err),
            })?;
            if secret.len() < MIN_SECRET_BYTES {
                return Err(KeyringError::ShortSecret {
                    kid: kid.to_owned(),
                    got: secret.len(),
                });
            }
            match keys.entry(kid.to_owned()) {
                Entry::Occupied(_) => {
                    // Two secrets under one id would make verification depend on which one won.
                    return Err(KeyringError::DuplicateKid { kid: kid.to_owned() });
                }
                Entry::Vacant(slot) => {
                    slot.insert(Secret(secret));
                }
            }
            first.get_or_insert(kid);
        }
        let first = first.ok_or(KeyringError::Empty)?;
        let active = active.unwrap_or(first);
        if !keys.contains_key(active) {
            return Err(KeyringError::UnknownActive { kid: show_id(active) });
        }
        Ok(Keyring {
            keys,
            active: active.to_owned(),
        })
    }

    /// One random 32-byte key with kid "dev" (for `drover dev` and tests).
    pub fn generate() -> Keyring {
        // rand's thread RNG is a CSPRNG seeded from the OS.
        let secret: [u8; MIN_SECRET_BYTES] = rand::random();
        Keyring {
            keys: BTreeMap::from([(GENERATED_KID.to_owned(), Secret(secret.to_vec()))]),
            active: GENERATED_KID.to_owned(),
        }
    }

    /// Hex-encoded spec string that parse() accepts, e.g. to hand a generated keyring to child
    /// processes. The active key comes first, so `parse(&spec, None)` signs with the same key.
    ///
    /// The result contains every secret: never log it.
    pub fn to_spec(&self) -> String {
        let others = self.keys.keys().filter(|kid| **kid != self.active);
        std::iter::once(&self.active)
            .chain(others)
            .map(|kid| format!("{kid}:{}", hex::encode(&self.keys[kid].0)))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Key id new envelopes are signed with.
    pub fn active_kid(&self) -> &str {
        &self.active
    }

    /// Every trusted key id, sorted.
    pub fn kids(&self) -> Vec<String> {
        self.keys.keys().cloned().collect()
    }

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
            kid: &self.active,
            msg_type,
            expires_at_ms,
            body,
        };
        fields.seal(&self.keys[&self.active].0, stream)
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
        let (fields, tag) = decode(raw)?;
        let secret = self.keys.get(fields.kid).ok_or(Rejection::Signature)?;
        fields
            .mac(&secret.0, stream)
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

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Hand-written so that secrets can never be printed.
        f.debug_struct("Keyring")
            .field("kids", &self.kids())
            .field("active", &self.active)
            .finish()
    }
}

/// A verified envelope: the body is reachable only through this type.
#[derive(Debug)]
pub struct Verified<'a> {
    kid: &'a str,
    msg_type: &'a str,
    expires_at_ms: u64,
    body: &'a [u8],
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

/// Everything an envelope carries apart from its tag.
struct Fields<'a> {
    version: u8,
    kid: &'a str,
    msg_type: &'a str,
    expires_at_ms: u64,
    body: &'a [u8],
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
        out.extend_from_slice(&self.mac(secret, stream).finalize().into_bytes());
        out
    }
}

/// Splits wire bytes into fields and tag, checking only the framing: lengths, label charsets and
/// that nothing is left over. Says nothing about authenticity.
fn decode(raw: &[u8]) -> Result<(Fields<'_>, &[u8]), Rejection> {
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

fn update_prefixed(mac: &mut HmacSha256, bytes: &[u8]) {
    mac.update(&be_len(bytes.len()));
    mac.update(bytes);
}

/// A length as the u32 the format uses. Nothing that reaches here can be 4 GiB: Redis caps keys
/// and values at 512 MB, and bodies are far below that.
fn be_len(len: usize) -> [u8; 4] {
    u32::try_from(len)
        .expect("envelope field must be shorter than 4 GiB")
        .to_be_bytes()
}

fn is_valid_kid(kid: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&kid.len())
        && kid
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Message types are printable ASCII without spaces, since they end up in logs and metric labels.
fn is_valid_type(msg_type: &str) -> bool {
    (1..=MAX_LABEL_LEN).contains(&msg_type.len()) && msg_type.bytes().all(|b| b.is_ascii_graphic())
}

/// Renders a would-be key id for an error message. Anything longer than a key id may be a
/// misplaced secret (e.g. `SECRET:kid`), so then only its length is shown.
fn show_id(id: &str) -> String {
    if id.len() <= MAX_LABEL_LEN {
        format!("{id:?}")
    } else {
        format!("<{} characters, hidden>", id.chars().count())
    }
}

/// The hex crate's own message quotes the offending character, which is part of a secret.
fn describe_hex_error(err: &hex::FromHexError) -> String {
    match err {
        hex::FromHexError::InvalidHexCharacter { index, .. } => {
            format!("non-hex character at position {index}")
        }
        hex::FromHexError::OddLength => "odd number of hex digits".to_owned(),
        hex::FromHexError::InvalidStringLength => "invalid length".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STREAM: &str = "drover:tasks";
    const EXPIRY: u64 = 1_700_000_000_000;
    const BEFORE: u64 = EXPIRY - 1_000;
    const BODY: &[u8] = br#"{"id":7}"#;

    fn secret_hex(byte: u8) -> String {
        hex::encode([byte; 32])
    }

    fn ring(spec: &str, active: Option<&str>) -> Keyring {
        Keyring::parse(spec, active).expect("valid spec")
    }

    fn k1() -> Keyring {
        ring(&format!("k1:{}", secret_hex(0x11)), None)
    }

    fn check(keyring: &Keyring, raw: &[u8]) -> Result<(), Rejection> {
        keyring
            .verify(STREAM, raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .map(|_| ())
    }

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
    fn parse_accepts_all_separators() {
        let spec = format!(
            "a:{},b:{};c:{} d:{}\n\te:{}\n",
            secret_hex(1),
            secret_hex(2),
            secret_hex(3),
            secret_hex(4),
            secret_hex(5)
        );
        let keyring = ring(&spec, None);
        assert_eq!(keyring.kids(), ["a", "b", "c", "d", "e"]);
        assert_eq!(keyring.active_kid(), "a");
        assert_eq!(ring(&spec, Some("d")).active_kid(), "d");
    }

    fn parse_err(spec: &str, active: Option<&str>) -> String {
        let err = Keyring::parse(spec, active).expect_err("spec should be rejected");
        let message = err.to_string();
        // Whatever the problem, no error may carry a secret (or a recognisable part of one).
        for secret in [secret_hex(0x11), "0123456789abcdef".repeat(4)] {
            assert!(!message.contains(&secret[..16]), "{message}");
            assert!(!format!("{err:?}").contains(&secret[..16]), "{err:?}");
        }
        message
    }

    #[test]
    fn parse_errors() {
        let good = secret_hex(0x11);
        assert_eq!(
            parse_err("k1:0123456789abcdef0123", None),
            "signing key \"k1\": secret must be at least 32 bytes (64 hex characters), got 10"
        );
        assert_eq!(
            parse_err(&format!("k1:{}zz", &good[..62]), None),
            "signing key \"k1\": secret is not valid hex (non-hex character at position 62)"
        );
        assert_eq!(
            parse_err(&format!("k1:{good}0"), None),
            "signing key \"k1\": secret is not valid hex (odd number of hex digits)"
        );
        assert_eq!(
            parse_err(&format!("k1:{good},k1:{good}"), None),
            "duplicate key id \"k1\""
        );
        assert_eq!(
            parse_err(&format!("k/1:{good}"), None),
            "key id \"k/1\" must be 1-32 characters of A-Z a-z 0-9 . _ -"
        );
        assert_eq!(
            parse_err(&format!(":{good}"), None),
            "key id \"\" must be 1-32 characters of A-Z a-z 0-9 . _ -"
        );
        assert_eq!(parse_err("", None), "no signing keys given");
        assert_eq!(parse_err(" ,;\n ", Some("k1")), "no signing keys given");
        assert_eq!(
            parse_err(&format!("k1:{good}"), Some("x")),
            "active key id \"x\" is not in the keyring"
        );
    }

    #[test]
    fn parse_errors_never_echo_a_secret() {
        let good = secret_hex(0x11);
        // A bare secret, a secret and kid swapped, and a secret passed as the active id.
        assert_eq!(
            parse_err(&format!("k1:{good} {good}"), None),
            "keyring entry #2 is not KID:HEXSECRET"
        );
        assert!(parse_err(&format!("{good}:k1"), None).starts_with("key id <64 characters"));
        assert!(parse_err(&format!("k1:{good}"), Some(&good)).starts_with("active key id <64"));
        // The hex crate's own message would quote the bad character.
        let bad_hex = format!("k1:{}", "0123456789abcdeX".repeat(4));
        assert!(!parse_err(&bad_hex, None).contains('X'));
    }

    #[test]
    fn debug_shows_no_secrets() {
        let keyring = ring(&format!("k1:{},k2:{}", secret_hex(0xab), secret_hex(0xcd)), Some("k2"));
        let debug = format!("{keyring:?} {keyring:#?}");
        assert!(debug.contains("k1") && debug.contains("k2"), "{debug}");
        for needle in ["abab", "cdcd", "171, 171", "205, 205"] {
            assert!(!debug.contains(needle), "{debug}");
        }
        let generated = Keyring::generate();
        let secret_part = generated.to_spec()["dev:".len()..].to_owned();
        assert!(!format!("{generated:?}").contains(&secret_part[..8]));
    }

    #[test]
    fn to_spec_round_trips() {
        let keyring = ring(&format!("k1:{} k2:{}", secret_hex(0x11), secret_hex(0x22)), Some("k2"));
        let again = ring(&keyring.to_spec(), None);
        assert_eq!(again.kids(), keyring.kids());
        assert_eq!(again.active_kid(), "k2");
        let raw = keyring.sign(STREAM, "t", EXPIRY, BODY);
        assert_eq!(raw, again.sign(STREAM, "t", EXPIRY, BODY));
        let old = k1().sign(STREAM, "t", EXPIRY, BODY);
        assert_eq!(check(&again, &old), Ok(()));
    }

    #[test]
    fn generated_keyrings_are_usable_and_distinct() {
        let a = Keyring::generate();
        let b = Keyring::generate();
        assert_eq!(a.active_kid(), "dev");
        assert_eq!(a.kids(), ["dev"]);
        assert_ne!(a.to_spec(), b.to_spec());
        let raw = a.sign(STREAM, "t", EXPIRY, BODY);
        assert_eq!(check(&ring(&a.to_spec(), None), &raw), Ok(()));
        assert_eq!(check(&b, &raw), Err(Rejection::Signature));
    }

    #[test]
    fn invalid_json_body_is_malformed() {
        let keyring = k1();
        let raw = keyring.sign(STREAM, "t", EXPIRY, b"{not json");
        let verified = keyring
            .verify(STREAM, &raw, BEFORE, DEFAULT_MAX_ENVELOPE_BYTES)
            .unwrap();
        assert_eq!(verified.parse::<serde_json::Value>().unwrap_err(), Rejection::Malformed);
    }

    #[test]
    #[should_panic(expected = "message type")]
    fn signing_with_an_invalid_type_panics() {
        k1().sign(STREAM, "has space", EXPIRY, BODY);
    }

    #[test]
    fn reasons_are_metric_labels() {
        let all = [
            Rejection::Oversize,
            Rejection::Malformed,
            Rejection::Signature,
            Rejection::Expired,
        ];
        let labels: Vec<_> = all.iter().map(|r| r.reason()).collect();
        assert_eq!(labels, ["oversize", "malformed", "signature", "expired"]);
    }
}
