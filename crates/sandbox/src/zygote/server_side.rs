//! Runs in the server: the runtime's handle on its zygote (started on first use, restarted when
//! it dies or hangs) and one start request per sandbox.

use super::MAX_READY_NETNS;
use super::{Reply, Request, FD_ZYGOTE, READY_NETNS_ENV, REPLY_TIMEOUT, RETRY_AFTER, ZYGOTE_ARG};
use crate::init::InitConfig;
use crate::spawn::{self, Launched};
use crate::sys::{self, cvt};
use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Instant;

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
        let released = setup(pid).and_then(|()| sys::write_byte(&cgroup_w, b'c'));
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
