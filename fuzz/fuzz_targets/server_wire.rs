//! Arbitrary bytes as a server request and as a server reply: either a typed
//! error or a value that re-encodes to exactly the same bytes; never a
//! panic. The same bytes, cut into steps, then drive a client: replies,
//! posts to queue, time passing and proof-of-work steps.
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
    // A client driven by the input: each step is an opcode byte, a length
    // byte pair, then that many bytes: a server reply, a post to queue, time
    // passing, or a step of proof of work.
    let mut client = ServerClient::new_for_fuzzing(ClientConfig::default(), 0);
    let mut now = cwtch_proto::Instant::from_secs(1);
    let mut posts = 0u64;
    let mut rest = data;
    while let [op, a, b, tail @ ..] = rest {
        let len = (usize::from(*a) | usize::from(*b) << 8).min(tail.len());
        let (msg, tail) = tail.split_at(len);
        rest = tail;
        match op % 4 {
            0 => {
                let before = client.cursor();
                if client.handle_message(msg, now).is_err() {
                    assert_eq!(client.cursor(), before);
                }
            }
            1 => {
                let mut blob = [0u8; cwtch_proto::group::SEALED_BLOB_LEN];
                for (i, x) in msg.iter().enumerate().take(blob.len()) {
                    blob[i] = *x;
                }
                posts += 1;
                let room = client.queue_room();
                let queued = client.queue_post(cwtch_proto::server::PostId(posts), &blob);
                if room == 0 {
                    assert!(queued.is_err(), "the queue is bounded");
                }
            }
            2 => {
                let ms = msg
                    .iter()
                    .fold(0u64, |n, &x| n.wrapping_mul(256).wrapping_add(u64::from(x)));
                now = now + cwtch_proto::Duration::from_millis(ms % 100_000_000);
                client.handle_timeout(now);
                // A deadline never stays in the past once handled.
                if let Some(at) = client.poll_timeout() {
                    assert!(at > now);
                }
            }
            _ => {
                let _ = client.poll_work(now, 16);
            }
        }
        assert!(client.queue_room() <= cwtch_proto::server::client::MAX_QUEUED_POSTS);
        while let Some(_e) = client.poll_event() {}
        while let Ok(Some(_)) = client.poll_transmit(now, &mut out) {}
    }
});
