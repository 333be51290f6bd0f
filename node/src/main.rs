//! `kms-node`: `init`, `run`, `status`. `main` only parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "kms-node", version, about = "Threshold KMS node")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Create the data directory: identity key and seal key (mode 0600); prints the peer id.
    Init {
        /// Data directory to create.
        #[arg(long)]
        data_dir: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the node.
    Run {
        /// Path of the TOML configuration (see docs/node-config.md).
        #[arg(long)]
        config: PathBuf,
    },
    /// Change the committee: propose a roster change, approve it, follow the reshare.
    #[command(subcommand)]
    Reshare(ReshareCmd),
    /// Show a running node's readiness, epoch and, when it requires its peers' evidence, each
    /// peer that does not pass and why (asks its HTTP API).
    Status {
        /// Path of the TOML configuration.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ReshareCmd {
    /// Write a roster change of the current epoch (from the local node's signed descriptor).
    /// With no option it is a refresh: same committee and threshold, new shares.
    Propose {
        /// Path of the TOML configuration of the local node.
        #[arg(long)]
        config: PathBuf,
        /// Add a node: PEER_ID,P2P_ADDR,HTTP_URL (repeatable).
        #[arg(long)]
        add: Vec<kms_node::admin::NewNode>,
        /// Remove member I (it still deals its share; repeatable).
        #[arg(long)]
        remove: Vec<u16>,
        /// Replace member I, which lost its store, by a new node at the same index:
        /// I=PEER_ID,P2P_ADDR,HTTP_URL (repeatable).
        #[arg(long)]
        replace: Vec<String>,
        /// Member I lost its store but stays: it receives a new share without dealing.
        #[arg(long)]
        lost: Vec<u16>,
        /// The new threshold (default: the current one).
        #[arg(long)]
        threshold: Option<u16>,
        /// Write the change here (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Review a roster change and approve it with this node's identity key.
    Approve {
        /// Path of the TOML configuration of the local node.
        #[arg(long)]
        config: PathBuf,
        /// The change (JSON, from `propose`).
        #[arg(long)]
        change: PathBuf,
        /// Approve without asking (after reviewing the summary some other way).
        #[arg(long)]
        yes: bool,
    },
    /// The committee, pending changes and the running reshare.
    Status {
        /// Path of the TOML configuration of the local node.
        #[arg(long)]
        config: PathBuf,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Init { data_dir, json } => kms_node::identity::init(&data_dir).map(|id| {
            if json {
                println!(
                    "{}",
                    serde_json::json!({ "peer_id": id.peer_id().to_string(), "data_dir": data_dir })
                );
            } else {
                println!("{}", id.peer_id());
            }
        }),
        Cmd::Run { config } => run(config),
        Cmd::Status { config, json } => status(config, json),
        Cmd::Reshare(cmd) => reshare(cmd),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("kms-node: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(config: PathBuf) -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,libp2p=warn".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cfg = kms_node::config::Config::load(&config)?;
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    rt.block_on(async {
        let listener = kms_node::run::bind_http(&cfg.node)?;
        kms_node::run::run(cfg, listener, shutdown_signal()).await
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        if let Ok(mut term) = signal(SignalKind::terminate()) {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
            return;
        }
    }
    let _ = tokio::signal::ctrl_c().await;
}

/// The local node's HTTP address, from its configuration (or `listen.json` for port 0).
fn local_addr(cfg: &kms_node::config::Config) -> anyhow::Result<std::net::SocketAddr> {
    let mut addr = cfg.node.listen_http;
    if addr.port() == 0 {
        // The node picked its port; it wrote it to listen.json.
        addr = kms_node::listen_file::read(&cfg.data_dir)
            .map_err(|e| {
                anyhow::anyhow!(
                    "node.listen_http has port 0 and {} is unreadable: {e}",
                    cfg.data_dir.join(kms_node::listen_file::LISTEN_FILE).display()
                )
            })?
            .http;
    }
    Ok(if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    })
}

fn status(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let cfg = kms_node::config::Config::load(&config)?;
    let host = local_addr(&cfg)?;
    let body = kms_node::http::get_local(host, "/v1/ready")
        .map_err(|e| anyhow::anyhow!("the node at {host} is not answering: {e}"))?;
    let peers = kms_node::http::get_local(host, "/v1/attestation/peers")
        .map_err(|e| anyhow::anyhow!("the node at {host} is not answering: {e}"))?;
    let mut v: serde_json::Value = serde_json::from_str(&body)?;
    let p: kms_node::proto::api::PeerEvidenceBody = kms_node::proto::codec::decode_json(peers.as_bytes())?;
    if json {
        // `GET /v1/ready`'s body, with the peers' evidence added.
        v["peer_evidence"] = serde_json::to_value(&p)?;
        println!("{v}");
        return Ok(());
    }
    println!("node at {host}: ready={} epoch={}", v["ready"], v["epoch"]);
    if p.required {
        // Why a peer's DKG and reshare messages are not taken, if they are not.
        let passed = p.peers.iter().filter(|e| e.state == "passed").count();
        println!("peer evidence required: {passed} of {} peers asked pass", p.peers.len());
        for e in p.peers.iter().filter(|e| e.state != "passed") {
            println!(
                "  {} {}: {}",
                e.peer_id,
                e.state,
                e.reason.as_deref().unwrap_or("asked, no answer yet")
            );
        }
    }
    Ok(())
}

/// Asks the local node: `(status, body)`; a refusal becomes an error with its code and reason.
fn ask(
    cfg: &kms_node::config::Config,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> anyhow::Result<String> {
    let host = local_addr(cfg)?;
    let (code, text) = kms_node::http::local_request(host, method, path, body)
        .map_err(|e| anyhow::anyhow!("the node at {host} is not answering: {e}"))?;
    if code != 200 {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        anyhow::bail!(
            "{method} {path}: HTTP {code}: {}: {}",
            v["code"].as_str().unwrap_or("?"),
            v["reason"].as_str().unwrap_or(&text)
        );
    }
    Ok(text)
}

fn descriptor(cfg: &kms_node::config::Config) -> anyhow::Result<kms_node::proto::cluster::ClusterDescriptor> {
    let text = ask(cfg, "GET", "/v1/cluster", None)?;
    let signed: kms_node::proto::cluster::SignedClusterDescriptor =
        kms_node::proto::codec::decode_json(text.as_bytes())?;
    signed.verify(None)?;
    Ok(signed.descriptor)
}

fn reshare(cmd: ReshareCmd) -> anyhow::Result<()> {
    use kms_node::admin;
    use kms_node::proto::codec::{decode_json, encode_json};
    match cmd {
        ReshareCmd::Propose { config, add, remove, replace, lost, threshold, out } => {
            let cfg = kms_node::config::Config::load(&config)?;
            let current = descriptor(&cfg)?;
            let replace = replace
                .iter()
                .map(|r| {
                    let (i, node) = r.split_once('=').ok_or_else(|| {
                        anyhow::anyhow!("--replace {r}: expected I=PEER_ID,P2P_ADDR,HTTP_URL")
                    })?;
                    Ok((i.parse()?, node.parse().map_err(anyhow::Error::msg)?))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            let change =
                admin::propose(&current, &admin::Proposal { add, remove, replace, lost, threshold })?;
            eprintln!("{}", admin::summary(&current, &change));
            let json = encode_json(&change);
            match out {
                Some(path) => {
                    std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?
                }
                None => println!("{}", String::from_utf8_lossy(&json)),
            }
            Ok(())
        }
        ReshareCmd::Approve { config, change, yes } => {
            let cfg = kms_node::config::Config::load(&config)?;
            let bytes = std::fs::read(&change).with_context(|| format!("reading {}", change.display()))?;
            let change: kms_node::proto::reshare::RosterChange = decode_json(&bytes)?;
            let current = descriptor(&cfg)?;
            println!("{}", admin::summary(&current, &change));
            if !yes {
                use std::io::{BufRead, IsTerminal, Write};
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!(
                        "review the change above, then approve it with --yes (stdin is not a terminal)"
                    );
                }
                print!("approve this change with this node's identity key? [y/N] ");
                std::io::stdout().flush()?;
                let mut answer = String::new();
                std::io::stdin().lock().read_line(&mut answer)?;
                if !matches!(answer.trim(), "y" | "Y" | "yes") {
                    anyhow::bail!("not approved");
                }
            }
            let status: kms_node::proto::api::ReshareStatusBody =
                decode_json(ask(&cfg, "GET", "/v1/reshare", None)?.as_bytes())?;
            let index = status.node_index.ok_or_else(|| {
                anyhow::anyhow!("this node is not a member of the current committee: it cannot approve")
            })?;
            let (identity, _) = kms_node::identity::load(&cfg.data_dir)?;
            let approval = admin::approve(&identity.signing, index, change);
            let text = ask(&cfg, "POST", "/v1/reshare", Some(&encode_json(&approval)))?;
            let p: kms_node::proto::api::ProposalStatus = decode_json(text.as_bytes())?;
            println!(
                "approved as member {index}: {} of {} approvals ({:?})",
                p.approved_by.len(),
                p.needed,
                p.approved_by
            );
            Ok(())
        }
        ReshareCmd::Status { config, json } => {
            let cfg = kms_node::config::Config::load(&config)?;
            let text = ask(&cfg, "GET", "/v1/reshare", None)?;
            if json {
                println!("{text}");
                return Ok(());
            }
            let s: kms_node::proto::api::ReshareStatusBody = decode_json(text.as_bytes())?;
            println!(
                "epoch {} threshold {} of {} members; this node: {}; state: {}",
                s.epoch,
                s.threshold,
                s.members,
                s.node_index.map_or("not a member".to_string(), |i| format!("member {i}")),
                s.state
            );
            if let (Some(r), Some(p)) = (&s.running, &s.progress) {
                println!(
                    "running {} ({} members, t {}): {p}",
                    hex::encode(r.session.as_bytes()),
                    r.change.members.len(),
                    r.change.threshold
                );
            }
            for p in &s.proposals {
                println!(
                    "proposal {}: {} of {} approvals {:?}",
                    hex::encode(p.session.as_bytes()),
                    p.approved_by.len(),
                    p.needed,
                    p.approved_by
                );
            }
            Ok(())
        }
    }
}
