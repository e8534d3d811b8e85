//! Container lifecycle hooks: `postStart`, run as the kubelet runs it.
//!
//! The kubelet (`pkg/kubelet/kuberuntime/kuberuntime_container.go`, `startContainer`) runs the
//! postStart handler right after starting the container and before anything else of that
//! container goes on: "if the hook takes too long to run or hangs, the Container cannot reach
//! a running state" (Kubernetes docs, Container Lifecycle Hooks), so it is reported waiting and
//! is not probed until the hook returns. A failed hook records a Warning Event
//! `FailedPostStartHook` with the message `PostStartHook failed` (the handler's output stays out
//! of the Event so that no secret leaks), kills the container and restarts it per its
//! restartPolicy. Handlers: `exec`, `httpGet` and `sleep`; anything else (the deprecated
//! `tcpSocket`) is an invalid handler (`pkg/kubelet/lifecycle/handlers.go`).

use std::time::Duration;

use k8s_openapi::api::core::v1::{Container, LifecycleHandler, Probe};

use crate::probe::{self, ProbeTarget};

/// The Event reason of a failed postStart hook (kubelet's `events.FailedPostStartHook`).
pub const REASON_FAILED: &str = "FailedPostStartHook";
/// The Event message of a failed postStart hook (kubelet's, without the handler's output).
pub const MESSAGE_FAILED: &str = "PostStartHook failed";
/// How long an `httpGet` handler's request may take.
const HTTP_TIMEOUT_SECONDS: i32 = 10;

/// The container's postStart handler, if it has one.
pub fn post_start(c: &Container) -> Option<&LifecycleHandler> {
    c.lifecycle.as_ref().and_then(|l| l.post_start.as_ref())
}

/// Runs `handler` once for container `c`: `Ok(())` when it succeeded, else why it failed.
/// `exec` runs an exec handler's command in the container (exit 0 = success).
pub async fn run(
    handler: &LifecycleHandler,
    c: &Container,
    target: &ProbeTarget,
    exec: &(dyn Fn(&[String]) -> tokio::process::Command + Sync),
) -> Result<(), String> {
    if let Some(e) = &handler.exec {
        let cmd = e.command.clone().unwrap_or_default();
        let out = exec(&cmd).kill_on_drop(true).output().await.map_err(|e| format!("{cmd:?}: {e}"))?;
        if out.status.success() {
            return Ok(());
        }
        let said = String::from_utf8_lossy(if out.stderr.is_empty() { &out.stdout } else { &out.stderr });
        Err(format!("command {cmd:?} exited with {}: {}", out.status, said.trim()))
    } else if let Some(http) = &handler.http_get {
        let as_probe =
            Probe { http_get: Some(http.clone()), timeout_seconds: Some(HTTP_TIMEOUT_SECONDS), ..Probe::default() };
        let no_exec = |_: &[String]| tokio::process::Command::new("false");
        probe::run(&as_probe, c, target, &no_exec).await
    } else if let Some(sleep) = &handler.sleep {
        tokio::time::sleep(Duration::from_secs(u64::try_from(sleep.seconds).unwrap_or(0))).await;
        Ok(())
    } else {
        Err("invalid handler: none of exec, httpGet or sleep".to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{ExecAction, HTTPGetAction, Lifecycle, SleepAction, TCPSocketAction};
    use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    fn target() -> ProbeTarget {
        ProbeTarget { netns: None, pod_ip: "127.0.0.1".parse().expect("ip") }
    }

    fn sh(cmd: &[String]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(&cmd[0]);
        c.args(&cmd[1..]);
        c
    }

    fn exec(command: &[&str]) -> LifecycleHandler {
        let command = Some(command.iter().map(|s| (*s).to_owned()).collect());
        LifecycleHandler { exec: Some(ExecAction { command }), ..LifecycleHandler::default() }
    }

    #[test]
    fn only_a_post_start_handler_is_one() {
        let mut c = Container::default();
        assert!(post_start(&c).is_none());
        c.lifecycle = Some(Lifecycle { pre_stop: Some(exec(&["true"])), ..Lifecycle::default() });
        assert!(post_start(&c).is_none());
        c.lifecycle = Some(Lifecycle { post_start: Some(exec(&["true"])), ..Lifecycle::default() });
        assert!(post_start(&c).is_some());
    }

    #[tokio::test]
    async fn exec_sleep_and_invalid_handlers() {
        let c = Container::default();
        assert_eq!(run(&exec(&["true"]), &c, &target(), &sh).await, Ok(()));
        let failed = run(&exec(&["sh", "-c", "echo not bound >&2; exit 3"]), &c, &target(), &sh).await;
        let msg = failed.expect_err("exit 3 fails the hook");
        assert!(msg.contains("exit status: 3") && msg.contains("not bound"), "{msg}");
        let nap = LifecycleHandler { sleep: Some(SleepAction { seconds: 0 }), ..LifecycleHandler::default() };
        assert_eq!(run(&nap, &c, &target(), &sh).await, Ok(()));
        let tcp = LifecycleHandler {
            tcp_socket: Some(TCPSocketAction { host: None, port: IntOrString::Int(1) }),
            ..LifecycleHandler::default()
        };
        assert!(run(&tcp, &c, &target(), &sh).await.expect_err("tcpSocket").starts_with("invalid handler"));
    }

    #[tokio::test]
    async fn http_get_handler_passes_on_2xx_only() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = l.local_addr().expect("addr").port();
        tokio::spawn(async move {
            for code in [200, 500] {
                let Ok((mut s, _)) = l.accept().await else { return };
                let mut b = [0u8; 512];
                let _ = s.read(&mut b).await;
                let _ = s.write_all(format!("HTTP/1.1 {code} X\r\nContent-Length: 0\r\n\r\n").as_bytes()).await;
            }
        });
        let get = LifecycleHandler {
            http_get: Some(HTTPGetAction { port: IntOrString::Int(i32::from(port)), ..HTTPGetAction::default() }),
            ..LifecycleHandler::default()
        };
        let c = Container::default();
        assert_eq!(run(&get, &c, &target(), &sh).await, Ok(()));
        assert!(run(&get, &c, &target(), &sh).await.expect_err("500").contains("500"));
    }
}
