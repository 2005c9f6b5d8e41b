//! The echo bot (`examples/echo_bot.rs`) against a real daemon: a person
//! writes to it and gets every text back, once, also across a restart of
//! the bot's daemon.

mod support;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use support::{Daemon, cli, conversation, init, wait_for, wait_ready};

fn dev(dir: &Path) -> Vec<String> {
    vec!["--dev-tcp".into(), dir.display().to_string()]
}

/// The example, built as this test's build was (a test run of one target
/// does not build the examples).
fn bot_binary() -> PathBuf {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--quiet",
            "-p",
            "cwtch-node",
            "--example",
            "echo_bot",
        ])
        .status()
        .expect("cargo");
    assert!(status.success(), "building the example");
    let node = PathBuf::from(env!("CARGO_BIN_EXE_cwtch-node"));
    node.parent().unwrap().join("examples").join("echo_bot")
}

struct Bot(Child);

impl Drop for Bot {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_echo_bot_answers_every_message_once() {
    let tmp = tempfile::tempdir().unwrap();
    let devdir = tmp.path().join("dev");
    let (bot_home, me_home) = (tmp.path().join("bot"), tmp.path().join("me"));
    let bot = init(&bot_home, "echo");
    let me = init(&me_home, "me");
    let mut bot_daemon = Daemon::start(&bot_home, false, &dev(&devdir));
    let _me_daemon = Daemon::start(&me_home, false, &dev(&devdir));
    wait_ready(&bot_home);
    wait_ready(&me_home);
    let _bot = Bot(Command::new(bot_binary())
        .arg("--home")
        .arg(&bot_home)
        .stdin(Stdio::null())
        .spawn()
        .unwrap());
    cli(&me_home, &["contact", "add", &bot, "--message", "ping"]).unwrap();
    wait_for("the echo", Duration::from_secs(60), || {
        conversation(&me_home, &bot)
            .iter()
            .any(|m| !m.0 && m.1 == "echo: ping")
            .then_some(())
    });
    cli(&me_home, &["send", &bot, "second"]).unwrap();
    wait_for("the second echo", Duration::from_secs(60), || {
        conversation(&me_home, &bot)
            .iter()
            .any(|m| m.1 == "echo: second")
            .then_some(())
    });
    // The bot's daemon restarts; the bot reconnects and goes on.
    drop(bot_daemon);
    bot_daemon = Daemon::start(&bot_home, false, &dev(&devdir));
    wait_ready(&bot_home);
    cli(&me_home, &["send", &bot, "third"]).unwrap();
    wait_for("the third echo", Duration::from_secs(60), || {
        conversation(&me_home, &bot)
            .iter()
            .any(|m| m.1 == "echo: third")
            .then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    let echoes: Vec<String> = conversation(&me_home, &bot)
        .into_iter()
        .filter(|m| !m.0)
        .map(|m| m.1)
        .collect();
    assert_eq!(
        echoes,
        ["echo: ping", "echo: second", "echo: third"],
        "each once"
    );
    let theirs = conversation(&bot_home, &me);
    assert_eq!(theirs.len(), 6);
    drop(bot_daemon);
}
