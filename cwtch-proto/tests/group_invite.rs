//! Invites: binary and text round trips, and every way a pasted invite can
//! be wrong.

mod group_common;

use cwtch_proto::group::invite::{
    INVITE_MAX_LEN, INVITE_PREFIX, INVITE_TEXT_MAX_LEN, MAX_NAME_LEN,
};
use cwtch_proto::group::{Group, Invite, InviteError, InviteTextError, ServerList};
use group_common::{group, identity, rng};
use proptest::prelude::*;

fn invite() -> Invite {
    Invite::new(
        &group(0x5e, &[1, 2, 3, 4]),
        "Book club 📚",
        identity(9).public(),
    )
    .unwrap()
}

fn text_of(inv: &Invite) -> String {
    let mut buf = [0u8; INVITE_TEXT_MAX_LEN];
    inv.to_text(&mut buf).unwrap().to_owned()
}

#[test]
fn binary_and_text_round_trip() {
    let inv = invite();
    let mut bin = [0u8; INVITE_MAX_LEN];
    let len = inv.encode(&mut bin).unwrap();
    let back = Invite::decode(&bin[..len]).unwrap();
    assert_eq!(back.secret(), inv.secret());
    assert_eq!(back.servers(), inv.servers());
    assert_eq!(back.name(), "Book club 📚");
    assert_eq!(back.inviter(), &identity(9).public());

    let text = text_of(&inv);
    assert!(text.starts_with("cwtch-invite:"));
    assert!(text.len() <= INVITE_TEXT_MAX_LEN);
    let back = Invite::from_text(&format!("  {text}\n")).unwrap();
    assert_eq!(back.secret(), inv.secret());
    assert_eq!(back.group().id(), group(0x5e, &[1, 2, 3, 4]).id());
}

#[test]
fn longest_invite_fits_the_constants() {
    let name = "n".repeat(MAX_NAME_LEN);
    let inv = Invite::new(&group(1, &[1, 2, 3, 4]), &name, identity(1).public()).unwrap();
    let mut bin = [0u8; INVITE_MAX_LEN];
    assert_eq!(inv.encode(&mut bin).unwrap(), INVITE_MAX_LEN);
    assert_eq!(text_of(&inv).len(), INVITE_TEXT_MAX_LEN);
    let too_long = "n".repeat(MAX_NAME_LEN + 1);
    assert_eq!(
        Invite::new(&group(1, &[1]), &too_long, identity(1).public()).unwrap_err(),
        InviteError::NameTooLong
    );
    let no_server = Group::generate(&mut rng(1), ServerList::new());
    assert_eq!(
        Invite::new(&no_server, "x", identity(1).public()).unwrap_err(),
        InviteError::NoServers
    );
}

#[test]
fn too_small_buffers_are_typed_errors() {
    let inv = invite();
    let mut small = [0u8; 10];
    assert!(matches!(
        inv.encode(&mut small),
        Err(InviteError::BufferTooSmall { .. })
    ));
    assert!(matches!(
        inv.to_text(&mut small),
        Err(InviteError::BufferTooSmall { .. })
    ));
}

#[test]
fn malformed_texts_are_refused_with_the_right_error() {
    let text = text_of(&invite());
    let body = &text[INVITE_PREFIX.len()..];
    assert_eq!(
        Invite::from_text(body).unwrap_err(),
        InviteTextError::MissingPrefix
    );
    assert_eq!(
        Invite::from_text(&format!("cwtch-invitation:{body}")).unwrap_err(),
        InviteTextError::MissingPrefix
    );
    assert_eq!(
        Invite::from_text("").unwrap_err(),
        InviteTextError::MissingPrefix
    );
    assert_eq!(
        Invite::from_text("cwtch-invite:").unwrap_err(),
        InviteTextError::WrongLength
    );
    // Upper case is not the canonical form.
    assert_eq!(
        Invite::from_text(&format!("cwtch-invite:{}", body.to_uppercase())).unwrap_err(),
        InviteTextError::InvalidCharacter { offset: 0 }
    );
    // A typo: one character changed.
    let mut typo = text.clone().into_bytes();
    let i = INVITE_PREFIX.len() + 20;
    typo[i] = if typo[i] == b'a' { b'b' } else { b'a' };
    assert_eq!(
        Invite::from_text(core::str::from_utf8(&typo).unwrap()).unwrap_err(),
        InviteTextError::BadChecksum
    );
    // Truncation: every cut is refused (length or checksum).
    for cut in 1..body.len() {
        let t = &text[..text.len() - cut];
        assert!(Invite::from_text(t).is_err(), "cut {cut}");
    }
    // Garbage characters.
    let mut bad = text.clone();
    bad.replace_range(i..i + 1, "1");
    assert_eq!(
        Invite::from_text(&bad).unwrap_err(),
        InviteTextError::InvalidCharacter { offset: 20 }
    );
    // Far too long.
    let long = format!("{text}{}", "a".repeat(1000));
    assert_eq!(
        Invite::from_text(&long).unwrap_err(),
        InviteTextError::WrongLength
    );
}

/// A text with a valid checksum over bytes that are not an invite.
fn text_with_valid_checksum(payload: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    let mut raw = payload.to_vec();
    let sum = Sha256::new()
        .chain_update(b"cwtch invite checksum v1")
        .chain_update(payload)
        .finalize();
    raw.extend_from_slice(&sum[..4]);
    let mut out = vec![0u8; cwtch_proto::wire::base32::encoded_len(raw.len())];
    cwtch_proto::wire::base32::encode_into(&raw, &mut out).unwrap();
    format!("cwtch-invite:{}", String::from_utf8(out).unwrap())
}

#[test]
fn valid_checksum_over_bad_content_is_an_invite_error() {
    let inv = invite();
    let mut bin = [0u8; INVITE_MAX_LEN];
    let len = inv.encode(&mut bin).unwrap();
    // Version byte 2.
    let mut v2 = bin[..len].to_vec();
    v2[0] = 2;
    assert_eq!(
        Invite::from_text(&text_with_valid_checksum(&v2)).unwrap_err(),
        InviteTextError::Invite(InviteError::UnsupportedVersion(2))
    );
    // Trailing byte.
    let mut trailing = bin[..len].to_vec();
    trailing.push(0);
    assert_eq!(
        Invite::decode(&trailing).unwrap_err(),
        InviteError::TrailingBytes
    );
    // An over-long varint (the server count 1 written as 0x81 0x00).
    let mut overlong = bin[..33].to_vec();
    assert_eq!(bin[33], 4);
    overlong.extend_from_slice(&[0x84, 0x00]);
    overlong.extend_from_slice(&bin[34..len]);
    assert_eq!(
        Invite::decode(&overlong).unwrap_err(),
        InviteError::NonCanonical
    );
    // Truncated binary.
    assert_eq!(
        Invite::decode(&bin[..len - 1]).unwrap_err(),
        InviteError::Malformed
    );
    // Five servers.
    let mut five = vec![1u8];
    five.extend_from_slice(&[7; 32]);
    five.push(5);
    for s in [1, 2, 3, 4, 5].map(group_common::server) {
        five.extend_from_slice(s.public_identity().as_bytes());
    }
    five.push(0);
    five.extend_from_slice(identity(1).public().as_bytes());
    assert_eq!(Invite::decode(&five).unwrap_err(), InviteError::Malformed);
    // No server.
    let mut none = vec![1u8];
    none.extend_from_slice(&[7; 32]);
    none.push(0);
    none.push(0);
    none.extend_from_slice(identity(1).public().as_bytes());
    assert_eq!(Invite::decode(&none).unwrap_err(), InviteError::NoServers);
    // A small-order server key (the identity point).
    let mut weak = vec![1u8];
    weak.extend_from_slice(&[7; 32]);
    weak.push(1);
    let mut identity_point = [0u8; 32];
    identity_point[0] = 1;
    weak.extend_from_slice(&identity_point);
    weak.push(0);
    weak.extend_from_slice(identity(1).public().as_bytes());
    assert_eq!(Invite::decode(&weak).unwrap_err(), InviteError::BadServer);
    // Bad inviter key.
    let mut bad_inviter = bin[..len].to_vec();
    let n = bad_inviter.len();
    bad_inviter[n - 32..].copy_from_slice(&identity_point);
    assert_eq!(
        Invite::decode(&bad_inviter).unwrap_err(),
        InviteError::BadInviter
    );
}

#[test]
fn debug_hides_the_secret_and_name() {
    let inv = invite();
    let text = format!("{inv:?}");
    assert!(!text.contains("Book club"), "{text}");
    assert!(!text.contains("5e5e"), "{text}");
    assert!(!text.contains("94, 94"), "{text}");
}

proptest! {
    #[test]
    fn text_parser_never_panics(s in "\\PC{0,600}") {
        let _ = Invite::from_text(&s);
        let _ = Invite::from_text(&format!("cwtch-invite:{s}"));
    }

    #[test]
    fn binary_parser_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = Invite::decode(&bytes);
    }

    #[test]
    fn names_round_trip(name in "\\PC{0,16}", secret in any::<u8>()) {
        prop_assume!(name.len() <= MAX_NAME_LEN);
        let inv = Invite::new(&group(secret, &[1]), &name, identity(2).public()).unwrap();
        let back = Invite::from_text(&text_of(&inv)).unwrap();
        prop_assert_eq!(back.name(), name.as_str());
    }
}
