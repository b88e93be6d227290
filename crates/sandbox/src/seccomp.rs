//! The sandbox's seccomp filter, in the spirit of Docker's default profile.
//!
//! A deny list rather than Docker's allow list: the sandbox already runs in its own user
//! namespace without CAP_SYS_ADMIN, so the filter's job is to close the kernel surfaces that
//! namespaces do not cover (keyrings, bpf, perf, io_uring, modules, kexec, new user namespaces,
//! mount API, clock and swap control, cross-process memory access). Denied calls fail with EPERM,
//! except `clone3`, which fails with ENOSYS so libc falls back to `clone`, where the flags can be
//! inspected, and the x32 ABI's numbers, which fail with ENOSYS on kernels that have it (a deny
//! list keyed by syscall number must not be reachable under other numbers).
//!
//! The program is generated here rather than by seccompiler: seccompiler checks the numbers one
//! after the other, and the kernel runs a new filter over every syscall number when it is
//! attached (to find the calls it always allows), so a chain of fifty comparisons made attaching
//! it ≈0.3 ms of every sandbox start. A binary search over the sorted numbers takes a dozen
//! steps on any path. The tests check the program against seccompiler's compilation of the same
//! policy for every syscall number.

use seccompiler::{apply_filter, sock_filter, BpfProgram};
use std::borrow::Cow;
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

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Classic BPF as seccomp takes it (linux/filter.h, linux/seccomp.h).
const LD_W_ABS: u16 = 0x20;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`: nr, arch, low half of args[0] (little-endian).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARG0_LOW: u32 = 16;
/// Numbers from here up are the x32 ABI's (and nothing else's).
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

fn stmt(code: u16, k: u32) -> sock_filter {
    sock_filter {
        code,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump(code: u16, k: u32, jt: usize, jf: usize) -> Result<sock_filter, String> {
    let off = |n: usize| u8::try_from(n).map_err(|_| "seccomp program too large".to_string());
    Ok(sock_filter {
        code,
        jt: off(jt)?,
        jf: off(jf)?,
        k,
    })
}

/// What a syscall number leads to.
#[derive(Clone, Copy)]
enum Verdict {
    Deny,
    /// `clone`/`unshare`: denied when the flags ask for a new user namespace. Legacy clone and
    /// unshare only take flags from the low 32 bits, where CLONE_NEWUSER is.
    DenyNewUser,
}

/// Code for `nr` (in A) among `entries` (sorted), every path ending in a return.
fn search(entries: &[(u32, Verdict)]) -> Result<Vec<sock_filter>, String> {
    if entries.len() <= 3 {
        let mut code = Vec::new();
        for &(nr, verdict) in entries {
            let handler = match verdict {
                Verdict::Deny => vec![stmt(RET_K, RET_ERRNO | libc::EPERM as u32)],
                Verdict::DenyNewUser => vec![
                    stmt(LD_W_ABS, OFF_ARG0_LOW),
                    jump(JSET_K, libc::CLONE_NEWUSER as u32, 0, 1)?,
                    stmt(RET_K, RET_ERRNO | libc::EPERM as u32),
                    stmt(RET_K, RET_ALLOW),
                ],
            };
            code.push(jump(JEQ_K, nr, 0, handler.len())?);
            code.extend(handler);
        }
        code.push(stmt(RET_K, RET_ALLOW));
        return Ok(code);
    }
    let (low, high) = entries.split_at(entries.len() / 2);
    let high_code = search(high)?;
    let mut code = vec![jump(JGE_K, high[0].0, 0, high_code.len())?];
    code.extend(high_code);
    code.extend(search(low)?);
    Ok(code)
}

/// The compiled filter.
pub type Filters = BpfProgram;

/// Compiles the filter.
pub fn build() -> Result<Filters, String> {
    let mut entries: Vec<(u32, Verdict)> = DENIED
        .iter()
        .map(|&nr| (nr as u32, Verdict::Deny))
        .chain([
            (libc::SYS_clone as u32, Verdict::DenyNewUser),
            (libc::SYS_unshare as u32, Verdict::DenyNewUser),
        ])
        .collect();
    entries.sort_by_key(|e| e.0);
    entries.dedup_by_key(|e| e.0);
    let mut prog = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0)?,
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1)?,
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
        jump(JEQ_K, libc::SYS_clone3 as u32, 0, 1)?,
        stmt(RET_K, RET_ERRNO | libc::ENOSYS as u32),
    ];
    prog.extend(search(&entries)?);
    Ok(prog)
}

/// Compiles the filter into this process's cache (the zygote calls it once, before forking).
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

/// Installs the filter on the calling thread (inherited by everything it starts).
pub fn apply(filter: &Filters) -> Result<(), String> {
    apply_filter(filter).map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use seccompiler::{
        SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
        SeccompRule, TargetArch,
    };
    use std::collections::BTreeMap;

    /// The policy compiled by seccompiler, as this module did before: a deny list with EPERM
    /// and a second filter for clone3's ENOSYS.
    fn reference() -> (BpfProgram, BpfProgram) {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let newuser = libc::CLONE_NEWUSER as u64;
        let flag_rule = || {
            vec![SeccompRule::new(vec![SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(newuser),
                newuser,
            )
            .unwrap()])
            .unwrap()]
        };
        let mut rules: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&n| (n, Vec::new())).collect();
        rules.insert(libc::SYS_clone, flag_rule());
        rules.insert(libc::SYS_unshare, flag_rule());
        let eperm = SeccompFilter::new(
            rules,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::EPERM as u32),
            arch,
        )
        .unwrap();
        let enosys = SeccompFilter::new(
            [(libc::SYS_clone3, Vec::new())].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .unwrap();
        (eperm.try_into().unwrap(), enosys.try_into().unwrap())
    }

    /// A classic BPF interpreter for what seccomp programs use here: the verdict and how many
    /// instructions led to it.
    fn steps(prog: &[sock_filter], data: &[u8; 64]) -> (u32, usize) {
        let (mut a, mut x, mut pc) = (0u32, 0u32, 0usize);
        let mut mem = [0u32; 16];
        for n in 1.. {
            let i = &prog[pc];
            pc += 1;
            let word = |off: u32| {
                let o = off as usize;
                u32::from_ne_bytes(data[o..o + 4].try_into().unwrap())
            };
            let cond = |taken: bool, pc: &mut usize| {
                *pc += usize::from(if taken { i.jt } else { i.jf });
            };
            match i.code {
                0x20 => a = word(i.k),
                0x00 => a = i.k,
                0x01 => x = i.k,
                0x60 => a = mem[i.k as usize],
                0x61 => x = mem[i.k as usize],
                0x02 => mem[i.k as usize] = a,
                0x03 => mem[i.k as usize] = x,
                0x54 => a &= i.k,
                0x44 => a |= i.k,
                0x05 => pc += i.k as usize,
                0x15 => cond(a == i.k, &mut pc),
                0x25 => cond(a > i.k, &mut pc),
                0x35 => cond(a >= i.k, &mut pc),
                0x45 => cond(a & i.k != 0, &mut pc),
                0x06 => return (i.k, n),
                other => panic!("instruction {other:#x} not interpreted"),
            }
        }
        unreachable!()
    }

    fn run(prog: &[sock_filter], data: &[u8; 64]) -> u32 {
        steps(prog, data).0
    }

    fn data(arch: u32, nr: u32, arg0: u64) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        d[16..24].copy_from_slice(&arg0.to_ne_bytes());
        d
    }

    /// The kernel's pick among several filters' verdicts: the lowest action value wins
    /// (KILL_PROCESS 0x80000000 is the exception: it wins over everything).
    fn combined(verdicts: &[u32]) -> u32 {
        if let Some(&k) = verdicts.iter().find(|&&v| v == RET_KILL_PROCESS) {
            return k;
        }
        *verdicts.iter().min_by_key(|&&v| v & 0xffff_0000).unwrap()
    }

    #[test]
    fn the_program_decides_like_seccompiler_for_every_syscall() {
        let ours = build().expect("filter builds");
        let (eperm, enosys) = reference();
        let args = [
            0u64,
            libc::CLONE_NEWUSER as u64,
            libc::CLONE_NEWUSER as u64 | libc::SIGCHLD as u64,
            libc::CLONE_NEWNS as u64 | libc::CLONE_NEWPID as u64,
            1 << 32,
            (1 << 40) | libc::CLONE_NEWUSER as u64,
            u64::MAX,
        ];
        for nr in 0..1024u32 {
            for &arg0 in &args {
                let d = data(AUDIT_ARCH, nr, arg0);
                let want = combined(&[run(&eperm, &d), run(&enosys, &d)]);
                assert_eq!(run(&ours, &d), want, "syscall {nr}, arg0 {arg0:#x}");
            }
        }
        for &nr in DENIED {
            let d = data(AUDIT_ARCH, nr as u32, 0);
            assert_eq!(run(&ours, &d), RET_ERRNO | libc::EPERM as u32, "{nr}");
        }
        // Another architecture's calls (say i386 on x86_64) kill the process, as before.
        assert_eq!(run(&ours, &data(0x4000_0003, 39, 0)), RET_KILL_PROCESS);
        assert_eq!(run(&eperm, &data(0x4000_0003, 39, 0)), RET_KILL_PROCESS);
        // The x32 ABI's numbers (and beyond) are refused, whatever the number behind them.
        for nr in [X32_SYSCALL_BIT, X32_SYSCALL_BIT | 250, u32::MAX] {
            assert_eq!(
                run(&ours, &data(AUDIT_ARCH, nr, 0)),
                RET_ERRNO | libc::ENOSYS as u32
            );
        }
    }

    #[test]
    fn every_path_is_short() {
        let ours = build().unwrap();
        // Header, a binary search over ~55 numbers, one leaf's comparisons and its handler.
        let longest = (0..1024u32)
            .flat_map(|nr| [0, libc::CLONE_NEWUSER as u64].map(|a| (nr, a)))
            .map(|(nr, arg0)| steps(&ours, &data(AUDIT_ARCH, nr, arg0)).1)
            .max()
            .unwrap();
        assert!(longest <= 24, "a path of {longest} instructions");
        let (eperm, _) = reference();
        let chain = steps(&eperm, &data(AUDIT_ARCH, 1000, 0)).1;
        assert!(chain > 3 * longest, "seccompiler's chain: {chain}");
    }
}
