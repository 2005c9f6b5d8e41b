//! The command line as people type into it: completions, and what happens
//! when a command is run where it cannot succeed.

mod support;

use std::process::{Command, Stdio};

use support::bin;

/// Each shell gets a script that names the program and its commands.
#[test]
fn completions_for_every_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(bin())
            .args(["completions", shell])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{shell}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(script.contains("cwtch-node"), "{shell}");
        assert!(script.contains("chat"), "{shell}: the commands are listed");
    }
}

/// `completions bash | head -1`: the reader goes away early. No panic, no
/// debug form, success.
#[test]
fn completions_into_a_closed_pipe_end_quietly() {
    let mut child = Command::new(bin())
        .args(["completions", "bash"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close our end before the program writes.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("panicked") && !err.contains("Os {"), "{err}");
}

/// Without a profile, `address` says so instead of asking for a password
/// it cannot use.
#[test]
fn no_profile_is_said_before_a_password_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("nobody");
    for args in [&["address"][..], &["identifier"][..]] {
        let out = Command::new(bin())
            .arg("--home")
            .arg(&home)
            .args(args)
            .env_remove("CWTCH_PASSWORD")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: bad input: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("no profile"), "{args:?}: {err}");
        assert!(!err.to_lowercase().contains("password"), "{args:?}: {err}");
    }
}

/// An empty text given as an argument is refused as bad input, as one read
/// from standard input is: nothing is sent.
#[test]
fn an_empty_text_is_refused_before_anything_is_sent() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(bin())
        .arg("--home")
        .arg(tmp.path())
        .args(["send", "bob", ""])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("empty"));
}
