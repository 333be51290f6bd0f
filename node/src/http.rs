//! The HTTP API (reference: `docs/api.md`). Every refusal is JSON `{"code", "reason"}` with a
//! stable code; internals never leak.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::Deserialize;
use tokio::sync::Semaphore;

use kms_proto::api::{ErrorBody, HealthBody, ReadyBody};
use kms_proto::app::{AppId, SignedManifest};
use kms_proto::codec::{decode_json, encode_json, JsonDocument};
use kms_proto::merkle::Subtrees;
use kms_proto::ErrorCode;

use crate::api_error::ApiError;
use crate::apps::Apps;
use crate::metrics::Metrics;
use crate::service::{decode_error, KeyService};
use crate::state::Shared;
use crate::store::NodeStore;

/// Shared state of the handlers.
pub struct AppState {
    /// Key requests.
    pub keys: KeyService,
    /// Manifests.
    pub apps: Arc<Apps>,
    /// Store (audit log, descriptor).
    pub store: Arc<NodeStore>,
    /// DKG state.
    pub shared: Arc<Shared>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Roster changes.
    pub reshares: Arc<crate::reshare::Reshares>,
    /// This node's evidence about itself.
    pub evidence: Arc<crate::evidence::OwnEvidence>,
    /// Peers' evidence.
    pub peer_gate: Arc<crate::evidence::PeerGate>,
    /// Request bodies above this are refused.
    pub max_body: usize,
    /// A request body must arrive within this.
    pub body_timeout: Duration,
    /// Requests in flight.
    pub inflight: Arc<Semaphore>,
    /// Per-source token buckets.
    pub limiter: RateLimiter,
}

/// Unix seconds now.
pub fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

fn json<T: JsonDocument>(status: StatusCode, body: &T) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], encode_json(body)).into_response()
}

/// The answer to a request framed by both `Content-Length` and `Transfer-Encoding`
/// (`serve.rs`, `framing.rs`); hyper closes the connection after it.
pub fn framing_refusal() -> Response {
    let mut r = refusal(&ApiError::new(
        ErrorCode::MalformedRequest,
        "request framed by both Content-Length and Transfer-Encoding",
    ));
    r.headers_mut().insert(header::CONNECTION, header::HeaderValue::from_static("close"));
    r
}

fn refusal(e: &ApiError) -> Response {
    let status = StatusCode::from_u16(e.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    json(status, &ErrorBody::new(e.code, e.reason.clone()))
}

/// A token bucket per source IP.
pub struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    /// `rate` tokens per second, at most `burst` saved.
    pub fn new(rate: u32, burst: u32) -> Self {
        RateLimiter {
            rate: f64::from(rate),
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn allow(&self, ip: IpAddr) -> bool {
        let Ok(mut b) = self.buckets.lock() else { return false };
        if b.len() > 100_000 {
            // Bound memory under a flood of sources: forget everyone (they start full again).
            b.clear();
        }
        let now = Instant::now();
        let (tokens, last) = b.entry(ip).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Builds the router.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/health", get(health))
        .route("/v1/ready", get(ready))
        .route("/v1/cluster", get(cluster))
        .route("/v1/keys", post(keys))
        .route("/v1/apps", post(post_app))
        .route("/v1/apps/{app_id}", get(get_app))
        .route("/v1/lease", post(lease))
        .route("/v1/lease/{app_id}", get(lease_status))
        .route("/v1/audit", get(audit))
        .route("/v1/log/checkpoint", get(log_checkpoint))
        .route("/v1/log/inclusion", get(log_inclusion))
        .route("/v1/log/consistency", get(log_consistency))
        .route("/v1/log/cosigned", get(log_cosigned))
        .route("/v1/log/witnessed", get(log_witnessed))
        .route("/v1/log/cosign", post(log_cosign))
        .route("/v1/reshare", get(reshare_status).post(reshare_offer))
        .route("/v1/attestation", get(attestation))
        .route("/v1/attestation/peers", get(attestation_peers))
        .route("/metrics", get(metrics))
        .route("/", get(status_page))
        .fallback(|| async { refusal(&ApiError::new(ErrorCode::MalformedRequest, "no such endpoint")) })
        .with_state(state)
}

/// Reads the body, at most `max_body` bytes within `body_timeout`. No concurrency permit is
/// held meanwhile: a slow sender holds its connection only (bounded in `serve.rs`).
async fn read_body(state: &AppState, body: Body) -> Result<Bytes, ApiError> {
    match tokio::time::timeout(state.body_timeout, axum::body::to_bytes(body, state.max_body)).await {
        Ok(Ok(bytes)) => Ok(bytes),
        Ok(Err(_)) => Err(ApiError::new(
            ErrorCode::BodyTooLarge,
            format!("request body exceeds {} bytes", state.max_body),
        )),
        Err(_) => Err(ApiError::new(
            ErrorCode::BodyTimeout,
            format!("request body not received within {} ms", state.body_timeout.as_millis()),
        )),
    }
}

/// Admission, first step: the rate limit per source.
fn rate_limit(state: &AppState, peer: SocketAddr) -> Result<(), ApiError> {
    if state.limiter.allow(peer.ip()) {
        Ok(())
    } else {
        Err(ApiError::new(ErrorCode::RateLimited, "too many requests from this source"))
    }
}

/// Admission, second step (after the body arrived): a concurrency permit, refused at once when
/// none is free.
fn permit(state: &AppState) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    state
        .inflight
        .clone()
        .try_acquire_owned()
        .map_err(|_| ApiError::new(ErrorCode::RateLimited, "the node is at its concurrency limit"))
}

/// Admission of a request with a body: rate limit, then the body (no permit held while it
/// arrives), then a permit.
async fn admit_body(
    state: &AppState,
    peer: SocketAddr,
    body: Body,
) -> Result<(Bytes, tokio::sync::OwnedSemaphorePermit), ApiError> {
    rate_limit(state, peer)?;
    let bytes = read_body(state, body).await?;
    Ok((bytes, permit(state)?))
}

/// Admission of a request without a body: rate limit, then a permit.
fn admit(state: &AppState, peer: SocketAddr) -> Result<tokio::sync::OwnedSemaphorePermit, ApiError> {
    rate_limit(state, peer)?;
    permit(state)
}

fn finish(state: &AppState, endpoint: &str, started: Instant, r: Result<Response, ApiError>) -> Response {
    let (outcome, resp) = match r {
        Ok(resp) => ("ok".to_string(), resp),
        Err(e) => (e.code.as_str().to_string(), refusal(&e)),
    };
    state.metrics.observe(endpoint, &outcome, started.elapsed().as_secs_f64());
    resp
}

async fn health(State(s): State<Arc<AppState>>) -> Response {
    json(StatusCode::OK, &HealthBody { version: 1, node_index: s.shared.me().unwrap_or(0) })
}

async fn ready(State(s): State<Arc<AppState>>) -> Response {
    let epoch = s.shared.active().map(|k| k.epoch);
    let status = if epoch.is_some() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    json(status, &ReadyBody { version: 1, ready: epoch.is_some(), epoch })
}

async fn cluster(State(s): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let keys =
            s.shared.active().ok_or_else(|| ApiError::new(ErrorCode::NotReady, "no active key yet"))?;
        let doc =
            s.store.get_public("descriptor", keys.epoch).map_err(ApiError::internal)?.ok_or_else(|| {
                ApiError::new(ErrorCode::NotReady, "the cluster descriptor is not signed yet")
            })?;
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], doc).into_response())
    })();
    finish(&s, "/v1/cluster", started, r)
}

async fn keys(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        let (bytes, _permit) = admit_body(&s, peer, body).await?;
        let now = unix_now();
        // The evidence's signatures and the partial key are CPU work: off the async workers.
        let prepared = s.keys.prepare(&bytes, now).await?;
        let state = s.clone();
        // The clock read again when the release is decided (a lease must still be valid then).
        let resp = tokio::task::spawn_blocking(move || state.keys.release(prepared, unix_now().max(now)))
            .await
            .map_err(ApiError::internal)??;
        Ok(json(StatusCode::OK, &resp.into_inner()))
    }
    .await;
    finish(&s, "/v1/keys", started, r)
}

async fn post_app(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        let (bytes, _permit) = admit_body(&s, peer, body).await?;
        let m: SignedManifest = decode_json(&bytes).map_err(decode_error)?;
        let offer = s.apps.offer(&m, true)?;
        let body = serde_json::json!({
            "app_id": m.manifest.app_id,
            "seq": m.manifest.seq,
            "status": match offer { crate::apps::Offer::Accepted => "accepted", crate::apps::Offer::AlreadyHeld => "already_held" },
        });
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], body.to_string()).into_response())
    }
    .await;
    finish(&s, "/v1/apps", started, r)
}

async fn lease(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        let (bytes, _permit) = admit_body(&s, peer, body).await?;
        // Signatures, evidence and a flush: off the async workers; the clock is read there,
        // when the request is decided.
        let state = s.clone();
        let grant = tokio::task::spawn_blocking(move || state.keys.lease(&bytes, unix_now()))
            .await
            .map_err(ApiError::internal)??;
        Ok(json(StatusCode::OK, &grant.into_inner()))
    }
    .await;
    finish(&s, "/v1/lease", started, r)
}

async fn lease_status(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(app_id): Path<String>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let app = parse_app_id(&app_id)?;
        Ok(json(StatusCode::OK, &s.keys.lease_status(&app, unix_now())?))
    })();
    finish(&s, "/v1/lease/{app_id}", started, r)
}

fn parse_app_id(s: &str) -> Result<AppId, ApiError> {
    s.parse()
        .map_err(|_| ApiError::new(ErrorCode::MalformedRequest, "app_id must be 64 lowercase hex characters"))
}

async fn get_app(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(app_id): Path<String>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let app = parse_app_id(&app_id)?;
        let m = s
            .apps
            .get(&app)?
            .ok_or_else(|| ApiError::new(ErrorCode::UnknownApp, format!("no manifest for {app}")))?;
        Ok(json(StatusCode::OK, &m))
    })();
    finish(&s, "/v1/apps/{app_id}", started, r)
}

async fn attestation(State(s): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let started = Instant::now();
    let r = async {
        // Rate-limited like every endpoint, but taking no concurrency permit: while evidence is
        // made (up to the provider's timeout) callers wait on it, and key requests never wait
        // behind them.
        rate_limit(&s, peer)?;
        let ev = s.evidence.current().await.map_err(|r| ApiError::new(ErrorCode::EvidenceUnavailable, r))?;
        Ok(json(StatusCode::OK, &*ev))
    }
    .await;
    finish(&s, "/v1/attestation", started, r)
}

async fn attestation_peers(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let started = Instant::now();
    let r = admit(&s, peer).map(|_permit| json(StatusCode::OK, &s.peer_gate.report(unix_now())));
    finish(&s, "/v1/attestation/peers", started, r)
}

async fn reshare_status(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let started = Instant::now();
    let r = admit(&s, peer).and_then(|_permit| s.reshares.status()).map(|b| json(StatusCode::OK, &b));
    finish(&s, "/v1/reshare", started, r)
}

async fn reshare_offer(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        let (bytes, _permit) = admit_body(&s, peer, body).await?;
        let offered: kms_proto::reshare::AuthorizedChange = decode_json(&bytes).map_err(decode_error)?;
        let status = s.reshares.offer(offered, true)?;
        Ok(json(StatusCode::OK, &status))
    }
    .await;
    finish(&s, "/v1/reshare", started, r)
}

/// Most entries in one page of `/v1/audit`.
pub const MAX_AUDIT_PAGE: usize = 1000;

#[derive(Deserialize)]
struct AuditQuery {
    app_id: Option<String>,
    start: Option<String>,
    limit: Option<String>,
}

/// A decimal query parameter; `default` when absent.
fn number(name: &str, value: Option<&str>, default: u64) -> Result<u64, ApiError> {
    match value {
        None => Ok(default),
        Some(v) => v.parse().map_err(|_| {
            ApiError::new(ErrorCode::MalformedRequest, format!("{name} must be a decimal number"))
        }),
    }
}

fn json_value(v: &serde_json::Value) -> Response {
    (StatusCode::OK, [(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
}

fn hex_list(proof: &[kms_proto::merkle::Hash]) -> Vec<String> {
    proof.iter().map(hex::encode).collect()
}

async fn audit(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<AuditQuery>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let app = parse_app_id(q.app_id.as_deref().unwrap_or(""))?;
        let start = number("start", q.start.as_deref(), 0)?;
        let limit = number("limit", q.limit.as_deref(), MAX_AUDIT_PAGE as u64)?;
        if limit == 0 || limit > MAX_AUDIT_PAGE as u64 {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("limit must be between 1 and {MAX_AUDIT_PAGE}"),
            ));
        }
        // One more than asked for says whether a next page exists.
        let mut entries =
            s.store.audit_page_encoded(&app, start, limit as usize + 1).map_err(ApiError::internal)?;
        let next = (entries.len() > limit as usize).then(|| entries.pop().map(|(e, _)| e.id)).flatten();
        let entries: Vec<serde_json::Value> = entries
            .into_iter()
            .map(|(e, bytes)| {
                let mut v = serde_json::to_value(&e).unwrap_or_default();
                v["leaf_hash"] = hex::encode(kms_proto::merkle::leaf_hash(&bytes)).into();
                v["entry"] = hex::encode(&bytes).into();
                v
            })
            .collect();
        Ok(json_value(&serde_json::json!({ "app_id": app, "entries": entries, "next": next })))
    })();
    finish(&s, "/v1/audit", started, r)
}

/// `GET /v1/log/checkpoint`: the log's current size and root, signed now by this node's
/// identity key, once every entry it covers is on disk.
async fn log_checkpoint(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let started = Instant::now();
    let r = async {
        let _permit = admit(&s, peer)?;
        // The flush before signing runs off the async workers.
        let state = s.clone();
        let text = tokio::task::spawn_blocking(move || state.keys.checkpoint(unix_now()))
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::internal)?;
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
    }
    .await;
    finish(&s, "/v1/log/checkpoint", started, r)
}

#[derive(Deserialize)]
struct InclusionQuery {
    index: Option<String>,
    hash: Option<String>,
    binding: Option<String>,
    size: Option<String>,
}

/// `GET /v1/log/inclusion?index=I|hash=H|binding=B[&size=N]`: the inclusion proof of an entry
/// (by index, leaf hash, or the release of the request with that binding) in the tree of the
/// first `N` entries (default: all).
async fn log_inclusion(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<InclusionQuery>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let current = s.store.log_size().map_err(ApiError::internal)?;
        let size = log_size_param("size", q.size.as_deref(), current)?;
        let hex32 = |name: &str, h: &str| {
            kms_proto::hex_bytes::parse_hex::<32>(h).map_err(|_| {
                ApiError::new(
                    ErrorCode::MalformedRequest,
                    format!("{name} must be 64 lowercase hex characters"),
                )
            })
        };
        let index = match (q.index.as_deref(), q.hash.as_deref(), q.binding.as_deref()) {
            (Some(i), None, None) => number("index", Some(i), 0)?,
            (None, Some(h), None) => {
                s.store.log_index_of(&hex32("hash", h)?).map_err(ApiError::internal)?.ok_or_else(|| {
                    ApiError::new(ErrorCode::LogEntryNotFound, "no entry of this log has that leaf hash")
                })?
            }
            (None, None, Some(b)) => {
                s.store.log_release_of(&hex32("binding", b)?).map_err(ApiError::internal)?.ok_or_else(
                    || {
                        ApiError::new(
                            ErrorCode::LogEntryNotFound,
                            "this log holds no release of a request with that binding",
                        )
                    },
                )?
            }
            _ => {
                return Err(ApiError::new(
                    ErrorCode::MalformedRequest,
                    "give exactly one of index, hash and binding",
                ))
            }
        };
        if index >= size {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("index {index} is not in the tree of {size} entries"),
            ));
        }
        let proof = kms_proto::merkle::inclusion_proof_in(&s.store.log_tree(), size, index)
            .map_err(ApiError::internal)?
            .unwrap_or_default();
        // A pruned entry keeps its place in the tree: its leaf hash is still stored.
        let entry = s.store.log_entry(index).map_err(ApiError::internal)?;
        let leaf = match &entry {
            Some(bytes) => kms_proto::merkle::leaf_hash(bytes),
            None => s.store.log_tree().perfect(index, 1).map_err(ApiError::internal)?,
        };
        Ok(json_value(&serde_json::json!({
            "index": index,
            "size": size,
            "leaf_hash": hex::encode(leaf),
            "entry": entry.map(hex::encode),
            "proof": hex_list(&proof),
        })))
    })();
    finish(&s, "/v1/log/inclusion", started, r)
}

/// `GET /v1/log/cosigned`: this node's last published checkpoint with its witnesses'
/// co-signatures (`witness.rs`).
async fn log_cosigned(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let text = s.store.published().map_err(ApiError::internal)?.ok_or_else(|| {
            ApiError::new(ErrorCode::NotReady, "no checkpoint of this log has been published yet")
        })?;
        Ok((StatusCode::OK, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response())
    })();
    finish(&s, "/v1/log/cosigned", started, r)
}

#[derive(Deserialize)]
struct WitnessedQuery {
    origin: Option<String>,
}

/// `GET /v1/log/witnessed?origin=O`: what this node co-signed of the log `O`, and any evidence
/// that it equivocated.
async fn log_witnessed(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<WitnessedQuery>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let origin =
            q.origin.filter(|o| !o.is_empty() && o.len() <= kms_proto::checkpoint::MAX_NAME_LEN).ok_or_else(
                || ApiError::new(ErrorCode::MalformedRequest, "origin is required and at most 256 bytes"),
            )?;
        let held = crate::witness::witnessed(&s.keys, &origin).map_err(ApiError::internal)?;
        Ok(json_value(&serde_json::to_value(&held).map_err(ApiError::internal)?))
    })();
    finish(&s, "/v1/log/witnessed", started, r)
}

/// `POST /v1/log/cosign`: co-sign another member's checkpoint as a witness (`witness.rs`).
async fn log_cosign(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    body: Body,
) -> Response {
    let started = Instant::now();
    let r = async {
        let (bytes, _permit) = admit_body(&s, peer, body).await?;
        let req: crate::witness::CosignRequest = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::new(ErrorCode::MalformedRequest, format!("cosign request: {e}")))?;
        // The check and the flush before signing run off the async workers.
        let state = s.clone();
        let answer =
            tokio::task::spawn_blocking(move || crate::witness::cosign(&state.keys, &state.shared, &req))
                .await
                .map_err(ApiError::internal)??;
        Ok(json_value(&serde_json::to_value(&answer).map_err(ApiError::internal)?))
    }
    .await;
    finish(&s, "/v1/log/cosign", started, r)
}

/// A tree size parameter: at most the log's `current` size (its default).
fn log_size_param(name: &str, value: Option<&str>, current: u64) -> Result<u64, ApiError> {
    let size = number(name, value, current)?;
    if size > current {
        return Err(ApiError::new(
            ErrorCode::MalformedRequest,
            format!("{name} {size} is beyond the log's {current} entries"),
        ));
    }
    Ok(size)
}

#[derive(Deserialize)]
struct ConsistencyQuery {
    first: Option<String>,
    second: Option<String>,
}

/// `GET /v1/log/consistency?first=M[&second=N]`: the proof that the tree of `M` entries is a
/// prefix of the tree of `N` (default: all).
async fn log_consistency(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Query(q): Query<ConsistencyQuery>,
) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let current = s.store.log_size().map_err(ApiError::internal)?;
        let second = log_size_param("second", q.second.as_deref(), current)?;
        let Some(first) = q.first.as_deref() else {
            return Err(ApiError::new(ErrorCode::MalformedRequest, "first is required"));
        };
        let first = number("first", Some(first), 0)?;
        if first > second {
            return Err(ApiError::new(
                ErrorCode::MalformedRequest,
                format!("first {first} is beyond second {second}"),
            ));
        }
        let proof = kms_proto::merkle::consistency_proof_in(&s.store.log_tree(), first, second)
            .map_err(ApiError::internal)?
            .unwrap_or_default();
        Ok(json_value(&serde_json::json!({ "first": first, "second": second, "proof": hex_list(&proof) })))
    })();
    finish(&s, "/v1/log/consistency", started, r)
}

/// `GET /`: the status page for a person (`status_page.rs`), under the same limits as every
/// other read.
async fn status_page(State(s): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let started = Instant::now();
    let r = (|| {
        let _permit = admit(&s, peer)?;
        let page = crate::status_page::render(&s, unix_now());
        Ok((
            StatusCode::OK,
            [
                (header::CONTENT_TYPE, "text/html; charset=utf-8"),
                // Inline style only: no script, no other origin, no framing.
                (
                    header::CONTENT_SECURITY_POLICY,
                    "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
                ),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
                (header::CACHE_CONTROL, "no-store"),
            ],
            page,
        )
            .into_response())
    })();
    finish(&s, "/", started, r)
}

async fn metrics(State(s): State<Arc<AppState>>, ConnectInfo(peer): ConnectInfo<SocketAddr>) -> Response {
    let _permit = match admit(&s, peer) {
        Ok(p) => p,
        Err(e) => return refusal(&e),
    };
    let status = s.shared.status();
    s.metrics.dkg_state.set(status.gauge());
    let epoch = s.shared.active().map_or(0, |k| k.epoch);
    s.metrics.epoch.set(i64::try_from(epoch).unwrap_or(i64::MAX));
    s.metrics.log_entries.set(s.store.log_size().map_or(0, |n| i64::try_from(n).unwrap_or(i64::MAX)));
    let cosignatures = match s.store.published() {
        Ok(Some(text)) => kms_proto::checkpoint::SignedCheckpoint::parse(&text)
            .map_or(-1, |c| i64::try_from(c.signatures.len().saturating_sub(1)).unwrap_or(i64::MAX)),
        _ => -1,
    };
    s.metrics.log_cosignatures.set(cosignatures);
    s.metrics
        .persist_failures
        .set(s.shared.persist_failures.load(std::sync::atomic::Ordering::Relaxed) as i64);
    s.metrics.failed_attempts.set(s.shared.failed_attempts.load(std::sync::atomic::Ordering::Relaxed) as i64);
    s.metrics.peers.set(s.shared.connected.read().map(|c| c.len() as i64).unwrap_or(0));
    s.metrics.set_jwks(s.keys.jwks.failures(), s.keys.jwks.last_success());
    if let Some(d) = s.shared.dkg_duration.read().ok().and_then(|d| *d) {
        s.metrics.dkg_seconds.set(d.as_secs_f64());
    }
    if let Ok(r) = s.reshares.status() {
        s.metrics.threshold.set(i64::from(r.threshold));
        s.metrics.committee_size.set(i64::from(r.members));
        let state = match r.state.as_str() {
            "approving" => 1,
            "running" => 2,
            "retired" => 3,
            "waiting" => 4,
            "stopped" => 5,
            _ => 0,
        };
        s.metrics.reshare_state.set(state);
        let most = r.proposals.iter().map(|p| p.approved_by.len()).max().unwrap_or(0);
        s.metrics.reshare_approvals.set(i64::try_from(most).unwrap_or(i64::MAX));
    }
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        s.metrics.encode(),
    )
        .into_response()
}

/// Time given to in-flight requests on shutdown.
pub fn drain_timeout(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

/// A minimal blocking HTTP/1.1 GET against a local node (for `kms-node status` and tests):
/// returns the body. No TLS, no redirects.
pub fn get_local(addr: SocketAddr, path: &str) -> std::io::Result<String> {
    local_request(addr, "GET", path, None).map(|(_, body)| body)
}

/// A minimal blocking HTTP/1.1 request against a local node (for `kms-node` subcommands):
/// returns the status code and the body. No TLS, no redirects.
pub fn local_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let body = body.unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )?;
    s.write_all(body)?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (head, body) = out.split_once("\r\n\r\n").unwrap_or((out.as_str(), ""));
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    Ok((code, body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limiter_allows_the_burst_then_refuses_per_source() {
        let l = RateLimiter::new(1, 3);
        let a: IpAddr = [10, 0, 0, 1].into();
        let b: IpAddr = [10, 0, 0, 2].into();
        assert!((0..3).all(|_| l.allow(a)));
        assert!(!l.allow(a), "burst exhausted");
        assert!(l.allow(b), "another source has its own bucket");
        std::thread::sleep(Duration::from_millis(1100));
        assert!(l.allow(a), "refilled at the sustained rate");
        assert!(!l.allow(a));
    }
}
