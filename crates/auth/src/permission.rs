//! Token audiences, the shape of an access check ([`Requirement`]) and which paths are public
//! (for the server's `api-version` exemption). What each route requires is declared with the
//! route ([`crate::route_rules`]).

/// Which API a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Audience {
    /// `https://management.azure.com/` (or the older `https://management.core.windows.net/`).
    Management,
    /// `https://dynamicsessions.io`: the session pool data plane.
    DynamicSessions,
}

/// Canonical management audience; tokens carry exactly this or [`MANAGEMENT_AUDIENCE_LEGACY`].
pub const MANAGEMENT_AUDIENCE: &str = "https://management.azure.com/";
/// What the Azure CLI asks for by default.
pub const MANAGEMENT_AUDIENCE_LEGACY: &str = "https://management.core.windows.net/";
pub const DYNAMIC_SESSIONS_AUDIENCE: &str = "https://dynamicsessions.io";

impl Audience {
    /// Maps a requested `resource` or `scope` (`https://dynamicsessions.io/.default`,
    /// `https://management.azure.com//.default`, with or without trailing slash) to the
    /// audience and the exact `aud` string the token will carry. `None` if unknown.
    pub fn from_resource(resource_or_scope: &str) -> Option<(Audience, &'static str)> {
        let r = resource_or_scope.trim();
        let r = r
            .strip_suffix("/.default")
            .unwrap_or(r)
            .trim_end_matches('/');
        match r.to_ascii_lowercase().as_str() {
            "https://management.azure.com" => Some((Audience::Management, MANAGEMENT_AUDIENCE)),
            "https://management.core.windows.net" => {
                Some((Audience::Management, MANAGEMENT_AUDIENCE_LEGACY))
            }
            "https://dynamicsessions.io" => {
                Some((Audience::DynamicSessions, DYNAMIC_SESSIONS_AUDIENCE))
            }
            _ => None,
        }
    }

    /// The audience an `aud` claim stands for; `None` for anything this server does not issue.
    pub fn from_claim(aud: &str) -> Option<Audience> {
        match aud {
            MANAGEMENT_AUDIENCE | MANAGEMENT_AUDIENCE_LEGACY => Some(Audience::Management),
            DYNAMIC_SESSIONS_AUDIENCE => Some(Audience::DynamicSessions),
            _ => None,
        }
    }

    pub fn canonical(self) -> &'static str {
        match self {
            Audience::Management => MANAGEMENT_AUDIENCE,
            Audience::DynamicSessions => DYNAMIC_SESSIONS_AUDIENCE,
        }
    }
}

/// An access check: met when a role assigned at or above `scope` grants `action` or
/// `data_action` (either one suffices).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requirement {
    pub audience: Audience,
    pub scope: String,
    pub action: Option<String>,
    pub data_action: Option<String>,
}

fn segments(path: &str) -> Vec<String> {
    path.split('/')
        .filter(|s| !s.is_empty())
        .map(percent_decode)
        .collect()
}

/// Whether `path` (no query; raw or percent-decoded) is a public route: token endpoints and
/// discovery (with or without a tenant segment in front, as MSAL sends them), health, OpenAPI.
/// The server's other conventions (the `api-version` check) exempt exactly these too, so a
/// token client that knows nothing of ARM is never asked for one.
pub fn is_public_path(path: &str) -> bool {
    is_public(&segments(path))
}

fn is_public(segs: &[String]) -> bool {
    let lower: Vec<String> = segs.iter().map(|s| s.to_ascii_lowercase()).collect();
    let l: Vec<&str> = lower.iter().map(String::as_str).collect();
    matches!(
        l.as_slice(),
        ["healthz"]
            | ["readyz"]
            | ["openapi.json"]
            | ["metadata", "endpoints"]
            | [".well-known", ..]
            | ["oauth2", "token"]
            | ["oauth2", "v2.0", "token"]
            | [_, "oauth2", "token"]
            | [_, "oauth2", "v2.0", "token"]
            | [_, ".well-known", ..]
            | [_, "v2.0", ".well-known", ..]
    )
}

/// Decodes `%XX` escapes; malformed escapes are kept as they are.
pub(crate) fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok();
            if let Some(b) = hex.and_then(|h| u8::from_str_radix(h, 16).ok()) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn public_paths() {
        for p in [
            "/healthz",
            "/readyz",
            "/openapi.json",
            "/.well-known/jwks.json",
            "/.well-known/openid-configuration",
            "/oauth2/token",
            "/OAuth2/Token",
            "/oauth2/v2.0/token",
            "/my-tenant/oauth2/v2.0/token",
            "/my-tenant/v2.0/.well-known/openid-configuration",
        ] {
            assert!(is_public_path(p), "{p}");
        }
        for p in [
            "/metrics",
            "/",
            "/subscriptions/s/resourceGroups",
            "/oauth2",
        ] {
            assert!(!is_public_path(p), "{p}");
        }
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%zz%4"), "a%zz%4");
        assert_eq!(percent_decode("%41%42"), "AB");
        assert_eq!(percent_decode("%4"), "%4");
    }

    #[test]
    fn audiences_from_resource_and_scope() {
        for (input, aud) in [
            ("https://management.azure.com/", MANAGEMENT_AUDIENCE),
            ("https://management.azure.com", MANAGEMENT_AUDIENCE),
            (
                "https://management.azure.com//.default",
                MANAGEMENT_AUDIENCE,
            ),
            ("https://management.azure.com/.default", MANAGEMENT_AUDIENCE),
            (
                "https://management.core.windows.net/",
                MANAGEMENT_AUDIENCE_LEGACY,
            ),
            (
                "https://dynamicsessions.io/.default",
                DYNAMIC_SESSIONS_AUDIENCE,
            ),
            ("https://DynamicSessions.io", DYNAMIC_SESSIONS_AUDIENCE),
        ] {
            assert_eq!(
                Audience::from_resource(input).map(|a| a.1),
                Some(aud),
                "{input}"
            );
        }
        assert_eq!(
            Audience::from_resource("https://graph.microsoft.com/.default"),
            None
        );
        assert_eq!(Audience::from_resource(""), None);
    }
}
