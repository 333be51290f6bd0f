//! Arbitrary decoded messages from arbitrary senders, fed to a running DKG node, interleaved
//! with timeouts: the state machine never panics.
#![no_main]
use std::time::Duration;

use kms_dkg::dkg::{Dkg, DkgConfig, Timeouts};
use kms_dkg::Ed25519;
use kms_proto::codec::decode_p2p;
use kms_proto::dkg::DkgMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let keys: Vec<ed25519_dalek::SigningKey> =
        (1u8..=4).map(|i| ed25519_dalek::SigningKey::from_bytes(&[i; 32])).collect();
    let cfg = DkgConfig {
        session: [0; 32],
        attempt: 1,
        threshold: 3,
        me: 1,
        roster: keys.iter().map(|k| k.verifying_key()).collect(),
        excluded: Default::default(),
        max_faulty: None,
        timeouts: Timeouts::default(),
        resharing: None,
    };
    let mut rng = kms_dkg::testing::seeded_rng(2);
    let Ok((mut dkg, _)) = Dkg::<Ed25519>::new(cfg, keys[0].clone(), Duration::ZERO, &mut rng) else { return };
    // Frames: [from: u8][len: u16 le][bytes]...
    let mut rest = data;
    let mut now = Duration::ZERO;
    while rest.len() >= 3 {
        let from = u16::from(rest[0] % 5);
        let len = usize::from(u16::from_le_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let frame = &rest[3..3 + len];
        rest = &rest[3 + len..];
        if let Ok(msg) = decode_p2p::<DkgMessage>(frame) {
            let _ = dkg.handle_message(from, msg, now);
        } else {
            now += Duration::from_secs(u64::from(rest.len() as u8 % 20));
            let _ = dkg.handle_timeout(now);
        }
    }
});
