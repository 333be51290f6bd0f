//! Signed checkpoints of a node's audit log (`docs/formats.md` §15.3): the tree size, root hash
//! and time of the log, as text in the transparency-log checkpoint format, signed by the node's
//! identity key as a signed note, and co-signed by other nodes as witnesses.
//!
//! ```text
//! kms/<cluster id, 64 hex>/node/<index>
//! <tree size, decimal>
//! <root hash, base64>
//! time <unix seconds>
//!
//! — kms/<cluster id>/node/<index> <base64(key id(4) ‖ Ed25519 signature(64))>
//! — kms/<cluster id>/node/<witness> <base64(...)>
//! ```
//!
//! The signed message is the body (the four lines, each ending in `\n`). A key id is the first
//! four bytes of `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)` (the signed-note convention for
//! Ed25519 keys). Two checkpoints of one origin and one size with different roots, each carrying
//! the origin's valid signature, prove that the node equivocated ([`equivocation`]).

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::merkle::Hash;

/// Largest signed checkpoint accepted, bytes.
pub const MAX_CHECKPOINT_LEN: usize = 16 * 1024;
/// Most signature lines accepted.
pub const MAX_SIGNATURES: usize = 128;
/// Longest key or origin name, bytes.
pub const MAX_NAME_LEN: usize = 256;

/// Why a checkpoint was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    /// Not the format of §15.3 (the reason says where).
    #[error("malformed checkpoint: {0}")]
    Malformed(&'static str),
    /// No signature by this key.
    #[error("not signed by {0}")]
    NotSigned(String),
    /// A signature by this key's id that does not verify.
    #[error("bad signature by {0}")]
    BadSignature(String),
}

/// A log's state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's name: `kms/<cluster id hex>/node/<index>` ([`origin`]).
    pub origin: String,
    /// Entries in the log.
    pub size: u64,
    /// RFC 9162 root hash of those entries.
    pub root: Hash,
    /// When the node made it, unix seconds.
    pub time: u64,
}

/// One signature line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    /// The signer's key name (its own log's origin).
    pub name: String,
    /// [`key_id`] of the signer's name and key.
    pub key_id: [u8; 4],
    /// Ed25519 over the checkpoint's body.
    pub signature: [u8; 64],
}

/// A checkpoint with its signatures: the log's own, then witnesses'.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedCheckpoint {
    /// What is signed.
    pub checkpoint: Checkpoint,
    /// The signature lines, in order.
    pub signatures: Vec<NoteSignature>,
}

/// The origin (and key name) of the log of the node with identity key `identity` in cluster
/// `cluster_id`: a name that stays the node's across reshares (its index may change).
pub fn origin(cluster_id: &[u8; 32], identity: &VerifyingKey) -> String {
    format!("kms/{}/node/{}", hex::encode(cluster_id), hex::encode(identity.as_bytes()))
}

/// `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)[..4]`.
pub fn key_id(name: &str, key: &VerifyingKey) -> [u8; 4] {
    let digest = Sha256::new()
        .chain_update(name.as_bytes())
        .chain_update(b"\n")
        .chain_update([0x01])
        .chain_update(key.as_bytes())
        .finalize();
    [digest[0], digest[1], digest[2], digest[3]]
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME_LEN
        && name.chars().all(|c| c.is_ascii_graphic())
        && !name.contains('+')
}

impl Checkpoint {
    /// The signed text: four lines, each ending in `\n`.
    pub fn body(&self) -> String {
        format!("{}\n{}\n{}\ntime {}\n", self.origin, self.size, B64.encode(self.root), self.time)
    }

    /// Signs the body as `name` (the node's own origin, or a witness's).
    pub fn sign(&self, name: &str, key: &SigningKey) -> NoteSignature {
        NoteSignature {
            name: name.to_string(),
            key_id: key_id(name, &key.verifying_key()),
            signature: key.sign(self.body().as_bytes()).to_bytes(),
        }
    }

    fn parse_body(body: &str) -> Result<Checkpoint, CheckpointError> {
        let lines: Vec<&str> = body.split_terminator('\n').collect();
        let [origin, size, root, time] = lines[..] else {
            return Err(CheckpointError::Malformed("the body is not four lines"));
        };
        if !valid_name(origin) {
            return Err(CheckpointError::Malformed("origin"));
        }
        // Decimal without sign or leading zeros, so each size has one spelling.
        let canonical = |s: &str| {
            !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'))
        };
        if !canonical(size) {
            return Err(CheckpointError::Malformed("tree size"));
        }
        let size = size.parse().map_err(|_| CheckpointError::Malformed("tree size"))?;
        let root: Hash = B64
            .decode(root)
            .ok()
            .and_then(|r| r.try_into().ok())
            .filter(|r: &Hash| B64.encode(r) == root)
            .ok_or(CheckpointError::Malformed("root hash"))?;
        let time = time
            .strip_prefix("time ")
            .filter(|t| canonical(t))
            .and_then(|t| t.parse().ok())
            .ok_or(CheckpointError::Malformed("time"))?;
        Ok(Checkpoint { origin: origin.to_string(), size, root, time })
    }
}

impl NoteSignature {
    /// The value of its signature line: base64 of key id (4) ‖ signature (64).
    pub fn encode_value(&self) -> String {
        B64.encode([&self.key_id[..], &self.signature[..]].concat())
    }

    /// A signature line's name and value, checked for form (not verified).
    pub fn decode_value(name: &str, value: &str) -> Result<NoteSignature, CheckpointError> {
        if !valid_name(name) {
            return Err(CheckpointError::Malformed("signer name"));
        }
        let blob = B64.decode(value).map_err(|_| CheckpointError::Malformed("signature"))?;
        if blob.len() != 68 {
            return Err(CheckpointError::Malformed("signature length"));
        }
        let mut key_id = [0u8; 4];
        key_id.copy_from_slice(&blob[..4]);
        let mut signature = [0u8; 64];
        signature.copy_from_slice(&blob[4..]);
        Ok(NoteSignature { name: name.to_string(), key_id, signature })
    }
}

impl SignedCheckpoint {
    /// A checkpoint signed by its log's node.
    pub fn new(checkpoint: Checkpoint, key: &SigningKey) -> Self {
        let own = checkpoint.sign(&checkpoint.origin, key);
        SignedCheckpoint { checkpoint, signatures: vec![own] }
    }

    /// The text form: body, a blank line, one line per signature.
    pub fn to_text(&self) -> String {
        let mut out = self.checkpoint.body();
        out.push('\n');
        for s in &self.signatures {
            out.push_str(&format!("\u{2014} {} {}\n", s.name, s.encode_value()));
        }
        out
    }

    /// Parses the text form (bounded; every line checked). Signatures are not verified here.
    pub fn parse(text: &str) -> Result<SignedCheckpoint, CheckpointError> {
        if text.len() > MAX_CHECKPOINT_LEN {
            return Err(CheckpointError::Malformed("too long"));
        }
        let (body, sigs) = text.split_once("\n\n").ok_or(CheckpointError::Malformed("no blank line"))?;
        let checkpoint = Checkpoint::parse_body(&format!("{body}\n"))?;
        if sigs.is_empty() {
            return Err(CheckpointError::Malformed("no signature"));
        }
        if !sigs.ends_with('\n') {
            return Err(CheckpointError::Malformed("a line does not end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs.split_terminator('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(CheckpointError::Malformed("too many signatures"));
            }
            let rest = line.strip_prefix("\u{2014} ").ok_or(CheckpointError::Malformed("signature line"))?;
            let (name, blob) = rest.split_once(' ').ok_or(CheckpointError::Malformed("signature line"))?;
            signatures.push(NoteSignature::decode_value(name, blob)?);
        }
        if signatures.is_empty() {
            return Err(CheckpointError::Malformed("no signature"));
        }
        Ok(SignedCheckpoint { checkpoint, signatures })
    }

    /// Checks the signature of `name` with `key` (strict Ed25519).
    pub fn verify(&self, name: &str, key: &VerifyingKey) -> Result<(), CheckpointError> {
        let id = key_id(name, key);
        let sig = self
            .signatures
            .iter()
            .find(|s| s.name == name && s.key_id == id)
            .ok_or_else(|| CheckpointError::NotSigned(name.to_string()))?;
        key.verify_strict(self.checkpoint.body().as_bytes(), &Signature::from_bytes(&sig.signature))
            .map_err(|_| CheckpointError::BadSignature(name.to_string()))
    }

    /// Adds a witness's co-signature (replacing an earlier one by the same name).
    pub fn cosign(&mut self, name: &str, key: &SigningKey) {
        self.signatures.retain(|s| s.name != name);
        self.signatures.push(self.checkpoint.sign(name, key));
    }

    /// How many of `witnesses` (name, key) signed it validly; the log's own signature among them
    /// counts only if the log is listed. Each entry counts once: list each witness once.
    pub fn witnessed_by(&self, witnesses: &[(String, VerifyingKey)]) -> usize {
        witnesses.iter().filter(|(name, key)| self.verify(name, key).is_ok()).count()
    }
}

/// Whether two checkpoints, each already verified under the same log's key, prove that the log
/// equivocated: one origin, one size, two roots. (Different sizes are checked for consistency
/// with a proof instead: `merkle::verify_consistency`.)
pub fn equivocation(a: &Checkpoint, b: &Checkpoint) -> bool {
    a.origin == b.origin && a.size == b.size && a.root != b.root
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_bytes(&[seed; 32])
    }

    fn checkpoint(size: u64, root: u8) -> Checkpoint {
        Checkpoint {
            origin: origin(&[0xab; 32], &key(1).verifying_key()),
            size,
            root: [root; 32],
            time: 1_796_400_000,
        }
    }

    /// The exact text of a signed checkpoint (a known-answer vector, also in `docs/formats.md`
    /// §15.3): Ed25519 signatures are deterministic, so the whole text is fixed by the keys.
    /// Checked independently with pyca/cryptography (Ed25519 keys from the 32-byte seeds 0x01…
    /// and 0x02…, key ids with hashlib): the same two signature lines.
    #[test]
    fn text_form_is_fixed() {
        let mut c = SignedCheckpoint::new(checkpoint(3, 0x11), &key(1));
        c.cosign(&origin(&[0xab; 32], &key(2).verifying_key()), &key(2));
        let text = c.to_text();
        let log = format!("kms/{}/node/{}", "ab".repeat(32), hex::encode(key(1).verifying_key().as_bytes()));
        let witness =
            format!("kms/{}/node/{}", "ab".repeat(32), hex::encode(key(2).verifying_key().as_bytes()));
        let expected = format!(
            "{log}\n3\nERERERERERERERERERERERERERERERERERERERERERE=\ntime 1796400000\n\n\
             \u{2014} {log} is5VcPv+0xKwgmBIY9e4ofQjjZeqGlkh6q7SlobAEgirycFK46pVU3WCCsKhhe1xOwkk4eY8LTsqoj0Te8VWqeqe/QY=\n\
             \u{2014} {witness} zUQxlBR8xh5JTzzbDomxfJthKd4xUfkMlVUEu5tY2LNUcJHzKr5uOfE3ioyTpmK8FtcyJVte4Mlt28HSngDy9uOQQAU=\n"
        );
        assert_eq!(text, expected);
        assert_eq!(SignedCheckpoint::parse(&text), Ok(c.clone()));
        let id = key_id(&origin(&[0xab; 32], &key(1).verifying_key()), &key(1).verifying_key());
        assert_eq!(c.signatures[0].key_id, id);
        assert_eq!(
            hex::encode(key_id("example.com/log", &key(1).verifying_key())),
            hex::encode(
                &Sha256::new()
                    .chain_update(b"example.com/log\n\x01")
                    .chain_update(key(1).verifying_key().as_bytes())
                    .finalize()[..4]
            )
        );
    }

    #[test]
    fn signatures_and_witnesses_verify_and_forgeries_do_not() {
        let (log, w2, w3) = (key(1), key(2), key(3));
        let names: Vec<String> = (1..=3).map(|i| origin(&[0xab; 32], &key(i).verifying_key())).collect();
        let mut c = SignedCheckpoint::new(checkpoint(10, 0x22), &log);
        c.verify(&names[0], &log.verifying_key()).expect("the log's own");
        c.cosign(&names[1], &w2);
        c.cosign(&names[2], &w3);
        let witnesses: Vec<(String, VerifyingKey)> =
            names.iter().cloned().zip([&log, &w2, &w3].map(|k| k.verifying_key())).collect();
        assert_eq!(c.witnessed_by(&witnesses), 3);
        // A changed root: every signature fails.
        let mut forged = c.clone();
        forged.checkpoint.root[0] ^= 1;
        assert_eq!(forged.witnessed_by(&witnesses), 0);
        assert_eq!(
            forged.verify(&names[0], &log.verifying_key()),
            Err(CheckpointError::BadSignature(names[0].clone()))
        );
        // The right name with another key: no signature by that key.
        assert_eq!(
            c.verify(&names[0], &w2.verifying_key()),
            Err(CheckpointError::NotSigned(names[0].clone()))
        );
        // Through the text form too.
        let text = c.to_text().replace("\n10\n", "\n11\n");
        let parsed = SignedCheckpoint::parse(&text).expect("well-formed");
        assert_eq!(parsed.witnessed_by(&witnesses), 0);
    }

    #[test]
    fn two_roots_for_one_size_are_equivocation() {
        let log = key(1);
        let a = SignedCheckpoint::new(checkpoint(5, 0x01), &log);
        let b = SignedCheckpoint::new(checkpoint(5, 0x02), &log);
        let name = origin(&[0xab; 32], &key(1).verifying_key());
        a.verify(&name, &log.verifying_key()).expect("a");
        b.verify(&name, &log.verifying_key()).expect("b");
        assert!(equivocation(&a.checkpoint, &b.checkpoint));
        assert!(!equivocation(&a.checkpoint, &a.checkpoint));
        assert!(!equivocation(&a.checkpoint, &checkpoint(6, 0x02)), "another size needs a consistency proof");
    }

    #[test]
    fn malformed_text_is_refused_with_its_reason() {
        let good = SignedCheckpoint::new(checkpoint(7, 0x33), &key(1)).to_text();
        let cases: Vec<(String, &str)> = vec![
            (good.replace("\n7\n", "\n07\n"), "tree size"),
            (good.replace("\n7\n", "\n-7\n"), "tree size"),
            (good.replace("time ", "time  "), "time"),
            (good.replace("time ", "when "), "time"),
            (good.replacen("\n\n", "\n", 1), "no blank line"),
            (good.replacen("time", "x\ntime", 1), "the body is not four lines"),
            (good.replace("\u{2014} ", "- "), "signature line"),
            (good.trim_end().to_string(), "a line does not end in a newline"),
            (good.split("\n\n").next().unwrap_or_default().to_string() + "\n\n", "no signature"),
            ("x".repeat(MAX_CHECKPOINT_LEN + 1), "too long"),
            (good.replacen("\n", " \n", 1), "origin"),
        ];
        for (text, why) in cases {
            assert_eq!(
                SignedCheckpoint::parse(&text),
                Err(CheckpointError::Malformed(why)),
                "{why}: {text:?}"
            );
        }
        let root = B64.encode([0x33u8; 32]);
        let short = good.replace(&root, &B64.encode([0x33u8; 31]));
        assert_eq!(SignedCheckpoint::parse(&short), Err(CheckpointError::Malformed("root hash")));
    }
}
