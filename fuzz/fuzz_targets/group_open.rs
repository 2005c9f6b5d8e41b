//! Opening never panics: arbitrary blobs, and arbitrary plaintexts sealed
//! under the group's keys (through the `fuzzing` hook) so the parser and
//! the signature checks are reached. A plaintext that opens must re-seal to
//! a blob that opens to the same message.
#![no_main]

use cwtch_proto::group::message::PLAINTEXT_LEN;
use cwtch_proto::group::seal::seal_raw_for_fuzzing;
use cwtch_proto::group::SEALED_BLOB_LEN;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (group, server) = cwtch_fuzz::group(7);
    let keys = group.keys();

    // Raw bytes as a blob: almost always not for us, never a panic.
    let mut work = [0u8; SEALED_BLOB_LEN];
    let _ = keys.open(&server, data, &mut work);
    let _ = keys.detect(data);

    // Raw bytes as a plaintext inside a valid AEAD.
    let mut plaintext = [0u8; PLAINTEXT_LEN];
    let n = data.len().min(PLAINTEXT_LEN);
    plaintext[..n].copy_from_slice(&data[..n]);
    let blob = seal_raw_for_fuzzing(keys, &plaintext, &[3; 24]);
    assert!(keys.detect(&blob));
    if let Ok(msg) = keys.open(&server, &blob, &mut work) {
        assert!(msg.body.len() <= cwtch_proto::group::MAX_BODY_LEN);
        assert!(msg.seen.len() <= cwtch_proto::group::SEEN_MAX);
    }
});
