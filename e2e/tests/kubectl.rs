//! The real kubectl (the `/usr/bin/kubectl` dispatcher, which runs kubectl 1.33 against Atoll, and
//! kubectl 1.27 directly) against the `atoll apiserver` binary on a real etcd. kubectl 1.33 validates
//! on the server (OpenAPI v3 + fieldValidation); kubectl 1.27 would validate against OpenAPI v2,
//! which is not served, so its commands run with `--validate=false`.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use atoll_e2e::{Env, kubectl_dir};
use serde_json::Value;

const POD: &str = "apiVersion: v1
kind: Pod
metadata:
  name: web
  labels:
    app: web
spec:
  containers:
  - name: web
    image: busybox:1.36
    command: [httpd, -f, -p, '8080']
    ports:
    - containerPort: 8080
";

const SERVICE: &str = "apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector:
    app: web
  ports:
  - port: 80
    targetPort: 8080
";

const RC: &str = "apiVersion: v1
kind: ReplicationController
metadata:
  name: web-rc
spec:
  replicas: 1
  selector:
    app: web-rc
  template:
    metadata:
      labels:
        app: web-rc
    spec:
      containers:
      - name: web
        image: busybox:1.36
";

const NODE: &str = "apiVersion: v1
kind: Node
metadata:
  name: node-1
  labels:
    node-role.kubernetes.io/worker: ''
";

fn has_kubectl() -> bool {
    Path::new("/usr/bin/kubectl").exists()
}

#[test]
fn kubectl_everyday_commands() {
    if !has_kubectl() {
        eprintln!("kubectl is not installed: skipping");
        return;
    }
    let env = Env::start();

    // Discovery and namespaces.
    let ns = env.ok(&["get", "namespaces"]);
    for want in ["NAME", "STATUS", "default", "kube-system", "Active"] {
        assert!(ns.contains(want), "{want} missing in:\n{ns}");
    }
    let resources = env.ok(&["api-resources"]);
    assert!(
        resources.lines().any(
            |l| l.split_whitespace().collect::<Vec<_>>() == ["pods", "po", "v1", "true", "Pod"]
        ),
        "{resources}"
    );
    assert!(resources.contains("deployments") && resources.contains("apps/v1"));

    // create -f, get in every output format.
    let pod = env.write("pod.yaml", POD);
    assert_eq!(env.ok(&["create", "-f", &pod]).trim(), "pod/web created");
    assert!(env.fails(&["create", "-f", &pod]).contains("AlreadyExists"));
    let table = env.ok(&["get", "pods"]);
    assert!(
        table.contains("READY")
            && table.contains("web")
            && table.contains("0/1")
            && table.contains("Pending"),
        "{table}"
    );
    let wide = env.ok(&["get", "pods", "-o", "wide"]);
    assert!(
        wide.contains("NODE") && wide.contains("NOMINATED NODE"),
        "{wide}"
    );
    let yaml = env.ok(&["get", "pod", "web", "-o", "yaml"]);
    assert!(
        yaml.contains("kind: Pod") && yaml.contains("resourceVersion:"),
        "{yaml}"
    );
    let json: Value =
        serde_json::from_str(&env.ok(&["get", "pods", "-o", "json"])).expect("json list");
    assert_eq!(json["kind"], "List");
    assert_eq!(json["items"][0]["metadata"]["name"], "web");
    assert!(
        env.ok(&["get", "pods", "-l", "app=web", "-o", "name"])
            .contains("pod/web")
    );
    assert!(env.ok(&["get", "pods", "-l", "app=other"]).is_empty());
    assert!(
        env.ok(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Pending",
            "-o",
            "name"
        ])
        .contains("pod/web")
    );
    assert!(
        !env.ok(&[
            "get",
            "pods",
            "--field-selector",
            "status.phase=Running",
            "-o",
            "name"
        ])
        .contains("pod/web")
    );

    // Validation on the server (kubectl sends fieldValidation=Strict), explain from OpenAPI v3,
    // and apply of a new object.
    let bogus = POD
        .replace("name: web\n", "name: bogus\n")
        .replace("containerPort: 8080", "containerPort: 8080\n      bogus: 1");
    let err = env.fails(&["create", "-f", &env.write("bogus.yaml", &bogus)]);
    assert!(
        err.contains(r#"strict decoding error: unknown field "spec.containers[0].ports[0].bogus""#),
        "{err}"
    );
    let explained = env.ok(&["explain", "pods.spec.containers"]);
    assert!(
        explained.contains("FIELD: containers <[]Container>") && explained.contains("image"),
        "{explained}"
    );
    let applied = POD.replace("name: web\n", "name: applied\n");
    assert_eq!(
        env.ok(&["apply", "-f", &env.write("applied.yaml", &applied)])
            .trim(),
        "pod/applied created"
    );
    let got: Value =
        serde_json::from_str(&env.ok(&["get", "pod", "applied", "-o", "json"])).expect("json");
    assert!(
        got["metadata"]["annotations"]["kubectl.kubernetes.io/last-applied-configuration"]
            .is_string()
    );
    // apply again with changes: a strategic merge patch; kubectl patch (strategic by default); edit.
    let changed = applied
        .replace("image: busybox:1.36", "image: busybox:1.37")
        .replace("app: web", "app: web\n    tier: x");
    assert_eq!(
        env.ok(&["apply", "-f", &env.write("applied.yaml", &changed)])
            .trim(),
        "pod/applied configured"
    );
    assert_eq!(
        env.ok(&["apply", "-f", &env.path("applied.yaml").to_string_lossy()])
            .trim(),
        "pod/applied unchanged"
    );
    // Removing a field that was applied before removes it from the object.
    let with_note = changed.replace("    tier: x\n", "    tier: x\n    note: drop-me\n");
    env.ok(&["apply", "-f", &env.write("applied.yaml", &with_note)]);
    assert!(
        env.ok(&["get", "pod", "applied", "--show-labels"])
            .contains("note=drop-me")
    );
    env.ok(&["apply", "-f", &env.write("applied.yaml", &changed)]);
    assert!(
        !env.ok(&["get", "pod", "applied", "--show-labels"])
            .contains("note=")
    );
    env.ok(&["patch", "pod", "applied", "-p", r#"{"metadata":{"labels":{"smp":"yes"}},"spec":{"containers":[{"name":"applied","image":"busybox:1.38"}]}}"#]);
    let editor = env.write(
        "editor.sh",
        "#!/bin/sh\nsed -i 's/tier: x/tier: edited/' \"$1\"\n",
    );
    std::fs::set_permissions(&editor, std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod");
    let out = env
        .command(Path::new("/usr/bin/kubectl"), &["edit", "pod", "applied"])
        .env("KUBE_EDITOR", &editor)
        .output()
        .expect("kubectl edit");
    assert!(
        out.status.success(),
        "kubectl edit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value =
        serde_json::from_str(&env.ok(&["get", "pod", "applied", "-o", "json"])).expect("json");
    assert_eq!(got["metadata"]["labels"]["tier"], "edited");
    assert_eq!(got["metadata"]["labels"]["smp"], "yes");
    assert_eq!(got["spec"]["containers"][0]["image"], "busybox:1.38");
    assert_eq!(got["spec"]["containers"].as_array().map(Vec::len), Some(1));
    env.ok(&["delete", "pod", "applied"]);

    // Server-side apply: create, update, a conflict with another manager, --force-conflicts.
    let ssa = POD.replace("name: web\n", "name: ssa\n");
    let ssa_file = env.write("ssa.yaml", &ssa);
    assert!(
        env.ok(&["apply", "--server-side", "-f", &ssa_file])
            .contains("pod/ssa serverside-applied")
    );
    std::fs::write(&ssa_file, ssa.replace("app: web", "app: web\n    ssa: v2")).expect("manifest");
    assert!(
        env.ok(&["apply", "--server-side", "-f", &ssa_file])
            .contains("serverside-applied")
    );
    env.ok(&["label", "pod", "ssa", "ssa=mine", "--overwrite"]);
    let conflict = env.fails(&["apply", "--server-side", "-f", &ssa_file]);
    assert!(
        conflict.contains("conflict")
            && conflict.contains("kubectl-label")
            && conflict.contains(".metadata.labels.ssa"),
        "{conflict}"
    );
    assert!(
        env.ok(&[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-f",
            &ssa_file
        ])
        .contains("serverside-applied")
    );
    assert!(
        env.ok(&["get", "pod", "ssa", "--show-labels"])
            .contains("ssa=v2")
    );
    let managed = env.ok(&[
        "get",
        "pod",
        "ssa",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
        "--show-managed-fields",
    ]);
    assert!(managed.contains("kubectl"), "{managed}");
    // Server-side apply of the status subresource: status changes, owned under "status".
    let status_file = env.write(
        "ssa-status.yaml",
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: ssa\nstatus:\n  message: applied by status\n",
    );
    env.ok(&[
        "apply",
        "--server-side",
        "--subresource=status",
        "--field-manager=status-writer",
        "-f",
        &status_file,
    ]);
    let subresources = env.ok(&[
        "get",
        "pod",
        "ssa",
        "-o",
        "jsonpath={.status.message}/{.metadata.managedFields[?(@.manager==\"status-writer\")].subresource}",
        "--show-managed-fields",
    ]);
    assert_eq!(subresources, "applied by status/status");
    env.ok(&["delete", "pod", "ssa"]);

    // More pods, listed in chunks of one.
    for i in 0..3 {
        let m = POD
            .replace("name: web\n", &format!("name: extra-{i}\n"))
            .replace("app: web", "app: extra");
        env.ok(&["create", "-f", &env.write(&format!("extra-{i}.yaml"), &m)]);
    }
    let chunked = env.ok(&["get", "pods", "--chunk-size=1", "-o", "name"]);
    assert_eq!(chunked.lines().count(), 4, "{chunked}");

    // label, annotate, patch, replace.
    env.ok(&["label", "pod", "web", "tier=front"]);
    env.ok(&["annotate", "pod", "web", "note=hello"]);
    env.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "merge",
        "-p",
        r#"{"metadata":{"labels":{"patched":"merge"}}}"#,
    ]);
    env.ok(&[
        "patch",
        "pod",
        "web",
        "--type",
        "json",
        "-p",
        r#"[{"op":"add","path":"/metadata/labels/json","value":"yes"}]"#,
    ]);
    let got: Value =
        serde_json::from_str(&env.ok(&["get", "pod", "web", "-o", "json"])).expect("pod json");
    assert_eq!(got["metadata"]["labels"]["tier"], "front");
    assert_eq!(got["metadata"]["labels"]["patched"], "merge");
    assert_eq!(got["metadata"]["labels"]["json"], "yes");
    assert_eq!(got["metadata"]["annotations"]["note"], "hello");
    let replaced = POD.replace("app: web", "app: web\n    replaced: 'yes'");
    env.ok(&["replace", "-f", &env.write("pod2.yaml", &replaced)]);
    let got: Value =
        serde_json::from_str(&env.ok(&["get", "pod", "web", "-o", "json"])).expect("pod json");
    assert_eq!(got["metadata"]["labels"]["replaced"], "yes");
    let immutable = replaced.replace("'8080'", "'9090'");
    let err = env.fails(&["replace", "-f", &env.write("pod3.yaml", &immutable)]);
    assert!(err.contains("pod updates may not change fields"), "{err}");

    // describe.
    let described = env.ok(&["describe", "pod", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web") && described.contains("Events:"),
        "{described}"
    );

    // Services, replication controllers, nodes.
    assert_eq!(
        env.ok(&["create", "-f", &env.write("svc.yaml", SERVICE)])
            .trim(),
        "service/web created"
    );
    let svc = env.ok(&["get", "svc", "web"]);
    assert!(
        svc.contains("NodePort") && svc.contains("10.97.0.") && svc.contains("80:31"),
        "{svc}"
    );
    env.ok(&["create", "-f", &env.write("rc.yaml", RC)]);
    env.ok(&["scale", "rc", "web-rc", "--replicas=3"]);
    assert!(
        env.fails(&[
            "scale",
            "rc",
            "web-rc",
            "--current-replicas=2",
            "--replicas=4"
        ])
        .contains("Expected replicas to be 2")
    );
    env.ok(&[
        "scale",
        "rc",
        "web-rc",
        "--current-replicas=3",
        "--replicas=3",
    ]);
    let rc: Value =
        serde_json::from_str(&env.ok(&["get", "rc", "web-rc", "-o", "json"])).expect("rc json");
    assert_eq!(rc["spec"]["replicas"], 3);
    assert!(env.ok(&["get", "rc"]).contains("DESIRED"));
    env.ok(&["create", "-f", &env.write("node.yaml", NODE)]);
    let nodes = env.ok(&["get", "nodes"]);
    assert!(
        nodes.contains("node-1") && nodes.contains("worker"),
        "{nodes}"
    );
    assert!(env.ok(&["cordon", "node-1"]).contains("cordoned"));
    assert!(
        env.ok(&["get", "node", "node-1"])
            .contains("SchedulingDisabled")
    );
    assert!(env.ok(&["uncordon", "node-1"]).contains("uncordoned"));
    // drain: cordon, then evict the node's pods (no kubelet runs here, so without a grace period).
    for i in 0..2 {
        let on_node = POD
            .replace("name: web\n", &format!("name: on-node-{i}\n"))
            .replace("spec:\n", "spec:\n  nodeName: node-1\n");
        env.ok(&[
            "create",
            "-f",
            &env.write(&format!("on-node-{i}.yaml"), &on_node),
        ]);
    }
    let drained = env.ok(&[
        "drain",
        "node-1",
        "--force",
        "--grace-period=0",
        "--timeout=60s",
    ]);
    assert!(
        drained.contains("evicting pod default/on-node-0")
            || drained.contains("pod/on-node-0 evicted"),
        "{drained}"
    );
    assert!(drained.contains("node/node-1 drained"), "{drained}");
    assert!(
        env.ok(&[
            "get",
            "pods",
            "--field-selector",
            "spec.nodeName=node-1",
            "-o",
            "name"
        ])
        .trim()
        .is_empty()
    );
    env.ok(&["uncordon", "node-1"]);
    let all = env.ok(&["get", "all"]);
    for want in ["pod/web", "service/web", "replicationcontroller/web-rc"] {
        assert!(all.contains(want), "{want} missing from get all:\n{all}");
    }

    // label, annotate, patch and get -o on services, rcs, nodes and namespaces too.
    for (kind, name) in [
        ("service", "web"),
        ("rc", "web-rc"),
        ("node", "node-1"),
        ("namespace", "default"),
    ] {
        env.ok(&["label", kind, name, "team=blue"]);
        env.ok(&["annotate", kind, name, "owner=ops"]);
        env.ok(&[
            "patch",
            kind,
            name,
            "--type",
            "merge",
            "-p",
            r#"{"metadata":{"labels":{"patched":"yes"}}}"#,
        ]);
        env.ok(&[
            "patch",
            kind,
            name,
            "--type",
            "json",
            "-p",
            r#"[{"op":"add","path":"/metadata/annotations/json","value":"yes"}]"#,
        ]);
        let got: Value =
            serde_json::from_str(&env.ok(&["get", kind, name, "-o", "json"])).expect("json");
        assert_eq!(got["metadata"]["labels"]["team"], "blue", "{kind}");
        assert_eq!(got["metadata"]["labels"]["patched"], "yes", "{kind}");
        assert_eq!(got["metadata"]["annotations"]["owner"], "ops", "{kind}");
        assert_eq!(got["metadata"]["annotations"]["json"], "yes", "{kind}");
        let listed = env.ok(&["get", kind, "-l", "team=blue", "-o", "name"]);
        assert_eq!(listed.lines().count(), 1, "{kind}: {listed}");
        assert!(
            env.ok(&["get", kind, name, "-o", "yaml"])
                .contains("team: blue")
        );
    }
    let svc_wide = env.ok(&["get", "svc", "-o", "wide"]);
    assert!(
        svc_wide.contains("SELECTOR") && svc_wide.contains("app=web"),
        "{svc_wide}"
    );
    let rc_wide = env.ok(&["get", "rc", "-o", "wide"]);
    assert!(
        rc_wide.contains("CONTAINERS") && rc_wide.contains("busybox:1.36"),
        "{rc_wide}"
    );
    let node_fields = env.ok(&[
        "get",
        "nodes",
        "--field-selector",
        "spec.unschedulable=false",
        "-o",
        "name",
    ]);
    assert!(node_fields.contains("node/node-1"), "{node_fields}");
    let replaced_svc =
        SERVICE.replace("name: web\n", "name: web\n  labels:\n    replaced: 'yes'\n");
    env.ok(&["replace", "-f", &env.write("svc2.yaml", &replaced_svc)]);
    assert!(
        env.ok(&["get", "svc", "web", "--show-labels"])
            .contains("replaced=yes")
    );

    // get -w sees a change as it happens.
    let mut watch = env
        .command(
            Path::new("/usr/bin/kubectl"),
            &["get", "pods", "-w", "--request-timeout=30s"],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("kubectl get -w");
    let stdout = watch.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("get -w prints the list");
    assert!(first.contains("NAME"), "{first}");
    env.ok(&["label", "pod", "extra-0", "seen=yes"]);
    env.ok(&[
        "create",
        "-f",
        &env.write("late.yaml", &POD.replace("name: web\n", "name: late\n")),
    ]);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let mut saw_late = false;
    while std::time::Instant::now() < deadline && !saw_late {
        if let Ok(line) = rx.recv_timeout(Duration::from_secs(1)) {
            saw_late = line.starts_with("late ");
        }
    }
    let _ = watch.kill();
    let _ = watch.wait();
    assert!(saw_late, "kubectl get -w did not show the new pod");

    // delete by name, -f and -l.
    assert!(
        env.ok(&["delete", "pod", "late"])
            .contains("pod \"late\" deleted")
    );
    env.ok(&["delete", "-f", &pod]);
    assert!(
        env.ok(&["delete", "pods", "-l", "app=extra"])
            .lines()
            .count()
            == 3
    );
    assert!(env.ok(&["get", "pods", "-o", "name"]).trim().is_empty());
    assert!(env.fails(&["get", "pod", "web"]).contains("NotFound"));

    // Deleting services (-f), rcs (-l) and nodes (name).
    let svc_file = env.write("svc3.yaml", SERVICE);
    assert!(
        env.ok(&["delete", "-f", &svc_file])
            .contains("service \"web\" deleted")
    );
    assert!(
        env.ok(&["delete", "rc", "-l", "team=blue"])
            .contains("web-rc")
    );
    assert!(env.ok(&["delete", "node", "node-1"]).contains("deleted"));
    assert!(
        env.ok(&["get", "svc,rc,nodes", "-o", "name"])
            .trim()
            .is_empty()
    );

    // Namespaces: created from a file, terminating on delete (the namespace controller finishes it).
    env.ok(&[
        "create",
        "-f",
        &env.write(
            "ns.yaml",
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: team\n",
        ),
    ]);
    env.ok(&["delete", "namespace", "team", "--wait=false"]);
    assert!(
        env.ok(&["get", "namespace", "team"])
            .contains("Terminating")
    );

    // kubectl 1.27 against the same server.
    if let Some(dir) = kubectl_dir().filter(|d| d.join("kubectl.1.27").exists()) {
        let old = dir.join("kubectl.1.27");
        let out = env.run_with(&old, &["get", "namespaces"]);
        assert!(
            out.status.success() && String::from_utf8_lossy(&out.stdout).contains("kube-system")
        );
        let out = env.run_with(&old, &["create", "-f", &pod, "--validate=false"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = env.run_with(&old, &["get", "pods", "-o", "wide"]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("web"));
        let out = env.run_with(&old, &["delete", "pod", "web"]);
        assert!(out.status.success());
    }
    // kubectl 1.30 and 1.32 run directly, with default flags (they validate against OpenAPI v3).
    for version in ["1.30", "1.32"] {
        let Some(bin) = kubectl_dir()
            .map(|d| d.join(format!("kubectl.{version}")))
            .filter(|b| b.exists())
        else {
            continue;
        };
        let ok = |args: &[&str]| {
            let out = env.run_with(&bin, args);
            assert!(
                out.status.success(),
                "kubectl {version} {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            String::from_utf8_lossy(&out.stdout).into_owned()
        };
        let name = format!("v{}", version.replace('.', "-"));
        let manifest = POD.replace("name: web\n", &format!("name: {name}\n"));
        let file = env.write(&format!("{name}.yaml"), &manifest);
        assert!(ok(&["apply", "-f", &file]).contains("created"));
        std::fs::write(&file, manifest.replace("app: web", "app: web\n    v: x"))
            .expect("manifest");
        assert!(ok(&["apply", "-f", &file]).contains("configured"));
        ok(&["label", "pod", &name, "more=yes"]);
        ok(&[
            "patch",
            "pod",
            &name,
            "-p",
            r#"{"metadata":{"annotations":{"a":"b"}}}"#,
        ]);
        let table = ok(&["get", "pods", &name, "-o", "wide"]);
        assert!(
            table.contains(&name) && table.contains("Pending"),
            "{table}"
        );
        assert!(ok(&["explain", "pods.spec.containers.image"]).contains("image"));
        assert!(ok(&["api-resources"]).contains("replicationcontrollers"));
        ok(&["delete", "-f", &file]);
    }
    let _ = std::io::stderr().flush();
}
