//! The one shape every controller has: informers turn changes into keys on a [`Queue`], and workers
//! reconcile one key at a time from the informers' stores ([`run`]). [`Informers`] hands out one shared
//! informer per kind; [`Metrics`] are the work-queue and reconcile metrics on `/metrics`.

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::informer::{Informer, Object};
use crate::queue::{Queue, QueueMetrics};

/// Why one reconcile failed; the key is retried with backoff.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// An API request failed.
    #[error(transparent)]
    Api(#[from] kube::Error),
    /// Something else went wrong.
    #[error("{0}")]
    Failed(String),
}

/// What a reconcile asks for next: nothing (`None`), or to look again after a while.
pub type Requeue = Option<Duration>;

/// The label of queue metrics: the controller's name, as client-go's `name`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabel {
    name: String,
}

/// The label of reconcile metrics.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabel {
    controller: String,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

fn duration_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.0005, 2.0, 18))
}

/// Work-queue and reconcile metrics of every controller.
pub struct Metrics {
    depth: Family<QueueLabel, Gauge>,
    adds: Family<QueueLabel, Counter>,
    retries: Family<QueueLabel, Counter>,
    queue_duration: Histograms<QueueLabel>,
    work_duration: Histograms<QueueLabel>,
    errors: Family<ControllerLabel, Counter>,
}

impl Metrics {
    /// The metrics, registered in `registry`.
    pub fn register(registry: &mut Registry) -> Arc<Metrics> {
        let m = Metrics {
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(duration_histogram),
            work_duration: Family::new_with_constructor(duration_histogram),
            errors: Family::default(),
        };
        registry.register(
            "workqueue_depth",
            "Keys waiting in a controller's work queue",
            m.depth.clone(),
        );
        registry.register(
            "workqueue_adds",
            "Keys added to a controller's work queue",
            m.adds.clone(),
        );
        registry.register(
            "workqueue_retries",
            "Keys put back in a controller's work queue after a failure",
            m.retries.clone(),
        );
        registry.register(
            "workqueue_queue_duration_seconds",
            "How long a key waited in the queue before a worker took it",
            m.queue_duration.clone(),
        );
        registry.register(
            "workqueue_work_duration_seconds",
            "How long reconciling one key took",
            m.work_duration.clone(),
        );
        registry.register(
            "controller_reconcile_errors",
            "Reconciles that failed, per controller",
            m.errors.clone(),
        );
        Arc::new(m)
    }

    /// A new work queue for controller `name`, reporting to these metrics.
    pub fn queue(&self, name: &str) -> Queue {
        let label = QueueLabel { name: name.into() };
        Queue::new(QueueMetrics {
            depth: self.depth.get_or_create(&label).clone(),
            adds: self.adds.get_or_create(&label).clone(),
            retries: self.retries.get_or_create(&label).clone(),
            queue_duration: Some(self.queue_duration.get_or_create(&label).clone()),
        })
    }
}

/// Runs `workers` workers that take keys from `queue` and reconcile them, forever. A failed key is
/// retried with backoff; `Ok(Some(d))` looks at the key again after `d`.
pub async fn run<F, Fut>(
    name: &'static str,
    queue: Queue,
    workers: usize,
    metrics: &Metrics,
    reconcile: F,
) where
    F: Fn(String) -> Fut,
    Fut: Future<Output = Result<Requeue, ReconcileError>>,
{
    let label = QueueLabel { name: name.into() };
    let work = metrics.work_duration.get_or_create(&label).clone();
    let errors = metrics
        .errors
        .get_or_create(&ControllerLabel {
            controller: name.into(),
        })
        .clone();
    let worker = |_| async {
        loop {
            let key = queue.next().await;
            let started = Instant::now();
            let result = reconcile(key.clone()).await;
            work.observe(started.elapsed().as_secs_f64());
            match result {
                Ok(again) => {
                    queue.forget(&key);
                    if let Some(d) = again {
                        queue.add_after(key.clone(), d);
                    }
                }
                Err(e) => {
                    errors.inc();
                    tracing::info!(controller = name, %key, "reconcile failed, will retry: {e}");
                    queue.retry(&key);
                }
            }
            queue.done(&key);
        }
    };
    futures::future::join_all((0..workers.max(1)).map(worker)).await;
}

type Runner = Pin<Box<dyn Future<Output = ()> + Send>>;

/// One shared informer per kind, made on first use; [`Informers::run`] then runs all that were asked
/// for. Controllers ask for theirs and register their handlers before the informers run.
pub struct Informers {
    client: kube::Client,
    delay: Option<Duration>,
    made: Mutex<HashMap<TypeId, Arc<dyn Any + Send + Sync>>>,
    runners: Mutex<Vec<Runner>>,
}

impl Informers {
    /// No informers yet. `delay` slows every watch event down (a deliberately slow cache, for tests).
    pub fn new(client: kube::Client, delay: Option<Duration>) -> Informers {
        Informers {
            client,
            delay,
            made: Mutex::default(),
            runners: Mutex::default(),
        }
    }

    /// The shared informer of kind `K`.
    pub fn get<K: Object>(&self) -> Arc<Informer<K>>
    where
        K::Scope: Send,
    {
        let mut made = self.made.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(i) = made
            .get(&TypeId::of::<K>())
            .and_then(|a| a.clone().downcast::<Informer<K>>().ok())
        {
            return i;
        }
        let informer = Informer::<K>::new(self.client.clone(), self.delay);
        made.insert(TypeId::of::<K>(), informer.clone());
        let running = informer.clone();
        self.runners
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::pin(async move { running.run().await }));
        informer
    }

    /// Runs every informer asked for so far, until their watches end.
    pub async fn run(&self) {
        let runners = std::mem::take(&mut *self.runners.lock().unwrap_or_else(|e| e.into_inner()));
        futures::future::join_all(runners).await;
    }
}
