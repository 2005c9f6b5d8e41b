//! Server adverts inside a group (SPEC.md section 13.4), misuse: a member
//! ("dave", driven by hand from this test) invites carol's daemon to a
//! group on a real server S and posts advert messages there. A forged
//! advert, an expired one and a body that is not canonical are refused;
//! the valid advert of server T enters carol's directory with the source
//! "group, dave"; no advert message is shown in the conversation, and a
//! text posted after them is.

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use cwtch_proto::group::adverts::GROUP_ADVERTS_MAX_LEN;
use cwtch_proto::group::{Group, GroupAdverts, Invite, MessageKind, SEALED_BLOB_LEN, SenderChain};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::server::advert::{Requirements, Retention, ServerAdvert};
use cwtch_proto::{Identity, OnionAddress};
use support::{Daemon, cli, conversation, init, wait_for, wait_ready};
use wire::{RawLink, ServerUser, resolve, rng};

fn peer(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    msg.encode(&mut buf).unwrap().to_vec()
}

fn now_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn advert(id: &Identity, issued_at: u64) -> [u8; 148] {
    ServerAdvert {
        server: id.public(),
        issued_at,
        expires_at: issued_at + 86_400,
        requirements: Requirements::default(),
        retention: Retention::default(),
    }
    .sign(id)
    .unwrap()
}

fn listed(home: &std::path::Path) -> Vec<String> {
    cli(home, &["servers"])
        .ok()
        .and_then(|v| v.as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|s| s["address"].as_str().map(str::to_string))
        .collect()
}

#[test]
fn only_valid_adverts_from_a_group_enter_the_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("dev");
    let flags = vec!["--dev-tcp".to_string(), dev.display().to_string()];
    let limit = Duration::from_secs(60);
    let sh = tmp.path().join("server");
    let s_addr = cli(&sh, &["server", "init"]).unwrap()["address"]
        .as_str()
        .unwrap()
        .to_string();
    let _s = Daemon::start(&sh, true, &flags);
    let ch = tmp.path().join("carol");
    let carol = init(&ch, "carol");
    let _c = Daemon::start(&ch, false, &flags);
    wait_ready(&ch);
    let server_s = OnionAddress::parse(&s_addr).unwrap();

    // Dave, a contact, invites carol to a group on S.
    let dave = Identity::generate(&mut rng());
    cli(&ch, &["contact", "add", &dave.address().to_string()]).unwrap();
    let carol_at = wait_for("carol to listen", limit, || resolve(&dev, &carol));
    let carol_key = OnionAddress::parse(&carol).unwrap().public_identity();
    let mut link = RawLink::dial_as(carol_at, dave.clone(), carol_key).unwrap();
    assert!(link.establish(limit));
    let group = Group::generate(&mut rng(), [server_s].into_iter().collect());
    let mut invite = vec![0u8; cwtch_proto::group::invite::INVITE_MAX_LEN];
    let n = Invite::new(&group, "g", dave.public())
        .unwrap()
        .encode(&mut invite)
        .unwrap();
    link.send(&peer(&PeerMessage::GroupInvite {
        id: 1,
        invite: &invite[..n],
    }));
    wait_for("carol to join and use S", limit, || {
        let _ = link.recv(Duration::from_millis(50));
        let _ = cli(&ch, &["group", "accept", "g"]); // the user accepts the invite
        listed(&ch).contains(&s_addr).then_some(())
    });

    // What dave posts on S, in order.
    let now = now_secs();
    let forger = Identity::generate(&mut rng());
    let forged_server = Identity::generate(&mut rng());
    let mut forged = advert(&forged_server, now);
    forged[84..].copy_from_slice(&forger.sign(b"not the server's signature")[..]);
    let expired_server = Identity::generate(&mut rng());
    let expired = advert(&expired_server, now - 2 * 86_400);
    let server_t = Identity::generate(&mut rng());
    let valid = advert(&server_t, now);
    let body = |adverts: &[&[u8; 148]]| {
        let mut b = vec![1, adverts.len() as u8];
        for a in adverts {
            b.extend_from_slice(&a[..]);
        }
        b
    };
    let mut good = GroupAdverts::new();
    good.push(&valid).unwrap();
    let mut buf = [0u8; GROUP_ADVERTS_MAX_LEN];
    let good = good.encode(&mut buf).unwrap().to_vec();
    let mut not_canonical = good.clone();
    not_canonical.push(0);
    let ts = cwtch_proto::UnixMicros::from_secs(now);
    let posts: [(MessageKind, Vec<u8>); 5] = [
        (MessageKind::ADVERTS, body(&[&forged])),
        (MessageKind::ADVERTS, body(&[&expired])),
        (MessageKind::ADVERTS, not_canonical),
        (MessageKind::ADVERTS, good),
        (MessageKind::TEXT, b"after the adverts".to_vec()),
    ];
    let s_at = wait_for("S to listen", limit, || resolve(&dev, server_s.as_str()));
    let mut user = ServerUser::connect(s_at, &server_s, limit).expect("S answers");
    let mut chain = SenderChain::new();
    for (kind, body) in &posts {
        let mut blob = [0u8; SEALED_BLOB_LEN];
        chain
            .seal_next(
                group.keys(),
                &dave,
                &server_s,
                *kind,
                body,
                ts,
                &[],
                &mut rng(),
                &mut blob,
            )
            .unwrap();
        user.post(&blob, limit).expect("S stores it");
    }
    wait_for("carol to read the text after the adverts", limit, || {
        conversation(&ch, "g")
            .iter()
            .any(|(_, t, _)| t == "after the adverts")
            .then_some(())
    });
    let t_addr = server_t.address().to_string();
    let known = listed(&ch);
    assert!(known.contains(&t_addr), "{known:?}");
    assert!(!known.contains(&forged_server.address().to_string()));
    assert!(!known.contains(&expired_server.address().to_string()));
    assert_eq!(known.len(), 2, "S and T only: {known:?}");
    let t = cli(&ch, &["servers"]).unwrap();
    let t = t
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["address"] == t_addr.as_str())
        .unwrap()
        .clone();
    assert_eq!(t["source"]["group"]["member"], dave.address().to_string());
    let shown: Vec<String> = conversation(&ch, "g")
        .into_iter()
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(
        shown,
        ["after the adverts"],
        "advert messages are not shown"
    );
    let g = cli(&ch, &["group", "list"]).unwrap()[0].clone();
    assert_eq!(g["missing"], 0, "every advert message was tracked: {g}");
}
