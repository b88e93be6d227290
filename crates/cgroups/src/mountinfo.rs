//! Which cgroup layout the host has, read from `/proc/self/mountinfo` (not from fixed paths: a
//! container or an unusual distribution mounts hierarchies elsewhere).

use std::os::unix::ffi::OsStringExt;
use std::path::PathBuf;

/// The v1 controllers sandpool drives. `cpuset` is left out on purpose: a fresh v1 cpuset cgroup
/// has empty `cpuset.cpus`/`cpuset.mems` and refuses tasks until both are copied from the parent,
/// which would cost syscalls on the start path for a limit we do not offer.
pub(crate) const V1_CONTROLLERS: &[&str] = &["memory", "pids", "cpu", "cpuacct", "freezer"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Mount {
    pub mount_point: PathBuf,
    /// The controllers of [`V1_CONTROLLERS`] this hierarchy carries (several when co-mounted,
    /// e.g. `cpu,cpuacct`).
    pub controllers: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Layout {
    V1(Vec<V1Mount>),
    V2(PathBuf),
}

struct Entry {
    mount_point: PathBuf,
    fstype: String,
    super_opts: String,
}

fn parse(text: &str) -> Vec<Entry> {
    text.lines()
        .filter_map(|line| {
            let (pre, post) = line.split_once(" - ")?;
            let mount_point = unescape(pre.split(' ').nth(4)?);
            let mut post = post.split(' ');
            let fstype = post.next()?.to_string();
            let _source = post.next()?;
            let super_opts = post.next().unwrap_or("").to_string();
            Some(Entry {
                mount_point,
                fstype,
                super_opts,
            })
        })
        .collect()
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo` octal.
fn unescape(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            let oct = &b[i + 1..i + 4];
            if oct.iter().all(|c| (b'0'..=b'7').contains(c)) {
                let v = oct
                    .iter()
                    .fold(0u32, |acc, c| acc * 8 + u32::from(c - b'0'));
                if let Ok(v) = u8::try_from(v) {
                    out.push(v);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// v1 wins when any controller we use is mounted as v1: on a hybrid host the cgroup2 mount has
/// no controllers (they are bound to v1), so limits can only be enforced through v1.
pub(crate) fn detect_layout(mountinfo: &str) -> Option<Layout> {
    let entries = parse(mountinfo);
    let mut v1: Vec<V1Mount> = Vec::new();
    for e in entries.iter().filter(|e| e.fstype == "cgroup") {
        let controllers: Vec<String> = e
            .super_opts
            .split(',')
            .filter(|o| V1_CONTROLLERS.contains(o))
            // The same hierarchy may be mounted twice; the first mount serves.
            .filter(|o| !v1.iter().any(|m| m.controllers.iter().any(|c| c == o)))
            .map(str::to_string)
            .collect();
        if !controllers.is_empty() {
            v1.push(V1Mount {
                mount_point: e.mount_point.clone(),
                controllers,
            });
        }
    }
    if !v1.is_empty() {
        return Some(Layout::V1(v1));
    }
    let v2: Vec<&Entry> = entries.iter().filter(|e| e.fstype == "cgroup2").collect();
    let preferred = v2
        .iter()
        .find(|e| e.mount_point == std::path::Path::new("/sys/fs/cgroup"))
        .or_else(|| v2.first())?;
    Some(Layout::V2(preferred.mount_point.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:9 - cgroup cgroup rw,cpu,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
36 31 0:33 / /sys/fs/cgroup/devices rw,relatime - cgroup cgroup rw,devices
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
99 35 0:32 / /mnt/memory\\040again rw,relatime - cgroup cgroup rw,memory
";

    const PURE_V2: &str = "\
22 1 0:21 / /proc rw,nosuid - proc proc rw
30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    #[test]
    fn hybrid_host_uses_v1_with_comounts_and_first_mount_wins() {
        let Some(Layout::V1(m)) = detect_layout(HYBRID) else {
            panic!("expected v1");
        };
        let by_ctrl = |c: &str| {
            m.iter()
                .find(|h| h.controllers.iter().any(|x| x == c))
                .map(|h| h.mount_point.clone())
        };
        assert_eq!(
            by_ctrl("cpu"),
            Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"))
        );
        assert_eq!(by_ctrl("cpu"), by_ctrl("cpuacct"));
        assert_eq!(
            by_ctrl("memory"),
            Some(PathBuf::from("/sys/fs/cgroup/memory"))
        );
        assert_eq!(
            by_ctrl("freezer"),
            Some(PathBuf::from("/sys/fs/cgroup/freezer"))
        );
        assert_eq!(by_ctrl("pids"), Some(PathBuf::from("/sys/fs/cgroup/pids")));
        // devices and name=systemd are not ours; the second memory mount is ignored.
        assert_eq!(m.len(), 4);
    }

    #[test]
    fn pure_v2_host_uses_the_cgroup2_mount() {
        assert_eq!(
            detect_layout(PURE_V2),
            Some(Layout::V2(PathBuf::from("/sys/fs/cgroup")))
        );
    }

    #[test]
    fn no_cgroup_mounts_is_none_and_garbage_is_ignored() {
        assert_eq!(detect_layout("22 1 0:21 / /proc rw - proc proc rw\n"), None);
        assert_eq!(detect_layout("garbage\n\n - \n1 2 3\n"), None);
    }

    #[test]
    fn octal_escapes_are_decoded() {
        assert_eq!(unescape("/a\\040b\\134c"), PathBuf::from("/a b\\c"));
        assert_eq!(unescape("/trailing\\04"), PathBuf::from("/trailing\\04"));
    }
}
