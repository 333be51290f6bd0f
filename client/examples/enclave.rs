//! What an enclave does with the client library, against a local network:
//!
//! ```sh
//! cargo run --release -p kms-simnet -- up --dir kms-local     # in one terminal
//! cargo run --release -p kms-client --example enclave -- kms-local
//! ```
//!
//! It registers an app (as its owner would), encrypts a secret offline, then — as the enclave —
//! fetches the app key with dev-issuer attestation, prints what each node did, decrypts, and
//! derives a purpose sub-key.

use std::path::PathBuf;

use ed25519_dalek::SigningKey;
use kms_client::fetch::format_report;
use kms_client::provider::DevIssuer;
use kms_client::{fetch_key, secrets, Cluster, FetchOptions, Pin};
use kms_proto::app::{AppName, ImageDigest, Label, Manifest, Policy, SignedManifest};
use rand_core::OsRng;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "kms-local".into()));
    // 1. The cluster, verified (trust on first use here; an enclave pins the group key).
    let cluster = Cluster::from_json(&std::fs::read(dir.join("cluster.json"))?, Pin::None)?;
    println!("cluster epoch {}, t = {}", cluster.descriptor().epoch, cluster.threshold());

    // 2. The owner registers an app allowing one image.
    let owner = SigningKey::generate(&mut OsRng);
    let image: ImageDigest =
        format!("sha256:{}", "42".repeat(32)).parse().map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let policy = Policy {
        allowed_image_digests: vec![image],
        allowed_hwmodels: vec!["GCP_INTEL_TDX".into()],
        ..Policy::default()
    };
    let manifest = SignedManifest::sign(
        Manifest::new(owner.verifying_key().to_bytes(), AppName::new("example-app")?, 1, policy),
        &owner,
    );
    let app = manifest.manifest.app_id;

    // 3. Offline encryption to (app, "root"), signed by the owner.
    let label = Label::default();
    let envelope =
        secrets::encrypt_signed(&cluster, &owner, &manifest.manifest.name, &label, b"hello from the owner")?;

    // 4. The enclave fetches its key; it presents the manifest itself (nodes accept it if newer).
    let pem = std::fs::read(dir.join("attestation/issuer.pem"))?;
    let provider = DevIssuer::new(&pem, "kms-dev-1", "kms-local", &image.to_string())?;
    let opts = FetchOptions { manifest: Some(manifest), ..FetchOptions::default() };
    let fetched = fetch_key(&cluster, &app, &label, &provider, &opts).await?;
    println!("{}", format_report(&fetched.report));

    // 5. Decrypt (only an envelope the app's owner signed) and derive.
    let plain = secrets::decrypt_signed(&fetched.key, &cluster, &envelope)?;
    println!("decrypted: {}", String::from_utf8_lossy(&plain));
    let db_key = secrets::derive(&fetched.key, "database-encryption");
    println!("derived a 32-byte sub-key ({}…)", &hex::encode(&db_key[..])[..8]);
    Ok(())
}
