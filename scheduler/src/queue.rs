//! The scheduling queue, shaped like Kubernetes': pods ready for a try (`active`, highest priority
//! first, then oldest), pods waiting out a backoff after a failed try (`backoff`), and pods that fit
//! nowhere (`unschedulable`) until the cluster changes in a way that could help or they have waited
//! too long. Pure bookkeeping: the caller supplies the time.

use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap};
use std::time::Duration;

use tokio::time::Instant;

/// Backoff after the first failed try; it doubles per try (Kubernetes' `podInitialBackoffSeconds`).
pub const INITIAL_BACKOFF: Duration = Duration::from_secs(1);
/// Longest backoff (`podMaxBackoffSeconds`).
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// An unschedulable pod is tried again after this long even if nothing changed
/// (`podMaxInUnschedulablePodsDuration`).
pub const MAX_UNSCHEDULABLE: Duration = Duration::from_secs(5 * 60);

/// Where a pod waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Active,
    /// Popped and being tried.
    InFlight,
    Backoff,
    Unschedulable,
}

#[derive(Debug)]
struct Entry {
    priority: i32,
    place: Place,
    /// Failed tries so far (sets the backoff).
    attempts: u32,
    /// When its backoff ends.
    ready_at: Instant,
    /// When it was parked as unschedulable.
    parked_at: Instant,
    /// Identifies this entry's current place in `active` (stale heap items are skipped).
    ticket: u64,
}

/// Pods waiting to be scheduled, by key (`namespace/name`).
#[derive(Debug, Default)]
pub struct Queue {
    entries: HashMap<String, Entry>,
    /// (priority, oldest first, ticket, key); items whose ticket is no longer current are skipped.
    active: BinaryHeap<(i32, Reverse<u64>, String)>,
    backoff: BTreeSet<(Instant, u64, String)>,
    /// Unschedulable pods by when they were parked.
    parked: BTreeSet<(Instant, String)>,
    /// Pods popped and not yet settled (so [`Queue::depths`] needs no scan).
    in_flight: usize,
    next_ticket: u64,
}

/// How many pods wait where, for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Depths {
    /// Ready for a try.
    pub active: usize,
    /// Waiting out a backoff.
    pub backoff: usize,
    /// Waiting for the cluster to change.
    pub unschedulable: usize,
}

impl Queue {
    /// An empty queue.
    pub fn new() -> Queue {
        Queue::default()
    }

    fn ticket(&mut self) -> u64 {
        self.next_ticket += 1;
        self.next_ticket
    }

    /// A pod that needs a node. New pods go to `active`; a pod already queued keeps its place (its
    /// priority is updated).
    pub fn add(&mut self, key: &str, priority: i32, now: Instant) {
        if let Some(e) = self.entries.get_mut(key) {
            e.priority = priority;
            return;
        }
        let ticket = self.ticket();
        self.entries.insert(
            key.to_string(),
            Entry {
                priority,
                place: Place::Active,
                attempts: 0,
                ready_at: now,
                parked_at: now,
                ticket,
            },
        );
        self.active
            .push((priority, Reverse(ticket), key.to_string()));
    }

    /// The pod no longer needs a node (bound, or deleted).
    pub fn remove(&mut self, key: &str) {
        if let Some(e) = self.entries.remove(key) {
            self.unplace(key, &e);
        }
    }

    /// Whether the pod is queued anywhere.
    pub fn contains(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The next pod to try: highest priority, then the one waiting longest. It stays known to the
    /// queue (as in flight) until [`Queue::remove`], [`Queue::unschedulable`] or [`Queue::retry`].
    pub fn pop(&mut self) -> Option<String> {
        while let Some((_, Reverse(ticket), key)) = self.active.pop() {
            if let Some(e) = self.entries.get_mut(&key)
                && e.place == Place::Active
                && e.ticket == ticket
            {
                e.place = Place::InFlight;
                self.in_flight += 1;
                return Some(key);
            }
        }
        None
    }

    /// The tried pod fits nowhere: it waits for a cluster change ([`Queue::cluster_changed`]).
    pub fn unschedulable(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let old = (e.place, e.ready_at, e.ticket, e.parked_at);
        e.attempts += 1;
        e.ready_at = now + backoff(e.attempts);
        e.place = Place::Unschedulable;
        e.parked_at = now;
        self.unplace_parts(key, old);
        self.parked.insert((now, key.to_string()));
    }

    /// Forgets where `key` was (its entry is being moved or removed).
    fn unplace(&mut self, key: &str, e: &Entry) {
        self.unplace_parts(key, (e.place, e.ready_at, e.ticket, e.parked_at));
    }

    fn unplace_parts(
        &mut self,
        key: &str,
        (place, ready_at, ticket, parked_at): (Place, Instant, u64, Instant),
    ) {
        match place {
            Place::Backoff => {
                self.backoff.remove(&(ready_at, ticket, key.to_string()));
            }
            Place::Unschedulable => {
                self.parked.remove(&(parked_at, key.to_string()));
            }
            Place::InFlight => self.in_flight -= 1,
            Place::Active => {}
        }
    }

    /// The try failed for another reason (e.g. the binding write): try again after a backoff.
    pub fn retry(&mut self, key: &str, now: Instant) {
        let Some(e) = self.entries.get_mut(key) else {
            return;
        };
        let old = (e.place, e.ready_at, e.ticket, e.parked_at);
        e.attempts += 1;
        e.ready_at = now + backoff(e.attempts);
        // Unplaced here; `requeue` places it (as Active it has nothing more to unplace).
        e.place = Place::Active;
        self.unplace_parts(key, old);
        self.requeue(key.to_string(), now);
    }

    fn requeue(&mut self, key: String, now: Instant) {
        let ticket = self.ticket();
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        let old = (e.place, e.ready_at, e.ticket, e.parked_at);
        e.ticket = ticket;
        self.unplace_parts(&key, old);
        let Some(e) = self.entries.get_mut(&key) else {
            return;
        };
        if e.ready_at > now {
            e.place = Place::Backoff;
            self.backoff.insert((e.ready_at, ticket, key));
        } else {
            e.place = Place::Active;
            self.active.push((e.priority, Reverse(ticket), key));
        }
    }

    /// The pod itself changed (e.g. a toleration was added): if it was parked as unschedulable it
    /// moves on as after a cluster change.
    pub fn pod_changed(&mut self, key: &str, now: Instant) {
        if let Some(e) = self.entries.get(key)
            && e.place == Place::Unschedulable
        {
            self.requeue(key.to_string(), now);
        }
    }

    /// Something changed that could let unschedulable pods fit (a node came or changed, a pod went):
    /// they move on, to `active` or, if their backoff is not over, to `backoff`.
    pub fn cluster_changed(&mut self, now: Instant) {
        let parked: Vec<String> = self.parked.iter().map(|(_, k)| k.clone()).collect();
        for key in parked {
            self.requeue(key, now);
        }
    }

    /// Moves pods whose backoff is over to `active`, and pods unschedulable for longer than
    /// [`MAX_UNSCHEDULABLE`] too.
    pub fn flush(&mut self, now: Instant) {
        while let Some(first) = self.backoff.first() {
            if first.0 > now {
                break;
            }
            if let Some((_, _, key)) = self.backoff.pop_first() {
                self.requeue(key, now);
            }
        }
        let stale: Vec<String> = self
            .parked
            .iter()
            .take_while(|(at, _)| now >= *at + MAX_UNSCHEDULABLE)
            .map(|(_, k)| k.clone())
            .collect();
        for key in stale {
            self.requeue(key, now);
        }
    }

    /// When [`Queue::flush`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        let backoff = self.backoff.first().map(|b| b.0);
        let parked = self.parked.first().map(|(at, _)| *at + MAX_UNSCHEDULABLE);
        backoff.into_iter().chain(parked).min()
    }

    /// Whether some pod is ready for a try.
    pub fn has_active(&self) -> bool {
        !self.active.is_empty()
    }

    /// How many pods wait where.
    pub fn depths(&self) -> Depths {
        let backoff = self.backoff.len();
        let unschedulable = self.parked.len();
        Depths {
            active: self.entries.len() - backoff - unschedulable - self.in_flight,
            backoff,
            unschedulable,
        }
    }
}

/// The backoff after `attempts` failed tries.
pub fn backoff(attempts: u32) -> Duration {
    let doublings = attempts.saturating_sub(1).min(16);
    INITIAL_BACKOFF
        .saturating_mul(1 << doublings)
        .min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The depths counted entry by entry, to check the kept counts against.
    fn scanned(q: &Queue) -> Depths {
        let mut d = Depths::default();
        for e in q.entries.values() {
            match e.place {
                Place::Active => d.active += 1,
                Place::Backoff => d.backoff += 1,
                Place::Unschedulable => d.unschedulable += 1,
                Place::InFlight => {}
            }
        }
        d
    }

    /// Asserts the kept depths match a scan.
    fn check(q: &Queue) {
        assert_eq!(q.depths(), scanned(q));
    }

    #[test]
    fn priority_then_age_and_no_duplicates() {
        let now = Instant::now();
        let mut q = Queue::new();
        q.add("a", 0, now);
        check(&q);
        q.add("b", 10, now);
        check(&q);
        q.add("c", 0, now);
        check(&q);
        q.add("a", 0, now);
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("b"));
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("a"));
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("c"));
        check(&q);
        assert_eq!(q.pop(), None);
        check(&q);
        // In flight: still known, not poppable; adding again does not duplicate it.
        q.add("a", 0, now);
        check(&q);
        assert!(q.contains("a"));
        assert_eq!(q.pop(), None);
        check(&q);
        q.remove("a");
        check(&q);
        assert!(!q.contains("a"));
    }

    #[test]
    fn unschedulable_waits_for_a_change_then_backs_off() {
        let now = Instant::now();
        let mut q = Queue::new();
        q.add("p", 0, now);
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("p"));
        check(&q);
        q.unschedulable("p", now);
        check(&q);
        assert_eq!(q.depths().unschedulable, 1);
        q.flush(now + Duration::from_secs(30));
        check(&q);
        assert_eq!(q.pop(), None, "nothing changed and not yet stale");
        check(&q);
        // A change before the backoff is over: to backoff; after it, to active.
        q.cluster_changed(now + Duration::from_millis(500));
        check(&q);
        assert_eq!(q.depths().backoff, 1);
        assert_eq!(q.pop(), None);
        check(&q);
        assert_eq!(q.next_deadline(), Some(now + INITIAL_BACKOFF));
        q.flush(now + INITIAL_BACKOFF);
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("p"));
        check(&q);
        // Second failure: twice the backoff; a change after it goes straight to active.
        q.unschedulable("p", now);
        check(&q);
        q.cluster_changed(now + Duration::from_secs(3));
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("p"));
        check(&q);
    }

    #[test]
    fn stale_unschedulable_pods_are_retried() {
        let now = Instant::now();
        let mut q = Queue::new();
        q.add("p", 0, now);
        check(&q);
        q.pop();
        check(&q);
        q.unschedulable("p", now);
        check(&q);
        assert_eq!(q.next_deadline(), Some(now + MAX_UNSCHEDULABLE));
        q.flush(now + MAX_UNSCHEDULABLE);
        check(&q);
        assert_eq!(q.pop().as_deref(), Some("p"));
        check(&q);
    }

    #[test]
    fn retry_backs_off_and_remove_cancels() {
        let now = Instant::now();
        let mut q = Queue::new();
        q.add("p", 0, now);
        check(&q);
        q.pop();
        check(&q);
        q.retry("p", now);
        check(&q);
        assert_eq!(q.depths().backoff, 1);
        q.remove("p");
        check(&q);
        q.flush(now + MAX_BACKOFF);
        check(&q);
        assert_eq!(q.pop(), None);
        check(&q);
        assert_eq!(q.depths(), Depths::default());
        assert_eq!(backoff(1), INITIAL_BACKOFF);
        assert_eq!(backoff(2), 2 * INITIAL_BACKOFF);
        assert_eq!(backoff(30), MAX_BACKOFF);
    }
}
