//! The local control socket: how one-shot commands (`cwtch-node status`,
//! `send`, ...) talk to the running daemon.
//!
//! A Unix socket `control.sock` in the home directory, which only the owner
//! can open (the directory is 0700 and the socket 0600). One JSON request
//! per line; one JSON response per line (`messages --follow` streams lines
//! until the client hangs up).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use smol::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use smol::net::unix::{UnixListener, UnixStream};

use crate::peer::PeerNode;

/// The socket's file name inside the home directory.
pub const SOCKET_FILE: &str = "control.sock";
/// The longest request line the daemon reads (a text is at most 4 KiB;
/// JSON escaping can make it six times longer).
pub const MAX_REQUEST_LEN: usize = 64 * 1024;

/// A request from the command line to the daemon.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Request {
    /// Our address, name, contacts and their connection states.
    Status,
    /// Our address.
    Address,
    /// Add a contact, optionally with a first message.
    ContactAdd {
        /// Their address.
        address: String,
        /// A first message.
        message: Option<String>,
    },
    /// Accept a contact request.
    ContactAccept {
        /// Their address.
        address: String,
    },
    /// Block a contact.
    ContactBlock {
        /// Their address.
        address: String,
    },
    /// List contacts.
    ContactList,
    /// Send a text to a contact.
    Send {
        /// Their address.
        address: String,
        /// The text.
        text: String,
    },
    /// Create a group on a server.
    GroupCreate {
        /// Its name.
        name: String,
        /// The server (`cwtch-server:<address>` or an address).
        server: String,
    },
    /// Invite a contact to a group.
    GroupInvite {
        /// The group's name or id.
        group: String,
        /// The contact's address.
        address: String,
    },
    /// Post to a group.
    GroupSend {
        /// The group's name or id.
        group: String,
        /// The text.
        text: String,
    },
    /// Move a group to another server.
    GroupMove {
        /// The group's name or id.
        group: String,
        /// The new server.
        server: String,
    },
    /// List groups with their servers' states and gaps.
    GroupList,
    /// The group invites waiting for an answer.
    GroupInvites,
    /// Join the group of a pending invite.
    GroupAccept {
        /// The invite's group name or id.
        group: String,
    },
    /// Refuse a pending invite.
    GroupRefuse {
        /// The invite's group name or id.
        group: String,
    },
    /// Create or rotate our mailbox on a server (offline first contact).
    MailboxCreate {
        /// The server (`cwtch-server:<address>` or an address).
        server: String,
        /// Stop reading the replaced mailboxes at once (no grace period).
        #[serde(default)]
        revoke_old: bool,
    },
    /// Our identifier: extended with the mailbox, or the plain address.
    Identifier,
    /// The messages of a conversation.
    Messages {
        /// A contact's address or a group's id.
        conversation: String,
        /// Keep streaming new messages.
        follow: bool,
    },
    /// The server directory, best first.
    Servers,
}

/// The answer: `{"ok": true, "result": ...}` or `{"ok": false, "error": "..."}`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Response {
    /// Whether the request succeeded.
    pub ok: bool,
    /// The result, when it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<serde_json::Value>,
    /// Why not, in one line, when it did not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Response {
    fn ok(result: serde_json::Value) -> Self {
        Response {
            ok: true,
            result: Some(result),
            error: None,
        }
    }
    fn err(error: impl std::fmt::Display) -> Self {
        Response {
            ok: false,
            result: None,
            error: Some(error.to_string()),
        }
    }
}

/// The socket path for a home directory.
pub fn socket_path(home: &Path) -> PathBuf {
    home.join(SOCKET_FILE)
}

/// Serves the control socket until the process ends.
pub async fn serve(node: Arc<PeerNode>) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let path = socket_path(&node.home);
    let _ = std::fs::remove_file(&path);
    let listener = UnixListener::bind(&path)?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
    loop {
        let (stream, _) = listener.accept().await?;
        let node = node.clone();
        smol::spawn(async move {
            if let Err(e) = handle_client(node, stream).await {
                tracing::debug!("control client: {e}");
            }
        })
        .detach();
    }
}

async fn write_line(stream: &mut UnixStream, value: &impl Serialize) -> std::io::Result<()> {
    let mut line = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    line.push(b'\n');
    stream.write_all(&line).await
}

async fn handle_client(node: Arc<PeerNode>, stream: UnixStream) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.clone());
    let mut writer = stream;
    let mut line = String::new();
    // A request is one line of at most MAX_REQUEST_LEN bytes.
    let n = (&mut reader)
        .take(MAX_REQUEST_LEN as u64)
        .read_line(&mut line)
        .await?;
    if n == 0 {
        return Ok(());
    }
    if !line.ends_with('\n') && n >= MAX_REQUEST_LEN {
        return write_line(
            &mut writer,
            &Response::err(format!("bad request: longer than {MAX_REQUEST_LEN} bytes")),
        )
        .await;
    }
    let request: Request = match serde_json::from_str(&line) {
        Ok(r) => r,
        Err(e) => {
            return write_line(&mut writer, &Response::err(format!("bad request: {e}"))).await;
        }
    };
    if let Request::Messages {
        conversation,
        follow: true,
    } = &request
    {
        let rx = node.follow();
        let history = node.messages(conversation);
        match history {
            Ok(list) => {
                for m in list {
                    write_line(&mut writer, &m).await?;
                }
            }
            Err(e) => return write_line(&mut writer, &Response::err(e)).await,
        }
        while let Ok(m) = rx.recv().await {
            if &m.conversation == conversation {
                write_line(&mut writer, &m).await?;
            }
        }
        return Ok(());
    }
    let response = execute(&node, request);
    write_line(&mut writer, &response).await
}

fn json<T: Serialize>(value: T) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}

fn execute(node: &PeerNode, request: Request) -> Response {
    let result = match request {
        Request::Status => {
            let pending = node.pending_per_contact();
            let contacts: Vec<_> = node
                .contacts()
                .into_iter()
                .map(|(c, s)| {
                    let pending = pending.get(&c.address).copied().unwrap_or(0);
                    serde_json::json!({"contact": c, "connection": s, "pending": pending})
                })
                .collect();
            Ok(serde_json::json!({
                "address": node.address(),
                "name": node.name(),
                "outbox": node.outbox_len().unwrap_or(0),
                "contacts": contacts,
                "groups": node.groups(),
                "invites": node.invites(),
                "first_contact_pending": node.first_contact_pending(),
            }))
        }
        Request::Address => Ok(serde_json::json!({"address": node.address()})),
        Request::ContactAdd { address, message } => {
            node.contact_add(&address, message.as_deref()).map(json)
        }
        Request::ContactAccept { address } => node.contact_accept(&address).map(json),
        Request::ContactBlock { address } => node.contact_block(&address).map(json),
        Request::ContactList => Ok(json(
            node.contacts()
                .into_iter()
                .map(|(c, s)| serde_json::json!({"contact": c, "connection": s}))
                .collect::<Vec<_>>(),
        )),
        Request::Send { address, text } => node.send_text(&address, &text).map(json),
        Request::GroupCreate { name, server } => node
            .group_create(&name, &server)
            .map(|g| serde_json::json!({"id": g.id, "name": g.name, "servers": g.servers})),
        Request::GroupInvite { group, address } => node
            .group_invite(&group, &address)
            .map(|()| serde_json::json!({"invited": address})),
        Request::GroupSend { group, text } => node.group_send(&group, &text).map(json),
        Request::GroupMove { group, server } => node.group_move(&group, &server).map(json),
        Request::GroupList => Ok(json(node.groups())),
        Request::GroupInvites => Ok(json(node.invites())),
        Request::GroupAccept { group } => node
            .invite_accept(&group)
            .map(|g| serde_json::json!({"id": g.id, "name": g.name, "servers": g.servers})),
        Request::GroupRefuse { group } => node.invite_refuse(&group).map(json),
        Request::Messages { conversation, .. } => node.messages(&conversation).map(json),
        Request::MailboxCreate { server, revoke_old } => node.mailbox_create(&server, revoke_old),
        Request::Identifier => Ok(node.identifier()),
        Request::Servers => Ok(json(node.servers())),
    };
    match result {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(e),
    }
}

/// Client side: sends one request and calls `on_line` for every line of
/// the answer (one, or a stream for `--follow`).
pub fn request(
    home: &Path,
    request: &Request,
    mut on_line: impl FnMut(&str) -> bool,
) -> Result<(), String> {
    use std::io::{BufRead, Write};
    let path = socket_path(home);
    let mut stream = std::os::unix::net::UnixStream::connect(&path).map_err(|e| {
        format!(
            "cannot reach the daemon at {} ({e}): is `cwtch-node --home {} run` running?",
            path.display(),
            home.display()
        )
    })?;
    let mut line = serde_json::to_vec(request).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| e.to_string())?;
    let reader = std::io::BufReader::new(stream);
    for line in reader.lines() {
        let line = line.map_err(|e| e.to_string())?;
        if !on_line(&line) {
            break;
        }
    }
    Ok(())
}
