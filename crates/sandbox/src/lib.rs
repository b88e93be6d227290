//! The Linux isolation runtime of sandpool: starts, drives and destroys sandboxes.
//!
//! A sandbox is a process tree in its own user, pid, mount, ipc, uts, cgroup and net namespaces
//! whose PID 1 is sandpool's init (see [`init`]). This crate knows nothing of HTTP, pools or tokens.

/// Entry point of the in-sandbox init, called by a binary that the runtime re-executes.
pub fn init_main() -> ! {
    eprintln!("sandpool init: not implemented");
    std::process::exit(1)
}
