//! Secrets never reach the logs: a server and two peers run with full
//! logging (`RUST_LOG=trace`) through a whole scenario (profile password,
//! contact request, chat, group create, invite, posts), and every byte they
//! and the one-shot commands wrote to their logs and stderr is searched for
//! the password, the message texts, the group secret (hex and as an
//! invite), and every key seed we can get hold of.

mod support;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cwtch_proto::group::{Group, GroupSecret, Invite, ServerList};
use support::{Daemon, PASSWORD, bin, cli, conversation, init, wait_for, wait_ready};

const TRACE: &[(&str, &str)] = &[("RUST_LOG", "trace")];

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Runs a one-shot command at full log level and returns its stderr.
fn stderr_of(home: &Path, args: &[&str]) -> String {
    let out = Command::new(bin())
        .arg("--home")
        .arg(home)
        .arg("-vv")
        .args(args)
        .env("CWTCH_PASSWORD", PASSWORD)
        .env("RUST_LOG", "trace")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn nothing_secret_in_logs_at_full_level() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (s_home, a_home, b_home) = (
        tmp.path().join("server"),
        tmp.path().join("alice"),
        tmp.path().join("bob"),
    );
    let server_id = cli(&s_home, &["server", "init"]).unwrap()["server"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Daemon::start_with_env(&s_home, true, &dev(&devdir), TRACE);
    let alice = init(&a_home, "alice");
    let bob = init(&b_home, "bob");
    let a = Daemon::start_with_env(&a_home, false, &dev(&devdir), TRACE);
    let b = Daemon::start_with_env(&b_home, false, &dev(&devdir), TRACE);
    wait_ready(&a_home);
    wait_ready(&b_home);

    let texts = [
        "first-contact-zebra-7781",
        "reply-quokka-9912",
        "group-post-narwhal-3344",
        "group-reply-axolotl-5566",
    ];
    let mut logs = String::new();
    logs += &stderr_of(&a_home, &["contact", "add", &bob, "--message", texts[0]]);
    wait_for("bob's request", Duration::from_secs(30), || {
        (!conversation(&b_home, &alice).is_empty()).then_some(())
    });
    logs += &stderr_of(&b_home, &["contact", "accept", &alice]);
    logs += &stderr_of(&b_home, &["send", &alice, texts[1]]);
    wait_for("the reply", Duration::from_secs(30), || {
        conversation(&a_home, &bob)
            .iter()
            .any(|m| m.1 == texts[1])
            .then_some(())
    });
    logs += &stderr_of(
        &a_home,
        &["group", "create", "secretive", "--server", &server_id],
    );
    logs += &stderr_of(&a_home, &["group", "invite", "secretive", &bob]);
    support::accept_invite(&b_home, "secretive", Duration::from_secs(60));
    wait_for("bob to join", Duration::from_secs(60), || {
        let g = cli(&b_home, &["group", "list"]).ok()?;
        (g.as_array()?.len() == 1).then_some(())
    });
    logs += &stderr_of(&a_home, &["group", "send", "secretive", texts[2]]);
    logs += &stderr_of(&b_home, &["group", "send", "secretive", texts[3]]);
    for home in [&a_home, &b_home] {
        wait_for("both posts everywhere", Duration::from_secs(60), || {
            let m = cli(home, &["messages", "secretive"]).ok()?;
            (m.as_array()?.len() == 2).then_some(())
        });
    }
    logs += &stderr_of(&a_home, &["messages", "secretive"]);
    logs += &stderr_of(&b_home, &["messages", &alice]);
    logs += &stderr_of(&a_home, &["status"]);
    logs += &stderr_of(&s_home, &["server", "info"]);
    // Stop the daemons (SIGKILL: nothing gets to clean up its logs).
    for mut d in [a, b, server] {
        d.kill9();
        logs += &d.log_text();
    }
    assert!(
        logs.contains("TRACE") || logs.contains("DEBUG"),
        "the logs are at full level"
    );
    assert!(
        logs.len() > 10_000,
        "the scenario logged ({} bytes)",
        logs.len()
    );

    // Everything secret we can obtain.
    let mut secrets: Vec<(String, String)> = vec![("password".into(), PASSWORD.into())];
    for t in texts {
        secrets.push(("message text".into(), t.into()));
    }
    for home in [&a_home, &b_home] {
        let (store, identity, _) =
            cwtch_node::store::open_profile(home, PASSWORD.as_bytes()).unwrap();
        let seed = identity.seed();
        secrets.push(("identity seed (hex)".into(), hex(seed.as_ref())));
        secrets.push((
            "identity seed (HEX)".into(),
            hex(seed.as_ref()).to_uppercase(),
        ));
        for g in cwtch_node::store::groups_of(&store).unwrap() {
            secrets.push(("group secret (hex)".into(), g.secret.to_string()));
            let mut s = [0u8; 32];
            for (i, b) in s.iter_mut().enumerate() {
                *b = u8::from_str_radix(&g.secret[2 * i..2 * i + 2], 16).unwrap();
            }
            let mut servers = ServerList::new();
            for srv in &g.servers {
                let addr = srv.strip_prefix("cwtch-server:").unwrap_or(srv);
                let addr = addr.split('?').next().unwrap();
                servers
                    .push(cwtch_proto::OnionAddress::parse(addr).unwrap())
                    .unwrap();
            }
            let group = Group::from_secret(GroupSecret::from_bytes(&s), servers);
            let invite = Invite::new(&group, &g.name, identity.public()).unwrap();
            let mut buf = [0u8; 512];
            let text = invite.to_text(&mut buf).unwrap().to_string();
            // The invite's base32 body without the prefix and checksum.
            secrets.push(("invite text".into(), text[13..60].to_string()));
        }
    }
    let server_seed = std::fs::read(s_home.join("server.key")).unwrap();
    secrets.push(("server key seed (hex)".into(), hex(&server_seed)));
    assert!(secrets.len() >= 10);
    eprintln!(
        "searched {} bytes of logs for {} secrets",
        logs.len(),
        secrets.len()
    );
    for (what, secret) in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "the logs contain the {what}"
        );
    }
    // And the password as the bytes of its words joined differently.
    assert!(!logs.contains(&PASSWORD.replace(' ', "")));
}
