//! `cwtch-node demo` end to end: the real binary, its whole narrated script,
//! its asserted final checks. Over real Tor (a private network on loopback;
//! fails, never skips, when tor is not installed) and over the development
//! transport.

mod support;

use std::process::{Command, Stdio};
use std::time::Instant;

fn demo(args: &[&str]) -> String {
    let started = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_cwtch-node"))
        .arg("demo")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run cwtch-node demo");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    assert!(
        out.status.success(),
        "cwtch-node demo {args:?} failed ({:?}): {stderr}",
        out.status
    );
    for expected in [
        "=== summary ===",
        "demo complete: all 6 checks passed",
        "[ok] all members hold the same group history",
        "[ok] carol caught up",
        "[ok] no acknowledged message lost",
        "[ok] every blob on the server has one size (2048 bytes)",
        "[ok] the server's files contain no group id, sender address or message text",
        "message latency p50",
        "every process stopped, temporary files removed",
    ] {
        assert!(
            stdout.contains(expected),
            "missing {expected:?} in the output"
        );
    }
    // Plain words only: no value's debug form (a connection state once
    // read "failed (Error(Truncated))").
    let debug = support::debug_forms(&stdout);
    assert!(debug.is_empty(), "debug forms in the output: {debug:?}");
    // How long it took is reported, not asserted: speed is for the
    // benchmarks (a loaded CI machine made a 60 s budget fail at 77 s). The
    // demo's own waits bound a hang.
    eprintln!("cwtch-node demo {args:?} took {:?}", started.elapsed());
    stdout
}

#[test]
fn demo_over_the_development_transport() {
    let out = demo(&["--dev-tcp"]);
    assert!(out.contains("NOT anonymous"));
}

#[test]
fn demo_over_a_private_tor_network() {
    let out = demo(&[]);
    assert!(out.contains("private Tor network"));
    assert!(out.contains("Tor network bootstrap"));
}

/// `demo --arti`: carol runs on the built-in Tor (arti in her cwtch-node),
/// alice, bob and the server on client tors; the same script and checks.
#[cfg(feature = "arti")]
#[test]
fn demo_arti_carol_on_the_built_in_tor() {
    let out = demo(&["--arti"]);
    assert!(out.contains("carol will use the built-in Tor"));
    // Her daemon said so itself (from its log), and reached the others:
    // the checks above passed with her in every exchange.
    assert!(
        out.contains("carol's tor: the built-in Tor (arti)"),
        "carol's daemon is not on the built-in Tor"
    );
}

#[test]
fn debug_forms_are_found_and_plain_words_are_not() {
    assert_eq!(
        support::debug_forms("alice → bob: authenticated → failed (Error(Truncated))"),
        vec!["Error(Truncated))".to_string()]
    );
    assert_eq!(
        support::debug_forms("refused: RateLimited { retry_after_ms: 3 }").len(),
        1
    );
    assert_eq!(support::debug_forms("last_error: Some(\"x\")").len(), 1);
    assert!(
        support::debug_forms(
            "failed (they refused the connection); server killed with SIGKILL (no clean \
             shutdown); DEVELOPMENT (no Tor) {\"a\": 1}"
        )
        .is_empty()
    );
}
