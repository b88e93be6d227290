//! Generic ARM-shaped operations on any resource id: GET, PUT, PATCH, DELETE, list, and the
//! polling of long-running operations (`202` + `Azure-AsyncOperation` or `Location`).

use std::time::{Duration, Instant};

use reqwest::header::{HeaderMap, RETRY_AFTER};
use reqwest::{Method, StatusCode, Url};
use sandpool_api::{ApiError, ErrorBody, Resource};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::{Client, ClientError, MANAGEMENT_AUDIENCE};

/// An answer as received: status, headers and the JSON body if there was one.
#[derive(Debug, Clone)]
pub struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Option<Value>,
}

impl RawResponse {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Reads an answer; any 4xx/5xx becomes [`ClientError::Api`] with the server's code and message.
async fn read(url: &Url, resp: reqwest::Response) -> Result<RawResponse, ClientError> {
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp
        .bytes()
        .await
        .map_err(|source| ClientError::Transport {
            url: url.to_string(),
            source,
        })?;
    let body: Option<Value> = if bytes.iter().all(u8::is_ascii_whitespace) {
        None
    } else {
        match serde_json::from_slice(&bytes) {
            Ok(v) => Some(v),
            Err(_) if status.is_client_error() || status.is_server_error() => None,
            Err(e) => {
                return Err(ClientError::InvalidResponse {
                    url: url.to_string(),
                    status: status.as_u16(),
                    message: format!("the body is not JSON: {e}"),
                })
            }
        }
    };
    if status.is_client_error() || status.is_server_error() {
        return Err(ClientError::Api(api_error(
            status,
            &headers,
            body.as_ref(),
            &bytes,
        )));
    }
    Ok(RawResponse {
        status: status.as_u16(),
        headers,
        body,
    })
}

fn api_error(
    status: StatusCode,
    headers: &HeaderMap,
    body: Option<&Value>,
    raw: &[u8],
) -> ApiError {
    if let Some(mut e) = body
        .and_then(|b| serde_json::from_value::<ErrorBody>(b.clone()).ok())
        .map(|b| b.error)
    {
        e.status = status.as_u16();
        return e;
    }
    // Not the API's error body (a proxy in between, say): keep what there is.
    let code = headers
        .get("x-ms-error-code")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
        .unwrap_or_else(|| format!("Http{}", status.as_u16()));
    let text = String::from_utf8_lossy(raw);
    let text: String = text.chars().take(300).collect();
    let message = if text.trim().is_empty() {
        status.canonical_reason().unwrap_or("error").to_string()
    } else {
        text.trim().to_string()
    };
    ApiError::new(status.as_u16(), code, message)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    headers
        .get(RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

fn header_url(headers: &HeaderMap, name: &str) -> Result<Option<Url>, ClientError> {
    let Some(v) = headers.get(name) else {
        return Ok(None);
    };
    let s = v.to_str().map_err(|_| ClientError::InvalidResponse {
        url: String::new(),
        status: 202,
        message: format!("header {name} is not text"),
    })?;
    Url::parse(s)
        .map(Some)
        .map_err(|e| ClientError::InvalidResponse {
            url: s.to_string(),
            status: 202,
            message: format!("header {name} is not an absolute URL: {e}"),
        })
}

/// Deserialises a resource body into a typed value.
pub(crate) fn typed<T: DeserializeOwned>(v: Value) -> Result<T, ClientError> {
    serde_json::from_value(v.clone()).map_err(|e| ClientError::InvalidResponse {
        url: v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
        status: 200,
        message: format!("unexpected resource shape: {e}"),
    })
}

impl Client {
    /// Sends any request to a path of this endpoint and reads the answer.
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
    ) -> Result<RawResponse, ClientError> {
        let url = self.url(path, query)?;
        self.request_url(method, url, body).await
    }

    /// Like [`Client::request`] for an absolute URL (a `Location` or `nextLink`).
    pub async fn request_url(
        &self,
        method: Method,
        url: Url,
        body: Option<&Value>,
    ) -> Result<RawResponse, ClientError> {
        let resp = self
            .send(method, url.clone(), MANAGEMENT_AUDIENCE, body)
            .await?;
        read(&url, resp).await
    }

    /// `GET` a resource by its id.
    pub async fn get(&self, id: &str) -> Result<Value, ClientError> {
        let r = self.request(Method::GET, id, &[], None).await?;
        r.body.ok_or_else(|| ClientError::InvalidResponse {
            url: id.to_string(),
            status: r.status,
            message: "empty body".into(),
        })
    }

    /// `PUT` a resource; waits for a long-running creation and answers the resource.
    pub async fn put(&self, id: &str, body: &Value) -> Result<Value, ClientError> {
        self.write(Method::PUT, id, body).await
    }

    /// `PATCH` a resource; waits for a long-running update and answers the resource.
    pub async fn patch(&self, id: &str, body: &Value) -> Result<Value, ClientError> {
        self.write(Method::PATCH, id, body).await
    }

    async fn write(&self, method: Method, id: &str, body: &Value) -> Result<Value, ClientError> {
        let r = self.request(method, id, &[], Some(body)).await?;
        if r.status == 202 {
            self.wait(&r.headers).await?;
            return self.get(id).await;
        }
        match r.body {
            Some(b) => Ok(b),
            None => self.get(id).await,
        }
    }

    /// `DELETE` a resource and wait until it is gone.
    pub async fn delete(&self, id: &str) -> Result<(), ClientError> {
        let r = self.request(Method::DELETE, id, &[], None).await?;
        if r.status == 202 {
            self.wait(&r.headers).await?;
        }
        Ok(())
    }

    /// Every item of a list, following `nextLink`.
    pub async fn list(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Value>, ClientError> {
        let mut url = self.url(path, query)?;
        let mut out = Vec::new();
        loop {
            let r = self.request_url(Method::GET, url.clone(), None).await?;
            let body = r.body.unwrap_or(Value::Null);
            match body.get("value") {
                Some(Value::Array(items)) => out.extend(items.iter().cloned()),
                _ => {
                    return Err(ClientError::InvalidResponse {
                        url: url.to_string(),
                        status: r.status,
                        message: "a list answer has no 'value' array".into(),
                    })
                }
            }
            match body
                .get("nextLink")
                .and_then(Value::as_str)
                .filter(|s| !s.is_empty())
            {
                Some(next) => {
                    let next = Url::parse(next).map_err(|e| ClientError::InvalidResponse {
                        url: url.to_string(),
                        status: r.status,
                        message: format!("nextLink is not an absolute URL: {e}"),
                    })?;
                    if next == url {
                        break; // a server bug would otherwise loop forever
                    }
                    url = next;
                }
                None => break,
            }
        }
        Ok(out)
    }

    pub(crate) async fn get_resource(&self, id: &str) -> Result<Resource, ClientError> {
        typed(self.get(id).await?)
    }

    pub(crate) async fn put_resource(
        &self,
        id: &str,
        body: &Value,
    ) -> Result<Resource, ClientError> {
        typed(self.put(id, body).await?)
    }

    pub(crate) async fn list_resources(
        &self,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<Vec<Resource>, ClientError> {
        self.list(path, query)
            .await?
            .into_iter()
            .map(typed)
            .collect()
    }

    /// Polls the operation a `202` pointed at until it has finished.
    ///
    /// `Azure-AsyncOperation` answers `{"status":…}` until a terminal status; `Location` answers
    /// `202` while running and anything else when done. Either can carry `Retry-After`.
    pub async fn wait(&self, headers: &HeaderMap) -> Result<Option<Value>, ClientError> {
        let started = Instant::now();
        let mut delay = retry_after(headers);
        if let Some(op) = header_url(headers, "azure-asyncoperation")? {
            loop {
                self.pause(delay, started, &op).await?;
                let r = self.request_url(Method::GET, op.clone(), None).await?;
                let body = r.body.clone().unwrap_or(Value::Null);
                let status = body
                    .get("status")
                    .and_then(Value::as_str)
                    .unwrap_or("InProgress");
                match status.to_ascii_lowercase().as_str() {
                    "succeeded" => return Ok(None),
                    "failed" | "canceled" | "cancelled" => {
                        let err = body
                            .get("error")
                            .and_then(|e| serde_json::from_value::<ApiError>(e.clone()).ok())
                            .unwrap_or_else(|| {
                                ApiError::new(
                                    r.status,
                                    "OperationFailed",
                                    format!("the operation ended as {status}"),
                                )
                            });
                        return Err(ClientError::Api(ApiError {
                            status: r.status,
                            ..err
                        }));
                    }
                    _ => delay = retry_after(&r.headers),
                }
            }
        }
        if let Some(loc) = header_url(headers, "location")? {
            loop {
                self.pause(delay, started, &loc).await?;
                let r = self.request_url(Method::GET, loc.clone(), None).await?;
                if r.status != 202 {
                    return Ok(r.body);
                }
                delay = retry_after(&r.headers);
            }
        }
        Ok(None)
    }

    async fn pause(
        &self,
        hint: Option<Duration>,
        started: Instant,
        url: &Url,
    ) -> Result<(), ClientError> {
        if started.elapsed() > self.poll_timeout {
            return Err(ClientError::Timeout {
                url: url.to_string(),
            });
        }
        let d = hint.unwrap_or(self.poll_interval).min(self.poll_interval);
        tokio::time::sleep(d).await;
        Ok(())
    }
}
