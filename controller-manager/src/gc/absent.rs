//! Owners known to be gone, as Kubernetes' `absentOwnerCache`: a bounded set of owner coordinates
//! (namespace as looked up, group, kind, name, uid) so that many dependents of one deleted owner do
//! not each ask the API server. A uid never comes back, so an entry never goes stale; the oldest
//! entries are forgotten first.

use std::collections::{HashSet, VecDeque};

/// How many absent owners are remembered (Kubernetes: 500).
const CAPACITY: usize = 500;

/// The coordinates an owner was looked up at.
pub fn key(namespace: &str, group: &str, kind: &str, name: &str, uid: &str) -> String {
    format!("{namespace}\u{0}{group}\u{0}{kind}\u{0}{name}\u{0}{uid}")
}

/// Recently confirmed absent owners.
#[derive(Debug, Default)]
pub struct Absent {
    set: HashSet<String>,
    order: VecDeque<String>,
}

impl Absent {
    /// Remembers `key` as absent.
    pub fn add(&mut self, key: String) {
        if self.set.insert(key.clone()) {
            self.order.push_back(key);
        }
        while self.order.len() > CAPACITY {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    /// Whether `key` is known absent.
    pub fn has(&self, key: &str) -> bool {
        self.set.contains(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_a_bounded_number_of_owners() {
        let mut a = Absent::default();
        for i in 0..CAPACITY + 10 {
            a.add(key("ns", "", "ConfigMap", &format!("c{i}"), "u"));
        }
        assert!(!a.has(&key("ns", "", "ConfigMap", "c0", "u")));
        assert!(a.has(&key(
            "ns",
            "",
            "ConfigMap",
            &format!("c{}", CAPACITY + 9),
            "u"
        )));
        assert!(!a.has(&key(
            "",
            "",
            "ConfigMap",
            &format!("c{}", CAPACITY + 9),
            "u"
        )));
    }
}
