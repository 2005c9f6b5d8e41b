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
