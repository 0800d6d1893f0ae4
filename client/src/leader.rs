//! Leader election through a `coordination.k8s.io/v1` Lease, the way Kubernetes components do it:
//! one copy holds the Lease and renews it; the others watch it and take over once it has not been
//! renewed for the lease duration. Expiry is judged by when this copy last saw the Lease change (its
//! own clock), never by comparing the holder's timestamps with ours, so clock skew cannot make two
//! leaders.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use kube::Api;
use kube::api::PostParams;
use tokio::time::Instant;

use crate::Error;

/// Which Lease to hold, as whom, and how often.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease (Kubernetes uses `kube-system`).
    pub namespace: String,
    /// Name of the Lease, e.g. `kube-scheduler`.
    pub name: String,
    /// This copy's identity, unique among the copies (host name plus a random suffix).
    pub identity: String,
    /// How long a Lease that is not renewed stays held (Kubernetes: 15 s).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal before it gives up (10 s).
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew (2 s).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Kubernetes' default timings for the Lease `namespace/name`, held as `identity`.
    pub fn new(namespace: &str, name: &str, identity: &str) -> LeaseConfig {
        LeaseConfig {
            namespace: namespace.into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// A unique identity for this process: the host name and a random suffix (as Kubernetes
/// components use).
pub fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "atoll".into());
    format!("{host}_{}", uuid::Uuid::new_v4())
}

/// The Lease as this copy last saw it, and when that was.
#[derive(Debug, Default)]
struct Observed {
    resource_version: String,
    since: Option<Instant>,
}

/// Runs work only while this copy holds the Lease.
pub struct LeaderElection {
    api: Api<Lease>,
    config: LeaseConfig,
}

impl LeaderElection {
    /// An election over `config`'s Lease.
    pub fn new(client: kube::Client, config: LeaseConfig) -> LeaderElection {
        LeaderElection {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// Waits until this copy holds the Lease, then runs `work` while renewing it. Returns what `work`
    /// returns (and releases the Lease), or [`Error::LostLease`] as soon as the Lease is lost: another
    /// copy holds it, or no renewal succeeded within the renew deadline. `work` is dropped then.
    pub async fn run<F: Future>(&self, work: F) -> Result<F::Output, Error> {
        let mut observed = Observed::default();
        loop {
            match self.try_acquire_or_renew(&mut observed).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => tracing::warn!(lease = %self.config.name, "acquiring the lease: {e}"),
            }
            tokio::time::sleep(self.config.retry_period).await;
        }
        tracing::info!(lease = %self.config.name, identity = %self.config.identity, "became leader");
        tokio::select! {
            out = work => {
                self.release().await;
                Ok(out)
            }
            lost = self.keep(&mut observed) => Err(lost),
        }
    }

    /// Renews the Lease every retry period; returns when it is lost.
    async fn keep(&self, observed: &mut Observed) -> Error {
        let mut renewed = Instant::now();
        loop {
            tokio::time::sleep(self.config.retry_period).await;
            match self.try_acquire_or_renew(observed).await {
                Ok(true) => renewed = Instant::now(),
                Ok(false) => return Error::LostLease(self.config.name.clone()),
                Err(e) => tracing::warn!(lease = %self.config.name, "renewing the lease: {e}"),
            }
            if renewed.elapsed() > self.config.renew_deadline {
                return Error::LostLease(self.config.name.clone());
            }
        }
    }

    /// One round: creates, renews or takes over the Lease. `Ok(true)` when this copy holds it now.
    async fn try_acquire_or_renew(&self, observed: &mut Observed) -> Result<bool, Error> {
        let now = MicroTime(jiff::Timestamp::now());
        let duration = i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX);
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.config.identity.clone()),
                    lease_duration_seconds: Some(duration),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..Default::default()
                }),
            };
            return conflict_is_false(self.api.create(&PostParams::default(), &lease).await);
        };
        let spec = lease.spec.get_or_insert_with(Default::default);
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if observed.resource_version != rv || observed.since.is_none() {
            observed.resource_version = rv;
            observed.since = Some(Instant::now());
        }
        if holder != self.config.identity {
            // Someone else's Lease stays theirs until it has gone unchanged for its duration.
            let held_for = spec
                .lease_duration_seconds
                .map(|s| Duration::from_secs(s.max(0) as u64))
                .unwrap_or(self.config.lease_duration);
            let unchanged = observed.since.map(|t| t.elapsed()).unwrap_or_default();
            if !holder.is_empty() && unchanged < held_for {
                return Ok(false);
            }
            spec.holder_identity = Some(self.config.identity.clone());
            spec.acquire_time = Some(now.clone());
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        }
        spec.renew_time = Some(now);
        spec.lease_duration_seconds = Some(duration);
        // The read resourceVersion stays in the object: the replace fails with 409 if the Lease moved.
        let written = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await;
        if let Ok(l) = &written {
            observed.resource_version = l.metadata.resource_version.clone().unwrap_or_default();
            observed.since = Some(Instant::now());
        }
        conflict_is_false(written)
    }

    /// Gives the Lease up so another copy need not wait for it to expire.
    async fn release(&self) {
        let Ok(Some(mut lease)) = self.api.get_opt(&self.config.name).await else {
            return;
        };
        let Some(spec) = lease.spec.as_mut() else {
            return;
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return;
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.renew_time = Some(MicroTime(jiff::Timestamp::now()));
        if let Err(e) = self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            tracing::warn!(lease = %self.config.name, "releasing the lease: {e}");
        }
    }
}

/// A write that lost a race (409) means "not held"; other errors are errors.
fn conflict_is_false(result: Result<Lease, kube::Error>) -> Result<bool, Error> {
    match result {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}
