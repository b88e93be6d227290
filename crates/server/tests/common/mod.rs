//! Helpers shared by the integration tests: a server plus a small HTTP client that checks the
//! conventions on every answer.
#![allow(dead_code)]

use reqwest::header::HeaderMap;
use reqwest::Method;
use sandpool_server::testing::{TestServer, TestStore};
use serde_json::Value;

pub const SUB: &str = "11111111-2222-3333-4444-555555555555";
pub const V: &str = "api-version=2025-02-02-preview";

/// Generates one `#[tokio::test]` per store for an `async fn(TestStore)`.
#[macro_export]
macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn sqlite() {
                    super::$name(sandpool_server::testing::TestStore::Sqlite).await
                }
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn postgres() {
                    super::$name(sandpool_server::testing::TestStore::Postgres).await
                }
            }
        )*
    };
}

pub struct Resp {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub json: Value,
}

impl Resp {
    /// Reads a whole answer (any request, not only [`Api::raw`]'s) without checking anything.
    pub async fn read(resp: reqwest::Response) -> Resp {
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.expect("body");
        let json = serde_json::from_str(&text).unwrap_or(Value::Null);
        Resp {
            status,
            headers,
            text,
            json,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// Asserts an Azure error answer with this status and code.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.json["error"]["code"], code, "body: {}", self.text);
        assert_eq!(self.header("x-ms-error-code"), Some(code));
        assert!(self.json["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()));
        assert!(
            self.json["error"]["details"].is_array(),
            "body: {}",
            self.text
        );
        assert!(
            self.json["error"].get("target").is_some(),
            "body: {}",
            self.text
        );
    }

    #[track_caller]
    pub fn assert_status(&self, status: u16) {
        assert_eq!(self.status, status, "body: {}", self.text);
    }
}

pub struct Api {
    pub srv: TestServer,
    pub http: reqwest::Client,
}

impl Api {
    pub async fn start(store: TestStore) -> Api {
        Self::from(TestServer::start_with(store, |c| c.create_defaults = false).await)
    }

    pub fn from(srv: TestServer) -> Api {
        let http = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .build()
            .expect("http client");
        Api { srv, http }
    }

    /// `path` may hold a query; `api-version` is added unless `raw` paths are used.
    pub fn url(&self, path: &str) -> String {
        let sep = if path.contains('?') { '&' } else { '?' };
        format!("{}{path}{sep}{V}", self.srv.base_url)
    }

    pub async fn raw(
        &self,
        method: Method,
        url: &str,
        body: Option<Vec<u8>>,
        headers: &[(&str, &str)],
    ) -> Resp {
        let mut req = self.http.request(method, url);
        // Every request carries the admin's token unless the test sends its own.
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"))
        {
            req = req.header("authorization", self.admin_auth(url));
        }
        for (k, v) in headers.iter().filter(|(_, v)| !v.is_empty()) {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        let r = Resp::read(req.send().await.expect("request")).await;
        // Conventions every answer keeps.
        assert!(
            r.headers.contains_key("x-ms-request-id"),
            "no x-ms-request-id"
        );
        assert!(r.headers.contains_key("date"), "no Date");
        if !r.text.is_empty() && r.json != Value::Null {
            assert_eq!(
                r.header("content-type"),
                Some("application/json"),
                "JSON answer without application/json"
            );
        }
        if r.status >= 400 {
            assert_eq!(
                r.json["error"]["code"].as_str(),
                r.header("x-ms-error-code"),
                "{}",
                r.text
            );
        }
        r
    }

    /// The admin's `Authorization` value for `url`: a session-API token under a pool's
    /// management endpoint, a management token elsewhere. (Send `("authorization", "")` to
    /// `raw` for no token at all.)
    pub fn admin_auth(&self, url: &str) -> String {
        let path = url.split('?').next().unwrap_or(url).to_ascii_lowercase();
        if path.contains("/sessionpools/") && !path.contains("/providers/") {
            self.srv.sessions_header()
        } else {
            self.srv.admin_header()
        }
    }

    pub async fn call(&self, method: Method, path: &str, body: Option<Value>) -> Resp {
        let body = body.map(|b| serde_json::to_vec(&b).expect("json"));
        self.raw(method, &self.url(path), body, &[]).await
    }

    pub async fn get(&self, path: &str) -> Resp {
        self.call(Method::GET, path, None).await
    }

    pub async fn put(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PUT, path, Some(body)).await
    }

    pub async fn patch(&self, path: &str, body: Value) -> Resp {
        self.call(Method::PATCH, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Resp {
        self.call(Method::DELETE, path, None).await
    }

    /// Follows a 202's Location (absolute, under the public URL) and returns the poll answer.
    pub async fn poll_location(&self, accepted: &Resp) -> Resp {
        accepted.assert_status(202);
        let loc = accepted
            .header("location")
            .expect("Location on 202")
            .to_owned();
        assert!(
            loc.starts_with(&self.srv.base_url),
            "Location {loc} not absolute under {}",
            self.srv.base_url
        );
        self.raw(Method::GET, &loc, None, &[]).await
    }

    pub async fn group(&self, name: &str) -> Resp {
        let r = self
            .put(
                &format!("/subscriptions/{SUB}/resourcegroups/{name}"),
                serde_json::json!({"location": "westus"}),
            )
            .await;
        assert!(r.status == 201 || r.status == 200, "{}", r.text);
        r
    }
}

pub fn pool_path(rg: &str, name: &str) -> String {
    format!("/subscriptions/{SUB}/resourceGroups/{rg}/providers/Microsoft.App/sessionPools/{name}")
}

/// Percent-encodes everything but RFC 3986's unreserved characters (query values, names).
pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
