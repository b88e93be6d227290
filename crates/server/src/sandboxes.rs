//! The one sandbox runtime of the service, built at start and shared by session pools and run
//! command. The runtime re-executes a binary as each sandbox's init: `sandpool` itself in
//! production (`sandpool __sandbox-init`), a small test binary in the server's own tests.

use std::ffi::OsString;
use std::path::PathBuf;

pub use sandpool_net::Ipv4Net;
use sandpool_sandbox::{Runtime, RuntimeConfig};

/// How the service runs sandboxes; part of [`crate::ServeConfig`].
#[derive(Debug, Clone)]
pub struct SandboxSettings {
    /// Binary re-executed as the sandbox init; `None`: the running executable.
    pub init_program: Option<PathBuf>,
    /// Arguments that make `init_program` run the init.
    pub init_args: Vec<OsString>,
    /// Cgroup (in every hierarchy) below which each sandbox gets its own.
    pub cgroup_parent: String,
    /// First host uid of the ranges handed to sandboxes.
    pub uid_base: u32,
    /// How many sandbox ranges (65,536 uids each) follow `uid_base`: this instance's host uid
    /// range, which no other instance on the host may overlap.
    pub uid_slots: u32,
    /// Host-wide registry of the instances' claims (see [`crate::instance`]).
    pub registry: PathBuf,
    /// Egress network slots; `None` disables egress (pools asking for it fail to start sessions).
    pub egress: Option<sandpool_net::NetConfig>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            init_program: None,
            init_args: vec!["__sandbox-init".into()],
            cgroup_parent: DEFAULT_CGROUP_PARENT.into(),
            uid_base: DEFAULT_UID_BASE,
            uid_slots: sandpool_sandbox::DEFAULT_UID_SLOTS,
            registry: PathBuf::from(crate::instance::DEFAULT_REGISTRY),
            egress: Some(sandpool_net::NetConfig::default()),
        }
    }
}

/// Cgroup parent of the service's sandboxes unless configured.
pub const DEFAULT_CGROUP_PARENT: &str = "sandpool";
/// First host uid of sandboxes unless configured.
pub const DEFAULT_UID_BASE: u32 = 1_000_000_000;
/// Host uids below this belong to the host's own users and system accounts.
pub const MIN_UID_BASE: u32 = 65_536;
/// Host uids each sandbox takes (its own uids 0..65536).
const UIDS_PER_SANDBOX: u32 = 65_536;

/// Egress slots on `bridge` with `subnet`. The nftables tables are named after the bridge, so
/// that two services on one host with different bridges never rewrite each other's rules; the
/// default bridge keeps the default table name.
pub fn egress_config(bridge: &str, subnet: sandpool_net::Ipv4Net) -> sandpool_net::NetConfig {
    let default = sandpool_net::NetConfig::default();
    let nft_table = if bridge == default.bridge {
        default.nft_table.clone()
    } else {
        bridge.to_owned()
    };
    sandpool_net::NetConfig {
        bridge: bridge.to_owned(),
        nft_table,
        subnet,
        ..default
    }
}

/// A host bridge name for `--egress-bridge`: an interface name that is also a valid nftables
/// table name and cannot be taken for a slot's veth.
pub fn parse_bridge_name(name: &str) -> Result<String, String> {
    let shape_ok = !name.is_empty()
        && name.len() <= 15
        && name.as_bytes()[0].is_ascii_alphabetic()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !shape_ok {
        return Err(format!(
            "{name:?} is not a bridge name: 1-15 characters of [A-Za-z0-9_-], starting with a letter"
        ));
    }
    if name.starts_with("spv") {
        return Err(format!(
            "{name:?}: names starting with \"spv\" are the sandboxes' own interfaces"
        ));
    }
    Ok(name.to_owned())
}

/// A subnet for `--egress-subnet` in `a.b.c.d/len` form (len 8..=30, no host bits).
pub fn parse_subnet(s: &str) -> Result<sandpool_net::Ipv4Net, String> {
    s.parse::<sandpool_net::Ipv4Net>()
        .map_err(|e| e.to_string())
}

/// A cgroup parent for `--cgroup-parent`: a relative path of `[A-Za-z0-9._-]` segments, created
/// in every hierarchy. Surrounding slashes are dropped.
pub fn parse_cgroup_parent(s: &str) -> Result<String, String> {
    let trimmed = s.trim_matches('/');
    let segment_ok = |seg: &str| {
        !seg.is_empty()
            && seg != "."
            && seg != ".."
            && seg
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
    };
    if trimmed.is_empty() || !trimmed.split('/').all(segment_ok) {
        return Err(format!(
            "{s:?} is not a cgroup parent: a relative path like `sandpool` or `services/sandpool` \
             of [A-Za-z0-9._-] segments"
        ));
    }
    Ok(trimmed.to_owned())
}

/// A first host uid for `--uid-base`: above the host's own accounts, with room for at least one
/// sandbox's range below `u32::MAX`.
pub fn parse_uid_base(s: &str) -> Result<u32, String> {
    let max = u32::MAX - UIDS_PER_SANDBOX;
    let n: u32 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a uid between {MIN_UID_BASE} and {max}"))?;
    if !(MIN_UID_BASE..=max).contains(&n) {
        return Err(format!("{n} is not between {MIN_UID_BASE} and {max}"));
    }
    Ok(n)
}

/// Builds the runtime with its state under `<data-dir>/sandboxes`. A host that cannot set up
/// egress still runs sandboxes without it: the reason is logged and kept for `doctor`.
pub async fn start_runtime(
    data_dir: &std::path::Path,
    settings: &SandboxSettings,
) -> anyhow::Result<Runtime> {
    let init_program = match &settings.init_program {
        Some(p) => p.clone(),
        None => std::env::current_exe()?,
    };
    let mut config = RuntimeConfig::new(data_dir.join("sandboxes"), init_program);
    config.init_args = settings.init_args.clone();
    config.cgroup_parent = settings.cgroup_parent.clone();
    config.uid_base = settings.uid_base;
    config.uid_slots = settings.uid_slots;
    config.egress = settings.egress.clone();
    match Runtime::new(config.clone()).await {
        Ok(runtime) => Ok(runtime),
        Err(e) if config.egress.is_some() => {
            tracing::warn!(error = %e, "egress network setup failed; sandboxes run without egress");
            config.egress = None;
            Ok(Runtime::new(config).await?)
        }
        Err(e) => Err(e.into()),
    }
}

/// The runtime as the handlers see it: present, or the reason this host cannot run sandboxes
/// (the session and run-command routes then answer 503 `SandboxesUnavailable` with it).
#[derive(Clone, Default)]
pub struct Sandboxes {
    runtime: Option<Runtime>,
    unavailable: Option<std::sync::Arc<str>>,
}

impl Sandboxes {
    /// Starts the runtime; a failure is logged and kept, never fatal to the management API.
    pub async fn start(data_dir: &std::path::Path, settings: &SandboxSettings) -> Sandboxes {
        match start_runtime(data_dir, settings).await {
            Ok(runtime) => Sandboxes {
                runtime: Some(runtime),
                unavailable: None,
            },
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "sandboxes unavailable on this host");
                Sandboxes {
                    runtime: None,
                    unavailable: Some(format!("{e:#}").into()),
                }
            }
        }
    }

    /// No runtime, for `why` (answered with the 503 of [`Sandboxes::runtime`]).
    pub fn unavailable(why: String) -> Sandboxes {
        tracing::error!(error = %why, "sandboxes unavailable on this host");
        Sandboxes {
            runtime: None,
            unavailable: Some(why.into()),
        }
    }

    /// The runtime, or the 503 that explains why there is none.
    pub fn runtime(&self) -> Result<&Runtime, sandpool_api::ApiError> {
        self.runtime.as_ref().ok_or_else(|| {
            let why = self
                .unavailable
                .as_deref()
                .unwrap_or("the sandbox runtime was not started");
            sandpool_api::ApiError::new(
                503,
                "SandboxesUnavailable",
                format!(
                    "This host cannot run sandboxes: {why}. Run `sandpool doctor` for the fix."
                ),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_parents() {
        assert_eq!(parse_cgroup_parent("sandpool").as_deref(), Ok("sandpool"));
        assert_eq!(
            parse_cgroup_parent("/services/sandpool.a_b-c/").as_deref(),
            Ok("services/sandpool.a_b-c")
        );
        for bad in ["", "/", "../x", "a/../b", "a//b", "./a", "a b", "a\nb", "ü"] {
            assert!(parse_cgroup_parent(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn uid_bases() {
        assert_eq!(parse_uid_base("1000000000"), Ok(1_000_000_000));
        assert_eq!(parse_uid_base("65536"), Ok(65_536));
        assert_eq!(parse_uid_base("4294901759"), Ok(u32::MAX - 65_536));
        for bad in ["0", "65535", "4294901760", "4294967296", "-1", "1e9", ""] {
            assert!(parse_uid_base(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn bridges_and_subnets() {
        assert_eq!(parse_bridge_name("br-sandbox").as_deref(), Ok("br-sandbox"));
        for bad in ["", "0br", "spv1", "br x", "a-name-too-long-1", "br/x"] {
            assert!(parse_bridge_name(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            parse_subnet("10.9.0.0/16")
                .map(|n| n.to_string())
                .as_deref(),
            Ok("10.9.0.0/16")
        );
        for bad in [
            "10.9.0.1/16",
            "10.9.0.0/31",
            "10.9.0.0",
            "x/16",
            "10.9.0.0/x",
        ] {
            assert!(parse_subnet(bad).is_err(), "{bad:?} accepted");
        }
    }

    /// Tables follow the bridge, so two services with their own bridges never share rules.
    #[test]
    fn egress_tables_are_named_after_the_bridge() {
        let default = sandpool_net::NetConfig::default();
        let same = egress_config(&default.bridge, default.subnet);
        assert_eq!(same.nft_table, default.nft_table);
        let subnet = parse_subnet("10.9.0.0/24").expect("subnet");
        let other = egress_config("br-test", subnet);
        assert_eq!(
            (other.bridge.as_str(), other.nft_table.as_str()),
            ("br-test", "br-test")
        );
        assert_eq!(other.subnet, subnet);
        assert_eq!(other.state_dir, default.state_dir);
    }
}
