//! Lower-case RFC 4648 base32 without padding, as Tor writes onion addresses.
//!
//! Encoding and decoding work on caller buffers and never allocate.

const ALPHABET: &[u8; 32] = b"abcdefghijklmnopqrstuvwxyz234567";

/// Characters needed to encode `len` bytes.
pub const fn encoded_len(len: usize) -> usize {
    (len * 8).div_ceil(5)
}

/// Encodes `input` into `out`, which must be exactly [`encoded_len`] long.
/// Returns `None` (and writes nothing useful) if `out` has the wrong length.
pub fn encode_into(input: &[u8], out: &mut [u8]) -> Option<()> {
    if out.len() != encoded_len(input.len()) {
        return None;
    }
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut chars = out.iter_mut();
    for &byte in input {
        acc = (acc << 8) | u32::from(byte);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            *chars.next()? = ALPHABET[((acc >> bits) & 31) as usize];
        }
        acc &= (1 << bits) - 1;
    }
    if bits > 0 {
        *chars.next()? = ALPHABET[((acc << (5 - bits)) & 31) as usize];
    }
    Some(())
}

/// Why a base32 string did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Base32Error {
    /// A character outside `a-z2-7` (upper case included: we accept only the
    /// canonical lower-case form), at this byte offset.
    InvalidCharacter(usize),
    /// The string does not encode exactly the expected number of bytes.
    WrongLength,
    /// The unused low bits of the last character are not zero (a
    /// non-canonical encoding).
    NonCanonical,
}

fn value(c: u8) -> Option<u32> {
    match c {
        b'a'..=b'z' => Some(u32::from(c - b'a')),
        b'2'..=b'7' => Some(u32::from(c - b'2') + 26),
        _ => None,
    }
}

/// Decodes `input` into `out`, which must be exactly the number of bytes the
/// string encodes.
pub fn decode_into(input: &[u8], out: &mut [u8]) -> Result<(), Base32Error> {
    if encoded_len(out.len()) != input.len() {
        return Err(Base32Error::WrongLength);
    }
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    let mut bytes = out.iter_mut();
    for (i, &c) in input.iter().enumerate() {
        let v = value(c).ok_or(Base32Error::InvalidCharacter(i))?;
        acc = (acc << 5) | v;
        bits += 5;
        if bits >= 8 {
            bits -= 8;
            let byte = bytes.next().ok_or(Base32Error::WrongLength)?;
            *byte = ((acc >> bits) & 0xff) as u8;
        }
        acc &= (1 << bits) - 1;
    }
    if acc != 0 {
        return Err(Base32Error::NonCanonical);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc4648_vectors_lower_case() {
        // RFC 4648 section 10, lower-cased, padding removed.
        let cases: [(&[u8], &str); 6] = [
            (b"f", "my"),
            (b"fo", "mzxq"),
            (b"foo", "mzxw6"),
            (b"foob", "mzxw6yq"),
            (b"fooba", "mzxw6ytb"),
            (b"foobar", "mzxw6ytboi"),
        ];
        for (raw, text) in cases {
            let mut out = [0u8; 16];
            let out = &mut out[..encoded_len(raw.len())];
            encode_into(raw, out).unwrap();
            assert_eq!(out, text.as_bytes());
            let mut back = [0u8; 6];
            let back = &mut back[..raw.len()];
            decode_into(text.as_bytes(), back).unwrap();
            assert_eq!(back, raw);
        }
    }

    #[test]
    fn rejects_upper_case_padding_and_non_canonical_tails() {
        let mut out = [0u8; 1];
        assert_eq!(
            decode_into(b"MY", &mut out),
            Err(Base32Error::InvalidCharacter(0))
        );
        assert_eq!(
            decode_into(b"m=", &mut out),
            Err(Base32Error::InvalidCharacter(1))
        );
        // "mz" decodes to 'f' plus non-zero leftover bits.
        assert_eq!(decode_into(b"mz", &mut out), Err(Base32Error::NonCanonical));
        assert_eq!(decode_into(b"mzx", &mut out), Err(Base32Error::WrongLength));
    }
}
