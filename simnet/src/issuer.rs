//! The development attestation issuer: an RSA-2048 key that signs Confidential Space–format
//! tokens, and the JWKS the local nodes trust. It attests nothing; never configure it in a
//! production node.

use std::path::{Path, PathBuf};

use anyhow::Context;
use base64::Engine;
use rand_core::OsRng;
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use kms_proto::app::{ImageDigest, Policy};

/// Key id of the dev issuer's key in its JWKS.
pub const DEV_KID: &str = "kms-dev-1";

/// Files of the dev issuer under `D/attestation/`.
pub struct IssuerFiles {
    /// RSA private key (PKCS#8 PEM, mode 0600).
    pub key: PathBuf,
    /// JWKS with the public key under [`DEV_KID`].
    pub jwks: PathBuf,
}

/// Creates (or reuses) the dev issuer key and JWKS in `dir`.
pub fn ensure(dir: &Path) -> anyhow::Result<IssuerFiles> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let files = IssuerFiles { key: dir.join("issuer.pem"), jwks: dir.join("jwks.json") };
    if files.key.exists() && files.jwks.exists() {
        return Ok(files);
    }
    let key = rsa::RsaPrivateKey::new(&mut OsRng, 2048).context("generating the dev issuer key")?;
    let pem = key.to_pkcs8_pem(LineEnding::LF).context("encoding the dev issuer key")?;
    let _ = std::fs::remove_file(&files.key);
    kms_node::identity::write_secret_file(&files.key, pem.as_bytes())?;
    let b64 = |b: Vec<u8>| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b);
    let jwks = serde_json::json!({"keys": [{
        "kty": "RSA", "alg": "RS256", "use": "sig", "kid": DEV_KID,
        "n": b64(key.n().to_bytes_be()), "e": b64(key.e().to_bytes_be()),
    }]});
    std::fs::write(&files.jwks, serde_json::to_vec_pretty(&jwks)?)?;
    Ok(files)
}

/// The `[evidence]` table of a local node: it makes its own evidence with the dev issuer's key,
/// claiming the SHA-256 of this binary (which every local node runs) as its image, and exchanges DKG
/// and reshare messages only with peers whose evidence claims an allowed image
/// (`D/attestation/node-policy.json`: the images of every binary that ran the network; also what
/// `kms cluster verify --node-policy` reads).
pub fn node_evidence(dir: &Path, files: &IssuerFiles) -> anyhow::Result<String> {
    let exe = std::env::current_exe().context("locating this binary")?;
    let bytes = std::fs::read(&exe).with_context(|| format!("reading {}", exe.display()))?;
    let image = ImageDigest(Sha256::digest(&bytes).into());
    let path = dir.join("node-policy.json");
    // A network that already has a policy keeps the images it allowed: a rebuilt binary joining
    // it (a reshare after an upgrade) is added, as an operator rolling out a new image would.
    let mut policy = match std::fs::read(&path) {
        Ok(doc) => {
            serde_json::from_slice(&doc).with_context(|| format!("{}: not a policy", path.display()))?
        }
        Err(_) => Policy { allowed_hwmodels: vec!["GCP_INTEL_TDX".into()], ..Policy::default() },
    };
    if !policy.allowed_image_digests.contains(&image) {
        policy.allowed_image_digests.push(image);
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&policy)?)
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(format!(
        "\n# Each node proves what it runs (GET /v1/attestation) and requires it of its peers.\n\
         [evidence]\nprovider = \"dev\"\ndev_issuer_key_file = {:?}\ndev_kid = \"{DEV_KID}\"\n\
         image_digest = \"{image}\"\npeer_policy_file = {path:?}\n",
        files.key
    ))
}
