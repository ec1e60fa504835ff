//! Two sessions of the low-level layer, built the way two devices build them.

use omemo::Version;
use omemo::hazmat::{
    IdentityKeyPair, KeyExchange, PreKey, PreKeyBundle, RatchetMessage, Session, SignedPreKey,
};

/// Alice's session with Bob, the key exchange of her first message (`hello`), and the
/// session Bob built from it, in `version`.
pub fn first_contact(version: Version) -> (Session, KeyExchange, Session) {
    let mut rng = omemo::os_rng();
    let alice = IdentityKeyPair::generate(&mut rng);
    let bob = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(version, &mut rng, &bob, 1);
    let pre_keys = vec![PreKey::generate(&mut rng, 1)];
    let bundle = PreKeyBundle::new(&bob, &signed, &pre_keys);
    let mut to_bob = Session::initiate(&mut rng, &alice, &bundle).unwrap();
    let RatchetMessage::KeyExchange(kex) = to_bob.encrypt(b"hello").unwrap() else {
        panic!("first message must carry the key exchange")
    };
    let (to_alice, plaintext) =
        Session::respond(&mut rng, &bob, &signed, &pre_keys[0], &kex).unwrap();
    assert_eq!(plaintext.as_slice(), b"hello");
    (to_bob, kex, to_alice)
}
