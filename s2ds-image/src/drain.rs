//! Graceful shutdown: stop accepting (done by the caller), let established
//! connections finish within the grace period, then drop the rest.

use std::sync::atomic::Ordering;
use std::time::Duration;

use tracing::info;

use crate::server::Ctx;

/// What happened during a drain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Connections open when the drain started.
    pub open_at_start: usize,
    /// Connections dropped at the end of the grace period.
    pub aborted: u64,
}

/// Waits for every connection task, at most `grace`; then cancels the
/// remaining ones and waits for them to unwind.
pub async fn drain(ctx: &Ctx, grace: Duration) -> DrainReport {
    ctx.tracker.close();
    let open_at_start = ctx.tracker.len();
    info!(stream = %ctx.stream_id, open = open_at_start, grace_s = grace.as_secs_f64(), "Draining");
    if tokio::time::timeout(grace, ctx.tracker.wait()).await.is_err() {
        ctx.abort.cancel();
        // Aborting is immediate (the tasks only drop their sockets).
        let _ = tokio::time::timeout(Duration::from_secs(5), ctx.tracker.wait()).await;
    }
    let report = DrainReport { open_at_start, aborted: ctx.aborted.load(Ordering::Relaxed) };
    info!(stream = %ctx.stream_id, drained = open_at_start as u64 - report.aborted.min(open_at_start as u64),
        aborted = report.aborted, "Drained");
    report
}
