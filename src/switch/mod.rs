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

pub use handler::{Authorizer, NoIssuer, Reply, Sink};

use crate::config::ServerConfig;
use std::sync::Arc;
use std::time::{Duration, Instant};
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
    let mut pace = AcceptPace::new(cfg.accepts_per_second_max);
    let cfg = Arc::new(cfg);
    loop {
        if let Some(wait) = pace.wait(Instant::now()) {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(wait) => {}
            }
        }
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
        pace.took(Instant::now());
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

/// Accept pacing (`server.accepts_per_second_max`), as a virtual-schedule
/// limiter: each accepted connection moves the schedule on by one interval;
/// the schedule may run up to a tenth of a second ahead of the clock (the
/// burst), and beyond that the accept loop waits.
#[derive(Debug)]
struct AcceptPace {
    interval: Duration,
    burst: Duration,
    schedule: Option<Instant>,
}

impl AcceptPace {
    fn new(per_second: u32) -> AcceptPace {
        let interval = if per_second == 0 {
            Duration::ZERO
        } else {
            Duration::from_secs(1) / per_second
        };
        AcceptPace {
            interval,
            burst: Duration::from_millis(100).max(interval),
            schedule: None,
        }
    }

    /// How long to wait before the next accept, if at all.
    fn wait(&self, now: Instant) -> Option<Duration> {
        let ahead = self.schedule?.checked_duration_since(now)?;
        ahead.checked_sub(self.burst).filter(|d| !d.is_zero())
    }

    /// One connection was accepted at `now`.
    fn took(&mut self, now: Instant) {
        if self.interval.is_zero() {
            return;
        }
        let from = self.schedule.map_or(now, |s| s.max(now));
        self.schedule = Some(from + self.interval);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pace_lets_a_burst_through_then_spaces_accepts() {
        let t0 = Instant::now();
        let mut p = AcceptPace::new(1000); // 1 ms apart, 100 ms burst
        for _ in 0..100 {
            assert_eq!(p.wait(t0), None);
            p.took(t0);
        }
        // The schedule is now 100 ms ahead: the next waits.
        p.took(t0);
        assert_eq!(p.wait(t0), Some(Duration::from_millis(1)));
        // Time catching up frees it again.
        assert_eq!(p.wait(t0 + Duration::from_millis(1)), None);
        // After a quiet spell the burst is available again.
        let later = t0 + Duration::from_secs(5);
        for _ in 0..100 {
            assert_eq!(p.wait(later), None);
            p.took(later);
        }
        p.took(later);
        assert!(p.wait(later).is_some());
    }

    #[test]
    fn zero_means_unpaced() {
        let t0 = Instant::now();
        let mut p = AcceptPace::new(0);
        for _ in 0..100_000 {
            p.took(t0);
        }
        assert_eq!(p.wait(t0), None);
    }
}
