//! The proxy's `/metrics` (sync durations, rules programmed, last sync time, failures) and its
//! `/healthz` verdict: failing when changes have waited longer than the timeout without being
//! programmed, or when the loop itself has stopped.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::run::{Observer, SyncOutcome};

/// A label set of fixed names.
type Labels = Vec<(&'static str, &'static str)>;

/// The proxy's metrics, fed by the loop as its [`Observer`].
#[derive(Clone)]
pub struct Metrics {
    sync_duration: Family<Labels, Histogram>,
    sync_errors: Counter,
    rules: Gauge,
    last_sync: Gauge<f64, AtomicU64>,
    health: Arc<Mutex<Health>>,
}

/// What `/healthz` judges by.
struct Health {
    timeout: Duration,
    /// When the oldest change still waiting arrived (None: nothing waits).
    pending_since: Option<Instant>,
    /// The loop's last pass.
    last_pass: Instant,
}

impl Metrics {
    /// The metrics, registered in `registry`; `/healthz` fails after `timeout` without progress.
    pub fn new(registry: &mut Registry, timeout: Duration) -> Metrics {
        let m = Metrics {
            sync_duration: Family::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.000_5, 2.0, 16))
            }),
            sync_errors: Counter::default(),
            rules: Gauge::default(),
            last_sync: Gauge::default(),
            health: Arc::new(Mutex::new(Health {
                timeout,
                pending_since: None,
                last_pass: Instant::now(),
            })),
        };
        registry.register(
            "atoll_proxy_sync_proxy_rules_duration_seconds",
            "Time to program nftables, by mode (full: the whole table; partial: changed services)",
            m.sync_duration.clone(),
        );
        registry.register(
            "atoll_proxy_sync_proxy_rules_errors",
            "Syncs that nft refused or could not run",
            m.sync_errors.clone(),
        );
        registry.register(
            "atoll_proxy_rules_programmed",
            "Service rules and map elements in the table after the last sync",
            m.rules.clone(),
        );
        registry.register(
            "atoll_proxy_sync_proxy_rules_last_timestamp_seconds",
            "When the last successful sync finished (Unix time)",
            m.last_sync.clone(),
        );
        m
    }

    /// The `/healthz` check.
    pub fn health_check(&self) -> atoll_client::metrics::HealthCheck {
        let health = self.health.clone();
        Arc::new(move || {
            let h = health
                .lock()
                .map_err(|_| "health state poisoned".to_string())?;
            if h.last_pass.elapsed() > h.timeout {
                return Err(format!(
                    "the proxy loop has not run for {:?}",
                    h.last_pass.elapsed()
                ));
            }
            match h.pending_since {
                Some(t) if t.elapsed() > h.timeout => Err(format!(
                    "changes have waited {:?} without being programmed",
                    t.elapsed()
                )),
                _ => Ok(()),
            }
        })
    }
}

impl Observer for Metrics {
    fn synced(&mut self, o: &SyncOutcome) {
        let mode = if o.full { "full" } else { "partial" };
        self.sync_duration
            .get_or_create(&vec![("mode", mode)])
            .observe(o.duration.as_secs_f64());
        if o.ok {
            self.rules.set(i64::try_from(o.rules).unwrap_or(i64::MAX));
            let now = SystemTime::now()
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default();
            self.last_sync.set(now.as_secs_f64());
        } else {
            self.sync_errors.inc();
        }
    }

    fn pass(&mut self, pending: bool) {
        if let Ok(mut h) = self.health.lock() {
            h.last_pass = Instant::now();
            if !pending {
                h.pending_since = None;
            } else if h.pending_since.is_none() {
                h.pending_since = Some(Instant::now());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn health_fails_when_changes_wait_too_long() {
        let mut m = Metrics::new(&mut Registry::default(), Duration::from_millis(50));
        let check = m.health_check();
        m.pass(false);
        assert!(check().is_ok());
        m.pass(true);
        assert!(check().is_ok());
        std::thread::sleep(Duration::from_millis(80));
        m.pass(true);
        assert!(check().unwrap_err().contains("without being programmed"));
        m.pass(false);
        assert!(check().is_ok());
    }
}
