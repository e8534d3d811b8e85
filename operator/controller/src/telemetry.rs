//! Logging: `tracing` with the filter from `RUST_LOG` (default `info`), as text or JSON.

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Installs the global subscriber (once; later calls are ignored).
pub fn init(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,kube=warn"));
    let registry = tracing_subscriber::registry().with(filter);
    let _ = if format == "json" {
        registry.with(fmt::layer().json().with_current_span(true)).try_init()
    } else {
        registry.with(fmt::layer().with_target(false)).try_init()
    };
}
