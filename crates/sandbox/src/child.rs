//! Runs in the child of the clone that made a sandbox's namespaces, before the init proper:
//! the first steps of every sandbox, one sequence for both start paths. On the exec path
//! ([`crate::spawn`]) the child is a fork of the multi-threaded server and execs the init
//! program next; on the zygote path ([`crate::zygote`]) it is a fork of the zygote and calls
//! [`crate::init::run`] next. The rest of the order is in [`crate::init::setup::run`].
//!
//! Async-signal-safe throughout (raw syscalls on data prepared before the clone, no allocation,
//! no locks), which the exec path needs: only such calls are safe in the fork of a
//! multi-threaded process until it execs.

use std::os::fd::RawFd;

/// Fds of the init, fixed so the init needs no arguments to find them.
pub const FD_LISTENER: i32 = 3;
pub const FD_STATUS: i32 = 4;
/// Socket on which an image sandbox's init receives its idmapped image mount.
pub const FD_IMAGE: i32 = 5;
/// Pipe on which the init receives one byte once it sits in its cgroup (EOF: setup failed).
pub const FD_CGROUP: i32 = 6;

/// Where the child finds what its init needs. Every descriptor but `sync` is placed onto the
/// init's fixed numbers, so all of them must sit above those (the launchers dup them above 10):
/// placing one cannot then clobber another.
#[derive(Clone, Copy)]
pub struct InitFds {
    /// Read end: one byte once the parent has written the uid/gid maps; EOF: it gave up.
    pub sync: RawFd,
    /// Write end of the status pipe (becomes [`FD_STATUS`]).
    pub status: RawFd,
    /// The bound control socket (becomes [`FD_LISTENER`]).
    pub listener: RawFd,
    /// The init's log (becomes stderr).
    pub log: RawFd,
    /// `/dev/null` (becomes stdin and stdout).
    pub null: RawFd,
    /// Read end of the cgroup pipe (becomes [`FD_CGROUP`]).
    pub cgroup: RawFd,
    /// Socket for the idmapped image mount (becomes [`FD_IMAGE`]); `-1` without an image.
    pub image: RawFd,
}

/// The sequence, in order. Returns as the sandbox's root, leader of a session of its own,
/// holding exactly the init's descriptors; a failed step is reported on the status pipe and
/// ends the process.
///
/// # Safety
/// Only in the child of a fork-like clone, with `fds` as described on [`InitFds`].
pub unsafe fn enter(fds: &InitFds) {
    // 1. Wait until the parent has written our uid/gid maps (nothing to report if it gave up).
    if !wait_for_release(fds.sync) {
        libc::_exit(1);
    }
    // 2. Leave the server's session: a process that shares it shares its controlling terminal,
    //    which `/dev/tty` opens and `TIOCSTI` pushes keystrokes into (CVE-2017-5226). As leader
    //    of a session of its own the init has no terminal, and never gets one: it opens nothing
    //    that could be one without O_NOCTTY.
    check(
        fds.status,
        libc::syscall(libc::SYS_setsid) != -1,
        b"ERR cannot leave the server's session\n",
    );
    // 3. Become the sandbox's root (host uid `host_uid`) for real: until now we ran as the
    //    launcher's host uid, which the map leaves unmapped. Its supplementary groups (host gid
    //    0 among them) go first. Raw syscalls: glibc's wrappers would try to synchronise
    //    threads this copy of a multi-threaded process does not have.
    check(
        fds.status,
        become_sandbox_root(),
        b"ERR cannot switch to the sandbox's root user\n",
    );
    // 4. Put the init's descriptors where it expects them.
    check(
        fds.status,
        place_descriptors(fds),
        b"ERR cannot set up the init's descriptors\n",
    );
    // 5. Close everything else of the launcher's: descriptors it leaked without close-on-exec,
    //    the zygote's socket, other sandboxes' leftovers.
    check(
        FD_STATUS,
        close_everything_else(fds.image >= 0),
        b"ERR cannot close the launcher's descriptors\n",
    );
    // 6. SIGCHLD back to its default (the zygote ignores it; ignored signals survive exec).
    libc::signal(libc::SIGCHLD, libc::SIG_DFL);
}

/// Reports `line` on `status` and exits unless `ok`.
unsafe fn check(status: RawFd, ok: bool, line: &[u8]) {
    if !ok {
        libc::write(status, line.as_ptr().cast(), line.len());
        libc::_exit(125);
    }
}

unsafe fn wait_for_release(sync: RawFd) -> bool {
    let mut b = 0u8;
    loop {
        let n = libc::read(sync, (&mut b as *mut u8).cast(), 1);
        if n == 1 {
            return true;
        }
        if n == -1 && *libc::__errno_location() == libc::EINTR {
            continue;
        }
        return false;
    }
}

unsafe fn become_sandbox_root() -> bool {
    libc::syscall(libc::SYS_setgroups, 0usize, std::ptr::null::<libc::gid_t>()) != -1
        && libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32) != -1
        && libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32) != -1
}

unsafe fn place_descriptors(fds: &InitFds) -> bool {
    libc::dup2(fds.null, 0) != -1
        && libc::dup2(fds.null, 1) != -1
        && libc::dup2(fds.log, 2) != -1
        && libc::dup2(fds.listener, FD_LISTENER) != -1
        && libc::dup2(fds.status, FD_STATUS) != -1
        && libc::dup2(fds.cgroup, FD_CGROUP) != -1
        && (fds.image < 0 || libc::dup2(fds.image, FD_IMAGE) != -1)
}

unsafe fn close_everything_else(image: bool) -> bool {
    if !image {
        libc::close(FD_IMAGE);
    }
    libc::syscall(libc::SYS_close_range, FD_CGROUP as u32 + 1, u32::MAX, 0u32) != -1
}

/// What the exec path's child needs: the init's descriptors, and what to exec.
pub struct ExecInit {
    pub fds: InitFds,
    pub program: *const libc::c_char,
    pub argv: *const *const libc::c_char,
    pub envp: *const *const libc::c_char,
}

// SAFETY: the raw pointers point into buffers the launching function keeps alive until the
// clone returned; the helper thread only reads them.
unsafe impl Sync for ExecInit {}
unsafe impl Send for ExecInit {}

/// The exec path's child: the steps of [`enter`], then the init program.
///
/// # Safety
/// As for [`enter`]; the pointers of `c` valid.
pub unsafe fn exec_init(c: &ExecInit) -> ! {
    enter(&c.fds);
    libc::execve(c.program, c.argv, c.envp);
    let msg = b"ERR cannot execute the init program\n";
    libc::write(FD_STATUS, msg.as_ptr().cast(), msg.len());
    libc::_exit(127);
}
