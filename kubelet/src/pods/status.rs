//! The pod status Kubernetes reports, computed from what the runtime has: phase, conditions
//! (PodReadyToStartContainers, Initialized, ContainersReady, Ready, PodScheduled), container and init
//! container statuses (state, lastState, ready, started, restartCount, image, imageID, containerID),
//! pod and host IPs, start time and QoS class.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{
    Container, ContainerState, ContainerStateRunning, ContainerStateTerminated,
    ContainerStateWaiting, ContainerStatus, HostIP, Pod, PodCondition, PodIP, PodStatus,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::observe::{Observed, Record, State};
use super::probe::Verdict;
use super::spec::Qos;

/// The runtime name in container IDs (`containerd://<id>`).
pub const RUNTIME_SCHEME: &str = "containerd";

/// Why a container is waiting, when the kubelet knows better than "ContainerCreating".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiting {
    /// `CrashLoopBackOff`, `ErrImagePull`, `ImagePullBackOff`, `CreateContainerConfigError`, …
    pub reason: String,
    /// What happened, for the user.
    pub message: String,
}

/// Inputs of the status beyond the runtime's records.
pub struct StatusInputs<'a> {
    /// The pod's sandbox addresses.
    pub pod_ips: &'a [String],
    /// The node's address.
    pub host_ip: &'a str,
    /// When the kubelet first accepted the pod.
    pub start_time: Option<Time>,
    /// Why containers are waiting, by name.
    pub waiting: &'a HashMap<String, Waiting>,
    /// Probe verdicts by runtime container ID; absent = no probes = started and ready.
    pub probes: &'a HashMap<String, Verdict>,
    /// Termination messages by runtime container ID (from terminationMessagePath, or the log's
    /// tail with FallbackToLogsOnError).
    pub messages: &'a HashMap<String, String>,
    /// Whether the sandbox is ready.
    pub sandbox_ready: bool,
    /// The pod's QoS class.
    pub qos: Qos,
    /// Now, for condition transition times.
    pub now: Time,
}

fn time(nanos: i64) -> Option<Time> {
    (nanos > 0)
        .then(|| {
            jiff::Timestamp::from_nanosecond(i128::from(nanos))
                .ok()
                .map(Time)
        })
        .flatten()
}

fn terminated(r: &Record, messages: &HashMap<String, String>) -> ContainerStateTerminated {
    let reason = if !r.reason.is_empty() {
        r.reason.clone()
    } else if r.exit_code == 0 {
        "Completed".into()
    } else {
        "Error".into()
    };
    ContainerStateTerminated {
        exit_code: r.exit_code,
        reason: Some(reason),
        message: messages
            .get(&r.id)
            .cloned()
            .or_else(|| (!r.message.is_empty()).then(|| r.message.clone())),
        started_at: time(r.started_at),
        finished_at: time(r.finished_at),
        container_id: Some(format!("{RUNTIME_SCHEME}://{}", r.id)),
        signal: None,
    }
}

fn waiting(reason: &str, message: Option<&str>) -> ContainerState {
    ContainerState {
        waiting: Some(ContainerStateWaiting {
            reason: Some(reason.into()),
            message: message.map(str::to_string),
        }),
        ..Default::default()
    }
}

/// One container's status.
fn container_status(
    c: &Container,
    init: bool,
    observed: &Observed,
    inputs: &StatusInputs,
) -> ContainerStatus {
    let mut history = observed.of(&c.name, init);
    let latest = history.next();
    let previous = history.next();
    let told = inputs.waiting.get(&c.name);
    let default_waiting = if init {
        "PodInitializing"
    } else {
        "ContainerCreating"
    };
    let (state, last, ready, started) = match latest {
        Some(r) if r.state == State::Running => {
            let verdict = inputs.probes.get(&r.id);
            let ready = verdict.is_none_or(|v| v.ready && v.started);
            let started = verdict.is_none_or(|v| v.started);
            let state = ContainerState {
                running: Some(ContainerStateRunning {
                    started_at: time(r.started_at),
                }),
                ..Default::default()
            };
            let last = previous.map(|p| ContainerState {
                terminated: Some(terminated(p, inputs.messages)),
                ..Default::default()
            });
            (state, last, ready, started)
        }
        Some(r) if r.state == State::Exited => match told {
            Some(w) => (
                waiting(&w.reason, Some(&w.message)),
                Some(ContainerState {
                    terminated: Some(terminated(r, inputs.messages)),
                    ..Default::default()
                }),
                false,
                false,
            ),
            None => (
                ContainerState {
                    terminated: Some(terminated(r, inputs.messages)),
                    ..Default::default()
                },
                previous.map(|p| ContainerState {
                    terminated: Some(terminated(p, inputs.messages)),
                    ..Default::default()
                }),
                false,
                false,
            ),
        },
        Some(r) => {
            let last = previous.map(|p| ContainerState {
                terminated: Some(terminated(p, inputs.messages)),
                ..Default::default()
            });
            let _ = r;
            (
                waiting(
                    told.map_or(default_waiting, |w| w.reason.as_str()),
                    told.map(|w| w.message.as_str()),
                ),
                last,
                false,
                false,
            )
        }
        None => (
            waiting(
                told.map_or(default_waiting, |w| w.reason.as_str()),
                told.map(|w| w.message.as_str()),
            ),
            None,
            false,
            false,
        ),
    };
    ContainerStatus {
        name: c.name.clone(),
        image: c.image.clone().unwrap_or_default(),
        image_id: latest.map(|r| r.image_ref.clone()).unwrap_or_default(),
        container_id: latest.map(|r| format!("{RUNTIME_SCHEME}://{}", r.id)),
        restart_count: latest.map_or(0, |r| r.attempt as i32),
        ready,
        started: Some(started),
        state: Some(state),
        last_state: Some(last.unwrap_or_default()),
        ..Default::default()
    }
}

/// Whether every init container has completed successfully (in order).
pub fn initialized(pod: &Pod, observed: &Observed) -> bool {
    pod.spec
        .iter()
        .flat_map(|s| s.init_containers.iter().flatten())
        .all(|c| {
            observed
                .latest(&c.name, true)
                .is_some_and(|r| r.state == State::Exited && r.exit_code == 0)
        })
}

/// The pod's phase from its container statuses, as Kubernetes' `getPhase` decides it.
pub fn phase(
    pod: &Pod,
    init_statuses: &[ContainerStatus],
    statuses: &[ContainerStatus],
) -> &'static str {
    let restart = pod
        .spec
        .as_ref()
        .and_then(|s| s.restart_policy.as_deref())
        .unwrap_or("Always");
    let init_failed = init_statuses.iter().any(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0)
            || s.last_state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_some_and(|t| t.exit_code != 0)
                && s.state.as_ref().is_some_and(|st| st.waiting.is_some())
    });
    let init_done = init_statuses.iter().all(|s| {
        s.state
            .as_ref()
            .and_then(|st| st.terminated.as_ref())
            .is_some_and(|t| t.exit_code == 0)
    });
    if !init_done {
        return if init_failed && restart == "Never" {
            "Failed"
        } else {
            "Pending"
        };
    }
    let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for s in statuses {
        let st = s.state.clone().unwrap_or_default();
        if st.running.is_some() {
            running += 1;
        } else if let Some(t) = &st.terminated {
            stopped += 1;
            if t.exit_code == 0 {
                succeeded += 1;
            }
        } else if s
            .last_state
            .as_ref()
            .and_then(|l| l.terminated.as_ref())
            .is_some()
        {
            stopped += 1;
        } else {
            waiting += 1;
        }
    }
    if waiting > 0 {
        "Pending"
    } else if running > 0 {
        "Running"
    } else if stopped > 0 {
        if restart == "Always" {
            "Running"
        } else if stopped == succeeded {
            "Succeeded"
        } else if restart == "Never" {
            "Failed"
        } else {
            "Running"
        }
    } else {
        "Pending"
    }
}

fn condition(
    type_: &str,
    ok: bool,
    reason: Option<&str>,
    message: Option<String>,
    now: &Time,
) -> PodCondition {
    PodCondition {
        type_: type_.into(),
        status: if ok { "True" } else { "False" }.into(),
        reason: reason.map(str::to_string),
        message,
        last_transition_time: Some(now.clone()),
        last_probe_time: None,
        ..Default::default()
    }
}

/// The pod's status from what the runtime has. `old` supplies the conditions' transition times and
/// PodScheduled, which the scheduler wrote.
pub fn compute(
    pod: &Pod,
    observed: &Observed,
    inputs: &StatusInputs,
    old: Option<&PodStatus>,
) -> PodStatus {
    let spec = pod.spec.clone().unwrap_or_default();
    let init_statuses: Vec<ContainerStatus> = spec
        .init_containers
        .iter()
        .flatten()
        .map(|c| container_status(c, true, observed, inputs))
        .collect();
    let statuses: Vec<ContainerStatus> = spec
        .containers
        .iter()
        .map(|c| container_status(c, false, observed, inputs))
        .collect();
    let phase = phase(pod, &init_statuses, &statuses);
    let now = &inputs.now;
    let unready: Vec<&str> = statuses
        .iter()
        .filter(|s| !s.ready)
        .map(|s| s.name.as_str())
        .collect();
    let uninitialized: Vec<&str> = init_statuses
        .iter()
        .filter(|s| {
            s.state
                .as_ref()
                .and_then(|st| st.terminated.as_ref())
                .is_none_or(|t| t.exit_code != 0)
        })
        .map(|s| s.name.as_str())
        .collect();
    let done = phase == "Succeeded" || phase == "Failed";
    let containers_ready = unready.is_empty() && !done;
    let not_ready_reason = if done {
        "PodCompleted"
    } else {
        "ContainersNotReady"
    };
    let not_ready_message =
        (!done).then(|| format!("containers with unready status: [{}]", unready.join(" ")));
    let mut conditions = vec![
        condition(
            "PodReadyToStartContainers",
            inputs.sandbox_ready,
            None,
            None,
            now,
        ),
        if uninitialized.is_empty() {
            condition("Initialized", true, None, None, now)
        } else {
            condition(
                "Initialized",
                false,
                Some("ContainersNotInitialized"),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    uninitialized.join(" ")
                )),
                now,
            )
        },
        if containers_ready {
            condition("Ready", true, None, None, now)
        } else {
            condition(
                "Ready",
                false,
                Some(not_ready_reason),
                not_ready_message.clone(),
                now,
            )
        },
        if containers_ready {
            condition("ContainersReady", true, None, None, now)
        } else {
            condition(
                "ContainersReady",
                false,
                Some(not_ready_reason),
                not_ready_message,
                now,
            )
        },
    ];
    let old_conditions = old.and_then(|o| o.conditions.clone()).unwrap_or_default();
    for c in &mut conditions {
        if let Some(o) = old_conditions
            .iter()
            .find(|o| o.type_ == c.type_ && o.status == c.status)
        {
            c.last_transition_time = o.last_transition_time.clone();
        }
    }
    if let Some(s) = old_conditions.iter().find(|c| c.type_ == "PodScheduled") {
        conditions.push(s.clone());
    } else {
        conditions.push(condition("PodScheduled", true, None, None, now));
    }
    let host_network = spec.host_network.unwrap_or(false);
    let pod_ips: Vec<String> = if host_network {
        vec![inputs.host_ip.to_string()]
    } else {
        inputs.pod_ips.to_vec()
    };
    PodStatus {
        phase: Some(phase.into()),
        conditions: Some(conditions),
        container_statuses: Some(statuses),
        init_container_statuses: (!init_statuses.is_empty()).then_some(init_statuses),
        host_ip: Some(inputs.host_ip.into()),
        host_ips: Some(vec![HostIP {
            ip: inputs.host_ip.into(),
        }]),
        pod_ip: pod_ips.first().cloned(),
        pod_ips: (!pod_ips.is_empty())
            .then(|| pod_ips.iter().map(|ip| PodIP { ip: ip.clone() }).collect()),
        start_time: inputs.start_time.clone(),
        qos_class: Some(inputs.qos.as_str().into()),
        ..old.cloned().unwrap_or_default()
    }
}

/// The status with its condition times left out, to tell a change from a repeat.
pub fn essence(status: &PodStatus) -> serde_json::Value {
    let mut v = serde_json::to_value(status).unwrap_or_default();
    if let Some(conds) = v.get_mut("conditions").and_then(|c| c.as_array_mut()) {
        for c in conds.iter_mut().filter_map(|c| c.as_object_mut()) {
            c.remove("lastTransitionTime");
            c.remove("lastProbeTime");
        }
        conds.sort_by_key(|c| c["type"].as_str().unwrap_or("").to_string());
    }
    v
}

#[cfg(test)]
mod tests;
