//! Persistent state behind a small key-value trait: sealed key shares, DKG progress, the newest
//! manifest of each app, the replay cache and the append-only audit log.
//!
//! [`Kv`] is the storage seam (sled in production, a map in tests); [`NodeStore`] holds the
//! typed logic and does all sealing, so no backend ever sees a share in plaintext.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use rand_core::OsRng;
use serde::{Deserialize, Serialize};

use kms_dkg::KeyShare;
use kms_proto::app::{AppId, SignedManifest};
use kms_proto::audit::LogEntry;
use kms_proto::merkle::{self, Hash, Subtrees};

use crate::seal::{SealError, SealKey};

/// Key of [`NodeStore::committee_changed`] in `Space::Lease` (app records have 32-byte keys).
const LEASE_COMMITTEE_CHANGED: &[u8] = b"committee-changed";

/// The key spaces of the store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Space {
    /// DKG progress and the active epoch.
    Meta,
    /// Sealed key shares and the cluster descriptor, by epoch.
    Keys,
    /// Newest signed manifest per app.
    Manifests,
    /// Used request nonces with their expiry.
    Replay,
    /// Before the transparency log: JSON audit entries by app (read once, moved into `Log`).
    Audit,
    /// The audit log as an RFC 9162 tree: entries by index, perfect-subtree hashes, the size,
    /// the index of each leaf hash, and each app's entry indices.
    Log,
    /// Each app's lease record ([`kms_proto::lease::LeaseRecord`]).
    Lease,
}

impl Space {
    fn name(self) -> &'static str {
        match self {
            Space::Meta => "meta",
            Space::Keys => "keys",
            Space::Manifests => "manifests",
            Space::Replay => "replay",
            Space::Audit => "audit",
            Space::Log => "log",
            Space::Lease => "lease",
        }
    }
}

/// Storage failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend reported an error.
    #[error("storage backend: {0}")]
    Backend(String),
    /// A sealed record does not open.
    #[error("sealed record {name}: {source}")]
    Seal {
        /// Record name.
        name: String,
        /// Why.
        source: SealError,
    },
    /// A record does not decode.
    #[error("corrupt record {0}")]
    Corrupt(String),
}

/// Key-value pairs returned by a scan.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

type MemMap = BTreeMap<(Space, Vec<u8>), Vec<u8>>;

/// The storage seam: ordered byte keys and values in a few spaces, durable after `flush`.
pub trait Kv: Send + Sync + 'static {
    /// Reads a value.
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes a value.
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError>;
    /// Writes only if the key is absent; returns whether it wrote.
    fn put_if_absent(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, StoreError>;
    /// Removes a key.
    fn remove(&self, space: Space, key: &[u8]) -> Result<(), StoreError>;
    /// All entries whose key starts with `prefix`, in key order.
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Entries, StoreError>;
    /// At most `limit` entries whose key starts with `prefix` and is at least `from`, in key
    /// order.
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError>;
    /// A new, strictly increasing id (for the audit log).
    fn next_id(&self) -> Result<u64, StoreError>;
    /// Makes every previous write durable. After a failure that may have lost writes (a failed
    /// device sync), every later call must fail too: what depends on those writes is never sent.
    fn flush(&self) -> Result<(), StoreError>;
}

/// A store shared with its owner (a test that injects a fault into the store a node uses).
impl<K: Kv + ?Sized + Send + Sync> Kv for std::sync::Arc<K> {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        (**self).get(space, key)
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        (**self).put(space, key, value)
    }
    fn put_if_absent(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        (**self).put_if_absent(space, key, value)
    }
    fn remove(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        (**self).remove(space, key)
    }
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Entries, StoreError> {
        (**self).scan_prefix(space, prefix)
    }
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        (**self).scan_from(space, prefix, from, limit)
    }
    fn next_id(&self) -> Result<u64, StoreError> {
        (**self).next_id()
    }
    fn flush(&self) -> Result<(), StoreError> {
        (**self).flush()
    }
}

/// sled-backed storage.
pub struct SledKv {
    db: sled::Db,
    /// The sled directory.
    dir: std::path::PathBuf,
    /// sled's log (`<sled dir>/db`, where it writes every record of a page smaller than a quarter
    /// of a segment). sled 0.34 makes a flush stable on Linux with `sync_file_range` alone, which
    /// writes the data pages but neither the file's metadata (its new length) nor the device's write
    /// cache: [`Kv::flush`] follows it with `fdatasync` of this file, so that what a flush covered
    /// survives a power loss, not only a crash of the process (`docs/decisions.md` 42).
    log: std::fs::File,
    /// The files under `<sled dir>/blobs` already synced, with their length then. sled writes a
    /// larger page to a file of its own there (once, never changed after) and never syncs it or
    /// the directory; [`Kv::flush`] syncs each new one, and again one that grew since (a flush
    /// that listed it while sled was still writing it).
    blobs: Mutex<std::collections::HashMap<std::ffi::OsString, u64>>,
    /// The first failure to make writes durable. After it every flush fails: Linux reports a
    /// failed writeback to one `fsync` only and may drop the dirty pages, so a later sync that
    /// succeeds would not mean the earlier writes are on disk. Only a restart, which reads back
    /// what really is on disk, clears it.
    failed: std::sync::OnceLock<String>,
    /// Successful syncs of `log` (tests check that a flush makes one).
    log_syncs: std::sync::atomic::AtomicU64,
    /// Test fault: the next sync fails (`test-faults`, debug builds only).
    #[cfg(all(feature = "test-faults", debug_assertions))]
    fail_next_sync: std::sync::atomic::AtomicBool,
}

fn backend(e: sled::Error) -> StoreError {
    StoreError::Backend(e.to_string())
}

impl SledKv {
    /// Opens (or creates) the database in `dir`.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let db = sled::Config::new().path(dir).mode(sled::Mode::HighThroughput).open().map_err(backend)?;
        let io =
            |what: &str, e: std::io::Error| StoreError::Backend(format!("{what} in {}: {e}", dir.display()));
        let log = std::fs::File::open(dir.join(SLED_LOG)).map_err(|e| io("opening sled's log file", e))?;
        // The entries sled may just have created (its log, its config, its blob directory, the
        // directory itself) and what they hold.
        log.sync_all().map_err(|e| io("syncing sled's log file", e))?;
        let kv = SledKv {
            db,
            dir: dir.to_path_buf(),
            log,
            blobs: Mutex::new(Default::default()),
            failed: std::sync::OnceLock::new(),
            log_syncs: std::sync::atomic::AtomicU64::new(0),
            #[cfg(all(feature = "test-faults", debug_assertions))]
            fail_next_sync: std::sync::atomic::AtomicBool::new(false),
        };
        kv.sync_blobs().map_err(|e| io("syncing sled's blob files", e))?;
        for d in [Some(dir), dir.parent().filter(|p| !p.as_os_str().is_empty())].into_iter().flatten() {
            sync_dir(d).map_err(|e| io("syncing the store's directory", e))?;
        }
        Ok(kv)
    }

    /// Syncs the blob files sled wrote since the last call (and the directory, if there are
    /// any); forgets the ones sled removed.
    fn sync_blobs(&self) -> std::io::Result<()> {
        let dir = self.dir.join(SLED_BLOBS);
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let mut synced = self.blobs.lock().unwrap_or_else(|e| e.into_inner());
        let mut present = std::collections::HashMap::with_capacity(synced.len());
        let mut new = false;
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            // A stat per file and flush; a file is opened only to sync it.
            let len = match entry.metadata() {
                Ok(m) => m.len(),
                // Removed by sled since the listing: nothing to keep.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            if synced.get(&name) != Some(&len) {
                match std::fs::File::open(dir.join(&name)) {
                    Ok(f) => f.sync_all()?,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(e),
                }
                new = true;
            }
            present.insert(name, len);
        }
        *synced = present;
        if new {
            sync_dir(&dir)?;
        }
        Ok(())
    }

    /// sled's flush, then the syncs it leaves out.
    fn sync(&self) -> Result<(), StoreError> {
        self.db.flush().map_err(backend)?;
        #[cfg(all(feature = "test-faults", debug_assertions))]
        if self.fail_next_sync.swap(false, std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Backend("syncing sled's log file: injected failure (test fault)".into()));
        }
        self.sync_blobs().map_err(|e| StoreError::Backend(format!("syncing sled's blob files: {e}")))?;
        self.log.sync_data().map_err(|e| StoreError::Backend(format!("syncing sled's log file: {e}")))?;
        self.log_syncs.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ok(())
    }

    /// How many times a flush synced sled's log file since the store was opened.
    pub fn log_syncs(&self) -> u64 {
        self.log_syncs.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// How many blob files the store knows synced (sled writes one per page larger than a quarter
    /// of its 512 KiB segments).
    pub fn synced_blobs(&self) -> usize {
        self.blobs.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Test fault: the next flush fails as if the device had refused the sync.
    #[cfg(all(feature = "test-faults", debug_assertions))]
    pub fn fail_next_sync(&self) {
        self.fail_next_sync.store(true, std::sync::atomic::Ordering::SeqCst);
    }

    fn tree(&self, space: Space) -> Result<sled::Tree, StoreError> {
        self.db.open_tree(space.name()).map_err(backend)
    }
}

impl Kv for SledKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tree(space)?.get(key).map_err(backend)?.map(|v| v.to_vec()))
    }

    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.tree(space)?.insert(key, value).map_err(backend)?;
        Ok(())
    }

    fn put_if_absent(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let r =
            self.tree(space)?.compare_and_swap(key, None as Option<&[u8]>, Some(value)).map_err(backend)?;
        Ok(r.is_ok())
    }

    fn remove(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.tree(space)?.remove(key).map_err(backend)?;
        Ok(())
    }

    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree(space)?
            .scan_prefix(prefix)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        self.tree(space)?
            .range(from..)
            .take_while(|r| r.as_ref().map_or(true, |(k, _)| k.starts_with(prefix)))
            .take(limit)
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(backend))
            .collect()
    }

    fn next_id(&self) -> Result<u64, StoreError> {
        self.db.generate_id().map_err(backend)
    }

    fn flush(&self) -> Result<(), StoreError> {
        if let Some(first) = self.failed.get() {
            return Err(StoreError::Backend(format!(
                "an earlier flush failed ({first}): what was written since the last good flush may not be \
                 on disk; restart the node"
            )));
        }
        self.sync().inspect_err(|e| {
            if self.failed.set(e.to_string()).is_ok() {
                tracing::error!(error = %e, "the store could not make its writes durable: every later flush fails until the node restarts");
            }
        })
    }
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// The file of a sled 0.34 database that holds its log (`Config::db_path`).
pub const SLED_LOG: &str = "db";
/// The directory where sled 0.34 writes each page too large for its log, one file per page.
pub const SLED_BLOBS: &str = "blobs";

/// In-memory storage for tests.
#[derive(Default)]
pub struct MemKv {
    inner: Mutex<MemMap>,
    ids: Mutex<u64>,
}

impl MemKv {
    fn map(&self) -> Result<std::sync::MutexGuard<'_, MemMap>, StoreError> {
        self.inner.lock().map_err(|_| StoreError::Backend("poisoned".into()))
    }
}

impl Kv for MemKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.map()?.get(&(space, key.to_vec())).cloned())
    }
    fn put(&self, space: Space, key: &[u8], value: &[u8]) -> Result<(), StoreError> {
        self.map()?.insert((space, key.to_vec()), value.to_vec());
        Ok(())
    }
    fn put_if_absent(&self, space: Space, key: &[u8], value: &[u8]) -> Result<bool, StoreError> {
        let mut m = self.map()?;
        if m.contains_key(&(space, key.to_vec())) {
            return Ok(false);
        }
        m.insert((space, key.to_vec()), value.to_vec());
        Ok(true)
    }
    fn remove(&self, space: Space, key: &[u8]) -> Result<(), StoreError> {
        self.map()?.remove(&(space, key.to_vec()));
        Ok(())
    }
    fn scan_prefix(&self, space: Space, prefix: &[u8]) -> Result<Entries, StoreError> {
        Ok(self
            .map()?
            .range((space, prefix.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    fn scan_from(
        &self,
        space: Space,
        prefix: &[u8],
        from: &[u8],
        limit: usize,
    ) -> Result<Entries, StoreError> {
        Ok(self
            .map()?
            .range((space, from.to_vec())..)
            .take_while(|((s, k), _)| *s == space && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }
    fn next_id(&self) -> Result<u64, StoreError> {
        let mut id = self.ids.lock().map_err(|_| StoreError::Backend("poisoned".into()))?;
        *id += 1;
        Ok(*id)
    }
    fn flush(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

pub use kms_dkg::ceremony::ActiveKeys;

/// One audit log entry (no secrets: the partial key itself is never logged), as the API shows
/// it; the log stores its canonical encoding ([`kms_proto::audit::LogEntry`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Its index in this node's log (contiguous from 0).
    pub id: u64,
    /// Unix seconds.
    pub time: u64,
    /// The app.
    pub app_id: AppId,
    /// The label requested.
    pub label: String,
    /// `released` or the refusal code.
    pub outcome: String,
    /// Image digest or TDX MRTD of the requester, when known.
    pub workload: Option<String>,
    /// The platform's name of the attested instance, when the evidence carries one.
    #[serde(default)]
    pub instance: Option<String>,
    /// Hex of SHA-256 of the requesting enclave's public key (zeros: not recorded).
    #[serde(default)]
    pub client_key: String,
    /// Hex of the request binding (identifies the request without revealing anything).
    pub binding: String,
    /// Manifest sequence number applied.
    pub manifest_seq: Option<u64>,
}

impl AuditEntry {
    /// The log entry it stands for (hex fields that do not parse become zeros).
    pub fn to_log_entry(&self) -> LogEntry {
        LogEntry {
            time: self.time,
            app_id: self.app_id,
            label: self.label.clone(),
            outcome: self.outcome.clone(),
            workload: self.workload.clone(),
            instance: self.instance.clone(),
            client_key: kms_proto::hex_bytes::parse_hex(&self.client_key).unwrap_or([0; 32]),
            binding: kms_proto::hex_bytes::parse_hex(&self.binding).unwrap_or([0; 32]),
            manifest_seq: self.manifest_seq,
        }
    }

    /// The API view of log entry `index`.
    pub fn from_log_entry(index: u64, e: LogEntry) -> Self {
        AuditEntry {
            id: index,
            time: e.time,
            app_id: e.app_id,
            label: e.label,
            outcome: e.outcome,
            workload: e.workload,
            instance: e.instance,
            client_key: hex::encode(e.client_key),
            binding: hex::encode(e.binding),
            manifest_seq: e.manifest_seq,
        }
    }
}

// Keys of `Space::Log`.
const LOG_SIZE: &[u8] = b"n";
const LOG_ENTRY: u8 = b'e';
const LOG_HASH: u8 = b'h';
const LOG_LEAF: u8 = b'l';
const LOG_APP: u8 = b'a';
const LOG_BINDING: u8 = b'b';
const LOG_WITNESSED: u8 = b'w';
const LOG_EQUIVOCATION: u8 = b'x';
const LOG_PUBLISHED: &[u8] = b"p";
/// The first entry not pruned.
const LOG_PRUNED: &[u8] = b"f";

/// Eight bytes as a big-endian u64; anything else is a corrupt `what`.
fn be_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    bytes.try_into().map(u64::from_be_bytes).map_err(|_| StoreError::Corrupt(what.into()))
}

fn log_key(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let mut k = vec![tag];
    for p in parts {
        k.extend_from_slice(p);
    }
    k
}

/// The stored tree: its perfect-subtree hashes answer proofs.
pub struct LogTree<'a>(&'a NodeStore);

impl Subtrees for LogTree<'_> {
    type Error = StoreError;

    fn perfect(&self, start: u64, size: u64) -> Result<Hash, StoreError> {
        let level = size.trailing_zeros() as u8;
        let key = log_key(LOG_HASH, &[&[level], &(start >> level).to_be_bytes()]);
        let v =
            self.0.kv.get(Space::Log, &key)?.ok_or_else(|| StoreError::Corrupt("log hash missing".into()))?;
        v.try_into().map_err(|_| StoreError::Corrupt("log hash".into()))
    }
}

/// Typed, sealed access to a [`Kv`].
pub struct NodeStore {
    kv: Box<dyn Kv>,
    seal: SealKey,
    group: GroupFlush,
    /// Appends to the log one at a time (indices are contiguous).
    log: Mutex<()>,
}

/// Group commit for [`NodeStore::durable`]: callers that need a flush at about the same time
/// share one. Each caller takes a ticket after its writes; a flush started after a ticket was
/// taken covers that caller's writes.
#[derive(Default)]
struct GroupFlush {
    state: std::sync::Mutex<FlushState>,
    done: std::sync::Condvar,
}

#[derive(Default)]
struct FlushState {
    /// Tickets issued.
    requested: u64,
    /// Every ticket up to this one is covered by a completed flush.
    flushed: u64,
    /// A flush is running.
    running: bool,
}

const META_ATTEMPT: &[u8] = b"dkg/attempt";
const META_ACTIVE: &[u8] = b"active-epoch";
const META_CLUSTER: &[u8] = b"cluster-id";
const META_RETIRED: &[u8] = b"retired-epoch";

fn share_name(suite: &str, epoch: u64) -> String {
    format!("share/{suite}/{epoch}")
}

/// The epoch of a [`share_name`].
fn share_epoch(name: &[u8]) -> Option<u64> {
    std::str::from_utf8(name).ok()?.rsplit('/').next()?.parse().ok()
}

impl NodeStore {
    /// Wraps a backend with the node's seal key.
    pub fn new(kv: Box<dyn Kv>, seal: SealKey) -> Self {
        NodeStore { kv, seal, group: GroupFlush::default(), log: Mutex::new(()) }
    }

    fn get_u64(&self, key: &[u8]) -> Result<Option<u64>, StoreError> {
        self.kv
            .get(Space::Meta, key)?
            .map(|v| {
                v.try_into()
                    .map(u64::from_be_bytes)
                    .map_err(|_| StoreError::Corrupt(String::from_utf8_lossy(key).into()))
            })
            .transpose()
    }

    /// Binds the store to a cluster id on first use; refuses a store made for another cluster
    /// (another roster or threshold), whose shares must not be served under this configuration.
    pub fn bind_cluster(&self, cluster_id: &[u8; 32]) -> Result<(), StoreError> {
        match self.kv.get(Space::Meta, META_CLUSTER)? {
            Some(held) if held.as_slice() == cluster_id => Ok(()),
            Some(held) => {
                let unused = self.dkg_attempt()? == 0 && self.get_u64(META_ACTIVE)?.is_none();
                Err(StoreError::Corrupt(format!(
                    "this data directory belongs to cluster {}, but the configuration defines cluster {}; \
                     a new roster or threshold for a running cluster is made with a reshare (docs/node-config.md){}",
                    hex::encode(held),
                    hex::encode(cluster_id),
                    if unused {
                        "; no key ceremony ever started with this data directory, so removing its db/ \
                         directory loses nothing (the identity key stays)"
                    } else {
                        ""
                    }
                )))
            }
            None => {
                self.kv.put(Space::Meta, META_CLUSTER, cluster_id)?;
                self.kv.flush()
            }
        }
    }

    /// The last DKG attempt this node started (0 if none).
    pub fn dkg_attempt(&self) -> Result<u64, StoreError> {
        Ok(self.get_u64(META_ATTEMPT)?.unwrap_or(0))
    }

    /// Records (durably) that attempt `attempt` has started, before any message of it is sent:
    /// a node restarted mid-ceremony never deals twice in one attempt.
    pub fn set_dkg_attempt(&self, attempt: u64) -> Result<(), StoreError> {
        self.kv.put(Space::Meta, META_ATTEMPT, &attempt.to_be_bytes())?;
        self.kv.flush()
    }

    /// Seals and stores both shares of `epoch` and marks it active, durably.
    pub fn activate(&self, keys: &ActiveKeys) -> Result<(), StoreError> {
        let bls_name = share_name("bls12381g2", keys.epoch);
        let ed_name = share_name("ed25519", keys.epoch);
        let bls = self.seal.seal(&bls_name, &keys.bls.to_bytes(), &mut OsRng);
        let ed = self.seal.seal(&ed_name, &keys.ed25519.to_bytes(), &mut OsRng);
        self.kv.put(Space::Keys, bls_name.as_bytes(), &bls)?;
        self.kv.put(Space::Keys, ed_name.as_bytes(), &ed)?;
        self.kv.flush()?;
        self.kv.put(Space::Meta, META_ACTIVE, &keys.epoch.to_be_bytes())?;
        self.kv.flush()?;
        // A reshare's new shares replace the old ones, which are then erased from this store,
        // with the ceremony records and logged messages of earlier attempts (they hold the
        // shares dealt to this node then, from which an old share could be computed again).
        self.remove_shares(|epoch| epoch != keys.epoch)?;
        self.remove_ceremony_state(|attempt| attempt < keys.epoch)
    }

    /// Erases the ceremony records and logged messages of every attempt up to `epoch`, durably:
    /// after a reshare, the record of the completing attempt holds this node's deal, whose
    /// constant term is its old share.
    pub fn forget_ceremonies_through(&self, epoch: u64) -> Result<(), StoreError> {
        self.remove_ceremony_state(|attempt| attempt <= epoch)
    }

    /// Removes the ceremony records and logged messages of the attempts `doomed` selects.
    fn remove_ceremony_state(&self, doomed: impl Fn(u64) -> bool) -> Result<(), StoreError> {
        for (name, _) in self.kv.scan_prefix(Space::Meta, b"dkg/")? {
            let attempt = std::str::from_utf8(&name)
                .ok()
                .and_then(|n| n.split('/').nth(1))
                .and_then(|a| a.parse::<u64>().ok());
            if attempt.is_some_and(&doomed) {
                self.kv.remove(Space::Meta, &name)?;
            }
        }
        self.kv.flush()
    }

    /// Removes every stored share whose epoch `doomed` selects, durably.
    fn remove_shares(&self, doomed: impl Fn(u64) -> bool) -> Result<(), StoreError> {
        for (name, _) in self.kv.scan_prefix(Space::Keys, b"share/")? {
            if share_epoch(&name).is_some_and(&doomed) {
                self.kv.remove(Space::Keys, &name)?;
            }
        }
        self.kv.flush()
    }

    /// The epochs of which this store holds shares, ascending.
    pub fn share_epochs(&self) -> Result<Vec<u64>, StoreError> {
        let mut epochs: Vec<u64> = self
            .kv
            .scan_prefix(Space::Keys, b"share/")?
            .into_iter()
            .filter_map(|(name, _)| share_epoch(&name))
            .collect();
        epochs.sort_unstable();
        epochs.dedup();
        Ok(epochs)
    }

    /// A reshare handed the keys to a committee without this node at `epoch`: every share is
    /// erased and the node is marked retired, durably.
    pub fn retire(&self, epoch: u64) -> Result<(), StoreError> {
        self.kv.put(Space::Meta, META_RETIRED, &epoch.to_be_bytes())?;
        self.kv.remove(Space::Meta, META_ACTIVE)?;
        self.kv.flush()?;
        self.remove_shares(|_| true)?;
        self.remove_ceremony_state(|_| true)
    }

    /// The epoch at which this node retired, if it did.
    pub fn retired(&self) -> Result<Option<u64>, StoreError> {
        self.get_u64(META_RETIRED)
    }

    /// Stores a public document (a roster change, the committee) under `name`, durably.
    pub fn put_doc(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.kv.put(Space::Meta, format!("doc/{name}").as_bytes(), bytes)?;
        self.kv.flush()
    }

    /// Stores a public document that the node can learn again if a crash loses it (a copy of
    /// what a peer passed on): written now, on disk with the next flush (sled's own within half
    /// a second). At 64 members a flush per gossiped copy made each member wait on the disk for
    /// every approval it learnt.
    pub fn put_doc_unflushed(&self, name: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.kv.put(Space::Meta, format!("doc/{name}").as_bytes(), bytes)
    }

    /// Removes a public document that nothing depends on (on disk with the next flush).
    pub fn remove_doc_unflushed(&self, name: &str) -> Result<(), StoreError> {
        self.kv.remove(Space::Meta, format!("doc/{name}").as_bytes())
    }

    /// A public document stored with [`NodeStore::put_doc`].
    pub fn get_doc(&self, name: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Space::Meta, format!("doc/{name}").as_bytes())
    }

    /// Removes a public document, durably.
    pub fn remove_doc(&self, name: &str) -> Result<(), StoreError> {
        self.kv.remove(Space::Meta, format!("doc/{name}").as_bytes())?;
        self.kv.flush()
    }

    /// Every public document whose name starts with `prefix`, by name.
    pub fn docs(&self, prefix: &str) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let full = format!("doc/{prefix}");
        Ok(self
            .kv
            .scan_prefix(Space::Meta, full.as_bytes())?
            .into_iter()
            .map(|(k, v)| (String::from_utf8_lossy(&k).trim_start_matches("doc/").to_string(), v))
            .collect())
    }

    fn open_share(&self, name: &str) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
        let Some(sealed) = self.kv.get(Space::Keys, name.as_bytes())? else { return Ok(None) };
        self.seal
            .open(name, &sealed)
            .map(Some)
            .map_err(|source| StoreError::Seal { name: name.to_owned(), source })
    }

    /// The active epoch's shares, if any.
    pub fn active(&self) -> Result<Option<ActiveKeys>, StoreError> {
        let Some(epoch) = self.get_u64(META_ACTIVE)? else { return Ok(None) };
        let bls_name = share_name("bls12381g2", epoch);
        let ed_name = share_name("ed25519", epoch);
        let (Some(bls), Some(ed)) = (self.open_share(&bls_name)?, self.open_share(&ed_name)?) else {
            return Err(StoreError::Corrupt(format!("active epoch {epoch} has no shares")));
        };
        let bls = KeyShare::from_bytes(&bls).map_err(|e| StoreError::Corrupt(format!("{bls_name}: {e}")))?;
        let ed25519 =
            KeyShare::from_bytes(&ed).map_err(|e| StoreError::Corrupt(format!("{ed_name}: {e}")))?;
        Ok(Some(ActiveKeys { epoch, bls, ed25519 }))
    }

    /// Seals and stores this node's DKG record of `attempt` for `suite` (its own deal and
    /// share), durably, before the deal is sent.
    pub fn put_dkg_record(&self, attempt: u64, suite: &str, record: &[u8]) -> Result<(), StoreError> {
        let name = format!("dkg/{attempt}/{suite}/record");
        let sealed = self.seal.seal(&name, record, &mut OsRng);
        self.kv.put(Space::Meta, name.as_bytes(), &sealed)?;
        self.kv.flush()
    }

    /// This node's DKG record of `attempt` for `suite`, if it dealt.
    pub fn dkg_record(
        &self,
        attempt: u64,
        suite: &str,
    ) -> Result<Option<zeroize::Zeroizing<Vec<u8>>>, StoreError> {
        let name = format!("dkg/{attempt}/{suite}/record");
        let Some(sealed) = self.kv.get(Space::Meta, name.as_bytes())? else { return Ok(None) };
        self.seal.open(&name, &sealed).map(Some).map_err(|source| StoreError::Seal { name, source })
    }

    /// Logs (sealed: shares travel in DKG messages) a DKG message received in `attempt`.
    pub fn log_dkg_message(&self, attempt: u64, from: u16, bytes: &[u8]) -> Result<(), StoreError> {
        let id = self.kv.next_id()?;
        let name = format!("dkg/{attempt:020}/inbox/{id:020}");
        let record = [&from.to_be_bytes()[..], bytes].concat();
        let sealed = self.seal.seal(&name, &record, &mut OsRng);
        self.kv.put(Space::Meta, name.as_bytes(), &sealed)
    }

    /// The DKG messages logged in `attempt`, in arrival order.
    pub fn dkg_messages(&self, attempt: u64) -> Result<Vec<(u16, Vec<u8>)>, StoreError> {
        let prefix = format!("dkg/{attempt:020}/inbox/");
        let mut out = Vec::new();
        for (k, v) in self.kv.scan_prefix(Space::Meta, prefix.as_bytes())? {
            let name = String::from_utf8_lossy(&k).to_string();
            let plain = self
                .seal
                .open(&name, &v)
                .map_err(|source| StoreError::Seal { name: name.clone(), source })?;
            if plain.len() >= 2 {
                out.push((u16::from_be_bytes([plain[0], plain[1]]), plain[2..].to_vec()));
            }
        }
        Ok(out)
    }

    /// Stores a public document of an epoch (e.g. the signed cluster descriptor).
    pub fn put_public(&self, name: &str, epoch: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.kv.put(Space::Keys, format!("public/{name}/{epoch}").as_bytes(), bytes)?;
        self.kv.flush()
    }

    /// Reads a public document of an epoch.
    pub fn get_public(&self, name: &str, epoch: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.kv.get(Space::Keys, format!("public/{name}/{epoch}").as_bytes())
    }

    /// The newest manifest held for `app`.
    pub fn manifest(&self, app: &AppId) -> Result<Option<SignedManifest>, StoreError> {
        self.kv
            .get(Space::Manifests, app.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt(format!("manifest {app}"))))
            .transpose()
    }

    /// Stores a manifest (the caller checked signature and `seq`).
    pub fn put_manifest(&self, m: &SignedManifest) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(m).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.kv.put(Space::Manifests, m.manifest.app_id.as_bytes(), &bytes)?;
        self.kv.flush()
    }

    /// Every manifest held.
    pub fn manifests(&self) -> Result<Vec<SignedManifest>, StoreError> {
        self.kv
            .scan_prefix(Space::Manifests, &[])?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt("manifest".into())))
            .collect()
    }

    /// This node's lease record of `app`, if it ever granted one.
    pub fn lease(&self, app: &AppId) -> Result<Option<kms_proto::lease::LeaseRecord>, StoreError> {
        self.kv
            .get(Space::Lease, app.as_bytes())?
            .map(|v| serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt(format!("lease {app}"))))
            .transpose()
    }

    /// Replaces the lease record of `app` (durable after [`NodeStore::durable`]).
    pub fn put_lease(&self, app: &AppId, record: &kms_proto::lease::LeaseRecord) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.kv.put(Space::Lease, app.as_bytes(), &bytes)
    }

    /// Records that this node's committee changed (keys of a reshare became active) at `now`,
    /// its clock: it grants no new lease for a while after (`KeyService::lease`).
    pub fn set_committee_changed(&self, now: u64) -> Result<(), StoreError> {
        self.kv.put(Space::Lease, LEASE_COMMITTEE_CHANGED, &now.to_be_bytes())?;
        self.kv.flush()
    }

    /// When this node's committee last changed by a reshare, if ever.
    pub fn committee_changed(&self) -> Result<Option<u64>, StoreError> {
        match self.kv.get(Space::Lease, LEASE_COMMITTEE_CHANGED)? {
            None => Ok(None),
            Some(v) => v
                .try_into()
                .map(|b| Some(u64::from_be_bytes(b)))
                .map_err(|_| StoreError::Corrupt("lease committee-changed time".into())),
        }
    }

    /// Records a request nonce; `false` if it was seen before (a replay).
    pub fn use_nonce(&self, app: &AppId, nonce: &[u8; 32], expires: u64) -> Result<bool, StoreError> {
        let key = [&app.as_bytes()[..], &nonce[..]].concat();
        self.kv.put_if_absent(Space::Replay, &key, &expires.to_be_bytes())
    }

    /// Drops replay entries that expired before `now`; returns how many.
    pub fn purge_nonces(&self, now: u64) -> Result<usize, StoreError> {
        let mut n = 0;
        for (k, v) in self.kv.scan_prefix(Space::Replay, &[])? {
            let expires = v.try_into().map(u64::from_be_bytes).unwrap_or(0);
            if expires < now {
                self.kv.remove(Space::Replay, &k)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Appends an audit entry to the log (its `id` is its index, assigned here) and returns it.
    ///
    /// The entry, its leaf-hash and app index records and the hashes of the perfect subtrees it
    /// completes are written before the size: a crash part-way leaves the size unchanged, and the
    /// next append writes over what was left.
    pub fn audit(&self, mut entry: AuditEntry) -> Result<AuditEntry, StoreError> {
        let _one = self.log.lock().map_err(|_| StoreError::Backend("log lock poisoned".into()))?;
        let m = self.log_size()?;
        let bytes = entry.to_log_entry().encode();
        let leaf = merkle::leaf_hash(&bytes);
        let index = m.to_be_bytes();
        self.kv.put(Space::Log, &log_key(LOG_ENTRY, &[&index]), &bytes)?;
        self.kv.put(Space::Log, &log_key(LOG_LEAF, &[&leaf]), &index)?;
        self.kv.put(Space::Log, &log_key(LOG_APP, &[entry.app_id.as_bytes(), &index]), &[])?;
        let binding: [u8; 32] = kms_proto::hex_bytes::parse_hex(&entry.binding).unwrap_or([0; 32]);
        self.kv.put(Space::Log, &log_key(LOG_BINDING, &[&binding, &index]), &[])?;
        // The perfect subtrees that end with this leaf, from the leaf up.
        let mut hash = leaf;
        let mut level = 0u8;
        loop {
            let key = log_key(LOG_HASH, &[&[level], &(m >> level).to_be_bytes()]);
            self.kv.put(Space::Log, &key, &hash)?;
            if (m >> level) & 1 == 0 {
                break;
            }
            let left = LogTree(self).perfect((m >> level << level) - (1 << level), 1 << level)?;
            hash = merkle::node_hash(&left, &hash);
            level += 1;
        }
        self.kv.put(Space::Log, LOG_SIZE, &(m + 1).to_be_bytes())?;
        entry.id = m;
        Ok(entry)
    }

    /// Entries in the log.
    pub fn log_size(&self) -> Result<u64, StoreError> {
        self.log_counter(LOG_SIZE, "log size")
    }

    /// A big-endian u64 kept under `key` of the log (0 when absent).
    fn log_counter(&self, key: &[u8], what: &str) -> Result<u64, StoreError> {
        match self.kv.get(Space::Log, key)? {
            None => Ok(0),
            Some(v) => be_u64(&v, what),
        }
    }

    /// The stored tree, for roots and proofs ([`merkle::Subtrees`]).
    pub fn log_tree(&self) -> LogTree<'_> {
        LogTree(self)
    }

    /// The root of the log's first `size` entries (`size` at most [`NodeStore::log_size`]).
    pub fn log_root(&self, size: u64) -> Result<Hash, StoreError> {
        if size == 0 {
            return Ok(merkle::root(&[]));
        }
        LogTree(self).range(0, size)
    }

    /// The encoded entry at `index`, if it is in the log.
    pub fn log_entry(&self, index: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if index >= self.log_size()? {
            return Ok(None);
        }
        self.kv.get(Space::Log, &log_key(LOG_ENTRY, &[&index.to_be_bytes()]))
    }

    /// The index of the entry whose leaf hash is `leaf`, if it is in the log.
    pub fn log_index_of(&self, leaf: &Hash) -> Result<Option<u64>, StoreError> {
        let Some(v) = self.kv.get(Space::Log, &log_key(LOG_LEAF, &[leaf]))? else { return Ok(None) };
        let index = be_u64(&v, "log leaf")?;
        // A record left by an append a crash cut short may point at another entry.
        match self.log_entry(index)? {
            Some(bytes) if merkle::leaf_hash(&bytes) == *leaf => Ok(Some(index)),
            _ => Ok(None),
        }
    }

    /// The index of the release of the request with this binding, if the log holds one (a
    /// request's refusals and replays share its binding; its release is at most one entry).
    pub fn log_release_of(&self, binding: &[u8; 32]) -> Result<Option<u64>, StoreError> {
        let size = self.log_size()?;
        let prefix = log_key(LOG_BINDING, &[binding]);
        for (k, _) in self.kv.scan_prefix(Space::Log, &prefix)? {
            let index = be_u64(&k[prefix.len()..], "log binding index")?;
            let Some(bytes) = self.log_entry(index)? else { continue };
            let entry = LogEntry::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            if index < size && entry.binding == *binding && entry.outcome == kms_proto::audit::RELEASED {
                return Ok(Some(index));
            }
        }
        Ok(None)
    }

    /// Up to `limit` entries of `app` from index `from` on, oldest first.
    pub fn audit_page(&self, app: &AppId, from: u64, limit: usize) -> Result<Vec<AuditEntry>, StoreError> {
        Ok(self.audit_page_encoded(app, from, limit)?.into_iter().map(|(e, _)| e).collect())
    }

    /// [`NodeStore::audit_page`], each entry with its stored encoding (what the tree's leaf
    /// hashes).
    pub fn audit_page_encoded(
        &self,
        app: &AppId,
        from: u64,
        limit: usize,
    ) -> Result<Vec<(AuditEntry, Vec<u8>)>, StoreError> {
        let size = self.log_size()?;
        let prefix = log_key(LOG_APP, &[app.as_bytes()]);
        let start = log_key(LOG_APP, &[app.as_bytes(), &from.to_be_bytes()]);
        let mut out = Vec::new();
        for (k, _) in self.kv.scan_from(Space::Log, &prefix, &start, limit)? {
            let index = be_u64(&k[prefix.len()..], "log app index")?;
            if index >= size {
                break;
            }
            let bytes = self
                .kv
                .get(Space::Log, &log_key(LOG_ENTRY, &[&index.to_be_bytes()]))?
                .ok_or_else(|| StoreError::Corrupt("log entry missing".into()))?;
            let entry = LogEntry::decode(&bytes).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            // An index record left by an append a crash cut short names an index that now holds
            // another app's entry.
            if entry.app_id == *app {
                out.push((AuditEntry::from_log_entry(index, entry), bytes));
            }
        }
        Ok(out)
    }

    /// Entries below this index were pruned (their encodings and indices removed; the tree's
    /// hashes stay, so roots and proofs are unchanged).
    pub fn log_pruned(&self) -> Result<u64, StoreError> {
        self.log_counter(LOG_PRUNED, "log prune mark")
    }

    /// Prunes entries below `below` (at most the log's size), at most `batch` of them; returns how
    /// many. The caller passes a size some published checkpoint covers.
    pub fn log_prune(&self, below: u64, batch: u64) -> Result<u64, StoreError> {
        let _one = self.log.lock().map_err(|_| StoreError::Backend("log lock poisoned".into()))?;
        let from = self.log_pruned()?;
        let to = below.min(self.log_size()?).min(from.saturating_add(batch));
        for index in from..to {
            let key = log_key(LOG_ENTRY, &[&index.to_be_bytes()]);
            if let Some(bytes) = self.kv.get(Space::Log, &key)? {
                if let Ok(e) = LogEntry::decode(&bytes) {
                    let i = index.to_be_bytes();
                    self.kv.remove(Space::Log, &log_key(LOG_APP, &[e.app_id.as_bytes(), &i]))?;
                    self.kv.remove(Space::Log, &log_key(LOG_BINDING, &[&e.binding, &i]))?;
                }
                self.kv.remove(Space::Log, &log_key(LOG_LEAF, &[&merkle::leaf_hash(&bytes)]))?;
                self.kv.remove(Space::Log, &key)?;
            }
        }
        if to > from {
            self.kv.put(Space::Log, LOG_PRUNED, &to.to_be_bytes())?;
        }
        Ok(to.saturating_sub(from))
    }

    /// The last checkpoint of the log `origin` this node co-signed as a witness.
    pub fn witnessed(&self, origin: &str) -> Result<Option<String>, StoreError> {
        self.log_text(&log_key(LOG_WITNESSED, &[origin.as_bytes()]))
    }

    /// Records the checkpoint of `origin` this node co-signs (flush before the co-signature
    /// leaves).
    pub fn put_witnessed(&self, origin: &str, text: &str) -> Result<(), StoreError> {
        self.kv.put(Space::Log, &log_key(LOG_WITNESSED, &[origin.as_bytes()]), text.as_bytes())
    }

    /// Keeps two checkpoints of one size with different roots signed by the log `origin`.
    pub fn put_equivocation(&self, origin: &str, a: &str, b: &str) -> Result<(), StoreError> {
        let v = serde_json::to_vec(&[a, b]).map_err(|e| StoreError::Corrupt(e.to_string()))?;
        self.kv.put(Space::Log, &log_key(LOG_EQUIVOCATION, &[origin.as_bytes()]), &v)?;
        self.kv.flush()
    }

    /// The evidence that the log `origin` equivocated, if this node holds any.
    pub fn equivocation(&self, origin: &str) -> Result<Option<[String; 2]>, StoreError> {
        match self.kv.get(Space::Log, &log_key(LOG_EQUIVOCATION, &[origin.as_bytes()]))? {
            None => Ok(None),
            Some(v) => {
                serde_json::from_slice(&v).map(Some).map_err(|_| StoreError::Corrupt("evidence".into()))
            }
        }
    }

    /// This node's last published checkpoint, with the witnesses' co-signatures.
    pub fn published(&self) -> Result<Option<String>, StoreError> {
        self.log_text(LOG_PUBLISHED)
    }

    /// Replaces the published checkpoint.
    pub fn put_published(&self, text: &str) -> Result<(), StoreError> {
        self.kv.put(Space::Log, LOG_PUBLISHED, text.as_bytes())
    }

    fn log_text(&self, key: &[u8]) -> Result<Option<String>, StoreError> {
        match self.kv.get(Space::Log, key)? {
            None => Ok(None),
            Some(v) => String::from_utf8(v).map(Some).map_err(|_| StoreError::Corrupt("checkpoint".into())),
        }
    }

    /// The audit log of one app, oldest first.
    pub fn audit_log(&self, app: &AppId) -> Result<Vec<AuditEntry>, StoreError> {
        self.audit_page(app, 0, usize::MAX)
    }

    /// Moves audit entries kept before the transparency log (JSON by app and id) into the log,
    /// in id order, once; returns how many. Their client key digest was not recorded (zeros).
    pub fn migrate_audit(&self) -> Result<usize, StoreError> {
        let old = self.kv.scan_prefix(Space::Audit, &[])?;
        let mut entries: Vec<(AuditEntry, Vec<u8>)> = old
            .into_iter()
            .map(|(k, v)| {
                let e = serde_json::from_slice(&v).map_err(|_| StoreError::Corrupt("audit entry".into()))?;
                Ok((e, k))
            })
            .collect::<Result<_, StoreError>>()?;
        entries.sort_by_key(|(e, _)| e.id);
        // Each old record goes right after its entry is appended (writes reach the disk in
        // order): a crash repeats at most the one entry in between.
        for (e, key) in &entries {
            self.audit(e.clone())?;
            self.kv.remove(Space::Audit, key)?;
        }
        self.kv.flush()?;
        Ok(entries.len())
    }

    /// Flushes everything to disk.
    pub fn flush(&self) -> Result<(), StoreError> {
        self.kv.flush()
    }

    /// `value` once everything written before this call is on disk (a flush): what a release
    /// promised (its replay record, its audit entry) survives a crash right after it is sent.
    ///
    /// Concurrent callers share flushes (group commit): one flush covers every caller that took
    /// its ticket before it started.
    pub fn durable<T>(&self, value: T) -> Result<Durable<T>, StoreError> {
        let poisoned = || StoreError::Backend("flush lock poisoned".into());
        let g = &self.group;
        let mut st = g.state.lock().map_err(|_| poisoned())?;
        st.requested += 1;
        let ticket = st.requested;
        loop {
            if st.flushed >= ticket {
                return Ok(Durable(value));
            }
            if st.running {
                st = g.done.wait(st).map_err(|_| poisoned())?;
                continue;
            }
            st.running = true;
            let target = st.requested;
            drop(st);
            let flushed = self.kv.flush();
            st = g.state.lock().map_err(|_| poisoned())?;
            st.running = false;
            if flushed.is_ok() {
                st.flushed = st.flushed.max(target);
            }
            g.done.notify_all();
            // A failed flush fails its caller; the others try again, and fail too when the
            // failure may have lost writes (a `Kv` refuses every flush after one: `Kv::flush`).
            flushed?;
        }
    }
}

/// A value whose records are on disk; only [`NodeStore::durable`] makes one, so an answer that
/// must not outrun its records can only be sent from one (persist before send, by type).
#[derive(Debug)]
pub struct Durable<T>(T);

impl<T> Durable<T> {
    /// The value, to send.
    pub fn into_inner(self) -> T {
        self.0
    }
}
