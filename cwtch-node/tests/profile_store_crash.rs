//! Crash safety: a child process (this test binary, re-executed in the
//! child role) commits transactions in a loop, each writing a counter record
//! and a message record together, and prints each committed counter. The
//! parent kills it with SIGKILL at random moments, then checks that the
//! store opens, passes SQLite's integrity check and authenticates every
//! record, that every counter the child reported is there, and that every
//! transaction is all or nothing.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cwtch_node::profile_store::{ProfileStore, ProfileStoreError, Table};

const CHILD_ENV: &str = "CWTCH_PROFILE_STORE_CRASH_CHILD";
const PW: &[u8] = b"crash test password";
const KILLS: usize = 25;

fn random_u64() -> u64 {
    RandomState::new().build_hasher().finish()
}

fn message_key(n: u64) -> Vec<u8> {
    format!("msg-{n:010}").into_bytes()
}

/// The message of transaction `n`: its length varies (up to half a page,
/// some records with overflow pages) so that transactions touch several
/// pages of the database.
fn message_body(n: u64) -> Vec<u8> {
    let len = 50 + (n * 7919 % 2000) as usize;
    let mut body = format!("message {n}: ").into_bytes();
    body.resize(len, b'a' + (n % 26) as u8);
    body
}

fn counter(store: &ProfileStore) -> Result<u64, ProfileStoreError> {
    Ok(match store.get(Table::Meta, b"counter")? {
        None => 0,
        Some(v) => u64::from_le_bytes(
            v[..]
                .try_into()
                .map_err(|_| ProfileStoreError::Corrupt("counter"))?,
        ),
    })
}

/// The child role: runs only when the parent re-executes this binary with
/// `CHILD_ENV` set; otherwise does nothing.
#[test]
fn crash_child_role() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let store = ProfileStore::open(&path, PW).unwrap();
    let mut n = counter(&store).unwrap();
    let stdout = std::io::stdout();
    loop {
        n += 1;
        store
            .transaction(|tx| {
                tx.put(Table::Meta, b"counter", &n.to_le_bytes())?;
                tx.put(Table::Messages, &message_key(n), &message_body(n))?;
                // Now and then, delete an old message in the same transaction.
                if n.is_multiple_of(5) {
                    tx.delete(Table::Outbox, &message_key(n - 5))?;
                }
                tx.put(Table::Outbox, &message_key(n), b"queued")?;
                Ok(())
            })
            .unwrap();
        let mut out = stdout.lock();
        writeln!(out, "COMMITTED {n}").unwrap();
        out.flush().unwrap();
    }
}

/// Runs the child for a random time, kills it, returns the counters it reported.
fn run_and_kill(path: &Path, delay: Duration) -> Vec<u64> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child_role",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let seen = Arc::clone(&seen);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // The harness may print "test crash_child_role ... " on the
                // same line as the first report.
                if let Some((_, n)) = line.rsplit_once("COMMITTED ") {
                    seen.lock().unwrap().push(n.trim().parse::<u64>().unwrap());
                }
            }
        })
    };
    std::thread::sleep(delay);
    child.kill().unwrap(); // SIGKILL on Unix
    let status = child.wait().unwrap();
    assert!(
        !status.success(),
        "the child should have been killed: {status:?}"
    );
    // Killed by us, not dead of its own (a panic in the child exits with 101).
    #[cfg(unix)]
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "the child died before the kill: {status:?}"
    );
    reader.join().unwrap();
    Arc::try_unwrap(seen).unwrap().into_inner().unwrap()
}

/// Checks the store after a kill; returns its counter.
fn check_store(path: &Path, reported: &[u64], previous: u64) -> u64 {
    let store = ProfileStore::open(path, PW).unwrap();
    let records = store.integrity_check().unwrap();
    let c = counter(&store).unwrap();
    assert!(
        c >= previous,
        "the counter went back from {previous} to {c}"
    );
    let max_reported = reported.iter().copied().max().unwrap_or(previous);
    // Every reported commit is durable; at most one more commit can have
    // happened between the last report and the kill.
    assert!(c >= max_reported, "counter {c} < reported {max_reported}");
    assert!(
        c <= max_reported + 1,
        "counter {c} > reported {max_reported} + 1"
    );

    // All or nothing: messages 1..=c exist with their bodies, and no other.
    let messages = store.scan(Table::Messages).unwrap();
    assert_eq!(messages.len() as u64, c, "messages vs counter");
    for (i, (k, v)) in messages.iter().enumerate() {
        let n = i as u64 + 1;
        assert_eq!(k, &message_key(n));
        assert_eq!(&v[..], &message_body(n)[..], "message {n}");
    }
    assert!(
        store
            .get(Table::Messages, &message_key(c + 1))
            .unwrap()
            .is_none()
    );
    // The outbox: transaction n put entry n and, when n % 5 == 0, deleted
    // entry n - 5. Check the entries near the end one by one, and the total
    // through the record count (a full scan costs a decryption per record).
    let present = |m: u64| m >= 1 && m <= c && !(m.is_multiple_of(5) && m + 5 <= c);
    for m in c.saturating_sub(12)..=c + 1 {
        let got = store.get(Table::Outbox, &message_key(m)).unwrap();
        assert_eq!(got.is_some(), present(m), "outbox entry {m} at counter {c}");
    }
    let outbox = (1..=c).filter(|&m| present(m)).count() as u64;
    assert_eq!(
        records as u64,
        u64::from(c > 0) + c + outbox,
        "record count"
    );
    c
}

#[test]
fn committed_transactions_survive_sigkill() {
    if std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path: PathBuf = dir.path().join("profile.db");
    drop(ProfileStore::create_insecure_for_tests(&path, PW).unwrap());

    let mut c = 0;
    let mut kills_mid_run = 0;
    for round in 0..KILLS {
        let delay = Duration::from_millis(10 + random_u64() % 250);
        let reported = run_and_kill(&path, delay);
        if !reported.is_empty() {
            kills_mid_run += 1;
        }
        let next = check_store(&path, &reported, c);
        println!(
            "round {round}: killed after {delay:?}, {} commits reported, counter {c} -> {next}",
            reported.len()
        );
        c = next;
    }
    println!("{KILLS} kills, {kills_mid_run} while committing, {c} transactions in all");
    assert!(kills_mid_run >= KILLS / 2, "too few kills landed mid-run");
}

const PW_CHILD_ENV: &str = "CWTCH_PROFILE_STORE_PWCHANGE_CHILD";
/// The child cycles through these: A -> B -> C -> A ...
const PASSWORDS: [&[u8]; 3] = [b"password A", b"password B", b"password C"];
const PW_RECORDS: u32 = 60;

/// Opens with whichever password is current; returns its index.
fn open_any(path: &Path) -> (ProfileStore, usize) {
    for (i, pw) in PASSWORDS.iter().enumerate() {
        match ProfileStore::open(path, pw) {
            Ok(s) => return (s, i),
            Err(ProfileStoreError::WrongPassword) => {}
            Err(e) => panic!("open: {e:?}"),
        }
    }
    panic!("no password opens the profile");
}

/// The second child role: changes the password round the cycle in a loop.
#[test]
fn password_change_child_role() {
    let Ok(path) = std::env::var(PW_CHILD_ENV) else {
        return;
    };
    let (store, mut current) = open_any(Path::new(&path));
    let stdout = std::io::stdout();
    loop {
        let next = (current + 1) % PASSWORDS.len();
        store
            .change_password(PASSWORDS[current], PASSWORDS[next])
            .unwrap();
        current = next;
        let mut out = stdout.lock();
        writeln!(out, "CHANGED {current}").unwrap();
        out.flush().unwrap();
    }
}

/// A password change killed at any moment leaves the profile under the old
/// or the new password, never anything else, with every record intact; and
/// every change the child reported is durable.
#[test]
fn password_changes_survive_sigkill() {
    if std::env::var_os(PW_CHILD_ENV).is_some() || std::env::var_os(CHILD_ENV).is_some() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("profile.db");
    let store = ProfileStore::create_insecure_for_tests(&path, PASSWORDS[0]).unwrap();
    store
        .transaction(|tx| {
            for i in 0..PW_RECORDS {
                tx.put(
                    Table::Messages,
                    &i.to_le_bytes(),
                    &message_body(u64::from(i)),
                )?;
            }
            Ok(())
        })
        .unwrap();
    drop(store);

    let mut current = 0;
    let mut changes = 0;
    let mut unreported = 0;
    for _ in 0..20 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "password_change_child_role",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(PW_CHILD_ENV, &path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let reader = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains("CHANGED "))
                .count()
        });
        std::thread::sleep(Duration::from_millis(10 + random_u64() % 800));
        child.kill().unwrap();
        let status = child.wait().unwrap();
        #[cfg(unix)]
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "the child died before the kill: {status:?}"
        );
        let reported = reader.join().unwrap();
        changes += reported;

        let (store, now) = open_any(&path);
        // `reported` changes are durable; one more may have committed
        // before its report. Nothing else.
        let steps = (now + PASSWORDS.len() - current) % PASSWORDS.len();
        let k = reported % PASSWORDS.len();
        let k1 = (reported + 1) % PASSWORDS.len();
        assert!(
            steps == k || steps == k1,
            "{reported} changes reported, password moved {steps} steps"
        );
        if steps == k1 {
            unreported += 1;
        }
        current = now;
        assert_eq!(store.integrity_check().unwrap(), PW_RECORDS as usize);
        let msgs = store.scan(Table::Messages).unwrap();
        assert_eq!(msgs.len(), PW_RECORDS as usize);
        for (k, v) in msgs {
            let i = u32::from_le_bytes(k.try_into().unwrap());
            assert_eq!(&v[..], &message_body(u64::from(i))[..]);
        }
    }
    println!(
        "20 kills during password changes: {changes} changes committed and reported, \
         {unreported} kills between a commit and its report"
    );
    assert!(changes > 0, "no password change ever completed");
}
