//! Sandboxes with egress join a network slot of sandpool-net.

mod common;
use common::*;
use sandpool_net::{Ipv4Net, NetConfig, NetPool};
use sandpool_sandbox::*;
use std::net::Ipv4Addr;

fn net_config(dir: &std::path::Path) -> NetConfig {
    let n = (std::process::id() % 200) as u8 + 20;
    NetConfig {
        bridge: format!("spsb{n}"),
        nft_table: format!("sandpool_sbx{n}"),
        subnet: Ipv4Net::new(Ipv4Addr::new(10, 215, n, 0), 24).expect("subnet"),
        ready_slots: 1,
        allow_host: false,
        allow_link_local: false,
        state_dir: dir.join("netns"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_sandbox_gets_a_locked_slot() {
    let mut env = env("egress");
    let net = net_config(env.dir.path());
    env.cfg.egress = Some(net.clone());
    let cfg = env.cfg.clone();
    let result = tokio::spawn(async move {
        let rt = Runtime::new(cfg.clone())
            .await
            .expect("runtime with egress");
        let spec = SandboxSpec {
            network: NetworkMode::Egress,
            ..Default::default()
        };
        let sb = rt.start(spec).await.expect("start with egress");
        let addr = sb.address().expect("slot address");
        let (code, out, err) = sh(&sb, "ip -4 -o addr show; ip route").await;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.contains(&addr.to_string()), "{out}");
        assert!(out.contains("default via"), "{out}");
        // The sandbox's root cannot reconfigure a namespace it does not own.
        for c in [
            "ip link set lo down",
            "ip addr add 10.99.0.1/32 dev lo",
            "ip route del default",
        ] {
            assert_ne!(sh(&sb, c).await.0, Some(0), "{c} succeeded");
        }
        // No route to the host itself (allow_host is false).
        let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let gw = out
            .lines()
            .find(|l| l.starts_with("default via"))
            .and_then(|l| l.split_whitespace().nth(2))
            .unwrap()
            .to_string();
        let (code, _, _) = sh(
            &sb,
            &format!("timeout 3 bash -c 'echo x > /dev/tcp/{gw}/{port}'"),
        )
        .await;
        assert_ne!(code, Some(0), "reached the host through the bridge");
        assert!(listener.accept().is_err());
        let netns = sb.netns_path().expect("netns path");
        assert!(netns.exists());
        sb.destroy().await.unwrap();
        assert!(!netns.exists(), "slot not released");
    })
    .await;
    cleanup(&env).await;
    let _ = NetPool::teardown_host(&net).await;
    if let Err(e) = result {
        std::panic::resume_unwind(e.into_panic());
    }
}
