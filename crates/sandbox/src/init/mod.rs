//! The sandbox init: PID 1 of every sandbox.
//!
//! Started by the runtime (module `spawn`, or forked by the zygote) as root of a fresh user
//! namespace, it sets itself up in the order of [`setup::run`] (root filesystem, hostname,
//! cgroup, lockdown: capabilities, no_new_privs, seccomp, rlimits) and then serves
//! the control socket the runtime bound for it (fd 3) on a single-threaded event loop.
//! Setup errors go to the status pipe (fd 4) so the runtime can report them.

pub(crate) mod command;
mod files;
mod lockdown;
pub(crate) mod rootfs;
mod serve;
pub(crate) mod setup;

use crate::child::FD_STATUS;
use crate::{Limits, RootFs};
use serde::{Deserialize, Serialize};

/// Everything the init needs to know, passed as its last argument (JSON).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InitConfig {
    pub rootfs: RootFs,
    pub limits: Limits,
    pub hostname: String,
    pub env: Vec<(String, String)>,
    /// The old root's `/etc` is the zygote's prepared template (see
    /// `rootfs::prepare_etc_template`): bind it whole.
    #[serde(default)]
    pub etc_template: bool,
    pub resolv_conf: String,
}

fn report_status(msg: &str) {
    let line = format!("{msg}\n");
    // SAFETY: writing a valid buffer to our status fd, then closing it.
    unsafe {
        libc::write(FD_STATUS, line.as_ptr().cast(), line.len());
        libc::close(FD_STATUS);
    }
}

pub fn main() -> ! {
    if std::env::args_os().last().as_deref() == Some(crate::zygote::ZYGOTE_ARG.as_ref()) {
        crate::zygote::main();
    }
    let cfg = match std::env::args_os()
        .last()
        .and_then(|a| serde_json::from_slice::<InitConfig>(a.as_encoded_bytes()).ok())
    {
        Some(c) => c,
        None => {
            report_status("ERR init: missing or invalid configuration argument");
            std::process::exit(2);
        }
    };
    command::note_signal_dispositions();
    run(cfg)
}

/// The init proper, once its configuration is known (also the entry of a zygote's child).
pub fn run(cfg: InitConfig) -> ! {
    if let Err(e) = setup::run(&cfg) {
        report_status(&format!("ERR {e}"));
        std::process::exit(1);
    }
    report_status("OK");
    serve::run(cfg)
}
