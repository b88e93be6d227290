//! Two sandpool instances on one host, as real server processes on their own data dirs and ports.
//! A second server whose cgroup parent, uid range and egress network are the first one's refuses
//! to start, naming each conflict and the flag that resolves it; so does one on the first one's
//! data dir. A second server with ranges of its own starts, serves a session of its own and
//! stops. Through all of it the first server's session keeps its sandbox and its file.
//!
//! `harness = false`: this binary is both the test and, when `SANDPOOL_INSTANCE_CHILD` is set,
//! a server process (so the test needs no other binary).

#[path = "common/child.rs"]
mod child;

use child::{child, free_port, refused, spec_of, Instance, CHILD_ENV, INIT_START};
use sandpool_server::sandboxes::SandboxSettings;
use sandpool_server::testing::{
    cgroup_children, host_leftovers, test_egress_config, test_sandbox_settings, HostGuard,
};

fn main() {
    if let Ok(spec) = std::env::var(CHILD_ENV) {
        return child(&spec);
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    print!("test instances::two_servers_on_one_host ... ");
    match rt.block_on(run()) {
        Ok(()) => println!("ok"),
        Err(e) => {
            println!("FAILED\n  {e:#}");
            std::process::exit(1);
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let dir_a = tempfile::tempdir()?;
    let dir_b = tempfile::tempdir()?;
    let dir_c = tempfile::tempdir()?;
    let first = SandboxSettings {
        egress: Some(test_egress_config()),
        ..test_sandbox_settings()
    };
    // Everything of all three is cleaned up however the test ends (guards declared after the
    // dirs, before the children: dropped after them, before the dirs).
    let host_a = HostGuard {
        data_dir: dir_a.path().to_path_buf(),
        settings: first.clone(),
    };
    let own = test_sandbox_settings();
    let host_c = HostGuard {
        data_dir: dir_c.path().to_path_buf(),
        settings: own.clone(),
    };
    let _host_b = HostGuard {
        data_dir: dir_b.path().to_path_buf(),
        settings: first.clone(),
    };

    let port_a = free_port()?;
    let a = Instance::start(&spec_of(dir_a.path(), port_a, &first), dir_a.path(), port_a).await?;
    let written = a
        .exec("keeper", "echo kept > /mnt/data/f.txt && echo ok")
        .await?;
    anyhow::ensure!(written == "ok\n", "writing the file: {written:?}");
    let started = a.exec("keeper", INIT_START).await?;

    // The same cgroup parent, uid range and network on another data dir: refused, each
    // conflict named with its flag.
    let port_b = free_port()?;
    let msg = refused(&spec_of(dir_b.path(), port_b, &first)).await?;
    for needle in [
        "--cgroup-parent",
        "--uid-base",
        "--egress-bridge",
        "--egress-subnet",
        &first.cgroup_parent,
        &dir_a.path().display().to_string(),
    ] {
        anyhow::ensure!(
            msg.contains(needle),
            "the refusal does not name {needle:?}: {msg}"
        );
    }
    // The first server's data dir, with ranges of its own: refused as well.
    let msg = refused(&spec_of(dir_a.path(), port_b, &own)).await?;
    anyhow::ensure!(
        msg.contains("in use") && msg.contains(&dir_a.path().display().to_string()),
        "the refusal of a shared data dir: {msg}"
    );
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file to a refused second server"
    );

    // Ranges of its own: both serve side by side; the second's start and stop leave the first's
    // session alone.
    let port_c = free_port()?;
    let c = Instance::start(&spec_of(dir_c.path(), port_c, &own), dir_c.path(), port_c).await?;
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file when a second server started"
    );
    let other = c
        .exec(
            "other",
            "test -e /mnt/data/f.txt && echo seen || echo absent",
        )
        .await?;
    anyhow::ensure!(
        other == "absent\n",
        "the second server's session saw the first's file"
    );
    let uid_a = a.exec("keeper", "cat /proc/self/uid_map").await?;
    let uid_c = c.exec("other", "cat /proc/self/uid_map").await?;
    anyhow::ensure!(
        uid_a != uid_c,
        "both sessions map the same host uids: {uid_a}"
    );
    c.end("other").await?;
    c.stop()?;
    anyhow::ensure!(
        a.exec("keeper", "cat /mnt/data/f.txt").await? == "kept\n",
        "the first server's session lost its file when the second server stopped"
    );
    anyhow::ensure!(
        a.exec("keeper", INIT_START).await? == started,
        "the first server's session got a new sandbox"
    );
    anyhow::ensure!(
        cgroup_children(&own.cgroup_parent).is_empty(),
        "the second server left cgroups"
    );

    a.end("keeper").await?;
    a.stop()?;
    host_a.clean();
    host_c.clean();
    for s in [&first, &own] {
        let leftovers = host_leftovers(s);
        anyhow::ensure!(leftovers.is_empty(), "left on the host: {leftovers:?}");
    }
    Ok(())
}
