//! Verification URIs: `xmpp:JID?message;omemo-sid-ID=FINGERPRINT`, the form
//! Conversations shows as a QR code and scans (Gajim and slixmpp-omemo build the same).
//! One fingerprint serves both OMEMO versions.

use std::fmt;

use jid::BareJid;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

use crate::Fingerprint;

/// The bytes RFC 5122 lets stand unescaped in the JID of an `xmpp:` URI: the unreserved
/// characters, the sub-delims and `@`. Everything else is percent-encoded (as UTF-8).
const JID_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~')
    .remove(b'!')
    .remove(b'$')
    .remove(b'&')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')')
    .remove(b'*')
    .remove(b'+')
    .remove(b',')
    .remove(b';')
    .remove(b'=')
    .remove(b'@');

/// The parameter name prefix of a device's fingerprint.
const DEVICE_PARAMETER: &str = "omemo-sid-";

/// A verification URI: the devices of one account and their fingerprints.
///
/// ```
/// use omemo::{BareJid, Fingerprint, VerificationUri};
///
/// let jid = BareJid::new("juliet@example.org")?;
/// let uri = VerificationUri::new(jid, vec![(1234, Fingerprint::from_bytes([0xab; 32]))]);
/// let text = uri.to_string();
/// assert_eq!(text, format!("xmpp:juliet@example.org?message;omemo-sid-1234={}", "ab".repeat(32)));
/// assert_eq!(text.parse::<VerificationUri>()?, uri);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerificationUri {
    /// The account.
    pub jid: BareJid,
    /// Its devices, each with the fingerprint of its identity key.
    pub devices: Vec<(u32, Fingerprint)>,
}

/// Why a text is not a verification URI.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UriError {
    /// It does not start with `xmpp:`.
    #[error("not an xmpp: URI")]
    NotXmpp,
    /// The JID part does not decode to a bare JID.
    #[error("the URI names no valid bare JID: {0}")]
    BadJid(String),
    /// No `omemo-sid-ID=FINGERPRINT` parameter.
    #[error("the URI holds no OMEMO fingerprint (omemo-sid-ID=FINGERPRINT)")]
    NoFingerprints,
    /// An `omemo-sid-` parameter whose device id is not a number.
    #[error("bad device id in the URI parameter {0}")]
    BadDeviceId(String),
    /// A fingerprint that is not 64 hex digits (optionally after the `05` type byte).
    #[error("the fingerprint of device {device_id} is not 64 hex digits")]
    BadFingerprint {
        /// The device whose fingerprint it is.
        device_id: u32,
    },
    /// One device named twice with different fingerprints.
    #[error("device {device_id} is named twice with different fingerprints")]
    Conflicting {
        /// The device.
        device_id: u32,
    },
}

impl VerificationUri {
    /// The URI of `devices` of `jid`.
    pub const fn new(jid: BareJid, devices: Vec<(u32, Fingerprint)>) -> Self {
        Self { jid, devices }
    }

    /// Parses a URI (also the `xmpp://authority/JID?...` form; the action and other
    /// parameters are ignored; a fingerprint may carry the `05` type byte and upper-case
    /// hex digits).
    pub fn parse(text: &str) -> Result<Self, UriError> {
        let rest = text.trim().strip_prefix("xmpp:").ok_or(UriError::NotXmpp)?;
        // RFC 5122's authority form names the account to act as, not the one shown.
        let rest = match rest.strip_prefix("//") {
            Some(authority) => authority.split_once('/').map_or("", |(_, path)| path),
            None => rest,
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let decoded = percent_decode_str(path)
            .decode_utf8()
            .map_err(|_| UriError::BadJid(path.to_owned()))?;
        let jid = BareJid::new(&decoded).map_err(|_| UriError::BadJid(decoded.into_owned()))?;
        let mut devices: Vec<(u32, Fingerprint)> = Vec::new();
        for parameter in query.split(';') {
            let Some((key, value)) = parameter.split_once('=') else {
                continue;
            };
            let Some(id) = key.strip_prefix(DEVICE_PARAMETER) else {
                continue;
            };
            let device_id = id
                .parse::<u32>()
                .map_err(|_| UriError::BadDeviceId(key.to_owned()))?;
            let fingerprint =
                parse_fingerprint(value).ok_or(UriError::BadFingerprint { device_id })?;
            match devices.iter().find(|(id, _)| *id == device_id) {
                Some((_, known)) if *known != fingerprint => {
                    return Err(UriError::Conflicting { device_id });
                }
                Some(_) => {}
                None => devices.push((device_id, fingerprint)),
            }
        }
        if devices.is_empty() {
            return Err(UriError::NoFingerprints);
        }
        Ok(Self { jid, devices })
    }

    /// The URI as a QR code of Unicode half blocks (two rows of modules per line), light
    /// modules drawn, for a dark terminal.
    #[cfg(feature = "qr")]
    #[cfg_attr(docsrs, doc(cfg(feature = "qr")))]
    pub fn qr_code(&self) -> String {
        use qrcode::render::unicode::Dense1x2;
        // A URI of a few hundred bytes always fits (version 40 holds 2 953 bytes); one
        // beyond that has thousands of devices.
        let Ok(code) = qrcode::QrCode::new(self.to_string().as_bytes()) else {
            return String::new();
        };
        code.render::<Dense1x2>()
            .dark_color(Dense1x2::Light)
            .light_color(Dense1x2::Dark)
            .quiet_zone(true)
            .build()
    }
}

impl std::str::FromStr for VerificationUri {
    type Err = UriError;

    fn from_str(text: &str) -> Result<Self, UriError> {
        Self::parse(text)
    }
}

/// `xmpp:JID?message;omemo-sid-ID=HEX;…` with the JID escaped as RFC 5122 asks and 64
/// lower-case hex digits per fingerprint.
impl fmt::Display for VerificationUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "xmpp:{}?message",
            utf8_percent_encode(self.jid.as_str(), JID_ESCAPES)
        )?;
        for (device_id, fingerprint) in &self.devices {
            write!(f, ";{DEVICE_PARAMETER}{device_id}={}", fingerprint.to_hex())?;
        }
        Ok(())
    }
}

/// 64 hex digits, or 66 starting with the `05` type byte of a Curve25519 key.
fn parse_fingerprint(text: &str) -> Option<Fingerprint> {
    let hex = match text.len() {
        66 => text.strip_prefix("05")?,
        64 => text,
        _ => return None,
    };
    let mut bytes = [0u8; 32];
    for (byte, pair) in bytes.iter_mut().zip(hex.as_bytes().chunks(2)) {
        let digits = std::str::from_utf8(pair).ok()?;
        *byte = u8::from_str_radix(digits, 16).ok()?;
    }
    Some(Fingerprint::from_bytes(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "a3f1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f80";

    fn fingerprint() -> Fingerprint {
        parse_fingerprint(HEX).unwrap()
    }

    #[test]
    fn renders_the_conversations_form_and_reads_it_back() {
        let jid = BareJid::new("bot@example.org").unwrap();
        let uri = VerificationUri::new(jid, vec![(1_234_567, fingerprint()), (7, fingerprint())]);
        let text = uri.to_string();
        assert_eq!(
            text,
            format!("xmpp:bot@example.org?message;omemo-sid-1234567={HEX};omemo-sid-7={HEX}")
        );
        assert_eq!(VerificationUri::parse(&text).unwrap(), uri);
    }

    #[test]
    fn escapes_what_rfc_5122_reserves_and_decodes_it() {
        let jid = BareJid::new("jörg#1@example.org").unwrap();
        let uri = VerificationUri::new(jid, vec![(7, fingerprint())]);
        let text = uri.to_string();
        assert!(text.starts_with("xmpp:j%C3%B6rg%231@example.org?message;omemo-sid-7="));
        assert_eq!(VerificationUri::parse(&text).unwrap(), uri);
    }

    #[test]
    fn accepts_the_type_byte_upper_case_the_authority_form_and_other_parameters() {
        let text = format!(
            "xmpp://me@example.org/bot@example.org?message;body=hi;omemo-sid-9=05{}",
            HEX.to_uppercase()
        );
        let uri = VerificationUri::parse(&text).unwrap();
        assert_eq!(uri.jid.as_str(), "bot@example.org");
        assert_eq!(uri.devices, vec![(9, fingerprint())]);
    }

    #[test]
    fn refuses_what_is_not_a_verification_uri() {
        let cases = [
            ("https://example.org".to_owned(), UriError::NotXmpp),
            (
                "xmpp:bot@example.org?message".to_owned(),
                UriError::NoFingerprints,
            ),
            (
                format!("xmpp:@?message;omemo-sid-1={HEX}"),
                UriError::BadJid("@".into()),
            ),
            (
                format!("xmpp:b@example.org?message;omemo-sid-x={HEX}"),
                UriError::BadDeviceId("omemo-sid-x".into()),
            ),
            (
                "xmpp:b@example.org?message;omemo-sid-1=abc".to_owned(),
                UriError::BadFingerprint { device_id: 1 },
            ),
            (
                format!("xmpp:b@example.org?message;omemo-sid-1={}", "zz".repeat(32)),
                UriError::BadFingerprint { device_id: 1 },
            ),
            (
                format!(
                    "xmpp:b@example.org?message;omemo-sid-1={HEX};omemo-sid-1={}",
                    "00".repeat(32)
                ),
                UriError::Conflicting { device_id: 1 },
            ),
        ];
        for (text, error) in cases {
            assert_eq!(VerificationUri::parse(&text), Err(error), "{text}");
        }
    }

    #[cfg(feature = "qr")]
    #[test]
    fn qr_code_renders_as_text_blocks() {
        let jid = BareJid::new("bot@example.org").unwrap();
        let qr = VerificationUri::new(jid, vec![(1, fingerprint())]).qr_code();
        let lines: Vec<&str> = qr.lines().collect();
        assert!(lines.len() >= 16, "{} lines", lines.len());
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            qr.chars()
                .all(|c| matches!(c, '█' | '▀' | '▄' | ' ' | '\n'))
        );
    }
}
