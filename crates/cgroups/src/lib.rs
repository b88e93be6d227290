//! One interface over cgroup v1 and cgroup v2 for the per-sandbox limits of sandpool
//! (memory with OOM reporting, pids, cpu quota) and their accounting.
//!
//! It knows nothing of sandboxes, namespaces or HTTP.
//!
//! Model: the host has either cgroup v1 (one hierarchy per controller, possibly co-mounted, as on
//! hybrid hosts whose cgroup2 mount carries no controllers) or pure cgroup v2 (one hierarchy).
//! [`CgroupManager::detect`] reads `/proc/self/mountinfo` to tell which, owns one *parent*
//! directory in every hierarchy it uses, and makes per-sandbox [`Cgroup`]s directly below it.
//! A [`Cgroup`] is one name with one directory per hierarchy; every operation fans out over them.
//!
//! Paths: the parent is relative to the hierarchy root (like runc's `cgroupsPath`), never to the
//! caller's own cgroup, so a restarted server finds its sandboxes again whichever cgroup it runs in.

mod fsio;
mod mountinfo;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use fsio::{io_err, keyed_value, read, read_optional, read_procs, read_u64_optional, write};

/// Which cgroup interface the manager drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// CFS bandwidth: at most `quota_us` of cpu time per `period_us` of wall time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuQuota {
    pub quota_us: u64,
    pub period_us: u64,
}

impl CpuQuota {
    pub const DEFAULT_PERIOD_US: u64 = 100_000;
    /// The kernel refuses quotas and periods below 1 ms.
    pub const MIN_US: u64 = 1_000;
    /// The kernel refuses periods above 1 s.
    pub const MAX_PERIOD_US: u64 = 1_000_000;

    /// Checked constructor; the kernel's bounds, reported as [`CgroupError::InvalidLimit`].
    pub fn new(quota_us: u64, period_us: u64) -> Result<CpuQuota, CgroupError> {
        let q = CpuQuota {
            quota_us,
            period_us,
        };
        q.validate()?;
        Ok(q)
    }

    /// 1000 millicores is one full cpu. Below 10 millicores the quota is raised to the kernel's
    /// 1 ms minimum rather than failing, because callers think in cores, not in CFS periods.
    pub fn from_millicores(millicores: u64) -> CpuQuota {
        let per_millicore = Self::DEFAULT_PERIOD_US / 1000;
        CpuQuota {
            quota_us: millicores.saturating_mul(per_millicore).max(Self::MIN_US),
            period_us: Self::DEFAULT_PERIOD_US,
        }
    }

    /// The inverse of [`CpuQuota::from_millicores`], rounded down.
    pub fn millicores(&self) -> u64 {
        if self.period_us == 0 {
            return 0;
        }
        (u128::from(self.quota_us) * 1000 / u128::from(self.period_us))
            .try_into()
            .unwrap_or(u64::MAX)
    }

    fn validate(&self) -> Result<(), CgroupError> {
        if self.quota_us < Self::MIN_US {
            return Err(CgroupError::InvalidLimit(format!(
                "cpu quota {} us is below the kernel minimum of {} us",
                self.quota_us,
                Self::MIN_US
            )));
        }
        if !(Self::MIN_US..=Self::MAX_PERIOD_US).contains(&self.period_us) {
            return Err(CgroupError::InvalidLimit(format!(
                "cpu period {} us is outside {}..={} us",
                self.period_us,
                Self::MIN_US,
                Self::MAX_PERIOD_US
            )));
        }
        Ok(())
    }
}

/// Limits of one cgroup. In [`Cgroup::set_limits`], `None` leaves that limit as it is; a fresh
/// cgroup starts unlimited, so in [`CgroupManager::create`] `None` means "no limit".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupLimits {
    /// Bytes of memory (page cache included); exceeding it OOM-kills inside the cgroup. Swap is
    /// capped too, so a limit cannot be dodged by swapping.
    pub memory_max: Option<u64>,
    /// Tasks (threads count) alive at once; `fork`/`clone` fail with `EAGAIN` beyond it.
    pub pids_max: Option<u64>,
    pub cpu_quota: Option<CpuQuota>,
}

/// Accounting of one cgroup. A figure whose controller is not available reads as 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CgroupStats {
    /// Bytes charged now.
    pub memory_current: u64,
    /// Highest `memory_current` seen; equals `memory_current` on v2 kernels without `memory.peak`.
    pub memory_peak: u64,
    /// Cpu time consumed by every task ever in the cgroup (user + system).
    pub cpu_usage: Duration,
    /// Tasks (threads) alive now.
    pub pids_current: u64,
    /// Processes the kernel OOM-killed because of this cgroup's memory limit.
    pub oom_kills: u64,
    /// CFS periods in which the cgroup ran out of its cpu quota (`nr_throttled` of `cpu.stat`);
    /// 0 without a quota or a cpu controller.
    pub cpu_throttled_periods: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("invalid cgroup name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
    #[error("no cgroup hierarchy is mounted (no cgroup or cgroup2 entry in /proc/self/mountinfo)")]
    NoHierarchy,
    #[error("{action} {path}: {source}")]
    Io {
        action: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("sending SIGKILL to pid {pid}: {source}")]
    Signal {
        pid: i32,
        #[source]
        source: io::Error,
    },
    #[error("the {controller} controller is not available under {path} (needed for {needed_for})")]
    ControllerUnavailable {
        controller: &'static str,
        path: PathBuf,
        needed_for: &'static str,
    },
    #[error("cgroup {path} already exists")]
    AlreadyExists { path: PathBuf },
    #[error("cgroup {name:?} does not exist under {parent}")]
    NotFound { name: String, parent: PathBuf },
    #[error("unexpected content {content:?} in {path}")]
    Parse { path: PathBuf, content: String },
    #[error("invalid limit: {0}")]
    InvalidLimit(String),
    #[error("invalid pid {0}")]
    InvalidPid(i32),
    #[error("cgroup {path} still holds pids {pids:?} after {waited:?} of killing")]
    NotEmpty {
        path: PathBuf,
        pids: Vec<i32>,
        waited: Duration,
    },
}

impl CgroupError {
    /// The errno behind an I/O or signal failure, for callers that branch on it.
    pub fn errno(&self) -> Option<i32> {
        match self {
            CgroupError::Io { source, .. } | CgroupError::Signal { source, .. } => {
                source.raw_os_error()
            }
            _ => None,
        }
    }
}

/// How long [`Cgroup::kill_all`] keeps killing before it reports [`CgroupError::NotEmpty`]. A task
/// in uninterruptible sleep (e.g. on a hung NFS mount) can outlive SIGKILL indefinitely.
const KILL_TIMEOUT: Duration = Duration::from_secs(5);
/// How long to wait for a freezer to report frozen. Killing proceeds after it either way: a
/// partially frozen cgroup is still better than none for stopping a fork race.
const FREEZE_TIMEOUT: Duration = Duration::from_secs(1);
/// `rmdir` can briefly return `EBUSY` while the last tasks finish exiting.
const RMDIR_TIMEOUT: Duration = Duration::from_secs(2);

/// What a fresh v1 cgroup's `cpu.cfs_period_us` reads.
const V1_DEFAULT_CFS_PERIOD_US: u64 = 100_000;

/// Controllers enabled for sandboxes on v2 (`cgroup.kill`, `cgroup.freeze` and `cpu.stat` are core
/// files and need none).
const V2_CONTROLLERS: &[&str] = &["cpu", "memory", "pids"];

#[derive(Debug)]
struct Hierarchy {
    /// Where the hierarchy is mounted (v1) or the v2 root.
    root: PathBuf,
    /// v1: the controllers bound to this hierarchy that sandpool drives. v2: the controllers
    /// enabled in the parent's `cgroup.subtree_control`, i.e. available in every sandbox cgroup.
    controllers: Vec<String>,
}

#[derive(Debug)]
struct Inner {
    version: CgroupVersion,
    hierarchies: Vec<Hierarchy>,
    /// Relative to each hierarchy's root.
    parent: PathBuf,
}

impl Inner {
    fn dirs_of(&self, name: &str) -> Vec<PathBuf> {
        self.hierarchies
            .iter()
            .map(|h| h.root.join(&self.parent).join(name))
            .collect()
    }

    fn index_of(&self, controller: &str) -> Option<usize> {
        self.hierarchies
            .iter()
            .position(|h| h.controllers.iter().any(|c| c == controller))
    }

    fn parent_dir(&self, index: usize) -> PathBuf {
        self.hierarchies[index].root.join(&self.parent)
    }

    /// Rejects limits the kernel would refuse or that no controller here can enforce, before any
    /// directory is made.
    fn check_limits(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        if l.memory_max == Some(0) {
            return Err(CgroupError::InvalidLimit(
                "memory_max must be greater than 0".into(),
            ));
        }
        if let Some(q) = &l.cpu_quota {
            q.validate()?;
        }
        let needs = [
            ("memory", l.memory_max.is_some(), "memory_max"),
            ("pids", l.pids_max.is_some(), "pids_max"),
            ("cpu", l.cpu_quota.is_some(), "cpu_quota"),
        ];
        for (controller, needed, needed_for) in needs {
            if needed && self.index_of(controller).is_none() {
                let path = match self.version {
                    CgroupVersion::V2 => self.parent_dir(0),
                    CgroupVersion::V1 => PathBuf::from("/proc/self/mountinfo"),
                };
                return Err(CgroupError::ControllerUnavailable {
                    controller,
                    path,
                    needed_for,
                });
            }
        }
        Ok(())
    }
}

/// Owns the parent cgroup of all sandboxes in every hierarchy used. Cheap to clone.
#[derive(Debug, Clone)]
pub struct CgroupManager {
    inner: Arc<Inner>,
}

impl CgroupManager {
    /// Detects v1 or v2 from `/proc/self/mountinfo` and creates `parent` (relative to the
    /// hierarchy root, e.g. `"sandpool"` or `"sandpool/pool-a"`) in every hierarchy used. On v2 it
    /// also enables the cpu, memory and pids controllers (those the kernel offers) from the root
    /// down to `parent`'s `cgroup.subtree_control`. Idempotent.
    pub fn detect(parent: &str) -> Result<CgroupManager, CgroupError> {
        let parent = validate_parent(parent)?;
        let path = Path::new("/proc/self/mountinfo");
        let text = read(path)?;
        match mountinfo::detect_layout(&text).ok_or(CgroupError::NoHierarchy)? {
            mountinfo::Layout::V1(mounts) => Self::new_v1(mounts, parent),
            mountinfo::Layout::V2(root) => Self::new_v2(root, parent),
        }
    }

    /// A v2 manager over the cgroup2 hierarchy mounted at `root`, whatever mountinfo says. For
    /// hosts with an unusual mount and for exercising the v2 path on hybrid hosts (whose cgroup2
    /// mount is usually `/sys/fs/cgroup/unified`).
    pub fn with_v2_root(
        root: impl Into<PathBuf>,
        parent: &str,
    ) -> Result<CgroupManager, CgroupError> {
        let parent = validate_parent(parent)?;
        Self::new_v2(root.into(), parent)
    }

    fn new_v1(
        mounts: Vec<mountinfo::V1Mount>,
        parent: PathBuf,
    ) -> Result<CgroupManager, CgroupError> {
        let hierarchies: Vec<Hierarchy> = mounts
            .into_iter()
            .map(|m| Hierarchy {
                root: m.mount_point,
                controllers: m.controllers,
            })
            .collect();
        for h in &hierarchies {
            let dir = h.root.join(&parent);
            fs::create_dir_all(&dir).map_err(|e| io_err("creating cgroup", &dir, e))?;
        }
        Ok(CgroupManager {
            inner: Arc::new(Inner {
                version: CgroupVersion::V1,
                hierarchies,
                parent,
            }),
        })
    }

    fn new_v2(root: PathBuf, parent: PathBuf) -> Result<CgroupManager, CgroupError> {
        let available = read(&root.join("cgroup.controllers"))?;
        let wanted: Vec<&str> = V2_CONTROLLERS
            .iter()
            .copied()
            .filter(|c| available.split_whitespace().any(|a| a == *c))
            .collect();
        let mut dir = root.clone();
        for component in parent.components() {
            enable_v2_controllers(&dir, &wanted)?;
            dir.push(component);
            match fs::create_dir(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io_err("creating cgroup", &dir, e)),
            }
        }
        enable_v2_controllers(&dir, &wanted)?;
        let controllers = read(&dir.join("cgroup.subtree_control"))?
            .split_whitespace()
            .map(str::to_string)
            .collect();
        Ok(CgroupManager {
            inner: Arc::new(Inner {
                version: CgroupVersion::V2,
                hierarchies: vec![Hierarchy { root, controllers }],
                parent,
            }),
        })
    }

    pub fn version(&self) -> CgroupVersion {
        self.inner.version
    }

    /// The controllers sandbox cgroups get, sorted (for `sandpool doctor`).
    pub fn controllers(&self) -> Vec<String> {
        let mut all: Vec<String> = self
            .inner
            .hierarchies
            .iter()
            .flat_map(|h| h.controllers.iter().cloned())
            .collect();
        all.sort();
        all.dedup();
        all
    }

    /// The parent directory in every hierarchy used.
    pub fn parent_dirs(&self) -> Vec<PathBuf> {
        (0..self.inner.hierarchies.len())
            .map(|i| self.inner.parent_dir(i))
            .collect()
    }

    /// Caps the cpu time of everything below the parent together (all sandboxes of this
    /// instance): `Some` sets the CFS quota on the parent, `None` lifts it. On v1 the kernel
    /// then refuses a sandbox quota above this one (`EINVAL`); on v2 the lower of the two holds.
    pub fn set_parent_cpu_quota(&self, quota: Option<CpuQuota>) -> Result<(), CgroupError> {
        if let Some(q) = &quota {
            q.validate()?;
        }
        let Some(index) = self.inner.index_of("cpu") else {
            return match quota {
                None => Ok(()),
                Some(_) => Err(CgroupError::ControllerUnavailable {
                    controller: "cpu",
                    path: self.inner.parent_dir(0),
                    needed_for: "the cpu ceiling of all sandboxes",
                }),
            };
        };
        let dir = self.inner.parent_dir(index);
        match (self.inner.version, quota) {
            (CgroupVersion::V2, Some(q)) => write(
                &dir.join("cpu.max"),
                &format!("{} {}", q.quota_us, q.period_us),
            ),
            (CgroupVersion::V2, None) => write(&dir.join("cpu.max"), "max"),
            (CgroupVersion::V1, Some(q)) => {
                // The period first: the kernel checks the quota against the current period.
                write(&dir.join("cpu.cfs_period_us"), &q.period_us.to_string())?;
                write(&dir.join("cpu.cfs_quota_us"), &q.quota_us.to_string())
            }
            (CgroupVersion::V1, None) => write(&dir.join("cpu.cfs_quota_us"), "-1"),
        }
    }

    /// The cpu quota on the parent (see [`CgroupManager::set_parent_cpu_quota`]); `None`: none.
    pub fn parent_cpu_quota(&self) -> Result<Option<CpuQuota>, CgroupError> {
        let Some(index) = self.inner.index_of("cpu") else {
            return Ok(None);
        };
        let dir = self.inner.parent_dir(index);
        let (quota, period) = match self.inner.version {
            CgroupVersion::V2 => {
                let path = dir.join("cpu.max");
                let text = read(&path)?;
                let mut it = text.split_whitespace();
                match (it.next(), it.next()) {
                    (Some("max"), _) => return Ok(None),
                    (Some(q), Some(p)) => (fsio::parse_u64(&path, q)?, fsio::parse_u64(&path, p)?),
                    _ => {
                        return Err(CgroupError::Parse {
                            path,
                            content: text,
                        })
                    }
                }
            }
            CgroupVersion::V1 => {
                let qpath = dir.join("cpu.cfs_quota_us");
                let text = read(&qpath)?;
                if text.trim().starts_with('-') {
                    return Ok(None);
                }
                let quota = fsio::parse_u64(&qpath, &text)?;
                let ppath = dir.join("cpu.cfs_period_us");
                (quota, fsio::parse_u64(&ppath, &read(&ppath)?)?)
            }
        };
        Ok(Some(CpuQuota {
            quota_us: quota,
            period_us: period,
        }))
    }

    /// Makes cgroup `name` below the parent in every hierarchy and applies `limits`. Fails with
    /// [`CgroupError::AlreadyExists`] if it exists (use [`CgroupManager::open`] to re-attach);
    /// on any failure nothing is left behind.
    pub fn create(&self, name: &str, limits: &CgroupLimits) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        self.inner.check_limits(limits)?;
        let dirs = self.inner.dirs_of(name);
        for (made, dir) in dirs.iter().enumerate() {
            if let Err(e) = fs::create_dir(dir) {
                remove_dirs(&dirs[..made]);
                return Err(if e.kind() == io::ErrorKind::AlreadyExists {
                    CgroupError::AlreadyExists { path: dir.clone() }
                } else {
                    io_err("creating cgroup", dir, e)
                });
            }
        }
        let cgroup = Cgroup {
            inner: self.inner.clone(),
            name: name.to_string(),
            dirs,
        };
        if let Err(e) = cgroup.write_limits(limits, true) {
            remove_dirs(&cgroup.dirs);
            return Err(e);
        }
        Ok(cgroup)
    }

    /// An existing cgroup `name` (after a restart, or for the sweep). Succeeds if it exists in at
    /// least one hierarchy, so that a cgroup half-made before a crash can still be destroyed.
    pub fn open(&self, name: &str) -> Result<Cgroup, CgroupError> {
        validate_name(name)?;
        let dirs = self.inner.dirs_of(name);
        if !dirs.iter().any(|d| d.is_dir()) {
            return Err(CgroupError::NotFound {
                name: name.to_string(),
                parent: self.inner.parent.clone(),
            });
        }
        Ok(Cgroup {
            inner: self.inner.clone(),
            name: name.to_string(),
            dirs,
        })
    }

    /// Names of the cgroups below the parent in any hierarchy, sorted.
    pub fn list(&self) -> Result<Vec<String>, CgroupError> {
        let mut names = Vec::new();
        for dir in self.parent_dirs() {
            names.extend(fsio::child_dirs(&dir)?);
        }
        names.sort();
        names.dedup();
        Ok(names)
    }
}

fn enable_v2_controllers(dir: &Path, wanted: &[&str]) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.subtree_control");
    let enabled = read(&path)?;
    let missing: Vec<String> = wanted
        .iter()
        .filter(|c| !enabled.split_whitespace().any(|e| e == **c))
        .map(|c| format!("+{c}"))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    write(&path, &missing.join(" "))
}

/// Best-effort cleanup of directories this crate just made; the original error matters more.
fn remove_dirs(dirs: &[PathBuf]) {
    for d in dirs {
        let _ = fs::remove_dir(d);
    }
}

/// One sandbox's cgroup: a directory per hierarchy. Cloning does not duplicate the cgroup.
#[derive(Debug, Clone)]
pub struct Cgroup {
    inner: Arc<Inner>,
    name: String,
    /// Parallel to `inner.hierarchies`.
    dirs: Vec<PathBuf>,
}

impl Cgroup {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn version(&self) -> CgroupVersion {
        self.inner.version
    }

    /// This cgroup's directory in every hierarchy (one on v2), e.g. to open for
    /// `CLONE_INTO_CGROUP`.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    /// The `cgroup.procs` files, for callers that write the pid themselves (e.g. from a pre-exec
    /// hook, where allocating is off limits). Writing a pid into every one of them is exactly
    /// [`Cgroup::add_pid`].
    pub fn procs_paths(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.join("cgroup.procs")).collect()
    }

    /// Moves process `pid` (all its threads) into this cgroup in every hierarchy.
    pub fn add_pid(&self, pid: i32) -> Result<(), CgroupError> {
        if pid <= 0 {
            return Err(CgroupError::InvalidPid(pid));
        }
        let value = pid.to_string();
        for path in self.procs_paths() {
            write(&path, &value)?;
        }
        Ok(())
    }

    /// Changes limits of a live cgroup; `None` fields are left as they are.
    pub fn set_limits(&self, l: &CgroupLimits) -> Result<(), CgroupError> {
        self.inner.check_limits(l)?;
        self.write_limits(l, false)
    }

    fn dir_of(&self, controller: &str) -> Option<&Path> {
        self.inner
            .index_of(controller)
            .map(|i| self.dirs[i].as_path())
    }

    fn file_of(&self, controller: &str, file: &str) -> Option<PathBuf> {
        self.dir_of(controller).map(|d| d.join(file))
    }

    /// Assumes `check_limits` passed, so every needed controller has a directory. `fresh`: the
    /// cgroup was just made, so kernel defaults still hold and writing them again can be skipped
    /// (each cgroupfs write costs a noticeable fraction of a sandbox start).
    fn write_limits(&self, l: &CgroupLimits, fresh: bool) -> Result<(), CgroupError> {
        let v2 = self.inner.version == CgroupVersion::V2;
        if let (Some(bytes), Some(dir)) = (l.memory_max, self.dir_of("memory")) {
            if v2 {
                write(&dir.join("memory.max"), &bytes.to_string())?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, "0")?;
                }
            } else {
                set_v1_memory(dir, bytes)?;
            }
        }
        if let (Some(n), Some(path)) = (l.pids_max, self.file_of("pids", "pids.max")) {
            write(&path, &n.to_string())?;
        }
        if let (Some(q), Some(dir)) = (l.cpu_quota, self.dir_of("cpu")) {
            if v2 {
                write(
                    &dir.join("cpu.max"),
                    &format!("{} {}", q.quota_us, q.period_us),
                )?;
            } else {
                if !(fresh && q.period_us == V1_DEFAULT_CFS_PERIOD_US) {
                    write(&dir.join("cpu.cfs_period_us"), &q.period_us.to_string())?;
                }
                write(&dir.join("cpu.cfs_quota_us"), &q.quota_us.to_string())?;
            }
        }
        Ok(())
    }

    pub fn stats(&self) -> Result<CgroupStats, CgroupError> {
        let opt = |controller: &str, file: &str| -> Result<Option<u64>, CgroupError> {
            match self.file_of(controller, file) {
                Some(p) => read_u64_optional(&p),
                None => Ok(None),
            }
        };
        let (memory_current, memory_peak, cpu_usage, pids_current) = match self.inner.version {
            CgroupVersion::V1 => {
                let current = opt("memory", "memory.usage_in_bytes")?.unwrap_or(0);
                let peak = opt("memory", "memory.max_usage_in_bytes")?.unwrap_or(current);
                let cpu_ns = opt("cpuacct", "cpuacct.usage")?.unwrap_or(0);
                let pids = opt("pids", "pids.current")?.unwrap_or(0);
                (current, peak, Duration::from_nanos(cpu_ns), pids)
            }
            CgroupVersion::V2 => {
                let dir = &self.dirs[0];
                let current = opt("memory", "memory.current")?.unwrap_or(0);
                let peak = opt("memory", "memory.peak")?.unwrap_or(current);
                // cpu.stat's usage_usec is core (present without the cpu controller).
                let cpu_stat = dir.join("cpu.stat");
                let cpu_us = keyed_value(&cpu_stat, &read(&cpu_stat)?, "usage_usec")?.unwrap_or(0);
                let pids = match opt("pids", "pids.current")? {
                    Some(n) => n,
                    // Without the pids controller, count the threads ourselves: same unit.
                    None => read(&dir.join("cgroup.threads"))?.lines().count() as u64,
                };
                (current, peak, Duration::from_micros(cpu_us), pids)
            }
        };
        Ok(CgroupStats {
            memory_current,
            memory_peak,
            cpu_usage,
            pids_current,
            oom_kills: self.oom_kills()?,
            cpu_throttled_periods: self.cpu_throttled_periods()?,
        })
    }

    /// `nr_throttled` of `cpu.stat` (same key on v1 and v2).
    fn cpu_throttled_periods(&self) -> Result<u64, CgroupError> {
        let Some(path) = self.file_of("cpu", "cpu.stat") else {
            return Ok(0);
        };
        match read_optional(&path)? {
            Some(text) => Ok(keyed_value(&path, &text, "nr_throttled")?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// OOM kills caused by this cgroup's limit: v2 `memory.events` `oom_kill`, v1
    /// `memory.oom_control` `oom_kill`. 0 without a memory controller.
    pub fn oom_kills(&self) -> Result<u64, CgroupError> {
        let file = match self.inner.version {
            CgroupVersion::V1 => "memory.oom_control",
            CgroupVersion::V2 => "memory.events",
        };
        let Some(path) = self.file_of("memory", file) else {
            return Ok(0);
        };
        match read_optional(&path)? {
            Some(text) => Ok(keyed_value(&path, &text, "oom_kill")?.unwrap_or(0)),
            None => Ok(0),
        }
    }

    /// Every process (thread-group id, host pid namespace) in this cgroup or below it, in any
    /// hierarchy, sorted.
    pub fn pids(&self) -> Result<Vec<i32>, CgroupError> {
        let mut pids = Vec::new();
        for dir in &self.dirs {
            for d in fsio::subtree_post_order(dir)? {
                pids.extend(read_procs(&d.join("cgroup.procs"))?);
            }
        }
        pids.sort_unstable();
        pids.dedup();
        Ok(pids)
    }

    /// SIGKILLs every process in the cgroup and waits (bounded) until none is left.
    ///
    /// Killing pid by pid races with `fork`, so the cgroup is first stopped as a whole: v2 writes
    /// `cgroup.kill` (kernel 5.14+) or else freezes, kills and thaws; v1 freezes with the freezer
    /// controller, kills and thaws. Whatever remains is then killed until the cgroup is empty.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        // The common case on destroy (the sandbox init already exited): skip freezer round trips.
        if self.pids()?.is_empty() {
            return Ok(());
        }
        match self.inner.version {
            CgroupVersion::V2 => {
                let kill = self.dirs[0].join("cgroup.kill");
                if kill.exists() {
                    write(&kill, "1")?;
                } else {
                    self.freeze_kill_thaw(Freezer::V2)?;
                }
            }
            CgroupVersion::V1 => {
                if self.dir_of("freezer").is_some() {
                    self.freeze_kill_thaw(Freezer::V1)?;
                }
            }
        }
        self.kill_until_empty()
    }

    /// [`Cgroup::kill_all`] through the freezer even where a faster way exists: the path taken on
    /// v2 kernels older than 5.14 (no `cgroup.kill`), exposed so it can be tested on new ones.
    #[doc(hidden)]
    pub fn kill_all_by_freezing(&self) -> Result<(), CgroupError> {
        self.freeze_kill_thaw(match self.inner.version {
            CgroupVersion::V1 => Freezer::V1,
            CgroupVersion::V2 => Freezer::V2,
        })?;
        self.kill_until_empty()
    }

    fn freeze_kill_thaw(&self, freezer: Freezer) -> Result<(), CgroupError> {
        let dir = match freezer {
            Freezer::V1 => self.dir_of("freezer"),
            Freezer::V2 => Some(self.dirs[0].as_path()),
        };
        // A half-made cgroup (crash during create) may lack this directory: nothing to freeze.
        let Some(dir) = dir.filter(|d| d.is_dir()) else {
            return Ok(());
        };
        let (control, frozen, thawed) = match freezer {
            Freezer::V1 => (dir.join("freezer.state"), "FROZEN", "THAWED"),
            Freezer::V2 => (dir.join("cgroup.freeze"), "1", "0"),
        };
        write(&control, frozen)?;
        let killed =
            wait_until(FREEZE_TIMEOUT, || freezer.is_frozen(dir)).and_then(|_| self.signal_all());
        // Thaw whatever happened: SIGKILLed tasks only die once they run again.
        let thawed = write(&control, thawed);
        killed.and(thawed)
    }

    fn signal_all(&self) -> Result<(), CgroupError> {
        for pid in self.pids()? {
            kill_pid(pid)?;
        }
        Ok(())
    }

    fn kill_until_empty(&self) -> Result<(), CgroupError> {
        let start = Instant::now();
        let mut pause = Duration::from_millis(1);
        loop {
            let pids = self.pids()?;
            if pids.is_empty() {
                return Ok(());
            }
            if start.elapsed() >= KILL_TIMEOUT {
                return Err(CgroupError::NotEmpty {
                    path: self.dirs[0].clone(),
                    pids,
                    waited: start.elapsed(),
                });
            }
            for pid in pids {
                kill_pid(pid)?;
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(50));
        }
    }

    /// Kills everything inside, then removes the directory (and any cgroups made below it) in
    /// every hierarchy. Parts already gone are fine, so it also cleans up half-made cgroups.
    pub fn destroy(self) -> Result<(), CgroupError> {
        self.kill_all()?;
        let mut first_error = None;
        for dir in &self.dirs {
            let result = fsio::subtree_post_order(dir)
                .and_then(|dirs| dirs.iter().try_for_each(|d| rmdir_when_idle(d)));
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

#[derive(Clone, Copy)]
enum Freezer {
    V1,
    V2,
}

impl Freezer {
    fn is_frozen(self, dir: &Path) -> Result<bool, CgroupError> {
        Ok(match self {
            Freezer::V1 => read(&dir.join("freezer.state"))?.trim() == "FROZEN",
            Freezer::V2 => {
                let events = dir.join("cgroup.events");
                keyed_value(&events, &read(&events)?, "frozen")? == Some(1)
            }
        })
    }
}

/// Polls `done` until it says true or `timeout` passes; timing out is not an error.
fn wait_until(
    timeout: Duration,
    mut done: impl FnMut() -> Result<bool, CgroupError>,
) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut pause = Duration::from_micros(100);
    while !done()? && start.elapsed() < timeout {
        thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(20));
    }
    Ok(())
}

fn rmdir_when_idle(dir: &Path) -> Result<(), CgroupError> {
    let start = Instant::now();
    loop {
        match fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && start.elapsed() < RMDIR_TIMEOUT => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(io_err("removing cgroup", dir, e)),
        }
    }
}

fn kill_pid(pid: i32) -> Result<(), CgroupError> {
    // Never signal ourselves (someone put the server into a sandbox cgroup) nor a process group
    // (pid <= 0 would mean one to kill(2)).
    if pid <= 0 || u32::try_from(pid).ok() == Some(std::process::id()) {
        return Ok(());
    }
    // SAFETY: kill(2) with a positive pid and a valid signal touches no memory of ours.
    if unsafe { libc::kill(pid, libc::SIGKILL) } == 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    if err.raw_os_error() == Some(libc::ESRCH) {
        return Ok(());
    }
    Err(CgroupError::Signal { pid, source: err })
}

/// cgroup v1 requires `memory.limit_in_bytes <= memory.memsw.limit_in_bytes` after every single
/// write, so which one goes first depends on whether the limit rises or falls.
fn set_v1_memory(dir: &Path, bytes: u64) -> Result<(), CgroupError> {
    let value = bytes.to_string();
    let limit = dir.join("memory.limit_in_bytes");
    let memsw = dir.join("memory.memsw.limit_in_bytes");
    if !memsw.exists() {
        // No swap accounting (swapaccount=0): keep the cgroup from swapping at all instead.
        write(&limit, &value)?;
        return write(&dir.join("memory.swappiness"), "0");
    }
    match write(&limit, &value) {
        Ok(()) => write(&memsw, &value),
        Err(e) if e.errno() == Some(libc::EINVAL) => {
            write(&memsw, &value)?;
            write(&limit, &value)
        }
        Err(e) => Err(e),
    }
}

fn validate_name(name: &str) -> Result<(), CgroupError> {
    check_component(name).map_err(|reason| CgroupError::InvalidName {
        name: name.to_string(),
        reason,
    })
}

/// `parent` may have several components; the hierarchy root itself is refused, since `list` and
/// the sweep would then see (and could destroy) every other cgroup on the host.
fn validate_parent(parent: &str) -> Result<PathBuf, CgroupError> {
    let invalid = |reason| CgroupError::InvalidName {
        name: parent.to_string(),
        reason,
    };
    let trimmed = parent.trim_matches('/');
    if trimmed.is_empty() {
        return Err(invalid("the parent must not be the hierarchy root"));
    }
    for component in trimmed.split('/') {
        check_component(component).map_err(invalid)?;
    }
    Ok(PathBuf::from(trimmed))
}

fn check_component(c: &str) -> Result<(), &'static str> {
    if c.is_empty() {
        Err("is empty")
    } else if c == "." || c == ".." {
        Err("is . or ..")
    } else if c.contains('/') {
        Err("contains '/'")
    } else if c.chars().any(char::is_control) {
        Err("contains a control character")
    } else if c.len() > 255 {
        Err("is longer than 255 bytes")
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        for bad in ["", ".", "..", "a/b", "a\nb", &"x".repeat(256)] {
            assert!(
                matches!(validate_name(bad), Err(CgroupError::InvalidName { .. })),
                "{bad:?} accepted"
            );
        }
        validate_name("sb-0123_abc.d").expect("plain name");
    }

    #[test]
    fn parents_are_validated() {
        for bad in ["", "/", "//", "a/../b", "a//b", "./a"] {
            assert!(validate_parent(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            validate_parent("/sandpool/pool-a/").ok(),
            Some(PathBuf::from("sandpool/pool-a"))
        );
    }

    #[test]
    fn millicores_map_to_cfs_quota() {
        assert_eq!(
            CpuQuota::from_millicores(1500),
            CpuQuota {
                quota_us: 150_000,
                period_us: 100_000
            }
        );
        assert_eq!(CpuQuota::from_millicores(0).quota_us, CpuQuota::MIN_US);
        assert_eq!(CpuQuota::from_millicores(250).millicores(), 250);
        assert!(CpuQuota::new(999, 100_000).is_err());
        assert!(CpuQuota::new(1000, 1_000_001).is_err());
        assert!(CpuQuota::new(5000, 10_000).is_ok());
    }

    #[test]
    fn errors_name_path_and_errno() {
        let err = read(Path::new("/nonexistent/cgroup.procs")).expect_err("must fail");
        let text = err.to_string();
        assert!(text.contains("/nonexistent/cgroup.procs"), "{text}");
        assert!(text.contains("os error 2"), "{text}");
        assert_eq!(err.errno(), Some(libc::ENOENT));
    }
}
