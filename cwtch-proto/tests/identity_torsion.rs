//! One key, one address (issue 14, item 10): a key with a small-order
//! (torsion) component is refused wherever a key enters the core, so the
//! holder of `A` cannot also be `A + T` (up to eight addresses for one key,
//! a way around a block).

use curve25519_dalek::constants::EIGHT_TORSION;
use curve25519_dalek::edwards::CompressedEdwardsY;
use cwtch_proto::identity::KeyError;
use cwtch_proto::{Identity, OnionAddress, PublicIdentity};

fn shifted(a: &Identity, t: usize) -> [u8; 32] {
    let point = CompressedEdwardsY(*a.public().as_bytes())
        .decompress()
        .expect("a real key is a point");
    (point + EIGHT_TORSION[t]).compress().to_bytes()
}

#[test]
fn a_key_plus_a_torsion_point_is_no_identity() {
    let a = Identity::from_seed(&[5; 32]);
    assert!(PublicIdentity::from_bytes(a.public().as_bytes()).is_ok());
    for t in 1..8 {
        let bytes = shifted(&a, t);
        assert_ne!(&bytes, a.public().as_bytes());
        assert_eq!(
            PublicIdentity::from_bytes(&bytes),
            Err(KeyError::Torsion),
            "torsion point {t}"
        );
    }
    // Small-order points alone stay refused as weak.
    for t in EIGHT_TORSION {
        let bytes = t.compress().to_bytes();
        assert_eq!(PublicIdentity::from_bytes(&bytes), Err(KeyError::WeakKey));
    }
}

#[test]
fn the_address_of_a_shifted_key_does_not_parse() {
    // Build the would-be address of A + T by hand (SPEC.md section 1) and
    // check the parser refuses it.
    use sha3::{Digest, Sha3_256};
    let a = Identity::from_seed(&[6; 32]);
    let key = shifted(&a, 4);
    let mut h = Sha3_256::new();
    h.update(b".onion checksum");
    h.update(key);
    h.update([3u8]);
    let check = h.finalize();
    let mut raw = key.to_vec();
    raw.extend_from_slice(&check[..2]);
    raw.push(3);
    let text = data_encoding::BASE32_NOPAD.encode(&raw).to_lowercase();
    assert_eq!(text.len(), 56);
    assert!(OnionAddress::parse(&text).is_err());
    assert!(OnionAddress::parse(a.address().as_str()).is_ok());
}
