//! A pod's volumes on the node, under `<root>/pods/<uid>/volumes/<plugin>/<name>`: emptyDir (a tmpfs
//! with `medium: Memory`), hostPath, and configMap, secret, downwardAPI and projected files (secret
//! and projected ones on a tmpfs; written atomically, and
//! rewritten in place when their sources change while the pod runs); the kubelet-managed
//! `/etc/hosts`; and each container's mounts of them (`mountPath`, `subPath`, `readOnly`).

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_cri::v1 as cri;
use k8s_openapi::api::core::v1::{Container, DownwardAPIVolumeFile, KeyToPath, Pod, Volume};

use super::atomic;
use super::env::{EnvContext, Sources, field_value};
use super::mounts;

/// The directory holding everything of a pod on this node.
pub fn pod_dir(root: &Path, uid: &str) -> PathBuf {
    root.join("pods").join(uid)
}

fn io_err(path: &Path, e: std::io::Error) -> String {
    format!("{}: {e}", path.display())
}

/// The files of a configMap/secret projection: all keys, or the listed `items` (a missing listed key
/// is an error unless the source is optional).
fn select(
    data: std::collections::BTreeMap<String, Vec<u8>>,
    items: Option<&Vec<KeyToPath>>,
    mode: u32,
) -> Result<Vec<(String, Vec<u8>, u32)>, String> {
    match items {
        None => Ok(data.into_iter().map(|(k, v)| (k, v, mode)).collect()),
        Some(items) => items
            .iter()
            .map(|i| {
                let bytes = data
                    .get(&i.key)
                    .cloned()
                    .ok_or_else(|| format!("key {:?} not found", i.key))?;
                Ok((i.path.clone(), bytes, i.mode.map_or(mode, |m| m as u32)))
            })
            .collect(),
    }
}

/// Sets up every volume of the pod; returns the host path of each by name, or a `FailedMount`
/// message. `tmpfs`: memory-backed volumes get their tmpfs (not on a hollow node, which mounts
/// nothing).
pub async fn prepare(
    root: &Path,
    pod: &Pod,
    sources: &Sources,
    env: &EnvContext<'_>,
    tmpfs: bool,
) -> Result<HashMap<String, PathBuf>, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let base = pod_dir(root, uid).join("volumes");
    let mut out = HashMap::new();
    for v in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = prepare_one(&base, pod, v, sources, env, tmpfs)
            .await
            .map_err(|e| format!("MountVolume.SetUp failed for volume {:?} : {e}", v.name))?;
        out.insert(v.name.clone(), path);
    }
    Ok(out)
}

async fn prepare_one(
    base: &Path,
    pod: &Pod,
    v: &Volume,
    sources: &Sources,
    env: &EnvContext<'_>,
    tmpfs: bool,
) -> Result<PathBuf, String> {
    if let Some(e) = &v.empty_dir {
        let dir = base.join("kubernetes.io~empty-dir").join(&v.name);
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        if tmpfs && e.medium.as_deref() == Some("Memory") {
            // As Kubernetes sizes it: the sizeLimit, else the node's allocatable memory.
            let size = e
                .size_limit
                .as_ref()
                .and_then(|q| super::spec::quantity(&q.0))
                .map_or(env.node_memory, |b| b as u64);
            mounts::tmpfs(&dir, size)?;
        }
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777))
            .map_err(|e| io_err(&dir, e))?;
        return Ok(dir);
    }
    if let Some(h) = &v.host_path {
        let path = PathBuf::from(&h.path);
        match h.type_.as_deref().unwrap_or("") {
            "DirectoryOrCreate" => std::fs::create_dir_all(&path).map_err(|e| io_err(&path, e))?,
            "FileOrCreate" if !path.exists() => {
                if let Some(p) = path.parent() {
                    std::fs::create_dir_all(p).map_err(|e| io_err(p, e))?;
                }
                std::fs::write(&path, b"").map_err(|e| io_err(&path, e))?;
            }
            "Directory" if !path.is_dir() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a directory",
                    h.path
                ));
            }
            "File" if !path.is_file() => {
                return Err(format!(
                    "hostPath type check failed: {} is not a file",
                    h.path
                ));
            }
            _ => {}
        }
        return Ok(path);
    }
    let (plugin, files) = match (&v.config_map, &v.secret, &v.downward_api, &v.projected) {
        (Some(cm), _, _, _) => {
            let mode = cm.default_mode.map_or(0o644, |m| m as u32);
            (
                "configmap",
                source_files(
                    "configmap",
                    &cm.name,
                    sources.config_map_files(&cm.name).await?,
                    cm.items.as_ref(),
                    cm.optional,
                    mode,
                )?,
            )
        }
        (_, Some(s), _, _) => {
            let mode = s.default_mode.map_or(0o644, |m| m as u32);
            let name = s.secret_name.clone().unwrap_or_default();
            (
                "secret",
                source_files(
                    "secret",
                    &name,
                    sources.secret_files(&name).await?,
                    s.items.as_ref(),
                    s.optional,
                    mode,
                )?,
            )
        }
        (_, _, Some(d), _) => {
            let mode = d.default_mode.map_or(0o644, |m| m as u32);
            (
                "downward-api",
                downward_files(pod, d.items.iter().flatten(), mode, env)?,
            )
        }
        (_, _, _, Some(p)) => {
            let mode = p.default_mode.map_or(0o644, |m| m as u32);
            let mut files = Vec::new();
            for source in p.sources.iter().flatten() {
                if let Some(cm) = &source.config_map {
                    files.extend(source_files(
                        "configmap",
                        &cm.name,
                        sources.config_map_files(&cm.name).await?,
                        cm.items.as_ref(),
                        cm.optional,
                        mode,
                    )?);
                }
                if let Some(s) = &source.secret {
                    files.extend(source_files(
                        "secret",
                        &s.name,
                        sources.secret_files(&s.name).await?,
                        s.items.as_ref(),
                        s.optional,
                        mode,
                    )?);
                }
                if let Some(d) = &source.downward_api {
                    files.extend(downward_files(pod, d.items.iter().flatten(), mode, env)?);
                }
                if source.service_account_token.is_some() {
                    return Err("serviceAccountToken projections are not supported yet (they come with service account tokens)".into());
                }
                if source.cluster_trust_bundle.is_some() {
                    return Err("clusterTrustBundle projections are not supported".into());
                }
            }
            ("projected", files)
        }
        _ => {
            return Err("volume type not supported by this kubelet (supported: emptyDir, hostPath, configMap, secret, downwardAPI, projected)".into());
        }
    };
    let dir = base.join(format!("kubernetes.io~{plugin}")).join(&v.name);
    if tmpfs && matches!(plugin, "secret" | "projected") {
        // As Kubernetes keeps them: in memory, never on the node's disk.
        std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
        mounts::tmpfs(&dir, env.node_memory)?;
    }
    atomic::write(&dir, &files)?;
    Ok(dir)
}

/// The files of a configMap or secret (`kind`) named `name`, from its `data` (None: it does not
/// exist, an error unless `optional`).
fn source_files(
    kind: &str,
    name: &str,
    data: Option<std::collections::BTreeMap<String, Vec<u8>>>,
    items: Option<&Vec<KeyToPath>>,
    optional: Option<bool>,
    mode: u32,
) -> Result<Vec<atomic::File>, String> {
    match data {
        Some(data) => select(data, items, mode),
        None if optional == Some(true) => Ok(vec![]),
        None => Err(format!("{kind} {name:?} not found")),
    }
}

fn downward_files<'a>(
    pod: &Pod,
    items: impl Iterator<Item = &'a DownwardAPIVolumeFile>,
    mode: u32,
    env: &EnvContext<'_>,
) -> Result<Vec<atomic::File>, String> {
    let mut files = Vec::new();
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_value(pod, &f.field_path, env)?,
            (None, Some(r)) => {
                let c = pod
                    .spec
                    .as_ref()
                    .and_then(|s| {
                        s.containers
                            .iter()
                            .find(|c| Some(&c.name) == r.container_name.as_ref())
                    })
                    .ok_or_else(|| {
                        format!(
                            "resourceFieldRef names unknown container {:?}",
                            r.container_name
                        )
                    })?;
                super::env::resource_value(
                    c,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    env,
                )?
            }
            _ => String::new(),
        };
        files.push((
            item.path.clone(),
            value.into_bytes(),
            item.mode.map_or(mode, |m| m as u32),
        ));
    }
    Ok(files)
}

/// The most bytes of a termination message, as Kubernetes keeps.
const MAX_MESSAGE: usize = 4096;
/// The log lines a FallbackToLogsOnError message keeps.
const FALLBACK_LINES: usize = 80;

fn termination_log_path(root: &Path, pod: &Pod, container: &str, attempt: u32) -> PathBuf {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    pod_dir(root, uid)
        .join("containers")
        .join(container)
        .join(format!("{attempt}-termination-log"))
}

/// An empty, writable file for the container's termination message, mounted at its
/// `terminationMessagePath` (None when the path is empty).
pub fn termination_log(
    root: &Path,
    pod: &Pod,
    c: &Container,
    attempt: u32,
) -> Result<Option<cri::Mount>, String> {
    let target = c
        .termination_message_path
        .clone()
        .unwrap_or_else(|| "/dev/termination-log".into());
    if target.is_empty() {
        return Ok(None);
    }
    let path = termination_log_path(root, pod, &c.name, attempt);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|e| io_err(parent, e))?;
    }
    std::fs::write(&path, b"").map_err(|e| io_err(&path, e))?;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666))
        .map_err(|e| io_err(&path, e))?;
    Ok(Some(cri::Mount {
        container_path: target,
        host_path: path.display().to_string(),
        ..Default::default()
    }))
}

/// The termination messages of the pod's exited containers, by runtime ID: the file the container
/// wrote (at most 4 KiB), or with `FallbackToLogsOnError` and a failure, the end of its log.
pub fn termination_messages(
    root: &Path,
    pod: &Pod,
    observed: &super::observe::Observed,
) -> HashMap<String, String> {
    let spec = pod.spec.clone().unwrap_or_default();
    let mut out = HashMap::new();
    for r in observed
        .containers
        .iter()
        .filter(|r| r.state == super::observe::State::Exited)
    {
        let c = spec
            .containers
            .iter()
            .chain(spec.init_containers.iter().flatten())
            .find(|c| c.name == r.name);
        let mut message =
            std::fs::read(termination_log_path(root, pod, &r.name, r.attempt)).unwrap_or_default();
        message.truncate(MAX_MESSAGE);
        let fallback = c.and_then(|c| c.termination_message_policy.as_deref())
            == Some("FallbackToLogsOnError");
        if message.is_empty() && fallback && r.exit_code != 0 {
            let log = super::spec::log_directory(&root.join("logs"), pod)
                .join(&r.name)
                .join(format!("{}.log", r.attempt));
            message = log_tail(&log);
        }
        if !message.is_empty() {
            out.insert(r.id.clone(), String::from_utf8_lossy(&message).into_owned());
        }
    }
    out
}

/// The last [`FALLBACK_LINES`] lines (at most 4 KiB) of a CRI log file, decoded.
fn log_tail(path: &Path) -> Vec<u8> {
    let Ok(text) = std::fs::read(path) else {
        return Vec::new();
    };
    let mut filter = crate::logs::Filter::new(crate::logs::Options::default());
    let mut out = Vec::new();
    for line in text.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let _ = filter.push(line, &mut out);
    }
    let lines: Vec<&[u8]> = out.split_inclusive(|b| *b == b'\n').collect();
    let mut tail: Vec<u8> = lines[lines.len().saturating_sub(FALLBACK_LINES)..].concat();
    if tail.len() > MAX_MESSAGE {
        tail.drain(..tail.len() - MAX_MESSAGE);
    }
    tail
}

/// Whether a volume's content comes from API objects (and is refreshed while the pod runs).
pub fn is_projected(v: &Volume) -> bool {
    v.config_map.is_some()
        || v.secret.is_some()
        || v.downward_api.is_some()
        || v.projected.is_some()
}

/// Writes the pod's `/etc/hosts` (localhost entries, the pod's own address and name, hostAliases)
/// and returns its path.
pub fn write_hosts(root: &Path, pod: &Pod, pod_ip: Option<&str>) -> Result<PathBuf, String> {
    let uid = pod.metadata.uid.as_deref().unwrap_or_default();
    let dir = pod_dir(root, uid);
    std::fs::create_dir_all(&dir).map_err(|e| io_err(&dir, e))?;
    let spec = pod.spec.clone().unwrap_or_default();
    let mut text = String::from(
        "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
    );
    if let Some(ip) = pod_ip {
        let hostname = spec
            .hostname
            .clone()
            .or_else(|| pod.metadata.name.clone())
            .unwrap_or_default();
        match (&spec.subdomain, &pod.metadata.namespace) {
            (Some(sub), Some(ns)) if !sub.is_empty() => text.push_str(&format!(
                "{ip}\t{hostname}.{sub}.{ns}.svc.cluster.local\t{hostname}\n"
            )),
            _ => text.push_str(&format!("{ip}\t{hostname}\n")),
        }
    }
    if let Some(aliases) = &spec.host_aliases {
        text.push_str("\n# Entries added by HostAliases.\n");
        for a in aliases {
            text.push_str(&format!(
                "{}\t{}\n",
                a.ip,
                a.hostnames.clone().unwrap_or_default().join("\t")
            ));
        }
    }
    let path = dir.join("etc-hosts");
    std::fs::write(&path, text).map_err(|e| io_err(&path, e))?;
    Ok(path)
}

/// The container's mounts of the pod's volumes (plus `/etc/hosts` when given).
pub fn mounts(
    c: &Container,
    volumes: &HashMap<String, PathBuf>,
    hosts: Option<&Path>,
) -> Result<Vec<cri::Mount>, String> {
    let mut out = Vec::new();
    for m in c.volume_mounts.iter().flatten() {
        let base = volumes.get(&m.name).ok_or_else(|| {
            format!(
                "volume {:?} mounted by container {:?} is not defined",
                m.name, c.name
            )
        })?;
        let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
            Some(sub) => {
                if sub.starts_with('/') || sub.split('/').any(|p| p == "..") {
                    return Err(format!(
                        "invalid subPath {sub:?}: must be a relative path without '..'"
                    ));
                }
                let p = base.join(sub);
                if !p.exists() {
                    std::fs::create_dir_all(&p).map_err(|e| io_err(&p, e))?;
                }
                p
            }
            None => base.clone(),
        };
        out.push(cri::Mount {
            container_path: m.mount_path.clone(),
            host_path: host_path.display().to_string(),
            readonly: m.read_only.unwrap_or(false),
            propagation: match m.mount_propagation.as_deref() {
                Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer,
                Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional,
                _ => cri::MountPropagation::PropagationPrivate,
            } as i32,
            ..Default::default()
        });
    }
    if let Some(hosts) = hosts
        && !out.iter().any(|m| m.container_path == "/etc/hosts")
    {
        out.push(cri::Mount {
            container_path: "/etc/hosts".into(),
            host_path: hosts.display().to_string(),
            ..Default::default()
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn hosts_file_names_the_pod() {
        let dir = tempfile::tempdir().unwrap();
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "web", "namespace": "ns", "uid": "u1"},
            "spec": {"containers": [], "hostAliases": [{"ip": "10.1.1.1", "hostnames": ["foo", "bar"]}]}})).unwrap();
        let path = write_hosts(dir.path(), &pod, Some("10.244.0.7")).unwrap();
        let text = std::fs::read_to_string(path).unwrap();
        assert!(text.contains("10.244.0.7\tweb\n"), "{text}");
        assert!(text.contains("10.1.1.1\tfoo\tbar\n"), "{text}");
    }

    #[test]
    fn mounts_with_sub_paths() {
        let dir = tempfile::tempdir().unwrap();
        let c: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [
            {"name": "data", "mountPath": "/data", "readOnly": true}, {"name": "data", "mountPath": "/logs", "subPath": "logs"}]})).unwrap();
        let vols = HashMap::from([("data".to_string(), dir.path().to_path_buf())]);
        let m = mounts(&c, &vols, Some(Path::new("/h"))).unwrap();
        assert_eq!(m.len(), 3);
        assert!(m[0].readonly);
        assert!(dir.path().join("logs").is_dir());
        assert_eq!(m[2].container_path, "/etc/hosts");
        let bad: Container = serde_json::from_value(json!({"name": "c", "volumeMounts": [{"name": "data", "mountPath": "/x", "subPath": "../etc"}]})).unwrap();
        assert!(mounts(&bad, &vols, None).is_err());
        let missing: Container = serde_json::from_value(
            json!({"name": "c", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}),
        )
        .unwrap();
        assert!(
            mounts(&missing, &vols, None)
                .unwrap_err()
                .contains("not defined")
        );
    }

    #[test]
    fn log_tail_decodes_the_end_of_a_cri_log() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("0.log");
        let mut text = String::new();
        for i in 0..100 {
            text.push_str(&format!(
                "2024-01-02T03:04:05.000000001Z stderr F line {i}\n"
            ));
        }
        text.push_str("2024-01-02T03:04:06Z stdout P part\n2024-01-02T03:04:06Z stdout F ial\n");
        std::fs::write(&path, text).unwrap();
        let tail = String::from_utf8(log_tail(&path)).unwrap();
        assert_eq!(tail.lines().count(), FALLBACK_LINES);
        assert!(
            tail.starts_with("line 21\n") && tail.ends_with("line 99\npartial\n"),
            "{tail}"
        );
    }

    #[test]
    fn selected_items() {
        let data = std::collections::BTreeMap::from([
            ("a".to_string(), b"1".to_vec()),
            ("b".to_string(), b"2".to_vec()),
        ]);
        let items = vec![KeyToPath {
            key: "b".into(),
            path: "sub/b.txt".into(),
            mode: Some(0o600),
        }];
        let files = select(data.clone(), Some(&items), 0o644).unwrap();
        assert_eq!(files, vec![("sub/b.txt".to_string(), b"2".to_vec(), 0o600)]);
        assert_eq!(select(data, None, 0o644).unwrap().len(), 2);
    }
}
