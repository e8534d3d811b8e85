//! Graceful shutdown of the connections: stop accepting (the caller does),
//! let established connections finish within the grace period, then drop
//! the rest.
//!
//! [`Connections`] is the one handle both sides hold, as linkerd2-proxy's
//! `drain` is: the accept loops spawn each connection's task through it, the
//! server drains through it, and neither knows the other.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{Instrument, Span, debug, info};

/// What happened during a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when the drain started.
    pub open_at_start: usize,
    /// Connections dropped at the end of the grace period.
    pub aborted: u64,
}

/// The connection tasks of one relay (cheap to clone: every clone is the
/// same set).
#[derive(Debug, Clone, Default)]
pub struct Connections {
    tracker: TaskTracker,
    abort: CancellationToken,
    aborted: Arc<AtomicU64>,
}

impl Connections {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Runs one connection's work in `span` as a task on the current
    /// runtime, tracked for the drain. At the drain deadline the work is
    /// dropped, and with it its sockets (which reset: see
    /// [`crate::connection::reset_on_close`]).
    pub fn spawn(&self, span: Span, work: impl Future<Output = ()> + Send + 'static) {
        let (abort, aborted) = (self.abort.clone(), self.aborted.clone());
        let task = async move {
            tokio::select! {
                () = work => {}
                () = abort.cancelled() => {
                    aborted.fetch_add(1, Ordering::Relaxed);
                    debug!("aborted at the end of the drain period");
                }
            }
        };
        self.tracker.spawn(task.instrument(span));
    }

    /// Connection tasks running now.
    pub fn len(&self) -> usize {
        self.tracker.len()
    }

    /// True when no connection task runs.
    pub fn is_empty(&self) -> bool {
        self.tracker.is_empty()
    }

    /// Waits for every connection task, at most `grace`; then drops the
    /// remaining ones and waits for them to unwind. No task starts after.
    pub async fn drain(&self, grace: Duration) -> DrainReport {
        self.tracker.close();
        let open_at_start = self.tracker.len();
        info!(open = open_at_start, grace_s = grace.as_secs_f64(), "draining");
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            self.abort.cancel();
            // Aborting is immediate (the tasks only drop their sockets).
            let _ = tokio::time::timeout(Duration::from_secs(5), self.tracker.wait()).await;
        }
        let report = DrainReport { open_at_start, aborted: self.aborted.load(Ordering::Relaxed) };
        let drained = open_at_start as u64 - report.aborted.min(open_at_start as u64);
        info!(drained, aborted = report.aborted, "drained");
        report
    }
}
