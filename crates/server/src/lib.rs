//! The sandpool service: the axum application (routes, conventions, auth), the store, the pool
//! manager, executions, files, run command and metrics.

use std::net::SocketAddr;
use std::path::PathBuf;

/// How `sandpool serve` terminates TLS.
#[derive(Debug, Clone, Default)]
pub enum TlsMode {
    /// Plain HTTP.
    #[default]
    None,
    /// PEM certificate chain and private key files.
    Files { cert: PathBuf, key: PathBuf },
    /// A self-signed certificate generated at start for the listen host (stored in the data dir).
    SelfSigned,
}

/// Everything `sandpool serve` needs; the CLI maps its flags onto this.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: SQLite file in the data dir. Otherwise `sqlite://…` or `postgres://…`.
    pub database_url: Option<String>,
    /// Base of every absolute URL the API returns; `None`: derived from `listen` and TLS.
    pub public_url: Option<String>,
    pub tls: TlsMode,
    /// Create resource group `default` and Shell pool `default` on first start.
    pub create_defaults: bool,
    pub max_upload_size: u64,
    pub command_retention: std::time::Duration,
}

impl Default for ServeConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("/var/lib/sandpool"),
            database_url: None,
            public_url: None,
            tls: TlsMode::None,
            create_defaults: true,
            max_upload_size: 128 * 1024 * 1024,
            command_retention: std::time::Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Runs `sandpool serve` until SIGTERM or SIGINT.
pub async fn serve(config: ServeConfig) -> anyhow::Result<()> {
    let _ = config;
    anyhow::bail!("not implemented")
}
