//! The data directory is private to the server: the directory and every directory the server
//! keeps in it are 0700, every file 0600 (the database holds kubeconfigs and secret hashes, the
//! directory holds the admin credential, the signing keys and the TLS key), whatever the umask
//! the server was started with. Checked at start and after everything is created: a wider mode
//! is narrowed (and logged); a directory owned by another user is refused.
//!
//! `sandboxes/` is the sandbox runtime's own (crates/sandbox creates it 0700 and sets the modes
//! inside, some of which sandboxes rely on); it is neither walked nor changed here.

use anyhow::{bail, Context as _};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const DIR_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// Entries of the data directory that belong to someone else and are left alone.
const NOT_OURS: &[&str] = &["sandboxes"];

/// Creates the data directory (0700) if needed, refuses one owned by another user, and narrows
/// what is too wide in it. `sqlite_file`: the database file to create 0600 before SQLite does
/// (SQLite gives its `-wal` and `-shm` files the database file's mode).
pub fn prepare(dir: &Path, sqlite_file: Option<&Path>) -> anyhow::Result<()> {
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    match std::fs::DirBuilder::new().mode(DIR_MODE).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(e).with_context(|| format!("creating data dir {}", dir.display())),
    }
    let meta = std::fs::symlink_metadata(dir)
        .with_context(|| format!("reading data dir {}", dir.display()))?;
    if !meta.is_dir() {
        bail!(
            "data dir {} is not a directory (a symlink or a file): refusing to use it",
            dir.display()
        );
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        bail!(
            "data dir {} is owned by uid {}, but the server runs as uid {me}: refusing to keep \
             credentials there (chown it, or choose another --data-dir)",
            dir.display(),
            meta.uid()
        );
    }
    if let Some(db) = sqlite_file {
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(FILE_MODE)
            .open(db)
            .with_context(|| format!("creating {}", db.display()))?;
    }
    secure(dir)
}

/// Narrows the mode of the data directory and of everything in it (but [`NOT_OURS`]) to 0700
/// for directories and 0600 for anything else; symlinks are not followed. Logs each change.
pub fn secure(dir: &Path) -> anyhow::Result<()> {
    narrow(dir, DIR_MODE)?;
    walk(dir, true)
}

fn walk(dir: &Path, top: bool) -> anyhow::Result<()> {
    let entries = std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        if top && NOT_OURS.iter().any(|n| entry.file_name() == *n) {
            continue;
        }
        let path = entry.path();
        let kind = entry
            .file_type()
            .with_context(|| format!("reading {}", path.display()))?;
        if kind.is_symlink() {
            // chmod would follow it out of the data dir.
            tracing::warn!(path = %path.display(), "symlink in the data dir left as it is");
        } else if kind.is_dir() {
            narrow(&path, DIR_MODE)?;
            walk(&path, false)?;
        } else {
            narrow(&path, FILE_MODE)?;
        }
    }
    Ok(())
}

/// Sets `path` to `mode` when it allows anything more (group or other bits, or more owner bits
/// than `mode` has).
fn narrow(path: &Path, mode: u32) -> anyhow::Result<()> {
    let meta =
        std::fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let current = meta.permissions().mode() & 0o7777;
    if current & !mode == 0 {
        return Ok(());
    }
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("narrowing the mode of {}", path.display()))?;
    tracing::warn!(
        path = %path.display(),
        from = %format!("{current:04o}"),
        to = %format!("{mode:04o}"),
        "data dir entry was too open; mode narrowed"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn wide_modes_are_narrowed_and_others_left_alone() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        let set = |p: &Path, m: u32| std::fs::set_permissions(p, PermissionsExt::from_mode(m));
        set(&dir, 0o777).unwrap();
        std::fs::write(dir.join("admin.json"), "{}").unwrap();
        set(&dir.join("admin.json"), 0o666).unwrap();
        std::fs::create_dir(dir.join("tls")).unwrap();
        std::fs::write(dir.join("tls/cert.pem"), "c").unwrap();
        set(&dir.join("tls/cert.pem"), 0o644).unwrap();
        std::fs::create_dir(dir.join("sandboxes")).unwrap();
        std::fs::write(dir.join("sandboxes/meta.json"), "m").unwrap();
        set(&dir.join("sandboxes/meta.json"), 0o644).unwrap();
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, "o").unwrap();
        set(&outside, 0o644).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        prepare(&dir, Some(&dir.join("sandpool.db"))).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join("admin.json")), 0o600);
        assert_eq!(mode(&dir.join("tls")), 0o700);
        assert_eq!(mode(&dir.join("tls/cert.pem")), 0o600);
        assert_eq!(mode(&dir.join("sandpool.db")), 0o600);
        // Not ours, and not followed.
        assert_eq!(mode(&dir.join("sandboxes/meta.json")), 0o644);
        assert_eq!(mode(&outside), 0o644);
    }

    #[test]
    fn a_data_dir_of_another_user_or_a_symlink_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("theirs");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::chown(&dir, Some(65534), Some(65534)).unwrap();
        let e = prepare(&dir, None).unwrap_err().to_string();
        assert!(e.contains("owned by uid 65534"), "{e}");
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let e = prepare(&link, None).unwrap_err().to_string();
        assert!(e.contains("not a directory"), "{e}");
    }
}
