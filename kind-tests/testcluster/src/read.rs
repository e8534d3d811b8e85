//! GET and LIST: selectors, `limit`/`continue`, `resourceVersion` and
//! `resourceVersionMatch`.

use std::sync::Arc;

use base64::Engine;
use serde_json::{Value, json};

use crate::resources::ResourceInfo;
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::State;
use crate::status::{ApiError, ApiResult};

/// LIST options.
#[derive(Debug, Clone, Default)]
pub struct ListOpts {
    /// `labelSelector`.
    pub labels: LabelSelector,
    /// `fieldSelector`.
    pub fields: FieldSelector,
    /// `limit` (0 = no limit).
    pub limit: usize,
    /// `continue` token.
    pub continue_token: Option<String>,
    /// `resourceVersion`.
    pub resource_version: Option<String>,
    /// `resourceVersionMatch`.
    pub rv_match: Option<String>,
}

/// One page of a LIST.
#[derive(Debug, Clone)]
pub struct Page {
    /// Matching objects, sorted by namespace and name.
    pub items: Vec<Arc<Value>>,
    /// resourceVersion of the list.
    pub resource_version: u64,
    /// Token for the next page.
    pub continue_token: Option<String>,
    /// Items left after this page.
    pub remaining: Option<usize>,
}

fn encode_continue(rv: u64, ns: &str, name: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json!({"rv": rv, "ns": ns, "name": name}).to_string())
}

fn decode_continue(token: &str) -> ApiResult<(u64, String, String)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: incorrect encoded start resourceVersion (version meta.k8s.io/v1)",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let v: Value = serde_json::from_slice(&raw).map_err(|_| bad())?;
    let (Some(rv), Some(ns), Some(name)) = (v["rv"].as_u64(), v["ns"].as_str(), v["name"].as_str()) else {
        return Err(bad());
    };
    Ok((rv, ns.into(), name.into()))
}

/// Parses a resourceVersion parameter.
pub fn parse_rv(s: &str) -> ApiResult<u64> {
    s.parse().map_err(|_| ApiError::bad_request(format!("invalid resource version: {s}")))
}

impl State {
    /// GET of one object.
    pub fn get(&self, info: &ResourceInfo, ns: &str, name: &str) -> ApiResult<Arc<Value>> {
        self.store.get(&info.key(), ns, name).ok_or_else(|| ApiError::not_found(info, name))
    }

    /// LIST of a resource (in a namespace or across all).
    pub fn list(&self, info: &ResourceInfo, ns: Option<&str>, o: &ListOpts) -> ApiResult<Page> {
        let current = self.store.current_rv();
        let requested =
            o.resource_version.as_deref().filter(|s| !s.is_empty() && *s != "0").map(parse_rv).transpose()?;
        match (o.rv_match.as_deref(), requested) {
            (Some("Exact"), Some(rv)) if rv != current => {
                return Err(ApiError::expired(rv, current));
            }
            (Some("Exact" | "NotOlderThan"), None) if o.resource_version.is_none() => {
                return Err(ApiError::bad_request(
                    "resourceVersionMatch is forbidden unless resourceVersion is provided",
                ));
            }
            (_, Some(rv)) if rv > current => {
                return Err(ApiError {
                    code: 504,
                    reason: "Timeout",
                    message: format!("Too large resource version: {rv}, current: {current}"),
                    details: Some(
                        json!({"causes": [{"reason": "ResourceVersionTooLarge", "message": "Too large resource version"}], "retryAfterSeconds": 1}),
                    ),
                });
            }
            _ => {}
        }
        let after = o.continue_token.as_deref().map(decode_continue).transpose()?;
        let start = after.as_ref().map(|(_, ns, name)| (ns.clone(), name.clone()));
        let (all, rv) = match o.labels.first_equality() {
            Some(label) => self.store.list_labeled(&info.key(), ns, label, start.as_ref()),
            None => self.store.list(&info.key(), ns, start.as_ref()),
        };
        let mut items: Vec<Arc<Value>> = Vec::with_capacity(all.len().min(o.limit.max(1)));
        let mut remaining = 0usize;
        let mut iter = all.into_iter().filter(|i| o.labels.matches(i) && o.fields.matches(i));
        for item in iter.by_ref() {
            items.push(item);
            if o.limit > 0 && items.len() == o.limit {
                break;
            }
        }
        let mut continue_token = None;
        if o.limit > 0 && items.len() == o.limit {
            remaining = iter.count();
            if remaining > 0
                && let Some(last) = items.last()
            {
                let list_rv = after.as_ref().map(|a| a.0).unwrap_or(rv);
                continue_token = Some(encode_continue(list_rv, crate::state::ns_of(last), crate::state::name_of(last)));
            }
        }
        Ok(Page {
            items,
            resource_version: after.map(|a| a.0).unwrap_or(rv),
            continue_token,
            remaining: (remaining > 0).then_some(remaining),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continue_tokens_round_trip() {
        let t = encode_continue(7, "ns", "n");
        assert_eq!(decode_continue(&t).unwrap(), (7, "ns".into(), "n".into()));
        assert_eq!(decode_continue("???").unwrap_err().code, 400);
    }
}
