//! Persistent network namespaces: created on a throwaway thread, kept alive by a bind mount.

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

use crate::NetError;

fn io_err(context: impl Into<String>, source: std::io::Error) -> NetError {
    NetError::Io {
        context: context.into(),
        source,
    }
}

fn nix_err(context: impl Into<String>, e: nix::Error) -> NetError {
    io_err(context, std::io::Error::from(e))
}

/// A freshly created namespace: its nsfs file is bind-mounted at `path`, `fd` refers to it, and
/// `handle` speaks rtnetlink inside it.
pub(crate) struct NewNetns {
    pub fd: OwnedFd,
    pub handle: rtnetlink::Handle,
}

/// Creates a network namespace pinned at `path` and a netlink connection inside it (driven on
/// `rt`). Runs on a dedicated thread that exits afterwards, so no pooled thread is left in the
/// new namespace.
pub(crate) async fn create(
    path: PathBuf,
    rt: tokio::runtime::Handle,
) -> Result<NewNetns, NetError> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("sandpool-netns".into())
        .spawn(move || {
            let _ = tx.send(create_on_this_thread(&path, &rt));
        })
        .map_err(|e| io_err("spawning netns thread", e))?;
    rx.await
        .map_err(|_| NetError::Netlink("netns thread ended without an answer".into()))?
}

fn create_on_this_thread(path: &Path, rt: &tokio::runtime::Handle) -> Result<NewNetns, NetError> {
    File::create(path).map_err(|e| io_err(format!("creating {}", path.display()), e))?;
    let result = (|| {
        unshare(CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("unshare(CLONE_NEWNET)", e))?;
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        mount(
            Some(own.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| nix_err(format!("bind-mounting netns on {}", path.display()), e))?;
        let fd: OwnedFd = File::open(path)
            .map_err(|e| io_err(format!("opening {}", path.display()), e))?
            .into();
        // The socket belongs to the namespace of the thread that creates it; registering it with
        // the caller's runtime lets it outlive this thread.
        let _enter = rt.enter();
        let (conn, handle, _) =
            rtnetlink::new_connection().map_err(|e| io_err("netlink socket in netns", e))?;
        rt.spawn(conn);
        Ok(NewNetns { fd, handle })
    })();
    if result.is_err() {
        remove(path);
    }
    result
}

/// Unpins a namespace file and deletes it. The namespace itself disappears once nothing else
/// (a process, an open fd) holds it. Missing or unmounted files are fine.
pub(crate) fn remove(path: &Path) {
    let _ = umount2(path, MntFlags::MNT_DETACH);
    let _ = std::fs::remove_file(path);
}

/// Runs `f` on a throwaway thread that has joined the network namespace at `path`. Test and
/// probe helper: sockets created by `f` stay in that namespace.
pub fn run_in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    let file = File::open(path).map_err(|e| io_err(format!("opening {}", path.display()), e))?;
    std::thread::Builder::new()
        .name("sandpool-netns-run".into())
        .spawn(move || -> Result<T, NetError> {
            setns(file.as_fd(), CloneFlags::CLONE_NEWNET)
                .map_err(|e| nix_err("setns(CLONE_NEWNET)", e))?;
            Ok(f())
        })
        .map_err(|e| io_err("spawning netns thread", e))?
        .join()
        .map_err(|_| NetError::Netlink("thread in netns panicked".into()))?
}

/// Runs `f` on a throwaway thread in a brand-new, unpinned network namespace (gone when the
/// thread and everything `f` created are gone).
pub(crate) fn run_in_new_netns<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, NetError> {
    std::thread::Builder::new()
        .name("sandpool-netns-probe".into())
        .spawn(move || -> Result<T, NetError> {
            unshare(CloneFlags::CLONE_NEWNET).map_err(|e| nix_err("unshare(CLONE_NEWNET)", e))?;
            Ok(f())
        })
        .map_err(|e| io_err("spawning netns thread", e))?
        .join()
        .map_err(|_| NetError::Netlink("thread in netns panicked".into()))?
}
