//! Model-based test: random sequences of puts, deletes and transactions
//! (some aborted) against the store and an in-memory map; after every step
//! and after reopening, the store holds exactly what the model holds.

use std::collections::BTreeMap;

use cwtch_node::profile_store::{ProfileStore, ProfileStoreError, Table};
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Put(Table, Vec<u8>, Vec<u8>),
    Delete(Table, Vec<u8>),
    /// Writes applied together; committed if the flag is true, else aborted.
    Tx(Vec<(Table, Vec<u8>, Option<Vec<u8>>)>, bool),
}

fn table() -> impl Strategy<Value = Table> {
    prop::sample::select(Table::ALL.to_vec())
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // A small key space, so that overwrites and deletes hit existing records.
    prop::collection::vec(0u8..4, 0..3)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(any::<u8>(), 0..3000),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (table(), key(), value()).prop_map(|(t, k, v)| Op::Put(t, k, v)),
        1 => (table(), key()).prop_map(|(t, k)| Op::Delete(t, k)),
        1 => (
            prop::collection::vec((table(), key(), prop::option::of(value())), 1..5),
            any::<bool>()
        )
            .prop_map(|(w, commit)| Op::Tx(w, commit)),
    ]
}

type Model = BTreeMap<(Table, Vec<u8>), Vec<u8>>;

fn assert_matches(store: &ProfileStore, model: &Model) {
    for table in Table::ALL {
        let got: Vec<(Vec<u8>, Vec<u8>)> = store
            .scan(table)
            .unwrap()
            .into_iter()
            .map(|(k, v)| (k, v.to_vec()))
            .collect();
        let want: Vec<(Vec<u8>, Vec<u8>)> = model
            .iter()
            .filter(|((t, _), _)| *t == table)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect();
        assert_eq!(got, want, "{table:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_map(ops in prop::collection::vec(op(), 1..25)) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("profile.db");
        let store = ProfileStore::create_insecure_for_tests(&path, b"pw").unwrap();
        let mut model = Model::new();
        for op in ops {
            match op {
                Op::Put(t, k, v) => {
                    store.put(t, &k, &v).unwrap();
                    model.insert((t, k), v);
                }
                Op::Delete(t, k) => {
                    let existed = store.delete(t, &k).unwrap();
                    prop_assert_eq!(existed, model.remove(&(t, k)).is_some());
                }
                Op::Tx(writes, commit) => {
                    let res = store.transaction(|tx| {
                        for (t, k, v) in &writes {
                            match v {
                                Some(v) => tx.put(*t, k, v)?,
                                None => {
                                    tx.delete(*t, k)?;
                                }
                            }
                        }
                        if commit { Ok(()) } else { Err(ProfileStoreError::Aborted("abort".into())) }
                    });
                    prop_assert_eq!(res.is_ok(), commit);
                    if commit {
                        for (t, k, v) in writes {
                            match v {
                                Some(v) => { model.insert((t, k), v); }
                                None => { model.remove(&(t, k)); }
                            }
                        }
                    }
                }
            }
            // Point reads after every step.
            for ((t, k), v) in &model {
                prop_assert_eq!(&store.get(*t, k).unwrap().unwrap()[..], &v[..]);
            }
        }
        assert_matches(&store, &model);
        drop(store);
        let store = ProfileStore::open(&path, b"pw").unwrap();
        prop_assert_eq!(store.integrity_check().unwrap(), model.len());
        assert_matches(&store, &model);
    }
}
