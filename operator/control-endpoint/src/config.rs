//! Settings of the control endpoint: [`EndpointConfig`], and the clap [`Args`] the operator
//! flattens into its own (`#[command(flatten)] control: scistream_control_endpoint::Args`).

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use scistream_api::DataChannel;

use crate::{auth::AuthMode, handler::HandlerConfig, legacy::Placement, tls::TlsSource};

/// How the endpoint checks user-facing (`req`/`update`/`release`) tokens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AuthConfig {
    /// TokenReview + SubjectAccessReview.
    Kubernetes,
    /// RFC 7662 introspection + SubjectAccessReview.
    Introspection {
        /// Introspection endpoint URL.
        url: String,
        /// Secret (in the TLS namespace) with keys `client_id` and `client_secret`.
        credentials_secret: String,
        /// Prefix of the Kubernetes user and group names (e.g. `globus:`).
        prefix: String,
    },
    /// No check (1.x trusted-testbed mode).
    None,
}

/// Everything [`crate::serve`] needs.
#[derive(Clone, Debug)]
pub struct EndpointConfig {
    /// gRPC listen address (1.x clients use port 5000).
    pub grpc_addr: SocketAddr,
    /// JSON Hello (`POST /v1/hello`) listen address; `None` disables it.
    pub http_addr: Option<SocketAddr>,
    /// Serve plaintext instead of TLS (logged as a warning).
    pub insecure: bool,
    /// Serving certificate.
    pub tls: TlsSource,
    /// Authentication mode.
    pub auth: AuthConfig,
    /// Protocol settings (legacy placement, waits).
    pub handler: HandlerConfig,
    /// Failed authentications allowed per peer and window.
    pub max_auth_failures: u32,
    /// The window of `max_auth_failures`.
    pub auth_failure_window: Duration,
    /// Largest gRPC message accepted.
    pub max_message_bytes: usize,
}

/// Command-line flags of the control endpoint (all prefixed `--control-`, each also an
/// environment variable, for the chart).
#[derive(Clone, Debug, clap::Args)]
#[group(id = "control-endpoint")]
pub struct Args {
    /// Address of the SciStream 1.x gRPC control endpoint.
    #[arg(long = "control-addr", env = "SCISTREAM_CONTROL_ADDR", default_value = "0.0.0.0:5000")]
    pub control_addr: SocketAddr,
    /// Address of the JSON Hello (`POST /v1/hello`); `off` disables it.
    #[arg(long = "control-http-addr", env = "SCISTREAM_CONTROL_HTTP_ADDR", default_value = "0.0.0.0:5001")]
    pub control_http_addr: String,
    /// Serve the control endpoint without TLS (tokens and Hello keys cross the network in clear text).
    #[arg(long = "insecure-control", env = "SCISTREAM_INSECURE_CONTROL")]
    pub insecure_control: bool,
    /// Namespace of the serving-certificate and introspection Secrets.
    #[arg(long = "control-tls-namespace", env = "SCISTREAM_CONTROL_TLS_NAMESPACE", default_value = "scistream-system")]
    pub control_tls_namespace: String,
    /// A `kubernetes.io/tls` Secret to serve (reloaded when it changes); without it a
    /// certificate is generated.
    #[arg(long = "control-tls-secret", env = "SCISTREAM_CONTROL_TLS_SECRET")]
    pub control_tls_secret: Option<String>,
    /// Secret where a generated certificate is stored.
    #[arg(long = "control-tls-generated-secret", default_value = "scistream-control-tls")]
    pub control_tls_generated_secret: String,
    /// DNS names of a generated certificate (the names 1.x clients dial).
    #[arg(long = "control-tls-dns-name", env = "SCISTREAM_CONTROL_TLS_DNS_NAMES", value_delimiter = ',')]
    pub control_tls_dns_names: Vec<String>,
    /// IP addresses of a generated certificate (the addresses 1.x clients dial).
    #[arg(long = "control-tls-ip", env = "SCISTREAM_CONTROL_TLS_IPS", value_delimiter = ',')]
    pub control_tls_ips: Vec<IpAddr>,
    /// How tokens of req/update/release are checked.
    #[arg(long = "control-auth", env = "SCISTREAM_CONTROL_AUTH", value_enum, default_value = "kubernetes")]
    pub control_auth: AuthMode,
    /// RFC 7662 introspection URL (mode `introspection`).
    #[arg(long = "control-introspection-url", env = "SCISTREAM_CONTROL_INTROSPECTION_URL")]
    pub control_introspection_url: Option<String>,
    /// Secret with `client_id` and `client_secret` for the introspection endpoint.
    #[arg(long = "control-introspection-secret", env = "SCISTREAM_CONTROL_INTROSPECTION_SECRET")]
    pub control_introspection_secret: Option<String>,
    /// Prefix of Kubernetes user and group names of introspected identities.
    #[arg(long = "control-identity-prefix", default_value = "oidc:")]
    pub control_identity_prefix: String,
    /// Namespace where legacy `req`s create StreamRequests.
    #[arg(long = "control-namespace", env = "SCISTREAM_CONTROL_NAMESPACE", default_value = "default")]
    pub control_namespace: String,
    /// Gateway of legacy StreamRequests; without it legacy req/update/release are refused.
    #[arg(long = "control-gateway", env = "SCISTREAM_CONTROL_GATEWAY")]
    pub control_gateway: Option<String>,
    /// Data channel of legacy streams (`Plain`, as 1.x's HAProxy/Nginx types, or `MutualTLS`).
    #[arg(long = "control-data-channel", default_value = "plain", value_parser = parse_data_channel)]
    pub control_data_channel: DataChannel,
    /// Seconds a consumer's Hello waits for the stream's listeners.
    #[arg(long = "control-listeners-wait-seconds", default_value_t = 10)]
    pub control_listeners_wait_seconds: u64,
    /// Failed authentications allowed per peer per minute before it is refused for the rest of it.
    #[arg(long = "control-max-auth-failures", default_value_t = 20)]
    pub control_max_auth_failures: u32,
}

fn parse_data_channel(s: &str) -> Result<DataChannel, String> {
    match s.to_ascii_lowercase().as_str() {
        "plain" => Ok(DataChannel::Plain),
        "mutualtls" => Ok(DataChannel::MutualTLS),
        _ => Err(format!("{s:?}: expected Plain or MutualTLS")),
    }
}

/// Why the flags do not make a configuration.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ArgsError(String);

impl Args {
    /// The configuration the flags describe.
    pub fn config(&self) -> Result<EndpointConfig, ArgsError> {
        let http_addr = match self.control_http_addr.as_str() {
            "off" | "" => None,
            a => Some(a.parse().map_err(|e| ArgsError(format!("--control-http-addr {a:?}: {e}")))?),
        };
        let auth = match self.control_auth {
            AuthMode::Kubernetes => AuthConfig::Kubernetes,
            AuthMode::None => AuthConfig::None,
            AuthMode::Introspection => AuthConfig::Introspection {
                url: self.control_introspection_url.clone().ok_or_else(|| {
                    ArgsError("--control-auth introspection needs --control-introspection-url".into())
                })?,
                credentials_secret: self.control_introspection_secret.clone().ok_or_else(|| {
                    ArgsError("--control-auth introspection needs --control-introspection-secret".into())
                })?,
                prefix: self.control_identity_prefix.clone(),
            },
        };
        Ok(EndpointConfig {
            grpc_addr: self.control_addr,
            http_addr,
            insecure: self.insecure_control,
            tls: TlsSource {
                namespace: self.control_tls_namespace.clone(),
                secret: self.control_tls_secret.clone(),
                generated_secret: self.control_tls_generated_secret.clone(),
                dns_names: self.control_tls_dns_names.clone(),
                ips: self.control_tls_ips.clone(),
            },
            auth,
            handler: HandlerConfig {
                placement: self.control_gateway.as_ref().map(|gateway| Placement {
                    namespace: self.control_namespace.clone(),
                    gateway: gateway.clone(),
                    data_channel: self.control_data_channel,
                }),
                listeners_wait: Duration::from_secs(self.control_listeners_wait_seconds),
                ..HandlerConfig::default()
            },
            max_auth_failures: self.control_max_auth_failures,
            auth_failure_window: Duration::from_secs(60),
            max_message_bytes: scistream_api::control::MAX_MESSAGE_BYTES,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        control: Args,
    }

    #[test]
    fn defaults_and_flags() {
        let c = Cli::parse_from(["x"]).control.config().unwrap();
        assert_eq!(c.grpc_addr.port(), scistream_api::control::DEFAULT_PORT);
        assert_eq!(c.auth, AuthConfig::Kubernetes);
        assert!(c.handler.placement.is_none());
        assert!(!c.insecure);
        let c = Cli::parse_from([
            "x",
            "--control-gateway",
            "dtn",
            "--control-auth",
            "none",
            "--control-http-addr",
            "off",
            "--control-tls-ip",
            "127.0.0.1,::1",
            "--control-data-channel",
            "MutualTLS",
        ])
        .control
        .config()
        .unwrap();
        assert_eq!(c.auth, AuthConfig::None);
        assert_eq!(c.http_addr, None);
        assert_eq!(c.tls.ips.len(), 2);
        let p = c.handler.placement.unwrap();
        assert_eq!(
            (p.gateway.as_str(), p.namespace.as_str(), p.data_channel),
            ("dtn", "default", DataChannel::MutualTLS)
        );
        assert!(Cli::parse_from(["x", "--control-auth", "introspection"]).control.config().is_err());
    }
}
