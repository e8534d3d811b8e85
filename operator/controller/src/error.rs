//! The operator's errors. Each says what we were doing; [`Error::reason`] gives the stable
//! CamelCase name used in conditions, events and metric labels, and [`Error::is_transient`]
//! decides between backing off and waiting for a change.

use std::time::Duration;

/// Everything a reconcile can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the API server failed.
    #[error("failed to {context}")]
    Kube {
        /// What we were doing.
        context: String,
        /// The cause.
        #[source]
        source: kube::Error,
    },
    /// An object lacks a field the API server always sets.
    #[error("object has no {0}")]
    MissingField(&'static str),
    /// Generating key material failed.
    #[error("failed to generate the data-channel certificate")]
    Certificate(#[source] rcgen::Error),
    /// Another writer changed the Gateway's reservations first, too many times in a row.
    #[error("gateway {0} kept changing under us; will retry")]
    Contended(String),
    /// The holdings ledger is not rebuilt yet.
    #[error(transparent)]
    NotSeeded(#[from] crate::ledger::NotSeeded),
    /// Relay pods of a released stream are still stopping.
    #[error("{0} relay pod(s) still stopping")]
    StillTerminating(usize),
    /// No relay can be planned (a node lost its address between observation and action).
    #[error("cannot plan the relays")]
    Plan(#[source] scistream_core::relay::PlanError),
    /// The finalizer machinery failed.
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The kind of a failure, stable: a metric label and a log field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The API answered 409.
    Conflict,
    /// The API answered 403.
    Forbidden,
    /// The API answered 404.
    NotFound,
    /// The API answered 422.
    Invalid,
    /// Any other API failure (5xx, timeouts, transport).
    ApiError,
    /// An object lacks a field the API server always sets.
    MissingField,
    /// Key material could not be generated.
    CertificateFailed,
    /// The Gateway's reservations kept changing under us.
    Contended,
    /// The holdings ledger is not rebuilt yet.
    NotSeeded,
    /// Relay pods are still stopping.
    StillTerminating,
    /// No relay could be planned.
    PlanFailed,
    /// The finalizer machinery failed.
    FinalizerFailed,
}

impl Reason {
    /// The CamelCase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Conflict => "Conflict",
            Reason::Forbidden => "Forbidden",
            Reason::NotFound => "NotFound",
            Reason::Invalid => "Invalid",
            Reason::ApiError => "ApiError",
            Reason::MissingField => "MissingField",
            Reason::CertificateFailed => "CertificateFailed",
            Reason::Contended => "Contended",
            Reason::NotSeeded => "NotSeeded",
            Reason::StillTerminating => "StillTerminating",
            Reason::PlanFailed => "PlanFailed",
            Reason::FinalizerFailed => "FinalizerFailed",
        }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Error {
    /// Wraps a kube error with what we were doing.
    pub fn kube(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
        let context = context.into();
        move |source| Error::Kube { context, source }
    }

    /// The kind of failure, for metrics and logs.
    pub fn reason(&self) -> Reason {
        match self {
            Error::Kube { source, .. } => match source {
                kube::Error::Api(s) if s.code == 409 => Reason::Conflict,
                kube::Error::Api(s) if s.code == 403 => Reason::Forbidden,
                kube::Error::Api(s) if s.code == 404 => Reason::NotFound,
                kube::Error::Api(s) if s.code == 422 => Reason::Invalid,
                _ => Reason::ApiError,
            },
            Error::MissingField(_) => Reason::MissingField,
            Error::Certificate(_) => Reason::CertificateFailed,
            Error::Contended(_) => Reason::Contended,
            Error::NotSeeded(_) => Reason::NotSeeded,
            Error::StillTerminating(_) => Reason::StillTerminating,
            Error::Plan(_) => Reason::PlanFailed,
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.reason(),
                // The object went away between the cleanup and the finalizer patch.
                kube::runtime::finalizer::Error::AddFinalizer(kube::Error::Api(s))
                | kube::runtime::finalizer::Error::RemoveFinalizer(kube::Error::Api(s))
                    if s.code == 404 =>
                {
                    Reason::NotFound
                }
                _ => Reason::FinalizerFailed,
            },
        }
    }

    /// Delay before the next attempt for the `attempt`-th consecutive failure: short for a
    /// relay pod still stopping, exponential with a cap for API trouble.
    pub fn backoff(&self, attempt: u32) -> Duration {
        if matches!(self, Error::StillTerminating(_)) {
            return Duration::from_millis(500);
        }
        let base = Duration::from_millis(200).saturating_mul(1u32 << attempt.min(8));
        base.min(Duration::from_secs(60))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finalizer_patch_on_a_vanished_object_is_not_found() {
        use kube::runtime::finalizer::Error as F;
        let gone = || kube::Error::Api(kube::core::Status::failure("gone", "NotFound").with_code(404).boxed());
        assert_eq!(Error::Finalizer(Box::new(F::RemoveFinalizer(gone()))).reason(), Reason::NotFound);
        assert_eq!(Error::Finalizer(Box::new(F::AddFinalizer(gone()))).reason(), Reason::NotFound);
        let refused = kube::Error::Api(kube::core::Status::failure("no", "Forbidden").with_code(403).boxed());
        assert_eq!(Error::Finalizer(Box::new(F::RemoveFinalizer(refused))).reason(), Reason::FinalizerFailed);
    }

    #[test]
    fn backoff_grows_and_is_capped() {
        let e = Error::Contended("gw".into());
        assert!(e.backoff(0) < e.backoff(3));
        assert_eq!(e.backoff(30), Duration::from_secs(51).min(Duration::from_secs(60)).max(e.backoff(30)));
        assert!(e.backoff(30) <= Duration::from_secs(60));
        assert_eq!(Error::StillTerminating(1).backoff(9), Duration::from_millis(500));
    }
}
