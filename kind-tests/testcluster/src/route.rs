//! URL parsing: which resource, namespace, name and subresource a path
//! addresses, and the query string.

use std::collections::HashMap;

/// A resource path, parsed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourcePath {
    /// API group ("" for `/api/v1`).
    pub group: String,
    /// Version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Plural resource.
    pub plural: String,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource, if any.
    pub subresource: Option<String>,
}

/// Parses `/api/v1/...` and `/apis/<g>/<v>/...` resource paths.
pub fn parse_resource_path(path: &str) -> Option<ResourcePath> {
    let segs: Vec<&str> = path.trim_matches('/').split('/').collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api", v, rest @ ..] if !rest.is_empty() => ("", *v, rest),
        ["apis", g, v, rest @ ..] if !rest.is_empty() => (*g, *v, rest),
        _ => return None,
    };
    let s = |i: usize| rest.get(i).map(|x| percent_decode(x));
    let mut p = ResourcePath { group: group.into(), version: version.into(), ..Default::default() };
    if rest[0] == "namespaces" && rest.len() >= 3 && !matches!(rest[2], "status" | "finalize") {
        p.namespace = s(1);
        p.plural = rest[2].into();
        p.name = s(3);
        p.subresource = s(4);
        if rest.len() > 5 {
            return None;
        }
    } else {
        p.plural = rest[0].into();
        p.name = s(1);
        p.subresource = s(2);
        if rest.len() > 3 {
            return None;
        }
    }
    Some(p)
}

/// Decodes `%XX` and `+`.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses a query string into a map (last value wins).
pub fn parse_query(q: Option<&str>) -> HashMap<String, String> {
    q.unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_paths() {
        let p = parse_resource_path("/api/v1/namespaces/default/pods/p1/status").unwrap();
        assert_eq!(
            (p.namespace.as_deref(), p.plural.as_str(), p.name.as_deref(), p.subresource.as_deref()),
            (Some("default"), "pods", Some("p1"), Some("status"))
        );
        let n = parse_resource_path("/api/v1/namespaces/default").unwrap();
        assert_eq!((n.plural.as_str(), n.name.as_deref()), ("namespaces", Some("default")));
        let ns = parse_resource_path("/api/v1/namespaces/x/status").unwrap();
        assert_eq!((ns.plural.as_str(), ns.subresource.as_deref()), ("namespaces", Some("status")));
        let c = parse_resource_path("/apis/example.com/v1/widgets").unwrap();
        assert_eq!((c.group.as_str(), c.plural.as_str(), c.namespace), ("example.com", "widgets", None));
        assert!(parse_resource_path("/api/v1").is_none());
    }

    #[test]
    fn query_decoding() {
        let q = parse_query(Some("labelSelector=app%3Dweb%2Ctier+in+(a)&watch=1"));
        assert_eq!(q["labelSelector"], "app=web,tier in (a)");
        assert_eq!(q["watch"], "1");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("a%2"), "a%2");
    }
}
