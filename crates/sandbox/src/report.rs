//! Host capability checks for `sandpool doctor`.

use std::path::Path;

/// One check of [`host_report`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostCheck {
    pub name: String,
    pub ok: bool,
    /// What was found.
    pub detail: String,
    /// How to fix it when not ok (empty when ok).
    pub fix: String,
}

/// What this host offers the sandbox runtime.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostReport {
    pub checks: Vec<HostCheck>,
}

impl HostReport {
    /// True when every check passed.
    pub fn ok(&self) -> bool {
        self.checks.iter().all(|c| c.ok)
    }
}

fn check(name: &str, r: Result<String, (String, &str)>) -> HostCheck {
    match r {
        Ok(detail) => HostCheck {
            name: name.into(),
            ok: true,
            detail,
            fix: String::new(),
        },
        Err((detail, fix)) => HostCheck {
            name: name.into(),
            ok: false,
            detail,
            fix: fix.into(),
        },
    }
}

fn cgroups() -> Result<String, (String, &'static str)> {
    let v2 = std::fs::read_to_string("/sys/fs/cgroup/cgroup.controllers").ok();
    if let Some(c) = v2 {
        let c = c.trim().to_string();
        let missing: Vec<&str> = ["memory", "pids", "cpu"]
            .into_iter()
            .filter(|k| !c.split_whitespace().any(|x| x == *k))
            .collect();
        if missing.is_empty() {
            return Ok(format!("cgroup v2, controllers: {c}"));
        }
        return Err((
            format!("cgroup v2 without {}", missing.join(", ")),
            "enable the controllers in the parent's cgroup.subtree_control (systemd: Delegate=yes)",
        ));
    }
    let mut found = Vec::new();
    for c in ["memory", "pids", "cpu"] {
        if Path::new(&format!("/sys/fs/cgroup/{c}/cgroup.procs")).exists() {
            found.push(c);
        }
    }
    if found.len() == 3 {
        Ok(format!("cgroup v1, controllers: {}", found.join(" ")))
    } else {
        Err((
            format!("cgroup v1 with only: {}", found.join(" ")),
            "mount the memory, pids and cpu controllers under /sys/fs/cgroup",
        ))
    }
}

fn read_num(p: &str) -> Option<i64> {
    std::fs::read_to_string(p).ok()?.trim().parse().ok()
}

fn userns() -> Result<String, (String, &'static str)> {
    match read_num("/proc/sys/user/max_user_namespaces") {
        Some(n) if n > 0 => Ok(format!("user namespaces: max {n}")),
        Some(_) => Err((
            "user.max_user_namespaces is 0".into(),
            "sysctl -w user.max_user_namespaces=65536",
        )),
        None => Err((
            "kernel without user namespaces".into(),
            "use a kernel built with CONFIG_USER_NS",
        )),
    }
}

fn filesystems() -> String {
    std::fs::read_to_string("/proc/filesystems").unwrap_or_default()
}

fn overlay() -> Result<String, (String, &'static str)> {
    if filesystems()
        .lines()
        .any(|l| l.trim_end().ends_with("overlay"))
    {
        Ok("overlayfs available".into())
    } else {
        Err((
            "overlayfs not available (needed for image root filesystems)".into(),
            "modprobe overlay",
        ))
    }
}

fn seccomp() -> Result<String, (String, &'static str)> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    if status
        .lines()
        .any(|l| l.starts_with("Seccomp_filters:") || l.starts_with("Seccomp:"))
    {
        match crate::seccomp::build() {
            Ok(_) => Ok("seccomp filters supported".into()),
            Err(e) => Err((
                format!("seccomp filter does not build: {e}"),
                "use x86_64 or aarch64",
            )),
        }
    } else {
        Err((
            "kernel without seccomp".into(),
            "use a kernel built with CONFIG_SECCOMP_FILTER",
        ))
    }
}

fn nftables() -> Result<String, (String, &'static str)> {
    sandpool_net::available()
        .map(|_| "nftables and netlink available (egress)".to_string())
        .map_err(|e| {
            (
                e,
                "install nftables and load nf_tables, veth and bridge (needed only for egress)",
            )
        })
}

fn openat2() -> Result<String, (String, &'static str)> {
    let how = crate::sys::OpenHow {
        flags: (libc::O_PATH | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve: libc::RESOLVE_BENEATH,
    };
    // SAFETY: valid path and open_how.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            libc::AT_FDCWD,
            c".".as_ptr(),
            &how as *const crate::sys::OpenHow,
            std::mem::size_of::<crate::sys::OpenHow>(),
        )
    };
    if fd >= 0 {
        // SAFETY: closing the descriptor we just got.
        unsafe { libc::close(fd as i32) };
        Ok("openat2 available".into())
    } else {
        Err((
            "openat2 missing (files API)".into(),
            "use Linux 5.6 or newer",
        ))
    }
}

/// Checks what the runtime needs from this host, each with a fix hint.
pub fn host_report() -> HostReport {
    HostReport {
        checks: vec![
            check("cgroups", cgroups()),
            check("user namespaces", userns()),
            check("overlayfs", overlay()),
            check("seccomp", seccomp()),
            check("openat2", openat2()),
            check("nftables", nftables()),
        ],
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn report_covers_the_runtime_needs_with_fix_hints() {
        let r = super::host_report();
        let names: Vec<&str> = r.checks.iter().map(|c| c.name.as_str()).collect();
        for n in [
            "cgroups",
            "user namespaces",
            "overlayfs",
            "seccomp",
            "openat2",
            "nftables",
        ] {
            assert!(names.contains(&n), "{n} missing from {names:?}");
        }
        for c in &r.checks {
            assert_eq!(c.ok, c.fix.is_empty(), "{c:?}");
            assert!(!c.detail.is_empty());
        }
        // This crate's own tests need these, so they hold wherever the tests pass.
        for n in ["user namespaces", "seccomp", "openat2"] {
            assert!(r.checks.iter().any(|c| c.name == n && c.ok), "{r:?}");
        }
    }
}
