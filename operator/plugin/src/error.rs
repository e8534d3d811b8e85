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
    /// Wraps a kube error with what we were doing.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }

    /// The process exit code.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => EXIT_USAGE,
            Error::Refused(_) => EXIT_REFUSED,
            Error::NotFound(_) => EXIT_NOT_FOUND,
            Error::Failed(_) | Error::Kube { .. } => EXIT_FAILED,
        }
    }
}
