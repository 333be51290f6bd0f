//! Any bytes as a signed checkpoint, an audit log entry, and any hashes as inclusion and
//! consistency proofs: refused cleanly, never a panic (`docs/formats.md` §15).
#![no_main]
use kms_proto::audit::LogEntry;
use kms_proto::checkpoint::SignedCheckpoint;
use kms_proto::merkle::{verify_consistency, verify_inclusion, Hash};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(c) = SignedCheckpoint::parse(text) {
            // What parses prints back to the same text.
            assert_eq!(SignedCheckpoint::parse(&c.to_text()), Ok(c));
        }
    }
    if let Ok(e) = LogEntry::decode(data) {
        // What decodes is canonical: it encodes back to the same bytes.
        assert_eq!(e.encode(), data);
    }
    if data.len() < 16 {
        return;
    }
    let a = u64::from_le_bytes(data[..8].try_into().unwrap_or_default());
    let b = u64::from_le_bytes(data[8..16].try_into().unwrap_or_default());
    let hashes: Vec<Hash> = data[16..].chunks_exact(32).map(|c| c.try_into().unwrap_or([0; 32])).collect();
    let (first, rest) = hashes.split_first().map_or(([0; 32], &[][..]), |(f, r)| (*f, r));
    let _ = verify_inclusion(&first, a, b, rest, &first);
    let _ = verify_consistency(a, b, rest, &first, &first);
});
