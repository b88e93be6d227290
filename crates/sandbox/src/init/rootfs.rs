//! Building the sandbox's view of the world: its root filesystem.
//!
//! The mount dance follows bubblewrap's: a scratch tmpfs becomes the root with the host root at
//! `/oldroot` (so sources, even under the host's `/tmp`, stay reachable), the new root is built
//! under `/newroot` from binds of `/oldroot/...`, and a final `pivot_root` + detach drops every
//! trace of the host tree.

use super::InitConfig;
use crate::sys::{cstr, cvt};
use crate::RootFs;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{symlink, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

type R = Result<(), String>;

fn ctx<T>(what: impl std::fmt::Display, r: io::Result<T>) -> Result<T, String> {
    r.map_err(|e| format!("{what}: {e}"))
}

fn mount(src: &str, target: &str, fstype: &str, flags: libc::c_ulong, data: &str) -> R {
    ctx(
        format!("mount {fstype} {src} on {target}"),
        mount_raw(src, target, fstype, flags, data),
    )
}

fn mount_raw(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let c = |s: &str| cstr(s).map_err(io::Error::other);
    let (src_c, tgt_c, fs_c, data_c) = (c(src)?, c(target)?, c(fstype)?, c(data)?);
    // SAFETY: valid NUL-terminated strings; null data/fstype where empty.
    let r = unsafe {
        libc::mount(
            src_c.as_ptr(),
            tgt_c.as_ptr(),
            if fstype.is_empty() {
                std::ptr::null()
            } else {
                fs_c.as_ptr()
            },
            flags,
            if data.is_empty() {
                std::ptr::null()
            } else {
                data_c.as_ptr().cast()
            },
        )
    };
    cvt(r).map(drop)
}

/// [`mount`] onto a target this kernel may not have (some `/proc` entries): a missing one is
/// skipped. Trying beats checking first: one syscall instead of two on every start. Answers
/// whether it mounted.
fn mount_if_present(
    src: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<bool, String> {
    match mount_raw(src, target, fstype, flags, data) {
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::ENOTDIR)) => Ok(false),
        r => ctx(format!("mount {fstype} {src} on {target}"), r).map(|()| true),
    }
}

use crate::child::FD_IMAGE;
use crate::sys::{MountAttr, AT_RECURSIVE, MOUNT_ATTR_RDONLY};

/// Read-only for a whole mount tree at once; a `MS_REMOUNT` would only touch the top mount and
/// would have to repeat the source's locked flags.
fn make_readonly(target: &str) -> R {
    set_readonly(target, true, true)
}

/// Sets (or clears) read-only on `target`, with its submounts when `recursive`.
fn set_readonly(target: &str, readonly: bool, recursive: bool) -> R {
    let t = cstr(target).map_err(|e| e.to_string())?;
    let attr = MountAttr {
        attr_set: if readonly { MOUNT_ATTR_RDONLY } else { 0 },
        attr_clr: if readonly { 0 } else { MOUNT_ATTR_RDONLY },
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: raw mount_setattr with a valid path and attribute struct of the declared size.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            t.as_ptr(),
            if recursive { AT_RECURSIVE } else { 0 },
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == -1 {
        return Err(format!(
            "read-only {target}: {}",
            io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn bind(src: &str, target: &str, readonly: bool) -> R {
    mount(src, target, "", libc::MS_BIND | libc::MS_REC, "")?;
    if readonly {
        make_readonly(target)?;
    }
    Ok(())
}

/// Creates `p` (and missing parents) with exactly `mode`: [`build`] runs with umask 0, so no
/// chmod is needed afterwards (one syscall per directory instead of two or three).
fn mkdir_p(p: &str, mode: u32) -> R {
    use std::os::unix::fs::DirBuilderExt;
    let mut builder = std::fs::DirBuilder::new();
    builder.mode(mode);
    match builder.create(p) {
        Ok(()) => Ok(()),
        // Possibly an image's directory, owned by a uid we cannot map: leave it as it is.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && Path::new(p).is_dir() => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            ctx(format!("mkdir {p}"), builder.recursive(true).create(p))
        }
        Err(e) => Err(format!("mkdir {p}: {e}")),
    }
}

/// Writes a new file readable by everyone, writable by its owner only (the umask is 0 here).
fn write_file(path: &str, content: &str) -> R {
    use std::io::Write;
    ctx(
        format!("write {path}"),
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .mode(0o644)
            .open(path)
            .and_then(|mut f| f.write_all(content.as_bytes())),
    )
}

fn touch(p: &str) -> R {
    ctx(
        format!("create {p}"),
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .mode(0o644)
            .open(p)
            .map(drop),
    )
}

fn tmpfs(target: &str, size: u64, mode: &str) -> R {
    mkdir_p(target, 0o755)?;
    mount(
        "tmpfs",
        target,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        &format!("size={size},mode={mode}"),
    )
}

/// Mirrors a host entry into the new root: symlinks as symlinks, directories and files as
/// binds (made read-only by the caller, all at once). Missing host entries are skipped.
fn mirror(host: &str, new: &str) -> R {
    mirror_from(&format!("/oldroot{host}"), new)
}

fn mirror_from(src: &str, new: &str) -> R {
    let meta = match std::fs::symlink_metadata(src) {
        Ok(m) => m,
        Err(_) => return Ok(()),
    };
    if meta.file_type().is_symlink() {
        let target = ctx(format!("readlink {src}"), std::fs::read_link(src))?;
        return ctx(format!("symlink {new}"), symlink(target, new));
    }
    if meta.is_dir() {
        mkdir_p(new, 0o755)?;
    } else {
        touch(new)?;
    }
    bind(src, new, false)
}

/// Names of the synthetic `/etc` files (see [`synthetic_etc`]).
const SYNTHETIC_ETC: &[&str] = &["passwd", "group", "hosts", "hostname", "resolv.conf"];
/// Where a host-rooted sandbox's synthetic `/etc` files are, on its own root tmpfs: its `/etc`
/// (shared, read-only) links there, so writing them takes no bind per file.
const SYNTHETIC_DIR: &str = "/run/sandpool/etc";

/// Run by the zygote in a mount namespace of its own: covers its `/etc` with a read-only tmpfs
/// holding just what a sandbox's `/etc` gets (copies of [`ETC_ENTRIES`], links to the synthetic
/// files in [`SYNTHETIC_DIR`]). Each forked init then binds it whole instead of ~30 binds of
/// single entries. Copies rather than binds keep the template one mount: every mount in the
/// zygote's namespace is copied into each sandbox's (by the clone, the bind, and the detach of
/// the old root), ≈0.2 ms per start for the ~30 binds. The copy is as fresh as the zygote (a new
/// runtime makes a new one); `ssl/private` is left out. The zygote itself reads nothing from
/// `/etc`.
pub(crate) fn prepare_etc_template() -> R {
    // SAFETY: unshare of this (only) thread's mount namespace.
    ctx(
        "unshare mount ns",
        cvt(unsafe { libc::unshare(libc::CLONE_NEWNS) }),
    )?;
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "")?;
    // The host's /etc stays reachable through this descriptor once the tmpfs covers it.
    let host = ctx(
        "open /etc",
        std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_DIRECTORY)
            .open("/etc"),
    )?;
    mount(
        "tmpfs",
        "/etc",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "size=16m,mode=0755",
    )?;
    let filled = fill_etc(&format!("/proc/self/fd/{}", host.as_raw_fd()), "/etc", true)
        .and_then(|()| make_readonly("/etc"));
    if filled.is_err() {
        // SAFETY: detaching the tmpfs we just mounted; the host's /etc shows again.
        unsafe { libc::umount2(c"/etc".as_ptr(), libc::MNT_DETACH) };
    }
    filled
}

/// Fills the (fresh tmpfs) `dst` with the entries of a sandbox's `/etc` from the host's `src`:
/// copies when `copy`, else binds; [`ETC_SECRET`] entries are left out either way.
fn fill_etc(src: &str, dst: &str, copy: bool) -> R {
    for e in ETC_ENTRIES {
        let (from, to) = (format!("{src}/{e}"), format!("{dst}/{e}"));
        if copy {
            copy_tree(Path::new(&from), Path::new(&to), 0)?;
        } else {
            mirror_public(Path::new(&from), Path::new(&to), 0)?;
        }
    }
    for name in SYNTHETIC_ETC {
        let link = format!("{dst}/{name}");
        ctx(
            format!("symlink {link}"),
            // Relative, so the files API (which resolves beneath the root) follows it too.
            symlink(format!("..{SYNTHETIC_DIR}/{name}"), &link),
        )?;
    }
    Ok(())
}

/// Host `/etc` entries never copied into a template, whichever entry they are under.
const ETC_SECRET: &[&str] = &["private"];
/// Deeper than any `/etc` tree a userland ships; a guard, not a limit one should meet.
const COPY_DEPTH: usize = 12;

/// Whether `name` is one of [`ETC_SECRET`].
fn is_secret(name: &std::ffi::OsStr) -> bool {
    ETC_SECRET.iter().any(|s| name == *s)
}

/// Whether the directory `dir` (never a link to one) holds an [`ETC_SECRET`] entry at any depth.
fn holds_secret(dir: &Path, depth: usize) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        is_secret(&e.file_name())
            || (depth < COPY_DEPTH
                && e.file_type().is_ok_and(|t| t.is_dir())
                && holds_secret(&e.path(), depth + 1))
    })
}

/// [`mirror_from`] that leaves [`ETC_SECRET`] entries out, for the exec'd init (the zygote's
/// template copies with the same filter): a tree without one is bound whole; one with one
/// becomes a directory of its own on the tmpfs whose other entries are mirrored one by one.
fn mirror_public(src: &Path, new: &Path, depth: usize) -> R {
    let is_dir = std::fs::symlink_metadata(src).is_ok_and(|m| m.is_dir());
    let (src_s, new_s) = (src.to_string_lossy(), new.to_string_lossy());
    if !is_dir || depth >= COPY_DEPTH || !holds_secret(src, depth) {
        return mirror_from(&src_s, &new_s);
    }
    let mode = ctx(format!("stat {src_s}"), std::fs::metadata(src))?.mode() & 0o7777;
    mkdir_p(&new_s, mode)?;
    for entry in ctx(format!("read {src_s}"), std::fs::read_dir(src))? {
        let entry = ctx(format!("read {src_s}"), entry)?;
        if !is_secret(&entry.file_name()) {
            mirror_public(&entry.path(), &new.join(entry.file_name()), depth + 1)?;
        }
    }
    Ok(())
}

/// Copies `src` to `dst`: directories, regular files and symlinks (as links, never followed),
/// with their permission bits; anything else, and a missing `src`, is skipped.
fn copy_tree(src: &Path, dst: &Path, depth: usize) -> R {
    let Ok(meta) = std::fs::symlink_metadata(src) else {
        return Ok(());
    };
    let what = |op: &str| format!("{op} {}", dst.display());
    let kind = meta.file_type();
    if kind.is_symlink() {
        let target = ctx(what("readlink"), std::fs::read_link(src))?;
        ctx(what("symlink"), symlink(target, dst))
    } else if kind.is_file() {
        ctx(what("copy"), std::fs::copy(src, dst)).map(drop)
    } else if kind.is_dir() && depth < COPY_DEPTH {
        ctx(what("mkdir"), std::fs::create_dir(dst))?;
        for entry in ctx(what("read"), std::fs::read_dir(src))? {
            let entry = ctx(what("read"), entry)?;
            if is_secret(&entry.file_name()) {
                continue;
            }
            copy_tree(&entry.path(), &dst.join(entry.file_name()), depth + 1)?;
        }
        ctx(
            what("chmod"),
            std::fs::set_permissions(dst, std::fs::Permissions::from_mode(meta.mode() & 0o7777)),
        )
    } else {
        Ok(())
    }
}

const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32",
];

/// Host `/etc` entries a userland needs (dynamic linker, certificates, Debian alternatives, ...).
const ETC_ENTRIES: &[&str] = &[
    "alternatives",
    "bash.bashrc",
    "ca-certificates",
    "ca-certificates.conf",
    "debian_version",
    "environment",
    "gai.conf",
    "host.conf",
    "inputrc",
    "ld.so.cache",
    "ld.so.conf",
    "ld.so.conf.d",
    "localtime",
    "login.defs",
    "magic",
    "mime.types",
    "nsswitch.conf",
    "os-release",
    "perl",
    "profile",
    "profile.d",
    "protocols",
    "python3",
    "services",
    "ssl",
    "timezone",
    "pki",
];

fn synthetic_etc(cfg: &InitConfig) -> Vec<(&'static str, String)> {
    let h = &cfg.hostname;
    vec![
        (
            "passwd",
            "root:x:0:0:root:/root:/bin/bash\nuser:x:1000:1000:user:/home/user:/bin/bash\n\
             nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n"
                .into(),
        ),
        (
            "group",
            "root:x:0:\ntty:x:5:\nuser:x:1000:\nnogroup:x:65534:\n".into(),
        ),
        (
            "hosts",
            format!(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n127.0.1.1\t{h}\n"
            ),
        ),
        ("hostname", format!("{h}\n")),
        ("resolv.conf", cfg.resolv_conf.clone()),
    ]
}

/// Builds the sandbox's root and pivots into it, the host's tree detached (step 7 of
/// [`super::setup::run`]).
pub fn build(cfg: &InitConfig) -> R {
    // Modes are given explicitly to every directory and file made here; umask 0 spares a chmod
    // after each. The sandbox's commands get the umask the init started with.
    // SAFETY: umask cannot fail.
    let previous = unsafe { libc::umask(0) };
    let result = build_root(cfg);
    // SAFETY: as above.
    unsafe { libc::umask(previous) };
    result
}

fn build_root(cfg: &InitConfig) -> R {
    mount("", "/", "", libc::MS_REC | libc::MS_PRIVATE, "")?;

    // Scratch root; the host root moves to /oldroot.
    mount(
        "tmpfs",
        "/tmp",
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NODEV,
        "size=1m,mode=0755",
    )?;
    mkdir_p("/tmp/oldroot", 0o755)?;
    mkdir_p("/tmp/newroot", 0o755)?;
    pivot(Path::new("/tmp"), "oldroot")?;

    let root = match &cfg.rootfs {
        RootFs::Host => {
            mount(
                "tmpfs",
                "/newroot",
                "tmpfs",
                libc::MS_NOSUID | libc::MS_NODEV,
                "size=64m,mode=0755",
            )?;
            for d in SYSTEM_DIRS {
                mirror(d, &format!("/newroot{d}"))?;
            }
            mkdir_p("/newroot/etc", 0o755)?;
            // /etc is a tmpfs of its own, read-only like the system directories: the zygote's
            // prepared one, or one filled here.
            if cfg.etc_template {
                bind("/oldroot/etc", "/newroot/etc", false)?;
            } else {
                tmpfs("/newroot/etc", 1 << 20, "0755")?;
                fill_etc("/oldroot/etc", "/newroot/etc", false)?;
            }
            // Two calls instead of one per bind: everything read-only, then the root's own
            // tmpfs writable again (its directories, not the binds on them).
            make_readonly("/newroot")?;
            set_readonly("/newroot", false, false)?;
            "/newroot".to_string()
        }
        RootFs::Image(_) => {
            // The runtime sent an idmapped copy of the image tree; attach it as the lower layer.
            let tree = ctx("receive image mount", crate::sys::recv_fd(FD_IMAGE))?;
            // SAFETY: closing our inherited socket end.
            unsafe { libc::close(FD_IMAGE) };
            mkdir_p("/lower", 0o755)?;
            // SAFETY: raw move_mount of a detached tree onto a directory of ours.
            let r = unsafe {
                libc::syscall(
                    libc::SYS_move_mount,
                    tree.as_raw_fd(),
                    c"".as_ptr(),
                    libc::AT_FDCWD,
                    c"/lower".as_ptr(),
                    4u32, // MOVE_MOUNT_F_EMPTY_PATH
                )
            };
            ctx("attach image", cvt(r as libc::c_int))?;
            let lower = "/lower";
            let upper_size = cfg.limits.tmp_bytes.max(64 << 20);
            tmpfs("/layer", upper_size, "0755")?;
            mkdir_p("/layer/upper", 0o755)?;
            mkdir_p("/layer/work", 0o755)?;
            mount(
                "overlay",
                "/newroot",
                "overlay",
                libc::MS_NOSUID | libc::MS_NODEV,
                &format!("lowerdir={lower},upperdir=/layer/upper,workdir=/layer/work,userxattr"),
            )?;
            mkdir_p("/newroot/etc", 0o755)?;
            "/newroot".to_string()
        }
    };

    // Synthetic /etc files. A host-rooted sandbox's /etc links to them on its root tmpfs. An
    // image's /etc gets them written on the scratch root and bound in, so they work the same
    // when it belongs to a uid the sandbox cannot map.
    match cfg.rootfs {
        RootFs::Host => {
            let dir = format!("{root}{SYNTHETIC_DIR}");
            mkdir_p(&dir, 0o755)?;
            for (name, content) in synthetic_etc(cfg) {
                let path = format!("{dir}/{name}");
                write_file(&path, &content)?;
            }
        }
        RootFs::Image(_) => {
            mkdir_p("/synth", 0o755)?;
            for (name, content) in synthetic_etc(cfg) {
                let src = format!("/synth/{name}");
                write_file(&src, &content)?;
                let dst = format!("{root}/etc/{name}");
                let _ = std::fs::remove_file(&dst);
                touch(&dst)?;
                bind(&src, &dst, false)?;
            }
        }
    }

    let l = &cfg.limits;
    mkdir_p(&format!("{root}/root"), 0o700)?;
    mkdir_p(&format!("{root}/run"), 0o755)?;
    mkdir_p(&format!("{root}/var/tmp"), 0o1777)?;
    tmpfs(&format!("{root}/tmp"), l.tmp_bytes, "1777")?;
    tmpfs(&format!("{root}/home/user"), l.home_bytes, "0755")?;
    tmpfs(&format!("{root}/mnt/data"), l.data_bytes, "0755")?;
    setup_dev(&root)?;
    setup_proc(&root)?;
    pivot(Path::new(&root), ".")
}

/// `pivot_root` into `new_root`, old root at `new_root/old` (`"."`: stacked and detached).
fn pivot(new_root: &Path, old: &str) -> R {
    let nr = cstr(new_root.as_os_str()).map_err(|e| e.to_string())?;
    let old_c = cstr(old).map_err(|e| e.to_string())?;
    let dot = c".";
    let slash = c"/";
    // SAFETY: plain syscalls on valid C strings.
    unsafe {
        ctx("chdir new root", cvt(libc::chdir(nr.as_ptr())))?;
        ctx(
            "pivot_root",
            cvt(libc::syscall(libc::SYS_pivot_root, dot.as_ptr(), old_c.as_ptr()) as libc::c_int),
        )?;
        if old == "." {
            ctx(
                "detach old root",
                cvt(libc::umount2(dot.as_ptr(), libc::MNT_DETACH)),
            )?;
        }
        ctx("chdir /", cvt(libc::chdir(slash.as_ptr())))?;
    }
    Ok(())
}

fn setup_dev(root: &str) -> R {
    let dev = format!("{root}/dev");
    mkdir_p(&dev, 0o755)?;
    mount(
        "tmpfs",
        &dev,
        "tmpfs",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "size=64k,mode=0755",
    )?;
    for d in ["null", "zero", "full", "random", "urandom", "tty"] {
        let p = format!("{dev}/{d}");
        touch(&p)?;
        bind(&format!("/oldroot/dev/{d}"), &p, false)?;
    }
    mkdir_p(&format!("{dev}/pts"), 0o755)?;
    mount(
        "devpts",
        &format!("{dev}/pts"),
        "devpts",
        libc::MS_NOSUID | libc::MS_NOEXEC,
        "newinstance,ptmxmode=0666,mode=0620,gid=5",
    )?;
    tmpfs(&format!("{dev}/shm"), 64 << 20, "1777")?;
    for (name, target) in [
        ("ptmx", "pts/ptmx"),
        ("fd", "/proc/self/fd"),
        ("stdin", "/proc/self/fd/0"),
        ("stdout", "/proc/self/fd/1"),
        ("stderr", "/proc/self/fd/2"),
    ] {
        ctx(
            format!("symlink /dev/{name}"),
            symlink(target, format!("{dev}/{name}")),
        )?;
    }
    Ok(())
}

/// Files of /proc that leak host details or expose kernel knobs, covered by /dev/null.
const PROC_MASKED_FILES: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
    "sysrq-trigger",
    "kallsyms",
    "kpagecount",
    "kpageflags",
    "kpagecgroup",
    "latency_stats",
];
const PROC_MASKED_DIRS: &[&str] = &["acpi", "scsi", "asound", "firmware"];
const PROC_READONLY: &[&str] = &["sys", "bus", "fs", "irq"];

fn setup_proc(root: &str) -> R {
    let proc_ = format!("{root}/proc");
    mkdir_p(&proc_, 0o555)?;
    mount(
        "proc",
        &proc_,
        "proc",
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        "",
    )?;
    for f in PROC_MASKED_FILES {
        let p = format!("{proc_}/{f}");
        mount_if_present(&format!("{root}/dev/null"), &p, "", libc::MS_BIND, "")?;
    }
    for d in PROC_MASKED_DIRS {
        let p = format!("{proc_}/{d}");
        mount_if_present("tmpfs", &p, "tmpfs", libc::MS_RDONLY, "size=0")?;
    }
    for d in PROC_READONLY {
        let p = format!("{proc_}/{d}");
        if mount_if_present(&p, &p, "", libc::MS_BIND | libc::MS_REC, "")? {
            make_readonly(&p)?;
        }
    }
    Ok(())
}
