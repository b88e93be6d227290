//! Starting a command from the init with a vfork-style clone (`CLONE_VM | CLONE_VFORK`).
//!
//! `std::process::Command` falls back to a full `fork` as soon as a `pre_exec` hook is set, and
//! the init wants a few steps of its own between fork and exec (process group, signal
//! dispositions, descriptors).
//! Copying the init's page tables for every command is the largest avoidable cost of a warm
//! exec, so the child borrows the init's memory until it execs, like `posix_spawn` does.
//!
//! The child runs on its own small stack and only makes plain syscalls on data prepared before
//! the clone. Signals stay blocked in the parent while the child shares its memory, and the
//! child resets every signal disposition that is not the default before unblocking, so no
//! handler of the init ever runs on the shared memory. Which ones those are is noted once
//! ([`note_signal_dispositions`]): asking the kernel about all 64 in every child was ≈60 syscalls
//! per command.

use crate::sys::cstr;
use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Signals (bit `n - 1` for signal `n`) whose disposition was not the default when noted.
static NON_DEFAULT: AtomicU64 = AtomicU64::new(0);
static NOTED: AtomicBool = AtomicBool::new(false);

/// Notes which signals are ignored or handled in this process. Call where the dispositions are
/// settled and before the process forks inits (the zygote) or serves (an exec'd init); a forked
/// init inherits the note with the dispositions. A handler installed later must be added with
/// [`note_handler`]; until anything is noted, children ask the kernel about every signal.
pub fn note_signal_dispositions() {
    let mut mask = 0u64;
    for sig in 1..=64 {
        if let Some(true) = non_default(sig) {
            mask |= 1 << (sig - 1);
        }
    }
    NON_DEFAULT.fetch_or(mask, Ordering::Relaxed);
    NOTED.store(true, Ordering::Release);
}

/// Adds a signal this process installed a handler for after [`note_signal_dispositions`].
pub fn note_handler(sig: libc::c_int) {
    if (1..=64).contains(&sig) {
        NON_DEFAULT.fetch_or(1 << (sig - 1), Ordering::Relaxed);
    }
}

/// Whether `sig` has a handler or is ignored; `None` for signals the kernel does not let us
/// ask about (SIGKILL, SIGSTOP).
fn non_default(sig: libc::c_int) -> Option<bool> {
    let mut sa = KernelSigaction::default();
    // SAFETY: raw rt_sigaction query into a kernel-layout struct (glibc's wrapper refuses the
    // signals it reserves for itself).
    let r = unsafe {
        libc::syscall(
            libc::SYS_rt_sigaction,
            sig,
            std::ptr::null::<KernelSigaction>(),
            &mut sa as *mut KernelSigaction,
            8usize,
        )
    };
    (r == 0).then_some(sa.handler != libc::SIG_DFL)
}

/// What to start: `argv[0]` with `argv` and exactly `envp`, in its own process group.
pub struct Spawn {
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    pub cwd: CString,
    /// Become the child's fds 0, 1 and 2.
    pub stdio: [RawFd; 3],
}

impl Spawn {
    /// `/bin/sh -c command` with `env` (later entries override earlier ones of the same name).
    pub fn shell<'a>(
        command: &str,
        env: impl IntoIterator<Item = (&'a str, &'a str)>,
        cwd: &str,
        stdio: [RawFd; 3],
    ) -> io::Result<Spawn> {
        let mut vars: std::collections::BTreeMap<&str, &str> = Default::default();
        for (k, v) in env {
            vars.insert(k, v);
        }
        Ok(Spawn {
            argv: vec![cstr("/bin/sh")?, cstr("-c")?, cstr(command)?],
            envp: vars
                .into_iter()
                .map(|(k, v)| cstr(format!("{k}={v}")))
                .collect::<io::Result<_>>()?,
            cwd: cstr(cwd)?,
            stdio,
        })
    }
}

/// Everything the child reads, plus the slot where it leaves the errno of a failed step.
struct Ctx {
    argv: *const *const libc::c_char,
    envp: *const *const libc::c_char,
    cwd: *const libc::c_char,
    stdio: [RawFd; 3],
    errno: libc::c_int,
}

const STACK_SIZE: usize = 64 * 1024;

thread_local! {
    /// The children's stack, reused (see [`spawn`]).
    static STACK: std::cell::Cell<Vec<u128>> = const { std::cell::Cell::new(Vec::new()) };
}

/// Starts the command; returns its pid (also its process group). A failed `chdir` or `execve`
/// comes back as that step's error; the child that failed is reaped by the init's reaper.
pub fn spawn(s: &Spawn) -> io::Result<i32> {
    let mut argv: Vec<*const libc::c_char> = s.argv.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    let mut envp: Vec<*const libc::c_char> = s.envp.iter().map(|a| a.as_ptr()).collect();
    envp.push(std::ptr::null());
    let mut ctx = Ctx {
        argv: argv.as_ptr(),
        envp: envp.as_ptr(),
        cwd: s.cwd.as_ptr(),
        stdio: s.stdio,
        errno: 0,
    };
    // u128 keeps the stack 16-byte aligned, as the ABI wants at the call into `child`. Kept
    // between commands: the init runs one spawn at a time (CLONE_VFORK suspends it until the
    // child has exec'd), and allocating and zeroing 64 KiB per command is measurable.
    let mut stack = STACK.with(|s| s.take());
    if stack.len() != STACK_SIZE / 16 {
        stack = vec![0u128; STACK_SIZE / 16];
    }
    // SAFETY: the stack grows down from one past its end, which `as_mut_ptr().add(len)` is.
    let top = unsafe { stack.as_mut_ptr().add(stack.len()) }.cast::<libc::c_void>();

    // SAFETY: sigset operations on local sets; the old mask is restored below in all cases.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: CLONE_VFORK suspends us until the child execs or exits, so `ctx`, the argument
    // vectors and the stack outlive every use by the child; the child only makes syscalls.
    let pid = unsafe {
        libc::clone(
            child,
            top,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            (&mut ctx as *mut Ctx).cast(),
        )
    };
    let clone_err = io::Error::last_os_error();
    // SAFETY: restoring the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    STACK.with(|s| s.replace(stack));
    if pid == -1 {
        return Err(clone_err);
    }
    // SAFETY: the child wrote this field (if at all) before it exited; volatile because the
    // compiler cannot see that write.
    let errno = unsafe { std::ptr::read_volatile(&ctx.errno) };
    if errno != 0 {
        return Err(io::Error::from_raw_os_error(errno));
    }
    Ok(pid)
}

/// The kernel's `struct sigaction` (glibc's differs in layout).
#[repr(C)]
#[derive(Default)]
struct KernelSigaction {
    handler: libc::sighandler_t,
    flags: libc::c_ulong,
    restorer: usize,
    mask: u64,
}

extern "C" fn child(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the parent's `Ctx`, alive while the parent is suspended.
    unsafe {
        let c = &mut *arg.cast::<Ctx>();
        // Handlers point into the init's code: back to defaults before anything is unblocked.
        // Ignored signals would survive exec; commands start with every disposition at its
        // default. Raw rt_sigaction: glibc's wrapper refuses the signals it reserves.
        let noted = NOTED.load(Ordering::Acquire);
        let mask = NON_DEFAULT.load(Ordering::Relaxed);
        for sig in 1..=64 {
            if sig == libc::SIGKILL || sig == libc::SIGSTOP {
                continue;
            }
            let reset = if noted {
                mask & (1 << (sig - 1)) != 0
            } else {
                non_default(sig) == Some(true)
            };
            if reset {
                let dfl = KernelSigaction::default();
                libc::syscall(
                    libc::SYS_rt_sigaction,
                    sig,
                    &dfl as *const KernelSigaction,
                    std::ptr::null_mut::<KernelSigaction>(),
                    8usize,
                );
            }
        }
        let mut none: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut none);
        libc::sigprocmask(libc::SIG_SETMASK, &none, std::ptr::null_mut());
        if libc::setpgid(0, 0) != 0 {
            fail(c);
        }
        // A source below 3 could be overwritten by an earlier dup2 (say the stdout pipe is fd
        // 0 and stdin's /dev/null goes to 0 first: the command's output vanished). Lift such
        // sources above 2 first (close-on-exec copies in this child's own fd table).
        let mut stdio = c.stdio;
        for src in stdio.iter_mut() {
            if *src < 3 {
                let lifted = libc::fcntl(*src, libc::F_DUPFD_CLOEXEC, 3);
                if lifted == -1 {
                    fail(c);
                }
                *src = lifted;
            }
        }
        for (target, &src) in stdio.iter().enumerate() {
            if libc::dup2(src, target as RawFd) == -1 {
                fail(c);
            }
        }
        // Deny by default: the command gets its three descriptors and nothing else, whatever
        // the init holds without close-on-exec. This child's descriptor table is its own copy.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) == -1 {
            fail(c);
        }
        if libc::chdir(c.cwd) != 0 {
            fail(c);
        }
        // No OOM adjustment here or after the exec: the command inherits the init's, which the
        // runtime set to 0 with privilege before the init ran (an exemption reset here would
        // leave the command free to take it back, see `Runtime::launch`).
        libc::execve(*c.argv, c.argv, c.envp);
        fail(c)
    }
}

/// Leaves the failed step's errno for the parent and exits.
unsafe fn fail(c: &mut Ctx) -> ! {
    std::ptr::write_volatile(&mut c.errno, *libc::__errno_location());
    libc::_exit(127)
}
