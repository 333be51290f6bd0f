//! `<data_dir>/listen.json`: the addresses the running node actually bound, so that a node
//! configured with port 0 (`listen_http = "127.0.0.1:0"`, `listen_p2p = "/ip4/127.0.0.1/tcp/0"`)
//! can be found without racing for a free port.
//!
//! `run` deletes the file at start and writes it atomically (temporary file, fsync, rename, fsync
//! of the directory) once both listeners are bound:
//! `{"http":"127.0.0.1:PORT","p2p":"/ip4/127.0.0.1/tcp/PORT"}`. A file left by a killed node is
//! stale until the next start replaces it.

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Serialize};

/// File name inside the data directory.
pub const LISTEN_FILE: &str = "listen.json";

/// The bound addresses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenAddrs {
    /// The HTTP API's local address (`ip:port`).
    pub http: SocketAddr,
    /// The first address the libp2p swarm reported listening on (multiaddress).
    pub p2p: String,
}

/// Deletes a file left by an earlier run; a missing file is fine.
pub fn remove(data_dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_file(data_dir.join(LISTEN_FILE)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Writes `data_dir/listen.json` atomically: readers see the old file, no file, or the whole new
/// one.
pub fn write(data_dir: &Path, addrs: &ListenAddrs) -> std::io::Result<()> {
    let path = data_dir.join(LISTEN_FILE);
    let tmp = data_dir.join(format!("{LISTEN_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(addrs).map_err(std::io::Error::other)?)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, &path)?;
    std::fs::File::open(data_dir)?.sync_all()
}

/// Reads `data_dir/listen.json`.
pub fn read(data_dir: &Path) -> std::io::Result<ListenAddrs> {
    let bytes = std::fs::read(data_dir.join(LISTEN_FILE))?;
    serde_json::from_slice(&bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_file_reads_back_and_has_the_documented_shape() {
        let dir = tempfile::tempdir().unwrap();
        let addrs =
            ListenAddrs { http: "127.0.0.1:8001".parse().unwrap(), p2p: "/ip4/127.0.0.1/tcp/7001".into() };
        remove(dir.path()).unwrap();
        write(dir.path(), &addrs).unwrap();
        assert_eq!(read(dir.path()).unwrap(), addrs);
        assert_eq!(
            std::fs::read_to_string(dir.path().join(LISTEN_FILE)).unwrap(),
            r#"{"http":"127.0.0.1:8001","p2p":"/ip4/127.0.0.1/tcp/7001"}"#
        );
        assert!(!dir.path().join("listen.json.tmp").exists());
        remove(dir.path()).unwrap();
        assert!(read(dir.path()).is_err());
    }
}
