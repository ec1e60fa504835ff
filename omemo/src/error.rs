//! Error types, one per layer, wrapped by [`Error`].

use thiserror::Error;

/// A key or signature could not be used.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KeyError {
    /// A key had the wrong number of bytes.
    #[error("{what} must be {expected} bytes, got {actual}")]
    InvalidLength {
        /// What kind of key it was.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length received.
        actual: usize,
    },
    /// A serialized Curve25519 public key did not start with the type byte 0x05.
    #[error("public key type byte must be 0x05, got {0:#04x}")]
    InvalidKeyType(u8),
    /// A Diffie-Hellman result was all zeros: the other key has low order.
    #[error("Diffie-Hellman with a low-order public key")]
    NonContributory,
    /// A signature did not verify.
    #[error("signature verification failed")]
    BadSignature,
    /// A key was not a point on Curve25519 or could not be converted to Edwards form.
    #[error("public key is not a valid curve point")]
    InvalidPoint,
}

/// A wire message could not be decoded.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// The message was shorter than its fixed parts.
    #[error("message too short: {actual} bytes, need at least {minimum}")]
    TooShort {
        /// The fewest bytes the message can have.
        minimum: usize,
        /// The bytes received.
        actual: usize,
    },
    /// The version byte named a version this crate does not speak.
    #[error("unsupported message version byte {0:#04x} (expected 0x33)")]
    UnsupportedVersion(u8),
    /// The protobuf body did not parse.
    #[error("malformed protobuf: {0}")]
    Protobuf(String),
    /// A field that every deployed client requires was absent.
    #[error("required field `{0}` is missing")]
    MissingField(&'static str),
    /// A key inside the message was malformed.
    #[error("malformed key in `{field}`: {source}")]
    Key {
        /// The message field that held the key.
        field: &'static str,
        /// What was wrong with it.
        source: KeyError,
    },
}

/// A message could not be decrypted. The session is unchanged after each of these.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecryptError {
    /// The message authentication code did not match: tampered, or not for this session.
    #[error("message authentication failed")]
    Authentication,
    /// The message key for this counter was already used (a replay or a duplicate).
    #[error("duplicate message: counter {counter} was already decrypted")]
    Duplicate {
        /// The counter of the message.
        counter: u32,
    },
    /// The counter jumps further ahead than the skip limit allows.
    #[error("message counter {counter} is {jump} ahead of the chain, limit is {limit}")]
    TooFarAhead {
        /// The counter of the message.
        counter: u32,
        /// How many message keys it would skip.
        jump: u32,
        /// The configured limit.
        limit: u32,
    },
    /// The message was built for a different key exchange than the one that built the
    /// session.
    #[error("key exchange does not match this session")]
    KeyExchangeMismatch,
    /// The key exchange used an identity key other than the session's.
    #[error("sender identity key does not match the session")]
    IdentityMismatch,
    /// A key exchange without a one-time prekey; deployed clients refuse these.
    #[error("key exchange without a one-time prekey id")]
    MissingPreKey,
    /// The key exchange names a signed prekey or one-time prekey that is not the one
    /// given.
    #[error("key exchange names {what} id {id}, which was not supplied")]
    WrongPreKey {
        /// Which prekey.
        what: &'static str,
        /// The id the message names.
        id: u32,
    },
    /// A Diffie-Hellman step failed.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// The payload or key material had an impossible shape.
    #[error("{0}")]
    Malformed(&'static str),
}

/// Session state could not be restored, or a session operation is impossible.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum SessionError {
    /// The serialized state was written by an unknown format version.
    #[error("unsupported session state format version {0}")]
    UnsupportedFormat(u32),
    /// The serialized state is corrupt.
    #[error("corrupt session state: {0}")]
    Corrupt(&'static str),
    /// The bundle offers no one-time prekey; deployed clients refuse key exchanges
    /// without one.
    #[error("bundle has no one-time prekeys")]
    NoPreKeys,
    /// The sending counter would overflow; the session must be replaced.
    #[error("sending chain exhausted")]
    CounterOverflow,
}

/// Any error of this crate.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// A key or signature problem.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// A wire message did not decode.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A message did not decrypt.
    #[error(transparent)]
    Decrypt(#[from] DecryptError),
    /// A session problem.
    #[error(transparent)]
    Session(#[from] SessionError),
}
