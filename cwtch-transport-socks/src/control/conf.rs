//! What tor's configuration says, from `GETCONF` answers (control-spec
//! 3.3): the `SocksPort` lines and whether the one we dial through has the
//! `ExtendedErrors` flag, i.e. whether tor tells us *why* an onion dial
//! failed (SOCKS replies 0xF0-0xF7) or only the basic codes 1-8.
//!
//! Tor answers `GETCONF SocksPort` with one line per configured port,
//! flags included, as written in the torrc:
//!
//! ```text
//! 250-SocksPort=127.0.0.1:auto ExtendedErrors IsolateDestAddr
//! 250 SocksPort=9150
//! ```
//!
//! and with a bare `250 SocksPort` when none is configured (tor's default,
//! `9050` without flags). Everything here is pure.

use core::net::{IpAddr, SocketAddr};

use super::reply::Reply;

/// Tor's `SocksPort` when none is configured.
pub const DEFAULT_SOCKS_PORT: &str = "9050";

/// The flag that makes tor send its onion-service reply codes.
pub const EXTENDED_ERRORS: &str = "ExtendedErrors";

/// The values of `key` in a `GETCONF` answer, one per `key=value` line, in
/// order (an option set several times, like `SocksPort`, has several). A
/// bare `key` line, an option at its default, gives none.
pub fn parse_conf_values(reply: &Reply, key: &str) -> Vec<String> {
    reply
        .lines
        .iter()
        .filter_map(|l| {
            let (k, v) = l.text.split_once('=')?;
            (k.eq_ignore_ascii_case(key) && !v.is_empty()).then(|| v.to_owned())
        })
        .collect()
}

/// Where a `SocksPort` line listens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PortAddr {
    /// `0`: no SOCKS port.
    Disabled,
    /// A fixed TCP port; `ip` is `None` when any address may match (none
    /// given, a host name, or an unspecified address).
    Tcp {
        /// The address, when the line gives one that restricts it.
        ip: Option<IpAddr>,
        /// The port.
        port: u16,
    },
    /// `auto` (tor picks the port), on `ip` as for [`PortAddr::Tcp`].
    Auto {
        /// The address, when the line gives one that restricts it.
        ip: Option<IpAddr>,
    },
    /// A unix socket, or a form we do not read.
    Other,
}

impl PortAddr {
    fn admits(self, ours: SocketAddr) -> bool {
        let ip_ok = |ip: Option<IpAddr>| ip.is_none_or(|ip| ip == ours.ip());
        match self {
            PortAddr::Tcp { ip, port } => port == ours.port() && ip_ok(ip),
            PortAddr::Auto { ip } => ip_ok(ip),
            PortAddr::Disabled | PortAddr::Other => false,
        }
    }
}

/// One `SocksPort` value: its address and whether it has `ExtendedErrors`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SocksPortLine {
    /// Where it listens.
    pub addr: PortAddr,
    /// Whether the flags include `ExtendedErrors` (any case).
    pub extended_errors: bool,
}

/// Reads a `SocksPort` value: `[address:]port|auto|unix:path [flags]`.
pub fn parse_socks_port(value: &str) -> SocksPortLine {
    let mut words = value.split_whitespace();
    let addr = words.next().map_or(PortAddr::Other, parse_port_addr);
    let extended_errors = words.any(|w| w.eq_ignore_ascii_case(EXTENDED_ERRORS));
    SocksPortLine {
        addr,
        extended_errors,
    }
}

fn parse_port_addr(word: &str) -> PortAddr {
    if word
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("unix:"))
    {
        return PortAddr::Other;
    }
    let (host, port) = match word.rsplit_once(':') {
        // A bare IPv6 address without brackets is not a port line.
        Some((host, _)) if host.contains(':') && !host.starts_with('[') => {
            return PortAddr::Other;
        }
        Some((host, port)) => (Some(host), port),
        None => (None, word),
    };
    let ip = host
        .map(|h| h.trim_start_matches('[').trim_end_matches(']'))
        .and_then(|h| h.parse::<IpAddr>().ok())
        .filter(|ip| !ip.is_unspecified());
    if port.eq_ignore_ascii_case("auto") {
        return PortAddr::Auto { ip };
    }
    match port.parse::<u16>() {
        Ok(0) if host.is_none() => PortAddr::Disabled,
        Ok(0) | Err(_) => PortAddr::Other,
        Ok(port) => PortAddr::Tcp { ip, port },
    }
}

/// Whether the SOCKS port `ours` of this tor has `ExtendedErrors`, from its
/// `GETCONF SocksPort` values (`conf`, empty when at the default) and the
/// addresses it listens on (`GETINFO net/listeners/socks`).
///
/// `None` when that cannot be told: tor does not listen at `ours` (then
/// `ours` is some other tor's port, or tor's network is disabled), or the
/// lines that could be it disagree (two `auto` ports, one with the flag).
pub fn socks_extended_errors(
    conf: &[String],
    listeners: &[SocketAddr],
    ours: SocketAddr,
) -> Option<bool> {
    let listening = listeners
        .iter()
        .any(|l| l.port() == ours.port() && (l.ip() == ours.ip() || l.ip().is_unspecified()));
    if !listening {
        return None;
    }
    let lines: Vec<SocksPortLine> = if conf.is_empty() {
        vec![parse_socks_port(DEFAULT_SOCKS_PORT)]
    } else {
        conf.iter().map(|v| parse_socks_port(v)).collect()
    };
    let agree = |candidates: &[&SocksPortLine]| {
        let first = candidates.first()?.extended_errors;
        candidates
            .iter()
            .all(|l| l.extended_errors == first)
            .then_some(first)
    };
    let fixed: Vec<&SocksPortLine> = lines
        .iter()
        .filter(|l| matches!(l.addr, PortAddr::Tcp { .. }) && l.addr.admits(ours))
        .collect();
    if !fixed.is_empty() {
        return agree(&fixed);
    }
    let auto: Vec<&SocksPortLine> = lines
        .iter()
        .filter(|l| matches!(l.addr, PortAddr::Auto { .. }) && l.addr.admits(ours))
        .collect();
    agree(&auto)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::reply::ReplyParser;

    fn reply(text: &str) -> Reply {
        let mut p = ReplyParser::new();
        p.push(text.as_bytes()).unwrap();
        p.next_reply().unwrap().unwrap()
    }

    fn conf(lines: &[&str]) -> Vec<String> {
        lines.iter().map(|l| (*l).to_owned()).collect()
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn getconf_values() {
        // As tor 0.4.9 answers, checked on a real tor.
        let r = reply(
            "250-SocksPort=127.0.0.1:auto ExtendedErrors IsolateDestAddr\r\n250 SocksPort=127.0.0.1:auto\r\n",
        );
        assert_eq!(
            parse_conf_values(&r, "SocksPort"),
            [
                "127.0.0.1:auto ExtendedErrors IsolateDestAddr",
                "127.0.0.1:auto"
            ]
        );
        assert!(parse_conf_values(&reply("250 SocksPort\r\n"), "SocksPort").is_empty());
        let r = reply("250-SocksPort=9050\r\n250 ControlPort=9051\r\n");
        assert_eq!(parse_conf_values(&r, "socksport"), ["9050"]);
        assert_eq!(parse_conf_values(&r, "ControlPort"), ["9051"]);
    }

    #[test]
    fn socks_port_lines() {
        let tcp = |ip: Option<&str>, port| PortAddr::Tcp {
            ip: ip.map(|i| i.parse().unwrap()),
            port,
        };
        for (value, want, ee) in [
            ("9050", tcp(None, 9050), false),
            (
                "127.0.0.1:9050 ExtendedErrors",
                tcp(Some("127.0.0.1"), 9050),
                true,
            ),
            ("[::1]:9150 extendederrors", tcp(Some("::1"), 9150), true),
            ("0.0.0.0:9050 IsolateDestAddr", tcp(None, 9050), false),
            ("localhost:9050", tcp(None, 9050), false),
            (
                "127.0.0.1:auto ExtendedErrors",
                PortAddr::Auto {
                    ip: Some("127.0.0.1".parse().unwrap()),
                },
                true,
            ),
            ("auto", PortAddr::Auto { ip: None }, false),
            ("0", PortAddr::Disabled, false),
            ("unix:/run/tor/socks ExtendedErrors", PortAddr::Other, true),
            ("::1:9050", PortAddr::Other, false),
            ("127.0.0.1:99999", PortAddr::Other, false),
            ("", PortAddr::Other, false),
            // A flag in the address's place is not the flag.
            ("ExtendedErrors", PortAddr::Other, false),
        ] {
            let line = parse_socks_port(value);
            assert_eq!(line.addr, want, "{value}");
            assert_eq!(line.extended_errors, ee, "{value}");
        }
    }

    #[test]
    fn which_port_is_ours() {
        let ours = addr("127.0.0.1:9050");
        let listening = [ours];
        let ee = |c: &[&str], l: &[SocketAddr], o| socks_extended_errors(&conf(c), l, o);
        // Default: 9050, no flags.
        assert_eq!(ee(&[], &listening, ours), Some(false));
        assert_eq!(ee(&["9050 ExtendedErrors"], &listening, ours), Some(true));
        assert_eq!(ee(&["127.0.0.1:9050"], &listening, ours), Some(false));
        // The line for our port decides, not the others.
        let two = ["9050", "9150 ExtendedErrors"];
        assert_eq!(ee(&two, &listening, ours), Some(false));
        let o2 = addr("127.0.0.1:9150");
        assert_eq!(ee(&two, &[ours, o2], o2), Some(true));
        // Our launched tor: one `auto` line.
        let auto = addr("127.0.0.1:41234");
        let launched = ["127.0.0.1:auto ExtendedErrors"];
        assert_eq!(ee(&launched, &[auto], auto), Some(true));
        // Two auto lines that disagree: cannot tell.
        let mixed = ["127.0.0.1:auto ExtendedErrors", "127.0.0.1:auto"];
        assert_eq!(ee(&mixed, &[auto, addr("127.0.0.1:41235")], auto), None);
        // Not listening there (another tor's port, or DisableNetwork).
        assert_eq!(ee(&["9050 ExtendedErrors"], &[], ours), None);
        assert_eq!(ee(&[], &[addr("127.0.0.1:9999")], ours), None);
        // Listening on all addresses.
        assert_eq!(
            ee(
                &["0.0.0.0:9050 ExtendedErrors"],
                &[addr("0.0.0.0:9050")],
                ours
            ),
            Some(true)
        );
        // Configured for another address than the one we dial.
        assert_eq!(
            ee(
                &["10.0.0.1:9050 ExtendedErrors"],
                &[addr("0.0.0.0:9050")],
                ours
            ),
            None
        );
    }
}
