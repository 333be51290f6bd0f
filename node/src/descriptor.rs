//! The cluster descriptor (epoch, roster, t, MPK, VKs), signed by the cluster with FROST so any
//! Ed25519 verifier can check it under the group key.
//!
//! Once keys are active, the lowest-indexed reachable node coordinates: it asks t − 1 peers for
//! FROST round-1 commitments over the digest of the descriptor it built, sends them the signing
//! package, aggregates their shares, verifies the signature, stores the signed descriptor and
//! gossips it. Every participant checks that the descriptor is exactly the one it builds from
//! its own keys and configuration before committing or signing, and never reuses nonces (they
//! are kept only under their own commitment and removed when used).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use frost_ed25519 as frost;
use rand_core::OsRng;
use sha2::{Digest, Sha256};
use tracing::{info, warn};

use kms_dkg::{Bls12381G2, Ed25519, Suite};
use kms_proto::cluster::{ClusterDescriptor, NodeEntry, SignedClusterDescriptor, CLUSTER_VERSION};
use kms_proto::codec::{decode_json, encode_json};
use kms_proto::p2p::{NodeRequest, NodeResponse, RequestBody, ResponseBody};
use kms_proto::HexBytes;

use crate::p2p::P2pHandle;
use crate::state::Shared;
use crate::store::{ActiveKeys, NodeStore};

/// Builds descriptors and takes part in signing them.
pub struct DescriptorSigner {
    /// Cluster id.
    pub cluster_id: [u8; 32],
    /// Store.
    pub store: Arc<NodeStore>,
    /// Active keys and peers.
    pub shared: Arc<Shared>,
    /// Network.
    pub p2p: P2pHandle,
    nonces: Mutex<HashMap<Vec<u8>, frost::round1::SigningNonces>>,
}

fn refused(why: impl Into<String>) -> NodeResponse {
    NodeResponse::new(ResponseBody::Refused(why.into()))
}

impl DescriptorSigner {
    /// A signer.
    pub fn new(cluster_id: [u8; 32], store: Arc<NodeStore>, shared: Arc<Shared>, p2p: P2pHandle) -> Self {
        DescriptorSigner { cluster_id, store, shared, p2p, nonces: Mutex::new(HashMap::new()) }
    }

    /// The descriptor this node's keys and committee define.
    pub fn build(&self, keys: &ActiveKeys) -> Option<ClusterDescriptor> {
        let bls = keys.bls.public();
        let ed = keys.ed25519.public();
        let membership = self.shared.membership();
        if membership.epoch != keys.epoch {
            return None;
        }
        let nodes = membership
            .members
            .iter()
            .map(|e| {
                let vk: [u8; 96] =
                    Bls12381G2::encode_point(bls.verification_key(e.index)?).try_into().ok()?;
                let fvk: [u8; 32] = Ed25519::encode_point(ed.verification_key(e.index)?).try_into().ok()?;
                Some(NodeEntry {
                    index: e.index,
                    peer_id: e.peer_id.clone(),
                    p2p_addr: e.p2p_addr.clone(),
                    http_url: e.http_url.clone(),
                    vk: HexBytes(vk),
                    frost_vk: HexBytes(fvk),
                })
            })
            .collect::<Option<Vec<_>>>()?;
        Some(ClusterDescriptor {
            version: CLUSTER_VERSION,
            cluster_id: HexBytes(self.cluster_id),
            epoch: keys.epoch,
            threshold: bls.threshold(),
            nodes,
            mpk: HexBytes(Bls12381G2::encode_point(bls.public_key()).try_into().ok()?),
            group_key: HexBytes(kms_dkg::frost::group_key_bytes(ed)),
        })
    }

    fn ours(&self, epoch: u64) -> Result<(Arc<ActiveKeys>, ClusterDescriptor), String> {
        let keys = self.shared.active().ok_or("no active key")?;
        if keys.epoch != epoch {
            return Err(format!("active epoch is {}, not {epoch}", keys.epoch));
        }
        let d = self.build(&keys).ok_or("cannot build the descriptor")?;
        Ok((keys, d))
    }

    fn commit(&self, epoch: u64, digest: [u8; 32]) -> Result<Vec<u8>, String> {
        let (keys, d) = self.ours(epoch)?;
        if Sha256::digest(d.signing_bytes()).as_slice() != digest {
            return Err("descriptor digest differs from this node's descriptor".into());
        }
        let kp = kms_dkg::frost::key_package(&keys.ed25519).map_err(|e| e.to_string())?;
        let (nonces, commitments) = frost::round1::commit(kp.signing_share(), &mut OsRng);
        let bytes = commitments.serialize().map_err(|e| e.to_string())?;
        self.nonces.lock().map_err(|_| "poisoned")?.insert(bytes.clone(), nonces);
        Ok(bytes)
    }

    fn sign(&self, epoch: u64, package: &[u8]) -> Result<Vec<u8>, String> {
        let (keys, d) = self.ours(epoch)?;
        let package = frost::SigningPackage::deserialize(package)
            .map_err(|e| format!("malformed signing package: {e}"))?;
        if package.message().as_slice() != d.signing_bytes().as_slice() {
            return Err("signing package is not over this node's descriptor".into());
        }
        let kp = kms_dkg::frost::key_package(&keys.ed25519).map_err(|e| e.to_string())?;
        let ours =
            package.signing_commitment(kp.identifier()).ok_or("this node is not a signer of the package")?;
        let key = ours.serialize().map_err(|e| e.to_string())?;
        let nonces =
            self.nonces.lock().map_err(|_| "poisoned")?.remove(&key).ok_or("unknown or used commitment")?;
        let share = frost::round2::sign(&package, &nonces, &kp).map_err(|e| e.to_string())?;
        Ok(share.serialize())
    }

    fn accept(&self, bytes: &[u8]) -> Result<(), String> {
        let signed: SignedClusterDescriptor = decode_json(bytes).map_err(|e| e.to_string())?;
        let (keys, d) = self.ours(signed.descriptor.epoch)?;
        let group_key = kms_dkg::frost::group_key_bytes(keys.ed25519.public());
        signed.verify(Some(&group_key)).map_err(|e| e.to_string())?;
        if signed.descriptor != d {
            return Err("descriptor differs from this node's".into());
        }
        if self.store.get_public("descriptor", d.epoch).map_err(|e| e.to_string())?.is_none() {
            self.store.put_public("descriptor", d.epoch, bytes).map_err(|e| e.to_string())?;
            info!(epoch = d.epoch, "signed cluster descriptor stored");
        }
        Ok(())
    }

    /// Handles a FROST or descriptor request from a peer.
    pub fn handle(&self, body: RequestBody) -> NodeResponse {
        let r = match body {
            RequestBody::FrostCommit { epoch, digest } => {
                self.commit(epoch, digest).map(ResponseBody::FrostCommitment)
            }
            RequestBody::FrostSign { epoch, package } => {
                self.sign(epoch, &package).map(ResponseBody::FrostShare)
            }
            RequestBody::Descriptor(bytes) => self.accept(&bytes).map(|_| ResponseBody::Ack),
            _ => Err("unexpected request".into()),
        };
        r.map(NodeResponse::new).unwrap_or_else(refused)
    }

    /// Coordinates one signing round; returns the signed descriptor.
    async fn coordinate(&self, keys: &ActiveKeys) -> Result<SignedClusterDescriptor, String> {
        let d = self.build(keys).ok_or("cannot build the descriptor")?;
        let digest: [u8; 32] = Sha256::digest(d.signing_bytes()).into();
        let t = usize::from(keys.bls.public().threshold());
        let timeout = Duration::from_secs(5);
        let mut commitments = BTreeMap::new();
        let me = keys.bls.index();
        let me_id = frost::Identifier::try_from(me).map_err(|e| e.to_string())?;
        let own = self.commit(keys.epoch, digest)?;
        commitments
            .insert(me_id, frost::round1::SigningCommitments::deserialize(&own).map_err(|e| e.to_string())?);
        let peers: Vec<u16> =
            self.shared.connected.read().map(|c| c.iter().copied().collect()).unwrap_or_default();
        for &peer in &peers {
            if commitments.len() >= t {
                break;
            }
            let req = NodeRequest::new(RequestBody::FrostCommit { epoch: keys.epoch, digest });
            match self.p2p.call(peer, req, timeout).await.map(|r| r.body) {
                Ok(ResponseBody::FrostCommitment(c)) => {
                    let id = frost::Identifier::try_from(peer).map_err(|e| e.to_string())?;
                    if let Ok(c) = frost::round1::SigningCommitments::deserialize(&c) {
                        commitments.insert(id, c);
                    }
                }
                other => warn!(peer, ?other, "no FROST commitment"),
            }
        }
        if commitments.len() < t {
            return Err(format!("only {} of {t} signers committed", commitments.len()));
        }
        let signers: Vec<u16> = peers
            .iter()
            .copied()
            .filter(|p| {
                frost::Identifier::try_from(*p).map(|id| commitments.contains_key(&id)).unwrap_or(false)
            })
            .collect();
        let package = frost::SigningPackage::new(commitments, &d.signing_bytes());
        let package_bytes = package.serialize().map_err(|e| e.to_string())?;
        let mut shares = BTreeMap::new();
        let own = self.sign(keys.epoch, &package_bytes)?;
        shares.insert(me_id, frost::round2::SignatureShare::deserialize(&own).map_err(|e| e.to_string())?);
        for peer in signers {
            let req = NodeRequest::new(RequestBody::FrostSign {
                epoch: keys.epoch,
                package: package_bytes.clone(),
            });
            match self.p2p.call(peer, req, timeout).await.map(|r| r.body) {
                Ok(ResponseBody::FrostShare(s)) => {
                    let id = frost::Identifier::try_from(peer).map_err(|e| e.to_string())?;
                    shares.insert(
                        id,
                        frost::round2::SignatureShare::deserialize(&s).map_err(|e| e.to_string())?,
                    );
                }
                other => return Err(format!("node {peer} did not sign: {other:?}")),
            }
        }
        let pubkeys = kms_dkg::frost::public_key_package(keys.ed25519.public()).map_err(|e| e.to_string())?;
        let sig = frost::aggregate(&package, &shares, &pubkeys).map_err(|e| format!("aggregation: {e}"))?;
        let sig: [u8; 64] =
            sig.serialize().map_err(|e| e.to_string())?.try_into().map_err(|_| "signature length")?;
        let signed = SignedClusterDescriptor { descriptor: d, signature: HexBytes(sig) };
        signed
            .verify(Some(&kms_dkg::frost::group_key_bytes(keys.ed25519.public())))
            .map_err(|e| e.to_string())?;
        Ok(signed)
    }

    /// Runs forever: whenever keys are active and no signed descriptor is stored, the
    /// lowest-indexed reachable node coordinates a signing round (others take over if it does
    /// not manage within a few seconds), then gossips the result.
    pub async fn run(self: Arc<Self>) {
        let mut activated = self.shared.activated.subscribe();
        loop {
            let Some(keys) = self.shared.active() else {
                let _ = activated.changed().await;
                continue;
            };
            match self.store.get_public("descriptor", keys.epoch) {
                Ok(Some(bytes)) => {
                    // Done here; make sure every peer has it too (idempotent), then wait.
                    let me = keys.bls.index();
                    for e in self.shared.membership().members.iter().filter(|e| e.index != me) {
                        self.p2p.send_reliable(
                            e.index,
                            NodeRequest::new(RequestBody::Descriptor(bytes.clone())),
                            u64::MAX,
                        );
                    }
                    let _ = activated.changed().await;
                    continue;
                }
                Ok(None) => {}
                Err(e) => warn!(error = %e, "reading the descriptor"),
            }
            let me = keys.bls.index();
            let rank =
                self.shared.connected.read().map(|c| c.iter().filter(|&&i| i < me).count()).unwrap_or(0);
            tokio::time::sleep(Duration::from_millis(300 + 3_000 * rank as u64)).await;
            if matches!(self.store.get_public("descriptor", keys.epoch), Ok(Some(_))) {
                continue;
            }
            match self.coordinate(&keys).await {
                Ok(signed) => {
                    let bytes = encode_json(&signed);
                    if let Err(e) = self.accept(&bytes) {
                        warn!(error = %e, "own signed descriptor refused");
                    }
                }
                Err(e) => {
                    warn!(error = %e, "descriptor signing round failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }
}
