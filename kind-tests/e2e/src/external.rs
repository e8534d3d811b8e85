//! Where the suite runs, chosen by environment variables parsed and checked before anything
//! is touched:
//!
//! - nothing set: the embedded facilities (API servers, node agents and operators in this
//!   process);
//! - [`PROD_APISERVER`] and [`CONS_APISERVER`]: the kubeconfigs of two API servers (any
//!   conformant kube-apiserver, or `testcluster` processes); the suite installs the CRDs and
//!   runs the node agents and operators itself, as in embedded mode, so every scenario runs;
//! - [`PROD_KUBECONFIG`] and [`CONS_KUBECONFIG`]: two clusters with the operator installed and
//!   real kubelets (`kind-tests/kind/run.sh`); scenarios that need to control the operator or
//!   the relay processes skip, each saying why.

use std::{net::Ipv4Addr, path::PathBuf};

use anyhow::{Context as _, bail};

/// Producer facility's kubeconfig; with [`CONS_KUBECONFIG`], selects real clusters.
pub const PROD_KUBECONFIG: &str = "SCISTREAM_E2E_KUBECONFIG_PROD";
/// Consumer facility's kubeconfig.
pub const CONS_KUBECONFIG: &str = "SCISTREAM_E2E_KUBECONFIG_CONS";
/// Producer facility's control endpoint, `host:port` reachable from the test process.
pub const PROD_CONTROL: &str = "SCISTREAM_E2E_CONTROL_PROD";
/// Consumer facility's control endpoint.
pub const CONS_CONTROL: &str = "SCISTREAM_E2E_CONTROL_CONS";
/// `namespace/name` of the control endpoints' TLS Secret (the same in both facilities).
pub const CONTROL_SECRET: &str = "SCISTREAM_E2E_CONTROL_SECRET";
/// The test host's address that gateway nodes reach: applications run in the test process.
pub const APP_ADDRESS: &str = "SCISTREAM_E2E_APP_ADDRESS";

/// Producer facility's API server (a kubeconfig); with [`CONS_APISERVER`], selects API-server
/// mode.
pub const PROD_APISERVER: &str = "SCISTREAM_E2E_APISERVER_PROD";
/// Consumer facility's API server (a kubeconfig).
pub const CONS_APISERVER: &str = "SCISTREAM_E2E_APISERVER_CONS";
/// In API-server mode, the bearer token of a user `scientist` both API servers know (the 1.x
/// client's identity; default [`crate::world::SCIENTIST_TOKEN`], which `testcluster --tokens`
/// is given by `kind-tests/external-check.sh`).
pub const SCIENTIST_TOKEN: &str = "SCISTREAM_E2E_SCIENTIST_TOKEN";
/// In API-server mode, the bearer token of a user `colleague` both API servers know (another
/// 1.x user; default [`crate::world::COLLEAGUE_TOKEN`], also in `kind-tests/external-check.sh`).
pub const COLLEAGUE_TOKEN: &str = "SCISTREAM_E2E_COLLEAGUE_TOKEN";

/// Where the suite runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// The embedded facilities.
    Embedded,
    /// Two API servers; operators and node agents run here.
    ApiServers(ApiServers),
    /// Two clusters with the operator installed.
    Installed(External),
}

/// Two API servers the suite runs its own operators and node agents against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiServers {
    /// Kubeconfig of each facility's API server (its current context), producer first.
    pub kubeconfigs: [PathBuf; 2],
    /// Token of user `scientist` on both.
    pub scientist_token: String,
    /// Token of user `colleague` on both.
    pub colleague_token: String,
}

/// Reads the variables through `get` (the process environment in [`target_from_env`]).
pub fn target(get: impl Fn(&str) -> Option<String>) -> anyhow::Result<Target> {
    let (prod, cons) = (get(PROD_APISERVER), get(CONS_APISERVER));
    let api_servers = match (prod, cons) {
        (None, None) => None,
        (Some(p), Some(c)) => Some([PathBuf::from(p), PathBuf::from(c)]),
        _ => bail!("set both {PROD_APISERVER} and {CONS_APISERVER}, or neither"),
    };
    match (api_servers, parse(&get)?) {
        (Some(_), Some(_)) => {
            bail!("{PROD_APISERVER} (API servers) and {PROD_KUBECONFIG} (installed clusters) exclude each other")
        }
        (Some(kubeconfigs), None) => {
            let token =
                |var: &str, default: &str| get(var).filter(|t| !t.is_empty()).unwrap_or_else(|| default.to_owned());
            let scientist_token = token(SCIENTIST_TOKEN, crate::world::SCIENTIST_TOKEN);
            let colleague_token = token(COLLEAGUE_TOKEN, crate::world::COLLEAGUE_TOKEN);
            Ok(Target::ApiServers(ApiServers { kubeconfigs, scientist_token, colleague_token }))
        }
        (None, Some(ext)) => Ok(Target::Installed(ext)),
        (None, None) => Ok(Target::Embedded),
    }
}

/// [`target`] of the process environment.
pub fn target_from_env() -> anyhow::Result<Target> {
    target(|k| std::env::var(k).ok())
}

/// Two real facilities.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct External {
    /// Kubeconfig of each facility, producer first.
    pub kubeconfigs: [PathBuf; 2],
    /// Control endpoint of each facility, producer first.
    pub controls: [String; 2],
    /// Namespace and name of the control endpoints' TLS Secret.
    pub control_secret: (String, String),
    /// Where the applications listen and connect from (the relays' pods reach it).
    pub app_address: Ipv4Addr,
}

/// Reads the variables through `get` (the process environment in [`from_env`]). `None`
/// when neither kubeconfig is given (the embedded facilities); an error names what is
/// missing or malformed when only some are.
pub fn parse(get: &impl Fn(&str) -> Option<String>) -> anyhow::Result<Option<External>> {
    let (prod, cons) = (get(PROD_KUBECONFIG), get(CONS_KUBECONFIG));
    let (prod, cons) = match (prod, cons) {
        (None, None) => return Ok(None),
        (Some(p), Some(c)) => (PathBuf::from(p), PathBuf::from(c)),
        _ => bail!("set both {PROD_KUBECONFIG} and {CONS_KUBECONFIG}, or neither (the embedded facilities)"),
    };
    let need = |var: &str| get(var).filter(|v| !v.is_empty()).with_context(|| format!("{var} is not set"));
    let controls = [need(PROD_CONTROL)?, need(CONS_CONTROL)?];
    for (var, c) in [(PROD_CONTROL, &controls[0]), (CONS_CONTROL, &controls[1])] {
        let port = c.rsplit_once(':').map(|(_, p)| p.parse::<u16>());
        if !matches!(port, Some(Ok(p)) if p > 0) {
            bail!("{var}={c:?} is not host:port");
        }
    }
    let secret = get(CONTROL_SECRET).unwrap_or_else(|| "scistream-system/scistream-operator-control-tls".into());
    let Some((ns, name)) = secret.split_once('/').filter(|(n, s)| !n.is_empty() && !s.is_empty()) else {
        bail!("{CONTROL_SECRET}={secret:?} is not namespace/name");
    };
    let app = need(APP_ADDRESS)?;
    let app_address = app.parse().with_context(|| format!("{APP_ADDRESS}={app:?} is not an IPv4 address"))?;
    Ok(Some(External {
        kubeconfigs: [prod, cons],
        controls,
        control_secret: (ns.to_owned(), name.to_owned()),
        app_address,
    }))
}

/// [`parse`] of the process environment.
pub fn from_env() -> anyhow::Result<Option<External>> {
    parse(&|k| std::env::var(k).ok())
}

/// One kubeconfig for both facilities, as `kubectl scistream` is run with: the current
/// context of each facility's kubeconfig, renamed to the facility's name (`contexts[i]`), its
/// cluster and user renamed `<facility>-cluster` / `<facility>-user` so that two kind
/// kubeconfigs (both with a user `kind-…`, or both generated with the same names) cannot
/// collide. Relative certificate paths are left as they are: give absolute kubeconfigs.
pub fn merge_kubeconfigs(configs: &[(&str, serde_json::Value)]) -> anyhow::Result<serde_json::Value> {
    use serde_json::{Value, json};
    let mut merged = json!({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": [], "contexts": []});
    for (facility, config) in configs {
        let current = config["current-context"].as_str().filter(|c| !c.is_empty());
        let contexts = config["contexts"].as_array().map(Vec::as_slice).unwrap_or_default();
        let context = match current {
            Some(c) => contexts.iter().find(|x| x["name"] == *c),
            None if contexts.len() == 1 => contexts.first(),
            None => None,
        }
        .with_context(|| format!("{facility}: the kubeconfig has no current-context (or it names no context)"))?;
        let named = |key: &str, field: &str| -> anyhow::Result<Value> {
            let wanted = context["context"][field].as_str().unwrap_or_default();
            config[key]
                .as_array()
                .and_then(|items| items.iter().find(|x| x["name"] == wanted))
                .cloned()
                .with_context(|| format!("{facility}: the kubeconfig's context names {field} {wanted:?}, not in {key}"))
        };
        let (mut cluster, mut user) = (named("clusters", "cluster")?, named("users", "user")?);
        let (cluster_name, user_name) = (format!("{facility}-cluster"), format!("{facility}-user"));
        cluster["name"] = json!(cluster_name);
        user["name"] = json!(user_name);
        let mut ctx = context["context"].clone();
        ctx["cluster"] = json!(cluster_name);
        ctx["user"] = json!(user_name);
        for (key, item) in
            [("clusters", cluster), ("users", user), ("contexts", json!({"name": facility, "context": ctx}))]
        {
            if let Some(list) = merged[key].as_array_mut() {
                list.push(item);
            }
        }
    }
    if let Some((first, _)) = configs.first() {
        merged["current-context"] = json!(first);
    }
    Ok(merged)
}

/// Connects to both facilities: writes the merged kubeconfig to `kubeconfig`, and returns a
/// client per facility (producer first) once each serves a Ready Gateway `gateway` and has the
/// namespace `namespace`; otherwise an error that says what to install or fix.
pub async fn connect(
    ext: &External,
    facilities: [&str; 2],
    kubeconfig: &std::path::Path,
    gateway: &str,
    namespace: &str,
) -> anyhow::Result<Vec<kube::Client>> {
    use kube::{
        Api,
        config::{KubeConfigOptions, Kubeconfig},
    };
    let mut read = Vec::new();
    for (facility, path) in facilities.iter().zip(&ext.kubeconfigs) {
        let text = std::fs::read_to_string(path).with_context(|| format!("{facility}: reading {}", path.display()))?;
        let value: serde_json::Value =
            serde_yaml::from_str(&text).with_context(|| format!("{facility}: {} is not YAML", path.display()))?;
        read.push((*facility, value));
    }
    let merged = merge_kubeconfigs(&read)?;
    std::fs::write(kubeconfig, serde_yaml::to_string(&merged)?)?;
    let config = Kubeconfig::read_from(kubeconfig)?;
    let mut clients = Vec::new();
    for facility in facilities {
        let options = KubeConfigOptions { context: Some(facility.to_owned()), ..KubeConfigOptions::default() };
        let c = kube::Config::from_custom_kubeconfig(config.clone(), &options).await?;
        let client = kube::Client::try_from(c)?;
        let gw = Api::<scistream_api::Gateway>::all(client.clone()).get_opt(gateway).await.with_context(|| {
            format!("{facility}: cannot read Gateways (is the operator's chart installed, with its CRDs?)")
        })?;
        let ready = gw.as_ref().and_then(|g| g.status.as_ref()).map(|s| s.ready_nodes).unwrap_or(0);
        if ready == 0 {
            bail!(
                "{facility}: Gateway {gateway} is missing or has no ready node (install the chart with defaultGateway)"
            );
        }
        Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
            .get_opt(namespace)
            .await?
            .with_context(|| format!("{facility}: namespace {namespace} does not exist (kubectl create namespace)"))?;
        clients.push(client);
    }
    Ok(clients)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    const FULL: [(&str, &str); 6] = [
        (PROD_KUBECONFIG, "/k/aps"),
        (CONS_KUBECONFIG, "/k/alcf"),
        (PROD_CONTROL, "127.0.0.1:15000"),
        (CONS_CONTROL, "127.0.0.1:15001"),
        (CONTROL_SECRET, "ops/control-tls"),
        (APP_ADDRESS, "172.18.0.1"),
    ];

    fn kind_kubeconfig(name: &str) -> serde_json::Value {
        let ctx = format!("kind-{name}");
        serde_json::json!({
            "apiVersion": "v1", "kind": "Config", "current-context": ctx,
            "clusters": [{"name": ctx, "cluster": {"server": format!("https://127.0.0.1:6443/{name}")}}],
            "users": [{"name": ctx, "user": {"token": name}}, {"name": "other", "user": {}}],
            "contexts": [{"name": ctx, "context": {"cluster": ctx, "user": ctx, "namespace": "science"}}],
        })
    }

    #[test]
    fn kubeconfigs_merge_under_the_facilities_names() {
        let merged = merge_kubeconfigs(&[("aps", kind_kubeconfig("aps")), ("alcf", kind_kubeconfig("alcf"))]).unwrap();
        assert_eq!(merged["current-context"], "aps");
        let names = |key: &str| -> Vec<String> {
            merged[key].as_array().unwrap().iter().map(|x| x["name"].as_str().unwrap().to_owned()).collect()
        };
        assert_eq!(names("contexts"), ["aps", "alcf"]);
        assert_eq!(names("clusters"), ["aps-cluster", "alcf-cluster"]);
        assert_eq!(names("users"), ["aps-user", "alcf-user"]);
        let alcf = &merged["contexts"][1]["context"];
        assert_eq!((alcf["cluster"].as_str(), alcf["user"].as_str()), (Some("alcf-cluster"), Some("alcf-user")));
        assert_eq!(alcf["namespace"], "science");
        assert_eq!(merged["clusters"][1]["cluster"]["server"], "https://127.0.0.1:6443/alcf");
        assert_eq!(merged["users"][1]["user"]["token"], "alcf");
    }

    #[test]
    fn a_kubeconfig_without_a_usable_context_is_named() {
        let mut broken = kind_kubeconfig("alcf");
        broken["current-context"] = serde_json::json!("nowhere");
        let e = merge_kubeconfigs(&[("aps", kind_kubeconfig("aps")), ("alcf", broken)]).unwrap_err().to_string();
        assert!(e.contains("alcf") && e.contains("current-context"), "{e}");
        let mut no_user = kind_kubeconfig("aps");
        no_user["users"] = serde_json::json!([]);
        let e = merge_kubeconfigs(&[("aps", no_user)]).unwrap_err().to_string();
        assert!(e.contains("aps") && e.contains("user"), "{e}");
    }

    #[test]
    fn nothing_set_means_the_embedded_facilities() {
        assert_eq!(parse(&env(&[])).unwrap(), None);
        assert_eq!(target(env(&[])).unwrap(), Target::Embedded);
    }

    #[test]
    fn api_servers_are_chosen_alone() {
        let both = [(PROD_APISERVER, "/k/a"), (CONS_APISERVER, "/k/b")];
        let Target::ApiServers(a) = target(env(&both)).unwrap() else { panic!("API servers") };
        assert_eq!(a.kubeconfigs, [PathBuf::from("/k/a"), PathBuf::from("/k/b")]);
        assert_eq!(a.scientist_token, crate::world::SCIENTIST_TOKEN);
        let mut with_token = both.to_vec();
        with_token.push((SCIENTIST_TOKEN, "t0k"));
        let Target::ApiServers(a) = target(env(&with_token)).unwrap() else { panic!("API servers") };
        assert_eq!(a.scientist_token, "t0k");
        assert_eq!(a.colleague_token, crate::world::COLLEAGUE_TOKEN);
        let e = target(env(&both[..1])).unwrap_err().to_string();
        assert!(e.contains(CONS_APISERVER), "{e}");
        let mut mixed = FULL.to_vec();
        mixed.extend(both);
        let e = target(env(&mixed)).unwrap_err().to_string();
        assert!(e.contains("exclude each other"), "{e}");
        assert!(matches!(target(env(&FULL)).unwrap(), Target::Installed(_)));
    }

    #[test]
    fn everything_set_is_read() {
        let e = parse(&env(&FULL)).unwrap().unwrap();
        assert_eq!(e.kubeconfigs, [PathBuf::from("/k/aps"), PathBuf::from("/k/alcf")]);
        assert_eq!(e.controls, ["127.0.0.1:15000".to_owned(), "127.0.0.1:15001".to_owned()]);
        assert_eq!(e.control_secret, ("ops".to_owned(), "control-tls".to_owned()));
        assert_eq!(e.app_address, Ipv4Addr::new(172, 18, 0, 1));
    }

    #[test]
    fn the_secret_defaults_to_the_charts() {
        let without: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != CONTROL_SECRET).collect();
        let e = parse(&env(&without)).unwrap().unwrap();
        assert_eq!(e.control_secret.1, "scistream-operator-control-tls");
    }

    #[test]
    fn partial_or_malformed_settings_say_what_is_wrong() {
        let only_prod = parse(&env(&FULL[..1])).unwrap_err().to_string();
        assert!(only_prod.contains(CONS_KUBECONFIG), "{only_prod}");
        for (var, bad, says) in [
            (PROD_CONTROL, "localhost", "is not host:port"),
            (CONS_CONTROL, "", "is not set"),
            (CONTROL_SECRET, "no-slash", "is not namespace/name"),
            (APP_ADDRESS, "gateway.kind", "is not an IPv4 address"),
            (APP_ADDRESS, "fc00::1", "is not an IPv4 address"),
        ] {
            let mut pairs: Vec<_> = FULL.iter().copied().filter(|(k, _)| *k != var).collect();
            pairs.push((var, bad));
            let e = parse(&env(&pairs)).unwrap_err().to_string();
            assert!(e.contains(var) && e.contains(says), "{var}={bad:?}: {e}");
        }
    }
}
