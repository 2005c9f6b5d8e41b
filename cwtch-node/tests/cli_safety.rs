//! The command line as people type into it: completions, and what happens
//! when a command is run where it cannot succeed.

mod support;

use std::process::{Command, Stdio};

use cwtch_tests::testnet::process_alive;
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

/// A fake `tor` in a directory of its own, for PATH: it writes its pid to
/// `pidfile` and sleeps, never opening a control port (a tor that takes
/// its time to connect).
fn slow_fake_tor(dir: &std::path::Path, pidfile: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let tor = dir.join("tor");
    std::fs::write(
        &tor,
        format!(
            "#!/bin/sh\necho $$ > {}\nexec sleep 600\n",
            pidfile.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&tor, std::fs::Permissions::from_mode(0o755)).unwrap();
    format!("{}:/usr/bin:/bin", dir.display())
}

/// A `run --tor launch` of a fresh profile whose tor (a fake on PATH) never
/// bootstraps, once that tor runs: the daemon, and the tor's pid.
fn a_daemon_connecting_to_tor(tmp: &std::path::Path) -> (support::Daemon, u32) {
    let home = tmp.join("alice");
    support::init(&home, "alice");
    let bin_dir = tmp.join("bin");
    std::fs::create_dir(&bin_dir).unwrap();
    let pidfile = tmp.join("tor.pid");
    let path = slow_fake_tor(&bin_dir, &pidfile);
    let daemon = support::Daemon::start_with_env(
        &home,
        false,
        &["--tor".into(), "launch".into()],
        &[("PATH", &path)],
    );
    let tor_pid = support::wait_for("the fake tor", std::time::Duration::from_secs(30), || {
        std::fs::read_to_string(&pidfile).ok()?.trim().parse().ok()
    });
    (daemon, tor_pid)
}

/// SIGTERM while `run` still connects to Tor (here a tor it launched that
/// never gets there) stops it at once, saying so, with exit 0; the tor it
/// launched stops with it.
#[test]
fn a_peer_stops_on_sigterm_while_connecting_to_tor() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let (mut daemon, tor_pid) = a_daemon_connecting_to_tor(tmp.path());
    assert!(process_alive(tor_pid));
    let status = daemon
        .terminate(Duration::from_secs(10))
        .expect("stopped promptly");
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(
        daemon.log_text().contains("SIGTERM: stopping"),
        "{}",
        daemon.log_text()
    );
    support::wait_for("the launched tor to stop", Duration::from_secs(5), || {
        (!process_alive(tor_pid)).then_some(())
    });
}

/// Tor flags that cannot work are refused before a password is asked for.
#[test]
fn tor_flags_are_checked_before_the_password_is_asked() {
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("alice");
    support::init(&home, "alice");
    let out = Command::new(bin())
        .arg("--home")
        .arg(&home)
        .args(["run", "--tor", "arti", "--dev-tcp"])
        .arg(tmp.path().join("dev"))
        .env_remove("CWTCH_PASSWORD")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("--dev-tcp"), "{err}");
    assert!(!err.contains("password"), "{err}");
}

/// While `run` connects to Tor (no control socket yet), `status` says the
/// daemon is starting (refused, 4) and where its Tor has got to, and `stop`
/// stops it with SIGTERM; the progress it recorded goes with it.
#[test]
fn a_starting_daemon_is_said_to_be_starting_and_stop_stops_it() {
    use std::time::Duration;
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("alice");
    let (mut daemon, _) = a_daemon_connecting_to_tor(tmp.path());
    let cmd = |args: &[&str]| {
        Command::new(bin())
            .arg("--home")
            .arg(&home)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let out = cmd(&["status"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains(&format!("the daemon (pid {}) is starting", daemon.pid())),
        "{err}"
    );
    // This tor never opens its control port: the last step is the launch.
    assert!(err.contains("(tor: launching tor from PATH in "), "{err}");
    let progress = home.join("starting");
    assert!(progress.exists());
    let out = cmd(&["stop"]);
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(said.contains("SIGTERM"), "{said}");
    let status = support::wait_for("the daemon to stop", Duration::from_secs(10), || {
        daemon.try_wait()
    });
    assert_eq!(status.code(), Some(0), "{}", daemon.log_text());
    assert!(!progress.exists(), "the progress outlived the daemon");
    let out = cmd(&["status"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
}
