//! The REST verbs over any kind: maps a method and [`Target`] to a read, list, watch or a lifecycle
//! operation of [`crate::ops`], and renders the answer in the format the client asked for.

use std::sync::Arc;

use atoll_api::patch::{self, PatchType};
use atoll_api::selector::{FieldSelector, LabelSelector};
use atoll_api::{ApiError, ApiResult, KindInfo, meta};
use axum::http::{HeaderMap, Method, header};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::negotiate::{self, Format};
use crate::object::{Filter, Obj, ObjReader};
use crate::ops::{DeleteOpts, FieldValidation, UpdateMode, WriteOpts, check_body_name};
use crate::request::{Query, Target, object_key};
use crate::server::Server;
use crate::storage::prefix_end;
use crate::{table, watch};

/// Serves one resource request.
pub async fn serve(
    srv: Arc<Server>,
    method: Method,
    target: Target,
    query: Query,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&srv, &method, &target, &query, &headers, &body).await {
        Ok(resp) => resp,
        Err(e) => negotiate::error(&e),
    }
}

async fn dispatch(
    srv: &Arc<Server>,
    method: &Method,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let kind = &t.kind;
    if t.sub.as_deref() == Some("log") && kind.has(atoll_api::Subresource::Log) {
        // Plain text, whatever the client accepts (kubectl asks for JSON).
        return crate::podlogs::serve(srv, method, t, &q.raw).await;
    }
    let format = negotiate::format(negotiate::accept(headers))?;
    let sub = t.sub.as_deref();
    if let Some(s) = sub {
        let known = kind.subresources.iter().any(|x| x.name() == s)
            || (s == "finalize" && kind.plural == "namespaces" && kind.group.is_empty());
        if !known {
            return Err(ApiError::not_found(
                &kind.group,
                &format!("{}/{s}", kind.plural),
                t.name(),
            ));
        }
    }
    let ns = t.namespace.as_deref().unwrap_or("");
    let name = t.name();
    let has_name = t.name.is_some();
    match (method.as_str(), has_name, sub) {
        ("GET", false, None) if q.watch => watch::serve(srv, t, q, &format),
        ("GET", false, None) => list(srv, t, q, &format).await,
        ("GET", true, None | Some("status")) => {
            let (obj, _) = srv.read(kind, ns, name).await?;
            Ok(render_one(kind, 200, obj, &format, srv.now(), q))
        }
        ("GET", true, Some("scale")) => {
            let (obj, _) = srv.read(kind, ns, name).await?;
            Ok(negotiate::respond(
                200,
                &scale_of(&t.kind, &obj),
                &Format::Json,
            ))
        }
        ("POST", false, None) => {
            if kind.namespaced && t.namespace.is_none() {
                return Err(ApiError::method_not_allowed(format!(
                    "create of {} needs a namespace in the path",
                    kind.plural
                )));
            }
            let mut fields = field_check(q, headers, body)?;
            let obj = negotiate::decode_body(headers, body)?;
            let created = srv
                .create(kind, t.namespace.as_deref(), obj, &mut fields)
                .await?;
            let resp = match (created.json, &format) {
                // The stored bytes with their resourceVersion are the answer: no second encoding.
                (Some(json), Format::Json) => negotiate::raw(201, json, "application/json"),
                _ => render_one(kind, 201, created.obj, &format, srv.now(), q),
            };
            Ok(negotiate::with_warnings(resp, &fields.warnings))
        }
        ("POST", true, Some("binding")) => bind(srv, t, q, headers, body).await,
        ("POST", true, Some("eviction")) => evict(srv, t, q, headers, body).await,
        ("PUT", true, None | Some("status") | Some("finalize")) => {
            let mut fields = field_check(q, headers, body)?;
            let wanted = negotiate::decode_body(headers, body)?;
            let mode = match sub {
                Some("status") => UpdateMode::Status,
                Some("finalize") => UpdateMode::Finalize,
                _ => UpdateMode::Main,
            };
            let put = move |_old: &Value| Ok(wanted.clone());
            let (code, obj) = srv.update(kind, ns, name, mode, &mut fields, &put).await?;
            let resp = render_one(kind, code, obj, &format, srv.now(), q);
            Ok(negotiate::with_warnings(resp, &fields.warnings))
        }
        ("PUT", true, Some("scale")) => {
            let wanted = negotiate::decode_body(headers, body)?;
            scale_update(srv, t, q, move |_scale| Ok(wanted.clone())).await
        }
        ("PATCH", true, None | Some("status"))
            if content_type(headers)
                .is_ok_and(|ct| ct.split(';').next().unwrap_or("").trim() == APPLY) =>
        {
            server_side_apply(srv, t, q, headers, body, &format).await
        }
        ("PATCH", true, None | Some("status") | Some("scale")) => {
            let patch_type = content_type(headers)
                .and_then(|ct| PatchType::parse(ct).map_err(ApiError::unsupported_media_type))?;
            if patch_type == PatchType::Strategic
                && sub != Some("scale")
                && !t.kind.strategy.strategic_merge()
            {
                return Err(ApiError::unsupported_media_type(
                    "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml",
                ));
            }
            if body.len() > negotiate::MAX_BODY_BYTES {
                return Err(negotiate::too_large());
            }
            let patch: Value = serde_json::from_slice(body).map_err(|e| {
                ApiError::bad_request(format!("the patch could not be decoded as JSON: {e}"))
            })?;
            let served = srv.served();
            let root = if sub == Some("scale") {
                atoll_api::strategic::SCALE
            } else {
                served.types.root_of(kind).unwrap_or("")
            };
            let (types, root) = (served.clone(), root.to_string());
            let apply = move |target: &Value| {
                patch::apply(patch_type, target, &patch, &types.types, &root).map_err(patch_failed)
            };
            if sub == Some("scale") {
                return scale_update(srv, t, q, apply).await;
            }
            let mode = if sub == Some("status") {
                UpdateMode::Status
            } else {
                UpdateMode::Main
            };
            let mut fields = field_check(q, headers, body)?;
            let (code, obj) = srv
                .update(kind, ns, name, mode, &mut fields, &apply)
                .await?;
            let resp = render_one(kind, code, obj, &format, srv.now(), q);
            Ok(negotiate::with_warnings(resp, &fields.warnings))
        }
        ("DELETE", true, None) => {
            let opts = DeleteOpts::from_body(optional_body(headers, body)?.as_ref(), q)?;
            let (code, obj) = srv.delete(kind, ns, name, &opts).await?;
            Ok(render_one(kind, code, obj, &format, srv.now(), q))
        }
        ("DELETE", false, None) => delete_collection(srv, t, q, headers, body).await,
        (m, _, _) => Err(ApiError::method_not_allowed(format!(
            "the server does not allow this method on the requested resource: {m} {}{}",
            kind.plural,
            sub.map(|s| format!("/{s}")).unwrap_or_default()
        ))),
    }
}

/// The field validation of a write: the `fieldValidation` mode and the keys the JSON body repeats.
fn field_check(q: &Query, headers: &HeaderMap, body: &Bytes) -> ApiResult<WriteOpts> {
    let mode = FieldValidation::parse(q.field_validation.as_deref())?;
    let duplicates = if mode == FieldValidation::Ignore {
        vec![]
    } else {
        // A body that is not JSON (YAML) has no duplicates to report here; malformed JSON fails later.
        crate::extract::duplicate_fields(body).unwrap_or_default()
    };
    Ok(WriteOpts {
        dry_run: q.dry_run,
        mode,
        duplicates,
        warnings: vec![],
        manager: manager(q, headers),
        applied: None,
    })
}

/// The field manager of a write: `fieldManager`, else the client's user agent up to its first `/`.
fn manager(q: &Query, headers: &HeaderMap) -> String {
    if let Some(m) = q.field_manager.as_deref().filter(|m| !m.is_empty()) {
        return m.chars().take(128).collect();
    }
    let ua = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match ua.split('/').next().filter(|s| !s.is_empty()) {
        Some(product) => product.chars().take(128).collect(),
        None => "unknown".into(),
    }
}

/// A patch that cannot be applied to the object: 422, as Kubernetes answers.
fn patch_failed(message: String) -> ApiError {
    let mut e = ApiError::bad_request(message);
    e.code = 422;
    e.reason = "Invalid";
    e
}

fn content_type(headers: &HeaderMap) -> ApiResult<&str> {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::unsupported_media_type("a PATCH needs a Content-Type: application/merge-patch+json or application/json-patch+json"))
}

fn optional_body(headers: &HeaderMap, body: &Bytes) -> ApiResult<Option<Value>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(None)
    } else {
        negotiate::decode_body(headers, body).map(Some)
    }
}

/// Builds the list filter of a request (400 on bad selectors).
pub fn filter(t: &Target, q: &Query) -> ApiResult<Filter> {
    let labels = LabelSelector::parse(&q.label_selector).map_err(ApiError::bad_request)?;
    let fields = FieldSelector::parse(&q.field_selector)
        .map_err(|e| ApiError::bad_request(format!("invalid field selector: {e}")))?;
    let f = Filter {
        namespace: t.namespace.clone(),
        labels,
        fields,
    };
    f.check(&t.kind)?;
    Ok(f)
}

/// The key range a list reads: one namespace, one object (`metadata.name=`), or the whole resource.
fn key_range(kind: &KindInfo, filter: &Filter) -> (String, Vec<u8>) {
    let prefix = kind.key_prefix();
    match (&filter.namespace, filter.fields.exact("metadata.name")) {
        (Some(ns), Some(name)) => {
            let key = object_key(kind, ns, name);
            let mut end = key.as_bytes().to_vec();
            end.push(0);
            (key, end)
        }
        (None, Some(name)) if !kind.namespaced => {
            let key = object_key(kind, "", name);
            let mut end = key.as_bytes().to_vec();
            end.push(0);
            (key, end)
        }
        (Some(ns), None) => {
            let p = format!("{prefix}{ns}/");
            let end = prefix_end(&p);
            (p, end)
        }
        _ => {
            let end = prefix_end(&prefix);
            (prefix, end)
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct ContinueToken {
    v: String,
    rv: i64,
    start: String,
}

fn decode_continue(token: &str, prefix: &str) -> ApiResult<(i64, String)> {
    let bad = || {
        ApiError::bad_request(
            "continue key is not valid: start a new list without the continue parameter",
        )
    };
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token.trim_end_matches('='))
        .or_else(|_| base64::engine::general_purpose::STANDARD.decode(token))
        .map_err(|_| bad())?;
    let t: ContinueToken = serde_json::from_slice(&raw).map_err(|_| bad())?;
    if t.v != "meta.k8s.io/v1" || t.rv <= 0 || t.start.contains("..") {
        return Err(bad());
    }
    Ok((t.rv, format!("{prefix}{}", t.start)))
}

fn encode_continue(rv: i64, next_key: &str, prefix: &str) -> String {
    let t = ContinueToken {
        v: "meta.k8s.io/v1".into(),
        rv,
        start: next_key
            .strip_prefix(prefix)
            .unwrap_or(next_key)
            .to_string(),
    };
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&t).unwrap_or_default())
}

/// Keys read from etcd per range request of a list.
const PAGE: usize = 1000;

/// The result of a list: objects, the revision it reflects, and where to continue.
pub struct Listed {
    /// The selected objects.
    pub items: Vec<Arc<Obj>>,
    /// The revision the list was read at.
    pub revision: i64,
    /// Continue token, when more objects follow.
    pub continue_token: Option<String>,
}

/// Lists objects. `resourceVersion=0` is served from the watch cache as it is. Other unpaged lists
/// are consistent reads: from the watch cache when etcd confirms that the listed key range has not
/// changed since the cache's revision, otherwise from etcd. Paged lists (`limit`/`continue`) read
/// etcd, every page at the revision of the first.
pub async fn list_objects(
    srv: &Server,
    t: &Target,
    q: &Query,
    filter: &Filter,
) -> ApiResult<Listed> {
    let kind = &t.kind;
    if q.resource_version.as_deref() == Some("0") && q.continue_token.is_none() {
        let (items, revision) = srv.cache(kind)?.list(filter);
        return Ok(Listed {
            items,
            revision,
            continue_token: None,
        });
    }
    let prefix = kind.key_prefix();
    let (range_start, end) = key_range(kind, filter);
    let exact = q.resource_version_match.as_deref() == Some("Exact");
    if q.limit == 0 && q.continue_token.is_none() && !exact {
        let (items, total, cached_at) = srv.cache(kind)?.snapshot(&range_start, &end, filter);
        if cached_at > 0 {
            let now = srv
                .store
                .range_state(range_start.as_bytes(), &end, cached_at)
                .await?;
            if now.unchanged && now.count == total {
                return Ok(Listed {
                    items,
                    revision: now.revision,
                    continue_token: None,
                });
            }
        }
    }
    let (mut revision, start) = match &q.continue_token {
        Some(token) => {
            let (rv, start) = decode_continue(token, &prefix)?;
            if !start.as_bytes().starts_with(range_start.as_bytes())
                && start.as_bytes() < range_start.as_bytes()
            {
                return Err(ApiError::bad_request(
                    "continue key is not valid for this request",
                ));
            }
            (rv, start.into_bytes())
        }
        None => {
            let rv = match (
                q.resource_version.as_deref(),
                q.resource_version_match.as_deref(),
            ) {
                (Some(rv), Some("Exact")) => rv.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(format!("invalid resourceVersion {rv:?}"))
                })?,
                _ => 0,
            };
            (rv, range_start.clone().into_bytes())
        }
    };
    let limit = usize::try_from(q.limit).unwrap_or(0);
    let reader = ObjReader::new(kind.clone());
    let mut items = vec![];
    let mut continue_token = None;
    let gone = |e: crate::storage::StorageError| match e {
        crate::storage::StorageError::Compacted => ApiError::gone(
            "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
        ),
        other => other.into(),
    };
    // Pages are read from etcd while the previous one is decoded (when no limit makes that wasteful).
    let fetch = |start: Vec<u8>, revision: i64, found: usize| {
        let (store, end) = (srv.store.clone(), end.clone());
        let chunk = if limit > 0 {
            (limit - found.min(limit)).clamp(1, PAGE)
        } else {
            PAGE
        } as i64;
        tokio::spawn(async move { store.range(&start, &end, revision, chunk).await })
    };
    let mut pending = fetch(start, revision, 0);
    'pages: loop {
        let page = pending
            .await
            .map_err(|e| ApiError::internal(format!("list task failed: {e}")))?
            .map_err(gone)?;
        revision = page.revision;
        let count = page.kvs.len();
        let next = match page.kvs.last() {
            Some(last) if page.more => {
                let mut from = last.key.clone().into_bytes();
                from.push(0);
                Some(if limit == 0 {
                    Ok(fetch(from, revision, 0))
                } else {
                    Err(from)
                })
            }
            _ => None,
        };
        for (i, kv) in page.kvs.into_iter().enumerate() {
            let obj = reader
                .read(&kv.value, kv.revision)
                .map_err(ApiError::internal)?;
            if filter.matches(kind, &obj) {
                items.push(Arc::new(obj));
            }
            let more_after = i + 1 < count || page.more;
            if limit > 0 && items.len() >= limit && more_after {
                continue_token = Some(encode_continue(
                    revision,
                    &format!("{}\u{0}", kv.key),
                    &prefix,
                ));
                break 'pages;
            }
        }
        pending = match next {
            Some(Ok(prefetched)) => prefetched,
            Some(Err(from)) => fetch(from, revision, items.len()),
            None => break,
        };
    }
    Ok(Listed {
        items,
        revision,
        continue_token,
    })
}

async fn list(srv: &Server, t: &Target, q: &Query, format: &Format) -> ApiResult<Response> {
    let filter = filter(t, q)?;
    let listed = list_objects(srv, t, q, &filter).await?;
    Ok(render_list(&t.kind, &listed, format, srv.now(), q))
}

fn list_meta(listed: &Listed) -> Value {
    let mut m = json!({"resourceVersion": listed.revision.to_string()});
    if let Some(c) = &listed.continue_token {
        m["continue"] = c.clone().into();
    }
    m
}

/// Renders a list: JSON is assembled from the stored bytes without re-encoding each object.
pub fn render_list(
    kind: &KindInfo,
    listed: &Listed,
    format: &Format,
    now: jiff::Timestamp,
    q: &Query,
) -> Response {
    match format {
        Format::Json => {
            let head = json!({"kind": kind.list_kind(), "apiVersion": kind.api_version(), "metadata": list_meta(listed)});
            let head = serde_json::to_string(&head).unwrap_or_default();
            let total: usize = listed.items.iter().map(|o| o.json.len() + 1).sum();
            let mut out = Vec::with_capacity(head.len() + total + 16);
            out.extend_from_slice(&head.as_bytes()[..head.len() - 1]);
            out.extend_from_slice(b",\"items\":[");
            for (i, o) in listed.items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(&o.json);
            }
            out.extend_from_slice(b"]}");
            negotiate::raw(200, Bytes::from(out), "application/json")
        }
        Format::Table(api_version) => {
            let objs: Vec<Value> = listed.items.iter().filter_map(|o| o.value().ok()).collect();
            let mut tbl = table::build(
                kind,
                &objs,
                api_version,
                q.include_object.as_deref(),
                now,
                true,
            );
            tbl["metadata"] = list_meta(listed);
            negotiate::respond(200, &tbl, format)
        }
        Format::Metadata => {
            let items: Vec<Value> = listed
                .items
                .iter()
                .filter_map(|o| o.value().ok())
                .map(|v| table::partial_metadata(&v))
                .collect();
            let v = json!({"kind": "PartialObjectMetadataList", "apiVersion": "meta.k8s.io/v1", "metadata": list_meta(listed), "items": items});
            negotiate::respond(200, &v, &Format::Json)
        }
        Format::Yaml => {
            let items: Vec<Value> = listed.items.iter().filter_map(|o| o.value().ok()).collect();
            let v = json!({"kind": kind.list_kind(), "apiVersion": kind.api_version(), "metadata": list_meta(listed), "items": items});
            negotiate::respond(200, &v, format)
        }
    }
}

/// Renders one object in the requested format.
pub fn render_one(
    kind: &KindInfo,
    code: u16,
    obj: Value,
    format: &Format,
    now: jiff::Timestamp,
    q: &Query,
) -> Response {
    match format {
        Format::Table(api_version) => {
            let mut tbl = table::build(
                kind,
                std::slice::from_ref(&obj),
                api_version,
                q.include_object.as_deref(),
                now,
                true,
            );
            tbl["metadata"] = json!({"resourceVersion": meta::resource_version(&obj)});
            negotiate::respond(code, &tbl, format)
        }
        Format::Metadata => negotiate::respond(code, &table::partial_metadata(&obj), &Format::Json),
        _ => negotiate::respond(code, &obj, format),
    }
}

async fn delete_collection(
    srv: &Server,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let opts = DeleteOpts::from_body(optional_body(headers, body)?.as_ref(), q)?;
    let filter = filter(t, q)?;
    let listed = list_objects(
        srv,
        t,
        &Query {
            limit: 0,
            continue_token: None,
            resource_version: None,
            ..q.clone()
        },
        &filter,
    )
    .await?;
    let mut deleted = vec![];
    for o in &listed.items {
        match srv.delete(&t.kind, &o.namespace, &o.name, &opts).await {
            Ok((_, obj)) => deleted.push(obj),
            Err(e) if e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let v = json!({"kind": t.kind.list_kind(), "apiVersion": t.kind.api_version(), "metadata": {"resourceVersion": listed.revision.to_string()}, "items": deleted});
    Ok(negotiate::respond(200, &v, &Format::Json))
}

/// POST pods/<name>/binding: assigns the pod to a node once.
async fn bind(
    srv: &Server,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let binding = negotiate::decode_body(headers, body)?;
    let name = t.name().to_string();
    check_body_name(&binding, &name)?;
    let node = binding
        .pointer("/target/name")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    if node.is_empty() {
        return Err(ApiError::invalid(
            "",
            "Binding",
            &name,
            vec![atoll_api::Cause::required("target.name")],
        ));
    }
    let now = meta::timestamp(srv.now());
    let pod_name = name.clone();
    let mutate = move |old: &Value| -> ApiResult<Value> {
        if meta::is_deleting(old) {
            return Err(ApiError::conflict(
                "",
                "pods",
                &pod_name,
                "pod is being deleted, cannot be assigned to a host",
            ));
        }
        if let Some(current) = old
            .pointer("/spec/nodeName")
            .and_then(Value::as_str)
            .filter(|n| !n.is_empty())
        {
            return Err(ApiError::conflict(
                "",
                "pods",
                &pod_name,
                &format!("pod {pod_name} is already assigned to node \"{current}\""),
            ));
        }
        let mut new = old.clone();
        new["spec"]["nodeName"] = node.clone().into();
        let cond = json!({"type": "PodScheduled", "status": "True", "lastProbeTime": null, "lastTransitionTime": now});
        let conds = new["status"]["conditions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let mut conds: Vec<Value> = conds
            .into_iter()
            .filter(|c| c.get("type").and_then(Value::as_str) != Some("PodScheduled"))
            .collect();
        conds.push(cond);
        new["status"]["conditions"] = Value::Array(conds);
        Ok(new)
    };
    srv.update(
        &t.kind,
        t.namespace.as_deref().unwrap_or(""),
        &name,
        UpdateMode::Assign,
        &mut WriteOpts::internal(q.dry_run),
        &mutate,
    )
    .await?;
    Ok(negotiate::respond(
        201,
        &json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201}),
        &Format::Json,
    ))
}

/// The media type of server-side apply.
const APPLY: &str = "application/apply-patch+yaml";

/// PATCH with `application/apply-patch+yaml`: server-side apply of the body (YAML or JSON) as the
/// request's field manager; creates the object when it does not exist.
async fn server_side_apply(
    srv: &Arc<Server>,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
    format: &Format,
) -> ApiResult<Response> {
    let kind = &t.kind;
    if q.field_manager.as_deref().unwrap_or("").is_empty() {
        return Err(ApiError::bad_request(
            "PATCH /apply: fieldManager is required for apply requests",
        ));
    }
    let mut opts = field_check(q, headers, body)?;
    let text = std::str::from_utf8(body)
        .map_err(|_| ApiError::bad_request("the apply body is not UTF-8"))?;
    let mut config: Value = serde_saphyr::from_str(text).map_err(|e| {
        ApiError::bad_request(format!(
            "the apply body could not be decoded as YAML or JSON: {e}"
        ))
    })?;
    if config.get("apiVersion").is_none() || config.get("kind").is_none() {
        return Err(ApiError::bad_request(
            "an applied configuration must set apiVersion and kind",
        ));
    }
    crate::ops::check_type(kind, &mut config)?;
    opts.applied = Some(config.clone());
    check_body_name(&config, t.name())?;
    let force = q.force;
    let served = srv.served();
    let root = served.types.root_of(kind).unwrap_or("").to_string();
    let time = meta::timestamp(srv.now());
    let api_version = kind.api_version();
    let manager = opts.manager.clone();
    let ns = t.namespace.as_deref().unwrap_or("");
    // An apply to `/status` owns status fields under the `status` subresource; it never creates.
    let status = t.sub.as_deref() == Some("status");
    let writer = atoll_api::apply::Writer {
        manager: &manager,
        api_version: &api_version,
        subresource: if status { "status" } else { "" },
        time: &time,
    };
    let exists = match srv.read(kind, ns, t.name()).await {
        Ok(_) => true,
        Err(e) if e.code == 404 && !status => false,
        Err(e) => return Err(e),
    };
    if !exists {
        let mut obj = atoll_api::apply::apply(&served.types, &root, None, &config, &writer, force)
            .map_err(|c| apply_conflict(kind, t.name(), &api_version, c))?;
        meta::set(&mut obj, "name", Some(t.name().into()));
        let created = srv
            .create(kind, t.namespace.as_deref(), obj, &mut opts)
            .await?;
        let resp = render_one(kind, 201, created.obj, format, srv.now(), q);
        return Ok(negotiate::with_warnings(resp, &opts.warnings));
    }
    let apply = |old: &Value| -> ApiResult<Value> {
        let mut merged =
            atoll_api::apply::apply(&served.types, &root, Some(old), &config, &writer, force)
                .map_err(|c| apply_conflict(kind, t.name(), &api_version, c))?;
        // A resourceVersion only binds when the configuration gives one.
        meta::set(
            &mut merged,
            "resourceVersion",
            config.pointer("/metadata/resourceVersion").cloned(),
        );
        Ok(merged)
    };
    let mode = if status {
        UpdateMode::Status
    } else {
        UpdateMode::Main
    };
    let (code, obj) = srv
        .update(kind, ns, t.name(), mode, &mut opts, &apply)
        .await?;
    let resp = render_one(kind, code, obj, format, srv.now(), q);
    Ok(negotiate::with_warnings(resp, &opts.warnings))
}

/// The 409 for an apply that would change fields other managers own.
fn apply_conflict(
    kind: &KindInfo,
    name: &str,
    api_version: &str,
    conflicts: Vec<atoll_api::apply::Conflict>,
) -> ApiError {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| {
            format!(
                "conflict with {:?} using {api_version}: {}",
                c.manager, c.field
            )
        })
        .collect();
    let mut e = ApiError::conflict(&kind.group, &kind.plural, name, "");
    e.message = format!(
        "Apply failed with {} conflict{}: {}",
        list.len(),
        if list.len() == 1 { "" } else { "s" },
        list.join("\n")
    );
    e.causes = conflicts
        .into_iter()
        .map(|c| atoll_api::Cause {
            reason: "FieldManagerConflict",
            message: format!("conflict with {:?} using {api_version}", c.manager),
            field: c.field,
        })
        .collect();
    e
}

/// POST pods/<name>/eviction: deletes the pod gracefully with the Eviction's delete options.
/// (PodDisruptionBudgets are not served yet, so nothing refuses an eviction.)
async fn evict(
    srv: &Server,
    t: &Target,
    q: &Query,
    headers: &HeaderMap,
    body: &Bytes,
) -> ApiResult<Response> {
    let eviction = negotiate::decode_body(headers, body)?;
    if eviction
        .get("kind")
        .and_then(Value::as_str)
        .is_some_and(|k| k != "Eviction")
    {
        return Err(ApiError::bad_request(
            "the body of an eviction must be a policy/v1 Eviction",
        ));
    }
    check_body_name(&eviction, t.name())?;
    let opts = DeleteOpts::from_body(eviction.get("deleteOptions"), q)?;
    srv.delete(
        &t.kind,
        t.namespace.as_deref().unwrap_or(""),
        t.name(),
        &opts,
    )
    .await?;
    let status = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
    Ok(negotiate::respond(201, &status, &Format::Json))
}

/// Where `kind`'s scale subresource finds the replicas (the built-in workloads' paths by default).
fn scale_paths(kind: &KindInfo) -> atoll_api::ScalePaths {
    kind.scale
        .clone()
        .unwrap_or_else(atoll_api::ScalePaths::builtin)
}

/// The `autoscaling/v1 Scale` view of an object, its replicas where `kind`'s scale paths say.
fn scale_of(kind: &KindInfo, obj: &Value) -> Value {
    let paths = scale_paths(kind);
    let selector = match (&paths.label_selector, obj.pointer("/spec/selector")) {
        (Some(path), _) => obj
            .pointer(path)
            .and_then(Value::as_str)
            .map(str::to_string),
        (None, selector) => builtin_selector(selector),
    };
    let mut status = json!({"replicas": obj.pointer(&paths.status_replicas).and_then(Value::as_i64).unwrap_or(0)});
    if let Some(s) = selector {
        status["selector"] = s.into();
    }
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": meta::name(obj),
            "namespace": meta::namespace(obj),
            "uid": meta::uid(obj),
            "resourceVersion": meta::resource_version(obj),
            "creationTimestamp": obj.pointer("/metadata/creationTimestamp").cloned().unwrap_or(Value::Null),
        },
        "spec": {"replicas": obj.pointer(&paths.spec_replicas).and_then(Value::as_i64).unwrap_or(1)},
        "status": status,
    })
}

/// The selector string of a built-in workload's `spec.selector` (a LabelSelector or a map).
fn builtin_selector(selector: Option<&Value>) -> Option<String> {
    match selector {
        Some(Value::Object(m))
            if m.contains_key("matchLabels") || m.contains_key("matchExpressions") =>
        {
            serde_json::from_value(Value::Object(m.clone()))
                .ok()
                .and_then(|s| LabelSelector::from_api(&s).ok())
                .map(|s| s.to_string())
        }
        Some(v @ Value::Object(_)) => {
            Some(LabelSelector::from_map(&meta::string_map(Some(v))).to_string())
        }
        _ => None,
    }
}

/// PUT or PATCH of `<resource>/scale`: `wanted` turns the current Scale into the desired one.
async fn scale_update(
    srv: &Server,
    t: &Target,
    q: &Query,
    wanted: impl Fn(&Value) -> ApiResult<Value> + Send + Sync + 'static,
) -> ApiResult<Response> {
    let kind = t.kind.clone();
    let name = t.name().to_string();
    let spec_path = scale_paths(&kind).spec_replicas;
    let scale_kind = kind.clone();
    let mutate = {
        move |old: &Value| -> ApiResult<Value> {
            let scale = wanted(&scale_of(&scale_kind, old))?;
            if scale
                .get("kind")
                .and_then(Value::as_str)
                .is_some_and(|k| k != "Scale")
            {
                return Err(ApiError::bad_request(
                    "the body of a scale request must be an autoscaling/v1 Scale",
                ));
            }
            check_body_name(&scale, meta::name(old))?;
            let replicas = scale
                .pointer("/spec/replicas")
                .and_then(Value::as_i64)
                .ok_or_else(|| {
                    ApiError::invalid(
                        "autoscaling",
                        "Scale",
                        meta::name(old),
                        vec![atoll_api::Cause::required("spec.replicas")],
                    )
                })?;
            if replicas < 0 {
                return Err(ApiError::invalid(
                    "autoscaling",
                    "Scale",
                    meta::name(old),
                    vec![atoll_api::Cause::invalid(
                        "spec.replicas",
                        replicas,
                        "must be greater than or equal to 0",
                    )],
                ));
            }
            let mut new = old.clone();
            set_pointer(&mut new, &spec_path, replicas.into());
            let rv = meta::resource_version(&scale);
            meta::set(
                &mut new,
                "resourceVersion",
                if rv.is_empty() { None } else { Some(rv.into()) },
            );
            Ok(new)
        }
    };
    let (code, obj) = srv
        .update(
            &kind,
            t.namespace.as_deref().unwrap_or(""),
            &name,
            UpdateMode::System,
            &mut WriteOpts::internal(q.dry_run),
            &mutate,
        )
        .await?;
    Ok(negotiate::respond(
        code,
        &scale_of(&kind, &obj),
        &Format::Json,
    ))
}

/// Sets the value at a JSON pointer, making the objects on the way.
fn set_pointer(obj: &mut Value, pointer: &str, value: Value) {
    let mut at = obj;
    let steps: Vec<String> = pointer
        .split('/')
        .skip(1)
        .map(|s| s.replace("~1", "/").replace("~0", "~"))
        .collect();
    for (i, step) in steps.iter().enumerate() {
        if !at.is_object() {
            *at = json!({});
        }
        let Some(map) = at.as_object_mut() else {
            return;
        };
        if i + 1 == steps.len() {
            map.insert(step.clone(), value);
            return;
        }
        at = map.entry(step.clone()).or_insert_with(|| json!({}));
    }
}
