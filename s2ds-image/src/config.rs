//! The configuration file: YAML parsing and validation (pure, no I/O except
//! [`Config::load`]).
//!
//! The format is documented in the crate README; the operator renders exactly
//! that format. Every validation error names the field and the value, e.g.
//! `listeners[2]: "1.2.3.4" is not host:port (missing :port)`, and all errors
//! of a file are reported at once.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::endpoint::Endpoint;

/// Default SIGTERM grace period.
pub const DEFAULT_DRAIN_SECONDS: u64 = 25;
/// Default per-direction copy buffer (and splice pipe) size.
pub const DEFAULT_BUFFER_BYTES: usize = 256 * 1024;
const MIN_BUFFER_BYTES: usize = 4 * 1024;
const MAX_BUFFER_BYTES: usize = 64 * 1024 * 1024;

/// What the relay does on each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// TCP in, TCP out.
    Plain,
    /// Mutual TLS in (from the peer gateway), TCP out (to the producer).
    TlsServer,
    /// TCP in (from the consumer), mutual TLS out (to the peer gateway).
    TlsClient,
}

impl Mode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Plain => "plain",
            Mode::TlsServer => "tls-server",
            Mode::TlsClient => "tls-client",
        }
    }
}

/// The file as written, before validation.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawConfig {
    stream_id: String,
    mode: Mode,
    listeners: Vec<String>,
    #[serde(default)]
    targets: Vec<String>,
    rate_bits_per_second: Option<u64>,
    tls: Option<RawTls>,
    metrics_address: Option<String>,
    drain_seconds: Option<u64>,
    buffer_bytes: Option<usize>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawTls {
    cert_file: PathBuf,
    key_file: PathBuf,
    peer_cert_file: Option<PathBuf>,
    peer_fingerprint_sha256: Option<String>,
    kernel_tls: Option<bool>,
    record_layer: Option<RecordLayer>,
}

/// Which record layer carries the data phase of TLS connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RecordLayer {
    /// Ours (`relay/record.rs`): no userspace copy; kernel TLS where the
    /// kernel offers it (`kernelTls`).
    #[default]
    S2ds,
    /// rustls's own, through tokio-rustls: the conservative path (rustls
    /// does everything after the handshake too), at the cost of copies.
    Rustls,
}

impl RecordLayer {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::S2ds => "s2ds",
            Self::Rustls => "rustls",
        }
    }
}

/// How the peer gateway's certificate is pinned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerPin {
    /// The full peer certificate, read from this PEM file.
    CertFile(PathBuf),
    /// The SHA-256 of the peer certificate's DER encoding.
    Fingerprint([u8; 32]),
}

/// TLS material for the `tls-*` modes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// This side's certificate (PEM).
    pub cert_file: PathBuf,
    /// This side's PKCS#8 private key (PEM).
    pub key_file: PathBuf,
    /// The pinned peer certificate.
    pub peer: PeerPin,
    /// Hand the data phase to kernel TLS where the kernel offers it
    /// (default true with our record layer; false keeps it in userspace
    /// everywhere; never with rustls's).
    pub kernel_tls: bool,
    /// The record layer of the data phase (`s2ds`, the default, or `rustls`).
    pub record_layer: RecordLayer,
}

/// A validated configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Stream identifier (metrics label, log field).
    pub stream_id: String,
    /// Relay mode.
    pub mode: Mode,
    /// Bind addresses; listener `i` forwards to `targets[i % targets.len()]`.
    pub listeners: Vec<SocketAddr>,
    /// Where to forward; may be empty (connections are then refused).
    pub targets: Vec<Endpoint>,
    /// Aggregate rate limit in bits per second; `None` is unlimited.
    pub rate_bits_per_second: Option<u64>,
    /// Present exactly when the mode is `tls-*`.
    pub tls: Option<TlsFiles>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_address: Option<SocketAddr>,
    /// SIGTERM grace for established connections.
    pub drain_seconds: u64,
    /// Copy buffer and splice pipe size per direction.
    pub buffer_bytes: usize,
}

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The field path, e.g. `listeners[2]`.
    pub field: String,
    /// What is wrong, including the offending value.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

/// Why a config could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}; check the path and permissions")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The YAML is malformed or has unknown / missing fields.
    #[error("config is not valid YAML for s2ds: {0}")]
    Syntax(String),
    /// Fields have invalid values.
    #[error("invalid config: {}", join(.0))]
    Invalid(Vec<FieldError>),
}

fn join(errors: &[FieldError]) -> String {
    errors.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text)
    }

    /// Parses and validates YAML text.
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let raw: RawConfig = serde_yaml::from_str(text).map_err(|e| ConfigError::Syntax(e.to_string()))?;
        validate(raw).map_err(ConfigError::Invalid)
    }

    /// The target for the listener bound at `listener`, by the rule
    /// `targets[index % len]`; `None` when there are no targets or the
    /// listener is no longer configured.
    pub fn target_for(&self, listener: SocketAddr) -> Option<&Endpoint> {
        select_target(&self.listeners, &self.targets, listener)
    }
}

/// Target selection: listener `i` forwards to `targets[i % targets.len()]`.
pub fn select_target<'a>(
    listeners: &[SocketAddr],
    targets: &'a [Endpoint],
    listener: SocketAddr,
) -> Option<&'a Endpoint> {
    let i = listeners.iter().position(|l| *l == listener)?;
    targets.get(i.checked_rem(targets.len())?)
}

fn validate(raw: RawConfig) -> Result<Config, Vec<FieldError>> {
    let mut errs = Vec::new();
    let mut err = |field: String, message: String| errs.push(FieldError { field, message });

    let sid = raw.stream_id.trim();
    if sid.is_empty() || sid.len() > 128 || !sid.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) {
        err("streamId".into(), format!("{:?} must be 1 to 128 characters of [A-Za-z0-9._-]", raw.stream_id));
    }

    if raw.listeners.is_empty() {
        err("listeners".into(), "must list at least one bind address".into());
    }
    let mut listeners = Vec::new();
    for (i, l) in raw.listeners.iter().enumerate() {
        match Endpoint::parse(l, true).map(|e| e.socket_addr()) {
            Ok(Some(a)) if listeners.contains(&a) => {
                err(format!("listeners[{i}]"), format!("{l:?} is listed twice"));
            }
            Ok(Some(a)) => listeners.push(a),
            Ok(None) => err(
                format!("listeners[{i}]"),
                format!("{l:?} is not an IP address:port (bind addresses cannot be DNS names)"),
            ),
            Err(e) => err(format!("listeners[{i}]"), format!("{l:?} is not host:port ({e})")),
        }
    }

    let mut targets = Vec::new();
    for (i, t) in raw.targets.iter().enumerate() {
        match Endpoint::parse(t, false) {
            Ok(e) => targets.push(e),
            Err(e) => err(format!("targets[{i}]"), format!("{t:?} is not host:port ({e})")),
        }
    }

    if raw.rate_bits_per_second == Some(0) {
        err("rateBitsPerSecond".into(), "0 would block all traffic; omit the field for unlimited".into());
    }

    let tls = match (raw.mode, raw.tls) {
        (Mode::Plain, Some(_)) => {
            err("tls".into(), "must be absent when mode is plain".into());
            None
        }
        (Mode::Plain, None) => None,
        (m, None) => {
            err("tls".into(), format!("is required when mode is {}", m.as_str()));
            None
        }
        (_, Some(t)) => validate_tls(t, &mut err),
    };

    let metrics_address =
        raw.metrics_address.as_ref().and_then(|m| match Endpoint::parse(m, true).map(|e| e.socket_addr()) {
            Ok(Some(a)) => Some(a),
            _ => {
                err("metricsAddress".into(), format!("{m:?} is not an IP address:port"));
                None
            }
        });

    let drain_seconds = raw.drain_seconds.unwrap_or(DEFAULT_DRAIN_SECONDS);
    if drain_seconds > 3600 {
        err("drainSeconds".into(), format!("{drain_seconds} is more than 3600"));
    }
    let buffer_bytes = raw.buffer_bytes.unwrap_or(DEFAULT_BUFFER_BYTES);
    if !(MIN_BUFFER_BYTES..=MAX_BUFFER_BYTES).contains(&buffer_bytes) {
        err("bufferBytes".into(), format!("{buffer_bytes} is outside {MIN_BUFFER_BYTES}..={MAX_BUFFER_BYTES}"));
    }

    if !errs.is_empty() {
        return Err(errs);
    }
    Ok(Config {
        stream_id: sid.to_owned(),
        mode: raw.mode,
        listeners,
        targets,
        rate_bits_per_second: raw.rate_bits_per_second,
        tls,
        metrics_address,
        drain_seconds,
        buffer_bytes,
    })
}

fn validate_tls(t: RawTls, err: &mut impl FnMut(String, String)) -> Option<TlsFiles> {
    for (name, p) in [("tls.certFile", &t.cert_file), ("tls.keyFile", &t.key_file)] {
        if p.as_os_str().is_empty() {
            err(name.into(), "must not be empty".into());
        }
    }
    let peer = match (t.peer_cert_file, t.peer_fingerprint_sha256) {
        (Some(p), None) if !p.as_os_str().is_empty() => Some(PeerPin::CertFile(p)),
        (None, Some(f)) => match parse_fingerprint(&f) {
            Some(fp) => Some(PeerPin::Fingerprint(fp)),
            None => {
                err("tls.peerFingerprintSha256".into(), format!("{f:?} is not 32 hex bytes (colons optional)"));
                None
            }
        },
        (Some(_), None) => {
            err("tls.peerCertFile".into(), "must not be empty".into());
            None
        }
        _ => {
            err("tls".into(), "exactly one of peerCertFile and peerFingerprintSha256 is required".into());
            None
        }
    };
    let record_layer = t.record_layer.unwrap_or_default();
    // Kernel TLS takes the data phase from our record layer; rustls keeps its own.
    if record_layer == RecordLayer::Rustls && t.kernel_tls == Some(true) {
        err(
            "tls.kernelTls".into(),
            "true needs recordLayer: s2ds (kernel TLS replaces our record layer, not rustls's); drop one of them"
                .into(),
        );
    }
    Some(TlsFiles {
        cert_file: t.cert_file,
        key_file: t.key_file,
        peer: peer?,
        kernel_tls: t.kernel_tls.unwrap_or(record_layer == RecordLayer::S2ds),
        record_layer,
    })
}

/// Parses a SHA-256 fingerprint: 64 hex digits, optionally separated by
/// colons between bytes (`AB:CD:...`), any case.
pub fn parse_fingerprint(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    let hex: Vec<u8> = if s.contains(':') {
        let parts: Vec<&str> = s.split(':').collect();
        if parts.len() != 32 || parts.iter().any(|p| p.len() != 2) {
            return None;
        }
        parts.concat().into_bytes()
    } else {
        s.as_bytes().to_vec()
    };
    if hex.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(hex.chunks_exact(2)) {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        *o = u8::try_from(hi * 16 + lo).ok()?;
    }
    Some(out)
}

/// Formats a fingerprint as `AB:CD:...` (for logs and tests).
pub fn format_fingerprint(fp: &[u8; 32]) -> String {
    fp.iter().map(|b| format!("{b:02X}")).collect::<Vec<_>>().join(":")
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
