//! Golden snapshots: each example value is encoded and compared byte for byte with a file in
//! `tests/snapshots/`, then the file is decoded and compared with the value.
//!
//! * `*.json`: the exact JSON bytes of `codec::encode_json`, followed by one `\n`.
//! * `*.hex`: `codec::encode_p2p` in lowercase hex, 64 characters (32 bytes) per line, each line
//!   ending in `\n`.
//!
//! With `KMS_UPDATE_SNAPSHOTS=1` a file whose content changed is rewritten and its test fails, on
//! purpose: review the diff, commit it, run again without the variable.

use std::fmt::Debug;
use std::path::PathBuf;

use kms_proto::codec::{decode_json, decode_p2p, encode_json, encode_p2p, JsonDocument};
use kms_proto::dkg::DkgMessage;
use kms_proto::ErrorCode;

use crate::fixtures;

fn path(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots").join(file)
}

fn updating() -> bool {
    std::env::var("KMS_UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1")
}

/// Compares `actual` with the snapshot file, or writes it when updating. Returns the file bytes.
fn check_file(file: &str, actual: &[u8]) -> Vec<u8> {
    let p = path(file);
    if updating() && std::fs::read(&p).ok().as_deref() != Some(actual) {
        // Regeneration is a deliberate, reviewed act: the file is rewritten and this run fails,
        // so an unreviewed rewrite can never pass (a run whose snapshots are unchanged passes).
        std::fs::write(&p, actual).unwrap();
        panic!(
            "{file} rewritten (KMS_UPDATE_SNAPSHOTS=1): review `git diff {}`, commit it, and run again without KMS_UPDATE_SNAPSHOTS; this run fails on purpose",
            p.display()
        );
    }
    let expected = std::fs::read(&p)
        .unwrap_or_else(|e| panic!("{}: {e}; run with KMS_UPDATE_SNAPSHOTS=1 to create it", p.display()));
    assert!(
        expected == actual,
        "{file} changed: the encoding differs from the snapshot.\n expected: {}\n   actual: {}\n\
         If the format change is intended, rerun with KMS_UPDATE_SNAPSHOTS=1 and review the diff.",
        String::from_utf8_lossy(&expected),
        String::from_utf8_lossy(actual),
    );
    expected
}

fn check_json<T: JsonDocument + PartialEq + Debug>(file: &str, value: &T) {
    let mut bytes = encode_json(value);
    bytes.push(b'\n');
    let stored = check_file(file, &bytes);
    let decoded: T = decode_json(&stored).unwrap();
    assert_eq!(&decoded, value, "{file}: decoded snapshot differs from the value");
}

fn to_hex_lines(bytes: &[u8]) -> String {
    bytes.chunks(32).map(|c| format!("{}\n", hex::encode(c))).collect()
}

fn check_p2p(file: &str, value: &DkgMessage) {
    let bytes = encode_p2p(value);
    let stored = check_file(file, to_hex_lines(&bytes).as_bytes());
    let text: String = String::from_utf8(stored).unwrap().split_whitespace().collect();
    let decoded: DkgMessage = decode_p2p(&hex::decode(text).unwrap()).unwrap();
    assert_eq!(&decoded, value, "{file}: decoded snapshot differs from the value");
}

#[test]
fn manifest() {
    check_json("manifest.json", &fixtures::manifest());
}

#[test]
fn signed_manifest() {
    let signed = fixtures::signed_manifest();
    signed.verify().unwrap();
    check_json("signed_manifest.json", &signed);
}

#[test]
fn key_request_confidential_space() {
    check_json("key_request_confidential_space.json", &fixtures::key_request_cs());
}

#[test]
fn key_request_tdx_with_manifest() {
    check_json("key_request_tdx.json", &fixtures::key_request_tdx());
}

#[test]
fn key_response() {
    check_json("key_response.json", &fixtures::key_response());
}

#[test]
fn error_body() {
    check_json("error_body.json", &fixtures::error_body());
}

#[test]
fn health_and_ready() {
    check_json("health.json", &fixtures::health());
    check_json("ready.json", &fixtures::ready());
}

#[test]
fn cluster_descriptor() {
    check_json("cluster_descriptor.json", &fixtures::cluster_descriptor());
}

#[test]
fn signed_cluster_descriptor() {
    let signed = fixtures::signed_cluster_descriptor();
    signed.verify(Some(&fixtures::group_key().verifying_key().to_bytes())).unwrap();
    check_json("signed_cluster_descriptor.json", &signed);
}

/// Every error code with its HTTP status, so renaming a code or changing a status fails here.
#[test]
fn error_codes() {
    let table: String =
        ErrorCode::ALL.iter().map(|c| format!("{} {}\n", c.http_status(), c.as_str())).collect();
    check_file("error_codes.txt", table.as_bytes());
}

/// Every error code is documented in `docs/api.md` §4 with its HTTP status, and the table names
/// no code the API does not have: a client written from the docs knows every code it can get.
#[test]
fn every_error_code_is_documented_with_its_status() {
    let api = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md")).unwrap();
    for c in ErrorCode::ALL {
        let row = format!("| `{}` | {} |", c.as_str(), c.http_status());
        assert!(api.contains(&row), "docs/api.md §4 lacks the row {row}");
    }
    let section = api.split("## 4. Error codes").nth(1).and_then(|s| s.split("\n## ").next()).unwrap();
    let rows: Vec<&str> = section.lines().filter(|l| l.starts_with("| `")).collect();
    for line in &rows {
        let code = line.trim_start_matches("| `").split('`').next().unwrap();
        assert!(code.parse::<ErrorCode>().is_ok(), "docs/api.md §4 documents `{code}`, which no node sends");
    }
    assert_eq!(rows.len(), ErrorCode::ALL.len(), "one row per code");
}

#[test]
fn dkg_messages() {
    for (name, msg) in fixtures::dkg_messages() {
        check_p2p(&format!("{name}.hex"), &msg);
    }
}

#[test]
fn authorized_roster_change() {
    let (change, committee) = fixtures::authorized_change();
    let layout = change.verify(&committee).unwrap();
    assert_eq!(layout.receivers, 7);
    check_json("authorized_change.json", &change);
    // The session id every reshare message and transcript is bound to, pinned.
    check_file("reshare_session.txt", format!("{}\n", hex::encode(change.change.session())).as_bytes());
}
