//! Leader election against a real API server and etcd.

use std::time::Duration;

use atoll_client::Error;
use atoll_client::leader::{LeaderElection, LeaseConfig};
use atoll_testkit::Cluster;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::PostParams;
use tokio::sync::oneshot;
use tokio::time::timeout;

fn fast(identity: &str) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_millis(1500),
        renew_deadline: Duration::from_millis(1000),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("kube-system", "test-lease", identity)
    }
}

async fn holder(api: &Api<Lease>) -> String {
    let lease = api.get("test-lease").await.expect("lease");
    lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default()
}

/// Runs an election as `identity` whose work signals that it leads and then never ends.
fn lead_forever(
    c: &Cluster,
    identity: &str,
) -> (
    tokio::task::JoinHandle<Result<(), Error>>,
    oneshot::Receiver<()>,
) {
    let elector = LeaderElection::new(c.kube_client(), fast(identity));
    let (leads, leading) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        elector
            .run(async move {
                let _ = leads.send(());
                std::future::pending::<()>().await;
            })
            .await
    });
    (task, leading)
}

#[tokio::test]
async fn one_leader_at_a_time_and_handover_on_release_expiry_and_loss() {
    let c = Cluster::start().await;
    let api: Api<Lease> = Api::namespaced(c.kube_client(), "kube-system");

    // A leads until its work ends; B waits meanwhile.
    let (stop_a, stopped_a) = oneshot::channel::<()>();
    let (a_leads, a_leading) = oneshot::channel::<()>();
    let a = LeaderElection::new(c.kube_client(), fast("a"));
    let a_task = tokio::spawn(async move {
        a.run(async move {
            let _ = a_leads.send(());
            let _ = stopped_a.await;
        })
        .await
    });
    timeout(Duration::from_secs(10), a_leading)
        .await
        .expect("A leads")
        .expect("signal");
    let (b_task, mut b_leading) = lead_forever(&c, "b");
    // Longer than the lease duration: A renews, so B must not take over.
    assert!(
        timeout(Duration::from_millis(2500), &mut b_leading)
            .await
            .is_err()
    );
    assert_eq!(holder(&api).await, "a");
    // A releases when its work ends; B takes over without waiting for the lease to expire.
    stop_a.send(()).expect("A running");
    assert!(matches!(a_task.await.expect("join"), Ok(())));
    timeout(Duration::from_secs(1), b_leading)
        .await
        .expect("B leads at once")
        .expect("signal");
    assert_eq!(holder(&api).await, "b");

    // B dies without releasing: C takes over once the lease expired.
    b_task.abort();
    let _ = b_task.await;
    let (c_task, c_leading) = lead_forever(&c, "c");
    timeout(Duration::from_secs(10), c_leading)
        .await
        .expect("C leads")
        .expect("signal");
    let lease = api.get("test-lease").await.expect("lease");
    assert_eq!(
        lease.spec.as_ref().and_then(|s| s.lease_transitions),
        Some(2)
    );

    // Someone else takes the lease from C: C stops acting.
    let mut taken = lease;
    if let Some(spec) = taken.spec.as_mut() {
        spec.holder_identity = Some("intruder".into());
    }
    api.replace("test-lease", &PostParams::default(), &taken)
        .await
        .expect("take");
    let lost = timeout(Duration::from_secs(10), c_task)
        .await
        .expect("C stops")
        .expect("join");
    assert!(matches!(lost, Err(Error::LostLease(_))), "{lost:?}");
}
