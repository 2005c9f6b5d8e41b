//! Offline first contact: extended identifiers and sealed requests. Round
//! trips, fixed vectors, and misuse (wrong recipient, bit flips, truncation,
//! another server, bad checksums).

use chacha20::ChaCha20Rng;
use cwtch_proto::group::{Detector, Group, GroupSecret, SEALED_BLOB_LEN, ServerList};
use cwtch_proto::mailbox::identifier::IDENTIFIER_TEXT_MAX_LEN;
use cwtch_proto::mailbox::request::MAX_TEXT_LEN;
use cwtch_proto::mailbox::{
    FirstContact, Identifier, IdentifierError, KDF_SALT, LABEL_DETECT, LABEL_MASK, Mailbox,
    MailboxKey, RequestOpenError, RequestSealError, seal_request,
};
use cwtch_proto::{Identity, OnionAddress};
use rand_core::SeedableRng;
use sha2::{Digest, Sha256};

fn rng(seed: u8) -> ChaCha20Rng {
    ChaCha20Rng::from_seed([seed; 32])
}
fn identity(seed: u8) -> Identity {
    Identity::from_seed(&[seed; 32])
}
fn server(seed: u8) -> OnionAddress {
    identity(seed).address()
}
fn mailbox(key: u8, server_seed: u8) -> Mailbox {
    Mailbox {
        server: server(server_seed),
        key: MailboxKey::from_bytes(&[key; 32]),
    }
}
const FIRST: FirstContact<'static> = FirstContact {
    name: "alice",
    id: 7,
    timestamp: cwtch_proto::UnixMicros::from_micros(1_764_000_000_000_000),
    text: "hello bob",
};

fn sealed(sender: &Identity, to: &Identity, mb: &Mailbox, seed: u8) -> [u8; SEALED_BLOB_LEN] {
    let mut blob = [0u8; SEALED_BLOB_LEN];
    let n = seal_request(sender, &to.public(), mb, &FIRST, &mut rng(seed), &mut blob).unwrap();
    assert_eq!(n, SEALED_BLOB_LEN);
    blob
}

#[test]
fn round_trip() {
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let mut blob = sealed(&alice, &bob, &mb, 7);
    let keys = mb.key.derive_keys();
    assert!(keys.detect(&blob));
    let req = keys.open_request(&bob, &mb.server, &mut blob).unwrap();
    assert_eq!(req.sender, alice.public());
    assert_eq!((req.name, req.id, req.text), ("alice", 7, "hello bob"));
    assert_eq!(req.timestamp, FIRST.timestamp.as_claim());
}

#[test]
fn longest_text_and_name_fit_and_longer_are_refused() {
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let text = "é".repeat(MAX_TEXT_LEN / 2);
    let name = "n".repeat(64);
    let msg = FirstContact {
        name: &name,
        text: &text,
        ..FIRST
    };
    let mut blob = [0u8; SEALED_BLOB_LEN];
    seal_request(&alice, &bob.public(), &mb, &msg, &mut rng(1), &mut blob).unwrap();
    let req = mb
        .key
        .derive_keys()
        .open_request(&bob, &mb.server, &mut blob)
        .unwrap();
    assert_eq!((req.name, req.text), (name.as_str(), text.as_str()));
    let long = "x".repeat(MAX_TEXT_LEN + 1);
    let msg = FirstContact {
        text: &long,
        ..FIRST
    };
    assert_eq!(
        seal_request(&alice, &bob.public(), &mb, &msg, &mut rng(1), &mut blob),
        Err(RequestSealError::TextTooLong)
    );
    let long = "x".repeat(65);
    let msg = FirstContact {
        name: &long,
        ..FIRST
    };
    assert_eq!(
        seal_request(&alice, &bob.public(), &mb, &msg, &mut rng(1), &mut blob),
        Err(RequestSealError::NameTooLong)
    );
    assert_eq!(
        seal_request(
            &alice,
            &bob.public(),
            &mb,
            &FIRST,
            &mut rng(1),
            &mut blob[..2047]
        ),
        Err(RequestSealError::BufferTooSmall)
    );
}

#[test]
fn wrong_recipient_cannot_open() {
    // Carol holds Bob's identifier (so his mailbox key): she detects the
    // request but cannot read it.
    let (alice, bob, carol, mb) = (identity(1), identity(2), identity(3), mailbox(0x42, 0x81));
    let blob = sealed(&alice, &bob, &mb, 7);
    let keys = mb.key.derive_keys();
    assert!(keys.detect(&blob));
    let mut copy = blob;
    assert_eq!(
        keys.open_request(&carol, &mb.server, &mut copy),
        Err(RequestOpenError::Tampered)
    );
    // Sealed to Carol under Bob's mailbox key: Bob cannot open it either.
    let mut to_carol = sealed(&alice, &carol, &mb, 8);
    assert_eq!(
        keys.open_request(&bob, &mb.server, &mut to_carol),
        Err(RequestOpenError::Tampered)
    );
    // Another mailbox key does not even detect it.
    let other = mailbox(0x43, 0x81).key.derive_keys();
    let mut copy = blob;
    assert!(!other.detect(&blob));
    assert_eq!(
        other.open_request(&bob, &mb.server, &mut copy),
        Err(RequestOpenError::NotForUs)
    );
}

#[test]
fn every_bit_flip_is_refused() {
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let blob = sealed(&alice, &bob, &mb, 7);
    let keys = mb.key.derive_keys();
    // Every bit of the header, and a bit of every byte of the rest.
    for bit in 0..SEALED_BLOB_LEN * 8 {
        if bit >= 72 * 8 && bit % 8 != bit / 8 % 8 {
            continue;
        }
        let mut copy = blob;
        copy[bit / 8] ^= 1 << (bit % 8);
        let err = keys.open_request(&bob, &mb.server, &mut copy).unwrap_err();
        if bit < 40 * 8 {
            assert!(
                matches!(err, RequestOpenError::NotForUs | RequestOpenError::Tampered),
                "bit {bit}: {err:?}"
            );
        } else {
            assert_eq!(err, RequestOpenError::Tampered, "bit {bit}");
        }
    }
}

#[test]
fn truncated_or_extended_is_refused() {
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let blob = sealed(&alice, &bob, &mb, 7);
    let keys = mb.key.derive_keys();
    for len in [0, 1, 40, 72, 2047] {
        let mut short = blob[..len].to_vec();
        assert_eq!(
            keys.open_request(&bob, &mb.server, &mut short),
            Err(RequestOpenError::WrongLength { found: len })
        );
    }
    let mut long = blob.to_vec();
    long.push(0);
    assert_eq!(
        keys.open_request(&bob, &mb.server, &mut long),
        Err(RequestOpenError::WrongLength { found: 2049 })
    );
}

#[test]
fn another_server_is_refused_and_plaintext_wiped() {
    // A request replayed onto another server (with the same mailbox key)
    // fails the signature, which binds the server.
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let mut blob = sealed(&alice, &bob, &mb, 7);
    let keys = mb.key.derive_keys();
    assert_eq!(
        keys.open_request(&bob, &server(0x82), &mut blob),
        Err(RequestOpenError::BadSignature)
    );
    assert!(blob[72..2032].iter().all(|&b| b == 0), "plaintext wiped");
}

#[test]
fn requests_look_like_group_blobs_to_groups() {
    // A group member's detector never takes a request for a group message,
    // and the mailbox key sits in the same multi-key detector.
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let blob = sealed(&alice, &bob, &mb, 7);
    let mut servers = ServerList::new();
    servers.push(mb.server).unwrap();
    let group = Group::from_secret(GroupSecret::from_bytes(&[0x42; 32]), servers);
    assert!(!group.keys().detect(&blob));
    let keys = mb.key.derive_keys();
    let mut det: Detector<u8, 4> = Detector::new();
    det.insert(1, group.keys().detection_key()).unwrap();
    det.insert(2, keys.detection_key()).unwrap();
    assert_eq!(det.detect(&blob), Some(2));
}

#[test]
fn two_requests_share_no_bytes_in_their_headers() {
    // Same sender, same recipient: nonces, tags and masked keys differ.
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let a = sealed(&alice, &bob, &mb, 7);
    let b = sealed(&alice, &bob, &mb, 8);
    for range in [0..24, 24..40, 40..72] {
        assert_ne!(a[range.clone()], b[range]);
    }
    // The masked ephemeral key's top bit is not stuck at zero (an
    // unmasked X25519 key's is): over 64 requests it takes both values.
    let tops: Vec<bool> = (0..64u8)
        .map(|s| sealed(&alice, &bob, &mb, s)[71] & 0x80 != 0)
        .collect();
    assert!(tops.contains(&true) && tops.contains(&false));
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn fixed_vector() {
    // Sender seed 01 x 32, recipient seed 02 x 32, server seed 81 x 32,
    // K = 42 x 32, rng ChaCha20Rng(07 x 32): nonce first, then the
    // ephemeral seed. See SPEC.md section 12.
    let (alice, bob, mb) = (identity(1), identity(2), mailbox(0x42, 0x81));
    let hk = hkdf::Hkdf::<Sha256>::new(Some(KDF_SALT), &[0x42; 32]);
    let mut d = [0u8; 32];
    let mut m = [0u8; 32];
    hk.expand(LABEL_DETECT, &mut d).unwrap();
    hk.expand(LABEL_MASK, &mut m).unwrap();
    let blob = sealed(&alice, &bob, &mb, 7);
    let got = format!(
        "K_detect {}\nK_mask {}\nblob[0..72] {}\nblob[2032..] {}\nSHA-256 {}",
        hex(&d),
        hex(&m),
        hex(&blob[..72]),
        hex(&blob[2032..]),
        hex(&Sha256::digest(blob))
    );
    println!("{got}");
    assert_eq!(got, include_str!("mailbox_vector.txt").trim_end());
    let mut text = [0u8; IDENTIFIER_TEXT_MAX_LEN];
    let id = Identifier::new(bob.address(), Some(mb.clone()));
    assert_eq!(
        id.to_text(&mut text),
        include_str!("mailbox_identifier.txt").trim_end()
    );
}

#[test]
fn identifier_round_trip_and_plain_address() {
    let bob = identity(2);
    let id = Identifier::new(bob.address(), Some(mailbox(0x42, 0x81)));
    let mut buf = [0u8; IDENTIFIER_TEXT_MAX_LEN];
    let text = id.to_text(&mut buf).to_string();
    assert_eq!(text.len(), IDENTIFIER_TEXT_MAX_LEN);
    assert!(text.starts_with(&format!("cwtch:{}?server=", bob.address())));
    assert_eq!(Identifier::parse(&format!("  {text}\n")).unwrap(), id);
    let plain = Identifier::new(bob.address(), None);
    let addr = bob.address().to_string();
    for form in [
        addr.clone(),
        format!("{addr}.onion"),
        format!("cwtch:{addr}"),
    ] {
        assert_eq!(Identifier::parse(&form).unwrap(), plain, "{form}");
    }
    assert_eq!(plain.to_text(&mut buf), addr);
}

#[test]
fn identifier_misuse() {
    let bob = identity(2);
    let id = Identifier::new(bob.address(), Some(mailbox(0x42, 0x81)));
    let mut buf = [0u8; IDENTIFIER_TEXT_MAX_LEN];
    let text = id.to_text(&mut buf).to_string();
    let key_at = text.find("&key=").unwrap() + 5;
    // A changed character of the key: the checksum catches it.
    let mut bad = text.clone().into_bytes();
    bad[key_at + 3] = if bad[key_at + 3] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        Identifier::parse(std::str::from_utf8(&bad).unwrap()),
        Err(IdentifierError::BadChecksum)
    );
    // The same key with another server (both valid addresses): checksum.
    let swapped = text.replace(&server(0x81).to_string(), &server(0x82).to_string());
    assert_eq!(
        Identifier::parse(&swapped),
        Err(IdentifierError::BadChecksum)
    );
    // Cut, extended, reordered, upper case.
    assert_eq!(
        Identifier::parse(&text[..text.len() - 1]),
        Err(IdentifierError::Malformed)
    );
    assert_eq!(
        Identifier::parse(&format!("{text}a")),
        Err(IdentifierError::Malformed)
    );
    let reordered = format!(
        "cwtch:{}&key={}?server={}",
        bob.address(),
        &text[key_at..],
        server(0x81)
    );
    assert_eq!(
        Identifier::parse(&reordered),
        Err(IdentifierError::Malformed)
    );
    assert!(matches!(
        Identifier::parse(&text.to_uppercase()),
        Err(IdentifierError::Address(_))
    ));
    let upper_key = format!("{}{}", &text[..key_at], text[key_at..].to_uppercase());
    assert!(matches!(
        Identifier::parse(&upper_key),
        Err(IdentifierError::Key(_))
    ));
    // A typo in the server address is caught by the address's checksum.
    let srv_at = text.find("?server=").unwrap() + 8;
    let mut bad = text.clone().into_bytes();
    bad[srv_at + 5] = if bad[srv_at + 5] == b'a' { b'b' } else { b'a' };
    assert!(matches!(
        Identifier::parse(std::str::from_utf8(&bad).unwrap()),
        Err(IdentifierError::Server(_))
    ));
    assert!(matches!(
        Identifier::parse(""),
        Err(IdentifierError::Address(_))
    ));
    assert!(matches!(
        Identifier::parse("cwtch:"),
        Err(IdentifierError::Address(_))
    ));
}

#[test]
fn keys_print_nothing_secret() {
    let mb = mailbox(0x42, 0x81);
    let shown = format!("{:?} {:?}", mb, mb.key.derive_keys());
    assert!(!shown.contains("42"), "{shown}");
    assert!(!shown.contains("66"), "{shown}");
}
