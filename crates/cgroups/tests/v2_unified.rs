//! The cgroup v2 code path, driven through `CgroupManager::with_v2_root` on whatever cgroup2 mount
//! this host has. On a hybrid host that is `/sys/fs/cgroup/unified`, which carries no cpu, memory
//! or pids controller: these tests cover what v2 does without them (create, procs, cgroup.kill,
//! cgroup.freeze, cpu.stat, nested cleanup, rmdir) and that limits needing an absent controller
//! are refused. Limit enforcement on v2 is covered by `tests/host.rs` on pure-v2 hosts.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::time::Duration;

use common::{
    assert_killed_and_empty, cgroup2_mount, eventually, forking_in, read_trim, unique_parent, Proc,
    TestParent, MIB,
};
use sandpool_cgroups::{CgroupError, CgroupLimits, CgroupManager, CgroupVersion, CpuQuota};

const PATIENCE: Duration = Duration::from_secs(30);

fn v2_root() -> Option<PathBuf> {
    let root = cgroup2_mount();
    if root.is_none() {
        eprintln!("no cgroup2 mount on this host: v2 tests have nothing to run against");
    }
    root
}

#[test]
fn v2_create_add_stats_list_open_destroy() {
    let Some(root) = v2_root() else { return };
    let t = TestParent::v2(&root, "v2life");
    assert_eq!(t.mgr.version(), CgroupVersion::V2);
    assert_eq!(t.mgr.parent_dirs().len(), 1);
    assert!(t.mgr.parent_dirs()[0].starts_with(&root));

    let cg = t
        .mgr
        .create("sb", &CgroupLimits::default())
        .expect("create");
    assert_eq!(cg.version(), CgroupVersion::V2);
    assert_eq!(cg.dirs().len(), 1);
    assert_eq!(cg.procs_paths(), vec![cg.dirs()[0].join("cgroup.procs")]);

    let mut busy = Proc::sh("while :; do :; done");
    cg.add_pid(busy.pid()).expect("add pid");
    assert_eq!(read_trim(&cg.procs_paths()[0]), busy.pid().to_string());
    assert_eq!(cg.pids().expect("pids"), vec![busy.pid()]);
    busy.go();
    assert!(
        eventually(PATIENCE, || cg
            .stats()
            .map(|s| s.cpu_usage > Duration::from_millis(20))
            .unwrap_or(false)),
        "cpu.stat usage_usec did not grow"
    );
    let stats = cg.stats().expect("stats");
    assert_eq!(stats.pids_current, 1, "one single-threaded shell");
    if !t.mgr.controllers().iter().any(|c| c == "memory") {
        assert_eq!((stats.memory_current, stats.oom_kills), (0, 0));
    }

    assert_eq!(t.mgr.list().expect("list"), vec!["sb"]);
    let reopened = t.mgr.open("sb").expect("open");
    assert_eq!(reopened.dirs(), cg.dirs());
    let dir = cg.dirs()[0].clone();
    reopened.destroy().expect("destroy");
    assert!(!dir.exists());
    assert_eq!(busy.wait().signal(), Some(libc::SIGKILL));
    assert_eq!(t.mgr.list().expect("list"), Vec::<String>::new());
}

fn forking_cgroup(t: &TestParent) -> (sandpool_cgroups::Cgroup, Proc) {
    let cg = t
        .mgr
        .create("sb", &CgroupLimits::default())
        .expect("create");
    // Bounded: without a pids controller nothing else would stop it.
    let p = forking_in(
        &cg,
        "i=0; while [ $i -lt 300 ]; do sleep 1000 & i=$((i+1)); done; wait",
    );
    (cg, p)
}

#[test]
fn v2_kill_all_uses_cgroup_kill_and_empties() {
    let Some(root) = v2_root() else { return };
    let t = TestParent::v2(&root, "v2kill");
    let (cg, mut p) = forking_cgroup(&t);
    cg.kill_all().expect("kill all");
    assert_killed_and_empty(&cg, &mut p);
}

#[test]
fn v2_freezer_fallback_kills_and_thaws() {
    let Some(root) = v2_root() else { return };
    let t = TestParent::v2(&root, "v2freeze");
    let (cg, mut p) = forking_cgroup(&t);
    cg.kill_all_by_freezing().expect("kill by freezing");
    assert_killed_and_empty(&cg, &mut p);
    // Thawed again, so a later process put there would run.
    assert_eq!(read_trim(&cg.dirs()[0].join("cgroup.freeze")), "0");
    let events = read_trim(&cg.dirs()[0].join("cgroup.events"));
    assert!(events.lines().any(|l| l == "frozen 0"), "{events}");
}

#[test]
fn v2_limits_without_their_controller_are_refused_cleanly() {
    let Some(root) = v2_root() else { return };
    let t = TestParent::v2(&root, "v2ctl");
    let controllers = t.mgr.controllers();
    let cases = [
        (
            "memory",
            CgroupLimits {
                memory_max: Some(64 * MIB),
                ..Default::default()
            },
        ),
        (
            "pids",
            CgroupLimits {
                pids_max: Some(10),
                ..Default::default()
            },
        ),
        (
            "cpu",
            CgroupLimits {
                cpu_quota: Some(CpuQuota::from_millicores(500)),
                ..Default::default()
            },
        ),
    ];
    let mut refused = 0;
    for (controller, limits) in cases {
        if controllers.iter().any(|c| c == controller) {
            continue;
        }
        match t.mgr.create("sb", &limits) {
            Err(CgroupError::ControllerUnavailable { controller: c, .. }) => {
                assert_eq!(c, controller)
            }
            other => panic!("{controller}: expected ControllerUnavailable, got {other:?}"),
        }
        assert_eq!(
            t.mgr.list().expect("list"),
            Vec::<String>::new(),
            "nothing left behind"
        );
        refused += 1;
    }
    if !controllers.iter().any(|c| c == "cpu") {
        match t
            .mgr
            .set_parent_cpu_quota(Some(CpuQuota::from_millicores(500)))
        {
            Err(CgroupError::ControllerUnavailable { controller, .. }) => {
                assert_eq!(controller, "cpu")
            }
            other => panic!("a parent ceiling without cpu: {other:?}"),
        }
        t.mgr
            .set_parent_cpu_quota(None)
            .expect("lifting nothing is fine");
        assert_eq!(t.mgr.parent_cpu_quota().expect("read"), None);
        refused += 1;
    }
    eprintln!("controllers here: {controllers:?}; {refused} limit kinds refused");
}

#[test]
fn v2_nested_parent_is_created_and_nested_cgroups_are_destroyed() {
    let Some(root) = v2_root() else { return };
    let outer = unique_parent("v2nest");
    struct RemoveOuter(PathBuf);
    impl Drop for RemoveOuter {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir(&self.0);
        }
    }
    let _outer_guard = RemoveOuter(root.join(&outer));
    let t = TestParent {
        mgr: CgroupManager::with_v2_root(&root, &format!("{outer}/pool")).expect("nested parent"),
    };
    assert_eq!(t.mgr.parent_dirs(), vec![root.join(&outer).join("pool")]);

    let cg = t
        .mgr
        .create("sb", &CgroupLimits::default())
        .expect("create");
    let inner = cg.dirs()[0].join("inner");
    std::fs::create_dir(&inner).expect("nested cgroup");
    let mut p = Proc::sh("sleep 1000");
    std::fs::write(inner.join("cgroup.procs"), p.pid().to_string()).expect("into nested");
    assert_eq!(cg.pids().expect("pids"), vec![p.pid()]);
    let dir = cg.dirs()[0].clone();
    cg.destroy().expect("destroy");
    assert!(!dir.exists());
    assert_eq!(p.wait().signal(), Some(libc::SIGKILL));
}
