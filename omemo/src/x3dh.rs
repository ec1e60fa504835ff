//! X3DH key agreement, for both protocol versions: 32 zero bytes of salt, 0xFF×32 before
//! the four Diffie-Hellman outputs, a one-time prekey always required, and the version's
//! HKDF info ("WhisperText" in legacy OMEMO, "OMEMO X3DH" in OMEMO 2). Identity keys take
//! part in their Curve25519 form in both.

use zeroize::Zeroizing;

use crate::error::KeyError;
use crate::keys::kdf::hkdf;
use crate::keys::{IdentityKey, IdentityKeyPair, PublicKey, SecretKey};
use crate::ratchet::root::RootKey;
use crate::version::Version;

/// The initiator's side: `DH(IK_A, SPK_B) || DH(EK_A, IK_B) || DH(EK_A, SPK_B) ||
/// DH(EK_A, OPK_B)`.
pub(crate) fn initiate(
    version: Version,
    identity: &IdentityKeyPair,
    ephemeral: &SecretKey,
    their_identity: &IdentityKey,
    their_signed_pre_key: &PublicKey,
    their_pre_key: &PublicKey,
) -> Result<RootKey, KeyError> {
    let own = identity.key_pair().secret_key();
    derive(
        version,
        [
            own.diffie_hellman(their_signed_pre_key)?,
            ephemeral.diffie_hellman(their_identity.curve25519())?,
            ephemeral.diffie_hellman(their_signed_pre_key)?,
            ephemeral.diffie_hellman(their_pre_key)?,
        ],
    )
}

/// The responder's side, the same four values mirrored.
pub(crate) fn respond(
    version: Version,
    identity: &IdentityKeyPair,
    signed_pre_key: &SecretKey,
    pre_key: &SecretKey,
    their_identity: &IdentityKey,
    their_ephemeral: &PublicKey,
) -> Result<RootKey, KeyError> {
    let own = identity.key_pair().secret_key();
    derive(
        version,
        [
            signed_pre_key.diffie_hellman(their_identity.curve25519())?,
            own.diffie_hellman(their_ephemeral)?,
            signed_pre_key.diffie_hellman(their_ephemeral)?,
            pre_key.diffie_hellman(their_ephemeral)?,
        ],
    )
}

fn derive(version: Version, shared: [Zeroizing<[u8; 32]>; 4]) -> Result<RootKey, KeyError> {
    let mut ikm = Zeroizing::new([0xffu8; 32 * 5]);
    for (i, dh) in shared.iter().enumerate() {
        ikm[32 * (i + 1)..32 * (i + 2)].copy_from_slice(dh.as_ref());
    }
    let secret: Zeroizing<[u8; 32]> = hkdf(None, ikm.as_ref(), version.x3dh_info())?;
    Ok(RootKey::new(*secret))
}
