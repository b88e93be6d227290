//! One server per data dir, and host resources no two instances share.
//!
//! A server holds two `flock`s for as long as it runs:
//! - `<data-dir>/instance.lock`: a second server on the same data dir refuses to start.
//! - its claim in the host-wide registry [`DEFAULT_REGISTRY`] (`<uuid>.json`): the cgroup
//!   parent, host uid range and egress network (bridge, subnet) its sandboxes use.
//!
//! At start, under the registry's own lock, every other claim is compared with this server's
//! settings; any overlap refuses the start with a message that names the other instance, each
//! conflict and the flag that resolves it. A claim whose server is gone (its lock is free)
//! still counts while its data dir holds sandboxes, since those outlive their server by design
//! and the next sweep of that instance is theirs; once its data dir holds none it is removed.
//! A claim of this very data dir left by an earlier process is this server's own: replaced.
//!
//! The locks are released by the kernel when the process ends, however it ends, so a crashed
//! server never blocks its own restart.

use std::fs::File;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::sandboxes::SandboxSettings;

/// Where instances register their claims unless configured otherwise.
pub const DEFAULT_REGISTRY: &str = "/run/sandpool/instances";
/// The data dir's lock file.
pub const LOCK_FILE: &str = "instance.lock";
/// Host uids each sandbox takes.
const UIDS_PER_SANDBOX: u64 = 65_536;

/// Why a server may not start here.
#[derive(Debug, thiserror::Error)]
pub enum InstanceError {
    #[error(
        "data dir {dir} is in use by another sandpool server ({holder}); give this one a data \
         dir of its own with --data-dir"
    )]
    DataDirInUse { dir: String, holder: String },
    #[error("{0}")]
    Conflict(String),
    #[error("instance registry: {context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> InstanceError {
    let context = context.into();
    move |source| InstanceError::Io { context, source }
}

/// What an instance holds on the host, as stored in its claim file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct Claim {
    data_dir: PathBuf,
    pid: u32,
    cgroup_parent: String,
    /// First host uid and how many follow (`u64`: the range may end at `u32::MAX + 1`).
    uid_first: u64,
    uid_count: u64,
    egress: Option<ClaimNet>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
struct ClaimNet {
    bridge: String,
    subnet: String,
}

impl Claim {
    fn of(data_dir: &Path, s: &SandboxSettings) -> Claim {
        Claim {
            data_dir: data_dir.to_path_buf(),
            pid: std::process::id(),
            cgroup_parent: s.cgroup_parent.clone(),
            uid_first: u64::from(s.uid_base),
            uid_count: uid_count(s),
            egress: s.egress.as_ref().map(|n| ClaimNet {
                bridge: n.bridge.clone(),
                subnet: n.subnet.to_string(),
            }),
        }
    }

    fn uid_end(&self) -> u64 {
        self.uid_first + self.uid_count
    }
}

/// Host uids of `s`' sandboxes: `uid_slots` ranges from `uid_base`, cut at `u32::MAX`.
pub fn uid_count(s: &SandboxSettings) -> u64 {
    let room = (u64::from(u32::MAX) + 1 - u64::from(s.uid_base)) / UIDS_PER_SANDBOX;
    u64::from(s.uid_slots).min(room) * UIDS_PER_SANDBOX
}

/// Whether two cgroup parents share a subtree (equal, or one below the other).
fn cgroups_overlap(a: &str, b: &str) -> bool {
    let nested = |outer: &str, inner: &str| {
        inner
            .strip_prefix(outer)
            .is_some_and(|rest| rest.starts_with('/'))
    };
    a == b || nested(a, b) || nested(b, a)
}

fn subnets_overlap(a: &str, b: &str) -> bool {
    match (
        a.parse::<sandpool_net::Ipv4Net>(),
        b.parse::<sandpool_net::Ipv4Net>(),
    ) {
        (Ok(a), Ok(b)) => a.contains(b.addr()) || b.contains(a.addr()),
        // Unreadable: assume the worst.
        _ => true,
    }
}

/// Each way `mine` collides with `other`, with the flag that separates them.
fn conflicts(mine: &Claim, other: &Claim) -> Vec<String> {
    let mut found = Vec::new();
    if cgroups_overlap(&mine.cgroup_parent, &other.cgroup_parent) {
        found.push(format!(
            "cgroup parent `{}` (this one: `{}`): give this one its own with --cgroup-parent",
            other.cgroup_parent, mine.cgroup_parent
        ));
    }
    if mine.uid_first < other.uid_end() && other.uid_first < mine.uid_end() {
        found.push(format!(
            "host uids {}..{} (this one: {}..{}): move this one's range with --uid-base (or shrink it with --uid-slots)",
            other.uid_first,
            other.uid_end(),
            mine.uid_first,
            mine.uid_end()
        ));
    }
    if let (Some(a), Some(b)) = (&mine.egress, &other.egress) {
        if a.bridge == b.bridge {
            found.push(format!(
                "egress bridge `{}`: give this one its own with --egress-bridge (or --no-egress)",
                b.bridge
            ));
        }
        if subnets_overlap(&a.subnet, &b.subnet) {
            found.push(format!(
                "egress subnet {} (this one: {}): give this one its own with --egress-subnet \
                 (or --no-egress)",
                b.subnet, a.subnet
            ));
        }
    }
    found
}

/// A uid base at or above `from` whose range of `count` uids no claim overlaps, if any.
fn free_uid_base(from: u64, count: u64, claims: &[Claim]) -> Option<u64> {
    let mut candidates: Vec<u64> = std::iter::once(from)
        .chain(claims.iter().map(Claim::uid_end))
        .filter(|c| *c >= from)
        .collect();
    candidates.sort_unstable();
    candidates.into_iter().find(|&base| {
        base + count <= u64::from(u32::MAX) + 1
            && claims
                .iter()
                .all(|c| base + count <= c.uid_first || c.uid_end() <= base)
    })
}

/// This server's hold on its data dir and its host resources; released when dropped (or when
/// the process ends).
#[derive(Debug)]
pub struct Instance {
    _data_dir: Flock<File>,
    registered: Option<Registered>,
}

#[derive(Debug)]
struct Registered {
    _lock: Flock<File>,
    path: PathBuf,
    state_dir: PathBuf,
}

impl Drop for Instance {
    fn drop(&mut self) {
        // A stopped server's claim stays while its sandboxes do (sessions outlive it).
        if let Some(r) = &self.registered {
            if dir_is_empty(&r.state_dir) {
                let _ = std::fs::remove_file(&r.path);
            }
        }
    }
}

/// Whether `dir` holds nothing (or does not exist).
fn dir_is_empty(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Locks `data_dir` (which must exist) for this process.
pub fn lock_data_dir(data_dir: &Path) -> Result<Flock<File>, InstanceError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let path = data_dir.join(LOCK_FILE);
    // Private from the start, as every file of the data dir is (see `data_dir`).
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&path)
        .map_err(io(format!("opening {}", path.display())))?;
    let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
        Ok(l) => l,
        Err((mut file, nix::errno::Errno::EWOULDBLOCK)) => {
            let mut holder = String::new();
            let _ = std::io::Read::read_to_string(&mut file, &mut holder);
            let holder = match holder.trim() {
                "" => "pid unknown".to_owned(),
                pid => format!("pid {pid}"),
            };
            return Err(InstanceError::DataDirInUse {
                dir: data_dir.display().to_string(),
                holder,
            });
        }
        Err((_, e)) => {
            return Err(InstanceError::Io {
                context: format!("locking {}", path.display()),
                source: e.into(),
            })
        }
    };
    // Who holds it, for the message a second server prints.
    let _ = lock.set_len(0);
    let _ = writeln!(&mut *lock, "{}", std::process::id());
    Ok(lock)
}

/// Takes the data dir's lock and registers this server's host resources in `registry`.
pub fn claim(
    data_dir: &Path,
    settings: &SandboxSettings,
    registry: &Path,
) -> Result<Instance, InstanceError> {
    let data_dir = data_dir
        .canonicalize()
        .map_err(io(format!("resolving {}", data_dir.display())))?;
    let dir_lock = lock_data_dir(&data_dir)?;
    let registered = register(&data_dir, settings, registry)?;
    Ok(Instance {
        _data_dir: dir_lock,
        registered: Some(registered),
    })
}

impl Instance {
    /// The data dir lock alone: the registry could not be used, so this server runs no
    /// sandboxes (and claims nothing on the host).
    pub fn unregistered(data_dir: &Path) -> Result<Instance, InstanceError> {
        Ok(Instance {
            _data_dir: lock_data_dir(data_dir)?,
            registered: None,
        })
    }
}

fn register(
    data_dir: &Path,
    settings: &SandboxSettings,
    registry: &Path,
) -> Result<Registered, InstanceError> {
    std::fs::create_dir_all(registry).map_err(io(format!("creating {}", registry.display())))?;
    let guard_path = registry.join(".lock");
    let guard =
        File::create(&guard_path).map_err(io(format!("opening {}", guard_path.display())))?;
    // Held while the claims are compared and this one is written: two servers starting at
    // once see each other.
    let _guard =
        Flock::lock(guard, FlockArg::LockExclusive).map_err(|(_, e)| InstanceError::Io {
            context: format!("locking {}", guard_path.display()),
            source: e.into(),
        })?;
    let mine = Claim::of(data_dir, settings);
    let mut others: Vec<(Claim, bool)> = Vec::new();
    let entries =
        std::fs::read_dir(registry).map_err(io(format!("reading {}", registry.display())))?;
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let running = match Flock::lock(file, FlockArg::LockSharedNonblock) {
            Ok(_) => false,
            Err((_, nix::errno::Errno::EWOULDBLOCK)) => true,
            Err(_) => continue,
        };
        let claim = std::fs::read(&path)
            .ok()
            .and_then(|b| serde_json::from_slice::<Claim>(&b).ok());
        let Some(claim) = claim else {
            // Unreadable: a server holding it is still there; one that is gone left debris.
            if !running {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        };
        if !running {
            let ours = claim.data_dir == mine.data_dir;
            if ours || dir_is_empty(&claim.data_dir.join("sandboxes")) {
                let _ = std::fs::remove_file(&path);
                continue;
            }
        }
        others.push((claim, running));
    }
    let mut problems = Vec::new();
    for (other, running) in &others {
        let found = conflicts(&mine, other);
        if found.is_empty() {
            continue;
        }
        let state = if *running {
            format!("running, pid {}", other.pid)
        } else {
            "stopped, its sandboxes remain: start it again, or remove its sandboxes".to_owned()
        };
        problems.push(format!(
            "the sandpool instance of data dir {} ({state}) already uses\n  - {}",
            other.data_dir.display(),
            found.join("\n  - ")
        ));
    }
    if !problems.is_empty() {
        let claims: Vec<Claim> = others.into_iter().map(|(c, _)| c).collect();
        let hint = free_uid_base(mine.uid_first, mine.uid_count, &claims)
            .filter(|b| *b != mine.uid_first)
            .map(|b| format!("\n(a free uid range starts at --uid-base {b})"))
            .unwrap_or_default();
        return Err(InstanceError::Conflict(format!(
            "this server's sandboxes would share host resources with another instance on this \
             host:\n{}{hint}",
            problems.join("\n")
        )));
    }
    let path = registry.join(format!("{}.json", uuid::Uuid::new_v4().simple()));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(io(format!("creating {}", path.display())))?;
    let mut lock =
        Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, e)| InstanceError::Io {
            context: format!("locking {}", path.display()),
            source: e.into(),
        })?;
    let body = serde_json::to_vec_pretty(&mine).map_err(|e| InstanceError::Io {
        context: "encoding the claim".into(),
        source: std::io::Error::other(e),
    })?;
    lock.write_all(&body)
        .map_err(io(format!("writing {}", path.display())))?;
    Ok(Registered {
        _lock: lock,
        path,
        state_dir: data_dir.join("sandboxes"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lock_file_is_private_when_made() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let _lock = lock_data_dir(dir.path()).unwrap();
        let mode = std::fs::metadata(dir.path().join(LOCK_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }

    fn settings(parent: &str, uid_base: u32, net: Option<(&str, &str)>) -> SandboxSettings {
        SandboxSettings {
            cgroup_parent: parent.into(),
            uid_base,
            uid_slots: 16,
            egress: net.map(|(bridge, subnet)| {
                crate::sandboxes::egress_config(bridge, subnet.parse().expect("subnet"))
            }),
            ..Default::default()
        }
    }

    #[test]
    fn overlaps() {
        assert!(cgroups_overlap("sandpool", "sandpool"));
        assert!(cgroups_overlap("sandpool", "sandpool/staging"));
        assert!(cgroups_overlap("a/b", "a"));
        assert!(!cgroups_overlap("sandpool", "sandpool-staging"));
        assert!(subnets_overlap("10.0.0.0/16", "10.0.5.0/24"));
        assert!(!subnets_overlap("10.0.0.0/24", "10.0.1.0/24"));
        let a = Claim::of(
            Path::new("/a"),
            &settings("x", 1_000_000_000, Some(("b0", "10.0.0.0/24"))),
        );
        let far = Claim::of(
            Path::new("/b"),
            &settings("y", 1_100_000_000, Some(("b1", "10.0.1.0/24"))),
        );
        assert!(conflicts(&a, &far).is_empty());
        let near = Claim::of(
            Path::new("/b"),
            &settings(
                "x/sub",
                1_000_000_000 + 15 * 65_536,
                Some(("b0", "10.0.0.128/25")),
            ),
        );
        let found = conflicts(&a, &near).join("\n");
        for flag in [
            "--cgroup-parent",
            "--uid-base",
            "--egress-bridge",
            "--egress-subnet",
        ] {
            assert!(found.contains(flag), "{flag} missing: {found}");
        }
        // Right after the other's range: no overlap.
        let next = Claim::of(
            Path::new("/b"),
            &settings("z", 1_000_000_000 + 16 * 65_536, None),
        );
        assert!(conflicts(&a, &next).is_empty());
        assert_eq!(
            free_uid_base(a.uid_first, a.uid_count, std::slice::from_ref(&a)),
            Some(a.uid_end())
        );
    }

    #[test]
    fn uid_ranges_stop_at_the_last_uid() {
        let s = settings("x", u32::MAX - 65_536 - 100, None);
        assert_eq!(uid_count(&s), 65_536);
    }

    /// Two claims of one registry: the second with the same resources is refused while the
    /// first is held, and is accepted once the first is dropped with an empty data dir.
    #[test]
    fn claims_exclude_each_other_while_held() {
        let registry = tempfile::tempdir().expect("tempdir");
        let (a, b) = (
            tempfile::tempdir().expect("a"),
            tempfile::tempdir().expect("b"),
        );
        let s = settings("p", 2_000_000_000, None);
        let first = claim(a.path(), &s, registry.path()).expect("first claim");
        match claim(b.path(), &s, registry.path()) {
            Err(InstanceError::Conflict(m)) => {
                assert!(
                    m.contains("--cgroup-parent") && m.contains("--uid-base"),
                    "{m}"
                );
                assert!(m.contains(&a.path().canonicalize().expect("a").display().to_string()));
            }
            other => panic!("second claim: {other:?}"),
        }
        match claim(
            a.path(),
            &settings("q", 2_100_000_000, None),
            registry.path(),
        ) {
            Err(InstanceError::DataDirInUse { holder, .. }) => {
                assert_eq!(holder, format!("pid {}", std::process::id()))
            }
            other => panic!("same data dir: {other:?}"),
        }
        let other = claim(
            b.path(),
            &settings("q", 2_100_000_000, None),
            registry.path(),
        )
        .expect("resources of its own");
        drop(other);
        // A stopped instance whose sandboxes remain still holds its resources.
        std::fs::create_dir_all(a.path().join("sandboxes/s1")).expect("state");
        drop(first);
        assert!(matches!(
            claim(b.path(), &s, registry.path()),
            Err(InstanceError::Conflict(m)) if m.contains("stopped")
        ));
        // Its own restart takes them over; without sandboxes they are free for anyone.
        drop(claim(a.path(), &s, registry.path()).expect("restart of the first"));
        std::fs::remove_dir_all(a.path().join("sandboxes")).expect("state");
        claim(b.path(), &s, registry.path()).expect("after the first is gone");
    }
}
