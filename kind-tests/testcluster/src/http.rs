//! The HTTP front: authentication, authorisation, routing to the
//! operations, content negotiation (JSON, Table, aggregated discovery) and
//! `Status` errors.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use http::{HeaderMap, Method, Request, Response, StatusCode, header};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, Limited, StreamBody};
use hyper::body::{Frame, Incoming};
use serde_json::{Value, json};

use crate::admission::FieldValidation;
use crate::auth::{Attributes, UserInfo, authorize};
use crate::delete::DeleteOptions;
use crate::patch::PatchType;
use crate::read::ListOpts;
use crate::resources::{ResourceInfo, Verbs};
use crate::route::{ResourcePath, parse_query, parse_resource_path};
use crate::selectors::{FieldSelector, LabelSelector};
use crate::state::{Ctx, Reply, Shared, as_version};
use crate::status::{ApiError, ApiResult};
use crate::table::IncludeObject;
use crate::watch::WatchOpts;
use crate::{discovery, openapi};

/// Response body type.
pub type Body = BoxBody<Bytes, Infallible>;

const MAX_BODY: usize = 16 * 1024 * 1024;

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into()).boxed()
}

fn json_response(code: u16, v: &Value, content_type: &str, warnings: &[String]) -> Response<Body> {
    let mut b = Response::builder()
        .status(StatusCode::from_u16(code).unwrap_or(StatusCode::OK))
        .header(header::CONTENT_TYPE, content_type);
    for w in warnings {
        b = b.header("Warning", format!("299 - \"{}\"", w.replace('\\', "\\\\").replace('"', "\\\"")));
    }
    b.body(full(serde_json::to_vec(v).unwrap_or_default())).unwrap_or_else(|_| Response::new(full("")))
}

fn error_response(e: &ApiError) -> Response<Body> {
    json_response(e.code, &e.to_status(), "application/json", &[])
}

fn text(code: u16, t: &'static str) -> Response<Body> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "text/plain; charset=utf-8")
        .body(full(t))
        .unwrap_or_else(|_| Response::new(full("")))
}

fn header_str(h: &HeaderMap, name: header::HeaderName) -> &str {
    h.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default()
}

/// Serves one request.
pub async fn handle(state: Shared, addr: String, req: Request<Incoming>) -> Result<Response<Body>, Infallible> {
    let started = std::time::Instant::now();
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let query = parse_query(req.uri().query());
    let client = crate::requests::client_of(header_str(req.headers(), header::USER_AGENT));
    let resp = match serve(state.clone(), addr, req).await {
        Ok(r) => r,
        Err(e) => error_response(&e),
    };
    let rp = parse_resource_path(&path);
    let key = crate::requests::RequestKey {
        client,
        verb: rp.as_ref().map_or("get", |rp| verb_of(&method, rp, &query)).to_owned(),
        group: rp.as_ref().map(|rp| rp.group.clone()).unwrap_or_default(),
        resource: rp.as_ref().map(|rp| rp.plural.clone()).unwrap_or_default(),
        subresource: rp.as_ref().and_then(|rp| rp.subresource.clone()).unwrap_or_default(),
        code: resp.status().as_u16(),
    };
    state.requests.record(key);
    tracing::debug!(%method, %path, status = resp.status().as_u16(), elapsed_us = started.elapsed().as_micros() as u64, "request");
    Ok(resp)
}

fn authenticate(state: &Shared, h: &HeaderMap) -> ApiResult<UserInfo> {
    let token = header_str(h, header::AUTHORIZATION).strip_prefix("Bearer ").unwrap_or_default().trim();
    let user = state.auth.authenticate(token).ok_or_else(ApiError::unauthorized)?;
    let Some(target) = h.get("Impersonate-User").and_then(|v| v.to_str().ok()) else {
        return Ok(user);
    };
    let attrs =
        Attributes { verb: "impersonate".into(), resource: "users".into(), name: target.into(), ..Default::default() };
    if !authorize(&state.store, &user, &attrs).0 {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!(
                "users \"{target}\" is forbidden: User \"{}\" cannot impersonate resource \"users\" in API group \"\" at the cluster scope",
                user.name
            ),
            details: Some(json!({"name": target, "kind": "users"})),
        });
    }
    let mut groups: Vec<String> =
        h.get_all("Impersonate-Group").iter().filter_map(|v| v.to_str().ok().map(String::from)).collect();
    groups.push("system:authenticated".into());
    Ok(UserInfo {
        name: target.into(),
        uid: h.get("Impersonate-Uid").and_then(|v| v.to_str().ok()).unwrap_or_default().into(),
        groups,
    })
}

async fn serve(state: Shared, addr: String, req: Request<Incoming>) -> ApiResult<Response<Body>> {
    let path = req.uri().path().to_string();
    let query = parse_query(req.uri().query());
    let user = authenticate(&state, req.headers())?;
    let accept = header_str(req.headers(), header::ACCEPT).to_string();
    if req.method() == Method::GET
        && let Some(r) = serve_non_resource(&state, &addr, &path, &accept, &user)?
    {
        return Ok(r);
    }
    let rp = parse_resource_path(&path).ok_or_else(ApiError::path_not_found)?;
    let info = state.registry.lookup(&rp.group, &rp.version, &rp.plural).ok_or_else(ApiError::path_not_found)?;
    if let Some(sub) = &rp.subresource
        && !(sub == "status" && info.status_subresource)
        && !(sub == "finalize" && info.plural == "namespaces")
        && !(sub == "binding" && info.plural == "pods" && info.group.is_empty() && req.method() == Method::POST)
    {
        return Err(ApiError::path_not_found());
    }
    if rp.namespace.is_some() && !info.namespaced {
        return Err(ApiError::path_not_found());
    }
    let verb = verb_of(req.method(), &rp, &query);
    let attrs = Attributes {
        verb: verb.into(),
        group: info.group.clone(),
        resource: info.plural.clone(),
        subresource: rp.subresource.clone().unwrap_or_default(),
        namespace: rp.namespace.clone().unwrap_or_default(),
        name: rp.name.clone().unwrap_or_default(),
        path: String::new(),
    };
    if !authorize(&state.store, &user, &attrs).0 {
        return Err(ApiError::forbidden_rbac(
            &user.name,
            verb,
            &info.plural,
            &info.group,
            rp.namespace.as_deref(),
            &attrs.name,
        ));
    }
    if info.verbs == Verbs::CreateOnly && verb != "create" {
        return Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource (verb {verb})"
        )));
    }
    let ctx = context(&query, req.headers(), user);
    let headers = req.headers().clone();
    let method = req.method().clone();
    let body = read_body(req).await?;
    dispatch(&state, &info, &rp, &method, &headers, &query, &body, ctx, &accept, verb).await
}

fn verb_of(m: &Method, rp: &ResourcePath, q: &HashMap<String, String>) -> &'static str {
    let named = rp.name.is_some();
    match *m {
        Method::GET if matches!(q.get("watch").map(String::as_str), Some("true" | "1")) => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "unknown",
    }
}

fn context(q: &HashMap<String, String>, h: &HeaderMap, user: UserInfo) -> Ctx {
    let agent = header_str(h, header::USER_AGENT);
    let manager = q
        .get("fieldManager")
        .cloned()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| agent.split('/').next().unwrap_or_default().to_string());
    Ctx {
        user,
        dry_run: q.get("dryRun").is_some_and(|d| d == "All"),
        manager,
        validation: FieldValidation::parse(q.get("fieldValidation").map(String::as_str)),
        force: q.get("force").is_some_and(|f| f == "true"),
    }
}

async fn read_body(req: Request<Incoming>) -> ApiResult<Bytes> {
    let limited = Limited::new(req.into_body(), MAX_BODY);
    match limited.collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) => Err(ApiError {
            code: 413,
            reason: "RequestEntityTooLarge",
            message: format!("request body: {e}"),
            details: None,
        }),
    }
}

fn parse_json(body: &[u8]) -> ApiResult<Value> {
    if body.starts_with(b"k8s\x00") {
        return crate::protobuf::decode_body(body);
    }
    serde_json::from_slice(body)
        .or_else(|_| serde_yaml::from_slice(body))
        .map_err(|e| ApiError::bad_request(format!("error decoding body: {e}")))
}

fn wants_table(accept: &str) -> bool {
    accept.split(',').next().is_some_and(|first| first.contains("as=Table"))
}

fn selectors(info: &ResourceInfo, q: &HashMap<String, String>) -> ApiResult<(LabelSelector, FieldSelector)> {
    let labels = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or_default())?;
    let extra = if info.crd.is_some() { Some(info.selectable_fields.as_slice()) } else { None };
    let fields = FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or_default(), extra)?;
    Ok((labels, fields))
}

#[allow(clippy::too_many_arguments)]
async fn dispatch(
    state: &Shared,
    info: &Arc<ResourceInfo>,
    rp: &ResourcePath,
    method: &Method,
    headers: &HeaderMap,
    q: &HashMap<String, String>,
    body: &[u8],
    ctx: Ctx,
    accept: &str,
    verb: &str,
) -> ApiResult<Response<Body>> {
    let ns = rp.namespace.clone().unwrap_or_default();
    let name = rp.name.clone().unwrap_or_default();
    let sub = rp.subresource.as_deref().unwrap_or_default();
    let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
    let reply = match (verb, method) {
        ("watch", _) => return watch(state, info, rp, q, accept),
        ("list", _) => return list(state, info, rp, q, accept),
        ("get", _) => {
            let obj = state.get(info, &ns, &name)?;
            if wants_table(accept) {
                let t = crate::table::table(info, &[obj], state.store.current_rv(), None, include);
                return Ok(json_response(200, &t, "application/json;as=Table;v=v1;g=meta.k8s.io", &[]));
            }
            Reply::ok(as_version(&obj, info))
        }
        ("create", _) if info.verbs == Verbs::CreateOnly => state.review(info, &ns, parse_json(body)?, &ctx)?,
        ("create", _) if sub == "binding" => state.bind(info, &ns, &name, parse_json(body)?, &ctx)?,
        ("create", _) => state.create(info, &ns, parse_json(body)?, &ctx)?,
        ("update", _) => state.update(info, &ns, &name, parse_json(body)?, &ctx, sub)?,
        ("patch", _) => {
            let ptype = PatchType::from_content_type(header_str(headers, header::CONTENT_TYPE))?;
            state.patch(info, &ns, &name, ptype, body, &ctx, sub)?
        }
        ("delete", _) => state.delete(info, &ns, &name, &DeleteOptions::from_parts(q, body)?, &ctx)?,
        ("deletecollection", _) => {
            let (labels, fields) = selectors(info, q)?;
            let o = DeleteOptions::from_parts(q, body)?;
            state.delete_collection(info, rp.namespace.as_deref(), &labels, &fields, &o, &ctx)?
        }
        _ => {
            return Err(ApiError::method_not_allowed(
                "the server does not allow this method on the requested resource",
            ));
        }
    };
    let out = if reply.body["kind"] == "Status" || reply.body["kind"].as_str().is_some_and(|k| k.ends_with("List")) {
        reply.body
    } else {
        as_version(&reply.body, info)
    };
    Ok(json_response(reply.code, &out, "application/json", &reply.warnings))
}

fn list(
    state: &Shared,
    info: &Arc<ResourceInfo>,
    rp: &ResourcePath,
    q: &HashMap<String, String>,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(info, q)?;
    let o = ListOpts {
        labels,
        fields,
        limit: q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(0),
        continue_token: q.get("continue").cloned().filter(|c| !c.is_empty()),
        resource_version: q.get("resourceVersion").cloned(),
        rv_match: q.get("resourceVersionMatch").cloned().filter(|c| !c.is_empty()),
    };
    let page = state.list(info, rp.namespace.as_deref(), &o)?;
    if wants_table(accept) {
        let include = IncludeObject::parse(q.get("includeObject").map(String::as_str));
        let t = crate::table::table(info, &page.items, page.resource_version, page.continue_token.as_deref(), include);
        return Ok(json_response(200, &t, "application/json;as=Table;v=v1;g=meta.k8s.io", &[]));
    }
    let mut meta = json!({"resourceVersion": page.resource_version.to_string()});
    if let Some(c) = &page.continue_token {
        meta["continue"] = json!(c);
    }
    if let Some(r) = page.remaining {
        meta["remainingItemCount"] = json!(r);
    }
    let mut buf = Vec::with_capacity(64 + page.items.len() * 512);
    buf.extend_from_slice(
        format!(
            "{{\"apiVersion\":\"{}\",\"kind\":\"{}List\",\"metadata\":{meta},\"items\":[",
            info.api_version(),
            info.kind
        )
        .as_bytes(),
    );
    let av = info.api_version();
    for (i, item) in page.items.iter().enumerate() {
        if i > 0 {
            buf.push(b',');
        }
        let res = if item["apiVersion"].as_str() == Some(&av) {
            serde_json::to_writer(&mut buf, &**item)
        } else {
            serde_json::to_writer(&mut buf, &as_version(item, info))
        };
        res.map_err(|e| ApiError::internal(e.to_string()))?;
    }
    buf.extend_from_slice(b"]}");
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, "application/json")
        .body(full(buf))
        .unwrap_or_else(|_| Response::new(full(""))))
}

fn watch(
    state: &Shared,
    info: &Arc<ResourceInfo>,
    rp: &ResourcePath,
    q: &HashMap<String, String>,
    accept: &str,
) -> ApiResult<Response<Body>> {
    let (labels, fields) = selectors(info, q)?;
    let truthy = |k: &str| q.get(k).is_some_and(|v| v == "true" || v == "1");
    let timeout = q.get("timeoutSeconds").and_then(|t| t.parse::<u64>().ok()).unwrap_or(1800);
    let o = WatchOpts {
        labels,
        fields,
        resource_version: q.get("resourceVersion").cloned(),
        bookmarks: truthy("allowWatchBookmarks"),
        send_initial_events: truthy("sendInitialEvents"),
        timeout: Duration::from_secs(timeout),
        table: wants_table(accept).then(|| IncludeObject::parse(q.get("includeObject").map(String::as_str))),
        bookmark_every: Duration::from_secs(1),
    };
    let rx = crate::watch::start(state.clone(), info.clone(), rp.namespace.clone(), o)?;
    let stream = tokio_stream::wrappers::ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b)));
    let ct = if wants_table(accept) { "application/json;as=Table;v=v1;g=meta.k8s.io" } else { "application/json" };
    Ok(Response::builder()
        .header(header::CONTENT_TYPE, ct)
        .header(header::CACHE_CONTROL, "no-cache, private")
        .body(BodyExt::boxed(StreamBody::new(stream)))
        .unwrap_or_else(|_| Response::new(full(""))))
}

fn serve_non_resource(
    state: &Shared,
    addr: &str,
    path: &str,
    accept: &str,
    user: &UserInfo,
) -> ApiResult<Option<Response<Body>>> {
    let attrs = Attributes { verb: "get".into(), path: path.into(), ..Default::default() };
    if !authorize(&state.store, user, &attrs).0 {
        return Err(ApiError {
            code: 403,
            reason: "Forbidden",
            message: format!("forbidden: User \"{}\" cannot get path \"{path}\"", user.name),
            details: Some(json!({})),
        });
    }
    let ok = |v: Value| Ok(Some(json_response(200, &v, "application/json", &[])));
    let reg = &state.registry;
    let trimmed = path.trim_end_matches('/');
    match trimmed {
        "/healthz" | "/livez" | "/readyz" => return Ok(Some(text(200, "ok"))),
        "/metrics" => {
            let body = state.requests.render();
            let r = Response::builder()
                .status(200)
                .header(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
                .body(full(body))
                .unwrap_or_else(|_| Response::new(full("")));
            return Ok(Some(r));
        }
        "/version" => return ok(discovery::version()),
        "/api" | "/apis" if discovery::wants_aggregated(accept) => {
            let v = discovery::aggregated(reg, trimmed == "/api");
            return Ok(Some(json_response(200, &v, discovery::AGGREGATED_V2, &[])));
        }
        "/api" => return ok(discovery::api_versions(addr)),
        "/apis" => return ok(discovery::api_group_list(reg)),
        "/openapi/v3" => return ok(openapi_root(state)),
        "/openapi/v2" => {
            if accept.contains("protobuf") && !accept.contains("json") {
                return Err(ApiError::not_acceptable("only application/json is served for /openapi/v2"));
            }
            return ok(openapi::v2_document(&reg.all()));
        }
        _ => {}
    }
    let segs: Vec<&str> = trimmed.trim_start_matches('/').split('/').collect();
    let gv_infos = |g: &str, v: &str| -> Vec<Arc<ResourceInfo>> {
        reg.all().into_iter().filter(|r| r.group == g && r.version == v).collect()
    };
    match segs.as_slice() {
        ["api", "v1"] => ok(discovery::resource_list(&gv_infos("", "v1"), "v1")),
        ["apis", g] => match discovery::api_group(reg, g) {
            Some(v) => ok(v),
            None => Err(ApiError::path_not_found()),
        },
        ["apis", g, v] => {
            let infos = gv_infos(g, v);
            if infos.is_empty() {
                return Err(ApiError::path_not_found());
            }
            ok(discovery::resource_list(&infos, &format!("{g}/{v}")))
        }
        ["openapi", "v3", "api", "v1"] => ok(openapi::v3_document(&gv_infos("", "v1"))),
        ["openapi", "v3", "apis", g, v] => {
            let infos = gv_infos(g, v);
            if infos.is_empty() {
                return Err(ApiError::path_not_found());
            }
            ok(openapi::v3_document(&infos))
        }
        _ => Ok(None),
    }
}

fn openapi_root(state: &Shared) -> Value {
    let mut paths = serde_json::Map::new();
    for (g, vs) in state.registry.groups() {
        for v in vs {
            let (key, infos): (String, Vec<_>) = if g.is_empty() {
                ("api/v1".into(), state.registry.all().into_iter().filter(|r| r.group.is_empty()).collect())
            } else {
                (
                    format!("apis/{g}/{v}"),
                    state.registry.all().into_iter().filter(|r| r.group == g && r.version == v).collect(),
                )
            };
            let hash = openapi::hash_of(&json!(
                infos.iter().map(|i| json!([i.kind, i.schema, i.version])).collect::<Vec<_>>()
            ));
            paths.insert(key.clone(), json!({"serverRelativeURL": format!("/openapi/v3/{key}?hash={hash}")}));
        }
    }
    json!({"paths": paths})
}
