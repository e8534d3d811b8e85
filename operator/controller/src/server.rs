//! HTTP endpoints: `/metrics` (Prometheus), `/healthz` (the process runs) and `/readyz`
//! (caches synced and, with leader election, leading or standing by cleanly).

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tokio_util::sync::CancellationToken;
use warp::{Filter, http::StatusCode};

use crate::metrics::Metrics;

/// Serves until `token` is cancelled. Fails only if the address cannot be bound.
pub async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    ready: Arc<AtomicBool>,
    token: CancellationToken,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "serving /metrics, /healthz and /readyz");
    let metrics_route = warp::path("metrics").and(warp::path::end()).map(move || {
        warp::reply::with_header(
            metrics.render(),
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )
    });
    let health = warp::path("healthz").and(warp::path::end()).map(|| "ok");
    let readyz = warp::path("readyz").and(warp::path::end()).map(move || {
        if ready.load(Ordering::Relaxed) {
            warp::reply::with_status("ok", StatusCode::OK)
        } else {
            warp::reply::with_status("caches not synced", StatusCode::SERVICE_UNAVAILABLE)
        }
    });
    let routes = warp::get().and(metrics_route.or(health).or(readyz));
    Ok(tokio::spawn(warp::serve(routes).incoming(listener).graceful(token.cancelled_owned()).run()))
}
