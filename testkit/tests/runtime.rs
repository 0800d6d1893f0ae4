//! The node runtime end to end: a registry, containerd in private namespaces, an image pulled and a
//! pod started through CRI with CNI networking, answering HTTP; then nothing left behind.
//! Needs root (network and mount namespaces, cgroups, containerd).

use std::path::{Path, PathBuf};
use std::time::Duration;

use atoll_testkit::eventually;
use atoll_testkit::runtime::{self, Containerd, Registry, cri_channel};
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use k8s_cri::v1::{
    ContainerConfig, ContainerMetadata, CreateContainerRequest, ImageSpec, LinuxContainerConfig,
    LinuxPodSandboxConfig, PodSandboxConfig, PodSandboxMetadata, PodSandboxStatusRequest,
    PullImageRequest, RunPodSandboxRequest, StartContainerRequest, StatusRequest,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The bridge conflist from RUNTIME.md, with the host-local allocations kept under `ipam_dir`.
fn conflist(ipam_dir: &Path) -> String {
    serde_json::json!({
        "cniVersion": "0.4.0",
        "name": "atoll-test",
        "plugins": [
            {"type": "bridge", "bridge": "atollcni0", "isGateway": true, "ipMasq": false,
             "hairpinMode": true,
             "ipam": {"type": "host-local", "dataDir": ipam_dir,
                      "ranges": [[{"subnet": "10.88.0.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    })
    .to_string()
}

/// `GET http://<ip>/`: the body of a 200 answer, None while nothing (or something else) answers.
async fn http_get(ip: &str) -> Option<String> {
    let mut stream = tokio::net::TcpStream::connect((ip, 80)).await.ok()?;
    stream
        .write_all(b"GET / HTTP/1.0\r\nHost: pod\r\n\r\n")
        .await
        .ok()?;
    let mut reply = String::new();
    stream.read_to_string(&mut reply).await.ok()?;
    let (head, body) = reply.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?;
    (status == "200").then(|| body.to_string())
}

/// The lines of the host's (this process's) mount table that mention `dir`.
fn host_mounts_under(dir: &Path) -> Vec<String> {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("read the mount table");
    let dir = dir.to_string_lossy();
    table
        .lines()
        .filter(|l| l.contains(dir.as_ref()))
        .map(str::to_string)
        .collect()
}

fn dir_entries(dir: &str) -> Vec<PathBuf> {
    let mut names: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
        .unwrap_or_default();
    names.sort();
    names
}

/// Processes whose command line names `needle`.
fn processes_naming(needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc")
        .expect("list /proc")
        .filter_map(Result::ok)
    {
        if entry.file_name().to_string_lossy().parse::<u32>().is_err() {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            found.push(format!(
                "{}: {cmdline}",
                entry.file_name().to_string_lossy()
            ));
        }
    }
    found
}

/// The cgroup directories named `name` in any hierarchy.
fn cgroups_named(name: &str) -> Vec<PathBuf> {
    dir_entries("/sys/fs/cgroup")
        .into_iter()
        .map(|h| h.join(name))
        .filter(|p| p.exists())
        .collect()
}

#[test]
fn pod_on_containerd_over_cri_serves_http_and_leaves_nothing_behind() {
    runtime::isolate_network();
    runtime::add_node_address("10.200.0.1/32");
    let host_netns = dir_entries("/run/netns");
    let host_containerd = dir_entries("/run/containerd");

    let registry = Registry::start();
    let containerd = Containerd::start(&registry);
    let dir = containerd.dir().to_path_buf();
    let socket = containerd.socket().to_string_lossy().into_owned();
    let cgroup_root = containerd.cgroup_root().to_string();
    assert!(containerd.endpoint().starts_with("unix:///"));

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let channel = cri_channel(containerd.socket()).await.unwrap();
        let mut images = ImageServiceClient::new(channel.clone());
        let mut runtime = RuntimeServiceClient::new(channel);

        let busybox = registry.image("busybox:1.35");
        let image = Some(ImageSpec {
            image: busybox.clone(),
            ..Default::default()
        });
        let pulled = images
            .pull_image(PullImageRequest {
                image: image.clone(),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert!(pulled.image_ref.starts_with("sha256:"), "{pulled:?}");

        std::fs::write(
            containerd.cni_conf_dir().join("10-atoll-test.conflist"),
            conflist(&dir.join("cni-ipam")),
        )
        .unwrap();
        eventually("CRI NetworkReady", || {
            let mut runtime = runtime.clone();
            async move {
                let status = runtime.status(StatusRequest::default()).await.ok()?;
                let ready = status
                    .into_inner()
                    .status?
                    .conditions
                    .iter()
                    .any(|c| c.r#type == "NetworkReady" && c.status);
                ready.then_some(())
            }
        })
        .await;

        let sandbox_config = PodSandboxConfig {
            metadata: Some(PodSandboxMetadata {
                name: "web".into(),
                uid: "6f7c4a52-web".into(),
                namespace: "default".into(),
                attempt: 0,
            }),
            hostname: "web".into(),
            log_directory: dir.join("pod-logs").to_string_lossy().into_owned(),
            linux: Some(LinuxPodSandboxConfig {
                cgroup_parent: format!("{cgroup_root}/pod-web"),
                ..Default::default()
            }),
            ..Default::default()
        };
        let sandbox = runtime
            .run_pod_sandbox(RunPodSandboxRequest {
                config: Some(sandbox_config.clone()),
                ..Default::default()
            })
            .await
            .unwrap()
            .into_inner()
            .pod_sandbox_id;
        let container = runtime
            .create_container(CreateContainerRequest {
                pod_sandbox_id: sandbox.clone(),
                config: Some(ContainerConfig {
                    metadata: Some(ContainerMetadata {
                        name: "httpd".into(),
                        attempt: 0,
                    }),
                    image,
                    command: ["httpd", "-f", "-p", "80", "-h", "/www"]
                        .map(String::from)
                        .to_vec(),
                    log_path: "httpd.log".into(),
                    linux: Some(LinuxContainerConfig::default()),
                    ..Default::default()
                }),
                sandbox_config: Some(sandbox_config),
            })
            .await
            .unwrap()
            .into_inner()
            .container_id;
        runtime
            .start_container(StartContainerRequest {
                container_id: container,
            })
            .await
            .unwrap();

        let status = runtime
            .pod_sandbox_status(PodSandboxStatusRequest {
                pod_sandbox_id: sandbox,
                verbose: false,
            })
            .await
            .unwrap()
            .into_inner();
        let ip = status.status.unwrap().network.unwrap().ip;
        assert!(ip.starts_with("10.88.0."), "pod IP {ip}");

        let page = eventually("the pod to answer HTTP", || {
            let ip = ip.clone();
            async move {
                let get = tokio::time::timeout(Duration::from_secs(2), http_get(&ip));
                get.await.ok().flatten()
            }
        })
        .await;
        assert!(page.contains("atoll busybox"), "{page}");
    });

    // While the pod runs, its mounts and network namespace are invisible on the host (the one
    // host mount is the kubelet root's shared bind mount), and its processes are in the test's
    // cgroup.
    let kubelet_root = format!(" {} ", dir.join("kubelet").display());
    let mounts = host_mounts_under(&dir);
    assert!(
        mounts.len() == 1 && mounts[0].contains(&kubelet_root) && mounts[0].contains("shared:"),
        "{mounts:?}"
    );
    assert_eq!(dir_entries("/run/netns"), host_netns);
    assert_eq!(dir_entries("/run/containerd"), host_containerd);
    // ... because they live in containerd's own mount namespace, seen here through its /proc root.
    let config = dir.join("config.toml").to_string_lossy().into_owned();
    let containerd_pid = processes_naming(&config)
        .iter()
        .find(|p| p.contains("containerd --config"))
        .and_then(|p| p.split(':').next().map(str::to_string))
        .expect("containerd runs");
    let inside = format!("/proc/{containerd_pid}/root");
    let netns = dir_entries(&format!("{inside}/run/netns"));
    assert!(
        netns.iter().any(|p| p.to_string_lossy().contains("/cni-")),
        "no pod netns in containerd's /run/netns: {netns:?}"
    );
    assert!(!dir_entries(&format!("{inside}/run/containerd/s")).is_empty());
    assert!(!dir_entries(&format!("{inside}/var/lib/cni/results")).is_empty());
    let pod_cgroup = format!("/sys/fs/cgroup/pids{cgroup_root}/pod-web");
    assert!(Path::new(&pod_cgroup).is_dir(), "{pod_cgroup} is missing");
    assert!(
        !processes_naming(&socket).is_empty(),
        "no shim names {socket}"
    );

    drop(rt);
    drop(containerd);
    drop(registry);

    assert_eq!(processes_naming(&socket), Vec::<String>::new());
    assert_eq!(
        processes_naming(&dir.to_string_lossy()),
        Vec::<String>::new()
    );
    assert_eq!(
        cgroups_named(cgroup_root.trim_start_matches('/')),
        Vec::<PathBuf>::new()
    );
    assert_eq!(host_mounts_under(&dir), Vec::<String>::new());
    assert!(!dir.exists(), "{dir:?} is still there");
    assert_eq!(dir_entries("/run/netns"), host_netns);
    assert_eq!(dir_entries("/run/containerd"), host_containerd);
}
