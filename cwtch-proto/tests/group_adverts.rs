//! Server adverts shared inside a group (SPEC.md section 13.4): the vector
//! (the section 13.3 advert in a one-advert body), and a sealed message of
//! kind 0x81 that a member opens and decodes.

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use cwtch_proto::Identity;
use cwtch_proto::group::adverts::GROUP_ADVERTS_MAX_LEN;
use cwtch_proto::group::{
    ControlError, Group, GroupAdverts, MessageKind, SEALED_BLOB_LEN, SenderChain,
};
use cwtch_proto::server::advert::{AdvertError, Requirements, Retention, ServerAdvert};

const ISSUED: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

/// The advert of SPEC.md section 13.3.
fn spec_advert() -> [u8; 148] {
    let id = Identity::from_seed(&[0x42; 32]);
    ServerAdvert {
        server: id.public(),
        issued_at: ISSUED,
        expires_at: ISSUED + 7 * 86_400,
        requirements: Requirements {
            pow_bits: 16,
            rate_burst: 32,
            rate_interval_ms: 500,
            max_connections: 10_000,
        },
        retention: Retention {
            max_entries: 100_000,
            max_bytes: 1 << 30,
            max_age_secs: 30 * 86_400,
        },
    }
    .sign(&id)
    .unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn vector_is_fixed() {
    let mut list = GroupAdverts::new();
    list.push(&spec_advert()).unwrap();
    let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
    let body = list.encode(&mut buf).unwrap();
    assert_eq!(body.len(), 150);
    let expected = concat!(
        "0101",
        "01",
        "2152f8d19b791d24453242e15f2eab6cb7cffa7b6a5ed30097960e069881db12",
        "00b9556900000000",
        "80f35e6900000000",
        "10",
        "2000",
        "f4010000",
        "10270000",
        "a086010000000000",
        "0000004000000000",
        "008d270000000000",
        "5447a2f61f05e48cb9bfd67d4b77318b98502c7ef2f0c86af488026cf613923e",
        "f6d41617bc6902342345d19654b589e15be60b2ef6f7340560cf5f7860099c0f",
    );
    assert_eq!(hex(body), expected);
    assert_eq!(GroupAdverts::decode(body).unwrap(), list);
    assert_eq!(MessageKind::ADVERTS.as_byte(), 0x81);
    assert!(MessageKind::ADVERTS.is_control());
}

#[test]
fn a_member_opens_a_sealed_advert_message() {
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let alice = Identity::generate(&mut rng);
    let server = Identity::generate(&mut rng).address();
    let group = Group::generate(&mut rng, [server].into_iter().collect());
    let mut list = GroupAdverts::new();
    list.push(&spec_advert()).unwrap();
    let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
    let body = list.encode(&mut buf).unwrap();
    let mut chain = SenderChain::new();
    let mut blob = [0u8; SEALED_BLOB_LEN];
    chain
        .seal_next(
            group.keys(),
            &alice,
            &server,
            MessageKind::ADVERTS,
            body,
            cwtch_proto::UnixMicros::from_secs(ISSUED),
            &[],
            &mut rng,
            &mut blob,
        )
        .unwrap();
    let msg = group.keys().open_in_place(&server, &mut blob).unwrap();
    assert_eq!(msg.kind, MessageKind::ADVERTS);
    assert_eq!(msg.sender, alice.public());
    assert_eq!(msg.text(), None, "not a text");
    let got = GroupAdverts::decode(msg.body).unwrap();
    let (raw, advert) = got.iter().next().unwrap();
    assert_eq!(raw, &spec_advert());
    assert_eq!(advert.check_time(ISSUED + 1), Ok(()));
    assert_eq!(
        advert.check_time(ISSUED + 8 * 86_400),
        Err(AdvertError::Expired)
    );
}

#[test]
fn an_advert_signed_by_another_key_is_refused() {
    let id = Identity::from_seed(&[0x42; 32]);
    let other = Identity::from_seed(&[0x43; 32]);
    let mut bytes = spec_advert();
    // Re-sign the same body with another key: the key inside does not match.
    let mut signed = b"cwtch-server-advert-v1".to_vec();
    signed.extend_from_slice(&bytes[..84]);
    bytes[84..].copy_from_slice(&other.sign(&signed));
    let mut list = GroupAdverts::new();
    assert_eq!(
        list.push(&bytes),
        Err(ControlError::BadAdvert(AdvertError::BadSignature))
    );
    bytes[84..].copy_from_slice(&id.sign(&signed));
    assert_eq!(list.push(&bytes), Ok(()));
}
