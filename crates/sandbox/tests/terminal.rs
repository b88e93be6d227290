//! A sandbox cannot reach the terminal its server runs under (the bubblewrap CVE-2017-5226
//! class): no sandbox process shares the server's session or controlling terminal, so neither
//! `/dev/tty` nor `TIOCSTI` reach it, and no host pty is in the sandbox's `/dev/pts`.
//!
//! The runtime must run in a session whose controlling terminal is a pty the test reads, which
//! the test process itself cannot become without disturbing its other tests: the test re-runs
//! this binary's `terminal_child` in a new session on a fresh pty and reads the master.

mod common;
use common::*;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Stdio;

const CHILD_ENV: &str = "SANDPOOL_TERMINAL_CHILD_MARK";
const REPORT_ENV: &str = "SANDPOOL_TERMINAL_CHILD_REPORT";

/// Run inside a sandbox: writes the mark to `/dev/tty` and to every `/dev/pts/*`, and pushes it
/// as input with `TIOCSTI`. Prints one line per target (errno of each step, 0 = done), and the
/// command's own terminal (`tty_nr` of `/proc/self/stat`).
fn attack_script(mark: &str) -> String {
    format!(
        r#"import os, fcntl, termios, glob
m = b"{mark}"
print("tty_nr", open("/proc/self/stat").read().rsplit(")", 1)[1].split()[4])
for p in ["/dev/tty", "/dev/console"] + sorted(glob.glob("/dev/pts/[0-9]*")):
    try:
        fd = os.open(p, os.O_RDWR)
    except OSError as e:
        print(p, "open", e.errno)
        continue
    r = [p, "open 0"]
    try:
        os.write(fd, m + b"\n")
        r.append("write 0")
    except OSError as e:
        r.append("write %d" % e.errno)
    try:
        for c in m:
            fcntl.ioctl(fd, termios.TIOCSTI, bytes([c]))
        r.append("tiocsti 0")
    except OSError as e:
        r.append("tiocsti %d" % e.errno)
    os.close(fd)
    print(" ".join(r))
"#
    )
}

/// Fields 6 and 7 of /proc/<pid>/stat: session id and controlling terminal.
fn session_and_tty(pid: i32) -> (i32, i32) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let f: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    (f[3].parse().unwrap(), f[4].parse().unwrap())
}

/// The half that runs under the pty (a no-op unless started by the test below).
#[test]
#[ignore = "helper process of a_sandbox_cannot_reach_the_terminal_the_server_runs_under"]
fn terminal_child() {
    let (Ok(mark), Ok(report)) = (std::env::var(CHILD_ENV), std::env::var(REPORT_ENV)) else {
        return;
    };
    // SAFETY: getsid of ourselves.
    let own_session = unsafe { libc::getsid(0) };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let mut lines = Vec::new();
    for zygote in [true, false] {
        let mut env = env(if zygote { "tty-zygote" } else { "tty-exec" });
        env.cfg.zygote = zygote;
        let script = attack_script(&mark);
        let out = rt.block_on(async move {
            let (tx, rx) = tokio::sync::oneshot::channel();
            with_env(env, move |cfg, _| async move {
                let rt = sandpool_sandbox::Runtime::new(cfg).await.unwrap();
                let sb = start(&rt).await;
                let mut pids = vec![("init", sb.init_pid())];
                pids.extend(rt.zygote_pid().map(|p| ("zygote", p)));
                let mut seen = String::new();
                for (what, pid) in pids {
                    let (session, tty) = session_and_tty(pid);
                    let shared = session == own_session;
                    seen.push_str(&format!("{what} server-session {shared} tty {tty}\n"));
                }
                let mut r = req("python3 -");
                r.stdin = Some(script.into_bytes().into());
                let o = sb.exec_collect(r).await.unwrap();
                assert_eq!(o.outcome.exit_code, Some(0), "{}", text(&o.stderr));
                sb.destroy().await.unwrap();
                let _ = tx.send(seen + &text(&o.stdout));
            })
            .await;
            rx.await.unwrap()
        });
        let path = if zygote { "zygote" } else { "exec" };
        lines.extend(out.lines().map(|l| format!("{path}: {l}")));
    }
    std::fs::write(report, lines.join("\n") + "\n").unwrap();
}

fn openpty() -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty with valid out-pointers and default settings.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors from openpty.
    let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    // SAFETY: termios of our own pty. Echo on, so pushed input shows on the master too; not
    // canonical, so FIONREAD counts every queued byte.
    unsafe {
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(slave.as_raw_fd(), &mut t), 0);
        t.c_lflag &= !libc::ICANON;
        t.c_lflag |= libc::ECHO;
        assert_eq!(libc::tcsetattr(slave.as_raw_fd(), libc::TCSANOW, &t), 0);
        libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
        libc::fcntl(slave.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC);
    }
    (master, slave)
}

#[test]
fn a_sandbox_cannot_reach_the_terminal_the_server_runs_under() {
    let (master, slave) = openpty();
    let mark = format!("SBXTTY{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let dir = tempfile::tempdir().unwrap();
    let report = dir.path().join("report");
    let stdio = || Stdio::from(slave.try_clone().unwrap());
    let mut cmd = std::process::Command::new(std::env::current_exe().unwrap());
    cmd.args([
        "--exact",
        "terminal_child",
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(CHILD_ENV, &mark)
    .env(REPORT_ENV, &report)
    .stdin(stdio())
    .stdout(stdio())
    .stderr(stdio());
    // SAFETY: setsid and ioctl are async-signal-safe; fd 0 is the pty slave here.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() == -1 || libc::ioctl(0, libc::TIOCSCTTY, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    // Everything the terminal shows, read while the child runs so it never blocks on output.
    let mut reader = std::fs::File::from(master.try_clone().unwrap());
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stop = done.clone();
    let master_fd = master.as_raw_fd();
    let shown = std::thread::spawn(move || {
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let mut p = libc::pollfd {
                fd: master_fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll of one valid pollfd.
            let ready = unsafe { libc::poll(&mut p, 1, 100) };
            if ready > 0 {
                match reader.read(&mut buf) {
                    Ok(n) if n > 0 => seen.extend_from_slice(&buf[..n]),
                    _ => break,
                }
            } else if stop.load(std::sync::atomic::Ordering::Acquire) {
                break;
            }
        }
        seen
    });
    let status = child.wait().unwrap();
    done.store(true, std::sync::atomic::Ordering::Release);
    let shown = shown.join().unwrap();
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD on our pty slave into a valid int.
    assert_eq!(
        unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut queued) },
        0
    );
    let shown = String::from_utf8_lossy(&shown).into_owned();
    assert!(status.success(), "the helper failed:\n{shown}");
    let report = std::fs::read_to_string(&report).expect("the helper wrote no report");
    println!("{report}");
    for l in report.lines().filter(|l| l.contains(" server-session ")) {
        assert!(
            l.ends_with("server-session false tty 0"),
            "a sandbox process shares the server's session or terminal: {l}"
        );
    }
    // The attack ran on both start paths.
    for path in ["zygote", "exec"] {
        assert!(
            report.contains(&format!("{path}: /dev/tty ")),
            "no attempt on /dev/tty ({path}):\n{report}"
        );
        assert!(
            report.contains(&format!("{path}: tty_nr 0\n")),
            "a command has a controlling terminal ({path}):\n{report}"
        );
    }
    assert!(
        !shown.contains(&mark),
        "the sandbox wrote to the server's terminal:\n{report}"
    );
    assert_eq!(
        queued, 0,
        "the sandbox pushed input into the server's terminal:\n{report}"
    );
}
