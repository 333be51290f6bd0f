//! The node's TOML configuration (reference: `docs/node-config.md`).
//!
//! Every check names the field it refuses, e.g. `cluster.threshold: 6 is not in 1..=5 (the
//! number of cluster.nodes)`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// A configuration that cannot run, naming the field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct ConfigError {
    /// Dotted path of the offending field (`cluster.nodes[2].peer_id`).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError { field: field.into(), reason: reason.into() }
}

/// Top-level configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Directory holding `identity.key`, `seal.key` and the database (made by `kms-node init`).
    pub data_dir: PathBuf,
    /// This node.
    pub node: NodeSection,
    /// The cluster.
    pub cluster: ClusterSection,
    /// Attestation trust anchors.
    pub attestation: AttestationSection,
    /// Resource limits.
    #[serde(default)]
    pub limits: Limits,
    /// DKG timing.
    #[serde(default)]
    pub dkg: DkgSection,
    /// The audit log's retention.
    #[serde(default)]
    pub log: LogSection,
    /// Single-instance leases.
    #[serde(default)]
    pub lease: LeaseSection,
    /// This node's own TEE evidence, and what it requires of its peers.
    #[serde(default)]
    pub evidence: EvidenceSection,
}

/// How a node proves what it runs (`docs/node-config.md` §2.10).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvidenceSection {
    /// Where the node's own evidence (`GET /v1/attestation`) comes from.
    pub provider: EvidenceProvider,
    /// The image the node says it runs (`sha256:…`), bound into its evidence; a Confidential
    /// Space token must attest the same digest.
    pub image_digest: Option<String>,
    /// `provider = "dev"`: the development issuer's RSA key (PKCS#8 PEM). Never in production.
    pub dev_issuer_key_file: Option<PathBuf>,
    /// `provider = "dev"`: the `kid` of that key in the JWKS the nodes trust.
    pub dev_kid: String,
    /// `provider = "confidential_space"`: the token flavour.
    pub token_type: TokenKind,
    /// Evidence older than this is made anew when asked for, seconds; at most half of
    /// `attestation.max_age_secs`, so a peer never holds evidence it must refuse as too old.
    pub refresh_secs: u64,
    /// Allowed node images (a policy document, as an app manifest's `policy`): when set, the
    /// node takes DKG and reshare messages only from peers whose evidence passes it.
    pub peer_policy_file: Option<PathBuf>,
}

impl Default for EvidenceSection {
    fn default() -> Self {
        EvidenceSection {
            provider: EvidenceProvider::None,
            image_digest: None,
            dev_issuer_key_file: None,
            dev_kid: "kms-dev-1".into(),
            token_type: TokenKind::Oidc,
            refresh_secs: 120,
            peer_policy_file: None,
        }
    }
}

/// Where a node's own evidence comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EvidenceProvider {
    /// None: `GET /v1/attestation` answers `evidence_unavailable`.
    None,
    /// The Confidential Space launcher socket.
    ConfidentialSpace,
    /// Linux configfs-tsm TDX quotes.
    Tdx,
    /// Tokens signed by the development issuer's key (local networks and tests only).
    Dev,
}

/// Confidential Space token flavour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenKind {
    /// Signed by Google's OIDC key.
    Oidc,
    /// Signed by a certificate chaining to the Confidential Space root.
    Pki,
}

/// Single-instance leases (`docs/node-config.md` §2.9).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseSection {
    /// The largest difference, seconds, between this node's clock and any other clock of the
    /// cluster (nodes and enclaves): a grant counts in a certificate only while it expires more
    /// than this after the checker's clock. Part of the safety argument (`docs/decisions.md`
    /// 36): set it the same on every node, above what the clocks can drift apart.
    pub max_clock_skew_secs: u64,
}

impl Default for LeaseSection {
    fn default() -> Self {
        LeaseSection { max_clock_skew_secs: 2 }
    }
}

/// The audit log's retention (`docs/node-config.md` §2.8).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogSection {
    /// Keep at least this many of the newest entries; older ones are pruned once a checkpoint
    /// co-signed by the witnesses covers them. `None` (the default): never prune.
    pub keep_entries: Option<u64>,
}

/// This node's own settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeSection {
    /// This node's index (1..=n) in `cluster.nodes`; leave it out (0) on a node that joins an
    /// existing cluster (`cluster.join`). A reshare may give the node another index: the
    /// committee it is in is kept in its store from then on.
    #[serde(default)]
    pub index: u16,
    /// libp2p listen multiaddress, e.g. `/ip4/0.0.0.0/tcp/7001`; port 0 picks a free port
    /// (reported in the log and in `<data_dir>/listen.json`).
    pub listen_p2p: String,
    /// HTTP listen address, e.g. `0.0.0.0:8001`; port 0 as for `listen_p2p`.
    pub listen_http: SocketAddr,
    /// Set `SO_REUSEPORT` on the HTTP listener (default false). Only for test harnesses that hold
    /// a port reservation (a bound, never listening `SO_REUSEPORT` socket) for the roster's
    /// addresses, so that no other process can take the port between its choice and the node's
    /// bind, nor across restarts. libp2p sets `SO_REUSEPORT` on its p2p listener anyway.
    #[serde(default)]
    pub reuse_port: bool,
}

/// The roster and thresholds.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// Shares needed for a key (t) in the genesis committee (`cluster.nodes`).
    #[serde(default)]
    pub threshold: u16,
    /// Byzantine nodes tolerated by DKG agreement (f); default `⌊(n-1)/3⌋`.
    #[serde(default)]
    pub max_faulty: Option<u16>,
    /// The genesis committee: every node, including this one. Empty on a joining node.
    #[serde(default)]
    pub nodes: Vec<RosterEntry>,
    /// A node that joins an existing cluster through a reshare: instead of `nodes`.
    #[serde(default)]
    pub join: Option<JoinSection>,
}

/// How a new node finds the cluster it joins.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinSection {
    /// The cluster's current signed descriptor (`cluster.json`, or `GET /v1/cluster` of any
    /// member), trusted only under `group_key`.
    pub descriptor: PathBuf,
    /// The cluster's Ed25519 group key (64 hex characters), pinned out of band.
    pub group_key: String,
}

/// One roster entry.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RosterEntry {
    /// Index (1..=n), unique.
    pub index: u16,
    /// libp2p peer id (printed by `kms-node init`).
    pub peer_id: String,
    /// libp2p multiaddress where the node listens.
    pub p2p_addr: String,
    /// Base URL of the node's HTTP API (for clients and the cluster descriptor).
    pub http_url: String,
}

/// Attestation trust anchors and claim limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AttestationSection {
    /// Audience tokens must carry (this cluster's name).
    pub audience: String,
    /// Expected OIDC issuer.
    #[serde(default = "default_issuer")]
    pub issuer: String,
    /// JWKS document (JSON file) of the OIDC issuer.
    #[serde(default)]
    pub jwks_file: Option<PathBuf>,
    /// JWKS URL of the OIDC issuer (https; http only to loopback), fetched at start, hourly and
    /// on an unknown `kid` (at most once a minute). Exclusive with `jwks_file`.
    #[serde(default)]
    pub jwks_url: Option<String>,
    /// PEM of the pinned Confidential Space root CA for PKI tokens.
    #[serde(default)]
    pub pki_root_pem: Option<PathBuf>,
    /// Oldest token accepted, seconds since `iat`.
    #[serde(default = "default_max_age")]
    pub max_age_secs: u64,
    /// Clock skew allowed on `exp`/`nbf`, seconds.
    #[serde(default = "default_leeway")]
    pub leeway_secs: u64,
    /// DCAP collateral (JSON) for TDX quotes, held offline by the node.
    #[serde(default)]
    pub tdx_collateral_file: Option<PathBuf>,
    /// TCB statuses of a TDX platform that are accepted.
    #[serde(default = "default_tcb_statuses")]
    pub tdx_tcb_statuses: Vec<String>,
}

fn default_tcb_statuses() -> Vec<String> {
    kms_proto::attestation::DEFAULT_ACCEPTABLE_TCB_STATUSES.iter().map(|s| s.to_string()).collect()
}

fn default_issuer() -> String {
    "https://confidentialcomputing.googleapis.com".into()
}
fn default_max_age() -> u64 {
    kms_proto::attestation::confidential_space::DEFAULT_MAX_AGE_SECS
}
fn default_leeway() -> u64 {
    kms_proto::attestation::confidential_space::DEFAULT_LEEWAY_SECS
}

/// Resource limits of the HTTP API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest request body, bytes.
    pub max_body_bytes: usize,
    /// Requests processed at once.
    pub max_concurrency: usize,
    /// Sustained requests per second per source IP.
    pub rate_per_sec: u32,
    /// Burst per source IP.
    pub rate_burst: u32,
    /// Per-request timeout, milliseconds.
    pub request_timeout_ms: u64,
    /// Time given to in-flight requests on SIGTERM, milliseconds.
    pub drain_ms: u64,
    /// Open HTTP connections in all; more are closed at once.
    pub max_connections: usize,
    /// Open HTTP connections per source IP address; more are closed at once.
    pub max_connections_per_ip: usize,
    /// Deadline for a request's headers, milliseconds, from when the node waits for them (the
    /// accept, or the end of the previous response: also the idle timeout of keep-alive).
    pub header_timeout_ms: u64,
    /// Deadline for reading a request's body, milliseconds (before a concurrency permit is
    /// taken).
    pub body_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 128 << 10,
            max_concurrency: 256,
            rate_per_sec: 200,
            rate_burst: 400,
            request_timeout_ms: 5_000,
            drain_ms: 5_000,
            max_connections: 1024,
            max_connections_per_ip: 64,
            header_timeout_ms: 5_000,
            body_timeout_ms: 2_000,
        }
    }
}

/// DKG timing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DkgSection {
    /// Timeout of each DKG round, milliseconds.
    pub round_timeout_ms: u64,
    /// Start the DKG once this many roster peers (besides this node) are connected; default
    /// all of them.
    pub min_peers: Option<u16>,
}

impl Default for DkgSection {
    fn default() -> Self {
        DkgSection { round_timeout_ms: 5_000, min_peers: None }
    }
}

impl JoinSection {
    /// The pinned group key, if `group_key` is 64 hex characters.
    pub fn pinned_group_key(&self) -> Option<[u8; 32]> {
        hex::decode(self.group_key.trim()).ok()?.try_into().ok()
    }
}

impl Config {
    /// Reads and validates a TOML file; relative paths resolve against the file's directory.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|e| err(path.display().to_string(), e.to_string()))?;
        let mut cfg = Self::parse(&text)?;
        if let Some(base) = path.parent() {
            cfg.resolve_paths(base);
        }
        Ok(cfg)
    }

    /// Parses and validates TOML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| {
            let span = e.span().map(|s| format!(" at bytes {}..{}", s.start, s.end)).unwrap_or_default();
            err("config", format!("{}{span}", e.message()))
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let fix = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        fix(&mut self.data_dir);
        if let Some(j) = &mut self.cluster.join {
            fix(&mut j.descriptor);
        }
        for p in [
            &mut self.attestation.jwks_file,
            &mut self.attestation.pki_root_pem,
            &mut self.attestation.tdx_collateral_file,
            &mut self.evidence.dev_issuer_key_file,
            &mut self.evidence.peer_policy_file,
        ]
        .into_iter()
        .flatten()
        {
            fix(p);
        }
    }

    /// Checks everything that TOML types cannot.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if let Some(j) = &self.cluster.join {
            if !self.cluster.nodes.is_empty() || self.cluster.threshold != 0 || self.node.index != 0 {
                return Err(err(
                    "cluster.join",
                    "a joining node has no cluster.nodes, cluster.threshold or node.index: the reshare that adds it assigns them",
                ));
            }
            if j.pinned_group_key().is_none() {
                return Err(err("cluster.join.group_key", "must be 64 hex characters"));
            }
            return self.validate_common(usize::from(kms_dkg::dkg::MAX_NODES));
        }
        let n = self.cluster.nodes.len();
        if n == 0 {
            return Err(err("cluster.nodes", "the roster is empty"));
        }
        if n > usize::from(kms_dkg::dkg::MAX_NODES) {
            return Err(err(
                "cluster.nodes",
                format!("{n} nodes exceed the limit of {}", kms_dkg::dkg::MAX_NODES),
            ));
        }
        let t = usize::from(self.cluster.threshold);
        if t == 0 || t > n {
            return Err(err(
                "cluster.threshold",
                format!("{t} is not in 1..={n} (the number of cluster.nodes)"),
            ));
        }
        let f = self.cluster.max_faulty.map(usize::from).unwrap_or((n - 1) / 3);
        if (n + f) / 2 + 1 > n {
            return Err(err("cluster.max_faulty", format!("{f} makes the DKG quorum exceed n = {n}")));
        }
        let mut seen_idx = std::collections::BTreeSet::new();
        let mut seen_peer = std::collections::BTreeSet::new();
        for (i, node) in self.cluster.nodes.iter().enumerate() {
            let field = |name: &str| format!("cluster.nodes[{i}].{name}");
            if node.index == 0 || usize::from(node.index) > n || !seen_idx.insert(node.index) {
                return Err(err(field("index"), format!("{} must be unique and in 1..={n}", node.index)));
            }
            if node.peer_id.parse::<libp2p::PeerId>().is_err() {
                return Err(err(field("peer_id"), "not a libp2p peer id"));
            }
            if !seen_peer.insert(node.peer_id.clone()) {
                return Err(err(field("peer_id"), "appears twice in the roster"));
            }
            if node.p2p_addr.parse::<libp2p::Multiaddr>().is_err() {
                return Err(err(field("p2p_addr"), "not a multiaddress"));
            }
            if !(node.http_url.starts_with("http://") || node.http_url.starts_with("https://")) {
                return Err(err(field("http_url"), "must start with http:// or https://"));
            }
        }
        if !seen_idx.contains(&self.node.index) {
            return Err(err("node.index", format!("{} is not an index of cluster.nodes", self.node.index)));
        }
        self.validate_common(n)
    }

    /// Checks of every configuration, genesis or joining; `n` bounds `dkg.min_peers`.
    fn validate_common(&self, n: usize) -> Result<(), ConfigError> {
        if self.node.listen_p2p.parse::<libp2p::Multiaddr>().is_err() {
            return Err(err("node.listen_p2p", "not a multiaddress"));
        }
        if self.attestation.audience.is_empty() {
            return Err(err("attestation.audience", "must not be empty"));
        }
        let a = &self.attestation;
        if a.jwks_file.is_none()
            && a.jwks_url.is_none()
            && a.pki_root_pem.is_none()
            && a.tdx_collateral_file.is_none()
        {
            return Err(err(
                "attestation",
                "set jwks_file or jwks_url, pki_root_pem and/or tdx_collateral_file: no evidence could be verified",
            ));
        }
        if a.tdx_tcb_statuses.is_empty() {
            return Err(err("attestation.tdx_tcb_statuses", "must name at least one status"));
        }
        if let Some(bad) = a
            .tdx_tcb_statuses
            .iter()
            .find(|s| !kms_proto::attestation::KNOWN_TCB_STATUSES.contains(&s.as_str()))
        {
            return Err(err(
                "attestation.tdx_tcb_statuses",
                format!(
                    "{bad:?} is not a TCB status that can be accepted (one of {})",
                    kms_proto::attestation::KNOWN_TCB_STATUSES.join(", ")
                ),
            ));
        }
        if a.jwks_file.is_some() && a.jwks_url.is_some() {
            return Err(err("attestation.jwks_url", "set either jwks_file or jwks_url, not both"));
        }
        if let Some(url) = &a.jwks_url {
            crate::jwks_source::check_url(url).map_err(|e| err("attestation.jwks_url", e))?;
        }
        if self.limits.max_body_bytes < 1024 {
            return Err(err("limits.max_body_bytes", "below 1024 bytes no key request fits"));
        }
        if self.limits.max_concurrency == 0 {
            return Err(err("limits.max_concurrency", "must be at least 1"));
        }
        if self.dkg.round_timeout_ms == 0 {
            return Err(err("dkg.round_timeout_ms", "must be at least 1"));
        }
        let e = &self.evidence;
        if let Some(d) = &e.image_digest {
            d.parse::<kms_proto::app::ImageDigest>()
                .map_err(|r| err("evidence.image_digest", r.to_string()))?;
        }
        if e.provider == EvidenceProvider::Dev && e.dev_issuer_key_file.is_none() {
            return Err(err("evidence.dev_issuer_key_file", "required with provider = \"dev\""));
        }
        let too_slow =
            e.refresh_secs == 0 || e.refresh_secs.saturating_mul(2) > self.attestation.max_age_secs;
        if e.provider != EvidenceProvider::None && too_slow {
            return Err(err(
                "evidence.refresh_secs",
                format!(
                    "{} is not in 1..={} (half of attestation.max_age_secs, so peers never hold evidence too old to pass)",
                    e.refresh_secs,
                    self.attestation.max_age_secs / 2
                ),
            ));
        }
        if self.lease.max_clock_skew_secs == 0 {
            return Err(err(
                "lease.max_clock_skew_secs",
                "must be at least 1: clocks are read in whole seconds, so two of them always differ by up to one",
            ));
        }
        if self.lease.max_clock_skew_secs > kms_proto::lease::MAX_LEASE_SECS / 4 {
            return Err(err(
                "lease.max_clock_skew_secs",
                format!(
                    "must be at most {} s (a quarter of the longest lease)",
                    kms_proto::lease::MAX_LEASE_SECS / 4
                ),
            ));
        }
        if let Some(m) = self.dkg.min_peers {
            if usize::from(m) > n - 1 {
                return Err(err(
                    "dkg.min_peers",
                    format!("{m} exceeds the {} other nodes: the DKG would never start", n - 1),
                ));
            }
        }
        if self.limits.max_connections == 0 || self.limits.max_connections_per_ip == 0 {
            return Err(err(
                "limits.max_connections",
                "max_connections and max_connections_per_ip must be at least 1",
            ));
        }
        if self.limits.header_timeout_ms == 0 || self.limits.body_timeout_ms == 0 {
            return Err(err(
                "limits.header_timeout_ms",
                "header_timeout_ms and body_timeout_ms must be at least 1",
            ));
        }
        if self.limits.request_timeout_ms == 0 {
            return Err(err("limits.request_timeout_ms", "must be at least 1"));
        }
        if self.limits.rate_per_sec == 0 || self.limits.rate_burst == 0 {
            return Err(err("limits.rate_per_sec", "rate_per_sec and rate_burst must be at least 1"));
        }
        Ok(())
    }

    /// The roster sorted by index.
    pub fn roster(&self) -> Vec<RosterEntry> {
        let mut r = self.cluster.nodes.clone();
        r.sort_by_key(|e| e.index);
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PEER: &str = "12D3KooWD3eckifWpRn9wQpMG9R9hX3sD158z7EqHWmweQAJU5SA";

    fn base() -> String {
        format!(
            "data_dir = \"d\"\n[node]\nindex = 1\nlisten_p2p = \"/ip4/127.0.0.1/tcp/1\"\nlisten_http = \"127.0.0.1:2\"\n\
             [cluster]\nthreshold = 1\n[attestation]\naudience = \"a\"\njwks_file = \"j\"\n\
             [[cluster.nodes]]\nindex = 1\npeer_id = \"{PEER}\"\np2p_addr = \"/ip4/127.0.0.1/tcp/1\"\nhttp_url = \"http://x\"\n"
        )
    }

    fn refused(text: &str) -> ConfigError {
        Config::parse(text).expect_err("must be refused")
    }

    #[test]
    fn valid_config_parses() {
        let cfg = Config::parse(&base()).unwrap();
        assert_eq!(cfg.cluster.threshold, 1);
        assert_eq!(
            cfg.attestation.max_age_secs,
            kms_proto::attestation::confidential_space::DEFAULT_MAX_AGE_SECS
        );
    }

    #[test]
    fn reuse_port_defaults_to_false() {
        assert!(!Config::parse(&base()).unwrap().node.reuse_port);
        let cfg = Config::parse(&base().replace("[cluster]", "reuse_port = true\n[cluster]")).unwrap();
        assert!(cfg.node.reuse_port);
    }

    #[test]
    fn bad_values_name_their_field() {
        assert_eq!(refused(&base().replace("threshold = 1", "threshold = 2")).field, "cluster.threshold");
        assert_eq!(refused(&base().replace("index = 1\nlisten", "index = 7\nlisten")).field, "node.index");
        assert_eq!(refused(&base().replace(PEER, "not-a-peer")).field, "cluster.nodes[0].peer_id");
        assert_eq!(refused(&base().replace("http://x", "ftp://x")).field, "cluster.nodes[0].http_url");
        assert_eq!(
            refused(&base().replace("audience = \"a\"", "audience = \"\"")).field,
            "attestation.audience"
        );
        assert_eq!(refused(&base().replace("jwks_file = \"j\"\n", "")).field, "attestation");
        assert_eq!(refused(&(base() + "[dkg]\nmin_peers = 1\n")).field, "dkg.min_peers");
        assert_eq!(refused(&(base() + "[limits]\nrate_per_sec = 0\n")).field, "limits.rate_per_sec");
        let statuses = |list: &str| {
            base().replace("jwks_file = \"j\"\n", &format!("jwks_file = \"j\"\ntdx_tcb_statuses = {list}\n"))
        };
        assert_eq!(refused(&statuses("[]")).field, "attestation.tdx_tcb_statuses");
        let revoked = refused(&statuses("[\"UpToDate\", \"Revoked\"]"));
        assert_eq!(revoked.field, "attestation.tdx_tcb_statuses");
        assert!(revoked.reason.contains("\"Revoked\" is not a TCB status"), "{}", revoked.reason);
        let accepted = Config::parse(&statuses("[\"UpToDate\", \"OutOfDate\"]")).unwrap();
        assert_eq!(accepted.attestation.tdx_tcb_statuses, ["UpToDate", "OutOfDate"]);
        assert_eq!(
            Config::parse(&base()).unwrap().attestation.tdx_tcb_statuses,
            kms_proto::attestation::DEFAULT_ACCEPTABLE_TCB_STATUSES
        );
        let unknown = refused(&(base() + "[extra]\nx = 1\n"));
        assert_eq!(unknown.field, "config");
        assert!(unknown.reason.contains("unknown field"), "{}", unknown.reason);
    }
}
