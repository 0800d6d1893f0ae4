use super::*;
use crate::pods::observe::Sandbox;
use crate::pods::probe::Verdict;
use serde_json::json;

static NO_MESSAGES: std::sync::LazyLock<HashMap<String, String>> =
    std::sync::LazyLock::new(HashMap::new);

fn pod(v: serde_json::Value) -> Pod {
    serde_json::from_value(v).unwrap()
}

fn rec(id: &str, name: &str, attempt: u32, state: State, exit_code: i32, init: bool) -> Record {
    Record {
        id: id.into(),
        sandbox_id: "s1".into(),
        name: name.into(),
        attempt,
        init,
        state,
        created_at: i64::from(attempt) + 1,
        started_at: 1_700_000_000_000_000_000,
        finished_at: if state == State::Exited {
            1_700_000_001_000_000_000
        } else {
            0
        },
        exit_code,
        reason: String::new(),
        message: String::new(),
        image_ref: "sha256:abc".into(),
        hash: String::new(),
    }
}

fn observed(containers: Vec<Record>) -> Observed {
    Observed {
        sandboxes: vec![Sandbox {
            id: "s1".into(),
            attempt: 0,
            ready: true,
            created_at: 0,
        }],
        containers,
    }
}

fn inputs<'a>(
    waiting: &'a HashMap<String, Waiting>,
    ready: &'a HashMap<String, Verdict>,
    ips: &'a [String],
) -> StatusInputs<'a> {
    StatusInputs {
        pod_ips: ips,
        host_ip: "10.0.0.1",
        start_time: None,
        waiting,
        probes: ready,
        messages: &NO_MESSAGES,
        sandbox_ready: true,
        qos: Qos::BestEffort,
        now: Time(jiff::Timestamp::from_second(1_700_000_100).unwrap()),
    }
}

fn web(policy: &str) -> Pod {
    pod(
        json!({"metadata": {"name": "web", "uid": "u"}, "spec": {"restartPolicy": policy,
        "containers": [{"name": "a", "image": "busybox"}, {"name": "b", "image": "busybox"}]}}),
    )
}

#[test]
fn running_pod_is_ready() {
    let (w, r) = (HashMap::new(), HashMap::new());
    let ips = vec!["10.88.0.2".to_string()];
    let o = observed(vec![
        rec("1", "a", 0, State::Running, 0, false),
        rec("2", "b", 0, State::Running, 0, false),
    ]);
    let s = compute(&web("Always"), &o, &inputs(&w, &r, &ips), None);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    assert_eq!(s.pod_ip.as_deref(), Some("10.88.0.2"));
    let ready = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.status, "True");
    let a = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(a.container_id.as_deref(), Some("containerd://1"));
    assert!(a.ready && a.started == Some(true));
}

#[test]
fn probes_gate_ready_and_started() {
    let w = HashMap::new();
    let probes = HashMap::from([
        (
            "1".to_string(),
            Verdict {
                started: true,
                ready: false,
                unhealthy: None,
            },
        ),
        (
            "2".to_string(),
            Verdict {
                started: false,
                ready: false,
                unhealthy: None,
            },
        ),
    ]);
    let o = observed(vec![
        rec("1", "a", 0, State::Running, 0, false),
        rec("2", "b", 0, State::Running, 0, false),
    ]);
    let s = compute(&web("Always"), &o, &inputs(&w, &probes, &[]), None);
    let st = s.container_statuses.as_ref().unwrap();
    assert_eq!((st[0].ready, st[0].started), (false, Some(true)));
    assert_eq!((st[1].ready, st[1].started), (false, Some(false)));
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let ready = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [a b]")
    );
}

#[test]
fn one_container_missing_is_pending_and_not_ready() {
    let (w, r) = (HashMap::new(), HashMap::new());
    let o = observed(vec![rec("1", "a", 0, State::Running, 0, false)]);
    let s = compute(&web("Always"), &o, &inputs(&w, &r, &[]), None);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let ready = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "ContainersReady")
        .unwrap();
    assert_eq!(
        (ready.status.as_str(), ready.reason.as_deref()),
        ("False", Some("ContainersNotReady"))
    );
    assert_eq!(
        ready.message.as_deref(),
        Some("containers with unready status: [b]")
    );
    let b = &s.container_statuses.as_ref().unwrap()[1];
    assert_eq!(
        b.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
}

#[test]
fn crash_loop_shows_waiting_with_last_termination() {
    let w = HashMap::from([(
        "a".to_string(),
        Waiting {
            reason: "CrashLoopBackOff".into(),
            message: "back-off 10s".into(),
        },
    )]);
    let r = HashMap::new();
    let o = observed(vec![
        rec("1", "a", 0, State::Exited, 1, false),
        rec("2", "a", 1, State::Exited, 2, false),
        rec("3", "b", 0, State::Running, 0, false),
    ]);
    let s = compute(&web("Always"), &o, &inputs(&w, &r, &[]), None);
    assert_eq!(s.phase.as_deref(), Some("Running"));
    let a = &s.container_statuses.as_ref().unwrap()[0];
    assert_eq!(a.restart_count, 1);
    assert_eq!(
        a.state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("CrashLoopBackOff")
    );
    let last = a.last_state.as_ref().unwrap().terminated.as_ref().unwrap();
    assert_eq!((last.exit_code, last.reason.as_deref()), (2, Some("Error")));
}

#[test]
fn phases_by_restart_policy() {
    let (w, r) = (HashMap::new(), HashMap::new());
    let done = observed(vec![
        rec("1", "a", 0, State::Exited, 0, false),
        rec("2", "b", 0, State::Exited, 0, false),
    ]);
    let failed = observed(vec![
        rec("1", "a", 0, State::Exited, 0, false),
        rec("2", "b", 0, State::Exited, 1, false),
    ]);
    assert_eq!(
        compute(&web("Never"), &done, &inputs(&w, &r, &[]), None)
            .phase
            .as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        compute(&web("OnFailure"), &done, &inputs(&w, &r, &[]), None)
            .phase
            .as_deref(),
        Some("Succeeded")
    );
    assert_eq!(
        compute(&web("Never"), &failed, &inputs(&w, &r, &[]), None)
            .phase
            .as_deref(),
        Some("Failed")
    );
    assert_eq!(
        compute(&web("OnFailure"), &failed, &inputs(&w, &r, &[]), None)
            .phase
            .as_deref(),
        Some("Running")
    );
    assert_eq!(
        compute(&web("Always"), &done, &inputs(&w, &r, &[]), None)
            .phase
            .as_deref(),
        Some("Running")
    );
    let s = compute(&web("Never"), &done, &inputs(&w, &r, &[]), None);
    let ready = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    assert_eq!(ready.reason.as_deref(), Some("PodCompleted"));
}

#[test]
fn init_containers_gate_the_pod() {
    let (w, r) = (HashMap::new(), HashMap::new());
    let p = pod(
        json!({"metadata": {"name": "p"}, "spec": {"restartPolicy": "Never",
        "initContainers": [{"name": "i1"}, {"name": "i2"}], "containers": [{"name": "a"}]}}),
    );
    let o = observed(vec![
        rec("1", "i1", 0, State::Exited, 0, true),
        rec("2", "i2", 0, State::Running, 0, true),
    ]);
    let s = compute(&p, &o, &inputs(&w, &r, &[]), None);
    assert_eq!(s.phase.as_deref(), Some("Pending"));
    let init = s
        .conditions
        .as_ref()
        .unwrap()
        .iter()
        .find(|c| c.type_ == "Initialized")
        .unwrap();
    assert_eq!(
        init.message.as_deref(),
        Some("containers with incomplete status: [i2]")
    );
    assert_eq!(
        s.container_statuses.as_ref().unwrap()[0]
            .state
            .as_ref()
            .unwrap()
            .waiting
            .as_ref()
            .unwrap()
            .reason
            .as_deref(),
        Some("ContainerCreating")
    );
    let o = observed(vec![
        rec("1", "i1", 0, State::Exited, 0, true),
        rec("2", "i2", 0, State::Exited, 1, true),
    ]);
    assert_eq!(
        compute(&p, &o, &inputs(&w, &r, &[]), None).phase.as_deref(),
        Some("Failed")
    );
    assert!(!initialized(&p, &o));
}

#[test]
fn transition_times_survive_and_essence_ignores_them() {
    let (w, r) = (HashMap::new(), HashMap::new());
    let o = observed(vec![
        rec("1", "a", 0, State::Running, 0, false),
        rec("2", "b", 0, State::Running, 0, false),
    ]);
    let mut old = compute(&web("Always"), &o, &inputs(&w, &r, &[]), None);
    for c in old.conditions.as_mut().unwrap() {
        c.last_transition_time = Some(Time(jiff::Timestamp::from_second(5).unwrap()));
    }
    let new = compute(&web("Always"), &o, &inputs(&w, &r, &[]), Some(&old));
    assert!(new.conditions.as_ref().unwrap().iter().all(|c| c.last_transition_time == Some(Time(jiff::Timestamp::from_second(5).unwrap()))));
    assert_eq!(essence(&old), essence(&new));
}
