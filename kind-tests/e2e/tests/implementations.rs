//! Every relay implementation on each side of a stream, alone and mixed: the producer's
//! facility runs one Gateway implementation, the consumer's another, and the data crosses
//! both (network namespaces as root, loopback addresses otherwise). Each scenario checks that
//! the relay pods run the implementations asked for, that both ends hashed the same bytes,
//! and that nothing of the stream is left after `release`.

use scistream_e2e::{stream, world};

const BYTES: u64 = 32 << 20;

async fn through(producer: &str, consumer: &str, data_channel: &str) {
    // Real clusters run the chart's default Gateway (s2ds); the others need gateways of their own.
    if (producer, consumer) != ("S2ds", "S2ds") && world::embedded_only("gateways of another implementation") {
        return;
    }
    let opts = world::Options::for_tests(producer).unwrap().implementations(producer, consumer);
    let name = format!("{}-{}-{}", producer, consumer, data_channel).to_lowercase();
    let so = stream::StreamOptions::new(&name, BYTES, 4, "20Gbps", data_channel).unwrap();
    let what = format!("{data_channel} from {producer} to {consumer}");
    one_stream(&opts, &so, &what, async |w, ready| {
        for (facility, implementation) in [producer, consumer].iter().enumerate() {
            let images = stream::relay_images(w, facility, &ready.created.stream_id).await?;
            let wanted = implementation.to_lowercase();
            anyhow::ensure!(
                !images.is_empty() && images.iter().all(|i| i.contains(&wanted)),
                "facility {facility} should relay with {implementation}, its relay pods run {images:?}"
            );
        }
        Ok(())
    })
    .await;
}

/// Starts the two facilities of `opts`, sets up stream `so`, runs `check` on it, then sends
/// its bytes (verified at both ends) and releases it; panics naming `what` on a failure.
async fn one_stream<F>(opts: &world::Options, so: &stream::StreamOptions, what: &str, check: F)
where
    F: AsyncFnOnce(&world::World, &stream::Ready) -> anyhow::Result<()>,
{
    let w = world::World::start(opts).await.expect("both facilities start");
    let result = async {
        let ready = stream::setup(&w, so).await?;
        check(&w, &ready).await?;
        let moved = stream::transfer(&w, ready.producer, &ready.targets, so.bytes).await?;
        stream::release(&w, so, &ready.created.stream_id).await?;
        Ok::<_, anyhow::Error>(moved.bytes())
    }
    .await;
    w.shutdown().await;
    assert_eq!(result.unwrap_or_else(|e| panic!("{what}: {e:#}")), so.bytes);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2ds_mutual_tls() {
    through("S2ds", "S2ds", "MutualTLS").await;
}

/// Gateways that choose rustls's own record layer (`spec.s2ds.recordLayer: Rustls`): the
/// operator renders it into every TLS relay's configuration and the data crosses unchanged.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2ds_mutual_tls_on_rustls_record_layer() {
    if world::embedded_only("Gateways with spec.s2ds") {
        return;
    }
    let mut opts = world::Options::for_tests("S2ds").unwrap();
    opts.s2ds_settings = serde_json::json!({"recordLayer": "Rustls"});
    let so = stream::StreamOptions::new("rustls-record-layer", BYTES, 4, "20Gbps", "MutualTLS").unwrap();
    one_stream(&opts, &so, "MutualTLS on rustls's record layer", async |w, ready| {
        for facility in 0..2 {
            let configs = stream::relay_configs(w, facility, &ready.created.stream_id).await?;
            let relays: Vec<&String> = configs.iter().filter(|c| c.contains("mode: tls-")).collect();
            anyhow::ensure!(
                !relays.is_empty() && relays.iter().all(|c| c.contains("recordLayer: rustls")),
                "facility {facility}: every TLS relay config should name rustls's record layer: {configs:?}"
            );
        }
        Ok(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2ds_plain_splice() {
    through("S2ds", "S2ds", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_plain() {
    through("Haproxy", "Haproxy", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_plain() {
    through("Nginx", "Nginx", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stunnel_mutual_tls() {
    through("Stunnel", "Stunnel", "MutualTLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2ds_to_stunnel_mutual_tls() {
    through("S2ds", "Stunnel", "MutualTLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn stunnel_to_s2ds_mutual_tls() {
    through("Stunnel", "S2ds", "MutualTLS").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn haproxy_to_nginx_plain() {
    through("Haproxy", "Nginx", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_to_haproxy_plain() {
    through("Nginx", "Haproxy", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn s2ds_to_haproxy_plain() {
    through("S2ds", "Haproxy", "Plain").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nginx_to_s2ds_plain() {
    through("Nginx", "S2ds", "Plain").await;
}

/// `kubectl scistream doctor`'s WAN hop, from this host (loopback addresses, so that the
/// gateways' WAN listeners are reachable from here): every producer listener the consumer
/// dials presents the certificate the consumer pins, whether s2ds or Stunnel serves it, and
/// the probe reaches no application (the transfer after it is verified byte for byte).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn doctor_probes_the_wan_listeners_of_each_tls_relay() {
    if world::embedded_only("loopback worlds of another implementation") {
        return;
    }
    for producer in ["S2ds", "Stunnel"] {
        let mut opts = world::Options::for_tests(producer).unwrap().implementations(producer, "S2ds");
        opts.netns = false;
        let so = stream::StreamOptions::new("doctor-wan", 1 << 20, 2, "1Gbps", "MutualTLS").unwrap();
        one_stream(&opts, &so, &format!("{producer} producer relay"), async |w, _| {
            let checks = stream::doctor(w, &so).await?;
            let wan: Vec<&serde_json::Value> =
                checks.iter().filter(|c| c["check"].as_str().is_some_and(|n| n.starts_with("WAN listener"))).collect();
            anyhow::ensure!(
                wan.len() == so.connections && wan.iter().all(|c| c["verdict"] == "Pass"),
                "doctor's WAN listener checks: {wan:#?}"
            );
            Ok(())
        })
        .await;
    }
}
