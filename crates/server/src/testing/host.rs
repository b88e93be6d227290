//! What a test's sandboxes leave on the host, by the test's own unique names: cgroups under its
//! cgroup parent, and with egress its bridge, nftables tables and network slots. Tests that run
//! a real server process (whose sandboxes outlive it by design) clean up with [`HostGuard`] and
//! prove it with [`host_leftovers`].

use crate::sandboxes::SandboxSettings;
use sandpool_net::{Ipv4Net, NetConfig, NetPool};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// Egress settings of one test: a bridge (and nftables tables) named for it, one ready slot, and
/// a /24 of 10.216.0.0/16 that no route of the host covers yet, so tests running at once (in
/// this process or others) do not share a subnet.
pub fn test_egress_config() -> NetConfig {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let routes = ipv4_routes();
    let seed = std::process::id().wrapping_mul(7);
    let mut third = 0u8;
    for _ in 0..256 {
        third = (seed.wrapping_add(NEXT.fetch_add(1, Ordering::Relaxed)) % 256) as u8;
        let candidate = Ipv4Addr::new(10, 216, third, 0);
        if !routes
            .iter()
            .any(|(dest, mask)| u32::from(candidate) & mask == *dest)
        {
            break;
        }
    }
    let subnet = match Ipv4Net::new(Ipv4Addr::new(10, 216, third, 0), 24) {
        Ok(net) => net,
        Err(e) => panic!("a /24 is a valid subnet: {e}"),
    };
    let tag = &uuid::Uuid::new_v4().simple().to_string()[..5];
    NetConfig {
        ready_slots: 1,
        ..crate::sandboxes::egress_config(&format!("sandpool-t{tag}"), subnet)
    }
}

/// `(destination, mask)` of the host's IPv4 routes (`/proc/net/route`, little-endian hex).
fn ipv4_routes() -> Vec<(u32, u32)> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let hex = |s: &str| u32::from_str_radix(s, 16).ok().map(u32::from_be);
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some((hex(f.get(1)?)?, hex(f.get(7)?)?))
        })
        // The default route covers everything; it is no reason to skip a subnet.
        .filter(|(_, mask)| *mask != 0)
        .collect()
}

/// Mount points of the cgroup hierarchies (v1 controllers and cgroup2), from mountinfo.
fn cgroup_roots() -> Vec<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fstype = after.split_whitespace().next()?;
            let mount_point = before.split_whitespace().nth(4)?;
            matches!(fstype, "cgroup" | "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect()
}

/// The cgroups below `parent` (one per sandbox) in every hierarchy, without creating anything.
pub fn cgroup_children(parent: &str) -> Vec<PathBuf> {
    cgroup_roots()
        .iter()
        .filter_map(|root| std::fs::read_dir(root.join(parent)).ok())
        .flat_map(|dir| dir.flatten())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

/// Everything of `settings`' names still on the host: the cgroup parent in any hierarchy, and
/// with egress the bridge, the nftables tables and the slots (veths and netns files) of its
/// subnet. Empty when a test cleaned up.
pub fn host_leftovers(settings: &SandboxSettings) -> Vec<String> {
    let mut found: Vec<String> = cgroup_roots()
        .iter()
        .map(|root| root.join(&settings.cgroup_parent))
        .filter(|dir| dir.exists())
        .map(|dir| format!("cgroup {}", dir.display()))
        .collect();
    if let Some(net) = &settings.egress {
        if Path::new("/sys/class/net").join(&net.bridge).exists() {
            found.push(format!("bridge {}", net.bridge));
        }
        let tables = std::process::Command::new("nft")
            .args(["list", "tables"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        for line in tables.lines() {
            let mut words = line.split_whitespace().skip(1);
            if let (Some(family), Some(name)) = (words.next(), words.next()) {
                if name == net.nft_table {
                    found.push(format!("nft table {family} {name}"));
                }
            }
        }
        let slots = |dir: &Path| -> Vec<String> {
            std::fs::read_dir(dir)
                .map(|d| {
                    d.flatten()
                        .filter_map(|e| e.file_name().into_string().ok())
                        .filter(|name| slot_of(name, net.subnet))
                        .collect()
                })
                .unwrap_or_default()
        };
        for name in slots(Path::new("/sys/class/net")) {
            found.push(format!("veth {name}"));
        }
        for name in slots(&net.state_dir) {
            found.push(format!("netns {}", net.state_dir.join(name).display()));
        }
    }
    found
}

/// Whether `name` is a network slot of `subnet` (slots are named `spv` + their address in hex).
fn slot_of(name: &str, subnet: Ipv4Net) -> bool {
    name.strip_prefix("spv")
        .filter(|hex| hex.len() == 8)
        .and_then(|hex| u32::from_str_radix(hex, 16).ok())
        .is_some_and(|addr| subnet.contains(Ipv4Addr::from(addr)))
}

/// Destroys what sandboxes of `settings` with state in `data_dir` left on the host: their
/// processes, cgroups and state, the cgroup parent, and with egress the bridge, nftables tables
/// and slots. Best effort: whatever fails shows up in [`host_leftovers`].
pub async fn clean_host(data_dir: &Path, settings: &SandboxSettings) {
    let parent_exists = cgroup_roots()
        .iter()
        .any(|root| root.join(&settings.cgroup_parent).exists());
    if parent_exists || data_dir.join("sandboxes").exists() {
        // Without egress: the runtime must not set the network up again only to sweep it; the
        // teardown below removes every slot of the subnet.
        let sweeper = SandboxSettings {
            egress: None,
            ..settings.clone()
        };
        match crate::sandboxes::start_runtime(data_dir, &sweeper).await {
            Ok(runtime) => {
                if let Err(e) = runtime.sweep(&|_| false).await {
                    eprintln!("test cleanup: sweeping sandboxes: {e}");
                }
            }
            Err(e) => eprintln!("test cleanup: starting a runtime to sweep: {e:#}"),
        }
        for root in cgroup_roots() {
            let _ = std::fs::remove_dir(root.join(&settings.cgroup_parent));
        }
    }
    if let Some(net) = &settings.egress {
        if let Err(e) = NetPool::teardown_host(net).await {
            eprintln!("test cleanup: tearing down {}: {e}", net.bridge);
        }
    }
}

/// Runs [`clean_host`] when dropped, also when the test fails; on its own thread and runtime,
/// since `Drop` cannot await and may run inside a test's runtime.
pub struct HostGuard {
    pub data_dir: PathBuf,
    pub settings: SandboxSettings,
}

impl HostGuard {
    /// Cleans up now (the same as dropping the guard), so a test can then assert
    /// [`host_leftovers`] is empty.
    pub fn clean(&self) {
        let data_dir = self.data_dir.clone();
        let settings = self.settings.clone();
        let _ = std::thread::spawn(move || {
            if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                rt.block_on(clean_host(&data_dir, &settings));
            }
        })
        .join();
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        self.clean();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_are_matched_by_subnet() {
        let net: Ipv4Net = "10.216.7.0/24".parse().expect("subnet");
        assert!(slot_of("spv0ad80702", net));
        assert!(!slot_of("spv0ad80802", net));
        assert!(!slot_of("spv0ad807", net));
        assert!(!slot_of("eth0", net));
    }

    #[test]
    fn egress_configs_of_one_process_differ() {
        let (a, b) = (test_egress_config(), test_egress_config());
        assert_ne!(a.bridge, b.bridge);
        assert_eq!(a.nft_table, a.bridge);
        assert!(a.bridge.len() <= 15, "{}", a.bridge);
        assert_ne!(a.subnet, b.subnet);
    }
}
