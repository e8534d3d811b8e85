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
    /// The user's token (user `scientist`'s bearer token unless [`Client::with_token`]).
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

    /// This client with another user's token (e.g. one its identity provider issued).
    pub fn with_token(mut self, token: &str) -> Client {
        self.token = token.to_owned();
        self
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

    /// Runs `actions` of `py/s2uc.py` in order (each `{"do": ..., "at": "producer"|"consumer",
    /// ...}`, for stream `uid` unless it names another, with this client's token unless it
    /// names another); returns what each saw (`"code"`: `OK` or the gRPC code of its refusal).
    pub async fn actions(&self, uid: &str, actions: Value) -> anyhow::Result<Vec<Value>> {
        let seen = self.step("actions", uid, json!({ "actions": actions })).await?;
        match seen {
            Value::Array(results) => Ok(results),
            other => bail!("s2uc.py actions printed {other}, not a list"),
        }
    }

    /// [`Client::actions`] with one action; returns what it saw.
    pub async fn action(&self, uid: &str, action: Value) -> anyhow::Result<Value> {
        let mut seen = self.actions(uid, json!([action])).await?;
        seen.pop().context("s2uc.py printed no result")
    }
}

/// One side each of a stream as `s2uc` makes it: `inbound-request` on the producer facility,
/// then `outbound-request` (on `consumer_at`: the consumer facility, or the producer's for both
/// sides on one endpoint) with the producer side's listeners.
#[derive(Clone, Debug)]
pub struct S2ucStream<'a> {
    /// The stream's uid.
    pub uid: &'a str,
    /// `num_conn` of both `req`s.
    pub num_conn: usize,
    /// `rate` of both `req`s, kb/s (s2uc's default: 10000; 0: unset).
    pub rate: i32,
    /// The producer application's endpoints (the producer's Hello).
    pub endpoints: &'a [String],
    /// `"consumer"`, or `"producer"` for both sides on the producer facility's endpoint.
    pub consumer_at: &'a str,
    /// Seconds the client waits for each `req` reply (1.x's s2uc: 5).
    pub wait: u64,
}

impl Client {
    /// Makes `stream` (see [`S2ucStream`]); returns the producer side's listeners and the
    /// consumer side's (where the consumer application connects).
    pub async fn s2uc_stream(&self, stream: &S2ucStream<'_>) -> anyhow::Result<(Vec<String>, Vec<String>)> {
        let (uid, n, rate, wait) = (stream.uid, stream.num_conn, stream.rate, stream.wait);
        let inbound = self
            .action(
                uid,
                json!({"do": "inbound", "at": "producer", "num_conn": n, "rate": rate,
                "prod_listeners": stream.endpoints, "wait": wait}),
            )
            .await?;
        if code(&inbound) != "OK" || strings(&inbound["prod_listeners"]) != stream.endpoints {
            bail!("s2uc inbound-request: {inbound}");
        }
        let producer = strings(&inbound["listeners"]);
        let outbound = self
            .action(
                uid,
                json!({"do": "outbound", "at": stream.consumer_at, "num_conn": n, "rate": rate,
                "remote": producer, "hello_listeners": ["192.0.2.250:9000"], "wait": wait}),
            )
            .await?;
        if code(&outbound) != "OK" {
            bail!("s2uc outbound-request: {outbound}");
        }
        Ok((producer, strings(&outbound["listeners"])))
    }
}

/// The code of an action's result (`OK`, or the gRPC code of its refusal).
pub fn code(result: &Value) -> &str {
    result["code"].as_str().unwrap_or_default()
}

/// The texts of a JSON list.
pub fn strings(v: &Value) -> Vec<String> {
    v.as_array().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
}

/// StreamRequest `name` of facility `i` as the API server stores it (JSON: fields this
/// suite's types may not know are kept).
pub async fn raw_request(world: &World, i: usize, name: &str) -> anyhow::Result<Value> {
    use kube::{
        api::{ApiResource, DynamicObject},
        core::GroupVersionKind,
    };
    let gvk = GroupVersionKind::gvk(scistream_api::keys::GROUP, scistream_api::keys::VERSION, "StreamRequest");
    let f = world.facilities.get(i).context("no such facility")?;
    let api: Api<DynamicObject> = Api::namespaced_with(f.client.clone(), USER_NS, &ApiResource::from_gvk(&gvk));
    Ok(serde_json::to_value(api.get(name).await.with_context(|| format!("{}: StreamRequest {name}", f.name))?)?)
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
    grant(world, &["scientist"]).await
}

/// Lets `users` manage StreamRequests in the users' namespace of every facility: one Role and
/// one RoleBinding naming them all (as a facility shares one legacy namespace among its 1.x
/// users).
pub async fn grant(world: &World, users: &[&str]) -> anyhow::Result<()> {
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
            "subjects": users.iter().map(|u| json!({"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": u}))
                .collect::<Vec<_>>()}))?;
        Api::<RoleBinding>::namespaced(f.client.clone(), USER_NS)
            .patch("streamers", &pp, &Patch::Apply(&binding))
            .await?;
    }
    Ok(())
}
