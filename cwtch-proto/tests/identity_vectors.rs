//! Onion addresses of fixed seeds, checked against values from outside:
//! a running tor (ADD_ONION with our expanded key) and Tor's own test suite.

use cwtch_proto::onion::AddressError;
use cwtch_proto::{Identity, OnionAddress, PublicIdentity};

fn hex32(s: &str) -> [u8; 32] {
    let v = hex::decode(s).unwrap();
    v.try_into().unwrap()
}

/// Service ids that tor 0.4.9.11 returned for `ADD_ONION ED25519-V3:<key>`
/// where `<key>` was the expanded key of the seed (SHA-512, clamped), on a
/// lone tor with `DisableNetwork 1`. See SPEC.md, "Identities".
const FROM_RUNNING_TOR: [(&str, &str); 2] = [
    (
        "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f",
        "aoqqpp7tzyil4hlq3umoos6atft6jvrqtosq2xy53sdgiesvgg4bqead",
    ),
    (
        "4242424242424242424242424242424242424242424242424242424242424242",
        "efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad",
    ),
];

#[test]
fn addresses_of_fixed_seeds_match_running_tor() {
    for (seed, address) in FROM_RUNNING_TOR {
        let id = Identity::from_seed(&hex32(seed));
        assert_eq!(id.address().as_str(), address);
        assert_eq!(OnionAddress::parse(address).unwrap(), id.address());
    }
}

/// Tor's `test_hs_common.c` (build_address test) uses the RFC 8032 test 1
/// key; its seed is `9d61...7f60` and its public key `d75a...511a`.
#[test]
fn rfc8032_key_matches_tor_test_suite_address() {
    let id = Identity::from_seed(&hex32(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    assert_eq!(
        hex::encode(id.public().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    assert_eq!(
        id.address().as_str(),
        "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid"
    );
}

#[test]
fn expanded_key_is_clamped_sha512_of_seed() {
    let id = Identity::from_seed(&[7u8; 32]);
    let key = id.tor_expanded_key();
    let bytes = key.as_bytes();
    assert_eq!(bytes[0] & 7, 0, "low bits cleared");
    assert_eq!(
        bytes[31] & 0xc0,
        0x40,
        "high bit cleared, second-highest set"
    );
    assert_eq!(format!("{key:?}"), "ExpandedSecretKey(..)");
}

#[test]
fn parse_accepts_suffix_and_rejects_each_kind_of_bad_input() {
    let good = "25njqamcweflpvkl73j4szahhihoc4xt3ktcgjnpaingr5yhkenl5sid";
    let with_suffix = format!("{good}.onion");
    assert_eq!(
        OnionAddress::parse(&with_suffix).unwrap(),
        OnionAddress::parse(good).unwrap()
    );
    assert_eq!(
        OnionAddress::parse(&good[..55]),
        Err(AddressError::WrongLength { found: 55 })
    );
    assert_eq!(
        OnionAddress::parse(&good.to_uppercase()),
        Err(AddressError::InvalidCharacter { offset: 2 }) // "25" are digits
    );
    let mut bad_char = good.to_string();
    bad_char.replace_range(10..11, "1");
    assert_eq!(
        OnionAddress::parse(&bad_char),
        Err(AddressError::InvalidCharacter { offset: 10 })
    );
    // A typo in the key part breaks the checksum.
    let mut typo = good.to_string();
    typo.replace_range(3..4, "k");
    assert_eq!(OnionAddress::parse(&typo), Err(AddressError::BadChecksum));
    // Last character carries the version's low bits: "d" -> version 3.
    let mut v2 = good.to_string();
    v2.replace_range(55..56, "a");
    assert!(matches!(
        OnionAddress::parse(&v2),
        Err(AddressError::UnsupportedVersion { .. }) | Err(AddressError::NonCanonical)
    ));
    // An address built for a small-order point has a valid checksum but no owner.
    let identity_point = {
        let mut k = [0u8; 32];
        k[0] = 1;
        k
    };
    assert!(PublicIdentity::from_bytes(&identity_point).is_err());
}

#[test]
fn signatures_verify_and_reject_tampering() {
    let id = Identity::from_seed(&[9u8; 32]);
    let sig = id.sign(b"hello");
    id.public().verify(b"hello", &sig).unwrap();
    assert!(id.public().verify(b"hellp", &sig).is_err());
    let other = Identity::from_seed(&[10u8; 32]);
    assert!(other.public().verify(b"hello", &sig).is_err());
}

#[test]
fn debug_never_prints_the_seed() {
    let seed = [0xabu8; 32];
    let id = Identity::from_seed(&seed);
    let dbg = format!("{id:?}");
    assert!(!dbg.contains("171"), "{dbg}");
    assert!(!dbg.to_lowercase().contains("abab"), "{dbg}");
    assert!(dbg.contains(id.address().as_str()));
}
