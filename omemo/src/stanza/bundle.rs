//! The `<bundle>` of both versions: the same four parts in the same order under other
//! names, with the keys in the version's wire form.

use minidom::Element;

use super::xml::{
    check_count, children_named, decode_base64, element, encode_base64, expect_element,
    required_child, set_attr, text_element, u32_attr,
};
use crate::bundle::PreKeyBundle;
use crate::consts::{MAX_BUNDLE_PRE_KEYS, MAX_FIELD_TEXT_LENGTH};
use crate::error::StanzaError;
use crate::keys::{IdentityKey, PublicKey};
use crate::version::Version;

/// The element and attribute names of one version's `<bundle>`.
pub(crate) struct BundleLayout {
    pub(crate) version: Version,
    pub(crate) namespace: &'static str,
    /// The signed prekey element and its id attribute.
    pub(crate) signed_pre_key: (&'static str, &'static str),
    pub(crate) signature: &'static str,
    pub(crate) identity_key: &'static str,
    /// A one-time prekey element (inside `<prekeys>`) and its id attribute.
    pub(crate) pre_key: (&'static str, &'static str),
}

impl BundleLayout {
    /// Parses a `<bundle>`: children in any order; the keys in the version's wire form;
    /// the signature base64 and not empty (its check is left to [`PreKeyBundle::verify`]);
    /// one-time prekeys with a bad id or key skipped; more than 1000 of them refused.
    pub(crate) fn parse(&self, bundle: &Element) -> Result<PreKeyBundle, StanzaError> {
        let ns = self.namespace;
        expect_element(bundle, "bundle", ns)?;
        let (spk, spk_id) = self.signed_pre_key;
        let signed = required_child(bundle, spk, ns)?;
        let signed_pre_key_id = u32_attr(signed, spk, spk_id)?;
        let signed_pre_key = self.key(spk, signed)?;
        let signed_pre_key_signature = decode_base64(
            self.signature,
            required_child(bundle, self.signature, ns)?,
            MAX_FIELD_TEXT_LENGTH,
        )?;
        if signed_pre_key_signature.is_empty() {
            return Err(StanzaError::EmptyElement(self.signature));
        }
        let what = self.identity_key;
        let identity = decode_base64(
            what,
            required_child(bundle, what, ns)?,
            MAX_FIELD_TEXT_LENGTH,
        )?;
        let identity_key = IdentityKey::from_wire(self.version, &identity)
            .map_err(|source| StanzaError::InvalidKey { what, source })?;
        let prekeys = required_child(bundle, "prekeys", ns)?;
        let (pk, pk_id) = self.pre_key;
        check_count(prekeys, pk, ns, MAX_BUNDLE_PRE_KEYS)?;
        let pre_keys = children_named(prekeys, pk, ns)
            .filter_map(|p| Some((u32_attr(p, pk, pk_id).ok()?, self.key(pk, p).ok()?)))
            .collect();
        Ok(PreKeyBundle {
            version: self.version,
            identity_key,
            signed_pre_key_id,
            signed_pre_key,
            signed_pre_key_signature,
            pre_keys,
        })
    }

    fn key(&self, what: &'static str, element: &Element) -> Result<PublicKey, StanzaError> {
        let bytes = decode_base64(what, element, MAX_FIELD_TEXT_LENGTH)?;
        PublicKey::from_wire(self.version, &bytes)
            .map_err(|source| StanzaError::InvalidKey { what, source })
    }

    /// The `<bundle>` of `bundle`, which must be of this layout's version (the signature
    /// of the other version's signed prekey would not verify for its readers).
    pub(crate) fn build(&self, bundle: &PreKeyBundle) -> Result<Element, StanzaError> {
        if bundle.version != self.version {
            return Err(StanzaError::WrongVersion {
                what: "bundle",
                expected: self.version,
                found: bundle.version,
            });
        }
        let ns = self.namespace;
        let identity = bundle
            .identity_key
            .to_wire(self.version)
            .map_err(|source| StanzaError::InvalidKey {
                what: self.identity_key,
                source,
            })?;
        let with_id = |name, attr, id: u32, key: &PublicKey| {
            let mut child = text_element(name, ns, encode_base64(&key.to_wire(self.version)));
            set_attr(&mut child, attr, id.to_string());
            child
        };
        let (spk, spk_id) = self.signed_pre_key;
        let mut out = element("bundle", ns);
        out.append_child(with_id(
            spk,
            spk_id,
            bundle.signed_pre_key_id,
            &bundle.signed_pre_key,
        ));
        out.append_child(text_element(
            self.signature,
            ns,
            encode_base64(&bundle.signed_pre_key_signature),
        ));
        out.append_child(text_element(
            self.identity_key,
            ns,
            encode_base64(&identity),
        ));
        let (pk, pk_id) = self.pre_key;
        let mut prekeys = element("prekeys", ns);
        for (id, key) in &bundle.pre_keys {
            prekeys.append_child(with_id(pk, pk_id, *id, key));
        }
        out.append_child(prekeys);
        Ok(out)
    }
}
