//! The `atoll controller-manager` binary driven with the real kubectl: replication controllers scaled
//! up and down. No scheduler or kubelets run, so pods stay unbound (and are deleted at once).

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

fn pods(text: &str) -> usize {
    text.lines().filter(|l| l.starts_with("pod/")).count()
}

#[test]
fn kubectl_scales_a_replication_controller() {
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
}
