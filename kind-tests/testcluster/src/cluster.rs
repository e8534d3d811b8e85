//! The library entry point: [`TestCluster`] and its builder.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::auth::{Authenticator, UserInfo};
use crate::resources::Registry;
use crate::state::{Ctx, Shared, State};
use crate::store::{DEFAULT_LOG_CAPACITY, Store};
use crate::{Error, Result, persist, tls};

/// Namespaces a new cluster starts with.
const INITIAL_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// Configures and starts a [`TestCluster`].
#[derive(Debug, Clone)]
pub struct TestClusterBuilder {
    name: String,
    port: u16,
    data_dir: Option<PathBuf>,
    kubeconfig: Option<PathBuf>,
    token_file: Option<PathBuf>,
    users: Vec<(String, UserInfo)>,
    admin_token: Option<String>,
    log_capacity: usize,
}

impl Default for TestClusterBuilder {
    fn default() -> Self {
        TestClusterBuilder {
            name: "testcluster".into(),
            port: 0,
            data_dir: None,
            kubeconfig: None,
            token_file: None,
            users: vec![],
            admin_token: None,
            log_capacity: DEFAULT_LOG_CAPACITY,
        }
    }
}

fn io(context: String) -> impl FnOnce(std::io::Error) -> Error {
    move |source| Error::Io { context, source }
}

impl TestClusterBuilder {
    /// Cluster (and kubeconfig context) name.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// TCP port on 127.0.0.1 (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    /// Persist objects, certificates and the admin token in `dir`.
    pub fn data_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.data_dir = Some(dir.into());
        self
    }

    /// Where to write the admin kubeconfig (default: in the data dir or a scratch dir).
    pub fn kubeconfig_path(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// A static token file (`token,user,uid,"group1,group2"`).
    pub fn token_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// Adds a user authenticated by `token`, member of `groups`.
    pub fn user(mut self, token: &str, name: &str, groups: &[&str]) -> Self {
        let mut g: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
        g.push("system:authenticated".into());
        self.users.push((token.into(), UserInfo { name: name.into(), uid: name.into(), groups: g }));
        self
    }

    /// Fixes the admin token (default: random, or the one saved in the data dir).
    pub fn admin_token(mut self, token: impl Into<String>) -> Self {
        self.admin_token = Some(token.into());
        self
    }

    /// Number of events kept for watches to resume from (older → 410 Gone).
    pub fn watch_cache_size(mut self, events: usize) -> Self {
        self.log_capacity = events.max(1);
        self
    }

    fn admin_token_for(&self, dir: Option<&Path>) -> Result<String> {
        if let Some(t) = &self.admin_token {
            return Ok(t.clone());
        }
        let Some(d) = dir else {
            return Ok(uuid::Uuid::new_v4().simple().to_string());
        };
        let p = d.join("admin-token");
        if let Ok(t) = std::fs::read_to_string(&p) {
            return Ok(t.trim().to_string());
        }
        let t = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(&p, &t).map_err(io(format!("writing {}", p.display())))?;
        Ok(t)
    }

    /// Starts serving; returns once the server accepts requests.
    pub async fn start(self) -> Result<TestCluster> {
        tls::install_crypto_provider();
        let scratch = match &self.data_dir {
            Some(_) => None,
            None => {
                let d =
                    std::env::temp_dir().join(format!("testcluster-{}-{}", self.name, uuid::Uuid::new_v4().simple()));
                std::fs::create_dir_all(&d).map_err(io(format!("creating {}", d.display())))?;
                Some(d)
            }
        };
        if let Some(d) = &self.data_dir {
            std::fs::create_dir_all(d).map_err(io(format!("creating {}", d.display())))?;
        }
        let material = tls::load_or_generate(self.data_dir.as_deref())?;
        let admin_token = self.admin_token_for(self.data_dir.as_deref())?;
        let mut auth = Authenticator::new(&admin_token);
        for (t, u) in &self.users {
            auth.add(t, u.clone());
        }
        if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(io(format!("reading token file {}", f.display())))?;
            auth.load_csv(&text).map_err(|source| Error::TokenFile { path: f.clone(), source })?;
        }
        let state: Shared = Arc::new(State {
            name: self.name.clone(),
            store: Store::new(self.log_capacity),
            registry: Registry::with_builtins(),
            auth,
            ca_pem: material.ca_pem.clone(),
            requests: Default::default(),
        });
        if let Some(d) = &self.data_dir {
            persist::load(&state, d)?;
        }
        restore_crds(&state);
        bootstrap(&state);
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .map_err(io(format!("binding 127.0.0.1:{}", self.port)))?;
        let addr = listener.local_addr().map_err(io("reading the bound address".into()))?;
        let url = format!("https://{addr}");
        let kubeconfig_path = self.kubeconfig.clone().unwrap_or_else(|| {
            self.data_dir.as_ref().or(scratch.as_ref()).map(|d| d.join("kubeconfig")).unwrap_or_default()
        });
        let kc = tls::kubeconfig(&self.name, &url, &material.ca_pem, &format!("{}-admin", self.name), &admin_token);
        if let Some(parent) = kubeconfig_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(io(format!("creating {}", parent.display())))?;
        }
        std::fs::write(&kubeconfig_path, kc)
            .map_err(io(format!("writing kubeconfig {}", kubeconfig_path.display())))?;
        let (stop, stop_rx) = watch::channel(false);
        let mut tasks = vec![];
        let server_cfg = tls::server_config(&material)?;
        tasks.push(tokio::spawn(crate::server::serve(state.clone(), listener, server_cfg, stop_rx.clone())));
        tasks.push(tokio::spawn(crate::controllers::run(state.clone(), stop_rx.clone(), Duration::from_millis(500))));
        if let Some(d) = &self.data_dir {
            tasks.push(tokio::spawn(persist::run(
                state.clone(),
                d.clone(),
                stop_rx.clone(),
                Duration::from_millis(200),
            )));
        }
        tracing::info!(name = %self.name, %url, "test cluster ready");
        Ok(TestCluster {
            state,
            url,
            name: self.name,
            kubeconfig_path,
            ca_pem: material.ca_pem,
            admin_token,
            stop,
            tasks,
            scratch,
        })
    }
}

fn restore_crds(state: &Shared) {
    let key =
        crate::resources::ResKey { group: "apiextensions.k8s.io".into(), plural: "customresourcedefinitions".into() };
    for crd in state.store.list(&key, None, None).0 {
        state.sync_crd(&crd);
    }
}

fn bootstrap(state: &Shared) {
    let Some(ns_info) = state.registry.lookup("", "v1", "namespaces") else {
        return;
    };
    let ctx = Ctx { user: UserInfo::admin(), manager: "kube-apiserver".into(), ..Default::default() };
    for ns in INITIAL_NAMESPACES {
        if state.store.get(&ns_info.key(), "", ns).is_none() {
            let body = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}});
            if let Err(e) = state.create(&ns_info, "", body, &ctx) {
                tracing::warn!(namespace = ns, error = %e, "creating initial namespace failed");
            }
        }
    }
}

/// A running embedded API server. Dropping it stops it (without the final
/// snapshot; call [`TestCluster::shutdown`] for a clean stop).
#[derive(Debug)]
pub struct TestCluster {
    state: Shared,
    url: String,
    name: String,
    kubeconfig_path: PathBuf,
    ca_pem: String,
    admin_token: String,
    stop: watch::Sender<bool>,
    tasks: Vec<JoinHandle<()>>,
    scratch: Option<PathBuf>,
}

impl TestCluster {
    /// A builder with defaults (name `testcluster`, ephemeral port, in memory).
    pub fn builder() -> TestClusterBuilder {
        TestClusterBuilder::default()
    }

    /// `https://127.0.0.1:<port>`.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Cluster name (kubeconfig context).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The admin bearer token.
    pub fn admin_token(&self) -> &str {
        &self.admin_token
    }

    /// PEM of the CA that signed the serving certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// A kubeconfig (YAML text) authenticating with `token`.
    pub fn kubeconfig_for_token(&self, token: &str) -> String {
        tls::kubeconfig(&self.name, &self.url, &self.ca_pem, "user", token)
    }

    /// Shared server state, for white-box assertions in tests.
    pub fn state(&self) -> &Shared {
        &self.state
    }

    /// A kube client for the admin.
    pub async fn client(&self) -> Result<kube::Client> {
        self.client_for_token(&self.admin_token).await
    }

    /// A kube client authenticating with `token`.
    pub async fn client_for_token(&self, token: &str) -> Result<kube::Client> {
        use kube::config::{KubeConfigOptions, Kubeconfig};
        let text = self.kubeconfig_for_token(token);
        let kc = Kubeconfig::from_yaml(&text).map_err(|e| Error::Client(Box::new(kube::Error::InferKubeconfig(e))))?;
        let cfg = kube::Config::from_custom_kubeconfig(kc, &KubeConfigOptions::default())
            .await
            .map_err(|e| Error::Client(Box::new(kube::Error::InferKubeconfig(e))))?;
        kube::Client::try_from(cfg).map_err(|e| Error::Client(Box::new(e)))
    }

    /// Stops serving, waits for the tasks and writes the final snapshot.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        for t in std::mem::take(&mut self.tasks) {
            let _ = t.await;
        }
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for t in &self.tasks {
            t.abort();
        }
        if let Some(d) = &self.scratch {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
