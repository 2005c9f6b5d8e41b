//! The node's one encoding helper: hex, for ids and keys shown to people
//! and kept in text fields.

/// Lower-case hex.
pub mod hex {
    /// `bytes` as lower-case hex.
    pub fn encode(bytes: &[u8]) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(bytes.len() * 2);
        for b in bytes {
            out.push(char::from(DIGITS[usize::from(b >> 4)]));
            out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
        }
        out
    }

    /// Hex of any even length back to bytes; `None` if it is not hex.
    pub fn decode(text: &str) -> Option<Vec<u8>> {
        if !text.len().is_multiple_of(2) {
            return None;
        }
        (0..text.len() / 2)
            .map(|i| u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok())
            .collect()
    }

    /// Exactly `N` bytes of hex.
    pub fn decode_array<const N: usize>(text: &str) -> Option<[u8; N]> {
        decode(text)?.try_into().ok()
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn round_trip_and_refusals() {
            assert_eq!(encode(&[0x00, 0xab, 0xff]), "00abff");
            assert_eq!(decode("00abff"), Some(vec![0x00, 0xab, 0xff]));
            assert_eq!(decode("00ABFF"), Some(vec![0x00, 0xab, 0xff]));
            assert_eq!(decode("0"), None);
            assert_eq!(decode("zz"), None);
            assert_eq!(decode("é1"), None);
            assert_eq!(decode_array::<2>("0102"), Some([1, 2]));
            assert_eq!(decode_array::<2>("010203"), None);
        }
    }
}

/// A server as people write it: `cwtch-server:<address>` (the paste-able
/// string, maybe with `?...` after it) or a bare address.
pub fn parse_server(text: &str) -> Result<cwtch_proto::OnionAddress, String> {
    let address = text.strip_prefix("cwtch-server:").unwrap_or(text);
    let address = address.split('?').next().unwrap_or(address);
    cwtch_proto::OnionAddress::parse(address).map_err(|e| format!("server {text}: {e}"))
}

/// A name another party chose, made safe to keep and show: control and
/// invisible format characters (which could forge lines or colours in a
/// terminal, or reorder or hide letters) become U+FFFD; white space is
/// trimmed and collapsed.
pub fn clean_name(name: &str) -> String {
    // Runs of white space become one space and the ends are trimmed, so
    // that padding cannot push a mark (chat's "?") out of view.
    let mut out = String::with_capacity(name.len());
    let mut space = false;
    for c in name.chars() {
        if c.is_whitespace() {
            space = true;
            continue;
        }
        if space && !out.is_empty() {
            out.push(' ');
        }
        space = false;
        out.push(if c.is_control() || is_format(c) {
            '\u{fffd}'
        } else {
            c
        });
    }
    out
}

/// Unicode's invisible characters that change how text around them reads
/// or look like nothing: bidirectional controls, zero-width characters, the
/// byte-order mark, the other members of category Cf, and the default
/// ignorable or blank-looking letters (Hangul fillers, variation
/// selectors, the braille blank).
pub fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{034F}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{08E2}'
            | '\u{115F}'
            | '\u{1160}'
            | '\u{17B4}'
            | '\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{2800}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FFA0}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0100}'..='\u{E01EF}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn names_from_others_lose_their_control_characters() {
        assert_eq!(super::clean_name("a\nb\u{1b}[31m"), "a b\u{fffd}[31m");
        assert_eq!(super::clean_name("  Bobby \t\t   x   "), "Bobby x");
        assert_eq!(
            super::clean_name("b\u{200B}ob\u{202E}"),
            "b\u{fffd}ob\u{fffd}"
        );
    }
}
