//! Where the node gets the OIDC issuer's signing keys: a JWKS file, or an HTTPS URL fetched at
//! start, refreshed hourly, and re-fetched when a token names an unknown `kid` — at most once per
//! [`REFETCH_INTERVAL_SECS`] whatever the outcome, so random `kid`s cannot make the node hammer
//! the issuer.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use tracing::{info, warn};

use kms_proto::api::Evidence;
use kms_proto::attestation::{Jwks, JwksCache};

/// Least time between two fetches triggered by unknown `kid`s.
pub const REFETCH_INTERVAL_SECS: u64 = 60;
/// Routine refresh period of a URL source.
pub const REFRESH_PERIOD: Duration = Duration::from_secs(3600);
/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 256 << 10;

/// The JWKS in use and, for a URL source, how to fetch it again.
pub struct JwksSource {
    cache: RwLock<JwksCache>,
    url: Option<String>,
    client: Option<reqwest::Client>,
    fetching: tokio::sync::Mutex<()>,
    /// Fetches that failed (metrics: `kms_jwks_refresh_failures_total`).
    failures: AtomicU64,
    /// When a fetch last succeeded, unix seconds; 0 if never (and for a file source).
    last_success: AtomicU64,
}

/// Checks a JWKS URL: HTTPS, or HTTP to a loopback host (tests and local development only).
pub fn check_url(url: &str) -> Result<(), String> {
    let loopback =
        ["http://127.0.0.1:", "http://127.0.0.1/", "http://localhost:", "http://localhost/", "http://[::1]:"];
    if url.starts_with("https://") || loopback.iter().any(|p| url.starts_with(p)) {
        Ok(())
    } else {
        Err("must be an https:// URL (plain http is allowed only to 127.0.0.1 / localhost)".into())
    }
}

impl JwksSource {
    /// A fixed key set (from a file, or empty).
    pub fn fixed(jwks: Jwks) -> Self {
        JwksSource {
            cache: RwLock::new(JwksCache::new(jwks, REFETCH_INTERVAL_SECS)),
            url: None,
            client: None,
            fetching: tokio::sync::Mutex::new(()),
            failures: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
        }
    }

    /// A URL source, starting from `initial` keys (usually empty until [`JwksSource::refresh`]).
    pub fn url(url: String, initial: Jwks) -> Result<Self, String> {
        check_url(&url)?;
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| e.to_string())?;
        Ok(JwksSource {
            cache: RwLock::new(JwksCache::new(initial, REFETCH_INTERVAL_SECS)),
            url: Some(url),
            client: Some(client),
            fetching: tokio::sync::Mutex::new(()),
            failures: AtomicU64::new(0),
            last_success: AtomicU64::new(0),
        })
    }

    /// Runs `f` with the current keys.
    pub fn with<T>(&self, f: impl FnOnce(&Jwks) -> T) -> T {
        match self.cache.read() {
            Ok(c) => f(c.jwks()),
            Err(_) => f(&Jwks::default()),
        }
    }

    /// Fetches of the URL that failed since the start.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// When a fetch of the URL last succeeded (unix seconds), 0 if none did (or for a file).
    pub fn last_success(&self) -> u64 {
        self.last_success.load(Ordering::Relaxed)
    }

    /// Counts a fetch's outcome for the metrics.
    fn record(&self, ok: bool, now: u64) {
        if ok {
            self.last_success.fetch_max(now, Ordering::Relaxed);
        } else {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn knows(&self, kid: &str) -> bool {
        self.with(|j| j.contains(kid))
    }

    async fn fetch(&self) -> Result<Jwks, String> {
        let (Some(url), Some(client)) = (&self.url, &self.client) else { return Err("no JWKS URL".into()) };
        let resp = client.get(url).send().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("GET {url}: status {}", resp.status()));
        }
        let body = read_limited(resp, MAX_JWKS_BYTES)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?
            .ok_or_else(|| format!("GET {url}: JWKS larger than {MAX_JWKS_BYTES} bytes"))?;
        Jwks::from_json(&body).map_err(|e| format!("GET {url}: {e}"))
    }

    /// Fetches now (start-up and periodic refresh), counting toward the rate limit.
    pub async fn refresh(&self, now: u64) {
        if self.url.is_none() {
            return;
        }
        let _one = self.fetching.lock().await;
        let fetched = self.fetch().await;
        self.record(fetched.is_ok(), now);
        match fetched {
            Ok(jwks) => {
                info!(keys = jwks.len(), "JWKS fetched");
                if let Ok(mut c) = self.cache.write() {
                    c.install(jwks, now);
                }
            }
            Err(e) => warn!(error = %e, "JWKS fetch failed; keeping the keys held"),
        }
    }

    /// For evidence about to be verified: an OIDC token naming a key not held may mean the
    /// issuer rotated its keys, so [`JwksSource::ensure_kid`] its `kid` (rate-limited). PKI
    /// tokens (`x5c`) carry their own chain; TDX quotes need no JWKS.
    pub async fn ensure_for(&self, evidence: &Evidence, now: u64) {
        let Evidence::ConfidentialSpace { token } = evidence else { return };
        if let Ok(header) = jsonwebtoken::decode_header(token) {
            if let (Some(kid), None) = (&header.kid, &header.x5c) {
                if kid.len() <= 256 {
                    self.ensure_kid(kid, now).await;
                }
            }
        }
    }

    /// Makes sure `kid` is known, re-fetching once if the rate limit allows. Returns whether
    /// it is known afterwards.
    pub async fn ensure_kid(&self, kid: &str, now: u64) -> bool {
        if self.knows(kid) || self.url.is_none() {
            return self.knows(kid);
        }
        let _one = self.fetching.lock().await;
        // Another request may have fetched while we waited.
        if self.knows(kid) {
            return true;
        }
        let allowed = self.cache.write().map(|mut c| c.begin_refetch(now)).unwrap_or(false);
        if !allowed {
            return false;
        }
        let fetched = self.fetch().await;
        self.record(fetched.is_ok(), now);
        match fetched {
            Ok(jwks) => {
                info!(keys = jwks.len(), kid, "JWKS re-fetched for an unknown kid");
                if let Ok(mut c) = self.cache.write() {
                    c.install(jwks, now);
                }
            }
            Err(e) => warn!(error = %e, "JWKS re-fetch failed"),
        }
        self.knows(kid)
    }
}

/// Reads a body chunk by chunk, giving up (`Ok(None)`) past `max` bytes, rather than buffer
/// whatever a remote server sends (the issuer's keys, a witness's answers).
pub(crate) async fn read_limited(
    mut resp: reqwest::Response,
    max: usize,
) -> Result<Option<Vec<u8>>, reqwest::Error> {
    let mut out = Vec::new();
    while let Some(chunk) = resp.chunk().await? {
        if out.len() + chunk.len() > max {
            return Ok(None);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(Some(out))
}
