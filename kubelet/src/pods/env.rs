//! A container's environment as Kubernetes builds it: `envFrom` sources first (ConfigMaps and Secrets,
//! with their prefix), then `env` in order, each value expanded against what came before; values from
//! `fieldRef`, `resourceFieldRef`, `configMapKeyRef` and `secretKeyRef`. A missing source that is not
//! optional is a `CreateContainerConfigError` whose message says what is missing.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Container, Pod, Secret, Service};
use kube::Api;

use super::spec::{expand, quantity};

/// What the environment may refer to beyond the pod object itself.
pub struct EnvContext<'a> {
    /// The node's address (`status.hostIP`).
    pub host_ip: &'a str,
    /// The pod's addresses (`status.podIP`, `status.podIPs`).
    pub pod_ips: &'a [String],
    /// The node's allocatable cpu and memory, for `resourceFieldRef` of a container without limits.
    pub node_cpu: f64,
    /// The node's allocatable memory in bytes.
    pub node_memory: u64,
}

/// ConfigMaps and Secrets of the pod's namespace, fetched once per sync.
pub struct Sources {
    client: kube::Client,
    namespace: String,
    config_maps: HashMap<String, Option<BTreeMap<String, String>>>,
    secrets: HashMap<String, Option<BTreeMap<String, String>>>,
    services: Option<Vec<(String, String)>>,
}

impl Sources {
    /// Sources in `namespace`.
    pub fn new(client: kube::Client, namespace: &str) -> Sources {
        Sources {
            client,
            namespace: namespace.into(),
            config_maps: HashMap::new(),
            secrets: HashMap::new(),
            services: None,
        }
    }

    /// The service variables of the namespace (see [`service_variables`]).
    pub async fn service_variables(&mut self) -> Result<Vec<(String, String)>, String> {
        if self.services.is_none() {
            let api: Api<Service> = Api::namespaced(self.client.clone(), &self.namespace);
            let list = api
                .list(&Default::default())
                .await
                .map_err(|e| format!("listing services: {e}"))?;
            let mut items = list.items;
            items.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
            self.services = Some(service_variables(&items));
        }
        Ok(self.services.clone().unwrap_or_default())
    }

    /// A ConfigMap's data (binary data as lossy UTF-8), None when it does not exist.
    pub async fn config_map(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, String> {
        if !self.config_maps.contains_key(name) {
            let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
            let cm = api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading configmap {name:?}: {e}"))?;
            let data = cm.map(|cm| {
                let mut data = cm.data.unwrap_or_default();
                for (k, v) in cm.binary_data.unwrap_or_default() {
                    data.insert(k, String::from_utf8_lossy(&v.0).into_owned());
                }
                data
            });
            self.config_maps.insert(name.into(), data);
        }
        Ok(self.config_maps.get(name).and_then(Option::as_ref))
    }

    /// A Secret's data decoded, None when it does not exist.
    pub async fn secret(
        &mut self,
        name: &str,
    ) -> Result<Option<&BTreeMap<String, String>>, String> {
        if !self.secrets.contains_key(name) {
            let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
            let s = api
                .get_opt(name)
                .await
                .map_err(|e| format!("reading secret {name:?}: {e}"))?;
            let data = s.map(|s| {
                let mut data: BTreeMap<String, String> = s
                    .data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, String::from_utf8_lossy(&v.0).into_owned()))
                    .collect();
                data.extend(s.string_data.unwrap_or_default());
                data
            });
            self.secrets.insert(name.into(), data);
        }
        Ok(self.secrets.get(name).and_then(Option::as_ref))
    }

    /// The raw bytes of every key of a ConfigMap (for volumes), None when it does not exist.
    pub async fn config_map_files(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<ConfigMap> = Api::namespaced(self.client.clone(), &self.namespace);
        let cm = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading configmap {name:?}: {e}"))?;
        Ok(cm.map(|cm| {
            let mut files: BTreeMap<String, Vec<u8>> = cm
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            files.extend(
                cm.binary_data
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, v.0)),
            );
            files
        }))
    }

    /// The raw bytes of every key of a Secret (for volumes), None when it does not exist.
    pub async fn secret_files(
        &self,
        name: &str,
    ) -> Result<Option<BTreeMap<String, Vec<u8>>>, String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &self.namespace);
        let s = api
            .get_opt(name)
            .await
            .map_err(|e| format!("reading secret {name:?}: {e}"))?;
        Ok(s.map(|s| {
            s.data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect()
        }))
    }
}

/// The Docker-link style variables Kubernetes gives every container for each service of its
/// namespace (`enableServiceLinks`, default true): `<NAME>_SERVICE_HOST`, `<NAME>_SERVICE_PORT`,
/// `<NAME>_SERVICE_PORT_<PORTNAME>`, `<NAME>_PORT`, `<NAME>_PORT_<port>_<PROTO>[_PROTO|_PORT|_ADDR]`.
pub fn service_variables(services: &[Service]) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for svc in services {
        let Some(spec) = &svc.spec else { continue };
        let Some(ip) = spec
            .cluster_ip
            .as_deref()
            .filter(|ip| !ip.is_empty() && *ip != "None")
        else {
            continue;
        };
        let name = svc
            .metadata
            .name
            .as_deref()
            .unwrap_or_default()
            .to_uppercase()
            .replace('-', "_");
        let ports = spec.ports.clone().unwrap_or_default();
        let Some(first) = ports.first() else { continue };
        out.push((format!("{name}_SERVICE_HOST"), ip.to_string()));
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        for p in &ports {
            if let Some(port_name) = p.name.as_deref().filter(|n| !n.is_empty()) {
                out.push((
                    format!(
                        "{name}_SERVICE_PORT_{}",
                        port_name.to_uppercase().replace('-', "_")
                    ),
                    p.port.to_string(),
                ));
            }
        }
        let proto = |p: &k8s_openapi::api::core::v1::ServicePort| {
            p.protocol.clone().unwrap_or_else(|| "TCP".into())
        };
        out.push((
            format!("{name}_PORT"),
            format!("{}://{ip}:{}", proto(first).to_lowercase(), first.port),
        ));
        for p in &ports {
            let prefix = format!("{name}_PORT_{}_{}", p.port, proto(p).to_uppercase());
            out.push((
                prefix.clone(),
                format!("{}://{ip}:{}", proto(p).to_lowercase(), p.port),
            ));
            out.push((format!("{prefix}_PROTO"), proto(p).to_lowercase()));
            out.push((format!("{prefix}_PORT"), p.port.to_string()));
            out.push((format!("{prefix}_ADDR"), ip.to_string()));
        }
    }
    out
}

/// The value of a `fieldRef` path on the pod, or an error naming the unsupported path.
pub fn field_value(pod: &Pod, path: &str, ctx: &EnvContext) -> Result<String, String> {
    let m = &pod.metadata;
    let spec = pod.spec.as_ref();
    let map_key = |prefix: &str| {
        path.strip_prefix(prefix)
            .and_then(|r| r.strip_prefix("['").or_else(|| r.strip_prefix("[\"")))
            .and_then(|r| r.strip_suffix("']").or_else(|| r.strip_suffix("\"]")))
            .map(str::to_string)
    };
    Ok(match path {
        "metadata.name" => m.name.clone().unwrap_or_default(),
        "metadata.namespace" => m.namespace.clone().unwrap_or_default(),
        "metadata.uid" => m.uid.clone().unwrap_or_default(),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        "spec.serviceAccountName" => spec
            .and_then(|s| s.service_account_name.clone())
            .unwrap_or_default(),
        "status.hostIP" => ctx.host_ip.into(),
        "status.hostIPs" => ctx.host_ip.into(),
        "status.podIP" => ctx.pod_ips.first().cloned().unwrap_or_default(),
        "status.podIPs" => ctx.pod_ips.join(","),
        _ => {
            if let Some(k) = map_key("metadata.labels") {
                m.labels
                    .as_ref()
                    .and_then(|l| l.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else if let Some(k) = map_key("metadata.annotations") {
                m.annotations
                    .as_ref()
                    .and_then(|a| a.get(&k))
                    .cloned()
                    .unwrap_or_default()
            } else {
                return Err(format!("unsupported fieldRef path {path:?}"));
            }
        }
    })
}

/// The value of a `resourceFieldRef` (`limits.cpu`, `requests.memory`, …) for `c`, divided by `divisor`
/// and rounded up; limits default to the node's allocatable, as Kubernetes does.
pub fn resource_value(
    c: &Container,
    resource: &str,
    divisor: Option<&str>,
    ctx: &EnvContext,
) -> Result<String, String> {
    let r = c.resources.clone().unwrap_or_default();
    let get =
        |m: &Option<BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>>,
         k: &str| {
            m.as_ref()
                .and_then(|m| m.get(k))
                .and_then(|q| quantity(&q.0))
        };
    let value = match resource {
        "limits.cpu" => get(&r.limits, "cpu").unwrap_or(ctx.node_cpu),
        "limits.memory" => get(&r.limits, "memory").unwrap_or(ctx.node_memory as f64),
        "requests.cpu" => get(&r.requests, "cpu").unwrap_or(0.0),
        "requests.memory" => get(&r.requests, "memory").unwrap_or(0.0),
        "limits.ephemeral-storage" => get(&r.limits, "ephemeral-storage").unwrap_or(0.0),
        "requests.ephemeral-storage" => get(&r.requests, "ephemeral-storage").unwrap_or(0.0),
        other => return Err(format!("unsupported resourceFieldRef resource {other:?}")),
    };
    let divisor = divisor
        .and_then(quantity)
        .filter(|d| *d > 0.0)
        .unwrap_or(1.0);
    Ok(format!("{}", (value / divisor).ceil() as i64))
}

/// The container's environment in order, or the `CreateContainerConfigError` message.
pub async fn resolve(
    pod: &Pod,
    c: &Container,
    ctx: &EnvContext<'_>,
    sources: &mut Sources,
) -> Result<Vec<(String, String)>, String> {
    let mut out: Vec<(String, String)> = Vec::new();
    let set = |out: &mut Vec<(String, String)>, k: String, v: String| {
        if let Some(e) = out.iter_mut().find(|(name, _)| *name == k) {
            e.1 = v;
        } else {
            out.push((k, v));
        }
    };
    // Service variables first: explicit env and envFrom override them.
    if pod.spec.as_ref().and_then(|s| s.enable_service_links) != Some(false) {
        out.extend(sources.service_variables().await?);
    }
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.config_map_ref {
            match sources.config_map(&r.name).await? {
                Some(data) => {
                    for (k, v) in data.clone() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("configmap {:?} not found", r.name)),
            }
        }
        if let Some(r) = &from.secret_ref {
            match sources.secret(&r.name).await? {
                Some(data) => {
                    for (k, v) in data.clone() {
                        set(&mut out, format!("{prefix}{k}"), v);
                    }
                }
                None if r.optional == Some(true) => {}
                None => return Err(format!("secret {:?} not found", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        let known: HashMap<String, String> = out.iter().cloned().collect();
        let value = if let Some(v) = &e.value {
            expand(v, &known)
        } else if let Some(from) = &e.value_from {
            if let Some(f) = &from.field_ref {
                field_value(pod, &f.field_path, ctx)?
            } else if let Some(r) = &from.resource_field_ref {
                let target = match r.container_name.as_deref() {
                    Some(name) if !name.is_empty() && name != c.name => pod
                        .spec
                        .as_ref()
                        .and_then(|s| s.containers.iter().find(|x| x.name == name))
                        .ok_or_else(|| {
                            format!("resourceFieldRef names unknown container {name:?}")
                        })?,
                    _ => c,
                };
                resource_value(
                    target,
                    &r.resource,
                    r.divisor.as_ref().map(|d| d.0.as_str()),
                    ctx,
                )?
            } else if let Some(r) = &from.config_map_key_ref {
                match sources.config_map(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in ConfigMap {}/{}",
                                r.key, sources.namespace, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("configmap {:?} not found", r.name)),
                }
            } else if let Some(r) = &from.secret_key_ref {
                match sources.secret(&r.name).await? {
                    Some(data) => match data.get(&r.key) {
                        Some(v) => v.clone(),
                        None if r.optional == Some(true) => continue,
                        None => {
                            return Err(format!(
                                "couldn't find key {} in Secret {}/{}",
                                r.key, sources.namespace, r.name
                            ));
                        }
                    },
                    None if r.optional == Some(true) => continue,
                    None => return Err(format!("secret {:?} not found", r.name)),
                }
            } else {
                String::new()
            }
        } else {
            String::new()
        };
        set(&mut out, e.name.clone(), value);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> EnvContext<'static> {
        static IPS: [String; 0] = [];
        EnvContext {
            host_ip: "10.0.0.1",
            pod_ips: &IPS,
            node_cpu: 2.0,
            node_memory: 1 << 30,
        }
    }

    #[test]
    fn field_refs() {
        let pod: Pod = serde_json::from_value(json!({"metadata": {"name": "p", "namespace": "ns", "uid": "u",
            "labels": {"app": "web"}, "annotations": {"a.b/c": "d"}}, "spec": {"nodeName": "n1", "containers": []}})).unwrap();
        assert_eq!(field_value(&pod, "metadata.name", &ctx()).unwrap(), "p");
        assert_eq!(field_value(&pod, "spec.nodeName", &ctx()).unwrap(), "n1");
        assert_eq!(
            field_value(&pod, "metadata.labels['app']", &ctx()).unwrap(),
            "web"
        );
        assert_eq!(
            field_value(&pod, "metadata.annotations['a.b/c']", &ctx()).unwrap(),
            "d"
        );
        assert_eq!(
            field_value(&pod, "status.hostIP", &ctx()).unwrap(),
            "10.0.0.1"
        );
        assert!(field_value(&pod, "spec.bogus", &ctx()).is_err());
    }

    #[test]
    fn service_links() {
        let svc: Service = serde_json::from_value(
            json!({"metadata": {"name": "web-one"}, "spec": {"clusterIP": "10.96.0.11",
            "ports": [{"name": "http", "port": 80}, {"port": 53, "protocol": "UDP"}]}}),
        )
        .unwrap();
        let headless: Service = serde_json::from_value(json!({"metadata": {"name": "h"}, "spec": {"clusterIP": "None", "ports": [{"port": 1}]}})).unwrap();
        let vars: HashMap<String, String> =
            service_variables(&[svc, headless]).into_iter().collect();
        assert_eq!(vars["WEB_ONE_SERVICE_HOST"], "10.96.0.11");
        assert_eq!(vars["WEB_ONE_SERVICE_PORT"], "80");
        assert_eq!(vars["WEB_ONE_SERVICE_PORT_HTTP"], "80");
        assert_eq!(vars["WEB_ONE_PORT"], "tcp://10.96.0.11:80");
        assert_eq!(vars["WEB_ONE_PORT_53_UDP"], "udp://10.96.0.11:53");
        assert_eq!(vars["WEB_ONE_PORT_53_UDP_PROTO"], "udp");
        assert_eq!(vars["WEB_ONE_PORT_80_TCP_ADDR"], "10.96.0.11");
        assert!(
            !vars.keys().any(|k| k.starts_with("H_")),
            "headless services give none"
        );
    }

    #[test]
    fn resource_refs() {
        let c: Container = serde_json::from_value(json!({"name": "c", "resources": {"limits": {"memory": "64Mi"}, "requests": {"cpu": "250m"}}})).unwrap();
        assert_eq!(
            resource_value(&c, "limits.memory", Some("1Mi"), &ctx()).unwrap(),
            "64"
        );
        assert_eq!(
            resource_value(&c, "requests.cpu", Some("1m"), &ctx()).unwrap(),
            "250"
        );
        assert_eq!(
            resource_value(&c, "requests.cpu", None, &ctx()).unwrap(),
            "1"
        );
        assert_eq!(resource_value(&c, "limits.cpu", None, &ctx()).unwrap(), "2");
    }
}
