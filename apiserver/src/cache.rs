//! The watch cache: one etcd watch per resource feeds an in-memory copy of the resource and a window
//! of recent events. Client watches are served from it, never by an etcd watch of their own.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use atoll_api::{ApiError, KindInfo};
use etcd_client::{EventType as EtcdEventType, WatchOptions};
use tokio::sync::{broadcast, watch};

use crate::object::{Filter, Obj, ObjReader};
use crate::storage::{Store, prefix_end};

/// How many recent events a cache keeps for watches that resume from a resourceVersion.
pub const WINDOW: usize = 4096;
/// How many events a slow watcher may fall behind before it is closed (it then re-lists).
const BROADCAST_CAPACITY: usize = 8192;

/// The type of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventType {
    /// The object appeared.
    Added,
    /// The object changed.
    Modified,
    /// The object was removed; the event carries its last state.
    Deleted,
}

impl EventType {
    /// The wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::Added => "ADDED",
            EventType::Modified => "MODIFIED",
            EventType::Deleted => "DELETED",
        }
    }
}

/// A change to one object.
#[derive(Debug)]
pub struct Event {
    /// What happened.
    pub kind: EventType,
    /// The object after the change (for a delete: its last state at the delete's revision).
    pub obj: Arc<Obj>,
    /// The object before the change, if it existed.
    pub prev: Option<Arc<Obj>>,
}

impl Event {
    /// The revision of the change.
    pub fn revision(&self) -> i64 {
        self.obj.revision
    }

    /// The event as a watcher with `filter` sees it: a change that moves an object into the selection
    /// is ADDED, one that moves it out is DELETED (with the previous state), others are hidden.
    pub fn for_filter(&self, kind: &KindInfo, filter: &Filter) -> Option<(EventType, Arc<Obj>)> {
        let now = filter.matches(kind, &self.obj);
        let before = self.prev.as_ref().is_some_and(|p| filter.matches(kind, p));
        match self.kind {
            EventType::Added => now.then(|| (EventType::Added, self.obj.clone())),
            EventType::Deleted => now.then(|| (EventType::Deleted, self.obj.clone())),
            EventType::Modified => match (before, now) {
                (true, true) => Some((EventType::Modified, self.obj.clone())),
                (false, true) => Some((EventType::Added, self.obj.clone())),
                (true, false) => {
                    let prev = self.prev.as_ref()?;
                    Some((
                        EventType::Deleted,
                        Arc::new(prev.at_revision(kind, self.obj.revision)),
                    ))
                }
                (false, false) => None,
            },
        }
    }
}

struct State {
    objects: BTreeMap<String, Arc<Obj>>,
    window: VecDeque<Arc<Event>>,
    /// Events after this revision are all in `window`.
    window_start: i64,
    /// The revision the cache reflects.
    revision: i64,
}

/// A watch started on the cache: what to replay first, then live events.
pub struct Subscription {
    /// Events to deliver first, in order (synthetic ADDED events or a replay).
    pub initial: Vec<(EventType, Arc<Obj>)>,
    /// The revision the initial events bring the watcher to.
    pub revision: i64,
    /// Live events; those at or below `revision` are to be skipped.
    pub live: broadcast::Receiver<Arc<Event>>,
}

/// The cache of one resource.
pub struct WatchCache {
    kind: Arc<KindInfo>,
    reader: ObjReader,
    state: RwLock<State>,
    events: broadcast::Sender<Arc<Event>>,
    progress: watch::Sender<i64>,
    /// Turns true when the resource is no longer served: the etcd watch ends.
    stopped: watch::Sender<bool>,
}

impl WatchCache {
    /// Starts a cache for `kind`: lists it from etcd, then follows an etcd watch in the background.
    pub fn start(kind: Arc<KindInfo>, store: Store) -> Arc<Self> {
        let cache = Arc::new(WatchCache {
            reader: ObjReader::new(kind.clone()),
            kind,
            state: RwLock::new(State {
                objects: BTreeMap::new(),
                window: VecDeque::new(),
                window_start: 0,
                revision: 0,
            }),
            events: broadcast::channel(BROADCAST_CAPACITY).0,
            progress: watch::channel(0).0,
            stopped: watch::channel(false).0,
        });
        let weak = Arc::downgrade(&cache);
        let mut stopped = cache.stopped.subscribe();
        tokio::spawn(async move {
            loop {
                let Some(cache) = weak.upgrade() else { return };
                tokio::select! {
                    r = cache.follow(&store) => if let Err(e) = r {
                        tracing::warn!(resource = %cache.kind.qualified(), "watch cache restarting: {e}");
                    },
                    _ = stopped.wait_for(|s| *s) => return,
                }
                drop(cache);
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        });
        cache
    }

    /// Stops following etcd: the resource is no longer served.
    pub fn stop(&self) {
        self.stopped.send_replace(true);
    }

    /// Waits until the cache reflects at least `revision` (or `timeout` passes).
    pub async fn wait_for(&self, revision: i64, timeout: Duration) -> Result<(), ApiError> {
        let mut rx = self.progress.subscribe();
        let res = tokio::time::timeout(timeout, rx.wait_for(|r| *r >= revision)).await;
        match res {
            Ok(Ok(_)) => Ok(()),
            _ => Err(ApiError::timeout(format!(
                "Too large resource version: {revision}, current: {}; the watch cache of {} is behind",
                *self.progress.borrow(),
                self.kind.qualified()
            ))),
        }
    }

    /// Whether the cache has loaded its initial list.
    pub fn ready(&self) -> bool {
        *self.progress.borrow() > 0
    }

    /// The revision the cache reflects.
    pub fn revision(&self) -> i64 {
        self.read().revision
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        self.state.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        self.state.write().unwrap_or_else(|p| p.into_inner())
    }

    /// The selected objects as the cache holds them now, in key order, and the cache's revision.
    pub fn list(&self, filter: &Filter) -> (Vec<Arc<Obj>>, i64) {
        let state = self.read();
        let items = state
            .objects
            .values()
            .filter(|o| filter.matches(&self.kind, o))
            .cloned()
            .collect();
        (items, state.revision)
    }

    /// The selected objects among the keys in `[start, end)`, how many keys the range holds in all,
    /// and the revision the cache reflects: one consistent snapshot.
    pub fn snapshot(&self, start: &str, end: &[u8], filter: &Filter) -> (Vec<Arc<Obj>>, i64, i64) {
        let state = self.read();
        let mut total = 0;
        let mut items = vec![];
        let end = String::from_utf8_lossy(end);
        for (_, o) in state.objects.range::<str, _>((
            std::ops::Bound::Included(start),
            std::ops::Bound::Excluded(end.as_ref()),
        )) {
            total += 1;
            if filter.matches(&self.kind, o) {
                items.push(o.clone());
            }
        }
        (items, total, state.revision)
    }

    /// One object by key, if cached.
    pub fn get(&self, key: &str) -> Option<Arc<Obj>> {
        self.read().objects.get(key).cloned()
    }

    /// Starts a watch. `from`: `None` to start with synthetic ADDED events for what exists, or a
    /// revision to replay from (410 Gone when the window no longer reaches back that far).
    pub fn subscribe(&self, filter: &Filter, from: Option<i64>) -> Result<Subscription, ApiError> {
        let state = self.read();
        // Subscribing under the lock: every event is either in the snapshot/replay or on the channel.
        let live = self.events.subscribe();
        let initial = match from {
            None => state
                .objects
                .values()
                .filter(|o| filter.matches(&self.kind, o))
                .map(|o| (EventType::Added, o.clone()))
                .collect(),
            Some(rv) => {
                if rv < state.window_start {
                    return Err(ApiError::gone(format!(
                        "too old resource version: {rv} ({})",
                        state.window_start
                    )));
                }
                state
                    .window
                    .iter()
                    .filter(|e| e.revision() > rv)
                    .filter_map(|e| e.for_filter(&self.kind, filter))
                    .collect()
            }
        };
        let revision = match from {
            Some(rv) if rv > state.revision => rv,
            _ => state.revision,
        };
        Ok(Subscription {
            initial,
            revision,
            live,
        })
    }

    /// Lists the resource from etcd, then applies the etcd watch until it fails.
    async fn follow(&self, store: &Store) -> Result<(), String> {
        let prefix = self.kind.key_prefix();
        let end = prefix_end(&prefix);
        let mut objects = BTreeMap::new();
        let mut start = prefix.as_bytes().to_vec();
        let mut revision = 0;
        loop {
            let page = store
                .range(&start, &end, revision, 1000)
                .await
                .map_err(|e| e.to_string())?;
            revision = page.revision;
            for kv in &page.kvs {
                match self.reader.read(&kv.value, kv.revision) {
                    Ok(o) => {
                        objects.insert(kv.key.clone(), Arc::new(o));
                    }
                    Err(e) => tracing::error!(key = %kv.key, "skipping undecodable object: {e}"),
                }
            }
            match page.kvs.last() {
                Some(last) if page.more => {
                    start = last.key.as_bytes().to_vec();
                    start.push(0);
                }
                _ => break,
            }
        }
        self.reset(objects, revision);
        let opts = WatchOptions::new()
            .with_range(end)
            .with_start_revision(revision + 1);
        let mut stream = store
            .client()
            .watch_client()
            .watch(prefix.as_bytes().to_vec(), Some(opts))
            .await
            .map_err(|e| e.to_string())?;
        loop {
            let Some(resp) = stream.message().await.map_err(|e| e.to_string())? else {
                return Err("etcd closed the watch".into());
            };
            if resp.canceled() {
                return Err(format!(
                    "etcd cancelled the watch (compacted at {}): {}",
                    resp.compact_revision(),
                    resp.cancel_reason()
                ));
            }
            let mut changes = vec![];
            for ev in resp.events() {
                let Some(kv) = ev.kv() else { continue };
                let key = String::from_utf8_lossy(kv.key()).into_owned();
                match ev.event_type() {
                    EtcdEventType::Put => match self.reader.read(kv.value(), kv.mod_revision()) {
                        Ok(o) => changes.push((key, Some(Arc::new(o)), kv.mod_revision())),
                        Err(e) => tracing::error!(key, "skipping undecodable object: {e}"),
                    },
                    EtcdEventType::Delete => changes.push((key, None, kv.mod_revision())),
                }
            }
            // The cache's revision moves with events only: etcd 3.4's progress notifications can
            // overtake events, and consistent lists rely on this revision.
            if !changes.is_empty() {
                self.apply(changes);
            }
        }
    }

    /// Replaces the content after a (re)list, announcing the differences as events.
    fn reset(&self, objects: BTreeMap<String, Arc<Obj>>, revision: i64) {
        let mut state = self.write();
        let first_load = state.revision == 0;
        let mut changes: Vec<(String, Option<Arc<Obj>>, i64)> = vec![];
        if !first_load {
            let old: HashMap<&String, &Arc<Obj>> = state.objects.iter().collect();
            for (k, o) in &objects {
                if old.get(k).is_none_or(|p| p.revision != o.revision) {
                    changes.push((k.clone(), Some(o.clone()), o.revision));
                }
            }
            for k in state.objects.keys() {
                if !objects.contains_key(k) {
                    changes.push((k.clone(), None, revision));
                }
            }
        }
        if first_load {
            state.objects = objects;
            state.window_start = revision;
        } else {
            // Watchers behind this point cannot be replayed exactly: they get 410 and re-list.
            state.window.clear();
            state.window_start = revision;
            for (key, obj, _) in changes {
                self.apply_one(&mut state, key, obj, revision);
            }
        }
        state.revision = revision;
        drop(state);
        self.progress.send_replace(revision);
    }

    fn apply(&self, changes: Vec<(String, Option<Arc<Obj>>, i64)>) {
        let mut state = self.write();
        let mut revision = state.revision;
        for (key, obj, rev) in changes {
            revision = revision.max(rev);
            self.apply_one(&mut state, key, obj, rev);
        }
        state.revision = revision;
        drop(state);
        self.progress.send_replace(revision);
    }

    fn apply_one(&self, state: &mut State, key: String, obj: Option<Arc<Obj>>, revision: i64) {
        let event = match obj {
            Some(obj) => {
                let prev = state.objects.insert(key, obj.clone());
                let kind = if prev.is_some() {
                    EventType::Modified
                } else {
                    EventType::Added
                };
                Event { kind, obj, prev }
            }
            None => {
                let Some(prev) = state.objects.remove(&key) else {
                    return;
                };
                let obj = Arc::new(prev.at_revision(&self.kind, revision));
                Event {
                    kind: EventType::Deleted,
                    obj,
                    prev: Some(prev),
                }
            }
        };
        let event = Arc::new(event);
        if state.window.len() >= WINDOW
            && let Some(old) = state.window.pop_front()
        {
            state.window_start = old.revision();
        }
        state.window.push_back(event.clone());
        // No receivers is fine: nobody is watching.
        let _ = self.events.send(event);
    }
}
