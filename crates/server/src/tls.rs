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

/// Reuses `<data-dir>/tls/{cert,key}.pem` when present so clients that pinned it keep working.
pub async fn self_signed(data_dir: &Path, addr: SocketAddr) -> anyhow::Result<RustlsConfig> {
    let dir = data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    if !cert.exists() || !key.exists() {
        std::fs::create_dir_all(&dir)?;
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
