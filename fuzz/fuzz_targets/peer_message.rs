//! Peer messages: arbitrary bytes decode to a valid message that encodes
//! back to the same bytes (one canonical form), or fail typed.
#![no_main]

use cwtch_proto::peer::PeerMessage;
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = PeerMessage::decode(data) {
        let mut buf = vec![0u8; MAX_ENCODED_LEN];
        let again = msg.encode(&mut buf).expect("a decoded message encodes");
        assert_eq!(again, data, "non-canonical encoding accepted");
    }
});
