//! The verification URI of a device (`xmpp:JID?message;omemo-sid-ID=FINGERPRINT`, the
//! form Conversations shows and scans) and its rendering as a terminal QR code.

use jid::BareJid;
use qrcode::QrCode;
use qrcode::render::unicode::Dense1x2;

/// The verification URI of `device_id` of `jid` with the 64 hex digits of its
/// fingerprint (the identity key without the `05` type byte).
pub(crate) fn fingerprint_uri(jid: &BareJid, device_id: u32, fingerprint_hex: &str) -> String {
    format!(
        "xmpp:{}?message;omemo-sid-{device_id}={fingerprint_hex}",
        escape_jid(jid.as_str())
    )
}

/// Percent-encodes what RFC 5122 does not allow unescaped in the JID part of an `xmpp:`
/// URI (every byte outside the unreserved and sub-delims characters and `@`).
fn escape_jid(jid: &str) -> String {
    let mut out = String::with_capacity(jid.len());
    for byte in jid.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~!$&'()*+,;=@".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// `text` as a QR code of Unicode half blocks, light modules drawn, for a dark terminal.
pub(crate) fn qr_code(text: &str) -> Result<String, qrcode::types::QrError> {
    let code = QrCode::new(text.as_bytes())?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "05a3f1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f";

    #[test]
    fn uri_has_the_conversations_form() {
        let jid = BareJid::new("bot@example.org").unwrap();
        assert_eq!(
            fingerprint_uri(&jid, 1_234_567, HEX),
            format!("xmpp:bot@example.org?message;omemo-sid-1234567={HEX}")
        );
    }

    #[test]
    fn uri_escapes_what_rfc_5122_reserves() {
        let jid = BareJid::new("jörg#1@example.org").unwrap();
        assert_eq!(
            fingerprint_uri(&jid, 7, "ab"),
            "xmpp:j%C3%B6rg%231@example.org?message;omemo-sid-7=ab"
        );
    }

    #[test]
    fn qr_code_renders_as_text_blocks() {
        let qr = qr_code("xmpp:bot@example.org?message;omemo-sid-1=00").unwrap();
        let lines: Vec<&str> = qr.lines().collect();
        // Version 4 or so: a square of at least 33 modules with quiet zone, two rows per
        // line.
        assert!(lines.len() >= 16, "{} lines", lines.len());
        let width = lines[0].chars().count();
        assert!(lines.iter().all(|l| l.chars().count() == width));
        assert!(
            qr.chars()
                .all(|c| matches!(c, '█' | '▀' | '▄' | ' ' | '\n'))
        );
    }
}
