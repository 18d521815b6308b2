//! The TCP server (mini-redis shape): a semaphore caps connections, a
//! cancellation token signals shutdown, a task tracker lets shutdown wait for
//! in-flight work, and each connection runs a reader loop plus a writer task.
//!
//! - [`handler`]: one frame → one [`handler::Reply`], no sockets involved.
//! - [`respond`]: response building (echo fields per INTERFACE §3).
//! - [`connection`]: the per-connection reader/writer loop.

pub mod connection;
pub mod handler;
pub mod respond;

pub use handler::{Authorizer, NoIssuer, Reply};

use crate::config::ServerConfig;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serve ISO 8583 on `listener` until `shutdown` is cancelled, then stop
/// accepting, stop reading, answer what is in flight (up to
/// `shutdown_grace_ms`) and return.
pub async fn serve<A: Authorizer>(
    listener: TcpListener,
    cfg: ServerConfig,
    auth: Arc<A>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let limit = Arc::new(Semaphore::new(cfg.connections_max));
    let tracker = TaskTracker::new();
    let cfg = Arc::new(cfg);
    loop {
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = limit.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(x) => x,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let conn = connection::Connection {
            cfg: cfg.clone(),
            auth: auth.clone(),
            shutdown: shutdown.clone(),
            tracker: tracker.clone(),
            peer: peer.to_string(),
        };
        tracker.spawn(async move {
            conn.run(stream).await;
            drop(permit);
        });
    }
    drop(listener);
    tracker.close();
    let grace = Duration::from_millis(cfg.shutdown_grace_ms);
    if tokio::time::timeout(grace, tracker.wait()).await.is_err() {
        tracing::warn!(
            tasks = tracker.len(),
            "shutdown grace period over with work still in flight"
        );
    }
    Ok(())
}
