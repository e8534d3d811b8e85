//! What an application controller needs besides the stream id, found for `hello` and
//! printed by `create`: where the facility's control endpoint is and which certificate to
//! trust (published by the operator in ConfigMap `scistream-control-endpoint`, readable by
//! every authenticated user), and this side's Hello key (a file, `$SCISTREAM_HELLO_KEY`, or
//! the stream's Secret in the cluster, never the command line).

use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, api::ListParams};
use scistream_api::keys;

use crate::{
    cli::{Cli, HelloArgs},
    error::{Error, Result},
    facility::Facility,
    reach::{TrustedCert, read_trusted, trusted_from_pem},
};

/// Environment variable holding a Hello key.
pub const KEY_ENV: &str = "SCISTREAM_HELLO_KEY";

/// A facility's control endpoint as its operator publishes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Published {
    /// `host:port` to dial.
    pub address: String,
    /// PEM certificate to trust.
    pub ca_pem: String,
}

/// The published endpoint of `f`'s operator (in `operator_namespace`); `None` when not
/// published (an older operator, or publishing turned off).
pub async fn published(f: &Facility, operator_namespace: &str) -> Result<Option<Published>> {
    let api: Api<ConfigMap> = Api::namespaced(f.client.clone(), operator_namespace);
    let what = format!(
        "read ConfigMap {operator_namespace}/{} (the published control endpoint) in {}",
        keys::CONTROL_ENDPOINT_CONFIGMAP,
        f.context
    );
    let Some(cm) = f.get_opt(&api, keys::CONTROL_ENDPOINT_CONFIGMAP, &what).await? else {
        return Ok(None);
    };
    let data = cm.data.unwrap_or_default();
    match (data.get(keys::CONTROL_ADDRESS_KEY), data.get(keys::CONTROL_CA_KEY)) {
        (Some(a), Some(c)) if !a.is_empty() && !c.is_empty() => {
            Ok(Some(Published { address: a.clone(), ca_pem: c.clone() }))
        }
        _ => Ok(None),
    }
}

/// What `hello` uses: the endpoint, what to trust, the key.
#[derive(Clone, Debug)]
pub struct HelloInputs {
    /// `host:port`.
    pub control: String,
    /// The trusted certificate.
    pub trusted: TrustedCert,
    /// The Hello key.
    pub key: String,
}

fn read_key_file(path: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| Error::Usage(format!("--key-file {}: {e}", path.display())))?;
    let key = text.trim().to_owned();
    if key.is_empty() {
        return Err(Error::Usage(format!("--key-file {} is empty", path.display())));
    }
    Ok(key)
}

/// The Hello key of this side of stream `stream_id`: from the Secret its StreamRequest names.
pub async fn key_from_cluster(f: &Facility, stream_id: &str) -> Result<String> {
    let lp = ListParams::default().labels(&format!("{}={stream_id}", keys::LABEL_STREAM_ID));
    let what = format!("find the StreamRequest of stream {stream_id} in {}/{}", f.context, f.namespace);
    let found = f.requests().list(&lp).await.map_err(f.fail(what))?;
    let sr = found.items.into_iter().next().ok_or_else(|| {
        Error::NotFound(format!(
            "no StreamRequest of stream {stream_id} in {}/{}; pass the side's --context and -n",
            f.context, f.namespace
        ))
    })?;
    let r = sr.spec.hello_key_secret_ref.ok_or_else(|| {
        Error::Refused(format!("this side of stream {stream_id} has static targets and needs no Hello"))
    })?;
    let api: Api<Secret> = Api::namespaced(f.client.clone(), &f.namespace);
    let secret = f
        .get_opt(&api, &r.name, &format!("read the Hello-key Secret {}/{} in {}", f.namespace, r.name, f.context))
        .await?
        .ok_or_else(|| Error::NotFound(format!("the Hello-key Secret {}/{} does not exist", f.namespace, r.name)))?;
    let data = secret.data.unwrap_or_default();
    let bytes = data
        .get(&r.key)
        .ok_or_else(|| Error::NotFound(format!("Secret {}/{} has no key {:?}", f.namespace, r.name, r.key)))?;
    String::from_utf8(bytes.0.clone())
        .map_err(|_| Error::Failed(format!("Secret {}/{} is not text", f.namespace, r.name)))
}

/// Everything `hello` needs, from its flags first, then the environment, then the cluster
/// of `--context` (only when something is missing).
pub async fn hello_inputs(cli: &Cli, args: &HelloArgs) -> Result<HelloInputs> {
    let mut trusted = args.server_cert.as_deref().map(read_trusted).transpose()?;
    let mut key = match (&args.key_file, std::env::var(KEY_ENV)) {
        (Some(path), _) => Some(read_key_file(path)?),
        (None, Ok(k)) if !k.is_empty() => Some(k),
        _ => None,
    };
    let mut control = args.control.clone();
    if let (Some(c), Some(t), Some(k)) = (&control, &trusted, &key) {
        return Ok(HelloInputs { control: c.clone(), trusted: t.clone(), key: k.clone() });
    }
    let f =
        Facility::connect(cli.kubeconfig.as_deref(), args.at.context.as_deref(), args.at.namespace.as_deref()).await?;
    if control.is_none() || trusted.is_none() {
        let Some(p) = published(&f, &args.operator_namespace).await? else {
            return Err(Error::NotFound(format!(
                "the operator in {} publishes no control endpoint (ConfigMap {}/{}); pass --control and --server-cert",
                f.context,
                args.operator_namespace,
                keys::CONTROL_ENDPOINT_CONFIGMAP
            )));
        };
        control = control.or(Some(p.address.clone()));
        if trusted.is_none() {
            let certs = trusted_from_pem(p.ca_pem.as_bytes()).map_err(|why| {
                Error::Failed(format!("the published certificate of {} is unusable: {why}", f.context))
            })?;
            let source =
                format!("the certificate published in {} (ConfigMap {})", f.context, keys::CONTROL_ENDPOINT_CONFIGMAP);
            trusted = Some(TrustedCert { source, pem: p.ca_pem.into_bytes(), certs });
        }
    }
    if key.is_none() {
        key = Some(key_from_cluster(&f, &args.stream_id).await?);
    }
    match (control, trusted, key) {
        (Some(control), Some(trusted), Some(key)) => Ok(HelloInputs { control, trusted, key }),
        _ => Err(Error::Usage("hello needs --control, --server-cert and a key".to_owned())),
    }
}

/// Where `create --hello-files DIR` writes a side's files.
pub fn hello_files(dir: &Path, stream: &str, context: &str) -> (PathBuf, PathBuf) {
    (dir.join(format!("{stream}-{context}-control.crt")), dir.join(format!("{stream}-{context}-hello.key")))
}

/// Writes a key file readable by its owner only.
pub fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::{io::Write, os::unix::fs::OpenOptionsExt};
    let mut f = std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(path)?;
    f.write_all(text.as_bytes())?;
    f.write_all(b"\n")
}
