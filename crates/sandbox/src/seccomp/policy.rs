//! What the sandbox's seccomp filter lets through: an allow list after Docker's default profile.
//!
//! Three answers, each a deliberate choice:
//! - [`ALLOWED`]: the call reaches the kernel (which still applies namespaces, capabilities
//!   and rlimits).
//! - [`DENIED`]: calls known and refused fail with `EPERM`, the answer of a missing privilege.
//! - everything else, including numbers the kernel added after this list was written, fails
//!   with `ENOSYS`, as on a kernel without the call: libc and runtimes fall back to the older
//!   call (glibc's `clone3`→`clone`, the `*xattrat` and `fchmodat2` family, …) instead of
//!   reporting a permission error.
//!
//! [`CONDITIONAL`] calls are decided on their arguments. Only the low 32 bits of an argument
//! are compared, and only for arguments the kernel itself takes as `int`/`unsigned int`
//! (flags, families, commands, personas), so the upper half cannot smuggle a value past a test.

/// Numbers libc does not name yet. From 424 on, the kernel gives a new call the same number
/// on every architecture.
pub mod nr {
    pub const FCHMODAT2: i64 = 452;
    pub const MAP_SHADOW_STACK: i64 = 453;
    pub const STATMOUNT: i64 = 457;
    pub const LISTMOUNT: i64 = 458;
    pub const OPEN_TREE_ATTR: i64 = 467;
}

/// What a syscall leads to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    Allow,
    Errno(i32),
}

/// A test on the low 32 bits of one argument.
#[derive(Clone, Copy, Debug)]
pub enum Test {
    Eq(u32),
    /// Any of these bits set.
    AnyBit(u32),
}

/// All of `all` (argument index, test) hold → `then`.
#[derive(Debug)]
pub struct Check {
    pub all: &'static [(u8, Test)],
    pub then: Action,
}

/// A call decided by its arguments: the first check that holds, else `otherwise`.
#[derive(Debug)]
pub struct Conditional {
    pub nr: i64,
    pub checks: &'static [Check],
    pub otherwise: Action,
}

/// Errno of a call on neither list.
pub const UNKNOWN_ERRNO: i32 = libc::ENOSYS;
/// Errno of a call on [`DENIED`].
pub const DENIED_ERRNO: i32 = libc::EPERM;

/// Namespace flags of `clone` and `unshare` (Docker's mask without `CAP_SYS_ADMIN`): the
/// sandbox makes no namespaces of its own. `CLONE_NEWTIME` shares its bit with the exit
/// signal in `clone`, so it is refused for `unshare` only.
pub const NAMESPACE_FLAGS: u32 = (libc::CLONE_NEWNS
    | libc::CLONE_NEWCGROUP
    | libc::CLONE_NEWUTS
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUSER
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET) as u32;
const CLONE_NEWTIME: u32 = 0x80;

/// Personas a process may pick (Docker's): Linux, 32-bit Linux, each with `UNAME26`, and
/// the query `0xffffffff`. Not `ADDR_NO_RANDOMIZE`, `READ_IMPLIES_EXEC`, `MMAP_PAGE_ZERO`, …,
/// which weaken the process's own hardening and have been steps of past exploits.
pub const PERSONAS: &[u32] = &[0, 0x0008, 0x2_0000, 0x2_0008, 0xffff_ffff];

/// Socket families a sandbox may open. `AF_NETLINK` only for `NETLINK_ROUTE`, which glibc's
/// `getifaddrs`, `if_nameindex` and `getaddrinfo(AI_ADDRCONFIG)` read; the sandbox holds no
/// `CAP_NET_ADMIN` over its network namespace, so it can read routes and links, not change
/// them. No `AF_PACKET`, `AF_ALG`, `AF_VSOCK`, `AF_KEY`, `AF_XDP`, … (the kernel's rarer
/// socket families are where its socket bugs have been).
pub const SOCKET_FAMILIES: &[u32] = &[
    libc::AF_UNIX as u32,
    libc::AF_INET as u32,
    libc::AF_INET6 as u32,
];
const NETLINK_ROUTE: u32 = 0;

const fn eq(arg: u8, v: u32) -> (u8, Test) {
    (arg, Test::Eq(v))
}
const ALLOW: Action = Action::Allow;
const EPERM: Action = Action::Errno(libc::EPERM);

/// Calls decided on their arguments.
pub const CONDITIONAL: &[Conditional] = &[
    Conditional {
        nr: libc::SYS_clone,
        checks: &[Check {
            all: &[(0, Test::AnyBit(NAMESPACE_FLAGS))],
            then: EPERM,
        }],
        otherwise: ALLOW,
    },
    Conditional {
        nr: libc::SYS_unshare,
        checks: &[Check {
            all: &[(0, Test::AnyBit(NAMESPACE_FLAGS | CLONE_NEWTIME))],
            then: EPERM,
        }],
        otherwise: ALLOW,
    },
    Conditional {
        nr: libc::SYS_personality,
        checks: &[
            Check {
                all: &[eq(0, PERSONAS[0])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, PERSONAS[1])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, PERSONAS[2])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, PERSONAS[3])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, PERSONAS[4])],
                then: ALLOW,
            },
        ],
        otherwise: EPERM,
    },
    Conditional {
        nr: libc::SYS_socket,
        checks: &[
            Check {
                all: &[eq(0, SOCKET_FAMILIES[0])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, SOCKET_FAMILIES[1])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, SOCKET_FAMILIES[2])],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, libc::AF_NETLINK as u32), eq(2, NETLINK_ROUTE)],
                then: ALLOW,
            },
            Check {
                all: &[eq(0, libc::AF_NETLINK as u32)],
                then: Action::Errno(libc::EPROTONOSUPPORT),
            },
        ],
        otherwise: Action::Errno(libc::EAFNOSUPPORT),
    },
    Conditional {
        nr: libc::SYS_socketpair,
        checks: &[Check {
            all: &[eq(0, libc::AF_UNIX as u32)],
            then: ALLOW,
        }],
        otherwise: Action::Errno(libc::EAFNOSUPPORT),
    },
    // Pushing input into a terminal (TIOCSTI) or driving the virtual console (TIOCLINUX)
    // turns a terminal the sandbox can reach into the keyboard of whoever reads it
    // (CVE-2017-5226); bubblewrap refuses both the same way.
    Conditional {
        nr: libc::SYS_ioctl,
        checks: &[
            Check {
                all: &[eq(1, libc::TIOCSTI as u32)],
                then: EPERM,
            },
            Check {
                all: &[eq(1, libc::TIOCLINUX as u32)],
                then: EPERM,
            },
        ],
        otherwise: ALLOW,
    },
];

/// Calls known and refused with `EPERM`: kernel surfaces that namespaces do not cover, or
/// that need a capability the sandbox does not hold (Docker grants them only with
/// `CAP_SYS_ADMIN`, `CAP_SYS_PTRACE`, `CAP_SYS_NICE`, … which it drops by default).
pub const DENIED: &[i64] = &[
    // Kernel keyrings are not namespaced.
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_keyctl,
    // bpf, perf and io_uring: large kernel surfaces with a long CVE history.
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_io_uring_setup,
    libc::SYS_io_uring_enter,
    libc::SYS_io_uring_register,
    // Modules and kexec.
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    // The mount API, old and new, and what reads the mount table by id.
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_move_mount,
    libc::SYS_open_tree,
    nr::OPEN_TREE_ATTR,
    libc::SYS_fsopen,
    libc::SYS_fsmount,
    libc::SYS_fsconfig,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    nr::LISTMOUNT,
    nr::STATMOUNT,
    // Namespaces: joining others', naming the host.
    libc::SYS_setns,
    libc::SYS_sethostname,
    libc::SYS_setdomainname,
    // Host administration.
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
    libc::SYS_quotactl_fd,
    libc::SYS_vhangup,
    libc::SYS_lookup_dcookie,
    // Reaching into other processes: memory, descriptors, their kernel objects.
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_process_madvise,
    libc::SYS_pidfd_getfd,
    libc::SYS_kcmp,
    // NUMA memory policy and page migration: another process's pages and the host's nodes.
    libc::SYS_mbind,
    libc::SYS_set_mempolicy,
    libc::SYS_get_mempolicy,
    libc::SYS_set_mempolicy_home_node,
    libc::SYS_migrate_pages,
    libc::SYS_move_pages,
    // Page-fault handling in user space (a race amplifier for kernel exploits), handles
    // that bypass path lookup, whole-filesystem notification.
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_fanotify_init,
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

/// Calls that reach the kernel unconditionally: Docker's default allow list, less what is
/// in [`DENIED`] above (`adjtimex`, `clock_adjtime`, `io_uring_*`, `ptrace`,
/// `process_vm_*`, `name_to_handle_at`), less `modify_ldt` (16-bit segments, for Wine and
/// DOSEMU only) and `fanotify_mark` (useless without `fanotify_init`), plus `chroot`
/// (the sandbox keeps `CAP_SYS_CHROOT`, as Docker does), and the two newer calls that only
/// repeat an older one's check (`fchmodat2`) or map memory of the caller
/// (`map_shadow_stack`).
pub const ALLOWED: &[i64] = &[
    // Files and descriptors.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_openat2,
    libc::SYS_close,
    libc::SYS_close_range,
    libc::SYS_lseek,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_fcntl,
    libc::SYS_flock,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_sync,
    libc::SYS_syncfs,
    libc::SYS_sync_file_range,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_fadvise64,
    libc::SYS_readahead,
    libc::SYS_getdents64,
    libc::SYS_getcwd,
    libc::SYS_chdir,
    libc::SYS_fchdir,
    libc::SYS_chroot,
    libc::SYS_fstat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_statfs,
    libc::SYS_fstatfs,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_mkdirat,
    libc::SYS_mknodat,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_readlinkat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    nr::FCHMODAT2,
    libc::SYS_fchown,
    libc::SYS_fchownat,
    libc::SYS_utimensat,
    libc::SYS_umask,
    libc::SYS_setxattr,
    libc::SYS_lsetxattr,
    libc::SYS_fsetxattr,
    libc::SYS_getxattr,
    libc::SYS_lgetxattr,
    libc::SYS_fgetxattr,
    libc::SYS_listxattr,
    libc::SYS_llistxattr,
    libc::SYS_flistxattr,
    libc::SYS_removexattr,
    libc::SYS_lremovexattr,
    libc::SYS_fremovexattr,
    libc::SYS_pipe2,
    libc::SYS_splice,
    libc::SYS_tee,
    libc::SYS_vmsplice,
    libc::SYS_sendfile,
    libc::SYS_copy_file_range,
    libc::SYS_inotify_init1,
    libc::SYS_inotify_add_watch,
    libc::SYS_inotify_rm_watch,
    libc::SYS_memfd_create,
    // Waiting and events.
    libc::SYS_epoll_create1,
    libc::SYS_epoll_ctl,
    libc::SYS_epoll_pwait,
    libc::SYS_epoll_pwait2,
    libc::SYS_ppoll,
    libc::SYS_pselect6,
    libc::SYS_eventfd2,
    libc::SYS_signalfd4,
    libc::SYS_timerfd_create,
    libc::SYS_timerfd_settime,
    libc::SYS_timerfd_gettime,
    libc::SYS_io_setup,
    libc::SYS_io_destroy,
    libc::SYS_io_submit,
    libc::SYS_io_cancel,
    libc::SYS_io_getevents,
    libc::SYS_futex,
    libc::SYS_futex_waitv,
    libc::SYS_set_robust_list,
    libc::SYS_get_robust_list,
    // Time.
    libc::SYS_clock_gettime,
    libc::SYS_clock_getres,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettimeofday,
    libc::SYS_times,
    libc::SYS_getitimer,
    libc::SYS_setitimer,
    libc::SYS_timer_create,
    libc::SYS_timer_settime,
    libc::SYS_timer_gettime,
    libc::SYS_timer_getoverrun,
    libc::SYS_timer_delete,
    // Processes, threads, signals.
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_exit,
    libc::SYS_exit_group,
    libc::SYS_wait4,
    libc::SYS_waitid,
    libc::SYS_set_tid_address,
    libc::SYS_rseq,
    libc::SYS_membarrier,
    libc::SYS_restart_syscall,
    libc::SYS_getpid,
    libc::SYS_getppid,
    libc::SYS_gettid,
    libc::SYS_getpgid,
    libc::SYS_setpgid,
    libc::SYS_getsid,
    libc::SYS_setsid,
    libc::SYS_getpriority,
    libc::SYS_setpriority,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_rt_sigpending,
    libc::SYS_rt_sigsuspend,
    libc::SYS_rt_sigtimedwait,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_sigaltstack,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_process_mrelease,
    libc::SYS_prctl,
    libc::SYS_capget,
    libc::SYS_capset,
    libc::SYS_seccomp,
    libc::SYS_landlock_create_ruleset,
    libc::SYS_landlock_add_rule,
    libc::SYS_landlock_restrict_self,
    libc::SYS_getrlimit,
    libc::SYS_setrlimit,
    libc::SYS_prlimit64,
    libc::SYS_getrusage,
    libc::SYS_getrandom,
    libc::SYS_uname,
    libc::SYS_sysinfo,
    // Credentials (within the sandbox's user namespace).
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getresuid,
    libc::SYS_getresgid,
    libc::SYS_getgroups,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setreuid,
    libc::SYS_setregid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setgroups,
    libc::SYS_setfsuid,
    libc::SYS_setfsgid,
    // Scheduling.
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_sched_setaffinity,
    libc::SYS_sched_getattr,
    libc::SYS_sched_setattr,
    libc::SYS_sched_getparam,
    libc::SYS_sched_setparam,
    libc::SYS_sched_getscheduler,
    libc::SYS_sched_setscheduler,
    libc::SYS_sched_get_priority_max,
    libc::SYS_sched_get_priority_min,
    libc::SYS_sched_rr_get_interval,
    libc::SYS_ioprio_get,
    libc::SYS_ioprio_set,
    libc::SYS_getcpu,
    // Memory of the caller.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    libc::SYS_mincore,
    libc::SYS_msync,
    libc::SYS_mlock,
    libc::SYS_mlock2,
    libc::SYS_munlock,
    libc::SYS_mlockall,
    libc::SYS_munlockall,
    libc::SYS_remap_file_pages,
    libc::SYS_memfd_secret,
    libc::SYS_pkey_alloc,
    libc::SYS_pkey_free,
    libc::SYS_pkey_mprotect,
    nr::MAP_SHADOW_STACK,
    // Sockets (`socket` and `socketpair` are conditional).
    libc::SYS_bind,
    libc::SYS_listen,
    libc::SYS_accept,
    libc::SYS_accept4,
    libc::SYS_connect,
    libc::SYS_getsockname,
    libc::SYS_getpeername,
    libc::SYS_getsockopt,
    libc::SYS_setsockopt,
    libc::SYS_sendto,
    libc::SYS_recvfrom,
    libc::SYS_sendmsg,
    libc::SYS_recvmsg,
    libc::SYS_sendmmsg,
    libc::SYS_recvmmsg,
    libc::SYS_shutdown,
    // System V and POSIX IPC (the sandbox's own ipc namespace).
    libc::SYS_shmget,
    libc::SYS_shmat,
    libc::SYS_shmdt,
    libc::SYS_shmctl,
    libc::SYS_semget,
    libc::SYS_semop,
    libc::SYS_semtimedop,
    libc::SYS_semctl,
    libc::SYS_msgget,
    libc::SYS_msgsnd,
    libc::SYS_msgrcv,
    libc::SYS_msgctl,
    libc::SYS_mq_open,
    libc::SYS_mq_unlink,
    libc::SYS_mq_timedsend,
    libc::SYS_mq_timedreceive,
    libc::SYS_mq_notify,
    libc::SYS_mq_getsetattr,
    // x86_64's older calls, which newer architectures only have as the *at forms above.
    #[cfg(target_arch = "x86_64")]
    libc::SYS_open,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_creat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_stat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lstat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_access,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mkdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rmdir,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_mknod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_unlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_rename,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_link,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_symlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_readlink,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chmod,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_chown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_lchown,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utime,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_utimes,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_futimesat,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getdents,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_dup2,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pipe,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_poll,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_select,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_create,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_epoll_wait,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_eventfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_signalfd,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_inotify_init,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_fork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_vfork,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_pause,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_alarm,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_time,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_getpgrp,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_arch_prctl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_set_thread_area,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_get_thread_area,
];
