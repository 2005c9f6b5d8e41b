//! A small driver for profiling the channel under callgrind:
//!
//! ```text
//! cargo build --profile bench -p cwtch-proto --example channel_profile
//! valgrind --tool=callgrind target/release/examples/channel_profile 60 8192
//! ```
//!
//! Sends N messages of LEN bytes over a channel pair (seal every frame,
//! open every frame), as `benches/channel.rs` does. Compare two values of
//! N to remove the start-up cost (one handshake).

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use cwtch_proto::Identity;
use cwtch_proto::channel::frame::FRAME_LEN;
use cwtch_proto::channel::{Channel, Received};
use cwtch_proto::handshake::{InitiatorHandshake, MSG1_LEN, MSG2_LEN, ResponderHandshake};
fn main() {
    let mut args = std::env::args().skip(1);
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(60);
    let len: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(8192);
    let alice = Identity::from_seed(&[1; 32]);
    let bob = Identity::from_seed(&[2; 32]);
    let mut rng = ChaCha20Rng::from_seed([3; 32]);
    let mut m1 = [0u8; MSG1_LEN];
    let mut m2 = [0u8; MSG2_LEN];
    let mut init = InitiatorHandshake::new(alice, bob.public(), &mut rng);
    init.write_message1(&mut m1).expect("channel");
    let mut resp = ResponderHandshake::new(bob, &mut rng);
    resp.read_message1(&m1).expect("channel");
    let (_, rk) = resp.write_message2(&mut m2).expect("channel");
    let ik = init.read_message2(&m2).expect("channel");
    let mut a = Channel::new(&ik, 1 << 20);
    let mut b = Channel::new(&rk, 1 << 20);
    let msg = vec![0x5au8; len];
    let mut frame = [0u8; FRAME_LEN];
    for _ in 0..n {
        a.queue_message(&msg).expect("channel");
        while a.seal_next_data(&mut frame).expect("channel") {
            if b.open(&mut frame).expect("channel") == Received::Message {
                std::hint::black_box(b.message());
            }
        }
    }
}
