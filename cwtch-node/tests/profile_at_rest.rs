//! What lies on disk: a profile directory holds nothing readable without
//! the password, not even after a crash mid-write.

mod support;

use std::path::Path;
use std::time::Duration;

use support::{Daemon, cli, conversation, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

#[test]
fn profile_directory_holds_nothing_readable() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_home, b_home, devdir) = (
        tmp.path().join("alice"),
        tmp.path().join("bob"),
        tmp.path().join("dev"),
    );
    let alice = init(&a_home, "alice-the-secret-name");
    let bob = init(&b_home, "bob-the-secret-name");
    let mut a = Daemon::start(&a_home, false, &dev(&devdir));
    let mut b = Daemon::start(&b_home, false, &dev(&devdir));
    wait_ready(&a_home);
    wait_ready(&b_home);
    cli(
        &a_home,
        &[
            "contact",
            "add",
            &bob,
            "--message",
            "the eagle lands at midnight",
        ],
    )
    .unwrap();
    wait_for("delivery", Duration::from_secs(30), || {
        (conversation(&a_home, &bob).first()?.2 == "delivered").then_some(())
    });
    // Crash both so whatever is in the WAL stays there, then search every file.
    a.kill9();
    b.kill9();
    let needles: Vec<Vec<u8>> = vec![
        alice.as_bytes().to_vec(),
        bob.as_bytes().to_vec(),
        b"alice-the-secret-name".to_vec(),
        b"bob-the-secret-name".to_vec(),
        b"the eagle lands".to_vec(),
    ];
    for home in [&a_home, &b_home] {
        for entry in walk(home) {
            if entry.extension().is_some_and(|e| e == "sock") {
                continue;
            }
            let bytes = std::fs::read(&entry).unwrap();
            for needle in &needles {
                assert!(
                    !bytes.windows(needle.len()).any(|w| w == needle.as_slice()),
                    "{} contains {:?}",
                    entry.display(),
                    String::from_utf8_lossy(needle)
                );
            }
        }
    }
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else {
            out.push(path);
        }
    }
    out
}
