//! Tests against the host's own layout as `CgroupManager::detect` finds it (cgroup v1 on the
//! workplace machines, v2 on most others). Run as root.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::time::Duration;

use common::{
    assert_killed_and_empty, dir_with, eventually, forking_in, read_trim, Proc, TestParent, MIB,
};
use sandpool_cgroups::{CgroupError, CgroupLimits, CgroupVersion, CpuQuota};

const PATIENCE: Duration = Duration::from_secs(30);

fn limits(memory: u64, pids: u64, quota_us: u64) -> CgroupLimits {
    CgroupLimits {
        memory_max: Some(memory),
        pids_max: Some(pids),
        cpu_quota: Some(CpuQuota::new(quota_us, 100_000).expect("valid quota")),
    }
}

/// Reads back (memory, memory+swap if the kernel accounts swap, pids, "quota period").
fn read_limits(
    dirs: &[std::path::PathBuf],
    version: CgroupVersion,
) -> (String, Option<String>, String, String) {
    match version {
        CgroupVersion::V1 => {
            let mem = dir_with(dirs, "memory.limit_in_bytes");
            let memsw = mem.join("memory.memsw.limit_in_bytes");
            let cpu = dir_with(dirs, "cpu.cfs_quota_us");
            (
                read_trim(&mem.join("memory.limit_in_bytes")),
                memsw.exists().then(|| read_trim(&memsw)),
                read_trim(&dir_with(dirs, "pids.max").join("pids.max")),
                format!(
                    "{} {}",
                    read_trim(&cpu.join("cpu.cfs_quota_us")),
                    read_trim(&cpu.join("cpu.cfs_period_us"))
                ),
            )
        }
        CgroupVersion::V2 => {
            let d = &dirs[0];
            let swap = d.join("memory.swap.max");
            (
                read_trim(&d.join("memory.max")),
                swap.exists().then(|| read_trim(&swap)),
                read_trim(&d.join("pids.max")),
                read_trim(&d.join("cpu.max")),
            )
        }
    }
}

#[test]
fn create_applies_limits_and_live_updates_them() {
    let t = TestParent::detect("limits");
    let cg = t
        .mgr
        .create("sb", &limits(64 * MIB, 32, 50_000))
        .expect("create");
    let v = t.mgr.version();
    let (mem, swap, pids, cpu) = read_limits(cg.dirs(), v);
    assert_eq!(mem, (64 * MIB).to_string());
    match (v, swap) {
        (CgroupVersion::V1, Some(s)) => assert_eq!(s, (64 * MIB).to_string()),
        (CgroupVersion::V2, Some(s)) => assert_eq!(s, "0"),
        (_, None) => {}
    }
    assert_eq!(pids, "32");
    assert_eq!(cpu, "50000 100000");

    // Raising memory must reorder the v1 memsw write; lowering must not.
    for mem_limit in [256 * MIB, 16 * MIB] {
        cg.set_limits(&CgroupLimits {
            memory_max: Some(mem_limit),
            ..Default::default()
        })
        .expect("live memory update");
        let (mem, swap, pids, _) = read_limits(cg.dirs(), v);
        assert_eq!(mem, mem_limit.to_string());
        if let (CgroupVersion::V1, Some(s)) = (v, swap) {
            assert_eq!(s, mem_limit.to_string());
        }
        assert_eq!(pids, "32", "None must leave pids_max alone");
    }
    cg.set_limits(&CgroupLimits {
        cpu_quota: Some(CpuQuota::from_millicores(1500)),
        pids_max: Some(7),
        ..Default::default()
    })
    .expect("live cpu/pids update");
    let (_, _, pids, cpu) = read_limits(cg.dirs(), v);
    assert_eq!((pids.as_str(), cpu.as_str()), ("7", "150000 100000"));

    // A non-default period on a fresh cgroup (create skips writing the default one).
    let other = t
        .mgr
        .create(
            "sb-period",
            &CgroupLimits {
                cpu_quota: Some(CpuQuota::new(5_000, 10_000).expect("valid")),
                ..Default::default()
            },
        )
        .expect("create with period");
    assert_eq!(read_limits(other.dirs(), v).3, "5000 10000");

    // Bad limits are refused with a clear error, before touching anything.
    let err = cg
        .set_limits(&CgroupLimits {
            cpu_quota: Some(CpuQuota {
                quota_us: 10,
                period_us: 100_000,
            }),
            ..Default::default()
        })
        .expect_err("tiny quota");
    assert!(matches!(err, CgroupError::InvalidLimit(_)), "{err}");
}

#[test]
fn added_process_is_listed_and_counted() {
    let t = TestParent::detect("addpid");
    let cg = t
        .mgr
        .create("sb", &CgroupLimits::default())
        .expect("create");
    let p = Proc::sh("sleep 1000");
    cg.add_pid(p.pid()).expect("add pid");
    assert_eq!(cg.pids().expect("pids"), vec![p.pid()]);
    for procs in cg.procs_paths() {
        assert_eq!(
            read_trim(&procs),
            p.pid().to_string(),
            "{}",
            procs.display()
        );
    }
    assert!(cg.stats().expect("stats").pids_current >= 1);
    assert!(matches!(cg.add_pid(0), Err(CgroupError::InvalidPid(0))));
    let err = cg.add_pid(i32::MAX).expect_err("no such process");
    assert_eq!(err.errno(), Some(libc::ESRCH), "{err}");
}

#[test]
fn pids_limit_makes_fork_fail_with_eagain() {
    let t = TestParent::detect("pids");
    let max = 6;
    let cg = t
        .mgr
        .create(
            "sb",
            &CgroupLimits {
                pids_max: Some(max),
                ..Default::default()
            },
        )
        .expect("create");
    let mut p = Proc::python(
        "import os, errno, time\n\
         n = 0\n\
         try:\n    \
             for _ in range(100):\n        \
                 if os.fork() == 0:\n            \
                     time.sleep(1000)\n            \
                     os._exit(0)\n        \
                 n += 1\n    \
             print('no limit', n)\n\
         except OSError as e:\n    \
             print(errno.errorcode[e.errno], n)\n",
    );
    cg.add_pid(p.pid()).expect("add pid");
    p.go();
    let status = p.wait();
    // The forked sleepers outlive the script and hold its stdout open: kill them before reading.
    assert!(cg.pids().expect("pids").len() as u64 <= max);
    cg.kill_all().expect("kill forks");
    let (_, out, err) = p.finish();
    assert!(status.success(), "python failed: {err}");
    assert_eq!(out.trim(), format!("EAGAIN {}", max - 1), "stderr: {err}");
}

#[test]
fn memory_limit_oom_kills_inside_and_is_counted() {
    let t = TestParent::detect("oom");
    let cg = t
        .mgr
        .create(
            "sb",
            &CgroupLimits {
                memory_max: Some(32 * MIB),
                ..Default::default()
            },
        )
        .expect("create");
    assert_eq!(cg.oom_kills().expect("oom kills"), 0);
    // `tail` keeps all of a newline-free stream in memory: 200 MiB against a 32 MiB limit.
    let mut p = Proc::sh("head -c 200M /dev/zero | tail; echo tail=$?");
    cg.add_pid(p.pid()).expect("add pid");
    p.go();
    let (status, out, _) = p.finish();
    assert!(status.success(), "the shell itself must survive");
    assert_eq!(out.trim(), "tail=137", "tail must die of SIGKILL");
    assert!(cg.oom_kills().expect("oom kills") >= 1);
    let stats = cg.stats().expect("stats");
    assert!(stats.oom_kills >= 1);
    assert!(
        stats.memory_peak <= 32 * MIB,
        "peak {} over the limit",
        stats.memory_peak
    );
    assert!(
        stats.memory_peak >= 16 * MIB,
        "peak {} too low",
        stats.memory_peak
    );
}

#[test]
fn cpu_usage_grows_and_quota_throttles() {
    let t = TestParent::detect("cpu");
    let cg = t
        .mgr
        .create(
            "sb",
            &CgroupLimits {
                cpu_quota: Some(CpuQuota::from_millicores(100)),
                ..Default::default()
            },
        )
        .expect("create");
    let before = cg.stats().expect("stats").cpu_usage;
    let mut p = Proc::sh("while :; do :; done");
    cg.add_pid(p.pid()).expect("add pid");
    p.go();
    assert!(
        eventually(PATIENCE, || cg
            .stats()
            .map(|s| s.cpu_usage > before + Duration::from_millis(20))
            .unwrap_or(false)),
        "cpu usage did not grow"
    );
    let cpu_stat = dir_with(cg.dirs(), "cpu.stat").join("cpu.stat");
    let throttled = || {
        std::fs::read_to_string(&cpu_stat)
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| {
                        l.strip_prefix("nr_throttled ")
                            .map(|v| v.trim().parse::<u64>().ok())
                    })
                    .flatten()
            })
            .unwrap_or(0)
    };
    assert!(
        eventually(PATIENCE, || throttled() > 0),
        "quota never throttled a busy loop"
    );
    assert!(
        cg.stats().expect("stats").cpu_throttled_periods > 0,
        "stats report the throttled periods"
    );
    cg.kill_all().expect("kill");
    assert_eq!(p.wait().signal(), Some(libc::SIGKILL));
}

/// The ceiling of all sandboxes sits on the parent; a child may not exceed it on v1 (the kernel
/// refuses), and lifting it restores "no quota".
#[test]
fn parent_cpu_quota_is_set_read_and_lifted() {
    let t = TestParent::detect("cpu-parent");
    assert_eq!(t.mgr.parent_cpu_quota().expect("read"), None);
    t.mgr
        .set_parent_cpu_quota(Some(CpuQuota::from_millicores(1500)))
        .expect("set");
    assert_eq!(
        t.mgr.parent_cpu_quota().expect("read"),
        Some(CpuQuota::from_millicores(1500))
    );
    let within = t
        .mgr
        .create(
            "within",
            &CgroupLimits {
                cpu_quota: Some(CpuQuota::from_millicores(1000)),
                ..Default::default()
            },
        )
        .expect("a child within the ceiling");
    if t.mgr.version() == sandpool_cgroups::CgroupVersion::V1 {
        let above = t.mgr.create(
            "above",
            &CgroupLimits {
                cpu_quota: Some(CpuQuota::from_millicores(2000)),
                ..Default::default()
            },
        );
        assert!(
            above.is_err(),
            "v1 refuses a child quota above the parent's"
        );
        assert!(!t.mgr.list().expect("list").contains(&"above".to_owned()));
    }
    within.destroy().expect("destroy");
    t.mgr.set_parent_cpu_quota(None).expect("lift");
    assert_eq!(t.mgr.parent_cpu_quota().expect("read"), None);
}

#[test]
fn kill_all_empties_a_forking_cgroup() {
    let t = TestParent::detect("kill");
    let cg = t
        .mgr
        .create(
            "sb",
            &CgroupLimits {
                pids_max: Some(64),
                ..Default::default()
            },
        )
        .expect("create");
    // Keeps forking (and failing to once at the pids limit) while we kill.
    let mut p = forking_in(&cg, "while :; do sleep 1000 & done 2>/dev/null");
    cg.kill_all().expect("kill all");
    assert_killed_and_empty(&cg, &mut p);
    // The freezer used to stop the fork race is released again.
    if t.mgr.version() == CgroupVersion::V1 {
        let freezer = dir_with(cg.dirs(), "freezer.state");
        assert_eq!(read_trim(&freezer.join("freezer.state")), "THAWED");
    } else {
        assert_eq!(read_trim(&cg.dirs()[0].join("cgroup.freeze")), "0");
    }
    // pids.current counts zombies until their reaper (pid 1 for the orphans) collects them.
    assert!(eventually(PATIENCE, || cg
        .stats()
        .map(|s| s.pids_current == 0)
        .unwrap_or(false)));
}

#[test]
fn destroy_removes_every_directory_including_nested_cgroups() {
    let t = TestParent::detect("destroy");
    let cg = t
        .mgr
        .create("sb", &limits(64 * MIB, 16, 20_000))
        .expect("create");
    let dirs = cg.dirs().to_vec();
    assert!(!dirs.is_empty());
    // Something below the sandbox cgroup, holding a process, in the first hierarchy.
    let nested = dirs[0].join("inner");
    std::fs::create_dir(&nested).expect("nested cgroup");
    let mut a = Proc::sh("sleep 1000");
    let mut b = Proc::sh("sleep 1000");
    cg.add_pid(a.pid()).expect("add a");
    std::fs::write(nested.join("cgroup.procs"), b.pid().to_string()).expect("add b to nested");
    assert_eq!(
        cg.pids().expect("pids").len(),
        2,
        "pids() must include nested cgroups"
    );
    cg.destroy().expect("destroy");
    for d in &dirs {
        assert!(!d.exists(), "{} survived destroy", d.display());
    }
    assert_eq!(a.wait().signal(), Some(libc::SIGKILL));
    assert_eq!(b.wait().signal(), Some(libc::SIGKILL));
    assert_eq!(t.mgr.list().expect("list"), Vec::<String>::new());
}

#[test]
fn open_and_list_reattach_existing_cgroups() {
    let t = TestParent::detect("open");
    let a = t.mgr.create("sb-a", &CgroupLimits::default()).expect("a");
    t.mgr.create("sb-b", &CgroupLimits::default()).expect("b");
    assert_eq!(t.mgr.list().expect("list"), vec!["sb-a", "sb-b"]);

    let p = Proc::sh("sleep 1000");
    a.add_pid(p.pid()).expect("add");
    // A second manager, as after a server restart, finds the same cgroup and its process.
    let parent = t.mgr.parent_dirs()[0]
        .file_name()
        .and_then(|n| n.to_str())
        .expect("parent name")
        .to_string();
    let again = sandpool_cgroups::CgroupManager::detect(&parent).expect("detect again");
    let reopened = again.open("sb-a").expect("open");
    assert_eq!(reopened.dirs(), a.dirs());
    assert_eq!(reopened.pids().expect("pids"), vec![p.pid()]);

    assert!(matches!(
        t.mgr.open("sb-zzz"),
        Err(CgroupError::NotFound { .. })
    ));
    assert!(matches!(
        t.mgr.create("sb-a", &CgroupLimits::default()),
        Err(CgroupError::AlreadyExists { .. })
    ));
    for bad in ["", "..", "a/b", "x\0y"] {
        assert!(matches!(
            t.mgr.create(bad, &CgroupLimits::default()),
            Err(CgroupError::InvalidName { .. })
        ));
        assert!(matches!(
            t.mgr.open(bad),
            Err(CgroupError::InvalidName { .. })
        ));
    }
    assert!(sandpool_cgroups::CgroupManager::detect("/").is_err());
    assert!(sandpool_cgroups::CgroupManager::detect("a/../b").is_err());
}

#[test]
fn half_made_cgroup_is_listed_opened_and_destroyed() {
    let t = TestParent::detect("partial");
    // As if the server crashed between two mkdirs of create().
    let only = t.mgr.parent_dirs()[0].join("sb-half");
    std::fs::create_dir(&only).expect("mkdir one hierarchy");
    assert_eq!(t.mgr.list().expect("list"), vec!["sb-half"]);
    let cg = t.mgr.open("sb-half").expect("open partial");
    assert_eq!(cg.pids().expect("pids"), Vec::<i32>::new());
    cg.destroy().expect("destroy partial");
    assert!(!only.exists());
    assert_eq!(t.mgr.list().expect("list"), Vec::<String>::new());
}

#[test]
fn detect_reports_version_and_controllers() {
    let t = TestParent::detect("doctor");
    let controllers = t.mgr.controllers();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let v1_memory = mountinfo
        .lines()
        .any(|l| l.contains(" - cgroup cgroup ") && l.split(',').any(|o| o == "memory"));
    let expected = if v1_memory {
        CgroupVersion::V1
    } else {
        CgroupVersion::V2
    };
    assert_eq!(t.mgr.version(), expected);
    for c in ["memory", "pids", "cpu"] {
        assert!(
            controllers.iter().any(|x| x == c),
            "{c} missing from {controllers:?}"
        );
    }
    for d in t.mgr.parent_dirs() {
        assert!(d.is_dir(), "{} not created", d.display());
    }
}
