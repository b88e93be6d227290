//! TLS termination: PEM files, or a self-signed certificate generated once into the data dir.

use anyhow::Context as _;
use axum_server::tls_rustls::RustlsConfig;
use std::net::SocketAddr;
use std::path::Path;

fn install_provider() {
    // Only ring is linked (aws-lc-rs needs a long C build); rustls still wants it named.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

pub async fn from_files(cert: &Path, key: &Path) -> anyhow::Result<RustlsConfig> {
    install_provider();
    RustlsConfig::from_pem_file(cert, key)
        .await
        .with_context(|| {
            format!(
                "loading TLS certificate {} and key {}",
                cert.display(),
                key.display()
            )
        })
}

/// Where `--tls-self-signed` keeps its certificate, relative to the data dir: clients trust it
/// with `sandpool --ca-cert`, `REQUESTS_CA_BUNDLE`, `curl --cacert`.
pub const SELF_SIGNED_CERT: &str = "tls/cert.pem";
/// Its private key (0600), relative to the data dir.
pub const SELF_SIGNED_KEY: &str = "tls/key.pem";

/// Reuses `<data-dir>/tls/{cert,key}.pem` when present so clients that pinned it keep working.
pub async fn self_signed(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<RustlsConfig> {
    let (cert, key) = (
        data_dir.join(SELF_SIGNED_CERT),
        data_dir.join(SELF_SIGNED_KEY),
    );
    let dir = cert.parent().unwrap_or(data_dir);
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(dir)?;
        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        if !addr.ip().is_unspecified() && !addr.ip().is_loopback() {
            names.push(addr.ip().to_string());
        }
        let ck = rcgen::generate_simple_self_signed(names)
            .context("generating a self-signed certificate")?;
        std::fs::write(&cert, ck.cert.pem())?;
        write_private(&key, ck.signing_key.serialize_pem().as_bytes())?;
    }
    from_files(&cert, &key).await
}

fn write_private(path: &Path, data: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(data)?;
    Ok(())
}
