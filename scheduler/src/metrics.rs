//! The scheduler's Prometheus metrics, named as kube-scheduler names them.

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// A label set of fixed names.
type Labels = Vec<(&'static str, &'static str)>;

/// The scheduler's metrics.
pub struct Metrics {
    /// Pods waiting, by queue (`active`, `backoff`, `unschedulable`).
    pub pending_pods: Family<Labels, Gauge>,
    /// Scheduling attempts by result (`scheduled`, `unschedulable`, `error`).
    pub schedule_attempts: Family<Labels, Counter>,
    /// Time of one scheduling decision (filters, scores, assume), by result.
    pub attempt_duration: Family<Labels, Histogram>,
    /// Time from a pod entering the queue to its binding being written.
    pub pod_scheduling_duration: Histogram,
}

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn new(registry: &mut Registry) -> Metrics {
        let m = Metrics {
            pending_pods: Family::default(),
            schedule_attempts: Family::default(),
            attempt_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_01, 2.0, 20))
            }),
            pod_scheduling_duration: Histogram::new(exponential_buckets(0.001, 2.0, 20)),
        };
        registry.register(
            "scheduler_pending_pods",
            "Pods waiting to be scheduled, by queue",
            m.pending_pods.clone(),
        );
        registry.register(
            "scheduler_schedule_attempts",
            "Scheduling attempts by result",
            m.schedule_attempts.clone(),
        );
        registry.register(
            "scheduler_scheduling_attempt_duration_seconds",
            "Time of one scheduling decision, by result",
            m.attempt_duration.clone(),
        );
        registry.register(
            "scheduler_pod_scheduling_duration_seconds",
            "Time from a pod entering the queue to its binding",
            m.pod_scheduling_duration.clone(),
        );
        m
    }

    /// Counts an attempt with `result` that took `seconds`.
    pub fn attempt(&self, result: &'static str, seconds: f64) {
        self.schedule_attempts
            .get_or_create(&vec![("result", result)])
            .inc();
        self.attempt_duration
            .get_or_create(&vec![("result", result)])
            .observe(seconds);
    }

    /// Sets the queue depths.
    pub fn depths(&self, d: crate::queue::Depths) {
        for (queue, n) in [
            ("active", d.active),
            ("backoff", d.backoff),
            ("unschedulable", d.unschedulable),
        ] {
            self.pending_pods
                .get_or_create(&vec![("queue", queue)])
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
