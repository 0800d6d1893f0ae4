//! The official Python client (`kubernetes` from PyPI, installed into a venv the test makes) against
//! the `atoll apiserver` binary: create, list with a selector, strategic-merge patch, watch, delete;
//! and a custom resource through `ApiextensionsV1Api` and `CustomObjectsApi`.

use std::process::Command;

use atoll_e2e::Env;

const SCRIPT: &str = r#"
import sys
from kubernetes import client, config, watch

config.load_kube_config(sys.argv[1])
v1 = client.CoreV1Api()
ns = "default"
pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "py", "labels": {"app": "py"}},
       "spec": {"containers": [{"name": "c", "image": "busybox", "ports": [{"containerPort": 80}]}]}}
created = v1.create_namespaced_pod(ns, pod)
assert created.metadata.name == "py" and created.metadata.uid, created.metadata
assert created.status.phase == "Pending", created.status

listed = v1.list_namespaced_pod(ns, label_selector="app=py")
assert [p.metadata.name for p in listed.items] == ["py"], listed.items
assert v1.list_namespaced_pod(ns, label_selector="app=other").items == []

# A dict body is sent as a strategic merge patch: containers merge by name.
patched = v1.patch_namespaced_pod("py", ns, {"metadata": {"labels": {"patched": "yes"}},
                                             "spec": {"containers": [{"name": "c", "image": "busybox:2"}]}})
assert patched.metadata.labels["patched"] == "yes"
assert [(c.name, c.image) for c in patched.spec.containers] == [("c", "busybox:2")]
assert patched.spec.containers[0].ports[0].container_port == 80

svc = v1.create_namespaced_service(ns, {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "py-svc"},
                                        "spec": {"selector": {"app": "py"}, "ports": [{"port": 80}]}})
assert svc.spec.cluster_ip.startswith("10.97.0."), svc.spec

w = watch.Watch()
seen = []
for ev in w.stream(v1.list_namespaced_pod, ns, timeout_seconds=20):
    seen.append((ev["type"], ev["object"].metadata.name))
    if ev["type"] == "ADDED" and ev["object"].metadata.name == "py":
        v1.delete_namespaced_pod("py", ns)
    if ev["type"] == "DELETED":
        w.stop()
assert ("ADDED", "py") in seen and ("DELETED", "py") in seen, seen

try:
    v1.read_namespaced_pod("py", ns)
    raise AssertionError("the pod should be gone")
except client.exceptions.ApiException as e:
    assert e.status == 404, e
v1.delete_namespaced_service("py-svc", ns)

# A custom resource: define it, wait until it is established, then use it.
import time
ext = client.ApiextensionsV1Api()
ext.create_custom_resource_definition({
    "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
    "metadata": {"name": "notes.example.com"},
    "spec": {"group": "example.com", "scope": "Namespaced",
             "names": {"kind": "Note", "plural": "notes", "singular": "note"},
             "versions": [{"name": "v1", "served": True, "storage": True, "schema": {"openAPIV3Schema": {
                 "type": "object", "properties": {"spec": {"type": "object", "properties": {
                     "text": {"type": "string"}, "stars": {"type": "integer", "default": 0}}}}}}}]}})
for _ in range(100):
    crd = ext.read_custom_resource_definition("notes.example.com")
    if crd.status and any(c.type == "Established" and c.status == "True" for c in (crd.status.conditions or [])):
        break
    time.sleep(0.1)
else:
    raise AssertionError("the CRD was never established")
co = client.CustomObjectsApi()
note = None
for _ in range(50):
    try:
        note = co.create_namespaced_custom_object("example.com", "v1", ns, "notes",
            {"apiVersion": "example.com/v1", "kind": "Note", "metadata": {"name": "n1"}, "spec": {"text": "hi"}})
        break
    except client.exceptions.ApiException as e:
        assert e.status == 404, e
        time.sleep(0.1)
assert note and note["spec"] == {"text": "hi", "stars": 0}, note
notes = co.list_namespaced_custom_object("example.com", "v1", ns, "notes")
assert [n["metadata"]["name"] for n in notes["items"]] == ["n1"], notes
patched = co.patch_namespaced_custom_object("example.com", "v1", ns, "notes", "n1", {"spec": {"stars": 5}})
assert patched["spec"]["stars"] == 5, patched
co.delete_namespaced_custom_object("example.com", "v1", ns, "notes", "n1")
assert co.list_namespaced_custom_object("example.com", "v1", ns, "notes")["items"] == []
ext.delete_custom_resource_definition("notes.example.com")
print("python client ok")
"#;

#[test]
fn official_python_client() {
    let env = Env::start();
    let venv = env.path("venv");
    let made = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .expect("python3 runs");
    assert!(made.success(), "python3 -m venv failed");
    let pip = Command::new(venv.join("bin/pip"))
        .args(["install", "-q", "kubernetes"])
        .output()
        .expect("pip runs");
    assert!(
        pip.status.success(),
        "pip install kubernetes failed: {}",
        String::from_utf8_lossy(&pip.stderr)
    );
    let script = env.write("client.py", SCRIPT);
    let out = Command::new(venv.join("bin/python"))
        .arg(&script)
        .arg(env.path("kubeconfig"))
        .output()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("python client ok"),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
