//! Pod volumes: which files each volume holds (pure), and writing them
//! under the pod's directory so they follow updates of their sources.
//!
//! ConfigMap, Secret and projected (configMap/secret sources) volumes become
//! regular files; emptyDir an empty world-writable directory. Files are
//! replaced by write-to-temp + rename, so a program watching its config file
//! never reads half a file. With an `fsGroup`, files and directories belong
//! to that group and are group-readable (as the kubelet does).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, KeyToPath, Pod, Secret, Volume};

/// ConfigMaps and Secrets a pod references (volumes and env), by name.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Sources {
    /// ConfigMaps found.
    pub config_maps: BTreeMap<String, ConfigMap>,
    /// Secrets found.
    pub secrets: BTreeMap<String, Secret>,
}

/// The desired content of one volume.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeContent {
    /// Files: relative path → (bytes, mode).
    Files(BTreeMap<PathBuf, (Vec<u8>, u32)>),
    /// An empty scratch directory the pod may write.
    Scratch,
}

/// Names of the ConfigMaps and Secrets `pod` reads.
pub fn references(pod: &Pod) -> (BTreeSet<String>, BTreeSet<String>) {
    let (mut cms, mut secrets) = (BTreeSet::new(), BTreeSet::new());
    let Some(spec) = &pod.spec else { return (cms, secrets) };
    for v in spec.volumes.iter().flatten() {
        if let Some(c) = &v.config_map {
            cms.insert(c.name.clone());
        }
        if let Some(s) = v.secret.as_ref().and_then(|s| s.secret_name.clone()) {
            secrets.insert(s);
        }
        for src in v.projected.iter().flat_map(|p| p.sources.iter().flatten()) {
            if let Some(c) = &src.config_map {
                cms.insert(c.name.clone());
            }
            if let Some(s) = &src.secret {
                secrets.insert(s.name.clone());
            }
        }
    }
    for c in &spec.containers {
        for e in c.env.iter().flatten() {
            let vf = e.value_from.as_ref();
            if let Some(r) = vf.and_then(|v| v.config_map_key_ref.as_ref()) {
                cms.insert(r.name.clone());
            }
            if let Some(r) = vf.and_then(|v| v.secret_key_ref.as_ref()) {
                secrets.insert(r.name.clone());
            }
        }
    }
    (cms, secrets)
}

fn cm_data(cm: &ConfigMap) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        cm.data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())).collect();
    out.extend(cm.binary_data.iter().flatten().map(|(k, ByteString(v))| (k.clone(), v.clone())));
    out
}

fn secret_data(s: &Secret) -> BTreeMap<String, Vec<u8>> {
    let mut out: BTreeMap<String, Vec<u8>> =
        s.data.iter().flatten().map(|(k, ByteString(v))| (k.clone(), v.clone())).collect();
    out.extend(s.string_data.iter().flatten().map(|(k, v)| (k.clone(), v.clone().into_bytes())));
    out
}

/// A relative path without `..` or absolute components.
fn safe_relative(p: &str) -> Option<PathBuf> {
    let path = PathBuf::from(p);
    path.components().all(|c| matches!(c, Component::Normal(_))).then_some(path).filter(|p| !p.as_os_str().is_empty())
}

/// Projects `data` through `items` (all keys when `None`).
fn project(
    what: &str,
    data: Option<BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
    optional: bool,
    out: &mut BTreeMap<PathBuf, (Vec<u8>, u32)>,
) -> Result<(), String> {
    let Some(data) = data else {
        return if optional { Ok(()) } else { Err(format!("{what} not found")) };
    };
    let pairs: Vec<(String, String, u32)> = match items {
        Some(items) => {
            items.iter().map(|i| (i.key.clone(), i.path.clone(), i.mode.map_or(mode, |m| m as u32))).collect()
        }
        None => data.keys().map(|k| (k.clone(), k.clone(), mode)).collect(),
    };
    for (key, path, m) in pairs {
        let bytes = match data.get(&key) {
            Some(b) => b.clone(),
            None if optional => continue,
            None => return Err(format!("{what} has no key {key:?}")),
        };
        let rel = safe_relative(&path).ok_or_else(|| format!("{what}: item path {path:?} must be relative"))?;
        out.insert(rel, (bytes, m & 0o777));
    }
    Ok(())
}

/// What `volume` should contain, given the pod's `sources`.
pub fn content(volume: &Volume, sources: &Sources) -> Result<Option<VolumeContent>, String> {
    let mut files = BTreeMap::new();
    if let Some(c) = &volume.config_map {
        let data = sources.config_maps.get(&c.name).map(cm_data);
        let mode = c.default_mode.map_or(0o644, |m| m as u32);
        project(
            &format!("ConfigMap {:?}", c.name),
            data,
            c.items.as_ref(),
            mode,
            c.optional == Some(true),
            &mut files,
        )?;
    } else if let Some(s) = &volume.secret {
        let name = s.secret_name.clone().unwrap_or_default();
        let data = sources.secrets.get(&name).map(secret_data);
        let mode = s.default_mode.map_or(0o644, |m| m as u32);
        project(&format!("Secret {name:?}"), data, s.items.as_ref(), mode, s.optional == Some(true), &mut files)?;
    } else if let Some(p) = &volume.projected {
        let mode = p.default_mode.map_or(0o644, |m| m as u32);
        for src in p.sources.iter().flatten() {
            if let Some(c) = &src.config_map {
                let data = sources.config_maps.get(&c.name).map(cm_data);
                let what = format!("ConfigMap {:?}", c.name);
                project(&what, data, c.items.as_ref(), mode, c.optional == Some(true), &mut files)?;
            }
            if let Some(s) = &src.secret {
                let data = sources.secrets.get(&s.name).map(secret_data);
                let what = format!("Secret {:?}", s.name);
                project(&what, data, s.items.as_ref(), mode, s.optional == Some(true), &mut files)?;
            }
        }
    } else if volume.empty_dir.is_some() {
        return Ok(Some(VolumeContent::Scratch));
    } else {
        return Ok(None);
    }
    Ok(Some(VolumeContent::Files(files)))
}

/// Replaces each mount path prefix in `text` by its host directory, longest
/// mount path first (the unprivileged fallback: programs see host paths).
pub fn rewrite_paths(text: &str, mounts: &[(String, PathBuf)]) -> String {
    let mut sorted: Vec<&(String, PathBuf)> = mounts.iter().collect();
    sorted.sort_by_key(|(m, _)| std::cmp::Reverse(m.len()));
    let mut out = text.to_string();
    for (i, (m, _)) in sorted.iter().enumerate() {
        // Placeholders first, so a host path containing another mount path is not rewritten twice.
        out = out.replace(m.as_str(), &format!("\u{0}{i}\u{0}"));
    }
    for (i, (_, host)) in sorted.iter().enumerate() {
        out = out.replace(&format!("\u{0}{i}\u{0}"), &host.to_string_lossy());
    }
    out
}

/// Writes `content` into `dir`: changed files atomically, stale files
/// removed. Returns whether anything changed.
pub fn sync(dir: &Path, content: &VolumeContent, fs_group: Option<u32>) -> std::io::Result<bool> {
    use std::os::unix::fs::PermissionsExt;
    let group_perm = |mode: u32| if fs_group.is_some() { mode | 0o040 } else { mode };
    std::fs::create_dir_all(dir)?;
    let files = match content {
        VolumeContent::Scratch => {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))?;
            return Ok(false);
        }
        VolumeContent::Files(f) => f,
    };
    chown_group(dir, fs_group)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755))?;
    let mut changed = false;
    for (rel, (bytes, mode)) in files {
        let path = dir.join(rel);
        let mode = group_perm(*mode);
        let same = std::fs::read(&path).ok().as_ref() == Some(bytes)
            && std::fs::metadata(&path).map(|m| m.permissions().mode() & 0o777).ok() == Some(mode);
        if same {
            continue;
        }
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let tmp = path.with_file_name(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        std::fs::write(&tmp, bytes)?;
        chown_group(&tmp, fs_group)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(mode))?;
        std::fs::rename(&tmp, &path)?;
        changed = true;
    }
    for entry in walk(dir)? {
        let rel = entry.strip_prefix(dir).unwrap_or(&entry).to_path_buf();
        if !files.contains_key(&rel) {
            std::fs::remove_file(&entry)?;
            changed = true;
        }
    }
    Ok(changed)
}

fn chown_group(path: &Path, gid: Option<u32>) -> std::io::Result<()> {
    match gid {
        Some(g) if nix::unistd::geteuid().is_root() => std::os::unix::fs::chown(path, None, Some(g)),
        _ => Ok(()),
    }
}

/// Regular files under `dir`, recursively (bounded by the directory tree).
fn walk(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d)? {
            let e = e?;
            let ft = e.file_type()?;
            if ft.is_dir() {
                stack.push(e.path());
            } else if ft.is_file() {
                out.push(e.path());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
