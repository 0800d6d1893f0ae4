//! The `atoll scheduler` binary, two copies with leader election, driven with the real kubectl:
//! Node objects stand for nodes (no kubelets yet), pods come from YAML manifests.

use atoll_e2e::Env;

/// Two nodes in one multi-document manifest (a `kind: List` would make kubectl validate against
/// OpenAPI v2, which is not served yet).
const NODES: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-a
  labels: {disk: ssd}
status:
  allocatable: {cpu: '2', memory: 4Gi, pods: '110'}
  capacity: {cpu: '2', memory: 4Gi, pods: '110'}
  conditions: [{type: Ready, status: 'True'}]
---
apiVersion: v1
kind: Node
metadata:
  name: node-b
  labels: {disk: hdd}
status:
  allocatable: {cpu: '2', memory: 4Gi, pods: '110'}
  capacity: {cpu: '2', memory: 4Gi, pods: '110'}
  conditions: [{type: Ready, status: 'True'}]
";

/// The kubectl arguments that print who holds the scheduler's Lease.
const LEASE_HOLDER: &[&str] = &[
    "get",
    "lease",
    "-n",
    "kube-system",
    "kube-scheduler",
    "-o",
    "jsonpath={.spec.holderIdentity}",
];

fn pod(name: &str, cpu: &str, disk: Option<&str>) -> String {
    let selector = disk
        .map(|d| format!("  nodeSelector: {{disk: {d}}}\n"))
        .unwrap_or_default();
    format!(
        "apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
{selector}  containers:
  - name: c
    image: busybox:1.36
    resources:
      requests: {{cpu: '{cpu}'}}
"
    )
}

#[test]
fn two_schedulers_one_leader_pods_placed_and_explained() {
    let env = Env::start();
    let metrics = |p: u16| format!("--metrics-bind-address=127.0.0.1:{p}");
    let mut first = env.component(
        "scheduler-1",
        &["scheduler", &metrics(atoll_testkit::free_port())],
    );
    let nodes = env.write("nodes.yaml", NODES);
    env.ok(&["create", "-f", &nodes]);
    let holder = env.wait_for(LEASE_HOLDER, 30, |h| !h.is_empty());
    // A second copy waits: the first holds the lease.
    let mut second = env.component(
        "scheduler-2",
        &["scheduler", &metrics(atoll_testkit::free_port())],
    );

    let fast = env.write("fast.yaml", &pod("fast", "500m", Some("ssd")));
    let any = env.write("any.yaml", &pod("any", "500m", None));
    env.ok(&["create", "-f", &fast, "-f", &any]);
    env.wait_for(
        &["get", "pod", "fast", "-o", "jsonpath={.spec.nodeName}"],
        30,
        |n| n == "node-a",
    );
    env.wait_for(
        &["get", "pod", "any", "-o", "jsonpath={.spec.nodeName}"],
        30,
        |n| n.starts_with("node-"),
    );
    let wide = env.ok(&["get", "pods", "-o", "wide"]);
    assert!(wide.contains("node-a"), "{wide}");
    env.wait_for(&["describe", "pod", "fast"], 30, |d| {
        d.contains("Scheduled") && d.contains("Successfully assigned default/fast to node-a")
    });

    // Too big for any node: the condition and the event say why.
    let huge = env.write("huge.yaml", &pod("huge", "3", None));
    env.ok(&["create", "-f", &huge]);
    let why = "0/2 nodes are available: 2 Insufficient cpu.";
    env.wait_for(
        &[
            "get",
            "pod",
            "huge",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"PodScheduled\")].message}",
        ],
        30,
        |m| m == why,
    );
    env.wait_for(
        &[
            "get",
            "events",
            "--field-selector",
            "reason=FailedScheduling",
        ],
        30,
        |e| e.contains(why),
    );

    // The leader dies without releasing its lease: the other copy takes over after the lease
    // expires and schedules what comes next.
    let first_log = std::fs::read_to_string(env.path("scheduler-1.log")).unwrap_or_default();
    assert!(
        first_log.contains("became leader"),
        "the first copy should lead: {first_log}"
    );
    first.kill();
    let later = env.write("later.yaml", &pod("later", "100m", Some("hdd")));
    env.ok(&["create", "-f", &later]);
    env.wait_for(
        &["get", "pod", "later", "-o", "jsonpath={.spec.nodeName}"],
        60,
        |n| n == "node-b",
    );
    let now = env.ok(LEASE_HOLDER);
    assert_ne!(now, holder);

    // A copy asked to stop gives the Lease up as it goes, instead of leaving it to expire.
    let _third = env.component(
        "scheduler-3",
        &["scheduler", &metrics(atoll_testkit::free_port())],
    );
    assert!(
        second.terminate(),
        "the scheduler should exit cleanly on SIGTERM"
    );
    let after = env.ok(LEASE_HOLDER);
    assert_ne!(after, now, "the stopped copy still holds the lease");
}
