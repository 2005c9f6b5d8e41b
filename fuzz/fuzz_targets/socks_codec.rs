//! The SOCKS5 client codec against any proxy: arbitrary bytes as tor's
//! answers, fed to `Handshake` in chunks never larger than it asks for,
//! and to each reply parser directly. Every outcome is a request of the
//! right form, `Connected`, or a typed error that maps to a `DialError`;
//! the codec never asks for bytes past the reply (nor past
//! `MAX_REPLY_LEN`), and a complete reply parses the same from any longer
//! input, while every shorter prefix asks for more.
#![no_main]

use cwtch_transport_socks::socks::DialError;
use cwtch_transport_socks::socks::codec::{
    Handshake, MAX_REPLY_LEN, MAX_REQUEST_LEN, Parse, SocksError, Step, parse_auth_reply,
    parse_connect_reply, parse_method_choice, truncated_failure,
};
use libfuzzer_sys::fuzz_target;

const USER: &[u8] = b"cwtch:fuzz";
const PASSWORD: &[u8] = b"cwtch";
const HOST: &[u8] = b"efjprum3peosirjsilqv6lvlns3476t3njpngaexsyhangeb3mjo7sad.onion";

fn check_error(e: SocksError) {
    assert!(!e.to_string().is_empty());
    let dial = DialError::from_socks(e);
    assert!(!dial.to_string().is_empty());
    if let SocksError::Failed(reply) = e {
        assert_ne!(reply.code(), 0);
        assert_eq!(dial.reply(), Some(reply));
    } else {
        assert!(!dial.is_retryable());
    }
}

/// A parse of `input` is consistent with the parses of its prefixes.
fn check_parse<T: PartialEq + core::fmt::Debug>(
    input: &[u8],
    max: usize,
    parse: impl Fn(&[u8]) -> Result<Parse<T>, SocksError>,
) {
    match parse(input) {
        Ok(Parse::NeedMore(n)) => assert!(n >= 1 && input.len() + n <= max),
        Ok(Parse::Done { value, len }) => {
            assert!(len <= input.len() && len <= max);
            assert_eq!(
                parse(&input[..len]),
                Ok(Parse::Done { value, len }),
                "the reply alone parses the same"
            );
            for cut in 0..len {
                match parse(&input[..cut]) {
                    Ok(Parse::NeedMore(n)) => assert!(cut + n <= len),
                    other => panic!("prefix {cut} of a {len}-byte reply: {other:?}"),
                }
            }
        }
        Err(e) => check_error(e),
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&control, proxy)) = data.split_first() else {
        return;
    };
    check_parse(proxy, 2, parse_method_choice);
    check_parse(proxy, 2, parse_auth_reply);
    check_parse(proxy, MAX_REPLY_LEN, parse_connect_reply);
    let _ = truncated_failure(proxy);

    // The whole exchange, `proxy` being everything tor says, received in
    // chunks of at most `chunk` bytes (and never more than asked).
    let chunk = usize::from(control % 32) + 1;
    let Ok(mut handshake) = Handshake::new(USER, PASSWORD, HOST, 9878) else {
        panic!("valid fields refused");
    };
    let mut out = [0u8; MAX_REQUEST_LEN];
    let mut input: Vec<u8> = Vec::new();
    let mut rest = proxy;
    let mut sent = 0;
    loop {
        match handshake.step(&input, &mut out) {
            Ok(Step::Send(n)) => {
                let request = &out[..n];
                match sent {
                    0 => assert_eq!(request, [5, 1, 2]),
                    1 => {
                        assert_eq!(n, 3 + USER.len() + PASSWORD.len());
                        assert_eq!(&request[..2], [1, USER.len() as u8]);
                    }
                    2 => {
                        assert_eq!(n, 7 + HOST.len());
                        assert_eq!(&request[..5], [5, 1, 0, 3, HOST.len() as u8]);
                        assert_eq!(&request[5..5 + HOST.len()], HOST);
                    }
                    _ => panic!("a fourth request"),
                }
                sent += 1;
                input.clear();
            }
            Ok(Step::Receive(more)) => {
                assert!(more >= 1 && input.len() + more <= MAX_REPLY_LEN);
                if rest.is_empty() {
                    if let Some(reply) = truncated_failure(&input) {
                        check_error(SocksError::Failed(reply));
                    }
                    return;
                }
                let take = more.min(chunk).min(rest.len());
                input.extend_from_slice(&rest[..take]);
                rest = &rest[take..];
            }
            Ok(Step::Connected { len, .. }) => {
                assert_eq!(sent, 3);
                assert_eq!(len, input.len(), "received exactly the reply");
                break;
            }
            Err(e) => {
                check_error(e);
                break;
            }
        }
    }
    assert_eq!(handshake.step(&[], &mut out), Err(SocksError::Finished));
});
