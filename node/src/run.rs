//! Assembles a node from its configuration and runs it until shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpSocket};
use tracing::{info, warn};

use kms_proto::app::Policy;
use kms_proto::cluster::SignedClusterDescriptor;
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::p2p::{NodeResponse, RequestBody, ResponseBody};

use crate::apps::Apps;
use crate::config::{Config, NodeSection};
use crate::descriptor::DescriptorSigner;
use crate::driver::{self, DriverConfig, OtherHandler};
use crate::evidence::{OwnEvidence, PeerGate};
use crate::http::{self, AppState, RateLimiter};
use crate::identity::{self, DB_DIR};
use crate::jwks_source::JwksSource;
use crate::listen_file::{self, ListenAddrs};
use crate::membership::Membership;
use crate::metrics::Metrics;
use crate::p2p::{self, P2pConfig};
use crate::reshare::{self, Reshares};
use crate::serve::{serve, ConnLimits};
use crate::service::KeyService;
use crate::state::Shared;
use crate::store::{NodeStore, SledKv};
use kms_proto::attestation::{ConfidentialSpaceVerifier, CsConfig, EvidenceVerifier, Jwks, TdxTrust};
use kms_proto::cluster::identity_of_peer_id;

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
            kms_proto::attestation::x5c::pem_to_der(&pem)
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
    TdxTrust::from_json(&doc, cfg.attestation.tdx_tcb_statuses.clone())
        .map(Some)
        .map_err(|e| anyhow::anyhow!("attestation.tdx_collateral_file: {e}"))
}

/// The allowed node images (`evidence.peer_policy_file`), if the node requires its peers' evidence.
fn peer_policy(cfg: &Config) -> anyhow::Result<Option<Policy>> {
    let Some(path) = &cfg.evidence.peer_policy_file else { return Ok(None) };
    let doc = std::fs::read(path)
        .with_context(|| format!("evidence.peer_policy_file: reading {}", path.display()))?;
    let policy: Policy =
        serde_json::from_slice(&doc).map_err(|e| anyhow::anyhow!("evidence.peer_policy_file: {e}"))?;
    if policy.allowed_image_digests.is_empty() && policy.allowed_tdx_measurements.is_empty() {
        anyhow::bail!(
            "evidence.peer_policy_file: allows no image and no TDX measurement: every peer would be refused"
        );
    }
    Ok(Some(policy))
}

/// A joining node's descriptor (`cluster.join`), verified under the pinned group key, with its
/// bytes.
fn join_descriptor(cfg: &Config) -> anyhow::Result<Option<(SignedClusterDescriptor, Vec<u8>)>> {
    let Some(join) = &cfg.cluster.join else { return Ok(None) };
    let bytes = std::fs::read(&join.descriptor)
        .with_context(|| format!("cluster.join.descriptor: reading {}", join.descriptor.display()))?;
    let signed: SignedClusterDescriptor =
        decode_json(&bytes).map_err(|e| anyhow::anyhow!("cluster.join.descriptor: {e}"))?;
    let pin = join.pinned_group_key().context("cluster.join.group_key")?;
    signed.verify(Some(&pin)).map_err(|e| anyhow::anyhow!("cluster.join.descriptor: {e}"))?;
    Ok(Some((signed, bytes)))
}

/// The committee of the current epoch: the one a reshare recorded in the store, else the
/// genesis roster of the configuration, else (a joining node) the descriptor's, whose signed
/// bytes are kept as the public keys of that epoch.
fn membership(
    cfg: &Config,
    store: &NodeStore,
    cluster_id: [u8; 32],
    joining: Option<&(SignedClusterDescriptor, Vec<u8>)>,
) -> anyhow::Result<Membership> {
    if let Some(bytes) = store.get_doc(reshare::MEMBERSHIP).context("reading the committee")? {
        return decode_json(&bytes).map_err(|e| anyhow::anyhow!("the stored committee is unreadable: {e}"));
    }
    match joining {
        Some((signed, bytes)) => {
            let epoch = signed.descriptor.epoch;
            if store.get_public("descriptor", epoch).context("reading the descriptor")?.is_none() {
                store.put_public("descriptor", epoch, bytes).context("storing the descriptor")?;
            }
            Ok(Membership::from_descriptor(&signed.descriptor))
        }
        None => {
            let mut m = Membership::genesis(cfg, cluster_id);
            // Keys of the genesis key generation, if it completed (unreadable keys are the
            // driver's to report).
            if let Ok(Some(keys)) = store.active() {
                m.epoch = keys.epoch;
            }
            Ok(m)
        }
    }
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
    let joining = join_descriptor(&cfg)?;
    // The genesis roster's identity keys (none on a joining node), decoded before the store is
    // bound to its cluster, so that a fixed configuration is not refused as another cluster's.
    let (cluster_id, roster_keys) = match &joining {
        Some((signed, _)) => (*signed.descriptor.cluster_id.as_bytes(), None),
        None => {
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
            let keys = roster
                .iter()
                .map(|e| {
                    identity_of_peer_id(&e.peer_id)
                        .with_context(|| format!("cluster.nodes[{}]: not an Ed25519 peer id", e.index))
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            (cluster_id(&cfg), Some(keys))
        }
    };
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
    store.bind_cluster(&cluster_id).context("cluster.nodes / cluster.threshold / cluster.join")?;
    let moved = store.migrate_audit().context("moving the audit log into the transparency log")?;
    if moved > 0 {
        tracing::info!(entries = moved, "audit entries moved into the transparency log");
    }
    let membership = membership(&cfg, &store, cluster_id, joining.as_ref())?;

    let mut p2p_roster = std::collections::BTreeMap::new();
    for e in &membership.members {
        let peer: libp2p::PeerId = e.peer_id.parse().context("committee: bad peer id")?;
        let addr: libp2p::Multiaddr = e.p2p_addr.parse().context("committee: bad p2p_addr")?;
        p2p_roster.insert(e.index, (peer, addr));
    }
    let me = membership.index_of(&identity.peer_id()).unwrap_or(0);
    let listen: libp2p::Multiaddr = cfg.node.listen_p2p.parse().context("node.listen_p2p")?;
    let (p2p, inbound, peers, p2p_addr) =
        p2p::spawn(P2pConfig { keypair: identity.keypair.clone(), listen, roster: p2p_roster, me }).await?;

    let shared = Shared::new(identity.signing.verifying_key().to_bytes(), membership);
    let verifier = Arc::new(EvidenceVerifier { cs, tdx });
    let own_evidence = Arc::new(OwnEvidence::new(
        &cfg,
        cluster_id,
        identity.signing.verifying_key().to_bytes(),
        store.clone(),
        shared.clone(),
    )?);
    let peer_gate =
        PeerGate::new(&cfg, peer_policy(&cfg)?, verifier.clone(), jwks.clone(), cluster_id, p2p.clone());
    if peer_gate.required() {
        // Before anything is queued: no DKG or reshare message leaves for an unchecked peer.
        let gate = peer_gate.clone();
        p2p.set_gate(Arc::new(move |peer, request| gate.outbound(peer, request)));
        peer_gate.spawn_rechecks();
    }
    let apps = Arc::new(Apps::new(store.clone(), Some(p2p.clone()), cfg.lease.max_clock_skew_secs));
    let signer = Arc::new(DescriptorSigner::new(cluster_id, store.clone(), shared.clone(), p2p.clone()));
    let (changes_tx, changes) = tokio::sync::mpsc::unbounded_channel();
    let reshares = Arc::new(Reshares::new(store.clone(), shared.clone(), p2p.clone(), changes_tx));
    reshares.spawn_gossip();
    let other: OtherHandler = {
        let apps = apps.clone();
        let signer = signer.clone();
        let reshares = reshares.clone();
        let own_evidence = own_evidence.clone();
        Arc::new(move |from, body| {
            let apps = apps.clone();
            let signer = signer.clone();
            let reshares = reshares.clone();
            let own_evidence = own_evidence.clone();
            Box::pin(async move {
                match body {
                    RequestBody::Evidence => match own_evidence.current().await {
                        Ok(ev) => NodeResponse::new(ResponseBody::Evidence(encode_json(&*ev))),
                        Err(reason) => NodeResponse::new(ResponseBody::Refused(reason)),
                    },
                    // Decoding and checking a gossiped document is synchronous work (signatures,
                    // a 64-member roster): off the async workers, which drive libp2p.
                    RequestBody::Manifest(bytes) => match blocking(move || apps.on_gossip(&bytes)).await {
                        Ok(()) => NodeResponse::new(ResponseBody::Ack),
                        Err(e) => {
                            warn!(from, reason = %e, "gossiped manifest refused");
                            NodeResponse::new(ResponseBody::Refused(e.to_string()))
                        }
                    },
                    RequestBody::Reshare(bytes) => {
                        match blocking(move || reshares.on_gossip(from, &bytes)).await {
                            Ok(()) => NodeResponse::new(ResponseBody::Ack),
                            Err(e) => NodeResponse::new(ResponseBody::Refused(e.to_string())),
                        }
                    }
                    body => signer.handle(body),
                }
            })
        })
    };
    let round = Duration::from_millis(cfg.dkg.round_timeout_ms);
    let timeouts = kms_dkg::dkg::Timeouts { deal: round, respond: round, justify: round, confirm: round * 2 };
    let retry_delay = Duration::from_secs(1);
    let genesis = roster_keys.map(|roster_keys| {
        let others = roster_keys.len() - 1;
        kms_dkg::ceremony::Config {
            session: cluster_id,
            me: cfg.node.index,
            threshold: cfg.cluster.threshold,
            max_faulty: cfg.cluster.max_faulty,
            roster: roster_keys,
            timeouts,
            retry_delay,
            min_peers: cfg.dkg.min_peers.map(usize::from).unwrap_or(others),
            kind: kms_dkg::ceremony::Kind::Generate,
        }
    });
    let driver_cfg = DriverConfig {
        genesis,
        identity: identity.signing.clone(),
        timeouts,
        retry_delay,
        peer_gate: peer_gate.clone(),
    };
    let inputs = driver::Inputs { inbound, peers, changes };
    tokio::spawn(driver::run(driver_cfg, store.clone(), shared.clone(), p2p.clone(), inputs, other));
    tokio::spawn(signer.run());
    {
        // New members hold no manifests: every activation (a reshare's included) sends them all.
        let apps = apps.clone();
        let mut activated = shared.activated.subscribe();
        tokio::spawn(async move {
            while activated.changed().await.is_ok() {
                match apps.gossip_all() {
                    Ok(n) if n > 0 => info!(manifests = n, "manifests sent to the committee"),
                    Ok(_) => {}
                    Err(e) => warn!(error = %e, "manifests could not be sent"),
                }
            }
        });
    }
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

    let metrics = Arc::new(Metrics::default());
    if let Some(at) =
        verifier.cs.config().pki_root_der.as_deref().and_then(kms_proto::attestation::x5c::not_after)
    {
        metrics.set_trust_expiry("pki_root", at);
    }
    if let Some(at) =
        verifier.tdx.as_ref().and_then(|t| kms_proto::attestation::tdx::collateral_next_update(&t.collateral))
    {
        metrics.set_trust_expiry("tdx_collateral", at);
    }
    let state = Arc::new(AppState {
        keys: KeyService {
            store: store.clone(),
            shared: shared.clone(),
            apps: apps.clone(),
            verifier,
            jwks,
            cluster_id,
            identity: identity.signing.clone(),
            max_age_secs: cfg.attestation.max_age_secs,
            leeway_secs: cfg.attestation.leeway_secs,
            max_skew_secs: cfg.lease.max_clock_skew_secs,
            lease_lock: std::sync::Mutex::new(()),
            hashes: Default::default(),
        },
        apps,
        store: store.clone(),
        shared,
        metrics: metrics.clone(),
        reshares,
        evidence: own_evidence,
        peer_gate,
        max_body: cfg.limits.max_body_bytes,
        body_timeout: Duration::from_millis(cfg.limits.body_timeout_ms),
        inflight: Arc::new(tokio::sync::Semaphore::new(cfg.limits.max_concurrency)),
        limiter: RateLimiter::new(cfg.limits.rate_per_sec, cfg.limits.rate_burst),
    });
    let me = state.shared.me();
    tokio::spawn(crate::witness::publish(state.clone(), cfg.log.keep_entries));
    let app = http::router(state).layer(tower_http::timeout::TimeoutLayer::with_status_code(
        axum::http::StatusCode::REQUEST_TIMEOUT,
        Duration::from_millis(cfg.limits.request_timeout_ms),
    ));
    let http_addr = listener.local_addr().context("node.listen_http: local address")?;
    info!(addr = %http_addr, node = ?me, peer_id = %identity.peer_id(), "HTTP API listening");
    listen_file::write(&cfg.data_dir, &ListenAddrs { http: http_addr, p2p: p2p_addr.to_string() })
        .with_context(|| format!("writing {}", listen_path.display()))?;

    let limits = ConnLimits {
        max_connections: cfg.limits.max_connections,
        max_per_ip: cfg.limits.max_connections_per_ip,
        header_timeout: Duration::from_millis(cfg.limits.header_timeout_ms),
        drain: Duration::from_millis(cfg.limits.drain_ms),
    };
    serve(listener, app, limits, metrics, async move {
        shutdown.await;
        info!("shutting down: draining HTTP requests");
    })
    .await;
    store.flush().context("flushing the store")?;
    info!("stopped");
    Ok(())
}

/// Runs `f` on the blocking pool; a panic in it becomes an internal error.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::api_error::ApiError> + Send + 'static,
) -> Result<T, crate::api_error::ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(crate::api_error::ApiError::internal("a blocking task panicked")))
}
