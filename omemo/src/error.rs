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
    /// A Curve25519 public key that is not in canonical form (bit 255 set, or a
    /// u-coordinate not below 2^255 - 19): it would name the same key as other bytes.
    #[error("public key is not in canonical form")]
    NonCanonical,
    /// An identity key known only in its Curve25519 form (from the legacy wire) was used
    /// where OMEMO 2 needs its Ed25519 form, which the Curve25519 form does not determine.
    #[error("the Ed25519 form of this identity key is unknown (it came from the legacy wire)")]
    UnknownEd25519Form,
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
    /// A field had the wrong number of bytes.
    #[error("`{field}` must be {expected} bytes, got {actual}")]
    FieldLength {
        /// The message field.
        field: &'static str,
        /// The length required.
        expected: usize,
        /// The length received.
        actual: usize,
    },
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
    /// The message, or the prekey it names, belongs to the other protocol version.
    #[error("a {message} message cannot be decrypted with {expected} keys")]
    VersionMismatch {
        /// The version of the session or prekey.
        expected: crate::Version,
        /// The version of the message.
        message: crate::Version,
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

/// An XML element could not be parsed as an OMEMO or pubsub stanza part, or a server
/// answered an IQ with an error.
///
/// Values copied from the stanza into an error are shortened to a few dozen characters,
/// so an oversized attribute does not grow into an oversized error.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StanzaError {
    /// The element was not the one expected.
    #[error("expected <{expected} xmlns='{expected_namespace}'>, got <{name} xmlns='{namespace}'>")]
    UnexpectedElement {
        /// The local name expected.
        expected: &'static str,
        /// The namespace expected.
        expected_namespace: &'static str,
        /// The local name found.
        name: String,
        /// The namespace found.
        namespace: String,
    },
    /// A required child element was absent.
    #[error("required element <{0}> is missing")]
    MissingElement(&'static str),
    /// A required attribute was absent.
    #[error("<{element}> has no `{attribute}` attribute")]
    MissingAttribute {
        /// The element that lacks it.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
    },
    /// An attribute had a value that does not parse, such as a device id that is not a
    /// 32-bit unsigned number.
    #[error("<{element}> has an invalid `{attribute}` attribute: {value:?}")]
    InvalidAttribute {
        /// The element.
        element: &'static str,
        /// The attribute.
        attribute: &'static str,
        /// The value found, shortened.
        value: String,
    },
    /// An element that must carry data was empty.
    #[error("<{0}> is empty")]
    EmptyElement(&'static str),
    /// The text of an element was not base64.
    #[error("<{what}> is not valid base64")]
    Base64 {
        /// The element whose text it was.
        what: &'static str,
    },
    /// A key in a bundle was not a 33-byte `0x05`-prefixed Curve25519 key.
    #[error("<{what}> holds an invalid key: {source}")]
    InvalidKey {
        /// The element that held the key.
        what: &'static str,
        /// What was wrong with it.
        source: KeyError,
    },
    /// A device list named more distinct devices than the caller allows.
    #[error("device list names {count} devices, the limit is {cap}")]
    TooManyDevices {
        /// Distinct device ids in the list.
        count: usize,
        /// The limit.
        cap: usize,
    },
    /// An element had more children of one kind than this crate accepts.
    #[error("{count} <{what}> elements, the limit is {cap}")]
    TooMany {
        /// The child element counted.
        what: &'static str,
        /// How many there were.
        count: usize,
        /// The limit.
        cap: usize,
    },
    /// The text of an element was longer than this crate accepts.
    #[error("<{what}> holds {size} characters, the limit is {limit}")]
    TooLarge {
        /// The element.
        what: &'static str,
        /// Its text length in bytes, whitespace included.
        size: usize,
        /// The limit.
        limit: usize,
    },
    /// Bytes that should hold an XML document did not.
    #[error("<{what}> is not well-formed XML: {reason}")]
    InvalidXml {
        /// What the document should have been.
        what: &'static str,
        /// What the parser said, shortened.
        reason: String,
    },
    /// A value of one protocol version was given to the XML of the other.
    #[error("{what} is for {found}, this XML is {expected}")]
    WrongVersion {
        /// What was given.
        what: &'static str,
        /// The version of the XML.
        expected: crate::Version,
        /// The version of the value.
        found: crate::Version,
    },
    /// The server answered an IQ with `type='error'`.
    #[error("IQ error: {condition}{}", text.as_deref().map(|t| format!(" ({t})")).unwrap_or_default())]
    IqError {
        /// The error condition: the pubsub-specific one (such as `precondition-not-met`)
        /// when present, otherwise the stanza error condition (such as
        /// `item-not-found`), or `undefined-condition` when the error names none.
        condition: String,
        /// The human-readable `<text>` of the error, shortened, if any.
        text: Option<String>,
    },
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
    /// An XML stanza did not parse, or a server answered with an error.
    #[error(transparent)]
    Stanza(#[from] StanzaError),
}

/// Why a room cannot carry OMEMO ([`ManagerError::RoomNotUsable`]).
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RoomRefusal {
    /// Occupants do not see each other's real JIDs (semi-anonymous).
    #[error("it is not non-anonymous")]
    Anonymous,
    /// Anyone may enter, so the list of who reads along is not the member list.
    #[error("it is not members-only")]
    NotMembersOnly,
    /// Its features or member lists could not be read.
    #[error("its features or member lists could not be read")]
    Unreadable,
    /// This device is not in it: the room refused it, or removed it, or has not let it
    /// in yet.
    #[error("this device is not in it")]
    NotEntered,
    /// Its features and member lists have not all arrived yet.
    #[error("its features and member lists have not all arrived yet")]
    NotReady,
}

/// A session manager operation failed. Nothing was stored for a message that failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ManagerError {
    /// The store belongs to another account.
    #[error("the store belongs to {stored}, not {requested}")]
    WrongAccount {
        /// The JID in the store.
        stored: String,
        /// The JID asked for.
        requested: String,
    },
    /// [`Manager::remove_own_device`](crate::Manager::remove_own_device) was asked to
    /// remove the device it runs on.
    #[error("this device cannot remove itself from its device lists")]
    RemovingThisDevice,
    /// [`ManagerConfig::label`](crate::ManagerConfig::label) is longer than device lists
    /// carry.
    #[error("the device label is {length} bytes; at most {max} fit in a device list")]
    LabelTooLong {
        /// Its length in bytes.
        length: usize,
        /// The limit.
        max: usize,
    },
    /// The own device lists have not arrived on this stream yet, so a change to them
    /// could drop devices another client added; try again once they have.
    #[error("the own device lists have not arrived (or were not readable) yet")]
    OwnListsUnknown,
    /// A key exchange from a JID that started too many sessions in the last hour
    /// ([`ManagerConfig::new_sessions_per_hour`](crate::ManagerConfig::new_sessions_per_hour));
    /// nothing was stored and no prekey used.
    #[error("{jid} started too many new sessions in the last hour")]
    TooManyNewSessions {
        /// The JID.
        jid: String,
    },
    /// A message from a device of a JID that already has as many device records as a
    /// device list may name ([`ManagerConfig::max_devices_per_jid`](crate::ManagerConfig::max_devices_per_jid));
    /// nothing was stored.
    #[error("{jid} already has {cap} devices")]
    TooManyDevices {
        /// The JID.
        jid: String,
        /// The cap.
        cap: usize,
    },
    /// The configuration turns every protocol version off.
    #[error("no OMEMO version is turned on in the configuration")]
    NoVersions,
    /// `encrypt` was called without recipients.
    #[error("no recipients given")]
    NoRecipients,
    /// [`Manager::join_room`](crate::Manager::join_room) was not called for the room.
    #[error("{room} is not a joined room")]
    RoomNotJoined {
        /// The room.
        room: String,
    },
    /// The room cannot carry OMEMO: XEP-0384 asks for rooms where every member sees the
    /// others' real JIDs and only members enter (nothing was sent).
    #[error("{room} cannot carry OMEMO: {reason}")]
    RoomNotUsable {
        /// The room.
        room: String,
        /// Why.
        reason: RoomRefusal,
    },
    /// A room message from a nickname whose real JID the room never showed.
    #[error("{room}: the real JID of {nick} is not known")]
    UnknownOccupant {
        /// The room.
        room: String,
        /// The occupant's nickname.
        nick: String,
    },
    /// A room message from someone who is not a member (nor admin nor owner) of the
    /// room; nothing was stored.
    #[error("{room}: {jid} is not a member")]
    NotARoomMember {
        /// The room.
        room: String,
        /// The sender's real JID.
        jid: String,
    },
    /// No device of any recipient can receive the message.
    #[error("no device of the recipients can receive the message ({} skipped){}", skipped.len(), why_skipped(skipped))]
    NoRecipientDevices {
        /// Every device considered, and why it was skipped.
        skipped: Vec<crate::manager::SkippedDevice>,
    },
    /// An identity backup could not be made or opened.
    #[error(transparent)]
    Backup(#[from] crate::BackupError),
    /// A device the manager has never seen.
    #[error("unknown device {device_id} of {jid}")]
    UnknownDevice {
        /// The bare JID.
        jid: String,
        /// The device id.
        device_id: u32,
    },
    /// A verification URI names a fingerprint that is not the device's (nothing was
    /// changed).
    #[error(
        "the fingerprint given for device {device_id} of {jid} is not the one of its identity key; nothing was changed"
    )]
    FingerprintMismatch {
        /// The bare JID.
        jid: String,
        /// The device id.
        device_id: u32,
    },
    /// A trust decision for a device whose identity key is not known yet.
    #[error("identity key of device {device_id} of {jid} is not known yet; fetch its bundle first")]
    NoIdentityKey {
        /// The bare JID.
        jid: String,
        /// The device id.
        device_id: u32,
    },
    /// The message has no usable `from`.
    #[error("message has no valid sender JID")]
    MissingSender,
    /// The message has no legacy OMEMO `<encrypted>` element.
    #[error("message is not OMEMO encrypted")]
    NotEncrypted,
    /// The message was sent by this very device (a reflection or carbon of our own).
    #[error("message was sent by this device")]
    OwnMessage,
    /// The message carries no key for this device.
    #[error("message is not encrypted for this device")]
    NotForThisDevice,
    /// A ratchet message arrived from a device without a session.
    #[error("no session with the sending device")]
    NoSession,
    /// A key exchange used an identity key other than the one known for the device.
    #[error("identity key of device {device_id} of {jid} changed; refused")]
    IdentityChanged {
        /// The bare JID.
        jid: String,
        /// The device id.
        device_id: u32,
    },
    /// A key exchange names a signed prekey this device no longer has.
    #[error("signed prekey {0} is not available")]
    UnknownSignedPreKey(u32),
    /// A key exchange names a one-time prekey this device no longer has.
    #[error("prekey {0} is not available any more")]
    UnknownPreKey(u32),
    /// The decrypted body is not UTF-8.
    #[error("decrypted body is not UTF-8")]
    BodyNotUtf8,
    /// The XML was not valid OMEMO.
    #[error(transparent)]
    Stanza(#[from] StanzaError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    /// A key was unusable (for example a bundle with a bad signature).
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

impl ManagerError {
    /// Whether this is a message that was already decrypted (for example delivered
    /// from the archive and live); such errors should be ignored silently.
    pub fn is_duplicate(&self) -> bool {
        matches!(self, Self::Decrypt(DecryptError::Duplicate { .. }))
    }
}

impl From<Error> for ManagerError {
    fn from(error: Error) -> Self {
        match error {
            Error::Key(e) => Self::Key(e),
            Error::Decode(e) => Self::Decode(e),
            Error::Decrypt(e) => Self::Decrypt(e),
            Error::Session(e) => Self::Session(e),
            Error::Stanza(e) => Self::Stanza(e),
        }
    }
}

/// The reasons of [`ManagerError::NoRecipientDevices`] worth a line: each skipped device
/// (up to a few), after a colon.
fn why_skipped(skipped: &[crate::manager::SkippedDevice]) -> String {
    const SHOWN: usize = 3;
    let mut text = String::new();
    for (i, device) in skipped.iter().take(SHOWN).enumerate() {
        text.push_str(if i == 0 { ": " } else { "; " });
        text.push_str(&device.to_string());
    }
    if skipped.len() > SHOWN {
        text.push_str(&format!("; and {} more", skipped.len() - SHOWN));
    }
    text
}
