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

/// Enter, with every request it makes accepted by the daemon (an empty
/// answer): what was typed is cleared once accepted.
fn enter(app: &mut App) -> Vec<Action> {
    let actions = app.on_key(key(KeyCode::Enter));
    for a in &actions {
        if let Action::Request { purpose, .. } = a {
            app.on_input(Input::Answer {
                purpose: purpose.clone(),
                result: Ok(json!({})),
            });
        }
    }
    actions
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
    assert_eq!(app.editor.text, "hello", "kept until the daemon accepts it");
    app.on_input(Input::Answer {
        purpose: Purpose::Sent(Conv::Contact(BOB.into())),
        result: Ok(message(5, BOB, ALICE, "hello", "pending")),
    });
    assert_eq!(app.editor.text, "");
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
            "/group create trip cwtch-server:uv2pxmfuzxdbbgkdbedwclntvoqr4n2eiagxjwwnqrhqndwhwmfy2kid",
            Request::GroupCreate {
                name: "trip".into(),
                server: format!("cwtch-server:{SERVER}"),
            },
        ),
        ("/servers", Request::Servers),
    ];
    for (line, expected) in cases {
        let mut app = loaded(json!([]));
        typed(&mut app, line);
        let actions = app.on_key(key(KeyCode::Enter));
        assert_eq!(requests(&actions), vec![expected], "{line}");
        assert_eq!(app.editor.text, line, "{line}: kept until accepted");
        if let Some(Action::Request { purpose, .. }) = actions.first() {
            app.on_input(Input::Answer {
                purpose: purpose.clone(),
                result: Ok(json!({})),
            });
        }
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
        let actions = enter(&mut app);
        assert_eq!(requests(&actions), vec![expected], "{line}");
    }
    // Quit, help, and a mistake that stays in the line to be corrected.
    let mut app = loaded(json!([]));
    typed(&mut app, "/quit");
    assert_eq!(app.on_key(key(KeyCode::Enter)), vec![Action::Quit]);
    typed(&mut app, "/help");
    app.on_key(key(KeyCode::Enter));
    assert!(screen(&app, 80, 24).contains("/group create NAME"));
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
        requests(&enter(&mut app)),
        vec![Request::GroupAccept {
            group: "77aa".into()
        }]
    );
    // (Or refused.)
    app.selected = Some(Conv::Invite("77aa".into()));
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

#[test]
fn editing_keys_are_safe_with_wide_and_multibyte_text() {
    let mut app = loaded(json!([]));
    // Ctrl+W after multi-byte spaces (U+3000, a no-break space).
    for text in [
        "hello a\u{3000}b",
        "hello a\u{a0}b",
        "日本語\u{3000}テキスト\u{3000}",
    ] {
        app.on_key(key(KeyCode::Esc));
        typed(&mut app, text);
        app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
        assert!(app.editor.text.is_char_boundary(app.editor.cursor));
        let _ = screen(&app, 80, 24);
    }
    app.on_key(key(KeyCode::Esc));
    typed(&mut app, "hello a\u{3000}b");
    app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.editor.text, "hello a\u{3000}");
    app.on_key(KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL));
    assert_eq!(app.editor.text, "hello ");
    // Every key, anywhere in a text of wide and combining characters, on
    // every screen width: no panic, the cursor on a boundary.
    let keys = [
        key(KeyCode::Left),
        key(KeyCode::Right),
        key(KeyCode::Home),
        key(KeyCode::End),
        key(KeyCode::Backspace),
        key(KeyCode::Delete),
        KeyEvent::new(KeyCode::Char('w'), KeyModifiers::CONTROL),
        KeyEvent::new(KeyCode::Char('u'), KeyModifiers::CONTROL),
        KeyEvent::new(KeyCode::Char('a'), KeyModifiers::CONTROL),
        KeyEvent::new(KeyCode::Char('e'), KeyModifiers::CONTROL),
    ];
    for (n, k) in keys.iter().enumerate() {
        app.on_key(key(KeyCode::Esc));
        app.on_paste("日本\u{3000}e\u{301}x\u{a0}😀😀 \n第二\u{2003}行 ok");
        for _ in 0..(n % 7) {
            app.on_key(key(KeyCode::Left));
        }
        for _ in 0..3 {
            app.on_key(*k);
            assert!(app.editor.text.is_char_boundary(app.editor.cursor));
            let _ = screen(&app, 80, 24);
            for w in [80, 30, 12] {
                let _ = view::wrap(
                    &[(app.editor.text.clone(), ratatui::style::Style::default())],
                    w,
                    6,
                );
            }
        }
    }
}

/// Loads `status` (the daemon's answer to `status`) into `app`.
fn reload_with(app: &mut App, status: Value) -> Vec<Action> {
    app.on_input(Input::Answer {
        purpose: Purpose::Reload,
        result: Ok(status),
    })
}

#[test]
fn a_long_announced_name_keeps_its_unverified_mark_when_cut() {
    let mut app = loaded(json!([]));
    let mut s = status();
    let padded = format!("Bobby{}", " ".repeat(25));
    s["contacts"] = json!([
        entry(BOB, "bob", Some("Bobby"), "accepted", "authenticated"),
        entry(CAROL, &padded, None, "accepted", "authenticated"),
        entry(SERVER, &"x".repeat(60), None, "request", "disconnected"),
    ]);
    reload_with(&mut app, s);
    for w in [80, 100, 120] {
        let t = draw(&app, w, 24);
        let buf = t.backend().buffer();
        let rows: Vec<String> = (0..24)
            .map(|y| (0..w).map(|x| buf[(x, y)].symbol()).collect())
            .collect();
        let row_of = |needle: &str| {
            rows.iter()
                .find(|r| r.contains(needle))
                .unwrap_or_else(|| panic!("{needle} on screen:\n{}", rows.join("\n")))
                .clone()
        };
        let stranger = rows
            .iter()
            .filter(|r| r.contains("│ Bobby") || r.contains("│>Bobby"))
            .find(|r| !r.contains("│ Bobby ") || r.contains('?'))
            .cloned();
        let long = row_of("xxxx");
        assert!(long.contains("?"), "the cut request keeps its ?:\n{long}");
        // Both Bobbys: ours without a mark, theirs with one.
        let bobbys: Vec<&String> = rows.iter().filter(|r| r.contains("Bobby")).collect();
        assert!(
            bobbys.iter().any(|r| r.contains('?')),
            "the stranger's Bobby keeps its ?: {stranger:?}\n{}",
            rows.join("\n")
        );
    }
}

#[test]
fn a_refused_message_or_command_keeps_its_text() {
    let mut app = loaded(json!([]));
    typed(&mut app, "hello bob");
    let actions = app.on_key(key(KeyCode::Enter));
    assert_eq!(requests(&actions).len(), 1);
    // Until the daemon answers, the text stays.
    assert_eq!(app.editor.text, "hello bob");
    app.on_input(Input::Answer {
        purpose: Purpose::Sent(Conv::Contact(BOB.into())),
        result: Err("the daemon is stopping".into()),
    });
    assert_eq!(app.editor.text, "hello bob", "a refused message is kept");
    assert!(screen(&app, 80, 24).contains("the daemon is stopping"));
    // Sent again, and accepted: the input is cleared.
    let actions = app.on_key(key(KeyCode::Enter));
    assert_eq!(requests(&actions).len(), 1);
    app.on_input(Input::Answer {
        purpose: Purpose::Sent(Conv::Contact(BOB.into())),
        result: Ok(message(9, BOB, ALICE, "hello bob", "pending")),
    });
    assert_eq!(app.editor.text, "");
    // Too long: refused here, before anything is cleared or sent.
    app.on_paste(&"x".repeat(4097));
    assert!(requests(&app.on_key(key(KeyCode::Enter))).is_empty());
    assert_eq!(app.editor.text.len(), 4097);
    assert!(screen(&app, 80, 24).contains("too long"));
    app.on_key(key(KeyCode::Esc));
    // A command the daemon refuses stays too.
    typed(&mut app, "/block");
    let actions = app.on_key(key(KeyCode::Enter));
    let purpose = actions
        .iter()
        .find_map(|a| match a {
            Action::Request { purpose, .. } => Some(purpose.clone()),
            _ => None,
        })
        .unwrap();
    app.on_input(Input::Answer {
        purpose: purpose.clone(),
        result: Err("no such contact".into()),
    });
    assert_eq!(app.editor.text, "/block");
    app.on_key(key(KeyCode::Enter));
    app.on_input(Input::Answer {
        purpose,
        result: Ok(json!({})),
    });
    assert_eq!(app.editor.text, "");
}

#[test]
fn help_scrolls_at_80x24_and_page_up_is_capped() {
    let mut app = loaded(json!([]));
    typed(&mut app, "/help");
    enter(&mut app);
    // Every line of the help can be brought into view.
    let mut seen = String::new();
    for _ in 0..10 {
        seen.push_str(&screen(&app, 80, 24));
        app.on_key(key(KeyCode::PageDown));
    }
    for needle in [
        "Keys: Enter sends",
        "/group leave",
        "/help · /quit",
        "recovered (filled in",
    ] {
        assert!(seen.contains(needle), "{needle} never shown:\n{seen}");
    }
    // Back at the top with one PgUp per PgDn that moved.
    for _ in 0..3 {
        app.on_key(key(KeyCode::PageUp));
    }
    assert!(screen(&app, 80, 24).contains("Keys: Enter sends"));
    app.on_key(key(KeyCode::Esc));
    // The conversation: PgUp far past the top, then one PgDn moves.
    let many: Vec<Value> = (1..=40)
        .map(|i| message(i, BOB, BOB, &format!("line {i}"), "received"))
        .collect();
    let mut app = loaded(json!(many));
    for _ in 0..50 {
        app.on_key(key(KeyCode::PageUp));
    }
    assert!(screen(&app, 80, 24).contains("line 1 "), "at the top");
    let top = app.scroll;
    app.on_key(key(KeyCode::PageDown));
    assert!(app.scroll < top);
    assert!(screen(&app, 80, 24).contains("more line(s) below"));
    assert!(!screen(&app, 80, 24).contains("bob?: line 1 "));
}

#[test]
fn a_group_is_created_on_a_known_server_from_the_start_of_its_address() {
    const OTHER: &str = "uv2qaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    let directory = |servers: &[(&str, bool)]| -> Value {
        json!(
            servers
                .iter()
                .map(|(a, r)| json!({"address": a, "reachable": r, "score": 1}))
                .collect::<Vec<_>>()
        )
    };
    // What chat asks, and the request it makes once the directory comes.
    let create = |line: &str, dir: &Value| -> (App, Vec<Request>) {
        let mut app = loaded(json!([]));
        typed(&mut app, line);
        let actions = app.on_key(key(KeyCode::Enter));
        assert_eq!(requests(&actions), vec![Request::Servers], "{line}");
        let Some(Action::Request { purpose, .. }) = actions.first() else {
            panic!()
        };
        let out = app.on_input(Input::Answer {
            purpose: purpose.clone(),
            result: Ok(dir.clone()),
        });
        (app, requests(&out))
    };
    let two = directory(&[(SERVER, true), (OTHER, false)]);
    let made = |server: &str| {
        vec![Request::GroupCreate {
            name: "trip".into(),
            server: server.into(),
        }]
    };
    // A unique start.
    assert_eq!(create("/group create trip uv2px", &two).1, made(SERVER));
    assert_eq!(create("/group create trip UV2Q", &two).1, made(OTHER));
    // Ambiguous: refused, with the candidates; the line stays.
    let (app, out) = create("/group create trip uv2", &two);
    assert!(out.is_empty());
    assert_eq!(app.editor.text, "/group create trip uv2");
    let s = screen(&app, 120, 24);
    assert!(s.contains("2 servers start with uv2"), "{s}");
    assert!(
        s.contains("uv2pxmfuzxdb") && s.contains("uv2qaaaaaaaa"),
        "{s}"
    );
    // None: the only reachable one; several unknown: say which.
    assert_eq!(create("/group create trip", &two).1, made(SERVER));
    let both_unknown = directory(&[(SERVER, false), (OTHER, false)]);
    let (app, out) = create("/group create trip", &both_unknown);
    assert!(out.is_empty());
    assert!(screen(&app, 120, 24).contains("which server?"));
    let (app, out) = create("/group create trip zzz", &two);
    assert!(out.is_empty());
    assert!(screen(&app, 120, 24).contains("no known server starts with zzz"));
    // Created: the line is cleared once the daemon made the group.
    let (mut app, out) = create("/group create trip uv2px", &two);
    assert_eq!(out, made(SERVER));
    assert_eq!(app.editor.text, "/group create trip uv2px");
    app.on_input(Input::Answer {
        purpose: Purpose::Joined,
        result: Ok(json!({"id": GROUP, "name": "trip"})),
    });
    assert_eq!(app.editor.text, "");
}

#[test]
fn screen_texts_say_what_to_do_plainly() {
    // The empty server list speaks chat's language.
    let mut app = loaded(json!([]));
    app.on_input(Input::Answer {
        purpose: Purpose::Servers,
        result: Ok(json!([])),
    });
    let s = screen(&app, 80, 24);
    assert!(s.contains("/group create NAME SERVER"), "{s}");
    assert!(!s.contains('`'), "{s}");
    // The daemon gone: said once.
    app.on_input(Input::Disconnected(
        "the daemon's answer: the daemon closed the connection".into(),
    ));
    let s = screen(&app, 100, 24);
    let header = s.lines().next().unwrap();
    assert!(
        header.contains("the daemon does not answer (it closed the connection); retrying"),
        "{header}"
    );
    assert_eq!(header.matches("daemon").count(), 1, "{header}");
    // A request in view: the input says what Enter does there.
    let mut app = loaded(json!([]));
    let mut st = status();
    st["contacts"][1] = entry(CAROL, "mallory", None, "request", "authenticated");
    st["invites"] = json!([{"group": "77aa", "name": "party", "from": BOB,
                            "servers": [SERVER], "received_at": 0}]);
    reload_with(&mut app, st);
    for conv in [Conv::Contact(CAROL.into()), Conv::Invite("77aa".into())] {
        app.selected = Some(conv);
        let s = screen(&app, 80, 24);
        assert!(s.contains("/accept or /refuse"), "{s}");
        assert!(!s.contains("Enter sends"), "{s}");
    }
}

#[test]
fn a_line_at_the_bottom_goes_after_ten_seconds() {
    let mut app = loaded(json!([]));
    typed(&mut app, "/frobnicate");
    app.on_key(key(KeyCode::Enter));
    let t0 = std::time::Instant::now();
    assert!(!app.tick(t0));
    assert!(!app.tick(t0 + std::time::Duration::from_secs(5)));
    assert!(screen(&app, 80, 24).contains("unknown command"));
    assert!(app.tick(t0 + std::time::Duration::from_secs(11)));
    assert!(!screen(&app, 80, 24).contains("unknown command"));
}

#[test]
fn the_selection_stays_on_a_real_conversation() {
    // On start: the most recent conversation, not a stranger's request.
    let mut app = App::new(jiff::tz::TimeZone::UTC);
    app.on_input(Input::Connected {
        address: ALICE.into(),
        restarted: false,
    });
    let mut st = status();
    st["contacts"] = json!([
        entry(BOB, "bob", None, "accepted", "authenticated"),
        entry(CAROL, "carol", None, "accepted", "authenticated"),
        entry(SERVER, "stranger", None, "request", "authenticated"),
        entry(GROUP, "stranger2", None, "request", "authenticated"),
    ]);
    st["contacts"][1]["contact"]["read_upto"] = json!(40);
    st["contacts"][0]["contact"]["read_upto"] = json!(12);
    reload_with(&mut app, st.clone());
    assert_eq!(app.selected, Some(Conv::Contact(CAROL.into())));
    // After /refuse: the neighbour.
    app.selected = Some(Conv::Contact(SERVER.into()));
    typed(&mut app, "/refuse");
    let actions = app.on_key(key(KeyCode::Enter));
    let next = app.entries()[1].clone();
    let Some(Action::Request { purpose, .. }) = actions.first() else {
        panic!()
    };
    app.on_input(Input::Answer {
        purpose: purpose.clone(),
        result: Ok(json!({})),
    });
    let contacts = st["contacts"].as_array().unwrap().clone();
    st["contacts"] = json!(
        contacts
            .into_iter()
            .filter(|c| c["contact"]["address"] != SERVER)
            .collect::<Vec<_>>()
    );
    reload_with(&mut app, st);
    assert_eq!(app.selected, Some(next));
}

#[test]
fn gap_notices_are_bounded_per_conversation() {
    let mut app = loaded(json!([]));
    for i in 0..1000u64 {
        app.on_input(event(
            10 + i,
            Event::Gap {
                group: GROUP.into(),
                text: format!("gap {i}"),
                closed: false,
            },
        ));
    }
    let kept = &app.notices[&Conv::Group(GROUP.into())];
    assert_eq!(kept.len(), super::app::MAX_NOTICES);
    assert_eq!(kept.last().unwrap().text, "gap 999", "the newest are kept");
}

#[test]
fn the_cursor_follows_wide_characters_in_the_input() {
    let mut app = loaded(json!([]));
    typed(&mut app, &"日".repeat(60));
    typed(&mut app, "X");
    let mut t = draw(&app, 80, 24);
    let (x, y) = {
        let p = t.get_cursor_position().unwrap();
        (p.x, p.y)
    };
    let buf = t.backend().buffer();
    assert_eq!(
        buf[(x - 1, y)].symbol(),
        "X",
        "what was typed last is left of the cursor"
    );
    assert!(x < 79);
}

/// A daemon that holds the home but stops before its control socket
/// answers ends chat's wait with that said, not a wait of minutes.
#[test]
fn a_starting_daemon_that_stops_ends_the_wait() {
    use std::time::{Duration, Instant};
    let tmp = tempfile::tempdir().unwrap();
    let home = tmp.path().join("home");
    crate::home::create_private(&home).unwrap();
    let lock = crate::home::HomeLock::acquire(&home).unwrap();
    let releaser = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(300));
        drop(lock);
    });
    let started = Instant::now();
    let err = super::wait_for_starting(&home, std::process::id()).unwrap_err();
    releaser.join().unwrap();
    assert!(err.contains("stopped while starting"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(5));
}
