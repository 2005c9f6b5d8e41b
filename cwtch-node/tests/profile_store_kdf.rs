//! The real Argon2id parameters: a profile created with `create` uses them,
//! reopens with the right password, refuses a wrong one, and the time one
//! derivation takes is printed (run with `--nocapture`; `--release` for the
//! figure users will see).

use std::time::Instant;

use cwtch_node::profile_store::{KdfParams, ProfileStore, ProfileStoreError, Table};

#[test]
fn recommended_parameters_round_trip_and_timing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.db");

    let t = Instant::now();
    let store = ProfileStore::create(&path, b"correct horse battery staple").unwrap();
    let create = t.elapsed();
    assert_eq!(store.kdf_params().unwrap(), KdfParams::RECOMMENDED);
    assert_eq!(
        KdfParams::RECOMMENDED,
        KdfParams {
            m_cost_kib: 65536,
            t_cost: 3,
            p_cost: 1
        }
    );
    store.put(Table::Meta, b"display_name", b"Alice").unwrap();
    drop(store);

    let t = Instant::now();
    let store = ProfileStore::open(&path, b"correct horse battery staple").unwrap();
    let open = t.elapsed();
    assert_eq!(
        &store.get(Table::Meta, b"display_name").unwrap().unwrap()[..],
        b"Alice"
    );
    drop(store);

    let t = Instant::now();
    let err = ProfileStore::open(&path, b"correct horse battery stapler").unwrap_err();
    let wrong = t.elapsed();
    assert!(matches!(err, ProfileStoreError::WrongPassword), "{err:?}");

    println!(
        "Argon2id m=64MiB t=3 p=1 ({} build): create {create:?}, open {open:?}, wrong password {wrong:?}",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
}
