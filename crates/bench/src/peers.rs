//! The peers sandpool is measured against, each run the way its users run it: a raw fork+exec
//! of `/bin/sh -c CMD`, `bwrap --unshare-all`, and `crun run` / `crun exec` on an OCI bundle
//! whose root is the host's `/usr` read-only.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Runs `cmd` and returns how long the child took from spawn to reaped exit.
fn timed(cmd: &mut Command) -> Result<Duration> {
    let start = Instant::now();
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {cmd:?}"))?;
    let elapsed = start.elapsed();
    if !out.status.success() {
        bail!(
            "{cmd:?} failed: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(elapsed)
}

/// fork+exec of `/bin/sh -c CMD`, output captured: the floor every sandbox pays.
pub fn fork_exec(shell_command: &str) -> Result<Duration> {
    timed(Command::new("/bin/sh").args(["-c", shell_command]))
}

/// `bwrap --unshare-all` with the host's `/usr` read-only, fresh /proc, /dev and /tmp.
pub fn bwrap(shell_command: &str) -> Result<Duration> {
    timed(Command::new("bwrap").args([
        "--unshare-all",
        "--die-with-parent",
        "--ro-bind",
        "/usr",
        "/usr",
        "--symlink",
        "usr/bin",
        "/bin",
        "--symlink",
        "usr/sbin",
        "/sbin",
        "--symlink",
        "usr/lib",
        "/lib",
        "--symlink",
        "usr/lib64",
        "/lib64",
        "--proc",
        "/proc",
        "--dev",
        "/dev",
        "--tmpfs",
        "/tmp",
        "/bin/sh",
        "-c",
        shell_command,
    ]))
}

/// An OCI bundle for crun: a read-only root holding the host's `/usr` and the usual links.
pub struct CrunBundle {
    dir: tempfile::TempDir,
}

/// Container names are unique across every bundle of the process (crun's namespace is global).
static NEXT_CONTAINER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl CrunBundle {
    pub fn new(args: &[&str]) -> Result<CrunBundle> {
        let dir = tempfile::Builder::new()
            .prefix("sandpool-bench-crun")
            .tempdir()?;
        let rootfs = dir.path().join("rootfs");
        for d in ["usr", "proc", "dev", "tmp"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        for (link, target) in [
            ("bin", "usr/bin"),
            ("sbin", "usr/sbin"),
            ("lib", "usr/lib"),
            ("lib64", "usr/lib64"),
        ] {
            std::os::unix::fs::symlink(target, rootfs.join(link))?;
        }
        let status = Command::new("crun")
            .arg("spec")
            .current_dir(dir.path())
            .status()
            .context("running `crun spec` (is crun installed?)")?;
        if !status.success() {
            bail!("crun spec failed: {status}");
        }
        let config_path = dir.path().join("config.json");
        let mut config: serde_json::Value = serde_json::from_slice(&std::fs::read(&config_path)?)?;
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.iter().map(|a| a.to_string()).collect();
        config["root"]["readonly"] = true.into();
        config["mounts"]
            .as_array_mut()
            .context("crun spec has no mounts")?
            .push(serde_json::json!({
                "destination": "/usr", "type": "bind", "source": "/usr",
                "options": ["rbind", "ro"]
            }));
        std::fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        Ok(CrunBundle { dir })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn next_id(&self) -> String {
        let n = NEXT_CONTAINER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("sandpool-bench-{}-{n}", std::process::id())
    }

    /// `crun run` of the bundle's process to its exit (container created and deleted).
    pub fn run(&self) -> Result<Duration> {
        let id = self.next_id();
        timed(
            Command::new("crun")
                .args(["run", "--bundle"])
                .arg(self.path())
                .arg(&id),
        )
    }

    /// Starts the bundle's process detached, for `exec` measurements; deleted on drop.
    pub fn start_detached(&self) -> Result<RunningContainer> {
        let id = self.next_id();
        let status = Command::new("crun")
            .args(["run", "--detach", "--bundle"])
            .arg(self.path())
            .arg(&id)
            .stdin(Stdio::null())
            .status()?;
        if !status.success() {
            bail!("crun run --detach failed: {status}");
        }
        Ok(RunningContainer { id })
    }
}

/// A container left running by [`CrunBundle::start_detached`].
pub struct RunningContainer {
    id: String,
}

impl RunningContainer {
    /// `crun exec` of `/bin/sh -c CMD` inside the running container.
    pub fn exec(&self, shell_command: &str) -> Result<Duration> {
        timed(Command::new("crun").args(["exec", &self.id, "/bin/sh", "-c", shell_command]))
    }
}

impl Drop for RunningContainer {
    fn drop(&mut self) {
        let _ = Command::new("crun")
            .args(["delete", "--force", &self.id])
            .status();
    }
}

/// On a cgroup v1 host with a cgroup2 hierarchy mounted beside it ("hybrid"), crun refuses to
/// run while that hierarchy has controllers. Hide it inside this process's own mount namespace,
/// so every peer and sandpool itself are measured in the same place. Call before any thread.
pub fn isolate_mounts_for_crun() -> Result<()> {
    let unified = PathBuf::from("/sys/fs/cgroup/unified");
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo")?;
    let hybrid = mountinfo
        .lines()
        .any(|l| l.contains(" /sys/fs/cgroup/unified ") && l.contains(" - cgroup2 "));
    if !hybrid {
        return Ok(());
    }
    // SAFETY: plain syscalls on constant arguments, before any other thread exists.
    unsafe {
        if libc::unshare(libc::CLONE_NEWNS) != 0 {
            bail!("unshare(CLONE_NEWNS): {}", std::io::Error::last_os_error());
        }
        let root = c"/";
        if libc::mount(
            std::ptr::null(),
            root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ) != 0
        {
            bail!("making / private: {}", std::io::Error::last_os_error());
        }
        let target = std::ffi::CString::new(unified.as_os_str().as_encoded_bytes())?;
        if libc::mount(
            c"tmpfs".as_ptr(),
            target.as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        ) != 0
        {
            bail!(
                "masking {}: {}",
                unified.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(())
}

/// Installs bubblewrap and crun from Debian when they are missing.
pub fn ensure_installed() -> Result<()> {
    let missing: Vec<&str> = [("bwrap", "bubblewrap"), ("crun", "crun")]
        .into_iter()
        .filter(|(bin, _)| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {bin}")])
                .stdout(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .map(|(_, pkg)| pkg)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    eprintln!("installing {} from Debian", missing.join(" "));
    let status = Command::new("sh")
        .args([
            "-c",
            &format!(
                "DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
                 DEBIAN_FRONTEND=noninteractive apt-get install -y -qq {} >/dev/null",
                missing.join(" ")
            ),
        ])
        .status()?;
    if !status.success() {
        bail!("installing {} failed", missing.join(" "));
    }
    Ok(())
}
