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
//! Files:
//! - `wire`: the wire format (documented there) — writing a frame, splitting untrusted bytes.
//! - `sign`: the tag, [`Keyring::sign`] and [`Keyring::verify`].
//! - `keyring`: [`Keyring`], its `KID:HEXSECRET` spec and [`KeyringError`].
//! - `rejection`: [`Rejection`], why a message was refused.
//! - `verified`: [`Verified`], the only way to a body.

mod keyring;
mod rejection;
mod sign;
#[cfg(test)]
mod testing;
mod verified;
mod wire;

pub use keyring::{Keyring, KeyringError};
pub use rejection::Rejection;
pub use sign::DEFAULT_MAX_ENVELOPE_BYTES;
pub use verified::Verified;
pub use wire::FORMAT_VERSION;
