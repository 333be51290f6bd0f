//! Node identity (libp2p Ed25519 key, also used to sign DKG messages) and the key files made by
//! `kms-node init`.

use std::fs;
use std::path::Path;

use anyhow::{bail, Context};
use libp2p::{identity, PeerId};
use rand_core::{OsRng, RngCore};
use zeroize::Zeroizing;

use crate::seal::SealKey;

/// File name of the identity key (32-byte Ed25519 secret).
pub const IDENTITY_FILE: &str = "identity.key";
/// File name of the seal key (32 bytes).
pub const SEAL_FILE: &str = "seal.key";
/// Directory of the database.
pub const DB_DIR: &str = "db";

/// The node's identity in both forms.
pub struct Identity {
    /// For libp2p.
    pub keypair: identity::Keypair,
    /// For DKG signatures (the same key).
    pub signing: ed25519_dalek::SigningKey,
}

impl Identity {
    /// The peer id.
    pub fn peer_id(&self) -> PeerId {
        self.keypair.public().to_peer_id()
    }

    fn from_secret(secret: &[u8; 32]) -> anyhow::Result<Self> {
        let mut copy = Zeroizing::new(*secret);
        let keypair = identity::Keypair::ed25519_from_bytes(&mut copy[..]).context("invalid identity key")?;
        Ok(Identity { keypair, signing: ed25519_dalek::SigningKey::from_bytes(secret) })
    }
}

/// Writes `bytes` to a new file readable only by the owner (mode 0600), durably, refusing to
/// overwrite (the one writer of secret files, [`kms_proto::secret_file`]).
pub fn write_secret_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    kms_proto::secret_file::write(path, bytes, kms_proto::secret_file::Existing::Refuse)
        .with_context(|| format!("creating {}", path.display()))
}

fn read_secret_file(path: &Path) -> anyhow::Result<Zeroizing<[u8; 32]>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode =
            fs::metadata(path).with_context(|| format!("reading {}", path.display()))?.permissions().mode();
        if mode & 0o077 != 0 {
            bail!(
                "{} is accessible by group or others (mode {:o}); chmod 600 it",
                path.display(),
                mode & 0o777
            );
        }
    }
    let bytes = Zeroizing::new(fs::read(path).with_context(|| format!("reading {}", path.display()))?);
    let arr: [u8; 32] =
        bytes.as_slice().try_into().map_err(|_| anyhow::anyhow!("{} must hold 32 bytes", path.display()))?;
    Ok(Zeroizing::new(arr))
}

/// `kms-node init`: creates the data directory with a fresh identity and seal key. Refuses to
/// overwrite existing keys.
pub fn init(data_dir: &Path) -> anyhow::Result<Identity> {
    fs::create_dir_all(data_dir).with_context(|| format!("creating {}", data_dir.display()))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut secret[..]);
    write_secret_file(&data_dir.join(IDENTITY_FILE), &secret[..])?;
    let seal = SealKey::generate(&mut OsRng);
    write_secret_file(&data_dir.join(SEAL_FILE), seal.expose())?;
    Identity::from_secret(&secret)
}

/// Loads the identity and seal key of a data directory.
pub fn load(data_dir: &Path) -> anyhow::Result<(Identity, SealKey)> {
    let id = read_secret_file(&data_dir.join(IDENTITY_FILE))?;
    let seal = read_secret_file(&data_dir.join(SEAL_FILE))?;
    Ok((Identity::from_secret(&id)?, SealKey::from_bytes(*seal)))
}
