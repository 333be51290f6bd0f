//! Nodes witness each other's transparency logs (`docs/api.md` §2.1, decision 35).
//!
//! **As a log**, every [`CHECKPOINT_EVERY`] a node whose log grew signs a checkpoint of it and asks
//! each other committee member to co-sign it: it reads what the witness last co-signed of its log
//! (`GET /v1/log/witnessed`), sends the checkpoint with the consistency proof from that size
//! (`POST /v1/log/cosign`), checks the signature line it gets back, and keeps the checkpoint with
//! every co-signature as its published one (`GET /v1/log/cosigned`).
//!
//! **As a witness**, a node co-signs a member's checkpoint only if it is signed by that member's
//! identity key and extends what it co-signed of that log before (a consistency proof from the
//! old size that verifies against both roots). A checkpoint of the same size with another root is
//! equivocation: both signed texts are kept as evidence and shown by `GET /v1/log/witnessed`. The
//! new checkpoint is written before the co-signature leaves the node, so a witness never signs
//! two histories of one log.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use kms_proto::checkpoint::{origin, NoteSignature, SignedCheckpoint};
use kms_proto::cluster::identity_of_peer_id;
use kms_proto::merkle::{consistency_proof_in, verify_consistency};
use kms_proto::ErrorCode;

use crate::api_error::ApiError;
use crate::http::AppState;
use crate::jwks_source::read_limited;
use crate::service::KeyService;
use crate::state::Shared;
use crate::store::StoreError;

/// Largest answer read from a witness (at most three checkpoints of 16 KiB).
const MAX_WITNESS_ANSWER: usize = 64 << 10;

/// Serializes co-signing ([`cosign`]).
static COSIGNING: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// How often a node publishes a checkpoint of its log (when it grew, or when it lacks
/// co-signatures).
pub const CHECKPOINT_EVERY: Duration = Duration::from_secs(5);

/// `POST /v1/log/cosign`: a member's checkpoint and the consistency proof from the size this
/// witness last co-signed of its log.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CosignRequest {
    /// The signed checkpoint text (formats §15.3).
    pub checkpoint: String,
    /// Hex hashes: RFC 9162 `PROOF(old, new)` (empty when the witness co-signed nothing yet).
    pub proof: Vec<String>,
}

/// The answer: this witness's signature line for the checkpoint's body.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CosignResponse {
    /// The witness's key name (its own log's origin).
    pub name: String,
    /// Base64 of key id (4) ‖ Ed25519 signature (64), as on a signature line.
    pub signature: String,
}

/// What a witness holds of one log (`GET /v1/log/witnessed?origin=`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Witnessed {
    /// The origin asked about.
    pub origin: String,
    /// The last checkpoint of it this node co-signed (the log's signature only).
    pub checkpoint: Option<String>,
    /// Two checkpoints of one size with different roots, both signed by the log: proof that it
    /// equivocated.
    pub equivocation: Option<[String; 2]>,
}

fn log_inconsistent(reason: String) -> ApiError {
    ApiError::new(ErrorCode::LogInconsistent, reason)
}

/// The origin of this node's own log.
pub fn own_origin(keys: &KeyService) -> String {
    origin(&keys.cluster_id, &keys.identity.verifying_key())
}

/// Co-signs a member's checkpoint if it extends what this node co-signed of that log before.
pub fn cosign(keys: &KeyService, shared: &Shared, req: &CosignRequest) -> Result<CosignResponse, ApiError> {
    let malformed = |r: String| ApiError::new(ErrorCode::MalformedRequest, r);
    let signed = SignedCheckpoint::parse(&req.checkpoint).map_err(|e| malformed(e.to_string()))?;
    let name = signed.checkpoint.origin.clone();
    let own = own_origin(keys);
    let member_key = shared
        .membership()
        .members
        .iter()
        .filter_map(|m| identity_of_peer_id(&m.peer_id))
        .find(|k| origin(&keys.cluster_id, k) == name)
        .filter(|_| name != own)
        .ok_or_else(|| malformed(format!("{name} is not the log of another member of this committee")))?;
    signed.verify(&name, &member_key).map_err(|e| malformed(format!("checkpoint: {e}")))?;
    let proof: Vec<[u8; 32]> = req
        .proof
        .iter()
        .map(|h| kms_proto::hex_bytes::parse_hex(h))
        .collect::<Result<_, _>>()
        .map_err(|_| malformed("proof: hashes must be 64 lowercase hex characters".into()))?;
    let store = &keys.store;
    // One co-signing at a time: two concurrent forks of one log must not both pass the check
    // against the same held checkpoint.
    let _one = COSIGNING.lock().map_err(|_| ApiError::internal("co-signing lock poisoned"))?;
    let held = store.witnessed(&name).map_err(ApiError::internal)?;
    if let Some(before_text) = &held {
        let before = SignedCheckpoint::parse(before_text).map_err(ApiError::internal)?.checkpoint;
        let now = &signed.checkpoint;
        if now.size < before.size {
            return Err(log_inconsistent(format!(
                "size {} is below the {} this node co-signed of {name}",
                now.size, before.size
            )));
        }
        if now.size == before.size && now.root != before.root {
            store.put_equivocation(&name, before_text, &req.checkpoint).map_err(ApiError::internal)?;
            tracing::error!(log = %name, size = now.size, "a member signed two roots for one size: evidence kept");
            return Err(log_inconsistent(format!(
                "{name} signed another root for size {} before: equivocation, evidence kept",
                now.size
            )));
        }
        if now.size > before.size {
            verify_consistency(before.size, now.size, &proof, &before.root, &now.root).map_err(|e| {
                log_inconsistent(format!(
                    "consistency proof from {} to {} of {name}: {e}",
                    before.size, now.size
                ))
            })?;
        }
    }
    // Written (and flushed) before the co-signature leaves: a restart never co-signs a history
    // that does not extend this one.
    store.put_witnessed(&name, &req.checkpoint).map_err(ApiError::internal)?;
    store.durable(()).map_err(ApiError::internal)?;
    let line = signed.checkpoint.sign(&own, &keys.identity);
    Ok(CosignResponse { name: own, signature: line.encode_value() })
}

/// What this node holds of the log `name`.
pub fn witnessed(keys: &KeyService, name: &str) -> Result<Witnessed, StoreError> {
    Ok(Witnessed {
        origin: name.to_string(),
        checkpoint: keys.store.witnessed(name)?,
        equivocation: keys.store.equivocation(name)?,
    })
}

/// Entries pruned per round at most.
const PRUNE_BATCH: u64 = 10_000;

/// Publishes a co-signed checkpoint of this node's log every [`CHECKPOINT_EVERY`], when it grew,
/// and prunes entries the published checkpoint covers beyond the newest `keep_entries`.
pub async fn publish(state: Arc<AppState>, keep_entries: Option<u64>) {
    let Ok(client) = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .redirect(reqwest::redirect::Policy::none())
        .build()
    else {
        return;
    };
    let mut published = 0u64;
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        match publish_once(&state, &client, published).await {
            Ok(Some(size)) => published = size,
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "publishing a checkpoint failed"),
        }
        if let Some(keep) = keep_entries {
            let s = state.clone();
            match tokio::task::spawn_blocking(move || prune(&s.keys, &s.shared, keep)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::warn!(error = %e, "pruning the audit log failed"),
                Err(e) => tracing::warn!(error = %e, "pruning the audit log failed"),
            }
        }
    }
}

/// Whether the published checkpoint carries `f + 1` other members' co-signatures (`f` of the
/// committee: one in a committee of 2 to 4, none in a committee of one).
fn enough_witnesses(
    keys: &KeyService,
    members: &[(String, ed25519_dalek::VerifyingKey)],
) -> Result<bool, StoreError> {
    let Some(text) = keys.store.published()? else { return Ok(false) };
    let Ok(published) = SignedCheckpoint::parse(&text) else { return Ok(false) };
    let n = members.len() + 1;
    let needed = ((n - 1) / 3 + 1).min(n - 1);
    Ok(published.witnessed_by(members) >= needed)
}

/// The other members' log names and identity keys.
fn shared_members(keys: &KeyService, shared: &Shared) -> Vec<(String, ed25519_dalek::VerifyingKey)> {
    let me = shared.peer_id().to_string();
    shared
        .membership()
        .members
        .iter()
        .filter(|m| m.peer_id != me)
        .filter_map(|m| identity_of_peer_id(&m.peer_id))
        .map(|k| (origin(&keys.cluster_id, &k), k))
        .collect()
}

/// Prunes entries below both the published checkpoint's size and the newest `keep`.
fn prune(keys: &KeyService, shared: &Shared, keep: u64) -> Result<(), StoreError> {
    let Some(text) = keys.store.published()? else { return Ok(()) };
    let Ok(published) = SignedCheckpoint::parse(&text) else { return Ok(()) };
    // Only behind a checkpoint that f + 1 other members co-signed: at least one honest witness
    // holds it, so what is pruned stays provable.
    if !enough_witnesses(keys, &shared_members(keys, shared))? {
        return Ok(());
    }
    let below = published.checkpoint.size.min(keys.store.log_size()?.saturating_sub(keep));
    let pruned = keys.store.log_prune(below, PRUNE_BATCH)?;
    if pruned > 0 {
        tracing::info!(pruned, below, "audit log entries pruned behind the published checkpoint");
    }
    Ok(())
}

async fn publish_once(
    state: &Arc<AppState>,
    client: &reqwest::Client,
    published: u64,
) -> Result<Option<u64>, StoreError> {
    let (keys, shared) = (&state.keys, &state.shared);
    let size = keys.store.log_size()?;
    let members = shared_members(keys, shared);
    if size == 0 || (size == published && enough_witnesses(keys, &members)?) {
        return Ok(None);
    }
    // The flush before signing runs off the async workers.
    let s = state.clone();
    let text = tokio::task::spawn_blocking(move || s.keys.checkpoint(crate::http::unix_now()))
        .await
        .map_err(|e| StoreError::Backend(e.to_string()))??;
    let Ok(mut signed) = SignedCheckpoint::parse(&text) else { return Ok(None) };
    let own = own_origin(keys);
    let me = shared.peer_id().to_string();
    for m in shared.membership().members.iter().filter(|m| m.peer_id != me) {
        let Some(key) = identity_of_peer_id(&m.peer_id) else { continue };
        let base = m.http_url.trim_end_matches('/');
        match ask(client, base, &own, &text, signed.checkpoint.size, keys).await {
            Ok(line) => {
                let name = origin(&keys.cluster_id, &key);
                let named = line.name == name;
                signed.signatures.push(line);
                if !named || signed.verify(&name, &key).is_err() {
                    signed.signatures.pop();
                    tracing::warn!(witness = m.index, "a witness's co-signature does not verify");
                }
            }
            Err(e) => tracing::debug!(witness = m.index, error = %e, "no co-signature"),
        }
    }
    keys.store.put_published(&signed.to_text())?;
    Ok(Some(size))
}

/// Asks the witness at `base` to co-sign `text`, this node's signed checkpoint of `size`
/// entries of its log `own`.
async fn ask(
    client: &reqwest::Client,
    base: &str,
    own: &str,
    text: &str,
    size: u64,
    keys: &KeyService,
) -> Result<NoteSignature, String> {
    let url = format!("{base}/v1/log/witnessed?origin={own}");
    let r = client.get(&url).send().await.map_err(|e| e.to_string())?;
    if !r.status().is_success() {
        return Err(format!("{url}: status {}", r.status()));
    }
    let bytes = read_limited(r, MAX_WITNESS_ANSWER)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the witness's answer is too large")?;
    let held: Witnessed = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    let old = match held.checkpoint.as_deref().map(SignedCheckpoint::parse) {
        Some(Ok(c)) => c.checkpoint.size,
        _ => 0,
    };
    let proof = consistency_proof_in(&keys.store.log_tree(), old, size)
        .map_err(|e| e.to_string())?
        .ok_or("the witness holds a larger checkpoint than the log")?;
    let body = CosignRequest { checkpoint: text.to_string(), proof: proof.iter().map(hex::encode).collect() };
    let body = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let r = client
        .post(format!("{base}/v1/log/cosign"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = r.status();
    let bytes = read_limited(r, MAX_WITNESS_ANSWER)
        .await
        .map_err(|e| e.to_string())?
        .ok_or("the witness's answer is too large")?;
    if !status.is_success() {
        return Err(format!("status {status}: {}", String::from_utf8_lossy(&bytes)));
    }
    let c: CosignResponse = serde_json::from_slice(&bytes).map_err(|e| e.to_string())?;
    NoteSignature::decode_value(&c.name, &c.signature).map_err(|e| e.to_string())
}
