//! Shared informers: one list+watch per kind for the whole controller manager, kept in a [`Store`]
//! indexed by namespace, with handlers that controllers register to turn changes into work-queue keys.
//! Objects are decoded without their managedFields ([`Lean`]). After every (re)list the store is
//! replaced by what was listed and handlers hear of what changed or went meanwhile, so a controller
//! never acts on an object that a missed event would have removed.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use atoll_client::lean::Lean;
use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource, ResourceExt};
use serde::de::DeserializeOwned;

/// What an informer can hold: any namespaced or cluster-scoped built-in kind.
pub trait Object:
    Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}
impl<K> Object for K where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static
{
}

/// The work-queue key of an object: `namespace/name`, or `name` for cluster-scoped objects.
pub fn key<K: Resource>(obj: &K) -> String {
    let name = obj.meta().name.as_deref().unwrap_or("");
    match obj.meta().namespace.as_deref() {
        Some(ns) if !ns.is_empty() => format!("{ns}/{name}"),
        _ => name.to_string(),
    }
}

/// Splits a key made by [`key`] into namespace ("" for cluster-scoped) and name.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or(("", key))
}

type ByName<K> = HashMap<String, Arc<K>>;

/// The objects an informer has seen, by namespace then name. Cheap to clone: clones share it.
pub struct Store<K>(Arc<RwLock<HashMap<String, ByName<K>>>>);

impl<K> Clone for Store<K> {
    fn clone(&self) -> Self {
        Store(self.0.clone())
    }
}

impl<K> Default for Store<K> {
    fn default() -> Self {
        Store(Arc::default())
    }
}

impl<K: Object> Store<K> {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, HashMap<String, ByName<K>>> {
        self.0.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashMap<String, ByName<K>>> {
        self.0.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The object `name` in `namespace` ("" for cluster-scoped kinds).
    pub fn get(&self, namespace: &str, name: &str) -> Option<Arc<K>> {
        self.read().get(namespace)?.get(name).cloned()
    }

    /// The object with this work-queue key.
    pub fn get_key(&self, key: &str) -> Option<Arc<K>> {
        let (ns, name) = split_key(key);
        self.get(ns, name)
    }

    /// Every object in `namespace`.
    pub fn list_namespace(&self, namespace: &str) -> Vec<Arc<K>> {
        self.read()
            .get(namespace)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Every object.
    pub fn list(&self) -> Vec<Arc<K>> {
        self.read()
            .values()
            .flat_map(|m| m.values().cloned())
            .collect()
    }

    /// How many objects there are.
    pub fn len(&self) -> usize {
        self.read().values().map(HashMap::len).sum()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Stores `obj`, returning what it replaces.
    fn insert(&self, obj: K) -> (Option<Arc<K>>, Arc<K>) {
        let obj = Arc::new(obj);
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let old = self
            .write()
            .entry(ns)
            .or_default()
            .insert(obj.name_any(), obj.clone());
        (old, obj)
    }

    /// Removes `obj`'s entry, returning it.
    fn remove(&self, obj: &K) -> Option<Arc<K>> {
        let ns = obj.meta().namespace.clone().unwrap_or_default();
        let mut map = self.write();
        let by_name = map.get_mut(&ns)?;
        let old = by_name.remove(&obj.name_any());
        if by_name.is_empty() {
            map.remove(&ns);
        }
        old
    }

    /// Replaces everything with `objects`, returning the old contents.
    fn replace(&self, objects: Vec<K>) -> HashMap<String, ByName<K>> {
        let mut fresh: HashMap<String, ByName<K>> = HashMap::new();
        for obj in objects {
            let ns = obj.meta().namespace.clone().unwrap_or_default();
            fresh
                .entry(ns)
                .or_default()
                .insert(obj.name_any(), Arc::new(obj));
        }
        std::mem::replace(&mut *self.write(), fresh)
    }
}

/// A change an informer reports: (old, new); `old` is None for an added object, `new` None for a
/// deleted one.
pub type Handler<K> = Box<dyn Fn(Option<&K>, Option<&K>) + Send + Sync>;

/// One kind's list+watch, its store, and the handlers to tell of changes.
pub struct Informer<K: Object> {
    api: Api<Lean<K>>,
    store: Store<K>,
    handlers: Mutex<Vec<Handler<K>>>,
    synced: tokio::sync::watch::Sender<bool>,
    /// Applied before each watch event: a deliberately slow cache, for tests.
    delay: Option<Duration>,
}

impl<K: Object> Informer<K>
where
    K::Scope: Send,
{
    /// An informer over every object of the kind (all namespaces).
    pub fn new(client: kube::Client, delay: Option<Duration>) -> Arc<Self> {
        Arc::new(Informer {
            api: Api::all(client),
            store: Store::default(),
            handlers: Mutex::default(),
            synced: tokio::sync::watch::Sender::new(false),
            delay,
        })
    }

    /// The store (filled once [`Informer::synced`] completes).
    pub fn store(&self) -> Store<K> {
        self.store.clone()
    }

    /// Registers a handler; register before the informer runs to hear of the first list.
    pub fn on_change(&self, handler: impl Fn(Option<&K>, Option<&K>) + Send + Sync + 'static) {
        self.handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Box::new(handler));
    }

    /// Completes once the first list is in the store.
    pub async fn synced(&self) {
        let mut rx = self.synced.subscribe();
        let _ = rx.wait_for(|s| *s).await;
    }

    fn notify(&self, old: Option<&K>, new: Option<&K>) {
        for h in self
            .handlers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
        {
            h(old, new);
        }
    }

    /// Lists and watches until the watch can no longer go on (it retries with backoff first).
    pub async fn run(&self) {
        let stream = watcher(self.api.clone(), watcher::Config::default()).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut listing: Vec<K> = vec![];
        while let Some(event) = stream.next().await {
            if let Some(d) = self.delay {
                tokio::time::sleep(d).await;
            }
            match event {
                Ok(watcher::Event::Init) => listing.clear(),
                Ok(watcher::Event::InitApply(o)) => listing.push(o.0),
                Ok(watcher::Event::InitDone) => {
                    let mut old = self.store.replace(std::mem::take(&mut listing));
                    for new in self.store.list() {
                        let ns = new.meta().namespace.clone().unwrap_or_default();
                        let before = old.get_mut(&ns).and_then(|m| m.remove(&new.name_any()));
                        let unchanged = before.as_ref().is_some_and(|b| {
                            b.meta().resource_version == new.meta().resource_version
                        });
                        if !unchanged {
                            self.notify(before.as_deref(), Some(&new));
                        }
                    }
                    for gone in old.into_values().flat_map(HashMap::into_values) {
                        self.notify(Some(&gone), None);
                    }
                    self.synced.send_replace(true);
                }
                Ok(watcher::Event::Apply(o)) => {
                    let (old, new) = self.store.insert(o.0);
                    self.notify(old.as_deref(), Some(&new));
                }
                Ok(watcher::Event::Delete(o)) => {
                    let old = self.store.remove(&o.0);
                    self.notify(Some(old.as_deref().unwrap_or(&o.0)), None);
                }
                Err(e) => tracing::warn!(kind = %K::kind(&()), "watch: {e}"),
            }
        }
    }
}
