//! Command-line flags (each also readable from an environment variable, for the chart).

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;

use crate::context::{Config, GatewayNamespaces, Images};

/// The SciStream operator (S2CS): reconciles Gateways and StreamRequests into S2DS relays.
#[derive(Clone, Debug, Parser)]
#[command(name = "scistream-operator", version, about)]
pub struct Args {
    /// Kubeconfig to use instead of the in-cluster service account (or $KUBECONFIG).
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context.
    #[arg(long)]
    pub context: Option<String>,
    /// Namespace of the operator (where its leader Lease lives).
    #[arg(long, env = "POD_NAMESPACE", default_value = "scistream-system")]
    pub namespace: String,
    /// This replica's identity for leader election.
    #[arg(long, env = "POD_NAME", default_value = "scistream-operator")]
    pub identity: String,
    /// Run without leader election (one replica only).
    #[arg(long)]
    pub no_leader_election: bool,
    /// Name of the leader Lease.
    #[arg(long, default_value = "scistream-operator")]
    pub lease_name: String,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "SCISTREAM_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Image of the s2ds relay.
    #[arg(long, env = "SCISTREAM_S2DS_IMAGE", default_value = "ghcr.io/scistream/s2ds:0.1.0")]
    pub s2ds_image: String,
    /// Image of HAProxy relays.
    #[arg(long, env = "SCISTREAM_HAPROXY_IMAGE", default_value = "haproxy:2.6")]
    pub haproxy_image: String,
    /// Image of Nginx relays (with the stream module).
    #[arg(long, env = "SCISTREAM_NGINX_IMAGE", default_value = "nginx:1.27")]
    pub nginx_image: String,
    /// Image of Stunnel relays.
    #[arg(long, env = "SCISTREAM_STUNNEL_IMAGE", default_value = "ghcr.io/scistream/stunnel:0.1.0")]
    pub stunnel_image: String,
    /// Path of Nginx's stream module when the Nginx image has it as a dynamic module.
    #[arg(long, env = "SCISTREAM_NGINX_STREAM_MODULE")]
    pub nginx_stream_module: Option<String>,
    /// The namespaces the operator may write relay pods, ConfigMaps and Secrets in (the
    /// chart gives it a Role in each: `gatewayNamespace` and `extraGatewayNamespaces`); a
    /// Gateway whose `spec.podNamespace` is another is not Ready (`NamespaceNotPermitted`).
    /// Unset: any namespace (an install that grants the operator those rules cluster-wide).
    #[arg(long, env = "SCISTREAM_GATEWAY_NAMESPACES", value_delimiter = ',')]
    pub gateway_namespaces: Vec<String>,
    /// Seconds relays drain established connections when stopped.
    #[arg(long, default_value_t = 20)]
    pub drain_seconds: u32,
    /// Seconds between drift checks of healthy objects.
    #[arg(long, default_value_t = 300)]
    pub resync_seconds: u64,
    /// Seconds between readings of the relays' byte counters (status.transfer).
    #[arg(long, default_value_t = 15)]
    pub transfer_interval_seconds: u64,
    /// Do not serve the control endpoint (SciStream 1.x gRPC and POST /v1/hello).
    #[arg(long)]
    pub no_control_endpoint: bool,
    /// The control endpoint.
    #[command(flatten)]
    pub control: scistream_control_endpoint::Args,
    /// The control endpoint's address as application controllers dial it (`host:port`: a
    /// LoadBalancer's, a node's NodePort or host port), published with its certificate in
    /// ConfigMap scistream-control-endpoint for users (default: the certificate's first DNS
    /// name or IP with the gRPC port).
    #[arg(long, env = "SCISTREAM_CONTROL_ADVERTISE", value_parser = parse_advertise)]
    pub control_advertise: Option<String>,
    /// Do not publish the control endpoint in ConfigMap scistream-control-endpoint.
    #[arg(long)]
    pub no_control_publish: bool,
    /// Serve the shared relays' configuration channel here (Gateways with
    /// `spec.s2ds.relayModel: Shared` need it). Unset: not served.
    #[arg(long, env = "SCISTREAM_RELAY_CHANNEL_ADDR")]
    pub relay_channel_addr: Option<SocketAddr>,
    /// The channel's address as shared relays dial it (`host:port`, e.g. the chart's Service
    /// `scistream-relay-channel.NAMESPACE.svc:8444`; relays use the node's network and the
    /// cluster's DNS). Default: that Service name in the operator's namespace.
    #[arg(long, env = "SCISTREAM_RELAY_CHANNEL_ADVERTISE", value_parser = parse_advertise)]
    pub relay_channel_advertise: Option<String>,
    /// Log format: `text` or `json`.
    #[arg(long, env = "SCISTREAM_LOG_FORMAT", default_value = "text")]
    pub log_format: String,
}

fn parse_advertise(text: &str) -> Result<String, String> {
    text.parse::<scistream_api::endpoint::Endpoint>().map(|_| text.to_owned()).map_err(|e| e.to_string())
}

impl Args {
    /// Where shared relays dial the channel.
    pub fn relay_channel_address(&self) -> Option<String> {
        let listen = self.relay_channel_addr?;
        Some(
            self.relay_channel_advertise
                .clone()
                .unwrap_or_else(|| format!("scistream-relay-channel.{}.svc:{}", self.namespace, listen.port())),
        )
    }

    /// Operator settings from the flags.
    pub fn config(&self) -> Config {
        Config {
            images: Images {
                s2ds: self.s2ds_image.clone(),
                haproxy: self.haproxy_image.clone(),
                nginx: self.nginx_image.clone(),
                stunnel: self.stunnel_image.clone(),
            },
            nginx_stream_module: self.nginx_stream_module.clone(),
            drain_seconds: self.drain_seconds,
            gateway_namespaces: GatewayNamespaces::from_flag(&self.gateway_namespaces),
            resync: Duration::from_secs(self.resync_seconds.max(10)),
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Regression: two flattened `Args` structs once clashed on their group id, which makes
    /// clap panic when the binary starts.
    #[test]
    fn the_flags_are_consistent() {
        super::Args::command().debug_assert();
    }

    /// `--gateway-namespaces` as the chart passes it: the listed namespaces only, named in
    /// the refusal of any other; absent or empty, any namespace.
    #[test]
    fn gateway_namespaces_limit_where_relays_may_run() {
        use clap::Parser;

        use crate::context::GatewayNamespaces;
        let parse = |args: &[&str]| {
            super::Args::try_parse_from(std::iter::once("scistream-operator").chain(args.iter().copied()))
                .unwrap()
                .config()
                .gateway_namespaces
        };
        assert_eq!(parse(&[]), GatewayNamespaces::Any);
        assert_eq!(parse(&["--gateway-namespaces="]), GatewayNamespaces::Any);
        assert_eq!(parse(&[]).refusal("anything"), None);
        let only = parse(&["--gateway-namespaces=scistream-gateway,dtn-relays"]);
        assert_eq!(only.refusal("scistream-gateway"), None);
        assert_eq!(only.refusal("dtn-relays"), None);
        let refusal = only.refusal("default").unwrap();
        assert!(
            refusal.contains("dtn-relays, scistream-gateway") && refusal.contains("extraGatewayNamespaces"),
            "{refusal}"
        );
    }

    /// Regression: `--version` once printed the crate's name (`scistream-controller`), not the
    /// binary's, which is what the image smoke test and users see.
    #[test]
    fn version_names_the_binary() {
        let version = super::Args::command().render_version();
        assert!(version.starts_with("scistream-operator "), "{version}");
    }
}
