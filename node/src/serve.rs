//! The HTTP listener's connections: how many, from whom, for how long.
//!
//! One client must not be able to take the node's connections or file descriptors. Each
//! accepted connection needs a free slot of `limits.max_connections` and one of its source
//! address's `limits.max_connections_per_ip`; without one it is closed at once (counted in
//! `kms_http_connections_refused_total`). A connection must deliver each request's headers
//! within `limits.header_timeout_ms`, counted from when the node waits for them: from the
//! accept for the first request, from the end of the previous response on a keep-alive
//! connection (so an idle connection is closed after that time too). Bodies are bounded in
//! `http.rs` (`limits.body_timeout_ms`), handlers by `limits.request_timeout_ms`.
//!
//! A request framed two ways (`Content-Length` and `Transfer-Encoding`) is refused
//! (`400 malformed_request`, `framing.rs` finds it in the connection's bytes, since hyper drops
//! `Content-Length` before any handler runs), and the connection is closed after the answer
//! (RFC 9112 §6.1), so nothing sent after the body can be taken for another request.
//!
//! On shutdown the listener closes, open connections finish their request in flight and close,
//! and whatever is left after `limits.drain_ms` is cut.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::framing::Watched;
use crate::metrics::Metrics;

/// Connection limits (from `[limits]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Open connections in all.
    pub max_connections: usize,
    /// Open connections per source IP address.
    pub max_per_ip: usize,
    /// Deadline for a request's headers, also the idle timeout of a keep-alive connection.
    pub header_timeout: Duration,
    /// Time given to open connections at shutdown.
    pub drain: Duration,
}

/// Open connections per source address; an entry lives while its connections do.
#[derive(Default)]
struct PerIp(Mutex<HashMap<IpAddr, usize>>);

/// One connection's hold on its address's count, released on drop.
struct IpSlot {
    table: Arc<PerIp>,
    ip: IpAddr,
}

impl PerIp {
    fn enter(table: &Arc<PerIp>, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut t = table.0.lock().ok()?;
        let n = t.entry(ip).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot { table: table.clone(), ip })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Ok(mut t) = self.table.0.lock() {
            if let Some(n) = t.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    t.remove(&self.ip);
                }
            }
        }
    }
}

/// Serves `app` on `listener` under `limits` until `shutdown` resolves, then drains.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnLimits,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let total = Arc::new(Semaphore::new(limits.max_connections));
    let per_ip = Arc::new(PerIp::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of file descriptors, or the like: do not spin.
                    warn!(error = %e, "accepting an HTTP connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        let Ok(permit) = total.clone().try_acquire_owned() else {
            metrics.connection_refused("max_connections");
            debug!(%peer, "connection refused: limits.max_connections reached");
            continue;
        };
        let Some(slot) = PerIp::enter(&per_ip, peer.ip(), limits.max_per_ip) else {
            metrics.connection_refused("max_connections_per_ip");
            debug!(%peer, "connection refused: limits.max_connections_per_ip reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let app = app.clone();
        // Requests of this connection, and which one (from 1) was framed two ways.
        let (seen, conflict) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
        let stream = Watched::new(stream, conflict.clone());
        let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            let framed_twice = conflict.load(Ordering::SeqCst) == n;
            req.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            let app = app.clone();
            async move {
                if framed_twice {
                    debug!(%peer, "request with both Content-Length and Transfer-Encoding refused");
                    return Ok::<_, std::convert::Infallible>(crate::http::framing_refusal());
                }
                app.oneshot(req.map(axum::body::Body::new)).await
            }
        });
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        let open = metrics.http_connections.clone();
        open.inc();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTP connection ended with an error");
            }
            open.dec();
            drop((permit, slot));
        });
    }
    drop(listener);
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => warn!("drain timed out; closing remaining connections"),
    }
}
