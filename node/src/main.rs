//! `kms-node`: `init`, `run`, `status`. `main` only parses arguments and calls into the library.

use std::path::PathBuf;
use std::process::ExitCode;

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
    /// Show a running node's readiness, epoch and peers (asks its HTTP API).
    Status {
        /// Path of the TOML configuration.
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

fn status(config: PathBuf, json: bool) -> anyhow::Result<()> {
    let cfg = kms_node::config::Config::load(&config)?;
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
    let host = if addr.ip().is_unspecified() {
        std::net::SocketAddr::from(([127, 0, 0, 1], addr.port()))
    } else {
        addr
    };
    let body = kms_node::http::get_local(host, "/v1/ready")
        .map_err(|e| anyhow::anyhow!("node {} at {host} is not answering: {e}", cfg.node.index))?;
    if json {
        println!("{body}");
    } else {
        let v: serde_json::Value = serde_json::from_str(&body)?;
        println!("node {} at {host}: ready={} epoch={}", cfg.node.index, v["ready"], v["epoch"]);
    }
    Ok(())
}
