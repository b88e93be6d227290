//! Egress network slots for sandpool sandboxes.
//!
//! This crate owns everything of the host network that sandboxes with egress use: one host
//! bridge, the nftables tables `inet <nft_table>` (NAT and policy) and `bridge <nft_table>`
//! (no slot-to-slot frames), IPv4 forwarding, and a pool of pre-created "network slots". A slot
//! is a network namespace owned by the initial user namespace (kept alive by a bind mount of its
//! nsfs file under [`NetConfig::state_dir`]) with `lo` up and `eth0`, the inner end of a veth
//! whose host end (named like the slot) is an isolated port of the bridge, with an address of
//! the subnet and a default route via the bridge address.
//!
//! Policy: traffic from slots is masqueraded out of the host; addresses local to the host and
//! 169.254.0.0/16 are unreachable unless [`NetConfig::allow_host`] /
//! [`NetConfig::allow_link_local`]; slots never reach each other; nothing forwarded may open
//! a connection to a slot.
//!
//! Joining: a privileged process does `setns(open(netns_path), CLONE_NEWNET)` *before* it creates
//! the sandbox's user namespace (joining needs CAP_SYS_ADMIN over the owning, initial user
//! namespace); the sandbox then cannot reconfigure the namespace. Creating and deleting veths
//! costs tens of milliseconds, so slots are made ahead by a background task and `acquire` only
//! takes one. That task replaces a taken slot once the pool has gone a moment without a take
//! (at once when none is left), so its work does not compete with the starts of a burst. A slot
//! serves one sandbox: release it and take a fresh one.
//!
//! It does not create sandboxes, nor the loopback-only namespace of sandboxes without egress
//! (the sandbox crate does both).

mod netlink;
mod nft;
mod ns;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

pub use ns::run_in_netns;

/// Prefix of slot names (host veth names and netns file names); what `sweep` looks for.
const SLOT_PREFIX: &str = "spv";

/// How long the pool must have gone without a take before it makes a slot while some are still
/// ready: making one (≈14 ms of netns, veth and address work) right after a take would compete
/// for the CPU with the start that took it, and with the next start of a burst.
const IDLE_BEFORE_REFILL: Duration = Duration::from_millis(20);

/// An IPv4 network in CIDR form, e.g. `10.213.0.0/16`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ipv4Net {
    addr: Ipv4Addr,
    prefix: u8,
}

impl Ipv4Net {
    /// A network; `addr` must have no host bits set and `prefix` must be between 8 and 30.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Ipv4Net, NetError> {
        if !(8..=30).contains(&prefix) {
            return Err(NetError::Config(format!(
                "prefix /{prefix} out of range (8..=30)"
            )));
        }
        let net = Ipv4Net { addr, prefix };
        if u32::from(addr) & !net.mask() != 0 {
            return Err(NetError::Config(format!(
                "{addr}/{prefix} has host bits set"
            )));
        }
        Ok(net)
    }

    pub fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    pub fn prefix(&self) -> u8 {
        self.prefix
    }

    fn mask(&self) -> u32 {
        u32::MAX << (32 - u32::from(self.prefix))
    }

    /// Number of host offsets (excluding network and broadcast addresses).
    fn host_count(&self) -> u32 {
        (1u32 << (32 - u32::from(self.prefix))) - 2
    }

    /// The address at host offset `n` (1 = first host).
    fn host(&self, n: u32) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.addr) + n)
    }

    /// The host offset of `ip` in this network, if it is a host address of it.
    fn offset(&self, ip: Ipv4Addr) -> Option<u32> {
        let off = u32::from(ip).wrapping_sub(u32::from(self.addr));
        (self.contains(ip) && (1..=self.host_count()).contains(&off)).then_some(off)
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = NetError;
    fn from_str(s: &str) -> Result<Self, NetError> {
        let (a, p) = s
            .split_once('/')
            .ok_or_else(|| NetError::Config(format!("subnet {s:?} is not in a.b.c.d/len form")))?;
        let addr = a
            .parse::<Ipv4Addr>()
            .map_err(|e| NetError::Config(format!("subnet {s:?}: {e}")))?;
        let prefix = p
            .parse::<u8>()
            .map_err(|e| NetError::Config(format!("subnet {s:?}: {e}")))?;
        Ipv4Net::new(addr, prefix)
    }
}

/// Configuration of the host side and of the slot pool.
#[derive(Clone, Debug)]
pub struct NetConfig {
    /// Host bridge name (at most 15 bytes).
    pub bridge: String,
    /// nftables table name (family `inet`) holding NAT and policy for this bridge.
    pub nft_table: String,
    /// Pool subnet; the first host address is the bridge (gateway) address.
    pub subnet: Ipv4Net,
    /// How many slots to keep ready.
    pub ready_slots: usize,
    /// Allow slots to reach addresses local to the host (default: denied).
    pub allow_host: bool,
    /// Allow slots to reach 169.254.0.0/16 (default: denied, it is where cloud metadata lives).
    pub allow_link_local: bool,
    /// Directory holding the nsfs bind mounts of the slots.
    pub state_dir: PathBuf,
}

impl Default for NetConfig {
    fn default() -> Self {
        NetConfig {
            bridge: "sandpool0".into(),
            nft_table: "sandpool".into(),
            subnet: Ipv4Net {
                addr: Ipv4Addr::new(10, 213, 0, 0),
                prefix: 16,
            },
            ready_slots: 4,
            allow_host: false,
            allow_link_local: false,
            state_dir: PathBuf::from("/run/sandpool/netns"),
        }
    }
}

impl NetConfig {
    /// The bridge's own address: the first host of the subnet.
    pub fn gateway(&self) -> Ipv4Addr {
        self.subnet.host(1)
    }

    fn validate(&self) -> Result<(), NetError> {
        let name_ok = |s: &str, max: usize| {
            !s.is_empty()
                && s.len() <= max
                && s.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                && s.as_bytes()[0].is_ascii_alphabetic()
        };
        if !name_ok(&self.bridge, 15) {
            return Err(NetError::Config(format!(
                "bridge name {:?}: 1-15 characters [A-Za-z0-9_-], starting with a letter",
                self.bridge
            )));
        }
        if self.bridge.starts_with(SLOT_PREFIX) {
            return Err(NetError::Config(format!(
                "bridge name {:?} must not start with {SLOT_PREFIX:?} (slot names do)",
                self.bridge
            )));
        }
        if !name_ok(&self.nft_table, 64) {
            return Err(NetError::Config(format!(
                "nft table name {:?}: 1-64 characters [A-Za-z0-9_-], starting with a letter",
                self.nft_table
            )));
        }
        if !self.state_dir.is_absolute() {
            return Err(NetError::Config(format!(
                "state_dir {} must be an absolute path",
                self.state_dir.display()
            )));
        }
        Ipv4Net::new(self.subnet.addr, self.subnet.prefix)?;
        Ok(())
    }
}

/// A ready network namespace for one sandbox. Never reused: release it and take a fresh one.
#[derive(Debug)]
pub struct NetSlot {
    /// Slot name; also the name of the host end of its veth and of its file in the state dir.
    pub name: String,
    /// Bind-mounted nsfs file; `setns(open(path), CLONE_NEWNET)` joins the slot.
    pub netns_path: PathBuf,
    /// The slot's address (on `eth0` inside the namespace).
    pub address: Ipv4Addr,
    /// The bridge address, the slot's default route.
    pub gateway: Ipv4Addr,
}

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("invalid network configuration: {0}")]
    Config(String),
    #[error("netlink: {0}")]
    Netlink(String),
    #[error("nftables: {0}")]
    Nft(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("no free address left in {0}")]
    Exhausted(Ipv4Net),
    #[error("the network pool is shut down")]
    Shutdown,
}

/// A pool of network slots on one host bridge. Cheap to clone (shared state).
#[derive(Clone)]
pub struct NetPool {
    inner: Arc<Inner>,
}

struct Inner {
    cfg: NetConfig,
    nl: netlink::Host,
    bridge_index: u32,
    state: Mutex<State>,
    refill: Arc<tokio::sync::Notify>,
    closed: AtomicBool,
    refill_task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

#[derive(Default)]
struct State {
    ready: VecDeque<NetSlot>,
    /// Host offsets in use (ready, handed out, being created or being destroyed).
    used: BTreeSet<u32>,
    /// Names of slots this pool made and has not destroyed; `sweep` leaves them alone.
    live: HashSet<String>,
    /// Where the next address search starts, so a freed address is not reused at once (peers
    /// may still hold a neighbour entry with the old MAC).
    cursor: u32,
    /// When a ready slot was last taken.
    last_take: Option<Instant>,
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State inconsistent in a way that matters
        // more than losing the whole pool would.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn slot_path(&self, name: &str) -> PathBuf {
        self.cfg.state_dir.join(name)
    }

    fn alloc(&self) -> Result<(String, Ipv4Addr), NetError> {
        let net = self.cfg.subnet;
        let mut st = self.state();
        // Offset 1 is the gateway; offsets run 2..=host_count.
        let span = net.host_count() - 1;
        for i in 0..span {
            let off = 2 + (st.cursor + i) % span;
            if !st.used.contains(&off) {
                st.used.insert(off);
                st.cursor = (off - 2 + 1) % span;
                let addr = net.host(off);
                let name = slot_name(addr);
                st.live.insert(name.clone());
                return Ok((name, addr));
            }
        }
        Err(NetError::Exhausted(net))
    }

    fn free(&self, addr: Ipv4Addr, name: &str) {
        let mut st = self.state();
        if let Some(off) = self.cfg.subnet.offset(addr) {
            st.used.remove(&off);
        }
        st.live.remove(name);
    }

    async fn create_slot(&self) -> Result<NetSlot, NetError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(NetError::Shutdown);
        }
        let (name, address) = self.alloc()?;
        let slot = NetSlot {
            netns_path: self.slot_path(&name),
            name,
            address,
            gateway: self.cfg.gateway(),
        };
        match self.build(&slot).await {
            Ok(()) => Ok(slot),
            Err(e) => {
                self.destroy(slot).await;
                Err(e)
            }
        }
    }

    async fn build(&self, slot: &NetSlot) -> Result<(), NetError> {
        let netns = ns::create(slot.netns_path.clone(), tokio::runtime::Handle::current()).await?;
        self.nl
            .add_slot_veth(&slot.name, self.bridge_index, &netns.fd)
            .await?;
        netlink::configure_slot_inside(
            &netns.handle,
            slot.address,
            self.cfg.subnet.prefix,
            slot.gateway,
        )
        .await
    }

    /// Best effort: a leftover is what `sweep` is for.
    async fn destroy(&self, slot: NetSlot) {
        if let Err(e) = self.nl.del_link_by_name(&slot.name).await {
            tracing::warn!(slot = %slot.name, error = %e, "deleting slot veth");
        }
        ns::remove(&slot.netns_path);
        self.free(slot.address, &slot.name);
    }

    fn take_ready(&self) -> Option<NetSlot> {
        let slot = {
            let mut st = self.state();
            st.last_take = Some(Instant::now());
            st.ready.pop_front()
        };
        self.refill.notify_one();
        slot
    }

    /// What the refill loop should do now: nothing (full), wait this long (some slots are
    /// still ready and a take was recent), or make a slot. An empty pool refills at once: the
    /// next acquire would otherwise make its slot itself, on the start path.
    fn refill_due(&self) -> Refill {
        let st = self.state();
        if st.ready.len() >= self.cfg.ready_slots {
            return Refill::Full;
        }
        if st.ready.is_empty() {
            return Refill::Now;
        }
        match st.last_take.map(|t| t.elapsed()) {
            Some(idle) if idle < IDLE_BEFORE_REFILL => Refill::After(IDLE_BEFORE_REFILL - idle),
            _ => Refill::Now,
        }
    }
}

enum Refill {
    Full,
    After(Duration),
    Now,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.refill.notify_one();
    }
}

fn slot_name(addr: Ipv4Addr) -> String {
    format!("{SLOT_PREFIX}{:08x}", u32::from(addr))
}

fn slot_addr(name: &str) -> Option<Ipv4Addr> {
    let hex = name.strip_prefix(SLOT_PREFIX)?;
    if hex.len() != 8 {
        return None;
    }
    u32::from_str_radix(hex, 16).ok().map(Ipv4Addr::from)
}

/// Keeps `ready_slots` slots ready; holds only a weak reference so dropping every `NetPool`
/// ends it (leaving its slots behind for a later `sweep`, as a crash would).
async fn refill_loop(weak: Weak<Inner>, notify: Arc<tokio::sync::Notify>) {
    loop {
        let Some(inner) = weak.upgrade() else { return };
        if inner.closed.load(Ordering::Acquire) {
            return;
        }
        match inner.refill_due() {
            Refill::Full => {
                // A dropped pool must not be kept alive by this wait (Inner's Drop wakes it).
                drop(inner);
                notify.notified().await;
                continue;
            }
            Refill::After(wait) => {
                drop(inner);
                // A take during the wait moves the deadline; the loop re-checks after it. A
                // shutdown or drop wakes the wait early.
                let _ = tokio::time::timeout(wait, notify.notified()).await;
                continue;
            }
            Refill::Now => {}
        }
        match inner.create_slot().await {
            Ok(slot) => {
                if inner.closed.load(Ordering::Acquire) {
                    inner.destroy(slot).await;
                    return;
                }
                inner.state().ready.push_back(slot);
            }
            Err(NetError::Shutdown) => return,
            Err(e) => {
                tracing::warn!(error = %e, "refilling network slots");
                drop(inner);
                // Do not spin on a persistent failure; acquire still tries on demand.
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            }
        }
    }
}

impl NetPool {
    /// Sets up the host (bridge, nft table, ip_forward) and starts filling the ready pool.
    pub async fn new(cfg: NetConfig) -> Result<NetPool, NetError> {
        cfg.validate()?;
        std::fs::create_dir_all(&cfg.state_dir).map_err(|e| NetError::Io {
            context: format!("creating {}", cfg.state_dir.display()),
            source: e,
        })?;
        let nl = netlink::Host::connect()?;
        let bridge_index = nl
            .ensure_bridge(&cfg.bridge, cfg.gateway(), cfg.subnet.prefix)
            .await?;
        host_sysctls(&cfg.bridge)?;
        let script = nft::ruleset(&cfg);
        tokio::task::spawn_blocking(move || nft::apply(&script))
            .await
            .map_err(|e| NetError::Nft(format!("nft task: {e}")))??;
        // An earlier process's slots keep their addresses until `sweep` decides their fate:
        // making a slot under a name that exists would tear down the one that is there.
        let mut state = State::default();
        for name in existing_slots(&nl, &cfg).await? {
            if let Some(off) = slot_addr(&name).and_then(|a| cfg.subnet.offset(a)) {
                state.used.insert(off);
            }
        }
        let inner = Arc::new(Inner {
            cfg,
            nl,
            bridge_index,
            state: Mutex::new(state),
            refill: Arc::new(tokio::sync::Notify::new()),
            closed: AtomicBool::new(false),
            refill_task: Mutex::new(None),
        });
        let task = tokio::spawn(refill_loop(
            Arc::downgrade(&inner),
            Arc::clone(&inner.refill),
        ));
        *inner.refill_task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task);
        Ok(NetPool { inner })
    }

    /// The configuration this pool runs with.
    pub fn config(&self) -> &NetConfig {
        &self.inner.cfg
    }

    /// How many slots are ready right now.
    pub fn ready_count(&self) -> usize {
        self.inner.state().ready.len()
    }

    /// Takes a ready slot, or creates one now when none is ready.
    pub async fn acquire(&self) -> Result<NetSlot, NetError> {
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(NetError::Shutdown);
        }
        match self.inner.take_ready() {
            Some(slot) => Ok(slot),
            None => self.inner.create_slot().await,
        }
    }

    /// Destroys a slot (veth and netns file); its address becomes free again. Processes still
    /// inside keep an empty namespace (no interface but `lo`) until they exit.
    pub async fn release(&self, slot: NetSlot) -> Result<(), NetError> {
        let inner = &self.inner;
        let res = inner.nl.del_link_by_name(&slot.name).await;
        ns::remove(&slot.netns_path);
        inner.free(slot.address, &slot.name);
        res
    }

    /// Removes slots (veths on the host, files in the state dir; those with an address of this
    /// pool's subnet) left by an earlier process, except those for which `keep(name)` is true
    /// and those this pool owns. Kept slots' addresses are marked used so they are not handed
    /// out twice. Returns how many slots were removed.
    pub async fn sweep(
        &self,
        keep: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<usize, NetError> {
        let inner = &self.inner;
        let skip = |name: &str| {
            if inner.state().live.contains(name) {
                return true;
            }
            if !keep(name) {
                return false;
            }
            if let Some(off) = slot_addr(name).and_then(|a| inner.cfg.subnet.offset(a)) {
                let mut st = inner.state();
                st.used.insert(off);
                st.live.insert(name.to_owned());
            }
            true
        };
        let removed = remove_slots(&inner.nl, &inner.cfg, &skip).await?;
        let mut st = inner.state();
        for name in &removed {
            if let Some(off) = slot_addr(name).and_then(|a| inner.cfg.subnet.offset(a)) {
                st.used.remove(&off);
            }
        }
        Ok(removed.len())
    }

    /// Destroys the ready slots and stops refilling. Host setup stays; slots handed out stay
    /// valid until released.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        let inner = &self.inner;
        inner.closed.store(true, Ordering::Release);
        inner.refill.notify_one();
        // Wait for a slot being made right now, so nothing appears after we return.
        let task = inner
            .refill_task
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
        let ready: Vec<NetSlot> = inner.state().ready.drain(..).collect();
        let mut first_err = None;
        for slot in ready {
            if let Err(e) = self.release(slot).await {
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Removes every slot of `cfg`'s subnet (ready or in use), the bridge and the nft tables
    /// (tests, uninstall). Leaves ip_forward alone: other software may rely on it.
    pub async fn teardown_host(cfg: &NetConfig) -> Result<(), NetError> {
        cfg.validate()?;
        let nl = netlink::Host::connect()?;
        let slots = if cfg.state_dir.exists() {
            remove_slots(&nl, cfg, &|_| false).await.map(|_| ())
        } else {
            Ok(())
        };
        let res = nl.del_link_by_name(&cfg.bridge).await.and(slots);
        let script = nft::delete_script(&cfg.nft_table);
        tokio::task::spawn_blocking(move || nft::apply(&script))
            .await
            .map_err(|e| NetError::Nft(format!("nft task: {e}")))??;
        res
    }
}

/// Removes the slots of `cfg`'s subnet found on the host and in the state dir, except those
/// `skip` names. Returns how many were removed.
/// Names of this subnet's slots present on the host: veths and netns files, ours or an earlier
/// process's.
async fn existing_slots(nl: &netlink::Host, cfg: &NetConfig) -> Result<BTreeSet<String>, NetError> {
    let ours = |name: &str| slot_addr(name).is_some_and(|a| cfg.subnet.offset(a).is_some());
    let mut names: BTreeSet<String> = nl
        .links_with_prefix(SLOT_PREFIX)
        .await?
        .into_iter()
        .filter(|n| ours(n))
        .collect();
    let dir = std::fs::read_dir(&cfg.state_dir).map_err(|e| NetError::Io {
        context: format!("reading {}", cfg.state_dir.display()),
        source: e,
    })?;
    for entry in dir.flatten() {
        if let Some(name) = entry.file_name().to_str() {
            if ours(name) {
                names.insert(name.to_owned());
            }
        }
    }
    Ok(names)
}

/// Removes the slots present on the host that `skip` does not claim; returns their names.
async fn remove_slots(
    nl: &netlink::Host,
    cfg: &NetConfig,
    skip: &(dyn Fn(&str) -> bool + Send + Sync),
) -> Result<Vec<String>, NetError> {
    let mut removed = Vec::new();
    for name in existing_slots(nl, cfg).await? {
        if skip(&name) {
            continue;
        }
        nl.del_link_by_name(&name).await?;
        ns::remove(&cfg.state_dir.join(&name));
        removed.push(name);
    }
    Ok(removed)
}

fn write_proc(path: &str, value: &str) -> Result<(), NetError> {
    std::fs::write(path, value).map_err(|e| NetError::Io {
        context: format!("writing {path}"),
        source: e,
    })
}

fn host_sysctls(bridge: &str) -> Result<(), NetError> {
    write_proc("/proc/sys/net/ipv4/ip_forward", "1")?;
    // Slots get IPv4 only; without IPv6 on the bridge the host offers them no v6 address.
    let v6 = format!("/proc/sys/net/ipv6/conf/{bridge}/disable_ipv6");
    if Path::new(&v6).exists() {
        write_proc(&v6, "1")?;
    }
    Ok(())
}

/// Checks that this host can run egress slots (for `sandpool doctor`): root, `nft` present, and
/// a bridge with a veth port can really be made (in a throwaway network namespace).
pub fn available() -> Result<(), String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("egress network slots need root".into());
    }
    let out = std::process::Command::new("nft")
        .arg("--version")
        .output()
        .map_err(|e| format!("nft not found (install the nftables package): {e}"))?;
    if !out.status.success() {
        return Err(format!("nft --version failed: {}", out.status));
    }
    if !Path::new("/proc/sys/net/ipv4/ip_forward").exists() {
        return Err("no /proc/sys/net/ipv4/ip_forward: IPv4 forwarding unavailable".into());
    }
    ns::run_in_new_netns(netlink::probe)
        .map_err(|e| e.to_string())?
        .map_err(|e| format!("cannot create bridge/veth: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_names_encode_their_address() {
        let a = Ipv4Addr::new(10, 213, 1, 2);
        let n = slot_name(a);
        assert!(n.len() <= 15, "{n} is too long for an interface name");
        assert_eq!(slot_addr(&n), Some(a));
        assert_eq!(slot_addr("spvzz"), None);
        assert_eq!(slot_addr("eth0"), None);
    }

    #[test]
    fn offsets_exclude_network_and_broadcast() {
        let net: Ipv4Net = "10.1.2.0/24".parse().expect("net");
        assert_eq!(net.offset(Ipv4Addr::new(10, 1, 2, 0)), None);
        assert_eq!(net.offset(Ipv4Addr::new(10, 1, 2, 1)), Some(1));
        assert_eq!(net.offset(Ipv4Addr::new(10, 1, 2, 254)), Some(254));
        assert_eq!(net.offset(Ipv4Addr::new(10, 1, 2, 255)), None);
        assert_eq!(net.offset(Ipv4Addr::new(10, 1, 3, 1)), None);
        assert_eq!(net.host(net.host_count()), Ipv4Addr::new(10, 1, 2, 254));
    }

    #[test]
    fn ruleset_follows_the_policy_switches() {
        let mut cfg = NetConfig::default();
        let strict = nft::ruleset(&cfg);
        assert!(strict.contains("iifname \"sandpool0\" drop"));
        assert!(strict.contains("ip daddr 169.254.0.0/16 drop"));
        assert!(strict.contains("ip saddr 10.213.0.0/16 oifname != \"sandpool0\" masquerade"));
        cfg.allow_host = true;
        cfg.allow_link_local = true;
        let open = nft::ruleset(&cfg);
        assert!(!open.contains("iifname \"sandpool0\" drop"));
        assert!(!open.contains("169.254.0.0/16"));
    }
}
