//! A small driver for profiling the handshake under callgrind, where
//! instruction counts are stable on a noisy machine:
//!
//! ```text
//! cargo build --release -p cwtch-proto --example handshake_profile
//! valgrind --tool=callgrind target/release/examples/handshake_profile cwtch 100
//! valgrind --tool=callgrind target/release/examples/handshake_profile snow 100
//! ```
//!
//! Runs N full IK handshakes (both sides, split included), ours or snow's
//! `Noise_IK_25519_ChaChaPoly_SHA256`, the same work as
//! `benches/handshake.rs`. Compare the instruction counts of two values of
//! N to remove the start-up cost.

use core::hint::black_box;

use chacha20::ChaCha20Rng;
use chacha20::rand_core::SeedableRng;
use cwtch_proto::Identity;
use cwtch_proto::handshake::{InitiatorHandshake, MSG1_LEN, MSG2_LEN, ResponderHandshake};

fn ours(n: u32) {
    let alice = Identity::from_seed(&[1; 32]);
    let bob = Identity::from_seed(&[2; 32]);
    let bob_pub = bob.public();
    let mut rng = ChaCha20Rng::from_seed([7; 32]);
    for _ in 0..n {
        let mut m1 = [0u8; MSG1_LEN];
        let mut m2 = [0u8; MSG2_LEN];
        let mut init = InitiatorHandshake::new(alice.clone(), bob_pub, &mut rng);
        init.write_message1(&mut m1).expect("msg1");
        let mut resp = ResponderHandshake::new(bob.clone(), &mut rng);
        resp.read_message1(&m1).expect("read msg1");
        let (_, resp_keys) = resp.write_message2(&mut m2).expect("msg2");
        let init_keys = init.read_message2(&m2).expect("read msg2");
        black_box((init_keys, resp_keys));
    }
}

fn snow(n: u32) {
    let params: snow::params::NoiseParams =
        "Noise_IK_25519_ChaChaPoly_SHA256".parse().expect("params");
    let builder = snow::Builder::new(params.clone());
    let alice = builder.generate_keypair().expect("keypair");
    let bob = builder.generate_keypair().expect("keypair");
    for _ in 0..n {
        let mut m1 = [0u8; 128];
        let mut m2 = [0u8; 128];
        let mut payload = [0u8; 64];
        let mut init = snow::Builder::new(params.clone())
            .local_private_key(&alice.private)
            .and_then(|b| b.remote_public_key(&bob.public))
            .and_then(|b| b.build_initiator())
            .expect("initiator");
        let n1 = init.write_message(&[], &mut m1).expect("msg1");
        let mut resp = snow::Builder::new(params.clone())
            .local_private_key(&bob.private)
            .and_then(|b| b.build_responder())
            .expect("responder");
        resp.read_message(&m1[..n1], &mut payload)
            .expect("read msg1");
        let n2 = resp.write_message(&[], &mut m2).expect("msg2");
        init.read_message(&m2[..n2], &mut payload)
            .expect("read msg2");
        black_box((
            init.into_transport_mode().expect("split"),
            resp.into_transport_mode().expect("split"),
        ));
    }
}

fn main() {
    let mut args = std::env::args().skip(1);
    let which = args.next().unwrap_or_else(|| "cwtch".into());
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    match which.as_str() {
        "snow" => snow(n),
        _ => ours(n),
    }
}
