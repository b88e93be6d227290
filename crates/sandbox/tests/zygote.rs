//! The zygote that forks sandbox inits: used, leaks nothing into sandboxes, replaced when it
//! dies, gone with its runtime.

mod common;
use common::*;

fn ppid(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split(' ').nth(1)?.parse().ok()
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            !s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false)
}

fn fd_links(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| std::fs::read_link(e.path()).ok())
                .map(|l| l.to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// What a host-rooted sandbox's /etc must look like, whichever way its init was started:
/// read-only, the listed host entries, synthetic identity files, nothing secret.
async fn check_etc(sb: &sandpool_sandbox::Sandbox) {
    // Public certificates yes, private keys not (the host has a private/ there to leave out).
    assert!(std::path::Path::new("/etc/ssl/private").is_dir());
    let (code, out, err) = sh(
        sb,
        "find /etc -name private; test -s /etc/ssl/certs/ca-certificates.crt && echo certs; \
         test -s /etc/ssl/openssl.cnf && echo cnf",
    )
    .await;
    assert_eq!((code, out.as_str()), (Some(0), "certs\ncnf\n"), "{err}");
    // The synthetic files are root's to change, everyone's to read; dirs made during setup keep
    // their modes; commands get the host process's umask back.
    let umask = std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("Umask:").map(|v| v.trim().to_string()))
        .unwrap();
    let (code, out, err) = sh(
        sb,
        "stat -Lc %a /etc/passwd /etc/hosts; stat -c %a /tmp /root /var/tmp /mnt/data; umask",
    )
    .await;
    assert_eq!(
        (code, out),
        (
            Some(0),
            format!("644\n644\n1777\n700\n1777\n755\n{umask}\n")
        ),
        "{err}"
    );
    let (code, out, err) = sh(
        sb,
        "test -s /etc/ld.so.cache && echo cache; cat /etc/hostname; grep -c . /etc/passwd; \
         test -e /etc/shadow || echo no-shadow; touch /etc/new 2>/dev/null || echo read-only; \
         echo 10.0.0.1 x >> /etc/hosts && echo hosts-writable",
    )
    .await;
    assert_eq!(
        (code, out.as_str()),
        (
            Some(0),
            "cache\nsandbox\n3\nno-shadow\nread-only\nhosts-writable\n"
        ),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn inits_are_forked_by_the_zygote_and_hold_nothing_of_it() {
    with_runtime("zygote-use", |rt, _| async move {
        let sb = start(&rt).await;
        let zygote = rt.zygote_pid().expect("a zygote runs after a start");
        assert_eq!(
            ppid(sb.init_pid()),
            Some(zygote),
            "init not forked by the zygote"
        );
        let zygote_sock = std::fs::read_link(format!("/proc/{zygote}/fd/3"))
            .expect("zygote socket")
            .to_string_lossy()
            .into_owned();
        assert!(zygote_sock.starts_with("socket:"), "{zygote_sock}");
        let init_fds = fd_links(sb.init_pid());
        assert!(!init_fds.is_empty(), "cannot read the init's descriptors");
        assert!(
            !init_fds.contains(&zygote_sock),
            "the init holds the zygote's socket: {init_fds:?}"
        );
        // The sandbox is as isolated as an exec'd one: own root user, pid 1, no host files.
        let (code, out, _) = sh(&sb, "id -u; echo $$; cat /etc/shadow 2>/dev/null; true").await;
        assert_eq!((code, out.as_str()), (Some(0), "0\n2\n"));
        check_etc(&sb).await;
        assert_default_signal_dispositions(&sb).await;
        // Again, now that the init has started a command before.
        assert_default_signal_dispositions(&sb).await;
        // The /etc template lives in the zygote's own mount namespace, not in the host's.
        let etc_tmpfs = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .unwrap_or_default()
                .lines()
                .any(|l| l.split(' ').nth(4) == Some("/etc") && l.contains(" - tmpfs "))
        };
        assert!(
            etc_tmpfs(&zygote.to_string()),
            "no /etc template in the zygote"
        );
        assert!(!etc_tmpfs("self"), "the /etc template leaked into the host");
        // One mount, copied from the host: nothing is mounted below it, in the zygote or in a
        // sandbox, and host secrets under it are left out.
        let below_etc = |pid: &str| {
            std::fs::read_to_string(format!("/proc/{pid}/mountinfo"))
                .unwrap_or_default()
                .lines()
                .filter(|l| {
                    l.split(' ')
                        .nth(4)
                        .is_some_and(|m| m.starts_with("/etc/"))
                })
                .count()
        };
        assert_eq!(below_etc(&zygote.to_string()), 0);
        assert_eq!(below_etc(&sb.init_pid().to_string()), 0);
        let (code, out, _) = sh(
            &sb,
            "test -e /etc/ssl/private || echo no-private; test -s /etc/ssl/certs/ca-certificates.crt && echo certs",
        )
        .await;
        assert_eq!((code, out.as_str()), (Some(0), "no-private\ncerts\n"));

        // Network namespaces come from the zygote's ready set: each sandbox its own, with a
        // working loopback, none shared with the host.
        let other = start(&rt).await;
        let ns = |pid: i32| std::fs::read_link(format!("/proc/{pid}/ns/net")).unwrap();
        let (a, b) = (ns(sb.init_pid()), ns(other.init_pid()));
        assert_ne!(a, b, "two sandboxes share a network namespace");
        assert_ne!(a, std::fs::read_link("/proc/self/ns/net").unwrap());
        let (code, out, err) = sh(
            &sb,
            "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); s.listen(); \
             c=socket.create_connection(s.getsockname()); print(\"lo ok\")'",
        )
        .await;
        assert_eq!((code, out.as_str()), (Some(0), "lo ok\n"), "{err}");
        sb.destroy().await.unwrap();
        other.destroy().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_zygote_is_replaced_and_its_sandboxes_live_on() {
    with_runtime("zygote-kill", |rt, _| async move {
        let first = start(&rt).await;
        let old = rt.zygote_pid().expect("zygote");
        // SAFETY: signalling the test's own zygote.
        assert_eq!(unsafe { libc::kill(old, libc::SIGKILL) }, 0);

        let second = start(&rt).await;
        let new = rt.zygote_pid().expect("a new zygote");
        assert_ne!(new, old);
        assert!(alive(new));
        assert!(!alive(old), "the dead zygote was not reaped");
        assert_eq!(ppid(second.init_pid()), Some(new));
        for sb in [&first, &second] {
            let (code, out, _) = sh(sb, "echo ok").await;
            assert_eq!((code, out.as_str()), (Some(0), "ok\n"));
        }
        first.destroy().await.unwrap();
        second.destroy().await.unwrap();
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zygote_goes_with_its_runtime() {
    with_env(env("zygote-drop"), |cfg, _| async move {
        let rt = sandpool_sandbox::Runtime::new(cfg).await.unwrap();
        let sb = start(&rt).await;
        let zygote = rt.zygote_pid().expect("zygote");
        sb.destroy().await.unwrap();
        drop(sb);
        drop(rt);
        assert!(!alive(zygote), "zygote outlived its runtime");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_zygote_inits_are_exec_d_by_the_runtime() {
    let mut env = env("zygote-off");
    env.cfg.zygote = false;
    with_env(env, |cfg, _| async move {
        let rt = sandpool_sandbox::Runtime::new(cfg).await.unwrap();
        let sb = start(&rt).await;
        assert_eq!(rt.zygote_pid(), None);
        assert_eq!(ppid(sb.init_pid()), Some(std::process::id() as i32));
        check_etc(&sb).await;
        assert_default_signal_dispositions(&sb).await;
        let (code, out, _) = sh(&sb, "echo ok").await;
        assert_eq!((code, out.as_str()), (Some(0), "ok\n"));
        sb.destroy().await.unwrap();
    })
    .await;
}

async fn wait_ready_netns(rt: &sandpool_sandbox::Runtime, want: usize) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let n = rt.netns_ready();
        if n == want {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the zygote holds {n} ready network namespaces, want {want}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zygote_keeps_the_configured_number_of_network_namespaces_ready() {
    for want in [0, 7] {
        let mut env = env("zygote-netns");
        env.cfg.ready_netns = want;
        with_env(env, move |cfg, _| async move {
            let rt = sandpool_sandbox::Runtime::new(cfg).await.unwrap();
            let first = start(&rt).await;
            assert!(rt.zygote_pid().is_some(), "a zygote runs after a start");
            wait_ready_netns(&rt, want).await;
            // A burst takes ready ones (or makes its own); every sandbox still gets a network
            // namespace of its own, and the set is refilled afterwards.
            let mut burst = Vec::new();
            for _ in 0..3 {
                burst.push(start(&rt).await);
            }
            let ns = |sb: &sandpool_sandbox::Sandbox| {
                std::fs::read_link(format!("/proc/{}/ns/net", sb.init_pid())).unwrap()
            };
            let mut seen: Vec<_> = burst.iter().map(ns).collect();
            seen.push(ns(&first));
            seen.sort();
            seen.dedup();
            assert_eq!(seen.len(), 4, "sandboxes share a network namespace");
            let (code, out, err) = sh(
                &burst[2],
                "python3 -c 'import socket; s=socket.socket(); s.bind((\"127.0.0.1\", 0)); \
                 s.listen(); socket.create_connection(s.getsockname()); print(\"lo ok\")'",
            )
            .await;
            assert_eq!((code, out.as_str()), (Some(0), "lo ok\n"), "{err}");
            wait_ready_netns(&rt, want).await;
            for sb in burst.into_iter().chain([first]) {
                sb.destroy().await.unwrap();
            }
        })
        .await;
    }
}
