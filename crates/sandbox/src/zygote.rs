//! The zygote: a single-threaded helper, exec'd once per runtime, that forks sandbox inits.
//!
//! Exec'ing the init binary for every sandbox costs about a millisecond of CPU before the init
//! runs a line of its own (mapping and relocating a large position-independent binary, the
//! dynamic loader, page faults). The zygote pays that once; each sandbox is a `clone` of it
//! into fresh namespaces that goes straight to [`crate::init::run`]. Forking without exec is
//! only safe from a single-threaded process, which is why the zygote is a process of its own
//! and not the (multi-threaded) server.
//!
//! The runtime talks to it over a `SOCK_SEQPACKET` pair: one message per start carrying the
//! init's configuration and its descriptors, one reply with the child's pidfd. The zygote exits
//! when the runtime's end closes (also when the server is SIGKILLed). Its children are reaped by
//! the kernel (`SIGCHLD` ignored); the runtime follows them through their pidfds. When the
//! zygote dies or stops answering, the runtime kills and reaps it, starts a new one, and falls
//! back to the exec path of [`crate::spawn`] while none can be started.
//!
//! Creating a network namespace is the most expensive part of the `clone` (registering `lo` and
//! the per-namespace sysctl tables), so the zygote keeps a few loopback-only namespaces ready and
//! refills them between requests, like the egress slot pool does. Each is used by one sandbox
//! only. They belong to the host's user namespace, as egress slots do: the sandbox's root has no
//! `CAP_NET_ADMIN` or `CAP_NET_RAW` over its own network, which also keeps netfilter and the
//! other network configuration interfaces out of its reach.

use crate::init::InitConfig;
use crate::spawn::{self, Launched};
use crate::sys::{self, cvt};
use serde::{Deserialize, Serialize};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Last argument that turns the init program into a zygote.
pub const ZYGOTE_ARG: &str = "--sandpool-zygote";
/// The zygote's end of its socket.
const FD_ZYGOTE: RawFd = 3;
/// A start request is the init configuration (environment ≤ 64 KiB) plus a little.
const MAX_REQUEST: usize = 256 * 1024;
/// A zygote that takes longer than this to answer is considered hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed zygote start, the exec path is used this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Most loopback-only network namespaces a zygote keeps ready (each holds a little kernel
/// memory: its loopback device, sysctl tables, sockets' hash tables).
pub const MAX_READY_NETNS: usize = 256;
/// How the runtime tells the zygote its [`crate::RuntimeConfig::ready_netns`].
const READY_NETNS_ENV: &str = "SANDPOOL_READY_NETNS";
/// How long the zygote must have been idle before it makes a namespace: right after a start it
/// would compete for the CPU with the init it just forked.
const IDLE_BEFORE_REFILL_MS: i32 = 3;

#[derive(Serialize, Deserialize)]
struct Request {
    host_uid: u32,
    uid_count: u32,
    /// A network namespace descriptor follows the four fixed ones.
    netns: bool,
    config: InitConfig,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// The child's pidfd is attached.
    Started {
        pid: i32,
    },
    Failed {
        message: String,
    },
}

// ---------------------------------------------------------------------------------------------
// Host side.

/// The runtime's handle on its zygote, started on first use.
pub(crate) struct Zygote {
    program: PathBuf,
    args: Vec<OsString>,
    ready_netns: usize,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    proc_: Option<Proc>,
    retry_at: Option<Instant>,
}

struct Proc {
    sock: OwnedFd,
    pid: i32,
    pidfd: OwnedFd,
}

impl Drop for Proc {
    fn drop(&mut self) {
        // Closing the socket would end it too; the kill makes a hung one go as well.
        let _ = sys::pidfd_kill(&self.pidfd, libc::SIGKILL);
        let mut status = 0;
        // SAFETY: reaping our own child, which was just killed.
        unsafe { libc::waitpid(self.pid, &mut status, 0) };
    }
}

/// What a start needs from the runtime (the zygote side gets copies of the descriptors).
pub(crate) struct ZygotePlan<'a> {
    pub config: &'a InitConfig,
    pub listener: &'a OwnedFd,
    pub log: &'a OwnedFd,
    pub netns: Option<&'a Path>,
    pub host_uid: u32,
    pub uid_count: u32,
}

impl Zygote {
    pub fn new(program: &Path, init_args: &[OsString], ready_netns: usize) -> Zygote {
        let mut args = init_args.to_vec();
        args.push(ZYGOTE_ARG.into());
        Zygote {
            program: program.to_path_buf(),
            args,
            ready_netns: ready_netns.min(MAX_READY_NETNS),
            state: Mutex::new(State::default()),
        }
    }

    /// Pid of the running zygote, if one runs.
    pub fn pid(&self) -> Option<i32> {
        crate::runtime::lock(&self.state)
            .proc_
            .as_ref()
            .map(|p| p.pid)
    }

    /// Forks an init through the zygote, with the same contract as [`spawn::launch`].
    /// `None`: no zygote could be used; the caller takes the exec path.
    pub fn launch(
        &self,
        plan: &ZygotePlan<'_>,
        setup: impl FnOnce(i32) -> io::Result<()>,
    ) -> Option<io::Result<Launched>> {
        let result = (|| {
            let (status_r, status_w) = sys::pipe()?;
            let (cgroup_r, cgroup_w) = sys::pipe()?;
            let netns = plan.netns.map(std::fs::File::open).transpose()?;
            let request = serde_json::to_vec(&Request {
                host_uid: plan.host_uid,
                uid_count: plan.uid_count,
                netns: netns.is_some(),
                config: plan.config.clone(),
            })
            .map_err(io::Error::other)?;
            let mut fds = vec![
                plan.listener.as_raw_fd(),
                plan.log.as_raw_fd(),
                status_w.as_raw_fd(),
                cgroup_r.as_raw_fd(),
            ];
            fds.extend(netns.as_ref().map(|f| f.as_raw_fd()));
            Ok((
                request,
                fds,
                status_r,
                cgroup_w,
                (status_w, cgroup_r, netns),
            ))
        })();
        let (request, fds, status_r, cgroup_w, theirs) = match result {
            Ok(r) => r,
            Err(e) => return Some(Err(e)),
        };
        let (pid, pidfd) = match self.call(&request, &fds)? {
            Ok(started) => started,
            Err(e) => return Some(Err(e)),
        };
        // Only the child may hold these now, so a dead child means EOF on the status pipe.
        drop(theirs);
        let released = setup(pid).and_then(|()| spawn::write_byte(&cgroup_w, b'c'));
        Some(match released {
            Ok(()) => Ok(Launched {
                pid,
                pidfd,
                status: status_r,
            }),
            Err(e) => {
                let _ = sys::pidfd_kill(&pidfd, libc::SIGKILL);
                Err(spawn::child_error(&status_r).unwrap_or(e))
            }
        })
    }

    /// One request to the zygote, restarting it once if it is gone or broken. Outer `None`: no
    /// zygote; inner error: the zygote could not start this sandbox.
    fn call(&self, request: &[u8], fds: &[RawFd]) -> Option<io::Result<(i32, OwnedFd)>> {
        let mut state = crate::runtime::lock(&self.state);
        for _ in 0..2 {
            if state.proc_.is_none() {
                if state.retry_at.is_some_and(|t| Instant::now() < t) {
                    return None;
                }
                match self.spawn() {
                    Ok(p) => {
                        state.proc_ = Some(p);
                        state.retry_at = None;
                    }
                    Err(_) => {
                        state.retry_at = Some(Instant::now() + RETRY_AFTER);
                        return None;
                    }
                }
            }
            let proc_ = state.proc_.as_ref()?;
            match exchange(proc_, request, fds) {
                Ok(r) => return Some(r),
                // Dead or hung: kill and reap it (Drop), then start a new one.
                Err(_) => state.proc_ = None,
            }
        }
        None
    }

    fn spawn(&self) -> io::Result<Proc> {
        let (ours, theirs) = seqpacket_pair()?;
        let timeout = libc::timeval {
            tv_sec: REPLY_TIMEOUT.as_secs() as libc::time_t,
            tv_usec: 0,
        };
        // SAFETY: setsockopt with a timeval of the declared size.
        cvt(unsafe {
            libc::setsockopt(
                ours.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        })?;
        let theirs_fd = theirs.as_raw_fd();
        let mut cmd = std::process::Command::new(&self.program);
        cmd.args(&self.args)
            .env_clear()
            .env(
                "PATH",
                "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            )
            .env(READY_NETNS_ENV, self.ready_netns.to_string())
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid, dup2 and close_range are async-signal-safe; dup2 also clears
        // close-on-exec on the new fd. Its own session: the zygote must not share the server's
        // terminal (its children leave its session too). Above its socket, every descriptor
        // closes on exec, also ones the server leaked without close-on-exec (the flag rather
        // than closing: std's own exec-error pipe is among them).
        unsafe {
            cmd.pre_exec(move || {
                cvt(libc::setsid())?;
                cvt(libc::dup2(theirs_fd, FD_ZYGOTE))?;
                sys::close_range_cloexec(FD_ZYGOTE + 1)
            });
        }
        let child = cmd.spawn()?;
        drop(theirs);
        let pid = child.id() as i32;
        // Not reaped before we do it, so the pid cannot have been reused.
        let pidfd = sys::pidfd_open(pid)?;
        Ok(Proc {
            sock: ours,
            pid,
            pidfd,
        })
    }
}

fn exchange(p: &Proc, request: &[u8], fds: &[RawFd]) -> io::Result<io::Result<(i32, OwnedFd)>> {
    sys::send_with_fds(p.sock.as_raw_fd(), request, fds)?;
    let mut buf = vec![0u8; 4096];
    let (n, got) = sys::recv_with_fds(p.sock.as_raw_fd(), &mut buf, 1)?;
    if n == 0 {
        return Err(io::Error::other("the zygote went away"));
    }
    let reply: Reply = serde_json::from_slice(&buf[..n]).map_err(io::Error::other)?;
    Ok(match (reply, got.into_iter().next()) {
        (Reply::Started { pid }, Some(pidfd)) => Ok((pid, pidfd)),
        (Reply::Started { .. }, None) => return Err(io::Error::other("zygote sent no pidfd")),
        (Reply::Failed { message }, _) => Err(io::Error::other(message)),
    })
}

fn seqpacket_pair() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: fds is a valid two-element array.
    cvt(unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    })?;
    // SAFETY: the kernel just returned these two fresh descriptors.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

// ---------------------------------------------------------------------------------------------
// Zygote side.

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
        spawn::write_maps(pid, req.host_uid, req.uid_count)?;
        spawn::write_byte(&sync_w, b'g')?;
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
