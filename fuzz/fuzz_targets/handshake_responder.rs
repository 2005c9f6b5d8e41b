//! Arbitrary bytes as message 1 to a responder: a typed error or an
//! authenticated caller, never a panic; a rejected message leaves the
//! responder able to accept a genuine one.
#![no_main]

use chacha20::ChaCha20Rng;
use cwtch_proto::handshake::{InitiatorHandshake, MSG1_LEN, ResponderHandshake};
use libfuzzer_sys::fuzz_target;
use rand_core::SeedableRng;

fuzz_target!(|data: &[u8]| {
    let mut rng = ChaCha20Rng::from_seed([1; 32]);
    let bob = cwtch_fuzz::identity(2);
    let mut responder = ResponderHandshake::new(bob.clone(), &mut rng);
    if responder.read_message1(data).is_err() {
        // State untouched: a genuine message 1 still works.
        let mut alice = InitiatorHandshake::new(cwtch_fuzz::identity(1), bob.public(), &mut rng);
        let mut msg1 = [0u8; MSG1_LEN];
        alice.write_message1(&mut msg1).unwrap();
        assert!(responder.read_message1(&msg1).is_ok());
    }
});
