//! Peer messages: arbitrary bytes decode to a valid message that encodes
//! back to the same bytes (one canonical form), or fail typed. The same
//! bytes through a `PeerSession` at every standing: no panic, and only
//! what the standing allows is acted upon (SPEC.md section 4, "Rules").
#![no_main]

use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::peer::{Incoming, PeerMessage, PeerSession, PeerSessionError, Standing};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let decoded = PeerMessage::decode(data);
    if let Ok(msg) = &decoded {
        let mut buf = vec![0u8; MAX_ENCODED_LEN];
        let again = msg.encode(&mut buf).expect("a decoded message encodes");
        assert_eq!(again, data, "non-canonical encoding accepted");
    }
    for standing in [
        Standing::Accepted,
        Standing::Request,
        Standing::Blocked,
        Standing::Stranger {
            room_for_request: true,
        },
        Standing::Stranger {
            room_for_request: false,
        },
    ] {
        let mut session = PeerSession::new(standing);
        let result = session.handle_message(data);
        match (&result, &decoded) {
            (Err(PeerSessionError::Malformed(_)), Ok(_)) => {
                panic!("a valid message called malformed")
            }
            (Ok(_), Err(_)) => panic!("an invalid message acted upon"),
            _ => {}
        }
        if let Ok(m) = result {
            match session.standing() {
                Standing::Accepted => {}
                Standing::Request => assert!(
                    matches!(m, Incoming::Hello { .. } | Incoming::Text { .. }),
                    "a request may only chat"
                ),
                other => panic!("acted upon at {other:?}"),
            }
        }
    }
});
