//! Any bytes: `decode_p2p::<DkgMessage>` never panics, and whatever decodes re-encodes to the
//! same bytes (one encoding per message).
#![no_main]
use kms_proto::codec::{decode_p2p, encode_p2p};
use kms_proto::dkg::DkgMessage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = decode_p2p::<DkgMessage>(data) {
        assert_eq!(encode_p2p(&msg), data);
    }
});
