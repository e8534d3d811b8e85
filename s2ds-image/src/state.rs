//! What a new connection reads when it is accepted: the validated config and
//! the TLS configs built from its files. The server swaps it whole on reload,
//! so established connections keep what they started with.

use std::sync::Arc;

use crate::config::{Config, Mode};
use crate::material::Material;
use crate::{Error, tls};

/// The config and what is built from it; swapped on reload.
pub struct State {
    /// The validated config.
    pub config: Config,
    /// Present in `tls-server` mode.
    pub acceptor: Option<Arc<rustls::ServerConfig>>,
    /// Present in `tls-client` mode.
    pub connector: Option<Arc<rustls::ClientConfig>>,
}

impl State {
    /// Builds the TLS side for the mode (reads the certificate files).
    pub fn build(config: Config) -> Result<Self, Error> {
        Self::build_with(config, &Material::Disk)
    }

    /// [`State::build`], reading the files the config names from `material`.
    pub fn build_with(config: Config, material: &Material) -> Result<Self, Error> {
        let (mut acceptor, mut connector) = (None, None);
        match (config.mode, &config.tls) {
            (Mode::TlsServer, Some(t)) => acceptor = Some(tls::server_config_from(t, material)?),
            (Mode::TlsClient, Some(t)) => connector = Some(tls::client_config_from(t, material)?),
            _ => {}
        }
        Ok(Self { config, acceptor, connector })
    }
}
