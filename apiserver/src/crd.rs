//! The CustomResourceDefinition controller inside the API server (Kubernetes' apiextensions naming,
//! establishing and finalizer controllers in one level-triggered loop): after every change to a CRD it
//! decides which CRDs' names are accepted (first come, first served; never a built-in resource's),
//! serves their kinds, writes each CRD's status (`NamesAccepted`, `Established`, `acceptedNames`,
//! `storedVersions`), and for a deleted CRD deletes its custom resources, then drops its
//! `customresourcecleanup.apiextensions.k8s.io` finalizer so the CRD goes.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use atoll_api::kinds::{CLEANUP_FINALIZER, custom_kind};
use atoll_api::{ApiResult, KindInfo, meta};
use serde_json::{Value, json};

use crate::object::Filter;
use crate::ops::{DeleteOpts, UpdateMode, WriteOpts};
use crate::server::Server;

/// How soon a CRD whose instances are still going (finalizers, grace periods) is looked at again.
const CLEANUP_RETRY: Duration = Duration::from_millis(500);

/// The CRD kind.
fn crd_kind(srv: &Server) -> Option<Arc<KindInfo>> {
    srv.served()
        .registry
        .get("apiextensions.k8s.io", "v1", "customresourcedefinitions")
        .cloned()
}

/// Follows the CRDs until the server stops: a sync after every change (and again while a deleted
/// CRD's instances are still going).
pub async fn run(srv: Arc<Server>) {
    let Some(kind) = crd_kind(&srv) else { return };
    let mut stopping = srv.stopping();
    loop {
        let mut sub = match srv
            .cache(&kind)
            .and_then(|c| c.subscribe(&Filter::default(), None))
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("CRD controller: {}", e.message);
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        loop {
            let again = match sync(&srv).await {
                Ok(again) => again,
                Err(e) => {
                    tracing::warn!("CRD controller: {}", e.message);
                    true
                }
            };
            let wait = if again {
                CLEANUP_RETRY
            } else {
                Duration::from_secs(3600)
            };
            tokio::select! {
                r = sub.live.recv() => match r {
                    Ok(_) => {
                        // Take every change queued meanwhile in one sync.
                        while sub.live.try_recv().is_ok() {}
                    }
                    // Lagged or closed: subscribe again (a sync follows).
                    Err(_) => break,
                },
                _ = tokio::time::sleep(wait) => {}
                _ = stopping.wait_for(|s| *s) => return,
            }
        }
    }
}

/// One pass over every CRD. Returns whether a deleted CRD still has instances (look again soon).
pub async fn sync(srv: &Server) -> ApiResult<bool> {
    let Some(kind) = crd_kind(srv) else {
        return Ok(false);
    };
    let mut crds: Vec<Value> = srv
        .cache(&kind)?
        .list(&Filter::default())
        .0
        .iter()
        .filter_map(|o| o.value().ok())
        .collect();
    crds.sort_by(|a, b| {
        let created = |v: &Value| meta::str_field(v, "creationTimestamp").to_string();
        created(a)
            .cmp(&created(b))
            .then_with(|| meta::name(a).cmp(meta::name(b)))
    });
    let builtin = atoll_api::kinds::builtin();
    let mut taken: BTreeSet<String> = builtin.kinds().iter().map(|k| k.qualified()).collect();
    let mut served = vec![];
    // What the served kinds were made from: unchanged, nothing is rebuilt.
    let mut sources = vec![];
    let mut verdicts = vec![];
    for crd in &crds {
        let verdict = match custom_kind(crd) {
            None => Err("no version is both served and stored".to_string()),
            Some(k) if taken.contains(&k.qualified()) => {
                Err(format!("\"{}\" is already in use", k.plural))
            }
            Some(k) => {
                taken.insert(k.qualified());
                served.push(k);
                sources.push(crd.get("spec").cloned().unwrap_or(Value::Null));
                Ok(())
            }
        };
        verdicts.push(verdict);
    }
    srv.serve_kinds(served, Value::Array(sources)).await?;
    let mut again = false;
    for (crd, verdict) in crds.iter().zip(verdicts) {
        set_status(srv, &kind, crd, &verdict).await;
        if meta::is_deleting(crd) && meta::finalizers(crd).iter().any(|f| f == CLEANUP_FINALIZER) {
            again |= !clean_up(srv, &kind, crd).await?;
        }
    }
    Ok(again)
}

/// Writes the CRD's status when it differs from what it should say.
async fn set_status(srv: &Server, kind: &KindInfo, crd: &Value, verdict: &Result<(), String>) {
    let now = meta::timestamp(srv.now());
    let old = crd.get("status").cloned().unwrap_or(Value::Null);
    let condition = |type_: &str, ok: bool, reason: &str, message: &str| {
        // Keep the transition time when the status did not change.
        let status = if ok { "True" } else { "False" };
        let since = old["conditions"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|c| c["type"] == type_ && c["status"] == status)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(|| now.clone().into());
        json!({"type": type_, "status": status, "reason": reason, "message": message,
               "lastTransitionTime": since})
    };
    let mut conditions = match verdict {
        Ok(()) => vec![
            condition("NamesAccepted", true, "NoConflicts", "no conflicts found"),
            condition(
                "Established",
                true,
                "InitialNamesAccepted",
                "the initial names have been accepted",
            ),
        ],
        Err(why) => vec![
            condition("NamesAccepted", false, "MultipleNamesConflict", why),
            condition(
                "Established",
                false,
                "NotAccepted",
                "not all names are accepted",
            ),
        ],
    };
    if meta::is_deleting(crd) {
        conditions.push(condition(
            "Terminating",
            true,
            "InstanceDeletionInProgress",
            "CustomResource deletion is in progress",
        ));
    }
    let mut stored: Vec<Value> = old["storedVersions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if let Some(v) = crd
        .pointer("/spec/versions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|v| v["storage"] == true)
        .and_then(|v| v.get("name"))
        && !stored.contains(v)
    {
        stored.push(v.clone());
    }
    let accepted = if verdict.is_ok() {
        crd.pointer("/spec/names").cloned().unwrap_or(Value::Null)
    } else {
        old.get("acceptedNames")
            .cloned()
            .unwrap_or(json!({"kind": "", "plural": ""}))
    };
    let status =
        json!({"conditions": conditions, "acceptedNames": accepted, "storedVersions": stored});
    if status == old {
        return;
    }
    let result = write_as_seen(srv, kind, crd, UpdateMode::Status, |new| {
        new["status"] = status.clone();
    })
    .await;
    if let Err(e) = result
        && e.code != 409
        && e.code != 404
    {
        tracing::warn!(crd = meta::name(crd), "writing CRD status: {}", e.message);
    }
}

/// Deletes a deleted CRD's custom resources; once none is left, removes its cleanup finalizer.
/// Returns whether it is done.
async fn clean_up(srv: &Server, kind: &KindInfo, crd: &Value) -> ApiResult<bool> {
    if let Some(custom) = custom_kind(crd) {
        let instances = srv
            .cache(&custom)
            .map(|c| c.list(&Filter::default()).0)
            .unwrap_or_default();
        if !instances.is_empty() {
            for o in &instances {
                match srv
                    .delete(&custom, &o.namespace, &o.name, &DeleteOpts::default())
                    .await
                {
                    Ok(_) => {}
                    Err(e) if e.code == 404 || e.code == 409 => {}
                    Err(e) => return Err(e),
                }
            }
            return Ok(false);
        }
    }
    let result = write_as_seen(srv, kind, crd, UpdateMode::Main, |new| {
        let left: Vec<Value> = meta::finalizers(new)
            .into_iter()
            .filter(|f| f != CLEANUP_FINALIZER)
            .map(Value::from)
            .collect();
        meta::set(new, "finalizers", (!left.is_empty()).then(|| left.into()));
    })
    .await;
    match result {
        Ok(_) => Ok(true),
        Err(e) if e.code == 404 => Ok(true),
        Err(e) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes `change` to the CRD as this pass saw it (its resourceVersion is the precondition, so a newer
/// CRD is left to its own pass: 409).
async fn write_as_seen(
    srv: &Server,
    kind: &KindInfo,
    crd: &Value,
    mode: UpdateMode,
    change: impl Fn(&mut Value) + Send + Sync,
) -> ApiResult<(u16, Value)> {
    let revision = meta::resource_version(crd).to_string();
    srv.update(
        kind,
        "",
        meta::name(crd),
        mode,
        &mut WriteOpts::internal(false),
        &|current: &Value| {
            let mut new = current.clone();
            meta::set(&mut new, "resourceVersion", Some(revision.clone().into()));
            change(&mut new);
            Ok(new)
        },
    )
    .await
}
