//! The init's setup, in order: everything between the clone that made a sandbox's namespaces
//! and the init serving its control socket, for both start paths, as one sequence to read top
//! to bottom. `docs/security.md` ("Setup order") lists the same steps with the host side's.

use super::{lockdown, rootfs, InitConfig};
use crate::child::FD_CGROUP;
use crate::seccomp;
use crate::sys::cvt;
use std::io;

type R = Result<(), String>;

/// Steps 7 to 12; steps 1 to 6 ([`crate::child::enter`]) ran in this process before it became
/// the init (and, on the exec path, before its exec).
pub fn run(cfg: &InitConfig) -> R {
    // 7. The root filesystem: mounts private, a scratch root with the host's at /oldroot, the
    //    new root (system directories and /etc read-only, size-limited writable areas, /dev,
    //    /proc), pivot_root into it and the host's tree detached.
    rootfs::build(cfg)?;
    // 8. The sandbox's hostname (its own uts namespace).
    if !cfg.hostname.is_empty() {
        // SAFETY: valid buffer and length.
        let r = unsafe { libc::sethostname(cfg.hostname.as_ptr().cast(), cfg.hostname.len()) };
        cvt(r).map_err(|e| format!("sethostname: {e}"))?;
    }
    // 9. The seccomp filters: compiled by the zygote ahead of time, or here (exec'd init) while
    //    the runtime may still be busy with our cgroup.
    let filters = seccomp::compiled().map_err(|e| format!("seccomp: {e}"))?;
    // 10. Wait until the runtime has put us into our cgroup and set our OOM adjustment: that
    //     must be done before the cgroup namespace is rooted there and before anything of the
    //     sandbox's runs.
    wait_for_cgroup().map_err(|e| format!("wait for the cgroup: {e}"))?;
    // 11. Our cgroup becomes the root the sandbox sees.
    // SAFETY: unshare of the cgroup namespace.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWCGROUP) })
        .map_err(|e| format!("unshare cgroup ns: {e}"))?;
    // 12. Lock down: stderr off the host's log, rlimits, capabilities, no_new_privs, seccomp,
    //     non-dumpable. Then the init reports OK and serves.
    lockdown::apply(cfg, &filters)
}

/// The init's side of [`FD_CGROUP`]: returns once the runtime has put it into its cgroup.
fn wait_for_cgroup() -> io::Result<()> {
    let mut b = 0u8;
    let r = loop {
        // SAFETY: reading one byte into a valid buffer from our inherited pipe.
        let n = unsafe { libc::read(FD_CGROUP, (&mut b as *mut u8).cast(), 1) };
        if n == -1 && io::Error::last_os_error().kind() == io::ErrorKind::Interrupted {
            continue;
        }
        break match n {
            1 => Ok(()),
            -1 => Err(io::Error::last_os_error()),
            _ => Err(io::Error::other(
                "the runtime gave up before the cgroup was ready",
            )),
        };
    };
    // SAFETY: closing our inherited pipe end; nothing else uses it.
    unsafe { libc::close(FD_CGROUP) };
    r
}
