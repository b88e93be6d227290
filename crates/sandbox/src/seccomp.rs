//! The sandbox's seccomp filter, in the spirit of Docker's default profile.
//!
//! A deny list rather than Docker's allow list: the sandbox already runs in its own user
//! namespace without CAP_SYS_ADMIN, so the filter's job is to close the kernel surfaces that
//! namespaces do not cover (keyrings, bpf, perf, io_uring, modules, kexec, new user namespaces,
//! mount API, clock and swap control, cross-process memory access). Denied calls fail with EPERM,
//! except `clone3`, which fails with ENOSYS so libc falls back to `clone`, where the flags can be
//! inspected.

use seccompiler::{
    apply_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::OnceLock;

/// Filters compiled once by the zygote before it forks any init; every forked init inherits
/// them, so its start does not pay for building the rule maps and the BPF code again.
static COMPILED: OnceLock<Filters> = OnceLock::new();

/// Calls denied unconditionally.
pub const DENIED: &[i64] = &[
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_setns,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_reboot,
    libc::SYS_acct,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_syslog,
    libc::SYS_quotactl,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_pidfd_getfd,
    libc::SYS_fanotify_init,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_uselib,
    #[cfg(target_arch = "x86_64")]
    libc::SYS__sysctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_nfsservctl,
];

fn arch() -> Result<TargetArch, String> {
    TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())
}

fn flag_rule(flag: u64) -> Result<Vec<SeccompRule>, String> {
    let cond = SeccompCondition::new(
        0,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )
    .map_err(|e| e.to_string())?;
    Ok(vec![
        SeccompRule::new(vec![cond]).map_err(|e| e.to_string())?
    ])
}

/// Both compiled filters: (EPERM list, ENOSYS list).
pub type Filters = (BpfProgram, BpfProgram);

/// Compiles both filters.
pub fn build() -> Result<Filters, String> {
    let arch = arch()?;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
        DENIED.iter().map(|&n| (n, Vec::new())).collect();
    let newuser = libc::CLONE_NEWUSER as u64;
    rules.insert(libc::SYS_clone, flag_rule(newuser)?);
    rules.insert(libc::SYS_unshare, flag_rule(newuser)?);
    let eperm = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::EPERM as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    let enosys = SeccompFilter::new(
        [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        arch,
    )
    .map_err(|e| e.to_string())?;
    Ok((
        eperm
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
        enosys
            .try_into()
            .map_err(|e: seccompiler::BackendError| e.to_string())?,
    ))
}

/// Compiles the filters into this process's cache (the zygote calls it once, before forking).
pub fn precompile() -> Result<(), String> {
    if COMPILED.get().is_none() {
        let filters = build()?;
        // Single-threaded caller: nothing else can have set it in between.
        let _ = COMPILED.set(filters);
    }
    Ok(())
}

/// The filters: the ones compiled ahead when this process has them (an init forked from the
/// zygote), else freshly compiled ones (an exec'd init).
pub fn compiled() -> Result<Cow<'static, Filters>, String> {
    match COMPILED.get() {
        Some(filters) => Ok(Cow::Borrowed(filters)),
        None => build().map(Cow::Owned),
    }
}

/// Installs the filters on the calling thread (inherited by everything it starts).
pub fn apply((eperm, enosys): &Filters) -> Result<(), String> {
    apply_filter(eperm).map_err(|e| e.to_string())?;
    apply_filter(enosys).map_err(|e| e.to_string())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn filters_compile_for_this_arch() {
        let (a, b) = super::build().expect("filters compile");
        assert!(a.len() > super::DENIED.len());
        assert!(!b.is_empty());
    }
}
