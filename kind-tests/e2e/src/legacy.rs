//! SciStream 1.x's own client flow across the two facilities, driven by Python `grpcio` (a
//! gRPC implementation we did not write) running `py/s2uc.py`: `req`, the application
//! controllers' `hello`, `update` on each facility's control endpoint, and `release`. The
//! client authenticates as user `scientist` (its token is [`World::scientist_token`], the control endpoint's
//! `kubernetes` mode: TokenReview and SubjectAccessReview against the facility's API server).

use std::{
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use k8s_openapi::api::{
    core::v1::Secret,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use serde_json::{Value, json};

use crate::world::{USER_NS, World};

fn run(cmd: &mut Command) -> anyhow::Result<std::process::Output> {
    let out = cmd.output().with_context(|| format!("could not run {cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    Ok(out)
}

/// The python of a virtualenv in `cache` with `grpcio` and `grpcio-tools` (made once, from
/// PyPI, needing python3-venv: `kind-tests/setup.sh`). The control endpoint's tests use the
/// same one (`CARGO_TARGET_TMPDIR/control-endpoint-py`). Built aside and renamed into place,
/// so concurrent tests never see a half-made one. Blocking.
pub fn python(cache: &Path) -> anyhow::Result<PathBuf> {
    let py = cache.join("venv/bin/python");
    let ready = |py: &Path| {
        py.exists() && Command::new(py).args(["-c", "import grpc, grpc_tools"]).status().is_ok_and(|s| s.success())
    };
    if ready(&py) {
        return Ok(py);
    }
    std::fs::create_dir_all(cache)?;
    let building = cache.join(format!("venv-{}", std::process::id()));
    run(Command::new("python3").args(["-m", "venv", "--clear"]).arg(&building))?;
    run(Command::new(building.join("bin/python")).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        "grpcio",
        "grpcio-tools",
    ]))?;
    if std::fs::rename(&building, cache.join("venv")).is_err() {
        // Another test finished first (or a broken venv is in the way): use or replace it.
        if ready(&py) {
            let _ = std::fs::remove_dir_all(&building);
        } else {
            let _ = std::fs::remove_dir_all(cache.join("venv"));
            std::fs::rename(&building, cache.join("venv"))?;
        }
    }
    if !ready(&py) {
        bail!("the grpcio virtualenv at {} is unusable", cache.display());
    }
    Ok(py)
}

/// A 1.x client: the virtualenv's python, stubs generated from our `.proto` and the control
/// endpoints' certificates, in a scratch directory removed on drop.
pub struct Client {
    python: PathBuf,
    script: PathBuf,
    dir: PathBuf,
    endpoints: Vec<Value>,
    /// User `scientist`'s bearer token.
    token: String,
}

impl Drop for Client {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Client {
    /// Generates the stubs (grpcio-tools) from `root`'s `.proto` and fetches both facilities'
    /// control endpoint certificates (the `--server_cert` of a 1.x client).
    pub async fn new(world: &World, python: PathBuf, root: &Path) -> anyhow::Result<Client> {
        static CLIENTS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let nth = CLIENTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("scistream-s2uc-{}-{nth}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let mut client = Client {
            python,
            script: root.join("kind-tests/e2e/py/s2uc.py"),
            dir: dir.clone(),
            endpoints: vec![],
            token: world.scientist_token.clone(),
        };
        let proto = root.join("operator/control-proto/proto");
        let (py, out) = (client.python.clone(), dir.clone());
        tokio::task::spawn_blocking(move || {
            run(Command::new(py)
                .args(["-m", "grpc_tools.protoc", "-I"])
                .arg(&proto)
                .arg(format!("--python_out={}", out.display()))
                .arg(format!("--grpc_python_out={}", out.display()))
                .arg(proto.join("scistream.proto")))
        })
        .await??;
        for f in &world.facilities {
            let cert = dir.join(format!("{}.crt", f.name));
            std::fs::write(&cert, control_certificate(&f.client, &f.name).await?)?;
            client.endpoints.push(json!({"addr": f.control, "cert": cert}));
        }
        Ok(client)
    }

    /// Runs `step` of `py/s2uc.py` (`setup`, `release`) for `uid` with `config` added; returns
    /// what it printed.
    pub async fn step(&self, step: &str, uid: &str, mut config: Value) -> anyhow::Result<Value> {
        config["step"] = json!(step);
        config["uid"] = json!(uid);
        config["token"] = json!(self.token);
        config["producer"] = self.endpoints[0].clone();
        config["consumer"] = self.endpoints[1].clone();
        let mut cmd = tokio::process::Command::new(&self.python);
        cmd.arg(&self.script).arg(&self.dir).arg(config.to_string()).kill_on_drop(true);
        let out = cmd.output().await.context("running s2uc.py")?;
        if !out.status.success() {
            bail!("s2uc.py {step}: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        }
        serde_json::from_slice(&out.stdout).with_context(|| format!("s2uc.py {step} printed no JSON"))
    }
}

/// The control endpoint's generated certificate (Secret default/scistream-control-tls).
async fn control_certificate(client: &kube::Client, facility: &str) -> anyhow::Result<Vec<u8>> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let secret = secrets.get_opt("scistream-control-tls").await?;
        if let Some(crt) = secret.and_then(|s| s.data).and_then(|d| d.get("tls.crt").cloned()) {
            return Ok(crt.0);
        }
        if Instant::now() > deadline {
            bail!("{facility}: the control endpoint published no certificate within 30s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Lets user `scientist` manage StreamRequests in the users' namespace of every facility (what
/// the control endpoint's SubjectAccessReview asks for `req`, `update`, `release`).
pub async fn grant_scientist(world: &World) -> anyhow::Result<()> {
    // Applied, not created: API servers shared by several worlds keep them from one to the next.
    let pp = PatchParams::apply("scistream-e2e").force();
    for f in &world.facilities {
        let role: Role = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "streamers"},
            "rules": [{"apiGroups": ["scistream.io"], "resources": ["streamrequests"],
                       "verbs": ["get", "list", "create", "patch", "delete"]}]}))?;
        Api::<Role>::namespaced(f.client.clone(), USER_NS).patch("streamers", &pp, &Patch::Apply(&role)).await?;
        let binding: RoleBinding = serde_json::from_value(json!({"apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding", "metadata": {"name": "streamers"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "streamers"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "scientist"}]}))?;
        Api::<RoleBinding>::namespaced(f.client.clone(), USER_NS)
            .patch("streamers", &pp, &Patch::Apply(&binding))
            .await?;
    }
    Ok(())
}
