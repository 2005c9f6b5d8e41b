//! Plain words for people: the human forms of the daemon's answers (the
//! `--json` forms are the answers themselves, documented in API.md). Every
//! text another party chose goes through [`safe`] first.

use crate::control::api::{Event, Request};
use crate::model::{Delivery, StoredMessage};

/// One message as a line: `2026-12-05 14:03 [delivered] alice: text`, the
/// time in the local time zone (the author's clock: a claim, bounded by the
/// daemon).
pub fn message(m: &StoredMessage) -> String {
    let tz = jiff::tz::TimeZone::try_system().unwrap_or(jiff::tz::TimeZone::UTC);
    message_in(m, &tz)
}

/// [`message`] in the time zone `tz`.
pub fn message_in(m: &StoredMessage, tz: &jiff::tz::TimeZone) -> String {
    let when = i64::try_from(m.sent_at)
        .ok()
        .and_then(|ms| jiff::Timestamp::from_millisecond(ms).ok())
        .map(|t| {
            t.to_zoned_datetime(tz.clone())
                .strftime("%Y-%m-%d %H:%M")
                .to_string()
        })
        .unwrap_or_else(|| "????-??-?? ??:??".into());
    let status = match m.status {
        Delivery::Pending => "pending  ",
        Delivery::Delivered => "delivered",
        Delivery::Received => "received ",
        Delivery::Missing => "missing  ",
        Delivery::Recovered => "recovered",
    };
    let who = if m.outgoing {
        "me".to_string()
    } else {
        match &m.author_name {
            Some(name) if !name.is_empty() => safe(name),
            _ => short(&m.author).to_string(),
        }
    };
    match &m.note {
        Some(note) => format!("{when} [{status}] {who}: {} ({note})", safe(&m.text)),
        None => format!("{when} [{status}] {who}: {}", safe(&m.text)),
    }
}

/// Text another party wrote, safe to print on a terminal: control
/// characters (a newline that would forge a line, an escape sequence) and
/// invisible format characters (a right-to-left override that reorders
/// what follows, zero-width characters that make two names look alike) are
/// shown escaped, never obeyed.
pub fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Texts keep what emoji are made of (the zero-width joiner and the
        // variation selectors); names lose those too (`codec::clean_name`).
        let emoji_part =
            matches!(c, '\u{200D}' | '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}');
        if c.is_control() || (crate::codec::is_format(c) && !emoji_part) {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

fn short(address: &str) -> &str {
    address.get(..12).unwrap_or(address)
}

fn text(value: &serde_json::Value, key: &str) -> String {
    safe(value[key].as_str().unwrap_or_default())
}

/// The contact in `value`: a contact, or a contact as listed (an entry
/// that holds it under `contact`, as events carry it).
fn the_contact(value: &serde_json::Value) -> &serde_json::Value {
    value
        .get("contact")
        .filter(|c| c.is_object())
        .unwrap_or(value)
}

fn contact_changed(value: &serde_json::Value) -> String {
    let c = the_contact(value);
    format!("{} is now {}", text(c, "address"), text(c, "state"))
}

/// The human form of a daemon answer.
pub fn human(request: &Request, value: &serde_json::Value) -> String {
    match request {
        Request::Address => text(value, "address"),
        Request::Status => {
            let mut out = format!(
                "{} ({})\noutgoing queue: {} message(s)\n",
                text(value, "address"),
                text(value, "name"),
                value["outbox"]
            );
            if let Some(note) = value["transport_note"].as_str() {
                out.push_str(&format!("{}\n", safe(note)));
            }
            out.push_str(&contacts(&value["contacts"]));
            out.push_str(&groups(&value["groups"]));
            out.push_str(&invites(&value["invites"]));
            out.trim_end().to_string()
        }
        Request::ContactList => {
            let out = contacts(value);
            if out.is_empty() {
                "no contacts yet (`cwtch-node contact add ADDRESS`)".into()
            } else {
                out.trim_end().to_string()
            }
        }
        Request::Messages { .. } => {
            let lines: Vec<String> = value
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|m| serde_json::from_value::<StoredMessage>(m.clone()).ok())
                .map(|m| message(&m))
                .collect();
            if lines.is_empty() {
                "no messages".into()
            } else {
                lines.join("\n")
            }
        }
        Request::Send { .. } => "queued (pending until the contact acknowledges it)".into(),
        Request::GroupCreate { .. } => format!(
            "group {} created: {}",
            text(value, "name"),
            text(value, "id")
        ),
        Request::GroupInvite { .. } => {
            "invite queued (pending until the contact acknowledges it)".into()
        }
        Request::GroupSend { .. } => "posted (pending until the server stores it durably)".into(),
        Request::GroupMove { .. } => format!(
            "{} (members follow; the old server is still read for 14 days)",
            text(value, "text")
        ),
        Request::GroupLeave { .. } => format!("left group {}", text(value, "name")),
        Request::GroupList => {
            let out = groups(value);
            if out.is_empty() {
                "no groups yet (`cwtch-node group create NAME --server SERVER`)".into()
            } else {
                out.trim_end().to_string()
            }
        }
        Request::GroupInvites => {
            let out = invites(value);
            if out.is_empty() {
                "no group invites wait for an answer".into()
            } else {
                out.trim_end().to_string()
            }
        }
        Request::GroupAccept { .. } => format!(
            "joined group {} ({})",
            text(value, "name"),
            text(value, "id")
        ),
        Request::GroupRefuse { .. } => {
            format!("refused the invite to {}", text(value, "name"))
        }
        Request::MailboxCreate { .. } | Request::Identifier => text(value, "identifier"),
        Request::Servers => directory(value),
        Request::ContactAdd { .. }
        | Request::ContactAccept { .. }
        | Request::ContactBlock { .. }
        | Request::ContactUnblock { .. }
        | Request::ContactRename { .. } => contact_changed(value),
        Request::ContactRefuse { .. } => format!("refused {}", text(value, "address")),
        Request::Resolve { .. } => {
            format!("{} {}", text(value, "kind"), text(value, "conversation"))
        }
        Request::ConversationRead { .. } => "marked read".into(),
        Request::ConversationDelete { .. } => format!(
            "deleted {} message(s)",
            value["deleted"].as_u64().unwrap_or_default()
        ),
        Request::Subscribe { .. } => "subscribed".into(),
        Request::Shutdown => "the daemon is stopping".into(),
    }
}

/// An event as one line.
pub fn event(seq: u64, event: &Event) -> String {
    let body = match event {
        Event::Message { message: m } => match serde_json::from_value::<StoredMessage>(m.clone()) {
            Ok(m) => format!("message in {}: {}", short(&m.conversation), message(&m)),
            Err(_) => "message".into(),
        },
        Event::ContactRequest { contact } => {
            let c = the_contact(contact);
            format!(
                "contact request from {} ({}?): `cwtch-node contact accept {}` or `contact refuse`",
                text(c, "address"),
                text(c, "name"),
                text(c, "address")
            )
        }
        Event::ContactChanged { contact, address } => {
            if contact.is_null() {
                format!("{} was forgotten", safe(address))
            } else {
                contact_changed(contact)
            }
        }
        Event::Connection {
            kind,
            address,
            state,
            reason,
        } => format!(
            "{} {} {}{}",
            safe(kind),
            safe(address),
            safe(state),
            reason
                .as_deref()
                .map(|r| format!(" ({})", safe(r)))
                .unwrap_or_default()
        ),
        Event::GroupInvite { invite } => format!(
            "invite to group {} from {}",
            text(invite, "name"),
            text(invite, "from")
        ),
        Event::Gap { group, text: t, .. } => format!("group {}: {}", short(group), safe(t)),
        Event::GroupMoved { group, servers, by } => format!(
            "group {} moved to {} by {}",
            short(group),
            servers.join(", "),
            safe(by)
        ),
        Event::GroupChanged { group } => format!("group {} changed", short(group)),
        Event::Lagged { dropped } => {
            format!("{dropped} event(s) were dropped: this reader was too slow")
        }
        Event::ShuttingDown => "the daemon is stopping".into(),
    };
    format!("{seq:>6} {body}")
}

fn contacts(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for entry in list.as_array().into_iter().flatten() {
        let c = &entry["contact"];
        let s = &entry["connection"];
        let pending = match entry["pending"].as_u64() {
            Some(n) if n > 0 => format!(" [{n} waiting to be delivered]"),
            _ => String::new(),
        };
        let unread = match entry["unread"].as_u64() {
            Some(n) if n > 0 => format!(" [{n} unread]"),
            _ => String::new(),
        };
        // An announced name is a claim: marked `?`, as everywhere.
        let announced = match text(c, "name") {
            n if n.is_empty() => n,
            n => format!("{n}?"),
        };
        let name = match c["nickname"].as_str() {
            Some(n) if !n.is_empty() => format!("{} ({announced})", safe(n)),
            _ => announced,
        };
        out.push_str(&format!(
            "{} {:<10} {:<14} {}{}{}{}\n",
            text(c, "address"),
            text(c, "state"),
            text(s, "state"),
            name,
            unread,
            pending,
            s["last_error"]
                .as_str()
                .map(|e| format!(" (last failure: {})", safe(e)))
                .unwrap_or_default(),
        ));
    }
    out
}

fn id_prefix(value: &serde_json::Value, key: &str) -> String {
    let id = text(value, key);
    id.get(..16).unwrap_or(&id).to_string()
}

fn invites(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for i in list.as_array().into_iter().flatten() {
        let id = id_prefix(i, "group");
        out.push_str(&format!(
            "invite to group {} ({id}) from {}: `cwtch-node group accept {id}` or `group refuse`\n",
            text(i, "name"),
            text(i, "from"),
        ));
    }
    out
}

fn groups(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for g in list.as_array().into_iter().flatten() {
        let unread = match g["unread"].as_u64() {
            Some(n) if n > 0 => format!(", {n} unread"),
            _ => String::new(),
        };
        out.push_str(&format!(
            "group {} ({}): {} pending, {} missing, {} recovered{unread}\n",
            text(g, "name"),
            id_prefix(g, "id"),
            g["pending"],
            g["missing"],
            g["recovered"],
        ));
        for s in g["previous_servers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  moved away from {} (still read for a while)\n",
                safe(s.as_str().unwrap_or_default())
            ));
        }
        for s in g["servers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  server {} {}{}\n",
                text(s, "server"),
                text(&s["connection"], "state"),
                s["connection"]["last_error"]
                    .as_str()
                    .map(|e| format!(" (last failure: {})", safe(e)))
                    .unwrap_or_default(),
            ));
        }
        for gap in g["gaps"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", safe(gap.as_str().unwrap_or_default())));
        }
    }
    out
}

/// The server directory, best first.
pub fn directory(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for s in list.as_array().into_iter().flatten() {
        let reachable = match s["reachable"].as_bool() {
            Some(true) => "reachable",
            Some(false) => "unreachable",
            None => "never tried",
        };
        let source = match (
            s["source"]["contact"]["address"].as_str(),
            s["source"]["group"]["member"].as_str(),
        ) {
            (Some(c), _) => format!("from contact {}", c.get(..12).unwrap_or(c)),
            (None, Some(m)) => format!("from a group member {}", m.get(..12).unwrap_or(m)),
            (None, None) => "own use".to_string(),
        };
        let o = &s["observed"];
        out.push_str(&format!(
            "{}  score {:>4}  {:<11}  {}{}  ({} ok, {} failed, {} lost)\n",
            s["address"].as_str().unwrap_or_default(),
            s["score"],
            reachable,
            source,
            if s["used"].as_bool() == Some(true) && s["source"] != "own_use" {
                ", used"
            } else {
                ""
            },
            o["connections"],
            o["failures"],
            o["lost"],
        ));
        let a = &s["advert"];
        if a.is_null() {
            out.push_str("    no advert yet\n");
            continue;
        }
        let r = &a["requirements"];
        let k = &a["retention"];
        let limit = |v: &serde_json::Value, unit: &str| match v.as_u64() {
            Some(0) | None => "no limit".to_string(),
            Some(n) => format!("{n}{unit}"),
        };
        out.push_str(&format!(
            "    {}proof of work {} bits, {} posts then 1 per {} ms, keeps {} blobs / {} / {}\n",
            if a["valid"].as_bool() == Some(true) {
                ""
            } else {
                "(advert expired) "
            },
            r["pow_bits"],
            r["rate_burst"],
            r["rate_interval_ms"],
            limit(&k["max_entries"], ""),
            limit(&k["max_bytes"], " bytes"),
            match k["max_age_secs"].as_u64() {
                Some(0) | None => "no age limit".to_string(),
                Some(s) if s % 86_400 == 0 => format!("{} days", s / 86_400),
                Some(s) => format!("{s} s"),
            },
        ));
    }
    if out.is_empty() {
        out.push_str("no servers known yet (use one with `group create`, or add contacts who do)");
    }
    out.trim_end().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn texts_from_others_cannot_forge_lines_or_escape_sequences() {
        assert_eq!(safe("hi\nbob: fake\u{1b}[2J"), "hi\\nbob: fake\\u{1b}[2J");
        let m = StoredMessage {
            seq: 1,
            conversation: "c".into(),
            id: 1,
            outgoing: false,
            author: "abcdefghijklmnop".into(),
            author_name: Some("eve\r\nme".into()),
            text: "x".into(),
            sent_at: 0,
            status: Delivery::Received,
            note: None,
        };
        let line = message(&m);
        assert!(!line.contains('\n') && !line.contains('\r'), "{line}");
    }

    #[test]
    fn contact_events_name_the_contact_inside_the_entry() {
        let entry = serde_json::json!({
            "contact": {"address": "abc", "name": "eve", "state": "request"},
            "connection": {"state": "connected"}, "pending": 0, "unread": 1
        });
        let line = event(
            1,
            &Event::ContactRequest {
                contact: entry.clone(),
            },
        );
        assert!(line.contains("from abc (eve?)"), "{line}");
        let line = event(
            2,
            &Event::ContactChanged {
                contact: entry,
                address: "abc".into(),
            },
        );
        assert!(line.ends_with("abc is now request"), "{line}");
    }

    #[test]
    fn invisible_format_characters_are_escaped() {
        // A right-to-left override would reorder the rest of the line; a
        // zero-width space makes "bob" and "b\u{200B}ob" look the same.
        assert_eq!(safe("evil\u{202E}gnp.exe"), "evil\\u{202e}gnp.exe");
        assert_eq!(safe("b\u{200B}ob"), "b\\u{200b}ob");
        assert_eq!(safe("\u{FEFF}x\u{2066}"), "\\u{feff}x\\u{2066}");
        // Letters, accents and emoji stay as they are, joined ones too.
        assert_eq!(
            safe("Zoë 你好 🙂 ❤\u{FE0F} 👨\u{200D}👩"),
            "Zoë 你好 🙂 ❤\u{FE0F} 👨\u{200D}👩"
        );
    }

    #[test]
    fn a_message_line_has_its_time_and_status() {
        let m = StoredMessage {
            seq: 1,
            conversation: "c".into(),
            id: 1,
            outgoing: false,
            author: "abcdefghijklmnop".into(),
            author_name: Some("bob?".into()),
            text: "hi".into(),
            sent_at: 1_796_459_878_509,
            status: Delivery::Received,
            note: None,
        };
        assert_eq!(
            message_in(&m, &jiff::tz::TimeZone::UTC),
            "2026-12-05 08:37 [received ] bob?: hi"
        );
        let lie = StoredMessage {
            sent_at: u64::MAX,
            ..m
        };
        assert!(message_in(&lie, &jiff::tz::TimeZone::UTC).starts_with("????"));
    }
}
