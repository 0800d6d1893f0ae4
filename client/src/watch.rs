//! A watch forwarded into a channel, so one task can take in the events of several kinds in the
//! order they come (the scheduler's and the proxy's loops).

use futures::StreamExt;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Resource};
use tokio::sync::mpsc;

/// Forwards a watch of `api` (with `config`, re-listing with back-off after errors) into `tx`, each
/// event `wrap`ped; returns when the receiver is gone.
pub fn forward<K, U>(
    api: Api<K>,
    config: watcher::Config,
    tx: mpsc::Sender<U>,
    wrap: fn(watcher::Event<K>) -> U,
) -> tokio::task::JoinHandle<()>
where
    K: Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default,
    U: Send + 'static,
{
    tokio::spawn(async move {
        let mut events = std::pin::pin!(watcher(api, config).default_backoff());
        while let Some(event) = events.next().await {
            match event {
                Ok(e) => {
                    if tx.send(wrap(e)).await.is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!("watch: {e}"),
            }
        }
    })
}
