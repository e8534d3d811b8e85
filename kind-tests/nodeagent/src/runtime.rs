//! One interface over the two runtimes for the container supervisor: a local
//! process ([`crate::process`]) or the image itself under podman
//! ([`crate::podman`]).

use std::time::Duration;

use crate::podman::{Podman, PodmanLaunch, StartError};
use crate::process::{self, Launch, Stopped};
use crate::status::REASON_START_ERROR;

/// A container ready to start, in the runtime its image rule chose.
#[derive(Debug, Clone)]
pub enum Prepared {
    /// A local program.
    Process(Launch),
    /// The image, with `podman run`.
    Podman(PodmanLaunch),
}

impl Prepared {
    /// What runs, for the `Started` event: the program, or the image and runtime.
    pub fn describe(&self) -> String {
        match self {
            Prepared::Process(l) => l.program.display().to_string(),
            Prepared::Podman(l) => format!("{} with podman", l.image),
        }
    }
}

/// A started container: the process, or the `podman run` process of a named container.
pub struct Running {
    child: tokio::process::Child,
    /// Podman and the container name (podman runtime only).
    podman: Option<(Podman, String)>,
}

/// Starts `p`; the error is the waiting reason and message.
pub async fn start(p: &Prepared, podman: &Podman) -> Result<Running, StartError> {
    match p {
        Prepared::Process(l) => process::spawn(l)
            .map(|child| Running { child, podman: None })
            .map_err(|e| (REASON_START_ERROR, format!("starting {}: {e}", l.program.display()))),
        Prepared::Podman(l) => {
            podman.prepare(l).await?;
            let mut child = podman.spawn(l).map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => (
                    REASON_START_ERROR,
                    "podman is not installed: apt-get install -y podman runc (kind-tests/build-images.sh does)"
                        .to_owned(),
                ),
                _ => (REASON_START_ERROR, format!("starting podman for {}: {e}", l.image)),
            })?;
            podman.wait_running(&mut child, l).await;
            Ok(Running { child, podman: Some((podman.clone(), l.name.clone())) })
        }
    }
}

impl Running {
    /// Waits until the container exits (cancel-safe until it has). A podman container is
    /// removed afterwards, should `--rm` not have happened (podman itself killed).
    pub async fn wait(&mut self) -> Option<std::process::ExitStatus> {
        let st = self.child.wait().await.ok();
        if let Some((podman, name)) = &self.podman {
            podman.remove(name).await;
        }
        st
    }

    /// SIGTERM, up to `grace` to exit, then SIGKILL (podman: forced removal).
    pub async fn terminate(&mut self, grace: Duration) -> (Stopped, Option<std::process::ExitStatus>) {
        match &self.podman {
            None => process::terminate(&mut self.child, grace).await,
            Some((podman, name)) => podman.terminate(&mut self.child, name, grace).await,
        }
    }
}
