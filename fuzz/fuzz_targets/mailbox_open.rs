//! Opening a request never panics: arbitrary blobs, and arbitrary
//! plaintexts sealed to the recipient under the mailbox key (through the
//! `fuzzing` hook) so the parser and the signature check are reached.
#![no_main]

use cwtch_proto::group::SEALED_BLOB_LEN;
use cwtch_proto::mailbox::request::{
    MAX_NAME_LEN, MAX_TEXT_LEN, PLAINTEXT_LEN, seal_raw_for_fuzzing,
};
use cwtch_proto::mailbox::{Mailbox, MailboxKey};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bob = cwtch_fuzz::identity(2);
    let mailbox = Mailbox {
        server: cwtch_fuzz::identity(0x81).address(),
        key: MailboxKey::from_bytes(&[0x42; 32]),
    };
    let keys = mailbox.key.derive_keys();

    // Raw bytes as a blob: almost always not for us, never a panic.
    let mut raw = data.to_vec();
    let _ = keys.open_request(&bob, &mailbox.server, &mut raw);

    // Raw bytes as a plaintext inside a valid envelope.
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    let n = data.len().min(PLAINTEXT_LEN);
    plaintext[..n].copy_from_slice(&data[..n]);
    let mut blob = seal_raw_for_fuzzing(&bob.public(), &mailbox, &plaintext, &[3; 24], [9; 32]);
    assert_eq!(blob.len(), SEALED_BLOB_LEN);
    assert!(keys.detect(&blob));
    if let Ok(req) = keys.open_request(&bob, &mailbox.server, &mut blob) {
        assert!(req.name.len() <= MAX_NAME_LEN);
        assert!(req.text.len() <= MAX_TEXT_LEN);
    }
});
