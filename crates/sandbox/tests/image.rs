//! A root filesystem from an unpacked image directory (overlay lower layer).

mod common;
use common::*;
use sandpool_sandbox::*;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;
use std::process::Command;

/// A tiny image: dash, coreutils' cat/ls/mkdir and the libraries they need, copied from the host.
fn make_image(dir: &Path) {
    let img = dir.join("image");
    for d in ["usr/bin", "usr/lib", "etc", "opt"] {
        std::fs::create_dir_all(img.join(d)).unwrap();
    }
    symlink("usr/bin", img.join("bin")).unwrap();
    symlink("usr/lib", img.join("lib")).unwrap();
    std::fs::create_dir_all(img.join("lib64")).unwrap();
    std::fs::write(img.join("opt/from-image"), "image file\n").unwrap();
    for bin in [
        "/usr/bin/dash",
        "/usr/bin/cat",
        "/usr/bin/ls",
        "/usr/bin/mkdir",
        "/usr/bin/id",
    ] {
        let name = Path::new(bin).file_name().unwrap();
        std::fs::copy(bin, img.join("usr/bin").join(name)).unwrap();
        let ldd = Command::new("ldd").arg(bin).output().unwrap();
        for line in String::from_utf8_lossy(&ldd.stdout).lines() {
            let path = line
                .split_whitespace()
                .find(|w| w.starts_with('/'))
                .map(str::to_string);
            if let Some(p) = path {
                let real = std::fs::canonicalize(&p).unwrap();
                let dest = img.join(p.trim_start_matches('/'));
                std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
                if !dest.exists() {
                    std::fs::copy(real, dest).unwrap();
                }
            }
        }
    }
    symlink("dash", img.join("usr/bin/sh")).unwrap();
    // The init runs as an unprivileged host uid: the image must be searchable by others.
    for p in [dir, img.as_path()] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_rootfs_is_an_overlay() {
    with_runtime("image", |rt, dir| async move {
        if !Path::new("/usr/bin/dash").exists() {
            panic!("this test needs /usr/bin/dash on the host");
        }
        make_image(&dir);
        let spec = SandboxSpec {
            rootfs: RootFs::Image(dir.join("image")),
            ..Default::default()
        };
        let sb = rt.start(spec).await.expect("start with image");
        let (code, out, err) = sh(&sb, "cat /opt/from-image; cat /etc/hostname; ls /").await;
        assert_eq!(code, Some(0), "{err}");
        assert!(out.starts_with("image file\nsandbox\n"), "{out}");
        assert!(
            !out.contains("python"),
            "host /usr leaked into the image root"
        );
        // Writes land in the sandbox's upper layer, never in the image.
        let (code, _, err) = sh(
            &sb,
            "echo new > /newfile && cat /newfile && echo x > /tmp/t && echo y > /mnt/data/d",
        )
        .await;
        assert_eq!(code, Some(0), "{err}");
        assert!(!dir.join("image/newfile").exists());
        let (code, _, _) = sh(&sb, "ls /usr/bin/python3").await;
        assert_ne!(code, Some(0));
    })
    .await;
}
