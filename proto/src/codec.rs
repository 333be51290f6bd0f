//! Encoders and decoders with size limits and version checks.
//!
//! * p2p: bincode 2, fixed-width little-endian integers, lengths as `u64`, at most
//!   [`MAX_P2P_MESSAGE`] bytes; trailing bytes are an error, so every message has exactly one
//!   encoding.
//! * HTTP and files: JSON. Types refuse unknown fields (`deny_unknown_fields`), and
//!   [`decode_json`] checks the `version` (or `format`) field before anything else, so a newer peer
//!   gets "unsupported version 2" rather than a confusing field error.

use serde::{de::DeserializeOwned, Serialize};

/// Largest p2p message accepted, in bytes (1 MiB). A deal for n = 256, t = 171 in G2 is ~17 KiB.
pub const MAX_P2P_MESSAGE: usize = 1 << 20;

/// Largest JSON document accepted by [`decode_json`], in bytes (256 KiB).
pub const MAX_JSON_DOCUMENT: usize = 256 << 10;

/// Why bytes could not be decoded. Never contains the input bytes themselves.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CodecError {
    /// The input is larger than the format allows.
    #[error("message too large: {len} bytes, limit {limit}")]
    TooLarge {
        /// Bytes received.
        len: usize,
        /// Limit for this format.
        limit: usize,
    },
    /// The version field names a version this build does not speak.
    #[error("unsupported {what} version {found} (supported: {supported})")]
    UnsupportedVersion {
        /// Which format.
        what: &'static str,
        /// Version found in the input.
        found: u64,
        /// Version this build supports.
        supported: u64,
    },
    /// The bytes are not a valid encoding (bad variant, truncated, wrong type, unknown field).
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Which format.
        what: &'static str,
        /// What was wrong, without echoing the input.
        reason: String,
    },
    /// Valid encoding followed by extra bytes.
    #[error("trailing bytes after {what}: {extra}")]
    TrailingBytes {
        /// Which format.
        what: &'static str,
        /// Number of extra bytes.
        extra: usize,
    },
}

fn p2p_config() -> impl bincode::config::Config {
    bincode::config::standard().with_little_endian().with_fixed_int_encoding().with_limit::<MAX_P2P_MESSAGE>()
}

/// A p2p message: knows its own version and the name used in errors.
pub trait P2pMessage: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const WHAT: &'static str;
    /// The version this build speaks.
    const VERSION: u8;
    /// The version carried by this value.
    fn version(&self) -> u8;
}

/// Encodes a value in the p2p encoding (also used for canonical signing bytes).
pub fn encode_p2p<T: Serialize>(value: &T) -> Vec<u8> {
    // Our p2p types have a fixed shape (structs, enums, byte vectors, integers): encoding into a
    // Vec cannot fail. If a future type made it fail, signing an empty or partial encoding would
    // be worse than stopping, so this is the one place a bug panics instead of returning.
    #[allow(clippy::expect_used)]
    bincode::serde::encode_to_vec(value, p2p_config()).expect("BUG: p2p types always encode")
}

/// Appends the p2p encoding of `value` to `out` without reallocating when `out` has enough
/// capacity: for secrets, encode into a pre-sized `Zeroizing<Vec<u8>>` so no copy is left behind
/// in freed memory.
pub fn encode_p2p_into<T: Serialize>(value: &T, out: &mut Vec<u8>) {
    // See `encode_p2p` on why this cannot fail.
    #[allow(clippy::expect_used)]
    bincode::serde::encode_into_std_write(value, out, p2p_config()).expect("BUG: p2p types always encode");
}

/// Decodes a p2p value of type `T`, without version check (for nested payloads).
pub fn decode_p2p_raw<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_P2P_MESSAGE {
        return Err(CodecError::TooLarge { len: bytes.len(), limit: MAX_P2P_MESSAGE });
    }
    let (value, read) = bincode::serde::decode_from_slice::<T, _>(bytes, p2p_config())
        .map_err(|e| CodecError::Malformed { what, reason: bincode_reason(&e) })?;
    if read != bytes.len() {
        return Err(CodecError::TrailingBytes { what, extra: bytes.len() - read });
    }
    Ok(value)
}

/// Decodes a top-level p2p message and refuses versions other than `T::VERSION`.
///
/// The version byte is the first byte of every top-level message, so it is checked before the
/// rest is parsed: a message from a newer peer is reported as a version mismatch, not as garbage.
pub fn decode_p2p<T: P2pMessage>(bytes: &[u8]) -> Result<T, CodecError> {
    match bytes.first() {
        None => Err(CodecError::Malformed { what: T::WHAT, reason: "empty message".into() }),
        Some(&v) if v != T::VERSION => Err(CodecError::UnsupportedVersion {
            what: T::WHAT,
            found: v.into(),
            supported: T::VERSION.into(),
        }),
        Some(_) => decode_p2p_raw(T::WHAT, bytes),
    }
}

fn bincode_reason(e: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as E;
    match e {
        E::UnexpectedEnd { .. } => "truncated".into(),
        E::LimitExceeded => "length exceeds limit".into(),
        E::UnexpectedVariant { found, .. } => format!("unknown variant {found}"),
        E::Utf8 { .. } => "invalid UTF-8".into(),
        E::InvalidBooleanValue(_) => "invalid boolean".into(),
        _ => "invalid encoding".into(),
    }
}

/// A JSON document with a version field.
pub trait JsonDocument: Serialize + DeserializeOwned {
    /// Name used in error messages.
    const WHAT: &'static str;
    /// Name of the version field (`"version"` or `"format"`).
    const VERSION_FIELD: &'static str = "version";
    /// Objects to descend into, from the top, to reach the version field: empty when the field is
    /// at the top level, `&["manifest"]` for a signed wrapper whose version lives in the signed
    /// document it wraps.
    const VERSION_PATH: &'static [&'static str] = &[];
    /// The version this build speaks.
    const VERSION: u64;
}

/// Decodes a JSON document: size limit, then version (at [`JsonDocument::VERSION_PATH`]), then the
/// typed parse (which refuses unknown fields).
pub fn decode_json<T: JsonDocument>(bytes: &[u8]) -> Result<T, CodecError> {
    if bytes.len() > MAX_JSON_DOCUMENT {
        return Err(CodecError::TooLarge { len: bytes.len(), limit: MAX_JSON_DOCUMENT });
    }
    let value: serde_json::Value = serde_json::from_slice(bytes)
        .map_err(|e| CodecError::Malformed { what: T::WHAT, reason: json_reason(&e) })?;
    let Some(mut obj) = value.as_object() else {
        return Err(CodecError::Malformed { what: T::WHAT, reason: "expected a JSON object".into() });
    };
    for &field in T::VERSION_PATH {
        obj = match obj.get(field) {
            Some(serde_json::Value::Object(inner)) => inner,
            Some(_) => {
                return Err(CodecError::Malformed {
                    what: T::WHAT,
                    reason: format!("field `{field}` must be an object"),
                })
            }
            None => {
                return Err(CodecError::Malformed {
                    what: T::WHAT,
                    reason: format!("missing field `{field}`"),
                })
            }
        };
    }
    match obj.get(T::VERSION_FIELD).map(serde_json::Value::as_u64) {
        None => {
            return Err(CodecError::Malformed {
                what: T::WHAT,
                reason: format!("missing field `{}`", T::VERSION_FIELD),
            })
        }
        Some(None) => {
            return Err(CodecError::Malformed {
                what: T::WHAT,
                reason: format!("field `{}` must be an unsigned integer", T::VERSION_FIELD),
            })
        }
        Some(Some(v)) if v != T::VERSION => {
            return Err(CodecError::UnsupportedVersion { what: T::WHAT, found: v, supported: T::VERSION })
        }
        Some(Some(_)) => {}
    }
    // The typed parse reads the original bytes, not the `Value`: it refuses duplicate keys, which
    // a `Value` would silently merge (last one wins).
    serde_json::from_slice(bytes)
        .map_err(|e| CodecError::Malformed { what: T::WHAT, reason: json_reason(&e) })
}

/// Encodes a JSON document (compact).
pub fn encode_json<T: JsonDocument>(value: &T) -> Vec<u8> {
    // JSON documents have string keys only, so encoding cannot fail (see `encode_p2p`).
    #[allow(clippy::expect_used)]
    serde_json::to_vec(value).expect("BUG: JSON documents always encode")
}

fn json_reason(e: &serde_json::Error) -> String {
    // serde_json messages name fields and types, never echo string values; keep the line/column
    // out so two equal errors compare equal in tests.
    let msg = e.to_string();
    let msg = match msg.rfind(" at line ") {
        Some(i) => &msg[..i],
        None => &msg[..],
    };
    elide_quoted(msg)
}

/// Shortens every backquoted or double-quoted run longer than 24 characters, so an error never
/// repeats a long value (a token, a key) from the input.
fn elide_quoted(msg: &str) -> String {
    const KEEP: usize = 24;
    let mut out = String::with_capacity(msg.len());
    let mut quote: Option<char> = None;
    let mut run = 0usize;
    for c in msg.chars() {
        match quote {
            None if c == '"' || c == '`' => {
                quote = Some(c);
                run = 0;
                out.push(c);
            }
            None => out.push(c),
            Some(q) if c == q || (q == '`' && c == '\'') => {
                if run > KEEP {
                    out.push('…');
                }
                quote = None;
                out.push(c);
            }
            Some(_) => {
                run += 1;
                if run <= KEEP {
                    out.push(c);
                }
            }
        }
    }
    out
}
