//! Waiting for a condition with a deadline: polling, bounded in time, never a bare sleep.

use std::time::Duration;

use kube::Api;
use scistream_api::StreamRequest;

/// Polls `cond` every 50 ms until it holds; panics after `timeout`.
pub async fn wait_until<F, Fut>(timeout: Duration, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !cond().await {
        assert!(tokio::time::Instant::now() < deadline, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits up to `secs` for StreamRequest `name` to satisfy `cond`; panics with its last
/// status otherwise.
pub async fn request_until(
    api: &Api<StreamRequest>,
    name: &str,
    secs: u64,
    cond: impl Fn(&StreamRequest) -> bool,
) -> StreamRequest {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let current = api.get_opt(name).await.unwrap();
        if let Some(sr) = &current
            && cond(sr)
        {
            return sr.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never got there; last: {:#?}",
            current.and_then(|c| c.status)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
