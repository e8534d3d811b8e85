//! Decoding of the protobuf request bodies kubectl sends for built-in
//! types (`kubectl create configmap/secret/namespace/role...`,
//! `kubectl auth can-i`), and the `DeleteOptions` client-go sends with a DELETE
//! (`helm uninstall`). Only the message types and fields those
//! commands use are described; anything else gets 415 so the client can
//! use JSON. Responses are always JSON (clients accept it).

use base64::Engine;
use serde_json::{Map, Value, json};

use crate::status::{ApiError, ApiResult};

/// The envelope prefix of Kubernetes protobuf bodies.
const MAGIC: &[u8] = b"k8s\x00";

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Int,
    IntOrString,
    Msg(&'static [F]),
    MapStr,
    MapBytes,
    RepStr,
    RepMsg(&'static [F]),
}

type F = (u64, &'static str, Kind);

const OWNER_REF: &[F] = &[
    (1, "kind", Kind::Str),
    (3, "name", Kind::Str),
    (4, "uid", Kind::Str),
    (5, "apiVersion", Kind::Str),
    (6, "controller", Kind::Bool),
    (7, "blockOwnerDeletion", Kind::Bool),
];
const META: &[F] = &[
    (1, "name", Kind::Str),
    (2, "generateName", Kind::Str),
    (3, "namespace", Kind::Str),
    (5, "uid", Kind::Str),
    (6, "resourceVersion", Kind::Str),
    (11, "labels", Kind::MapStr),
    (12, "annotations", Kind::MapStr),
    (13, "ownerReferences", Kind::RepMsg(OWNER_REF)),
    (14, "finalizers", Kind::RepStr),
];
const CONFIGMAP: &[F] = &[
    (1, "metadata", Kind::Msg(META)),
    (2, "data", Kind::MapStr),
    (3, "binaryData", Kind::MapBytes),
    (4, "immutable", Kind::Bool),
];
const SECRET: &[F] = &[
    (1, "metadata", Kind::Msg(META)),
    (2, "data", Kind::MapBytes),
    (3, "type", Kind::Str),
    (4, "stringData", Kind::MapStr),
    (5, "immutable", Kind::Bool),
];
const NS_SPEC: &[F] = &[(1, "finalizers", Kind::RepStr)];
const NAMESPACE: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(NS_SPEC))];
const LOCAL_REF: &[F] = &[(1, "name", Kind::Str)];
const SERVICE_ACCOUNT: &[F] = &[
    (1, "metadata", Kind::Msg(META)),
    (3, "imagePullSecrets", Kind::RepMsg(LOCAL_REF)),
    (4, "automountServiceAccountToken", Kind::Bool),
];
const RULE: &[F] = &[
    (1, "verbs", Kind::RepStr),
    (2, "apiGroups", Kind::RepStr),
    (3, "resources", Kind::RepStr),
    (4, "resourceNames", Kind::RepStr),
    (5, "nonResourceURLs", Kind::RepStr),
];
const ROLE: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "rules", Kind::RepMsg(RULE))];
const SUBJECT: &[F] =
    &[(1, "kind", Kind::Str), (2, "apiGroup", Kind::Str), (3, "name", Kind::Str), (4, "namespace", Kind::Str)];
const ROLE_REF: &[F] = &[(1, "apiGroup", Kind::Str), (2, "kind", Kind::Str), (3, "name", Kind::Str)];
const BINDING: &[F] =
    &[(1, "metadata", Kind::Msg(META)), (2, "subjects", Kind::RepMsg(SUBJECT)), (3, "roleRef", Kind::Msg(ROLE_REF))];
const RES_ATTRS: &[F] = &[
    (1, "namespace", Kind::Str),
    (2, "verb", Kind::Str),
    (3, "group", Kind::Str),
    (4, "version", Kind::Str),
    (5, "resource", Kind::Str),
    (6, "subresource", Kind::Str),
    (7, "name", Kind::Str),
];
const NONRES_ATTRS: &[F] = &[(1, "path", Kind::Str), (2, "verb", Kind::Str)];
const SSAR_SPEC: &[F] =
    &[(1, "resourceAttributes", Kind::Msg(RES_ATTRS)), (2, "nonResourceAttributes", Kind::Msg(NONRES_ATTRS))];
const SSAR: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(SSAR_SPEC))];
const SAR_SPEC: &[F] = &[
    (1, "resourceAttributes", Kind::Msg(RES_ATTRS)),
    (2, "nonResourceAttributes", Kind::Msg(NONRES_ATTRS)),
    (3, "user", Kind::Str),
    (4, "groups", Kind::RepStr),
    (6, "uid", Kind::Str),
];
const SAR: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(SAR_SPEC))];
const TOKEN_SPEC: &[F] = &[(1, "token", Kind::Str), (2, "audiences", Kind::RepStr)];
const TOKEN_REVIEW: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(TOKEN_SPEC))];
const SSRR_SPEC: &[F] = &[(1, "namespace", Kind::Str)];
const SSRR: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(SSRR_SPEC))];
const SERVICE_PORT: &[F] = &[
    (1, "name", Kind::Str),
    (2, "protocol", Kind::Str),
    (3, "port", Kind::Int),
    (4, "targetPort", Kind::IntOrString),
    (5, "nodePort", Kind::Int),
    (6, "appProtocol", Kind::Str),
];
const SERVICE_SPEC: &[F] = &[
    (1, "ports", Kind::RepMsg(SERVICE_PORT)),
    (2, "selector", Kind::MapStr),
    (3, "clusterIP", Kind::Str),
    (4, "type", Kind::Str),
    (5, "externalIPs", Kind::RepStr),
    (7, "sessionAffinity", Kind::Str),
    (11, "externalName", Kind::Str),
];
const SERVICE: &[F] = &[(1, "metadata", Kind::Msg(META)), (2, "spec", Kind::Msg(SERVICE_SPEC))];
const EMPTY: &[F] = &[(1, "metadata", Kind::Msg(META))];
const INT_OR_STRING: &[F] = &[(1, "type", Kind::Int), (2, "intVal", Kind::Int), (3, "strVal", Kind::Str)];
const TYPE_META: &[F] = &[(1, "apiVersion", Kind::Str), (2, "kind", Kind::Str)];
const PRECONDITIONS: &[F] = &[(1, "uid", Kind::Str), (2, "resourceVersion", Kind::Str)];
/// What client-go (helm's uninstall) sends with a DELETE.
const DELETE_OPTIONS: &[F] = &[
    (1, "gracePeriodSeconds", Kind::Int),
    (2, "preconditions", Kind::Msg(PRECONDITIONS)),
    (3, "orphanDependents", Kind::Bool),
    (4, "propagationPolicy", Kind::Str),
    (5, "dryRun", Kind::RepStr),
];

fn schema(kind: &str) -> Option<&'static [F]> {
    Some(match kind {
        "ConfigMap" => CONFIGMAP,
        "Secret" => SECRET,
        "Namespace" => NAMESPACE,
        "ServiceAccount" => SERVICE_ACCOUNT,
        "Role" | "ClusterRole" => ROLE,
        "RoleBinding" | "ClusterRoleBinding" => BINDING,
        "SelfSubjectAccessReview" => SSAR,
        "SubjectAccessReview" | "LocalSubjectAccessReview" => SAR,
        "TokenReview" => TOKEN_REVIEW,
        "Service" => SERVICE,
        "SelfSubjectRulesReview" => SSRR,
        "SelfSubjectReview" => EMPTY,
        "DeleteOptions" => DELETE_OPTIONS,
        _ => return None,
    })
}

/// A field number and its payload (bytes, or a varint).
type WireField<'a> = (u64, Result<&'a [u8], u64>);

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn varint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = self.b.split_first()?;
            self.b = rest;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }

    fn bytes(&mut self) -> Option<&'a [u8]> {
        let n = usize::try_from(self.varint()?).ok()?;
        if n > self.b.len() {
            return None;
        }
        let (head, rest) = self.b.split_at(n);
        self.b = rest;
        Some(head)
    }

    /// Next (field, wire type, payload) with payload as bytes or a varint.
    fn next(&mut self) -> Option<Option<WireField<'a>>> {
        if self.b.is_empty() {
            return Some(None);
        }
        let key = self.varint()?;
        let (field, wire) = (key >> 3, key & 7);
        let payload = match wire {
            0 => Err(self.varint()?),
            2 => Ok(self.bytes()?),
            1 => {
                let (h, r) = (self.b.get(..8)?, self.b.get(8..)?);
                self.b = r;
                Ok(h)
            }
            5 => {
                let (h, r) = (self.b.get(..4)?, self.b.get(4..)?);
                self.b = r;
                Ok(h)
            }
            _ => return None,
        };
        Some(Some((field, payload)))
    }
}

fn text(b: &[u8]) -> Value {
    json!(String::from_utf8_lossy(b))
}

fn map_entry(b: &[u8], bytes_value: bool) -> Option<(String, Value)> {
    let mut r = Reader { b };
    let (mut k, mut v) = (String::new(), json!(""));
    while let Some((f, p)) = r.next()? {
        match (f, p) {
            (1, Ok(x)) => k = String::from_utf8_lossy(x).into_owned(),
            (2, Ok(x)) if bytes_value => v = json!(base64::engine::general_purpose::STANDARD.encode(x)),
            (2, Ok(x)) => v = text(x),
            _ => {}
        }
    }
    Some((k, v))
}

fn decode(b: &[u8], fields: &[F]) -> Option<Value> {
    let mut out = Map::new();
    let mut r = Reader { b };
    while let Some((num, payload)) = r.next()? {
        let Some((_, name, kind)) = fields.iter().find(|(n, _, _)| *n == num) else {
            continue;
        };
        let name = name.to_string();
        match (kind, payload) {
            (Kind::Str, Ok(x)) => {
                if !x.is_empty() {
                    out.insert(name, text(x));
                }
            }
            (Kind::Bool, Err(v)) => {
                out.insert(name, json!(v != 0));
            }
            (Kind::Int, Err(v)) => {
                // int32/int64 fields are varints (two's complement for
                // negatives); zero is what Go's omitempty leaves out of JSON.
                if v != 0 {
                    out.insert(name, json!(v as i64));
                }
            }
            (Kind::IntOrString, Ok(x)) => {
                let ios = decode(x, INT_OR_STRING)?;
                let v = if ios["type"] == json!(1) {
                    ios["strVal"].clone()
                } else {
                    ios.get("intVal").cloned().unwrap_or(json!(0))
                };
                out.insert(name, v);
            }
            (Kind::Msg(s), Ok(x)) => {
                out.insert(name, decode(x, s)?);
            }
            (Kind::MapStr | Kind::MapBytes, Ok(x)) => {
                let (k, v) = map_entry(x, matches!(kind, Kind::MapBytes))?;
                out.entry(name).or_insert_with(|| json!({}))[k] = v;
            }
            (Kind::RepStr, Ok(x)) => push(&mut out, name, text(x)),
            (Kind::RepMsg(s), Ok(x)) => push(&mut out, name, decode(x, s)?),
            _ => return None,
        }
    }
    Some(Value::Object(out))
}

fn push(out: &mut Map<String, Value>, name: String, v: Value) {
    if let Some(Value::Array(a)) = out.get_mut(&name) {
        a.push(v);
    } else {
        out.insert(name, json!([v]));
    }
}

/// Decodes a `application/vnd.kubernetes.protobuf` body into JSON.
pub fn decode_body(body: &[u8]) -> ApiResult<Value> {
    let unsupported = || ApiError::unsupported_media_type("application/vnd.kubernetes.protobuf");
    let inner = body.strip_prefix(MAGIC).ok_or_else(unsupported)?;
    let mut r = Reader { b: inner };
    let (mut type_meta, mut raw) = (Value::Null, None);
    while let Some((f, p)) = r.next().ok_or_else(unsupported)? {
        match (f, p) {
            (1, Ok(x)) => type_meta = decode(x, TYPE_META).ok_or_else(unsupported)?,
            (2, Ok(x)) => raw = Some(x),
            _ => {}
        }
    }
    let kind = type_meta["kind"].as_str().unwrap_or_default();
    let fields = schema(kind).ok_or_else(unsupported)?;
    let mut obj =
        decode(raw.unwrap_or_default(), fields).ok_or_else(|| ApiError::bad_request("malformed protobuf body"))?;
    obj["apiVersion"] = type_meta["apiVersion"].clone();
    obj["kind"] = json!(kind);
    Ok(obj)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(num: u64, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![(num << 3 | 2) as u8, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_a_configmap() {
        let meta = field(1, b"c1");
        let entry = [field(1, b"a"), field(2, b"b")].concat();
        let cm = [field(1, &meta), field(2, &entry)].concat();
        let tm = [field(1, b"v1"), field(2, b"ConfigMap")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &cm)].concat();
        let v = decode_body(&body).unwrap();
        assert_eq!(v, json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c1"}, "data": {"a": "b"}}));
    }

    #[test]
    fn decodes_delete_options_as_client_go_sends_them() {
        let pre = field(1, b"u-1");
        let opts = [field(2, &pre), field(4, b"Background"), field(5, b"All")].concat();
        let tm = [field(1, b"v1"), field(2, b"DeleteOptions")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm), field(2, &opts)].concat();
        let o = crate::delete::DeleteOptions::from_parts(&Default::default(), &body).unwrap();
        assert_eq!((o.propagation.as_deref(), o.uid.as_deref(), o.dry_run), (Some("Background"), Some("u-1"), true));
    }

    #[test]
    fn unknown_kinds_are_unsupported() {
        let tm = [field(1, b"v1"), field(2, b"Pod")].concat();
        let body = [MAGIC.to_vec(), field(1, &tm)].concat();
        assert_eq!(decode_body(&body).unwrap_err().code, 415);
    }
}
