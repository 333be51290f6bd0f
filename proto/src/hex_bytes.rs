//! Fixed-size byte strings written as lowercase hex in JSON.
//!
//! Only lowercase hex of exactly `2·N` characters is accepted, so every value has exactly one
//! JSON encoding; this matters for documents that are signed over their re-encoding (manifests,
//! cluster descriptors).

use std::fmt;
use std::str::FromStr;

use serde::{de, Deserialize, Deserializer, Serialize, Serializer};

/// Why a string is not the lowercase hex of a fixed number of bytes. Never echoes the input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HexError {
    /// The string has the wrong number of characters.
    #[error("expected {expected} lowercase hex characters, got a string of {found} bytes")]
    WrongLength {
        /// Characters expected (twice the byte length).
        expected: usize,
        /// Length of the string found, in bytes.
        found: usize,
    },
    /// A character is not one of `0-9a-f` (uppercase is refused too).
    #[error("byte {index} is not a lowercase hex digit (0-9, a-f)")]
    InvalidChar {
        /// Byte index of the first offending character.
        index: usize,
    },
}

/// Parses exactly `N` bytes from lowercase hex.
pub fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], HexError> {
    if s.len() != 2 * N {
        return Err(HexError::WrongLength { expected: 2 * N, found: s.len() });
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            _ => None,
        }
    }
    let bytes = s.as_bytes();
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        let hi = nibble(bytes[2 * i]).ok_or(HexError::InvalidChar { index: 2 * i })?;
        let lo = nibble(bytes[2 * i + 1]).ok_or(HexError::InvalidChar { index: 2 * i + 1 })?;
        *o = (hi << 4) | lo;
    }
    Ok(out)
}

/// `N` bytes, serialized as a JSON string of `2·N` lowercase hex characters.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HexBytes<const N: usize>(pub [u8; N]);

impl<const N: usize> HexBytes<N> {
    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; N] {
        &self.0
    }

    /// The bytes, by value.
    pub fn into_inner(self) -> [u8; N] {
        self.0
    }
}

impl<const N: usize> From<[u8; N]> for HexBytes<N> {
    fn from(bytes: [u8; N]) -> Self {
        HexBytes(bytes)
    }
}

impl<const N: usize> From<HexBytes<N>> for [u8; N] {
    fn from(h: HexBytes<N>) -> Self {
        h.0
    }
}

impl<const N: usize> AsRef<[u8]> for HexBytes<N> {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl<const N: usize> fmt::Display for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in &self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl<const N: usize> fmt::Debug for HexBytes<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl<const N: usize> FromStr for HexBytes<N> {
    type Err = HexError;
    fn from_str(s: &str) -> Result<Self, HexError> {
        parse_hex(s).map(HexBytes)
    }
}

impl<const N: usize> Serialize for HexBytes<N> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de, const N: usize> Deserialize<'de> for HexBytes<N> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(HexVisitor::<N>)
    }
}

struct HexVisitor<const N: usize>;

impl<const N: usize> de::Visitor<'_> for HexVisitor<N> {
    type Value = HexBytes<N>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a string of {} lowercase hex characters ({N} bytes)", 2 * N)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        v.parse().map_err(E::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let h: HexBytes<2> = "0aff".parse().unwrap();
        assert_eq!(h.0, [0x0a, 0xff]);
        assert_eq!(h.to_string(), "0aff");
        assert_eq!(format!("{h:?}"), "0aff");
    }

    #[test]
    fn refuses_bad_input() {
        assert_eq!("0a".parse::<HexBytes<2>>(), Err(HexError::WrongLength { expected: 4, found: 2 }));
        assert_eq!("0AFF".parse::<HexBytes<2>>(), Err(HexError::InvalidChar { index: 1 }));
        assert_eq!("0ag0".parse::<HexBytes<2>>(), Err(HexError::InvalidChar { index: 2 }));
        // Multi-byte characters: byte length matches but the characters are not hex.
        assert_eq!("éé".parse::<HexBytes<2>>(), Err(HexError::InvalidChar { index: 0 }));
    }
}
