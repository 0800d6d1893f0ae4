//! The `atoll controller-manager` binary driven with the real kubectl: replication controllers scaled
//! up and down, deleted leaving their pods (`--cascade=orphan`) and with them (the garbage collector),
//! and namespaces deleted with their content. No scheduler or kubelets run, so pods stay unbound (and
//! are deleted at once).

use atoll_e2e::Env;

const RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: web
spec:
  replicas: 2
  selector: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: busybox:1.36
        command: [sleep, '3600']
";

const TEAM: &str = "apiVersion: v1
kind: Namespace
metadata:
  name: team
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: settings
  namespace: team
data: {a: b}
---
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: team
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
";

fn pods(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("pod/")).count()
}

#[test]
fn kubectl_scales_orphans_cascades_and_deletes_namespaces() {
    let env = Env::start();
    let metrics = format!(
        "--metrics-bind-address=127.0.0.1:{}",
        atoll_testkit::free_port()
    );
    let _manager = env.component(
        "controller-manager",
        &["controller-manager", "--leader-elect=false", &metrics],
    );
    let rc = env.write("rc.yaml", RC);
    env.ok(&["create", "-f", &rc]);
    let list = ["get", "pods", "-l", "app=web", "-o", "name"];
    env.wait_for(&list, 60, |t| pods(t) == 2);
    env.ok(&["scale", "rc", "web", "--replicas=5"]);
    env.wait_for(&list, 60, |t| pods(t) == 5);
    env.wait_for(&["get", "rc", "web"], 60, |t| {
        t.lines().nth(1).is_some_and(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            cols.get(1) == Some(&"5") && cols.get(2) == Some(&"5")
        })
    });
    env.ok(&["scale", "rc", "web", "--replicas=1"]);
    env.wait_for(&list, 60, |t| pods(t) == 1);
    let described = env.ok(&["describe", "rc", "web"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    assert!(described.contains("SuccessfulDelete"), "{described}");

    // Orphaned: the RC goes (kubectl waits for it), its pod stays, no longer owned.
    env.ok(&["scale", "rc", "web", "--replicas=3"]);
    env.wait_for(&list, 60, |t| pods(t) == 3);
    env.ok(&["delete", "rc", "web", "--cascade=orphan"]);
    env.fails(&["get", "rc", "web"]);
    let owners = env.wait_for(
        &[
            "get",
            "pods",
            "-l",
            "app=web",
            "-o",
            "jsonpath={.items[*].metadata.ownerReferences}",
        ],
        60,
        |t| t.trim().is_empty(),
    );
    assert!(owners.trim().is_empty());
    assert_eq!(pods(&env.ok(&list)), 3);

    // A new RC adopts the orphans; deleting it (background cascade) takes them along.
    env.ok(&["create", "-f", &rc]);
    env.wait_for(&list, 60, |t| pods(t) == 2);
    env.ok(&["delete", "rc", "web"]);
    env.wait_for(&list, 60, |t| pods(t) == 0);

    // A namespace with an RC, its pods, a service and a config map is deleted completely.
    // (From manifests: kubectl's generators send protobuf, which is not served yet.)
    let team = env.write("team.yaml", TEAM);
    env.ok(&["create", "-f", &team]);
    env.ok(&["create", "-n", "team", "-f", &rc]);
    env.wait_for(&["get", "pods", "-n", "team", "-o", "name"], 60, |t| {
        pods(t) == 2
    });
    env.ok(&["delete", "namespace", "team", "--timeout=60s"]);
    let err = env.fails(&["get", "namespace", "team"]);
    assert!(
        err.contains("NotFound") || err.contains("not found"),
        "{err}"
    );
}
