//! The podman runtime: a container runs from its real image with `podman run`
//! in the foreground, as the supervised child of the agent.
//!
//! Only images built on this machine can run (`--pull never`): a missing one
//! leaves the container waiting with `ErrImageNeverPull`. The container joins
//! the node's network namespace (`--network ns:<path>`; `host` in loopback
//! mode) and gets the pod's volumes, user, groups, capabilities and read-only
//! root as podman flags ([`run_args`], pure). Its output is passed straight
//! to the container's log file (`--log-driver passthrough`), so nothing is
//! copied through conmon.
//!
//! Stopping relies on podman's sig-proxy: SIGTERM to the `podman run`
//! process reaches the container's main process. After the grace period the
//! container is removed by force; after every end, a `podman rm -f` makes
//! sure no container is left behind (also a stale one of the same name before
//! a start). Containers carry the agent's pid as a label, so that an agent
//! removes what a crashed one left behind ([`Podman::sweep_stale`]).

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::process::Stopped;
use crate::status::{REASON_NEVER_PULL, REASON_START_ERROR};

/// Label holding the pid of the agent that started a container.
pub const LABEL_AGENT_PID: &str = "io.scistream.nodeagent.pid";

/// The settings podman needs on this machine when `CONTAINERS_CONF` names
/// none: without explicit limits runc fails to set podman's default rlimits
/// in a sandboxed host; 16384 open files leave room for relays with many
/// connections.
pub const CONTAINERS_CONF: &str = "[containers]\ndefault_ulimits = [\"nofile=16384:16384\", \"nproc=4096:4096\"]\n\
                                   [engine]\nruntime = \"runc\"\n";

/// How long one podman housekeeping command (image check, removal, listing) may take.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// A bind mount of a host directory into the container.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// Host directory.
    pub host: PathBuf,
    /// Path inside the container.
    pub path: String,
    /// Mounted read-only (`readOnly: true`).
    pub read_only: bool,
}

/// Everything `podman run` needs for one container (see [`run_args`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodmanLaunch {
    /// Container name, unique per pod uid and container ([`container_name`]).
    pub name: String,
    /// Image reference.
    pub image: String,
    /// The container's `command` (replaces the image's entrypoint and its CMD).
    pub entrypoint: Option<Vec<String>>,
    /// The container's `args` (replace the image's CMD).
    pub args: Vec<String>,
    /// Environment.
    pub env: Vec<(String, String)>,
    /// Node name (the container's hostname).
    pub hostname: String,
    /// Log file (stdout and stderr are appended).
    pub log: PathBuf,
    /// Where podman writes the container process's pid once it runs.
    pub pidfile: PathBuf,
    /// The node's network namespace; `None`: the host's network (loopback mode).
    pub netns: Option<PathBuf>,
    /// Volume mounts.
    pub mounts: Vec<Mount>,
    /// uid and gid (`runAsUser`, `runAsGroup`).
    pub user: Option<(u32, u32)>,
    /// Supplementary groups (`fsGroup`, `supplementalGroups`).
    pub groups: Vec<u32>,
    /// `readOnlyRootFilesystem`.
    pub read_only_root: bool,
    /// Capabilities to drop (`ALL` or names).
    pub cap_drop: Vec<String>,
    /// Capabilities to add.
    pub cap_add: Vec<String>,
    /// `allowPrivilegeEscalation: false`.
    pub no_new_privileges: bool,
    /// Pid of the agent (a label, for the sweep of a crashed agent's containers).
    pub agent_pid: u32,
}

/// The container name for container `container` of the pod with `uid`: unique per pod and
/// container, and a valid podman name (uids and container names are DNS-style).
pub fn container_name(uid: &str, container: &str) -> String {
    let clean = |s: &str| s.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect::<String>();
    format!("sna-{}-{}", clean(uid), clean(container))
}

/// The arguments of `podman` that run `l` in the foreground (pure).
pub fn run_args(l: &PodmanLaunch) -> Vec<String> {
    let mut a: Vec<String> = ["run", "--rm", "--pull", "never", "--log-driver", "passthrough", "--name"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    a.push(l.name.clone());
    a.extend(["--label".into(), format!("{LABEL_AGENT_PID}={}", l.agent_pid)]);
    a.extend(["--pidfile".into(), l.pidfile.display().to_string()]);
    a.push("--network".into());
    a.push(match &l.netns {
        Some(p) => format!("ns:{}", p.display()),
        None => "host".into(),
    });
    a.extend(["--hostname".into(), l.hostname.clone()]);
    if let Some((uid, gid)) = l.user {
        a.extend(["--user".into(), format!("{uid}:{gid}")]);
    }
    for g in &l.groups {
        a.extend(["--group-add".into(), g.to_string()]);
    }
    if l.read_only_root {
        // Kubernetes mounts no tmpfs on a read-only root; podman would on /tmp, /run, /var/tmp.
        a.extend(["--read-only".into(), "--read-only-tmpfs=false".into()]);
    }
    for c in &l.cap_drop {
        a.extend(["--cap-drop".into(), c.clone()]);
    }
    for c in &l.cap_add {
        a.extend(["--cap-add".into(), c.clone()]);
    }
    if l.no_new_privileges {
        a.extend(["--security-opt".into(), "no-new-privileges".into()]);
    }
    for (k, v) in &l.env {
        a.extend(["-e".into(), format!("{k}={v}")]);
    }
    for m in &l.mounts {
        let ro = if m.read_only { ":ro" } else { "" };
        a.extend(["-v".into(), format!("{}:{}{ro}", m.host.display(), m.path)]);
    }
    if let Some(ep) = &l.entrypoint {
        // A JSON array is podman's unambiguous form of a multi-word entrypoint.
        a.extend(["--entrypoint".into(), serde_json::Value::from(ep.clone()).to_string()]);
    }
    a.push(l.image.clone());
    a.extend(l.args.iter().cloned());
    a
}

/// How the agent runs podman: with its environment (PATH, HOME) and a `CONTAINERS_CONF`.
#[derive(Debug, Clone, Default)]
pub struct Podman {
    /// The `CONTAINERS_CONF` the agent wrote, when the environment named none.
    pub conf: Option<PathBuf>,
    /// The podman program (default: `podman`, looked up in `PATH`).
    pub program: Option<PathBuf>,
}

/// A waiting reason and message for a container that could not be started.
pub type StartError = (&'static str, String);

fn not_installed(e: &std::io::Error) -> StartError {
    let msg = format!(
        "running podman: {e}; install it (apt-get install -y podman runc) and build the images \
         with kind-tests/build-images.sh"
    );
    (REASON_START_ERROR, msg)
}

impl Podman {
    /// Uses `CONTAINERS_CONF` from the environment, or writes [`CONTAINERS_CONF`] into
    /// `state_dir` and uses that.
    pub fn setup(state_dir: &Path) -> std::io::Result<Podman> {
        if std::env::var_os("CONTAINERS_CONF").is_some() {
            return Ok(Podman::default());
        }
        let path = state_dir.join("containers.conf");
        std::fs::write(&path, CONTAINERS_CONF)?;
        Ok(Podman { conf: Some(path), program: None })
    }

    /// A `podman` command with the agent's environment and our configuration.
    pub fn command(&self) -> tokio::process::Command {
        let mut cmd = tokio::process::Command::new(self.program.as_deref().unwrap_or(Path::new("podman")));
        if let Some(conf) = &self.conf {
            cmd.env("CONTAINERS_CONF", conf);
        }
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        cmd
    }

    /// Runs a housekeeping command to its end (bounded), returning its output.
    async fn output(&self, args: &[&str]) -> std::io::Result<std::process::Output> {
        let out = self.command().args(args).output();
        tokio::time::timeout(COMMAND_TIMEOUT, out)
            .await
            .map_err(|_| std::io::Error::other(format!("podman {} took over {COMMAND_TIMEOUT:?}", args.join(" "))))?
    }

    /// Checks that the image is here and removes a stale container of the same name (a
    /// crashed agent's, or one that outlived its `podman run`).
    pub async fn prepare(&self, l: &PodmanLaunch) -> Result<(), StartError> {
        let out = self.output(&["image", "exists", &l.image]).await.map_err(|e| not_installed(&e))?;
        match out.status.code() {
            Some(0) => {}
            Some(1) => {
                let msg = format!(
                    "image {:?} is not present and is never pulled here: build it with kind-tests/build-images.sh",
                    l.image
                );
                return Err((REASON_NEVER_PULL, msg));
            }
            _ => {
                let msg = format!("podman image exists {}: {}", l.image, String::from_utf8_lossy(&out.stderr).trim());
                return Err((REASON_START_ERROR, msg));
            }
        }
        // A subPath directory may not exist yet (podman refuses a missing source), and a
        // mount point inside another volume is made in that volume's directory.
        let binds: Vec<(PathBuf, String)> = l.mounts.iter().map(|m| (m.host.clone(), m.path.clone())).collect();
        binds
            .iter()
            .try_for_each(|(host, _)| std::fs::create_dir_all(host))
            .and_then(|_| crate::process::prepare_mount_points(&binds, false))
            .map_err(|e| (REASON_START_ERROR, format!("preparing the volumes of {}: {e}", l.name)))?;
        self.remove(&l.name).await;
        Ok(())
    }

    /// Starts `podman run` for `l` in the foreground (its own process group, so that signals
    /// meant for the agent's terminal do not reach it), output appended to `l.log`.
    pub fn spawn(&self, l: &PodmanLaunch) -> std::io::Result<tokio::process::Child> {
        match std::fs::remove_file(&l.pidfile) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let log = OpenOptions::new().create(true).append(true).open(&l.log)?;
        let mut cmd = self.command();
        cmd.args(run_args(l)).stdout(log.try_clone()?).stderr(log).process_group(0);
        cmd.spawn()
    }

    /// Waits until the container's process exists (podman wrote its pid, about 0.2 s after
    /// `podman run` began here), so that the container counts as started, and is probed,
    /// from then on, as a kubelet reports a container started once its runtime has created
    /// it. Returns early when `podman run` exits, and after [`COMMAND_TIMEOUT`] at most.
    pub async fn wait_running(&self, child: &mut tokio::process::Child, l: &PodmanLaunch) {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        while tokio::time::Instant::now() < deadline {
            let written = std::fs::metadata(&l.pidfile).is_ok_and(|m| m.len() > 0);
            if written || !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tracing::warn!(container = %l.name, "podman did not report the container running in time");
    }

    /// Stops the container of `child` (`podman run` of container `name`): SIGTERM, which
    /// podman forwards to the container, up to `grace` to exit, then removal by force; the
    /// container is gone afterwards either way.
    pub async fn terminate(
        &self,
        child: &mut tokio::process::Child,
        name: &str,
        grace: Duration,
    ) -> (Stopped, Option<std::process::ExitStatus>) {
        if let Some(pid) = child.id() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGTERM);
        }
        let (how, st) = match tokio::time::timeout(grace, child.wait()).await {
            Ok(st) => (Stopped::Gracefully, st.ok()),
            Err(_) => {
                self.remove(name).await;
                let st = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.ok().and_then(Result::ok);
                if st.is_none() {
                    let _ = child.start_kill();
                }
                (Stopped::Killed, st)
            }
        };
        self.remove(name).await;
        (how, st)
    }

    /// Removes container `name` by force if it exists (bounded; a failure is logged).
    pub async fn remove(&self, name: &str) {
        match self.output(&["rm", "--force", "--time", "0", "--ignore", name]).await {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                tracing::warn!(container = name, stderr = %String::from_utf8_lossy(&out.stderr).trim(), "podman rm failed")
            }
            Err(e) => tracing::warn!(container = name, error = %e, "podman rm failed"),
        }
    }

    /// `podman exec` of `cmd` in container `name` (an exec probe), output discarded.
    pub fn exec(&self, name: &str, cmd: &[String]) -> tokio::process::Command {
        let mut c = self.command();
        c.arg("exec").arg(name).args(cmd).stdout(Stdio::null()).stderr(Stdio::null());
        c
    }

    /// Removes the containers of agents that are gone (their pid label names no live
    /// process); returns how many.
    pub async fn sweep_stale(&self) -> usize {
        let format = format!("{{{{.Names}}}} {{{{index .Labels \"{LABEL_AGENT_PID}\"}}}}");
        let filter = format!("label={LABEL_AGENT_PID}");
        let out = match self.output(&["ps", "--all", "--filter", &filter, "--format", &format]).await {
            Ok(out) if out.status.success() => out,
            Ok(_) | Err(_) => return 0,
        };
        let mut removed = 0;
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some((name, pid)) = line.split_once(' ') else { continue };
            let Ok(pid) = pid.trim().parse::<u32>() else { continue };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                self.remove(name).await;
                removed += 1;
            }
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> PodmanLaunch {
        PodmanLaunch {
            name: "sna-u1-relay".into(),
            image: "ghcr.io/scistream/s2ds:0.1.0".into(),
            hostname: "gw-a".into(),
            pidfile: "/p/logs/relay.pid".into(),
            agent_pid: 42,
            ..PodmanLaunch::default()
        }
    }

    /// The flags of `run_args` between the fixed prefix and the image.
    fn flags(l: &PodmanLaunch) -> Vec<String> {
        let a = run_args(l);
        let image_at = a.iter().rposition(|x| x == &l.image).expect("image in args");
        a[15..image_at].to_vec()
    }

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn fixed_prefix_network_and_hostname() {
        let a = run_args(&base());
        assert_eq!(
            a[..15],
            s(&[
                "run",
                "--rm",
                "--pull",
                "never",
                "--log-driver",
                "passthrough",
                "--name",
                "sna-u1-relay",
                "--label",
                "io.scistream.nodeagent.pid=42",
                "--pidfile",
                "/p/logs/relay.pid",
                "--network",
                "host",
                "--hostname"
            ])[..]
        );
        assert_eq!(a[15..], s(&["gw-a", "ghcr.io/scistream/s2ds:0.1.0"])[..]);
        let netns = PodmanLaunch { netns: Some("/run/netns/sna-1-n-gw-a".into()), ..base() };
        assert_eq!(run_args(&netns)[13], "ns:/run/netns/sna-1-n-gw-a");
    }

    #[test]
    fn security_context_volumes_env_and_entrypoint() {
        let cases: Vec<(&str, PodmanLaunch, Vec<String>)> = vec![
            ("nothing asked", base(), s(&["gw-a"])),
            (
                "user and groups",
                PodmanLaunch { user: Some((65532, 65532)), groups: vec![4, 65532], ..base() },
                s(&["gw-a", "--user", "65532:65532", "--group-add", "4", "--group-add", "65532"]),
            ),
            ("groups without a user", PodmanLaunch { groups: vec![7], ..base() }, s(&["gw-a", "--group-add", "7"])),
            (
                "read-only root, no tmpfs",
                PodmanLaunch { read_only_root: true, ..base() },
                s(&["gw-a", "--read-only", "--read-only-tmpfs=false"]),
            ),
            (
                "capabilities and no privilege escalation",
                PodmanLaunch {
                    cap_drop: s(&["ALL"]),
                    cap_add: s(&["NET_BIND_SERVICE"]),
                    no_new_privileges: true,
                    ..base()
                },
                s(&[
                    "gw-a",
                    "--cap-drop",
                    "ALL",
                    "--cap-add",
                    "NET_BIND_SERVICE",
                    "--security-opt",
                    "no-new-privileges",
                ]),
            ),
            (
                "env and volumes, read-only and writable",
                PodmanLaunch {
                    env: vec![("A".into(), "1 2".into()), ("B".into(), "x=y".into())],
                    mounts: vec![
                        Mount { host: "/s/v/config".into(), path: "/etc/s2ds/config".into(), read_only: true },
                        Mount { host: "/s/v/run".into(), path: "/run/s2ds".into(), read_only: false },
                    ],
                    ..base()
                },
                s(&[
                    "gw-a",
                    "-e",
                    "A=1 2",
                    "-e",
                    "B=x=y",
                    "-v",
                    "/s/v/config:/etc/s2ds/config:ro",
                    "-v",
                    "/s/v/run:/run/s2ds",
                ]),
            ),
            (
                "command as a JSON entrypoint",
                PodmanLaunch { entrypoint: Some(s(&["/bin/sh", "-c"])), ..base() },
                s(&["gw-a", "--entrypoint", r#"["/bin/sh","-c"]"#]),
            ),
        ];
        for (what, l, want) in cases {
            assert_eq!(flags(&l), want, "{what}");
        }
    }

    #[test]
    fn args_follow_the_image() {
        let l = PodmanLaunch { args: s(&["--config", "/etc/s2ds/config/config.yaml"]), ..base() };
        let a = run_args(&l);
        assert_eq!(
            a[a.len() - 3..],
            s(&["ghcr.io/scistream/s2ds:0.1.0", "--config", "/etc/s2ds/config/config.yaml"])[..]
        );
    }

    #[test]
    fn names_are_valid_and_distinct() {
        let a = container_name("5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "relay");
        assert_eq!(a, "sna-5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d-relay");
        assert_ne!(a, container_name("5b1d3c7e-2a4f-4e8b-9c0d-1e2f3a4b5c6d", "sidecar"));
        assert!(container_name("u/1", "c.d").chars().all(|c| c.is_ascii_alphanumeric() || c == '-'));
    }

    #[tokio::test]
    async fn without_podman_the_start_error_says_how_to_install_it() {
        let p = Podman { conf: None, program: Some("/nonexistent/podman".into()) };
        let (reason, msg) = p.prepare(&base()).await.expect_err("no podman");
        assert_eq!(reason, REASON_START_ERROR);
        assert!(msg.contains("apt-get install -y podman runc") && msg.contains("build-images.sh"), "{msg}");
        let d = tempfile::tempdir().expect("tmp");
        let l = PodmanLaunch { log: d.path().join("c.log"), pidfile: d.path().join("c.pid"), ..base() };
        assert_eq!(p.spawn(&l).expect_err("no podman").kind(), std::io::ErrorKind::NotFound);
    }

    #[test]
    fn setup_writes_a_conf_only_when_none_is_named() {
        let d = tempfile::tempdir().expect("tmp");
        let p = Podman::setup(d.path()).expect("setup");
        match std::env::var_os("CONTAINERS_CONF") {
            Some(_) => assert!(p.conf.is_none()),
            None => {
                let conf = p.conf.expect("conf written");
                let text = std::fs::read_to_string(conf).expect("read");
                assert!(text.contains("nofile=16384:16384") && text.contains("runtime = \"runc\""), "{text}");
            }
        }
    }
}
