//! `--data-dir` persistence: a JSON snapshot of the store, rewritten
//! atomically (temp file + rename) shortly after changes and at shutdown.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::sync::watch;

use crate::state::Shared;
use crate::{Error, Result};

/// Snapshot file name inside the data dir.
pub const SNAPSHOT: &str = "objects.json";

fn snapshot_path(dir: &Path) -> PathBuf {
    dir.join(SNAPSHOT)
}

/// Loads the snapshot into the store, if there is one.
pub fn load(state: &Shared, dir: &Path) -> Result<()> {
    let p = snapshot_path(dir);
    let text = match std::fs::read(&p) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(Error::Io { context: format!("reading {}", p.display()), source: e });
        }
    };
    let v: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| Error::Snapshot { path: p.clone(), source: e })?;
    state.store.load(&v);
    Ok(())
}

/// Writes the snapshot now.
pub fn save(state: &Shared, dir: &Path) -> Result<()> {
    let p = snapshot_path(dir);
    let tmp = dir.join(format!("{SNAPSHOT}.tmp"));
    let bytes = serde_json::to_vec(&state.store.dump()).map_err(|e| Error::Snapshot { path: p.clone(), source: e })?;
    std::fs::write(&tmp, bytes).map_err(|e| Error::Io { context: format!("writing {}", tmp.display()), source: e })?;
    std::fs::rename(&tmp, &p).map_err(|e| Error::Io { context: format!("renaming to {}", p.display()), source: e })
}

/// Saves after changes (at most every `period`) until `stop`, then once more.
pub async fn run(state: Shared, dir: PathBuf, mut stop: watch::Receiver<bool>, period: Duration) {
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            _ = tokio::time::sleep(period) => {}
        }
        if state.store.take_dirty()
            && let Err(e) = save(&state, &dir)
        {
            tracing::warn!(error = %e, "saving snapshot failed; will retry");
        }
    }
    if let Err(e) = save(&state, &dir) {
        tracing::error!(error = %e, "final snapshot failed");
    }
}
