//! Launching the init: one `clone` into fresh namespaces from the (multi-threaded) server.
//!
//! The child runs only async-signal-safe code on data prepared before the clone: the steps of
//! [`crate::child::enter`] (which waits until the parent has written its uid/gid maps), then it
//! execs the init program. Forking a multi-threaded process without exec is only safe that way.
//!
//! Moving a process into its cgroups is the slowest step of a start on cgroup v1 (each move waits
//! for an RCU grace period), so the parent does it while the init execs and builds its root
//! filesystem; the init waits on [`FD_CGROUP`] before it unshares its cgroup namespace and runs
//! anything of the sandbox's.

use crate::child::InitFds;
use crate::sys::{self, cvt, cvt_l};
use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

/// Fds of the init, fixed so the init needs no arguments to find them.
pub const FD_LISTENER: i32 = 3;
pub const FD_STATUS: i32 = 4;
/// Socket on which an image sandbox's init receives its idmapped image mount.
pub const FD_IMAGE: i32 = 5;
/// Pipe on which the init receives one byte once it sits in its cgroup (EOF: setup failed).
pub const FD_CGROUP: i32 = 6;

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
/// child execs and builds its root; the init waits for it (via [`FD_CGROUP`]) before it runs
/// anything of the sandbox's. `setup` puts the child into its cgroup.
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
    let child = ChildFds {
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

pub(crate) fn write_byte(fd: &OwnedFd, b: u8) -> io::Result<()> {
    // SAFETY: writing one byte from a valid buffer.
    cvt_l(unsafe { libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1) } as libc::c_long)
        .map(drop)
}

/// The init's side of [`FD_CGROUP`]: returns once the runtime has put it into its cgroup.
pub fn wait_for_cgroup() -> io::Result<()> {
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

/// What the exec path's child needs: the init's descriptors, and what to exec.
struct ChildFds {
    fds: InitFds,
    program: *const libc::c_char,
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
}

// SAFETY: the raw pointers point into buffers the launching function keeps alive until the
// clone returned; the helper thread only reads them.
unsafe impl Sync for ChildFds {}
unsafe impl Send for ChildFds {}

fn clone_child(flags: libc::c_int, c: &ChildFds) -> io::Result<i32> {
    // SAFETY: a fork-like clone (no CLONE_VM, own copy of the address space). The child branch
    // below only calls async-signal-safe functions on data prepared before the clone, then
    // execs or exits; it never returns into Rust code of the parent.
    let pid = unsafe { sys::clone_fork(flags)? };
    if pid == 0 {
        // SAFETY: see above.
        unsafe { child_exec(c) }
    }
    Ok(pid as i32)
}

unsafe fn child_exec(c: &ChildFds) -> ! {
    crate::child::enter(&c.fds);
    libc::execve(c.program, c.argv, c.envp);
    let msg = b"ERR cannot execute the init program\n";
    libc::write(FD_STATUS, msg.as_ptr().cast(), msg.len());
    libc::_exit(127);
}

/// The sandbox's uids and gids 0..count map to host_uid..host_uid+count. setgroups stays
/// allowed (we map as a privileged parent) so the child can drop the server's supplementary
/// groups; inside, only gids of the sandbox's own range can be set.
pub(crate) fn write_maps(pid: i32, host_uid: u32, count: u32) -> io::Result<()> {
    let map = format!("0 {host_uid} {count}\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(|e| sys::c_err("uid_map", e))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(|e| sys::c_err("gid_map", e))?;
    Ok(())
}

#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const AT_RECURSIVE: libc::c_int = 0x8000;

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

/// The init's side of [`send_fd`].
pub fn recv_fd(sock: i32) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let (_, fds) = sys::recv_with_fds(sock, &mut byte, 1)?;
    fds.into_iter()
        .next()
        .ok_or_else(|| io::Error::other("no descriptor received"))
}
