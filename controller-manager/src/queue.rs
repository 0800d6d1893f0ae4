//! The work queue every controller reconciles from, with client-go's workqueue semantics: a key is
//! queued at most once however often it is added; a key being reconciled is never handed to a second
//! worker, and if it is added meanwhile it is queued again when the first worker is done; failed keys
//! come back after a per-key exponential backoff.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use tokio::sync::Notify;

/// The first retry delay of a failing key; it doubles with every further failure.
pub const BASE_DELAY: Duration = Duration::from_millis(5);
/// The longest retry delay of a failing key.
pub const MAX_DELAY: Duration = Duration::from_secs(60);

/// A queue's metrics (one set per controller).
#[derive(Clone, Default)]
pub struct QueueMetrics {
    /// Keys waiting to be reconciled.
    pub depth: Gauge,
    /// Keys added (including re-adds of queued keys, as client-go counts).
    pub adds: Counter,
    /// Keys put back after a failure.
    pub retries: Counter,
    /// Time a key waited in the queue before a worker took it.
    pub queue_duration: Option<Histogram>,
}

#[derive(Default)]
struct State {
    /// Keys ready to be handed out, oldest first.
    order: VecDeque<String>,
    /// Keys that are queued or must be queued again once done: each with when it was first added.
    dirty: HashMap<String, Instant>,
    /// Keys a worker is reconciling.
    processing: HashSet<String>,
    /// Failures in a row per key (the backoff exponent).
    failures: HashMap<String, u32>,
    /// Keys waiting to be added later, with when: only the earliest wait of a key is kept.
    delayed: HashMap<String, Instant>,
}

/// A deduplicating, rate-limited work queue of object keys (`namespace/name` or `name`). Cheap to
/// clone: clones share the queue.
#[derive(Clone)]
pub struct Queue {
    state: Arc<Mutex<State>>,
    ready: Arc<Notify>,
    metrics: QueueMetrics,
}

impl Queue {
    /// An empty queue reporting to `metrics`.
    pub fn new(metrics: QueueMetrics) -> Queue {
        Queue {
            state: Arc::default(),
            ready: Arc::new(Notify::new()),
            metrics,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Queues `key` unless it is already queued; a key being reconciled is queued again when done.
    pub fn add(&self, key: impl Into<String>) {
        let key = key.into();
        self.metrics.adds.inc();
        let mut s = self.lock();
        if s.dirty.contains_key(&key) {
            return;
        }
        s.dirty.insert(key.clone(), Instant::now());
        if !s.processing.contains(&key) {
            s.order.push_back(key);
            self.metrics.depth.set(s.order.len() as i64);
            drop(s);
            self.ready.notify_one();
        }
    }

    /// Queues `key` after `delay`. A key already waiting to be added no later than that is left
    /// alone, so repeated calls leave one timer per key (as client-go's delaying queue does).
    pub fn add_after(&self, key: impl Into<String>, delay: Duration) {
        let key = key.into();
        if delay.is_zero() {
            return self.add(key);
        }
        let due = Instant::now() + delay;
        {
            let mut s = self.lock();
            if s.delayed.get(&key).is_some_and(|&d| d <= due) {
                return;
            }
            s.delayed.insert(key.clone(), due);
        }
        let queue = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            // An earlier wait of the key that replaced this one has added it already.
            let mine = {
                let mut s = queue.lock();
                let mine = s.delayed.get(&key) == Some(&due);
                if mine {
                    s.delayed.remove(&key);
                }
                mine
            };
            if mine {
                queue.add(key);
            }
        });
    }

    /// Queues `key` again after its backoff (5 ms, doubling per failure in a row, at most 60 s).
    pub fn retry(&self, key: &str) {
        self.metrics.retries.inc();
        let failures = {
            let mut s = self.lock();
            let n = s.failures.entry(key.to_string()).or_insert(0);
            *n += 1;
            *n
        };
        self.add_after(key, backoff(failures));
    }

    /// Forgets `key`'s failures, so its next failure starts the backoff over.
    pub fn forget(&self, key: &str) {
        self.lock().failures.remove(key);
    }

    /// How often `key` has failed in a row.
    pub fn failures(&self, key: &str) -> u32 {
        self.lock().failures.get(key).copied().unwrap_or(0)
    }

    /// The number of keys waiting for a worker.
    pub fn len(&self) -> usize {
        self.lock().order.len()
    }

    /// Whether no key is waiting for a worker.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits for the next key; the caller must call [`Queue::done`] with it when finished.
    pub async fn next(&self) -> String {
        loop {
            let notified = self.ready.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.lock();
                if let Some(key) = s.order.pop_front() {
                    let added = s.dirty.remove(&key);
                    s.processing.insert(key.clone());
                    self.metrics.depth.set(s.order.len() as i64);
                    let more = !s.order.is_empty();
                    drop(s);
                    if let (Some(h), Some(t)) = (&self.metrics.queue_duration, added) {
                        h.observe(t.elapsed().as_secs_f64());
                    }
                    if more {
                        // Another worker may be waiting: pass the wake-up on.
                        self.ready.notify_one();
                    }
                    return key;
                }
            }
            notified.await;
        }
    }

    /// Marks `key` finished; if it was added while being reconciled, it is queued again.
    pub fn done(&self, key: &str) {
        let mut s = self.lock();
        s.processing.remove(key);
        if s.dirty.contains_key(key) {
            s.order.push_back(key.to_string());
            self.metrics.depth.set(s.order.len() as i64);
            drop(s);
            self.ready.notify_one();
        }
    }
}

/// The delay before the `failures`-th retry.
fn backoff(failures: u32) -> Duration {
    let exp = failures.saturating_sub(1).min(31);
    BASE_DELAY
        .saturating_mul(1u32 << exp.min(20))
        .min(MAX_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue() -> Queue {
        Queue::new(QueueMetrics::default())
    }

    #[tokio::test]
    async fn a_key_is_queued_once_and_never_to_two_workers() {
        let q = queue();
        q.add("a");
        q.add("b");
        q.add("a");
        assert_eq!(q.len(), 2);
        let first = q.next().await;
        assert_eq!(first, "a");
        // Added while being processed: not handed out until done.
        q.add("a");
        assert_eq!(q.next().await, "b");
        assert!(q.is_empty());
        q.done("b");
        assert!(q.is_empty());
        q.done("a");
        assert_eq!(q.len(), 1);
        assert_eq!(q.next().await, "a");
        q.done("a");
        assert!(q.is_empty());
        assert_eq!(q.metrics.depth.get(), 0);
    }

    #[tokio::test]
    async fn waiting_workers_are_woken() {
        let q = queue();
        let worker = {
            let q = q.clone();
            tokio::spawn(async move { q.next().await })
        };
        tokio::task::yield_now().await;
        q.add("x");
        let got = tokio::time::timeout(Duration::from_secs(5), worker)
            .await
            .expect("woken")
            .expect("joined");
        assert_eq!(got, "x");
    }

    #[tokio::test]
    async fn a_key_waits_once_for_its_earliest_time() {
        let q = queue();
        for _ in 0..100 {
            q.add_after("k", Duration::from_secs(3600));
        }
        q.add_after("k", Duration::from_millis(20));
        q.add_after("k", Duration::from_secs(60));
        assert_eq!(q.lock().delayed.len(), 1);
        let got = tokio::time::timeout(Duration::from_secs(5), q.next())
            .await
            .expect("added at the earliest time");
        assert_eq!(got, "k");
        q.done("k");
        assert!(q.lock().delayed.is_empty());
        assert!(q.is_empty());
    }

    #[tokio::test]
    async fn failures_back_off_exponentially_until_forgotten() {
        assert_eq!(backoff(1), Duration::from_millis(5));
        assert_eq!(backoff(2), Duration::from_millis(10));
        assert_eq!(backoff(5), Duration::from_millis(80));
        assert_eq!(backoff(40), MAX_DELAY);
        let q = queue();
        q.retry("k");
        q.retry("k");
        assert_eq!(q.failures("k"), 2);
        let got = tokio::time::timeout(Duration::from_secs(5), q.next())
            .await
            .expect("retried");
        assert_eq!(got, "k");
        q.forget("k");
        assert_eq!(q.failures("k"), 0);
    }
}
