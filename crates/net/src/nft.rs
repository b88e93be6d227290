//! The nftables policy of one bridge: NAT out of the host, no host access, no link-local, no
//! slot-to-slot traffic. Loaded once per `NetPool::new` with `nft -f -` (one atomic transaction).

use std::io::Write;
use std::process::{Command, Stdio};

use crate::{NetConfig, NetError};

/// nft quotes strings with `"`; names are validated to a safe alphabet before they get here.
pub(crate) fn ruleset(cfg: &NetConfig) -> String {
    let t = &cfg.nft_table;
    let br = &cfg.bridge;
    let net = cfg.subnet;
    // Bridge family: slot ports never talk to each other (port isolation says the same; this
    // holds even if a kernel ignores the flag). `meta ibrname` is not available everywhere.
    let p = crate::SLOT_PREFIX;
    let mut input = String::new();
    let mut forward = String::new();
    // Replies to connections the host opened towards a slot stay allowed in every mode.
    input.push_str(&format!(
        "    iifname \"{br}\" ct state established,related accept\n"
    ));
    if !cfg.allow_link_local {
        input.push_str(&format!(
            "    iifname \"{br}\" ip daddr 169.254.0.0/16 drop\n"
        ));
        forward.push_str(&format!(
            "    iifname \"{br}\" ip daddr 169.254.0.0/16 drop\n"
        ));
    }
    if !cfg.allow_host {
        // Everything addressed to the host itself (any local address, broadcast, IPv6
        // link-local of the bridge) arrives through input.
        input.push_str(&format!("    iifname \"{br}\" drop\n"));
    }
    format!(
        "add table inet {t}\n\
         delete table inet {t}\n\
         add table bridge {t}\n\
         delete table bridge {t}\n\
         table inet {t} {{\n\
         \x20 chain input {{\n\
         \x20   type filter hook input priority filter - 10; policy accept;\n\
         {input}\
         \x20 }}\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter - 10; policy accept;\n\
         \x20   iifname \"{br}\" oifname \"{br}\" drop\n\
         \x20   iifname \"{br}\" ip saddr != {net} drop\n\
         \x20   iifname \"{br}\" meta nfproto ipv6 drop\n\
         {forward}\
         \x20   oifname \"{br}\" ct state established,related accept\n\
         \x20   oifname \"{br}\" drop\n\
         \x20 }}\n\
         \x20 chain postrouting {{\n\
         \x20   type nat hook postrouting priority srcnat; policy accept;\n\
         \x20   ip saddr {net} oifname != \"{br}\" masquerade\n\
         \x20 }}\n\
         }}\n\
         table bridge {t} {{\n\
         \x20 chain forward {{\n\
         \x20   type filter hook forward priority filter; policy accept;\n\
         \x20   iifname \"{p}*\" oifname \"{p}*\" drop\n\
         \x20 }}\n\
         }}\n"
    )
}

/// Removes both tables; absent tables are not an error (the add-then-delete idiom).
pub(crate) fn delete_script(table: &str) -> String {
    format!(
        "add table inet {table}\ndelete table inet {table}\n\
         add table bridge {table}\ndelete table bridge {table}\n"
    )
}

pub(crate) fn apply(script: &str) -> Result<(), NetError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            NetError::Nft(format!(
                "cannot run nft (is the nftables package installed?): {e}"
            ))
        })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|e| NetError::Nft(format!("writing to nft: {e}")))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| NetError::Nft(format!("waiting for nft: {e}")))?;
    if !out.status.success() {
        return Err(NetError::Nft(format!(
            "nft -f - failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}
