//! Assembles a node from its configuration and runs it until shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

use kms_proto::p2p::{NodeResponse, RequestBody, ResponseBody};

use crate::apps::Apps;
use crate::attestation::{ConfidentialSpaceVerifier, CsConfig, Jwks};
use crate::config::{Config, NodeSection};
use crate::descriptor::DescriptorSigner;
use crate::driver::{self, DriverConfig, OtherHandler};
use crate::http::{self, AppState, RateLimiter};
use crate::identity::{self, peer_verifying_key, DB_DIR};
use crate::jwks_source::JwksSource;
use crate::listen_file::{self, ListenAddrs};
use crate::metrics::Metrics;
use crate::p2p::{self, P2pConfig};
use crate::service::{KeyService, TdxTrust};
use crate::state::Shared;
use crate::store::{NodeStore, SledKv};

/// Domain of the cluster id.
pub const CLUSTER_ID_DOMAIN: &[u8] = b"kms/v1/cluster-id";

/// `SHA-256("kms/v1/cluster-id" ‖ u16be(t) ‖ u16be(n) ‖ for each node by index:
/// u16be(index) ‖ u16be(len) ‖ peer_id (UTF-8))`: the DKG session and the descriptor's id.
pub fn cluster_id(cfg: &Config) -> [u8; 32] {
    let roster = cfg.roster();
    let mut h = Sha256::new();
    h.update(CLUSTER_ID_DOMAIN);
    h.update(cfg.cluster.threshold.to_be_bytes());
    h.update(u16::try_from(roster.len()).unwrap_or(u16::MAX).to_be_bytes());
    for e in &roster {
        h.update(e.index.to_be_bytes());
        h.update(u16::try_from(e.peer_id.len()).unwrap_or(u16::MAX).to_be_bytes());
        h.update(e.peer_id.as_bytes());
    }
    h.finalize().into()
}

fn verifier(cfg: &Config) -> anyhow::Result<ConfidentialSpaceVerifier> {
    let a = &cfg.attestation;
    let mut cs = CsConfig::new(a.audience.clone());
    cs.issuer = a.issuer.clone();
    cs.max_age_secs = a.max_age_secs;
    cs.leeway_secs = a.leeway_secs;
    if let Some(path) = &a.pki_root_pem {
        let pem = std::fs::read(path)
            .with_context(|| format!("attestation.pki_root_pem: reading {}", path.display()))?;
        cs.pki_root_der = Some(
            crate::attestation::x5c::pem_to_der(&pem)
                .ok_or_else(|| anyhow::anyhow!("attestation.pki_root_pem: not a PEM certificate"))?,
        );
    }
    Ok(ConfidentialSpaceVerifier::new(cs))
}

fn jwks_source(cfg: &Config) -> anyhow::Result<JwksSource> {
    let a = &cfg.attestation;
    if let Some(path) = &a.jwks_file {
        let doc = std::fs::read(path)
            .with_context(|| format!("attestation.jwks_file: reading {}", path.display()))?;
        let jwks = Jwks::from_json(&doc).map_err(|e| anyhow::anyhow!("attestation.jwks_file: {e}"))?;
        return Ok(JwksSource::fixed(jwks));
    }
    match &a.jwks_url {
        Some(url) => JwksSource::url(url.clone(), Jwks::default())
            .map_err(|e| anyhow::anyhow!("attestation.jwks_url: {e}")),
        None => Ok(JwksSource::fixed(Jwks::default())),
    }
}

fn tdx_trust(cfg: &Config) -> anyhow::Result<Option<TdxTrust>> {
    let Some(path) = &cfg.attestation.tdx_collateral_file else { return Ok(None) };
    let doc = std::fs::read(path)
        .with_context(|| format!("attestation.tdx_collateral_file: reading {}", path.display()))?;
    let collateral =
        serde_json::from_slice(&doc).context("attestation.tdx_collateral_file: not DCAP collateral JSON")?;
    Ok(Some(TdxTrust { collateral }))
}

/// Binds the HTTP API listener on `node.listen_http` (port 0 picks a free port), with
/// `SO_REUSEADDR`, and `SO_REUSEPORT` if `node.reuse_port`. Call it inside a Tokio runtime.
pub fn bind_http(node: &NodeSection) -> anyhow::Result<TcpListener> {
    let addr = node.listen_http;
    let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
        .context("node.listen_http: socket")?;
    socket.set_reuseaddr(true).context("node.listen_http: SO_REUSEADDR")?;
    if node.reuse_port {
        #[cfg(unix)]
        socket.set_reuseport(true).context("node.reuse_port: SO_REUSEPORT")?;
        #[cfg(not(unix))]
        bail!("node.reuse_port: SO_REUSEPORT is not available on this platform");
    }
    socket.bind(addr).context("node.listen_http: bind")?;
    socket.listen(1024).context("node.listen_http: listen")
}

/// Runs the node, serving the HTTP API on `listener` (see [`bind_http`]), until `shutdown`
/// resolves, then drains HTTP for `limits.drain_ms`. Once the p2p listener is bound too, both
/// addresses are logged and written to `<data_dir>/listen.json` ([`listen_file`]).
pub async fn run(
    cfg: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (identity, seal) =
        identity::load(&cfg.data_dir).context("loading the node identity (run `kms-node init`)")?;
    let listen_path = cfg.data_dir.join(listen_file::LISTEN_FILE);
    listen_file::remove(&cfg.data_dir).with_context(|| format!("removing {}", listen_path.display()))?;
    let me = cfg.node.index;
    let roster = cfg.roster();
    let own = roster.iter().find(|e| e.index == me).context("node.index is not in cluster.nodes")?;
    if own.peer_id != identity.peer_id().to_string() {
        bail!(
            "node.index: roster entry {me} has peer id {} but {} holds {}",
            own.peer_id,
            cfg.data_dir.display(),
            identity.peer_id()
        );
    }
    let cs = verifier(&cfg)?;
    let jwks = Arc::new(jwks_source(&cfg)?);
    jwks.refresh(http::unix_now()).await;
    {
        let jwks = jwks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(crate::jwks_source::REFRESH_PERIOD).await;
                jwks.refresh(http::unix_now()).await;
            }
        });
    }
    let tdx = tdx_trust(&cfg)?;
    let kv = SledKv::open(&cfg.data_dir.join(DB_DIR)).context("opening the database")?;
    let store = Arc::new(NodeStore::new(Box::new(kv), seal));
    let cluster_id = cluster_id(&cfg);
    store.bind_cluster(&cluster_id).context("cluster.nodes / cluster.threshold")?;

    let mut p2p_roster = std::collections::BTreeMap::new();
    let mut roster_keys = Vec::new();
    for e in &roster {
        let peer: libp2p::PeerId = e.peer_id.parse().context("cluster.nodes: bad peer id")?;
        let addr: libp2p::Multiaddr = e.p2p_addr.parse().context("cluster.nodes: bad p2p_addr")?;
        roster_keys.push(
            peer_verifying_key(&peer)
                .with_context(|| format!("cluster.nodes[{}]: not an Ed25519 peer id", e.index))?,
        );
        p2p_roster.insert(e.index, (peer, addr));
    }
    let listen: libp2p::Multiaddr = cfg.node.listen_p2p.parse().context("node.listen_p2p")?;
    let (p2p, inbound, peers, p2p_addr) =
        p2p::spawn(P2pConfig { keypair: identity.keypair.clone(), listen, roster: p2p_roster, me }).await?;

    let shared = Shared::new();
    let indices: Vec<u16> = roster.iter().map(|e| e.index).collect();
    let apps = Arc::new(Apps::new(store.clone(), Some(p2p.clone()), indices, me));
    let signer = Arc::new(DescriptorSigner::new(
        me,
        roster.clone(),
        cluster_id,
        store.clone(),
        shared.clone(),
        p2p.clone(),
    ));
    let other: OtherHandler = {
        let apps = apps.clone();
        let signer = signer.clone();
        Arc::new(move |from, body| {
            let apps = apps.clone();
            let signer = signer.clone();
            Box::pin(async move {
                match body {
                    RequestBody::Manifest(bytes) => match apps.on_gossip(&bytes) {
                        Ok(()) => NodeResponse::new(ResponseBody::Ack),
                        Err(e) => {
                            warn!(from, reason = %e, "gossiped manifest refused");
                            NodeResponse::new(ResponseBody::Refused(e.to_string()))
                        }
                    },
                    body => signer.handle(body),
                }
            })
        })
    };
    let n = roster.len();
    let round = Duration::from_millis(cfg.dkg.round_timeout_ms);
    let driver_cfg = DriverConfig {
        ceremony: kms_dkg::ceremony::Config {
            session: cluster_id,
            me,
            threshold: cfg.cluster.threshold,
            max_faulty: cfg.cluster.max_faulty,
            roster: roster_keys,
            timeouts: kms_dkg::dkg::Timeouts {
                deal: round,
                respond: round,
                justify: round,
                confirm: round * 2,
            },
            retry_delay: Duration::from_secs(1),
            min_peers: cfg.dkg.min_peers.map(usize::from).unwrap_or(n - 1),
            kind: kms_dkg::ceremony::Kind::Generate,
        },
        identity: identity.signing.clone(),
    };
    tokio::spawn(driver::run(driver_cfg, store.clone(), shared.clone(), p2p.clone(), inbound, peers, other));
    tokio::spawn(signer.run());
    {
        let store = store.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let _ = store.purge_nonces(http::unix_now());
            }
        });
    }

    let replay_window_secs = cfg.attestation.max_age_secs + 2 * cfg.attestation.leeway_secs;
    let state = Arc::new(AppState {
        me,
        keys: KeyService {
            me,
            store: store.clone(),
            shared: shared.clone(),
            apps: apps.clone(),
            cs,
            jwks,
            tdx,
            replay_window_secs,
        },
        apps,
        store: store.clone(),
        shared,
        metrics: Arc::new(Metrics::default()),
        max_body: cfg.limits.max_body_bytes,
        inflight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_concurrency)),
        limiter: RateLimiter::new(cfg.limits.rate_per_sec, cfg.limits.rate_burst),
    });
    let app = http::router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_millis(cfg.limits.request_timeout_ms),
    ));
    let http_addr = listener.local_addr().context("node.listen_http: local address")?;
    info!(addr = %http_addr, node = me, peer_id = %identity.peer_id(), "HTTP API listening");
    listen_file::write(&cfg.data_dir, &ListenAddrs { http: http_addr, p2p: p2p_addr.to_string() })
        .with_context(|| format!("writing {}", listen_path.display()))?;

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
            .with_graceful_shutdown(async move {
                let _ = stop_rx.await;
            })
            .await
    });
    shutdown.await;
    info!("shutting down: draining HTTP requests");
    let _ = stop_tx.send(());
    if tokio::time::timeout(Duration::from_millis(cfg.limits.drain_ms), server).await.is_err() {
        warn!("drain timed out; closing remaining connections");
    }
    store.flush().context("flushing the store")?;
    info!("stopped");
    Ok(())
}
