//! Fixed example values, one or more per type. Every byte is chosen by hand (or derived
//! deterministically from a fixed seed) so snapshots are reproducible.

use ed25519_dalek::{Signer, SigningKey};
use kms_proto::api::{
    ErrorBody, Evidence, HealthBody, KeyRequest, KeyResponse, ReadyBody, API_VERSION, KEY_API_VERSION,
};
use kms_proto::app::{AppName, EnvPolicy, Label, Manifest, Policy, SignedManifest, TdxMeasurement};
use kms_proto::cluster::{
    peer_id_of_identity, ClusterDescriptor, NodeEntry, SignedClusterDescriptor, CLUSTER_VERSION,
};
use kms_proto::dkg::{
    Blinding, BlindingMsg, BlindingShare, Confirm, Deal, DkgBody, DkgMessage, Header, Justification,
    RecoverOutcome, RecoverReply, RecoverRequest, Response, ShareMsg, Signed, SuiteId,
};
use kms_proto::{ErrorCode, HexBytes};

/// The app owner's signing key (seed `07 × 32`).
pub fn owner_key() -> SigningKey {
    SigningKey::from_bytes(&[7; 32])
}

/// The cluster's group key as a single Ed25519 key (seed `09 × 32`). A FROST signature is an
/// ordinary Ed25519 signature, so this stands in for the threshold signer.
pub fn group_key() -> SigningKey {
    SigningKey::from_bytes(&[9; 32])
}

pub fn policy() -> Policy {
    Policy {
        allowed_image_digests: vec![format!("sha256:{}", "d1".repeat(32)).parse().unwrap()],
        allowed_tdx_measurements: vec![TdxMeasurement {
            mrtd: HexBytes([0x4d; 48]),
            rtmr0: Some(HexBytes([0x30; 48])),
            rtmr1: Some(HexBytes([0x31; 48])),
            rtmr2: None,
            rtmr3: None,
        }],
        allow_debug: false,
        require_stable: true,
        env_override: EnvPolicy::AllowList { names: vec!["LOG_LEVEL".into(), "RUST_LOG".into()] },
        allow_cmd_override: false,
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into(), "GCP_AMD_SEV".into()],
        min_swversion: Some(240900),
        revoked: false,
        instances: Default::default(),
    }
}

pub fn manifest() -> Manifest {
    Manifest::new(owner_key().verifying_key().to_bytes(), AppName::new("demo-app").unwrap(), 3, policy())
}

pub fn signed_manifest() -> SignedManifest {
    SignedManifest::sign(manifest(), &owner_key())
}

pub fn key_request_cs() -> KeyRequest {
    KeyRequest {
        version: KEY_API_VERSION,
        cluster_id: HexBytes([0xc1; 32]),
        app_id: manifest().app_id,
        label: Label::default(),
        client_public_key: HexBytes([0x11; 32]),
        nonce: HexBytes([0x22; 32]),
        time: 1_767_225_600,
        evidence: Evidence::ConfidentialSpace {
            token: "eyJhbGciOiJSUzI1NiIsImtpZCI6ImRldiJ9.eyJpc3MiOiJkZXYifQ.c2lnbmF0dXJl".into(),
        },
        manifest: None,
        lease: None,
    }
}

pub fn key_request_tdx() -> KeyRequest {
    let quote: Vec<u8> = (0..64u8).collect();
    KeyRequest {
        version: KEY_API_VERSION,
        cluster_id: HexBytes([0xc1; 32]),
        app_id: manifest().app_id,
        label: Label::new("db-password").unwrap(),
        client_public_key: HexBytes([0x33; 32]),
        nonce: HexBytes([0x44; 32]),
        time: 1_767_225_600,
        evidence: Evidence::tdx_quote(&quote),
        manifest: Some(signed_manifest()),
        lease: None,
    }
}

/// Node 2's identity key in [`cluster_descriptor`].
pub fn node_identity(index: u16) -> SigningKey {
    SigningKey::from_bytes(&[0x10 + u8::try_from(index).unwrap(); 32])
}

pub fn key_response() -> KeyResponse {
    let binding = key_request_cs().binding();
    KeyResponse::signed(&node_identity(2), &[0xc1; 32], &binding, 2, 1, &[0xe5; 108])
}

pub fn error_body() -> ErrorBody {
    ErrorBody::new(ErrorCode::AttestationImageNotAllowed, "image digest is not allowed by the app's manifest")
}

pub fn health() -> HealthBody {
    HealthBody { version: API_VERSION, node_index: 2 }
}

pub fn ready() -> ReadyBody {
    ReadyBody { version: API_VERSION, ready: true, epoch: Some(1) }
}

pub fn cluster_descriptor() -> ClusterDescriptor {
    let nodes = (1..=3u16)
        .map(|i| {
            let b = u8::try_from(i).unwrap();
            NodeEntry {
                index: i,
                peer_id: peer_id_of_identity(&node_identity(i).verifying_key().to_bytes()),
                p2p_addr: format!("/dns4/kms-{i}.example/tcp/4001"),
                http_url: format!("https://kms-{i}.example"),
                vk: HexBytes([0xa0 + b; 96]),
                frost_vk: HexBytes([0xf0 + b; 32]),
            }
        })
        .collect();
    ClusterDescriptor {
        version: CLUSTER_VERSION,
        cluster_id: HexBytes([0xc1; 32]),
        epoch: 1,
        threshold: 2,
        nodes,
        mpk: HexBytes([0xb0; 96]),
        group_key: HexBytes(group_key().verifying_key().to_bytes()),
    }
}

/// Signs `descriptor` the way a verifier sees a FROST signature: an Ed25519 signature under the
/// group key.
pub fn sign_cluster(descriptor: ClusterDescriptor, key: &SigningKey) -> SignedClusterDescriptor {
    let signature = key.sign(&descriptor.signing_bytes());
    SignedClusterDescriptor { descriptor, signature: HexBytes(signature.to_bytes()) }
}

pub fn signed_cluster_descriptor() -> SignedClusterDescriptor {
    sign_cluster(cluster_descriptor(), &group_key())
}

fn header(suite: SuiteId, sender: u16) -> Header {
    Header { session: [0x5e; 32], attempt: 7, suite, sender }
}

/// One DKG message per body variant, with fixed dummy bytes of realistic sizes (t = 2, BLS G2).
pub fn dkg_messages() -> Vec<(&'static str, DkgMessage)> {
    let sig = vec![0x51; 64];
    vec![
        (
            "dkg_deal",
            DkgMessage::new(DkgBody::Deal(Signed {
                payload: Deal {
                    header: header(SuiteId::Bls12381G2, 1),
                    commitments: vec![vec![0xc0; 96], vec![0xc1; 96]],
                    pok_r: vec![0xa1; 96],
                    pok_z: vec![0xa2; 32],
                },
                signature: sig.clone(),
            })),
        ),
        (
            // A reshare's deal: the constant term is the dealer's old verification key, and
            // there is no proof of knowledge.
            "dkg_reshare_deal",
            DkgMessage::new(DkgBody::Deal(Signed {
                payload: Deal {
                    header: header(SuiteId::Bls12381G2, 6),
                    commitments: vec![vec![0xc2; 96], vec![0xc3; 96]],
                    pok_r: Vec::new(),
                    pok_z: Vec::new(),
                },
                signature: sig.clone(),
            })),
        ),
        (
            "dkg_share",
            DkgMessage::new(DkgBody::Share(ShareMsg {
                header: header(SuiteId::Bls12381G2, 1),
                recipient: 2,
                share: vec![0x5a; 32],
            })),
        ),
        (
            "dkg_response",
            DkgMessage::new(DkgBody::Response(Signed {
                payload: Response {
                    header: header(SuiteId::Bls12381G2, 2),
                    complaints: vec![3],
                    deal_digests: vec![(1, [0xd1; 32]), (3, [0xd3; 32])],
                },
                signature: sig.clone(),
            })),
        ),
        (
            "dkg_justification",
            DkgMessage::new(DkgBody::Justification(Signed {
                payload: Justification {
                    header: header(SuiteId::Bls12381G2, 3),
                    revealed: vec![(2, vec![0x7a; 32])],
                },
                signature: sig.clone(),
            })),
        ),
        (
            "dkg_confirm",
            DkgMessage::new(DkgBody::Confirm(Signed {
                payload: Confirm {
                    header: header(SuiteId::Ed25519, 2),
                    transcript: [0x7c; 32],
                    qual: vec![1, 2, 4],
                },
                signature: sig.clone(),
            })),
        ),
        ("dkg_recover_request", DkgMessage::new(DkgBody::RecoverRequest(recover_request(&sig)))),
        (
            "dkg_evidence",
            DkgMessage::new(DkgBody::Evidence(kms_proto::dkg::Evidence {
                header: header(SuiteId::Ed25519, 4),
                dealer: 2,
                deals: vec![Signed {
                    payload: Deal {
                        header: header(SuiteId::Ed25519, 2),
                        commitments: vec![vec![0xc0; 32], vec![0xc1; 32]],
                        pok_r: vec![0xa1; 32],
                        pok_z: vec![0xa2; 32],
                    },
                    signature: sig.clone(),
                }],
            })),
        ),
        (
            "dkg_key_set",
            DkgMessage::new(DkgBody::KeySet(kms_proto::dkg::KeySet {
                header: header(SuiteId::Bls12381G2, 3),
                qual: vec![1, 2, 3],
                deal_digests: Vec::new(),
                public_key: vec![0xb0; 96],
                verification_keys: vec![vec![0xb1; 96], vec![0xb2; 96], vec![0xb3; 96]],
            })),
        ),
        (
            "dkg_blinding",
            DkgMessage::new(DkgBody::Blinding(Box::new(BlindingMsg {
                request: recover_request(&sig),
                blinding: blinding(&sig),
                share: Signed {
                    payload: BlindingShare {
                        header: header(SuiteId::Ed25519, 2),
                        request: [0xe1; 32],
                        recipient: 4,
                        share: vec![0x6b; 32],
                    },
                    signature: sig.clone(),
                },
            }))),
        ),
        (
            "dkg_recover_reply",
            DkgMessage::new(DkgBody::RecoverReply(Box::new(RecoverReply {
                header: header(SuiteId::Ed25519, 4),
                request: [0xe1; 32],
                outcome: RecoverOutcome::Value { value: vec![0x79; 32], blindings: vec![blinding(&sig)] },
            }))),
        ),
        (
            "dkg_recover_dealt",
            DkgMessage::new(DkgBody::RecoverReply(Box::new(RecoverReply {
                header: header(SuiteId::Ed25519, 2),
                request: [0xe1; 32],
                outcome: RecoverOutcome::Dealt { blinding: Box::new(blinding(&sig)) },
            }))),
        ),
    ]
}

fn recover_request(sig: &[u8]) -> Signed<RecoverRequest> {
    Signed {
        payload: RecoverRequest {
            header: header(SuiteId::Ed25519, 1),
            keys: [0xb5; 32],
            nonce: 0x0102_0304_0506_0708,
            round: 2,
            helpers: vec![2, 4, 5],
        },
        signature: sig.to_vec(),
    }
}

fn blinding(sig: &[u8]) -> Signed<Blinding> {
    Signed {
        payload: Blinding {
            header: header(SuiteId::Ed25519, 2),
            request: [0xe1; 32],
            commitments: vec![vec![0xb1; 32], vec![0xb2; 32]],
        },
        signature: sig.to_vec(),
    }
}

/// A 3-of-5 cluster at epoch 4 growing to 4-of-7 (members 1..5 stay, two join), approved by
/// current members 1, 3 and 5.
pub fn authorized_change() -> (kms_proto::reshare::AuthorizedChange, kms_proto::reshare::Committee) {
    use kms_proto::reshare::{Approval, AuthorizedChange, Committee, Member, RosterChange};
    let old: Vec<SigningKey> = (1..=5u8).map(|i| SigningKey::from_bytes(&[0x30 + i; 32])).collect();
    let new: Vec<SigningKey> = (6..=7u8).map(|i| SigningKey::from_bytes(&[0x30 + i; 32])).collect();
    let members = old
        .iter()
        .chain(&new)
        .enumerate()
        .map(|(i, k)| Member {
            identity: HexBytes(k.verifying_key().to_bytes()),
            p2p_addr: format!("/dns4/kms-{}.example/tcp/4001", i + 1),
            http_url: format!("https://kms-{}.example", i + 1),
        })
        .collect();
    let change = RosterChange {
        version: 1,
        cluster_id: HexBytes([0x5e; 32]),
        from_epoch: 4,
        threshold: 4,
        members,
        dealers: vec![1, 2, 3, 4, 5],
    };
    let approvals = [1u16, 3, 5]
        .iter()
        .map(|&i| Approval {
            index: i,
            signature: HexBytes(old[usize::from(i - 1)].sign(&change.signing_bytes()).to_bytes()),
        })
        .collect();
    let committee = Committee {
        cluster_id: [0x5e; 32],
        epoch: 4,
        threshold: 3,
        identities: old.iter().map(|k| k.verifying_key()).collect(),
    };
    (AuthorizedChange { change, approvals }, committee)
}
