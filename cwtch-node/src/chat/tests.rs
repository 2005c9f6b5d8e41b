//! The state and the view of `chat`, without a terminal or a daemon:
//! answers, events and keys go in, actions and a drawn screen (ratatui's
//! TestBackend) come out.

use ratatui::Terminal;
use ratatui::backend::TestBackend;
use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use ratatui::style::Color;
use serde_json::{Value, json};

use super::app::{Action, App, Conv, Input, Purpose};
use super::view;
use crate::control::api::{Event, EventEnvelope, Request};

const ALICE: &str = "nqbw34jpxkgn4rbgzqcdf5q7tugccbh2ubhtd4aqm5zbxy3hkjmltzad";
const BOB: &str = "dttwoiqvjrhvvk3v5dijgxk5v4ivhrmb2fobplwyb5ytsjchxavrf5qd";
const CAROL: &str = "5vesrrrid3kxnmcg2fw7pbhiokguvb3x3kfrcpd66ez2yibsixzgvmyd";
const SERVER: &str = "uv2pxmfuzxdbbgkdbedwclntvoqr4n2eiagxjwwnqrhqndwhwmfy2kid";
const GROUP: &str = "04c25bc0aa8f36fae4d6f34b74b24eaf0d2a4a1b01bb5e8fc45fb0a8b9a4d8e0";

fn entry(address: &str, name: &str, nickname: Option<&str>, state: &str, conn: &str) -> Value {
    json!({
        "contact": {"address": address, "name": name, "nickname": nickname, "state": state,
                    "from_mailbox": false, "read_upto": 0},
        "connection": {"state": conn, "last_error": null},
        "pending": 0, "unread": 0
    })
}

fn status() -> Value {
    json!({
        "address": ALICE, "name": "alice", "outbox": 0,
        "contacts": [
            entry(BOB, "bob", None, "accepted", "authenticated"),
            entry(CAROL, "carol", Some("caz"), "accepted", "failed"),
        ],
        "groups": [{
            "id": GROUP, "name": "friends", "unread": 0,
            "servers": [{"server": SERVER, "connection": {"state": "synced", "last_error": null}}],
            "previous_servers": [], "pending": 0, "missing": 0, "recovered": 0, "gaps": []
        }],
        "invites": [], "first_contact_pending": false, "transport_note": null
    })
}

fn message(seq: u64, conversation: &str, author: &str, text: &str, status: &str) -> Value {
    json!({
        "seq": seq, "conversation": conversation, "id": seq, "outgoing": author == ALICE,
        "author": author, "text": text, "sent_at": 1_796_459_878_509u64 + seq * 60_000,
        "status": status
    })
}

fn key(code: KeyCode) -> KeyEvent {
    KeyEvent::new(code, KeyModifiers::NONE)
}

fn typed(app: &mut App, text: &str) -> Vec<Action> {
    let mut out = Vec::new();
    for c in text.chars() {
        out.extend(app.on_key(key(KeyCode::Char(c))));
    }
    out
}

fn requests(actions: &[Action]) -> Vec<Request> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Request { request, .. } => Some(request.clone()),
            _ => None,
        })
        .collect()
}

fn event(seq: u64, event: Event) -> Input {
    Input::Event(EventEnvelope { seq, event })
}

/// An app connected to alice's daemon, with her status loaded, and the
/// messages it asked for answered with `messages`.
fn loaded(messages: Value) -> App {
    let mut app = App::new(jiff::tz::TimeZone::UTC);
    app.on_input(Input::Connected {
        address: ALICE.into(),
        restarted: false,
    });
    let actions = app.on_input(Input::Answer {
        purpose: Purpose::Reload,
        result: Ok(status()),
    });
    for a in actions {
        if let Action::Request {
            purpose: purpose @ Purpose::Messages(_),
            ..
        } = a
        {
            app.on_input(Input::Answer {
                purpose,
                result: Ok(messages.clone()),
            });
        }
    }
    app
}

fn draw(app: &App, w: u16, h: u16) -> Terminal<TestBackend> {
    let mut t = Terminal::new(TestBackend::new(w, h)).unwrap();
    t.draw(|f| view::render(app, f)).unwrap();
    t
}

fn screen(app: &App, w: u16, h: u16) -> String {
    let t = draw(app, w, h);
    let buf = t.backend().buffer();
    let mut out = String::new();
    for y in 0..h {
        for x in 0..w {
            out.push_str(buf[(x, y)].symbol());
        }
        out.push('\n');
    }
    out
}

/// Where `needle` starts on the screen, as (x, y).
fn find(t: &Terminal<TestBackend>, needle: &str) -> Option<(u16, u16)> {
    let buf = t.backend().buffer();
    let area = buf.area;
    for y in 0..area.height {
        let row: Vec<&str> = (0..area.width).map(|x| buf[(x, y)].symbol()).collect();
        let line = row.concat();
        if let Some(i) = line.find(needle) {
            // Columns: count the symbols before the byte index.
            let mut x = 0;
            let mut bytes = 0;
            while bytes < i {
                bytes += row[x].len();
                x += 1;
            }
            return Some((x as u16, y));
        }
    }
    None
}

#[test]
fn the_panes_show_names_states_and_the_conversation_in_view() {
    let app = loaded(json!([
        message(1, BOB, ALICE, "hi bob", "delivered"),
        message(2, BOB, BOB, "hello alice", "received"),
    ]));
    assert_eq!(app.selected, Some(Conv::Contact(BOB.into())));
    let s = screen(&app, 80, 24);
    // Announced names are marked unverified; our nickname is not.
    assert!(s.contains(">bob?"), "{s}");
    assert!(s.contains(" caz "), "{s}");
    assert!(
        !s.contains("carol"),
        "a nickname replaces the announced name: {s}"
    );
    // Connection states in plain words.
    assert!(s.contains("online"), "{s}");
    assert!(s.contains("unreachable"), "{s}");
    assert!(s.contains("#friends"), "{s}");
    assert!(s.contains("synced"), "{s}");
    // The conversation: author, time, status.
    assert!(s.contains("me: hi bob  [delivered]"), "{s}");
    assert!(s.contains("bob?: hello alice"), "{s}");
    assert!(
        s.contains("08:39 bob?: hello alice"),
        "times are shown: {s}"
    );
    // No 56-character address outside our own at the top.
    assert_eq!(s.matches(BOB).count(), 0, "{s}");
}

#[test]
fn connection_states_have_colours() {
    let app = loaded(json!([]));
    let t = draw(&app, 80, 24);
    let buf = t.backend().buffer();
    let (x, y) = find(&t, "online").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Green);
    let (x, y) = find(&t, "unreachable").unwrap();
    assert_eq!(buf[(x, y)].fg, Color::Red);
}

#[test]
fn a_connection_event_changes_the_state_shown() {
    let mut app = loaded(json!([]));
    app.on_input(event(
        1,
        Event::Connection {
            kind: "contact".into(),
            address: BOB.into(),
            state: "disconnected".into(),
            reason: Some("closed by the other side".into()),
        },
    ));
    let s = screen(&app, 80, 24);
    assert!(s.contains("offline"), "{s}");
    assert!(s.contains("closed by the other side"), "{s}");
    app.on_input(event(
        2,
        Event::Connection {
            kind: "contact".into(),
            address: BOB.into(),
            state: "authenticated".into(),
            reason: None,
        },
    ));
    assert!(screen(&app, 80, 24).contains("online"));
}

#[test]
fn every_delivery_status_and_why_a_message_waits() {
    let mut pending = message(3, BOB, ALICE, "are you there?", "pending");
    pending["note"] = json!("waiting: the contact is not reachable; retrying");
    let app = loaded(json!([
        message(1, BOB, ALICE, "one", "delivered"),
        message(2, BOB, BOB, "two", "recovered"),
        pending,
        message(4, BOB, BOB, "", "missing"),
    ]));
    let s = screen(&app, 140, 30);
    assert!(s.contains("one  [delivered]"), "{s}");
    assert!(s.contains("two  [recovered]"), "{s}");
    assert!(
        s.contains("are you there?  [pending: waiting: the contact is not reachable; retrying]"),
        "{s}"
    );
    assert!(
        s.contains("(a message that has not arrived yet)  [missing]"),
        "{s}"
    );
}

#[test]
fn a_pending_message_turns_delivered_in_place() {
    let mut app = loaded(json!([]));
    let actions = typed(&mut app, "hello");
    assert!(actions.is_empty());
    let actions = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        requests(&actions),
        vec![Request::Send {
            to: BOB.into(),
            text: "hello".into()
        }]
    );
    assert_eq!(app.editor.text, "");
    app.on_input(Input::Answer {
        purpose: Purpose::Sent(Conv::Contact(BOB.into())),
        result: Ok(message(5, BOB, ALICE, "hello", "pending")),
    });
    assert!(screen(&app, 80, 24).contains("me: hello  [pending]"));
    app.on_input(event(
        7,
        Event::Message {
            message: message(5, BOB, ALICE, "hello", "delivered"),
        },
    ));
    let s = screen(&app, 80, 24);
    assert!(s.contains("me: hello  [delivered]"), "{s}");
    assert_eq!(s.matches("me: hello").count(), 1, "{s}");
}

#[test]
fn enter_sends_and_alt_or_shift_enter_start_a_new_line() {
    let mut app = loaded(json!([]));
    typed(&mut app, "first");
    assert!(
        app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::ALT))
            .is_empty()
    );
    typed(&mut app, "second");
    app.on_key(KeyEvent::new(KeyCode::Enter, KeyModifiers::SHIFT));
    typed(&mut app, "third");
    app.on_key(KeyEvent::new(KeyCode::Char('j'), KeyModifiers::CONTROL));
    typed(&mut app, "fourth");
    // The input box grows with the lines.
    let s = screen(&app, 80, 24);
    for line in ["first", "second", "third", "fourth"] {
        assert!(s.contains(&format!("│{line}")), "{s}");
    }
    let actions = app.on_key(key(KeyCode::Enter));
    assert_eq!(
        requests(&actions),
        vec![Request::Send {
            to: BOB.into(),
            text: "first\nsecond\nthird\nfourth".into()
        }]
    );
}

#[test]
fn the_line_can_be_edited() {
    let mut app = loaded(json!([]));
    typed(&mut app, "helo wrld");
    app.on_key(key(KeyCode::Left));
    app.on_key(key(KeyCode::Left));
    app.on_key(key(KeyCode::Left));
    typed(&mut app, "o");
    app.on_key(key(KeyCode::Home));
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Right));
    app.on_key(key(KeyCode::Right));
    typed(&mut app, "l");
    assert_eq!(app.editor.text, "hello world");
    app.on_key(key(KeyCode::End));
    app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.editor.text, "hello ");
    app.on_key(key(KeyCode::Backspace));
    app.on_key(key(KeyCode::Esc));
    assert_eq!(app.editor.text, "");
    app.on_paste("pasted\r\ntext");
    assert_eq!(app.editor.text, "pasted\ntext");
}

#[test]
fn slash_commands_become_requests() {
    let cases: Vec<(&str, Request)> = vec![
        (
            "/add dttwoiqv hello there",
            Request::ContactAdd {
                address: "dttwoiqv".into(),
                message: Some("hello there".into()),
                nickname: None,
            },
        ),
        (
            "/add cwtch:abc?server=x&key=y",
            Request::ContactAdd {
                address: "cwtch:abc?server=x&key=y".into(),
                message: None,
                nickname: None,
            },
        ),
        (
            "/nick bobby",
            Request::ContactRename {
                contact: BOB.into(),
                nickname: "bobby".into(),
            },
        ),
        (
            "/nick",
            Request::ContactRename {
                contact: BOB.into(),
                nickname: String::new(),
            },
        ),
        (
            "/block",
            Request::ContactBlock {
                contact: BOB.into(),
            },
        ),
        (
            "/unblock",
            Request::ContactUnblock {
                contact: BOB.into(),
            },
        ),
        (
            "/accept",
            Request::ContactAccept {
                contact: BOB.into(),
            },
        ),
        (
            "/refuse",
            Request::ContactRefuse {
                contact: BOB.into(),
            },
        ),
        (
            "/group create trip cwtch-server:uv2p",
            Request::GroupCreate {
                name: "trip".into(),
                server: "cwtch-server:uv2p".into(),
            },
        ),
        ("/servers", Request::Servers),
    ];
    for (line, expected) in cases {
        let mut app = loaded(json!([]));
        typed(&mut app, line);
        let actions = app.on_key(key(KeyCode::Enter));
        assert_eq!(requests(&actions), vec![expected], "{line}");
        assert_eq!(app.editor.text, "", "{line}");
    }
    // Group commands act on the group in view.
    let mut app = loaded(json!([]));
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected, Some(Conv::Group(GROUP.into())));
    for (line, expected) in [
        (
            "/group invite caz",
            Request::GroupInvite {
                group: GROUP.into(),
                contact: "caz".into(),
            },
        ),
        (
            "/group move cwtch-server:other",
            Request::GroupMove {
                group: GROUP.into(),
                server: "cwtch-server:other".into(),
            },
        ),
        (
            "hi all",
            Request::GroupSend {
                group: GROUP.into(),
                text: "hi all".into(),
            },
        ),
        (
            "/group leave",
            Request::GroupLeave {
                group: GROUP.into(),
            },
        ),
    ] {
        typed(&mut app, line);
        let actions = app.on_key(key(KeyCode::Enter));
        assert_eq!(requests(&actions), vec![expected], "{line}");
    }
    // Quit, help, and a mistake that stays in the line to be corrected.
    let mut app = loaded(json!([]));
    typed(&mut app, "/quit");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Action::Quit]);
    typed(&mut app, "/help");
    app.on_key(key(KeyCode::Enter));
    assert!(screen(&app, 80, 24).contains("/group create NAME SERVER"));
    app.on_key(key(KeyCode::Esc));
    typed(&mut app, "/frobnicate");
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert_eq!(app.editor.text, "/frobnicate");
    assert!(screen(&app, 80, 24).contains("unknown command /frobnicate"));
}

#[test]
fn delete_asks_again_before_deleting() {
    let mut app = loaded(json!([message(1, BOB, BOB, "x", "received")]));
    typed(&mut app, "/delete");
    assert!(app.on_key(key(KeyCode::Enter)).is_empty());
    assert!(screen(&app, 100, 24).contains("/delete again to delete every message with bob?"));
    typed(&mut app, "/delete");
    assert_eq!(
        requests(&app.on_key(key(KeyCode::Enter))),
        vec![Request::ConversationDelete {
            conversation: BOB.into()
        }]
    );
}

#[test]
fn requests_and_invites_wait_for_an_explicit_answer() {
    let mut app = loaded(json!([]));
    let actions = app.on_input(event(
        3,
        Event::ContactRequest {
            contact: entry(CAROL, "mallory", None, "request", "authenticated"),
        },
    ));
    assert!(actions.contains(&Action::Bell));
    let mut s = status();
    s["contacts"][1] = entry(CAROL, "mallory", None, "request", "authenticated");
    s["invites"] = json!([{"group": "77aa", "name": "party", "from": BOB,
                           "servers": [SERVER], "received_at": 0}]);
    app.on_input(Input::Answer {
        purpose: Purpose::Reload,
        result: Ok(s),
    });
    assert_eq!(app.title(), "cwtch (2)");
    // Requests first, then invites.
    let entries = app.entries();
    assert_eq!(entries[0], Conv::Contact(CAROL.into()));
    assert_eq!(entries[1], Conv::Invite("77aa".into()));
    let screen_now = screen(&app, 80, 24);
    assert!(screen_now.contains("mallory?"), "{screen_now}");
    assert!(screen_now.contains("request"), "{screen_now}");
    assert!(screen_now.contains("invite"), "{screen_now}");
    // A request cannot be written to before it is accepted.
    app.on_key(key(KeyCode::Up));
    app.on_key(key(KeyCode::Up));
    assert_eq!(app.selected, Some(Conv::Contact(CAROL.into())));
    assert!(screen(&app, 80, 24).contains("/accept or /refuse"));
    typed(&mut app, "hi");
    assert!(requests(&app.on_key(key(KeyCode::Enter))).is_empty());
    app.on_key(key(KeyCode::Esc));
    // The invite: accepted explicitly.
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected, Some(Conv::Invite("77aa".into())));
    let s = screen(&app, 100, 24);
    assert!(s.contains("bob? invites you to the group #party"), "{s}");
    typed(&mut app, "/accept");
    assert_eq!(
        requests(&app.on_key(key(KeyCode::Enter))),
        vec![Request::GroupAccept {
            group: "77aa".into()
        }]
    );
    typed(&mut app, "/refuse");
    assert_eq!(
        requests(&app.on_key(key(KeyCode::Enter))),
        vec![Request::GroupRefuse {
            group: "77aa".into()
        }]
    );
}

#[test]
fn a_message_out_of_view_rings_and_counts_in_the_title_without_a_name() {
    let mut app = loaded(json!([]));
    assert_eq!(app.title(), "cwtch");
    // In view: no bell; it is marked read.
    let actions = app.on_input(event(
        1,
        Event::Message {
            message: message(10, BOB, BOB, "in view", "received"),
        },
    ));
    assert!(!actions.contains(&Action::Bell));
    assert!(requests(&actions).contains(&Request::ConversationRead {
        conversation: BOB.into()
    }));
    // Out of view: the bell, and a count.
    let actions = app.on_input(event(
        2,
        Event::Message {
            message: message(11, CAROL, CAROL, "psst", "received"),
        },
    ));
    assert!(actions.contains(&Action::Bell));
    assert_eq!(app.title(), "cwtch (1)");
    let s = screen(&app, 80, 24);
    assert!(s.contains(" caz ") && s.contains(" 1 unreachable"), "{s}");
    // The same message again (a status change, a replay): no second bell.
    let actions = app.on_input(event(
        3,
        Event::Message {
            message: message(11, CAROL, CAROL, "psst", "received"),
        },
    ));
    assert!(!actions.contains(&Action::Bell));
    // Looking at it clears the count.
    app.on_key(key(KeyCode::Down));
    assert_eq!(app.selected, Some(Conv::Contact(CAROL.into())));
    assert_eq!(app.title(), "cwtch");
}

#[test]
fn gaps_and_moves_are_told_in_plain_words() {
    let mut app = loaded(json!([]));
    app.on_key(key(KeyCode::Down));
    app.on_key(key(KeyCode::Down));
    app.on_input(Input::Answer {
        purpose: Purpose::Messages(Conv::Group(GROUP.into())),
        result: Ok(json!([message(1, GROUP, BOB, "before", "received")])),
    });
    app.on_input(event(
        5,
        Event::Gap {
            group: GROUP.into(),
            text: "2 messages from bob are missing; asking the server again".into(),
            closed: false,
        },
    ));
    app.on_input(event(
        6,
        Event::GroupMoved {
            group: GROUP.into(),
            servers: vec![SERVER.into()],
            by: BOB.into(),
        },
    ));
    let s = screen(&app, 140, 30);
    assert!(
        s.contains("-- 2 messages from bob are missing; asking the server again --"),
        "{s}"
    );
    assert!(
        s.contains(
            "bob? moved this group to uv2pxmfu…2kid (the old server is still read for 14 days)"
        ),
        "{s}"
    );
}

#[test]
fn the_screen_fits_80x24_and_scrolls_back() {
    let list: Vec<Value> = (1..=60)
        .map(|i| message(i, BOB, BOB, &format!("message number {i}"), "received"))
        .collect();
    let mut app = loaded(Value::Array(list));
    app.size = (80, 24);
    app.transport_note = Some("DEVELOPMENT TRANSPORT".into());
    let s = screen(&app, 80, 24);
    let rows: Vec<&str> = s.lines().collect();
    assert_eq!(rows.len(), 24);
    // Our whole address, to give out, and the warning, on one line.
    assert!(rows[0].contains(ALICE) && rows[0].contains("NO TOR"), "{s}");
    assert!(s.contains("message number 60"), "{s}");
    assert!(!s.contains("message number 40 "), "{s}");
    assert!(rows[23].contains("/help"), "the hints line: {s}");
    assert!(rows[21].starts_with('│'), "the input line: {s}");
    app.on_key(key(KeyCode::PageUp));
    app.on_key(key(KeyCode::PageUp));
    let s = screen(&app, 80, 24);
    assert!(!s.contains("message number 60"), "{s}");
    assert!(s.contains("more line(s) below: PgDn"), "{s}");
    for _ in 0..10 {
        app.on_key(key(KeyCode::PageDown));
    }
    assert!(screen(&app, 80, 24).contains("message number 60"));
    // Long lines wrap inside the pane; nothing is drawn outside the screen.
    let long = "word ".repeat(60);
    app.on_input(event(
        9,
        Event::Message {
            message: message(61, BOB, BOB, &long, "received"),
        },
    ));
    let s = screen(&app, 80, 24);
    assert!(s.lines().all(|l| l.chars().count() == 80));
}

#[test]
fn texts_from_others_cannot_drive_the_terminal() {
    let app = loaded(json!([message(
        1,
        BOB,
        BOB,
        "line one\nline two\u{1b}[2J\u{7}",
        "received"
    )]));
    let s = screen(&app, 100, 24);
    assert!(s.contains("bob?: line one"), "{s}");
    assert!(s.contains("line two\\u{1b}[2J\\u{7}"), "{s}");
    assert!(!s.contains('\u{1b}'));
}

#[test]
fn a_daemon_restart_reloads_everything() {
    let mut app = loaded(json!([]));
    app.on_input(Input::Disconnected("the connection closed".into()));
    assert!(screen(&app, 80, 24).contains("the daemon does not answer"));
    let actions = app.on_input(Input::Connected {
        address: ALICE.into(),
        restarted: true,
    });
    let r = requests(&actions);
    assert!(r.contains(&Request::Status));
    assert!(r.contains(&Request::Messages {
        conversation: BOB.into()
    }));
    assert!(screen(&app, 80, 24).contains("the daemon restarted"));
}
