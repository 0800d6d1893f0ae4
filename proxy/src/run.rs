//! The proxy's loop: two watches (Services, EndpointSlices) feed one task that owns the [`State`],
//! takes in every update that is waiting, then programs the kernel: the whole table at start, after
//! an error and when the node's addresses change, else only what changed.

use std::time::Duration;

use atoll_client::lean::Lean;
use atoll_client::watch::forward;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use kube::Api;
use kube::runtime::watcher;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::addrs::{self, Cidr};
use crate::rules::Base;
use crate::state::State;
use crate::{Config, Error, nft};

/// How often the node's addresses are looked at again.
const ADDRESS_CHECK: Duration = Duration::from_secs(10);
/// The longest wait before a failed sync is tried again.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What the watches report.
enum Update {
    Service(Box<watcher::Event<Lean<Service>>>),
    Slice(Box<watcher::Event<Lean<EndpointSlice>>>),
}

/// What one sync did, for the metrics.
pub struct SyncOutcome {
    /// Whether the whole table was replaced.
    pub full: bool,
    /// How long it took.
    pub duration: Duration,
    /// Whether it succeeded.
    pub ok: bool,
    /// Rules and elements programmed after it.
    pub rules: usize,
}

/// Called after every sync and every pass of the loop.
pub trait Observer: Send {
    /// A sync ran.
    fn synced(&mut self, outcome: &SyncOutcome);
    /// The loop made a pass; `pending` says whether changes still wait.
    fn pass(&mut self, pending: bool);
}

/// Tracks one watch's relists: objects gathered between `Init` and `InitDone`.
struct Relist<K> {
    buffer: Option<Vec<K>>,
    synced: bool,
}

impl<K> Relist<K> {
    fn new() -> Self {
        Relist {
            buffer: None,
            synced: false,
        }
    }
}

/// The node's settings from the flags and its interfaces now.
fn base(config: &Config, cidrs: &[Cidr]) -> Base {
    Base {
        cluster_cidr: config.cluster_cidr.clone(),
        node_ips: addrs::node_ips(cidrs, &addrs::local_ips()),
    }
}

/// Watches and programs until a watch ends (it does not while the API server is reachable or
/// retried).
pub async fn proxy(
    client: kube::Client,
    config: Config,
    mut observer: impl Observer,
) -> Result<(), Error> {
    let cidrs = config
        .nodeport_addresses
        .iter()
        .map(|c| Cidr::parse(c))
        .collect::<Result<Vec<_>, _>>()?;
    if let Some(c) = &config.cluster_cidr {
        Cidr::parse(c)?;
    }
    let mut localnet_set = false;
    let mut state = State::new(&config.node_name, base(&config, &cidrs));
    let (tx, mut rx) = mpsc::channel(4096);
    let watches = [
        forward(
            Api::<Lean<Service>>::all(client.clone()),
            watcher::Config::default(),
            tx.clone(),
            |e| Update::Service(Box::new(e)),
        ),
        forward(
            Api::<Lean<EndpointSlice>>::all(client),
            watcher::Config::default(),
            tx,
            |e| Update::Slice(Box::new(e)),
        ),
    ];
    let _abort = AbortOnDrop(watches);
    let mut services: Relist<Service> = Relist::new();
    let mut slices: Relist<EndpointSlice> = Relist::new();
    let mut next_address_check = Instant::now() + ADDRESS_CHECK;
    let mut backoff = Duration::from_millis(500);
    let mut retry_at: Option<Instant> = None;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            update = rx.recv() => {
                let Some(update) = update else {
                    return Err(Error::Config("the watches ended".into()));
                };
                take(&mut state, &mut services, &mut slices, update);
                // Take in everything already waiting before programming.
                while let Ok(update) = rx.try_recv() {
                    take(&mut state, &mut services, &mut slices, update);
                }
            }
            _ = tick.tick() => {}
        }
        if Instant::now() >= next_address_check {
            next_address_check = Instant::now() + ADDRESS_CHECK;
            state.set_base(base(&config, &cidrs));
        }
        let ready = services.synced && slices.synced;
        if ready && state.pending() && retry_at.is_none_or(|t| Instant::now() >= t) {
            if !localnet_set && state.base().node_ips.iter().any(|ip| ip.is_loopback()) {
                match addrs::enable_route_localnet() {
                    Ok(()) => localnet_set = true,
                    Err(e) => tracing::warn!("localhost NodePorts will not answer: {e}"),
                }
            }
            let plan = state.plan();
            let full = plan.full;
            let started = Instant::now();
            let result = if plan.script.is_empty() {
                Ok(())
            } else {
                nft::apply(&plan.script).await
            };
            let ok = result.is_ok();
            match result {
                Ok(()) => {
                    for (flow, ep) in &plan.stale_udp {
                        nft::flush_udp(flow, *ep).await;
                    }
                    state.done(plan);
                    retry_at = None;
                    backoff = Duration::from_millis(500);
                }
                Err(e) => {
                    tracing::warn!(
                        full,
                        "programming nftables failed, retrying with a full sync: {e}"
                    );
                    state.failed();
                    retry_at = Some(Instant::now() + backoff);
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
            observer.synced(&SyncOutcome {
                full,
                duration: started.elapsed(),
                ok,
                rules: state.rules_programmed(),
            });
        }
        observer.pass(!ready || state.pending());
    }
}

/// Aborts the watch tasks when the loop ends.
struct AbortOnDrop([tokio::task::JoinHandle<()>; 2]);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        for t in &self.0 {
            t.abort();
        }
    }
}

/// Applies one watch event to the state.
fn take(
    state: &mut State,
    services: &mut Relist<Service>,
    slices: &mut Relist<EndpointSlice>,
    update: Update,
) {
    match update {
        Update::Service(e) => match *e {
            watcher::Event::Apply(Lean(s)) => state.service_applied(&s),
            watcher::Event::Delete(Lean(s)) => state.service_deleted(&s),
            watcher::Event::Init => services.buffer = Some(Vec::new()),
            watcher::Event::InitApply(Lean(s)) => services.buffer.get_or_insert_default().push(s),
            watcher::Event::InitDone => {
                state.services_relisted(&services.buffer.take().unwrap_or_default());
                services.synced = true;
            }
        },
        Update::Slice(e) => match *e {
            watcher::Event::Apply(Lean(s)) => state.slice_applied(&s),
            watcher::Event::Delete(Lean(s)) => state.slice_deleted(&s),
            watcher::Event::Init => slices.buffer = Some(Vec::new()),
            watcher::Event::InitApply(Lean(s)) => slices.buffer.get_or_insert_default().push(s),
            watcher::Event::InitDone => {
                state.slices_relisted(&slices.buffer.take().unwrap_or_default());
                slices.synced = true;
            }
        },
    }
}
