//! Faults end to end on the embedded facilities (network namespaces as root, loopback
//! otherwise), through real s2ds relays: operators restarted in every phase, a relay killed
//! mid-transfer, a gateway node lost and `kubectl scistream update` re-run, a wrong Hello key,
//! a Hello timeout and a release during a transfer. Each checks the bytes where data flows and
//! that no pod, Secret, ConfigMap or port holding is left afterwards.

use std::time::Duration;

use scistream_api::{Phase, StreamRequest, conditions, keys};
use scistream_e2e::{
    faults::{self, Created},
    stream::{self, StreamOptions},
    world::{self, World},
};

const MIB: u64 = 1 << 20;
const LONG: Duration = Duration::from_secs(60);
/// Bound of one verified round of a few MiB (generous: a loaded 2-core machine).
const ROUND: Duration = Duration::from_secs(20);

fn options(name: &str, connections: usize) -> StreamOptions {
    StreamOptions::new(name, 0, connections, "20Gbps", "MutualTLS").expect("kubectl-scistream is built")
}

/// Runs `scenario` in a world with `opts`, always shuts the world down, then fails with the
/// scenario's error.
async fn run<F>(opts: world::Options, scenario: F)
where
    F: AsyncFnOnce(&mut World) -> anyhow::Result<()>,
{
    let mut w = World::start(&opts).await.expect("both facilities start");
    let result = scenario(&mut w).await;
    w.shutdown().await;
    if let Err(e) = result {
        panic!("{e:#}");
    }
}

/// A stream created, both Hellos sent, Ready on both sides; returns where the consumer connects.
async fn ready_stream(w: &World, so: &StreamOptions) -> anyhow::Result<(Created, Vec<std::net::SocketAddr>)> {
    let created = faults::create(w, so, &["--timeout", "60s"]).await?;
    let targets = faults::hellos(w, so, &created).await?;
    faults::wait_both(w, &so.name, Phase::Ready, LONG).await?;
    Ok((created, targets))
}

fn requests(w: &World, i: usize) -> kube::Api<StreamRequest> {
    kube::Api::namespaced(w.facilities[i].client.clone(), world::USER_NS)
}

/// A producer-side request with static targets, applied by hand (no plugin, no Hello) in the
/// producer facility. Returns its stream id.
async fn static_request(w: &World, name: &str, n: u32, rate: &str, target: &str) -> anyhow::Result<String> {
    let id = format!("00000000-0000-4000-8000-{n:012}");
    let sr: StreamRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "scistream.io/v1alpha1", "kind": "StreamRequest", "metadata": {"name": name},
        "spec": {"streamId": id, "role": "Producer", "gateway": "dtn", "numConnections": 2, "rate": rate,
                 "dataChannel": "Plain", "targets": [target]}
    }))?;
    requests(w, 0).create(&Default::default(), &sr).await?;
    Ok(id)
}

async fn restart(w: &mut World, which: &[usize]) -> anyhow::Result<()> {
    for &i in which {
        w.stop_operator(i).await?;
    }
    // While no operator runs, the holdings in the API are all there is.
    faults::check_holdings(w).await?;
    for &i in which {
        w.start_operator(i).await?;
    }
    Ok(())
}

scistream_e2e::both_relay_models!(
    /// Operators restarted in each phase: Pending (a request waiting for bandwidth that frees
    /// up while the operator is down), then for one stream AwaitingHello, Provisioning (right
    /// after each Hello), Ready (relays untouched, data verified before and after) and
    /// Releasing (requests deleted while the operators are down). The stream keeps its ports
    /// throughout, no port is held twice, nothing is left.
    operator_restarted_in_every_phase,
    operator_restarted_in_every_phase_on_shared_relays,
    restarted_in_every_phase
);

async fn restarted_in_every_phase(opts: world::Options) {
    if world::embedded_only("an operator to stop and start") {
        return;
    }
    run(opts, async |w: &mut World| {
        // Pending: a request applied by hand (a producer-side proxy with static targets)
        // waits for bandwidth held by an older one; the older one is deleted while the
        // operator is down; after the restart the waiting one is served.
        let app = w.apps().address(world::PRODUCER_HOST)?;
        let hog = static_request(w, "hog", 1, "100Gbps", &format!("{app}:7100")).await?;
        faults::wait_request(w, 0, "hog", LONG, "Ready", |sr| faults::phase(sr) == Some(Phase::Ready)).await?;
        let waiting = static_request(w, "waiting", 2, "20Gbps", &format!("{app}:7100")).await?;
        faults::wait_request(w, 0, "waiting", LONG, "Pending for bandwidth", |sr| {
            faults::phase(sr) == Some(Phase::Pending) && faults::reason(sr, "Reserved") == "BandwidthExhausted"
        })
        .await?;
        w.stop_operator(0).await?;
        faults::check_holdings(w).await?;
        requests(w, 0).delete("hog", &Default::default()).await?;
        w.start_operator(0).await?;
        faults::wait_request(w, 0, "waiting", LONG, "Ready", |sr| faults::phase(sr) == Some(Phase::Ready)).await?;
        faults::wait_gone(w, 0, "hog", LONG).await?;
        stream::assert_nothing_left(w, &hog).await?;
        requests(w, 0).delete("waiting", &Default::default()).await?;
        faults::wait_gone(w, 0, "waiting", LONG).await?;
        stream::assert_nothing_left(w, &waiting).await?;

        // The stream of the remaining phases, created with the plugin.
        let so = options("restarts", 3);
        let created = faults::create(w, &so, &["--timeout", "60s"]).await?;
        faults::wait_both(w, &so.name, Phase::AwaitingHello, LONG).await?;
        let held = faults::allocations(w, &so.name).await?;
        assert!(held.iter().all(|a| !a.is_empty()), "both sides hold ports: {held:?}");

        // AwaitingHello: both operators restarted; same holdings, still awaiting Hello.
        restart(w, &[0, 1]).await?;
        faults::wait_both(w, &so.name, Phase::AwaitingHello, LONG).await?;
        assert_eq!(faults::allocations(w, &so.name).await?, held, "holdings kept across the restart");

        // Provisioning: each side's operator stopped right after its Hello was recorded.
        let prod: Vec<String> = faults::prod_listeners(w, &so)?.iter().map(ToString::to_string).collect();
        stream::hello(w, &so, 0, &created.stream_id, &created.producer_key, "PROD", &prod).await?;
        restart(w, &[0]).await?;
        let told = stream::hello(w, &so, 1, &created.stream_id, &created.consumer_key, "CONS", &[]).await?;
        restart(w, &[1]).await?;
        faults::wait_both(w, &so.name, Phase::Ready, LONG).await?;
        assert_eq!(faults::allocations(w, &so.name).await?, held, "holdings kept through provisioning");
        let targets: Vec<std::net::SocketAddr> = told.iter().map(|l| l.parse()).collect::<Result<_, _>>()?;
        assert_eq!(faults::round(w, &so, &targets, 8 * MIB).await?, 3 * 8 * MIB);

        // Ready: the relays keep running (same pods) and carry data again.
        let pods_before: Vec<(Option<String>, i32)> = {
            let mut uids = Vec::new();
            for i in 0..2 {
                let pods = faults::serving_relays(w, i, &created.stream_id).await?;
                uids.extend(pods.iter().map(|p| (p.metadata.uid.clone(), faults::restarts(p))));
            }
            uids
        };
        restart(w, &[0, 1]).await?;
        faults::wait_both(w, &so.name, Phase::Ready, LONG).await?;
        let mut pods_after = Vec::new();
        for i in 0..2 {
            let pods = faults::serving_relays(w, i, &created.stream_id).await?;
            pods_after.extend(pods.iter().map(|p| (p.metadata.uid.clone(), faults::restarts(p))));
        }
        assert_eq!(pods_after, pods_before, "a restart at Ready must not recreate the relays");
        assert_eq!(faults::allocations(w, &so.name).await?, held);
        assert_eq!(faults::round(w, &so, &targets, 8 * MIB).await?, 3 * 8 * MIB);

        // Releasing: `release` deletes both requests while both operators are down (waiting
        // for a running operator to start releasing, then stopping it, races with how fast it
        // finishes); the finalizers hold the requests, relays and ports until the operators
        // are back, which then release everything.
        w.stop_operator(0).await?;
        w.stop_operator(1).await?;
        let release = faults::spawn_plugin(
            w,
            &so,
            &["release", &so.name, "--context", "aps", "-n", world::USER_NS, "--timeout", "120s"].map(str::to_owned),
        );
        for i in [0, 1] {
            faults::wait_request(w, i, &so.name, LONG, "being deleted", |sr| sr.metadata.deletion_timestamp.is_some())
                .await?;
        }
        for i in [0, 1] {
            anyhow::ensure!(
                !faults::serving_relays(w, i, &created.stream_id).await?.is_empty(),
                "facility {i}: the relays stay until an operator releases them"
            );
        }
        w.start_operator(0).await?;
        w.start_operator(1).await?;
        release.await??;
        stream::assert_nothing_left(w, &created.stream_id).await?;
        assert_eq!(faults::check_holdings(w).await?, vec![0, 0]);
        Ok(())
    })
    .await;
}

scistream_e2e::both_relay_models!(
    /// A relay's processes killed mid-transfer, on each side in turn: the connection in flight
    /// ends at both applications (no hang), the node agent restarts the relay (a shared one
    /// gets its streams again from the operator), on the same ports, and new connections
    /// carry verified data again.
    a_killed_relay_comes_back_and_carries_data_again,
    a_killed_shared_relay_comes_back_and_carries_data_again,
    killed_relay
);

async fn killed_relay(opts: world::Options) {
    if world::embedded_only("the node agent's relay processes to kill") {
        return;
    }
    run(opts, async |w: &mut World| {
        let so = options("killed", 2);
        let (created, targets) = ready_stream(w, &so).await?;
        assert_eq!(faults::round(w, &so, &targets, 8 * MIB).await?, 2 * 8 * MIB);
        let held = faults::allocations(w, &so.name).await?;
        for side in [0, 1] {
            let pods = faults::serving_relays(w, side, &created.stream_id).await?;
            anyhow::ensure!(pods.len() == 1, "one relay pod per side, got {}", pods.len());
            let (pod, before) = (pods[0].clone(), faults::restarts(&pods[0]));
            let cut = faults::interrupted(w, &so, targets[0], 4 * MIB, 64 << 30, LONG, async || {
                let killed = faults::kill_pod_processes(w, side, &pod)?;
                anyhow::ensure!(killed > 0, "no relay process found for pod {:?}", pod.metadata.name);
                Ok(())
            })
            .await?;
            assert!(cut.ended && cut.producer_ended, "side {side}: the connections must end, not hang: {cut:?}");
            // The same pod's relay restarted, Ready again, on the same ports.
            let deadline = std::time::Instant::now() + LONG;
            loop {
                let now = faults::serving_relays(w, side, &created.stream_id).await?;
                if let [p] = now.as_slice()
                    && p.metadata.uid == pod.metadata.uid
                    && faults::restarts(p) > before
                    && faults::pod_ready(p)
                {
                    break;
                }
                anyhow::ensure!(std::time::Instant::now() < deadline, "side {side}: the relay did not come back");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            faults::wait_both(w, &so.name, Phase::Ready, LONG).await?;
            assert_eq!(faults::allocations(w, &so.name).await?, held, "same ports after the restart");
            let (bytes, rounds) = faults::round_until_verified(w, &so, &targets, 8 * MIB, 5, ROUND).await?;
            assert_eq!(bytes, 2 * 8 * MIB);
            eprintln!(
                "side {side}: in-flight connection cut after {} bytes ({:?}); verified again after {rounds} round(s)",
                cut.bytes, cut.error
            );
        }
        faults::release(w, &so, &created.stream_id).await?;
        assert_eq!(faults::check_holdings(w).await?, vec![0, 0]);
        Ok(())
    })
    .await;
}

scistream_e2e::both_relay_models!(
    /// The producer's gateway node carrying the stream is lost: its listeners move to the
    /// other node (status and a condition say the peer must be updated), `kubectl scistream
    /// update` points the consumer side at them, and verified data flows again.
    a_lost_gateway_node_and_update_restore_the_stream,
    a_lost_gateway_node_and_update_restore_the_stream_on_shared_relays,
    lost_node
);

async fn lost_node(opts: world::Options) {
    if world::embedded_only("a gateway node to fail") {
        return;
    }
    run(opts, async |w: &mut World| {
        let so = options("nodeloss", 2);
        let (created, targets) = ready_stream(w, &so).await?;
        assert_eq!(faults::round(w, &so, &targets, 8 * MIB).await?, 2 * 8 * MIB);
        let before = faults::request(w, 0, &so.name).await?;
        let old_listeners = before.status.clone().unwrap_or_default().listeners;
        let lost = faults::allocations(w, &so.name).await?[0][0].node.clone();
        let killed = faults::lose_node(w, 0, &lost).await?;
        anyhow::ensure!(killed > 0, "no relay process ran on {lost}");
        let moved = faults::wait_request(w, 0, &so.name, LONG, "moved off the lost node and Ready", |sr| {
            let st = sr.status.clone().unwrap_or_default();
            faults::phase(sr) == Some(Phase::Ready)
                && !st.allocations.is_empty()
                && st.allocations.iter().all(|a| a.node != lost)
        })
        .await?;
        let new_listeners = moved.status.clone().unwrap_or_default().listeners;
        let cond = |sr: &StreamRequest| {
            sr.status.as_ref().and_then(|s| conditions::find(&s.conditions, "ListenersMoved")).cloned()
        };
        let c = cond(&moved).ok_or_else(|| anyhow::anyhow!("no ListenersMoved condition"))?;
        assert_eq!((c.status.as_str(), c.reason.as_str()), ("True", "NodeLost"), "{}", c.message);
        assert!(c.message.contains("kubectl scistream update nodeloss"), "{}", c.message);
        assert_eq!(new_listeners.len(), 2);
        assert!(new_listeners.iter().all(|l| !old_listeners.contains(l)), "{old_listeners:?} -> {new_listeners:?}");
        stream::plugin(w, &so, &["update", &so.name, "--context", "aps", "-n", world::USER_NS]).await?;
        let cons = faults::wait_request(w, 1, &so.name, LONG, "updated", |sr| {
            sr.spec.remote_listeners.as_ref() == Some(&new_listeners)
        })
        .await?;
        assert_eq!(cons.spec.remote_listeners.as_ref(), Some(&new_listeners));
        // `update` left what it told the peer: the producer's current listeners.
        let stamped = faults::request(w, 0, &so.name).await?;
        let stamp = stamped.metadata.annotations.unwrap_or_default().get(keys::ANNOTATION_PEER_UPDATED).cloned();
        assert_eq!(stamp, Some(new_listeners.join(",")), "update stamps the listeners it propagated");
        let updated = faults::wait_request(w, 0, &so.name, LONG, "told the peer was updated", |sr| {
            cond(sr).is_some_and(|c| c.status == "False" && c.reason == "PeerUpdated")
        })
        .await;
        if let Err(e) = updated {
            let sr = faults::request(w, 0, &so.name).await?;
            eprintln!("annotations {:?}\nstatus {:#?}", sr.metadata.annotations, sr.status);
            return Err(e);
        }
        faults::wait_both(w, &so.name, Phase::Ready, LONG).await?;
        let (bytes, rounds) = match faults::round_until_verified(w, &so, &targets, 8 * MIB, 5, ROUND).await {
            Ok(r) => r,
            Err(e) => {
                for i in [0, 1] {
                    for pod in faults::serving_relays(w, i, &created.stream_id).await? {
                        eprintln!("{}", faults::pod_logs(w, i, &pod));
                    }
                }
                return Err(e);
            }
        };
        assert_eq!(bytes, 2 * 8 * MIB);
        eprintln!("{lost} lost: listeners {old_listeners:?} -> {new_listeners:?}; verified after {rounds} round(s)");
        faults::check_holdings(w).await?;
        faults::release(w, &so, &created.stream_id).await?;
        faults::restore_node(w, 0, &lost).await?;
        assert_eq!(faults::check_holdings(w).await?, vec![0, 0]);
        Ok(())
    })
    .await;
}

/// A Hello with a wrong key is refused as unauthenticated and changes nothing; without the
/// right Hello within a short helloTimeout both sides fail with HelloTimeout and release
/// everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wrong_hello_key_then_hello_timeout_releases_both_sides() {
    run(world::Options::for_tests("S2ds").expect("s2ds is built"), async |w: &mut World| {
        let so = options("timeout", 2);
        let created = faults::create(w, &so, &["--timeout", "60s", "--hello-timeout", "8s"]).await?;
        match stream::hello(w, &so, 1, &created.stream_id, "not-the-key", "CONS", &[]).await {
            Err(e) if e.to_string().contains("Unauthenticated") => {}
            other => anyhow::bail!("a wrong key must be refused as Unauthenticated, got {other:?}"),
        }
        let cons = faults::request(w, 1, &so.name).await?;
        anyhow::ensure!(
            cons.status.as_ref().is_some_and(|s| s.hello_time.is_none())
                && faults::phase(&cons) == Some(Phase::AwaitingHello),
            "a refused Hello changed the consumer's request: {:?}",
            cons.status
        );
        for i in [0, 1] {
            faults::wait_request(w, i, &so.name, LONG, "Failed with HelloTimeout", |sr| {
                faults::phase(sr) == Some(Phase::Failed) && faults::reason(sr, "Ready") == "HelloTimeout"
            })
            .await?;
        }
        // Everything released while the requests still exist (Failed is terminal).
        let deadline = std::time::Instant::now() + LONG;
        while let Err(e) = stream::assert_released(w, &created.stream_id).await {
            anyhow::ensure!(std::time::Instant::now() < deadline, "{e}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        faults::release(w, &so, &created.stream_id).await?;
        Ok(())
    })
    .await;
}

scistream_e2e::both_relay_models!(
    /// `kubectl scistream release` while data flows: the release completes, nothing is left,
    /// and both applications see the cut as a reset, never as a clean end of the data (issue
    /// 24: s2ds forwards a FIN only for a real end of data), over MutualTLS and Plain.
    release_during_a_transfer_resets_both_applications,
    release_during_a_transfer_resets_both_applications_on_shared_relays,
    release_during_transfer
);

async fn release_during_transfer(opts: world::Options) {
    run(opts, async |w: &mut World| {
        for (name, channel) in [("midway", "MutualTLS"), ("midway-plain", "Plain")] {
            let so = StreamOptions::new(name, 0, 2, "20Gbps", channel)?;
            let (created, targets) = ready_stream(w, &so).await?;
            let cut = faults::interrupted(w, &so, targets[1], 4 * MIB, 64 << 30, LONG, async || {
                faults::release(w, &so, &created.stream_id).await
            })
            .await?;
            assert!(cut.reset_at_both(), "{channel}: both applications must see a reset, not a FIN: {cut:?}");
            assert_eq!(faults::check_holdings(w).await?, vec![0, 0]);
        }
        Ok(())
    })
    .await;
}
