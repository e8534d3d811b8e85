//! The endpoint's errors and how each reaches a client: a gRPC status code (1.x clients print
//! the message and do not branch on it, except `appctrl`, which stops retrying only on
//! `UNAUTHENTICATED`) or an HTTP status for the JSON Hello.

/// Result of the endpoint's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong while serving a call. Messages are complete sentences a person
/// can act on; they never contain keys or tokens.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No credential, or a wrong one.
    #[error("{0}")]
    Unauthenticated(String),
    /// The identity may not do this.
    #[error("{0}")]
    PermissionDenied(String),
    /// No such stream.
    #[error("{0}")]
    NotFound(String),
    /// The stream already exists.
    #[error("{0}")]
    AlreadyExists(String),
    /// The request is malformed (role, endpoint syntax, counts).
    #[error("{0}")]
    InvalidArgument(String),
    /// The stream is not in a state that allows this.
    #[error("{0}")]
    FailedPrecondition(String),
    /// No capacity, or too many failed authentications from this peer.
    #[error("{0}")]
    ResourceExhausted(String),
    /// Waited too long.
    #[error("{0}")]
    DeadlineExceeded(String),
    /// The Kubernetes API failed while doing `context`.
    #[error("could not {context}: the Kubernetes API answered an error; retry later")]
    Kube {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// The identity provider could not be asked.
    #[error("could not check the token with the identity provider: {0}; retry later")]
    Provider(String),
    /// Setting the endpoint up failed (certificate, sockets).
    #[error("{0}")]
    Setup(String),
}

impl Error {
    /// A closure wrapping a `kube::Error` with what we were doing, for `map_err`.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }

    /// The gRPC code of this error.
    pub fn code(&self) -> tonic::Code {
        use tonic::Code;
        match self {
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::NotFound(_) => Code::NotFound,
            Error::AlreadyExists(_) => Code::AlreadyExists,
            Error::InvalidArgument(_) => Code::InvalidArgument,
            Error::FailedPrecondition(_) => Code::FailedPrecondition,
            Error::ResourceExhausted(_) => Code::ResourceExhausted,
            Error::DeadlineExceeded(_) => Code::DeadlineExceeded,
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 403 => Code::PermissionDenied,
                kube::Error::Api(s) if s.code == 409 => Code::AlreadyExists,
                kube::Error::Api(s) if s.code == 404 => Code::NotFound,
                kube::Error::Api(s) if s.code == 422 || s.code == 400 => Code::InvalidArgument,
                _ => Code::Unavailable,
            },
            Error::Provider(_) => Code::Unavailable,
            Error::Setup(_) => Code::Internal,
        }
    }

    /// The HTTP status of this error (JSON Hello).
    pub fn http_status(&self) -> u16 {
        http_status(self.code())
    }

    /// A short static name for metrics and logs.
    pub fn reason(&self) -> &'static str {
        code_name(self.code())
    }

    /// The message sent to the client: for API errors the API's own message is added, since
    /// it names the field a validation rule refused.
    pub fn client_message(&self) -> String {
        match self {
            Error::Kube { context, source: kube::Error::Api(s) } => format!("could not {context}: {}", s.message),
            other => other.to_string(),
        }
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        tonic::Status::new(e.code(), e.client_message())
    }
}

/// HTTP status for a gRPC code (the mapping of Google's API design guide).
pub fn http_status(code: tonic::Code) -> u16 {
    use tonic::Code;
    match code {
        Code::Ok => 200,
        Code::InvalidArgument | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::FailedPrecondition => 412,
        Code::ResourceExhausted => 429,
        Code::Cancelled => 499,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        _ => 500,
    }
}

/// Static name of a gRPC code (metric label).
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_http_statuses() {
        let cases = [
            (Error::Unauthenticated("x".into()), tonic::Code::Unauthenticated, 401),
            (Error::PermissionDenied("x".into()), tonic::Code::PermissionDenied, 403),
            (Error::NotFound("x".into()), tonic::Code::NotFound, 404),
            (Error::AlreadyExists("x".into()), tonic::Code::AlreadyExists, 409),
            (Error::InvalidArgument("x".into()), tonic::Code::InvalidArgument, 400),
            (Error::FailedPrecondition("x".into()), tonic::Code::FailedPrecondition, 412),
            (Error::ResourceExhausted("x".into()), tonic::Code::ResourceExhausted, 429),
            (Error::DeadlineExceeded("x".into()), tonic::Code::DeadlineExceeded, 504),
            (Error::Provider("x".into()), tonic::Code::Unavailable, 503),
        ];
        for (e, code, http) in cases {
            assert_eq!(e.code(), code, "{e:?}");
            assert_eq!(e.http_status(), http, "{e:?}");
            let status: tonic::Status = e.into();
            assert!(status.message().contains('x'));
        }
    }

    #[test]
    fn api_errors_keep_their_meaning() {
        let api = |code| Error::Kube {
            context: "create StreamRequest default/x".into(),
            source: kube::Error::Api(kube::core::Status::failure("spec.rate: bad", "Invalid").with_code(code).boxed()),
        };
        assert_eq!(api(409).code(), tonic::Code::AlreadyExists);
        assert_eq!(api(422).code(), tonic::Code::InvalidArgument);
        assert_eq!(api(403).code(), tonic::Code::PermissionDenied);
        assert_eq!(api(500).code(), tonic::Code::Unavailable);
        assert!(api(422).client_message().ends_with("spec.rate: bad"));
    }
}
