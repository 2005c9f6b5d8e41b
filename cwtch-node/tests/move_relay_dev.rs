//! Moves told over peer links (SPEC.md section 15), misuse: a hand-driven
//! contact ("dave", speaking the wire from this test) invites carol's
//! daemon to a group, then sends `MoveBlob`s. A stranger's notice, a text
//! passed off as a notice, a notice sealed for a server the group does not
//! read and a tampered notice are all ignored; the valid notice is
//! followed, and the text it skipped stays reported missing (it was not
//! taken in through this path).

mod support;
#[path = "support/wire.rs"]
mod wire;

use std::time::Duration;

use cwtch_proto::group::control::MOVE_NOTICE_MAX_LEN;
use cwtch_proto::group::{Group, Invite, MessageKind, MoveNotice, SEALED_BLOB_LEN, SenderChain};
use cwtch_proto::peer::PeerMessage;
use cwtch_proto::peer::message::MAX_ENCODED_LEN;
use cwtch_proto::{Identity, OnionAddress};
use support::{Daemon, cli, conversation, init, wait_for, wait_ready};
use wire::{RawLink, resolve, rng};

fn peer(msg: &PeerMessage<'_>) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_ENCODED_LEN];
    msg.encode(&mut buf).unwrap().to_vec()
}

fn short(s: &str) -> &str {
    s.strip_suffix(".onion").unwrap_or(s)
}

fn group_servers(home: &std::path::Path) -> Option<Vec<String>> {
    let g = cli(home, &["group", "list"])
        .ok()?
        .as_array()?
        .first()?
        .clone();
    Some(
        g["servers"]
            .as_array()?
            .iter()
            .map(|s| short(s["server"].as_str().unwrap_or_default()).to_string())
            .collect(),
    )
}

#[test]
fn only_a_valid_move_notice_from_a_contact_is_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let dev = tmp.path().join("dev");
    let flags = vec!["--dev-tcp".to_string(), dev.display().to_string()];
    let ch = tmp.path().join("carol");
    let carol = init(&ch, "carol");
    let _c = Daemon::start(&ch, false, &flags);
    wait_ready(&ch);
    let carol_addr = OnionAddress::parse(&carol).unwrap();
    let addr = wait_for("carol to listen", Duration::from_secs(30), || {
        resolve(&dev, &carol)
    });
    let limit = Duration::from_secs(60);

    // Servers that do not exist: carol's connections to them just fail.
    let server_a = Identity::generate(&mut rng()).address();
    let server_t = Identity::generate(&mut rng()).address();
    let server_x = Identity::generate(&mut rng()).address();
    let group = Group::generate(&mut rng(), [server_a].into_iter().collect());
    let dave = Identity::generate(&mut rng());
    let dave_addr = dave.address().to_string();
    cli(&ch, &["contact", "add", &dave_addr]).unwrap();

    let mut link = RawLink::dial_as(addr, dave.clone(), carol_addr.public_identity()).unwrap();
    assert!(link.establish(limit));
    link.send(&peer(&PeerMessage::Hello { name: "dave" }));
    let mut invite = vec![0u8; cwtch_proto::group::invite::INVITE_MAX_LEN];
    let n = Invite::new(&group, "g", dave.public())
        .unwrap()
        .encode(&mut invite)
        .unwrap();
    link.send(&peer(&PeerMessage::GroupInvite {
        id: 1,
        invite: &invite[..n],
    }));
    wait_for("carol to join dave's group", limit, || {
        let _ = link.recv(Duration::from_millis(50));
        let _ = cli(&ch, &["group", "accept", "g"]); // the user accepts the invite
        group_servers(&ch)
    });

    // Dave's messages: a text (seq 0), then a move to T (seq 1), sealed
    // for A (read by the group) and for X (not read).
    let ts = cwtch_proto::UnixMicros::from_secs(1_767_225_600);
    let mut chain = SenderChain::new();
    let mut text = [0u8; SEALED_BLOB_LEN];
    chain
        .seal_next(
            group.keys(),
            &dave,
            &server_a,
            MessageKind::TEXT,
            b"a text, not a notice",
            ts,
            &[],
            &mut rng(),
            &mut text,
        )
        .unwrap();
    let mut body = [0u8; MOVE_NOTICE_MAX_LEN];
    let body = MoveNotice::new(&[server_t])
        .unwrap()
        .encode(&mut body)
        .unwrap()
        .to_vec();
    let msg = chain.next_message(MessageKind::MOVE, &body, ts, &[]);
    let mut for_a = [0u8; SEALED_BLOB_LEN];
    let mut for_x = [0u8; SEALED_BLOB_LEN];
    group
        .keys()
        .seal(&dave, &server_a, &msg, &mut rng(), &mut for_a)
        .unwrap();
    group
        .keys()
        .seal(&dave, &server_x, &msg, &mut rng(), &mut for_x)
        .unwrap();
    let mut tampered = for_a;
    tampered[100] ^= 1;

    // A stranger's valid notice: ignored (then a text, so we know the
    // notice was read before it).
    let stranger = Identity::generate(&mut rng());
    let stranger_addr = stranger.address().to_string();
    let mut s = RawLink::dial_as(addr, stranger, carol_addr.public_identity()).unwrap();
    assert!(s.establish(limit));
    s.send(&peer(&PeerMessage::MoveBlob { blob: &for_a }));
    s.send(&peer(&PeerMessage::Text {
        id: 9,
        sent_at: 0,
        text: "after my notice",
    }));
    wait_for("carol to read the stranger's text", limit, || {
        let _ = s.recv(Duration::from_millis(50));
        conversation(&ch, &stranger_addr)
            .iter()
            .any(|(_, t, _)| t == "after my notice")
            .then_some(())
    });
    assert_eq!(
        group_servers(&ch).unwrap(),
        [short(&server_a.to_string())],
        "a stranger's notice is ignored"
    );

    // From dave, in order: three that must be ignored, then the valid one.
    for blob in [&text, &for_x, &tampered, &for_a] {
        link.send(&peer(&PeerMessage::MoveBlob { blob }));
    }
    wait_for("carol to follow the valid notice", limit, || {
        let _ = link.recv(Duration::from_millis(50));
        (group_servers(&ch)? == [short(&server_t.to_string())]).then_some(())
    });
    let g = cli(&ch, &["group", "list"]).unwrap()[0].clone();
    assert_eq!(
        short(g["previous_servers"][0].as_str().unwrap()),
        short(&server_a.to_string())
    );
    assert_eq!(
        g["missing"], 1,
        "dave's text (seq 0) was not taken through MoveBlob: {g}"
    );
    let shown: Vec<String> = conversation(&ch, "g")
        .into_iter()
        .filter(|(_, _, status)| status != "missing")
        .map(|(_, t, _)| t)
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0].starts_with("[moved this group to"), "{shown:?}");
}
