//! Property tests: decoders never panic on arbitrary or mutated input; JSON round-trips.

use kms_proto::api::{Evidence, KeyRequest, KEY_API_VERSION};
use kms_proto::app::{AppId, Label, SignedManifest};
use kms_proto::codec::{decode_json, decode_p2p, encode_json, encode_p2p};
use kms_proto::dkg::DkgMessage;
use kms_proto::HexBytes;
use proptest::prelude::*;

use crate::fixtures;

fn valid_dkg_encodings() -> Vec<Vec<u8>> {
    fixtures::dkg_messages().iter().map(|(_, m)| encode_p2p(m)).collect()
}

/// A mutation of one valid encoding: overwrite a byte, truncate, or insert a byte.
#[derive(Debug, Clone)]
enum Mutation {
    Set(usize, u8),
    Truncate(usize),
    Insert(usize, u8),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Set(i, b)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Insert(i, b)),
    ]
}

fn apply(mut bytes: Vec<u8>, mutations: &[Mutation]) -> Vec<u8> {
    for m in mutations {
        let len = bytes.len();
        match *m {
            Mutation::Set(i, b) if len > 0 => bytes[i % len] = b,
            Mutation::Truncate(i) => bytes.truncate(i % (len + 1)),
            Mutation::Insert(i, b) => bytes.insert(i % (len + 1), b),
            Mutation::Set(..) => {}
        }
    }
    bytes
}

fn label() -> impl Strategy<Value = Label> {
    prop_oneof![Just("root".to_string()), "[a-z0-9_./-]{1,64}", "\\PC{1,16}"]
        .prop_filter_map("valid label", |s| Label::new(s).ok())
}

fn evidence() -> impl Strategy<Value = Evidence> {
    prop_oneof![
        "[A-Za-z0-9._-]{1,300}".prop_map(|token| Evidence::ConfidentialSpace { token }),
        prop::collection::vec(any::<u8>(), 1..600).prop_map(|q| Evidence::tdx_quote(&q)),
    ]
}

fn key_request() -> impl Strategy<Value = KeyRequest> {
    (
        any::<[u8; 32]>(),
        label(),
        any::<[u8; 32]>(),
        any::<[u8; 32]>(),
        evidence(),
        prop::option::of(any::<u64>()),
        any::<([u8; 32], u64)>(),
    )
        .prop_map(|(app_id, label, client, nonce, evidence, manifest_seq, (cluster, time))| KeyRequest {
            version: KEY_API_VERSION,
            cluster_id: HexBytes(cluster),
            time,
            app_id: AppId(app_id),
            label,
            client_public_key: HexBytes(client),
            nonce: HexBytes(nonce),
            evidence,
            manifest: manifest_seq.map(|seq| {
                let mut m = fixtures::manifest();
                m.seq = seq;
                SignedManifest::sign(m, &fixtures::owner_key())
            }),
            lease: None,
        })
}

/// The fixtures hold every body variant, so the mutation property reaches each decoder. (An
/// added variant fails to compile here until a fixture and this match cover it.)
#[test]
fn fixtures_cover_every_dkg_body_variant() {
    use kms_proto::dkg::DkgBody;
    let mut seen = std::collections::BTreeSet::new();
    for (_, m) in fixtures::dkg_messages() {
        seen.insert(match m.body {
            DkgBody::Deal(_) => 0,
            DkgBody::Share(_) => 1,
            DkgBody::Response(_) => 2,
            DkgBody::Justification(_) => 3,
            DkgBody::Confirm(_) => 4,
            DkgBody::RecoverRequest(_) => 5,
            DkgBody::Blinding(_) => 6,
            DkgBody::RecoverReply(_) => 7,
            DkgBody::Evidence(_) => 8,
            DkgBody::KeySet(_) => 9,
        });
    }
    assert_eq!(seen.len(), 10, "variants with a fixture: {seen:?}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1024, ..ProptestConfig::default() })]

    #[test]
    fn dkg_decoder_never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..4096)) {
        let _ = decode_p2p::<DkgMessage>(&bytes);
    }

    /// Random bytes behind a valid version byte and body variant, to get past the first checks.
    #[test]
    fn dkg_decoder_never_panics_on_plausible_bytes(
        // Every body variant (0..=9) and a few past the last.
        variant in 0u32..12,
        rest in prop::collection::vec(any::<u8>(), 0..4096),
    ) {
        let mut bytes = vec![1u8];
        bytes.extend_from_slice(&variant.to_le_bytes());
        bytes.extend_from_slice(&rest);
        let _ = decode_p2p::<DkgMessage>(&bytes);
    }

    /// Mutated valid messages either fail cleanly or decode to something that re-encodes to the
    /// same bytes (one encoding per message).
    /// Over every fixture message (all body variants, recovery and key-set messages included).
    #[test]
    fn dkg_decoder_on_mutations(
        which in any::<prop::sample::Index>(),
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let encodings = valid_dkg_encodings();
        let bytes = apply(encodings[which.index(encodings.len())].clone(), &mutations);
        if let Ok(msg) = decode_p2p::<DkgMessage>(&bytes) {
            prop_assert_eq!(encode_p2p(&msg), bytes);
        }
    }

    #[test]
    fn json_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = decode_json::<KeyRequest>(&bytes);
    }

    #[test]
    fn key_request_round_trips(req in key_request()) {
        let bytes = encode_json(&req);
        let back: KeyRequest = decode_json(&bytes).unwrap();
        prop_assert_eq!(&back, &req);
        prop_assert_eq!(encode_json(&back), bytes);
        prop_assert!(req.validate().is_ok());
    }
}
