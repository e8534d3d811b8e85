//! Settings of the control endpoint: [`EndpointConfig`], and the clap [`Args`] the operator
//! flattens into its own (`#[command(flatten)] control: scistream_control_endpoint::Args`).

use std::{net::IpAddr, net::SocketAddr, time::Duration};

use scistream_api::{DataChannel, RateEnforcement};

use crate::{
    auth::{AuthMode, introspection::Expectations},
    handler::HandlerConfig,
    legacy::Placement,
    tls::TlsSource,
};

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
        /// Prefix of the Kubernetes user and group names (e.g. `globus:`), and the scope and
        /// audience tokens must have.
        expect: Expectations,
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
    /// Failed authentications allowed per address, identity and window.
    pub max_auth_failures: u32,
    /// Failed authentications allowed per address and window, whatever the identities.
    pub max_auth_failures_per_address: u32,
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
    /// Prefix of Kubernetes user and group names of introspected identities (RoleBindings name
    /// `<prefix><username>`, e.g. `globus:alice@uni.edu`).
    #[arg(long = "control-identity-prefix", env = "SCISTREAM_CONTROL_IDENTITY_PREFIX", default_value = "oidc:")]
    pub control_identity_prefix: String,
    /// A scope introspected tokens must have, e.g. SciStream 1.x's
    /// `https://auth.globus.org/scopes/<client id>/scistream` (unset: any scope).
    #[arg(long = "control-introspection-scope", env = "SCISTREAM_CONTROL_INTROSPECTION_SCOPE")]
    pub control_introspection_scope: Option<String>,
    /// An audience introspected tokens must have, e.g. the endpoint's client id (unset: any).
    #[arg(long = "control-introspection-audience", env = "SCISTREAM_CONTROL_INTROSPECTION_AUDIENCE")]
    pub control_introspection_audience: Option<String>,
    /// Namespace where legacy `req`s create StreamRequests.
    #[arg(long = "control-namespace", env = "SCISTREAM_CONTROL_NAMESPACE", default_value = "default")]
    pub control_namespace: String,
    /// Gateway of legacy StreamRequests; without it legacy req/update/release are refused.
    #[arg(long = "control-gateway", env = "SCISTREAM_CONTROL_GATEWAY")]
    pub control_gateway: Option<String>,
    /// Data channel of legacy streams (`Plain`, as 1.x's HAProxy/Nginx types, or `MutualTLS`).
    #[arg(long = "control-data-channel", default_value = "plain", value_parser = parse_data_channel)]
    pub control_data_channel: DataChannel,
    /// What the rate of a legacy stream does: `reservation-only` (it is counted against the
    /// Gateway's bandwidth, but the relays do not limit the stream: SciStream 1.x never
    /// enforced rates, and its clients send 10000 kb/s unless told otherwise) or `enforced`
    /// (the relays limit the stream to it). Shown in each stream's `status.rateEnforcement`.
    #[arg(
        long = "control-legacy-rate",
        env = "SCISTREAM_CONTROL_LEGACY_RATE",
        default_value = "reservation-only",
        value_parser = parse_rate_enforcement
    )]
    pub control_legacy_rate: RateEnforcement,
    /// Seconds a consumer's Hello waits for the stream's listeners.
    #[arg(long = "control-listeners-wait-seconds", default_value_t = 10)]
    pub control_listeners_wait_seconds: u64,
    /// Failed authentications allowed per minute from one address with one credential, before
    /// that credential is refused from there for the rest of the minute (other credentials
    /// from the same address are not).
    #[arg(long = "control-max-auth-failures", default_value_t = 20)]
    pub control_max_auth_failures: u32,
    /// Failed authentications allowed per minute from one address, whatever the credentials,
    /// before every call from it is refused for the rest of the minute.
    #[arg(long = "control-max-auth-failures-per-address", default_value_t = 200)]
    pub control_max_auth_failures_per_address: u32,
}

fn parse_rate_enforcement(s: &str) -> Result<RateEnforcement, String> {
    match s.to_ascii_lowercase().as_str() {
        "reservation-only" | "reservationonly" => Ok(RateEnforcement::ReservationOnly),
        "enforced" => Ok(RateEnforcement::Enforced),
        _ => Err(format!("{s:?}: expected reservation-only or enforced")),
    }
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
                expect: Expectations {
                    prefix: self.control_identity_prefix.clone(),
                    scope: self.control_introspection_scope.clone(),
                    audience: self.control_introspection_audience.clone(),
                },
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
                    rate_enforcement: self.control_legacy_rate,
                }),
                listeners_wait: Duration::from_secs(self.control_listeners_wait_seconds),
                ..HandlerConfig::default()
            },
            max_auth_failures: self.control_max_auth_failures,
            max_auth_failures_per_address: self.control_max_auth_failures_per_address,
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
        assert_eq!(p.rate_enforcement, RateEnforcement::ReservationOnly, "1.x never enforced rates");
        assert!(Cli::parse_from(["x", "--control-auth", "introspection"]).control.config().is_err());
        let c = Cli::parse_from(["x", "--control-gateway", "dtn", "--control-legacy-rate", "enforced"]).control;
        assert_eq!(c.config().unwrap().handler.placement.unwrap().rate_enforcement, RateEnforcement::Enforced);
        assert!(Cli::try_parse_from(["x", "--control-legacy-rate", "sometimes"]).is_err());
        let c = Cli::parse_from([
            "x",
            "--control-auth",
            "introspection",
            "--control-introspection-url",
            "https://auth.globus.org/v2/oauth2/token/introspect",
            "--control-introspection-secret",
            "globus",
            "--control-identity-prefix",
            "globus:",
            "--control-introspection-scope",
            "https://auth.globus.org/scopes/c42c/scistream",
        ])
        .control
        .config()
        .unwrap();
        let AuthConfig::Introspection { expect, .. } = c.auth else { panic!("introspection") };
        assert_eq!(expect.prefix, "globus:");
        assert_eq!(expect.scope.as_deref(), Some("https://auth.globus.org/scopes/c42c/scistream"));
        assert_eq!(expect.audience, None);
        assert_eq!((c.max_auth_failures, c.max_auth_failures_per_address), (20, 200));
    }
}
