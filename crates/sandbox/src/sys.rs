//! Thin, checked wrappers over the raw syscalls both the host side and the init need.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

pub fn cvt(r: libc::c_int) -> io::Result<libc::c_int> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cvt_l(r: libc::c_long) -> io::Result<libc::c_long> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

pub fn cstr(s: impl AsRef<std::ffi::OsStr>) -> io::Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(s.as_ref().as_bytes()).map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "NUL byte in a path or argument",
        )
    })
}

pub fn path_c(p: &Path) -> io::Result<CString> {
    cstr(p.as_os_str())
}

/// `pipe2(O_CLOEXEC)`: (read end, write end).
pub fn pipe() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array.
    cvt(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) })?;
    // SAFETY: the kernel just returned these two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

/// Duplicates `fd` to a number at least `min`, close-on-exec.
pub fn dup_above(fd: &impl AsRawFd, min: RawFd) -> io::Result<OwnedFd> {
    // SAFETY: plain fcntl on a descriptor we own.
    let n = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, min) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub fn set_nonblocking(fd: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: fcntl on a valid descriptor.
    unsafe {
        let fl = cvt(libc::fcntl(fd.as_raw_fd(), libc::F_GETFL))?;
        cvt(libc::fcntl(
            fd.as_raw_fd(),
            libc::F_SETFL,
            fl | libc::O_NONBLOCK,
        ))?;
    }
    Ok(())
}

pub fn pidfd_open(pid: i32) -> io::Result<OwnedFd> {
    // SAFETY: raw syscall with plain integer arguments.
    let fd = cvt_l(unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) })?;
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

pub fn pidfd_kill(pidfd: &OwnedFd, sig: i32) -> io::Result<()> {
    // SAFETY: raw syscall; a null siginfo is allowed.
    cvt_l(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    })?;
    Ok(())
}

/// Reaps `pid` if it is our exited child; no error when it is not our child.
pub fn try_reap(pid: i32) {
    let mut status = 0;
    // SAFETY: plain waitpid.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

/// Field 22 of `/proc/<pid>/stat` (start time in clock ticks): with the pid, it names one process
/// across pid reuse.
pub fn proc_starttime(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // comm may contain spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(19)?.parse().ok()
}

pub fn c_err(ctx: &str, e: io::Error) -> io::Error {
    io::Error::new(e.kind(), format!("{ctx}: {e}"))
}

/// A fork-like `clone` (own copy of the address space) into the namespaces of `flags`, with
/// `SIGCHLD` on exit: `Ok(0)` in the child, the child's pid in the parent.
///
/// # Safety
/// As for `fork`: in a multi-threaded process the child may only make async-signal-safe calls
/// until it execs or exits.
pub unsafe fn clone_fork(flags: libc::c_int) -> io::Result<i32> {
    let pid = libc::syscall(
        libc::SYS_clone,
        (flags | libc::SIGCHLD) as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    );
    if pid == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(pid as i32)
}

/// `struct open_how` of openat2 (libc's is non-exhaustive).
#[repr(C)]
pub struct OpenHow {
    pub flags: u64,
    pub mode: u64,
    pub resolve: u64,
}

/// Sends one message of `data` with `fds` attached (`SCM_RIGHTS`); never raises `SIGPIPE`.
pub fn send_with_fds(sock: RawFd, data: &[u8], fds: &[RawFd]) -> io::Result<()> {
    let mut iov = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let payload = std::mem::size_of_val(fds) as u32;
    // SAFETY: CMSG_SPACE is a pure computation.
    let space = unsafe { libc::CMSG_SPACE(payload) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = cbuf.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: the control buffer has room for one cmsghdr carrying `fds.len()` descriptors.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = libc::CMSG_LEN(payload) as _;
            let dst = libc::CMSG_DATA(cmsg).cast::<RawFd>();
            for (i, fd) in fds.iter().enumerate() {
                std::ptr::write_unaligned(dst.add(i), *fd);
            }
        }
    }
    loop {
        // SAFETY: sendmsg with a msghdr whose buffers outlive the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Receives one message into `buf` with up to `max_fds` descriptors (close-on-exec).
/// `(0, [])` is end of file. A message or descriptor list cut short is an error.
pub fn recv_with_fds(
    sock: RawFd,
    buf: &mut [u8],
    max_fds: usize,
) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: CMSG_SPACE is a pure computation.
    let space =
        unsafe { libc::CMSG_SPACE((max_fds * std::mem::size_of::<RawFd>()) as u32) } as usize;
    let mut cbuf = vec![0u64; space.div_ceil(8)];
    // SAFETY: an all-zero msghdr is valid; its pointers are set below to live buffers.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    let n = loop {
        // SAFETY: recvmsg into buffers that outlive the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = io::Error::last_os_error();
        if e.kind() != io::ErrorKind::Interrupted {
            return Err(e);
        }
    };
    let mut fds = Vec::new();
    // SAFETY: walking the control messages the kernel wrote; each SCM_RIGHTS payload holds
    // whole descriptors, which we take ownership of (also when we then fail, so none leak).
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let bytes = (*cmsg).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                let data = libc::CMSG_DATA(cmsg).cast::<RawFd>();
                for i in 0..bytes / std::mem::size_of::<RawFd>() {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    if msg.msg_flags & (libc::MSG_TRUNC | libc::MSG_CTRUNC) != 0 {
        return Err(io::Error::other("message or descriptors truncated"));
    }
    Ok((n, fds))
}

/// Brings `lo` of the calling thread's network namespace up.
pub fn loopback_up() -> io::Result<()> {
    // SAFETY: an ioctl on a fresh datagram socket with a zeroed, NUL-terminated ifreq.
    unsafe {
        let s = cvt(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut req: libc::ifreq = std::mem::zeroed();
        req.ifr_name[0] = b'l' as libc::c_char;
        req.ifr_name[1] = b'o' as libc::c_char;
        let r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req);
        if r == 0 {
            req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
            let r2 = libc::ioctl(s, libc::SIOCSIFFLAGS, &req);
            let e = io::Error::last_os_error();
            libc::close(s);
            if r2 != 0 {
                return Err(e);
            }
            return Ok(());
        }
        let e = io::Error::last_os_error();
        libc::close(s);
        Err(e)
    }
}

/// Marks every descriptor from `first` up close-on-exec. Async-signal-safe.
pub fn close_range_cloexec(first: RawFd) -> io::Result<()> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: raw close_range with plain integer arguments.
    cvt_l(unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    })
    .map(drop)
}

/// Writes one byte (a sync or release byte on a pipe).
pub fn write_byte(fd: &OwnedFd, b: u8) -> io::Result<()> {
    // SAFETY: writing one byte from a valid buffer.
    cvt_l(unsafe { libc::write(fd.as_raw_fd(), (&b as *const u8).cast(), 1) } as libc::c_long)
        .map(drop)
}

/// The sandbox's uids and gids 0..count map to host_uid..host_uid+count. setgroups stays
/// allowed (we map as a privileged parent) so the child can drop the server's supplementary
/// groups; inside, only gids of the sandbox's own range can be set.
pub fn write_maps(pid: i32, host_uid: u32, count: u32) -> io::Result<()> {
    let map = format!("0 {host_uid} {count}\n");
    std::fs::write(format!("/proc/{pid}/uid_map"), &map).map_err(|e| c_err("uid_map", e))?;
    std::fs::write(format!("/proc/{pid}/gid_map"), &map).map_err(|e| c_err("gid_map", e))?;
    Ok(())
}

/// `struct mount_attr` of mount_setattr.
#[repr(C)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;
pub const AT_RECURSIVE: libc::c_int = 0x8000;

/// Receives one descriptor sent with [`send_with_fds`] (and one byte).
pub fn recv_fd(sock: i32) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let (_, fds) = recv_with_fds(sock, &mut byte, 1)?;
    fds.into_iter()
        .next()
        .ok_or_else(|| io::Error::other("no descriptor received"))
}
