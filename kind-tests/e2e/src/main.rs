//! `scistream-demo`: two facilities on this machine, one stream created with the kubectl
//! plugin, data streamed through real relays and verified, timings shown.

use std::path::PathBuf;

use clap::Parser;
use scistream_e2e::{stream, world};

/// Runs the SciStream demo.
#[derive(Parser)]
struct Args {
    /// Bytes to stream (default 1 GiB).
    #[arg(long, default_value_t = 1 << 30)]
    bytes: u64,
    /// Parallel connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Rate to reserve.
    #[arg(long, default_value = "40Gbps")]
    rate: String,
    /// Data channel between the gateways: MutualTLS or Plain.
    #[arg(long, default_value = "MutualTLS")]
    data_channel: String,
    /// Relay implementation of both gateways: S2ds, Haproxy, Nginx or Stunnel.
    #[arg(long, default_value = "S2ds")]
    implementation: String,
    /// Relay implementation of the consumer's gateway, when it differs.
    #[arg(long)]
    consumer_implementation: Option<String>,
    /// How the S2ds gateways run their relays: `shared` (one relay per gateway node for every
    /// stream, fed by the operator's relay channel; what the chart installs) or `per-stream`
    /// (a relay pod per stream).
    #[arg(long, value_enum, default_value = "shared")]
    relay_model: RelayModel,
    /// Use loopback addresses even as root.
    #[arg(long)]
    loopback: bool,
    /// The s2ds binary (default: next to this program).
    #[arg(long)]
    s2ds: Option<PathBuf>,
    /// Run the relay pods from the images `kind-tests/build-images.sh` builds
    /// (ghcr.io/scistream/*), with podman, instead of as local processes (root).
    #[arg(long)]
    podman_images: bool,
    /// Keep both facilities running afterwards and print how to explore them.
    #[arg(long)]
    keep: bool,
    /// With --keep and --loopback: write the variables that run the e2e suite against the
    /// kept facilities as if they were real clusters (shell `export` lines) to this file.
    #[arg(long, requires = "keep")]
    env_file: Option<PathBuf>,
}

/// `--relay-model`.
#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum RelayModel {
    Shared,
    PerStream,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| "warn,kube_client=off,kube_runtime=error".into());
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();
    let bin_dir = std::env::current_exe()?.parent().map(PathBuf::from).unwrap_or_default();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize()?;
    let netns = nix::unistd::geteuid().is_root() && !args.loopback;
    let s2ds = args.s2ds.clone().unwrap_or_else(|| bin_dir.join("s2ds"));
    let mut opts = world::Options::new(netns, s2ds, root, &args.implementation);
    if let Some(consumer) = &args.consumer_implementation {
        opts = opts.implementations(&args.implementation, consumer);
    }
    if args.relay_model == RelayModel::Shared {
        opts = opts.with_shared_relays();
    }
    if args.podman_images {
        // The operator's default s2ds image, ghcr.io/scistream/s2ds:<appVersion>, is the tag
        // build-images.sh gives the image it builds (which checks that they agree).
        opts.podman_images = Some("ghcr.io/scistream/*".to_owned());
    }
    let model = |i: usize| match (opts.implementation_of(i), args.relay_model) {
        ("S2ds", RelayModel::Shared) => " (shared relays)",
        _ => "",
    };
    let relays = format!("{}{} -> {}{}", opts.implementation_of(0), model(0), opts.implementation_of(1), model(1));
    println!(
        "SciStream demo: two facilities (aps -> alcf), {} network{}",
        if netns { "network-namespace" } else { "loopback" },
        if args.podman_images { ", relays from their images (podman)" } else { "" }
    );
    let world = world::World::start(&opts).await?;
    for (what, t) in &world.timings {
        println!("  {:<55} {:>8.2}s", what, t.as_secs_f64());
    }
    let so = stream::StreamOptions {
        name: "demo".into(),
        bytes: args.bytes,
        connections: args.connections,
        rate: args.rate.clone(),
        data_channel: args.data_channel.clone(),
        plugin: bin_dir.join("kubectl-scistream"),
    };
    let result = stream::run(&world, &so).await;
    match &result {
        Ok(report) => {
            println!("Stream demo ({} over {} connections, {}):", args.data_channel, report.connections, relays);
            for (what, t) in &report.steps {
                println!("  {:<55} {:>8.2}s", what, t.as_secs_f64());
            }
            println!(
                "  {} bytes verified in {:.2}s: {:.2} Gbit/s",
                report.bytes,
                report.transfer_seconds,
                report.gbps()
            );
        }
        Err(e) => eprintln!("demo failed: {e:#}"),
    }
    if args.keep {
        println!("\nBoth facilities keep running. Explore with real kubectl:");
        println!("  export KUBECONFIG={}", world.kubeconfig.display());
        println!("  kubectl --context aps get gateways,streamrequests -A");
        println!("  kubectl --context alcf -n scistream-gateway get pods -o wide");
        let endpoints: Vec<(String, String, String)> =
            world.facilities.iter().map(|f| (f.name.clone(), f.control.clone(), f.control_secret.0.clone())).collect();
        print!("{}", control_endpoints(&endpoints));
        if let Some(path) = &args.env_file {
            // Written whole, then renamed: a reader never sees half of it.
            let partial = path.with_extension("partial");
            std::fs::write(&partial, world.as_external_env()?)?;
            std::fs::rename(&partial, path)?;
            println!("The e2e suite against them: . {} && cargo nextest run -p scistream-e2e", path.display());
        }
        println!("Press Ctrl-C to stop.");
        let _ = tokio::signal::ctrl_c().await;
    }
    world.shutdown().await;
    result.map(|_| ())
}

/// What `--keep` says about each facility's control endpoint: where application controllers
/// say Hello, where its operator publishes it (namespace), and a Hello found from the context.
fn control_endpoints(facilities: &[(String, String, String)]) -> String {
    let mut out = String::from("Control endpoints (application controllers say Hello here):\n");
    for (name, control, ns) in facilities {
        out.push_str(&format!(
            "  {name:<6} {control}   certificate: kubectl --context {name} -n {ns} get configmap scistream-control-endpoint -o jsonpath='{{.data.ca\\.crt}}'\n"
        ));
    }
    if let Some((name, _, ns)) = facilities.first() {
        out.push_str(&format!(
            "  e.g. kubectl scistream hello --context {name} -n science --operator-namespace {ns} --role CONS --stream-id <id>\n"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn keep_prints_the_control_endpoints() {
        let f = |n: &str, c: &str| (n.to_owned(), c.to_owned(), "default".to_owned());
        let text = super::control_endpoints(&[f("aps", "127.0.0.1:40001"), f("alcf", "127.0.0.1:40002")]);
        assert!(text.contains("aps    127.0.0.1:40001") && text.contains("alcf   127.0.0.1:40002"), "{text}");
        assert!(text.contains("--context aps -n default get configmap scistream-control-endpoint"), "{text}");
        assert!(text.contains("--operator-namespace default"), "{text}");
    }
}
