//! Whether a control port we found by probing (rather than one the user
//! named) is the system's tor and not another local user's listener.
//!
//! Anyone on the machine can listen on 127.0.0.1:9051 and answer
//! `PROTOCOLINFO` with `METHODS=NULL`, or with a cookie file they wrote;
//! `ADD_ONION` would then hand them the identity key. For a probed address
//! ([`super::ControlAuth::AutoProbed`]) the client therefore refuses NULL
//! authentication, requires the listening socket to belong to root, to us or
//! to a tor system account, and requires the cookie file to be a regular
//! file, not writable by group or others, owned by the listener's owner,
//! root or us.
//!
//! The parsers and decisions here are pure; the client reads the files.

use core::fmt;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;

/// The accounts tor runs as on common systems (Debian `debian-tor`, Arch
/// and others `tor`, the BSDs `_tor`, Fedora `toranon`).
pub const TOR_ACCOUNTS: &[&str] = &["debian-tor", "tor", "_tor", "toranon"];

/// Linux's `TCP_LISTEN` state in `/proc/net/tcp`.
const TCP_LISTEN: &str = "0A";

/// Why a probed control port is not trusted.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Distrust {
    /// It offers no authentication (`METHODS=NULL`): anyone could be
    /// answering.
    NullAuth,
    /// The owner of the listening socket could not be found.
    UnknownListener,
    /// The listening socket belongs to this uid: not root, not us, not a
    /// tor account.
    ListenerOwner(u32),
    /// The cookie file is not a regular file.
    CookieNotRegular(PathBuf),
    /// The cookie file is writable by group or others (its mode).
    CookieWritable(PathBuf, u32),
    /// The cookie file belongs to this uid: not the listener's owner, not
    /// root, not us.
    CookieOwner(PathBuf, u32),
}

impl fmt::Display for Distrust {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Distrust::NullAuth => f.write_str("it asks for no authentication (NULL)"),
            Distrust::UnknownListener => {
                f.write_str("the owner of its listening socket is unknown")
            }
            Distrust::ListenerOwner(uid) => write!(
                f,
                "its listening socket belongs to uid {uid}, neither root, this user nor a tor \
                 account"
            ),
            Distrust::CookieNotRegular(p) => {
                write!(f, "its cookie {} is not a regular file", p.display())
            }
            Distrust::CookieWritable(p, mode) => write!(
                f,
                "its cookie {} is writable by group or others (mode {:o})",
                p.display(),
                mode & 0o7777
            ),
            Distrust::CookieOwner(p, uid) => write!(
                f,
                "its cookie {} belongs to uid {uid}, neither the control port's owner, root nor \
                 this user",
                p.display()
            ),
        }
    }
}

/// The uid of the user running this process.
pub fn own_uid() -> u32 {
    rustix::process::getuid().as_raw()
}

/// The uids of the [`TOR_ACCOUNTS`] in a `/etc/passwd` text.
pub fn tor_account_uids(passwd: &str) -> Vec<u32> {
    passwd
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let uid = fields.nth(1)?.parse().ok()?;
            TOR_ACCOUNTS.contains(&name).then_some(uid)
        })
        .collect()
}

/// Whether a listening socket owned by `listener` may be our tor: root, us,
/// or one of the tor accounts.
pub fn check_listener(listener: u32, own: u32, tor_uids: &[u32]) -> Result<(), Distrust> {
    if listener == 0 || listener == own || tor_uids.contains(&listener) {
        Ok(())
    } else {
        Err(Distrust::ListenerOwner(listener))
    }
}

/// Whether a cookie file (`is_file`, `mode`, owner `uid`) may be trusted
/// for a control port whose socket belongs to `listener`.
pub fn check_cookie(
    path: PathBuf,
    is_file: bool,
    mode: u32,
    uid: u32,
    listener: u32,
    own: u32,
) -> Result<(), Distrust> {
    if !is_file {
        return Err(Distrust::CookieNotRegular(path));
    }
    if mode & 0o022 != 0 {
        return Err(Distrust::CookieWritable(path, mode));
    }
    if uid != listener && uid != 0 && uid != own {
        return Err(Distrust::CookieOwner(path, uid));
    }
    Ok(())
}

/// The uid owning the TCP socket that listens for `addr`, from the text of
/// `/proc/net/tcp` (`v6 == false`) or `/proc/net/tcp6` (`v6 == true`): an
/// entry in state LISTEN whose local address is `addr` or the wildcard
/// address with `addr`'s port. `None` when there is none, or when several
/// such entries have different owners.
pub fn listener_uid(proc_net_tcp: &str, v6: bool, addr: SocketAddr) -> Option<u32> {
    let mut found: Option<u32> = None;
    for line in proc_net_tcp.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (Some(local), Some(state), Some(uid)) = (fields.get(1), fields.get(3), fields.get(7))
        else {
            continue;
        };
        if *state != TCP_LISTEN {
            continue;
        }
        let Some((ip, port)) = parse_local(local, v6) else {
            continue;
        };
        if port != addr.port() || !(ip == addr.ip() || ip.is_unspecified()) {
            continue;
        }
        let Ok(uid) = uid.parse::<u32>() else {
            return None;
        };
        match found {
            Some(other) if other != uid => return None,
            _ => found = Some(uid),
        }
    }
    found
}

/// `0100007F:235B` (tcp) or 32 hex digits and a port (tcp6): the kernel
/// prints each 32-bit word of the address as it lies in memory.
fn parse_local(text: &str, v6: bool) -> Option<(IpAddr, u16)> {
    let (ip, port) = text.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| -> Option<[u8; 4]> {
        let hex = ip.get(i * 8..i * 8 + 8)?;
        Some(u32::from_str_radix(hex, 16).ok()?.to_ne_bytes())
    };
    let ip = if v6 {
        if ip.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, chunk) in bytes.chunks_exact_mut(4).enumerate() {
            chunk.copy_from_slice(&word(i)?);
        }
        let v6 = Ipv6Addr::from(bytes);
        // A dual-stack wildcard listener also serves IPv4.
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    } else {
        if ip.len() != 8 {
            return None;
        }
        IpAddr::V4(Ipv4Addr::from(word(0)?))
    };
    Some((ip, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex_v4(ip: [u8; 4]) -> String {
        format!("{:08X}", u32::from_ne_bytes(ip))
    }

    fn proc_tcp(entries: &[(String, &str, u32)]) -> String {
        let mut text = String::from(
            "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n",
        );
        for (i, (local, st, uid)) in entries.iter().enumerate() {
            text.push_str(&format!(
                "   {i}: {local} 00000000:0000 {st} 00000000:00000000 00:00000000 00000000  {uid}        0 1234 1 0000000000000000 100 0 0 10 0\n"
            ));
        }
        text
    }

    #[test]
    fn finds_the_owner_of_127_0_0_1_9051() {
        let lo = hex_v4([127, 0, 0, 1]);
        if cfg!(target_endian = "little") {
            assert_eq!(lo, "0100007F");
        }
        let text = proc_tcp(&[
            (format!("{lo}:0050"), TCP_LISTEN, 5),
            (format!("{lo}:235B"), "01", 7), // an established connection
            (format!("{lo}:235B"), TCP_LISTEN, 1000),
        ]);
        let addr: SocketAddr = "127.0.0.1:9051".parse().unwrap();
        assert_eq!(listener_uid(&text, false, addr), Some(1000));
        assert_eq!(
            listener_uid(&text, false, "127.0.0.1:9052".parse().unwrap()),
            None
        );
        // The wildcard address serves loopback too.
        let any = proc_tcp(&[("00000000:235B".into(), TCP_LISTEN, 107)]);
        assert_eq!(listener_uid(&any, false, addr), Some(107));
        // Two listeners with different owners: unknown.
        let two = proc_tcp(&[
            (format!("{lo}:235B"), TCP_LISTEN, 107),
            ("00000000:235B".into(), TCP_LISTEN, 1000),
        ]);
        assert_eq!(listener_uid(&two, false, addr), None);
        assert_eq!(listener_uid("garbage\nmore garbage", false, addr), None);
    }

    #[test]
    fn finds_tcp6_listeners() {
        let mut lo6 = String::new();
        for w in Ipv6Addr::LOCALHOST.octets().chunks_exact(4) {
            lo6.push_str(&hex_v4([w[0], w[1], w[2], w[3]]));
        }
        let text = proc_tcp(&[(format!("{lo6}:235B"), TCP_LISTEN, 42)]);
        assert_eq!(
            listener_uid(&text, true, "[::1]:9051".parse().unwrap()),
            Some(42)
        );
        let any = proc_tcp(&[(format!("{}:235B", "0".repeat(32)), TCP_LISTEN, 43)]);
        assert_eq!(
            listener_uid(&any, true, "127.0.0.1:9051".parse().unwrap()),
            Some(43)
        );
    }

    #[test]
    fn tor_accounts_from_passwd() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\n\
                      debian-tor:x:107:113::/var/lib/tor:/bin/false\n\
                      mallory:x:1001:1001::/home/mallory:/bin/sh\n\
                      broken\n";
        assert_eq!(tor_account_uids(passwd), vec![107]);
    }

    #[test]
    fn who_may_listen() {
        assert!(check_listener(0, 1000, &[]).is_ok());
        assert!(check_listener(1000, 1000, &[]).is_ok());
        assert!(check_listener(107, 1000, &[107]).is_ok());
        assert_eq!(
            check_listener(1001, 1000, &[107]),
            Err(Distrust::ListenerOwner(1001))
        );
    }

    #[test]
    fn which_cookie_files_are_trusted() {
        let p = || PathBuf::from("/run/tor/control.authcookie");
        assert!(check_cookie(p(), true, 0o100640, 107, 107, 1000).is_ok());
        assert!(check_cookie(p(), true, 0o100600, 1000, 107, 1000).is_ok());
        assert!(check_cookie(p(), true, 0o100644, 0, 107, 1000).is_ok());
        assert_eq!(
            check_cookie(p(), true, 0o100666, 107, 107, 1000),
            Err(Distrust::CookieWritable(p(), 0o100666))
        );
        assert!(check_cookie(p(), true, 0o100660, 107, 107, 1000).is_err());
        assert_eq!(
            check_cookie(p(), false, 0o020666, 0, 107, 1000),
            Err(Distrust::CookieNotRegular(p()))
        );
        assert_eq!(
            check_cookie(p(), true, 0o100600, 1001, 107, 1000),
            Err(Distrust::CookieOwner(p(), 1001))
        );
    }
}
