//! A local network: N node processes on 127.0.0.1 (this binary re-executed as `node`), each with
//! its own data directory, config and log under `D/node<i>/`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::issuer;

/// Audience of a local network.
pub const AUDIENCE: &str = "kms-local";

/// One node of the local network.
pub struct LocalNode {
    /// Roster index.
    pub index: u16,
    /// `D/node<i>`.
    pub dir: PathBuf,
    /// HTTP base URL.
    pub url: String,
    /// The process, while running.
    pub child: Option<Child>,
}

/// A running local network. Its process must stay up while the nodes run: it holds their ports.
pub struct LocalNet {
    /// Its directory.
    pub dir: PathBuf,
    /// The nodes.
    pub nodes: Vec<LocalNode>,
    /// The dev issuer.
    pub issuer: issuer::IssuerFiles,
    /// The nodes' ports, reserved while the network lives (dropped after the nodes are killed).
    pub ports: Vec<PortReservation>,
}

/// A TCP port on 127.0.0.1 held for a node process while the network lives (restarts included),
/// so that nothing else takes it between the choice of the port and the node's bind.
///
/// A socket bound to `127.0.0.1:0` with `SO_REUSEPORT` (without `SO_REUSEADDR`) that never
/// listens: while it lives the kernel hands its port to no other `bind` to port 0 and no outgoing
/// connection, and only a listener of the same user with `SO_REUSEPORT` can bind it (the node's
/// HTTP listener with `[node] reuse_port = true`, libp2p's p2p listener always). Connections reach
/// only that listener.
#[derive(Debug)]
pub struct PortReservation {
    _socket: socket2::Socket,
    port: u16,
}

impl PortReservation {
    /// Reserves a free port on 127.0.0.1.
    pub fn new() -> std::io::Result<PortReservation> {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
        socket.set_reuse_port(true)?;
        socket.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into())?;
        let port =
            socket.local_addr()?.as_socket().ok_or_else(|| std::io::Error::other("not an IP socket"))?.port();
        Ok(PortReservation { _socket: socket, port })
    }

    /// The reserved port.
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl LocalNode {
    /// Starts (or restarts) the node process.
    pub fn start(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(self.dir.join("node.log"))?;
        let child = Command::new(std::env::current_exe()?)
            .args(["node", "--config"])
            .arg(self.dir.join("node.toml"))
            .env("RUST_LOG", std::env::var("RUST_LOG").unwrap_or_else(|_| "info,libp2p=warn".into()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("starting a node process")?;
        // `reshare` finds a node's process here (to replace or stop it).
        std::fs::write(self.dir.join("pid"), child.id().to_string())?;
        self.child = Some(child);
        Ok(())
    }

    /// Stops the node (SIGKILL).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for LocalNet {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            n.kill();
        }
    }
}

impl LocalNet {
    /// Creates `dir` with N nodes (threshold t) and a dev issuer, and starts every node. In an
    /// existing `dir` the keys and databases are kept; the configs are rewritten with freshly
    /// reserved ports.
    pub fn up(dir: &Path, n: u16, t: u16) -> anyhow::Result<LocalNet> {
        if n == 0 || t == 0 || t > n {
            bail!("--threshold must be in 1..={n}");
        }
        std::fs::create_dir_all(dir)?;
        // Absolute: the configs name files under it, and a node resolves relative paths against
        // its own config's directory.
        let dir = &std::fs::canonicalize(dir)?;
        let issuer = issuer::ensure(&dir.join("attestation"))?;
        let evidence = issuer::node_evidence(&dir.join("attestation"), &issuer)?;
        let mut roster = Vec::new();
        let mut ports = Vec::new();
        for i in 1..=n {
            let node_dir = dir.join(format!("node{i}"));
            let data = node_dir.join("data");
            let id = if data.join(kms_node::identity::IDENTITY_FILE).exists() {
                kms_node::identity::load(&data)?.0
            } else {
                kms_node::identity::init(&data)?
            };
            let (p2p, http) = (PortReservation::new()?, PortReservation::new()?);
            roster.push((i, id.peer_id().to_string(), p2p.port(), http.port(), node_dir));
            ports.extend([p2p, http]);
        }
        let mut nodes = Vec::new();
        for (i, _, p2p, http, node_dir) in &roster {
            let mut toml = format!(
                "data_dir = \"data\"\n\n[node]\nindex = {i}\nlisten_p2p = \"/ip4/127.0.0.1/tcp/{p2p}\"\nlisten_http = \"127.0.0.1:{http}\"\n\
                 # `kms-simnet up` keeps both ports reserved while it runs; the node binds them with SO_REUSEPORT.\n\
                 reuse_port = true\n\n\
                 [cluster]\nthreshold = {t}\n\n[attestation]\naudience = \"{AUDIENCE}\"\njwks_file = {:?}\n\n\
                 # Every local client is 127.0.0.1: a per-source limit would throttle them all.\n\
                 [limits]\nrate_per_sec = 100000\nrate_burst = 100000\nmax_connections_per_ip = 1024\n",
                issuer.jwks
            );
            toml.push_str(&evidence);
            for (j, peer, p, h, _) in &roster {
                toml.push_str(&format!(
                    "\n[[cluster.nodes]]\nindex = {j}\npeer_id = \"{peer}\"\np2p_addr = \"/ip4/127.0.0.1/tcp/{p}\"\nhttp_url = \"http://127.0.0.1:{h}\"\n"
                ));
            }
            std::fs::write(node_dir.join("node.toml"), toml)?;
            nodes.push(LocalNode {
                index: *i,
                dir: node_dir.clone(),
                url: format!("http://127.0.0.1:{http}"),
                child: None,
            });
        }
        let mut net = LocalNet { dir: dir.to_path_buf(), nodes, issuer, ports };
        for node in &mut net.nodes {
            node.start()?;
        }
        let pids: Vec<String> =
            net.nodes.iter().filter_map(|n| n.child.as_ref().map(|c| c.id().to_string())).collect();
        std::fs::write(dir.join("pids"), pids.join("\n"))?;
        Ok(net)
    }

    /// Waits until every running node is ready and the signed descriptor is available, showing
    /// progress; writes `D/cluster.json` and returns its bytes.
    pub async fn wait_ready(&self, timeout: Duration, progress: bool) -> anyhow::Result<Vec<u8>> {
        let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build()?;
        let deadline = Instant::now() + timeout;
        let mut shown = usize::MAX;
        loop {
            let mut ready = 0;
            for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                if let Ok(r) = client.get(format!("{}/v1/ready", n.url)).send().await {
                    if r.status() == 200 {
                        ready += 1;
                    }
                }
            }
            let running = self.nodes.iter().filter(|n| n.child.is_some()).count();
            if progress && ready != shown {
                eprintln!("   DKG: {ready}/{running} nodes ready");
                shown = ready;
            }
            if ready == running {
                // Every running node serves the signed descriptor (it reaches the others after
                // the node that coordinated the signing): only then does each node's evidence
                // name it, and any node can hand it to a client.
                let mut first = None;
                let mut serving = 0;
                for n in self.nodes.iter().filter(|n| n.child.is_some()) {
                    if let Ok(r) = client.get(format!("{}/v1/cluster", n.url)).send().await {
                        if r.status() == 200 {
                            let bytes = r.bytes().await?.to_vec();
                            first.get_or_insert(bytes);
                            serving += 1;
                        }
                    }
                }
                if let (Some(bytes), true) = (first, serving == running) {
                    std::fs::write(self.dir.join("cluster.json"), &bytes)?;
                    if progress {
                        eprintln!("   cluster descriptor signed, served by all {running}");
                    }
                    return Ok(bytes);
                }
            }
            if Instant::now() > deadline {
                bail!(
                    "the network was not ready within {timeout:?}; see {}/node*/node.log",
                    self.dir.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// The config of a node that joins a cluster through a reshare, from the descriptor at
/// `descriptor` pinned to `group_key`; `listen` is the body of its `[node]` table.
fn write_join_config(
    node_dir: &Path,
    listen: &str,
    descriptor: &Path,
    jwks: &Path,
    group_key: &str,
    evidence: &str,
) -> anyhow::Result<()> {
    let mut toml = format!(
        "data_dir = \"data\"\n\n[node]\n{listen}\n\
         # Joins the cluster this descriptor describes, trusting only this group key.\n\
         [cluster.join]\ndescriptor = {descriptor:?}\ngroup_key = \"{group_key}\"\n\n\
         [attestation]\naudience = \"{AUDIENCE}\"\njwks_file = {jwks:?}\n\n\
         [limits]\nrate_per_sec = 100000\nrate_burst = 100000\nmax_connections_per_ip = 1024\n"
    );
    toml.push_str(evidence);
    std::fs::write(node_dir.join("node.toml"), toml)?;
    Ok(())
}

/// `[node]` of a local node on 127.0.0.1 (ports reserved by `up` or `reshare`).
fn local_listen(p2p: u16, http: u16) -> String {
    format!(
        "listen_p2p = \"/ip4/127.0.0.1/tcp/{p2p}\"\nlisten_http = \"127.0.0.1:{http}\"\nreuse_port = true\n"
    )
}

/// Sends SIGTERM (or SIGKILL) to the node process of `node_dir`, if its pid file names one.
fn signal(node_dir: &Path, kill: bool) {
    if let Ok(pid) = std::fs::read_to_string(node_dir.join("pid")) {
        let _ = Command::new("kill").args([if kill { "-KILL" } else { "-TERM" }, pid.trim()]).status();
    }
}

/// What `kms-simnet reshare` does.
#[derive(Debug, Clone, Default)]
pub struct ReshareRequest {
    /// The new committee's size (default: the current one).
    pub nodes: Option<u16>,
    /// The new threshold (default: the current one, at most the new size).
    pub threshold: Option<u16>,
    /// Members whose store is wiped and who are replaced by a fresh node at the same index.
    pub replace: Vec<u16>,
}

/// `reshare`: changes the committee of the network in `dir` (started with `up`, which keeps
/// running): starts the processes of new nodes (joining from `D/cluster.json`), wipes and
/// replaces the nodes asked for, has `t` current members approve the change, waits until every
/// member of the new committee serves the new epoch, stops the nodes that left, and rewrites
/// `D/cluster.json`. Returns the new descriptor's bytes.
pub async fn reshare(dir: &Path, req: &ReshareRequest) -> anyhow::Result<Vec<u8>> {
    let dir = &std::fs::canonicalize(dir).with_context(|| format!("no network at {}", dir.display()))?;
    use kms_node::admin::{self, NewNode, Proposal};
    use kms_proto::cluster::SignedClusterDescriptor;
    use kms_proto::codec::decode_json;

    let bytes = std::fs::read(dir.join("cluster.json"))
        .with_context(|| format!("no network at {} (start one with `kms-simnet up`)", dir.display()))?;
    let current: SignedClusterDescriptor = decode_json(&bytes)?;
    current.verify(Some(current.descriptor.group_key.as_bytes()))?;
    let d = &current.descriptor;
    let issuer = issuer::ensure(&dir.join("attestation"))?;
    let evidence = issuer::node_evidence(&dir.join("attestation"), &issuer)?;
    let group_key = hex::encode(d.group_key.as_bytes());

    let (dirs, mut next) = member_dirs(dir, d)?;
    let n = d.nodes.len();
    let target = req.nodes.map_or(n, usize::from);
    if target == 0 {
        bail!("--nodes must be at least 1");
    }
    let threshold = req.threshold.unwrap_or(d.threshold.min(u16::try_from(target)?));
    let mut ports = Vec::new();
    let mut proposal = Proposal { threshold: Some(threshold), ..Proposal::default() };
    let fresh = |node_dir: &Path| -> anyhow::Result<String> {
        std::fs::create_dir_all(node_dir)?;
        std::fs::write(node_dir.join("descriptor.json"), &bytes)?;
        Ok(kms_node::identity::init(&node_dir.join("data"))?.peer_id().to_string())
    };
    let port = |s: &str| s.rsplit(['/', ':']).next().and_then(|p| p.parse::<u16>().ok());
    for &i in &req.replace {
        let e = d.node(i).with_context(|| format!("--replace {i}: no such member"))?;
        let node_dir = dirs
            .get(&i)
            .with_context(|| format!("--replace {i}: its directory is not in {}", dir.display()))?;
        signal(node_dir, true);
        std::fs::remove_dir_all(node_dir.join("data"))?;
        let peer_id = fresh(node_dir)?;
        let (p2p, http) = (port(&e.p2p_addr), port(&e.http_url));
        let (Some(p2p), Some(http)) = (p2p, http) else { bail!("member {i}: unexpected addresses") };
        write_join_config(
            node_dir,
            &local_listen(p2p, http),
            &node_dir.join("descriptor.json"),
            &issuer.jwks,
            &group_key,
            &evidence,
        )?;
        eprintln!("   node {i}: store wiped; replaced by {peer_id}");
        proposal
            .replace
            .push((i, NewNode { peer_id, p2p_addr: e.p2p_addr.clone(), http_url: e.http_url.clone() }));
    }
    let mut started = Vec::new();
    for _ in n..target {
        let node_dir = dir.join(format!("node{next}"));
        next += 1;
        let peer_id = fresh(&node_dir)?;
        let (p2p, http) = (PortReservation::new()?, PortReservation::new()?);
        write_join_config(
            &node_dir,
            &local_listen(p2p.port(), http.port()),
            &node_dir.join("descriptor.json"),
            &issuer.jwks,
            &group_key,
            &evidence,
        )?;
        proposal.add.push(NewNode {
            peer_id,
            p2p_addr: format!("/ip4/127.0.0.1/tcp/{}", p2p.port()),
            http_url: format!("http://127.0.0.1:{}", http.port()),
        });
        ports.extend([p2p, http]);
        started.push(node_dir);
    }
    proposal.remove = (u16::try_from(target.min(n))? + 1..=u16::try_from(n)?).collect();
    let change = admin::propose(d, &proposal)?;
    eprintln!("{}", admin::summary(d, &change));
    // Start the new and replacement nodes (they wait to be added).
    let mut pids = Vec::new();
    for node_dir in started.iter().chain(req.replace.iter().filter_map(|i| dirs.get(i))) {
        let mut node = LocalNode { index: 0, dir: node_dir.clone(), url: String::new(), child: None };
        node.start()?;
        if let Some(c) = node.child.take() {
            pids.push(c.id().to_string());
        }
    }
    if !pids.is_empty() {
        let mut all = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
        for p in &pids {
            all.push_str(&format!("\n{p}"));
        }
        std::fs::write(dir.join("pids"), all)?;
    }
    // t current members that keep their store approve, each with its own identity key.
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let approved_at = Instant::now();
    let approvers = approve_by_t(&client, d, &dirs, &change, &req.replace).await?;
    eprintln!("   approved by members {approvers:?}; the reshare runs");
    // Every member of the new committee serves the new epoch; then the descriptor is signed.
    let deadline = Instant::now() + Duration::from_secs(120.max(4 * target as u64));
    let urls: Vec<&str> = change.members.iter().map(|m| m.http_url.as_str()).collect();
    let fresh_descriptor = loop {
        let mut ready = 0;
        for url in &urls {
            if let Ok(r) = client.get(format!("{url}/v1/ready")).send().await {
                let b = r.bytes().await.unwrap_or_default();
                let v: serde_json::Value = serde_json::from_slice(&b).unwrap_or_default();
                if v["epoch"].as_u64().is_some_and(|e| e > d.epoch) {
                    ready += 1;
                }
            }
        }
        if ready == urls.len() {
            let mut found = None;
            for url in &urls {
                if let Ok(r) = client.get(format!("{url}/v1/cluster")).send().await {
                    let b = r.bytes().await.unwrap_or_default().to_vec();
                    if let Ok(s) = decode_json::<SignedClusterDescriptor>(&b) {
                        if s.descriptor.epoch > d.epoch && s.verify(Some(d.group_key.as_bytes())).is_ok() {
                            found = Some(b);
                            break;
                        }
                    }
                }
            }
            if let Some(b) = found {
                break b;
            }
        }
        if Instant::now() > deadline {
            bail!(
                "the new epoch was not active on all {} members in time; see {}/node*/node.log",
                urls.len(),
                dir.display()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let took = approved_at.elapsed();
    std::fs::write(dir.join("cluster.json"), &fresh_descriptor)?;
    // Nodes that left retired (their shares erased): stop their processes.
    for i in &proposal.remove {
        if let Some(node_dir) = dirs.get(i) {
            signal(node_dir, false);
        }
    }
    let next_d: SignedClusterDescriptor = decode_json(&fresh_descriptor)?;
    eprintln!(
        "   epoch {} active on all {} members {:.2} s after the approvals (t = {}); cluster.json rewritten",
        next_d.descriptor.epoch,
        next_d.descriptor.nodes.len(),
        took.as_secs_f64(),
        next_d.descriptor.threshold
    );
    drop(ports);
    Ok(fresh_descriptor)
}

/// Which directory under `dir` (`node<k>/`) holds which member of `d`, by the identity in its
/// `data/`; and the next free `k`.
fn member_dirs(
    dir: &Path,
    d: &kms_proto::cluster::ClusterDescriptor,
) -> anyhow::Result<(std::collections::BTreeMap<u16, PathBuf>, u32)> {
    let mut dirs = std::collections::BTreeMap::new();
    let mut next = 1u32;
    for entry in std::fs::read_dir(dir)?.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(k) = name.strip_prefix("node").and_then(|k| k.parse::<u32>().ok()) else { continue };
        next = next.max(k + 1);
        if let Ok((id, _)) = kms_node::identity::load(&entry.path().join("data")) {
            if let Some(e) = d.nodes.iter().find(|e| e.peer_id == id.peer_id().to_string()) {
                dirs.insert(e.index, entry.path());
            }
        }
    }
    Ok((dirs, next))
}

/// The first t members of `d` not in `except` approve `change`, each with the identity key in
/// its directory, at its own node, all at once (as operators acting independently would).
/// Returns who approved.
async fn approve_by_t(
    client: &reqwest::Client,
    d: &kms_proto::cluster::ClusterDescriptor,
    dirs: &std::collections::BTreeMap<u16, PathBuf>,
    change: &kms_proto::reshare::RosterChange,
    except: &[u16],
) -> anyhow::Result<Vec<u16>> {
    let approvers: Vec<u16> = d
        .nodes
        .iter()
        .map(|e| e.index)
        .filter(|i| !except.contains(i))
        .take(usize::from(d.threshold))
        .collect();
    if approvers.len() < usize::from(d.threshold) {
        bail!("fewer than t = {} members keep their store: the change cannot be approved", d.threshold);
    }
    let mut posts = tokio::task::JoinSet::new();
    for &i in &approvers {
        let node_dir = dirs.get(&i).with_context(|| format!("member {i}: its directory is not here"))?;
        let (id, _) = kms_node::identity::load(&node_dir.join("data"))?;
        let url = format!("{}/v1/reshare", d.node(i).context("member")?.http_url);
        let body = kms_proto::codec::encode_json(&kms_node::admin::approve(&id.signing, i, change.clone()));
        let client = client.clone();
        posts.spawn(async move {
            let resp = client.post(url).body(body).send().await?;
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("member {i} refused the approval: HTTP {status}: {text}");
            }
            anyhow::Ok(())
        });
    }
    while let Some(done) = posts.join_next().await {
        done??;
    }
    Ok(approvers)
}

/// `replace` for a containerised cluster (`setup_containers`; run in a one-off container with
/// every node's volume, while node `index`'s container is stopped): wipes node `index`'s store,
/// gives it a new identity and a `[cluster.join]` configuration (the cluster's current
/// descriptor, fetched from `<prefix>1`, pinned to its group key), proposes its replacement at
/// the same index, and has t other members approve. Starting the node's container then lets
/// the reshare complete. Returns the new peer id.
pub async fn replace_in_containers(dir: &Path, index: u16, prefix: &str) -> anyhow::Result<String> {
    use kms_proto::cluster::SignedClusterDescriptor;
    use kms_proto::codec::decode_json;

    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build()?;
    let mut bytes = None;
    for k in 1..=u16::MAX {
        if k == index {
            continue;
        }
        let Ok(r) = client.get(format!("http://{prefix}{k}:8000/v1/cluster")).send().await else { break };
        if r.status().is_success() {
            bytes = Some(r.bytes().await?.to_vec());
            break;
        }
    }
    let bytes = bytes.context("no member served the cluster descriptor")?;
    let current: SignedClusterDescriptor = decode_json(&bytes)?;
    let d = &current.descriptor;
    current.verify(Some(d.group_key.as_bytes()))?;
    let e = d.node(index).with_context(|| format!("node {index} is not a member"))?.clone();
    let (dirs, _) = member_dirs(dir, d)?;
    let node_dir = dir.join(format!("{prefix}{index}"));
    let _ = std::fs::remove_dir_all(node_dir.join("data"));
    let peer_id = kms_node::identity::init(&node_dir.join("data"))?.peer_id().to_string();
    std::fs::write(node_dir.join("descriptor.json"), &bytes)?;
    write_join_config(
        &node_dir,
        "listen_p2p = \"/ip4/0.0.0.0/tcp/7000\"\nlisten_http = \"0.0.0.0:8000\"\n",
        Path::new("descriptor.json"),
        Path::new("../attestation/jwks.json"),
        &hex::encode(d.group_key.as_bytes()),
        "",
    )?;
    let proposal = kms_node::admin::Proposal {
        replace: vec![(
            index,
            kms_node::admin::NewNode { peer_id: peer_id.clone(), p2p_addr: e.p2p_addr, http_url: e.http_url },
        )],
        ..kms_node::admin::Proposal::default()
    };
    let change = kms_node::admin::propose(d, &proposal)?;
    eprintln!("{}", kms_node::admin::summary(d, &change));
    let approvers = approve_by_t(&client, d, &dirs, &change, &[index]).await?;
    eprintln!("approved by members {approvers:?}; start node {index} to let the reshare complete");
    Ok(peer_id)
}

/// `down`: stops the processes listed in `D/pids`.
pub fn down(dir: &Path) -> anyhow::Result<usize> {
    let pids = std::fs::read_to_string(dir.join("pids"))
        .with_context(|| format!("no network at {}", dir.display()))?;
    let mut stopped = 0;
    for pid in pids.lines().filter(|l| !l.trim().is_empty()) {
        if Command::new("kill").args(["-TERM", pid.trim()]).status().is_ok_and(|s| s.success()) {
            stopped += 1;
        }
    }
    let _ = std::fs::remove_file(dir.join("pids"));
    Ok(stopped)
}

/// Writes a cluster for containers into `dir`: `attestation/` (dev issuer key and JWKS) and
/// `node<i>/` (identity, seal key, `node.toml`) for nodes reachable as `<prefix><i>` on a
/// container network, p2p on port 7000 and HTTP on 8000. Reuses existing keys.
///
/// An existing `node.toml` is kept, so a cluster set up once (for example with `min_peers`)
/// is not rewritten when the setup service runs again.
pub fn setup_containers(
    dir: &Path,
    n: u16,
    t: u16,
    prefix: &str,
    min_peers: Option<u16>,
) -> anyhow::Result<()> {
    if n == 0 || t == 0 || t > n {
        bail!("--threshold must be in 1..={n}");
    }
    issuer::ensure(&dir.join("attestation"))?;
    let mut peers = Vec::new();
    for i in 1..=n {
        let data = dir.join(format!("node{i}")).join("data");
        let id = if data.join(kms_node::identity::IDENTITY_FILE).exists() {
            kms_node::identity::load(&data)?.0
        } else {
            kms_node::identity::init(&data)?
        };
        peers.push(id.peer_id().to_string());
    }
    for i in 1..=n {
        let mut toml = format!(
            "data_dir = \"data\"\n\n[node]\nindex = {i}\nlisten_p2p = \"/ip4/0.0.0.0/tcp/7000\"\nlisten_http = \"0.0.0.0:8000\"\n\n\
             [cluster]\nthreshold = {t}\n\n[attestation]\naudience = \"{AUDIENCE}\"\njwks_file = \"../attestation/jwks.json\"\n\n\
             [limits]\nrate_per_sec = 100000\nrate_burst = 100000\nmax_connections_per_ip = 1024\n"
        );
        if let Some(m) = min_peers {
            toml.push_str(&format!("\n[dkg]\nmin_peers = {m}\n"));
        }
        for (j, peer) in peers.iter().enumerate() {
            let j = j + 1;
            toml.push_str(&format!(
                "\n[[cluster.nodes]]\nindex = {j}\npeer_id = \"{peer}\"\np2p_addr = \"/dns4/{prefix}{j}/tcp/7000\"\nhttp_url = \"http://{prefix}{j}:8000\"\n"
            ));
        }
        let path = dir.join(format!("node{i}")).join("node.toml");
        if !path.exists() {
            std::fs::write(path, toml)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserved_port_is_bound_only_by_reuse_port_listeners() {
        let r = PortReservation::new().unwrap();
        let addr = SocketAddr::from(([127, 0, 0, 1], r.port()));
        assert_eq!(std::net::TcpListener::bind(addr).unwrap_err().kind(), std::io::ErrorKind::AddrInUse);
        let node = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        node.set_reuse_address(true).unwrap();
        node.set_reuse_port(true).unwrap();
        node.bind(&addr.into()).unwrap();
        node.listen(8).unwrap();
        let node: std::net::TcpListener = node.into();
        let _client = std::net::TcpStream::connect(addr).unwrap();
        node.accept().unwrap();
    }
}
