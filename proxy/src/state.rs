//! What the proxy knows and what it has programmed: services and endpoint slices from the watches,
//! each service's programmed [`ServiceRules`], and the services changed since. [`State::plan`] turns
//! that into the next transaction (full or incremental); [`State::done`] records its success. No
//! I/O here, so the bookkeeping is tested without a kernel.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;

use crate::model::{SERVICE_NAME_LABEL, ServiceInfo, ServiceKey, endpoints};
use crate::rules::{self, Base, ServiceRules, Shared, UdpFlow};

/// The next transaction.
#[derive(Debug)]
pub struct Plan {
    /// The `nft -f` script (empty: nothing to do).
    pub script: String,
    /// Whether it replaces the whole table.
    pub full: bool,
    /// UDP conntrack entries to flush once it is applied.
    pub stale_udp: Vec<(UdpFlow, Ipv4Addr)>,
    /// The services' rules after it, for those it changes (None: removed).
    changes: Vec<(ServiceKey, Option<ServiceRules>)>,
    /// Shared chains it makes.
    shared: BTreeSet<Shared>,
    /// How the hairpin addresses' use counts change.
    hairpin: HashMap<Ipv4Addr, isize>,
}

/// The proxy's view of the cluster and of the kernel.
#[derive(Debug, Default)]
pub struct State {
    node: String,
    base: Base,
    services: HashMap<ServiceKey, ServiceInfo>,
    /// Slices by namespace and slice name, with the service each belongs to.
    slices: HashMap<(String, String), (ServiceKey, EndpointSlice)>,
    /// Slice names by service.
    by_service: HashMap<ServiceKey, BTreeSet<String>>,
    programmed: BTreeMap<ServiceKey, ServiceRules>,
    /// Shared chains in the table.
    shared: BTreeSet<Shared>,
    /// Hairpin addresses in the table, with how many programmed services use each.
    hairpin: HashMap<Ipv4Addr, usize>,
    dirty: BTreeSet<ServiceKey>,
    needs_full: bool,
}

fn slice_service(slice: &EndpointSlice) -> Option<ServiceKey> {
    let ns = slice.metadata.namespace.clone()?;
    let svc = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some((ns, svc.clone()))
}

fn slice_key(slice: &EndpointSlice) -> (String, String) {
    (
        slice.metadata.namespace.clone().unwrap_or_default(),
        slice.metadata.name.clone().unwrap_or_default(),
    )
}

impl State {
    /// An empty state for the node `node`; the first plan is a full one.
    pub fn new(node: &str, base: Base) -> State {
        State {
            node: node.into(),
            base,
            needs_full: true,
            ..State::default()
        }
    }

    /// The node's settings.
    pub fn base(&self) -> &Base {
        &self.base
    }

    /// Changes the node's settings; the next plan replaces the table.
    pub fn set_base(&mut self, base: Base) {
        if base != self.base {
            self.base = base;
            self.needs_full = true;
        }
    }

    /// Whether anything waits to be programmed.
    pub fn pending(&self) -> bool {
        self.needs_full || !self.dirty.is_empty()
    }

    /// Rules and map elements programmed now.
    pub fn rules_programmed(&self) -> usize {
        self.programmed.values().map(ServiceRules::size).sum()
    }

    /// A service was added or changed.
    pub fn service_applied(&mut self, svc: &Service) {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        match ServiceInfo::from_service(svc) {
            Some(info) => {
                if self.services.get(&key) != Some(&info) {
                    self.services.insert(key.clone(), info);
                    self.dirty.insert(key);
                }
            }
            None => {
                if self.services.remove(&key).is_some() {
                    self.dirty.insert(key);
                }
            }
        }
    }

    /// A service was deleted.
    pub fn service_deleted(&mut self, svc: &Service) {
        let key = (
            svc.metadata.namespace.clone().unwrap_or_default(),
            svc.metadata.name.clone().unwrap_or_default(),
        );
        if self.services.remove(&key).is_some() {
            self.dirty.insert(key);
        }
    }

    /// The service list was read again: `all` replaces what was known.
    pub fn services_relisted(&mut self, all: &[Service]) {
        let before: Vec<ServiceKey> = self.services.keys().cloned().collect();
        let now: BTreeSet<ServiceKey> = all
            .iter()
            .map(|s| {
                (
                    s.metadata.namespace.clone().unwrap_or_default(),
                    s.metadata.name.clone().unwrap_or_default(),
                )
            })
            .collect();
        for key in before {
            if !now.contains(&key) {
                self.services.remove(&key);
                self.dirty.insert(key);
            }
        }
        for svc in all {
            self.service_applied(svc);
        }
    }

    /// A slice was added or changed.
    pub fn slice_applied(&mut self, slice: &EndpointSlice) {
        let key = slice_key(slice);
        self.slice_removed(&key);
        if let Some(svc) = slice_service(slice) {
            self.by_service
                .entry(svc.clone())
                .or_default()
                .insert(key.1.clone());
            self.dirty.insert(svc.clone());
            self.slices.insert(key, (svc, slice.clone()));
        }
    }

    /// A slice was deleted.
    pub fn slice_deleted(&mut self, slice: &EndpointSlice) {
        self.slice_removed(&slice_key(slice));
    }

    fn slice_removed(&mut self, key: &(String, String)) {
        if let Some((svc, _)) = self.slices.remove(key) {
            if let Some(names) = self.by_service.get_mut(&svc) {
                names.remove(&key.1);
                if names.is_empty() {
                    self.by_service.remove(&svc);
                }
            }
            self.dirty.insert(svc);
        }
    }

    /// The slice list was read again: `all` replaces what was known.
    pub fn slices_relisted(&mut self, all: &[EndpointSlice]) {
        let now: BTreeSet<(String, String)> = all.iter().map(slice_key).collect();
        let gone: Vec<(String, String)> = self
            .slices
            .keys()
            .filter(|k| !now.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.slice_removed(&key);
        }
        for slice in all {
            let unchanged = self
                .slices
                .get(&slice_key(slice))
                .is_some_and(|(_, s)| s == slice);
            if !unchanged {
                self.slice_applied(slice);
            }
        }
    }

    /// The rules `key` should have now (None: none).
    fn desired(&self, key: &ServiceKey) -> Option<ServiceRules> {
        let svc = self.services.get(key)?;
        let slices = self
            .by_service
            .get(key)
            .into_iter()
            .flatten()
            .filter_map(|name| self.slices.get(&(key.0.clone(), name.clone())))
            .map(|(_, s)| s);
        let eps = endpoints(slices, &self.node);
        Some(rules::service_rules(svc, &eps, &self.base))
    }

    /// The next transaction: the whole table after a failure, at start or when the node's settings
    /// changed; else only the changed services' parts.
    pub fn plan(&mut self) -> Plan {
        if !self.needs_full {
            let mut plan = Plan {
                script: String::new(),
                full: false,
                stale_udp: Vec::new(),
                changes: Vec::new(),
                shared: BTreeSet::new(),
                hairpin: HashMap::new(),
            };
            let mut in_place = true;
            for key in &self.dirty {
                let old = self.programmed.get(key);
                let new = self.desired(key);
                match rules::update(old, new.as_ref()) {
                    Some(s) => plan.script.push_str(&s),
                    None => {
                        in_place = false;
                        break;
                    }
                }
                for ip in old.iter().flat_map(|o| o.hairpin.iter()) {
                    *plan.hairpin.entry(*ip).or_default() -= 1;
                }
                for ip in new.iter().flat_map(|n| n.hairpin.iter()) {
                    *plan.hairpin.entry(*ip).or_default() += 1;
                }
                plan.shared.extend(
                    new.iter()
                        .flat_map(|n| n.shared.iter())
                        .filter(|s| !self.shared.contains(*s)),
                );
                plan.stale_udp.extend(rules::stale_udp(old, new.as_ref()));
                plan.changes.push((key.clone(), new));
            }
            if in_place {
                // Shared chains first (elements point at them), hairpin addresses last.
                let mut added = Vec::new();
                let mut removed = Vec::new();
                for (ip, delta) in &plan.hairpin {
                    let before = self.hairpin.get(ip).copied().unwrap_or(0);
                    let after = before as isize + delta;
                    if before == 0 && after > 0 {
                        added.push(*ip);
                    } else if before > 0 && after <= 0 {
                        removed.push(*ip);
                    }
                }
                added.sort();
                removed.sort();
                let mut script = rules::shared_chains(&self.base, &plan.shared);
                script.push_str(&plan.script);
                script.push_str(&rules::hairpin_update(&added, &removed));
                plan.script = script;
                return plan;
            }
            self.needs_full = true;
        }
        let keys: BTreeSet<ServiceKey> = self
            .services
            .keys()
            .chain(self.programmed.keys())
            .cloned()
            .collect();
        let mut changes = Vec::new();
        let mut stale_udp = Vec::new();
        for key in keys {
            let new = self.desired(&key);
            stale_udp.extend(rules::stale_udp(self.programmed.get(&key), new.as_ref()));
            changes.push((key, new));
        }
        let script = rules::full(&self.base, changes.iter().filter_map(|(_, r)| r.as_ref()));
        Plan {
            script,
            full: true,
            stale_udp,
            changes,
            shared: BTreeSet::new(),
            hairpin: HashMap::new(),
        }
    }

    /// Records that `plan` was applied.
    pub fn done(&mut self, plan: Plan) {
        if plan.full {
            self.programmed.clear();
            self.needs_full = false;
        }
        for (key, rules) in plan.changes {
            self.dirty.remove(&key);
            match rules {
                Some(r) => {
                    self.programmed.insert(key, r);
                }
                None => {
                    self.programmed.remove(&key);
                }
            }
        }
        if plan.full {
            self.dirty.clear();
            self.shared = self
                .programmed
                .values()
                .flat_map(|r| r.shared.iter())
                .copied()
                .collect();
            self.hairpin.clear();
            for ip in self.programmed.values().flat_map(|r| r.hairpin.iter()) {
                *self.hairpin.entry(*ip).or_default() += 1;
            }
        } else {
            self.shared.extend(plan.shared);
            for (ip, delta) in plan.hairpin {
                let count = self.hairpin.get(&ip).copied().unwrap_or(0) as isize + delta;
                if count > 0 {
                    self.hairpin.insert(ip, count as usize);
                } else {
                    self.hairpin.remove(&ip);
                }
            }
        }
    }

    /// Records that a plan failed: the next one replaces the whole table.
    pub fn failed(&mut self) {
        self.needs_full = true;
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn svc(name: &str, ip: &str) -> Service {
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name},
            "spec": {"clusterIP": ip, "ports": [{"port": 80}]},
        }))
        .unwrap()
    }

    fn slice(name: &str, svc: &str, ips: &[&str]) -> EndpointSlice {
        let eps: Vec<_> = ips.iter().map(|ip| json!({"addresses": [ip]})).collect();
        serde_json::from_value(json!({
            "metadata": {"namespace": "default", "name": name,
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": "IPv4",
            "endpoints": eps,
            "ports": [{"port": 8080, "protocol": "TCP"}],
        }))
        .unwrap()
    }

    #[test]
    fn full_first_then_only_the_changed_service() {
        let mut st = State::new("n1", Base::default());
        st.service_applied(&svc("a", "10.96.0.1"));
        st.service_applied(&svc("b", "10.96.0.2"));
        st.slice_applied(&slice("a-1", "a", &["10.244.0.1"]));
        let plan = st.plan();
        assert!(plan.full);
        assert!(
            plan.script
                .contains("10.96.0.2 . tcp . 80 : goto reject-chain")
        );
        st.done(plan);
        assert!(!st.pending());
        assert_eq!(st.plan().script, "");

        st.slice_applied(&slice("b-1", "b", &["10.244.0.2"]));
        let plan = st.plan();
        assert!(!plan.full);
        assert!(!plan.script.contains("default/a/"), "{}", plan.script);
        assert!(
            plan.script
                .contains("delete element ip atoll no-endpoint-services { 10.96.0.2 . tcp . 80 }")
        );
        st.done(plan);

        st.service_deleted(&svc("a", "10.96.0.1"));
        let plan = st.plan();
        assert!(
            plan.script
                .contains("delete element ip atoll service-ips { 10.96.0.1 . tcp . 80 }")
        );
        assert!(
            plan.script
                .contains("delete element ip atoll hairpin { 10.244.0.1 . 10.244.0.1 }")
        );
        st.done(plan);
        assert!(!st.pending());

        // A failure makes the next plan a full one, with what is known now.
        st.slice_deleted(&slice("b-1", "b", &[]));
        st.failed();
        let plan = st.plan();
        assert!(plan.full);
        assert!(!plan.script.contains("default/a/"));
        st.done(plan);
        assert!(!st.pending());
    }

    #[test]
    fn shared_chains_once_and_hairpin_addresses_counted() {
        let mut st = State::new("n1", Base::default());
        st.service_applied(&svc("a", "10.96.0.1"));
        st.slice_applied(&slice("a-1", "a", &["10.244.0.1"]));
        let plan = st.plan();
        assert!(plan.script.contains("add chain ip atoll cluster-ip-1\n"));
        st.done(plan);

        // A second service with the same endpoint and endpoint count: elements only.
        st.service_applied(&svc("b", "10.96.0.2"));
        st.slice_applied(&slice("b-1", "b", &["10.244.0.1"]));
        let plan = st.plan();
        assert!(!plan.full);
        assert!(!plan.script.contains("chain"), "{}", plan.script);
        assert!(!plan.script.contains("hairpin"), "{}", plan.script);
        st.done(plan);

        // A new endpoint count makes its shared chain, once.
        st.slice_applied(&slice("b-1", "b", &["10.244.0.1", "10.244.0.2"]));
        let plan = st.plan();
        assert!(plan.script.contains("add chain ip atoll cluster-ip-2\n"));
        assert!(
            plan.script
                .contains("add element ip atoll hairpin { 10.244.0.2 . 10.244.0.2 }")
        );
        st.done(plan);
        st.slice_applied(&slice("a-1", "a", &["10.244.0.3", "10.244.0.4"]));
        let plan = st.plan();
        assert!(!plan.script.contains("chain"), "{}", plan.script);
        st.done(plan);

        // 10.244.0.1 is still b's: only when b lets it go does it leave the hairpin set.
        st.service_deleted(&svc("a", "10.96.0.1"));
        let plan = st.plan();
        assert!(
            !plan.script.contains("10.244.0.1 . 10.244.0.1"),
            "{}",
            plan.script
        );
        st.done(plan);
        st.slice_applied(&slice("b-1", "b", &["10.244.0.2"]));
        let plan = st.plan();
        assert!(
            plan.script
                .contains("delete element ip atoll hairpin { 10.244.0.1 . 10.244.0.1 }"),
            "{}",
            plan.script
        );
        st.done(plan);
    }

    #[test]
    fn relists_replace_what_was_known() {
        let mut st = State::new("n1", Base::default());
        st.services_relisted(&[svc("a", "10.96.0.1"), svc("b", "10.96.0.2")]);
        st.slices_relisted(&[slice("a-1", "a", &["10.244.0.1"])]);
        let plan = st.plan();
        st.done(plan);
        st.services_relisted(&[svc("a", "10.96.0.1")]);
        st.slices_relisted(&[]);
        let plan = st.plan();
        assert!(!plan.full);
        assert!(
            plan.script
                .contains("delete element ip atoll no-endpoint-services { 10.96.0.2 . tcp . 80 }")
        );
        assert!(
            plan.script
                .contains("delete element ip atoll service-endpoints { 10.96.0.1 . tcp . 80 . 0 }")
        );
        st.done(plan);
        assert_eq!(
            st.rules_programmed(),
            2,
            "cluster-ips and no-endpoint elements of a"
        );
    }
}
