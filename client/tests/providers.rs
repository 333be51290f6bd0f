//! Attestation providers against stand-ins: the Confidential Space launcher's real endpoint on
//! a Unix socket, and a configfs-tsm directory answered by a fake "kernel".

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use kms_client::provider::{ConfidentialSpace, DevIssuer, TdxConfigfs, TokenType};
use kms_client::{AttestationProvider, ProviderError};
use kms_proto::api::Evidence;
use serde_json::Value;

fn payload(token: &str) -> Value {
    let part = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(part).unwrap()).unwrap()
}

/// Serves `POST /v1/token` like the launcher: JSON `{audience, token_type, nonces}` in, a JWT out.
fn launcher(socket: PathBuf, seen: Arc<Mutex<Vec<Value>>>, status: u16) -> tokio::runtime::Runtime {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    let listener = rt.block_on(async { tokio::net::UnixListener::bind(&socket) }).unwrap();
    rt.spawn(async move {
        let app = axum::Router::new().route(
            "/v1/token",
            axum::routing::post(move |body: axum::body::Bytes| {
                let seen = seen.clone();
                async move {
                    let req: Value = serde_json::from_slice(&body).unwrap();
                    seen.lock().unwrap().push(req.clone());
                    if status != 200 {
                        return (
                            axum::http::StatusCode::from_u16(status).unwrap(),
                            "audience not allowed".to_string(),
                        );
                    }
                    // Sign like Google would (here: the dev issuer with the test key), echoing the
                    // audience and the nonce.
                    let pem = std::fs::read(
                        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                            .join("../node/tests/fixtures/oidc/signer.pem"),
                    )
                    .unwrap();
                    let issuer = DevIssuer::new(
                        &pem,
                        "kms-test-oidc-1",
                        req["audience"].as_str().unwrap(),
                        "sha256:00",
                    )
                    .unwrap();
                    let nonce: [u8; 32] =
                        hex::decode(req["nonces"][0].as_str().unwrap()).unwrap().try_into().unwrap();
                    (axum::http::StatusCode::OK, issuer.token(&nonce).unwrap())
                }
            }),
        );
        axum::serve(listener, app).await.unwrap();
    });
    rt
}

#[test]
fn confidential_space_provider_asks_the_launcher_socket() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("teeserver.sock");
    let seen = Arc::new(Mutex::new(Vec::new()));
    let _rt = launcher(socket.clone(), seen.clone(), 200);
    let mut p = ConfidentialSpace::new("kms-cluster-a", TokenType::Oidc);
    p.socket = socket;
    let binding = [0x5au8; 32];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let Evidence::ConfidentialSpace { token } = rt.block_on(p.evidence(&binding)).unwrap() else {
        panic!("not a token")
    };
    let claims = payload(&token);
    assert_eq!(claims["eat_nonce"], hex::encode(binding));
    assert_eq!(claims["aud"], "kms-cluster-a");
    let req = seen.lock().unwrap()[0].clone();
    assert_eq!(req["token_type"], "OIDC");
    assert_eq!(req["nonces"], serde_json::json!([hex::encode(binding)]));

    p.token_type = TokenType::Pki;
    rt.block_on(p.evidence(&binding)).unwrap();
    assert_eq!(seen.lock().unwrap()[1]["token_type"], "PKI");
}

#[test]
fn confidential_space_provider_reports_refusals_and_missing_launcher() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("teeserver.sock");
    let _rt = launcher(socket.clone(), Arc::new(Mutex::new(Vec::new())), 400);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let mut p = ConfidentialSpace::new("aud", TokenType::Oidc);
    p.socket = socket;
    match rt.block_on(p.evidence(&[0; 32])) {
        Err(ProviderError::Refused(why)) => {
            assert!(why.contains("400") && why.contains("audience not allowed"), "{why}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    p.socket = dir.path().join("absent.sock");
    assert!(matches!(rt.block_on(p.evidence(&[0; 32])), Err(ProviderError::Unreachable(_))));
}

#[test]
fn tdx_provider_uses_configfs_tsm() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    // A fake kernel: for each new report entry with an inblob, produce outblob = "QUOTE" ‖ inblob.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let kernel = {
        let (root, stop) = (root.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for e in std::fs::read_dir(&root).unwrap().flatten() {
                    let inblob = e.path().join("inblob");
                    let outblob = e.path().join("outblob");
                    if let (Ok(data), false) = (std::fs::read(&inblob), outblob.exists()) {
                        if data.len() == 64 {
                            std::fs::write(&outblob, [b"QUOTE".as_slice(), &data].concat()).unwrap();
                        }
                    }
                }
                std::thread::sleep(Duration::from_millis(2));
            }
        })
    };
    let p = TdxConfigfs { root: root.clone() };
    let binding = [0x33u8; 32];
    let rt = tokio::runtime::Runtime::new().unwrap();
    let evidence = rt.block_on(p.evidence(&binding)).unwrap();
    let quote = evidence.tdx_quote_bytes().unwrap().unwrap();
    assert_eq!(&quote[..5], b"QUOTE");
    assert_eq!(&quote[5..37], &binding);
    assert_eq!(&quote[37..], &[0u8; 32]);
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), 0, "the report entry is removed");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    kernel.join().unwrap();

    let missing = TdxConfigfs { root: root.join("no-such-dir") };
    assert!(matches!(rt.block_on(missing.evidence(&binding)), Err(ProviderError::Unreachable(_))));
}
