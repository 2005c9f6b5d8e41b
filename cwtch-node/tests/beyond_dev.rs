//! Recovery from a member and moving servers, over the development
//! transport (fast; the same scenarios run over real Tor in
//! `beyond_tor.rs`).

mod beyond;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use cwtch_transport_socks::{AnyTransport, DevTransport};

struct Dev(PathBuf);

impl beyond::Net for Dev {
    fn flags(&self, _i: usize) -> Vec<String> {
        vec!["--dev-tcp".into(), self.0.display().to_string()]
    }
    fn server_transport(&self, _i: usize) -> AnyTransport {
        let (dev, _warning) = DevTransport::new(&self.0);
        AnyTransport::Dev(dev)
    }
    fn patience(&self) -> Duration {
        Duration::from_secs(60)
    }
}

fn net(dir: &Path) -> Dev {
    Dev(dir.join("dev"))
}

#[test]
fn a_withheld_message_is_recovered_from_a_member() {
    let tmp = tempfile::tempdir().unwrap();
    beyond::recovery_from_a_member(&net(tmp.path()), tmp.path());
}

#[test]
fn a_group_moves_while_a_member_is_offline() {
    let tmp = tempfile::tempdir().unwrap();
    beyond::move_while_a_member_is_offline(&net(tmp.path()), tmp.path());
}

/// Status says what is true and why: a message to an offline contact is
/// pending with the reason, counted per contact, and delivered (with no
/// note) once the contact comes online.
#[test]
fn status_says_why_a_message_waits() {
    use support::{Daemon, cli, init, wait_for, wait_ready};
    let tmp = tempfile::tempdir().unwrap();
    let dev = net(tmp.path());
    let flags = beyond::Net::flags(&dev, 0);
    let (ah, bh) = (tmp.path().join("alice"), tmp.path().join("bob"));
    let (_alice, bob) = (init(&ah, "alice"), init(&bh, "bob"));
    let _a = Daemon::start(&ah, false, &flags);
    wait_ready(&ah);
    cli(&ah, &["contact", "add", &bob]).unwrap();
    cli(&ah, &["send", &bob, "are you there?"]).unwrap();
    let note = wait_for(
        "a failed attempt to reach bob",
        Duration::from_secs(30),
        || {
            let m = cli(&ah, &["messages", &bob]).ok()?[0].clone();
            let note = m["note"].as_str()?.to_string();
            (m["status"] == "pending" && note.contains("not reachable (")).then_some(note)
        },
    );
    assert!(note.starts_with("waiting: "), "{note}");
    let status = cli(&ah, &["status"]).unwrap();
    assert_eq!(status["contacts"][0]["pending"], 1);
    assert!(status["contacts"][0]["connection"]["last_error"].is_string());
    let _b = Daemon::start(&bh, false, &flags);
    wait_ready(&bh);
    wait_for(
        "delivery once bob is online",
        Duration::from_secs(60),
        || {
            let m = cli(&ah, &["messages", &bob]).ok()?[0].clone();
            (m["status"] == "delivered" && m.get("note").is_none()).then_some(())
        },
    );
    assert_eq!(cli(&ah, &["status"]).unwrap()["contacts"][0]["pending"], 0);
}

#[test]
fn a_member_joining_on_a_server_in_use_reads_the_earlier_posts() {
    let tmp = tempfile::tempdir().unwrap();
    beyond::join_a_group_on_a_server_in_use(&net(tmp.path()), tmp.path());
}

#[test]
fn a_member_learns_a_server_inside_a_group() {
    let tmp = tempfile::tempdir().unwrap();
    beyond::a_server_advert_shared_inside_a_group(&net(tmp.path()), tmp.path());
}

#[test]
fn a_member_learns_a_move_from_a_contact_when_the_old_server_is_gone() {
    let tmp = tempfile::tempdir().unwrap();
    beyond::a_move_told_by_a_contact(&net(tmp.path()), tmp.path());
}
