//! Errors of the plugin and the exit codes scripts can rely on.

/// Exit code: the command line or the kubeconfig is wrong.
pub const EXIT_USAGE: u8 = 2;
/// Exit code: refused before anything was created (capacity, permission, name in use...).
pub const EXIT_REFUSED: u8 = 3;
/// Exit code: a step failed or timed out after objects were created (rolled back unless
/// `--keep-on-failure`).
pub const EXIT_FAILED: u8 = 4;
/// Exit code: the stream or a gateway was not found.
pub const EXIT_NOT_FOUND: u8 = 5;
/// Exit code: a cluster could not be logged in to: the kubeconfig's exec credential plugin
/// failed, an OIDC id-token expired and could not be refreshed, or the cluster rejected the
/// credentials (401). Logging in again usually fixes it.
pub const EXIT_AUTH: u8 = 6;
/// Exit code: a cluster could not be reached, or SciStream is not installed in it (its CRDs
/// are missing).
pub const EXIT_CLUSTER: u8 = 7;
/// Exit code: interrupted (Ctrl-C, SIGTERM); what was created was rolled back unless
/// `--keep-on-failure`.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Exit code: standard output was closed (`| head`), as a process killed by SIGPIPE.
pub const EXIT_CLOSED: u8 = 141;

/// Everything a command can fail with; each message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad arguments or kubeconfig.
    #[error("{0}")]
    Usage(String),
    /// A precondition is not met; nothing was created.
    #[error("{0}")]
    Refused(String),
    /// A step failed or timed out.
    #[error("{0}")]
    Failed(String),
    /// Not found.
    #[error("{0}")]
    NotFound(String),
    /// The credentials for a cluster could not be obtained or were rejected.
    #[error("{0}")]
    Auth(String),
    /// A cluster is unreachable, or SciStream is not installed in it.
    #[error("{0}")]
    Cluster(String),
    /// Interrupted by a signal.
    #[error("{0}")]
    Interrupted(String),
    /// Standard output was closed; nothing more to say.
    #[error("standard output was closed")]
    Closed,
    /// An API call failed.
    #[error("{context}: {source}")]
    Kube {
        /// What we were doing.
        context: String,
        /// Cause.
        #[source]
        source: kube::Error,
    },
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Refused(_) => EXIT_REFUSED,
            Error::NotFound(_) => EXIT_NOT_FOUND,
            Error::Auth(_) => EXIT_AUTH,
            Error::Cluster(_) => EXIT_CLUSTER,
            Error::Interrupted(_) => EXIT_INTERRUPTED,
            Error::Closed => EXIT_CLOSED,
            Error::Failed(_) | Error::Kube { .. } => EXIT_FAILED,
        }
    }
}

/// What went wrong logging in to a cluster, said so a person can act on it; `None` when the
/// error is not about credentials. kube-rs reports a failed credential plugin from inside its
/// client stack, as a service error wrapping its `AuthError`.
pub fn auth_problem(e: &kube::Error) -> Option<String> {
    use kube::client::AuthError;
    let auth = match e {
        kube::Error::Auth(a) => Some(a),
        kube::Error::Service(b) => b.downcast_ref::<AuthError>(),
        kube::Error::Api(s) if s.code == 401 => {
            return Some(
                "the cluster rejected the credentials (401 Unauthorized); log in again (the kubeconfig's token, \
                 exec or OIDC credential plugin)"
                    .to_owned(),
            );
        }
        _ => None,
    }?;
    Some(match auth {
        AuthError::AuthExecRun { cmd, out } => {
            let stderr = String::from_utf8_lossy(&out.stderr);
            format!(
                "the kubeconfig's exec credential plugin `{cmd}` failed ({}): {}",
                out.status,
                stderr.trim().lines().last().unwrap_or("(no message)")
            )
        }
        AuthError::AuthExecStart(io) => format!("the kubeconfig's exec credential plugin could not be started: {io}"),
        AuthError::AuthExecParse(_) | AuthError::ExecPluginFailed => {
            format!("the kubeconfig's exec credential plugin printed no usable ExecCredential: {auth}")
        }
        other => format!("could not get credentials for the cluster: {other}"),
    })
}
