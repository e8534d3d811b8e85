use std::os::unix::fs::PermissionsExt;

use k8s_openapi::api::core::v1::{ConfigMapVolumeSource, EmptyDirVolumeSource, SecretVolumeSource};

use super::*;

fn cm(name: &str, data: &[(&str, &str)]) -> ConfigMap {
    ConfigMap {
        metadata: kube::api::ObjectMeta { name: Some(name.into()), ..Default::default() },
        data: Some(data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()),
        ..ConfigMap::default()
    }
}

fn cm_volume(items: Option<Vec<KeyToPath>>) -> Volume {
    Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource { name: "c".into(), items, ..Default::default() }),
        ..Volume::default()
    }
}

fn files(c: Option<VolumeContent>) -> BTreeMap<PathBuf, (Vec<u8>, u32)> {
    match c {
        Some(VolumeContent::Files(f)) => f,
        other => panic!("{other:?}"),
    }
}

#[test]
fn config_map_items_select_and_rename() {
    let mut s = Sources::default();
    s.config_maps.insert("c".into(), cm("c", &[("node-a.yaml", "x: 1"), ("other", "y")]));
    let items = vec![KeyToPath { key: "node-a.yaml".into(), path: "config.yaml".into(), mode: None }];
    let f = files(content(&cm_volume(Some(items)), &s).expect("ok"));
    assert_eq!(f.len(), 1);
    assert_eq!(f[&PathBuf::from("config.yaml")], (b"x: 1".to_vec(), 0o644));
    let all = files(content(&cm_volume(None), &s).expect("ok"));
    assert_eq!(all.len(), 2);
}

#[test]
fn missing_sources_and_keys_are_errors_unless_optional() {
    let s = Sources::default();
    assert!(content(&cm_volume(None), &s).expect_err("missing").contains("ConfigMap \"c\" not found"));
    let mut s = Sources::default();
    s.config_maps.insert("c".into(), cm("c", &[]));
    let items = vec![KeyToPath { key: "k".into(), path: "k".into(), mode: None }];
    assert!(content(&cm_volume(Some(items)), &s).expect_err("no key").contains("no key"));
    let bad = vec![KeyToPath { key: "k".into(), path: "../etc/passwd".into(), mode: None }];
    s.config_maps.insert("c".into(), cm("c", &[("k", "v")]));
    assert!(content(&cm_volume(Some(bad)), &s).is_err());
}

#[test]
fn secret_default_mode_and_empty_dir() {
    let mut s = Sources::default();
    s.secrets.insert(
        "t".into(),
        Secret { data: Some([("tls.crt".to_string(), ByteString(b"PEM".to_vec()))].into()), ..Secret::default() },
    );
    let v = Volume {
        name: "tls".into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some("t".into()),
            default_mode: Some(0o440),
            ..Default::default()
        }),
        ..Volume::default()
    };
    let f = files(content(&v, &s).expect("ok"));
    assert_eq!(f[&PathBuf::from("tls.crt")].1, 0o440);
    let e = Volume { name: "run".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Volume::default() };
    assert_eq!(content(&e, &s).expect("ok"), Some(VolumeContent::Scratch));
}

#[test]
fn references_cover_volumes_and_env() {
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "spec": {"containers": [{"name": "c", "env": [
            {"name": "A", "valueFrom": {"secretKeyRef": {"name": "s2", "key": "k"}}}]}],
         "volumes": [{"name": "v", "configMap": {"name": "c1"}}, {"name": "w", "secret": {"secretName": "s1"}}]}
    }))
    .expect("pod");
    let (c, s) = references(&pod);
    assert_eq!(c.into_iter().collect::<Vec<_>>(), vec!["c1".to_string()]);
    assert_eq!(s.into_iter().collect::<Vec<_>>(), vec!["s1".to_string(), "s2".to_string()]);
}

#[test]
fn rewrite_longest_first() {
    let m = vec![
        ("/etc/s2ds".to_string(), PathBuf::from("/tmp/p/a")),
        ("/etc/s2ds/tls".to_string(), PathBuf::from("/tmp/p/b")),
    ];
    assert_eq!(rewrite_paths("--c /etc/s2ds/c.yaml /etc/s2ds/tls/x", &m), "--c /tmp/p/a/c.yaml /tmp/p/b/x");
}

#[test]
fn sync_writes_updates_and_prunes() {
    let d = tempfile::tempdir().expect("tmp");
    let dir = d.path().join("v");
    let mut f = BTreeMap::new();
    f.insert(PathBuf::from("a"), (b"1".to_vec(), 0o440));
    f.insert(PathBuf::from("sub/b"), (b"2".to_vec(), 0o644));
    assert!(sync(&dir, &VolumeContent::Files(f.clone()), Some(65532)).expect("sync"));
    let mode = std::fs::metadata(dir.join("a")).expect("a").permissions().mode() & 0o777;
    assert_eq!(mode, 0o440);
    assert!(!sync(&dir, &VolumeContent::Files(f.clone()), Some(65532)).expect("again"), "no change");
    f.remove(&PathBuf::from("sub/b"));
    f.insert(PathBuf::from("a"), (b"3".to_vec(), 0o440));
    assert!(sync(&dir, &VolumeContent::Files(f), Some(65532)).expect("update"));
    assert_eq!(std::fs::read(dir.join("a")).expect("read"), b"3");
    assert!(!dir.join("sub/b").exists());
}
