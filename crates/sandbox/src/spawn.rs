//! Runs in the server: launching an init on the exec path, one `clone` into fresh namespaces
//! from the (multi-threaded) server.
//!
//! The child runs only async-signal-safe code on data prepared before the clone: the steps of
//! [`crate::child::enter`] (which waits until the parent has written its uid/gid maps), then it
//! execs the init program. Forking a multi-threaded process without exec is only safe that way.
//!
//! Moving a process into its cgroups is the slowest step of a start on cgroup v1 (each move waits
//! for an RCU grace period), so the parent does it while the init execs and builds its root
//! filesystem; the init waits on [`crate::child::FD_CGROUP`] before it unshares its cgroup
//! namespace and runs anything of the sandbox's.

use crate::child::{ExecInit, InitFds};
use crate::sys::{self, cvt, cvt_l, write_byte, write_maps, MountAttr, AT_RECURSIVE};
use crate::sys::{MOUNT_ATTR_IDMAP, MOUNT_ATTR_RDONLY};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// The namespaces every sandbox's clone creates. Never `CLONE_NEWNET`: a network namespace
/// made with the user namespace would belong to it, and the sandbox's root would hold
/// `CAP_NET_RAW`/`CAP_NET_ADMIN` over it (`AF_PACKET` sockets, netfilter). Each start path
/// joins one made by the host's user namespace first (an egress slot, a zygote's ready one, or
/// one made for this start).
pub const CLONE_NAMESPACES: libc::c_int = libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

pub struct LaunchPlan<'a> {
    pub program: &'a CString,
    pub argv: Vec<CString>,
    pub listener: &'a OwnedFd,
    pub log: &'a OwnedFd,
    /// Join this network namespace; `None`: a fresh loopback-only one.
    pub netns: Option<&'a Path>,
    pub host_uid: u32,
    pub uid_count: u32,
    /// Image directory to hand to the init as an idmapped mount.
    pub image: Option<&'a Path>,
}

pub struct Launched {
    pub pid: i32,
    pub pidfd: OwnedFd,
    /// Read end of the status pipe: the init writes `OK\n` or `ERR <message>\n`.
    pub status: OwnedFd,
}

/// Clones the init into new namespaces; `setup(pid)` runs after the maps are written, while the
/// child execs and builds its root; the init waits for it (via [`crate::child::FD_CGROUP`])
/// before it runs anything of the sandbox's. `setup` puts the child into its cgroup.
pub fn launch(
    plan: &LaunchPlan<'_>,
    setup: impl FnOnce(i32) -> io::Result<()>,
) -> io::Result<Launched> {
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    let (sync_r, sync_w) = sys::pipe()?;
    let (status_r, status_w) = sys::pipe()?;
    let (cgroup_r, cgroup_w) = sys::pipe()?;
    // Sources must not sit on 0..=6, or a dup2 in the child would clobber one with another.
    let c_sync = sys::dup_above(&sync_r, 10)?;
    let c_status = sys::dup_above(&status_w, 10)?;
    let c_listener = sys::dup_above(plan.listener, 10)?;
    let c_log = sys::dup_above(plan.log, 10)?;
    let c_null = sys::dup_above(&devnull, 10)?;
    let c_cgroup = sys::dup_above(&cgroup_r, 10)?;
    drop((sync_r, status_w, devnull, cgroup_r));
    let image_sock = match plan.image {
        Some(_) => {
            let (ours, theirs) = std::os::unix::net::UnixDatagram::pair()?;
            Some((ours, sys::dup_above(&theirs, 10)?))
        }
        None => None,
    };

    let mut argv_ptrs: Vec<*const libc::c_char> = plan.argv.iter().map(|a| a.as_ptr()).collect();
    argv_ptrs.push(std::ptr::null());
    let env_path = c"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let envp: [*const libc::c_char; 2] = [env_path.as_ptr(), std::ptr::null()];
    let child = ExecInit {
        fds: InitFds {
            sync: c_sync.as_raw_fd(),
            status: c_status.as_raw_fd(),
            listener: c_listener.as_raw_fd(),
            log: c_log.as_raw_fd(),
            null: c_null.as_raw_fd(),
            cgroup: c_cgroup.as_raw_fd(),
            image: image_sock.as_ref().map_or(-1, |(_, t)| t.as_raw_fd()),
        },
        program: plan.program.as_ptr(),
        argv: argv_ptrs.as_ptr(),
        envp: envp.as_ptr(),
    };

    let slot = plan.netns.map(std::fs::File::open).transpose()?;
    let child = &child;
    // setns and unshare change the calling thread for good: do them on a throwaway thread,
    // whose network namespace the clone inherits.
    let pid = std::thread::scope(|s| {
        s.spawn(move || {
            match &slot {
                // SAFETY: setns on this thread with a valid nsfs descriptor.
                Some(ns) => cvt(unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) })?,
                // SAFETY: unshare of this thread's network namespace only.
                None => cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?,
            };
            if slot.is_none() {
                sys::loopback_up().map_err(|e| sys::c_err("bring up lo", e))?;
            }
            clone_child(CLONE_NAMESPACES, child)
        })
        .join()
        .map_err(|_| io::Error::other("clone thread panicked"))?
    })?;
    drop((c_sync, c_status, c_listener, c_log, c_null, c_cgroup));
    let image_sock = image_sock.map(|(ours, _theirs)| ours);

    let pidfd = sys::pidfd_open(pid);
    let result = pidfd.and_then(|pidfd| {
        write_maps(pid, plan.host_uid, plan.uid_count)?;
        if let (Some(image), Some(sock)) = (plan.image, &image_sock) {
            let tree =
                idmapped_tree(image, pid).map_err(|e| sys::c_err("idmapped image mount", e))?;
            send_fd(sock, &tree)?;
        }
        // Release the child: it may exec now, and waits for the cgroup byte below later.
        write_byte(&sync_w, b'g')?;
        setup(pid)?;
        write_byte(&cgroup_w, b'c')?;
        Ok(pidfd)
    });
    match result {
        Ok(pidfd) => Ok(Launched {
            pid,
            pidfd,
            status: status_r,
        }),
        Err(e) => {
            // SAFETY: killing and reaping our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                let mut st = 0;
                libc::waitpid(pid, &mut st, 0);
            }
            // The child already ran: if it failed on its own, its reason beats ours.
            Err(child_error(&status_r).unwrap_or(e))
        }
    }
}

/// The `ERR` line a dead child left on its status pipe, if any. Non-blocking: a sibling
/// launch's child may still hold a copy of the write end until it execs.
pub(crate) fn child_error(status: &OwnedFd) -> Option<io::Error> {
    sys::set_nonblocking(status).ok()?;
    let mut buf = [0u8; 512];
    // SAFETY: reading into a valid buffer.
    let n = unsafe { libc::read(status.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
    let text = String::from_utf8_lossy(buf.get(..usize::try_from(n).ok()?)?);
    let msg = text.lines().next()?.strip_prefix("ERR ")?;
    Some(io::Error::other(msg.to_string()))
}

fn clone_child(flags: libc::c_int, c: &ExecInit) -> io::Result<i32> {
    // SAFETY: a fork-like clone (no CLONE_VM, own copy of the address space). The child branch
    // below only calls async-signal-safe functions on data prepared before the clone, then
    // execs or exits; it never returns into Rust code of the parent.
    let pid = unsafe { sys::clone_fork(flags)? };
    if pid == 0 {
        // SAFETY: see above.
        unsafe { crate::child::exec_init(c) }
    }
    Ok(pid as i32)
}

/// A detached, read-only copy of the image tree whose owners are shifted into the sandbox's
/// user namespace: files of host uid 0 belong to the sandbox's root, so the overlay above it
/// can copy them up. The image itself is never written.
fn idmapped_tree(image: &Path, pid: i32) -> io::Result<OwnedFd> {
    use std::os::fd::FromRawFd;
    let p = sys::path_c(image)?;
    const OPEN_TREE_CLONE: libc::c_uint = 1;
    // SAFETY: raw open_tree with a valid path.
    let fd = cvt_l(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            p.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint | AT_RECURSIVE as libc::c_uint,
        )
    })?;
    // SAFETY: fresh descriptor.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let userns = std::fs::File::open(format!("/proc/{pid}/ns/user"))?;
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP | MOUNT_ATTR_RDONLY,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: raw mount_setattr on the detached tree with an attribute struct of the given size.
    cvt_l(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH | AT_RECURSIVE,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    })?;
    Ok(tree)
}

fn send_fd(sock: &std::os::unix::net::UnixDatagram, fd: &OwnedFd) -> io::Result<()> {
    sys::send_with_fds(sock.as_raw_fd(), &[0], &[fd.as_raw_fd()])
}
