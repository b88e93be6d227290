//! The sandbox's seccomp filter: an allow list in the spirit of Docker's default profile.
//!
//! The policy (what is allowed, refused with `EPERM`, decided on arguments, and the `ENOSYS`
//! for everything else) is data in [`policy`]; this module turns it into one BPF program.
//! Calls of another architecture (i386 on x86_64) kill the process; the x32 ABI's numbers
//! fail with `ENOSYS` (the lists are keyed by the native numbers, which must not be
//! reachable under other ones).
//!
//! The program is generated here rather than by seccompiler: seccompiler checks the numbers one
//! after the other, and the kernel runs a new filter over every syscall number when it is
//! attached (to find the calls it always allows), so a chain of fifty comparisons made attaching
//! it ≈0.3 ms of every sandbox start, and the allow list has six times as many. Here the
//! numbers become runs with one verdict (most of the allow list is a few long runs), found by
//! a binary search: ≈230 instructions, at most 24 on any path. The tests check the program
//! against seccompiler's compilation of the same policy for every syscall number.

pub mod policy;

use policy::{Action, Conditional, Test};
use seccompiler::{apply_filter, sock_filter, BpfProgram};
use std::borrow::Cow;
use std::sync::OnceLock;

pub use policy::DENIED;

/// Filters compiled once by the zygote before it forks any init; every forked init inherits
/// them, so its start does not pay for building the rule maps and the BPF code again.
static COMPILED: OnceLock<Filters> = OnceLock::new();

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

// Classic BPF as seccomp takes it (linux/filter.h, linux/seccomp.h).
const LD_W_ABS: u16 = 0x20;
const JA: u16 = 0x05;
const JEQ_K: u16 = 0x15;
const JGE_K: u16 = 0x35;
const JSET_K: u16 = 0x45;
const RET_K: u16 = 0x06;
const RET_KILL_PROCESS: u32 = 0x8000_0000;
const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
/// Offsets in `struct seccomp_data`: nr, arch, args (8 bytes each; the low half first on
/// these little-endian architectures).
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const OFF_ARGS: u32 = 16;
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

fn ret(action: Action) -> sock_filter {
    match action {
        Action::Allow => stmt(RET_K, RET_ALLOW),
        Action::Errno(e) => stmt(RET_K, RET_ERRNO | e as u32),
    }
}

/// What a syscall number leads to.
#[derive(Clone, Copy)]
enum Verdict {
    Fixed(Action),
    Args(&'static Conditional),
}

/// Code deciding one call (its number already matched); every path ends in a return.
fn handler(verdict: Verdict) -> Result<Vec<sock_filter>, String> {
    let cond = match verdict {
        Verdict::Fixed(action) => return Ok(vec![ret(action)]),
        Verdict::Args(cond) => cond,
    };
    let mut code = Vec::new();
    for check in cond.checks {
        let n = check.all.len();
        for (i, &(arg, test)) in check.all.iter().enumerate() {
            // A failed test skips the rest of this check: its other tests and its return.
            let rest = (n - 1 - i) * 2 + 1;
            code.push(stmt(LD_W_ABS, OFF_ARGS + 8 * u32::from(arg)));
            code.push(match test {
                Test::Eq(v) => jump(JEQ_K, v, 0, rest)?,
                Test::AnyBit(mask) => jump(JSET_K, mask, 0, rest)?,
            });
        }
        code.push(ret(check.then));
    }
    code.push(ret(cond.otherwise));
    Ok(code)
}

/// Code for `nr` (in A) within `segments`, which cover the numbers from the first one's
/// start up, every path ending in a return: a balanced tree of `>=` tests over the
/// segments' starts, their handlers at the leaves.
fn search(segments: &[(u32, Verdict)]) -> Result<Vec<sock_filter>, String> {
    if let [(_, verdict)] = segments {
        return handler(*verdict);
    }
    let (low, high) = segments.split_at(segments.len() / 2);
    let high_code = search(high)?;
    let mut code = if high_code.len() <= usize::from(u8::MAX) {
        vec![jump(JGE_K, high[0].0, 0, high_code.len())?]
    } else {
        // Too far for a conditional jump's 8-bit offset: jump over the high half always.
        vec![
            jump(JGE_K, high[0].0, 1, 0)?,
            stmt(JA, high_code.len() as u32),
        ]
    };
    code.extend(high_code);
    code.extend(search(low)?);
    Ok(code)
}

/// The whole number space as runs of numbers with one verdict, sorted by start, the first
/// at 0: each listed number with its verdict, neighbours with the same fixed verdict merged
/// (most of the allow list is a few long runs), and what no list names, up to the end,
/// answering [`policy::UNKNOWN_ERRNO`]. A number on two lists is a policy error.
fn segments() -> Result<Vec<(u32, Verdict)>, String> {
    let mut listed: Vec<(u32, Verdict)> = policy::ALLOWED
        .iter()
        .map(|&nr| (nr as u32, Verdict::Fixed(Action::Allow)))
        .chain(DENIED.iter().map(|&nr| {
            (
                nr as u32,
                Verdict::Fixed(Action::Errno(policy::DENIED_ERRNO)),
            )
        }))
        .chain(
            policy::CONDITIONAL
                .iter()
                .map(|c| (c.nr as u32, Verdict::Args(c))),
        )
        .collect();
    listed.sort_by_key(|e| e.0);
    if let Some(w) = listed.windows(2).find(|w| w[0].0 == w[1].0) {
        return Err(format!("syscall {} is listed twice", w[0].0));
    }
    let unknown = Verdict::Fixed(Action::Errno(policy::UNKNOWN_ERRNO));
    let mut segments: Vec<(u32, Verdict)> = Vec::new();
    let mut next = 0u32;
    let push = |segments: &mut Vec<(u32, Verdict)>, start: u32, verdict: Verdict| match (
        segments.last(),
        verdict,
    ) {
        (Some((_, Verdict::Fixed(last))), Verdict::Fixed(v)) if *last == v => {}
        _ => segments.push((start, verdict)),
    };
    for (nr, verdict) in listed {
        if nr > next {
            push(&mut segments, next, unknown);
        }
        push(&mut segments, nr, verdict);
        next = nr + 1;
    }
    push(&mut segments, next, unknown);
    Ok(segments)
}

/// The compiled filter.
pub type Filters = BpfProgram;

/// Compiles the filter.
pub fn build() -> Result<Filters, String> {
    let mut prog = vec![
        stmt(LD_W_ABS, OFF_ARCH),
        jump(JEQ_K, AUDIT_ARCH, 1, 0)?,
        stmt(RET_K, RET_KILL_PROCESS),
        stmt(LD_W_ABS, OFF_NR),
        jump(JGE_K, X32_SYSCALL_BIT, 0, 1)?,
        ret(Action::Errno(libc::ENOSYS)),
    ];
    prog.extend(search(&segments()?)?);
    // The kernel's limit (BPF_MAXINSNS).
    if prog.len() > 4096 {
        return Err(format!("seccomp program of {} instructions", prog.len()));
    }
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

    fn cond(arg: u8, op: SeccompCmpOp, value: u64) -> SeccompCondition {
        SeccompCondition::new(arg, SeccompCmpArgLen::Dword, op, value).unwrap()
    }

    fn rule(conditions: Vec<SeccompCondition>) -> SeccompRule {
        SeccompRule::new(conditions).unwrap()
    }

    /// One rule per bit of `mask`: any of them set.
    fn any_bit(arg: u8, mask: u32) -> Vec<SeccompRule> {
        (0..32)
            .map(|b| 1u64 << b)
            .filter(|&bit| u64::from(mask) & bit != 0)
            .map(|bit| rule(vec![cond(arg, SeccompCmpOp::MaskedEq(bit), bit)]))
            .collect()
    }

    fn filter(
        rules: BTreeMap<i64, Vec<SeccompRule>>,
        mismatch: SeccompAction,
        matched: SeccompAction,
    ) -> BpfProgram {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        SeccompFilter::new(rules, mismatch, matched, arch)
            .unwrap()
            .try_into()
            .unwrap()
    }

    /// The policy as `docs/security.md` states it, compiled by seccompiler as one filter per
    /// outcome (each matching only the calls that end in it): the allow list with ENOSYS for
    /// the rest, the EPERM refusals, and the two socket errnos. The kernel runs all of them
    /// and takes the strictest answer.
    fn reference() -> Vec<BpfProgram> {
        use SeccompAction::{Allow, Errno};
        use SeccompCmpOp::{Eq, Ne};
        let listed = policy::ALLOWED
            .iter()
            .chain(DENIED)
            .chain(policy::CONDITIONAL.iter().map(|c| &c.nr))
            .map(|&n| (n, Vec::new()))
            .collect();
        let allow_list = filter(listed, Errno(libc::ENOSYS as u32), Allow);

        let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
            DENIED.iter().map(|&n| (n, Vec::new())).collect();
        refused.insert(libc::SYS_clone, any_bit(0, policy::NAMESPACE_FLAGS));
        refused.insert(
            libc::SYS_unshare,
            any_bit(0, policy::NAMESPACE_FLAGS | 0x80),
        );
        let not_a_persona = policy::PERSONAS
            .iter()
            .map(|&p| cond(0, Ne, p.into()))
            .collect();
        refused.insert(libc::SYS_personality, vec![rule(not_a_persona)]);
        refused.insert(
            libc::SYS_ioctl,
            vec![
                rule(vec![cond(1, Eq, libc::TIOCSTI)]),
                rule(vec![cond(1, Eq, libc::TIOCLINUX)]),
            ],
        );
        let eperm = filter(refused, Allow, Errno(libc::EPERM as u32));

        let families = [
            libc::AF_UNIX,
            libc::AF_INET,
            libc::AF_INET6,
            libc::AF_NETLINK,
        ];
        let other_family = families.iter().map(|&f| cond(0, Ne, f as u64)).collect();
        let no_family = [
            (libc::SYS_socket, vec![rule(other_family)]),
            (
                libc::SYS_socketpair,
                vec![rule(vec![cond(0, Ne, libc::AF_UNIX as u64)])],
            ),
        ];
        let eafnosupport = filter(
            no_family.into_iter().collect(),
            Allow,
            Errno(libc::EAFNOSUPPORT as u32),
        );
        let netlink_not_route = rule(vec![
            cond(0, Eq, libc::AF_NETLINK as u64),
            cond(2, Ne, libc::NETLINK_ROUTE as u64),
        ]);
        let eprotonosupport = filter(
            [(libc::SYS_socket, vec![netlink_not_route])]
                .into_iter()
                .collect(),
            Allow,
            Errno(libc::EPROTONOSUPPORT as u32),
        );
        vec![allow_list, eperm, eafnosupport, eprotonosupport]
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

    fn data(arch: u32, nr: u32, args: [u64; 3]) -> [u8; 64] {
        let mut d = [0u8; 64];
        d[0..4].copy_from_slice(&nr.to_ne_bytes());
        d[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            d[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
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

    fn errno(e: i32) -> u32 {
        RET_ERRNO | e as u32
    }

    /// Argument triples that reach every branch of the conditional calls: each flag bit alone
    /// and with the upper half set, every socket family below 64 with the netlink protocols,
    /// each persona and its neighbours, the refused ioctls and their look-alikes.
    fn interesting_args() -> Vec<[u64; 3]> {
        let mut args = vec![[0, 0, 0], [u64::MAX; 3], [1 << 32; 3]];
        for b in 0..32 {
            args.push([1 << b, 0, 0]);
            args.push([(1 << b) | (1 << 40), 0, 0]);
        }
        for family in 0..64u64 {
            for protocol in [0, 4, 9, 16, 1 << 32] {
                args.push([family, 1, protocol]);
            }
            args.push([family | (1 << 32), 1, 0]);
        }
        for &p in policy::PERSONAS {
            let p = u64::from(p);
            for v in [p, p + 1, p | 0x4_0000, p | (1 << 32)] {
                args.push([v, 0, 0]);
            }
        }
        for cmd in [
            libc::TIOCSTI,
            libc::TIOCLINUX,
            libc::TCGETS,
            libc::TIOCSCTTY,
        ] {
            args.push([0, cmd, 0]);
            args.push([0, cmd | (1 << 32), 0]);
        }
        args
    }

    #[test]
    fn the_program_decides_like_seccompiler_for_every_syscall() {
        let ours = build().expect("filter builds");
        let reference = reference();
        let decide = |d: &[u8; 64]| {
            let verdicts: Vec<u32> = reference.iter().map(|p| run(p, d)).collect();
            combined(&verdicts)
        };
        let all_args = interesting_args();
        let few_args = [[0, 0, 0], [u64::MAX; 3], [libc::CLONE_NEWUSER as u64, 1, 1]];
        let conditional: Vec<u32> = policy::CONDITIONAL.iter().map(|c| c.nr as u32).collect();
        let x32 = [0, 1, 41, 56, 250, 321, 435].map(|n| X32_SYSCALL_BIT | n);
        for nr in (0..1024u32).chain(x32).chain([u32::MAX]) {
            // Every argument set for the calls that look at arguments and a sample of the
            // others; a few for every number.
            let args: &[[u64; 3]] = if conditional.contains(&nr) || nr % 61 == 0 {
                &all_args
            } else {
                &few_args
            };
            for &a in args {
                let d = data(AUDIT_ARCH, nr, a);
                assert_eq!(run(&ours, &d), decide(&d), "syscall {nr}, args {a:#x?}");
            }
        }
        // Another architecture's calls (say i386 on x86_64) kill the process, in both.
        let foreign = data(0x4000_0003, 39, [0; 3]);
        assert_eq!(run(&ours, &foreign), RET_KILL_PROCESS);
        assert_eq!(decide(&foreign), RET_KILL_PROCESS);
    }

    /// The policy's promises, stated without either compiler.
    #[test]
    fn the_program_keeps_the_documented_promises() {
        let ours = build().unwrap();
        let verdict = |nr: i64, args: [u64; 3]| run(&ours, &data(AUDIT_ARCH, nr as u32, args));
        for &nr in policy::ALLOWED {
            assert_eq!(verdict(nr, [0; 3]), RET_ALLOW, "{nr}");
        }
        for &nr in DENIED {
            assert_eq!(verdict(nr, [0; 3]), errno(libc::EPERM), "{nr}");
        }
        for nr in [
            libc::SYS_kcmp,
            libc::SYS_mbind,
            libc::SYS_set_mempolicy,
            libc::SYS_move_pages,
            libc::SYS_process_madvise,
            libc::SYS_quotactl_fd,
            policy::nr::LISTMOUNT,
            policy::nr::STATMOUNT,
            policy::nr::OPEN_TREE_ATTR,
            libc::SYS_mount,
            libc::SYS_bpf,
            libc::SYS_keyctl,
            libc::SYS_ptrace,
        ] {
            assert_eq!(verdict(nr, [0; 3]), errno(libc::EPERM), "{nr}");
        }
        // Unknown and newer calls, and clone3, look unimplemented.
        for nr in [
            libc::SYS_clone3,
            459,
            460,
            461,
            463,
            468,
            469,
            470,
            500,
            1023,
        ] {
            assert_eq!(verdict(nr, [0; 3]), errno(libc::ENOSYS), "{nr}");
        }
        let ns = [
            libc::CLONE_NEWUSER,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
        ];
        for flag in ns {
            let with_thread = (flag | libc::CLONE_THREAD | libc::CLONE_VM) as u64;
            assert_eq!(
                verdict(libc::SYS_clone, [with_thread, 0, 0]),
                errno(libc::EPERM)
            );
            assert_eq!(
                verdict(libc::SYS_unshare, [flag as u64, 0, 0]),
                errno(libc::EPERM)
            );
        }
        assert_eq!(verdict(libc::SYS_unshare, [0x80, 0, 0]), errno(libc::EPERM));
        let fork = (libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD) as u64;
        assert_eq!(verdict(libc::SYS_clone, [fork, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict(libc::SYS_unshare, [libc::CLONE_FILES as u64, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(
            verdict(libc::SYS_personality, [0xffff_ffff, 0, 0]),
            RET_ALLOW
        );
        assert_eq!(verdict(libc::SYS_personality, [8, 0, 0]), RET_ALLOW);
        assert_eq!(
            verdict(libc::SYS_personality, [0x4_0000, 0, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            verdict(libc::SYS_personality, [0x40_0000, 0, 0]),
            errno(libc::EPERM)
        );
        let socket = |family: i32, protocol: i32| {
            verdict(
                libc::SYS_socket,
                [family as u64, libc::SOCK_RAW as u64, protocol as u64],
            )
        };
        assert_eq!(socket(libc::AF_INET, 0), RET_ALLOW);
        assert_eq!(socket(libc::AF_INET6, 0), RET_ALLOW);
        assert_eq!(socket(libc::AF_UNIX, 0), RET_ALLOW);
        assert_eq!(socket(libc::AF_NETLINK, libc::NETLINK_ROUTE), RET_ALLOW);
        let netlink_other = socket(libc::AF_NETLINK, libc::NETLINK_AUDIT);
        assert_eq!(netlink_other, errno(libc::EPROTONOSUPPORT));
        for family in [
            libc::AF_PACKET,
            libc::AF_ALG,
            libc::AF_VSOCK,
            libc::AF_KEY,
            libc::AF_XDP,
        ] {
            assert_eq!(socket(family, 0), errno(libc::EAFNOSUPPORT), "{family}");
        }
        let pair = |family: i32| verdict(libc::SYS_socketpair, [family as u64, 1, 0]);
        assert_eq!(
            (pair(libc::AF_UNIX), pair(libc::AF_INET)),
            (RET_ALLOW, errno(libc::EAFNOSUPPORT))
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, [0, libc::TIOCSTI, 0]),
            errno(libc::EPERM)
        );
        assert_eq!(
            verdict(libc::SYS_ioctl, [0, libc::TIOCSTI | (1 << 32), 0]),
            errno(libc::EPERM)
        );
        assert_eq!(verdict(libc::SYS_ioctl, [0, libc::TCGETS, 0]), RET_ALLOW);
        // The x32 ABI's numbers are refused, whatever the number behind them.
        for nr in [X32_SYSCALL_BIT, X32_SYSCALL_BIT | 250, u32::MAX] {
            assert_eq!(
                run(&ours, &data(AUDIT_ARCH, nr, [0; 3])),
                errno(libc::ENOSYS)
            );
        }
    }

    #[test]
    fn every_path_is_short() {
        let ours = build().unwrap();
        // Header, a binary search over ~100 runs of numbers, and a handler (the longest:
        // socket's, up to five argument checks).
        let longest = (0..1024u32)
            .flat_map(|nr| interesting_args().into_iter().map(move |a| (nr, a)))
            .map(|(nr, args)| steps(&ours, &data(AUDIT_ARCH, nr, args)).1)
            .max()
            .unwrap();
        assert!(longest <= 24, "a path of {longest} instructions");
        let allow_list = &reference()[0];
        let chain = steps(allow_list, &data(AUDIT_ARCH, 1000, [0; 3])).1;
        assert!(chain > 10 * longest, "seccompiler's chain: {chain}");
    }
}
