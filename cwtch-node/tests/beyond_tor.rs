//! Recovery from a member and moving servers, over a private Tor network on
//! loopback (one network, both scenarios at once). Fails (never skips)
//! when tor is not installed.

mod beyond;
mod support;

use std::time::{Duration, Instant};

use cwtch_tests::testnet::TestNetwork;
use cwtch_transport_socks::AnyTransport;

struct Tor<'a>(&'a TestNetwork);

impl beyond::Net for Tor<'_> {
    fn flags(&self, i: usize) -> Vec<String> {
        let c = &self.0.clients()[i % self.0.clients().len()];
        vec![
            "--tor-socks".into(),
            c.socks_addr.to_string(),
            "--tor-control".into(),
            c.control_addr.to_string(),
        ]
    }
    fn server_transport(&self, i: usize) -> AnyTransport {
        AnyTransport::Tor(self.0.clients()[i % self.0.clients().len()].transport())
    }
    fn patience(&self) -> Duration {
        Duration::from_secs(240)
    }
}

#[test]
fn recovery_and_moving_over_tor() {
    let net = TestNetwork::start(4).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    let tor = Tor(&net);
    std::thread::scope(|s| {
        let recovery = s.spawn(|| {
            let start = Instant::now();
            let dir = tmp.path().join("recovery");
            beyond::recovery_from_a_member(&tor, &dir);
            println!("recovery from a member over Tor: {:?}", start.elapsed());
        });
        let moving = s.spawn(|| {
            let start = Instant::now();
            let dir = tmp.path().join("moving");
            beyond::move_while_a_member_is_offline(&tor, &dir);
            println!(
                "moving while a member is offline over Tor: {:?}",
                start.elapsed()
            );
        });
        let r = recovery.join();
        let m = moving.join();
        if let Err(e) = r {
            std::panic::resume_unwind(e);
        }
        if let Err(e) = m {
            std::panic::resume_unwind(e);
        }
    });
}

/// The gaps of issue 9 closed later: joining a group on a server already
/// read, server adverts inside a group, a move told by a contact. One
/// network, the three scenarios at once.
#[test]
fn joining_adverts_in_groups_and_moves_told_over_tor() {
    let net = TestNetwork::start(5).expect("private Tor network (is tor installed?)");
    println!("private Tor network up in {:?}", net.startup_time());
    let tmp = tempfile::tempdir().unwrap();
    let tor = Tor(&net);
    std::thread::scope(|s| {
        let runs = [
            s.spawn(|| {
                let start = Instant::now();
                beyond::join_a_group_on_a_server_in_use(&tor, &tmp.path().join("join"));
                println!("joining on a server in use over Tor: {:?}", start.elapsed());
            }),
            s.spawn(|| {
                let start = Instant::now();
                beyond::a_server_advert_shared_inside_a_group(&tor, &tmp.path().join("adverts"));
                println!(
                    "a server advert inside a group over Tor: {:?}",
                    start.elapsed()
                );
            }),
            s.spawn(|| {
                let start = Instant::now();
                beyond::a_move_told_by_a_contact(&tor, &tmp.path().join("told"));
                println!("a move told by a contact over Tor: {:?}", start.elapsed());
            }),
        ];
        let results: Vec<_> = runs.into_iter().map(|r| r.join()).collect();
        for r in results {
            if let Err(e) = r {
                std::panic::resume_unwind(e);
            }
        }
    });
}
