//! File operations of the control protocol, resolved inside the sandbox.
//!
//! Every path is resolved with `openat2(RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS)` from the
//! confinement root the host named, so `..`, absolute symlinks and symlinks that climb out of
//! the root fail instead of being followed. Intermediate directories of writes are walked one
//! component at a time under the same rule.
//!
//! Only regular files are read or written: a FIFO would block the init's single loop in open
//! (and every timeout with it), a device could stream without end or be a terminal. The type is
//! checked before the open, and every open is non-blocking, so a file swapped in between is
//! refused after it instead of blocking.

use crate::proto::{ErrorKind, WireFileInfo};
use crate::sys::{cstr, cvt};
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// An error as it goes on the wire.
pub struct FileError {
    pub kind: ErrorKind,
    pub message: String,
}

pub type FResult<T> = Result<T, FileError>;

fn invalid(msg: impl Into<String>) -> FileError {
    FileError {
        kind: ErrorKind::InvalidPath,
        message: msg.into(),
    }
}

fn from_io(path: &str, e: io::Error) -> FileError {
    let kind = match e.raw_os_error() {
        Some(libc::ENOENT) => ErrorKind::FileNotFound,
        Some(libc::EXDEV) | Some(libc::ELOOP) | Some(libc::ENOTDIR) => ErrorKind::InvalidPath,
        _ => ErrorKind::Io,
    };
    FileError {
        kind,
        message: format!("{path}: {e}"),
    }
}

/// A checked (root, path) pair: `rel` is `path` below `root`, without a leading slash.
pub struct Target {
    pub root: String,
    pub path: String,
    pub rel: String,
}

pub fn target(root: &str, path: &str) -> FResult<Target> {
    for (what, p) in [("root", root), ("path", path)] {
        if !p.starts_with('/') {
            return Err(invalid(format!("{what} must be absolute: {p:?}")));
        }
        if p.contains('\0') || p.len() > 4096 {
            return Err(invalid(format!("{what} is not a valid path")));
        }
        if p.split('/').any(|c| c == "..") {
            return Err(invalid(format!("{what} must not contain '..': {p:?}")));
        }
    }
    let norm = |p: &str| -> Vec<String> {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_string)
            .collect()
    };
    let (r, p) = (norm(root), norm(path));
    if p.len() < r.len() || p[..r.len()] != r[..] {
        return Err(invalid(format!("{path} is outside {root}")));
    }
    Ok(Target {
        root: format!("/{}", r.join("/")),
        path: format!("/{}", p.join("/")),
        rel: p[r.len()..].join("/"),
    })
}

/// `O_NOCTTY` unless `flags` is an `O_PATH` open (which opens nothing, and with which openat2
/// refuses other flags): the init leads the sandbox's session, and a terminal it opened without
/// `O_NOCTTY` would become its controlling terminal.
fn no_ctty(flags: i32) -> i32 {
    if flags & libc::O_PATH != 0 {
        0
    } else {
        libc::O_NOCTTY
    }
}

fn openat2(dir: i32, rel: &str, flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let c = cstr(if rel.is_empty() { "." } else { rel })?;
    let how = crate::sys::OpenHow {
        flags: (flags | libc::O_CLOEXEC | no_ctty(flags)) as u64,
        mode: if flags & libc::O_CREAT != 0 {
            mode as u64
        } else {
            0
        },
        resolve: libc::RESOLVE_BENEATH | libc::RESOLVE_NO_MAGICLINKS,
    };
    loop {
        // SAFETY: valid path and open_how of the declared size.
        let fd = unsafe {
            libc::syscall(
                libc::SYS_openat2,
                dir,
                c.as_ptr(),
                &how as *const crate::sys::OpenHow,
                std::mem::size_of::<crate::sys::OpenHow>(),
            )
        };
        if fd >= 0 {
            // SAFETY: fresh descriptor.
            return Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) });
        }
        let e = io::Error::last_os_error();
        // openat2 asks for a retry when a rename raced with the lookup.
        if e.raw_os_error() != Some(libc::EAGAIN) {
            return Err(e);
        }
    }
}

fn open_root(t: &Target) -> FResult<OwnedFd> {
    let c = cstr(&t.root).map_err(|e| from_io(&t.root, e))?;
    // SAFETY: valid path.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_PATH | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(from_io(&t.root, io::Error::last_os_error()));
    }
    // SAFETY: fresh descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `t` below its root.
pub fn open(t: &Target, flags: i32) -> FResult<OwnedFd> {
    let root = open_root(t)?;
    openat2(root.as_raw_fd(), &t.rel, flags, 0).map_err(|e| from_io(&t.path, e))
}

fn not_regular(path: &str) -> FileError {
    invalid(format!("{path} is not a regular file"))
}

fn is_regular(st: &libc::stat) -> bool {
    st.st_mode & libc::S_IFMT == libc::S_IFREG
}

/// Opens the regular file `t` for reading, with its details. A directory is an `Io` error, any
/// other non-regular file an `InvalidPath` one; neither is opened for reading.
pub fn open_read(t: &Target) -> FResult<(OwnedFd, WireFileInfo)> {
    let seen = fstatat(open(t, libc::O_PATH)?.as_raw_fd(), "", libc::AT_EMPTY_PATH)
        .map_err(|e| from_io(&t.path, e))?;
    if seen.st_mode & libc::S_IFMT == libc::S_IFDIR {
        return Err(FileError {
            kind: ErrorKind::Io,
            message: format!("{} is a directory", t.path),
        });
    }
    if !is_regular(&seen) {
        return Err(not_regular(&t.path));
    }
    let fd = open(t, libc::O_RDONLY | libc::O_NONBLOCK)?;
    let st = fstatat(fd.as_raw_fd(), "", libc::AT_EMPTY_PATH).map_err(|e| from_io(&t.path, e))?;
    // Swapped for something else since the check: refused, never read.
    if !is_regular(&st) || (st.st_dev, st.st_ino) != (seen.st_dev, seen.st_ino) {
        return Err(not_regular(&t.path));
    }
    Ok((fd, info(&t.path, &st)))
}

fn fstatat(dir: i32, name: &str, flags: i32) -> io::Result<libc::stat> {
    let c = cstr(name)?;
    // SAFETY: zeroed stat buffer filled by the kernel.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        cvt(libc::fstatat(dir, c.as_ptr(), &mut st, flags))?;
        Ok(st)
    }
}

fn info(path: &str, st: &libc::stat) -> WireFileInfo {
    let name = path.rsplit('/').next().unwrap_or("").to_string();
    WireFileInfo {
        path: path.to_string(),
        name,
        is_dir: st.st_mode & libc::S_IFMT == libc::S_IFDIR,
        size: st.st_size as u64,
        mtime_ns: st
            .st_mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec),
        mode: st.st_mode,
    }
}

pub fn fd_info(path: &str, fd: &OwnedFd) -> FResult<WireFileInfo> {
    let st = fstatat(fd.as_raw_fd(), "", libc::AT_EMPTY_PATH).map_err(|e| from_io(path, e))?;
    Ok(info(path, &st))
}

pub fn stat(t: &Target) -> FResult<WireFileInfo> {
    let fd = open(t, libc::O_PATH)?;
    fd_info(&t.path, &fd)
}

/// Opens (creating) the parent directory of `t` and returns it with the final name.
fn parent(t: &Target, create: bool) -> FResult<(OwnedFd, String)> {
    let mut dir = open_root(t)?;
    let comps: Vec<&str> = t.rel.split('/').filter(|c| !c.is_empty()).collect();
    let Some((name, dirs)) = comps.split_last() else {
        return Err(invalid(format!("{} names the root itself", t.path)));
    };
    for c in dirs {
        let next = match openat2(dir.as_raw_fd(), c, libc::O_PATH | libc::O_DIRECTORY, 0) {
            Err(e) if create && e.raw_os_error() == Some(libc::ENOENT) => {
                let cc = cstr(c).map_err(|e| from_io(&t.path, e))?;
                // SAFETY: mkdirat relative to a directory fd we hold.
                let r = unsafe { libc::mkdirat(dir.as_raw_fd(), cc.as_ptr(), 0o755) };
                if r != 0 {
                    let e = io::Error::last_os_error();
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        return Err(from_io(&t.path, e));
                    }
                }
                openat2(dir.as_raw_fd(), c, libc::O_PATH | libc::O_DIRECTORY, 0)
            }
            r => r,
        }
        .map_err(|e| from_io(&t.path, e))?;
        dir = next;
    }
    Ok((dir, name.to_string()))
}

/// Creates or truncates the regular file for a write; the data follows. Anything else in its
/// place (a symlink, a FIFO, a device, a directory) is refused as `InvalidPath`.
pub fn create(t: &Target) -> FResult<std::fs::File> {
    let (dir, name) = parent(t, true)?;
    match fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW) {
        Ok(st) if !is_regular(&st) => return Err(not_regular(&t.path)),
        _ => {}
    }
    let fd = openat2(
        dir.as_raw_fd(),
        &name,
        libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC | libc::O_NOFOLLOW | libc::O_NONBLOCK,
        0o644,
    )
    .map_err(|e| match e.raw_os_error() {
        // A FIFO swapped in since the check, without a reader.
        Some(libc::ENXIO) => not_regular(&t.path),
        _ => from_io(&t.path, e),
    })?;
    let st = fstatat(fd.as_raw_fd(), "", libc::AT_EMPTY_PATH).map_err(|e| from_io(&t.path, e))?;
    if !is_regular(&st) {
        return Err(not_regular(&t.path));
    }
    Ok(std::fs::File::from(fd))
}

/// Most entries a listing returns, so a huge tree cannot exhaust the init's memory.
const MAX_LIST: usize = 100_000;

pub fn list(t: &Target, recursive: bool) -> FResult<Vec<WireFileInfo>> {
    let dir = open(t, libc::O_RDONLY | libc::O_DIRECTORY)?;
    let mut out = Vec::new();
    list_into(&dir, &t.path, recursive, &mut out)?;
    Ok(out)
}

fn list_into(
    dir: &OwnedFd,
    path: &str,
    recursive: bool,
    out: &mut Vec<WireFileInfo>,
) -> FResult<()> {
    let names = read_names(dir).map_err(|e| from_io(path, e))?;
    for name in names {
        if out.len() >= MAX_LIST {
            return Ok(());
        }
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        let Ok(st) = fstatat(dir.as_raw_fd(), &name, libc::AT_SYMLINK_NOFOLLOW) else {
            continue;
        };
        let i = info(&child, &st);
        let is_dir = i.is_dir;
        out.push(i);
        if recursive && is_dir {
            if let Ok(sub) = openat2(
                dir.as_raw_fd(),
                &name,
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
                0,
            ) {
                list_into(&sub, &child, true, out)?;
            }
        }
    }
    Ok(())
}

fn read_names(dir: &OwnedFd) -> io::Result<Vec<String>> {
    // fdopendir takes ownership of the descriptor it is given: hand it a duplicate.
    // SAFETY: dup of a valid fd; the DIR stream is closed below on every path.
    unsafe {
        let fd = cvt(libc::fcntl(dir.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0))?;
        let d = libc::fdopendir(fd);
        if d.is_null() {
            let e = io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        let mut names = Vec::new();
        loop {
            let ent = libc::readdir64(d);
            if ent.is_null() {
                break;
            }
            let name = std::ffi::CStr::from_ptr((*ent).d_name.as_ptr());
            let name = name.to_string_lossy();
            if name != "." && name != ".." {
                names.push(name.into_owned());
            }
            if names.len() >= MAX_LIST {
                break;
            }
        }
        libc::closedir(d);
        names.sort();
        Ok(names)
    }
}

pub fn remove(t: &Target) -> FResult<()> {
    let (dir, name) = parent(t, false)?;
    remove_at(&dir, &name).map_err(|e| from_io(&t.path, e))
}

fn remove_at(dir: &OwnedFd, name: &str) -> io::Result<()> {
    let st = fstatat(dir.as_raw_fd(), name, libc::AT_SYMLINK_NOFOLLOW)?;
    let c = cstr(name)?;
    if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
        let sub = openat2(
            dir.as_raw_fd(),
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW,
            0,
        )?;
        for n in read_names(&sub)? {
            remove_at(&sub, &n)?;
        }
        // SAFETY: unlinkat relative to a directory fd we hold.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), libc::AT_REMOVEDIR) })?;
    } else {
        // SAFETY: as above.
        cvt(unsafe { libc::unlinkat(dir.as_raw_fd(), c.as_ptr(), 0) })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_confined_to_their_root() {
        let t = target("/mnt/data", "/mnt/data/a/b.txt").ok().unwrap();
        assert_eq!((t.root.as_str(), t.rel.as_str()), ("/mnt/data", "a/b.txt"));
        let t = target("/", "/etc/passwd").ok().unwrap();
        assert_eq!(t.rel, "etc/passwd");
        for (root, path) in [
            ("/mnt/data", "/mnt/database/x"),
            ("/mnt/data", "/etc/passwd"),
            ("/mnt/data", "/mnt/data/../../etc/passwd"),
            ("/mnt/data", "relative"),
            ("/mnt/data", "/mnt/data/a\0b"),
            ("relative", "/x"),
        ] {
            let e = target(root, path).err().map(|e| e.kind);
            assert_eq!(e, Some(ErrorKind::InvalidPath), "{root} {path}");
        }
    }
}

#[cfg(test)]
mod host_tests {
    use super::*;

    #[test]
    fn create_makes_parents_and_refuses_escaping_symlinks() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path().to_str().unwrap().to_string();
        let t = target(&root, &format!("{root}/a/b/c.txt")).ok().unwrap();
        let f = create(&t).ok().unwrap();
        let info = fd_info(&t.path, &OwnedFd::from(f)).ok().unwrap();
        assert_eq!(
            (info.name.as_str(), info.size, info.is_dir),
            ("c.txt", 0, false)
        );
        std::os::unix::fs::symlink("/etc", d.path().join("out")).unwrap();
        let t = target(&root, &format!("{root}/out/passwd")).ok().unwrap();
        assert_eq!(stat(&t).err().map(|e| e.kind), Some(ErrorKind::InvalidPath));
        assert_eq!(
            create(&t).err().map(|e| e.kind),
            Some(ErrorKind::InvalidPath)
        );
    }
}
