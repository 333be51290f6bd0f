//! Shared harness for end-to-end tests: real `kms-node` processes on 127.0.0.1, each with its
//! own data directory, config and log, driven over plain HTTP.
//!
//! Used by `node/tests/it/cluster.rs` and this crate's own tests in `tests/e2e/`.
#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::decode_json;

/// Audience of every test cluster.
pub const AUDIENCE: &str = "kms-e2e";

/// `node/tests/fixtures` (test-only OIDC keys, real Confidential Space tokens).
pub fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../node/tests/fixtures")
}

/// A workspace binary of this build profile (`kms-node`, `kms`), built on first use.
pub fn binary(package: &str, name: &str) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> or target/<profile>/examples/<example> → target/<profile>/<name>
    let bin = exe.parent().unwrap().parent().unwrap().join(name);
    // `cargo test --workspace` builds the binaries already; building again with another feature
    // set would rebuild dependencies back and forth. Build only when missing or older than the
    // sources.
    if bin.exists() && !sources_newer_than(&bin) {
        return bin;
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "-q", "-p", package, "--bin", name]);
    if bin.parent().and_then(|p| p.file_name()).is_some_and(|n| n == "release") {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("running cargo build");
    assert!(status.success(), "building {name} failed");
    assert!(bin.exists(), "{} missing after build", bin.display());
    bin
}

fn sources_newer_than(bin: &Path) -> bool {
    let Ok(built) = std::fs::metadata(bin).and_then(|m| m.modified()) else { return true };
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut stack: Vec<PathBuf> =
        ["proto/src", "dkg/src", "node/src", "client/src"].iter().map(|d| root.join(d)).collect();
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if e.metadata().and_then(|m| m.modified()).is_ok_and(|m| m > built) {
                return true;
            }
        }
    }
    false
}

/// The `kms-node` binary.
pub fn node_binary() -> PathBuf {
    static BIN: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    BIN.get_or_init(|| binary("kms-node", "kms-node")).clone()
}

/// A TCP port on 127.0.0.1 held for a node process, for as long as the node may run (restarts
/// included), so that no one else can take it between the choice of the port and the node's bind.
///
/// It is a socket bound to `127.0.0.1:0` with `SO_REUSEPORT` (and without `SO_REUSEADDR`) that
/// never listens. While it lives, the kernel gives its port to no other `bind` to port 0 and to no
/// outgoing connection, and a socket without `SO_REUSEPORT` cannot bind it; a listener of the same
/// user that sets `SO_REUSEPORT` can: a node with `[node] reuse_port = true` for HTTP, libp2p's
/// p2p listener always, or [`PortReservation::listen`] in this process. Connections reach only
/// that listener; with none, they are refused.
#[derive(Debug)]
pub struct PortReservation {
    _socket: socket2::Socket,
    port: u16,
}

impl PortReservation {
    /// Reserves a free port on 127.0.0.1.
    pub fn new() -> PortReservation {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.set_reuse_port(true).unwrap();
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        let port = socket.local_addr().unwrap().as_socket().unwrap().port();
        PortReservation { _socket: socket, port }
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:port`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// A listener on the reserved port, bound as a node binds it (`SO_REUSEADDR` and
    /// `SO_REUSEPORT`): for a server in this process that stands in for a node.
    pub fn listen(&self) -> std::io::Result<TcpListener> {
        let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.bind(&self.addr().into())?;
        s.listen(1024)?;
        Ok(s.into())
    }
}

impl Default for PortReservation {
    fn default() -> Self {
        Self::new()
    }
}

/// A blocking HTTP/1.1 exchange; returns (status, body).
pub fn http(addr: SocketAddr, method: &str, path: &str, body: &[u8]) -> std::io::Result<(u16, Vec<u8>)> {
    http_with_headers(addr, method, path, body).map(|(status, _, body)| (status, body))
}

/// Response headers, (name, value) in order.
pub type Headers = Vec<(String, String)>;

/// [`http`], with the response's headers as well.
pub fn http_with_headers(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Headers, Vec<u8>)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = Vec::new();
    s.read_to_end(&mut out)?;
    let split = out.windows(4).position(|w| w == b"\r\n\r\n").unwrap_or(out.len());
    let head = String::from_utf8_lossy(&out[..split]).to_string();
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let headers = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(':').map(|(k, v)| (k.trim().to_string(), v.trim().to_string())))
        .collect();
    Ok((status, headers, out.get(split + 4..).unwrap_or_default().to_vec()))
}

pub struct Node {
    /// Roster index.
    pub index: u16,
    /// Its directory (config, log, data).
    pub dir: PathBuf,
    /// Its config file.
    pub config: PathBuf,
    /// Its HTTP address.
    pub http: SocketAddr,
    /// The running process.
    pub child: Option<Child>,
    /// The kms-node binary.
    pub bin: PathBuf,
    /// Extra environment for the process.
    pub env: Vec<(String, String)>,
    /// Ports reserved for this node (its HTTP and p2p ports), held while the `Node` lives.
    pub ports: Vec<PortReservation>,
}

impl Node {
    /// A node `index` not started: `<root>/node<index>/` with a fresh identity (`kms-node init`)
    /// and two reserved ports, HTTP (`ports[0]`) and p2p (`ports[1]`). Returns it with its peer id.
    pub fn fresh(bin: &Path, root: &Path, index: u16) -> (Node, String) {
        let dir = root.join(format!("node{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        let peer = init(bin, &dir.join("data"));
        let (p2p, http) = (PortReservation::new(), PortReservation::new());
        let node = Node {
            index,
            config: dir.join("node.toml"),
            dir,
            http: http.addr(),
            child: None,
            bin: bin.to_path_buf(),
            env: Vec::new(),
            ports: vec![http, p2p],
        };
        (node, peer)
    }

    /// Starts the process (stderr appended to `node.log`) and returns once its HTTP port accepts
    /// connections (or the process exited, or 60 s passed): a test never asks a node that is not
    /// listening yet (a request then would be refused, not answered).
    pub fn start(&mut self) {
        self.spawn();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while std::time::Instant::now() < deadline {
            if std::net::TcpStream::connect_timeout(&self.http, std::time::Duration::from_millis(500)).is_ok()
            {
                return;
            }
            if self.child.as_mut().is_some_and(|c| c.try_wait().ok().flatten().is_some()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Starts the process without waiting for it to listen.
    pub fn spawn(&mut self) {
        let log =
            std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log")).unwrap();
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", "info,libp2p=warn")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
    }

    /// SIGKILL and reap.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap(); // SIGKILL
            c.wait().unwrap();
        }
    }

    /// The node's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("node.log")).unwrap_or_default()
    }

    /// The ports reserved for this node, by address (e.g. its roster `http_url`'s address, to
    /// put a stand-in server there).
    pub fn reserved(&self, addr: SocketAddr) -> &PortReservation {
        self.ports.iter().find(|p| p.addr() == addr).unwrap_or_else(|| panic!("{addr} is not reserved"))
    }

    /// GET; (status, body), (0, empty) if unreachable.
    pub fn get(&self, path: &str) -> (u16, Vec<u8>) {
        http(self.http, "GET", path, b"").unwrap_or((0, Vec::new()))
    }

    /// POST; (status, body).
    pub fn post(&self, path: &str, body: &[u8]) -> (u16, Vec<u8>) {
        http(self.http, "POST", path, body).unwrap_or((0, Vec::new()))
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill9();
    }
}

pub struct Cluster {
    /// The nodes, index order. (Declared first: dropping them kills the processes before their
    /// directories are removed.)
    pub nodes: Vec<Node>,
    /// Keeps the directories alive.
    pub tmp: tempfile::TempDir,
}

pub fn init(bin: &Path, dir: &Path) -> String {
    let out = Command::new(bin).args(["init", "--data-dir"]).arg(dir).output().unwrap();
    assert!(out.status.success(), "init failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

pub fn write_config(node: &Node, index: u16, t: u16, roster: &[(u16, String, u16, u16)], p2p_port: u16) {
    write_config_with(node, index, t, roster, p2p_port, "")
}

pub fn write_config_with(
    node: &Node,
    index: u16,
    t: u16,
    roster: &[(u16, String, u16, u16)],
    p2p_port: u16,
    dkg_extra: &str,
) {
    let mut toml = format!(
        "data_dir = {:?}\n\n[node]\nindex = {index}\nlisten_p2p = \"/ip4/127.0.0.1/tcp/{p2p_port}\"\nlisten_http = \"{}\"\nreuse_port = true\n\n\
         [cluster]\nthreshold = {t}\n\n[attestation]\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\npki_root_pem = {:?}\n\n\
         [dkg]\nround_timeout_ms = 3000\n{dkg_extra}\n[limits]\nrate_per_sec = 10000\nrate_burst = 10000\n",
        node.dir.join("data"),
        node.http,
        fixtures().join("oidc/jwks.json"),
        fixtures().join("confidential-space/confidential-space-root.pem"),
    );
    for (i, peer, p2p, http) in roster {
        toml.push_str(&format!(
            "\n[[cluster.nodes]]\nindex = {i}\npeer_id = \"{peer}\"\np2p_addr = \"/ip4/127.0.0.1/tcp/{p2p}\"\nhttp_url = \"http://127.0.0.1:{http}\"\n"
        ));
    }
    std::fs::write(&node.config, toml).unwrap();
}

/// Writes the config of a node that joins a running cluster from its signed descriptor
/// (`descriptor.json` in the node's directory) under the pinned `group_key`.
pub fn write_join_config(node: &Node, p2p_port: u16, descriptor: &[u8], group_key: &str) {
    let path = node.dir.join("descriptor.json");
    std::fs::write(&path, descriptor).unwrap();
    let toml = format!(
        "data_dir = {:?}\n\n[node]\nlisten_p2p = \"/ip4/127.0.0.1/tcp/{p2p_port}\"\nlisten_http = \"{}\"\nreuse_port = true\n\n\
         [cluster.join]\ndescriptor = {path:?}\ngroup_key = \"{group_key}\"\n\n[attestation]\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\npki_root_pem = {:?}\n\n\
         [dkg]\nround_timeout_ms = 3000\n\n[limits]\nrate_per_sec = 10000\nrate_burst = 10000\n",
        node.dir.join("data"),
        node.http,
        fixtures().join("oidc/jwks.json"),
        fixtures().join("confidential-space/confidential-space-root.pem"),
    );
    std::fs::write(&node.config, toml).unwrap();
}

impl Cluster {
    /// A new node, not started, that joins the cluster `descriptor` describes (pinned to its
    /// group key) once a reshare adds it: `(position in nodes, peer id, p2p address, HTTP URL)`.
    pub fn add_joiner(&mut self, bin: &Path, descriptor: &[u8]) -> (usize, String, String, String) {
        let signed: SignedClusterDescriptor = decode_json(descriptor).unwrap();
        let group_key = hex_lower(signed.descriptor.group_key.as_bytes());
        let position = self.nodes.len();
        let (node, peer) = Node::fresh(bin, self.tmp.path(), u16::try_from(position + 1).unwrap());
        let p2p_port = node.ports[1].port();
        write_join_config(&node, p2p_port, descriptor, &group_key);
        let addrs = (format!("/ip4/127.0.0.1/tcp/{p2p_port}"), format!("http://{}", node.http));
        self.nodes.push(node);
        (position, peer, addrs.0, addrs.1)
    }

    /// Prepares and starts n nodes with threshold t.
    pub fn start(bin: &Path, n: u16, t: u16) -> Cluster {
        let c = Self::prepare(bin, n, t, "");
        c.start_all()
    }

    /// Starts every node.
    pub fn start_all(mut self) -> Cluster {
        for node in &mut self.nodes {
            node.start();
        }
        self
    }

    /// Creates data dirs and configs without starting anything.
    pub fn prepare(bin: &Path, n: u16, t: u16, dkg_extra: &str) -> Cluster {
        let tmp = tempfile::tempdir().unwrap();
        let mut roster = Vec::new();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let (node, peer) = Node::fresh(bin, tmp.path(), i);
            roster.push((i, peer, node.ports[1].port(), node.http.port()));
            nodes.push(node);
        }
        for (node, (i, _, p2p, _)) in nodes.iter().zip(&roster) {
            write_config_with(node, *i, t, &roster, *p2p, dkg_extra);
        }
        Cluster { nodes, tmp }
    }

    /// The tail of every node's log.
    pub fn logs(&self) -> String {
        self.nodes.iter().map(|n| format!("---- node {} ----\n{}", n.index, tail(&n.log()))).collect()
    }

    /// Waits until the given nodes (0-based) are ready; returns their common epoch.
    pub fn wait_ready(&self, which: &[usize], timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        let mut epochs = Vec::new();
        for &i in which {
            loop {
                let (status, body) = self.nodes[i].get("/v1/ready");
                if status == 200 {
                    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
                    epochs.push(v["epoch"].as_u64().unwrap());
                    break;
                }
                assert!(Instant::now() < deadline, "node {} not ready\n{}", i + 1, self.logs());
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        assert!(epochs.windows(2).all(|w| w[0] == w[1]), "epochs differ: {epochs:?}");
        epochs[0]
    }

    /// Waits for node `i`'s signed descriptor.
    pub fn descriptor(&self, i: usize, timeout: Duration) -> SignedClusterDescriptor {
        let deadline = Instant::now() + timeout;
        loop {
            let (status, body) = self.nodes[i].get("/v1/cluster");
            if status == 200 {
                return decode_json(&body).unwrap();
            }
            assert!(Instant::now() < deadline, "no descriptor at node {}\n{}", i + 1, self.logs());
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Last 30 lines.
pub fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n") + "\n"
}
