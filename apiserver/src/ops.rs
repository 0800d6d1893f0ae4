//! The object lifecycle, written once for every kind: create, update (with its variants for status,
//! scale, binding and namespace finalization), and delete (graceful, with finalizers).

use std::borrow::Cow;
use std::collections::BTreeSet;

use atoll_api::validation::object_meta;
use atoll_api::{ApiError, ApiResult, Cause, KindInfo, Subresource, UpdateScope, meta};
use bytes::Bytes;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use rand::Rng;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::alloc;
use crate::object::splice_resource_version;
use crate::request::object_key;
use crate::server::Server;
use crate::storage::{Claims, Outcome, Write};

/// How many times a write retries when the object changed underneath it (no precondition given).
const MAX_RETRIES: usize = 16;

/// Which parts of an object an update may change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateMode {
    /// The main resource: everything but `status` (for kinds with a status subresource).
    Main,
    /// The status subresource: only `status`.
    Status,
    /// Namespace `finalize`: only `spec.finalizers`.
    Finalize,
    /// A server-internal change (scale): the mutation decides; update validation is skipped.
    System,
    /// A change the server makes to fields only it sets (binding a pod to its node): written as the
    /// mutation leaves the stored object, without decoding, defaulting, validation or a generation
    /// bump, as Kubernetes' binding writes straight to storage.
    Assign,
}

/// How a write treats input fields the kind does not declare (`?fieldValidation=`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum FieldValidation {
    /// Drop them silently.
    Ignore,
    /// Drop them and say so in `Warning` headers (Kubernetes' default).
    #[default]
    Warn,
    /// Refuse the write (400) naming each of them.
    Strict,
}

impl FieldValidation {
    /// Parses the query parameter (absent: Warn).
    pub fn parse(v: Option<&str>) -> ApiResult<Self> {
        match v {
            None | Some("") | Some("Warn") => Ok(FieldValidation::Warn),
            Some("Strict") => Ok(FieldValidation::Strict),
            Some("Ignore") => Ok(FieldValidation::Ignore),
            Some(other) => Err(ApiError::bad_request(format!(
                "fieldValidation: invalid value {other:?}: must be one of Ignore, Warn or Strict"
            ))),
        }
    }

    /// Applies the mode to the problems found: 400 for Strict, warnings for Warn.
    pub fn check(
        self,
        kind: &KindInfo,
        unknown: &[String],
        duplicates: &[String],
    ) -> ApiResult<Vec<String>> {
        let problems: Vec<String> = duplicates
            .iter()
            .map(|f| format!("duplicate field {f:?}"))
            .chain(unknown.iter().map(|f| format!("unknown field {f:?}")))
            .collect();
        match self {
            _ if problems.is_empty() => Ok(vec![]),
            FieldValidation::Ignore => Ok(vec![]),
            FieldValidation::Warn => Ok(problems),
            FieldValidation::Strict => Err(undecodable(
                kind,
                format!("strict decoding error: {}", problems.join(", ")),
            )),
        }
    }
}

/// Options of one create or update: dry run, field validation (the mode and the keys the body
/// repeats), and the warnings to send back.
#[derive(Debug, Clone, Default)]
pub struct WriteOpts {
    /// `dryRun=All`: check everything, write nothing.
    pub dry_run: bool,
    /// Field validation mode.
    pub mode: FieldValidation,
    /// Paths of keys the request body repeats.
    pub duplicates: Vec<String>,
    /// Warnings for the response (`Warning: 299 - "..."`).
    pub warnings: Vec<String>,
    /// The field manager the write's fields are recorded for ("": not recorded).
    pub manager: String,
    /// For a server-side apply: the applied configuration (the object's managedFields are set).
    pub applied: Option<Value>,
}

impl WriteOpts {
    /// A server-internal write: no field validation.
    pub fn internal(dry_run: bool) -> Self {
        WriteOpts {
            dry_run,
            mode: FieldValidation::Ignore,
            ..Default::default()
        }
    }
    fn apply(&mut self, kind: &KindInfo, unknown: &[String]) -> ApiResult<()> {
        self.warnings = self.mode.check(kind, unknown, &self.duplicates)?;
        Ok(())
    }
}

/// A created object, and its JSON as stored (resourceVersion included) when it was written.
pub struct Created {
    /// The object.
    pub obj: Value,
    /// Its JSON, ready to send (None for a dry run).
    pub json: Option<Bytes>,
}

/// Options of a delete (from the query and the DeleteOptions body).
#[derive(Debug, Clone, Default)]
pub struct DeleteOpts {
    /// `gracePeriodSeconds`.
    pub grace_period_seconds: Option<i64>,
    /// `preconditions.uid`.
    pub uid: Option<String>,
    /// `preconditions.resourceVersion`.
    pub resource_version: Option<String>,
    /// `propagationPolicy`: Orphan, Background or Foreground.
    pub propagation: Option<String>,
    /// `dryRun=All`.
    pub dry_run: bool,
}

impl DeleteOpts {
    /// Reads a DeleteOptions body (may be empty) merged with query options.
    pub fn from_body(body: Option<&Value>, query: &crate::request::Query) -> ApiResult<Self> {
        let mut o = DeleteOpts {
            grace_period_seconds: query.grace_period_seconds,
            propagation: query.propagation_policy.clone(),
            dry_run: query.dry_run,
            ..Default::default()
        };
        if query.orphan_dependents == Some(true) && o.propagation.is_none() {
            o.propagation = Some("Orphan".into());
        }
        if let Some(b) = body {
            if let Some(g) = b.get("gracePeriodSeconds").and_then(Value::as_i64) {
                o.grace_period_seconds = Some(g);
            }
            if let Some(p) = b.get("propagationPolicy").and_then(Value::as_str) {
                o.propagation = Some(p.to_string());
            }
            if b.get("orphanDependents").and_then(Value::as_bool) == Some(true)
                && o.propagation.is_none()
            {
                o.propagation = Some("Orphan".into());
            }
            if let Some(u) = b.pointer("/preconditions/uid").and_then(Value::as_str) {
                o.uid = Some(u.to_string());
            }
            if let Some(r) = b
                .pointer("/preconditions/resourceVersion")
                .and_then(Value::as_str)
            {
                o.resource_version = Some(r.to_string());
            }
            if b.get("dryRun")
                .and_then(Value::as_array)
                .is_some_and(|a| a.iter().any(|v| v == "All"))
            {
                o.dry_run = true;
            }
        }
        match o.propagation.as_deref() {
            None | Some("Orphan" | "Background" | "Foreground") => Ok(o),
            Some(p) => Err(ApiError::bad_request(format!(
                "DeleteOptions.propagationPolicy: Unsupported value: {p:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ))),
        }
    }
}

fn parse_rv(rv: &str) -> ApiResult<i64> {
    rv.parse::<i64>().ok().filter(|r| *r > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "invalid resourceVersion {rv:?}: must be a positive integer"
        ))
    })
}

fn with_rv(mut obj: Value, rev: i64) -> Value {
    meta::set(
        &mut obj,
        "resourceVersion",
        Some(Value::String(rev.to_string())),
    );
    obj
}

/// The bytes stored for an object: its JSON without resourceVersion (that is the etcd revision).
fn encode(obj: &Value) -> Vec<u8> {
    if obj.pointer("/metadata/resourceVersion").is_none() {
        return serde_json::to_vec(obj).unwrap_or_default();
    }
    let mut stored = obj.clone();
    meta::set(&mut stored, "resourceVersion", None);
    serde_json::to_vec(&stored).unwrap_or_default()
}

/// Checks that a body naming an object (an object, Scale, Binding or Eviction) names the one on the URL.
pub fn check_body_name(body: &Value, url_name: &str) -> ApiResult<()> {
    let body_name = meta::name(body);
    if !body_name.is_empty() && body_name != url_name {
        return Err(ApiError::bad_request(format!(
            "the name of the object ({body_name}) does not match the name on the URL ({url_name})"
        )));
    }
    Ok(())
}

/// Checks `apiVersion` and `kind` of a body against the URL's kind, filling them when absent.
pub fn check_type(kind: &KindInfo, obj: &mut Value) -> ApiResult<()> {
    let Value::Object(map) = obj else {
        return Err(ApiError::bad_request(format!(
            "the body must be a JSON object of kind {}",
            kind.kind
        )));
    };
    let want = kind.api_version();
    match map.get("apiVersion").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("apiVersion".into(), want.clone().into());
        }
        Some(v) if v == want => {}
        Some(v) => {
            return Err(ApiError::bad_request(format!(
                "the API version in the data ({v}) does not match the expected API version ({want})"
            )));
        }
    }
    match map.get("kind").and_then(Value::as_str) {
        None | Some("") => {
            map.insert("kind".into(), kind.kind.clone().into());
        }
        Some(k) if k == kind.kind => {}
        Some(k) => {
            return Err(ApiError::bad_request(format!(
                "the object provided is unrecognized (must be of type {}): kind {k:?} was sent to {}",
                kind.kind,
                kind.qualified()
            )));
        }
    }
    Ok(())
}

/// The 400 for a body that does not decode as the kind.
fn undecodable(kind: &KindInfo, e: String) -> ApiError {
    ApiError::bad_request(format!(
        "{} in version \"{}\" cannot be handled as a {}: {e}",
        kind.kind, kind.version, kind.kind
    ))
}

fn validate_meta(kind: &KindInfo, obj: &Value, out: &mut Vec<Cause>) {
    match obj.get("metadata").map(ObjectMeta::deserialize) {
        Some(Ok(m)) => object_meta(&m, kind.namespaced, kind.name_rule, out),
        Some(Err(e)) => out.push(Cause::invalid("metadata", "", e.to_string())),
        None => out.push(Cause::required("metadata.name")),
    }
}

/// 409: the object changed since the revision the request was based on.
fn modified(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::conflict(
        &kind.group,
        &kind.plural,
        name,
        "the object has been modified; please apply your changes to the latest version and try again",
    )
}

/// 409: the object kept changing underneath every retry.
fn too_busy(kind: &KindInfo, name: &str) -> ApiError {
    ApiError::conflict(
        &kind.group,
        &kind.plural,
        name,
        "too many concurrent changes; please try again",
    )
}

fn invalid(kind: &KindInfo, obj: &Value, causes: Vec<Cause>) -> ApiError {
    ApiError::invalid(&kind.group, &kind.kind, meta::name(obj), causes)
}

fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut rng = rand::rng();
    (0..5)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

fn is_services(kind: &KindInfo) -> bool {
    kind.group.is_empty() && kind.plural == "services"
}
fn is_pods(kind: &KindInfo) -> bool {
    kind.group.is_empty() && kind.plural == "pods"
}
fn is_namespaces(kind: &KindInfo) -> bool {
    kind.group.is_empty() && kind.plural == "namespaces"
}

/// Whether an object being deleted may now go: no finalizers left and no grace period pending.
fn ready_to_go(kind: &KindInfo, obj: &Value) -> bool {
    if !meta::is_deleting(obj) || !meta::finalizers(obj).is_empty() {
        return false;
    }
    let grace = obj
        .pointer("/metadata/deletionGracePeriodSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(0);
    let ns_finalizers = is_namespaces(kind)
        && obj
            .pointer("/spec/finalizers")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
    grace == 0 && !ns_finalizers
}

impl Server {
    /// Reads an object from etcd with its revision (404 when absent).
    pub async fn read(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
    ) -> ApiResult<(Value, i64)> {
        let key = object_key(kind, namespace, name);
        let kv = self
            .store
            .get(&key)
            .await?
            .ok_or_else(|| ApiError::not_found(&kind.group, &kind.plural, name))?;
        let obj: Value = serde_json::from_slice(&kv.value)
            .map_err(|e| ApiError::internal(format!("stored object {key} is not JSON: {e}")))?;
        Ok((with_rv(obj, kv.revision), kv.revision))
    }

    /// The watch cache's copy of the object at `key` and its revision, if it has one.
    fn cached(&self, kind: &KindInfo, key: &str) -> Option<(Value, i64)> {
        let obj = self.cache(kind).ok()?.get(key)?;
        Some((obj.value().ok()?, obj.revision))
    }

    /// Checks that a namespaced object may be created in `namespace`: it exists and is not terminating.
    /// Returns the namespace's key and revision, which the create then requires unchanged, so content
    /// never slips into a namespace that began terminating after this check. The watch cache answers
    /// unless `live`; a retry after such a race asks etcd.
    async fn check_namespace(&self, namespace: &str, live: bool) -> ApiResult<(String, i64)> {
        let ns_kind = self.namespaces_kind();
        let key = object_key(&ns_kind, "", namespace);
        let cached = if live {
            None
        } else {
            self.cache(&ns_kind)?.get(&key)
        };
        // Deleting a namespace always sets its phase to Terminating, so the phase alone tells.
        let (phase, revision) = match cached {
            Some(o) => (o.field(&ns_kind, "status.phase"), o.revision),
            // The cache may lag behind a namespace created a moment ago: ask etcd.
            None => match self.read(&ns_kind, "", namespace).await {
                Ok((o, revision)) => (
                    o.pointer("/status/phase")
                        .and_then(Value::as_str)
                        .unwrap_or("")
                        .to_string(),
                    revision,
                ),
                Err(e) if e.code == 404 => {
                    return Err(ApiError::not_found("", "namespaces", namespace));
                }
                Err(e) => return Err(e),
            },
        };
        if phase == "Terminating" {
            return Err(ApiError::forbidden(
                "",
                "namespaces",
                namespace,
                &format!(
                    "unable to create new content in namespace {namespace} because it is being terminated"
                ),
            ));
        }
        Ok((key, revision))
    }

    /// Allocation keys currently taken (to steer random picks away from them after a collision).
    async fn taken_allocations(&self) -> ApiResult<BTreeSet<String>> {
        let mut taken = BTreeSet::new();
        for prefix in alloc::PREFIXES {
            taken.extend(self.store.keys(prefix).await?);
        }
        Ok(taken)
    }

    /// Fills a Service's ClusterIP and node ports; returns the claims and releases for the write.
    fn allocate(
        &self,
        new: &mut Value,
        old: Option<&Value>,
        taken: &BTreeSet<String>,
        owner: &str,
    ) -> ApiResult<Claims> {
        let spec_of = |v: &Value| -> ApiResult<k8s_openapi::api::core::v1::ServiceSpec> {
            serde_json::from_value(v.get("spec").cloned().unwrap_or(json!({})))
                .map_err(|e| ApiError::bad_request(format!("spec: {e}")))
        };
        let mut spec = spec_of(new)?;
        let old_spec = old.map(spec_of).transpose()?;
        let mut causes = vec![];
        self.ranges.validate(&spec, &mut causes);
        if !causes.is_empty() {
            return Err(ApiError::invalid("", "Service", meta::name(new), causes));
        }
        self.ranges
            .assign(&mut spec, old_spec.as_ref(), taken)
            .map_err(|e| {
                ApiError::internal(format!("failed to allocate a serviceIP or nodePort: {e}"))
            })?;
        new["spec"] = serde_json::to_value(&spec).map_err(|e| ApiError::internal(e.to_string()))?;
        let before = alloc::held(old.and_then(|o| o.get("spec")));
        let after = alloc::held(new.get("spec"));
        Ok(alloc::claims(&before, &after, owner))
    }

    /// Creates an object from a request body; returns it as stored.
    pub async fn create(
        &self,
        kind: &KindInfo,
        namespace: Option<&str>,
        mut obj: Value,
        fields: &mut WriteOpts,
    ) -> ApiResult<Created> {
        let dry_run = fields.dry_run;
        check_type(kind, &mut obj)?;
        if kind.namespaced {
            let ns = namespace.unwrap_or("");
            match meta::namespace(&obj) {
                "" => meta::set(&mut obj, "namespace", Some(ns.into())),
                n if n == ns => {}
                _ => {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
            }
        } else {
            meta::set(&mut obj, "namespace", None);
        }
        let generate =
            meta::name(&obj).is_empty() && !meta::str_field(&obj, "generateName").is_empty();
        let m = meta::meta_mut(&mut obj);
        for f in [
            "resourceVersion",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "selfLink",
        ] {
            m.remove(f);
        }
        if fields.applied.is_none() {
            m.remove("managedFields");
        }
        m.insert("uid".into(), uuid::Uuid::new_v4().to_string().into());
        m.insert(
            "creationTimestamp".into(),
            meta::timestamp(self.now()).into(),
        );
        if kind.has_spec {
            m.insert("generation".into(), 1.into());
        } else {
            m.remove("generation");
        }
        if generate {
            let name = format!(
                "{}{}",
                meta::str_field(&obj, "generateName"),
                random_suffix()
            );
            meta::set(&mut obj, "name", Some(name.into()));
        }
        let decoded = kind
            .strategy
            .create(obj)
            .map_err(|e| undecodable(kind, e))?;
        fields.apply(kind, &decoded.unknown)?;
        let (mut obj, mut causes) = (decoded.obj, decoded.causes);
        validate_meta(kind, &obj, &mut causes);
        if !causes.is_empty() {
            return Err(invalid(kind, &obj, causes));
        }
        match &fields.applied {
            Some(config) => self.settle_applied(kind, &mut obj, config, &fields.manager, ""),
            None => self.record_fields(kind, None, &mut obj, "", fields),
        }
        let mut taken = BTreeSet::new();
        for attempt in 0..MAX_RETRIES {
            let key = object_key(kind, meta::namespace(&obj), meta::name(&obj));
            let (candidate, mut claims) = if is_services(kind) {
                let mut c = obj.clone();
                let owner = format!("{}/{}", meta::namespace(&obj), meta::name(&obj));
                let claims = self.allocate(&mut c, None, &taken, &owner)?;
                (Cow::Owned(c), claims)
            } else {
                (Cow::Borrowed(&obj), Claims::default())
            };
            if kind.namespaced {
                let guard = self
                    .check_namespace(meta::namespace(&obj), attempt > 0)
                    .await?;
                claims.unchanged.push(guard);
            }
            if dry_run {
                return Ok(Created {
                    obj: candidate.into_owned(),
                    json: None,
                });
            }
            let stored = Bytes::from(encode(&candidate));
            match self
                .store
                .write(&key, Write::Create(stored.clone()), &claims)
                .await?
            {
                Outcome::Done(rev) => {
                    let json = splice_resource_version(&stored, rev).map(Bytes::from);
                    return Ok(Created {
                        obj: with_rv(candidate.into_owned(), rev),
                        json,
                    });
                }
                Outcome::Exists(_) if generate && attempt + 1 < MAX_RETRIES => {
                    let name = format!(
                        "{}{}",
                        meta::str_field(&obj, "generateName"),
                        random_suffix()
                    );
                    meta::set(&mut obj, "name", Some(name.into()));
                }
                Outcome::Exists(_) => {
                    return Err(ApiError::already_exists(
                        &kind.group,
                        &kind.plural,
                        meta::name(&obj),
                    ));
                }
                Outcome::Taken(k, holder) => {
                    if alloc::held(obj.get("spec")).contains(&k) {
                        let cause = alloc::describe_taken(
                            &k,
                            candidate.get("spec").unwrap_or(&Value::Null),
                        );
                        let cause = Cause {
                            message: format!("{} (held by service {holder})", cause.message),
                            ..cause
                        };
                        return Err(invalid(kind, &obj, vec![cause]));
                    }
                    taken = self.taken_allocations().await?;
                }
                Outcome::Missing | Outcome::Changed(_) | Outcome::Raced => {}
            }
        }
        Err(too_busy(kind, meta::name(&obj)))
    }

    /// Updates an object: reads it, lets `mutate` produce the wanted state, then applies the rules of
    /// `mode`, validates and writes with the read revision as precondition. A resourceVersion in the
    /// wanted state is a precondition too (409 on mismatch); without one, a concurrent change is retried.
    /// Returns the HTTP code and the stored object.
    pub async fn update(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        mode: UpdateMode,
        fields: &mut WriteOpts,
        mutate: &(dyn Fn(&Value) -> ApiResult<Value> + Send + Sync),
    ) -> ApiResult<(u16, Value)> {
        let dry_run = fields.dry_run;
        let key = object_key(kind, namespace, name);
        let mut taken = BTreeSet::new();
        for attempt in 0..MAX_RETRIES {
            // An assignment starts from the watch cache's copy: the write's revision precondition
            // catches a stale one, and the retry reads etcd.
            let cached = match (mode, attempt) {
                (UpdateMode::Assign, 0) => self.cached(kind, &key),
                _ => None,
            };
            let (old, rev) = match cached {
                Some(c) => c,
                None => self.read(kind, namespace, name).await?,
            };
            let mut new = mutate(&old)?;
            check_type(kind, &mut new)?;
            let wanted_rv = meta::resource_version(&new).to_string();
            if !wanted_rv.is_empty() && parse_rv(&wanted_rv)? != rev {
                return Err(modified(kind, name));
            }
            let applied_fields = if fields.applied.is_some() {
                new.pointer("/metadata/managedFields").cloned()
            } else {
                None
            };
            let (mut new, unknown) = self.prepare_update(kind, namespace, name, mode, &old, new)?;
            let sub = match mode {
                UpdateMode::Status => "status",
                UpdateMode::Finalize => "finalize",
                _ => "",
            };
            if let Some(config) = &fields.applied {
                meta::set(&mut new, "managedFields", applied_fields);
                self.settle_applied(kind, &mut new, config, &fields.manager, sub);
            } else {
                self.record_fields(kind, Some(&old), &mut new, sub, fields);
            }
            fields.apply(kind, &unknown)?;
            // An assignment always changes the object (it refuses otherwise): no need to compare.
            if mode != UpdateMode::Assign && new == old {
                return Ok((200, old));
            }
            if ready_to_go(kind, &new) {
                return self
                    .remove(kind, &key, &new, rev, dry_run)
                    .await
                    .map(|o| (200, o));
            }
            let claims = if is_services(kind) {
                self.allocate(&mut new, Some(&old), &taken, &format!("{namespace}/{name}"))?
            } else {
                Claims::default()
            };
            if dry_run {
                return Ok((200, new));
            }
            match self
                .store
                .write(
                    &key,
                    Write::Update {
                        value: Bytes::from(encode(&new)),
                        revision: rev,
                    },
                    &claims,
                )
                .await?
            {
                Outcome::Done(r) => return Ok((200, with_rv(new, r))),
                Outcome::Missing => {
                    return Err(ApiError::not_found(&kind.group, &kind.plural, name));
                }
                Outcome::Taken(k, holder) => {
                    let requested = alloc::held(mutate(&old)?.get("spec"));
                    if requested.contains(&k) {
                        let cause =
                            alloc::describe_taken(&k, new.get("spec").unwrap_or(&Value::Null));
                        let cause = Cause {
                            message: format!("{} (held by service {holder})", cause.message),
                            ..cause
                        };
                        return Err(invalid(kind, &new, vec![cause]));
                    }
                    taken = self.taken_allocations().await?;
                }
                // Changed underneath: try again on a fresh read. A resourceVersion the request
                // itself asked for no longer matches then and fails the check above with 409; one a
                // patch merely inherited from the object it was applied to is the fresh one.
                Outcome::Changed(_) | Outcome::Exists(_) | Outcome::Raced => {}
            }
        }
        Err(too_busy(kind, name))
    }

    /// Sets an applier's owned fields as the stored object identifies them.
    fn settle_applied(
        &self,
        kind: &KindInfo,
        obj: &mut Value,
        config: &Value,
        manager: &str,
        subresource: &str,
    ) {
        let served = self.served();
        if let Some(root) = served.types.root_of(kind) {
            atoll_api::apply::settle_applied(
                &served.types,
                root,
                obj,
                config,
                manager,
                subresource,
            );
        }
    }

    /// Records the fields a write changed as owned by its field manager (`metadata.managedFields`).
    fn record_fields(
        &self,
        kind: &KindInfo,
        old: Option<&Value>,
        new: &mut Value,
        subresource: &str,
        opts: &WriteOpts,
    ) {
        if opts.manager.is_empty() {
            // Server-internal writes keep the ownership as it was (prepare_update copied it).
            return;
        }
        let served = self.served();
        let Some(root) = served.types.root_of(kind) else {
            return;
        };
        let time = meta::timestamp(self.now());
        let api_version = kind.api_version();
        let writer = atoll_api::apply::Writer {
            manager: &opts.manager,
            api_version: &api_version,
            subresource,
            time: &time,
        };
        atoll_api::apply::record_update(&served.types, root, old, new, &writer);
    }

    /// Applies the update rules of `mode` to a wanted state and validates it.
    fn prepare_update(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        mode: UpdateMode,
        old: &Value,
        new: Value,
    ) -> ApiResult<(Value, Vec<String>)> {
        let mut new = match mode {
            UpdateMode::Status => {
                let mut merged = old.clone();
                merged["status"] = new.get("status").cloned().unwrap_or(Value::Null);
                if merged["status"].is_null() {
                    merged.as_object_mut().map(|m| m.remove("status"));
                }
                merged
            }
            UpdateMode::Finalize => {
                let mut merged = old.clone();
                merged["spec"]["finalizers"] = new
                    .pointer("/spec/finalizers")
                    .cloned()
                    .unwrap_or(json!([]));
                merged
            }
            UpdateMode::Assign => new,
            UpdateMode::Main | UpdateMode::System => {
                check_body_name(&new, name)?;
                let body_ns = meta::namespace(&new);
                if kind.namespaced && !body_ns.is_empty() && body_ns != namespace {
                    return Err(ApiError::bad_request(
                        "the namespace of the provided object does not match the namespace sent on the request",
                    ));
                }
                let body_uid = meta::uid(&new);
                if !body_uid.is_empty() && body_uid != meta::uid(old) {
                    return Err(ApiError::conflict(
                        &kind.group,
                        &kind.plural,
                        name,
                        &format!(
                            "Precondition failed: UID in precondition: {}, UID in object meta: {body_uid}",
                            meta::uid(old)
                        ),
                    ));
                }
                let mut new = new;
                meta::set(&mut new, "name", Some(name.into()));
                if kind.namespaced {
                    meta::set(&mut new, "namespace", Some(namespace.into()));
                }
                if mode == UpdateMode::Main && kind.has(Subresource::Status) {
                    match old.get("status") {
                        Some(s) => new["status"] = s.clone(),
                        None => {
                            new.as_object_mut().map(|m| m.remove("status"));
                        }
                    }
                }
                new
            }
        };
        // System-owned metadata always comes from the stored object.
        let m = meta::meta_mut(&mut new);
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "resourceVersion",
            "managedFields",
        ] {
            match old.pointer(&format!("/metadata/{f}")) {
                Some(v) => m.insert(f.into(), v.clone()),
                None => m.remove(f),
            };
        }
        m.remove("selfLink");
        let scope = match mode {
            // Written as the mutation left it: nothing to decode, default or validate.
            UpdateMode::Assign => return Ok((new, vec![])),
            UpdateMode::Main | UpdateMode::Finalize => UpdateScope::Spec,
            UpdateMode::Status => UpdateScope::Status,
            UpdateMode::System => UpdateScope::System,
        };
        let decoded = kind
            .strategy
            .update(new, old, scope)
            .map_err(|e| undecodable(kind, e))?;
        let (mut new, mut causes, unknown) = (decoded.obj, decoded.causes, decoded.unknown);
        if kind.has_spec && new.get("spec") != old.get("spec") {
            let generation = old
                .pointer("/metadata/generation")
                .and_then(Value::as_i64)
                .unwrap_or(0)
                + 1;
            meta::set(&mut new, "generation", Some(generation.into()));
        }
        validate_meta(kind, &new, &mut causes);
        if meta::is_deleting(old) {
            let before: BTreeSet<String> = meta::finalizers(old).into_iter().collect();
            if meta::finalizers(&new).iter().any(|f| !before.contains(f)) {
                causes.push(Cause::forbidden(
                    "metadata.finalizers",
                    "no new finalizers can be added if the object is being deleted",
                ));
            }
        }
        if !causes.is_empty() {
            return Err(invalid(kind, &new, causes));
        }
        Ok((new, unknown))
    }

    /// Removes an object from etcd (with its allocations), precondition on `rev`.
    async fn remove(
        &self,
        kind: &KindInfo,
        key: &str,
        obj: &Value,
        rev: i64,
        dry_run: bool,
    ) -> ApiResult<Value> {
        let claims = if is_services(kind) {
            alloc::claims(&alloc::held(obj.get("spec")), &BTreeSet::new(), "")
        } else {
            Claims::default()
        };
        if dry_run {
            return Ok(obj.clone());
        }
        match self
            .store
            .write(key, Write::Delete { revision: rev }, &claims)
            .await?
        {
            Outcome::Done(r) => Ok(with_rv(obj.clone(), r)),
            Outcome::Missing => Err(ApiError::not_found(
                &kind.group,
                &kind.plural,
                meta::name(obj),
            )),
            _ => Err(modified(kind, meta::name(obj))),
        }
    }

    /// Deletes an object: at once, or by marking it (deletionTimestamp) while finalizers, a pod's grace
    /// period or a namespace's content are pending. Returns 200 with the removed object, or 202 with
    /// the marked one.
    pub async fn delete(
        &self,
        kind: &KindInfo,
        namespace: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> ApiResult<(u16, Value)> {
        let key = object_key(kind, namespace, name);
        for _ in 0..MAX_RETRIES {
            let (old, rev) = self.read(kind, namespace, name).await?;
            if let Some(uid) = &opts.uid
                && uid != meta::uid(&old)
            {
                return Err(ApiError::conflict(
                    &kind.group,
                    &kind.plural,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta::uid(&old)
                    ),
                ));
            }
            if let Some(rv) = &opts.resource_version
                && parse_rv(rv)? != rev
            {
                return Err(ApiError::conflict(
                    &kind.group,
                    &kind.plural,
                    name,
                    &format!(
                        "Precondition failed: ResourceVersion in precondition: {rv}, ResourceVersion in object meta: {rev}"
                    ),
                ));
            }
            let marked = self.mark_deleted(kind, &old, opts);
            let outcome = match marked {
                None => self
                    .remove(kind, &key, &old, rev, opts.dry_run)
                    .await
                    .map(|o| (200, o)),
                Some(new) if new == old => return Ok((202, old)),
                Some(new) if opts.dry_run => return Ok((202, new)),
                Some(new) => match self
                    .store
                    .write(
                        &key,
                        Write::Update {
                            value: Bytes::from(encode(&new)),
                            revision: rev,
                        },
                        &Claims::default(),
                    )
                    .await?
                {
                    Outcome::Done(r) => return Ok((202, with_rv(new, r))),
                    Outcome::Missing => {
                        return Err(ApiError::not_found(&kind.group, &kind.plural, name));
                    }
                    _ => continue,
                },
            };
            match outcome {
                Err(e) if e.code == 409 && opts.resource_version.is_none() => continue,
                other => return other,
            }
        }
        Err(too_busy(kind, name))
    }

    /// The object marked for deletion, or None when it can be removed at once.
    fn mark_deleted(&self, kind: &KindInfo, old: &Value, opts: &DeleteOpts) -> Option<Value> {
        let mut new = old.clone();
        let now = self.now();
        let mut finalizers = meta::finalizers(old);
        let mut grace = 0;
        if is_pods(kind) {
            let bound = old
                .pointer("/spec/nodeName")
                .and_then(Value::as_str)
                .is_some_and(|n| !n.is_empty());
            let phase = old
                .pointer("/status/phase")
                .and_then(Value::as_str)
                .unwrap_or("");
            let default = old
                .pointer("/spec/terminationGracePeriodSeconds")
                .and_then(Value::as_i64)
                .unwrap_or(30);
            grace = opts.grace_period_seconds.unwrap_or(default).max(0);
            if !bound || phase == "Succeeded" || phase == "Failed" {
                grace = 0;
            }
            // A pod already counting down keeps the shorter of the two periods.
            if let Some(current) = old
                .pointer("/metadata/deletionGracePeriodSeconds")
                .and_then(Value::as_i64)
            {
                grace = grace.min(current);
            }
        }
        let orphan_or_foreground = match opts.propagation.as_deref() {
            Some("Orphan") => Some("orphan"),
            Some("Foreground") => Some("foregroundDeletion"),
            _ => None,
        };
        if let Some(f) = orphan_or_foreground
            && !meta::is_deleting(old)
            && !finalizers.iter().any(|x| x == f)
        {
            finalizers.push(f.to_string());
        }
        let ns_pending = is_namespaces(kind)
            && old
                .pointer("/spec/finalizers")
                .and_then(Value::as_array)
                .is_some_and(|a| !a.is_empty());
        if finalizers.is_empty() && grace == 0 && !ns_pending {
            return None;
        }
        let m = meta::meta_mut(&mut new);
        let deadline = now.as_second() + grace;
        let keep_existing = m
            .get("deletionTimestamp")
            .and_then(Value::as_str)
            .and_then(|t| t.parse::<jiff::Timestamp>().ok())
            .is_some_and(|t| t.as_second() <= deadline);
        if !keep_existing {
            let ts = jiff::Timestamp::from_second(deadline).unwrap_or(now);
            m.insert("deletionTimestamp".into(), meta::timestamp(ts).into());
        }
        m.insert("deletionGracePeriodSeconds".into(), grace.into());
        if !finalizers.is_empty() {
            m.insert("finalizers".into(), finalizers.into());
        }
        if is_namespaces(kind) {
            new["status"]["phase"] = "Terminating".into();
        }
        Some(new)
    }
}
