//! Issue 11 §4: the data directory is 0700 and every file in it 0600 (database with its WAL and
//! shared-memory files, admin credential, signing keys, TLS key and certificate), created so
//! under umask 000, narrowed again at start when someone widened them, and refused when another
//! user owns the directory. Its own binary: it changes the process's umask.

mod common;

use common::*;
use sandpool_server::testing::{TestServer, TestStore};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// Every entry below `dir` but the sandbox runtime's `sandboxes/` (its own modes), with mode.
fn entries(dir: &Path) -> Vec<(PathBuf, bool, u32)> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("entry");
            let path = e.path();
            if d == dir && e.file_name() == "sandboxes" {
                continue;
            }
            let meta = std::fs::symlink_metadata(&path).expect("metadata");
            let mode = meta.permissions().mode() & 0o7777;
            if meta.is_dir() {
                todo.push(path.clone());
            }
            out.push((path, meta.is_dir(), mode));
        }
    }
    out
}

#[track_caller]
fn assert_private(dir: &Path) {
    let mode = |p: &Path| std::fs::metadata(p).expect("metadata").permissions().mode() & 0o7777;
    assert_eq!(mode(dir), 0o700, "data dir");
    let all = entries(dir);
    for (path, is_dir, m) in &all {
        let want = if *is_dir { 0o700 } else { 0o600 };
        assert_eq!(*m, want, "{}: {m:04o}", path.display());
    }
    let names: Vec<String> = all
        .iter()
        .map(|(p, _, _)| p.strip_prefix(dir).unwrap().display().to_string())
        .collect();
    for expected in [
        "sandpool.db",
        "sandpool.db-wal",
        "sandpool.db-shm",
        "admin.json",
        "keys",
        "tls/key.pem",
        "tls/cert.pem",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
    assert!(
        names
            .iter()
            .any(|n| n.starts_with("keys/") && n.ends_with(".json")),
        "no signing key file: {names:?}"
    );
}

fn widen(dir: &Path) {
    let set = |p: &Path, m: u32| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).expect("chmod")
    };
    for (path, is_dir, _) in entries(dir) {
        set(&path, if is_dir { 0o777 } else { 0o666 });
    }
    set(dir, 0o777);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_is_private_whatever_the_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::empty());
    // The directory does not exist yet: the server creates it, under umask 000.
    let srv = TestServer::start_with(TestStore::Sqlite, |c| {
        std::fs::remove_dir(&c.data_dir).expect("removing the empty temp dir");
        c.create_defaults = false;
        c.tls = sandpool_server::TlsMode::SelfSigned;
    })
    .await;
    let dir = srv.config.data_dir.clone();
    let mut api = Api::from(srv);
    api.group("rg1").await;
    assert_private(&dir);

    // Someone widened everything while it was stopped: the next start narrows it back.
    api.srv.stop();
    widen(&dir);
    assert_eq!(
        std::fs::metadata(dir.join("admin.json"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o666
    );
    api.srv.restart().await;
    assert_private(&dir);
    api.get(&format!("/subscriptions/{SUB}/resourceGroups/rg1"))
        .await
        .assert_status(200);

    // A data dir owned by another user is refused, with a message that says why.
    api.srv.stop();
    std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).expect("chown");
    let refused = sandpool_server::Server::bind(&api.srv.config).await;
    std::os::unix::fs::chown(&dir, Some(0), Some(0)).expect("chown back");
    let e = format!(
        "{:#}",
        refused.err().expect("a foreign data dir is refused")
    );
    assert!(e.contains("owned by uid 65534"), "{e}");
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o022));
}
