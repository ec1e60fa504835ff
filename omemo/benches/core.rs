//! Benchmarks of the legacy OMEMO core against the floor set by its primitives.
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
use ed25519_dalek::{Signer, Verifier};
use hkdf::Hkdf;
use hmac::{Hmac, KeyInit, Mac};
use omemo::{
    IdentityKeyPair, PreKey, PreKeyBundle, PreKeySignalMessage, RatchetMessage, Session,
    SignalMessage, SignedPreKey, encrypt_payload, os_rng,
};
use rand_core::Rng;
use sha2::Sha256;
use x25519_dalek::StaticSecret;

/// A typical message body.
const BODY: [u8; 100] = [b'x'; 100];
/// What the ratchet carries in OMEMO: the payload key and its GCM tag.
const KEY_MATERIAL: [u8; 32] = [0x42; 32];
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

fn signal(message: RatchetMessage) -> SignalMessage {
    match message {
        RatchetMessage::Signal(m) => m,
        RatchetMessage::PreKey(_) => panic!("expected a SignalMessage"),
    }
}

fn pre_key_message(message: RatchetMessage) -> PreKeySignalMessage {
    match message {
        RatchetMessage::PreKey(m) => m,
        RatchetMessage::Signal(_) => panic!("expected a PreKeySignalMessage"),
    }
}

/// A device that published a bundle.
struct Device {
    identity: IdentityKeyPair,
    signed: SignedPreKey,
    pre_keys: Vec<PreKey>,
    bundle: PreKeyBundle,
}

fn device(pre_keys: u32) -> Device {
    let mut rng = os_rng();
    let identity = IdentityKeyPair::generate(&mut rng);
    let signed = SignedPreKey::generate(&mut rng, &identity, 1);
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
fn established() -> (Session, Session) {
    let mut rng = os_rng();
    let bob = device(1);
    let alice_identity = IdentityKeyPair::generate(&mut rng);
    let mut alice = Session::initiate(&mut rng, &alice_identity, &bob.bundle).unwrap();
    let first = pre_key_message(alice.encrypt(&KEY_MATERIAL).unwrap());
    let (mut to_alice, _) = Session::respond(
        &mut rng,
        &bob.identity,
        &bob.signed,
        &bob.pre_keys[0],
        &first,
    )
    .unwrap();
    let reply = signal(to_alice.encrypt(&KEY_MATERIAL).unwrap());
    alice.decrypt(&mut rng, &reply).unwrap();
    let next = signal(alice.encrypt(&KEY_MATERIAL).unwrap());
    to_alice.decrypt(&mut rng, &next).unwrap();
    (alice, to_alice)
}

/// Bytes the MAC of a `SignalMessage` covers: both 33-byte identity keys and the message
/// without its 8-byte MAC.
fn mac_input_len(plaintext: &[u8]) -> usize {
    let (mut alice, _) = established();
    // Counters above 16383 take 3 varint bytes, as in the long benchmark runs.
    for _ in 0..20_000 {
        alice.encrypt(plaintext).unwrap();
    }
    66 + signal(alice.encrypt(plaintext).unwrap()).as_bytes().len() - 8
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
    /// Informational: the Ed25519 check inside XEdDSA, in no floor.
    #[allow(dead_code)]
    Ed25519,
    Hmac1,
    HmacMac32,
    HmacMac100,
    Hkdf32,
    Hkdf64,
    Hkdf80,
    CbcEnc32,
    CbcEnc100,
    CbcDec32,
    CbcDec100,
    Gcm100,
}

/// Short names for the floor formulas.
const SHORT: [&str; 16] = [
    "rng",
    "X25519",
    "pubkey",
    "XEdDSA-verify",
    "Ed25519-verify",
    "HMAC(1)",
    "HMAC(mac32)",
    "HMAC(mac100)",
    "HKDF-32",
    "HKDF-64",
    "HKDF-80",
    "CBC-enc(32)",
    "CBC-enc(100)",
    "CBC-dec(32)",
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

/// The primitives; XEdDSA verify checks the signature of `bundle`, the same one X3DH
/// initiation verifies (verification is variable-time, so its cost depends on the key and
/// signature).
fn primitives(bundle: &PreKeyBundle) -> Vec<Case> {
    let mac32 = mac_input_len(&KEY_MATERIAL);
    let mac100 = mac_input_len(&BODY);
    let key = rand32();
    let iv: [u8; 16] = rand32()[..16].try_into().unwrap();
    let secret = StaticSecret::from(rand32());
    let their = x25519_dalek::PublicKey::from(&StaticSecret::from(rand32()));

    let signed_wire = bundle.signed_pre_key.to_wire();
    let signature: [u8; 64] = bundle.signed_pre_key_signature[..].try_into().unwrap();
    let identity_key = bundle.identity_key;
    identity_key.verify(&signed_wire, &signature).unwrap();

    let ed_key = ed25519_dalek::SigningKey::from_bytes(&rand32());
    let ed_signature = ed_key.sign(&signed_wire);
    let ed_public = ed_key.verifying_key();

    let (ct32, len32) = cbc_encrypt(&key, &iv, &KEY_MATERIAL);
    let (ct100, len100) = cbc_encrypt(&key, &iv, &BODY);
    let ikm160 = [0x11u8; 160];
    let data_mac32 = vec![0x22u8; mac32];
    let data_mac100 = vec![0x33u8; mac100];

    let secret2 = secret.clone();
    let mut rng = os_rng();
    vec![
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
            "XEdDSA verify (IdentityKey::verify)",
            batched(
                || (),
                move |_| {
                    black_box(&identity_key)
                        .verify(black_box(&signed_wire), black_box(&signature))
                        .is_ok()
                },
            ),
        ),
        primitive(
            "Ed25519 verify (ed25519-dalek, info)",
            batched(
                || (),
                move |_| {
                    black_box(&ed_public)
                        .verify(black_box(&signed_wire), black_box(&ed_signature))
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
        primitive(
            format!("HMAC-SHA-256 32 B key, {mac32} B (MAC, 32 B msg)"),
            batched(
                || (),
                move |_| hmac_sha256(black_box(&key), black_box(&data_mac32)),
            ),
        ),
        primitive(
            format!("HMAC-SHA-256 32 B key, {mac100} B (MAC, 100 B msg)"),
            batched(
                || (),
                move |_| hmac_sha256(black_box(&key), black_box(&data_mac100)),
            ),
        ),
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
        primitive(
            "AES-256-CBC encrypt 32 B (+PKCS7)",
            batched(
                || (),
                move |_| cbc_encrypt(black_box(&key), &iv, black_box(&KEY_MATERIAL)),
            ),
        ),
        primitive(
            "AES-256-CBC encrypt 100 B (+PKCS7)",
            batched(
                || (),
                move |_| cbc_encrypt(black_box(&key), &iv, black_box(&BODY)),
            ),
        ),
        primitive(
            "AES-256-CBC decrypt 48 B -> 32 B",
            batched(
                || (),
                move |_| cbc_decrypt(black_box(&key), &iv, black_box(&ct32[..len32])),
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
    ]
}

/// Cost of `Session::encrypt` on a chain that exists: 2 HMAC chain step, HKDF-80, CBC,
/// MAC.
fn ratchet_encrypt_floor(small: bool) -> Vec<(P, f64)> {
    let (cbc, mac) = if small {
        (P::CbcEnc32, P::HmacMac32)
    } else {
        (P::CbcEnc100, P::HmacMac100)
    };
    vec![(P::Hmac1, 2.0), (P::Hkdf80, 1.0), (cbc, 1.0), (mac, 1.0)]
}

/// The operations; X3DH initiation uses `bob`'s bundle.
fn operations(bob: Device) -> Vec<Case> {
    let mut cases = Vec::new();

    // X3DH as initiator: bundle.verify(), the random prekey choice (rng.next_u64), two
    // key pairs (ephemeral, first ratchet key), 4 X25519 + HKDF-32, a root step (X25519 +
    // HKDF-64).
    {
        let alice = IdentityKeyPair::generate(&mut os_rng());
        let mut rng = os_rng();
        cases.push(Case {
            group: "x3dh",
            name: "X3DH initiate (100-prekey bundle)".into(),
            floor: vec![
                (P::XEdDSA, 1.0),
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

    // X3DH as responder, including the first message (32 B of key material): 4 X25519 +
    // HKDF-32, then a decrypt with a DH step: root step (X25519 + HKDF-64), chain step
    // (2 HMAC(1)), HKDF-80, MAC, CBC decrypt, new ratchet key pair (rng + pubkey), root
    // step (X25519 + HKDF-64).
    {
        let bob = device(100);
        let mut rng = os_rng();
        let alice_identity = IdentityKeyPair::generate(&mut rng);
        let mut alice = Session::initiate(&mut rng, &alice_identity, &bob.bundle).unwrap();
        let message = pre_key_message(alice.encrypt(&KEY_MATERIAL).unwrap());
        let pre_key = bob
            .pre_keys
            .iter()
            .find(|k| Some(k.id()) == message.pre_key_id())
            .unwrap()
            .clone();
        cases.push(Case {
            group: "x3dh",
            name: "X3DH respond + first decrypt (32 B)".into(),
            floor: vec![
                (P::X25519, 6.0),
                (P::Hkdf32, 1.0),
                (P::Hkdf64, 2.0),
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (P::HmacMac32, 1.0),
                (P::CbcDec32, 1.0),
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
    for (body, small) in [(&BODY[..], false), (&KEY_MATERIAL[..], true)] {
        let (mut alice, _) = established();
        cases.push(Case {
            group: "ratchet",
            name: format!("ratchet encrypt {} B, no DH step", body.len()),
            floor: ratchet_encrypt_floor(small),
            target: Some(2.0),
            run: batched(|| (), move |_| alice.encrypt(body).unwrap()),
        });
    }

    // In-order receiving on one chain: the messages are made (untimed) in order and
    // decrypted in that order by one session; no clone.
    {
        let (mut alice, mut bob) = established();
        let mut rng = os_rng();
        cases.push(Case {
            group: "ratchet",
            name: "ratchet decrypt 100 B, no DH step".into(),
            floor: vec![
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (P::HmacMac100, 1.0),
                (P::CbcDec100, 1.0),
            ],
            target: None,
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
        let (mut alice, mut bob) = established();
        let mut rng = os_rng();
        for _ in 0..omemo::DEFAULT_MAX_STORED_SKIPPED_KEYS {
            alice.encrypt(&BODY).unwrap();
        }
        bob.decrypt(&mut rng, &signal(alice.encrypt(&BODY).unwrap()))
            .unwrap();
        cases.push(Case {
            group: "ratchet",
            name: "ratchet decrypt 100 B, no DH step, 1000 skipped keys stored".into(),
            floor: vec![
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (P::HmacMac100, 1.0),
                (P::CbcDec100, 1.0),
            ],
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
        let (alice, mut bob) = established();
        let message = signal(bob.encrypt(&BODY).unwrap());
        let mut rng = os_rng();
        let mut after = alice.clone();
        after.decrypt(&mut rng, &message).unwrap();
        cases.push(Case {
            group: "ratchet",
            name: "ratchet decrypt 100 B with DH step".into(),
            floor: vec![
                (P::X25519, 2.0),
                (P::Hkdf64, 2.0),
                (P::Hmac1, 2.0),
                (P::Hkdf80, 1.0),
                (P::HmacMac100, 1.0),
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
            name: "ratchet encrypt 100 B, first after DH step".into(),
            floor: ratchet_encrypt_floor(false),
            target: Some(2.0),
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
            name: "payload encrypt 100 B (AES-128-GCM)".into(),
            floor: vec![(P::Rng, 2.0), (P::Gcm100, 1.0)],
            target: None,
            run: batched(|| (), move |_| encrypt_payload(&mut rng, &BODY)),
        });
    }

    // One payload to n devices: encrypt_payload once, Session::encrypt(32 B) per session.
    for n in [1usize, 10, 100] {
        let mut sessions: Vec<Session> = (0..n).map(|_| established().0).collect();
        let mut rng = os_rng();
        let mut floor = vec![(P::Rng, 2.0), (P::Gcm100, 1.0)];
        floor.extend(
            ratchet_encrypt_floor(true)
                .into_iter()
                .map(|(p, k)| (p, k * n as f64)),
        );
        cases.push(Case {
            group: "fanout",
            name: format!("fan-out 100 B to {n} session(s)"),
            floor,
            target: (n == 100).then_some(2.0),
            run: batched(
                || (),
                move |_| {
                    let (key, payload) = encrypt_payload(&mut rng, &BODY);
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
    let bob = device(100);
    let mut cases = primitives(&bob.bundle);
    cases.extend(operations(bob));
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
