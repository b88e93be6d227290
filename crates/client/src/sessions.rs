//! The session data plane: executions (with output streamed as server-sent events), files and
//! sessions of a pool's management endpoint. Requests carry a token for the session API's
//! audience (`https://dynamicsessions.io`).

use std::path::Path;

use reqwest::header::{HeaderValue, ACCEPT, AUTHORIZATION};
use reqwest::{Method, RequestBuilder, Url};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::io::{AsyncWrite, AsyncWriteExt};

use crate::{ApiError, Client, ClientError, CLIENT_REQUEST_ID, SESSIONS_AUDIENCE};

/// Which session: a pool (by resource group and name) and an identifier.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRef {
    pub resource_group: String,
    pub pool: String,
    pub identifier: String,
}

/// The result part of an execution.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ExecutionResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: Option<i32>,
    pub execution_time_in_milliseconds: u64,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
}

/// Why an execution failed (`ExecutionTimedOut`, `ExecutionFailed`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default)]
pub struct ExecutionError {
    pub code: String,
    pub message: String,
}

/// An execution as the server reports it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Execution {
    pub id: String,
    pub identifier: String,
    /// The exit code as a string, `Running`, or `Failed`.
    pub status: String,
    pub result: Option<ExecutionResult>,
    pub error: Option<ExecutionError>,
}

/// Output of a streamed execution, as it arrives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputStream {
    Stdout,
    Stderr,
}

/// A file or directory of a session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FileEntry {
    pub name: String,
    pub directory: String,
    /// `File` or `Directory`.
    #[serde(rename = "type")]
    pub kind: String,
    pub content_type: Option<String>,
    pub size_in_bytes: u64,
    pub last_modified_at: String,
}

/// A live session.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SessionEntry {
    pub identifier: String,
    pub created_at: String,
    pub last_accessed_at: String,
    pub expires_at: String,
    pub etag: String,
}

#[derive(Deserialize)]
struct ListOf<T> {
    value: Vec<T>,
}

impl Client {
    /// A request to `{endpoint}/subscriptions/{sub}/resourceGroups/{rg}/sessionPools/{pool}/{rest}`
    /// with `api-version`, `identifier` when given, `query`, a request id and the session API's
    /// token. Answers the URL too, for error messages.
    async fn pool_request(
        &self,
        method: Method,
        (group, pool, identifier): (&str, &str, Option<&str>),
        rest: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(Url, RequestBuilder), ClientError> {
        let mut url = self.url(
            &format!(
                "/subscriptions/{}/resourceGroups/{group}/sessionPools/{pool}",
                self.subscription()
            ),
            query,
        )?;
        if let Ok(mut segs) = url.path_segments_mut() {
            // Pushed one by one so that names holding '/' or '%' are escaped, not interpreted.
            segs.extend(rest);
        }
        if let Some(id) = identifier {
            url.query_pairs_mut().append_pair("identifier", id);
        }
        let mut req = self
            .http
            .request(method, url.clone())
            .header(CLIENT_REQUEST_ID, uuid::Uuid::new_v4().to_string());
        if let Some(source) = &self.token {
            let token = source.token(SESSIONS_AUDIENCE).await?;
            let mut v = HeaderValue::from_str(&format!("Bearer {token}")).map_err(|_| {
                ClientError::Token("the token holds characters not allowed in a header".into())
            })?;
            v.set_sensitive(true);
            req = req.header(AUTHORIZATION, v);
        }
        Ok((url, req))
    }

    /// [`Client::pool_request`] for one session of a pool.
    async fn session_request(
        &self,
        method: Method,
        s: &SessionRef,
        rest: &[&str],
        query: &[(&str, &str)],
    ) -> Result<(Url, RequestBuilder), ClientError> {
        let target = (
            s.resource_group.as_str(),
            s.pool.as_str(),
            Some(s.identifier.as_str()),
        );
        self.pool_request(method, target, rest, query).await
    }

    /// Sends and turns a 4xx/5xx into [`ClientError::Api`].
    async fn session_send(
        url: &Url,
        req: RequestBuilder,
    ) -> Result<reqwest::Response, ClientError> {
        let resp = req.send().await.map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
        let status = resp.status();
        if !(status.is_client_error() || status.is_server_error()) {
            return Ok(resp);
        }
        let code = resp
            .headers()
            .get("x-ms-error-code")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        let mut err = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| serde_json::from_value::<ApiError>(v["error"].clone()).ok())
            .unwrap_or_else(|| {
                ApiError::new(
                    status.as_u16(),
                    code.unwrap_or_else(|| format!("Http{}", status.as_u16())),
                    text.chars().take(300).collect::<String>(),
                )
            });
        err.status = status.as_u16();
        Err(ClientError::Api(err))
    }

    async fn session_json<T: serde::de::DeserializeOwned>(
        url: &Url,
        req: RequestBuilder,
    ) -> Result<T, ClientError> {
        let resp = Self::session_send(url, req).await?;
        let status = resp.status().as_u16();
        let bytes = resp
            .bytes()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_string(),
                source,
            })?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::InvalidResponse {
            url: url.to_string(),
            status,
            message: format!("unexpected body: {e}"),
        })
    }

    fn execute_body(command: &str, timeout_secs: Option<u64>) -> Value {
        let mut body = json!({"executionType": "Synchronous", "shellCommand": command});
        if let Some(t) = timeout_secs {
            body["timeoutInSeconds"] = t.into();
        }
        body
    }

    /// Runs `command` in the session and waits for its end.
    pub async fn execute(
        &self,
        s: &SessionRef,
        command: &str,
        timeout_secs: Option<u64>,
    ) -> Result<Execution, ClientError> {
        let (url, req) = self
            .session_request(Method::POST, s, &["executions"], &[])
            .await?;
        let req = req.json(&Self::execute_body(command, timeout_secs));
        Self::session_json(&url, req).await
    }

    /// Runs `command` in the session; `on_output` gets stdout and stderr as they are produced.
    /// Returns the final execution (whose result also holds the whole output).
    pub async fn execute_streaming(
        &self,
        s: &SessionRef,
        command: &str,
        timeout_secs: Option<u64>,
        mut on_output: impl FnMut(OutputStream, &str),
    ) -> Result<Execution, ClientError> {
        let (url, req) = self
            .session_request(Method::POST, s, &["executions"], &[])
            .await?;
        let req = req
            .header(ACCEPT, "text/event-stream")
            .json(&Self::execute_body(command, timeout_secs));
        let mut resp = Self::session_send(&url, req).await?;
        let mut buf: Vec<u8> = Vec::new();
        let transport = |source| ClientError::Transport {
            url: url.to_string(),
            source,
        };
        while let Some(chunk) = resp.chunk().await.map_err(transport)? {
            buf.extend_from_slice(&chunk);
            while let Some(end) = find(&buf, b"\n\n") {
                let event: Vec<u8> = buf.drain(..end + 2).collect();
                let (name, data) = parse_event(&String::from_utf8_lossy(&event));
                match name.as_str() {
                    "stdout" | "stderr" => {
                        let text: String = serde_json::from_str(&data).unwrap_or(data);
                        let which = if name == "stdout" {
                            OutputStream::Stdout
                        } else {
                            OutputStream::Stderr
                        };
                        on_output(which, &text);
                    }
                    "result" => {
                        return serde_json::from_str(&data).map_err(|e| {
                            ClientError::InvalidResponse {
                                url: url.to_string(),
                                status: 200,
                                message: format!("the result event is not an execution: {e}"),
                            }
                        })
                    }
                    _ => {}
                }
            }
        }
        Err(ClientError::InvalidResponse {
            url: url.to_string(),
            status: 200,
            message: "the event stream ended without a result".into(),
        })
    }

    /// Uploads the local file `local` as `name` into `directory` (default `/mnt/data`), streamed.
    pub async fn upload_file(
        &self,
        s: &SessionRef,
        local: &Path,
        name: &str,
        directory: Option<&str>,
    ) -> Result<FileEntry, ClientError> {
        let file = tokio::fs::File::open(local).await.map_err(|e| {
            ClientError::InvalidArgument(format!("cannot open {}: {e}", local.display()))
        })?;
        let len = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::new(file));
        let part =
            reqwest::multipart::Part::stream_with_length(body, len).file_name(name.to_owned());
        let form = reqwest::multipart::Form::new().part("file", part);
        let query: Vec<(&str, &str)> = directory.map(|d| ("path", d)).into_iter().collect();
        let (url, req) = self
            .session_request(Method::POST, s, &["files"], &query)
            .await?;
        let req = req.multipart(form);
        Self::session_json(&url, req).await
    }

    /// Files of `directory` (default `/mnt/data`).
    pub async fn list_files(
        &self,
        s: &SessionRef,
        directory: Option<&str>,
        recursive: bool,
    ) -> Result<Vec<FileEntry>, ClientError> {
        let mut query: Vec<(&str, &str)> = directory.map(|d| ("path", d)).into_iter().collect();
        if recursive {
            query.push(("recursive", "true"));
        }
        let (url, req) = self
            .session_request(Method::GET, s, &["files"], &query)
            .await?;
        Ok(Self::session_json::<ListOf<FileEntry>>(&url, req)
            .await?
            .value)
    }

    /// Streams the file `name` (a path relative to `/mnt/data`, or absolute below it) into
    /// `out`; returns the bytes written.
    pub async fn download_file(
        &self,
        s: &SessionRef,
        name: &str,
        out: &mut (impl AsyncWrite + Unpin),
    ) -> Result<u64, ClientError> {
        let (dir, file) = split_remote(name);
        let query: Vec<(&str, &str)> = dir.map(|d| ("path", d)).into_iter().collect();
        let (url, req) = self
            .session_request(Method::GET, s, &["files", file, "content"], &query)
            .await?;
        let mut resp = Self::session_send(&url, req).await?;
        let mut n = 0u64;
        while let Some(chunk) = resp
            .chunk()
            .await
            .map_err(|source| ClientError::Transport {
                url: url.to_string(),
                source,
            })?
        {
            out.write_all(&chunk)
                .await
                .map_err(|e| ClientError::InvalidArgument(format!("writing the download: {e}")))?;
            n += chunk.len() as u64;
        }
        out.flush()
            .await
            .map_err(|e| ClientError::InvalidArgument(format!("writing the download: {e}")))?;
        Ok(n)
    }

    /// Deletes the file `name` (relative to `/mnt/data`, or absolute below it).
    pub async fn delete_file(&self, s: &SessionRef, name: &str) -> Result<(), ClientError> {
        let (dir, file) = split_remote(name);
        let query: Vec<(&str, &str)> = dir.map(|d| ("path", d)).into_iter().collect();
        let (url, req) = self
            .session_request(Method::DELETE, s, &["files", file], &query)
            .await?;
        Self::session_send(&url, req).await.map(|_| ())
    }

    /// The live sessions of a pool.
    pub async fn list_sessions(
        &self,
        group: &str,
        pool: &str,
    ) -> Result<Vec<SessionEntry>, ClientError> {
        let (url, req) = self
            .pool_request(Method::GET, (group, pool, None), &["listSessions"], &[])
            .await?;
        Ok(Self::session_json::<ListOf<SessionEntry>>(&url, req)
            .await?
            .value)
    }

    pub async fn get_session(&self, s: &SessionRef) -> Result<SessionEntry, ClientError> {
        let (url, req) = self
            .session_request(Method::GET, s, &["session"], &[])
            .await?;
        Self::session_json(&url, req).await
    }

    /// Stops the session (its sandbox and files go).
    pub async fn delete_session(&self, s: &SessionRef) -> Result<(), ClientError> {
        let (url, req) = self
            .session_request(Method::DELETE, s, &["session"], &[])
            .await?;
        Self::session_send(&url, req).await.map(|_| ())
    }
}

/// `a/b/c.txt` → (`Some("a/b")`, `c.txt`); `c.txt` → (`None`, `c.txt`).
fn split_remote(name: &str) -> (Option<&str>, &str) {
    match name.trim_end_matches('/').rsplit_once('/') {
        Some(("", f)) => (Some("/"), f),
        Some((d, f)) => (Some(d), f),
        None => (None, name),
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The `event:` name and the joined `data:` lines of one SSE event.
fn parse_event(text: &str) -> (String, String) {
    let mut name = String::from("message");
    let mut data: Vec<&str> = Vec::new();
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim().to_owned();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push(v.strip_prefix(' ').unwrap_or(v));
        }
    }
    (name, data.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_and_remote_paths() {
        let (n, d) = parse_event("event: stdout\ndata: \"a\\n\"\n\n");
        assert_eq!((n.as_str(), d.as_str()), ("stdout", "\"a\\n\""));
        let (n, d) = parse_event("event: result\ndata: {\"x\":1}\n\n");
        assert_eq!((n.as_str(), d.as_str()), ("result", "{\"x\":1}"));
        assert_eq!(split_remote("a/b/c.txt"), (Some("a/b"), "c.txt"));
        assert_eq!(split_remote("c.txt"), (None, "c.txt"));
        assert_eq!(split_remote("/mnt/data/x"), (Some("/mnt/data"), "x"));
        assert_eq!(find(b"ab\n\ncd", b"\n\n"), Some(2));
    }
}
