//! Pure parsers of what tor tells us: bootstrap status, `HS_DESC` events,
//! `ADD_ONION` answers, listener addresses and the control port file.

use core::net::SocketAddr;

use super::reply::{Arg, ParseError, Reply, arg, has_word, split_args};

/// Tor's bootstrap status (control-spec 5.5.1, "BOOTSTRAP").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootstrapStatus {
    /// Percent done, 0 to 100.
    pub progress: u8,
    /// Machine-readable phase, e.g. `conn_done`, `done`.
    pub tag: String,
    /// Human-readable phase.
    pub summary: String,
    /// Set when tor reports a problem (`WARN BOOTSTRAP ... WARNING=`).
    pub warning: Option<String>,
}

impl BootstrapStatus {
    /// Whether tor has finished bootstrapping.
    pub fn is_done(&self) -> bool {
        self.progress >= 100
    }
}

/// Parses `NOTICE BOOTSTRAP PROGRESS=n TAG=t SUMMARY="s"` as found in
/// `GETINFO status/bootstrap-phase` and in `650 STATUS_CLIENT` events (the
/// leading `STATUS_CLIENT` word is allowed).
pub fn parse_bootstrap(text: &str) -> Result<BootstrapStatus, ParseError> {
    let bad = ParseError::BadField {
        what: "bootstrap status",
    };
    let args = split_args(text)?;
    if !has_word(&args, "BOOTSTRAP") {
        return Err(bad);
    }
    let progress: u8 = arg(&args, "PROGRESS")
        .and_then(|p| p.parse().ok())
        .filter(|p| *p <= 100)
        .ok_or(bad)?;
    let severity_warn = args
        .iter()
        .any(|a| matches!(a, Arg::Word(w) if w == "WARN" || w == "ERR"));
    Ok(BootstrapStatus {
        progress,
        tag: arg(&args, "TAG").unwrap_or("").to_owned(),
        summary: arg(&args, "SUMMARY").unwrap_or("").to_owned(),
        warning: arg(&args, "WARNING").map(str::to_owned).or_else(|| {
            severity_warn.then(|| arg(&args, "REASON").unwrap_or("warning").to_owned())
        }),
    })
}

/// What an `HS_DESC` event says (control-spec 5.5.3 "HS_DESC").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsDescEvent {
    /// `REQUESTED`, `UPLOAD`, `RECEIVED`, `UPLOADED`, `IGNORE`, `FAILED`, `CREATED`.
    pub action: String,
    /// The onion address without `.onion`.
    pub address: String,
    /// The directory involved (`$FINGERPRINT~nick` or `UNKNOWN`).
    pub hs_dir: String,
    /// `REASON=` of a `FAILED` event.
    pub reason: Option<String>,
}

/// Parses the text of an `HS_DESC` event (`HS_DESC ACTION ADDR AUTH HSDIR ...`).
/// Returns `Ok(None)` for other events.
pub fn parse_hs_desc(text: &str) -> Result<Option<HsDescEvent>, ParseError> {
    let Some(rest) = text.strip_prefix("HS_DESC ") else {
        return Ok(None);
    };
    let args = split_args(rest)?;
    let word = |i: usize| match args.get(i) {
        Some(Arg::Word(w)) => Some(w.clone()),
        _ => None,
    };
    let bad = ParseError::BadField {
        what: "HS_DESC event",
    };
    Ok(Some(HsDescEvent {
        action: word(0).ok_or(bad.clone())?,
        address: word(1).ok_or(bad)?,
        hs_dir: word(3).unwrap_or_default(),
        reason: arg(&args, "REASON").map(str::to_owned),
    }))
}

/// The `revision-counter` of an encoded v3 onion descriptor (its outer,
/// unencrypted layer: rend-spec-v3 2.4), if it has one.
pub fn parse_revision_counter(descriptor: &str) -> Option<u64> {
    descriptor
        .lines()
        .find_map(|l| l.strip_prefix("revision-counter "))
        .and_then(|v| v.trim().parse().ok())
}

/// The `ServiceID` of an `ADD_ONION` answer.
pub fn parse_service_id(reply: &Reply) -> Result<&str, ParseError> {
    reply
        .value_of("ServiceID")
        .filter(|s| !s.is_empty())
        .ok_or(ParseError::BadField {
            what: "ADD_ONION ServiceID",
        })
}

/// Parses a `GETINFO net/listeners/*` value: quoted, space-separated
/// addresses. Entries that are not `ip:port` (unix sockets) are skipped.
pub fn parse_listeners(value: &str) -> Result<Vec<SocketAddr>, ParseError> {
    Ok(split_args(value)?
        .into_iter()
        .filter_map(|a| match a {
            Arg::Word(w) => w.parse().ok(),
            Arg::Pair(..) => None,
        })
        .collect())
}

/// Parses the file tor writes for `ControlPortWriteToFile`: `PORT=ip:port`
/// lines. Returns the first TCP address.
pub fn parse_port_file(text: &str) -> Option<SocketAddr> {
    text.lines()
        .find_map(|l| l.trim().strip_prefix("PORT=")?.parse().ok())
}

/// One line of `GETINFO stream-status`: `StreamID StreamStatus CircuitID Target`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StreamInfo {
    /// Tor's stream id.
    pub id: String,
    /// `NEW`, `SENTCONNECT`, `SUCCEEDED`, ...
    pub status: String,
    /// The circuit the stream is attached to (`0` if none yet).
    pub circuit: String,
    /// `host:port`.
    pub target: String,
}

/// Parses the value of `GETINFO stream-status` (one stream per line).
pub fn parse_stream_status(value: &str) -> Result<Vec<StreamInfo>, ParseError> {
    value
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next(), w.next(), w.next()) {
                (Some(id), Some(status), Some(circuit), Some(target)) => Ok(StreamInfo {
                    id: id.to_owned(),
                    status: status.to_owned(),
                    circuit: circuit.to_owned(),
                    target: target.to_owned(),
                }),
                _ => Err(ParseError::BadField {
                    what: "stream-status line",
                }),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::reply::ReplyParser;
    use super::*;

    #[test]
    fn revision_counter_of_an_outer_descriptor() {
        let desc = "hs-descriptor 3\ndescriptor-lifetime 180\n\
                    descriptor-signing-key-cert\n-----BEGIN ED25519 CERT-----\nAQgABw==\n\
                    -----END ED25519 CERT-----\nrevision-counter 1234567\nsuperencrypted\n";
        assert_eq!(parse_revision_counter(desc), Some(1_234_567));
        assert_eq!(parse_revision_counter("hs-descriptor 3\n"), None);
        assert_eq!(parse_revision_counter("revision-counter x\n"), None);
        assert_eq!(
            parse_revision_counter("revision-counter 99999999999999999999999\n"),
            None
        );
    }

    #[test]
    fn bootstrap() {
        let s =
            parse_bootstrap(r#"NOTICE BOOTSTRAP PROGRESS=100 TAG=done SUMMARY="Done""#).unwrap();
        assert_eq!(
            s,
            BootstrapStatus {
                progress: 100,
                tag: "done".into(),
                summary: "Done".into(),
                warning: None
            }
        );
        assert!(s.is_done());
        let s = parse_bootstrap(r#"STATUS_CLIENT NOTICE BOOTSTRAP PROGRESS=14 TAG=handshake SUMMARY="Handshaking with a relay""#)
            .unwrap();
        assert_eq!(s.progress, 14);
        assert!(!s.is_done());
        let s = parse_bootstrap(r#"WARN BOOTSTRAP PROGRESS=5 TAG=conn SUMMARY="x" WARNING="Connection refused" REASON=CONNECTREFUSED COUNT=1 RECOMMENDATION=ignore"#).unwrap();
        assert_eq!(s.warning.as_deref(), Some("Connection refused"));
        assert!(parse_bootstrap("NOTICE BOOTSTRAP PROGRESS=101 TAG=x").is_err());
        assert!(parse_bootstrap("NOTICE BOOTSTRAP TAG=x").is_err());
        assert!(parse_bootstrap("NOTICE CIRCUIT_ESTABLISHED").is_err());
        assert!(parse_bootstrap("NOTICE BOOTSTRAP PROGRESS=-1").is_err());
    }

    #[test]
    fn hs_desc() {
        let e = parse_hs_desc(
            "HS_DESC UPLOADED abcdef UNKNOWN $0123456789ABCDEF0123456789ABCDEF01234567~relay1",
        )
        .unwrap()
        .unwrap();
        assert_eq!(e.action, "UPLOADED");
        assert_eq!(e.address, "abcdef");
        assert!(e.hs_dir.starts_with("$0123"));
        let e = parse_hs_desc("HS_DESC FAILED abc NO_AUTH $AA REASON=NOT_FOUND")
            .unwrap()
            .unwrap();
        assert_eq!(e.reason.as_deref(), Some("NOT_FOUND"));
        assert_eq!(parse_hs_desc("CIRC 1 BUILT").unwrap(), None);
        assert!(parse_hs_desc("HS_DESC ").is_err());
    }

    #[test]
    fn service_id() {
        let mut p = ReplyParser::new();
        p.push(b"250-ServiceID=abcdef\r\n250 OK\r\n").unwrap();
        let r = p.next_reply().unwrap().unwrap();
        assert_eq!(parse_service_id(&r).unwrap(), "abcdef");
        p.push(b"250 OK\r\n").unwrap();
        let r = p.next_reply().unwrap().unwrap();
        assert!(parse_service_id(&r).is_err());
    }

    #[test]
    fn listeners_and_port_file() {
        assert_eq!(
            parse_listeners(r#""127.0.0.1:9050" "unix:/run/tor/socks" "[::1]:9050""#).unwrap(),
            vec![
                "127.0.0.1:9050".parse().unwrap(),
                "[::1]:9050".parse().unwrap()
            ]
        );
        assert_eq!(parse_listeners("").unwrap(), vec![]);
        assert_eq!(
            parse_port_file("PORT=127.0.0.1:40123\n"),
            Some("127.0.0.1:40123".parse().unwrap())
        );
        assert_eq!(
            parse_port_file("UNIX_PORT=/x\nPORT=127.0.0.1:1\n"),
            Some("127.0.0.1:1".parse().unwrap())
        );
        assert_eq!(parse_port_file("garbage"), None);
    }

    #[test]
    fn stream_status() {
        let v = "12 SUCCEEDED 7 abc.onion:9878\n13 SENTCONNECT 9 def.onion:9878";
        let s = parse_stream_status(v).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].circuit, "7");
        assert_eq!(s[1].target, "def.onion:9878");
        assert_eq!(parse_stream_status("").unwrap(), vec![]);
        assert!(parse_stream_status("12 SUCCEEDED").is_err());
    }
}
