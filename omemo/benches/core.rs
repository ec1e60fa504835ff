//! Benchmarks of the OMEMO core, both protocol versions, against the floor set by its
//! primitives.
//!
//! `cargo bench -p omemo --bench core` first runs the criterion benchmarks (primitives,
//! X3DH, ratchet, payload, fan-out), then a second measurement pass over the same cases
//! (same closures, keys and sessions) with its own timing loop, and prints a table: each
//! operation's time, its floor (the sum of the primitives it needs, counted from the
//! code) and the ratio. Under `cargo test --benches` every case runs once and no table is
//! printed; with criterion's `--profile-time` (for `perf record`) there is no table either.
//!
//! Every case is one closure `run(n) -> time of n operations`: the inputs of the n
//! operations are made first (untimed, in chunks of [`CHUNK`]), the operations are timed,
//! and their outputs are dropped after the clock stopped. Criterion drives it through
//! `iter_custom`, the table pass calls it directly. Nothing cloned for an operation is
//! ever inside the timed region, so nothing has to be subtracted.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;
use std::time::{Duration, Instant};

use aes::{Aes128, Aes256};
use aes_gcm::AesGcm;
use aes_gcm::aead::AeadInOut;
use aes_gcm::aead::consts::U12;
use cbc::cipher::block_padding::Pkcs7;
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit};
use criterion::{Criterion, criterion_group, criterion_main};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use omemo::hazmat::{
    AuthenticatedMessage, IdentityKeyPair, KeyExchange, PreKey, PreKeyBundle, RatchetMessage,
    Session, SignedPreKey, encrypt_payload,
};
use omemo::{Version, os_rng};
use rand_core::Rng;
use sha2::Sha256;
use x25519_dalek::StaticSecret;

/// A typical message body.
const BODY: [u8; 100] = [b'x'; 100];
/// What the ratchet carries for a payload: its key and tag (32 B in legacy OMEMO, 48 B in
/// OMEMO 2).
fn key_material(version: Version) -> &'static [u8] {
    const MATERIAL: [u8; 48] = [0x42; 48];
    match version {
        Version::Legacy => &MATERIAL[..32],
        Version::Omemo2 => &MATERIAL[..],
    }
}
/// Operations per untimed set-up / timed run / untimed drop cycle.
const CHUNK: u64 = 256;

/// Runs `n` operations and returns how long they took, set-up and drops excluded.
type Run = Box<dyn FnMut(u64) -> Duration>;

/// Builds a [`Run`]: `setup` makes one operation's input (untimed), `op` is timed.
fn batched<I: 'static, O: 'static>(
    mut setup: impl FnMut() -> I + 'static,
    mut op: impl FnMut(&mut I) -> O + 'static,
) -> Run {
    Box::new(move |n| {
        let mut total = Duration::ZERO;
        let mut done = 0;
        while done < n {
            let len = CHUNK.min(n - done);
            let mut inputs: Vec<I> = (0..len).map(|_| setup()).collect();
            let mut outputs: Vec<O> = Vec::with_capacity(len as usize);
            let start = Instant::now();
            outputs.extend(inputs.iter_mut().map(&mut op));
            total += start.elapsed();
            black_box(&outputs);
            drop(outputs);
            drop(inputs);
            done += len;
        }
        total
    })
}

fn rand32() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    os_rng().fill_bytes(&mut bytes);
    bytes
}

fn signal(message: RatchetMessage) -> AuthenticatedMessage {
    match message {
        RatchetMessage::Authenticated(m) => m,
        RatchetMessage::KeyExchange(_) => panic!("expected a message without key exchange"),
    }
}

fn pre_key_message(message: RatchetMessage) -> KeyExchange {
    match message {
        RatchetMessage::KeyExchange(m) => m,
        RatchetMessage::Authenticated(_) => panic!("expected a key exchange"),
    }
}

/// A device that published a bundle.
struct Device {
    identity: IdentityKeyPair,
    signed: SignedPreKey,
    pre_keys: Vec<PreKey>,
    bundle: PreKeyBundle,
}

fn device(version: Version, pre_keys: u32) -> Device {
    let mut rng = os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(version, &mut rng, &identity, 1);
    let pre_keys: Vec<PreKey> = (1..=pre_keys)
        .map(|id| PreKey::generate(&mut rng, id))
        .collect();
    let bundle = PreKeyBundle::new(&identity, &signed, &pre_keys);
    Device {
        identity,
        signed,
        pre_keys,
        bundle,
    }
}

/// Alice's and Bob's sessions after a round trip and one more message from Alice: both
/// confirmed, Bob has received on Alice's current sending chain, and Bob's current
/// sending chain (made by his last DH step) is unknown to Alice.
fn established(version: Version) -> (Session, Session) {
    let mut rng = os_rng();
    let bob = device(version, 1);
    let alice_identity = IdentityKeyPair::generate(&mut rng);
    let mut alice = Session::initiate(&mut rng, &alice_identity, &bob.bundle).unwrap();
    let first = pre_key_message(alice.encrypt(key_material(version)).unwrap());
    let (mut to_alice, _) = Session::respond(
        &mut rng,
        &bob.identity,
        &bob.signed,
        &bob.pre_keys[0],
        &first,
    )
    .unwrap();
    let reply = signal(to_alice.encrypt(key_material(version)).unwrap());
    alice.decrypt(&mut rng, &reply).unwrap();
    let next = signal(alice.encrypt(key_material(version)).unwrap());
    to_alice.decrypt(&mut rng, &next).unwrap();
    (alice, to_alice)
}

/// Bytes the MAC of a message covers: legacy, both 33-byte identity keys and the message
/// without its 8-byte MAC; OMEMO 2, both 32-byte Ed25519 identity keys and the
/// `OMEMOMessage` (the authenticated message without its 16-byte MAC and 2 + 2 bytes of
/// field headers).
fn mac_input_len(version: Version, plaintext: &[u8]) -> usize {
    let (mut alice, _) = established(version);
    // Counters above 16383 take 3 varint bytes, as in the long benchmark runs.
    for _ in 0..20_000 {
        alice.encrypt(plaintext).unwrap();
    }
    let len = signal(alice.encrypt(plaintext).unwrap()).as_bytes().len();
    match version {
        Version::Legacy => 66 + len - 8,
        Version::Omemo2 => {
            // After `0a 10 mac`: `12`, the varint length (1 byte up to 127), the message.
            let rest = len - 18 - 1;
            64 + if rest - 1 <= 127 { rest - 1 } else { rest - 2 }
        }
    }
}

fn hmac_sha256(key: &[u8; 32], data: &[u8]) -> [u8; 32] {
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(key).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().into()
}

fn hkdf_sha256<const N: usize>(salt: &[u8; 32], ikm: &[u8], info: &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand(info, &mut out)
        .unwrap();
    out
}

fn cbc_encrypt(key: &[u8; 32], iv: &[u8; 16], plaintext: &[u8]) -> ([u8; 128], usize) {
    let mut out = [0u8; 128];
    let len = cbc::Encryptor::<Aes256>::new(key.into(), iv.into())
        .encrypt_padded_b2b::<Pkcs7>(plaintext, &mut out)
        .unwrap()
        .len();
    (out, len)
}

fn cbc_decrypt(key: &[u8; 32], iv: &[u8; 16], ciphertext: &[u8]) -> ([u8; 128], usize) {
    let mut out = [0u8; 128];
    let len = cbc::Decryptor::<Aes256>::new(key.into(), iv.into())
        .decrypt_padded_b2b::<Pkcs7>(ciphertext, &mut out)
        .unwrap()
        .len();
    (out, len)
}

/// The primitives, in the order of [`primitives`].
#[derive(Clone, Copy)]
enum P {
    Rng,
    X25519,
    PublicKey,
    XEdDSA,
    Ed25519,
    Hmac1,
    HmacMac32,
    HmacMac100,
    HmacMac48o2,
    HmacMac100o2,
    HmacPayload100,
    Hkdf32,
    Hkdf64,
    Hkdf80,
    CbcEnc32,
    CbcEnc48,
    CbcEnc100,
    CbcDec32,
    CbcDec48,
    CbcDec100,
    Gcm100,
}

/// Short names for the floor formulas.
const SHORT: [&str; 21] = [
    "rng",
    "X25519",
    "pubkey",
    "XEdDSA-verify",
    "Ed25519-verify",
    "HMAC(1)",
    "HMAC(mac32)",
    "HMAC(mac100)",
    "HMAC(mac48-v2)",
    "HMAC(mac100-v2)",
    "HMAC(payload100)",
    "HKDF-32",
    "HKDF-64",
    "HKDF-80",
    "CBC-enc(32)",
    "CBC-enc(48)",
    "CBC-enc(100)",
    "CBC-dec(32)",
    "CBC-dec(48)",
    "CBC-dec(100)",
    "GCM(100)",
];

/// One benchmark: its criterion group and name, and for operations the floor formula
/// (primitive, count) and the target ratio from the issue.
struct Case {
    group: &'static str,
    name: String,
    floor: Vec<(P, f64)>,
    target: Option<f64>,
    run: Run,
}

fn primitive(name: impl Into<String>, run: Run) -> Case {
    Case {
        group: "primitives",
        name: name.into(),
        floor: Vec::new(),
        target: None,
        run,
    }
}

/// AES-256-CBC encryption of `plaintext` as a primitive.
fn cbc_encrypt_case(key: [u8; 32], iv: [u8; 16], plaintext: &'static [u8]) -> Case {
    primitive(
        format!("AES-256-CBC encrypt {} B (+PKCS7)", plaintext.len()),
        batched(
            || (),
            move |_| cbc_encrypt(black_box(&key), &iv, black_box(plaintext)),
        ),
    )
}

/// The primitives; XEdDSA and Ed25519 verify check the signatures of `legacy` and
/// `omemo2`, the same ones X3DH initiation verifies (verification is variable-time, so its
/// cost depends on the key and signature).
fn primitives(legacy: &PreKeyBundle, omemo2: &PreKeyBundle) -> Vec<Case> {
    let mac32 = mac_input_len(Version::Legacy, key_material(Version::Legacy));
    let mac100 = mac_input_len(Version::Legacy, &BODY);
    let mac48_v2 = mac_input_len(Version::Omemo2, key_material(Version::Omemo2));
    let mac100_v2 = mac_input_len(Version::Omemo2, &BODY);
    let key = rand32();
    let iv: [u8; 16] = rand32()[..16].try_into().unwrap();
    let secret = StaticSecret::from(rand32());
    let their = x25519_dalek::PublicKey::from(&StaticSecret::from(rand32()));

    let signed_wire = legacy.signed_pre_key.to_wire(Version::Legacy);
    let signature: [u8; 64] = legacy.signed_pre_key_signature[..].try_into().unwrap();
    let identity_key = legacy.identity_key;
    identity_key
        .verify(Version::Legacy, &signed_wire, &signature)
        .unwrap();

    let ed_message = omemo2.signed_pre_key.to_wire(Version::Omemo2);
    let ed_signature =
        ed25519_dalek::Signature::from_slice(&omemo2.signed_pre_key_signature).unwrap();
    let ed_public = omemo2.identity_key.ed25519().unwrap();

    let (ct32, len32) = cbc_encrypt(&key, &iv, key_material(Version::Legacy));
    let (ct48, len48) = cbc_encrypt(&key, &iv, key_material(Version::Omemo2));
    let (ct100, len100) = cbc_encrypt(&key, &iv, &BODY);
    let ikm160 = [0x11u8; 160];
    let data_mac32 = vec![0x22u8; mac32];
    let data_mac100 = vec![0x33u8; mac100];
    let data_mac48_v2 = vec![0x44u8; mac48_v2];
    let data_mac100_v2 = vec![0x55u8; mac100_v2];
    let data_payload100 = vec![0x66u8; len100];

    let secret2 = secret.clone();
    let mut rng = os_rng();
    let mut cases = Vec::from([
        primitive(
            "os rng 32 B (one getrandom)",
            batched(
                || (),
                move |_| {
                    let mut bytes = [0u8; 32];
                    rng.fill_bytes(&mut bytes);
                    bytes
                },
            ),
        ),
        primitive(
            "X25519 DH (StaticSecret::diffie_hellman)",
            batched(
                || (),
                move |_| {
                    black_box(&secret)
                        .diffie_hellman(black_box(&their))
                        .to_bytes()
                },
            ),
        ),
        primitive(
            "X25519 public key (PublicKey::from)",
            batched(
                || (),
                move |_| x25519_dalek::PublicKey::from(black_box(&secret2)).to_bytes(),
            ),
        ),
        primitive(
            "XEdDSA verify (IdentityKey::verify, legacy)",
            batched(
                || (),
                move |_| {
                    black_box(&identity_key)
                        .verify(
                            Version::Legacy,
                            black_box(&signed_wire),
                            black_box(&signature),
                        )
                        .is_ok()
                },
            ),
        ),
        primitive(
            "Ed25519 decompress + verify_strict (ed25519-dalek)",
            batched(
                || (),
                move |_| {
                    ed25519_dalek::VerifyingKey::from_bytes(black_box(&ed_public))
                        .unwrap()
                        .verify_strict(black_box(&ed_message), black_box(&ed_signature))
                        .is_ok()
                },
            ),
        ),
        primitive(
            "HMAC-SHA-256 32 B key, 1 B",
            batched(
                || (),
                move |_| hmac_sha256(black_box(&key), black_box(&[1u8])),
            ),
        ),
    ]);
    // HMAC over the inputs of the MACs and tags, in the order of [`P`].
    let macs = [
        (format!("{mac32} B (MAC, 32 B msg)"), data_mac32),
        (format!("{mac100} B (MAC, 100 B msg)"), data_mac100),
        (
            format!("{mac48_v2} B (MAC, 48 B msg, OMEMO 2)"),
            data_mac48_v2,
        ),
        (
            format!("{mac100_v2} B (MAC, 100 B msg, OMEMO 2)"),
            data_mac100_v2,
        ),
        (format!("{len100} B (OMEMO 2 payload tag)"), data_payload100),
    ];
    cases.extend(macs.into_iter().map(|(name, data)| {
        primitive(
            format!("HMAC-SHA-256 32 B key, {name}"),
            batched(
                || (),
                move |_| hmac_sha256(black_box(&key), black_box(&data)),
            ),
        )
    }));
    cases.extend([
        primitive(
            "HKDF-SHA-256 160 B ikm -> 32 B (X3DH)",
            batched(
                || (),
                move |_| hkdf_sha256::<32>(&[0; 32], black_box(&ikm160), b"WhisperText"),
            ),
        ),
        primitive(
            "HKDF-SHA-256 32 B ikm -> 64 B (root)",
            batched(
                || (),
                move |_| {
                    hkdf_sha256::<64>(black_box(&key), black_box(&ikm160[..32]), b"WhisperRatchet")
                },
            ),
        ),
        primitive(
            "HKDF-SHA-256 32 B ikm -> 80 B (msg keys)",
            batched(
                || (),
                move |_| hkdf_sha256::<80>(&[0; 32], black_box(&key), b"WhisperMessageKeys"),
            ),
        ),
        cbc_encrypt_case(key, iv, key_material(Version::Legacy)),
        cbc_encrypt_case(key, iv, key_material(Version::Omemo2)),
        cbc_encrypt_case(key, iv, &BODY),
        primitive(
            "AES-256-CBC decrypt 48 B -> 32 B",
            batched(
                || (),
                move |_| cbc_decrypt(black_box(&key), &iv, black_box(&ct32[..len32])),
            ),
        ),
        primitive(
            "AES-256-CBC decrypt 64 B -> 48 B",
            batched(
                || (),
                move |_| cbc_decrypt(black_box(&key), &iv, black_box(&ct48[..len48])),
            ),
        ),
        primitive(
            "AES-256-CBC decrypt 112 B -> 100 B",
            batched(
                || (),
                move |_| cbc_decrypt(black_box(&key), &iv, black_box(&ct100[..len100])),
            ),
        ),
        primitive(
            "AES-128-GCM encrypt 100 B",
            batched(
                || (),
                move |_| {
                    let gcm_key: [u8; 16] = key[..16].try_into().unwrap();
                    let gcm_iv: [u8; 12] = iv[..12].try_into().unwrap();
                    let mut buffer = BODY;
                    let cipher = AesGcm::<Aes128, U12>::new(black_box(&gcm_key).into());
                    let tag = cipher
                        .encrypt_inout_detached((&gcm_iv).into(), b"", (&mut buffer[..]).into())
                        .unwrap();
                    (buffer, tag)
                },
            ),
        ),
    ]);
    cases
}

/// The MAC of a message of `version` carrying key material (`small`) or the 100 B body.
fn mac(version: Version, small: bool) -> P {
    match (version, small) {
        (Version::Legacy, true) => P::HmacMac32,
        (Version::Legacy, false) => P::HmacMac100,
        (Version::Omemo2, true) => P::HmacMac48o2,
        (Version::Omemo2, false) => P::HmacMac100o2,
    }
}

/// Cost of `Session::encrypt` on a chain that exists: 2 HMAC chain step, HKDF-80, CBC,
/// MAC.
fn ratchet_encrypt_floor(version: Version, small: bool) -> Vec<(P, f64)> {
    let cbc = match (version, small) {
        (_, false) => P::CbcEnc100,
        (Version::Legacy, true) => P::CbcEnc32,
        (Version::Omemo2, true) => P::CbcEnc48,
    };
    vec![
        (P::Hmac1, 2.0),
        (P::Hkdf80, 1.0),
        (cbc, 1.0),
        (mac(version, small), 1.0),
    ]
}

/// Cost of `Session::decrypt` of the 100 B body on a chain that exists.
fn ratchet_decrypt_floor(version: Version) -> Vec<(P, f64)> {
    vec![
        (P::Hmac1, 2.0),
        (P::Hkdf80, 1.0),
        (mac(version, false), 1.0),
        (P::CbcDec100, 1.0),
    ]
}

/// Cost of `encrypt_payload` of the 100 B body: legacy, a random key and IV and
/// AES-128-GCM; OMEMO 2, a random key, HKDF-80, AES-256-CBC and the HMAC tag.
fn payload_floor(version: Version) -> Vec<(P, f64)> {
    match version {
        Version::Legacy => vec![(P::Rng, 2.0), (P::Gcm100, 1.0)],
        Version::Omemo2 => vec![
            (P::Rng, 1.0),
            (P::Hkdf80, 1.0),
            (P::CbcEnc100, 1.0),
            (P::HmacPayload100, 1.0),
        ],
    }
}

/// The operations of `version`; X3DH initiation uses `bob`'s bundle.
fn operations(version: Version, bob: Device) -> Vec<Case> {
    let mut cases = Vec::new();
    let material = key_material(version);
    let v = match version {
        Version::Legacy => "legacy",
        Version::Omemo2 => "OMEMO 2",
    };
    let signature = match version {
        Version::Legacy => P::XEdDSA,
        Version::Omemo2 => P::Ed25519,
    };

    // X3DH as initiator: bundle.verify(), the random prekey choice (rng.next_u64), two
    // key pairs (ephemeral, first ratchet key), 4 X25519 + HKDF-32, a root step (X25519 +
    // HKDF-64).
    {
        let alice = IdentityKeyPair::generate(&mut os_rng());
        let mut rng = os_rng();
        cases.push(Case {
            group: "x3dh",
            name: format!("{v}: X3DH initiate (100-prekey bundle)"),
            floor: vec![
                (signature, 1.0),
                (P::Rng, 3.0),
                (P::PublicKey, 2.0),
                (P::X25519, 5.0),
                (P::Hkdf32, 1.0),
                (P::Hkdf64, 1.0),
            ],
            target: Some(1.1),
            run: batched(
                || (),
                move |_| Session::initiate(&mut rng, &alice, &bob.bundle).unwrap(),
            ),
        });
    }

    // X3DH as responder, including the first message (key material): 4 X25519 +
    // HKDF-32, then a decrypt with a DH step: root step (X25519 + HKDF-64), chain step
    // (2 HMAC(1)), HKDF-80, MAC, CBC decrypt, new ratchet key pair (rng + pubkey), root
    // step (X25519 + HKDF-64).
    {
        let bob = device(version, 100);
        let mut rng = os_rng();
        let alice_identity = IdentityKeyPair::generate(&mut rng);
        let mut alice = Session::initiate(&mut rng, &alice_identity, &bob.bundle).unwrap();
        let message = pre_key_message(alice.encrypt(material).unwrap());
        let pre_key = bob
            .pre_keys
            .iter()
            .find(|k| Some(k.id()) == message.pre_key_id())
            .unwrap()
            .clone();
        cases.push(Case {
            group: "x3dh",
            name: format!("{v}: X3DH respond + first decrypt ({} B)", material.len()),
            floor: vec![
                (P::X25519, 6.0),
                (P::Hkdf32, 1.0),
                (P::Hkdf64, 2.0),
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (mac(version, true), 1.0),
                (
                    match version {
                        Version::Legacy => P::CbcDec32,
                        Version::Omemo2 => P::CbcDec48,
                    },
                    1.0,
                ),
                (P::Rng, 1.0),
                (P::PublicKey, 1.0),
            ],
            target: Some(1.1),
            run: batched(
                || (),
                move |_| {
                    Session::respond(&mut rng, &bob.identity, &bob.signed, &pre_key, &message)
                        .unwrap()
                },
            ),
        });
    }

    // Steady-state sending on one chain.
    for (body, small) in [(&BODY[..], false), (material, true)] {
        let (mut alice, _) = established(version);
        cases.push(Case {
            group: "ratchet",
            name: format!("{v}: ratchet encrypt {} B, no DH step", body.len()),
            floor: ratchet_encrypt_floor(version, small),
            target: Some(1.3),
            run: batched(|| (), move |_| alice.encrypt(body).unwrap()),
        });
    }

    // In-order receiving on one chain: the messages are made (untimed) in order and
    // decrypted in that order by one session; no clone.
    {
        let (mut alice, mut bob) = established(version);
        let mut rng = os_rng();
        cases.push(Case {
            group: "ratchet",
            name: format!("{v}: ratchet decrypt 100 B, no DH step"),
            floor: ratchet_decrypt_floor(version),
            target: Some(1.3),
            run: batched(
                move || signal(alice.encrypt(&BODY).unwrap()),
                move |message| bob.decrypt(&mut rng, message).unwrap(),
            ),
        });
    }

    // The same, on a session that holds the default maximum of 1000 skipped message keys
    // (1000 messages of the chain never arrived): every decrypt first looks for the
    // message among the skipped keys.
    {
        let (mut alice, mut bob) = established(version);
        let mut rng = os_rng();
        for _ in 0..omemo::DEFAULT_MAX_STORED_SKIPPED_KEYS {
            alice.encrypt(&BODY).unwrap();
        }
        bob.decrypt(&mut rng, &signal(alice.encrypt(&BODY).unwrap()))
            .unwrap();
        cases.push(Case {
            group: "ratchet",
            name: format!("{v}: ratchet decrypt 100 B, no DH step, 1000 skipped keys stored"),
            floor: ratchet_decrypt_floor(version),
            target: None,
            run: batched(
                move || signal(alice.encrypt(&BODY).unwrap()),
                move |message| bob.decrypt(&mut rng, message).unwrap(),
            ),
        });
    }

    // The first message of a new chain: every operation decrypts it on its own clone of
    // the receiving session (cloned in the untimed set-up).
    {
        let (alice, mut bob) = established(version);
        let message = signal(bob.encrypt(&BODY).unwrap());
        let mut rng = os_rng();
        let mut after = alice.clone();
        after.decrypt(&mut rng, &message).unwrap();
        cases.push(Case {
            group: "ratchet",
            name: format!("{v}: ratchet decrypt 100 B with DH step"),
            floor: vec![
                (P::X25519, 2.0),
                (P::Hkdf64, 2.0),
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (mac(version, false), 1.0),
                (P::CbcDec100, 1.0),
                (P::Rng, 1.0),
                (P::PublicKey, 1.0),
            ],
            target: Some(1.1),
            run: batched(
                move || alice.clone(),
                move |session| session.decrypt(&mut rng, &message).unwrap(),
            ),
        });
        // The DH step's sending half (new ratchet key, root step) runs in decrypt, so the
        // first encrypt on the new chain costs what any encrypt costs.
        cases.push(Case {
            group: "ratchet",
            name: format!("{v}: ratchet encrypt 100 B, first after DH step"),
            floor: ratchet_encrypt_floor(version, false),
            target: Some(1.3),
            run: batched(
                move || after.clone(),
                move |session| session.encrypt(&BODY).unwrap(),
            ),
        });
    }

    {
        let mut rng = os_rng();
        cases.push(Case {
            group: "payload",
            name: format!("{v}: payload encrypt 100 B"),
            floor: payload_floor(version),
            target: None,
            run: batched(|| (), move |_| encrypt_payload(version, &mut rng, &BODY)),
        });
    }

    // One payload to n devices: encrypt_payload once, Session::encrypt(32 B) per session.
    for n in [1usize, 10, 100] {
        let mut sessions: Vec<Session> = (0..n).map(|_| established(version).0).collect();
        let mut rng = os_rng();
        let mut floor = payload_floor(version);
        floor.extend(
            ratchet_encrypt_floor(version, true)
                .into_iter()
                .map(|(p, k)| (p, k * n as f64)),
        );
        cases.push(Case {
            group: "fanout",
            name: format!("{v}: fan-out 100 B to {n} session(s)"),
            floor,
            target: (n == 100).then_some(1.3),
            run: batched(
                || (),
                move |_| {
                    let (key, payload) = encrypt_payload(version, &mut rng, &BODY);
                    let messages: Vec<RatchetMessage> = sessions
                        .iter_mut()
                        .map(|s| s.encrypt(key.as_bytes()).unwrap())
                        .collect();
                    (key, payload, messages)
                },
            ),
        });
    }
    cases
}

fn all_cases() -> Vec<Case> {
    let legacy = device(Version::Legacy, 100);
    let omemo2 = device(Version::Omemo2, 100);
    let mut cases = primitives(&legacy.bundle, &omemo2.bundle);
    cases.extend(operations(Version::Legacy, legacy));
    cases.extend(operations(Version::Omemo2, omemo2));
    cases
}

/// The criterion benchmarks, then (under `cargo bench`) the floor table, on the same
/// cases and fixtures.
fn benchmarks(c: &mut Criterion) {
    let mut cases = all_cases();
    criterion_benches(c, &mut cases);
    let args: Vec<String> = std::env::args().collect();
    if args.iter().any(|a| a == "--bench") && !args.iter().any(|a| a == "--profile-time") {
        floor_table(&mut cases);
    }
}

fn criterion_benches(c: &mut Criterion, cases: &mut [Case]) {
    let mut groups: Vec<&'static str> = cases.iter().map(|c| c.group).collect();
    groups.dedup();
    for group_name in groups {
        let mut group = c.benchmark_group(group_name);
        for case in cases.iter_mut().filter(|c| c.group == group_name) {
            let run = &mut case.run;
            group.bench_function(case.name.as_str(), |b| b.iter_custom(&mut **run));
        }
        group.finish();
    }
}

/// Own timing pass: every case in turn, [`ROUNDS`] times, [`BATCHES`] batches of about
/// [`BATCH`] each; the median of the per-operation batch means.
const ROUNDS: usize = 7;
const BATCHES: usize = 5;
const BATCH: Duration = Duration::from_millis(4);

fn measure_all(cases: &mut [Case]) -> Vec<f64> {
    let sizes: Vec<u64> = cases
        .iter_mut()
        .map(|case| {
            let mut n = 1u64;
            loop {
                let t = (case.run)(n);
                if t >= Duration::from_millis(1) {
                    let per = t.as_secs_f64() / n as f64;
                    break ((BATCH.as_secs_f64() / per) as u64).max(1);
                }
                n *= 4;
            }
        })
        .collect();
    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); cases.len()];
    for _ in 0..ROUNDS {
        for ((case, &n), samples) in cases.iter_mut().zip(&sizes).zip(&mut samples) {
            for _ in 0..BATCHES {
                samples.push((case.run)(n).as_nanos() as f64 / n as f64);
            }
        }
    }
    samples
        .into_iter()
        .map(|mut s| {
            s.sort_by(f64::total_cmp);
            s[s.len() / 2]
        })
        .collect()
}

/// The 1-minute load average (Linux), or "?".
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn human(ns: f64) -> String {
    if ns >= 1e6 {
        format!("{:.2} ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.2} µs", ns / 1e3)
    } else {
        format!("{ns:.0} ns")
    }
}

fn formula(floor: &[(P, f64)]) -> String {
    floor
        .iter()
        .map(|&(p, k)| {
            if k == 1.0 {
                SHORT[p as usize].to_string()
            } else {
                format!("{k}×{}", SHORT[p as usize])
            }
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn floor_table(cases: &mut [Case]) {
    let load_before = load_average();
    let started = Instant::now();
    let times = measure_all(cases);
    let load_after = load_average();
    let primitive_count = cases.iter().filter(|c| c.group == "primitives").count();
    assert_eq!(primitive_count, SHORT.len());

    println!();
    println!(
        "Floor table (own timing loop, median of {} batches of ~{} ms per case, {:.1} s)",
        ROUNDS * BATCHES,
        BATCH.as_millis(),
        started.elapsed().as_secs_f64()
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("1-minute load average before/after: {load_before} / {load_after} ({cores} cores)");
    if [&load_before, &load_after]
        .iter()
        .any(|l| l.parse::<f64>().is_ok_and(|l| l > cores as f64))
    {
        println!("WARNING: other processes are busy; the times below are inflated and noisy");
    }
    println!();
    println!("| primitive | short name | time |");
    println!("|---|---|---:|");
    for (i, case) in cases.iter().take(primitive_count).enumerate() {
        println!("| {} | {} | {} |", case.name, SHORT[i], human(times[i]));
    }
    println!();
    println!("| operation | time | floor | ratio | target | floor = |");
    println!("|---|---:|---:|---:|---:|---|");
    for (case, &time) in cases.iter().zip(&times).skip(primitive_count) {
        let floor: f64 = case.floor.iter().map(|&(p, k)| k * times[p as usize]).sum();
        let ratio = time / floor;
        let target = match case.target {
            Some(t) if ratio <= t => format!("≤ {t} ok"),
            Some(t) => format!("≤ {t} MISSED"),
            None => "-".into(),
        };
        println!(
            "| {} | {} | {} | {:.2} | {} | {} |",
            case.name,
            human(time),
            human(floor),
            ratio,
            target,
            formula(&case.floor)
        );
    }
    println!();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_millis(1500))
        .nresamples(20_000);
    targets = benchmarks
}
criterion_main!(benches);
