//! What a pod's containers need before they start: the agent's and the pod's
//! context, volume files at their places, and each container's launch
//! prepared for its runtime from the pod spec (environment, `$(VAR)`
//! expansion, mounts, user, security context).
//!
//! Both the pod worker ([`crate::worker`]) and the container supervisor
//! ([`crate::container`]) use this module; it uses neither.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret};
use kube::{Api, Client};

use crate::Backoff;
use crate::images::{ImageMap, Runtime};
use crate::network::Network;
use crate::podman::{self, Mount, Podman, PodmanLaunch};
use crate::process::Launch;
use crate::runtime::Prepared;
use crate::status::{REASON_IMAGE, REASON_START_ERROR};
use crate::volumes::{self, Sources, VolumeContent};

/// Waiting reason when volumes or env cannot be prepared.
pub const REASON_CONFIG: &str = "CreateContainerConfigError";

/// Agent-wide context of pod workers.
pub struct Ctx {
    /// API client.
    pub client: Client,
    /// Image → program rules.
    pub images: ImageMap,
    /// The built topology.
    pub network: Arc<Network>,
    /// Directory holding one directory per pod.
    pub pods_dir: PathBuf,
    /// Restart backoff.
    pub backoff: Backoff,
    /// How often ConfigMap/Secret volumes are refreshed.
    pub sync_period: Duration,
    /// Whether processes get mount namespaces and pod users (root).
    pub privileged: bool,
    /// How podman runs (images of the podman runtime).
    pub podman: Podman,
    /// Containers are reported Running and Ready, never started (see
    /// [`crate::AgentConfig::simulated`]).
    pub simulated: bool,
    /// Labels of pods that run even when simulated ([`crate::AgentConfig::always_run`]).
    pub always_run: Vec<(String, String)>,
}

impl Ctx {
    /// Whether `pod` is only reported running (simulated), not run.
    pub fn simulates(&self, pod: &k8s_openapi::api::core::v1::Pod) -> bool {
        let labels = pod.metadata.labels.as_ref();
        self.simulated && !self.always_run.iter().any(|(k, v)| labels.and_then(|l| l.get(k)).is_some_and(|x| x == v))
    }
}

/// A pod's context, shared by its tasks.
pub struct PodCtx {
    /// Agent context.
    pub ctx: Arc<Ctx>,
    /// Node name.
    pub node: String,
    /// `namespace/name`, for logs.
    pub key: String,
    /// Pod namespace.
    pub namespace: String,
    /// Pod uid (podman container names).
    pub uid: String,
    /// Pod directory (`volumes/`, `logs/`).
    pub dir: PathBuf,
    /// Node network namespace.
    pub netns: Option<PathBuf>,
    /// Node address (the pod IP for hostNetwork).
    pub address: Ipv4Addr,
}

/// A prepared launch, or the waiting reason and message that prevent it.
pub type LaunchResult = Result<Prepared, (&'static str, String)>;

impl PodCtx {
    fn volume_dir(&self, name: &str) -> PathBuf {
        self.dir.join("volumes").join(name)
    }

    /// Log file of `container`.
    pub fn log_path(&self, container: &str) -> PathBuf {
        self.dir.join("logs").join(format!("{container}.log"))
    }

    /// Every mount of `c` with its host directory (no subPath support beyond a plain
    /// subdirectory).
    fn mounts(&self, c: &Container) -> Vec<Mount> {
        c.volume_mounts
            .iter()
            .flatten()
            .map(|m| {
                let mut host = self.volume_dir(&m.name);
                if let Some(sub) = m.sub_path.as_ref().filter(|s| !s.is_empty()) {
                    host = host.join(sub);
                }
                Mount { host, path: m.mount_path.clone(), read_only: m.read_only == Some(true) }
            })
            .collect()
    }

    /// (mount path, host directory) of every mount of `c`, as the path rewrite takes them.
    fn mount_paths(&self, c: &Container) -> Vec<(String, PathBuf)> {
        self.mounts(c).into_iter().map(|m| (m.path, m.host)).collect()
    }

    async fn sources(&self, pod: &Pod) -> Sources {
        let (cms, secrets) = volumes::references(pod);
        let mut s = Sources::default();
        let cm_api: Api<ConfigMap> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in cms {
            if let Ok(Some(cm)) = cm_api.get_opt(&name).await {
                s.config_maps.insert(name, cm);
            }
        }
        let secret_api: Api<Secret> = Api::namespaced(self.ctx.client.clone(), &self.namespace);
        for name in secrets {
            if let Ok(Some(sec)) = secret_api.get_opt(&name).await {
                s.secrets.insert(name, sec);
            }
        }
        s
    }

    fn fs_group(pod: &Pod) -> Option<u32> {
        pod.spec.as_ref()?.security_context.as_ref()?.fs_group.map(|g| g as u32)
    }

    /// Brings every volume's files up to date; returns whether any changed.
    pub async fn sync_volumes(&self, pod: &Pod) -> Result<bool, String> {
        let sources = self.sources(pod).await;
        let all_mounts: Vec<(String, PathBuf)> =
            pod.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| self.mount_paths(c)).collect();
        let mut changed = false;
        for v in pod.spec.as_ref().and_then(|s| s.volumes.as_ref()).into_iter().flatten() {
            let Some(mut content) = volumes::content(v, &sources)? else { continue };
            if !self.ctx.privileged
                && let VolumeContent::Files(files) = &mut content
            {
                for (bytes, _) in files.values_mut() {
                    if let Ok(text) = std::str::from_utf8(bytes) {
                        *bytes = volumes::rewrite_paths(text, &all_mounts).into_bytes();
                    }
                }
            }
            let dir = self.volume_dir(&v.name);
            changed |= volumes::sync(&dir, &content, Self::fs_group(pod))
                .map_err(|e| format!("writing volume {} in {}: {e}", v.name, dir.display()))?;
        }
        Ok(changed)
    }

    /// Prepares the launch of `c` in the runtime of its image's rule.
    pub async fn launch(&self, pod: &Pod, c: &Container) -> LaunchResult {
        let image = c.image.clone().unwrap_or_default();
        let sources = self.sources(pod).await;
        let env = crate::env::resolve(pod, c, &sources, &self.address.to_string()).map_err(|e| (REASON_CONFIG, e))?;
        // Kubernetes expands $(VAR) in command and args alike.
        let expand = |v: &Option<Vec<String>>| -> Vec<String> {
            v.iter().flatten().map(|a| crate::env::expand(a, &env)).collect()
        };
        let (command, args) = (expand(&c.command), expand(&c.args));
        if self.ctx.images.runtime(&image) == Runtime::Podman {
            return self.podman_launch(pod, c, image, command, args, env).map(Prepared::Podman);
        }
        let inv = self.ctx.images.resolve(&image, &command, &args).ok_or_else(|| image_error(&image))?;
        let mounts = self.mount_paths(c);
        let (args, binds, user) = if self.ctx.privileged {
            let binds = mounts.iter().map(|(m, h)| (h.clone(), m.clone())).collect();
            (inv.args, binds, user_of(pod, c))
        } else {
            (inv.args.iter().map(|a| volumes::rewrite_paths(a, &mounts)).collect(), vec![], None)
        };
        Ok(Prepared::Process(Launch {
            program: inv.program,
            args,
            env,
            hostname: self.node.clone(),
            log: self.log_path(&c.name),
            netns: self.netns.clone(),
            binds,
            user,
        }))
    }

    /// The podman launch of `c`: Kubernetes' `command`/`args` over the image's
    /// entrypoint/CMD, the security context as podman flags.
    fn podman_launch(
        &self,
        pod: &Pod,
        c: &Container,
        image: String,
        command: Vec<String>,
        args: Vec<String>,
        env: Vec<(String, String)>,
    ) -> Result<PodmanLaunch, (&'static str, String)> {
        if !self.ctx.privileged {
            // Unprivileged, volume files are rewritten to host paths, which a container,
            // seeing the real mount paths, must not get.
            let msg = format!("image {image:?} runs with podman, which needs the agent to run as root (privileged)");
            return Err((REASON_START_ERROR, msg));
        }
        let l = PodmanLaunch {
            name: podman::container_name(&self.uid, &c.name),
            image,
            entrypoint: (!command.is_empty()).then_some(command),
            args,
            env,
            hostname: self.node.clone(),
            log: self.log_path(&c.name),
            pidfile: self.dir.join(format!("{}.pid", c.name)),
            netns: self.netns.clone(),
            mounts: self.mounts(c),
            agent_pid: std::process::id(),
            ..PodmanLaunch::default()
        };
        Ok(with_security(pod, c, l))
    }

    /// An exec command (a probe's or a lifecycle hook's), run like the container (podman:
    /// `podman exec`; a process: same namespaces, mounts and user, the image's own program
    /// named by its path in the image being the local program, [`ImageMap::exec_program`]),
    /// output discarded.
    pub fn exec_command(&self, pod: &Pod, c: &Container, cmd: &[String]) -> tokio::process::Command {
        let Some((program, args)) = cmd.split_first() else { return tokio::process::Command::new("false") };
        if self.ctx.images.runtime(c.image.as_deref().unwrap_or_default()) == Runtime::Podman {
            return self.ctx.podman.exec(&podman::container_name(&self.uid, &c.name), cmd);
        }
        let mounts = self.mount_paths(c);
        let privileged = self.ctx.privileged;
        let launch = Launch {
            program: self.ctx.images.exec_program(c.image.as_deref().unwrap_or_default(), program),
            args: if privileged {
                args.to_vec()
            } else {
                args.iter().map(|a| volumes::rewrite_paths(a, &mounts)).collect()
            },
            hostname: self.node.clone(),
            log: "/dev/null".into(),
            netns: self.netns.clone(),
            binds: if privileged { mounts.iter().map(|(m, h)| (h.clone(), m.clone())).collect() } else { vec![] },
            user: if privileged { user_of(pod, c) } else { None },
            env: vec![],
        };
        crate::process::command(&launch).unwrap_or_else(|e| {
            tracing::debug!(pod = %self.key, error = %e, "preparing exec probe failed");
            tokio::process::Command::new("false")
        })
    }
}

/// `l` with the pod's and container's security context: user, groups, read-only root,
/// capabilities, no privilege escalation.
pub fn with_security(pod: &Pod, c: &Container, l: PodmanLaunch) -> PodmanLaunch {
    let sc = c.security_context.as_ref();
    let caps = sc.and_then(|s| s.capabilities.as_ref());
    PodmanLaunch {
        user: user_of(pod, c).map(|(uid, gid, _)| (uid, gid)),
        groups: groups_of(pod),
        read_only_root: sc.and_then(|s| s.read_only_root_filesystem) == Some(true),
        cap_drop: caps.and_then(|c| c.drop.clone()).unwrap_or_default(),
        cap_add: caps.and_then(|c| c.add.clone()).unwrap_or_default(),
        no_new_privileges: sc.and_then(|s| s.allow_privilege_escalation) == Some(false),
        ..l
    }
}

/// The waiting reason and message of an image no rule maps.
pub fn image_error(image: &str) -> (&'static str, String) {
    (REASON_IMAGE, format!("image {image:?} maps to no local program; add an image rule (--images file or .image())"))
}

/// The pod's supplementary groups: `fsGroup` and `supplementalGroups`, sorted, once each.
pub fn groups_of(pod: &Pod) -> Vec<u32> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let fs_group = psc.and_then(|s| s.fs_group);
    let supplemental = psc.and_then(|s| s.supplemental_groups.clone()).unwrap_or_default();
    let mut groups: Vec<u32> = fs_group.into_iter().chain(supplemental).map(|g| g as u32).collect();
    groups.sort_unstable();
    groups.dedup();
    groups
}

/// (uid, gid, groups) from the pod's and container's security contexts (the container's
/// win); `None` when nothing asks for a user.
pub fn user_of(pod: &Pod, c: &Container) -> Option<(u32, u32, Vec<u32>)> {
    let psc = pod.spec.as_ref().and_then(|s| s.security_context.as_ref());
    let csc = c.security_context.as_ref();
    let uid = csc.and_then(|s| s.run_as_user).or_else(|| psc.and_then(|s| s.run_as_user));
    let gid = csc.and_then(|s| s.run_as_group).or_else(|| psc.and_then(|s| s.run_as_group));
    Some((uid? as u32, gid.map_or(0, |g| g as u32), groups_of(pod)))
}

/// The pod's termination grace period (default 30 s).
pub fn grace_of(pod: &Pod) -> Duration {
    let s = pod.spec.as_ref().and_then(|s| s.termination_grace_period_seconds).unwrap_or(30);
    Duration::from_secs(s.max(0) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_from_pod_and_container_security_contexts() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"securityContext": {"runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532, "supplementalGroups": [4, 65532]},
                     "containers": [{"name": "a"}, {"name": "b", "securityContext": {"runAsUser": 1000}}]}
        }))
        .expect("pod");
        let cs = &pod.spec.as_ref().expect("spec").containers;
        assert_eq!(user_of(&pod, &cs[0]), Some((65532, 65532, vec![4, 65532])));
        assert_eq!(user_of(&pod, &cs[1]), Some((1000, 65532, vec![4, 65532])));
        let bare: Pod =
            serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "a"}]}})).expect("pod");
        assert_eq!(user_of(&bare, &bare.spec.as_ref().expect("spec").containers[0]), None);
        assert_eq!(groups_of(&bare), Vec::<u32>::new());
        assert_eq!(grace_of(&pod), Duration::from_secs(30));
    }

    #[test]
    fn operator_relay_pod_security_as_podman_flags() {
        // The security context the operator gives relay pods (controller/src/children).
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "spec": {"securityContext": {"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "fsGroup": 65532},
                     "containers": [{"name": "relay", "securityContext": {
                         "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                         "capabilities": {"drop": ["ALL"], "add": ["NET_ADMIN"]}}}]}
        }))
        .expect("pod");
        let c = &pod.spec.as_ref().expect("spec").containers[0];
        let l = with_security(&pod, c, PodmanLaunch::default());
        assert_eq!((l.user, l.groups.clone()), (Some((65532, 65532)), vec![65532]));
        assert!(l.read_only_root && l.no_new_privileges);
        assert_eq!((l.cap_drop.clone(), l.cap_add.clone()), (vec!["ALL".to_string()], vec!["NET_ADMIN".to_string()]));
        let bare: Pod = serde_json::from_value(serde_json::json!({"spec": {"containers": [{"name": "a",
            "securityContext": {"allowPrivilegeEscalation": true}}]}}))
        .expect("pod");
        let l = with_security(&bare, &bare.spec.as_ref().expect("spec").containers[0], PodmanLaunch::default());
        assert_eq!(l, PodmanLaunch::default(), "nothing asked, nothing set");
    }
}
