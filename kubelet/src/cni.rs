//! The node's pod network configuration: a CNI conflist for the runtime (bridge with the node's pod
//! CIDR from `spec.podCIDR`, host-local addresses, portmap for hostPorts, loopback), written where the
//! runtime reads it. The runtime reports NetworkReady once the file is there.

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::Error;

/// The conflist's file name; low number so that it is the runtime's first choice.
pub const CONF_FILE: &str = "10-atoll.conflist";
/// The Linux bridge that pods are attached to.
pub const BRIDGE: &str = "atollcni0";

/// The conflist for a node whose pods get addresses from `pod_cidr`; host-local keeps its leases in
/// `ipam_dir`.
pub fn conflist(pod_cidr: &str, ipam_dir: &Path) -> serde_json::Value {
    json!({
        "cniVersion": "0.4.0",
        "name": "atoll",
        "plugins": [
            {
                "type": "bridge",
                "bridge": BRIDGE,
                "isGateway": true,
                "ipMasq": false,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "dataDir": ipam_dir,
                    "ranges": [[{"subnet": pod_cidr}]],
                    "routes": [{"dst": if pod_cidr.contains(':') { "::/0" } else { "0.0.0.0/0" }}]
                }
            },
            {"type": "portmap", "capabilities": {"portMappings": true}},
            {"type": "loopback"}
        ]
    })
}

/// Writes the conflist into `conf_dir` when it is missing or different (atomically: a reader never
/// sees half a file). Returns whether it wrote.
pub fn write(conf_dir: &Path, pod_cidr: &str, ipam_dir: &Path) -> Result<bool, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| Error::Io { path, source }
    };
    let text = serde_json::to_string_pretty(&conflist(pod_cidr, ipam_dir)).unwrap_or_default();
    let path: PathBuf = conf_dir.join(CONF_FILE);
    if std::fs::read_to_string(&path).is_ok_and(|old| old == text) {
        return Ok(false);
    }
    std::fs::create_dir_all(conf_dir).map_err(io(conf_dir))?;
    std::fs::create_dir_all(ipam_dir).map_err(io(ipam_dir))?;
    let tmp = conf_dir.join(format!(".{CONF_FILE}.tmp"));
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, &path).map_err(io(&path))?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conflist_carries_the_pod_cidr() {
        let c = conflist("10.244.1.0/24", Path::new("/var/lib/atoll/cni"));
        assert_eq!(
            c["plugins"][0]["ipam"]["ranges"][0][0]["subnet"],
            "10.244.1.0/24"
        );
        assert_eq!(c["plugins"][0]["ipam"]["dataDir"], "/var/lib/atoll/cni");
        assert_eq!(c["plugins"][1]["type"], "portmap");
    }

    #[test]
    fn writes_only_on_change() {
        let dir = tempfile::tempdir().unwrap();
        let ipam = dir.path().join("ipam");
        assert!(write(dir.path(), "10.244.1.0/24", &ipam).unwrap());
        assert!(!write(dir.path(), "10.244.1.0/24", &ipam).unwrap());
        assert!(write(dir.path(), "10.244.2.0/24", &ipam).unwrap());
        let text = std::fs::read_to_string(dir.path().join(CONF_FILE)).unwrap();
        assert!(text.contains("10.244.2.0/24"));
    }
}
