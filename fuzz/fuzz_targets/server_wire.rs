//! Arbitrary bytes as a server request and as a server reply: either a typed
//! error or a value that re-encodes to exactly the same bytes; never a
//! panic. The same bytes, cut into messages, are then fed to a client.
#![no_main]

use cwtch_proto::server::wire::MAX_SERVER_MESSAGE_LEN;
use cwtch_proto::server::{ClientConfig, Reply, Request, ServerClient};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut out = [0u8; MAX_SERVER_MESSAGE_LEN];
    if let Ok(r) = Request::decode(data) {
        let n = r.encode(&mut out).expect("fits");
        assert_eq!(&out[..n], data);
    }
    if let Ok(r) = Reply::decode(data) {
        let n = r.encode(&mut out).expect("fits");
        assert_eq!(&out[..n], data);
    }
    // Messages: a length byte pair then that many bytes, repeatedly.
    let mut client = ServerClient::new_for_fuzzing(ClientConfig::default(), 0);
    let mut rest = data;
    while let [a, b, tail @ ..] = rest {
        let len = (usize::from(*a) | usize::from(*b) << 8).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        let before = client.cursor();
        if client.handle_reply(msg).is_err() {
            assert_eq!(client.cursor(), before);
        }
        while let Some(_e) = client.poll_event() {}
        while let Ok(Some(_)) = client.poll_transmit(&mut out) {}
    }
});
