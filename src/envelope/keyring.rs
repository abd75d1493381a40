//! The keyring: the keys a process trusts, named by key id, and the one it signs with; parsed
//! from a `KID:HEXSECRET,…` spec. Several keys may be trusted at once so secrets can be rotated
//! without dropping messages in flight. Secrets never leave this file except as MAC keys and
//! through [`Keyring::to_spec`]: neither [`Keyring`]'s `Debug` nor any [`KeyringError`] shows one.

use crate::names::NameKind;
use std::collections::btree_map::{BTreeMap, Entry};
use std::fmt;

use super::wire::MAX_LABEL_LEN;

/// Shortest secret accepted: the full output size of SHA-256.
const MIN_SECRET_BYTES: usize = 32;

/// Key id of the keyring made by [`Keyring::generate`].
const GENERATED_KID: &str = "dev";

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

    /// The secret new envelopes are signed with.
    pub(super) fn active_secret(&self) -> &[u8] {
        &self.keys[&self.active].0
    }

    /// The secret of a trusted key id, if it is one.
    pub(super) fn secret(&self, kid: &str) -> Option<&[u8]> {
        self.keys.get(kid).map(|secret| secret.0.as_slice())
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

pub(super) fn is_valid_kid(kid: &str) -> bool {
    NameKind::KeyId.check(kid).is_ok()
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
    use super::super::testing::*;
    use super::super::Rejection;
    use super::*;

    #[test]
    fn a_key_id_fits_the_envelope_label() {
        assert_eq!(NameKind::KeyId.max_len(), MAX_LABEL_LEN);
        assert!(is_valid_kid("k1.2026-12_a"));
        assert!(!is_valid_kid(""));
        assert!(!is_valid_kid("k:1"));
        assert!(!is_valid_kid(&"k".repeat(MAX_LABEL_LEN + 1)));
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
}
