//! Kept blobs never panic: arbitrary bytes as a kept form, and as a blob
//! to keep. A kept form that seals into a blob is exactly what keeping
//! that blob gives back.
#![no_main]

use cwtch_proto::group::{KEPT_MAX_LEN, SEALED_BLOB_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (group, _) = cwtch_fuzz::group(7);
    let keys = group.keys();

    let mut kept = [0u8; KEPT_MAX_LEN];
    let _ = keys.keep(data, &mut kept);

    let mut blob = [0u8; SEALED_BLOB_LEN];
    if keys.unkeep(data, &mut blob).is_ok() {
        assert!(keys.detect(&blob));
        let n = keys.keep(&blob, &mut kept).expect("an unkept blob keeps");
        assert_eq!(&kept[..n], data);
    }
});
