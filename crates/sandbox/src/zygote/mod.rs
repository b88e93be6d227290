//! The zygote: a single-threaded helper, exec'd once per runtime, that forks sandbox inits.
//!
//! Exec'ing the init binary for every sandbox costs about a millisecond of CPU before the init
//! runs a line of its own (mapping and relocating a large position-independent binary, the
//! dynamic loader, page faults). The zygote pays that once; each sandbox is a `clone` of it
//! into fresh namespaces that goes straight to [`crate::init::run`]. Forking without exec is
//! only safe from a single-threaded process, which is why the zygote is a process of its own
//! and not the (multi-threaded) server.
//!
//! The runtime talks to it over a `SOCK_SEQPACKET` pair: one message per start carrying the
//! init's configuration and its descriptors, one reply with the child's pidfd. The zygote exits
//! when the runtime's end closes (also when the server is SIGKILLed). Its children are reaped by
//! the kernel (`SIGCHLD` ignored); the runtime follows them through their pidfds. When the
//! zygote dies or stops answering, the runtime kills and reaps it, starts a new one, and falls
//! back to the exec path of [`crate::spawn`] while none can be started.
//!
//! Creating a network namespace is the most expensive part of the `clone` (registering `lo` and
//! the per-namespace sysctl tables), so the zygote keeps a few loopback-only namespaces ready and
//! refills them between requests, like the egress slot pool does. Each is used by one sandbox
//! only. They belong to the host's user namespace, as egress slots do: the sandbox's root has no
//! `CAP_NET_ADMIN` or `CAP_NET_RAW` over its own network, which also keeps netfilter and the
//! other network configuration interfaces out of its reach.
//!
//! Three processes run this code: the server ([`server_side`]: the runtime's handle, one request
//! per start), the zygote ([`zygote_process`]: its loop, the clone), and the zygote's forked
//! child, which takes the steps of [`crate::child::enter`] and becomes the init.

mod server_side;
mod zygote_process;

pub(crate) use server_side::{Zygote, ZygotePlan};
pub use zygote_process::main;

use crate::init::InitConfig;
use serde::{Deserialize, Serialize};
use std::os::fd::RawFd;
use std::time::Duration;

/// Last argument that turns the init program into a zygote.
pub const ZYGOTE_ARG: &str = "--sandpool-zygote";
/// The zygote's end of its socket.
const FD_ZYGOTE: RawFd = 3;
/// A start request is the init configuration (environment ≤ 64 KiB) plus a little.
const MAX_REQUEST: usize = 256 * 1024;
/// A zygote that takes longer than this to answer is considered hung.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed zygote start, the exec path is used this long before trying again.
const RETRY_AFTER: Duration = Duration::from_secs(5);
/// Most loopback-only network namespaces a zygote keeps ready (each holds a little kernel
/// memory: its loopback device, sysctl tables, sockets' hash tables).
pub const MAX_READY_NETNS: usize = 256;
/// How the runtime tells the zygote its [`crate::RuntimeConfig::ready_netns`].
const READY_NETNS_ENV: &str = "SANDPOOL_READY_NETNS";
/// How long the zygote must have been idle before it makes a namespace: right after a start it
/// would compete for the CPU with the init it just forked.
const IDLE_BEFORE_REFILL_MS: i32 = 3;

#[derive(Serialize, Deserialize)]
struct Request {
    host_uid: u32,
    uid_count: u32,
    /// A network namespace descriptor follows the four fixed ones.
    netns: bool,
    config: InitConfig,
}

#[derive(Serialize, Deserialize)]
enum Reply {
    /// The child's pidfd is attached.
    Started {
        pid: i32,
    },
    Failed {
        message: String,
    },
}
