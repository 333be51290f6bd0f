//! Prometheus metrics (`GET /metrics`): requests by endpoint and outcome (refusal code), latency
//! histograms, DKG state, epoch and connected peers.

use std::sync::atomic::{AtomicI64, AtomicU64};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels of request metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// Route, e.g. `/v1/keys`.
    pub endpoint: String,
    /// `ok` or the refusal code.
    pub outcome: String,
}

/// Labels of refused connections.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    /// The limit that refused it.
    pub reason: String,
}

/// Labels of trust-anchor metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AnchorLabels {
    /// `pki_root` (the pinned Confidential Space root certificate) or `tdx_collateral`.
    pub anchor: String,
}

/// Labels of latency metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct EndpointLabels {
    /// Route.
    pub endpoint: String,
}

fn latency_histogram() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
}

/// The node's metrics.
pub struct Metrics {
    registry: Registry,
    /// Requests by endpoint and outcome.
    pub requests: Family<RequestLabels, Counter>,
    /// Latency by endpoint.
    pub latency: Family<EndpointLabels, Histogram, fn() -> Histogram>,
    /// 0 waiting for peers, 1 ceremony running, 2 keys active, 3 recovering a share, 4 stopped
    /// (a ceremony write failed, or the store could not be read), 5 retired.
    pub dkg_state: Gauge<i64, AtomicI64>,
    /// Ceremony writes that failed (each is retried before the node stops).
    pub persist_failures: Gauge<i64, AtomicI64>,
    /// Ceremony attempts that failed at this node.
    pub failed_attempts: Gauge<i64, AtomicI64>,
    /// Active epoch (0 before the first DKG).
    pub epoch: Gauge<i64, AtomicI64>,
    /// Entries in the audit log (its tree size).
    pub log_entries: Gauge<i64, AtomicI64>,
    /// Witnesses' co-signatures on the last published checkpoint (-1: none published yet).
    pub log_cosignatures: Gauge<i64, AtomicI64>,
    /// Connected roster peers.
    pub peers: Gauge<i64, AtomicI64>,
    /// Duration of the last successful DKG, seconds (0 if none ran in this process).
    pub dkg_seconds: Gauge<f64, AtomicU64>,
    /// Shares needed to use a key (the current committee's threshold).
    pub threshold: Gauge<i64, AtomicI64>,
    /// Members of the current committee.
    pub committee_size: Gauge<i64, AtomicI64>,
    /// 0 idle, 1 approving (a change awaits approvals), 2 running, 3 retired, 4 waiting to be
    /// added (a new node), 5 stopped.
    pub reshare_state: Gauge<i64, AtomicI64>,
    /// Approvals held for the most-approved change still short of them (0 if none).
    pub reshare_approvals: Gauge<i64, AtomicI64>,
    /// Open HTTP connections.
    pub http_connections: Gauge<i64, AtomicI64>,
    /// HTTP connections closed at once, by the limit that refused them.
    pub connections_refused: Family<ReasonLabels, Counter>,
    /// Failed fetches of the issuer's keys (`attestation.jwks_url`).
    pub jwks_failures: Counter,
    /// When the issuer's keys were last fetched, unix seconds (0: never, or a `jwks_file`).
    pub jwks_last_success: Gauge<i64, AtomicI64>,
    /// When each trust anchor the node holds expires, unix seconds.
    pub trust_expiry: Family<AnchorLabels, Gauge<i64, AtomicI64>>,
    /// Refusals by reason and the most recent ones, for the status page.
    pub refusals: crate::status_page::Refusals,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("kms");
        let requests = Family::<RequestLabels, Counter>::default();
        let latency =
            Family::<EndpointLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        let dkg_state = Gauge::default();
        let epoch = Gauge::default();
        let log_entries = Gauge::default();
        let log_cosignatures = Gauge::default();
        let peers = Gauge::default();
        let dkg_seconds = Gauge::<f64, AtomicU64>::default();
        let persist_failures = Gauge::default();
        let failed_attempts = Gauge::default();
        let (threshold, committee_size, reshare_state, reshare_approvals) =
            (Gauge::default(), Gauge::default(), Gauge::default(), Gauge::default());
        let http_connections = Gauge::default();
        let connections_refused = Family::<ReasonLabels, Counter>::default();
        let jwks_failures = Counter::default();
        let jwks_last_success = Gauge::default();
        let trust_expiry = Family::<AnchorLabels, Gauge<i64, AtomicI64>>::default();
        registry.register(
            "jwks_refresh_failures",
            "Failed fetches of the issuer's keys (attestation.jwks_url)",
            jwks_failures.clone(),
        );
        registry.register(
            "jwks_last_success_timestamp_seconds",
            "When the issuer's keys were last fetched, unix seconds (0: never, or a jwks_file)",
            jwks_last_success.clone(),
        );
        registry.register(
            "trust_expiry_timestamp_seconds",
            "When a trust anchor expires, unix seconds: the pinned root certificate (pki_root), the TDX collateral's next update (tdx_collateral)",
            trust_expiry.clone(),
        );
        registry.register("http_connections", "Open HTTP connections", http_connections.clone());
        registry.register(
            "http_connections_refused",
            "HTTP connections closed at once: limits.max_connections or limits.max_connections_per_ip",
            connections_refused.clone(),
        );
        registry.register("threshold", "Shares needed to use a key (current committee)", threshold.clone());
        registry.register("committee_size", "Members of the current committee", committee_size.clone());
        registry.register(
            "reshare_state",
            "0 idle, 1 approving, 2 running, 3 retired, 4 waiting to be added, 5 stopped",
            reshare_state.clone(),
        );
        registry.register(
            "reshare_approvals",
            "Approvals held for the most-approved roster change still short of them",
            reshare_approvals.clone(),
        );
        registry.register("requests", "HTTP requests by endpoint and outcome", requests.clone());
        registry.register("request_duration_seconds", "HTTP request latency", latency.clone());
        registry.register(
            "dkg_state",
            "0 waiting for peers, 1 ceremony running, 2 keys active, 3 recovering a share, 4 stopped, 5 retired",
            dkg_state.clone(),
        );
        registry.register(
            "dkg_persist_failures",
            "Ceremony writes that failed in this process (each retried before the node stops)",
            persist_failures.clone(),
        );
        registry.register(
            "dkg_failed_attempts",
            "Ceremony attempts that failed at this node",
            failed_attempts.clone(),
        );
        registry.register("epoch", "Active key epoch", epoch.clone());
        registry.register("log_entries", "Entries in the audit log", log_entries.clone());
        registry.register(
            "log_cosignatures",
            "Witnesses' co-signatures on the last published checkpoint (-1: none yet)",
            log_cosignatures.clone(),
        );
        registry.register("peers_connected", "Connected roster peers", peers.clone());
        registry.register(
            "dkg_duration_seconds",
            "Last successful DKG in this process, from start to keys active",
            dkg_seconds.clone(),
        );
        Metrics {
            registry,
            requests,
            latency,
            dkg_state,
            persist_failures,
            failed_attempts,
            epoch,
            log_entries,
            log_cosignatures,
            peers,
            dkg_seconds,
            threshold,
            committee_size,
            reshare_state,
            reshare_approvals,
            http_connections,
            connections_refused,
            jwks_failures,
            jwks_last_success,
            trust_expiry,
            refusals: crate::status_page::Refusals::default(),
        }
    }
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, endpoint: &str, outcome: &str, seconds: f64) {
        self.requests
            .get_or_create(&RequestLabels { endpoint: endpoint.into(), outcome: outcome.into() })
            .inc();
        self.latency.get_or_create(&EndpointLabels { endpoint: endpoint.into() }).observe(seconds);
        if outcome != "ok" {
            self.refusals.record(crate::http::unix_now(), endpoint, outcome);
        }
    }

    /// Sets when the trust anchor `anchor` expires (unix seconds).
    pub fn set_trust_expiry(&self, anchor: &str, at: u64) {
        let at = i64::try_from(at).unwrap_or(i64::MAX);
        self.trust_expiry.get_or_create(&AnchorLabels { anchor: anchor.into() }).set(at);
    }

    /// Brings the issuer-key metrics up to `failures` fetch failures in all and the last success.
    pub fn set_jwks(&self, failures: u64, last_success: u64) {
        self.jwks_failures.inc_by(failures.saturating_sub(self.jwks_failures.get()));
        self.jwks_last_success.set(i64::try_from(last_success).unwrap_or(i64::MAX));
    }

    /// Counts a connection refused by `reason` (the limit's name).
    pub fn connection_refused(&self, reason: &str) {
        self.connections_refused.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }

    /// Text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
