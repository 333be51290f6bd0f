//! The libp2p swarm: TCP + Noise + Yamux, connections only with roster peers, one
//! request-response protocol (`/kms/1`) carrying [`NodeRequest`]s, and reliable delivery (a
//! failed request is retried with backoff until it is acknowledged or cancelled).
//!
//! The swarm runs in its own task; [`P2pHandle`] sends to it, and inbound requests arrive on a
//! channel as [`Inbound`] with a one-shot to answer them.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::sync::Arc;
use std::time::Duration;

use futures::prelude::*;
use futures::stream::FuturesUnordered;
use libp2p::request_response::{self, OutboundRequestId, ProtocolSupport, ResponseChannel};
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{allow_block_list, identity, noise, tcp, yamux, Multiaddr, PeerId, StreamProtocol, Swarm};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;
use tracing::{debug, info, warn};

use kms_proto::codec::{decode_p2p, encode_p2p, MAX_P2P_MESSAGE};
use kms_proto::p2p::{NodeRequest, NodeResponse, ResponseBody, PROTOCOL};

/// Codec: `u32` big-endian length ‖ p2p encoding, at most [`MAX_P2P_MESSAGE`] bytes.
#[derive(Clone, Default)]
pub struct KmsCodec;

async fn read_frame<T: AsyncRead + Unpin + Send>(io: &mut T) -> io::Result<Vec<u8>> {
    let mut len = [0u8; 4];
    io.read_exact(&mut len).await?;
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_P2P_MESSAGE {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "frame exceeds the p2p size limit"));
    }
    let mut buf = vec![0u8; len];
    io.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_frame<T: AsyncWrite + Unpin + Send>(io: &mut T, bytes: &[u8]) -> io::Result<()> {
    let len = u32::try_from(bytes.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "frame too large"))?;
    io.write_all(&len.to_be_bytes()).await?;
    io.write_all(bytes).await?;
    io.close().await
}

fn invalid(e: kms_proto::CodecError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

#[async_trait::async_trait]
impl request_response::Codec for KmsCodec {
    type Protocol = StreamProtocol;
    type Request = NodeRequest;
    type Response = NodeResponse;

    async fn read_request<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<NodeRequest> {
        decode_p2p(&read_frame(io).await?).map_err(invalid)
    }

    async fn read_response<T: AsyncRead + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
    ) -> io::Result<NodeResponse> {
        decode_p2p(&read_frame(io).await?).map_err(invalid)
    }

    async fn write_request<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        req: NodeRequest,
    ) -> io::Result<()> {
        write_frame(io, &encode_p2p(&req)).await
    }

    async fn write_response<T: AsyncWrite + Unpin + Send>(
        &mut self,
        _: &StreamProtocol,
        io: &mut T,
        res: NodeResponse,
    ) -> io::Result<()> {
        write_frame(io, &encode_p2p(&res)).await
    }
}

/// The composed libp2p behaviour.
#[derive(NetworkBehaviour)]
struct Behaviour {
    allow: allow_block_list::Behaviour<allow_block_list::AllowedPeers>,
    rpc: request_response::Behaviour<KmsCodec>,
}

/// A request from a roster peer, with the channel to answer it.
pub struct Inbound {
    /// Roster index of the sender (authenticated by Noise) in the roster the swarm had when
    /// the request arrived.
    pub from: u16,
    /// The sender's peer id (authenticated by Noise): what a consumer that changes rosters
    /// maps to its own index.
    pub peer: PeerId,
    /// The request.
    pub request: NodeRequest,
    /// Answer here; dropping it answers `Refused`.
    pub reply: oneshot::Sender<NodeResponse>,
    /// When the transport handed it over (how long it waited in the consumer's queue).
    pub arrived: Instant,
}

/// Whether a queued reliable request may go to its peer now ([`P2pHandle::set_gate`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outbound {
    /// Send it.
    Send,
    /// Not yet: keep it queued and ask again shortly.
    Hold,
    /// Never: drop it.
    Drop,
}

/// Decides [`Outbound`] for a peer and a request.
pub type OutboundGate = Arc<dyn Fn(&PeerId, &NodeRequest) -> Outbound + Send + Sync>;

/// How long a peer has to answer a request before it is sent again. A loaded node of a large
/// cluster answers a ceremony message only once it took it (its queue held deals for up to 10 s
/// in a 64-node reshare on 2 cores): a short timeout only resent what was still queued, and the
/// duplicates loaded it more. A request lost with its connection fails at once, not here.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Concurrent request streams per connection (each node answers a request once it has durably
/// taken it, so a busy node holds many open).
const MAX_STREAMS: usize = 1024;

/// How long a held request waits before the gate is asked again.
const HOLD: Duration = Duration::from_millis(200);

/// Connectivity changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerEvent {
    /// First connection to an allowed peer established.
    Connected(PeerId),
    /// Last connection to an allowed peer closed.
    Disconnected(PeerId),
}

/// Where a call goes.
enum Target {
    /// The roster's node with this index.
    Index(u16),
    /// This peer (a roster peer of any epoch, connected or dialled by the swarm).
    Peer(PeerId),
}

enum Command {
    /// Deliver reliably: retry until a response arrives (or the request is cancelled with its
    /// generation).
    Reliable { to: u16, request: NodeRequest, generation: u64 },
    /// One attempt; the answer (or error) goes to `reply`.
    Call { to: Target, request: NodeRequest, reply: oneshot::Sender<Result<NodeResponse, String>> },
    /// Drop every pending reliable request of an older generation.
    Cancel { below: u64 },
    /// Deliver reliably to every roster peer but this node.
    Broadcast { request: NodeRequest, generation: u64 },
    /// Replace the roster (a reshare's participants): indices map to these peers from now on.
    SetRoster { roster: BTreeMap<u16, (PeerId, Multiaddr)>, me: u16 },
    /// Ask `gate` before every reliable send from now on.
    SetGate(OutboundGate),
}

/// Sends to the swarm task.
#[derive(Clone)]
pub struct P2pHandle {
    tx: mpsc::UnboundedSender<Command>,
}

impl P2pHandle {
    /// Queues a request for reliable delivery to node `to`.
    pub fn send_reliable(&self, to: u16, request: NodeRequest, generation: u64) {
        let _ = self.tx.send(Command::Reliable { to, request, generation });
    }

    /// Sends one request and waits for its answer (or `timeout`).
    pub async fn call(
        &self,
        to: u16,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<NodeResponse, String> {
        self.call_target(Target::Index(to), request, timeout).await
    }

    /// [`P2pHandle::call`] addressed by peer id.
    pub async fn call_peer(
        &self,
        peer: PeerId,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<NodeResponse, String> {
        self.call_target(Target::Peer(peer), request, timeout).await
    }

    async fn call_target(
        &self,
        to: Target,
        request: NodeRequest,
        timeout: Duration,
    ) -> Result<NodeResponse, String> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Call { to, request, reply }).map_err(|_| "p2p task stopped".to_string())?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(r)) => r,
            Ok(Err(_)) => Err("p2p task stopped".into()),
            Err(_) => Err("timed out".into()),
        }
    }

    /// Cancels pending reliable requests of generations below `below`.
    pub fn cancel_below(&self, below: u64) {
        let _ = self.tx.send(Command::Cancel { below });
    }

    /// Queues a request for reliable delivery to every roster peer but this node.
    pub fn broadcast(&self, request: NodeRequest, generation: u64) {
        let _ = self.tx.send(Command::Broadcast { request, generation });
    }

    /// Asks `gate` before each reliable send (and each retry) from now on: what it holds stays
    /// queued, what it drops is gone. Calls ([`P2pHandle::call`]) are not gated.
    pub fn set_gate(&self, gate: OutboundGate) {
        let _ = self.tx.send(Command::SetGate(gate));
    }

    /// Replaces the roster: index `i` is `roster[i]` for every request queued from now on
    /// (requests already queued keep the peer they were addressed to). Peers of earlier
    /// rosters stay allowed to connect; only this roster's peers are dialled and indexed.
    pub fn set_roster(&self, roster: BTreeMap<u16, (PeerId, Multiaddr)>, me: u16) {
        let _ = self.tx.send(Command::SetRoster { roster, me });
    }
}

/// Everything the swarm task needs.
pub struct P2pConfig {
    /// This node's identity.
    pub keypair: identity::Keypair,
    /// Listen address.
    pub listen: Multiaddr,
    /// Roster: index → (peer id, address); includes this node.
    pub roster: BTreeMap<u16, (PeerId, Multiaddr)>,
    /// This node's index.
    pub me: u16,
}

struct Pending {
    to: u16,
    peer: PeerId,
    request: NodeRequest,
    generation: u64,
    attempt: u32,
}

/// Starts the swarm task and waits until it listens. Returns the handle, inbound requests, peer
/// events and the first address the swarm reported listening on (with the port it got, if
/// `cfg.listen` asked for port 0).
pub async fn spawn(
    cfg: P2pConfig,
) -> anyhow::Result<(
    P2pHandle,
    mpsc::UnboundedReceiver<Inbound>,
    mpsc::UnboundedReceiver<PeerEvent>,
    Multiaddr,
)> {
    let mut allowed = allow_block_list::Behaviour::<allow_block_list::AllowedPeers>::default();
    for (peer, _) in cfg.roster.values() {
        allowed.allow_peer(*peer);
    }
    let rpc = request_response::Behaviour::with_codec(
        KmsCodec,
        [(StreamProtocol::new(PROTOCOL), ProtocolSupport::Full)],
        // Streams per connection: libp2p's default of 100 dropped deals and complaints ("at
        // capacity") while a loaded node of a 64-member reshare was still checking earlier ones.
        request_response::Config::default()
            .with_request_timeout(REQUEST_TIMEOUT)
            .with_max_concurrent_streams(MAX_STREAMS),
    );
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(cfg.keypair.clone())
        .with_tokio()
        .with_tcp(tcp::Config::default().nodelay(true), noise::Config::new, yamux::Config::default)?
        .with_dns()?
        .with_behaviour(|_| Behaviour { allow: allowed, rpc })?
        .with_swarm_config(|c| c.with_idle_connection_timeout(Duration::from_secs(3600)))
        .build();
    let listen = cfg.listen.clone();
    swarm.listen_on(listen.clone())?;
    for (i, (peer, addr)) in &cfg.roster {
        if *i != cfg.me {
            swarm.add_peer_address(*peer, addr.clone());
        }
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (in_tx, in_rx) = mpsc::unbounded_channel();
    let (ev_tx, ev_rx) = mpsc::unbounded_channel();
    let (listening_tx, listening_rx) = oneshot::channel();
    let by_peer: HashMap<PeerId, u16> = cfg.roster.iter().map(|(i, (p, _))| (*p, *i)).collect();
    let task = SwarmTask {
        swarm,
        cfg,
        by_peer,
        rx,
        in_tx,
        ev_tx,
        pending: HashMap::new(),
        calls: HashMap::new(),
        retry: Vec::new(),
        gate: None,
        listening: Some(listening_tx),
    };
    tokio::spawn(task.run());
    let listen = match listening_rx.await {
        Ok(Ok(address)) => address,
        Ok(Err(e)) => anyhow::bail!("p2p: listening on {listen}: {e}"),
        Err(_) => anyhow::bail!("p2p: the swarm stopped before listening on {listen}"),
    };
    Ok((P2pHandle { tx }, in_rx, ev_rx, listen))
}

struct SwarmTask {
    swarm: Swarm<Behaviour>,
    cfg: P2pConfig,
    by_peer: HashMap<PeerId, u16>,
    rx: mpsc::UnboundedReceiver<Command>,
    in_tx: mpsc::UnboundedSender<Inbound>,
    ev_tx: mpsc::UnboundedSender<PeerEvent>,
    pending: HashMap<OutboundRequestId, Pending>,
    calls: HashMap<OutboundRequestId, oneshot::Sender<Result<NodeResponse, String>>>,
    retry: Vec<(Instant, Pending)>,
    /// Asked before every reliable send.
    gate: Option<OutboundGate>,
    /// Told the first listen address (or why listening failed), then `None`.
    listening: Option<oneshot::Sender<Result<Multiaddr, String>>>,
}

type Replies = FuturesUnordered<future::BoxFuture<'static, (ResponseChannel<NodeResponse>, NodeResponse)>>;

impl SwarmTask {
    async fn run(mut self) {
        let mut replies: Replies = FuturesUnordered::new();
        let mut tick = tokio::time::interval(Duration::from_millis(200));
        let mut redial = tokio::time::interval(Duration::from_secs(2));
        loop {
            tokio::select! {
                cmd = self.rx.recv() => match cmd {
                    None => return,
                    Some(Command::Reliable { to, request, generation }) => {
                        if let Some((peer, _)) = self.cfg.roster.get(&to) {
                            let peer = *peer;
                            self.send(Pending { to, peer, request, generation, attempt: 0 });
                        }
                    }
                    Some(Command::Broadcast { request, generation }) => {
                        let peers: Vec<(u16, PeerId)> = self.cfg.roster.iter()
                            .filter(|(i, _)| **i != self.cfg.me)
                            .map(|(i, (p, _))| (*i, *p))
                            .collect();
                        for (to, peer) in peers {
                            self.send(Pending { to, peer, request: request.clone(), generation, attempt: 0 });
                        }
                    }
                    Some(Command::SetRoster { roster, me }) => {
                        for (i, (peer, addr)) in &roster {
                            self.swarm.behaviour_mut().allow.allow_peer(*peer);
                            if *i != me {
                                self.swarm.add_peer_address(*peer, addr.clone());
                            }
                        }
                        self.by_peer = roster.iter().map(|(i, (p, _))| (*p, *i)).collect();
                        self.cfg.roster = roster;
                        self.cfg.me = me;
                        self.redial();
                    }
                    Some(Command::Call { to, request, reply }) => {
                        let peer = match to {
                            Target::Index(i) => self.cfg.roster.get(&i).map(|(p, _)| *p).ok_or(i),
                            Target::Peer(p) => Ok(p),
                        };
                        match peer {
                            Ok(peer) => {
                                let id = self.swarm.behaviour_mut().rpc.send_request(&peer, request);
                                self.calls.insert(id, reply);
                            }
                            Err(i) => { let _ = reply.send(Err(format!("node {i} is not in the roster"))); }
                        }
                    }
                    Some(Command::SetGate(gate)) => self.gate = Some(gate),
                    Some(Command::Cancel { below }) => {
                        // What is pending now; an older attempt that still listens may send
                        // again later (an adopted transcript's confirmation, a share recovery).
                        self.pending.retain(|_, p| p.generation >= below);
                        self.retry.retain(|(_, p)| p.generation >= below);
                    }
                },
                Some((channel, response)) = replies.next(), if !replies.is_empty() => {
                    let _ = self.swarm.behaviour_mut().rpc.send_response(channel, response);
                }
                _ = tick.tick() => {
                    // Only what is due moves (thousands may wait on a loaded large cluster).
                    let now = Instant::now();
                    let mut due = Vec::new();
                    let mut i = 0;
                    while i < self.retry.len() {
                        if self.retry[i].0 <= now {
                            due.push(self.retry.swap_remove(i).1);
                        } else {
                            i += 1;
                        }
                    }
                    for p in due {
                        self.send(p);
                    }
                }
                _ = redial.tick() => self.redial(),
                event = self.swarm.select_next_some() => self.on_event(event, &mut replies),
            }
        }
    }

    /// Queues a pending request for another try, with backoff from 100 ms doubling up to 5 s.
    fn retry_later(&mut self, mut p: Pending) {
        p.attempt += 1;
        let backoff = Duration::from_millis((100u64 << p.attempt.min(6)).min(5_000));
        self.retry.push((Instant::now() + backoff, p));
    }

    fn send(&mut self, p: Pending) {
        if let Some(gate) = &self.gate {
            match gate(&p.peer, &p.request) {
                Outbound::Send => {}
                Outbound::Hold => {
                    self.retry.push((Instant::now() + HOLD, p));
                    return;
                }
                Outbound::Drop => {
                    debug!(to = p.to, "not sent: the gate refuses this peer");
                    return;
                }
            }
        }
        let id = self.swarm.behaviour_mut().rpc.send_request(&p.peer, p.request.clone());
        self.pending.insert(id, p);
    }

    fn redial(&mut self) {
        for (i, (peer, addr)) in &self.cfg.roster {
            if *i != self.cfg.me && !self.swarm.is_connected(peer) {
                let _ = self.swarm.dial(addr.clone());
            }
        }
    }

    fn on_event(&mut self, event: SwarmEvent<BehaviourEvent>, replies: &mut Replies) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "p2p listening");
                if let Some(tx) = self.listening.take() {
                    let _ = tx.send(Ok(address));
                }
            }
            SwarmEvent::ListenerError { error, .. } => {
                if let Some(tx) = self.listening.take() {
                    let _ = tx.send(Err(error.to_string()));
                }
            }
            SwarmEvent::ListenerClosed { reason, .. } => {
                if let Some(tx) = self.listening.take() {
                    let why = reason.err().map_or_else(|| "listener closed".to_string(), |e| e.to_string());
                    let _ = tx.send(Err(why));
                }
            }
            SwarmEvent::ConnectionEstablished { peer_id, num_established, .. }
                if num_established.get() == 1 =>
            {
                info!(node = ?self.by_peer.get(&peer_id), %peer_id, "connected to peer");
                let _ = self.ev_tx.send(PeerEvent::Connected(peer_id));
            }
            SwarmEvent::ConnectionClosed { peer_id, num_established: 0, .. } => {
                info!(node = ?self.by_peer.get(&peer_id), %peer_id, "disconnected from peer");
                let _ = self.ev_tx.send(PeerEvent::Disconnected(peer_id));
            }
            SwarmEvent::IncomingConnectionError { send_back_addr, error, .. } => {
                warn!(addr = %send_back_addr, %error, "refused incoming connection (not a roster peer, or handshake failed)");
            }
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "dial failed");
            }
            SwarmEvent::Behaviour(BehaviourEvent::Rpc(ev)) => self.on_rpc(ev, replies),
            _ => {}
        }
    }

    fn on_rpc(&mut self, ev: request_response::Event<NodeRequest, NodeResponse>, replies: &mut Replies) {
        use request_response::{Event, Message};
        match ev {
            Event::Message { peer, message: Message::Request { request, channel, .. }, .. } => {
                let Some(&from) = self.by_peer.get(&peer) else {
                    warn!(%peer, "request from a peer outside the roster dropped");
                    return;
                };
                let (reply, rx) = oneshot::channel();
                if self.in_tx.send(Inbound { from, peer, request, reply, arrived: Instant::now() }).is_err() {
                    return;
                }
                replies.push(Box::pin(async move {
                    let response = rx
                        .await
                        .unwrap_or_else(|_| NodeResponse::new(ResponseBody::Refused("not handled".into())));
                    (channel, response)
                }));
            }
            Event::Message { message: Message::Response { request_id, response }, .. } => {
                if response.body == ResponseBody::Unavailable {
                    // The peer could not take it durably: keep it pending and try again.
                    if let Some(p) = self.pending.remove(&request_id) {
                        debug!(to = p.to, attempt = p.attempt + 1, "peer unavailable; retrying");
                        self.retry_later(p);
                        return;
                    }
                }
                let delivered = self.pending.remove(&request_id);
                if let (Some(p), ResponseBody::Refused(reason)) = (&delivered, &response.body) {
                    // The peer's words, shortened and escaped (`?`): they are not ours to trust.
                    let reason: String = reason.chars().take(300).collect();
                    warn!(to = p.to, reason = ?reason, "the peer refused a message");
                }
                if let Some(reply) = self.calls.remove(&request_id) {
                    let _ = reply.send(Ok(response));
                }
            }
            Event::OutboundFailure { request_id, error, .. } => {
                if let Some(reply) = self.calls.remove(&request_id) {
                    let _ = reply.send(Err(error.to_string()));
                }
                if let Some(p) = self.pending.remove(&request_id) {
                    debug!(to = p.to, attempt = p.attempt + 1, %error, "retrying");
                    self.retry_later(p);
                }
            }
            _ => {}
        }
    }
}
