//! The one sandbox runtime of the service, built at start and shared by session pools and run
//! command. The runtime re-executes a binary as each sandbox's init: `sandpool` itself in
//! production (`sandpool __sandbox-init`), a small test binary in the server's own tests.

use std::ffi::OsString;
use std::path::PathBuf;

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
    /// Egress network slots; `None` disables egress (pools asking for it fail to start sessions).
    pub egress: Option<sandpool_net::NetConfig>,
}

impl Default for SandboxSettings {
    fn default() -> Self {
        SandboxSettings {
            init_program: None,
            init_args: vec!["__sandbox-init".into()],
            cgroup_parent: "sandpool".into(),
            uid_base: 1_000_000_000,
            egress: Some(sandpool_net::NetConfig::default()),
        }
    }
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
