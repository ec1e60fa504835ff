//! The root chain: one HKDF step per Diffie-Hellman ratchet step.

use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use super::chain::ChainKey;
use crate::error::KeyError;
use crate::keys::kdf::hkdf;
use crate::keys::{PublicKey, SecretKey};
use crate::version::Version;

/// The root key (on the heap, see [`ChainKey`]).
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub(crate) struct RootKey(Box<[u8; 32]>);

impl RootKey {
    pub(crate) fn new(key: [u8; 32]) -> Self {
        Self(Box::new(key))
    }

    pub(crate) fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// `HKDF(salt = rk, ikm = X25519(own, their), info = <root info of version>, L = 64)`:
    /// the new root key and a fresh chain starting at index 0.
    pub(crate) fn step(
        &self,
        version: Version,
        own: &SecretKey,
        their: &PublicKey,
    ) -> Result<(RootKey, ChainKey), KeyError> {
        let shared = own.diffie_hellman(their)?;
        let out: Zeroizing<[u8; 64]> = hkdf(Some(&self.0), shared.as_ref(), version.root_info())?;
        let mut root = RootKey(Box::new([0u8; 32]));
        let mut chain = [0u8; 32];
        root.0.copy_from_slice(&out[..32]);
        chain.copy_from_slice(&out[32..]);
        let chain_key = ChainKey::new(chain, 0);
        chain.zeroize();
        Ok((root, chain_key))
    }
}
