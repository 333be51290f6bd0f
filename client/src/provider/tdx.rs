//! TDX quotes from Linux configfs-tsm: make a report entry, write `inblob` (64 bytes of report
//! data), read `outblob` (the quote), remove the entry.

use std::path::PathBuf;

use futures::future::BoxFuture;
use futures::FutureExt;
use rand_core::{OsRng, RngCore};

use kms_proto::api::Evidence;

use super::{AttestationProvider, ProviderError};

/// The configfs-tsm report directory.
pub const CONFIGFS_TSM_REPORT: &str = "/sys/kernel/config/tsm/report";

/// Quotes through configfs-tsm.
#[derive(Debug, Clone)]
pub struct TdxConfigfs {
    /// The report directory (the standard one unless testing).
    pub root: PathBuf,
}

impl Default for TdxConfigfs {
    fn default() -> Self {
        TdxConfigfs { root: PathBuf::from(CONFIGFS_TSM_REPORT) }
    }
}

/// `report_data = binding ‖ 0³²` (`docs/formats.md` §5.2).
pub fn report_data(binding: &[u8; 32]) -> [u8; 64] {
    let mut rd = [0u8; 64];
    rd[..32].copy_from_slice(binding);
    rd
}

impl TdxConfigfs {
    fn quote(&self, binding: &[u8; 32]) -> Result<Vec<u8>, ProviderError> {
        let mut tag = [0u8; 8];
        OsRng.fill_bytes(&mut tag);
        let entry = self.root.join(format!("kms-{}", hex::encode(tag)));
        std::fs::create_dir(&entry).map_err(|e| {
            ProviderError::Unreachable(format!("configfs-tsm at {}: {e}", self.root.display()))
        })?;
        let result = (|| {
            std::fs::write(entry.join("inblob"), report_data(binding))
                .map_err(|e| ProviderError::Refused(format!("writing inblob: {e}")))?;
            // The kernel produces the quote on read; poll briefly in case it is generated
            // asynchronously (and for test stand-ins).
            for _ in 0..200 {
                match std::fs::read(entry.join("outblob")) {
                    Ok(q) if !q.is_empty() => return Ok(q),
                    Ok(_) | Err(_) => std::thread::sleep(std::time::Duration::from_millis(10)),
                }
            }
            Err(ProviderError::Refused("configfs-tsm produced no quote".into()))
        })();
        let _ = std::fs::remove_dir_all(&entry).or_else(|_| std::fs::remove_dir(&entry));
        result
    }
}

impl AttestationProvider for TdxConfigfs {
    fn evidence<'a>(&'a self, binding: &'a [u8; 32]) -> BoxFuture<'a, Result<Evidence, ProviderError>> {
        let this = self.clone();
        let binding = *binding;
        async move {
            let quote = tokio::task::spawn_blocking(move || this.quote(&binding))
                .await
                .map_err(|e| ProviderError::Unreachable(e.to_string()))??;
            Ok(Evidence::tdx_quote(&quote))
        }
        .boxed()
    }
}
