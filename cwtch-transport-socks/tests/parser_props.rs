//! Property tests of the pure parsers: arbitrary input never panics, and
//! a well-formed reply stream parses the same however it is split.

use cwtch_transport_socks::control::auth::{parse_auth_challenge, parse_protocol_info};
use cwtch_transport_socks::control::reply::{ReplyParser, split_args};
use cwtch_transport_socks::control::status::{
    parse_bootstrap, parse_hs_desc, parse_listeners, parse_port_file, parse_service_id,
    parse_stream_status,
};
use cwtch_transport_socks::socks::{DialError, SocksReply, reply_from_message};
use proptest::prelude::*;

/// Feeds `input` in chunks of the given sizes; returns the replies and
/// whether an error stopped the parser.
fn parse_chunked(
    input: &[u8],
    cuts: &[usize],
) -> (Vec<cwtch_transport_socks::control::reply::Reply>, bool) {
    let mut p = ReplyParser::new();
    let mut out = Vec::new();
    let mut rest = input;
    let mut cuts = cuts.iter().cycle();
    while !rest.is_empty() {
        let n = (*cuts.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(n);
        rest = tail;
        if p.push(chunk).is_err() {
            return (out, true);
        }
        loop {
            match p.next_reply() {
                Ok(Some(r)) => out.push(r),
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
    }
    (out, false)
}

fn reply_line() -> impl Strategy<Value = String> {
    let code = prop_oneof![Just(250u16), Just(251), Just(451), Just(552), Just(650)];
    let text = "[ -~]{0,40}";
    (
        code,
        text,
        prop::bool::ANY,
        prop::collection::vec("[ -~]{0,20}", 0..4),
    )
        .prop_map(|(code, text, data, block)| {
            let mut s = String::new();
            if data {
                s.push_str(&format!("{code}+{text}\r\n"));
                for l in block {
                    // Dot-stuff as tor does.
                    if l.starts_with('.') {
                        s.push('.');
                    }
                    s.push_str(&l);
                    s.push_str("\r\n");
                }
                s.push_str(".\r\n");
            }
            s.push_str(&format!("{code} {text}\r\n"));
            s
        })
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(input in prop::collection::vec(any::<u8>(), 0..2048),
                                   cuts in prop::collection::vec(1usize..64, 1..8)) {
        let (replies, _) = parse_chunked(&input, &cuts);
        for r in &replies {
            let _ = parse_protocol_info(r);
            let _ = parse_auth_challenge(r);
            let _ = parse_service_id(r);
            let _ = r.value_of("x");
            prop_assert!(!r.lines.is_empty());
        }
    }

    #[test]
    fn well_formed_stream_splits_anywhere(lines in prop::collection::vec(reply_line(), 1..12),
                                          cuts in prop::collection::vec(1usize..32, 1..8)) {
        let input = lines.concat();
        let (whole, err1) = parse_chunked(input.as_bytes(), &[input.len().max(1)]);
        let (split, err2) = parse_chunked(input.as_bytes(), &cuts);
        prop_assert!(!err1 && !err2);
        prop_assert_eq!(whole.len(), lines.len());
        prop_assert_eq!(whole, split);
    }

    #[test]
    fn text_parsers_never_panic(text in "\\PC{0,200}") {
        let _ = split_args(&text);
        let _ = parse_bootstrap(&text);
        let _ = parse_hs_desc(&text);
        let _ = parse_listeners(&text);
        let _ = parse_port_file(&text);
        let _ = parse_stream_status(&text);
        let _ = reply_from_message(&text);
    }

    #[test]
    fn every_socks_code_maps(code in 1u8..=255) {
        let reply = SocksReply::from_code(code);
        prop_assert!(reply.is_some());
        let err = DialError::from_reply(reply.unwrap_or(SocksReply::Other(code)));
        // Every mapped error has a message for the user.
        prop_assert!(!err.to_string().is_empty());
    }
}
