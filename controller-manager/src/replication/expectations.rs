//! Expectations: what a replication controller has asked the API server to create or delete and not yet
//! seen in its pod cache. While any are outstanding the controller does not count pods again, so a slow
//! cache never makes it create or delete twice (Kubernetes' `UIDTrackingControllerExpectations`).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long expectations are trusted: after this the controller counts again even if some were never
/// observed (a lost watch event must not stop it for good).
pub const TIMEOUT: Duration = Duration::from_secs(300);

#[derive(Default)]
struct Pending {
    /// Creations not yet seen in the cache.
    adds: i64,
    /// Pods deleted whose deletion was not yet seen.
    deletes: HashSet<String>,
    /// When these expectations were set.
    since: Option<Instant>,
}

/// The outstanding creations and deletions of every controller, by controller key.
#[derive(Default)]
pub struct Expectations(Mutex<HashMap<String, Pending>>);

impl Expectations {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the controller may count its pods: everything it asked for has been seen, or the
    /// expectations have expired, or it never asked for anything.
    pub fn satisfied(&self, key: &str) -> bool {
        match self.lock().get(key) {
            None => true,
            Some(p) => {
                (p.adds <= 0 && p.deletes.is_empty())
                    || p.since.is_none_or(|t| t.elapsed() > TIMEOUT)
            }
        }
    }

    /// The controller is about to create `n` pods.
    pub fn expect_creations(&self, key: &str, n: usize) {
        let mut map = self.lock();
        let p = map.entry(key.to_string()).or_default();
        p.adds = n as i64;
        p.since = Some(Instant::now());
    }

    /// The controller is about to delete these pods (by `namespace/name`).
    pub fn expect_deletions(&self, key: &str, pods: impl IntoIterator<Item = String>) {
        let mut map = self.lock();
        let p = map.entry(key.to_string()).or_default();
        p.deletes = pods.into_iter().collect();
        p.since = Some(Instant::now());
    }

    /// A creation was seen in the cache, or failed (so it never will be).
    pub fn creation_observed(&self, key: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.adds -= 1;
        }
    }

    /// `pod`'s deletion was seen in the cache, or failed.
    pub fn deletion_observed(&self, key: &str, pod: &str) {
        if let Some(p) = self.lock().get_mut(key) {
            p.deletes.remove(pod);
        }
    }

    /// Forgets the controller (it was deleted).
    pub fn forget(&self, key: &str) {
        self.lock().remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satisfied_once_everything_asked_for_is_seen() {
        let e = Expectations::default();
        assert!(e.satisfied("ns/rc"));
        e.expect_creations("ns/rc", 2);
        assert!(!e.satisfied("ns/rc"));
        e.creation_observed("ns/rc");
        assert!(!e.satisfied("ns/rc"));
        e.creation_observed("ns/rc");
        assert!(e.satisfied("ns/rc"));
        e.expect_deletions("ns/rc", ["ns/a".to_string(), "ns/b".to_string()]);
        e.deletion_observed("ns/rc", "ns/a");
        // Seeing the same deletion twice counts once.
        e.deletion_observed("ns/rc", "ns/a");
        assert!(!e.satisfied("ns/rc"));
        e.deletion_observed("ns/rc", "ns/b");
        assert!(e.satisfied("ns/rc"));
        e.expect_creations("ns/rc", 1);
        e.forget("ns/rc");
        assert!(e.satisfied("ns/rc"));
    }
}
