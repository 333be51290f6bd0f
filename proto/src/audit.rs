//! The entries of a node's audit log (`docs/formats.md` §15.4): one per key request the node
//! decided, in a canonical binary encoding whose RFC 9162 leaf hash
//! ([`crate::merkle::leaf_hash`]) is what the log's tree commits to. Nothing secret is in an
//! entry: the requesting enclave's public key appears only as a digest, the request as its
//! binding.
//!
//! ```text
//! version      u8 = 1
//! time         u64, big-endian, unix seconds
//! app_id       32 bytes
//! label        u8 length ‖ UTF-8
//! outcome      u8 length ‖ ASCII: "released" or the refusal's error code
//! workload     u8 length ‖ ASCII: "sha256:<hex>" (an image digest) or "mrtd:<hex>"; empty: none
//! instance     u8 length ‖ UTF-8: the platform's instance name; empty: none
//! client_key   32 bytes: SHA-256 of the request's X25519 public key
//! binding      32 bytes: the request binding
//! manifest_seq u8 flag (0 none, 1 present) ‖ u64 big-endian if present
//! ```

use sha2::{Digest, Sha256};

use crate::app::AppId;

/// The encoding's version byte.
pub const VERSION: u8 = 1;

/// Longest encoded entry: the fixed fields and four strings of at most 255 bytes.
pub const MAX_ENTRY_LEN: usize = 1 + 8 + 32 + 4 * 256 + 32 + 32 + 9;

/// Outcome of a release.
pub const RELEASED: &str = "released";

/// Why an encoded entry was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not version 1.
    #[error("unknown audit entry version {0}")]
    Version(u8),
    /// Ends early, runs on, or a field breaks its rule (the reason says which).
    #[error("malformed audit entry: {0}")]
    Malformed(&'static str),
}

/// One decided key request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    /// When the node decided it, unix seconds.
    pub time: u64,
    /// The app.
    pub app_id: AppId,
    /// The key's label.
    pub label: String,
    /// `released`, or the refusal's error code.
    pub outcome: String,
    /// The attested image digest (`sha256:…`) or TDX measurement (`mrtd:…`), when verified.
    pub workload: Option<String>,
    /// The platform's name of the attested instance, when the evidence carries one.
    pub instance: Option<String>,
    /// SHA-256 of the requesting enclave's X25519 public key.
    pub client_key: [u8; 32],
    /// The request binding.
    pub binding: [u8; 32],
    /// The manifest sequence number applied (releases only).
    pub manifest_seq: Option<u64>,
}

/// SHA-256 of a client's public key, as entries carry it.
pub fn client_key_digest(public_key: &[u8]) -> [u8; 32] {
    Sha256::digest(public_key).into()
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    // Longer strings are cut at a character boundary: an entry never fails to encode.
    let mut end = s.len().min(255);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    out.push(end as u8);
    out.extend_from_slice(&s.as_bytes()[..end]);
}

impl LogEntry {
    /// The canonical encoding (strings longer than 255 bytes are cut to 255).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.push(VERSION);
        out.extend_from_slice(&self.time.to_be_bytes());
        out.extend_from_slice(self.app_id.as_bytes());
        put_str(&mut out, &self.label);
        put_str(&mut out, &self.outcome);
        put_str(&mut out, self.workload.as_deref().unwrap_or(""));
        put_str(&mut out, self.instance.as_deref().unwrap_or(""));
        out.extend_from_slice(&self.client_key);
        out.extend_from_slice(&self.binding);
        match self.manifest_seq {
            None => out.push(0),
            Some(seq) => {
                out.push(1);
                out.extend_from_slice(&seq.to_be_bytes());
            }
        }
        out
    }

    /// Decodes an encoding, refusing anything but exactly one canonical entry.
    pub fn decode(bytes: &[u8]) -> Result<LogEntry, EntryError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(EntryError::Malformed("longer than any entry"));
        }
        let mut r = Reader(bytes);
        let version = r.take(1)?[0];
        if version != VERSION {
            return Err(EntryError::Version(version));
        }
        let time = u64::from_be_bytes(r.array()?);
        let app_id = AppId(r.array()?);
        let label = r.string("label is not UTF-8")?;
        if label.is_empty() {
            return Err(EntryError::Malformed("empty label"));
        }
        let outcome = r.string("outcome is not UTF-8")?;
        if outcome.is_empty() || !outcome.bytes().all(|b| b.is_ascii_lowercase() || b == b'_') {
            return Err(EntryError::Malformed("outcome is not a code"));
        }
        let workload = Some(r.string("workload is not UTF-8")?).filter(|s| !s.is_empty());
        if workload.as_deref().is_some_and(|w| !w.bytes().all(|b| b.is_ascii_graphic())) {
            return Err(EntryError::Malformed("workload is not printable ASCII"));
        }
        let instance = Some(r.string("instance is not UTF-8")?).filter(|s| !s.is_empty());
        let client_key = r.array()?;
        let binding = r.array()?;
        let manifest_seq = match r.take(1)?[0] {
            0 => None,
            1 => Some(u64::from_be_bytes(r.array()?)),
            _ => return Err(EntryError::Malformed("manifest flag is neither 0 nor 1")),
        };
        if !r.0.is_empty() {
            return Err(EntryError::Malformed("bytes after the entry"));
        }
        Ok(LogEntry { time, app_id, label, outcome, workload, instance, client_key, binding, manifest_seq })
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], EntryError> {
        if self.0.len() < n {
            return Err(EntryError::Malformed("ends early"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], EntryError> {
        let mut a = [0; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    fn string(&mut self, not_utf8: &'static str) -> Result<String, EntryError> {
        let len = usize::from(self.take(1)?[0]);
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| EntryError::Malformed(not_utf8))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::leaf_hash;

    fn sample() -> LogEntry {
        LogEntry {
            time: 1_764_000_000,
            app_id: AppId([0xa1; 32]),
            label: "db-key".into(),
            outcome: RELEASED.into(),
            workload: Some(format!("sha256:{}", "ab".repeat(32))),
            instance: Some("enclave-7".into()),
            client_key: client_key_digest(&[9; 32]),
            binding: [0x42; 32],
            manifest_seq: Some(3),
        }
    }

    /// The known-answer vector of `docs/formats.md` §15.4 (recomputed independently there).
    #[test]
    fn the_sample_entry_has_the_documented_encoding_and_leaf_hash() {
        let bytes = sample().encode();
        assert_eq!(bytes.len(), 1 + 8 + 32 + 7 + 9 + 72 + 10 + 32 + 32 + 9);
        let expected = concat!(
            "010000000069248100a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a1a106",
            "64622d6b65790872656c6561736564477368613235363a61626162616261626162616261626162616261",
            "626162616261626162616261626162616261626162616261626162616261626162616261626162616261",
            "62616209656e636c6176652d378c0cc17a04942cc4f8e0fe0b302606d3108860c126428ba2ceeb5f9ed4",
            "1c2b05424242424242424242424242424242424242424242424242424242424242424201000000000000",
            "0003",
        );
        assert_eq!(hex::encode(&bytes), expected);
        assert_eq!(
            hex::encode(leaf_hash(&bytes)),
            "4e1918a11fe8da5bc2e9b85fea25a7c48231594dc96f5327cde2972e930bde39"
        );
        assert_eq!(LogEntry::decode(&bytes), Ok(sample()));
    }

    #[test]
    fn a_refusal_without_workload_or_manifest_round_trips() {
        let e = LogEntry {
            outcome: "image_not_allowed".into(),
            workload: None,
            instance: None,
            manifest_seq: None,
            ..sample()
        };
        assert_eq!(LogEntry::decode(&e.encode()), Ok(e));
    }

    #[test]
    fn every_malformed_encoding_is_refused_with_its_reason() {
        let good = sample().encode();
        let mut v2 = good.clone();
        v2[0] = 2;
        assert_eq!(LogEntry::decode(&v2), Err(EntryError::Version(2)));
        for cut in 0..good.len() {
            assert!(LogEntry::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(LogEntry::decode(&long), Err(EntryError::Malformed("bytes after the entry")));
        let mut flag = good.clone();
        let at = good.len() - 9;
        flag[at] = 2;
        assert_eq!(LogEntry::decode(&flag), Err(EntryError::Malformed("manifest flag is neither 0 nor 1")));
        let mut outcome = good.clone();
        outcome[1 + 8 + 32 + 7 + 1] = b'R';
        assert_eq!(LogEntry::decode(&outcome), Err(EntryError::Malformed("outcome is not a code")));
        let mut label = good.clone();
        label[1 + 8 + 32 + 1] = 0xff;
        assert_eq!(LogEntry::decode(&label), Err(EntryError::Malformed("label is not UTF-8")));
        assert!(LogEntry::decode(&vec![1; MAX_ENTRY_LEN + 1]).is_err());
    }

    #[test]
    fn long_strings_are_cut_at_a_character_boundary() {
        let e = LogEntry { instance: Some("é".repeat(200)), ..sample() };
        let d = LogEntry::decode(&e.encode()).unwrap();
        assert_eq!(d.instance.unwrap(), "é".repeat(127));
    }
}
