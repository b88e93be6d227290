//! The host side: starting, re-attaching, sweeping and destroying sandboxes.

use crate::client::{Conn, Sandbox, SandboxParts};
use crate::init::InitConfig;
use crate::spawn::{self, LaunchPlan};
use crate::sys;
use crate::zygote::{Zygote, ZygotePlan};
use crate::{NetworkMode, RootFs, RuntimeConfig, SandboxError, SandboxSpec};
use sandpool_cgroups::{Cgroup, CgroupLimits, CgroupManager, CpuQuota};
use sandpool_net::{NetPool, NetSlot};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeSet, HashMap};
use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// How long a start may take before it is abandoned (and cleaned up).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// What survives a server restart about a sandbox (`<state_dir>/<id>/meta.json`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Meta {
    pub id: String,
    pub uid_slot: u32,
    pub host_uid: u32,
    pub init_pid: i32,
    pub init_starttime: u64,
    pub cgroup: String,
    pub net: Option<MetaSlot>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct MetaSlot {
    pub name: String,
    pub netns_path: PathBuf,
    pub address: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

impl MetaSlot {
    fn of(s: &NetSlot) -> MetaSlot {
        MetaSlot {
            name: s.name.clone(),
            netns_path: s.netns_path.clone(),
            address: s.address,
            gateway: s.gateway,
        }
    }
    fn to_slot(&self) -> NetSlot {
        NetSlot {
            name: self.name.clone(),
            netns_path: self.netns_path.clone(),
            address: self.address,
            gateway: self.gateway,
        }
    }
}

/// Result of [`Runtime::sweep`].
pub struct SweepReport {
    /// Kept sandboxes that were alive and are attached again.
    pub attached: Vec<Sandbox>,
    /// Ids of sandboxes (or their remains) that were destroyed.
    pub destroyed: Vec<String>,
    /// Cleanup problems that did not stop the sweep.
    pub errors: Vec<String>,
}

/// The sandbox runtime of one host. Cheap to clone.
#[derive(Clone)]
pub struct Runtime {
    pub(crate) inner: Arc<RtInner>,
}

pub(crate) struct RtInner {
    pub cfg: RuntimeConfig,
    pub cgroups: CgroupManager,
    pub net: Option<NetPool>,
    program: CString,
    argv_prefix: Vec<CString>,
    /// Live sandboxes of this runtime, by id, with their uid slot.
    live: Mutex<HashMap<String, u32>>,
    /// Uid slots in use (also those of sandboxes an earlier process left behind).
    slots: Mutex<BTreeSet<u32>>,
    /// A pidfd of each live sandbox's init, by id: what [`Runtime::exited`] waits on.
    inits: Mutex<HashMap<String, Arc<OwnedFd>>>,
    /// Forks inits without an exec per sandbox; started on first use.
    zygote: Zygote,
}

pub(crate) fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn valid_hostname(h: &str) -> bool {
    h.len() <= 63
        && h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

fn validate(spec: &SandboxSpec) -> Result<(), SandboxError> {
    let bad = |m: String| Err(SandboxError::InvalidSpec(m));
    if let Some(id) = &spec.id {
        if !valid_id(id) {
            return bad(format!("id {id:?} must be 1-64 of [A-Za-z0-9_-]"));
        }
    }
    if !valid_hostname(&spec.hostname) {
        return bad(format!("hostname {:?} is not valid", spec.hostname));
    }
    let mut env_size = 0;
    for (k, v) in &spec.env {
        if k.is_empty() || k.contains('=') || k.contains('\0') || v.contains('\0') {
            return bad(format!("environment variable {k:?} is not valid"));
        }
        env_size += k.len() + v.len();
    }
    if env_size > 64 * 1024 {
        return bad("environment larger than 64 KiB".into());
    }
    if let RootFs::Image(p) = &spec.rootfs {
        if !p.is_absolute() || !p.is_dir() {
            return bad(format!(
                "image {} is not an absolute directory",
                p.display()
            ));
        }
    }
    let l = &spec.limits;
    if l.tmp_bytes == 0 || l.home_bytes == 0 || l.data_bytes == 0 || l.nofile == 0 {
        return bad("sizes and nofile must be positive".into());
    }
    Ok(())
}

/// Nameservers for a sandbox with egress: the host's, minus loopback ones it could not reach.
fn resolv_conf(egress: bool) -> String {
    if !egress {
        return String::new();
    }
    let host = std::fs::read_to_string("/etc/resolv.conf").unwrap_or_default();
    host.lines()
        .filter(|l| {
            let mut w = l.split_whitespace();
            match (w.next(), w.next()) {
                (Some("nameserver"), Some(a)) => !(a.starts_with("127.") || a == "::1"),
                (Some("search") | Some("options"), _) => true,
                _ => false,
            }
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

impl Runtime {
    /// Prepares the state directory, the cgroup parent and, when configured, the egress pool.
    pub async fn new(cfg: RuntimeConfig) -> Result<Runtime, SandboxError> {
        if cfg.uids_per_sandbox == 0 {
            return Err(SandboxError::InvalidSpec(
                "uids_per_sandbox must be positive".into(),
            ));
        }
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&cfg.state_dir)?;
        let cgroups = CgroupManager::detect(&cfg.cgroup_parent)?;
        let net = match &cfg.egress {
            Some(n) => Some(NetPool::new(n.clone()).await?),
            None => None,
        };
        let program = sys::path_c(&cfg.init_program)?;
        let argv_prefix = std::iter::once(cfg.init_program.as_os_str().to_owned())
            .chain(cfg.init_args.iter().cloned())
            .map(sys::cstr)
            .collect::<Result<Vec<_>, _>>()?;
        // Uid ranges of sandboxes an earlier process left are not handed out again until swept.
        let mut slots = BTreeSet::new();
        if let Ok(dir) = std::fs::read_dir(&cfg.state_dir) {
            for e in dir.flatten() {
                if let Ok(m) = read_meta(&e.path()) {
                    slots.insert(m.uid_slot);
                }
            }
        }
        let zygote = Zygote::new(&cfg.init_program, &cfg.init_args, cfg.ready_netns);
        Ok(Runtime {
            inner: Arc::new(RtInner {
                zygote,
                cfg,
                cgroups,
                net,
                program,
                argv_prefix,
                live: Mutex::new(HashMap::new()),
                slots: Mutex::new(slots),
                inits: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// Ids of the sandboxes this runtime started or attached and has not destroyed.
    pub fn list_ids(&self) -> Vec<String> {
        let mut v: Vec<String> = lock(&self.inner.live).keys().cloned().collect();
        v.sort();
        v
    }

    /// Starts a sandbox. On any failure nothing of it is left behind. The start runs to
    /// completion (or cleanup) even if the caller stops waiting.
    pub async fn start(&self, spec: SandboxSpec) -> Result<Sandbox, SandboxError> {
        validate(&spec)?;
        if spec.network == NetworkMode::Egress && self.inner.net.is_none() {
            return Err(SandboxError::EgressUnavailable);
        }
        let rt = self.clone();
        tokio::spawn(async move { rt.start_inner(spec).await })
            .await
            .map_err(|e| SandboxError::Start(format!("start task failed: {e}")))?
    }

    /// Graceful stop of the host process: releases the ready egress slots and makes no more.
    /// Sandboxes, and the slots they hold, stay: sessions outlive the process and are
    /// re-attached by the next one.
    pub async fn shutdown(&self) -> Result<(), SandboxError> {
        match &self.inner.net {
            Some(net) => net.shutdown().await.map_err(SandboxError::from),
            None => Ok(()),
        }
    }

    /// Egress network slots ready to be handed out (0 without egress).
    pub fn egress_slots_ready(&self) -> usize {
        self.inner.net.as_ref().map_or(0, NetPool::ready_count)
    }

    /// Pid of the zygote that forks this runtime's inits, while one runs (for tests).
    #[doc(hidden)]
    pub fn zygote_pid(&self) -> Option<i32> {
        self.inner.zygote.pid()
    }

    /// Loopback-only network namespaces the zygote holds ready (0 while no zygote runs): the
    /// namespaces among its descriptors other than the host's, as the kernel shows them.
    pub fn netns_ready(&self) -> usize {
        let Some(pid) = self.zygote_pid() else {
            return 0;
        };
        let host = std::fs::read_link("/proc/self/ns/net").ok();
        let mut ready = std::collections::HashSet::new();
        for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if let Ok(link) = std::fs::read_link(fd.path()) {
                if link.to_string_lossy().starts_with("net:[") && Some(&link) != host.as_ref() {
                    ready.insert(link);
                }
            }
        }
        ready.len()
    }

    fn reserve(&self, id: &str) -> Result<u32, SandboxError> {
        let mut live = lock(&self.inner.live);
        if live.contains_key(id) || self.inner.cfg.state_dir.join(id).exists() {
            return Err(SandboxError::InvalidSpec(format!(
                "sandbox {id} already exists"
            )));
        }
        let mut slots = lock(&self.inner.slots);
        let cfg = &self.inner.cfg;
        let max = ((u32::MAX - cfg.uid_base) / cfg.uids_per_sandbox).min(cfg.uid_slots);
        let slot = (0..max)
            .find(|s| !slots.contains(s))
            .ok_or_else(|| SandboxError::Start("no free uid range left".into()))?;
        slots.insert(slot);
        live.insert(id.to_string(), slot);
        Ok(slot)
    }

    pub(crate) fn forget_id(&self, id: &str) {
        lock(&self.inner.live).remove(id);
        lock(&self.inner.inits).remove(id);
    }

    pub(crate) fn forget(&self, id: &str, slot: u32) {
        self.forget_id(id);
        lock(&self.inner.slots).remove(&slot);
    }

    /// Keeps a pidfd of the init of sandbox `id` for [`Runtime::exited`].
    fn watch_init(&self, id: &str, pidfd: &OwnedFd) {
        if let Ok(fd) = pidfd.try_clone() {
            lock(&self.inner.inits).insert(id.to_owned(), Arc::new(fd));
        }
    }

    /// Resolves once the init of sandbox `id` has exited: killed from the host (every process
    /// of its cgroup, an operator's `kill -9`, the OOM killer) or ended by itself. The kernel
    /// says so through the init's pidfd, at once. Resolves at once for a sandbox this runtime
    /// does not hold (destroyed, or never started or attached here).
    pub async fn exited(&self, id: &str) {
        let Some(pidfd) = lock(&self.inner.inits).get(id).cloned() else {
            return;
        };
        let registered = pidfd.try_clone().ok().and_then(|fd| {
            // SAFETY: the AsyncFd owns this duplicate, so it stays open while registered.
            unsafe {
                tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
            }
            .ok()
        });
        match registered {
            // A pidfd turns readable when its process exits, and stays so.
            Some(afd) => {
                let _ = afd.readable().await.map(|mut g| g.retain_ready());
            }
            // Cannot wait on it (no reactor slot): look every second instead.
            None => {
                while !pidfd_exited(&pidfd) {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    async fn start_inner(&self, spec: SandboxSpec) -> Result<Sandbox, SandboxError> {
        let id = spec
            .id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        let slot = self.reserve(&id)?;
        let dir = self.inner.cfg.state_dir.join(&id);
        let mut partial = Partial {
            dir: None,
            cgroup: None,
            net: None,
            pidfd: None,
            pid: 0,
        };
        match tokio::time::timeout(
            START_TIMEOUT,
            self.launch(&id, slot, &dir, &spec, &mut partial),
        )
        .await
        {
            Ok(Ok(sb)) => Ok(sb),
            Ok(Err(e)) => {
                self.cleanup(partial).await;
                self.forget(&id, slot);
                Err(e)
            }
            Err(_) => {
                self.cleanup(partial).await;
                self.forget(&id, slot);
                Err(SandboxError::Start(
                    "timed out waiting for the sandbox init".into(),
                ))
            }
        }
    }

    async fn launch(
        &self,
        id: &str,
        slot: u32,
        dir: &Path,
        spec: &SandboxSpec,
        partial: &mut Partial,
    ) -> Result<Sandbox, SandboxError> {
        let cfg = &self.inner.cfg;
        std::fs::DirBuilder::new().mode(0o700).create(dir)?;
        partial.dir = Some(dir.to_path_buf());
        let sock = dir.join("control.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(dir.join("init.log"))?;

        let l = &spec.limits;
        let limits = CgroupLimits {
            memory_max: l.memory_bytes,
            pids_max: l.pids,
            cpu_quota: l.cpu_millicores.map(CpuQuota::from_millicores),
        };
        if spec.network == NetworkMode::Egress {
            if let Some(pool) = &self.inner.net {
                partial.net = Some(pool.acquire().await?);
            }
        }
        let init_cfg = InitConfig {
            rootfs: spec.rootfs.clone(),
            limits: spec.limits.clone(),
            hostname: spec.hostname.clone(),
            env: spec.env.clone(),
            etc_template: false,
            resolv_conf: resolv_conf(partial.net.is_some()),
        };
        let host_uid = cfg.uid_base + slot * cfg.uids_per_sandbox;
        let listener_fd = OwnedFd::from(listener);
        let log_fd = OwnedFd::from(log);
        let netns = partial.net.as_ref().map(|s| s.netns_path.as_path());
        // The cgroup is made and entered while the init builds its root (it waits for it before
        // running anything of the sandbox's): on cgroup v1 that is five directories and five
        // moves, the longest part of a start the host does.
        let mut made: Option<Cgroup> = None;
        let launched = {
            let mut setup = |pid: i32| {
                // No OOM exemption for anything of the sandbox's, whatever the server runs
                // with: every process inherits the init's adjustment and, with it, the floor it
                // may return to without privilege (oom_score_adj_min), which only a privileged
                // write resets. This one is, where the host grants CAP_SYS_RESOURCE, and it
                // happens before the init runs anything of the sandbox's.
                std::fs::write(format!("/proc/{pid}/oom_score_adj"), "0")
                    .map_err(|e| sys::c_err("oom_score_adj", e))?;
                let cgroup = self
                    .inner
                    .cgroups
                    .create(id, &limits)
                    .map_err(|e| std::io::Error::other(format!("cgroup: {e}")))?;
                made = Some(cgroup.clone());
                cgroup
                    .add_pid(pid)
                    .map_err(|e| std::io::Error::other(format!("cgroup: {e}")))
            };
            // Image sandboxes need an idmapped mount made for their user namespace before the
            // init runs; only the exec path does that.
            let forked = match &spec.rootfs {
                RootFs::Host if cfg.zygote => self.inner.zygote.launch(
                    &ZygotePlan {
                        config: &init_cfg,
                        listener: &listener_fd,
                        log: &log_fd,
                        netns,
                        host_uid,
                        uid_count: cfg.uids_per_sandbox,
                    },
                    &mut setup,
                ),
                _ => None,
            };
            match forked {
                Some(r) => r,
                None => {
                    let json = serde_json::to_string(&init_cfg)
                        .map_err(|e| SandboxError::Start(format!("init config: {e}")))?;
                    let mut argv = self.inner.argv_prefix.clone();
                    argv.push(sys::cstr(json)?);
                    let plan = LaunchPlan {
                        program: &self.inner.program,
                        argv,
                        listener: &listener_fd,
                        log: &log_fd,
                        netns,
                        host_uid,
                        uid_count: cfg.uids_per_sandbox,
                        image: match &spec.rootfs {
                            RootFs::Image(p) => Some(p.as_path()),
                            RootFs::Host => None,
                        },
                    };
                    spawn::launch(&plan, &mut setup)
                }
            }
        };
        partial.cgroup = made;
        let launched = launched.map_err(|e| SandboxError::Start(format!("launch: {e}")))?;
        drop((listener_fd, log_fd));
        partial.pid = launched.pid;
        partial.pidfd = Some(launched.pidfd);

        let meta = Meta {
            id: id.to_string(),
            uid_slot: slot,
            host_uid,
            init_pid: launched.pid,
            init_starttime: sys::proc_starttime(launched.pid).unwrap_or(0),
            cgroup: id.to_string(),
            net: partial.net.as_ref().map(MetaSlot::of),
        };
        write_meta(dir, &meta)?;

        // The listener was bound before the init started, so the connection is queued while
        // the init finishes its setup; it is accepted as soon as the init serves.
        let (status, conn) = tokio::join!(read_status(launched.status), Conn::connect(&sock));
        let status = status?;
        if status != "OK" {
            let msg = status.strip_prefix("ERR ").unwrap_or(&status).to_string();
            return Err(SandboxError::Start(if msg.is_empty() {
                "the init exited during setup".into()
            } else {
                msg
            }));
        }
        let conn = conn?;
        if let Some(fd) = &partial.pidfd {
            self.watch_init(id, fd);
        }
        let parts = SandboxParts {
            rt: self.clone(),
            meta,
            dir: dir.to_path_buf(),
            cgroup: partial.cgroup.take(),
            net: partial.net.take(),
            pidfd: partial.pidfd.take(),
        };
        partial.dir = None;
        Ok(Sandbox::new(parts, conn))
    }

    /// Undoes a failed start.
    async fn cleanup(&self, p: Partial) {
        if let Some(fd) = &p.pidfd {
            let _ = sys::pidfd_kill(fd, libc::SIGKILL);
            wait_exit(fd, p.pid).await;
        }
        if let Some(cg) = p.cgroup {
            let _ = tokio::task::spawn_blocking(move || cg.destroy()).await;
        }
        if let (Some(slot), Some(pool)) = (p.net, &self.inner.net) {
            let _ = pool.release(slot).await;
        }
        if let Some(dir) = p.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }

    /// Caps the cpu of all this runtime's sandboxes together (millicores, on the cgroup
    /// parent); `None` lifts the cap. On cgroup v1 a sandbox asking more than this fails to start.
    pub fn set_cpu_ceiling(&self, millicores: Option<u64>) -> Result<(), SandboxError> {
        self.inner
            .cgroups
            .set_parent_cpu_quota(millicores.map(CpuQuota::from_millicores))?;
        Ok(())
    }

    /// Connects again to a live sandbox, e.g. after the server restarted.
    pub async fn attach(&self, id: &str) -> Result<Sandbox, SandboxError> {
        if !valid_id(id) {
            return Err(SandboxError::NotFound);
        }
        let dir = self.inner.cfg.state_dir.join(id);
        let meta = read_meta(&dir).map_err(|_| SandboxError::NotFound)?;
        let pidfd = sys::pidfd_open(meta.init_pid).map_err(|_| SandboxError::NotFound)?;
        // The pidfd pins the process; the start time proves it is still our init.
        if sys::proc_starttime(meta.init_pid) != Some(meta.init_starttime) {
            return Err(SandboxError::NotFound);
        }
        let conn = Conn::connect(&dir.join("control.sock"))
            .await
            .map_err(|_| SandboxError::NotFound)?;
        let cgroup = self.inner.cgroups.open(&meta.cgroup).ok();
        {
            lock(&self.inner.live).insert(id.to_string(), meta.uid_slot);
            lock(&self.inner.slots).insert(meta.uid_slot);
        }
        self.watch_init(id, &pidfd);
        let parts = SandboxParts {
            rt: self.clone(),
            net: meta.net.as_ref().map(MetaSlot::to_slot),
            meta,
            dir,
            cgroup,
            pidfd: Some(pidfd),
        };
        let sb = Sandbox::new(parts, conn);
        if let Err(e) = sb.ping().await {
            sb.forget_local();
            return Err(match e {
                SandboxError::Protocol(_) => SandboxError::NotFound,
                e => e,
            });
        }
        Ok(sb)
    }

    /// After a restart: re-attaches the sandboxes for which `keep(id)` is true and destroys
    /// everything else an earlier process left (processes, cgroups, network slots, state).
    pub async fn sweep(
        &self,
        keep: &(dyn Fn(&str) -> bool + Send + Sync),
    ) -> Result<SweepReport, SandboxError> {
        let mut report = SweepReport {
            attached: Vec::new(),
            destroyed: Vec::new(),
            errors: Vec::new(),
        };
        let live: BTreeSet<String> = lock(&self.inner.live).keys().cloned().collect();
        let mut entries: Vec<String> = Vec::new();
        if let Ok(dir) = std::fs::read_dir(&self.inner.cfg.state_dir) {
            for e in dir.flatten() {
                if let Some(name) = e.file_name().to_str() {
                    entries.push(name.to_string());
                }
            }
        }
        entries.sort();
        for id in entries {
            if live.contains(&id) {
                continue;
            }
            if valid_id(&id) && keep(&id) {
                match self.attach(&id).await {
                    Ok(sb) => {
                        report.attached.push(sb);
                        continue;
                    }
                    Err(e) => report.errors.push(format!("{id}: not re-attached: {e}")),
                }
            }
            if let Err(e) = self.destroy_remains(&id).await {
                report.errors.push(format!("{id}: {e}"));
            }
            report.destroyed.push(id);
        }
        // Cgroups without a state directory (a crash between cgroup and directory).
        let kept: BTreeSet<String> = lock(&self.inner.live).keys().cloned().collect();
        if let Ok(names) = self.inner.cgroups.list() {
            for name in names {
                if kept.contains(&name) || !valid_id(&name) {
                    continue;
                }
                if let Ok(cg) = self.inner.cgroups.open(&name) {
                    if let Err(e) = tokio::task::spawn_blocking(move || cg.destroy())
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|r| r.map_err(|e| e.to_string()))
                    {
                        report.errors.push(format!("cgroup {name}: {e}"));
                    } else if !report.destroyed.contains(&name) {
                        report.destroyed.push(name);
                    }
                }
            }
        }
        if let Some(pool) = &self.inner.net {
            let slots: BTreeSet<String> = report
                .attached
                .iter()
                .filter_map(|s| s.net_slot_name())
                .chain(self.live_slot_names())
                .collect();
            if let Err(e) = pool.sweep(&move |n: &str| slots.contains(n)).await {
                report.errors.push(format!("network sweep: {e}"));
            }
        }
        Ok(report)
    }

    fn live_slot_names(&self) -> Vec<String> {
        let ids: Vec<String> = lock(&self.inner.live).keys().cloned().collect();
        ids.iter()
            .filter_map(|id| read_meta(&self.inner.cfg.state_dir.join(id)).ok())
            .filter_map(|m| m.net.map(|n| n.name))
            .collect()
    }

    /// Destroys what is left of a sandbox no process of ours holds.
    async fn destroy_remains(&self, id: &str) -> Result<(), SandboxError> {
        let dir = self.inner.cfg.state_dir.join(id);
        let meta = read_meta(&dir).ok();
        if let Some(m) = &meta {
            if let Ok(fd) = sys::pidfd_open(m.init_pid) {
                if sys::proc_starttime(m.init_pid) == Some(m.init_starttime) {
                    let _ = sys::pidfd_kill(&fd, libc::SIGKILL);
                    wait_exit(&fd, m.init_pid).await;
                }
            }
        }
        let cg_name = meta
            .as_ref()
            .map(|m| m.cgroup.clone())
            .unwrap_or(id.to_string());
        let mut result = Ok(());
        if valid_id(&cg_name) {
            if let Ok(cg) = self.inner.cgroups.open(&cg_name) {
                result = destroy_cgroup(cg).await;
            }
        }
        if let (Some(pool), Some(net)) =
            (&self.inner.net, meta.as_ref().and_then(|m| m.net.clone()))
        {
            let _ = pool.release(net.to_slot()).await;
        }
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        if let Some(m) = meta {
            lock(&self.inner.slots).remove(&m.uid_slot);
        }
        result
    }
}

struct Partial {
    dir: Option<PathBuf>,
    cgroup: Option<Cgroup>,
    net: Option<NetSlot>,
    pidfd: Option<OwnedFd>,
    pid: i32,
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

pub(crate) async fn destroy_cgroup(cg: Cgroup) -> Result<(), SandboxError> {
    tokio::task::spawn_blocking(move || cg.destroy())
        .await
        .map_err(|e| SandboxError::Cgroup(e.to_string()))??;
    Ok(())
}

fn read_meta(dir: &Path) -> Result<Meta, SandboxError> {
    let data = std::fs::read(dir.join("meta.json"))?;
    serde_json::from_slice(&data).map_err(|e| SandboxError::Protocol(format!("meta.json: {e}")))
}

fn write_meta(dir: &Path, meta: &Meta) -> Result<(), SandboxError> {
    let data = serde_json::to_vec(meta).map_err(|e| SandboxError::Protocol(e.to_string()))?;
    let tmp = dir.join("meta.json.tmp");
    std::fs::write(&tmp, data)?;
    std::fs::rename(tmp, dir.join("meta.json"))?;
    Ok(())
}

async fn read_status(fd: OwnedFd) -> Result<String, SandboxError> {
    sys::set_nonblocking(&fd)?;
    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(fd)?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 512];
    loop {
        let n = rx.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.contains(&b'\n') || buf.len() > 8192 {
            break;
        }
    }
    let s = String::from_utf8_lossy(&buf);
    Ok(s.lines().next().unwrap_or("").to_string())
}

/// Whether the process behind `pidfd` has exited (its pidfd polls readable).
fn pidfd_exited(pidfd: &OwnedFd) -> bool {
    use std::os::fd::AsRawFd;
    let mut p = libc::pollfd {
        fd: pidfd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd, no timeout.
    let n = unsafe { libc::poll(&mut p, 1, 0) };
    n > 0 && p.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0
}

/// Waits until the process behind `pidfd` has exited, and reaps it if it is our child.
pub(crate) async fn wait_exit(pidfd: &OwnedFd, pid: i32) {
    let afd = pidfd.try_clone().ok().and_then(|fd| {
        // SAFETY: the AsyncFd owns this duplicate, so it stays open while registered.
        unsafe {
            tokio::io::unix::AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE)
        }
        .ok()
    });
    if let Some(afd) = afd {
        let _ = afd.readable().await.map(|mut g| g.retain_ready());
    }
    sys::try_reap(pid);
}
