//! Tor's control-port replies, fed in arbitrary chunks: the incremental
//! parser and every reply parser on top of it return values or typed
//! errors, never panic, and never hold more than their stated limits.
#![no_main]

use cwtch_transport_socks::control::auth::parse_protocol_info;
use cwtch_transport_socks::control::reply::ReplyParser;
use cwtch_transport_socks::control::status::{parse_bootstrap, parse_hs_desc, parse_stream_status};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut parser = ReplyParser::new();
    // Split the input at a point chosen by its first byte.
    let cut = data
        .first()
        .map_or(0, |b| usize::from(*b) % (data.len() + 1));
    let (a, b) = data.split_at(cut);
    for chunk in [a, b] {
        if parser.push(chunk).is_err() {
            return;
        }
        while let Ok(Some(reply)) = parser.next_reply() {
            let _ = parse_protocol_info(&reply);
            for line in &reply.lines {
                let _ = parse_bootstrap(&line.text);
                let _ = parse_hs_desc(&line.text);
                let _ = parse_stream_status(&line.text);
            }
        }
    }
});
