//! Config reloads on SIGHUP or when the config file (or a certificate file
//! it names) changes. Files are polled once a second by content, which also
//! catches the symlink swap Kubernetes uses for ConfigMap and Secret
//! volumes (mtime alone would not).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sha2::{Digest, Sha256};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::{Config, PeerPin};
use crate::server::Server;

/// Poll period for file changes.
pub const POLL: Duration = Duration::from_secs(1);

/// Digest of the config file and every file it references.
fn digest(path: &Path, config: &Config) -> [u8; 32] {
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = vec![path.to_owned()];
    if let Some(t) = &config.tls {
        files.push(t.cert_file.clone());
        files.push(t.key_file.clone());
        if let PeerPin::CertFile(p) = &t.peer {
            files.push(p.clone());
        }
    }
    for f in files {
        // A missing file hashes as empty; the reload then reports it.
        h.update(std::fs::read(&f).unwrap_or_default());
        h.update([0u8]);
    }
    h.finalize().into()
}

/// Watches for SIGHUP and file changes until `stop` is cancelled.
pub async fn watch(server: Arc<Server>, path: PathBuf, stop: CancellationToken) -> std::io::Result<()> {
    let mut hup = signal(SignalKind::hangup())?;
    let mut config = server.config();
    let mut last = digest(&path, &config);
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let why = tokio::select! {
            () = stop.cancelled() => return Ok(()),
            _ = hup.recv() => "SIGHUP",
            _ = tick.tick() => {
                let d = digest(&path, &config);
                if d == last { continue; }
                "file changed"
            }
        };
        last = digest(&path, &config);
        info!(why, path = %path.display(), "reloading the config");
        match Config::load(&path) {
            Ok(new) => match server.reload(new.clone()).await {
                Ok(()) => {
                    config = new;
                    last = digest(&path, &config);
                }
                Err(e) => {
                    warn!(error = %crate::report(&e), "reload refused; keeping the running config")
                }
            },
            Err(e) => {
                server.reload_counted(false);
                warn!(error = %crate::report(&e), "reload refused; keeping the running config");
            }
        }
    }
}
