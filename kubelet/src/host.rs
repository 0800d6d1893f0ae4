//! What the kubelet reads off its host: capacity (cpu, memory, ephemeral storage), addresses, the
//! facts in `nodeInfo`, and the pressure signals behind the Memory/Disk/PID pressure conditions.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

/// Memory kept back from pods, as Kubernetes' default hard eviction threshold (`memory.available<100Mi`).
pub const MEMORY_RESERVE: u64 = 100 << 20;
/// Below this share of free space on the kubelet's file system, the node reports DiskPressure
/// (Kubernetes' default `nodefs.available<10%`).
pub const DISK_PRESSURE_FREE: f64 = 0.10;
/// Below this share of free process IDs, the node reports PIDPressure.
pub const PID_PRESSURE_FREE: f64 = 0.10;

/// A snapshot of the host's resources and the signals derived from it.
#[derive(Debug, Clone, PartialEq)]
pub struct Host {
    /// Logical CPUs.
    pub cpus: u64,
    /// Total memory in bytes.
    pub memory: u64,
    /// Memory available to new work, in bytes.
    pub memory_available: u64,
    /// Size of the file system holding the kubelet's root directory, in bytes.
    pub disk: u64,
    /// Free space on it, in bytes.
    pub disk_available: u64,
    /// The most processes the kernel allows.
    pub pid_max: u64,
    /// Processes running now.
    pub pids: u64,
}

impl Host {
    /// Reads the host now; `root_dir` names the file system that ephemeral storage lives on.
    pub fn read(root_dir: &Path) -> Host {
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let (disk, disk_available) = nix::sys::statvfs::statvfs(root_dir)
            .map(|s| {
                let frag = s.fragment_size();
                (s.blocks() * frag, s.blocks_available() * frag)
            })
            .unwrap_or((0, 0));
        Host {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            memory: meminfo_bytes(&meminfo, "MemTotal"),
            memory_available: meminfo_bytes(&meminfo, "MemAvailable"),
            disk,
            disk_available,
            pid_max: read_number("/proc/sys/kernel/pid_max").unwrap_or(32768),
            pids: std::fs::read_dir("/proc")
                .map(|d| {
                    d.filter_map(Result::ok)
                        .filter(|e| {
                            e.file_name()
                                .to_string_lossy()
                                .bytes()
                                .all(|b| b.is_ascii_digit())
                        })
                        .count() as u64
                })
                .unwrap_or(0),
        }
    }

    /// The node's resources as the kubelet reports them: the host's, or on a hollow runtime the
    /// configured ones ([`Host::simulated`]), without reading anything of the host.
    pub fn of(config: &crate::Config, runtime: &crate::cri::Runtime) -> Host {
        if runtime.is_hollow() {
            Host::simulated(&config.hollow)
        } else {
            Host::read(&config.root_dir)
        }
    }

    /// A hollow node: fixed resources, all of them free, never under pressure.
    pub fn simulated(resources: &crate::hollow::Resources) -> Host {
        Host {
            cpus: resources.cpu,
            memory: resources.memory,
            memory_available: resources.memory,
            disk: resources.ephemeral_storage,
            disk_available: resources.ephemeral_storage,
            pid_max: 4_194_304,
            pids: 0,
        }
    }

    /// The node's capacity: cpu, memory, ephemeral-storage and the pod limit.
    pub fn capacity(&self, max_pods: u32) -> BTreeMap<String, Quantity> {
        BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            ("memory".to_string(), Quantity(kibibytes(self.memory))),
            (
                "ephemeral-storage".to_string(),
                Quantity(kibibytes(self.disk)),
            ),
            ("pods".to_string(), Quantity(max_pods.to_string())),
        ])
    }

    /// What pods may be given: capacity less the eviction reserves, as Kubernetes computes it with
    /// its default hard eviction thresholds.
    pub fn allocatable(&self, max_pods: u32) -> BTreeMap<String, Quantity> {
        let disk_reserve = (self.disk as f64 * DISK_PRESSURE_FREE) as u64;
        BTreeMap::from([
            ("cpu".to_string(), Quantity(self.cpus.to_string())),
            (
                "memory".to_string(),
                Quantity(kibibytes(self.memory.saturating_sub(MEMORY_RESERVE))),
            ),
            (
                "ephemeral-storage".to_string(),
                Quantity(self.disk.saturating_sub(disk_reserve).to_string()),
            ),
            ("pods".to_string(), Quantity(max_pods.to_string())),
        ])
    }

    /// Whether available memory is below the reserve.
    pub fn memory_pressure(&self) -> bool {
        self.memory > 0 && self.memory_available < MEMORY_RESERVE
    }

    /// Whether the kubelet's file system is nearly full.
    pub fn disk_pressure(&self) -> bool {
        self.disk > 0 && (self.disk_available as f64) < self.disk as f64 * DISK_PRESSURE_FREE
    }

    /// Whether the node is running out of process IDs.
    pub fn pid_pressure(&self) -> bool {
        (self.pid_max.saturating_sub(self.pids) as f64) < self.pid_max as f64 * PID_PRESSURE_FREE
    }
}

fn kibibytes(bytes: u64) -> String {
    format!("{}Ki", bytes / 1024)
}

fn meminfo_bytes(meminfo: &str, key: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib * 1024)
}

fn read_number(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// What `nodeInfo` and the Hostname address say about the machine.
#[derive(Debug, Clone, PartialEq)]
pub struct System {
    /// The host name.
    pub hostname: String,
    /// `/etc/machine-id`.
    pub machine_id: String,
    /// The boot ID.
    pub boot_id: String,
    /// `uname -r`.
    pub kernel_version: String,
    /// The operating system's name.
    pub os_image: String,
}

impl System {
    /// This host's, or a made-up one for a hollow node named `node_name`.
    pub fn of(node_name: &str, runtime: &crate::cri::Runtime) -> System {
        if runtime.is_hollow() {
            System::simulated(node_name)
        } else {
            System::read()
        }
    }

    /// Reads this host.
    pub fn read() -> System {
        let (machine_id, boot_id) = machine_and_boot_id();
        System {
            hostname: hostname(),
            machine_id,
            boot_id,
            kernel_version: kernel_version(),
            os_image: os_image(),
        }
    }

    /// A hollow node's: its name as host name, a machine ID derived from it, a new boot ID.
    pub fn simulated(node_name: &str) -> System {
        let hash = |seed: u64| {
            node_name.bytes().fold(seed, |h, b| {
                (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
            })
        };
        let boot: u128 = rand::random();
        System {
            hostname: node_name.into(),
            machine_id: format!(
                "{:016x}{:016x}",
                hash(0xcbf2_9ce4_8422_2325),
                hash(0x8422_2325_cbf2_9ce4)
            ),
            boot_id: format!(
                "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
                boot >> 96,
                (boot >> 80) & 0xffff,
                (boot >> 64) & 0xffff,
                (boot >> 48) & 0xffff,
                boot & 0xffff_ffff_ffff
            ),
            kernel_version: "hollow".into(),
            os_image: "Atoll hollow node".into(),
        }
    }
}

/// The operating system's name as `/etc/os-release` gives it (`PRETTY_NAME`).
pub fn os_image() -> String {
    let text = std::fs::read_to_string("/etc/os-release").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))
        .map(|v| v.trim_matches('"').to_string())
        .unwrap_or_else(|| "Linux".into())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_version() -> String {
    nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The machine ID and boot ID, as `nodeInfo` reports them.
pub fn machine_and_boot_id() -> (String, String) {
    (
        read_trimmed("/etc/machine-id"),
        read_trimmed("/proc/sys/kernel/random/boot_id"),
    )
}

/// The address the node is reached at: the first global IPv4 address of an interface that is up,
/// else the first global IPv6 one, else loopback.
pub fn default_node_ip() -> IpAddr {
    let mut v6 = None;
    if let Ok(addrs) = nix::ifaddrs::getifaddrs() {
        for a in addrs {
            if !a.flags.contains(nix::net::if_::InterfaceFlags::IFF_UP)
                || a.flags
                    .contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK)
            {
                continue;
            }
            let Some(addr) = a.address else { continue };
            if let Some(v4) = addr.as_sockaddr_in() {
                let ip = v4.ip();
                if !ip.is_loopback() && !ip.is_link_local() {
                    return IpAddr::V4(ip);
                }
            } else if let Some(s6) = addr.as_sockaddr_in6() {
                let ip = s6.ip();
                if v6.is_none() && !ip.is_loopback() && (ip.segments()[0] & 0xffc0) != 0xfe80 {
                    v6 = Some(IpAddr::V6(ip));
                }
            }
        }
    }
    v6.unwrap_or(IpAddr::V4(std::net::Ipv4Addr::LOCALHOST))
}

/// The host's name (`hostname`).
pub fn hostname() -> String {
    nix::unistd::gethostname()
        .map(|h| h.to_string_lossy().into_owned())
        .unwrap_or_else(|_| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> Host {
        Host {
            cpus: 2,
            memory: 4 << 30,
            memory_available: 2 << 30,
            disk: 100 << 30,
            disk_available: 50 << 30,
            pid_max: 32768,
            pids: 200,
        }
    }

    #[test]
    fn capacity_and_allocatable() {
        let h = host();
        let cap = h.capacity(110);
        assert_eq!(cap["cpu"].0, "2");
        assert_eq!(cap["memory"].0, "4194304Ki");
        assert_eq!(cap["pods"].0, "110");
        let alloc = h.allocatable(110);
        assert_eq!(
            alloc["memory"].0,
            format!("{}Ki", (4u64 << 20) - 100 * 1024)
        );
        assert_eq!(
            alloc["ephemeral-storage"].0,
            ((100u64 << 30) - (10u64 << 30)).to_string()
        );
    }

    #[test]
    fn pressure_signals() {
        let mut h = host();
        assert!(!h.memory_pressure() && !h.disk_pressure() && !h.pid_pressure());
        h.memory_available = 50 << 20;
        h.disk_available = 5 << 30;
        h.pids = 31000;
        assert!(h.memory_pressure() && h.disk_pressure() && h.pid_pressure());
    }

    #[test]
    fn meminfo_parsing() {
        let text = "MemTotal:       24683656 kB\nMemFree:        19121152 kB\nMemAvailable:   24240064 kB\n";
        assert_eq!(meminfo_bytes(text, "MemTotal"), 24683656 * 1024);
        assert_eq!(meminfo_bytes(text, "MemAvailable"), 24240064 * 1024);
        assert_eq!(meminfo_bytes(text, "Missing"), 0);
    }

    #[test]
    fn a_hollow_node_reads_nothing_of_the_host() {
        let h = Host::simulated(&crate::hollow::Resources::default());
        let cap = h.capacity(110);
        assert_eq!(
            (cap["cpu"].0.as_str(), cap["memory"].0.as_str()),
            ("4", "16777216Ki")
        );
        assert_eq!(cap["ephemeral-storage"].0, format!("{}Ki", 100u64 << 20));
        assert!(!h.memory_pressure() && !h.disk_pressure() && !h.pid_pressure());
        let a = System::simulated("hollow-1");
        assert_eq!(a.hostname, "hollow-1");
        assert_eq!(a.machine_id.len(), 32);
        assert_eq!(a.machine_id, System::simulated("hollow-1").machine_id);
        assert_ne!(a.machine_id, System::simulated("hollow-2").machine_id);
    }

    #[test]
    fn reads_this_host() {
        let h = Host::read(Path::new("/"));
        assert!(h.cpus >= 1 && h.memory > 0 && h.disk > 0 && h.pids > 0);
        assert!(!kernel_version().is_empty());
    }
}
