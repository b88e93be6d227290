//! The init's event loop: accepts control connections, runs commands, serves files, reaps.
//!
//! Single-threaded (tokio current_thread + LocalSet) so an idle sandbox costs little memory.
//! As PID 1 the init reaps every process of the sandbox with `waitpid(-1)`; statuses of the
//! commands it started are routed to their exec tasks, orphans are just collected.
//! Output is sent through a bounded channel per connection: a slow host slows the command's
//! output pipe down instead of growing a buffer, and output past the cap is read and dropped.

use super::command;
use super::files::{self, FileError};
use super::InitConfig;
use crate::child::FD_LISTENER;
use crate::proto::{self, ErrorKind, ExecWire, Reply, Request, WireOutcome};
use crate::sys;
use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::Rc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::pipe;
use tokio::sync::{mpsc, oneshot};

/// Stdin larger than this is refused (it is held in memory until the command starts).
const MAX_STDIN: usize = 16 << 20;
/// Most file chunk a ReadChunk returns.
const MAX_READ: usize = 256 * 1024;

struct Shared {
    cfg: InitConfig,
    /// Exit status waiters by pid.
    waiters: RefCell<HashMap<i32, oneshot::Sender<i32>>>,
    /// Output buffers of finished commands, for the next ones: a fresh one is allocated and
    /// zeroed (64 KiB) for every command otherwise. Only a command's own reads fill them.
    spare_buffers: RefCell<Vec<Vec<u8>>>,
}

/// Most spare output buffers an init keeps.
const SPARE_BUFFERS: usize = 8;

impl Shared {
    fn output_buffer(&self) -> Vec<u8> {
        self.spare_buffers
            .borrow_mut()
            .pop()
            .unwrap_or_else(|| vec![0u8; proto::CHUNK])
    }

    fn return_buffer(&self, buf: Vec<u8>) {
        let mut spare = self.spare_buffers.borrow_mut();
        if spare.len() < SPARE_BUFFERS && buf.len() == proto::CHUNK {
            spare.push(buf);
        }
    }
}

pub fn run(cfg: InitConfig) -> ! {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
    {
        Ok(rt) => rt,
        Err(_) => std::process::exit(3),
    };
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, serve(cfg));
    std::process::exit(0)
}

async fn serve(cfg: InitConfig) {
    let shared = Rc::new(Shared {
        cfg,
        waiters: RefCell::new(HashMap::new()),
        spare_buffers: RefCell::new(Vec::new()),
    });
    // Registered before any child exists, so no SIGCHLD is missed.
    let Ok(mut sigchld) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())
    else {
        std::process::exit(4)
    };
    command::note_handler(libc::SIGCHLD);
    let reaper = shared.clone();
    tokio::task::spawn_local(async move {
        loop {
            reap(&reaper);
            if sigchld.recv().await.is_none() {
                return;
            }
        }
    });

    // SAFETY: fd 3 is the listening socket the runtime passed us.
    let std_listener = unsafe { std::os::unix::net::UnixListener::from_raw_fd(FD_LISTENER) };
    // SAFETY: set close-on-exec so commands do not inherit the control socket.
    unsafe { libc::fcntl(FD_LISTENER, libc::F_SETFD, libc::FD_CLOEXEC) };
    if std_listener.set_nonblocking(true).is_err() {
        std::process::exit(5);
    }
    let Ok(listener) = tokio::net::UnixListener::from_std(std_listener) else {
        std::process::exit(5)
    };
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                tokio::task::spawn_local(connection(shared.clone(), stream));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

fn reap(shared: &Shared) {
    loop {
        let mut status = 0;
        // SAFETY: plain waitpid.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        if pid <= 0 {
            return;
        }
        if let Some(tx) = shared.waiters.borrow_mut().remove(&pid) {
            let _ = tx.send(status);
        }
    }
}

type Tx = mpsc::Sender<Vec<u8>>;

/// What the DATA frames of a request feed.
enum Sink {
    File {
        path: String,
        file: std::fs::File,
        error: Option<FileError>,
    },
    Stdin {
        req: ExecWire,
        buf: Vec<u8>,
        too_big: bool,
    },
}

struct Conn {
    shared: Rc<Shared>,
    tx: Tx,
    /// Process groups of running commands, by request id.
    running: Rc<RefCell<HashMap<u64, i32>>>,
    sinks: HashMap<u64, Sink>,
    handles: HashMap<u64, std::fs::File>,
    next_handle: u64,
}

async fn reply(tx: &Tx, id: u64, r: &Reply) {
    let _ = tx.send(proto::encode_json(id, proto::K_REPLY, r)).await;
}

fn error_reply(e: FileError) -> Reply {
    Reply::Error {
        kind: e.kind,
        message: e.message,
    }
}

async fn connection(shared: Rc<Shared>, stream: tokio::net::UnixStream) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(16);
    tokio::task::spawn_local(async move {
        while let Some(frame) = rx.recv().await {
            if wr.write_all(&frame).await.is_err() {
                // Keep draining so senders never block on a dead connection.
                while rx.recv().await.is_some() {}
                return;
            }
        }
    });
    let mut conn = Conn {
        shared,
        tx,
        running: Rc::new(RefCell::new(HashMap::new())),
        sinks: HashMap::new(),
        handles: HashMap::new(),
        next_handle: 1,
    };
    while let Ok(Some((id, kind, payload))) = proto::read_frame(&mut rd).await {
        match kind {
            proto::K_REQUEST => match serde_json::from_slice::<Request>(&payload) {
                Ok(req) => conn.request(id, req).await,
                Err(e) => {
                    let r = Reply::Error {
                        kind: ErrorKind::BadRequest,
                        message: format!("bad request: {e}"),
                    };
                    reply(&conn.tx, id, &r).await;
                }
            },
            proto::K_DATA => conn.data(id, &payload),
            proto::K_END => conn.end(id).await,
            _ => break,
        }
    }
    // The host went away: commands it was waiting for are of no use to anyone.
    for (_, pgid) in conn.running.borrow_mut().drain() {
        // SAFETY: signalling a process group we created.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
}

impl Conn {
    async fn request(&mut self, id: u64, req: Request) {
        let r = match req {
            Request::Ping => Reply::Ok,
            Request::Exec(params) => {
                if params.stdin {
                    self.sinks.insert(
                        id,
                        Sink::Stdin {
                            req: params,
                            buf: Vec::new(),
                            too_big: false,
                        },
                    );
                } else {
                    self.start_exec(id, params, None);
                }
                return;
            }
            Request::Cancel { target } => {
                if let Some(pgid) = self.running.borrow().get(&target) {
                    // SAFETY: signalling a process group we created.
                    unsafe { libc::kill(-pgid, libc::SIGKILL) };
                }
                return;
            }
            Request::Write { root, path } => {
                match files::target(&root, &path).and_then(|t| files::create(&t).map(|f| (t, f))) {
                    Ok((t, file)) => {
                        self.sinks.insert(
                            id,
                            Sink::File {
                                path: t.path,
                                file,
                                error: None,
                            },
                        );
                        return;
                    }
                    Err(e) => {
                        // The data frames that follow find no sink and are dropped.
                        error_reply(e)
                    }
                }
            }
            Request::Open { root, path } => {
                match files::target(&root, &path).and_then(|t| files::open_read(&t)) {
                    Ok((fd, info)) => {
                        let handle = self.next_handle;
                        self.next_handle += 1;
                        self.handles.insert(handle, std::fs::File::from(fd));
                        Reply::Opened { handle, info }
                    }
                    Err(e) => error_reply(e),
                }
            }
            Request::ReadChunk { handle, max } => {
                let mut buf = vec![0u8; max.clamp(1, MAX_READ)];
                let n = match self.handles.get_mut(&handle) {
                    Some(f) => f.read(&mut buf),
                    None => Err(std::io::Error::other("unknown handle")),
                };
                match n {
                    Ok(n) => {
                        let _ = self
                            .tx
                            .send(proto::encode(id, proto::K_FDATA, &buf[..n]))
                            .await;
                        return;
                    }
                    Err(e) => Reply::Error {
                        kind: ErrorKind::Io,
                        message: e.to_string(),
                    },
                }
            }
            Request::Close { handle } => {
                self.handles.remove(&handle);
                Reply::Ok
            }
            Request::List {
                root,
                path,
                recursive,
            } => match files::target(&root, &path).and_then(|t| files::list(&t, recursive)) {
                Ok(infos) => Reply::Infos { infos },
                Err(e) => error_reply(e),
            },
            Request::Stat { root, path } => {
                match files::target(&root, &path).and_then(|t| files::stat(&t)) {
                    Ok(info) => Reply::Info { info },
                    Err(e) => error_reply(e),
                }
            }
            Request::Remove { root, path } => {
                match files::target(&root, &path).and_then(|t| files::remove(&t)) {
                    Ok(()) => Reply::Ok,
                    Err(e) => error_reply(e),
                }
            }
        };
        reply(&self.tx, id, &r).await;
    }

    fn data(&mut self, id: u64, payload: &[u8]) {
        match self.sinks.get_mut(&id) {
            Some(Sink::File { path, file, error }) if error.is_none() => {
                if let Err(e) = file.write_all(payload) {
                    *error = Some(FileError {
                        kind: ErrorKind::Io,
                        message: format!("{path}: {e}"),
                    });
                }
            }
            Some(Sink::Stdin { buf, too_big, .. }) => {
                if buf.len() + payload.len() > MAX_STDIN {
                    *too_big = true;
                } else {
                    buf.extend_from_slice(payload);
                }
            }
            _ => {}
        }
    }

    async fn end(&mut self, id: u64) {
        match self.sinks.remove(&id) {
            Some(Sink::File { path, file, error }) => {
                let r = match error {
                    Some(e) => error_reply(e),
                    None => {
                        let fd = OwnedFd::from(file);
                        match files::fd_info(&path, &fd) {
                            Ok(info) => Reply::Info { info },
                            Err(e) => error_reply(e),
                        }
                    }
                };
                reply(&self.tx, id, &r).await;
            }
            Some(Sink::Stdin { req, buf, too_big }) => {
                if too_big {
                    let r = Reply::Error {
                        kind: ErrorKind::BadRequest,
                        message: format!("stdin larger than {MAX_STDIN} bytes"),
                    };
                    reply(&self.tx, id, &r).await;
                } else {
                    self.start_exec(id, req, Some(buf));
                }
            }
            None => {}
        }
    }

    fn start_exec(&mut self, id: u64, p: ExecWire, stdin: Option<Vec<u8>>) {
        let shared = self.shared.clone();
        let tx = self.tx.clone();
        let running = self.running.clone();
        tokio::task::spawn_local(async move {
            if let Err(msg) = exec(shared, &tx, id, p, stdin, running).await {
                let r = Reply::Error {
                    kind: ErrorKind::Io,
                    message: msg,
                };
                reply(&tx, id, &r).await;
            }
        });
    }
}

fn receiver(fd: OwnedFd) -> std::io::Result<pipe::Receiver> {
    sys::set_nonblocking(&fd)?;
    pipe::Receiver::from_owned_fd(fd)
}

/// Per-stream output state: bytes counted against the cap, truncation flag.
struct Stream {
    rx: Option<pipe::Receiver>,
    kind: u8,
    sent: usize,
    truncated: bool,
}

impl Stream {
    /// Forwards what fits under the cap; returns false at end of stream.
    async fn forward(&mut self, tx: &Tx, id: u64, data: &[u8], limit: usize) {
        let room = limit.saturating_sub(self.sent);
        let take = data.len().min(room);
        if take < data.len() {
            self.truncated = true;
        }
        if take > 0 {
            self.sent += take;
            let _ = tx.send(proto::encode(id, self.kind, &data[..take])).await;
        }
    }

    /// Reads what is already in the pipe without waiting (after the command exited).
    ///
    /// A plain non-blocking read(2), not `try_read`: tokio's `try_read` answers `WouldBlock`
    /// without reading while the reactor has not yet seen the pipe become readable, which is
    /// exactly the case of a short command whose exit is noticed before its output — and that
    /// output was lost.
    async fn drain(&mut self, tx: &Tx, id: u64, buf: &mut [u8], limit: usize) {
        while let Some(rx) = &self.rx {
            // SAFETY: reading into a valid buffer from a descriptor we own (non-blocking).
            let n = unsafe { libc::read(rx.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            match usize::try_from(n) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let chunk = buf[..n].to_vec();
                    self.forward(tx, id, &chunk, limit).await;
                }
            }
        }
        self.rx = None;
    }
}

async fn read_opt(rx: &mut Option<pipe::Receiver>, buf: &mut [u8]) -> std::io::Result<usize> {
    match rx {
        Some(r) => r.read(buf).await,
        None => std::future::pending().await,
    }
}

async fn exec(
    shared: Rc<Shared>,
    tx: &Tx,
    id: u64,
    p: ExecWire,
    stdin: Option<Vec<u8>>,
    running: Rc<RefCell<HashMap<u64, i32>>>,
) -> Result<(), String> {
    let err = |what: &str, e: std::io::Error| format!("{what}: {e}");
    let (out_r, out_w) = sys::pipe().map_err(|e| err("pipe", e))?;
    let (err_r, err_w) = if p.merge_output {
        (None, out_w.try_clone().map_err(|e| err("dup", e))?)
    } else {
        let (r, w) = sys::pipe().map_err(|e| err("pipe", e))?;
        (Some(r), w)
    };
    let stdin_pipe = match &stdin {
        Some(_) => Some(sys::pipe().map_err(|e| err("pipe", e))?),
        None => None,
    };
    let null;
    let stdin_r = match &stdin_pipe {
        Some((r, _)) => r.as_raw_fd(),
        None => {
            null = std::fs::File::open("/dev/null").map_err(|e| err("/dev/null", e))?;
            null.as_raw_fd()
        }
    };
    let path = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
    let fixed = [
        ("PATH", path),
        ("HOME", "/root"),
        ("USER", "root"),
        ("HOSTNAME", shared.cfg.hostname.as_str()),
    ];
    let env = fixed
        .into_iter()
        .chain(shared.cfg.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .chain(p.env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    let cwd = p.cwd.as_deref().unwrap_or("/root");
    let spawn = command::Spawn::shell(
        &p.command,
        env,
        cwd,
        [stdin_r, out_w.as_raw_fd(), err_w.as_raw_fd()],
    )
    .map_err(|e| err("cannot start /bin/sh", e))?;
    let started = Instant::now();
    let pid = command::spawn(&spawn).map_err(|e| err("cannot start /bin/sh", e))?;
    // Our copies of the child's ends: EOF on the output pipes must come from the command alone.
    drop((out_w, err_w));
    // The read end belongs to the command: with ours closed, a writer sees EPIPE once it exits.
    let stdin_w = stdin_pipe.map(|(r, w)| {
        drop(r);
        w
    });
    let (status_tx, mut status_rx) = oneshot::channel();
    shared.waiters.borrow_mut().insert(pid, status_tx);
    running.borrow_mut().insert(id, pid);

    if let (Some(data), Some(w)) = (stdin, stdin_w) {
        if let Ok(mut w) = sys::set_nonblocking(&w).and_then(|_| pipe::Sender::from_owned_fd(w)) {
            tokio::task::spawn_local(async move {
                let _ = w.write_all(&data).await;
            });
        }
    }

    let mut out = Stream {
        rx: receiver(out_r).ok(),
        kind: proto::K_STDOUT,
        sent: 0,
        truncated: false,
    };
    let mut errs = Stream {
        rx: err_r.and_then(|r| receiver(r).ok()),
        kind: proto::K_STDERR,
        sent: 0,
        truncated: false,
    };
    let limit = p.output_limit;
    let mut buf = shared.output_buffer();
    let mut ebuf = if p.merge_output {
        Vec::new()
    } else {
        shared.output_buffer()
    };
    let deadline = (p.timeout_ms > 0)
        .then(|| tokio::time::Instant::now() + Duration::from_millis(p.timeout_ms));
    let mut timed_out = false;
    let status = loop {
        tokio::select! {
            r = read_opt(&mut out.rx, &mut buf) => match r {
                Ok(n) if n > 0 => { let c = buf[..n].to_vec(); out.forward(tx, id, &c, limit).await }
                _ => out.rx = None,
            },
            r = read_opt(&mut errs.rx, &mut ebuf) => match r {
                Ok(n) if n > 0 => { let c = ebuf[..n].to_vec(); errs.forward(tx, id, &c, limit).await }
                _ => errs.rx = None,
            },
            s = &mut status_rx => break s.unwrap_or(0),
            _ = sleep_opt(deadline), if !timed_out => {
                timed_out = true;
                // SAFETY: signalling the command's own process group.
                unsafe { libc::kill(-pid, libc::SIGKILL) };
            }
        }
    };
    let duration = started.elapsed();
    running.borrow_mut().remove(&id);
    // Signal 0 only asks whether the group still has members: background processes the
    // command left running (they keep running; the host reports them).
    // SAFETY: as above; signal 0 delivers nothing.
    let leftover_processes = !timed_out && unsafe { libc::kill(-pid, 0) } == 0;
    if timed_out {
        // Stragglers of the group that outlived the shell.
        // SAFETY: as above.
        unsafe { libc::kill(-pid, libc::SIGKILL) };
    }
    out.drain(tx, id, &mut buf, limit).await;
    errs.drain(tx, id, &mut buf, limit).await;
    shared.return_buffer(buf);
    shared.return_buffer(ebuf);
    let (exit_code, signal) = if libc::WIFEXITED(status) {
        (Some(libc::WEXITSTATUS(status)), None)
    } else if libc::WIFSIGNALED(status) {
        (None, Some(libc::WTERMSIG(status)))
    } else {
        (None, None)
    };
    let outcome = WireOutcome {
        exit_code,
        signal,
        timed_out,
        stdout_truncated: out.truncated,
        stderr_truncated: errs.truncated,
        duration_us: duration.as_micros() as u64,
        leftover_processes,
    };
    reply(tx, id, &Reply::Exit { outcome }).await;
    Ok(())
}

async fn sleep_opt(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
