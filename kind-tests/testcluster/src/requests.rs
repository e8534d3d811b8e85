//! Counts of the requests the server answered, by client, verb, resource and code, served at
//! `/metrics` as kube-apiserver's `apiserver_request_total` is (with a `client` label taken
//! from the User-Agent's product, which kube-apiserver does not have: it lets a benchmark tell
//! the operator's writes from the kubelet's).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;

/// What one counter counts.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RequestKey {
    /// The client: the User-Agent's product (`scistream-operator` of
    /// `scistream-operator/0.1.0`), or `unknown`.
    pub client: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `deletecollection`.
    pub verb: String,
    /// API group (`""` for core).
    pub group: String,
    /// Resource (plural), or `""` for a non-resource path.
    pub resource: String,
    /// Subresource (`status`, `binding`), or `""`.
    pub subresource: String,
    /// HTTP status code of the answer.
    pub code: u16,
}

impl RequestKey {
    /// Whether the request could change something (not a read).
    pub fn is_write(&self) -> bool {
        matches!(self.verb.as_str(), "create" | "update" | "patch" | "delete" | "deletecollection")
    }
}

/// The counters.
#[derive(Debug, Default)]
pub struct RequestCounts(Mutex<BTreeMap<RequestKey, u64>>);

/// The product of a User-Agent header (`kubectl` of `kubectl/v1.33.1 (linux/amd64) ...`).
pub fn client_of(user_agent: &str) -> String {
    let product = user_agent.split(['/', ' ']).next().unwrap_or_default();
    if product.is_empty() { "unknown".to_owned() } else { product.to_owned() }
}

impl RequestCounts {
    /// Counts one answered request.
    pub fn record(&self, key: RequestKey) {
        let mut map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *map.entry(key).or_insert(0) += 1;
    }

    /// Every counter, in order.
    pub fn snapshot(&self) -> Vec<(RequestKey, u64)> {
        let map = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }

    /// The Prometheus text exposition of the counters.
    pub fn render(&self) -> String {
        let mut out = String::from(
            "# HELP apiserver_request_total Counter of apiserver requests broken out for each verb, group, resource, subresource, client and HTTP response code.\n# TYPE apiserver_request_total counter\n",
        );
        for (k, n) in self.snapshot() {
            let _ = writeln!(
                out,
                "apiserver_request_total{{client=\"{}\",code=\"{}\",group=\"{}\",resource=\"{}\",subresource=\"{}\",verb=\"{}\"}} {n}",
                k.client,
                k.code,
                k.group,
                k.resource,
                k.subresource,
                k.verb.to_uppercase()
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(client: &str, verb: &str, resource: &str) -> RequestKey {
        RequestKey {
            client: client.into(),
            verb: verb.into(),
            group: String::new(),
            resource: resource.into(),
            subresource: String::new(),
            code: 200,
        }
    }

    #[test]
    fn counts_and_renders() {
        let c = RequestCounts::default();
        c.record(key("scistream-operator", "patch", "pods"));
        c.record(key("scistream-operator", "patch", "pods"));
        c.record(key("kubectl", "get", "pods"));
        let snap = c.snapshot();
        assert_eq!(snap.len(), 2);
        assert_eq!(snap.iter().find(|(k, _)| k.verb == "patch").map(|(_, n)| *n), Some(2));
        assert!(c.render().contains(
            "apiserver_request_total{client=\"scistream-operator\",code=\"200\",group=\"\",resource=\"pods\",subresource=\"\",verb=\"PATCH\"} 2"
        ));
        assert!(key("a", "patch", "pods").is_write() && !key("a", "watch", "pods").is_write());
    }

    #[test]
    fn clients_are_user_agent_products() {
        assert_eq!(client_of("kubectl/v1.33.1 (linux/amd64) kubernetes/8adc0f0"), "kubectl");
        assert_eq!(client_of("scistream-operator/0.1.0"), "scistream-operator");
        assert_eq!(client_of(""), "unknown");
    }
}
