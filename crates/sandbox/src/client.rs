//! The host's handle on one sandbox: a multiplexed connection to its init.

use crate::proto::{self, ErrorKind, Reply, Request, WireFileInfo};
use crate::runtime::{destroy_cgroup, lock, wait_exit, Meta, Runtime};
use crate::sys;
use crate::{
    ExecEvent, ExecOutcome, ExecOutput, ExecRequest, FileInfo, SandboxError, SandboxStats,
};
use bytes::{Bytes, BytesMut};
use sandpool_cgroups::Cgroup;
use sandpool_net::NetSlot;
use std::collections::HashMap;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::unix::OwnedWriteHalf;
use tokio::sync::mpsc;

type Frame = (u8, Vec<u8>);

/// One connection to an init, shared by every request of a sandbox.
pub(crate) struct Conn {
    writer: tokio::sync::Mutex<OwnedWriteHalf>,
    pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>>,
    next_id: AtomicU64,
    reader: tokio::task::JoinHandle<()>,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

impl Conn {
    pub async fn connect(path: &Path) -> Result<Conn, SandboxError> {
        let stream = tokio::net::UnixStream::connect(path).await?;
        let (mut rd, wr) = stream.into_split();
        let pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>> = Arc::default();
        let p = pending.clone();
        let reader = tokio::spawn(async move {
            while let Ok(Some((id, kind, payload))) = proto::read_frame(&mut rd).await {
                let tx = lock(&p).get(&id).cloned();
                if let Some(tx) = tx {
                    let _ = tx.send((kind, payload));
                }
            }
            // Connection gone: every waiter sees its channel close.
            lock(&p).clear();
        });
        Ok(Conn {
            writer: tokio::sync::Mutex::new(wr),
            pending,
            next_id: AtomicU64::new(1),
            reader,
        })
    }

    fn register(&self) -> (u64, mpsc::UnboundedReceiver<Frame>, PendingGuard) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::unbounded_channel();
        lock(&self.pending).insert(id, tx);
        let guard = PendingGuard {
            pending: self.pending.clone(),
            id,
        };
        (id, rx, guard)
    }

    async fn send(&self, frame: Vec<u8>) -> Result<(), SandboxError> {
        let mut w = self.writer.lock().await;
        w.write_all(&frame)
            .await
            .map_err(|e| SandboxError::Protocol(format!("sandbox connection: {e}")))
    }

    async fn send_request(&self, id: u64, req: &Request) -> Result<(), SandboxError> {
        self.send(proto::encode_json(id, proto::K_REQUEST, req))
            .await
    }

    /// One request, one reply.
    async fn call(&self, req: &Request) -> Result<Reply, SandboxError> {
        let (id, mut rx, _guard) = self.register();
        self.send_request(id, req).await?;
        recv_reply(&mut rx).await
    }
}

/// Removes a request's routing entry when its caller is done with it.
struct PendingGuard {
    pending: Arc<Mutex<HashMap<u64, mpsc::UnboundedSender<Frame>>>>,
    id: u64,
}

impl Drop for PendingGuard {
    fn drop(&mut self) {
        lock(&self.pending).remove(&self.id);
    }
}

fn closed() -> SandboxError {
    SandboxError::Protocol("the sandbox connection closed".into())
}

fn parse_reply(payload: &[u8]) -> Result<Reply, SandboxError> {
    serde_json::from_slice(payload).map_err(|e| SandboxError::Protocol(format!("bad reply: {e}")))
}

async fn recv_reply(rx: &mut mpsc::UnboundedReceiver<Frame>) -> Result<Reply, SandboxError> {
    loop {
        let (kind, payload) = rx.recv().await.ok_or_else(closed)?;
        if kind == proto::K_REPLY {
            return check(parse_reply(&payload)?);
        }
    }
}

fn check(r: Reply) -> Result<Reply, SandboxError> {
    match r {
        Reply::Error { kind, message } => Err(match kind {
            ErrorKind::InvalidPath => SandboxError::InvalidPath(message),
            ErrorKind::FileNotFound => SandboxError::FileNotFound(message),
            ErrorKind::Io | ErrorKind::BadRequest => SandboxError::Remote(message),
        }),
        r => Ok(r),
    }
}

fn file_info(w: WireFileInfo) -> FileInfo {
    let modified = if w.mtime_ns >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_nanos(w.mtime_ns as u64)
    } else {
        SystemTime::UNIX_EPOCH
    };
    FileInfo {
        path: w.path,
        name: w.name,
        is_dir: w.is_dir,
        size: w.size,
        modified,
        mode: w.mode,
    }
}

fn unexpected(r: Reply) -> SandboxError {
    SandboxError::Protocol(format!("unexpected reply {r:?}"))
}

pub(crate) struct SandboxParts {
    pub rt: Runtime,
    pub meta: Meta,
    pub dir: PathBuf,
    pub cgroup: Option<Cgroup>,
    pub net: Option<NetSlot>,
    pub pidfd: Option<OwnedFd>,
}

struct Inner {
    parts: SandboxParts,
    conn: Conn,
    destroyed: AtomicBool,
    destroy_lock: tokio::sync::Mutex<()>,
    net: Mutex<Option<NetSlot>>,
}

/// A live sandbox. Cheap to clone; all clones share one connection to the init.
#[derive(Clone)]
pub struct Sandbox {
    inner: Arc<Inner>,
    root: Arc<str>,
}

impl std::fmt::Debug for Sandbox {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sandbox")
            .field("id", &self.id())
            .field("file_root", &self.root)
            .finish()
    }
}

impl Sandbox {
    pub(crate) fn new(mut parts: SandboxParts, conn: Conn) -> Sandbox {
        let net = parts.net.take();
        Sandbox {
            inner: Arc::new(Inner {
                parts,
                conn,
                destroyed: AtomicBool::new(false),
                destroy_lock: tokio::sync::Mutex::new(()),
                net: Mutex::new(net),
            }),
            root: Arc::from("/"),
        }
    }

    pub fn id(&self) -> &str {
        &self.inner.parts.meta.id
    }

    /// Address of the sandbox's egress network slot, if it has one.
    pub fn address(&self) -> Option<std::net::Ipv4Addr> {
        lock(&self.inner.net).as_ref().map(|s| s.address)
    }

    /// The nsfs file of the sandbox's egress network slot, if it has one.
    pub fn netns_path(&self) -> Option<PathBuf> {
        lock(&self.inner.net).as_ref().map(|s| s.netns_path.clone())
    }

    pub(crate) fn net_slot_name(&self) -> Option<String> {
        lock(&self.inner.net).as_ref().map(|s| s.name.clone())
    }

    /// The init's pid on the host.
    pub fn init_pid(&self) -> i32 {
        self.inner.parts.meta.init_pid
    }

    /// The host uid that is root inside this sandbox.
    pub fn host_uid(&self) -> u32 {
        self.inner.parts.meta.host_uid
    }

    /// A handle whose file operations are confined below `root` (an absolute path inside the
    /// sandbox, e.g. `/mnt/data`): paths outside it, and symlinks leading out of it, fail with
    /// [`SandboxError::InvalidPath`]. The default handle is confined to the sandbox's `/`.
    pub fn confined(&self, root: &str) -> Sandbox {
        Sandbox {
            inner: self.inner.clone(),
            root: Arc::from(root),
        }
    }

    /// The confinement root of this handle's file operations.
    pub fn file_root(&self) -> &str {
        &self.root
    }

    fn alive(&self) -> Result<(), SandboxError> {
        if self.inner.destroyed.load(Ordering::Acquire) {
            Err(SandboxError::Destroyed)
        } else {
            Ok(())
        }
    }

    pub async fn ping(&self) -> Result<(), SandboxError> {
        self.alive()?;
        match self.inner.conn.call(&Request::Ping).await? {
            Reply::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Starts a command; its output and end arrive as events of the returned [`Execution`].
    pub async fn exec(&self, req: ExecRequest) -> Result<Execution, SandboxError> {
        self.alive()?;
        if req.command.contains('\0') {
            return Err(SandboxError::InvalidSpec(
                "command contains a NUL byte".into(),
            ));
        }
        if let Some(cwd) = &req.cwd {
            if !cwd.starts_with('/') || cwd.contains('\0') {
                return Err(SandboxError::InvalidSpec(format!(
                    "cwd {cwd:?} must be absolute"
                )));
            }
        }
        if req
            .env
            .iter()
            .any(|(k, v)| k.is_empty() || k.contains('=') || (k.to_owned() + v).contains('\0'))
        {
            return Err(SandboxError::InvalidSpec(
                "invalid environment variable".into(),
            ));
        }
        let oom_before = self.oom_kills();
        let conn = &self.inner.conn;
        let (id, rx, guard) = conn.register();
        let wire = Request::Exec(proto::ExecWire {
            command: req.command,
            env: req.env,
            cwd: req.cwd,
            timeout_ms: req.timeout.as_millis().min(u64::MAX as u128) as u64,
            output_limit: req.output_limit,
            merge_output: req.merge_output,
            stdin: req.stdin.is_some(),
        });
        conn.send_request(id, &wire).await?;
        if let Some(data) = req.stdin {
            for chunk in data.chunks(proto::CHUNK) {
                conn.send(proto::encode(id, proto::K_DATA, chunk)).await?;
            }
            conn.send(proto::encode(id, proto::K_END, &[])).await?;
        }
        Ok(Execution {
            sandbox: self.clone(),
            id,
            rx,
            _guard: guard,
            done: false,
            oom_before,
        })
    }

    /// Runs a command to its end and collects its output.
    pub async fn exec_collect(&self, req: ExecRequest) -> Result<ExecOutput, SandboxError> {
        let mut ex = self.exec(req).await?;
        let (mut out, mut err) = (BytesMut::new(), BytesMut::new());
        while let Some(ev) = ex.next().await {
            match ev? {
                ExecEvent::Stdout(b) => out.extend_from_slice(&b),
                ExecEvent::Stderr(b) => err.extend_from_slice(&b),
                ExecEvent::Exit(outcome) => {
                    return Ok(ExecOutput {
                        stdout: out.freeze(),
                        stderr: err.freeze(),
                        outcome,
                    })
                }
            }
        }
        Err(closed())
    }

    fn oom_kills(&self) -> u64 {
        self.inner
            .parts
            .cgroup
            .as_ref()
            .and_then(|c| c.oom_kills().ok())
            .unwrap_or(0)
    }

    /// Writes (creating or truncating) a file, creating missing parent directories.
    pub async fn write_file(
        &self,
        path: &str,
        mut data: impl AsyncRead + Unpin + Send,
    ) -> Result<FileInfo, SandboxError> {
        self.alive()?;
        let conn = &self.inner.conn;
        let (id, mut rx, _guard) = conn.register();
        let req = Request::Write {
            root: self.root.to_string(),
            path: path.to_string(),
        };
        conn.send_request(id, &req).await?;
        let mut buf = vec![0u8; proto::CHUNK];
        loop {
            // An early error reply (bad path) ends the upload at once.
            if let Ok((proto::K_REPLY, payload)) = rx.try_recv() {
                let r = check(parse_reply(&payload)?)?;
                return Err(unexpected(r));
            }
            let n = data.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            conn.send(proto::encode(id, proto::K_DATA, &buf[..n]))
                .await?;
        }
        conn.send(proto::encode(id, proto::K_END, &[])).await?;
        match recv_reply(&mut rx).await? {
            Reply::Info { info } => Ok(file_info(info)),
            r => Err(unexpected(r)),
        }
    }

    /// Opens a file for streaming it out of the sandbox.
    pub async fn read_file(&self, path: &str) -> Result<FileStream, SandboxError> {
        self.alive()?;
        let req = Request::Open {
            root: self.root.to_string(),
            path: path.to_string(),
        };
        match self.inner.conn.call(&req).await? {
            Reply::Opened { handle, info } => Ok(FileStream {
                sandbox: self.clone(),
                handle,
                info: file_info(info),
                eof: false,
            }),
            r => Err(unexpected(r)),
        }
    }

    /// Reads a whole file into memory (convenience for small files).
    pub async fn read_to_vec(&self, path: &str) -> Result<Vec<u8>, SandboxError> {
        let mut s = self.read_file(path).await?;
        let mut out = Vec::with_capacity(s.info.size.min(1 << 20) as usize);
        while let Some(chunk) = s.next_chunk().await? {
            out.extend_from_slice(&chunk);
        }
        Ok(out)
    }

    pub async fn list_dir(
        &self,
        path: &str,
        recursive: bool,
    ) -> Result<Vec<FileInfo>, SandboxError> {
        self.alive()?;
        let req = Request::List {
            root: self.root.to_string(),
            path: path.to_string(),
            recursive,
        };
        match self.inner.conn.call(&req).await? {
            Reply::Infos { infos } => Ok(infos.into_iter().map(file_info).collect()),
            r => Err(unexpected(r)),
        }
    }

    pub async fn stat(&self, path: &str) -> Result<FileInfo, SandboxError> {
        self.alive()?;
        let req = Request::Stat {
            root: self.root.to_string(),
            path: path.to_string(),
        };
        match self.inner.conn.call(&req).await? {
            Reply::Info { info } => Ok(file_info(info)),
            r => Err(unexpected(r)),
        }
    }

    /// Removes a file, or a directory with everything in it.
    pub async fn remove(&self, path: &str) -> Result<(), SandboxError> {
        self.alive()?;
        let req = Request::Remove {
            root: self.root.to_string(),
            path: path.to_string(),
        };
        match self.inner.conn.call(&req).await? {
            Reply::Ok => Ok(()),
            r => Err(unexpected(r)),
        }
    }

    /// Resource usage from the sandbox's cgroup.
    pub async fn stats(&self) -> Result<SandboxStats, SandboxError> {
        self.alive()?;
        let cg = self
            .inner
            .parts
            .cgroup
            .as_ref()
            .ok_or_else(|| SandboxError::Cgroup("the sandbox's cgroup is gone".into()))?;
        let s = cg.stats()?;
        Ok(SandboxStats {
            memory_bytes: s.memory_current,
            memory_peak_bytes: s.memory_peak,
            cpu_usage: s.cpu_usage,
            pids: s.pids_current,
            oom_kills: s.oom_kills,
        })
    }

    /// Kills every process of the sandbox and removes its cgroup, network slot and state.
    /// Idempotent; other handles of the sandbox fail with [`SandboxError::Destroyed`] afterwards.
    pub async fn destroy(&self) -> Result<(), SandboxError> {
        let _g = self.inner.destroy_lock.lock().await;
        if self.inner.destroyed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let p = &self.inner.parts;
        if let Some(fd) = &p.pidfd {
            // Killing PID 1 of a pid namespace kills every process in it.
            let _ = sys::pidfd_kill(fd, libc::SIGKILL);
            wait_exit(fd, p.meta.init_pid).await;
        }
        let mut result = Ok(());
        if let Some(cg) = &p.cgroup {
            result = destroy_cgroup(cg.clone()).await;
        }
        let slot = lock(&self.inner.net).take();
        if let (Some(slot), Some(pool)) = (slot, &p.rt.inner.net) {
            if let Err(e) = pool.release(slot).await {
                result = result.and(Err(e.into()));
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&p.dir) {
            if e.kind() != std::io::ErrorKind::NotFound {
                result = result.and(Err(e.into()));
            }
        }
        p.rt.forget(&p.meta.id, p.meta.uid_slot);
        result
    }

    /// Drops this runtime's bookkeeping of the sandbox without touching it.
    pub(crate) fn forget_local(&self) {
        self.inner.parts.rt.forget_id(&self.inner.parts.meta.id);
    }
}

/// A running command. Events arrive in order; [`ExecEvent::Exit`] is the last.
/// Dropping it before the end kills the command's process group.
pub struct Execution {
    sandbox: Sandbox,
    id: u64,
    rx: mpsc::UnboundedReceiver<Frame>,
    _guard: PendingGuard,
    done: bool,
    oom_before: u64,
}

impl Execution {
    /// The next event; `None` after the exit event.
    pub async fn next(&mut self) -> Option<Result<ExecEvent, SandboxError>> {
        if self.done {
            return None;
        }
        loop {
            let Some((kind, payload)) = self.rx.recv().await else {
                self.done = true;
                return Some(Err(closed()));
            };
            match kind {
                proto::K_STDOUT => return Some(Ok(ExecEvent::Stdout(Bytes::from(payload)))),
                proto::K_STDERR => return Some(Ok(ExecEvent::Stderr(Bytes::from(payload)))),
                proto::K_REPLY => {
                    self.done = true;
                    let r = parse_reply(&payload).and_then(check);
                    return Some(match r {
                        Ok(Reply::Exit { outcome }) => {
                            // A shell that ran the victim as a child reports it as 128+9.
                            let killed = (outcome.signal == Some(libc::SIGKILL)
                                || outcome.exit_code == Some(128 + libc::SIGKILL))
                                && !outcome.timed_out;
                            let oom = killed && self.sandbox.oom_kills() > self.oom_before;
                            Ok(ExecEvent::Exit(ExecOutcome {
                                exit_code: outcome.exit_code,
                                signal: outcome.signal,
                                timed_out: outcome.timed_out,
                                oom_killed: oom,
                                stdout_truncated: outcome.stdout_truncated,
                                stderr_truncated: outcome.stderr_truncated,
                                duration: outcome.duration(),
                                leftover_processes: outcome.leftover_processes,
                            }))
                        }
                        Ok(r) => Err(unexpected(r)),
                        Err(e) => Err(e),
                    });
                }
                _ => {}
            }
        }
    }
}

impl Drop for Execution {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let frame = proto::encode_json(0, proto::K_REQUEST, &Request::Cancel { target: self.id });
        let sb = self.sandbox.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = sb.inner.conn.send(frame).await;
            });
        }
    }
}

/// A file being read out of a sandbox, chunk by chunk (the host asks for each chunk, so a slow
/// consumer never makes anything buffer).
pub struct FileStream {
    sandbox: Sandbox,
    handle: u64,
    /// The file as it was when opened.
    pub info: FileInfo,
    eof: bool,
}

impl FileStream {
    pub fn size(&self) -> u64 {
        self.info.size
    }

    /// The next chunk; `None` at the end of the file.
    pub async fn next_chunk(&mut self) -> Result<Option<Bytes>, SandboxError> {
        if self.eof {
            return Ok(None);
        }
        let conn = &self.sandbox.inner.conn;
        let (id, mut rx, _guard) = conn.register();
        let req = Request::ReadChunk {
            handle: self.handle,
            max: 256 * 1024,
        };
        conn.send_request(id, &req).await?;
        let (kind, payload) = rx.recv().await.ok_or_else(closed)?;
        match kind {
            proto::K_FDATA if payload.is_empty() => {
                self.eof = true;
                self.close().await;
                Ok(None)
            }
            proto::K_FDATA => Ok(Some(Bytes::from(payload))),
            proto::K_REPLY => Err(check(parse_reply(&payload)?).map_or_else(|e| e, unexpected)),
            _ => Err(SandboxError::Protocol("unexpected frame".into())),
        }
    }

    async fn close(&mut self) {
        let _ = self
            .sandbox
            .inner
            .conn
            .call(&Request::Close {
                handle: self.handle,
            })
            .await;
    }
}

impl Drop for FileStream {
    fn drop(&mut self) {
        if self.eof {
            return;
        }
        let frame = proto::encode_json(
            0,
            proto::K_REQUEST,
            &Request::Close {
                handle: self.handle,
            },
        );
        let sb = self.sandbox.clone();
        if let Ok(h) = tokio::runtime::Handle::try_current() {
            h.spawn(async move {
                let _ = sb.inner.conn.send(frame).await;
            });
        }
    }
}

impl futures::Stream for Execution {
    type Item = Result<ExecEvent, SandboxError>;
    fn poll_next(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Self::Item>> {
        let this = self.get_mut();
        let fut = this.next();
        futures::pin_mut!(fut);
        fut.poll(cx)
    }
}

use std::future::Future;
