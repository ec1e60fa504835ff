//! Every protocol constant and limit in one place.

/// Namespace of legacy OMEMO (XEP-0384 0.3.0, the libsignal v3 wire format).
pub(crate) const LEGACY_NAMESPACE: &str = "eu.siacs.conversations.axolotl";
/// Namespace of OMEMO 2 (XEP-0384 0.8 and later).
pub(crate) const OMEMO2_NAMESPACE: &str = "urn:xmpp:omemo:2";

/// Type byte that prefixes every Curve25519 public key on the legacy wire.
pub(crate) const CURVE25519_KEY_TYPE: u8 = 0x05;

/// Version byte of legacy ratchet messages: message version 3, current version 3.
pub(crate) const LEGACY_VERSION_BYTE: u8 = 0x33;

/// Length of the truncated HMAC that ends a legacy `SignalMessage`.
pub(crate) const LEGACY_MAC_LENGTH: usize = 8;
/// Length of the truncated HMAC of an `OMEMOAuthenticatedMessage`.
pub(crate) const OMEMO2_MAC_LENGTH: usize = 16;

/// HKDF info of the legacy X3DH.
pub(crate) const LEGACY_X3DH_INFO: &[u8] = b"WhisperText";
/// HKDF info of the legacy root chain.
pub(crate) const LEGACY_ROOT_INFO: &[u8] = b"WhisperRatchet";
/// HKDF info of the legacy message-key expansion.
pub(crate) const LEGACY_MESSAGE_KEY_INFO: &[u8] = b"WhisperMessageKeys";
/// HKDF info of the OMEMO 2 X3DH.
pub(crate) const OMEMO2_X3DH_INFO: &[u8] = b"OMEMO X3DH";
/// HKDF info of the OMEMO 2 root chain.
pub(crate) const OMEMO2_ROOT_INFO: &[u8] = b"OMEMO Root Chain";
/// HKDF info of the OMEMO 2 message-key expansion.
pub(crate) const OMEMO2_MESSAGE_KEY_INFO: &[u8] = b"OMEMO Message Key Material";
/// HKDF info of the OMEMO 2 payload key expansion.
pub(crate) const OMEMO2_PAYLOAD_INFO: &[u8] = b"OMEMO Payload";

/// HMAC input that derives a message key from a chain key.
pub(crate) const MESSAGE_KEY_SEED: u8 = 0x01;
/// HMAC input that derives the next chain key.
pub(crate) const CHAIN_KEY_SEED: u8 = 0x02;

/// Default number of message keys one incoming message may skip (python-omemo: 1000).
pub const DEFAULT_MAX_SKIP_PER_MESSAGE: u32 = 1000;
/// Default number of skipped message keys kept per session, oldest dropped first
/// (python-omemo: 1000).
pub const DEFAULT_MAX_STORED_SKIPPED_KEYS: usize = 1000;
/// Receiving chains of earlier ratchet keys kept per session, so late messages of an
/// earlier chain still decrypt (libsignal keeps 5).
pub(crate) const MAX_RECEIVING_CHAINS: usize = 5;
/// Sessions with one device kept after newer ones replaced them, tried (newest first)
/// before a message is given up: enough for several key exchanges crossing each other.
pub(crate) const MAX_PREVIOUS_SESSIONS: usize = 5;
/// Key exchanges a peer may send on the session it started while our own unanswered one
/// crosses it before its session becomes our current one: a peer that goes on with its
/// own that long has not seen ours (or cannot read it).
pub(crate) const CROSSING_KEY_EXCHANGES: u32 = 3;

/// Format version of the serialized session state.
pub(crate) const SESSION_FORMAT_VERSION: u32 = 1;

/// Length of the AES-128-GCM key of a legacy payload (and of a legacy empty message's
/// key material).
pub(crate) const PAYLOAD_KEY_LENGTH: usize = 16;
/// Length of the GCM tag of a legacy payload.
pub(crate) const PAYLOAD_TAG_LENGTH: usize = 16;
/// IV length senders use for legacy payloads.
pub(crate) const PAYLOAD_IV_LENGTH: usize = 12;
/// IV length that older clients sent and receivers still accept.
pub(crate) const PAYLOAD_LEGACY_IV_LENGTH: usize = 16;
/// Length of the random key an OMEMO 2 payload is derived from (and of the zero key
/// material of an OMEMO 2 empty message).
pub(crate) const OMEMO2_PAYLOAD_KEY_LENGTH: usize = 32;
/// Length of the truncated HMAC of an OMEMO 2 payload.
pub(crate) const OMEMO2_PAYLOAD_TAG_LENGTH: usize = 16;

/// One-time prekeys kept published.
pub(crate) const DEFAULT_PRE_KEY_COUNT: u32 = 100;
/// Signed prekey rotation period: 7 days (python-omemo).
pub(crate) const DEFAULT_SIGNED_PRE_KEY_ROTATION_SECS: u64 = 7 * 24 * 3600;
/// A replaced signed prekey still accepts key exchanges for one more period.
pub(crate) const DEFAULT_SIGNED_PRE_KEY_GRACE_SECS: u64 = 7 * 24 * 3600;
/// Devices accepted from one device list.
pub(crate) const DEFAULT_MAX_DEVICES_PER_JID: usize = 200;
/// Skipped message keys kept for all the sessions of one JID together: two sessions'
/// worth (a stranger's made-up devices share it).
pub(crate) const DEFAULT_MAX_SKIPPED_KEYS_PER_JID: usize = 2 * DEFAULT_MAX_STORED_SKIPPED_KEYS;
/// Messages received in one chain without a reply before a heartbeat (python-omemo: 53).
pub(crate) const DEFAULT_HEARTBEAT_AFTER: u32 = 53;
/// A device's "last heard from" time is stored when it moved by this much (not for every
/// message: one write less per message).
pub(crate) const LAST_SEEN_STEP_SECS: u64 = 60;
/// A device silent for this long is not encrypted to any more: 90 days.
pub(crate) const DEFAULT_INACTIVE_AFTER_SECS: u64 = 90 * 24 * 3600;

/// Most `<key>` elements accepted in one incoming `<encrypted>` header.
pub(crate) const MAX_KEYS_PER_MESSAGE: usize = 10_000;
/// Most one-time prekeys accepted in one incoming bundle (clients publish 100).
pub(crate) const MAX_BUNDLE_PRE_KEYS: usize = 1000;
/// Most `<item>` elements accepted in one pubsub result or event.
pub(crate) const MAX_PUBSUB_ITEMS: usize = 1000;
/// Longest text, in bytes with whitespace, of an incoming `<payload>`: 1 MiB. Servers
/// cap whole stanzas well below this (256 KiB is common).
pub(crate) const MAX_PAYLOAD_TEXT_LENGTH: usize = 1 << 20;
/// Longest text, in bytes with whitespace, of any other base64 element (`<key>`, `<iv>`,
/// bundle keys and signature). A `PreKeySignalMessage` is about 300 bytes of base64.
pub(crate) const MAX_FIELD_TEXT_LENGTH: usize = 8192;
/// A device whose bundle was missing or invalid is tried again after a day.
pub(crate) const BUNDLE_RETRY_SECS: u64 = 24 * 3600;
/// The largest device id (and prekey id) this crate generates: 2^31 - 1 (XEP-0384).
pub(crate) const MAX_DEVICE_ID: u32 = 0x7fff_ffff;
/// Keys addressed to this device that one message may make it try.
pub(crate) const MAX_KEY_ATTEMPTS: usize = 3;
/// An IQ request without an answer for this long is forgotten by
/// `Manager::handle_timeout`.
pub(crate) const REQUEST_TIMEOUT_SECS: u64 = 60;
/// At most one repair of the own device lists per this period, however many messages
/// arrive that were not encrypted for this device.
pub(crate) const REPAIR_EVERY_SECS: u64 = 60;
/// Sessions one JID's key exchanges may start per hour: more than any person's devices
/// need, few enough that made-up device ids cannot drain the prekeys.
pub(crate) const DEFAULT_NEW_SESSIONS_PER_HOUR: u32 = 20;
/// Sessions a manager keeps in memory (a session is a few kilobytes with its skipped
/// keys).
pub(crate) const DEFAULT_SESSION_CACHE_SIZE: usize = 1000;
/// At most one automatic session rebuild per device per this period: an hour.
pub(crate) const DEFAULT_REBUILD_EVERY_SECS: u64 = 3600;
/// How long `Manager::send` holds a message for the device lists and bundles it needs.
pub(crate) const DEFAULT_SEND_TIMEOUT_SECS: u64 = 15;
