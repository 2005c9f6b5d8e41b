//! A bot that answers every message it receives with the same text: the
//! control API (API.md) from a program's side.
//!
//! It talks to a running peer daemon through its control socket: it
//! subscribes to the event stream, accepts contact requests (a bot that
//! talks to anyone; drop that part for one that should not), and answers
//! each text that arrives from a contact. When the daemon restarts it
//! reconnects and asks for everything since the last event it saw, so
//! nothing is answered twice and nothing is missed.
//!
//! ```text
//! cwtch-node --home bot init --name echo
//! cwtch-node --home bot run &
//! cargo run --example echo_bot -- --home bot
//! ```
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::time::Duration;

use cwtch_node::control::api::{Event, Request};
use cwtch_node::control::client::{Client, ClientError};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut home: Option<PathBuf> = None;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--home" => home = args.next().map(PathBuf::from),
            _ => {
                eprintln!("usage: echo_bot [--home DIR]");
                std::process::exit(2);
            }
        }
    }
    let home = cwtch_node::cli::run::home_dir(home);
    // The daemon's run and the last event of it we saw.
    let mut since: Option<(u64, u64)> = None;
    loop {
        match serve(&home, &mut since) {
            Ok(()) => eprintln!("echo_bot: the daemon stopped; waiting for it to come back"),
            Err(e) => eprintln!("echo_bot: {e}; retrying"),
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Answers until the daemon goes away; `since` is the daemon's run and the
/// last event seen in it.
fn serve(home: &std::path::Path, since: &mut Option<(u64, u64)>) -> Result<(), ClientError> {
    let mut events = Client::connect(home, "echo_bot")?;
    let mut requests = Client::connect(home, "echo_bot")?;
    let me = events.welcome().address.clone();
    eprintln!("echo_bot: answering as {me}");
    let run = events.welcome().run;
    // The same run: everything after the last event seen. A new run (the
    // daemon restarted): everything it kept since it started. The first
    // time: from now on.
    let from = match *since {
        Some((r, seq)) if r == run => Some(seq),
        Some(_) => Some(0),
        None => None,
    };
    events.subscribe(from)?;
    while let Some(ev) = events.next_event(None)? {
        *since = Some((run, ev.seq));
        match ev.event {
            Event::ContactRequest { contact } => {
                let address = contact["contact"]["address"].as_str().unwrap_or_default();
                requests.request(Request::ContactAccept {
                    contact: address.to_string(),
                })?;
            }
            Event::Message { message } => {
                // Only what others wrote, once: when it is first stored.
                let incoming = message["outgoing"] == false && message["status"] == "received";
                let from = message["conversation"].as_str().unwrap_or_default();
                let text = message["text"].as_str().unwrap_or_default();
                if incoming && from == message["author"].as_str().unwrap_or_default() {
                    let send = Request::Send {
                        to: from.to_string(),
                        text: format!("echo: {text}"),
                    };
                    // A request's first text may come before the request
                    // event: accept, then answer.
                    let answer = requests.request(send.clone()).or_else(|_| {
                        requests.request(Request::ContactAccept {
                            contact: from.to_string(),
                        })?;
                        requests.request(send)
                    });
                    if let Err(e) = answer {
                        eprintln!("echo_bot: cannot answer: {e}");
                    }
                }
            }
            Event::ShuttingDown => return Ok(()),
            _ => {}
        }
    }
    Ok(())
}
