//! A failed API call said in plain words, with the cluster's address: a cluster that cannot
//! be reached (refused, timed out, unknown name, untrusted certificate), SciStream not
//! installed there (its CRDs missing: the API server answers 404 for the whole resource),
//! permission refused, a login problem; never a Rust debug dump. Pure (table-tested).

use std::error::Error as StdError;

use crate::error::{Error, auth_problem};

/// Where a call went: the kubeconfig context and its API server's URL.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// The context's name.
    pub context: &'a str,
    /// The API server's URL (`https://host:port`).
    pub server: &'a str,
}

/// `e`, which happened while doing `what` against `target`, as an error a person can act on.
pub fn explain(e: kube::Error, what: &str, target: Target<'_>) -> Error {
    if let Some(why) = auth_problem(&e) {
        return Error::Auth(format!("{what}: {why}"));
    }
    let Target { context, server } = target;
    match &e {
        kube::Error::Api(s) if is_missing_resource(s) => Error::Cluster(format!(
            "{what}: SciStream is not installed in context {context} (API server {server}): its CRDs \
             (streamrequests.scistream.io, gateways.scistream.io) are not installed there. A cluster administrator \
             installs them: `kubectl apply --server-side -f crds/`, or the Helm chart (docs/operator-guide.md)"
        )),
        kube::Error::Api(s) if s.code == 403 => Error::Refused(format!(
            "{what}: forbidden in context {context}: {}; ask the facility for the scistream-user role in this namespace",
            s.message
        )),
        kube::Error::Api(s) => {
            let reason = if s.reason.is_empty() { String::new() } else { format!("{}, ", s.reason) };
            Error::Failed(format!("{what}: {} ({reason}HTTP {})", s.message, s.code))
        }
        _ => match unreachable(&e) {
            Some(why) => Error::Cluster(format!(
                "{what}: cannot reach the API server of context {context} at {server}: {why}; check that the \
                 cluster is up and the kubeconfig's server address (`kubectl --context {context} cluster-info`)"
            )),
            None => Error::Kube { context: format!("{what} (context {context}, {server})"), source: e },
        },
    }
}

/// A 404 about the resource itself (no object named): the API server does not serve it.
fn is_missing_resource(s: &kube::core::Status) -> bool {
    s.code == 404 && s.details.as_ref().is_none_or(|d| d.name.is_empty())
}

/// Why a connection could not be made, if that is what `e` is about: the innermost cause
/// that says so.
fn unreachable(e: &kube::Error) -> Option<String> {
    if !matches!(e, kube::Error::Service(_) | kube::Error::HyperError(_)) {
        return None;
    }
    let mut cause: Option<&(dyn StdError + 'static)> = Some(e);
    let mut innermost = e.to_string();
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            return Some(io_words(io));
        }
        if let Some(tls) = c.downcast_ref::<rustls::Error>() {
            return Some(format!(
                "its TLS certificate is not accepted ({tls}); check the kubeconfig's certificate-authority-data"
            ));
        }
        let text = c.to_string();
        if text.contains("dns error") || text.contains("failed to lookup address") {
            return Some(format!("its host name does not resolve ({text})"));
        }
        innermost = text;
        cause = c.source();
    }
    Some(innermost)
}

fn io_words(io: &std::io::Error) -> String {
    use std::io::ErrorKind;
    match io.kind() {
        ErrorKind::ConnectionRefused => "connection refused (nothing listens there)".to_owned(),
        ErrorKind::TimedOut => "timed out (a firewall, or the host is down)".to_owned(),
        ErrorKind::HostUnreachable | ErrorKind::NetworkUnreachable => format!("no route to it ({io})"),
        ErrorKind::ConnectionReset => "the connection was reset".to_owned(),
        _ => match io.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
            Some(tls) => {
                format!(
                    "its TLS certificate is not accepted ({tls}); check the kubeconfig's certificate-authority-data"
                )
            }
            None => io.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::core::Status;

    const AT: Target<'static> = Target { context: "aps", server: "https://10.0.0.1:6443" };

    fn api(code: u16, reason: &str, name: Option<&str>) -> kube::Error {
        let mut s = Status::failure("the server could not find the requested resource", reason);
        s.code = code;
        s.details = name.map(|n| serde_json::from_value(serde_json::json!({"name": n})).unwrap());
        kube::Error::Api(Box::new(s))
    }

    fn io(kind: std::io::ErrorKind) -> kube::Error {
        kube::Error::Service(Box::new(std::io::Error::new(kind, "tcp connect error")))
    }

    #[test]
    fn each_problem_has_its_words() {
        let cases: Vec<(kube::Error, u8, &[&str])> = vec![
            (api(404, "NotFound", None), 7, &["CRDs", "not installed", "https://10.0.0.1:6443", "kubectl apply"]),
            (api(404, "NotFound", Some("")), 7, &["CRDs"]),
            (api(403, "Forbidden", None), 3, &["forbidden in context aps", "scistream-user"]),
            (api(409, "Conflict", Some("x")), 4, &["(Conflict, HTTP 409)"]),
            (
                io(std::io::ErrorKind::ConnectionRefused),
                7,
                &["cannot reach", "https://10.0.0.1:6443", "connection refused"],
            ),
            (io(std::io::ErrorKind::TimedOut), 7, &["timed out"]),
        ];
        for (e, code, words) in cases {
            let said = explain(e, "list StreamRequests", AT);
            assert_eq!(said.exit_code(), code, "{said}");
            for w in words {
                assert!(said.to_string().contains(w), "{w:?} in {said}");
            }
            assert!(!said.to_string().contains("Status {"), "{said}");
        }
    }
}
