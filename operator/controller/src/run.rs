//! Wiring: client, caches, leader election, both controllers and the HTTP endpoints, all
//! stopped by one cancellation token (SIGTERM, SIGINT, or loss of leadership).

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use anyhow::Context as _;
use futures::StreamExt;
use std::collections::HashMap;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Node, Pod};
use kube::{
    Api, Client, ResourceExt,
    api::ListParams,
    config::{KubeConfigOptions, Kubeconfig},
    runtime::{
        Controller, WatchStreamExt,
        controller::Config as ControllerConfig,
        reflector,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use scistream_api::{Gateway, StreamRequest, keys};
use tokio_util::sync::CancellationToken;

use crate::{
    args::Args,
    cache,
    context::{Context, Stores},
    gateway, lease,
    metrics::Metrics,
    server, stream, telemetry, triggers,
};

async fn client(args: &Args) -> anyhow::Result<Client> {
    let mut config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig =
                Kubeconfig::read_from(path).with_context(|| format!("reading kubeconfig {}", path.display()))?;
            let options = KubeConfigOptions { context: args.context.clone(), ..KubeConfigOptions::default() };
            kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?
        }
        None => kube::Config::infer().await.context("no kubeconfig and not running in a cluster")?,
    };
    // Who is asking, in the API server's audit log and request metrics.
    let agent = concat!("scistream-operator/", env!("CARGO_PKG_VERSION"));
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static(agent)));
    Ok(Client::try_from(config)?)
}

/// Fails with the command to run when our CRDs are not installed.
async fn check_crds(client: &Client) -> anyhow::Result<()> {
    let probe = ListParams::default().limit(1);
    let hint = "install the CRDs first: kubectl apply -f crds/ (or install the Helm chart)";
    Api::<Gateway>::all(client.clone())
        .list(&probe)
        .await
        .with_context(|| format!("Gateways are not served; {hint}"))?;
    Api::<StreamRequest>::all(client.clone())
        .list(&probe)
        .await
        .with_context(|| format!("StreamRequests are not served; {hint}"))?;
    Ok(())
}

fn relay_pod_selector() -> String {
    format!(
        "{}={},{}={}",
        keys::LABEL_MANAGED_BY,
        keys::MANAGED_BY_OPERATOR,
        keys::LABEL_COMPONENT,
        keys::COMPONENT_S2DS
    )
}

/// The StreamRequest a relay pod belongs to, from its annotation.
fn owner_of(pod: &Pod) -> Option<ObjectRef<StreamRequest>> {
    let (ns, name) = pod.annotations().get(keys::ANNOTATION_REQUEST)?.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// The Gateways an event is about, with their shape afterwards (`None`: deleted).
fn gateway_changes(event: &watcher::Event<Gateway>) -> Vec<(String, Option<triggers::GatewayShape>)> {
    match event {
        watcher::Event::Apply(gw) | watcher::Event::InitApply(gw) => {
            vec![(gw.name_any(), Some(triggers::GatewayShape::of(gw)))]
        }
        watcher::Event::Delete(gw) => vec![(gw.name_any(), None)],
        watcher::Event::Init | watcher::Event::InitDone => Vec::new(),
    }
}

/// The requests on Gateway `name` that `wake` concerns.
fn requests_to_wake(
    requests: &Store<StreamRequest>,
    name: &str,
    wake: triggers::Wake,
) -> Vec<ObjectRef<StreamRequest>> {
    if wake == triggers::Wake::Nobody {
        return Vec::new();
    }
    requests
        .state()
        .iter()
        .filter(|r| r.spec.gateway == name)
        .filter(|r| wake == triggers::Wake::All || stream::plan::waits_for_capacity(r))
        .map(|r| ObjectRef::from_obj(r.as_ref()))
        .collect()
}

/// Runs the operator until SIGTERM/SIGINT or loss of leadership.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let token = CancellationToken::new();
    spawn_signal_handler(token.clone());
    run_until(args, token).await
}

/// Publishes the control endpoint for users (see [`crate::publish`]), unless told not to or
/// it serves without TLS.
fn publish_control(client: &Client, args: &Args, token: CancellationToken) {
    let c = &args.control;
    if args.no_control_publish || c.insecure_control {
        return;
    }
    let address = args.control_advertise.clone().or_else(|| {
        crate::publish::default_address(&c.control_tls_dns_names, &c.control_tls_ips, c.control_addr.port())
    });
    let Some(address) = address else {
        tracing::warn!(
            "the control endpoint's certificate names no host and --control-advertise is not set: not published"
        );
        return;
    };
    let secret = c.control_tls_secret.clone().unwrap_or_else(|| c.control_tls_generated_secret.clone());
    tokio::spawn(crate::publish::keep(client.clone(), c.control_tls_namespace.clone(), secret, address, token));
}

/// Runs the operator until `token` is cancelled (or leadership is lost, which cancels it).
pub async fn run_until(args: Args, token: CancellationToken) -> anyhow::Result<()> {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    telemetry::init(&args.log_format);
    let client = client(&args).await?;
    check_crds(&client).await?;
    let metrics = Arc::new(Metrics::default());
    let ready = Arc::new(AtomicBool::new(false));
    let http = server::serve(args.metrics_addr, metrics.clone(), ready.clone(), token.clone())
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;

    // Every replica serves the control endpoint: its state lives in the API.
    let control = if args.no_control_endpoint {
        None
    } else {
        let config = args.control.config().context("control endpoint flags")?;
        let bound = scistream_control_endpoint::bind(client.clone(), config, metrics.control.clone())
            .await
            .context("starting the control endpoint")?;
        tracing::info!(addr = %bound.grpc_addr().map(|a| a.to_string()).unwrap_or_default(), "serving the control endpoint");
        publish_control(&client, &args, token.clone());
        Some(tokio::spawn(bound.run(token.clone())))
    };

    if !args.no_leader_election {
        let cfg = lease::LeaseConfig {
            namespace: args.namespace.clone(),
            name: args.lease_name.clone(),
            identity: args.identity.clone(),
            duration: std::time::Duration::from_secs(15),
            renew: std::time::Duration::from_secs(5),
        };
        ready.store(true, Ordering::Relaxed); // a standby replica is healthy and ready
        if !lease::acquire(&client, &cfg, &token).await {
            let _ = http.await;
            if let Some(c) = control {
                let _ = c.await;
            }
            return Ok(());
        }
        tokio::spawn(lease::keep(client.clone(), cfg, token.clone()));
    }

    // Only the leader serves the shared relays' channel: its streams are the leader's.
    let channel = match (args.relay_channel_addr, args.relay_channel_address()) {
        (Some(listen), Some(address)) => Some(
            crate::relay_hub::channel::start(&client, &args.namespace, listen, address, token.clone())
                .await
                .context("starting the relay channel")?,
        ),
        _ => None,
    };

    // One watch per kind, each feeding a cache and the reconciles its changes concern.
    let (nodes, node_writer) = reflector::store::<Node>();
    let node_events = watcher(Api::<Node>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(cache::trim_node)
        .reflect(node_writer)
        .touched_objects()
        .predicate_filter(triggers::node_predicate, Default::default());
    let (pods, pod_writer) = reflector::store::<Pod>();
    let pod_events = watcher(Api::<Pod>::all(client.clone()), watcher::Config::default().labels(&relay_pod_selector()))
        .default_backoff()
        .modify(cache::trim_pod)
        .reflect(pod_writer)
        .touched_objects();
    let (config_maps, cm_writer) = reflector::store::<ConfigMap>();
    let cm_cache =
        watcher(Api::<ConfigMap>::all(client.clone()), watcher::Config::default().labels(&relay_pod_selector()))
            .default_backoff()
            .modify(cache::trim_config_map)
            .reflect(cm_writer)
            .for_each(|_| futures::future::ready(()));
    tokio::spawn(cm_cache);
    let (namespaces, ns_writer) = reflector::store::<Namespace>();
    let ns_cache = watcher(Api::<Namespace>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(cache::trim)
        .reflect(ns_writer)
        .for_each(|_| futures::future::ready(()));
    tokio::spawn(ns_cache);
    let (gateways, gw_writer) = reflector::store::<Gateway>();
    let (requests, sr_writer) = reflector::store::<StreamRequest>();
    // Gateway changes reach the StreamRequest controller through this channel: the mapper runs
    // after the change is in the Gateway cache, so a woken request reads it.
    let (wake_tx, wake_rx) = futures::channel::mpsc::unbounded::<ObjectRef<StreamRequest>>();
    let report_wake = wake_tx.clone();
    let ledger_wake = wake_tx.clone();
    // A Gateway's spec or nodes changing may make another conflict with it (or stop): the
    // other Gateways are reconciled again.
    let (gw_wake_tx, gw_wake_rx) = futures::channel::mpsc::unbounded::<ObjectRef<Gateway>>();
    let ledger_gw_wake = gw_wake_tx.clone();
    let gw_events = {
        let requests = requests.clone();
        let peers = gateways.clone();
        let mut shapes: HashMap<String, triggers::GatewayShape> = HashMap::new();
        watcher(Api::<Gateway>::all(client.clone()), watcher::Config::default())
            .default_backoff()
            .modify(cache::trim)
            .reflect(gw_writer)
            .map(move |event| {
                if let Ok(event) = &event {
                    for (name, after) in gateway_changes(event) {
                        let before = shapes.get(&name).cloned();
                        match &after {
                            Some(a) => shapes.insert(name.clone(), a.clone()),
                            None => shapes.remove(&name),
                        };
                        let wake = triggers::wake(before.as_ref(), after.as_ref());
                        if wake == triggers::Wake::All {
                            for other in peers.state().iter().filter(|g| g.name_any() != name) {
                                let _ = gw_wake_tx.unbounded_send(ObjectRef::from_obj(other.as_ref()));
                            }
                        }
                        for r in requests_to_wake(&requests, &name, wake) {
                            let _ = wake_tx.unbounded_send(r);
                        }
                    }
                }
                event
            })
            .touched_objects()
            .predicate_filter(triggers::gateway_predicate, Default::default())
    };
    let sr_events = watcher(Api::<StreamRequest>::all(client.clone()), watcher::Config::default())
        .default_backoff()
        .modify(cache::trim)
        .reflect(sr_writer)
        .applied_objects()
        .predicate_filter(triggers::request_predicate, Default::default());
    let stores = Stores {
        gateways: gateways.clone(),
        nodes: nodes.clone(),
        requests: requests.clone(),
        pods: pods.clone(),
        config_maps: config_maps.clone(),
        namespaces: namespaces.clone(),
    };
    let (synced_tx, synced) = tokio::sync::watch::channel(false);
    let ctx = Context::new(
        client.clone(),
        args.config(),
        stores.clone(),
        metrics,
        args.identity.clone(),
        synced,
        channel.clone(),
    );
    {
        // A change of holdings: the Gateway writes its totals (and follows with its in-use
        // finalizer); capacity given back wakes the requests waiting for it.
        let requests = requests.clone();
        ctx.ledger.on_change(move |notice| {
            let _ = ledger_gw_wake.unbounded_send(ObjectRef::new(&notice.gateway));
            if notice.freed {
                for r in requests_to_wake(&requests, &notice.gateway, triggers::Wake::Waiting) {
                    let _ = ledger_wake.unbounded_send(r);
                }
            }
        });
    }
    if let Some(channel) = channel {
        tokio::spawn(open_channel(ctx.clone(), channel.clone()));
        tokio::spawn(wake_on_reports(channel, requests.clone(), report_wake, token.clone()));
    }

    let all_gateways = stores.gateways.clone();
    let gw_ctrl = Controller::for_stream(gw_events, gateways)
        .reconcile_on(gw_wake_rx)
        .watches_stream(node_events, move |_node: Node| {
            all_gateways.state().iter().map(|g| ObjectRef::from_obj(g.as_ref())).collect::<Vec<_>>()
        })
        // No debounce: a steady trickle of holding changes would put the totals off for ever.
        // Changes while a reconcile runs still come together in the next one.
        .with_config(ControllerConfig::default().concurrency(2))
        .graceful_shutdown_on(token.clone().cancelled_owned())
        .run(gateway::reconcile, gateway_error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let sr_ctrl = Controller::for_stream(sr_events, requests)
        .watches_stream(pod_events, |pod| owner_of(&pod))
        .reconcile_on(wake_rx)
        .with_config(ControllerConfig::default().concurrency(8))
        .graceful_shutdown_on(token.clone().cancelled_owned())
        .run(stream::reconcile, stream::error_policy, ctx.clone())
        .for_each(|_| futures::future::ready(()));

    let readiness = {
        let (stores, ready, ctx) = (stores.clone(), ready.clone(), ctx.clone());
        async move {
            let _ = stores.gateways.wait_until_ready().await;
            let _ = stores.requests.wait_until_ready().await;
            let _ = stores.nodes.wait_until_ready().await;
            let _ = stores.pods.wait_until_ready().await;
            let _ = stores.config_maps.wait_until_ready().await;
            let _ = stores.namespaces.wait_until_ready().await;
            // Every holding, from the requests' statuses, before any reconcile decides one.
            let held = ctx.ledger.seed(stores.requests.state().iter().map(AsRef::as_ref));
            tracing::info!(held, "holdings read from the StreamRequests");
            ready.store(true, Ordering::Relaxed);
            let _ = synced_tx.send(true);
            tracing::info!("caches synced; reconciling");
        }
    };
    let poller = tokio::spawn(crate::transfer::run(
        ctx.clone(),
        std::time::Duration::from_secs(args.transfer_interval_seconds.max(1)),
        token.clone(),
    ));
    tokio::join!(gw_ctrl, sr_ctrl, readiness);
    poller.abort();
    token.cancel();
    let _ = http.await;
    if let Some(c) = control {
        match c.await {
            Ok(Err(e)) => tracing::error!(error = %e, "the control endpoint failed"),
            Err(e) => tracing::error!(error = %e, "the control endpoint task failed"),
            Ok(Ok(())) => {}
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Opens the relay channel once every Gateway and StreamRequest known at start was reconciled
/// (so every stream a relay runs is set before it gets its snapshot), or after a minute.
async fn open_channel(ctx: Arc<Context>, channel: Arc<crate::relay_hub::channel::Channel>) {
    ctx.caches_ready().await;
    let missing = ctx.all_reconciled_once(std::time::Duration::from_secs(60)).await;
    if missing > 0 {
        tracing::warn!(missing, "opening the relay channel before every object was reconciled once");
    }
    channel.hub.open();
    tracing::info!("relay channel open: shared relays may call");
}

/// Each report of a shared relay wakes the StreamRequest it is about (its relays became
/// ready, or its config was refused); after lost reports (the broadcast lagged), every request.
async fn wake_on_reports(
    channel: Arc<crate::relay_hub::channel::Channel>,
    requests: Store<StreamRequest>,
    wake: futures::channel::mpsc::UnboundedSender<ObjectRef<StreamRequest>>,
    token: CancellationToken,
) {
    use tokio::sync::broadcast::error::RecvError;
    let mut reports = channel.hub.subscribe();
    loop {
        let report = tokio::select! {
            () = token.cancelled() => return,
            r = reports.recv() => r,
        };
        let woken: Vec<ObjectRef<StreamRequest>> = match report {
            Ok(report) => match stream::shared::parse_key(&report.state.stream_id) {
                Some((id, role)) => requests
                    .state()
                    .iter()
                    .filter(|r| r.spec.stream_id == id && r.spec.role == role && r.spec.gateway == report.relay.gateway)
                    .map(|r| ObjectRef::from_obj(r.as_ref()))
                    .collect(),
                None => Vec::new(),
            },
            Err(RecvError::Lagged(_)) => requests.state().iter().map(|r| ObjectRef::from_obj(r.as_ref())).collect(),
            Err(RecvError::Closed) => return,
        };
        for r in woken {
            let _ = wake.unbounded_send(r);
        }
    }
}

fn gateway_error_policy(
    _gw: Arc<Gateway>,
    error: &crate::error::Error,
    ctx: Arc<Context>,
) -> kube::runtime::controller::Action {
    let reason = error.reason();
    let labels = crate::metrics::ErrorLabels { controller: gateway::CONTROLLER, reason: reason.as_str() };
    ctx.metrics.errors.get_or_create(&labels).inc();
    tracing::warn!(error = %error, %reason, "gateway reconcile failed");
    kube::runtime::controller::Action::requeue(error.backoff(2))
}

fn spawn_signal_handler(token: CancellationToken) {
    tokio::spawn(async move {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "cannot handle SIGTERM");
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: shutting down"),
        }
        token.cancel();
    });
}
