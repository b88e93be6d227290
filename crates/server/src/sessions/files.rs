//! Files of a session under `/mnt/data`: upload (multipart, streamed into the sandbox), list,
//! metadata, download (streamed out), delete, and the legacy upload/content routes.
//!
//! Paths are checked here for the API's rules (relative, or absolute below `/mnt/data`; no `..`,
//! no NUL) and then resolved by the sandbox's init under the `/mnt/data` confinement, which also
//! refuses symlinks that lead out.

use super::{identifier, rfc3339, Ctx, DataError, DataResult, PoolPath, PREFIX};
use crate::http::{json, Query};
use crate::routes::Routes;
use crate::AppState;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Multipart, Path, State};
use axum::handler::Handler;
use axum::http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use sandpool_api::wire::{FileUpload, FilesQuery};
use sandpool_api::ApiError;
use sandpool_sandbox::{FileInfo, Sandbox};
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

const ROOT: &str = "/mnt/data";

/// How much of an oversized upload is read (and dropped) before answering 413, so that a client
/// still sending gets the error body rather than a reset connection.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

type NamePath = Path<(String, String, String, String)>;

pub fn routes(r: Routes) -> Routes {
    let files = format!("{PREFIX}/files");
    let one = format!("{PREFIX}/files/{{name}}");
    r.add(
        Method::POST,
        &files,
        "Upload a file (multipart field 'file') to /mnt/data[/path]".into(),
        &[200, 400, 413],
        true,
        upload.layer(DefaultBodyLimit::disable()),
    )
    .params::<FilesQuery>()
    .request_as::<FileUpload>("multipart/form-data")
    .add(
        Method::POST,
        &format!("{files}/upload"),
        "Upload a file (2024-02-02-preview route)".into(),
        &[200, 400, 413],
        true,
        upload.layer(DefaultBodyLimit::disable()),
    )
    .params::<FilesQuery>()
    .request_as::<FileUpload>("multipart/form-data")
    .add(
        Method::GET,
        &files,
        "List files of /mnt/data[/path]".into(),
        &[200, 400],
        false,
        list,
    )
    .params::<FilesQuery>()
    .add(
        Method::GET,
        &one,
        "A file's metadata".into(),
        &[200, 400, 404],
        false,
        metadata,
    )
    .params::<FilesQuery>()
    .add(
        Method::DELETE,
        &one,
        "Delete a file".into(),
        &[204, 400, 404],
        false,
        delete,
    )
    .params::<FilesQuery>()
    .add(
        Method::GET,
        &format!("{one}/content"),
        "A file's content (streamed)".into(),
        &[200, 400, 404],
        false,
        content,
    )
    .params::<FilesQuery>()
    .response_raw(200, "application/octet-stream")
    .add(
        Method::GET,
        &format!("{files}/content/{{name}}"),
        "A file's content (2024-02-02-preview route)".into(),
        &[200, 400, 404],
        false,
        content,
    )
    .params::<FilesQuery>()
    .response_raw(200, "application/octet-stream")
}

fn invalid_path(p: &str, why: &str) -> DataError {
    ApiError::new(400, "InvalidPath", format!("Invalid path {p:?}: {why}."))
        .with_target("path")
        .into()
}

/// `p` as an absolute path below `/mnt/data`: relative to `base` (itself below the root), or
/// absolute starting with `/mnt/data`.
fn resolve(base: &str, p: &str) -> DataResult<String> {
    if p.contains('\0') {
        return Err(invalid_path(p, "it contains a NUL character"));
    }
    let full = if p.starts_with('/') {
        if p != ROOT && !p.starts_with(&format!("{ROOT}/")) {
            return Err(invalid_path(p, "absolute paths must be below /mnt/data"));
        }
        p.to_owned()
    } else {
        format!("{base}/{p}")
    };
    let mut parts = Vec::new();
    for c in full.split('/') {
        match c {
            "" | "." => {}
            ".." => return Err(invalid_path(p, "'..' is not allowed")),
            c => parts.push(c),
        }
    }
    Ok(format!("/{}", parts.join("/")))
}

/// The directory named by the `path` query parameter (default: the root).
fn directory(q: &Query) -> DataResult<String> {
    resolve(ROOT, q.get("path").unwrap_or(""))
}

fn content_type(name: &str) -> &'static str {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "log" | "md" | "py" | "sh" | "rs" | "c" | "h") => "text/plain",
        Some("csv") => "text/csv",
        Some("json") => "application/json",
        Some("html" | "htm") => "text/html",
        Some("png") => "image/png",
        Some("jpg" | "jpeg") => "image/jpeg",
        Some("gif") => "image/gif",
        Some("svg") => "image/svg+xml",
        Some("pdf") => "application/pdf",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

fn file_json(info: &FileInfo) -> Value {
    let dir = match info.path.rsplit_once('/') {
        Some(("", _)) | None => "/",
        Some((d, _)) => d,
    };
    let modified = time::OffsetDateTime::from(info.modified);
    json!({
        "name": info.name,
        "directory": dir,
        "type": if info.is_dir { "Directory" } else { "File" },
        "contentType": if info.is_dir { Value::Null } else { content_type(&info.name).into() },
        "sizeInBytes": info.size,
        "lastModifiedAt": rfc3339(modified),
    })
}

/// The session's sandbox with file operations confined to `/mnt/data`.
async fn sandbox(ctx: &Ctx, q: &Query) -> DataResult<Sandbox> {
    let ident = identifier(q)?;
    let session = ctx.manager.acquire(&ctx.key, &ident).await?;
    Ok(session.sandbox().confined(ROOT))
}

fn file_name(name: &str) -> DataResult<&str> {
    if name.is_empty() || name == "." || name == ".." || name.contains(['/', '\0']) {
        return Err(invalid_path(
            name,
            "a file name must not be empty, '.', '..' or hold '/'",
        ));
    }
    Ok(name)
}

async fn upload(
    State(s): State<AppState>,
    q: Query,
    Path(p): PoolPath,
    mut multipart: Multipart,
) -> DataResult<Response> {
    let ctx = Ctx::new(&s, p).await?;
    let mut dir = directory(&q)?;
    let sb = sandbox(&ctx, &q).await?;
    let limit = ctx.max_upload_size;
    let seen = Arc::new(AtomicU64::new(0));
    let mut written = None;
    while let Some(field) = multipart.next_field().await.map_err(multipart_error)? {
        match field.name().unwrap_or("") {
            "path" => {
                let text = field.text().await.map_err(multipart_error)?;
                dir = resolve(ROOT, &text)?;
            }
            "file" if written.is_none() => {
                let name = file_name(field.file_name().unwrap_or(""))?.to_owned();
                let target = format!("{dir}/{name}");
                let counter = seen.clone();
                let stream = field.map(move |chunk| match chunk {
                    Ok(b) => {
                        let n =
                            counter.fetch_add(b.len() as u64, Ordering::Relaxed) + b.len() as u64;
                        if n > limit {
                            Err(std::io::Error::other("upload too large"))
                        } else {
                            Ok(b)
                        }
                    }
                    Err(e) => Err(std::io::Error::other(e)),
                });
                let reader = tokio_util::io::StreamReader::new(Box::pin(stream));
                match sb.write_file(&target, reader).await {
                    Ok(info) => written = Some(info),
                    Err(e) => {
                        if seen.load(Ordering::Relaxed) > limit {
                            let _ = sb.remove(&target).await;
                            drain(&mut multipart, &seen).await;
                            return Err(ApiError::payload_too_large(limit).into());
                        }
                        return Err(e.into());
                    }
                }
            }
            _ => {
                // Unknown fields are skipped without being kept.
                let mut f = field;
                while let Ok(Some(_)) = f.chunk().await {}
            }
        }
    }
    let info = written.ok_or_else(|| {
        ApiError::invalid_request_content("The multipart body has no 'file' field.")
            .with_target("file")
    })?;
    Ok(json(StatusCode::OK, &file_json(&info)))
}

async fn drain(multipart: &mut Multipart, seen: &AtomicU64) {
    while let Ok(Some(mut f)) = multipart.next_field().await {
        while let Ok(Some(c)) = f.chunk().await {
            if seen.fetch_add(c.len() as u64, Ordering::Relaxed) > DRAIN_LIMIT {
                return;
            }
        }
    }
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> DataError {
    ApiError::invalid_request_content(format!("The multipart body could not be read: {e}.")).into()
}

async fn list(State(s): State<AppState>, q: Query, Path(p): PoolPath) -> DataResult<Response> {
    let ctx = Ctx::new(&s, p).await?;
    let dir = directory(&q)?;
    let recursive = q
        .get("recursive")
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let sb = sandbox(&ctx, &q).await?;
    let mut infos = sb.list_dir(&dir, recursive).await?;
    infos.sort_by(|a, b| a.path.cmp(&b.path));
    let value: Vec<Value> = infos.iter().map(file_json).collect();
    Ok(json(
        StatusCode::OK,
        &json!({"value": value, "nextLink": null}),
    ))
}

/// The file `name` (below the `path` query directory) of the request's session.
async fn target(
    s: &AppState,
    q: &Query,
    (sub, rg, pool, name): (String, String, String, String),
) -> DataResult<(Sandbox, String)> {
    let ctx = Ctx::new(s, (sub, rg, pool)).await?;
    let dir = directory(q)?;
    let path = resolve(&dir, &name)?;
    if path == ROOT {
        return Err(invalid_path(&name, "it names /mnt/data itself"));
    }
    Ok((sandbox(&ctx, q).await?, path))
}

async fn metadata(State(s): State<AppState>, q: Query, Path(p): NamePath) -> DataResult<Response> {
    let (sb, path) = target(&s, &q, p).await?;
    let info = sb.stat(&path).await?;
    Ok(json(StatusCode::OK, &file_json(&info)))
}

async fn delete(State(s): State<AppState>, q: Query, Path(p): NamePath) -> DataResult<Response> {
    let (sb, path) = target(&s, &q, p).await?;
    sb.remove(&path).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn content(State(s): State<AppState>, q: Query, Path(p): NamePath) -> DataResult<Response> {
    let (sb, path) = target(&s, &q, p).await?;
    let file = sb.read_file(&path).await?;
    if file.info.is_dir {
        return Err(invalid_path(&path, "it is a directory"));
    }
    let size = file.size();
    let ctype = content_type(&file.info.name);
    let stream = futures::stream::unfold(Some(file), |f| async move {
        let mut f = f?;
        match f.next_chunk().await {
            Ok(Some(b)) => Some((Ok(b), Some(f))),
            Ok(None) => None,
            Err(e) => Some((Err(std::io::Error::other(e.to_string())), None)),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    let h = resp.headers_mut();
    h.insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    h.insert(CONTENT_LENGTH, HeaderValue::from(size));
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_rules() {
        assert_eq!(resolve(ROOT, "").ok().as_deref(), Some("/mnt/data"));
        assert_eq!(
            resolve(ROOT, "a/./b").ok().as_deref(),
            Some("/mnt/data/a/b")
        );
        assert_eq!(
            resolve(ROOT, "/mnt/data").ok().as_deref(),
            Some("/mnt/data")
        );
        assert_eq!(
            resolve(ROOT, "/mnt/data/x/").ok().as_deref(),
            Some("/mnt/data/x")
        );
        assert_eq!(
            resolve("/mnt/data/d", "f").ok().as_deref(),
            Some("/mnt/data/d/f")
        );
        for bad in [
            "../etc",
            "a/../../b",
            "/etc/passwd",
            "/mnt/database",
            "a\0b",
            "/mnt/data/..",
        ] {
            assert!(resolve(ROOT, bad).is_err(), "{bad:?}");
        }
        assert!(file_name("a/b").is_err());
        assert!(file_name("..").is_err());
        assert!(file_name("ok.txt").is_ok());
    }
}
