//! The wire protocol between the host runtime and the in-sandbox init.
//!
//! Every message is one frame: `len: u32 LE` (bytes after this field), `id: u64 LE` (request id,
//! chosen by the host; every frame of one request carries it), `kind: u8`, then the payload.
//! Control messages are JSON; output and file data travel as raw bytes so nothing is re-encoded.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Largest payload either side accepts; larger frames are a protocol error, never an allocation.
pub const MAX_PAYLOAD: usize = 1 << 20;
/// Size of data chunks (output, file data).
pub const CHUNK: usize = 64 * 1024;
pub const HEADER: usize = 4 + 8 + 1;

/// Host → init: a JSON [`Request`].
pub const K_REQUEST: u8 = 1;
/// Host → init: a chunk of the data stream of a request (stdin, file content).
pub const K_DATA: u8 = 2;
/// Host → init: end of the data stream of a request.
pub const K_END: u8 = 3;
/// Init → host: a JSON [`Reply`].
pub const K_REPLY: u8 = 10;
/// Init → host: stdout chunk of an exec (or merged output).
pub const K_STDOUT: u8 = 11;
/// Init → host: stderr chunk of an exec.
pub const K_STDERR: u8 = 12;
/// Init → host: a chunk of file content.
pub const K_FDATA: u8 = 13;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    Ping,
    Exec(ExecWire),
    /// Kills the process group of a running exec (the host dropped its `Execution`).
    Cancel {
        target: u64,
    },
    /// Content follows as DATA frames closed by END.
    Write {
        root: String,
        path: String,
    },
    Open {
        root: String,
        path: String,
    },
    ReadChunk {
        handle: u64,
        max: usize,
    },
    Close {
        handle: u64,
    },
    List {
        root: String,
        path: String,
        recursive: bool,
    },
    Stat {
        root: String,
        path: String,
    },
    Remove {
        root: String,
        path: String,
    },
}

/// A command to run: `/bin/sh -c command`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExecWire {
    pub command: String,
    pub env: Vec<(String, String)>,
    pub cwd: Option<String>,
    /// 0: no timeout.
    pub timeout_ms: u64,
    pub output_limit: usize,
    pub merge_output: bool,
    /// Stdin follows as DATA frames closed by END; otherwise stdin is /dev/null.
    pub stdin: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "r", rename_all = "snake_case")]
pub enum Reply {
    Ok,
    Error { kind: ErrorKind, message: String },
    Info { info: WireFileInfo },
    Infos { infos: Vec<WireFileInfo> },
    Opened { handle: u64, info: WireFileInfo },
    Exit { outcome: WireOutcome },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    InvalidPath,
    FileNotFound,
    Io,
    BadRequest,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireFileInfo {
    pub path: String,
    pub name: String,
    pub is_dir: bool,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WireOutcome {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_us: u64,
    /// Processes of the command's process group still ran when its shell exited.
    #[serde(default)]
    pub leftover_processes: bool,
}

impl WireOutcome {
    pub fn duration(&self) -> Duration {
        Duration::from_micros(self.duration_us)
    }
}

/// Encodes one frame into a fresh buffer (header and payload in one write, so frames from
/// concurrent requests never interleave).
pub fn encode(id: u64, kind: u8, payload: &[u8]) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER + payload.len());
    let len = (8 + 1 + payload.len()) as u32;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&id.to_le_bytes());
    buf.push(kind);
    buf.extend_from_slice(payload);
    buf
}

pub fn encode_json<T: Serialize>(id: u64, kind: u8, msg: &T) -> Vec<u8> {
    // Serialising these plain structs cannot fail; an empty payload would surface as a
    // protocol error on the other side rather than a panic here.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    encode(id, kind, &body)
}

/// Reads one frame; `Ok(None)` on a clean end of stream before a header.
pub async fn read_frame<R: tokio::io::AsyncRead + Unpin>(
    r: &mut R,
) -> std::io::Result<Option<(u64, u8, Vec<u8>)>> {
    use tokio::io::AsyncReadExt;
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = u32::from_le_bytes(len) as usize;
    if !(9..=9 + MAX_PAYLOAD).contains(&len) {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("bad frame length {len}"),
        ));
    }
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&head[..8]);
    let mut payload = vec![0u8; len - 9];
    r.read_exact(&mut payload).await?;
    Ok(Some((u64::from_le_bytes(id), head[8], payload)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_bad_length_is_an_error() {
        let mut buf = encode(7, K_DATA, b"hello");
        buf.extend(encode_json(8, K_REQUEST, &Request::Ping));
        let mut r = &buf[..];
        let (id, kind, p) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((id, kind, &p[..]), (7, K_DATA, &b"hello"[..]));
        let (id, kind, p) = read_frame(&mut r).await.unwrap().unwrap();
        assert_eq!((id, kind), (8, K_REQUEST));
        assert!(matches!(serde_json::from_slice(&p).unwrap(), Request::Ping));
        assert!(read_frame(&mut r).await.unwrap().is_none());

        let bad = (u32::MAX).to_le_bytes();
        let mut r = &bad[..];
        assert!(read_frame(&mut r).await.is_err());
    }
}
