//! Property tests of the pure parsers: arbitrary input never panics, and
//! a well-formed reply stream parses the same however it is split. The
//! same for the SOCKS5 client codec: any bytes from the "proxy", cut
//! anywhere, end in a typed outcome, and the codec never asks for a byte
//! past the reply.

use cwtch_transport_socks::control::auth::{parse_auth_challenge, parse_protocol_info};
use cwtch_transport_socks::control::conf::{parse_socks_port, socks_extended_errors};
use cwtch_transport_socks::control::reply::{ReplyParser, split_args};
use cwtch_transport_socks::control::status::{
    parse_bootstrap, parse_hs_desc, parse_listeners, parse_port_file, parse_service_id,
    parse_stream_status,
};
use cwtch_transport_socks::socks::codec::{
    self, Handshake, MAX_REPLY_LEN, MAX_REQUEST_LEN, Parse, SocksError, Step,
};
use cwtch_transport_socks::socks::{DialError, SocksReply};
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
        let _ = parse_socks_port(&text);
        let conf = [text.clone()];
        let ours = std::net::SocketAddr::from(([127, 0, 0, 1], 9050));
        let _ = socks_extended_errors(&conf, &[ours], ours);
    }

    #[test]
    fn every_socks_code_maps(code in 1u8..=255) {
        let reply = SocksReply::from_code(code);
        prop_assert!(reply.is_some());
        let err = DialError::from_reply(reply.unwrap_or(SocksReply::Other(code)));
        // Every mapped error has a message for the user.
        prop_assert!(!err.to_string().is_empty());
    }

    #[test]
    fn socks_parsers_never_panic(input in prop::collection::vec(any::<u8>(), 0..600)) {
        for parsed in [codec::parse_method_choice(&input), codec::parse_auth_reply(&input)] {
            match parsed {
                Ok(Parse::Done { len, .. }) => prop_assert!(len == 2 && len <= input.len()),
                Ok(Parse::NeedMore(n)) => prop_assert!(n >= 1 && input.len() + n <= 2),
                Err(e) => prop_assert!(!e.to_string().is_empty()),
            }
        }
        match codec::parse_connect_reply(&input) {
            Ok(Parse::Done { len, .. }) => prop_assert!(len <= input.len() && len <= MAX_REPLY_LEN),
            Ok(Parse::NeedMore(n)) => prop_assert!(n >= 1 && input.len() + n <= MAX_REPLY_LEN),
            Err(e) => prop_assert!(!DialError::from_socks(e).to_string().is_empty()),
        }
        let _ = codec::truncated_failure(&input);
    }

    /// A handshake fed arbitrary proxy bytes in arbitrary chunks (no more
    /// than asked each time) ends connected, failed with a typed error, or
    /// waiting for more; it never asks past the reply limit.
    #[test]
    fn handshake_on_arbitrary_bytes(proxy in prop::collection::vec(any::<u8>(), 0..400),
                                    cuts in prop::collection::vec(1usize..40, 1..8)) {
        let mut hs = Handshake::new(b"cwtch:key", b"cwtch", b"x.onion", 9878).unwrap();
        let mut out = [0u8; MAX_REQUEST_LEN];
        let mut rest = proxy.as_slice();
        let mut input = Vec::new();
        let mut cuts = cuts.iter().cycle();
        loop {
            match hs.step(&input, &mut out) {
                Ok(Step::Send(n)) => {
                    prop_assert!(n <= MAX_REQUEST_LEN);
                    input.clear();
                }
                Ok(Step::Receive(more)) => {
                    prop_assert!(more >= 1 && input.len() + more <= MAX_REPLY_LEN);
                    if rest.is_empty() {
                        let _ = codec::truncated_failure(&input);
                        break;
                    }
                    let take = more.min(*cuts.next().unwrap_or(&1)).min(rest.len());
                    let (chunk, tail) = rest.split_at(take);
                    input.extend_from_slice(chunk);
                    rest = tail;
                }
                Ok(Step::Connected { len, .. }) => {
                    prop_assert_eq!(len, input.len());
                    prop_assert_eq!(hs.step(&[], &mut out), Err(SocksError::Finished));
                    break;
                }
                Err(e) => {
                    prop_assert_eq!(hs.step(&[], &mut out), Err(SocksError::Finished));
                    let _ = DialError::from_socks(e).is_retryable();
                    break;
                }
            }
        }
    }

    /// Every well-formed CONNECT reply parses, whatever its code, address
    /// type and length, and every cut of it asks for more.
    #[test]
    fn well_formed_replies_parse(code in any::<u8>(), atyp in prop_oneof![Just(1u8), Just(3), Just(4)],
                                 name in prop::collection::vec(any::<u8>(), 0..=255),
                                 port in any::<u16>()) {
        let mut reply = vec![5, code, 0, atyp];
        match atyp {
            1 => reply.extend_from_slice(&[10, 0, 0, 1]),
            4 => reply.extend_from_slice(&[0xFE; 16]),
            _ => {
                reply.push(name.len() as u8);
                reply.extend_from_slice(&name);
            }
        }
        reply.extend_from_slice(&port.to_be_bytes());
        match codec::parse_connect_reply(&reply) {
            Ok(Parse::Done { len, .. }) => prop_assert!(code == 0 && len == reply.len()),
            Err(SocksError::Failed(r)) => prop_assert_eq!(r.code(), code),
            other => prop_assert!(false, "{:?}", other),
        }
        for cut in 0..reply.len() {
            match codec::parse_connect_reply(&reply[..cut]) {
                Ok(Parse::NeedMore(n)) => prop_assert!(cut + n <= reply.len()),
                other => prop_assert!(false, "cut {}: {:?}", cut, other),
            }
        }
    }
}
