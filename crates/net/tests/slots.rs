//! Real network slots on this host (needs root, `nft`, `ip`). Each test has its own bridge,
//! nft table, subnet and fake internet, so tests run in parallel; guards tear everything down
//! even when an assertion fails.

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use sandpool_net::{available, run_in_netns, Ipv4Net, NetConfig, NetPool, NetSlot};

const GREETING: &[u8] = b"hello from the listener";

fn run(cmd: &str, args: &[&str]) -> Result<String, String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .map_err(|e| format!("{cmd}: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "{cmd} {args:?}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(cmd: &str, args: &[&str]) {
    if let Err(e) = run(cmd, args) {
        panic!("{e}");
    }
}

fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

fn nft_table_exists(family: &str, table: &str) -> bool {
    run("nft", &["list", "table", family, table]).is_ok()
}

/// Names and addresses that belong to one test only. `n` picks the subnet 10.214.n.0/24 and
/// the fake internet 198.18.n.0/24 + 169.254.n.10.
struct Ids {
    n: u8,
    tag: String,
}

impl Ids {
    fn new(n: u8) -> Ids {
        Ids {
            n,
            tag: format!("{:x}{n}", std::process::id() % 0xfff),
        }
    }

    fn config(&self, state_root: &Path) -> NetConfig {
        NetConfig {
            bridge: format!("sptb{}", self.tag),
            nft_table: format!("sandpool_t{}", self.tag),
            subnet: Ipv4Net::new(Ipv4Addr::new(10, 214, self.n, 0), 24).expect("subnet"),
            ready_slots: 1,
            allow_host: false,
            allow_link_local: false,
            state_dir: state_root.join("netns"),
        }
    }
}

/// Tears the host setup of a config down, whatever state the test left it in. Runs on its own
/// thread and runtime because `Drop` cannot await and may run while a runtime unwinds.
struct HostGuard {
    cfg: NetConfig,
    _dir: tempfile::TempDir,
}

impl HostGuard {
    fn new(ids: &Ids) -> (HostGuard, NetConfig) {
        let dir = tempfile::tempdir().expect("tempdir");
        let cfg = ids.config(dir.path());
        (
            HostGuard {
                cfg: cfg.clone(),
                _dir: dir,
            },
            cfg,
        )
    }
}

impl Drop for HostGuard {
    fn drop(&mut self) {
        let cfg = self.cfg.clone();
        let res = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            rt.block_on(NetPool::teardown_host(&cfg))
                .map_err(|e| e.to_string())
        })
        .join();
        if !matches!(res, Ok(Ok(()))) {
            eprintln!("teardown of {} failed: {res:?}", self.cfg.bridge);
        }
    }
}

/// "The internet": a network namespace with a veth to the host, 198.18.n.2 inside, 198.18.n.1
/// on the host end, and a link-local address 169.254.n.10 routed through it.
struct FakeInternet {
    netns: String,
    host_if: String,
    host_addr: Ipv4Addr,
    addr: Ipv4Addr,
    link_local: Ipv4Addr,
}

impl FakeInternet {
    fn new(ids: &Ids) -> FakeInternet {
        let n = ids.n;
        let me = FakeInternet {
            netns: format!("sp-inet-{}", ids.tag),
            host_if: format!("spih{}", ids.tag),
            host_addr: Ipv4Addr::new(198, 18, n, 1),
            addr: Ipv4Addr::new(198, 18, n, 2),
            link_local: Ipv4Addr::new(169, 254, n, 10),
        };
        let peer = format!("spin{}", ids.tag);
        must("ip", &["netns", "add", &me.netns]);
        must(
            "ip",
            &[
                "link",
                "add",
                &me.host_if,
                "type",
                "veth",
                "peer",
                "name",
                &peer,
                "netns",
                &me.netns,
            ],
        );
        must(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", me.host_addr),
                "dev",
                &me.host_if,
            ],
        );
        must("ip", &["link", "set", &me.host_if, "up"]);
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", me.netns.as_str(), "ip"];
            all.extend_from_slice(args);
            must("ip", &all);
        };
        inside(&["link", "set", "lo", "up"]);
        inside(&["addr", "add", &format!("{}/24", me.addr), "dev", &peer]);
        inside(&[
            "addr",
            "add",
            &format!("{}/32", me.link_local),
            "dev",
            &peer,
        ]);
        inside(&["link", "set", &peer, "up"]);
        must(
            "ip",
            &[
                "route",
                "add",
                &format!("{}/32", me.link_local),
                "via",
                &me.addr.to_string(),
            ],
        );
        me
    }

    fn path(&self) -> PathBuf {
        Path::new("/run/netns").join(&self.netns)
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.host_if]);
        let _ = run("ip", &["netns", "del", &self.netns]);
    }
}

/// A TCP listener that greets every client; stops (and closes its socket) on drop.
struct Listener {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    fn serve(listener: TcpListener) -> Listener {
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("local_addr");
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut s, _)) => {
                        let _ = s.write_all(GREETING);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Listener {
            addr,
            stop,
            thread: Some(thread),
        }
    }

    /// Listens on `ip` (port chosen by the kernel) in the host namespace.
    fn on_host(ip: Ipv4Addr) -> Listener {
        Listener::serve(TcpListener::bind((ip, 0)).expect("bind on host"))
    }

    /// Listens on `ip` inside the namespace at `netns`.
    fn in_netns(netns: &Path, ip: Ipv4Addr) -> Listener {
        let l = run_in_netns(netns, move || TcpListener::bind((ip, 0)))
            .expect("enter netns")
            .expect("bind in netns");
        Listener::serve(l)
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn greet(addr: SocketAddr) -> Result<(), String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .map_err(|e| format!("connect {addr}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)
        .map_err(|e| format!("read {addr}: {e}"))?;
    if buf == GREETING {
        Ok(())
    } else {
        Err(format!("unexpected greeting from {addr}: {buf:?}"))
    }
}

/// Connects to `addr` from inside the slot's namespace.
async fn greet_from(slot: &NetSlot, addr: SocketAddr) -> Result<(), String> {
    let path = slot.netns_path.clone();
    tokio::task::spawn_blocking(move || {
        run_in_netns(&path, move || greet(addr)).map_err(|e| e.to_string())?
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn greet_from_host(addr: SocketAddr) -> Result<(), String> {
    tokio::task::spawn_blocking(move || greet(addr))
        .await
        .map_err(|e| e.to_string())?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn default_policy_gives_egress_and_nothing_else() {
    let ids = Ids::new(1);
    let (_host, cfg) = HostGuard::new(&ids);
    let inet = FakeInternet::new(&ids);
    let pool = NetPool::new(cfg.clone()).await.expect("pool");
    let a = pool.acquire().await.expect("slot a");
    let b = pool.acquire().await.expect("slot b");
    assert_ne!(a.address, b.address);
    assert_eq!(a.gateway, cfg.gateway());
    assert!(cfg.subnet.contains(a.address));
    assert!(link_exists(&a.name), "host end of {} missing", a.name);

    let internet = Listener::in_netns(&inet.path(), inet.addr);
    greet_from(&a, internet.addr)
        .await
        .expect("slot reaches the internet");

    // The listeners below are reachable from the host itself, so only the policy blocks them.
    let metadata = Listener::in_netns(&inet.path(), inet.link_local);
    greet_from_host(metadata.addr)
        .await
        .expect("host reaches link-local");
    // Bound to every host address, 127.0.0.1 included.
    let wildcard = Listener::on_host(Ipv4Addr::UNSPECIFIED);
    let loopback = SocketAddr::from((Ipv4Addr::LOCALHOST, wildcard.addr.port()));
    greet_from_host(loopback)
        .await
        .expect("host reaches its loopback");
    let bridge = Listener::on_host(cfg.gateway());
    let host_if = Listener::on_host(inet.host_addr);
    let other_slot = Listener::in_netns(&b.netns_path, b.address);
    greet_from_host(other_slot.addr)
        .await
        .expect("host reaches slot b");

    for (what, addr) in [
        ("link-local", metadata.addr),
        ("host bridge address", bridge.addr),
        ("host address on another interface", host_if.addr),
        ("other slot", other_slot.addr),
    ] {
        let res = greet_from(&a, addr).await;
        assert!(res.is_err(), "slot reached {what} at {addr}");
    }
    // 127.0.0.1 inside the slot is the slot's own loopback (and the kernel drops 127/8 arriving
    // on the bridge); the way a sandbox would try a host-wide listener is via the gateway.
    assert!(
        greet_from(&a, loopback).await.is_err(),
        "slot loopback has a listener?"
    );
    let via_gw = SocketAddr::from((cfg.gateway(), wildcard.addr.port()));
    assert!(
        greet_from(&a, via_gw).await.is_err(),
        "slot reached a host-wide listener"
    );

    pool.release(a).await.expect("release a");
    pool.release(b).await.expect("release b");
    pool.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn allow_host_and_link_local_open_them() {
    let ids = Ids::new(2);
    let (_host, mut cfg) = HostGuard::new(&ids);
    cfg.allow_host = true;
    cfg.allow_link_local = true;
    let inet = FakeInternet::new(&ids);
    let pool = NetPool::new(cfg.clone()).await.expect("pool");
    let a = pool.acquire().await.expect("slot");

    let bridge = Listener::on_host(cfg.gateway());
    let host_if = Listener::on_host(inet.host_addr);
    let wildcard = Listener::on_host(Ipv4Addr::UNSPECIFIED);
    let metadata = Listener::in_netns(&inet.path(), inet.link_local);
    greet_from(&a, bridge.addr)
        .await
        .expect("host bridge address");
    let via_gw = SocketAddr::from((cfg.gateway(), wildcard.addr.port()));
    greet_from(&a, via_gw).await.expect("host-wide listener");
    greet_from(&a, host_if.addr)
        .await
        .expect("host address on another interface");
    greet_from(&a, metadata.addr).await.expect("link-local");

    pool.release(a).await.expect("release");
    pool.shutdown().await.expect("shutdown");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn release_sweep_and_teardown_leave_nothing() {
    let ids = Ids::new(3);
    let (_host, mut cfg) = HostGuard::new(&ids);
    cfg.ready_slots = 2;
    let pool = NetPool::new(cfg.clone()).await.expect("pool");

    let s = pool.acquire().await.expect("slot");
    let (name, path) = (s.name.clone(), s.netns_path.clone());
    assert!(link_exists(&name) && path.exists());
    pool.release(s).await.expect("release");
    assert!(!link_exists(&name), "veth {name} survived release");
    assert!(!path.exists(), "{} survived release", path.display());

    // An "earlier process": slots handed out and ready ones, then the pool is dropped.
    let kept = pool.acquire().await.expect("kept slot");
    let lost = pool.acquire().await.expect("lost slot");
    wait_ready(&pool, 2).await;
    let mut leftovers: Vec<String> = std::fs::read_dir(&cfg.state_dir)
        .expect("state dir")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    leftovers.sort();
    assert_eq!(leftovers.len(), 4, "{leftovers:?}");
    drop(pool);

    // A restarted process refills before it sweeps: its new slots must not take the names
    // (and so tear down the veths) of slots still in use from before.
    let pool = NetPool::new(cfg.clone()).await.expect("second pool");
    wait_ready(&pool, 2).await;
    for n in &leftovers {
        assert!(link_exists(n), "refill replaced the earlier slot {n}");
        assert!(cfg.state_dir.join(n).exists(), "refill replaced netns {n}");
    }
    pool.shutdown().await.expect("stop refilling");
    let keep_name = kept.name.clone();
    let removed = pool
        .sweep(&move |n: &str| n == keep_name)
        .await
        .expect("sweep");
    assert_eq!(removed, 3);
    for n in leftovers.iter().filter(|n| **n != kept.name) {
        assert!(!link_exists(n), "sweep left veth {n}");
        assert!(!cfg.state_dir.join(n).exists(), "sweep left netns file {n}");
    }
    assert!(!link_exists(&lost.name));
    assert!(
        link_exists(&kept.name) && kept.netns_path.exists(),
        "sweep removed a kept slot"
    );

    NetPool::teardown_host(&cfg).await.expect("teardown");
    assert!(!link_exists(&cfg.bridge), "bridge survived teardown");
    assert!(!link_exists(&kept.name), "slot veth survived teardown");
    assert!(!kept.netns_path.exists());
    assert!(!nft_table_exists("inet", &cfg.nft_table));
    assert!(!nft_table_exists("bridge", &cfg.nft_table));
}

async fn wait_ready(pool: &NetPool, n: usize) {
    for _ in 0..600 {
        if pool.ready_count() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("pool never had {n} ready slots");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_removes_ready_slots_and_refuses_acquire() {
    let ids = Ids::new(4);
    let (_host, mut cfg) = HostGuard::new(&ids);
    cfg.ready_slots = 3;
    let pool = NetPool::new(cfg.clone()).await.expect("pool");
    wait_ready(&pool, 3).await;
    pool.shutdown().await.expect("shutdown");
    assert_eq!(pool.ready_count(), 0);
    let files = std::fs::read_dir(&cfg.state_dir)
        .expect("state dir")
        .count();
    assert_eq!(files, 0, "shutdown left netns files");
    assert!(pool.acquire().await.is_err());
    // Host setup stays for the next pool.
    assert!(link_exists(&cfg.bridge));
    assert!(nft_table_exists("inet", &cfg.nft_table));
}

/// Taken slots are replaced both when some are still ready (after the pool has been idle a
/// moment) and when none is left, and each slot handed out is a distinct, working one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn taken_slots_are_replaced_after_a_burst() {
    let ids = Ids::new(5);
    let (_host, mut cfg) = HostGuard::new(&ids);
    cfg.ready_slots = 2;
    let pool = NetPool::new(cfg.clone()).await.expect("pool");
    wait_ready(&pool, 2).await;
    // One take leaves one ready: the replacement waits for an idle moment, then comes.
    let first = pool.acquire().await.expect("first");
    wait_ready(&pool, 2).await;
    // A burst that empties the pool, and one more (made on demand or by the refill).
    let mut taken = vec![first];
    for _ in 0..3 {
        taken.push(pool.acquire().await.expect("burst"));
    }
    let names: HashSet<&str> = taken.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names.len(), taken.len(), "a slot was handed out twice");
    for slot in &taken {
        assert!(link_exists(&slot.name), "{} has no host veth", slot.name);
        assert!(slot.netns_path.exists(), "{} has no netns file", slot.name);
    }
    wait_ready(&pool, 2).await;
    for slot in taken {
        pool.release(slot).await.expect("release");
    }
    pool.shutdown().await.expect("shutdown");
}

#[test]
fn host_can_run_slots() {
    available().expect("available");
}

#[tokio::test]
async fn bad_config_is_an_error_not_a_panic() {
    let mut cfg = NetConfig {
        bridge: "a-name-that-is-far-too-long".into(),
        ..NetConfig::default()
    };
    assert!(NetPool::new(cfg.clone()).await.is_err());
    cfg.bridge = "spvbad".into();
    assert!(NetPool::new(cfg.clone()).await.is_err());
    cfg.bridge = "ok0".into();
    cfg.nft_table = "bad table; flush ruleset".into();
    assert!(NetPool::new(cfg.clone()).await.is_err());
    assert!(NetPool::teardown_host(&cfg).await.is_err());
    for bad in [
        "10.0.0.0",
        "10.0.0.1/24",
        "10.0.0.0/31",
        "10.0.0.0/x",
        "300.0.0.0/8",
    ] {
        assert!(bad.parse::<Ipv4Net>().is_err(), "{bad} parsed");
    }
    let net: Ipv4Net = "10.213.0.0/16".parse().expect("parse");
    assert_eq!(net, NetConfig::default().subnet);
    assert_eq!(net.to_string(), "10.213.0.0/16");
}
