//! Server adverts shared inside a group (SPEC.md section 13.4): decoding
//! arbitrary bytes never panics and whatever decodes re-encodes to the very
//! same bytes (one canonical form) with every advert's signature verified;
//! a valid body (1 to 3 adverts signed with keys the input picks) with bytes
//! changed where the input says decodes only if it is still canonical and
//! every advert in it still verifies.
#![no_main]

use cwtch_proto::group::GroupAdverts;
use cwtch_proto::group::adverts::{GROUP_ADVERTS_MAX_LEN, MAX_GROUP_ADVERTS};
use cwtch_proto::server::advert::{Requirements, Retention, ServerAdvert};
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(list) = GroupAdverts::decode(bytes) {
        assert!(!list.is_empty() && list.len() <= MAX_GROUP_ADVERTS);
        let mut out = [0u8; GROUP_ADVERTS_MAX_LEN];
        assert_eq!(
            list.encode(&mut out).expect("a decoded list encodes"),
            bytes
        );
        let mut seen = Vec::new();
        for (raw, advert) in list.iter() {
            assert_eq!(ServerAdvert::decode(raw).as_ref(), Ok(advert));
            assert!(!seen.contains(&advert.server), "a server twice");
            seen.push(advert.server);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    let Some((&first, edits)) = data.split_first() else {
        return;
    };
    let mut list = GroupAdverts::new();
    for i in 0..=first % 3 {
        let id = cwtch_fuzz::identity(first.wrapping_add(i));
        let advert = ServerAdvert {
            server: id.public(),
            issued_at: 1_767_225_600,
            expires_at: 1_767_225_600 + 86_400,
            requirements: Requirements::default(),
            retention: Retention::default(),
        }
        .sign(&id)
        .expect("valid fields");
        list.push(&advert).expect("distinct servers, verified");
    }
    let mut out = [0u8; GROUP_ADVERTS_MAX_LEN];
    let mut body = list.encode(&mut out).expect("encodes").to_vec();
    assert_eq!(GroupAdverts::decode(&body).as_ref(), Ok(&list));
    for e in edits.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([e[0], e[1]])) % body.len();
        body[at] ^= e[2];
    }
    check(&body);
});
