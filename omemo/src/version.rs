//! The two OMEMO protocol versions and every value in which they differ.
//!
//! One X3DH, one Double Ratchet and one wire codec serve both versions; they ask the
//! [`Version`] for their parameters:
//!
//! | | [`Version::Legacy`] | [`Version::Omemo2`] |
//! |---|---|---|
//! | namespace | `eu.siacs.conversations.axolotl` | `urn:xmpp:omemo:2` |
//! | public keys on the wire | 33 bytes `0x05 ‖ u` | 32 bytes; the identity key in Ed25519 form |
//! | X3DH info | `WhisperText` | `OMEMO X3DH` |
//! | root chain info | `WhisperRatchet` | `OMEMO Root Chain` |
//! | message key info | `WhisperMessageKeys` | `OMEMO Message Key Material` |
//! | associated data | sender ‖ recipient, by direction | initiator ‖ responder, fixed |
//! | ratchet MAC | 8 bytes over AD ‖ `0x33` ‖ protobuf | 16 bytes over AD ‖ protobuf |
//! | payload | AES-128-GCM, IV in the header | HKDF → AES-256-CBC + HMAC, no IV |
//! | signed prekey signature | XEdDSA over `0x05 ‖ spk` | Ed25519 over `spk` |

use std::fmt;

use crate::consts::{
    LEGACY_MAC_LENGTH, LEGACY_MESSAGE_KEY_INFO, LEGACY_NAMESPACE, LEGACY_ROOT_INFO,
    LEGACY_X3DH_INFO, OMEMO2_MAC_LENGTH, OMEMO2_MESSAGE_KEY_INFO, OMEMO2_NAMESPACE,
    OMEMO2_ROOT_INFO, OMEMO2_X3DH_INFO,
};

/// An OMEMO protocol version.
///
/// ```
/// use omemo::Version;
///
/// assert_eq!(Version::Legacy.namespace(), "eu.siacs.conversations.axolotl");
/// assert_eq!(Version::Omemo2.namespace(), "urn:xmpp:omemo:2");
/// assert_eq!(Version::from_namespace("urn:xmpp:omemo:2"), Some(Version::Omemo2));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// Legacy OMEMO, XEP-0384 0.3.0 (`eu.siacs.conversations.axolotl`): the libsignal v3
    /// wire format that Conversations, Dino, Gajim, Monal and Profanity speak.
    Legacy,
    /// OMEMO 2, XEP-0384 0.8 and later (`urn:xmpp:omemo:2`), with SCE payloads.
    Omemo2,
}

impl Version {
    /// Both versions, oldest first.
    pub const ALL: [Version; 2] = [Version::Legacy, Version::Omemo2];

    /// The XML namespace of the version's elements.
    pub const fn namespace(self) -> &'static str {
        match self {
            Self::Legacy => LEGACY_NAMESPACE,
            Self::Omemo2 => OMEMO2_NAMESPACE,
        }
    }

    /// The version whose namespace is `namespace`.
    pub fn from_namespace(namespace: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|v| v.namespace() == namespace)
    }

    /// The stable number stored for this version (1 legacy, 2 OMEMO 2).
    pub const fn to_code(self) -> u8 {
        match self {
            Self::Legacy => 1,
            Self::Omemo2 => 2,
        }
    }

    /// The version for a stored number.
    pub const fn from_code(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Legacy),
            2 => Some(Self::Omemo2),
            _ => None,
        }
    }

    /// HKDF info of the X3DH shared secret.
    pub(crate) const fn x3dh_info(self) -> &'static [u8] {
        match self {
            Self::Legacy => LEGACY_X3DH_INFO,
            Self::Omemo2 => OMEMO2_X3DH_INFO,
        }
    }

    /// HKDF info of a root chain step.
    pub(crate) const fn root_info(self) -> &'static [u8] {
        match self {
            Self::Legacy => LEGACY_ROOT_INFO,
            Self::Omemo2 => OMEMO2_ROOT_INFO,
        }
    }

    /// HKDF info of the message key expansion.
    pub(crate) const fn message_key_info(self) -> &'static [u8] {
        match self {
            Self::Legacy => LEGACY_MESSAGE_KEY_INFO,
            Self::Omemo2 => OMEMO2_MESSAGE_KEY_INFO,
        }
    }

    /// Length of the truncated HMAC of a ratchet message.
    pub(crate) const fn mac_length(self) -> usize {
        match self {
            Self::Legacy => LEGACY_MAC_LENGTH,
            Self::Omemo2 => OMEMO2_MAC_LENGTH,
        }
    }

    /// Whether the associated data puts the sender first (legacy) rather than the
    /// initiator of the session (OMEMO 2).
    pub(crate) const fn orders_by_direction(self) -> bool {
        matches!(self, Self::Legacy)
    }
}

/// `legacy` or `OMEMO 2`.
impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Legacy => "legacy OMEMO",
            Self::Omemo2 => "OMEMO 2",
        })
    }
}

/// A set of protocol versions: which versions a manager speaks, or on which of its
/// owner's device lists a device is.
///
/// ```
/// use omemo::{Version, Versions};
///
/// let mut versions = Versions::only(Version::Legacy);
/// assert!(versions.contains(Version::Legacy) && !versions.contains(Version::Omemo2));
/// versions.insert(Version::Omemo2);
/// assert_eq!(versions, Versions::BOTH);
/// assert_eq!(versions.iter().collect::<Vec<_>>(), Version::ALL);
/// ```
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Versions {
    legacy: bool,
    omemo2: bool,
}

impl Versions {
    /// No version.
    pub const NONE: Self = Self {
        legacy: false,
        omemo2: false,
    };
    /// Both versions.
    pub const BOTH: Self = Self {
        legacy: true,
        omemo2: true,
    };

    /// The set holding only `version`.
    pub const fn only(version: Version) -> Self {
        Self {
            legacy: matches!(version, Version::Legacy),
            omemo2: matches!(version, Version::Omemo2),
        }
    }

    /// Whether `version` is in the set.
    pub const fn contains(self, version: Version) -> bool {
        match version {
            Version::Legacy => self.legacy,
            Version::Omemo2 => self.omemo2,
        }
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        !self.legacy && !self.omemo2
    }

    /// Puts `version` in, or takes it out.
    pub fn set(&mut self, version: Version, present: bool) {
        match version {
            Version::Legacy => self.legacy = present,
            Version::Omemo2 => self.omemo2 = present,
        }
    }

    /// Puts `version` in.
    pub fn insert(&mut self, version: Version) {
        self.set(version, true);
    }

    /// The versions in the set, oldest first.
    pub fn iter(self) -> impl DoubleEndedIterator<Item = Version> {
        Version::ALL.into_iter().filter(move |v| self.contains(*v))
    }

    /// The stable number stored for the set (bit 0 legacy, bit 1 OMEMO 2).
    pub(crate) const fn to_bits(self) -> u8 {
        (self.legacy as u8) | ((self.omemo2 as u8) << 1)
    }

    /// The set for a stored number.
    pub(crate) const fn from_bits(bits: u8) -> Option<Self> {
        if bits > 3 {
            return None;
        }
        Some(Self {
            legacy: bits & 1 != 0,
            omemo2: bits & 2 != 0,
        })
    }

    /// The versions in both sets.
    pub fn intersection(self, other: Self) -> Self {
        Self {
            legacy: self.legacy && other.legacy,
            omemo2: self.omemo2 && other.omemo2,
        }
    }

    /// The versions in this set and not in `other`.
    pub fn difference(self, other: Self) -> Self {
        Self {
            legacy: self.legacy && !other.legacy,
            omemo2: self.omemo2 && !other.omemo2,
        }
    }

    /// The newest version in the set.
    pub fn newest(self) -> Option<Version> {
        self.iter().next_back()
    }
}

impl FromIterator<Version> for Versions {
    fn from_iter<I: IntoIterator<Item = Version>>(iter: I) -> Self {
        let mut versions = Self::NONE;
        for version in iter {
            versions.insert(version);
        }
        versions
    }
}

/// `{Legacy, Omemo2}`.
impl fmt::Debug for Versions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::Version;

    #[test]
    fn version_sets_round_trip_through_their_bits() {
        use super::Versions;
        for bits in 0..=3 {
            assert_eq!(Versions::from_bits(bits).map(Versions::to_bits), Some(bits));
        }
        assert_eq!(Versions::from_bits(4), None);
        let legacy = Versions::only(Version::Legacy);
        assert_eq!(
            Versions::BOTH.difference(legacy),
            Versions::only(Version::Omemo2)
        );
        assert_eq!(Versions::BOTH.intersection(legacy), legacy);
        assert_eq!(Versions::NONE.newest(), None);
        assert_eq!(format!("{:?}", Versions::BOTH), "{Legacy, Omemo2}");
    }

    #[test]
    fn codes_and_namespaces_round_trip() {
        for version in Version::ALL {
            assert_eq!(Version::from_code(version.to_code()), Some(version));
            assert_eq!(Version::from_namespace(version.namespace()), Some(version));
        }
        assert_eq!(Version::from_code(0), None);
        assert_eq!(Version::from_code(3), None);
        assert_eq!(Version::from_namespace("urn:xmpp:omemo:1"), None);
    }
}
