//! Runs in the zygote: its loop (one start per message), the ready network namespaces, the
//! clone of each init, and what the forked child does before it becomes the init.

use super::READY_NETNS_ENV;
use super::{Reply, Request, FD_ZYGOTE, IDLE_BEFORE_REFILL_MS, MAX_READY_NETNS, MAX_REQUEST};
use crate::spawn;
use crate::sys::{self, cvt};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};

/// The zygote's loop: one start per message until the runtime's end closes.
pub fn main() -> ! {
    // SAFETY: children are reaped by the kernel; nothing here waits for them.
    unsafe { libc::signal(libc::SIGCHLD, libc::SIG_IGN) };
    // Forked inits inherit these dispositions, and the note of them their commands' children use.
    crate::init::command::note_signal_dispositions();
    let own_netns =
        match std::fs::File::open("/proc/self/ns/net").and_then(|f| sys::dup_above(&f, 10)) {
            Ok(f) => f,
            Err(_) => std::process::exit(2),
        };
    // Every init's stdin and stdout, above 10 like the other sources of its descriptors.
    let null = match std::fs::File::open("/dev/null").and_then(|f| sys::dup_above(&f, 10)) {
        Ok(f) => f,
        Err(_) => std::process::exit(2),
    };
    let etc_template = crate::init::rootfs::prepare_etc_template().is_ok();
    // A failure here is reported by each init, which then compiles the filters itself.
    let _ = crate::seccomp::precompile();
    let ready_target = std::env::var(READY_NETNS_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(crate::DEFAULT_READY_NETNS, |n| n.min(MAX_READY_NETNS));
    let mut ready: Vec<OwnedFd> = Vec::new();
    let mut buf = vec![0u8; MAX_REQUEST];
    loop {
        // Refilled between requests, one at a time, so a waiting request is not held up.
        while ready.len() < ready_target && !request_waiting(IDLE_BEFORE_REFILL_MS) {
            match loopback_netns(&own_netns) {
                Ok(ns) => ready.push(ns),
                Err(_) => break,
            }
        }
        let (n, fds) = match sys::recv_with_fds(FD_ZYGOTE, &mut buf, 5) {
            Ok((0, _)) => std::process::exit(0),
            Ok(r) => r,
            Err(_) => std::process::exit(1),
        };
        let (reply, pidfd, fatal) =
            match start(&buf[..n], fds, &own_netns, &null, &mut ready, etc_template) {
                Ok((pid, pidfd)) => (Reply::Started { pid }, Some(pidfd), false),
                Err((message, fatal)) => (Reply::Failed { message }, None, fatal),
            };
        let Ok(data) = serde_json::to_vec(&reply) else {
            std::process::exit(1)
        };
        let attached: Vec<RawFd> = pidfd.iter().map(|f| f.as_raw_fd()).collect();
        if sys::send_with_fds(FD_ZYGOTE, &data, &attached).is_err() || fatal {
            std::process::exit(1);
        }
    }
}

/// Error: the message, and whether the zygote itself is no longer usable.
type StartError = (String, bool);

/// Whether the runtime's next request arrives within `timeout_ms`.
fn request_waiting(timeout_ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd: FD_ZYGOTE,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll of one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) != 0 }
}

/// A fresh network namespace with `lo` up; the zygote itself stays in `own`.
fn loopback_netns(own: &OwnedFd) -> io::Result<OwnedFd> {
    // SAFETY: unshare of this (only) thread's network namespace.
    cvt(unsafe { libc::unshare(libc::CLONE_NEWNET) })?;
    let ns = sys::loopback_up().and_then(|()| {
        std::fs::File::open("/proc/thread-self/ns/net").and_then(|f| sys::dup_above(&f, 10))
    });
    // SAFETY: back to our own network namespace.
    if unsafe { libc::setns(own.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        // Every later sandbox would share this namespace: better no zygote at all.
        std::process::exit(1);
    }
    ns
}

fn start(
    data: &[u8],
    fds: Vec<OwnedFd>,
    own_netns: &OwnedFd,
    null: &OwnedFd,
    ready: &mut Vec<OwnedFd>,
    etc_template: bool,
) -> Result<(i32, OwnedFd), StartError> {
    let soft = |m: String| (m, false);
    let mut req: Request =
        serde_json::from_slice(data).map_err(|e| soft(format!("zygote request: {e}")))?;
    req.config.etc_template = etc_template;
    if fds.len() != 4 + usize::from(req.netns) {
        return Err(soft("zygote request: wrong number of descriptors".into()));
    }
    // Above 10, so the child's dup2s into 0..=6 cannot clobber one source with another.
    let fds = fds
        .iter()
        .map(|f| sys::dup_above(f, 10))
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| soft(format!("zygote: {e}")))?;
    let (sync_r, sync_w) = sys::pipe().map_err(|e| soft(format!("zygote: {e}")))?;

    // The slot's namespace, else a ready loopback-only one, else one made now. Never one the
    // clone makes: that one would belong to the sandbox's user namespace, whose root would then
    // hold CAP_NET_RAW and CAP_NET_ADMIN over it.
    let made = if req.netns {
        None
    } else {
        Some(match ready.pop() {
            Some(ns) => ns,
            None => {
                loopback_netns(own_netns).map_err(|e| soft(format!("network namespace: {e}")))?
            }
        })
    };
    let Some(join) = fds.get(4).or(made.as_ref()).map(|f| f.as_raw_fd()) else {
        return Err(soft("zygote: no network namespace".into()));
    };
    // SAFETY: setns of this (only) thread into the sandbox's network namespace.
    cvt(unsafe { libc::setns(join, libc::CLONE_NEWNET) })
        .map_err(|e| soft(format!("join network namespace: {e}")))?;
    // SAFETY: a fork-like clone of this single-threaded process; the child never returns.
    let cloned = unsafe { sys::clone_fork(spawn::CLONE_NAMESPACES) };
    if let Ok(0) = cloned {
        drop(sync_w);
        child(req, &fds, null, &sync_r);
    }
    drop(made);
    // SAFETY: back to our own network namespace for the next start.
    if unsafe { libc::setns(own_netns.as_raw_fd(), libc::CLONE_NEWNET) } == -1 {
        let e = io::Error::last_os_error();
        if let Ok(pid) = cloned {
            // SAFETY: killing our own child.
            unsafe { libc::kill(pid, libc::SIGKILL) };
        }
        return Err((format!("zygote: leave network namespace: {e}"), true));
    }
    let pid = cloned.map_err(|e| soft(format!("clone: {e}")))?;
    let prepared = sys::pidfd_open(pid).and_then(|pidfd| {
        sys::write_maps(pid, req.host_uid, req.uid_count)?;
        sys::write_byte(&sync_w, b'g')?;
        Ok(pidfd)
    });
    prepared.map(|pidfd| (pid, pidfd)).map_err(|e| {
        // SAFETY: killing our own child, which waits for the byte it will never get.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        soft(format!("zygote: {e}"))
    })
}

/// The forked child: the steps every init's child takes ([`crate::child::enter`]), then the init.
fn child(req: Request, fds: &[OwnedFd], null: &OwnedFd, sync: &OwnedFd) -> ! {
    // Every source sits above 10 (see `start` and `main`).
    let init_fds = crate::child::InitFds {
        sync: sync.as_raw_fd(),
        listener: fds[0].as_raw_fd(),
        log: fds[1].as_raw_fd(),
        status: fds[2].as_raw_fd(),
        cgroup: fds[3].as_raw_fd(),
        null: null.as_raw_fd(),
        image: -1,
    };
    // SAFETY: the child of a fork-like clone of this single-threaded process.
    unsafe { crate::child::enter(&init_fds) };
    crate::init::run(req.config)
}
