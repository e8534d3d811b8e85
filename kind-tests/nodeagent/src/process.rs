//! Starting and stopping one container process.
//!
//! As root, the process joins its node's network namespace, gets a private
//! mount namespace in which each volume's directory is bind-mounted at its
//! mount path, and drops to the pod's `runAsUser`/`runAsGroup` (plus
//! `fsGroup`). Each process leads its own process group, so stopping it
//! also stops what it spawned.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use crate::sys::{Isolation, c_path, isolate};

/// Default `PATH` of container processes.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Everything needed to start a container process.
#[derive(Debug, Clone, Default)]
pub struct Launch {
    /// Program.
    pub program: PathBuf,
    /// Arguments.
    pub args: Vec<String>,
    /// Environment (besides `PATH`, `HOME` and `HOSTNAME`).
    pub env: Vec<(String, String)>,
    /// Node name (`HOSTNAME`).
    pub hostname: String,
    /// Log file (stdout and stderr are appended).
    pub log: PathBuf,
    /// Network namespace to join.
    pub netns: Option<PathBuf>,
    /// (host directory, mount path) bind mounts; only as root.
    pub binds: Vec<(PathBuf, String)>,
    /// uid, gid and supplementary groups; only as root.
    pub user: Option<(u32, u32, Vec<u32>)>,
}

/// Makes sure each mount path exists to mount on: inside the source of an
/// enclosing bind when there is one, else on the host when `on_host` (an empty
/// directory such as `/etc/s2ds/config` is left there; the mount itself is
/// private). Returns the binds, outermost first. (Podman creates the outer
/// ones in the image's root itself, but not inside a read-only volume.)
pub fn prepare_mount_points(binds: &[(PathBuf, String)], on_host: bool) -> std::io::Result<Vec<(PathBuf, String)>> {
    let mut sorted = binds.to_vec();
    sorted.sort_by_key(|(_, m)| m.len());
    for (i, (_, mount)) in sorted.iter().enumerate() {
        let parent = sorted[..i].iter().rev().find(|(_, m)| Path::new(mount).starts_with(m) && m != mount);
        match parent {
            Some((src, m)) => {
                let rel = Path::new(mount).strip_prefix(m).unwrap_or(Path::new(""));
                std::fs::create_dir_all(src.join(rel))?;
            }
            None if on_host => std::fs::create_dir_all(mount)?,
            None => {}
        }
    }
    Ok(sorted)
}

/// Starts the process described by `l`.
pub fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
    command(l)?.spawn()
}

/// The command for `l`, ready to spawn (its output appended to `l.log`).
pub fn command(l: &Launch) -> std::io::Result<tokio::process::Command> {
    let log = OpenOptions::new().create(true).append(true).open(&l.log)?;
    let mut cmd = std::process::Command::new(&l.program);
    cmd.args(&l.args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("HOME", "/")
        .env("HOSTNAME", &l.hostname)
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .current_dir("/")
        .process_group(0);
    let mut iso = Isolation::default();
    if let Some(ns) = &l.netns {
        iso.netns = Some(std::fs::File::open(ns)?.into());
    }
    for (src, mount) in prepare_mount_points(&l.binds, true)? {
        iso.binds.push((c_path(&src)?, c_path(Path::new(&mount))?));
    }
    iso.user = l.user.clone();
    isolate(&mut cmd, iso);
    let mut cmd = tokio::process::Command::from(cmd);
    cmd.kill_on_drop(true);
    Ok(cmd)
}

use std::os::unix::process::CommandExt as _;

/// How a stop ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// Exited within the grace period after SIGTERM.
    Gracefully,
    /// Needed SIGKILL.
    Killed,
}

/// SIGTERM to the process group, up to `grace` to exit, then SIGKILL.
pub async fn terminate(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> (Stopped, Option<std::process::ExitStatus>) {
    let Some(pid) = child.id() else {
        return (Stopped::Gracefully, child.try_wait().ok().flatten());
    };
    let pgid = Pid::from_raw(pid as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    if let Ok(Ok(st)) = tokio::time::timeout(grace, child.wait()).await {
        let _ = killpg(pgid, Signal::SIGKILL);
        return (Stopped::Gracefully, Some(st));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let st = tokio::time::timeout(Duration::from_secs(5), child.wait()).await.ok().and_then(Result::ok);
    (Stopped::Killed, st)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::process::ExitStatusExt;

    #[tokio::test]
    async fn runs_logs_and_terminates() {
        let d = tempfile::tempdir().expect("tmp");
        let l = Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "echo hello $X; exec sleep 30".into()],
            env: vec![("X".into(), "world".into())],
            log: d.path().join("c.log"),
            ..Launch::default()
        };
        let mut child = spawn(&l).expect("spawn");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&l.log).unwrap_or_default().contains("hello world") {
            assert!(tokio::time::Instant::now() < deadline, "no log line");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (how, st) = terminate(&mut child, Duration::from_secs(5)).await;
        assert_eq!(how, Stopped::Gracefully);
        assert_eq!(st.and_then(|s| s.signal()), Some(15));
    }

    #[tokio::test]
    async fn sigkill_after_grace() {
        let d = tempfile::tempdir().expect("tmp");
        let l = Launch {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), "trap '' TERM; echo up; while :; do sleep 1; done".into()],
            log: d.path().join("c.log"),
            ..Launch::default()
        };
        let mut child = spawn(&l).expect("spawn");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !std::fs::read_to_string(&l.log).unwrap_or_default().contains("up") {
            assert!(tokio::time::Instant::now() < deadline, "not up");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (how, st) = terminate(&mut child, Duration::from_millis(300)).await;
        assert_eq!(how, Stopped::Killed);
        assert_eq!(st.and_then(|s| s.signal()), Some(9));
    }

    #[test]
    fn nested_mount_points_go_into_the_parent_source() {
        let d = tempfile::tempdir().expect("tmp");
        let parent_src = d.path().join("a");
        let nested_src = d.path().join("b");
        let top = d.path().join("mnt").to_string_lossy().into_owned();
        let binds = vec![(nested_src, format!("{top}/tls")), (parent_src.clone(), top.clone())];
        let sorted = prepare_mount_points(&binds, false).expect("prepare");
        assert_eq!(sorted[0].1, top);
        assert!(parent_src.join("tls").is_dir());
        assert!(!Path::new(&top).exists(), "podman creates outer mount points itself");
        prepare_mount_points(&binds, true).expect("prepare");
        assert!(Path::new(&top).is_dir());
    }
}
