//! Locking the init down, the last step of its setup (see [`super::setup::run`]): nothing of the
//! host's left open, rlimits, capabilities, no_new_privs, seccomp, non-dumpable. Everything the
//! sandbox runs inherits the result.

use super::InitConfig;
use crate::seccomp;
use crate::sys::cvt;
use std::io;

type R = Result<(), String>;

fn ctx<T>(what: impl std::fmt::Display, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

/// Docker's default capability set (no CAP_SYS_ADMIN, CAP_SYS_PTRACE, CAP_NET_ADMIN, ...).
const KEEP_CAPS: &[u32] = &[
    0,  // CHOWN
    1,  // DAC_OVERRIDE
    3,  // FOWNER
    4,  // FSETID
    5,  // KILL
    6,  // SETGID
    7,  // SETUID
    8,  // SETPCAP
    10, // NET_BIND_SERVICE
    13, // NET_RAW
    18, // SYS_CHROOT
    27, // MKNOD
    29, // AUDIT_WRITE
    31, // SETFCAP
];

/// The lockdown, in order (step 12 of [`super::setup::run`]).
pub fn apply(cfg: &InitConfig, filters: &seccomp::Filters) -> R {
    // The init keeps no host file open past this point: stderr was the host log.
    // SAFETY: plain fd and prctl calls.
    unsafe {
        let null = c"/dev/null";
        let fd = libc::open(null.as_ptr(), libc::O_RDWR | libc::O_CLOEXEC);
        if fd >= 0 {
            libc::dup2(fd, 2);
            libc::close(fd);
        }
    }

    let nofile = cfg.limits.nofile.max(64);
    set_rlimit(libc::RLIMIT_CORE, 0)?;
    set_rlimit(libc::RLIMIT_NOFILE, nofile)?;

    let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse::<u32>().ok())
        .unwrap_or(40);
    for cap in 0..=last_cap {
        if !KEEP_CAPS.contains(&cap) {
            // SAFETY: prctl with integer arguments.
            let r = unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) };
            ctx(format!("drop capability {cap}"), cvt(r))?;
        }
    }
    // SAFETY: prctl with integer arguments.
    unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    let mut mask = 0u64;
    for c in KEEP_CAPS {
        mask |= 1 << c;
    }
    capset(mask)?;
    // SAFETY: prctl with integer arguments.
    ctx(
        "no_new_privs",
        cvt(unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) }),
    )?;
    seccomp::apply(filters).map_err(|e| format!("seccomp: {e}"))?;
    // Non-dumpable, last (credential changes reset it): /proc/1 (fds, memory, environ) is
    // closed to processes without CAP_SYS_PTRACE, i.e. to everything in the sandbox.
    // SAFETY: prctl with integer arguments.
    ctx(
        "dumpable",
        cvt(unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) }),
    )?;
    Ok(())
}

fn set_rlimit(res: libc::__rlimit_resource_t, want: u64) -> R {
    let mut cur = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: valid rlimit pointers.
    unsafe {
        ctx("getrlimit", cvt(libc::getrlimit(res, &mut cur)))?;
        // Only lowering is possible without CAP_SYS_RESOURCE in the initial namespace.
        let v = want.min(cur.rlim_max);
        let new = libc::rlimit {
            rlim_cur: v,
            rlim_max: v,
        };
        ctx("setrlimit", cvt(libc::setrlimit(res, &new)))?;
    }
    Ok(())
}

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}
#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

fn capset(mask: u64) -> R {
    let hdr = CapHeader {
        version: 0x2008_0522, // _LINUX_CAPABILITY_VERSION_3
        pid: 0,
    };
    let lo = mask as u32;
    let hi = (mask >> 32) as u32;
    let data = [
        CapData {
            effective: lo,
            permitted: lo,
            inheritable: 0,
        },
        CapData {
            effective: hi,
            permitted: hi,
            inheritable: 0,
        },
    ];
    // SAFETY: capset with a v3 header and two data elements.
    let r = unsafe { libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr()) };
    if r == -1 {
        return Err(format!("capset: {}", io::Error::last_os_error()));
    }
    Ok(())
}
