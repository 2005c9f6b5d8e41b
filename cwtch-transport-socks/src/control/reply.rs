//! The Tor control protocol reply grammar (control-spec section 2.3), as a
//! pure incremental parser.
//!
//! ```text
//! Reply         = SyncReply / AsyncReply
//! SyncReply     = *(MidReplyLine / DataReplyLine) EndReplyLine
//! MidReplyLine  = StatusCode "-" ReplyLine
//! DataReplyLine = StatusCode "+" ReplyLine CmdData
//! EndReplyLine  = StatusCode SP ReplyLine
//! CmdData       = *DataLine "." CRLF      ; leading dots doubled
//! ```
//!
//! Bytes go in with [`ReplyParser::push`], whole replies come out of
//! [`ReplyParser::next_reply`]. Asynchronous events (status 650) are replies
//! like any other; the client sorts them from command answers. The parser
//! never panics and bounds its memory: a line longer than
//! [`MAX_LINE_LEN`] or a reply larger than [`MAX_REPLY_LEN`] is an error.

use core::fmt;

/// Longest line accepted, in bytes, CRLF included.
pub const MAX_LINE_LEN: usize = 64 * 1024;
/// Largest reply accepted, in bytes, all lines and data blocks together.
pub const MAX_REPLY_LEN: usize = 1024 * 1024;

/// Status code of asynchronous events.
pub const ASYNC_EVENT: u16 = 650;

/// One line of a reply, with its data block if it was a `+` line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReplyLine {
    /// The three-digit status code of this line.
    pub code: u16,
    /// The text after the status code and separator.
    pub text: String,
    /// The data block of a `NNN+` line, dot-unstuffed, lines joined by `\n`.
    pub data: Option<String>,
}

/// A whole reply: every line up to and including the `NNN ` end line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reply {
    /// The status code of the end line.
    pub code: u16,
    /// Every line in order; never empty.
    pub lines: Vec<ReplyLine>,
}

impl Reply {
    /// Whether this is an asynchronous event (status 650).
    pub fn is_event(&self) -> bool {
        self.code == ASYNC_EVENT
    }

    /// Whether the status is 2xx.
    pub fn is_ok(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// The text of the first line (for an event: `KEYWORD args...`).
    pub fn first_text(&self) -> &str {
        self.lines.first().map(|l| l.text.as_str()).unwrap_or("")
    }

    /// Every line's text joined by `"; "`, for error messages.
    pub fn message(&self) -> String {
        let mut out = String::new();
        for (i, l) in self.lines.iter().enumerate() {
            if i > 0 {
                out.push_str("; ");
            }
            out.push_str(&l.text);
        }
        out
    }

    /// For `GETINFO key` style answers: the value of the first line that
    /// reads `key=value` (or the data block of `key=` followed by data).
    pub fn value_of(&self, key: &str) -> Option<&str> {
        self.lines.iter().find_map(|l| {
            let rest = l.text.strip_prefix(key)?.strip_prefix('=')?;
            match &l.data {
                Some(data) if rest.is_empty() => Some(data.as_str()),
                _ => Some(rest),
            }
        })
    }
}

/// Why bytes from the control port are not a valid reply stream.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// A line does not start with three digits and a separator.
    BadStatusLine {
        /// The offending line, lossily decoded and cut to 80 characters.
        line: String,
    },
    /// A line is longer than [`MAX_LINE_LEN`].
    LineTooLong,
    /// A reply is larger than [`MAX_REPLY_LEN`].
    ReplyTooLarge,
    /// A field of a reply does not have the expected form.
    BadField {
        /// What was being parsed.
        what: &'static str,
    },
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::BadStatusLine { line } => {
                write!(f, "malformed control port line {line:?}")
            }
            ParseError::LineTooLong => {
                write!(f, "control port line longer than {MAX_LINE_LEN} bytes")
            }
            ParseError::ReplyTooLarge => {
                write!(f, "control port reply larger than {MAX_REPLY_LEN} bytes")
            }
            ParseError::BadField { what } => write!(f, "malformed {what} in control port reply"),
        }
    }
}

impl core::error::Error for ParseError {}

/// Incremental parser of control port replies. See the module docs.
#[derive(Debug, Default)]
pub struct ReplyParser {
    /// Bytes received and not yet consumed as complete lines.
    buf: Vec<u8>,
    /// Lines of the command answer being assembled.
    lines: Vec<ReplyLine>,
    /// Lines of the asynchronous event being assembled.
    event_lines: Vec<ReplyLine>,
    /// Size of the reply being assembled so far.
    reply_len: usize,
    /// Set while inside the data block of a `+` line: whether it belongs
    /// to an event, and the data so far.
    data: Option<(bool, String)>,
}

impl ReplyParser {
    /// A parser with nothing buffered.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends bytes read from the control connection. Fails when more than
    /// [`MAX_LINE_LEN`] bytes are buffered without a line end.
    pub fn push(&mut self, bytes: &[u8]) -> Result<(), ParseError> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() > MAX_LINE_LEN && !self.buf.contains(&b'\n') {
            return Err(ParseError::LineTooLong);
        }
        Ok(())
    }

    /// The next complete reply, if one is buffered. After an error the
    /// stream is out of sync and the connection should be dropped.
    pub fn next_reply(&mut self) -> Result<Option<Reply>, ParseError> {
        while let Some(end) = self.buf.iter().position(|&b| b == b'\n') {
            let raw: Vec<u8> = self.buf.drain(..=end).collect();
            if raw.len() > MAX_LINE_LEN {
                return Err(ParseError::LineTooLong);
            }
            self.reply_len = self.reply_len.saturating_add(raw.len());
            if self.reply_len > MAX_REPLY_LEN {
                return Err(ParseError::ReplyTooLarge);
            }
            let line = strip_line_end(&raw);
            if let Some(reply) = self.take_line(line)? {
                return Ok(Some(reply));
            }
        }
        Ok(None)
    }

    fn take_line(&mut self, line: &[u8]) -> Result<Option<Reply>, ParseError> {
        if let Some((is_event, data)) = self.data.as_mut() {
            if line == b"." {
                let is_event = *is_event;
                let block = self.data.take().map(|(_, d)| d);
                let target = if is_event {
                    &mut self.event_lines
                } else {
                    &mut self.lines
                };
                if let Some(last) = target.last_mut() {
                    last.data = block;
                }
                return Ok(None);
            }
            let unstuffed = line.strip_prefix(b".").unwrap_or(line);
            if !data.is_empty() {
                data.push('\n');
            }
            data.push_str(&String::from_utf8_lossy(unstuffed));
            return Ok(None);
        }
        let (code, sep, text) = split_status(line)?;
        // Events (650) may arrive between the lines of a command's answer:
        // they are assembled apart so neither reply is torn.
        let is_event = code == ASYNC_EVENT;
        let target = if is_event {
            &mut self.event_lines
        } else {
            &mut self.lines
        };
        target.push(ReplyLine {
            code,
            text: String::from_utf8_lossy(text).into_owned(),
            data: None,
        });
        match sep {
            b' ' => {
                let lines = core::mem::take(target);
                if self.lines.is_empty() && self.event_lines.is_empty() {
                    self.reply_len = 0;
                }
                Ok(Some(Reply { code, lines }))
            }
            b'+' => {
                self.data = Some((is_event, String::new()));
                Ok(None)
            }
            _ => Ok(None),
        }
    }
}

fn strip_line_end(raw: &[u8]) -> &[u8] {
    let line = raw.strip_suffix(b"\n").unwrap_or(raw);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn split_status(line: &[u8]) -> Result<(u16, u8, &[u8]), ParseError> {
    let bad = || ParseError::BadStatusLine {
        line: String::from_utf8_lossy(line).chars().take(80).collect(),
    };
    let (head, text) = match (line.get(..4), line.get(4..)) {
        (Some(head), Some(text)) => (head, text),
        // "250" alone, without separator, is tolerated as an end line.
        _ if line.len() == 3 => (line, &[][..]),
        _ => return Err(bad()),
    };
    let mut code: u16 = 0;
    for &d in head.iter().take(3) {
        if !d.is_ascii_digit() {
            return Err(bad());
        }
        code = code * 10 + u16::from(d - b'0');
    }
    let sep = head.get(3).copied().unwrap_or(b' ');
    if !matches!(sep, b' ' | b'-' | b'+') {
        return Err(bad());
    }
    Ok((code, sep, text))
}

/// One argument of a reply line: `KEY=VALUE`, `KEY="quoted"`, or a bare word.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A word without `=` (or a quoted string standing alone).
    Word(String),
    /// `KEY=VALUE`, the value unquoted and unescaped.
    Pair(String, String),
}

/// Splits reply text into arguments, honouring quoted strings with C-style
/// escapes (`\"`, `\\`, `\n`, `\t`, `\r`). Fails on an unterminated quote.
pub fn split_args(text: &str) -> Result<Vec<Arg>, ParseError> {
    let mut out = Vec::new();
    let mut chars = text.chars().peekable();
    loop {
        while chars.peek() == Some(&' ') {
            chars.next();
        }
        let Some(&first) = chars.peek() else {
            return Ok(out);
        };
        if first == '"' {
            chars.next();
            out.push(Arg::Word(quoted(&mut chars)?));
            continue;
        }
        let mut key = String::new();
        let mut is_pair = false;
        while let Some(&c) = chars.peek() {
            if c == ' ' {
                break;
            }
            chars.next();
            if c == '=' {
                is_pair = true;
                break;
            }
            key.push(c);
        }
        if !is_pair {
            out.push(Arg::Word(key));
            continue;
        }
        let value = if chars.peek() == Some(&'"') {
            chars.next();
            quoted(&mut chars)?
        } else {
            let mut v = String::new();
            while let Some(&c) = chars.peek() {
                if c == ' ' {
                    break;
                }
                v.push(c);
                chars.next();
            }
            v
        };
        out.push(Arg::Pair(key, value));
    }
}

fn quoted(chars: &mut core::iter::Peekable<core::str::Chars<'_>>) -> Result<String, ParseError> {
    let mut out = String::new();
    loop {
        match chars.next() {
            None => {
                return Err(ParseError::BadField {
                    what: "quoted string",
                });
            }
            Some('"') => return Ok(out),
            Some('\\') => match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some('r') => out.push('\r'),
                Some(c) => out.push(c),
                None => {
                    return Err(ParseError::BadField {
                        what: "quoted string",
                    });
                }
            },
            Some(c) => out.push(c),
        }
    }
}

/// The value of `key` among parsed arguments (keys compare exactly).
pub fn arg<'a>(args: &'a [Arg], key: &str) -> Option<&'a str> {
    args.iter().find_map(|a| match a {
        Arg::Pair(k, v) if k == key => Some(v.as_str()),
        _ => None,
    })
}

/// Whether the bare word `word` is among the arguments.
pub fn has_word(args: &[Arg], word: &str) -> bool {
    args.iter().any(|a| matches!(a, Arg::Word(w) if w == word))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(input: &[u8]) -> Result<Vec<Reply>, ParseError> {
        let mut p = ReplyParser::new();
        p.push(input)?;
        let mut out = Vec::new();
        while let Some(r) = p.next_reply()? {
            out.push(r);
        }
        Ok(out)
    }

    #[test]
    fn single_line_ok() {
        let r = parse_all(b"250 OK\r\n").unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].code, 250);
        assert!(r[0].is_ok());
        assert_eq!(r[0].first_text(), "OK");
    }

    #[test]
    fn multi_line_protocolinfo() {
        let input = b"250-PROTOCOLINFO 1\r\n250-AUTH METHODS=COOKIE,SAFECOOKIE COOKIEFILE=\"/tmp/a b/control_auth_cookie\"\r\n250-VERSION Tor=\"0.4.9.11\"\r\n250 OK\r\n";
        let r = parse_all(input).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(r[0].lines.len(), 4);
        let args = split_args(&r[0].lines[1].text).unwrap();
        assert!(has_word(&args, "AUTH"));
        assert_eq!(arg(&args, "METHODS"), Some("COOKIE,SAFECOOKIE"));
        assert_eq!(
            arg(&args, "COOKIEFILE"),
            Some("/tmp/a b/control_auth_cookie")
        );
    }

    #[test]
    fn data_block_is_unstuffed() {
        let input = b"250+config-text=\r\nSocksPort 9050\r\n..dotted\r\n\r\n.\r\n250 OK\r\n";
        let r = parse_all(input).unwrap();
        assert_eq!(r.len(), 1);
        assert_eq!(
            r[0].lines[0].data.as_deref(),
            Some("SocksPort 9050\n.dotted\n")
        );
        assert_eq!(
            r[0].value_of("config-text"),
            Some("SocksPort 9050\n.dotted\n")
        );
    }

    #[test]
    fn events_interleave_with_answers() {
        let input = b"650 HS_DESC UPLOAD abc UNKNOWN $AAAA\r\n250-ServiceID=abc\r\n650 STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED\r\n250 OK\r\n";
        let r = parse_all(input).unwrap();
        // An event line in the middle of a multi-line answer is a reply of
        // its own and does not tear the answer.
        assert_eq!(r.len(), 3);
        assert!(r[0].is_event());
        assert!(r[1].is_event());
        assert_eq!(
            r[1].first_text(),
            "STATUS_CLIENT NOTICE CIRCUIT_ESTABLISHED"
        );
        assert_eq!(r[2].code, 250);
        assert_eq!(r[2].lines.len(), 2);
        assert_eq!(r[2].value_of("ServiceID"), Some("abc"));
    }

    #[test]
    fn byte_by_byte_equals_whole() {
        let input: &[u8] =
            b"250-a=1\r\n250+b=\r\nx\r\n.\r\n650 EV x\r\n552 Unrecognized key \"c\"\r\n";
        let whole = parse_all(input).unwrap();
        let mut p = ReplyParser::new();
        let mut got = Vec::new();
        for b in input {
            p.push(core::slice::from_ref(b)).unwrap();
            while let Some(r) = p.next_reply().unwrap() {
                got.push(r);
            }
        }
        assert_eq!(whole, got);
        assert_eq!(got.last().map(|r| r.code), Some(552));
    }

    #[test]
    fn error_reply_and_bare_lf() {
        let r = parse_all(b"515 Authentication failed: bad cookie\n").unwrap();
        assert_eq!(r[0].code, 515);
        assert!(!r[0].is_ok());
        assert_eq!(r[0].message(), "Authentication failed: bad cookie");
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert!(matches!(
            parse_all(b"25 OK\r\n"),
            Err(ParseError::BadStatusLine { .. })
        ));
        assert!(matches!(
            parse_all(b"abc OK\r\n"),
            Err(ParseError::BadStatusLine { .. })
        ));
        assert!(matches!(
            parse_all(b"250*OK\r\n"),
            Err(ParseError::BadStatusLine { .. })
        ));
        assert!(matches!(
            parse_all(b"\r\n"),
            Err(ParseError::BadStatusLine { .. })
        ));
    }

    #[test]
    fn partial_reply_waits() {
        let mut p = ReplyParser::new();
        p.push(b"250-a=1\r\n250 O").unwrap();
        assert_eq!(p.next_reply().unwrap(), None);
        p.push(b"K\r\n").unwrap();
        assert!(p.next_reply().unwrap().is_some());
    }

    #[test]
    fn limits() {
        let mut p = ReplyParser::new();
        assert_eq!(
            p.push(&vec![b'2'; MAX_LINE_LEN + 1]),
            Err(ParseError::LineTooLong)
        );
        let mut p = ReplyParser::new();
        let line = format!("250-{}\r\n", "x".repeat(1000));
        let mut err = None;
        for _ in 0..2000 {
            p.push(line.as_bytes()).unwrap();
            if let Err(e) = p.next_reply() {
                err = Some(e);
                break;
            }
        }
        assert_eq!(err, Some(ParseError::ReplyTooLarge));
    }

    #[test]
    fn split_args_quotes_and_escapes() {
        let args = split_args(r#"NOTICE BOOTSTRAP PROGRESS=75 TAG=enough_dirinfo SUMMARY="Loaded \"enough\" \\ info""#)
            .unwrap();
        assert_eq!(args[0], Arg::Word("NOTICE".into()));
        assert_eq!(arg(&args, "PROGRESS"), Some("75"));
        assert_eq!(arg(&args, "SUMMARY"), Some(r#"Loaded "enough" \ info"#));
        assert!(split_args(r#"A="unterminated"#).is_err());
        assert!(split_args("A=\"x\\").is_err());
        assert_eq!(split_args("").unwrap(), vec![]);
        assert_eq!(
            split_args("K= x").unwrap(),
            vec![Arg::Pair("K".into(), String::new()), Arg::Word("x".into())]
        );
    }
}
