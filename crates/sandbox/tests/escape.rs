//! Escape attempts: each test fails if the attempt succeeds.

mod common;
use common::*;
use sandpool_sandbox::*;

/// Runs a raw syscall from Python inside the sandbox; returns (result, errno).
async fn syscall(sb: &Sandbox, nr: i64, args: &str) -> (i64, i64) {
    let py = format!(
        "import ctypes; l=ctypes.CDLL(None, use_errno=True); l.syscall.restype=ctypes.c_long; \
         r=l.syscall({nr}{args}); print(r, ctypes.get_errno())"
    );
    let (code, out, err) = sh(sb, &format!("python3 -c '{py}'")).await;
    assert_eq!(code, Some(0), "python failed: {err}");
    let mut it = out.split_whitespace().map(|x| x.parse::<i64>().unwrap());
    (it.next().unwrap(), it.next().unwrap())
}

struct Marker(std::path::PathBuf);
impl Drop for Marker {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_files_are_invisible_and_system_dirs_read_only() {
    with_runtime("esc-files", |rt, dir| async move {
        let marker = Marker(std::path::PathBuf::from(format!(
            "/root/sandpool-escape-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        )));
        std::fs::write(&marker.0, "secret").unwrap();
        let sb = start(&rt).await;
        let m = marker.0.display();
        let state = dir.display();
        let cmds = [
            format!("cat {m}"),
            "cat /etc/shadow".to_string(),
            format!("ls {state}"),
            "touch /usr/escape".to_string(),
            "touch /bin/escape".to_string(),
            "touch /etc/ssl/escape".to_string(),
            "mount -o remount,rw /usr".to_string(),
            "mount -t tmpfs none /mnt".to_string(),
            "mknod /tmp/sda b 8 0".to_string(),
            "unshare -U true".to_string(),
            "unshare -m true".to_string(),
            "ulimit -Hn 10000000".to_string(),
            "ulimit -Hc unlimited".to_string(),
            "readlink /proc/1/fd/2".to_string(),
            "cat /proc/1/environ".to_string(),
            "echo b > /proc/sysrq-trigger".to_string(),
            "echo 1 > /proc/sys/kernel/panic".to_string(),
            "test -s /proc/kcore".to_string(),
            "grep -q . /proc/kallsyms".to_string(),
            "grep -q . /proc/timer_list".to_string(),
            "grep -q . /proc/keys".to_string(),
            "grep -q . /proc/key-users".to_string(),
            "find /proc/acpi /proc/scsi -mindepth 1 2>/dev/null | grep -q .".to_string(),
            "echo 1 > /proc/sys/vm/drop_caches".to_string(),
            "ls /sys/class/net".to_string(),
            "chroot / true && cd / && chroot . ls /oldroot".to_string(),
        ];
        for c in cmds {
            let (code, out, _) = sh(&sb, &c).await;
            assert_ne!(code, Some(0), "escape attempt succeeded: {c} -> {out}");
        }
        let (_, out, _) = sh(&sb, "grep CapEff /proc/self/status").await;
        let caps = u64::from_str_radix(out.split_whitespace().nth(1).unwrap(), 16).unwrap();
        assert_eq!(caps & (1 << 21), 0, "CAP_SYS_ADMIN present");
        assert_eq!(caps & (1 << 19), 0, "CAP_SYS_PTRACE present");
        assert_eq!(caps & (1 << 12), 0, "CAP_NET_ADMIN present");
        let (_, out, _) = sh(&sb, "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status").await;
        assert_eq!(out, "NoNewPrivs:\t1\nSeccomp:\t2\n");
        assert_eq!(
            sh(&sb, "ls /dev | tr '\\n' ' '").await.1,
            "fd full null ptmx pts random shm stderr stdin stdout tty urandom zero "
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dangerous_syscalls_are_denied() {
    with_runtime("esc-sys", |rt, _| async move {
        let sb = start(&rt).await;
        #[cfg(target_arch = "x86_64")]
        let calls: &[(&str, i64, &str)] = &[
            ("io_uring_setup", 425, ", 8, ctypes.create_string_buffer(120)"),
            ("bpf", 321, ", 0, 0, 0"),
            ("keyctl", 250, ", 0, 0, 0"),
            ("add_key", 248, ", b\"user\", b\"k\", b\"v\", 1, -2"),
            ("perf_event_open", 298, ", 0, 0, -1, -1, 0"),
            ("finit_module", 313, ", 0, b\"\", 0"),
            ("init_module", 175, ", 0, 0, b\"\""),
            ("kexec_load", 246, ", 0, 0, 0, 0"),
            ("ptrace attach init", 101, ", 16, 1, 0, 0"),
            ("unshare user", 272, ", 0x10000000"),
            ("setns", 308, ", 0, 0"),
            ("fsopen", 430, ", b\"tmpfs\", 0"),
        ];
        #[cfg(not(target_arch = "x86_64"))]
        let calls: &[(&str, i64, &str)] = &[];
        for (name, nr, args) in calls {
            let (r, errno) = syscall(&sb, *nr, args).await;
            assert_eq!(r, -1, "{name} succeeded");
            assert_eq!(errno, libc::EPERM as i64, "{name} errno");
        }
        // Every number refused outright (DENIED_SYSCALLS), in one interpreter: the filter
        // answers EPERM before the kernel looks at the (zero) arguments.
        let denied: Vec<String> = sandpool_sandbox::DENIED_SYSCALLS
            .iter()
            .map(|n| n.to_string())
            .collect();
        let script = format!(
            "import ctypes; l=ctypes.CDLL(None, use_errno=True); l.syscall.restype=ctypes.c_long\n\
             bad=[]\n\
             for nr in [{}]:\n    ctypes.set_errno(0); r=l.syscall(nr, 0, 0, 0, 0, 0)\n    \
             e=ctypes.get_errno()\n    if r != -1 or e != 1: bad.append((nr, r, e))\n\
             print(bad)",
            denied.join(", ")
        );
        let (code, out, err) = sh(&sb, &format!("python3 -c '{script}'")).await;
        assert_eq!((code, out.trim()), (Some(0), "[]"), "{err}");
        // clone3 and the x32 ABI's numbers fail as unimplemented.
        #[cfg(target_arch = "x86_64")]
        for (name, nr) in [("clone3", 435), ("x32 keyctl", 0x4000_0000 + 250)] {
            let (r, errno) = syscall(&sb, nr, ", 0, 0").await;
            assert_eq!((r, errno), (-1, libc::ENOSYS as i64), "{name}");
        }
        // Tracing a process of the sandbox itself is denied too (ptrace is off entirely).
        let (code, _, _) = sh(&sb, "sleep 100 & P=$!; python3 -c \"import ctypes,sys; l=ctypes.CDLL(None); sys.exit(0 if l.ptrace(16, $P, 0, 0) == 0 else 1)\"").await;
        assert_eq!(code, Some(1));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_processes_and_loopback_are_unreachable() {
    with_runtime("esc-proc", |rt, _| async move {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let sb = start(&rt).await;
        let (code, _, _) = sh(&sb, &format!("echo x > /dev/tcp/127.0.0.1/{port}")).await;
        assert_ne!(code, Some(0), "reached a host loopback listener");
        assert!(
            listener.accept().is_err(),
            "the host listener saw a connection"
        );
        let (_, out, _) = sh(&sb, "ls /proc | grep -cE '^[0-9]+$'").await;
        let n: u32 = out.trim().parse().unwrap();
        assert!(n <= 4, "sandbox sees {n} processes");
        let me = std::process::id();
        let (code, _, _) = sh(&sb, &format!("grep -q sandbox /proc/{me}/cmdline")).await;
        assert_ne!(code, Some(0), "host process visible");
        // On the host, the sandbox's root is its own unprivileged uid.
        let status = std::fs::read_to_string(format!("/proc/{}/status", sb.init_pid())).unwrap();
        let uid_line = status
            .lines()
            .find(|l| l.starts_with("Uid:"))
            .unwrap()
            .to_string();
        assert!(uid_line.contains(&sb.host_uid().to_string()), "{uid_line}");
        assert!(sb.host_uid() >= 1_000_000);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sandboxes_cannot_reach_each_other() {
    with_runtime("esc-cross", |rt, _| async move {
        let a = start(&rt).await;
        let b = start(&rt).await;
        assert_ne!(a.host_uid(), b.host_uid());
        sh(
            &a,
            "echo secret > /tmp/secret; echo s > /mnt/data/s; sleep 1000 >/dev/null 2>&1 &",
        )
        .await;
        let (code, _, _) = sh(&b, "cat /tmp/secret || cat /mnt/data/s").await;
        assert_ne!(code, Some(0));
        let (_, out, _) = sh(&b, "pgrep -c sleep || true").await;
        assert_eq!(out.trim(), "0");
        let pid = a.init_pid();
        let (code, _, _) = sh(&b, &format!("kill -0 {pid}")).await;
        assert_ne!(code, Some(0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn planted_symlinks_do_not_lead_the_files_api_out() {
    with_runtime("esc-link", |rt, _| async move {
        let sb = start(&rt).await;
        let (code, _, err) = sh(&sb, "ln -s /etc/passwd /mnt/data/abs && ln -s ../../etc /mnt/data/up && ln -s /proc/self/root /mnt/data/magic && mkdir /mnt/data/d && ln -s ../x /mnt/data/d/rel && echo in > /mnt/data/x").await;
        assert_eq!(code, Some(0), "{err}");
        let data = sb.confined("/mnt/data");
        for p in ["/mnt/data/abs", "/mnt/data/up/passwd", "/mnt/data/magic/etc/passwd"] {
            assert!(matches!(data.read_file(p).await, Err(SandboxError::InvalidPath(_))), "{p}");
            assert!(matches!(data.stat(p).await, Err(SandboxError::InvalidPath(_))), "{p}");
            assert!(matches!(data.write_file(p, &b"x"[..]).await, Err(SandboxError::InvalidPath(_))), "{p}");
        }
        assert!(matches!(data.list_dir("/mnt/data/up", false).await, Err(SandboxError::InvalidPath(_))));
        assert!(matches!(data.remove("/mnt/data/up/passwd").await, Err(SandboxError::InvalidPath(_))));
        // A relative symlink that stays inside the root works.
        assert_eq!(data.read_to_vec("/mnt/data/d/rel").await.unwrap(), b"in\n");
        // Removing a symlink removes the link, not its target.
        data.remove("/mnt/data/up").await.unwrap();
        assert_eq!(sh(&sb, "test -d /etc && echo yes").await.1, "yes\n");
        // The symlink was not followed on the host either: the host file is untouched.
        assert!(std::fs::read_to_string("/etc/passwd").unwrap().contains("root:"));
    })
    .await;
}

/// A Python prelude for raw syscalls: `sc(nr, *args)` returns `[result, errno]`.
const PY_SYSCALL: &str = "import ctypes, fcntl, json, os, termios\n\
    l = ctypes.CDLL(None, use_errno=True); l.syscall.restype = ctypes.c_long\n\
    def sc(nr, *a):\n    ctypes.set_errno(0)\n    \
    r = l.syscall(ctypes.c_long(nr), *[ctypes.c_long(x) for x in a])\n    \
    return [r, ctypes.get_errno()]\n";

/// Runs a Python script (after [`PY_SYSCALL`]) that prints one JSON value.
async fn python_json(sb: &Sandbox, script: &str) -> serde_json::Value {
    sb.confined("/tmp")
        .write_file("/tmp/probe.py", format!("{PY_SYSCALL}{script}").as_bytes())
        .await
        .expect("write the probe");
    let (code, out, err) = sh(sb, "python3 /tmp/probe.py").await;
    assert_eq!(code, Some(0), "python failed: {err}");
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The calls the deny list let through, each refused with EPERM by the allow list; the
/// arguments are ones the kernel would accept (kcmp of the caller with itself, an empty
/// mbind, open_tree of `/`), so only the filter stands between them and the kernel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_outside_the_allow_list_are_refused() {
    use sandpool_sandbox::seccomp_policy::nr;
    on_each_start_path("esc-allow", |rt, zygote| async move {
        let sb = start_on_path(&rt, zygote).await;
        let calls: Vec<(&str, i64, &str)> = vec![
            ("kcmp", libc::SYS_kcmp, "os.getpid(), os.getpid(), 0, 0, 0"),
            (
                "personality ADDR_NO_RANDOMIZE",
                libc::SYS_personality,
                "0x0040000",
            ),
            (
                "personality READ_IMPLIES_EXEC",
                libc::SYS_personality,
                "0x0400000",
            ),
            ("mbind", libc::SYS_mbind, "0, 0, 0, 0, 0, 0"),
            ("set_mempolicy", libc::SYS_set_mempolicy, "0, 0, 0"),
            ("get_mempolicy", libc::SYS_get_mempolicy, "0, 0, 0, 0, 0"),
            ("move_pages", libc::SYS_move_pages, "0, 0, 0, 0, 0, 0"),
            ("migrate_pages", libc::SYS_migrate_pages, "0, 0, 0, 0"),
            // 434 is pidfd_open on every architecture; 20 is MADV_COLD.
            (
                "process_madvise",
                libc::SYS_process_madvise,
                "sc(434, os.getpid(), 0)[0], 0, 0, 20, 0",
            ),
            ("quotactl_fd", libc::SYS_quotactl_fd, "0, 0, 0, 0"),
            ("listmount", nr::LISTMOUNT, "0, 0, 0, 0"),
            ("statmount", nr::STATMOUNT, "0, 0, 0, 0"),
            (
                "open_tree_attr",
                nr::OPEN_TREE_ATTR,
                "-100, ctypes.addressof(root), 0, 0, 0",
            ),
            (
                "sethostname",
                libc::SYS_sethostname,
                "ctypes.addressof(root), 1",
            ),
            ("unshare CLONE_NEWNET", libc::SYS_unshare, "0x40000000"),
            ("unshare CLONE_NEWTIME", libc::SYS_unshare, "0x80"),
        ];
        let probes: Vec<String> = calls
            .iter()
            .map(|(name, nr, args)| format!("\"{name}\": sc({nr}, {args})"))
            .collect();
        let script = format!(
            "root = ctypes.create_string_buffer(b\"/\")\n\
             print(json.dumps({{{}, \"query\": sc({}, 0xffffffff)}}))",
            probes.join(", "),
            libc::SYS_personality
        );
        let got = python_json(&sb, &script).await;
        for (name, _, _) in &calls {
            assert_eq!(
                got[name],
                serde_json::json!([-1, libc::EPERM]),
                "{name} (zygote: {zygote})"
            );
        }
        // The persona query is allowed, and the refusals above left the persona as it was.
        assert_eq!(got["query"], serde_json::json!([0, 0]));
    })
    .await;
}

/// Socket families outside the list fail as unsupported; netlink only speaks route.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_listed_socket_families_open() {
    on_each_start_path("esc-sock", |rt, zygote| async move {
        let sb = start_on_path(&rt, zygote).await;
        let s = libc::SYS_socket;
        let raw = libc::SOCK_RAW | libc::SOCK_CLOEXEC;
        let dgram = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
        let seqpacket = libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC;
        let script = format!(
            "print(json.dumps({{\
             \"packet\": sc({s}, {}, {raw}, 0x300), \"alg\": sc({s}, {}, {seqpacket}, 0), \
             \"vsock\": sc({s}, {}, {}, 0), \"key\": sc({s}, {}, {raw}, 2), \
             \"packet_high\": sc({s}, (1 << 32) | {}, {raw}, 0x300), \
             \"netlink_audit\": sc({s}, {nl}, {raw}, {}), \
             \"netlink_uevent\": sc({s}, {nl}, {raw}, {}), \
             \"socketpair_inet\": sc({}, {}, {dgram}, 0, 0), \
             \"netlink_route\": sc({s}, {nl}, {raw}, {})[0] >= 0, \
             \"inet\": sc({s}, {}, {dgram}, 0)[0] >= 0}}))",
            libc::AF_PACKET,
            libc::AF_ALG,
            libc::AF_VSOCK,
            libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
            libc::AF_KEY,
            libc::AF_PACKET,
            libc::NETLINK_AUDIT,
            libc::NETLINK_KOBJECT_UEVENT,
            libc::SYS_socketpair,
            libc::AF_INET,
            libc::NETLINK_ROUTE,
            libc::AF_INET,
            nl = libc::AF_NETLINK,
        );
        let got = python_json(&sb, &script).await;
        let unsupported = serde_json::json!([-1, libc::EAFNOSUPPORT]);
        for k in [
            "packet",
            "alg",
            "vsock",
            "key",
            "packet_high",
            "socketpair_inet",
        ] {
            assert_eq!(got[k], unsupported, "{k} (zygote: {zygote})");
        }
        let no_protocol = serde_json::json!([-1, libc::EPROTONOSUPPORT]);
        assert_eq!(got["netlink_audit"], no_protocol);
        assert_eq!(got["netlink_uevent"], no_protocol);
        assert_eq!(got["netlink_route"], true);
        assert_eq!(got["inet"], true);
    })
    .await;
}

/// The user namespace that owns the network namespace of `pid`, as (dev, ino).
fn netns_owner(pid: i32) -> (u64, u64) {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::fs::MetadataExt;
    const NS_GET_USERNS: libc::c_ulong = 0xb701;
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    // SAFETY: NS_GET_USERNS on an nsfs descriptor returns a new descriptor.
    let fd = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
    assert!(
        fd >= 0,
        "NS_GET_USERNS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fresh descriptor.
    let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    let m = owner.metadata().unwrap();
    (m.dev(), m.ino())
}

/// Every sandbox's network namespace belongs to the host's user namespace, on every start path
/// (the zygote's ready namespaces, the zygote when a burst has used them up, the exec path), so
/// the sandbox's root holds no `CAP_NET_RAW` over it: `AF_PACKET` sockets (CVE-2016-8655,
/// CVE-2017-7308, CVE-2020-14386) are refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_namespaces_are_the_hosts_on_every_start_path() {
    let host_userns = {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata("/proc/self/ns/user").unwrap();
        (m.dev(), m.ino())
    };
    // (name, zygote, ready namespaces, concurrent starts)
    for (name, zygote, ready, burst) in [
        ("netns-burst", true, 2, 8),
        ("netns-none-ready", true, 0, 2),
        ("netns-exec", false, 0, 2),
    ] {
        let mut env = env(name);
        env.cfg.zygote = zygote;
        env.cfg.ready_netns = ready;
        with_env(env, move |cfg, _| async move {
            let rt = Runtime::new(cfg).await.unwrap();
            let starts = (0..burst).map(|_| rt.start(SandboxSpec::default()));
            let sandboxes: Vec<Sandbox> = futures::future::join_all(starts)
                .await
                .into_iter()
                .map(|r| r.expect("start"))
                .collect();
            for sb in &sandboxes {
                // AF_PACKET is refused (EPERM: no CAP_NET_RAW over the namespace; a seccomp
                // allow list may refuse the family before, with EAFNOSUPPORT). A raw IPv4 socket,
                // which seccomp lets through, is refused by the capability check alone.
                let (code, out, err) = sh(
                    sb,
                    "python3 -c 'import socket\nfor f, p in ((socket.AF_PACKET, 0), \
                     (socket.AF_INET, socket.IPPROTO_ICMP)):\n    try:\n        \
                     socket.socket(f, socket.SOCK_RAW, p); print(\"raw socket\")\n    \
                     except OSError as e: print(e.errno)'",
                )
                .await;
                let errnos: Vec<&str> = out.split_whitespace().collect();
                let (eperm, eafnosupport) =
                    (libc::EPERM.to_string(), libc::EAFNOSUPPORT.to_string());
                assert_eq!(code, Some(0), "{name}: {err}");
                assert!(
                    errnos.len() == 2
                        && (errnos[0] == eperm || errnos[0] == eafnosupport)
                        && errnos[1] == eperm,
                    "{name}: AF_PACKET, raw IPv4: {errnos:?}"
                );
                assert_eq!(
                    netns_owner(sb.init_pid()),
                    host_userns,
                    "{name}: a sandbox owns its network namespace"
                );
                let (code, out, err) = sh(
                    sb,
                    "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); \
                     s.listen(); socket.create_connection(s.getsockname()); print(\"lo ok\")'",
                )
                .await;
                assert_eq!((code, out.as_str()), (Some(0), "lo ok\n"), "{name}: {err}");
            }
            for sb in sandboxes {
                sb.destroy().await.unwrap();
            }
        })
        .await;
    }
}

/// A FIFO (or device) planted where the files API looks never blocks the init: reads and writes
/// of anything but a regular file are refused without waiting, and timeouts still fire.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn special_files_never_block_the_init() {
    with_runtime("esc-fifo", |rt, _| async move {
        let sb = start(&rt).await;
        let (code, _, err) = sh(&sb, "mkfifo /mnt/data/fifo && ln -s fifo /mnt/data/link").await;
        assert_eq!(code, Some(0), "{err}");
        // A bound, not a timing: on the old code the init sat in open() for good.
        let guard = std::time::Duration::from_secs(20);
        let stuck = "the init is stuck on a special file";
        let data = sb.confined("/mnt/data");
        for p in ["/mnt/data/fifo", "/mnt/data/link"] {
            let r = tokio::time::timeout(guard, data.read_to_vec(p))
                .await
                .expect(stuck);
            assert!(
                matches!(r, Err(SandboxError::InvalidPath(_))),
                "read {p}: {r:?}"
            );
            let r = tokio::time::timeout(guard, data.write_file(p, &b"x"[..]))
                .await
                .expect(stuck);
            assert!(
                matches!(r, Err(SandboxError::InvalidPath(_))),
                "write {p}: {r:?}"
            );
        }
        // Devices too: /dev/zero would stream without end, /dev/tty is a terminal.
        let root = sb.confined("/");
        for p in ["/dev/zero", "/dev/tty", "/dev/null"] {
            let r = tokio::time::timeout(guard, root.read_to_vec(p))
                .await
                .expect(stuck);
            assert!(
                matches!(r, Err(SandboxError::InvalidPath(_))),
                "read {p}: {r:?}"
            );
        }
        let mut r = req("sleep 30");
        r.timeout = std::time::Duration::from_secs(1);
        let o = tokio::time::timeout(guard, sb.exec_collect(r))
            .await
            .expect(stuck)
            .unwrap();
        assert!(o.outcome.timed_out, "{:?}", o.outcome);
        // The FIFO is still there, untouched; regular files still work.
        let (_, out, _) = sh(&sb, "test -p /mnt/data/fifo && echo fifo").await;
        assert_eq!(out, "fifo\n");
        data.write_file("/mnt/data/ok", &b"fine"[..]).await.unwrap();
        assert_eq!(data.read_to_vec("/mnt/data/ok").await.unwrap(), b"fine");
    })
    .await;
}

/// TIOCSTI on the caller's own controlling terminal (which the kernel allows while
/// `dev.tty.legacy_tiocsti` is 1) and TIOCLINUX are refused, also with the upper half of the
/// command set (the kernel takes the command as 32 bits).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminal_input_cannot_be_injected() {
    on_each_start_path("esc-tty", |rt, zygote| async move {
        let sb = start_on_path(&rt, zygote).await;
        let script = format!(
            "def attempt(cmd):\n    \
             m, s = os.openpty(); pid = os.fork()\n    \
             if pid == 0:\n        \
             os.setsid(); fcntl.ioctl(s, termios.TIOCSCTTY, 0)\n        \
             b = ctypes.create_string_buffer(b\"x\")\n        \
             r, e = sc({ioctl}, s, cmd, ctypes.addressof(b))\n        \
             os._exit(200 if r == 0 else e)\n    \
             return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])\n\
             print(json.dumps([attempt({sti}), attempt((1 << 32) | {sti}), attempt({linux})]))",
            ioctl = libc::SYS_ioctl,
            sti = libc::TIOCSTI,
            linux = libc::TIOCLINUX,
        );
        let got = python_json(&sb, &script).await;
        let eperm = libc::EPERM;
        assert_eq!(
            got,
            serde_json::json!([eperm, eperm, eperm]),
            "zygote: {zygote}"
        );
        // Other terminal ioctls still work: a pty's window size.
        let winsize = "import struct\nm, s = os.openpty()\n\
            fcntl.ioctl(s, termios.TIOCSWINSZ, struct.pack(\"HHHH\", 24, 80, 0, 0))\n\
            got = fcntl.ioctl(s, termios.TIOCGWINSZ, bytes(8))\n\
            print(json.dumps(struct.unpack(\"HHHH\", got)[:2]))";
        assert_eq!(python_json(&sb, winsize).await, serde_json::json!([24, 80]));
    })
    .await;
}

/// Numbers on no list (newer calls, numbers no kernel has yet) look unimplemented.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_syscalls_answer_enosys() {
    use sandpool_sandbox::seccomp_policy::{ALLOWED, CONDITIONAL, DENIED};
    on_each_start_path("esc-nosys", |rt, zygote| async move {
        let sb = start_on_path(&rt, zygote).await;
        let listed = |n: i64| {
            ALLOWED.contains(&n) || DENIED.contains(&n) || CONDITIONAL.iter().any(|c| c.nr == n)
        };
        // x86_64's uretprobe (335) and uprobe (336) are exempt from seccomp in the kernel
        // itself: outside the kernel's uprobe trampoline they only fail (uretprobe kills its
        // caller with SIGILL), so no filter can answer them and none needs to.
        let kernel_exempt = |n: i64| cfg!(target_arch = "x86_64") && (n == 335 || n == 336);
        let unlisted: Vec<String> = (0..600i64)
            .filter(|&n| !listed(n) && !kernel_exempt(n))
            .map(|n| n.to_string())
            .collect();
        // From 459 to 470: lsm_*, mseal, the *xattrat calls, file_getattr/setattr, and the
        // first numbers no kernel of this writing has.
        for n in (459..=470).filter(|&n| n != sandpool_sandbox::seccomp_policy::nr::OPEN_TREE_ATTR)
        {
            assert!(!listed(n), "{n} is listed");
        }
        let script = format!(
            "print(json.dumps([[n] + sc(n, 0, 0, 0, 0, 0, 0) for n in [{}] \
             if sc(n, 0, 0, 0, 0, 0, 0) != [-1, {}]]))",
            unlisted.join(", "),
            libc::ENOSYS
        );
        let got = python_json(&sb, &script).await;
        assert_eq!(
            got,
            serde_json::json!([]),
            "answered otherwise (zygote: {zygote})"
        );
    })
    .await;
}

/// A descriptor the server leaked (no close-on-exec) reaches neither the zygote, nor an init,
/// nor a command, on either start path; a command holds nothing but its stdin, stdout and
/// stderr.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_descriptors_of_the_server_never_reach_a_sandbox() {
    use std::os::unix::ffi::OsStrExt;
    let dir = tempfile::tempdir().unwrap();
    let leaked = dir
        .path()
        .join(format!("sandpool-leak-{}", uuid::Uuid::new_v4().simple()));
    std::fs::write(&leaked, "secret").unwrap();
    let c = std::ffi::CString::new(leaked.as_os_str().as_bytes()).unwrap();
    // SAFETY: a plain open, deliberately without O_CLOEXEC; closed at the end.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
    assert!(fd >= 0);
    let name = leaked.file_name().unwrap().to_string_lossy().into_owned();
    for zygote in [true, false] {
        let mut env = env(if zygote { "fds-zygote" } else { "fds-exec" });
        env.cfg.zygote = zygote;
        let name = name.clone();
        with_env(env, move |cfg, _| async move {
            let rt = Runtime::new(cfg).await.unwrap();
            let sb = start(&rt).await;
            let holders = std::iter::once(sb.init_pid()).chain(rt.zygote_pid());
            for pid in holders {
                for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .unwrap()
                    .flatten()
                {
                    let link = std::fs::read_link(e.path()).unwrap_or_default();
                    assert!(
                        !link.to_string_lossy().contains(&name),
                        "pid {pid} holds the leaked descriptor (zygote path: {zygote})"
                    );
                }
            }
            let (code, out, err) = sh(
                &sb,
                "python3 -c 'import os\ndef is_open(f):\n    try:\n        os.fstat(f)\n        \
                 return True\n    except OSError:\n        return False\n\
                 print([f for f in range(3, 4096) if is_open(f)])'",
            )
            .await;
            assert_eq!(
                (code, out.trim()),
                (Some(0), "[]"),
                "a command holds stray descriptors (zygote path: {zygote}): {err}"
            );
            sb.destroy().await.unwrap();
        })
        .await;
    }
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };
}
