//! Plain-words output for people (the `--json` forms are the raw values).

use crate::control::Request;
use crate::model::{Delivery, StoredMessage};

/// One message as a line: `[delivered] alice…: text`.
pub fn message(m: &StoredMessage) -> String {
    let status = match m.status {
        Delivery::Pending => "pending  ",
        Delivery::Delivered => "delivered",
        Delivery::Received => "received ",
        Delivery::Missing => "missing  ",
        Delivery::Recovered => "recovered",
    };
    let who = if m.outgoing { "me" } else { short(&m.author) };
    match &m.note {
        Some(note) => format!("[{status}] {who}: {} ({note})", safe(&m.text)),
        None => format!("[{status}] {who}: {}", safe(&m.text)),
    }
}

/// Text another party wrote, safe to print on a terminal: control
/// characters (a newline that would forge a line, an escape sequence) are
/// shown escaped, never obeyed.
pub fn safe(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
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

/// The human form of a daemon answer.
pub fn human(request: &Request, value: &serde_json::Value) -> String {
    match request {
        Request::Address => value["address"].as_str().unwrap_or_default().to_string(),
        Request::Status => {
            let mut out = format!(
                "{} ({})\noutgoing queue: {} message(s)\n",
                value["address"].as_str().unwrap_or_default(),
                value["name"].as_str().unwrap_or_default(),
                value["outbox"]
            );
            out.push_str(&contacts(&value["contacts"]));
            out.push_str(&groups(&value["groups"]));
            out.push_str(&invites(&value["invites"]));
            out.trim_end().to_string()
        }
        Request::ContactList => contacts(value).trim_end().to_string(),
        Request::Messages { .. } => value
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|m| serde_json::from_value::<StoredMessage>(m.clone()).ok())
                    .map(|m| message(&m))
                    .collect::<Vec<_>>()
                    .join("\n")
            })
            .unwrap_or_default(),
        Request::Send { .. } => "queued (pending until the contact acknowledges it)".into(),
        Request::GroupCreate { .. } => format!(
            "group {} created: {}",
            value["name"].as_str().unwrap_or_default(),
            value["id"].as_str().unwrap_or_default()
        ),
        Request::GroupInvite { .. } => {
            "invite queued (pending until the contact acknowledges it)".into()
        }
        Request::GroupSend { .. } => "posted (pending until the server stores it durably)".into(),
        Request::GroupMove { .. } => format!(
            "{} (members follow; the old server is still read for 14 days)",
            value["text"].as_str().unwrap_or_default()
        ),
        Request::GroupList => groups(value).trim_end().to_string(),
        Request::GroupInvites => {
            let text = invites(value);
            if text.is_empty() {
                "no group invites wait for an answer".into()
            } else {
                text.trim_end().to_string()
            }
        }
        Request::GroupAccept { .. } => format!(
            "joined group {} ({})",
            safe(value["name"].as_str().unwrap_or_default()),
            value["id"].as_str().unwrap_or_default()
        ),
        Request::GroupRefuse { .. } => format!(
            "refused the invite to {}",
            safe(value["name"].as_str().unwrap_or_default())
        ),
        Request::MailboxCreate { .. } | Request::Identifier => {
            value["identifier"].as_str().unwrap_or_default().to_string()
        }
        Request::Servers => crate::directory::human(value),
        Request::ContactAdd { .. }
        | Request::ContactAccept { .. }
        | Request::ContactBlock { .. } => {
            format!(
                "{} is now {}",
                value["address"].as_str().unwrap_or_default(),
                value["state"].as_str().unwrap_or_default()
            )
        }
    }
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
        out.push_str(&format!(
            "{} {:<10} {:<14} {}{}{}\n",
            c["address"].as_str().unwrap_or_default(),
            c["state"].as_str().unwrap_or_default(),
            s["state"].as_str().unwrap_or_default(),
            safe(c["name"].as_str().unwrap_or_default()),
            pending,
            s["last_error"]
                .as_str()
                .map(|e| format!(" (last failure: {e})"))
                .unwrap_or_default(),
        ));
    }
    out
}

fn invites(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for i in list.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "invite to group {} ({}) from {}: `cwtch-node group accept {}` or `group refuse`\n",
            safe(i["name"].as_str().unwrap_or_default()),
            i["group"]
                .as_str()
                .unwrap_or_default()
                .get(..16)
                .unwrap_or_default(),
            i["from"].as_str().unwrap_or_default(),
            i["group"]
                .as_str()
                .unwrap_or_default()
                .get(..16)
                .unwrap_or_default(),
        ));
    }
    out
}

fn groups(list: &serde_json::Value) -> String {
    let mut out = String::new();
    for g in list.as_array().into_iter().flatten() {
        out.push_str(&format!(
            "group {} ({}): {} pending, {} missing, {} recovered\n",
            safe(g["name"].as_str().unwrap_or_default()),
            g["id"]
                .as_str()
                .unwrap_or_default()
                .get(..16)
                .unwrap_or_default(),
            g["pending"],
            g["missing"],
            g["recovered"],
        ));
        for s in g["previous_servers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  moved away from {} (still read for a while)\n",
                s.as_str().unwrap_or_default()
            ));
        }
        for s in g["servers"].as_array().into_iter().flatten() {
            out.push_str(&format!(
                "  server {} {}{}\n",
                s["server"].as_str().unwrap_or_default(),
                s["connection"]["state"].as_str().unwrap_or_default(),
                s["connection"]["last_error"]
                    .as_str()
                    .map(|e| format!(" (last failure: {e})"))
                    .unwrap_or_default(),
            ));
        }
        for gap in g["gaps"].as_array().into_iter().flatten() {
            out.push_str(&format!("  {}\n", gap.as_str().unwrap_or_default()));
        }
    }
    out
}
