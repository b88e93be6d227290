//! Shared test fixtures: a private parent cgroup per test and child processes that are always
//! reaped, so parallel tests never see each other's objects and failures leave nothing behind.

#![allow(dead_code)] // each test binary uses a different subset

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use std::os::unix::process::ExitStatusExt;

use sandpool_cgroups::{Cgroup, CgroupManager};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub fn unique_parent(tag: &str) -> String {
    format!(
        "sandpool-test-{tag}-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

/// Owns a unique parent cgroup; on drop destroys every cgroup below it and the parent itself.
pub struct TestParent {
    pub mgr: CgroupManager,
}

impl TestParent {
    pub fn detect(tag: &str) -> TestParent {
        let mgr = CgroupManager::detect(&unique_parent(tag)).expect("detect cgroups");
        TestParent { mgr }
    }

    pub fn v2(root: &Path, tag: &str) -> TestParent {
        let mgr = CgroupManager::with_v2_root(root, &unique_parent(tag)).expect("v2 manager");
        TestParent { mgr }
    }
}

impl Drop for TestParent {
    fn drop(&mut self) {
        if let Ok(names) = self.mgr.list() {
            for name in names {
                if let Ok(cg) = self.mgr.open(&name) {
                    if let Err(e) = cg.destroy() {
                        eprintln!("cleanup: destroying {name}: {e}");
                    }
                }
            }
        }
        for dir in self.mgr.parent_dirs() {
            if let Err(e) = std::fs::remove_dir(&dir) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    eprintln!("cleanup: removing {}: {e}", dir.display());
                }
            }
        }
    }
}

/// A child that blocks until [`Proc::go`], so the test can move it into a cgroup before the
/// interesting part runs (and before it forks). Killed and reaped on drop.
pub struct Proc {
    child: Child,
}

impl Proc {
    pub fn sh(script: &str) -> Proc {
        Self::spawn(Command::new("/bin/sh").args(["-c", &format!("read go; {script}")]))
    }

    pub fn python(script: &str) -> Proc {
        let code = format!("import sys\nsys.stdin.readline()\n{script}");
        // The distribution's interpreter, not a version-manager shim that forks on the way.
        let python = ["/usr/bin/python3", "python3"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .unwrap_or("python3");
        Self::spawn(Command::new(python).args(["-c", &code]))
    }

    fn spawn(cmd: &mut Command) -> Proc {
        let child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn test child");
        Proc { child }
    }

    pub fn pid(&self) -> i32 {
        i32::try_from(self.child.id()).expect("pid fits i32")
    }

    pub fn go(&mut self) {
        let stdin = self.child.stdin.as_mut().expect("stdin piped");
        stdin.write_all(b"go\n").expect("release child");
        stdin.flush().expect("flush");
    }

    /// Waits for exit and returns status, stdout and stderr.
    pub fn finish(mut self) -> (ExitStatus, String, String) {
        drop(self.child.stdin.take());
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = self.child.stdout.take() {
            s.read_to_string(&mut out).expect("read stdout");
        }
        if let Some(mut s) = self.child.stderr.take() {
            s.read_to_string(&mut err).expect("read stderr");
        }
        let status = self.child.wait().expect("wait child");
        (status, out, err)
    }

    pub fn wait(&mut self) -> ExitStatus {
        self.child.wait().expect("wait child")
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `script` inside `cg` and returns once it has forked a few processes, still forking.
pub fn forking_in(cg: &Cgroup, script: &str) -> Proc {
    let mut p = Proc::sh(script);
    cg.add_pid(p.pid()).expect("add pid");
    p.go();
    assert!(
        eventually(Duration::from_secs(30), || cg
            .pids()
            .map(|v| v.len() > 3)
            .unwrap_or(false)),
        "the script never forked"
    );
    p
}

/// After a kill: nothing left in `cg`, and `p` died of SIGKILL.
pub fn assert_killed_and_empty(cg: &Cgroup, p: &mut Proc) {
    assert_eq!(cg.pids().expect("pids"), Vec::<i32>::new());
    assert_eq!(p.wait().signal(), Some(libc::SIGKILL));
}

/// Polls `cond` until true; false after `timeout` (a safety net, not a measured expectation).
pub fn eventually(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() > timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

pub fn read_trim(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .trim()
        .to_string()
}

/// The directory among `dirs` that has `file` (which hierarchy carries a controller on v1).
pub fn dir_with(dirs: &[PathBuf], file: &str) -> PathBuf {
    dirs.iter()
        .find(|d| d.join(file).exists())
        .unwrap_or_else(|| panic!("no dir among {dirs:?} has {file}"))
        .clone()
}

/// The cgroup2 mount point from mountinfo, if any.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    text.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        if post.split(' ').next()? != "cgroup2" {
            return None;
        }
        pre.split(' ').nth(4).map(PathBuf::from)
    })
}

pub const MIB: u64 = 1024 * 1024;
