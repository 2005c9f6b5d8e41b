//! The state of `chat`, with no I/O: driven by the daemon's answers and
//! events ([`App::on_input`]) and by keys ([`App::on_key`]), it says what to
//! do next as [`Action`]s (requests to send, a bell, quit). The view
//! ([`super::view`]) draws it; the glue ([`super`]) carries actions out.

use std::collections::HashMap;

use ratatui::crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use serde_json::Value;

use crate::cli::format::safe;
use crate::control::api::{Event, EventEnvelope, Request};
use crate::model::{Delivery, StoredMessage};

/// A conversation, or an item of the left pane.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Conv {
    /// A contact (or a contact request), by address.
    Contact(String),
    /// A group we are in, by id.
    Group(String),
    /// A group invite waiting for our answer, by group id.
    Invite(String),
}

/// A contact as the left pane shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContactView {
    /// Their address.
    pub address: String,
    /// The name they announce (unverified; may be empty).
    pub name: String,
    /// Our name for them.
    pub nickname: Option<String>,
    /// `accepted`, `request` or `blocked`.
    pub state: String,
    /// The connection state (`disconnected`, ..., `failed`).
    pub conn: String,
    /// Why the connection last failed or closed.
    pub last_error: Option<String>,
    /// Messages not read yet.
    pub unread: u64,
    /// Items waiting to be delivered to them.
    pub pending: u64,
    /// The local number of the last message of theirs read (the most
    /// recent conversation has the highest).
    pub read_upto: u64,
}

impl ContactView {
    fn from_entry(entry: &Value) -> Option<ContactView> {
        let c = &entry["contact"];
        Some(ContactView {
            address: c["address"].as_str()?.to_string(),
            name: c["name"].as_str().unwrap_or_default().to_string(),
            nickname: c["nickname"]
                .as_str()
                .filter(|n| !n.is_empty())
                .map(str::to_string),
            state: c["state"].as_str().unwrap_or_default().to_string(),
            conn: entry["connection"]["state"]
                .as_str()
                .unwrap_or("disconnected")
                .to_string(),
            last_error: entry["connection"]["last_error"]
                .as_str()
                .map(str::to_string),
            unread: entry["unread"].as_u64().unwrap_or(0),
            pending: entry["pending"].as_u64().unwrap_or(0),
            read_upto: c["read_upto"].as_u64().unwrap_or(0),
        })
    }

    /// The name to show and whether it is ours (a nickname) rather than
    /// the one they announce (unverified: anyone can announce any name).
    /// Without either, the start of the address.
    pub fn shown(&self) -> (String, bool) {
        match &self.nickname {
            Some(n) => (safe(n), true),
            None if !self.name.is_empty() => (safe(&self.name), false),
            None => (short(&self.address), true),
        }
    }

    /// The name with the unverified mark (`bob?`) where it is theirs.
    pub fn label(&self) -> String {
        match self.shown() {
            (n, true) => n,
            (n, false) => format!("{n}?"),
        }
    }
}

/// A server of a group, with its connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerConn {
    /// Its address.
    pub address: String,
    /// Its connection state.
    pub conn: String,
    /// Why it last failed.
    pub last_error: Option<String>,
}

/// A group as the left pane shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GroupView {
    /// Its id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Messages not read yet.
    pub unread: u64,
    /// Its servers now.
    pub servers: Vec<ServerConn>,
    /// Servers it moved away from (still read for a while).
    pub previous: Vec<String>,
    /// Gap reports in plain words, newest last.
    pub gaps: Vec<String>,
    /// Messages known to be missing.
    pub missing: u64,
}

impl GroupView {
    fn from_value(g: &Value) -> Option<GroupView> {
        let strings = |v: &Value| -> Vec<String> {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        };
        Some(GroupView {
            id: g["id"].as_str()?.to_string(),
            name: g["name"].as_str().unwrap_or_default().to_string(),
            unread: g["unread"].as_u64().unwrap_or(0),
            servers: g["servers"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|s| ServerConn {
                    address: s["server"].as_str().unwrap_or_default().to_string(),
                    conn: s["connection"]["state"]
                        .as_str()
                        .unwrap_or("disconnected")
                        .to_string(),
                    last_error: s["connection"]["last_error"].as_str().map(str::to_string),
                })
                .collect(),
            previous: strings(&g["previous_servers"]),
            gaps: strings(&g["gaps"]),
            missing: g["missing"].as_u64().unwrap_or(0),
        })
    }

    /// The best state among its servers (one that works is enough).
    pub fn conn(&self) -> &str {
        const ORDER: [&str; 6] = [
            "synced",
            "authenticated",
            "connected",
            "connecting",
            "failed",
            "disconnected",
        ];
        ORDER
            .iter()
            .find(|s| self.servers.iter().any(|c| c.conn == **s))
            .copied()
            .unwrap_or("disconnected")
    }
}

/// A group invite waiting for our answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InviteView {
    /// The group's id.
    pub group: String,
    /// The group's name.
    pub name: String,
    /// Who invited us (an address).
    pub from: String,
    /// The group's servers.
    pub servers: Vec<String>,
}

/// What an answer from the daemon is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The status: contacts, groups, invites.
    Reload,
    /// A conversation's messages.
    Messages(Conv),
    /// A message we wrote (shown at once, pending).
    Sent(Conv),
    /// A contact added: select it.
    Added,
    /// A group created or joined: select it.
    Joined,
    /// The server directory, to show.
    Servers,
    /// The server directory, to find the server of a group to create: the
    /// one whose address starts with `server`, or the obvious one.
    CreateGroup {
        /// The group's name.
        name: String,
        /// The start of the server's address (none: choose).
        server: Option<String>,
    },
    /// Say this when it worked; reload the lists.
    Done(String),
    /// Nothing to show unless it failed.
    Quiet,
}

/// What the glue should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Send a request to the daemon; its answer comes back with `purpose`.
    Request {
        /// The request.
        request: Request,
        /// What its answer is for.
        purpose: Purpose,
    },
    /// Ring the terminal's bell.
    Bell,
    /// Leave chat.
    Quit,
}

fn req(request: Request, purpose: Purpose) -> Action {
    Action::Request { request, purpose }
}

/// What arrives from the daemon's side.
#[derive(Clone, Debug, PartialEq)]
pub enum Input {
    /// Connected (again) and subscribed to the event stream.
    Connected {
        /// The profile's address.
        address: String,
        /// The daemon restarted since the last connection (its state was
        /// reloaded from the start of its new run).
        restarted: bool,
    },
    /// The connection to the daemon is lost (retrying).
    Disconnected(String),
    /// An event of the stream.
    Event(EventEnvelope),
    /// The answer to a request.
    Answer {
        /// What it was for.
        purpose: Purpose,
        /// The answer, or the error in plain words.
        result: Result<Value, String>,
    },
    /// A line the daemon chat started printed.
    DaemonLine(String),
}

/// How a notice at the bottom looks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    /// Information.
    Info,
    /// Something worked.
    Ok,
    /// Something failed.
    Error,
}

/// What the conversation pane shows instead of a conversation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Overlay {
    /// The commands and keys.
    Help,
    /// The server directory, as lines.
    Servers(Vec<String>),
}

/// The text being typed: lines separated by `\n`, a cursor (a byte index).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Editor {
    /// The text.
    pub text: String,
    /// Where the cursor is (a char boundary of `text`).
    pub cursor: usize,
}

impl Editor {
    fn insert(&mut self, s: &str) {
        self.text.insert_str(self.cursor, s);
        self.cursor += s.len();
    }

    fn prev_boundary(&self) -> Option<usize> {
        self.text[..self.cursor]
            .char_indices()
            .last()
            .map(|(i, _)| i)
    }

    fn next_boundary(&self) -> Option<usize> {
        self.text[self.cursor..]
            .chars()
            .next()
            .map(|c| self.cursor + c.len_utf8())
    }

    fn backspace(&mut self) {
        if let Some(i) = self.prev_boundary() {
            self.text.replace_range(i..self.cursor, "");
            self.cursor = i;
        }
    }

    fn delete(&mut self) {
        if let Some(j) = self.next_boundary() {
            self.text.replace_range(self.cursor..j, "");
        }
    }

    fn delete_word(&mut self) {
        let before = &self.text[..self.cursor];
        let trimmed = before.trim_end();
        // After the last space of what is left (a space may be more than
        // one byte: U+3000, a no-break space).
        let start = trimmed
            .char_indices()
            .rev()
            .find(|(_, c)| c.is_whitespace())
            .map_or(0, |(i, c)| i + c.len_utf8());
        self.text.replace_range(start..self.cursor, "");
        self.cursor = start;
    }

    fn line_start(&self) -> usize {
        self.text[..self.cursor].rfind('\n').map_or(0, |i| i + 1)
    }

    fn line_end(&self) -> usize {
        self.text[self.cursor..]
            .find('\n')
            .map_or(self.text.len(), |i| self.cursor + i)
    }

    fn take(&mut self) -> String {
        self.cursor = 0;
        std::mem::take(&mut self.text)
    }

    /// The cursor as (line, column in chars).
    pub fn cursor_line_col(&self) -> (usize, usize) {
        let before = &self.text[..self.cursor];
        let line = before.matches('\n').count();
        let col = before[self.line_start()..].chars().count();
        (line, col)
    }
}

/// A line the conversation shows between messages: a gap, a move.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Notice {
    /// Shown after the messages up to this local sequence number.
    pub after_seq: u64,
    /// In plain words.
    pub text: String,
}

/// The whole state of the client.
pub struct App {
    /// Our address.
    pub address: String,
    /// Our name.
    pub name: String,
    /// Set when the daemon runs without Tor.
    pub transport_note: Option<String>,
    /// Contacts, as the daemon lists them.
    pub contacts: Vec<ContactView>,
    /// Groups.
    pub groups: Vec<GroupView>,
    /// Invites waiting for an answer.
    pub invites: Vec<InviteView>,
    /// The item in view.
    pub selected: Option<Conv>,
    /// The loaded conversations.
    pub messages: HashMap<Conv, Vec<StoredMessage>>,
    /// Gaps and moves seen while chat runs, per conversation.
    pub notices: HashMap<Conv, Vec<Notice>>,
    /// What is being typed.
    pub editor: Editor,
    /// Lines scrolled up from the newest (0: the newest is in view).
    pub scroll: usize,
    /// The last notice at the bottom.
    pub status: Option<(String, Level)>,
    /// Whether the daemon answers.
    pub connected: bool,
    /// Why not, when it does not.
    pub disconnected_why: Option<String>,
    /// Help or the server list, over the conversation.
    pub overlay: Option<Overlay>,
    /// Lines of the overlay scrolled down from its top.
    pub overlay_scroll: usize,
    /// The terminal's size (columns, rows).
    pub size: (u16, u16),
    /// The time zone of the times shown.
    pub tz: jiff::tz::TimeZone,
    /// The highest local message number seen (newer ones ring the bell).
    max_seq: u64,
    /// Set when `/delete` waits for a confirmation.
    confirm_delete: Option<Conv>,
    /// What was submitted and the purpose of the request it made: the
    /// text stays in the input until the daemon accepts it (a refused
    /// message or command is kept, to be corrected or sent again).
    awaiting: Option<(String, Purpose)>,
    /// Whether the status was loaded once.
    loaded: bool,
    /// What to select when the item in view goes (after `/refuse`: its
    /// neighbour).
    next_selection: Option<Conv>,
    /// The status shown, and since when (it goes after [`STATUS_FOR`]).
    status_seen: (Option<(String, Level)>, Option<std::time::Instant>),
}

/// Gap and move notices kept per conversation while chat runs (the
/// oldest go first; the daemon keeps its own gap reports).
pub const MAX_NOTICES: usize = 100;

/// How long a line at the bottom stays.
pub const STATUS_FOR: std::time::Duration = std::time::Duration::from_secs(10);

/// Why the daemon does not answer, said once and plainly (the client's
/// errors already say "the daemon").
pub fn plain_why(why: &str) -> String {
    let w = why.strip_prefix("the daemon's answer: ").unwrap_or(why);
    if w.starts_with("cannot reach the daemon") {
        return "it is not running".into();
    }
    match w.strip_prefix("the daemon ") {
        Some(rest) => format!("it {rest}"),
        None => w.to_string(),
    }
}

/// A short form of an address or id: its first 8 and last 4 characters.
pub fn short(address: &str) -> String {
    if address.len() <= 16 || !address.is_ascii() {
        return safe(address);
    }
    format!("{}…{}", &address[..8], &address[address.len() - 4..])
}

/// Whether `s` is a server's whole address (56 characters, perhaps with
/// `cwtch-server:` before it and `?...` after it), not the start of one.
fn whole_server_address(s: &str) -> bool {
    let bare = s.strip_prefix("cwtch-server:").unwrap_or(s);
    bare.split('?').next().unwrap_or(bare).len() >= 56
}

/// A connection state in plain words.
pub fn conn_word(state: &str) -> &'static str {
    match state {
        "authenticated" => "online",
        "synced" => "synced",
        "connected" => "handshake",
        "connecting" => "connecting",
        "failed" => "unreachable",
        _ => "offline",
    }
}

const HELP: &str = "\
Keys: Enter sends · Alt+Enter, Shift+Enter or Ctrl+J: new line · Up/Down or
Tab: choose a conversation · PgUp/PgDn: scroll · Esc: clear · Ctrl+C: quit

/add ADDRESS|IDENTIFIER [first message]   add a contact (and say hello)
/accept · /refuse        answer the contact request or group invite in view
/block · /unblock        block (refused at the handshake) or unblock
/nick NAME               our own name for this contact (/nick alone: theirs)
/group create NAME [SERVER]  a new group; SERVER: the start of a known
                         one's address (/servers), or a whole address
/group invite CONTACT    invite a contact to the group in view
/group move SERVER       move the group in view to another server
/group leave             leave the group in view (forgets it)
/delete                  delete this conversation's messages from this profile
/servers                 the servers we know, best first
/help · /quit            this help; leave chat

A name ending in ? is the one they announce: unverified (/nick sets yours).
Messages: pending (not acknowledged yet, with why it waits), delivered,
missing (known, not here yet), recovered (filled in later).";

/// The help text, line by line.
pub fn help_lines() -> impl Iterator<Item = &'static str> {
    HELP.lines()
}

impl App {
    /// A client with nothing loaded yet; times shown in `tz`.
    pub fn new(tz: jiff::tz::TimeZone) -> App {
        App {
            address: String::new(),
            name: String::new(),
            transport_note: None,
            contacts: Vec::new(),
            groups: Vec::new(),
            invites: Vec::new(),
            selected: None,
            messages: HashMap::new(),
            notices: HashMap::new(),
            editor: Editor::default(),
            scroll: 0,
            status: None,
            connected: false,
            disconnected_why: None,
            overlay: None,
            overlay_scroll: 0,
            size: (80, 24),
            tz,
            max_seq: 0,
            confirm_delete: None,
            awaiting: None,
            loaded: false,
            next_selection: None,
            status_seen: (None, None),
        }
    }

    fn say(&mut self, text: impl Into<String>, level: Level) {
        self.status = Some((text.into(), level));
    }

    /// The items of the left pane, in order: requests and invites first
    /// (they wait for an answer), then contacts, groups, blocked contacts.
    pub fn entries(&self) -> Vec<Conv> {
        let contacts = |state: &'static str| {
            self.contacts
                .iter()
                .filter(move |c| c.state == state)
                .map(|c| Conv::Contact(c.address.clone()))
        };
        contacts("request")
            .chain(self.invites.iter().map(|i| Conv::Invite(i.group.clone())))
            .chain(contacts("accepted"))
            .chain(self.groups.iter().map(|g| Conv::Group(g.id.clone())))
            .chain(contacts("blocked"))
            .collect()
    }

    /// A contact by address.
    pub fn contact(&self, address: &str) -> Option<&ContactView> {
        self.contacts.iter().find(|c| c.address == address)
    }

    /// A group by id.
    pub fn group(&self, id: &str) -> Option<&GroupView> {
        self.groups.iter().find(|g| g.id == id)
    }

    /// An invite by group id.
    pub fn invite(&self, id: &str) -> Option<&InviteView> {
        self.invites.iter().find(|i| i.group == id)
    }

    /// Who an address is, by name: us, a contact, or a short address.
    pub fn name_of(&self, address: &str) -> String {
        if address == self.address {
            return "you".into();
        }
        match self.contact(address) {
            Some(c) => c.label(),
            None => short(address),
        }
    }

    /// A conversation's title: the contact's or group's name.
    pub fn title_of(&self, conv: &Conv) -> String {
        match conv {
            Conv::Contact(a) => self.name_of(a),
            Conv::Group(id) => self
                .group(id)
                .map(|g| format!("#{}", safe(&g.name)))
                .unwrap_or_else(|| short(id)),
            Conv::Invite(id) => self
                .invite(id)
                .map(|i| format!("invite: #{}", safe(&i.name)))
                .unwrap_or_else(|| short(id)),
        }
    }

    /// What waits for the user's attention: unread messages outside the
    /// conversation in view, contact requests and invites.
    pub fn attention(&self) -> u64 {
        let unread_contacts: u64 = self
            .contacts
            .iter()
            .filter(|c| self.selected.as_ref() != Some(&Conv::Contact(c.address.clone())))
            .map(|c| c.unread)
            .sum();
        let unread_groups: u64 = self
            .groups
            .iter()
            .filter(|g| self.selected.as_ref() != Some(&Conv::Group(g.id.clone())))
            .map(|g| g.unread)
            .sum();
        let requests = self
            .contacts
            .iter()
            .filter(|c| c.state == "request")
            .count() as u64;
        unread_contacts + unread_groups + requests + self.invites.len() as u64
    }

    /// The terminal's title: a count, never a name.
    pub fn title(&self) -> String {
        match self.attention() {
            0 => "cwtch".to_string(),
            n => format!("cwtch ({n})"),
        }
    }

    fn reload() -> Action {
        req(Request::Status, Purpose::Reload)
    }

    /// Shows `conv`: loads its messages and marks it read.
    fn select(&mut self, conv: Conv) -> Vec<Action> {
        self.scroll = 0;
        self.overlay = None;
        self.confirm_delete = None;
        let mut out = Vec::new();
        let name = match &conv {
            Conv::Contact(a) => Some(a.clone()),
            Conv::Group(id) => Some(id.clone()),
            Conv::Invite(_) => None,
        };
        if let Some(name) = name {
            out.push(req(
                Request::Messages {
                    conversation: name.clone(),
                },
                Purpose::Messages(conv.clone()),
            ));
            if self.unread_of(&conv) > 0 {
                out.push(req(
                    Request::ConversationRead { conversation: name },
                    Purpose::Quiet,
                ));
            }
        }
        self.set_unread(&conv, 0);
        self.selected = Some(conv);
        out
    }

    fn unread_of(&self, conv: &Conv) -> u64 {
        match conv {
            Conv::Contact(a) => self.contact(a).map_or(0, |c| c.unread),
            Conv::Group(id) => self.group(id).map_or(0, |g| g.unread),
            Conv::Invite(_) => 0,
        }
    }

    fn set_unread(&mut self, conv: &Conv, n: u64) {
        match conv {
            Conv::Contact(a) => {
                if let Some(c) = self.contacts.iter_mut().find(|c| &c.address == a) {
                    c.unread = n;
                }
            }
            Conv::Group(id) => {
                if let Some(g) = self.groups.iter_mut().find(|g| &g.id == id) {
                    g.unread = n;
                }
            }
            Conv::Invite(_) => {}
        }
    }

    fn move_selection(&mut self, delta: isize) -> Vec<Action> {
        let entries = self.entries();
        if entries.is_empty() {
            return Vec::new();
        }
        let at = self
            .selected
            .as_ref()
            .and_then(|s| entries.iter().position(|e| e == s));
        let next = match at {
            None => 0,
            Some(i) => (i as isize + delta).rem_euclid(entries.len() as isize) as usize,
        };
        self.select(entries[next].clone())
    }

    /// Which conversation a message belongs to.
    fn conv_of(&self, m: &StoredMessage) -> Conv {
        if self.group(&m.conversation).is_some() {
            Conv::Group(m.conversation.clone())
        } else {
            Conv::Contact(m.conversation.clone())
        }
    }

    fn upsert(&mut self, conv: &Conv, m: StoredMessage) {
        if let Some(list) = self.messages.get_mut(conv) {
            match list.iter_mut().find(|x| x.seq == m.seq) {
                Some(x) => *x = m,
                None => {
                    let at = list.partition_point(|x| x.seq < m.seq);
                    list.insert(at, m);
                }
            }
        }
    }

    /// Handles what came from the daemon's side.
    pub fn on_input(&mut self, input: Input) -> Vec<Action> {
        match input {
            Input::Connected { address, restarted } => {
                self.connected = true;
                self.disconnected_why = None;
                self.address = address;
                if restarted {
                    // A new run numbers from what it stored.
                    self.max_seq = 0;
                    self.say("the daemon restarted: everything reloaded", Level::Info);
                }
                let mut out = vec![Self::reload()];
                if let Some(conv) = self.selected.clone() {
                    out.extend(self.select(conv));
                }
                out
            }
            Input::Disconnected(why) => {
                self.connected = false;
                self.disconnected_why = Some(plain_why(&why));
                Vec::new()
            }
            Input::DaemonLine(line) => {
                let line = safe(line.trim());
                if !line.is_empty() {
                    self.say(format!("daemon: {line}"), Level::Info);
                }
                Vec::new()
            }
            Input::Event(ev) => self.on_event(ev.event),
            Input::Answer { purpose, result } => self.on_answer(purpose, result),
        }
    }

    fn on_answer(&mut self, purpose: Purpose, result: Result<Value, String>) -> Vec<Action> {
        let mut answered = None;
        if let Some((text, awaited)) = &self.awaiting
            && *awaited == purpose
        {
            // Accepted: the input is cleared (unless it changed since). A
            // group to create waits for the creation itself.
            if result.is_ok()
                && self.editor.text == *text
                && !matches!(purpose, Purpose::CreateGroup { .. })
            {
                self.editor.take();
            }
            answered = self.awaiting.take().map(|(t, _)| t);
        }
        let value = match result {
            Ok(v) => v,
            Err(e) => {
                if purpose != Purpose::Reload {
                    self.say(safe(&e), Level::Error);
                }
                return Vec::new();
            }
        };
        match purpose {
            Purpose::Reload => self.load_status(&value),
            Purpose::Messages(conv) => {
                let list: Vec<StoredMessage> = value
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|m| serde_json::from_value(m.clone()).ok())
                    .collect();
                // Placeholders of missing group messages carry no number
                // of their own (u64::MAX): they must not stop later
                // messages from counting as new.
                if let Some(max) = list
                    .iter()
                    .filter(|m| m.status != Delivery::Missing)
                    .map(|m| m.seq)
                    .max()
                {
                    self.max_seq = self.max_seq.max(max);
                }
                self.messages.insert(conv, list);
                Vec::new()
            }
            Purpose::Sent(conv) => {
                if let Ok(m) = serde_json::from_value::<StoredMessage>(value) {
                    self.max_seq = self.max_seq.max(m.seq);
                    self.upsert(&conv, m);
                }
                Vec::new()
            }
            Purpose::Added => {
                let address = value["address"].as_str().unwrap_or_default().to_string();
                self.say(format!("added {}", self.name_of(&address)), Level::Ok);
                self.selected = Some(Conv::Contact(address));
                vec![Self::reload()]
            }
            Purpose::Joined => {
                let id = value["id"].as_str().unwrap_or_default().to_string();
                self.say(
                    format!("in group #{}", safe(value["name"].as_str().unwrap_or(""))),
                    Level::Ok,
                );
                self.selected = Some(Conv::Group(id));
                vec![Self::reload()]
            }
            Purpose::CreateGroup { name, server } => {
                let Some(server) = self.choose_server(&value, server.as_deref()) else {
                    return Vec::new();
                };
                if let Some(text) = answered {
                    self.awaiting = Some((text, Purpose::Joined));
                }
                vec![req(Request::GroupCreate { name, server }, Purpose::Joined)]
            }
            Purpose::Servers => {
                let lines = if value.as_array().is_none_or(Vec::is_empty) {
                    vec![
                        "No servers known yet.".to_string(),
                        "Create a group on one with /group create NAME SERVER (its whole"
                            .to_string(),
                        "address), or add contacts who use some: their servers show here."
                            .to_string(),
                    ]
                } else {
                    crate::cli::format::directory(&value)
                        .lines()
                        .map(safe)
                        .collect()
                };
                self.overlay = Some(Overlay::Servers(lines));
                self.overlay_scroll = 0;
                Vec::new()
            }
            Purpose::Done(what) => {
                self.say(what, Level::Ok);
                // The lists reload; the conversation in view is loaded
                // again if it is still there (its messages may be gone).
                if let Some(conv) = &self.selected {
                    self.messages.remove(conv);
                }
                vec![Self::reload()]
            }
            Purpose::Quiet => Vec::new(),
        }
    }

    /// The server for a new group, from the directory the daemon keeps
    /// (`list`, best first): the one whose address starts with `prefix`,
    /// or, without one, the only server, or the only one known to be
    /// reachable. Otherwise says why and which to choose from.
    fn choose_server(&mut self, list: &Value, prefix: Option<&str>) -> Option<String> {
        let known: Vec<(String, bool)> = list
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|s| {
                let a = s["address"].as_str()?.to_string();
                Some((a, s["reachable"].as_bool() == Some(true)))
            })
            .collect();
        let listed = |c: &[&(String, bool)]| {
            c.iter()
                .take(6)
                .map(|(a, _)| safe(a.get(..12).unwrap_or(a)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let candidates: Vec<&(String, bool)> = match prefix {
            Some(p) => {
                let p = p.strip_prefix("cwtch-server:").unwrap_or(p).to_lowercase();
                known.iter().filter(|(a, _)| a.starts_with(&p)).collect()
            }
            None => {
                let reachable: Vec<&(String, bool)> = known.iter().filter(|s| s.1).collect();
                if known.len() == 1 {
                    known.iter().collect()
                } else if reachable.len() == 1 {
                    reachable
                } else if known.is_empty() {
                    self.say(
                        "no server known yet: /group create NAME SERVER, with a server's whole address",
                        Level::Error,
                    );
                    return None;
                } else {
                    let all: Vec<&(String, bool)> = known.iter().collect();
                    self.say(
                        format!(
                            "which server? /group create NAME SERVER, SERVER the start of one of: {} (/servers)",
                            listed(&all)
                        ),
                        Level::Error,
                    );
                    return None;
                }
            }
        };
        match candidates.as_slice() {
            [one] => Some(one.0.clone()),
            [] => {
                self.say(
                    format!(
                        "no known server starts with {}: give its whole address (/servers lists those known)",
                        safe(prefix.unwrap_or_default())
                    ),
                    Level::Error,
                );
                None
            }
            many => {
                self.say(
                    format!(
                        "{} servers start with {}: {} (type more of the address)",
                        many.len(),
                        safe(prefix.unwrap_or_default()),
                        listed(many)
                    ),
                    Level::Error,
                );
                None
            }
        }
    }

    fn load_status(&mut self, v: &Value) -> Vec<Action> {
        self.address = v["address"].as_str().unwrap_or(&self.address).to_string();
        self.name = v["name"].as_str().unwrap_or_default().to_string();
        self.transport_note = v["transport_note"].as_str().map(str::to_string);
        self.contacts = v["contacts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(ContactView::from_entry)
            .collect();
        self.groups = v["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(GroupView::from_value)
            .collect();
        self.invites = v["invites"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| {
                Some(InviteView {
                    group: i["group"].as_str()?.to_string(),
                    name: i["name"].as_str().unwrap_or_default().to_string(),
                    from: i["from"].as_str().unwrap_or_default().to_string(),
                    servers: i["servers"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|s| s.as_str().map(str::to_string))
                        .collect(),
                })
            })
            .collect();
        self.loaded = true;
        let entries = self.entries();
        match self.selected.clone() {
            Some(s) if entries.contains(&s) => {
                // In view: whatever arrived is read.
                if self.unread_of(&s) > 0 {
                    return self.select(s);
                }
                if matches!(s, Conv::Contact(_) | Conv::Group(_)) && !self.messages.contains_key(&s)
                {
                    return self.select(s);
                }
                Vec::new()
            }
            _ => {
                let next = self
                    .next_selection
                    .take()
                    .filter(|n| entries.contains(n))
                    .or_else(|| self.default_selection(&entries));
                match next {
                    Some(conv) => self.select(conv),
                    None => {
                        self.selected = None;
                        Vec::new()
                    }
                }
            }
        }
    }

    /// What to show when nothing is: the most recently read contact's
    /// conversation, else the first contact or group, and a request or an
    /// invite only when there is nothing else.
    fn default_selection(&self, entries: &[Conv]) -> Option<Conv> {
        let recent = self
            .contacts
            .iter()
            .filter(|c| c.state == "accepted" && c.read_upto > 0)
            .max_by_key(|c| c.read_upto)
            .map(|c| Conv::Contact(c.address.clone()));
        recent
            .or_else(|| {
                entries
                    .iter()
                    .find(|e| match e {
                        Conv::Contact(a) => self.contact(a).is_some_and(|c| c.state == "accepted"),
                        Conv::Group(_) => true,
                        Conv::Invite(_) => false,
                    })
                    .cloned()
            })
            .or_else(|| entries.first().cloned())
    }

    /// The entry next to the one in view (after it, else before it): what
    /// to show once it is gone.
    fn neighbour(&self) -> Option<Conv> {
        let entries = self.entries();
        let at = entries
            .iter()
            .position(|e| Some(e) == self.selected.as_ref())?;
        entries
            .get(at + 1)
            .or_else(|| at.checked_sub(1).and_then(|i| entries.get(i)))
            .cloned()
    }

    /// Lets the line at the bottom go once it was shown for
    /// [`STATUS_FOR`]; true when the screen changed.
    pub fn tick(&mut self, now: std::time::Instant) -> bool {
        if self.status != self.status_seen.0 {
            self.status_seen = (self.status.clone(), Some(now));
            return false;
        }
        match self.status_seen.1 {
            Some(since) if self.status.is_some() && now.duration_since(since) >= STATUS_FOR => {
                self.status = None;
                self.status_seen = (None, Some(now));
                true
            }
            _ => false,
        }
    }

    fn on_event(&mut self, event: Event) -> Vec<Action> {
        match event {
            Event::Message { message } => {
                let Ok(m) = serde_json::from_value::<StoredMessage>(message) else {
                    return Vec::new();
                };
                let conv = self.conv_of(&m);
                let new = m.seq > self.max_seq;
                if m.status != Delivery::Missing {
                    self.max_seq = self.max_seq.max(m.seq);
                }
                let incoming = !m.outgoing && m.status == Delivery::Received;
                let in_view = self.selected.as_ref() == Some(&conv);
                let conversation = m.conversation.clone();
                let outgoing = m.outgoing;
                self.upsert(&conv, m);
                let mut out = Vec::new();
                if outgoing {
                    // Its delivery changes what waits for the contact.
                    out.push(Self::reload());
                }
                if new && incoming {
                    if in_view {
                        out.push(req(
                            Request::ConversationRead {
                                conversation: conversation.clone(),
                            },
                            Purpose::Quiet,
                        ));
                    } else {
                        let n = self.unread_of(&conv);
                        self.set_unread(&conv, n + 1);
                        out.push(Action::Bell);
                    }
                    if self.contact(&conversation).is_none() && self.group(&conversation).is_none()
                    {
                        out.push(Self::reload());
                    }
                }
                out
            }
            Event::ContactRequest { contact } => {
                let address = contact["contact"]["address"].as_str().unwrap_or_default();
                let mut out = vec![Self::reload()];
                if self.selected.as_ref() != Some(&Conv::Contact(address.to_string())) {
                    out.push(Action::Bell);
                }
                out
            }
            Event::GroupInvite { .. } => vec![Self::reload(), Action::Bell],
            Event::ContactChanged { .. } | Event::GroupChanged { .. } => vec![Self::reload()],
            Event::Connection {
                kind,
                address,
                state,
                reason,
            } => {
                if kind == "contact" {
                    if let Some(c) = self.contacts.iter_mut().find(|c| c.address == address) {
                        c.conn = state;
                        if reason.is_some() {
                            c.last_error = reason;
                        }
                    }
                } else {
                    for g in &mut self.groups {
                        for s in g.servers.iter_mut().filter(|s| s.address == address) {
                            s.conn = state.clone();
                            if reason.is_some() {
                                s.last_error = reason.clone();
                            }
                        }
                    }
                }
                Vec::new()
            }
            Event::Gap { group, text, .. } => {
                self.notice(Conv::Group(group), safe(&text));
                vec![Self::reload()]
            }
            Event::GroupMoved { group, servers, by } => {
                let to: Vec<String> = servers.iter().map(|s| short(s)).collect();
                let text = format!(
                    "{} moved this group to {} (the old server is still read for 14 days)",
                    self.name_of(&by),
                    to.join(", ")
                );
                self.notice(Conv::Group(group), text);
                vec![Self::reload()]
            }
            Event::Lagged { .. } => {
                let mut out = vec![Self::reload()];
                self.messages.clear();
                if let Some(conv) = self.selected.clone() {
                    out.extend(self.select(conv));
                }
                out
            }
            Event::ShuttingDown => {
                self.say("the daemon is stopping", Level::Error);
                Vec::new()
            }
        }
    }

    fn notice(&mut self, conv: Conv, text: String) {
        let after_seq = self
            .messages
            .get(&conv)
            .and_then(|l| l.last())
            .map_or(self.max_seq, |m| m.seq);
        let list = self.notices.entry(conv).or_default();
        list.push(Notice { after_seq, text });
        if list.len() > MAX_NOTICES {
            let extra = list.len() - MAX_NOTICES;
            list.drain(..extra);
        }
    }

    /// Handles a pasted text (kept as typed, new lines included).
    pub fn on_paste(&mut self, text: &str) {
        let text = text.replace("\r\n", "\n").replace('\r', "\n");
        self.editor.insert(&text);
    }

    /// Handles a key.
    pub fn on_key(&mut self, key: KeyEvent) -> Vec<Action> {
        let ctrl = key.modifiers.contains(KeyModifiers::CONTROL);
        let alt = key.modifiers.contains(KeyModifiers::ALT);
        let shift = key.modifiers.contains(KeyModifiers::SHIFT);
        match key.code {
            KeyCode::Char('c') if ctrl => vec![Action::Quit],
            KeyCode::Char('d') if ctrl && self.editor.text.is_empty() => vec![Action::Quit],
            KeyCode::Char('j') if ctrl => {
                self.editor.insert("\n");
                Vec::new()
            }
            KeyCode::Enter if alt || shift || ctrl => {
                self.editor.insert("\n");
                Vec::new()
            }
            KeyCode::Enter => self.submit(),
            KeyCode::Char('u') if ctrl => {
                let start = self.editor.line_start();
                self.editor
                    .text
                    .replace_range(start..self.editor.cursor, "");
                self.editor.cursor = start;
                Vec::new()
            }
            KeyCode::Char('w') if ctrl => {
                self.editor.delete_word();
                Vec::new()
            }
            KeyCode::Char('a') if ctrl => {
                self.editor.cursor = self.editor.line_start();
                Vec::new()
            }
            KeyCode::Char('e') if ctrl => {
                self.editor.cursor = self.editor.line_end();
                Vec::new()
            }
            KeyCode::Char('n') if ctrl => self.move_selection(1),
            KeyCode::Char('p') if ctrl => self.move_selection(-1),
            KeyCode::Char('l') if ctrl => Vec::new(),
            KeyCode::Char(c) if !ctrl => {
                let mut b = [0u8; 4];
                self.editor.insert(c.encode_utf8(&mut b));
                Vec::new()
            }
            KeyCode::Backspace => {
                self.editor.backspace();
                Vec::new()
            }
            KeyCode::Delete => {
                self.editor.delete();
                Vec::new()
            }
            KeyCode::Left => {
                if let Some(i) = self.editor.prev_boundary() {
                    self.editor.cursor = i;
                }
                Vec::new()
            }
            KeyCode::Right => {
                if let Some(j) = self.editor.next_boundary() {
                    self.editor.cursor = j;
                }
                Vec::new()
            }
            KeyCode::Home => {
                self.editor.cursor = self.editor.line_start();
                Vec::new()
            }
            KeyCode::End => {
                self.editor.cursor = self.editor.line_end();
                Vec::new()
            }
            KeyCode::Up | KeyCode::BackTab => self.move_selection(-1),
            KeyCode::Down | KeyCode::Tab => self.move_selection(1),
            // Over an overlay, the overlay scrolls; each is capped where
            // its end shows, so the other way answers at once.
            KeyCode::PageUp if self.overlay.is_some() => {
                self.overlay_scroll = self.overlay_scroll.saturating_sub(self.page());
                Vec::new()
            }
            KeyCode::PageDown if self.overlay.is_some() => {
                self.overlay_scroll =
                    (self.overlay_scroll + self.page()).min(super::view::overlay_max_scroll(self));
                Vec::new()
            }
            KeyCode::PageUp => {
                self.scroll =
                    (self.scroll + self.page()).min(super::view::conversation_max_scroll(self));
                Vec::new()
            }
            KeyCode::PageDown => {
                self.scroll = self.scroll.saturating_sub(self.page());
                Vec::new()
            }
            KeyCode::Esc => {
                if self.overlay.is_some() {
                    self.overlay = None;
                } else {
                    self.editor.take();
                }
                self.confirm_delete = None;
                Vec::new()
            }
            _ => Vec::new(),
        }
    }

    fn page(&self) -> usize {
        usize::from(self.size.1.saturating_sub(8)).max(1)
    }

    /// Enter: a command, or a message to the conversation in view.
    fn submit(&mut self) -> Vec<Action> {
        let text = self.editor.text.clone();
        if text.trim().is_empty() {
            return Vec::new();
        }
        if self.awaiting.is_some() {
            self.say(
                "waiting for the daemon's answer to what you sent",
                Level::Info,
            );
            return Vec::new();
        }
        if let Some(command) = text.strip_prefix('/') {
            let out = self.command(command.trim());
            // A refused command stays in the line, to be corrected; one
            // the daemon must answer stays until it accepts it.
            if let Some(purpose) = out.iter().find_map(|a| match a {
                Action::Request { purpose, .. } => Some(purpose.clone()),
                _ => None,
            }) {
                self.awaiting = Some((text, purpose));
            } else if !matches!(self.status, Some((_, Level::Error))) {
                self.editor.take();
            }
            return out;
        }
        let limit = match &self.selected {
            Some(Conv::Group(_)) => cwtch_proto::group::message::MAX_BODY_LEN,
            _ => cwtch_proto::peer::message::MAX_TEXT_LEN,
        };
        if text.len() > limit {
            self.say(
                format!(
                    "too long to send: {} bytes, at most {limit} (shorten it)",
                    text.len()
                ),
                Level::Error,
            );
            return Vec::new();
        }
        let Some(conv) = self.selected.clone() else {
            self.say(
                "no conversation in view: add a contact with /add ADDRESS",
                Level::Error,
            );
            return Vec::new();
        };
        let request = match &conv {
            Conv::Contact(a) => match self.contact(a).map(|c| c.state.as_str()) {
                Some("accepted") => Request::Send {
                    to: a.clone(),
                    text,
                },
                Some("request") => {
                    self.say(
                        "this is a contact request: /accept it first (or /refuse)",
                        Level::Error,
                    );
                    return Vec::new();
                }
                _ => {
                    self.say("this contact is blocked: /unblock first", Level::Error);
                    return Vec::new();
                }
            },
            Conv::Group(id) => Request::GroupSend {
                group: id.clone(),
                text,
            },
            Conv::Invite(_) => {
                self.say(
                    "this is an invite: /accept it to join (or /refuse)",
                    Level::Error,
                );
                return Vec::new();
            }
        };
        self.scroll = 0;
        self.status = None;
        self.awaiting = Some((self.editor.text.clone(), Purpose::Sent(conv.clone())));
        vec![req(request, Purpose::Sent(conv))]
    }

    fn selected_contact(&mut self, arg: &str) -> Option<String> {
        if !arg.is_empty() {
            return Some(arg.to_string());
        }
        match &self.selected {
            Some(Conv::Contact(a)) => Some(a.clone()),
            _ => {
                self.say(
                    "choose a contact first (Up/Down), or name one",
                    Level::Error,
                );
                None
            }
        }
    }

    fn selected_group(&mut self) -> Option<String> {
        match &self.selected {
            Some(Conv::Group(id)) => Some(id.clone()),
            _ => {
                self.say("choose a group first (Up/Down)", Level::Error);
                None
            }
        }
    }

    fn command(&mut self, line: &str) -> Vec<Action> {
        self.status = None;
        let (name, rest) = match line.split_once(char::is_whitespace) {
            Some((n, r)) => (n, r.trim()),
            None => (line, ""),
        };
        if name != "delete" {
            self.confirm_delete = None;
        }
        match name {
            "quit" | "q" | "exit" => vec![Action::Quit],
            "help" | "h" | "?" => {
                self.overlay_scroll = 0;
                self.overlay = match self.overlay {
                    Some(Overlay::Help) => None,
                    _ => Some(Overlay::Help),
                };
                Vec::new()
            }
            "servers" => vec![req(Request::Servers, Purpose::Servers)],
            "add" => {
                let (address, message) = match rest.split_once(char::is_whitespace) {
                    Some((a, m)) => (a, Some(m.trim().to_string())),
                    None => (rest, None),
                };
                if address.is_empty() {
                    self.say(
                        "usage: /add ADDRESS|IDENTIFIER [first message]",
                        Level::Error,
                    );
                    return Vec::new();
                }
                vec![req(
                    Request::ContactAdd {
                        address: address.to_string(),
                        message: message.filter(|m| !m.is_empty()),
                        nickname: None,
                    },
                    Purpose::Added,
                )]
            }
            "accept" | "refuse" => {
                let accept = name == "accept";
                match self.selected.clone() {
                    Some(Conv::Invite(id)) if rest.is_empty() => {
                        let n = self.title_of(&Conv::Invite(id.clone()));
                        if accept {
                            vec![req(Request::GroupAccept { group: id }, Purpose::Joined)]
                        } else {
                            self.next_selection = self.neighbour();
                            vec![req(
                                Request::GroupRefuse { group: id },
                                Purpose::Done(format!("refused the {n}")),
                            )]
                        }
                    }
                    _ => {
                        let Some(contact) = self.selected_contact(rest) else {
                            return Vec::new();
                        };
                        let who = self.name_of(&contact);
                        if accept {
                            vec![req(
                                Request::ContactAccept { contact },
                                Purpose::Done(format!("{who} is now a contact")),
                            )]
                        } else {
                            if self.selected.as_ref() == Some(&Conv::Contact(contact.clone())) {
                                self.next_selection = self.neighbour();
                            }
                            vec![req(
                                Request::ContactRefuse { contact },
                                Purpose::Done(format!("refused {who}: forgotten")),
                            )]
                        }
                    }
                }
            }
            "block" | "unblock" => {
                let Some(contact) = self.selected_contact(rest) else {
                    return Vec::new();
                };
                let who = self.name_of(&contact);
                if name == "block" {
                    vec![req(
                        Request::ContactBlock { contact },
                        Purpose::Done(format!("blocked {who}")),
                    )]
                } else {
                    vec![req(
                        Request::ContactUnblock { contact },
                        Purpose::Done(format!("unblocked {who}")),
                    )]
                }
            }
            "nick" | "rename" => {
                let Some(contact) = self.selected_contact("") else {
                    return Vec::new();
                };
                let what = if rest.is_empty() {
                    "back to the name they announce".to_string()
                } else {
                    format!("now called {}", safe(rest))
                };
                vec![req(
                    Request::ContactRename {
                        contact,
                        nickname: rest.to_string(),
                    },
                    Purpose::Done(what),
                )]
            }
            "delete" => {
                let Some(conv) = self.selected.clone() else {
                    self.say("no conversation in view", Level::Error);
                    return Vec::new();
                };
                let target = match &conv {
                    Conv::Contact(a) => a.clone(),
                    Conv::Group(id) => id.clone(),
                    Conv::Invite(_) => {
                        self.say("an invite has no messages: /refuse it", Level::Error);
                        return Vec::new();
                    }
                };
                let title = self.title_of(&conv);
                if self.confirm_delete.as_ref() != Some(&conv) {
                    self.confirm_delete = Some(conv);
                    self.say(
                        format!(
                            "/delete again to delete every message with {title} from this profile"
                        ),
                        Level::Info,
                    );
                    return Vec::new();
                }
                self.confirm_delete = None;
                vec![req(
                    Request::ConversationDelete {
                        conversation: target,
                    },
                    Purpose::Done(format!("deleted the messages with {title}")),
                )]
            }
            "group" => self.group_command(rest),
            _ => {
                self.say(
                    format!("unknown command /{}: /help lists them", safe(name)),
                    Level::Error,
                );
                Vec::new()
            }
        }
    }

    fn group_command(&mut self, rest: &str) -> Vec<Action> {
        let mut words = rest.split_whitespace();
        let sub = words.next().unwrap_or_default();
        let args: Vec<&str> = words.collect();
        match (sub, args.as_slice()) {
            // A whole address goes as it is; the start of one, or none,
            // is looked up among the servers the daemon knows.
            ("create", [name, server]) if whole_server_address(server) => {
                vec![req(
                    Request::GroupCreate {
                        name: name.to_string(),
                        server: server.to_string(),
                    },
                    Purpose::Joined,
                )]
            }
            ("create", [name, rest @ ..]) if rest.len() <= 1 => vec![req(
                Request::Servers,
                Purpose::CreateGroup {
                    name: name.to_string(),
                    server: rest.first().map(|s| s.to_string()),
                },
            )],
            ("invite", [contact]) => {
                let Some(group) = self.selected_group() else {
                    return Vec::new();
                };
                let who = self.name_of(contact);
                vec![req(
                    Request::GroupInvite {
                        group,
                        contact: contact.to_string(),
                    },
                    Purpose::Done(format!(
                        "invite to {who} queued (retried until acknowledged)"
                    )),
                )]
            }
            ("move", [server]) => {
                let Some(group) = self.selected_group() else {
                    return Vec::new();
                };
                vec![req(
                    Request::GroupMove {
                        group,
                        server: server.to_string(),
                    },
                    Purpose::Done(
                        "moved: members follow; the old server is read for 14 days".into(),
                    ),
                )]
            }
            ("leave", []) => {
                let Some(group) = self.selected_group() else {
                    return Vec::new();
                };
                let title = self.title_of(&Conv::Group(group.clone()));
                self.selected = None;
                vec![req(
                    Request::GroupLeave { group },
                    Purpose::Done(format!("left {title}")),
                )]
            }
            _ => {
                self.say(
                    "usage: /group create NAME [SERVER] | invite CONTACT | move SERVER | leave",
                    Level::Error,
                );
                Vec::new()
            }
        }
    }
}
