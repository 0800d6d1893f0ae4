//! The hollow runtime's state machine.

use super::*;

fn uid(u: &str) -> HashMap<String, String> {
    HashMap::from([("io.kubernetes.pod.uid".to_string(), u.to_string())])
}

fn sandbox(labels: HashMap<String, String>) -> cri::PodSandboxConfig {
    cri::PodSandboxConfig {
        labels,
        ..Default::default()
    }
}

fn container(command: &[&str], labels: HashMap<String, String>) -> cri::ContainerConfig {
    cri::ContainerConfig {
        command: command.iter().map(|s| s.to_string()).collect(),
        image: Some(cri::ImageSpec {
            image: "busybox".into(),
            ..Default::default()
        }),
        labels,
        ..Default::default()
    }
}

fn state(h: &Hollow, id: &str) -> (i32, i32, String) {
    let s = h.container_status(id).unwrap();
    (s.state, s.exit_code, s.reason)
}

const RUNNING: i32 = cri::ContainerState::ContainerRunning as i32;
const EXITED: i32 = cri::ContainerState::ContainerExited as i32;

#[test]
fn network_waits_for_the_pod_cidr() {
    let h = Hollow::new();
    let network = |h: &Hollow| h.status().unwrap()[1].status;
    assert!(!network(&h));
    assert!(
        h.run_sandbox(sandbox(uid("u1"))).is_err(),
        "no addresses yet"
    );
    assert!(h.set_pod_cidr("10.244.7.0/24").unwrap());
    assert!(!h.set_pod_cidr("10.244.7.0/24").unwrap(), "unchanged");
    assert!(network(&h));
    assert!(h.set_pod_cidr("fd00::/64").is_err());
}

#[test]
fn containers_run_until_stopped_and_true_false_exit_at_once() {
    let h = Hollow::new();
    h.set_pod_cidr("10.88.0.0/24").unwrap();
    let labels = uid("u1");
    let sb = h.run_sandbox(sandbox(labels.clone())).unwrap();
    assert_eq!(
        h.sandbox_status(&sb).unwrap().network.unwrap().ip,
        "10.88.0.2",
        "the first address after the gateway"
    );
    let never_pulled = h.create_container(&sb, container(&["sleep", "9"], labels.clone()));
    assert!(never_pulled.unwrap_err().is_not_found(), "no such image");
    h.pull_image("busybox").unwrap();
    assert!(
        h.image_status("busybox")
            .unwrap()
            .unwrap()
            .id
            .starts_with("sha256:")
    );

    let run = h
        .create_container(&sb, container(&["sleep", "9"], labels.clone()))
        .unwrap();
    assert_eq!(
        state(&h, &run).0,
        cri::ContainerState::ContainerCreated as i32
    );
    h.start_container(&run).unwrap();
    assert_eq!(state(&h, &run), (RUNNING, 0, String::new()));
    assert!(
        h.start_container(&run).is_err(),
        "only a created container starts"
    );
    assert_eq!(h.exec_sync(&run).unwrap().exit_code, 0);

    let fail = h
        .create_container(&sb, container(&["/bin/false"], HashMap::new()))
        .unwrap();
    h.start_container(&fail).unwrap();
    assert_eq!(state(&h, &fail), (EXITED, 1, "Error".into()));
    assert!(h.exec_sync(&fail).is_err(), "not running");
    let ok = h
        .create_container(&sb, container(&["true"], HashMap::new()))
        .unwrap();
    h.start_container(&ok).unwrap();
    assert_eq!(state(&h, &ok), (EXITED, 0, "Completed".into()));
    let sh = h
        .create_container(&sb, container(&["false", "x"], HashMap::new()))
        .unwrap();
    h.start_container(&sh).unwrap();
    assert_eq!(state(&h, &sh).0, RUNNING, "only a bare true/false exits");

    assert_eq!(
        h.list_containers(&labels).unwrap().len(),
        1,
        "the selector picks the labelled one"
    );
    assert_eq!(h.list_containers(&HashMap::new()).unwrap().len(), 4);
    h.stop_container(&run).unwrap();
    assert_eq!(state(&h, &run), (EXITED, 137, "Error".into()));
    h.remove_container(&run).unwrap();
    assert!(h.container_status(&run).unwrap_err().is_not_found());
    assert!(
        h.stream("Exec")
            .unwrap_err()
            .to_string()
            .contains("not supported by the hollow runtime")
    );
}

#[test]
fn stopping_a_sandbox_kills_its_containers_and_frees_its_address() {
    let h = Hollow::new();
    h.set_pod_cidr("10.88.0.0/29").unwrap();
    h.pull_image("busybox").unwrap();
    let a = h.run_sandbox(sandbox(uid("a"))).unwrap();
    let c = h
        .create_container(&a, container(&["sleep"], uid("a")))
        .unwrap();
    h.start_container(&c).unwrap();
    let ips: Vec<String> = (0..4)
        .map(|i| {
            let id = h.run_sandbox(sandbox(uid(&format!("b{i}")))).unwrap();
            h.sandbox_status(&id).unwrap().network.unwrap().ip
        })
        .collect();
    assert_eq!(ips, ["10.88.0.3", "10.88.0.4", "10.88.0.5", "10.88.0.6"]);
    assert!(h.run_sandbox(sandbox(uid("c"))).is_err(), "the /29 is full");

    h.stop_sandbox(&a).unwrap();
    let st = h.sandbox_status(&a).unwrap();
    assert_eq!(st.state, cri::PodSandboxState::SandboxNotready as i32);
    assert_eq!(state(&h, &c), (EXITED, 137, "Error".into()));
    assert!(
        h.create_container(&a, container(&["sleep"], uid("a")))
            .is_err(),
        "no containers in a stopped sandbox"
    );
    let again = h.run_sandbox(sandbox(uid("c"))).unwrap();
    assert_eq!(
        h.sandbox_status(&again).unwrap().network.unwrap().ip,
        "10.88.0.2",
        "freed on stop"
    );

    h.remove_sandbox(&a).unwrap();
    h.remove_sandbox(&a).unwrap();
    assert!(h.list_sandboxes(&uid("a")).unwrap().is_empty());
    assert!(
        h.list_containers(&uid("a")).unwrap().is_empty(),
        "removed with its sandbox"
    );
    assert_eq!(h.list_sandboxes(&HashMap::new()).unwrap().len(), 5);
}

#[test]
fn host_network_sandboxes_take_no_address_and_ids_differ_between_nodes() {
    let h = Hollow::new();
    h.set_pod_cidr("10.88.0.0/24").unwrap();
    let mut config = sandbox(uid("h"));
    config.linux = Some(cri::LinuxPodSandboxConfig {
        security_context: Some(cri::LinuxSandboxSecurityContext {
            namespace_options: Some(cri::NamespaceOption {
                network: cri::NamespaceMode::Node as i32,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    });
    let id = h.run_sandbox(config).unwrap();
    assert_eq!(h.sandbox_status(&id).unwrap().network.unwrap().ip, "");
    assert_eq!(id.len(), 64);
    let other = Hollow::new();
    other.set_pod_cidr("10.88.1.0/24").unwrap();
    assert_ne!(other.run_sandbox(sandbox(uid("x"))).unwrap(), id);
}

#[test]
fn a_new_cidr_keeps_the_addresses_of_running_sandboxes() {
    let h = Hollow::new();
    h.set_pod_cidr("10.88.0.0/24").unwrap();
    let a = h.run_sandbox(sandbox(uid("a"))).unwrap();
    h.set_pod_cidr("10.88.0.0/25").unwrap();
    let b = h.run_sandbox(sandbox(uid("b"))).unwrap();
    let ip = |id: &str| h.sandbox_status(id).unwrap().network.unwrap().ip;
    assert_eq!((ip(&a), ip(&b)), ("10.88.0.2".into(), "10.88.0.3".into()));
}

#[test]
fn resources_from_flags() {
    let r = Resources::parse(8, "16Gi", "100Gi").unwrap();
    assert_eq!(
        r,
        Resources {
            cpu: 8,
            ..Resources::default()
        }
    );
    assert!(Resources::parse(4, "lots", "1Gi").is_err());
}
