//! The bounds a shared host needs: what one session, one pool and one cluster may ask for, set
//! by `sandpool serve` flags, with defaults derived from what this host can hold.
//!
//! Pools and clusters are checked against them when they are written (PUT, PATCH, deployment):
//! beyond a bound the write answers 400 `LimitExceeded` naming the property and the flag that
//! raises it. Nothing here reaches into cgroups: the runtime applies the limits.

use sandpool_api::ApiError;
use std::time::Duration;

/// Limits of sessions, pools and clusters; part of [`crate::ServeConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// CPU bound of a session whose pool names none (`--session-cpus`).
    pub session_cpu_millicores: u64,
    /// Most CPU one session or Run Command may ask for (`--max-session-cpus`).
    pub max_session_cpu_millicores: u64,
    /// CPU of all sandboxes together (`--host-cpu-ceiling`), set on the instance's cgroup
    /// parent; `None`: no ceiling beyond the host's cores.
    pub host_cpu_ceiling_millicores: Option<u64>,
    /// Most memory one session or Run Command may ask for (`--max-session-memory`).
    pub max_session_memory_bytes: u64,
    /// Most processes (threads) a Run Command cluster may allow (`--max-session-pids`).
    pub max_session_pids: u64,
    /// Largest `maxConcurrentSessions` of a pool (`--max-pool-sessions`).
    pub max_pool_sessions: u32,
    /// Largest `readySessionInstances` of a pool (`--max-ready-sessions`).
    pub max_ready_sessions: u32,
    /// Executions running at once in one session; beyond it 429 (`--max-session-executions`).
    pub max_session_executions: u32,
    /// Execution records kept per session, newest first (`--execution-history`).
    pub execution_history: u32,
    /// Age after which an execution record is deleted (`--execution-retention`).
    pub execution_retention: Duration,
    /// Largest Run Command request body (`--max-run-command-body`); 413 beyond it.
    pub max_run_command_body: usize,
    /// Run Command commands accepted and not yet started (`--max-queued-commands`); 429 beyond.
    pub max_queued_commands: usize,
    pub http: HttpTimeouts,
}

/// How long a client may take, so a slow or stalled one cannot hold a connection (and its
/// descriptors) forever; public routes such as `/oauth2/token` included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HttpTimeouts {
    /// From the connection's first byte (or the end of the previous request) to the end of the
    /// request headers (`--http-header-timeout`); past it the connection is closed.
    pub header_read: Duration,
    /// Longest pause between two pieces of a request body (`--http-body-timeout`); past it
    /// reading the body fails and the request is answered 408.
    pub body_idle: Duration,
    /// Longest time to the response's headers (`--http-request-timeout`), 408 beyond it. Longer
    /// than the longest synchronous execution (1 h) by default.
    pub request: Duration,
}

impl Default for HttpTimeouts {
    fn default() -> Self {
        HttpTimeouts {
            header_read: Duration::from_secs(30),
            body_idle: Duration::from_secs(30),
            request: Duration::from_secs(3900),
        }
    }
}

impl Default for Limits {
    fn default() -> Self {
        let host = HostCapacity::detect();
        Limits {
            session_cpu_millicores: 1000.min(host.cpu_millicores),
            max_session_cpu_millicores: host.cpu_millicores,
            host_cpu_ceiling_millicores: None,
            max_session_memory_bytes: host.memory_bytes,
            max_session_pids: host.pids / 4,
            max_pool_sessions: 10_000,
            max_ready_sessions: 1_000,
            max_session_executions: 16,
            execution_history: 1_000,
            execution_retention: Duration::from_secs(7 * 24 * 3600),
            max_run_command_body: 8 << 20,
            max_queued_commands: 64,
            http: HttpTimeouts::default(),
        }
    }
}

/// What this host has, read once at start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostCapacity {
    /// Online cpus × 1000.
    pub cpu_millicores: u64,
    /// `MemTotal` of `/proc/meminfo`.
    pub memory_bytes: u64,
    /// The lower of `kernel.pid_max` and `kernel.threads-max`.
    pub pids: u64,
}

impl HostCapacity {
    pub fn detect() -> HostCapacity {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u64);
        let memory = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|t| mem_total(&t))
            .unwrap_or(1 << 30);
        let read = |p: &str| {
            std::fs::read_to_string(p)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        let pids = [
            read("/proc/sys/kernel/pid_max"),
            read("/proc/sys/kernel/threads-max"),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(32_768);
        HostCapacity {
            cpu_millicores: cpus * 1000,
            memory_bytes: memory,
            pids,
        }
    }
}

fn mem_total(meminfo: &str) -> Option<u64> {
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// What a pool or cluster asks for, as far as the bounds go.
#[derive(Debug, Clone, Copy, Default)]
pub struct Asked {
    pub max_sessions: Option<u32>,
    pub ready_sessions: Option<u32>,
    pub cpu_millicores: Option<u64>,
    pub memory_bytes: Option<u64>,
    pub pids: Option<u64>,
}

impl Limits {
    /// 400 `LimitExceeded` for the first property beyond its bound. `prefix` is where the
    /// resources sit in the body (`properties.customContainerTemplate.containers[0].resources`
    /// or `properties.limits`).
    pub fn check(&self, asked: &Asked, resources_at: &str) -> Result<(), ApiError> {
        let over = |target: String, what: String, flag: &str| {
            let mut e = ApiError::new(
                400,
                "LimitExceeded",
                format!("{what}; the server's `{flag}` flag sets this bound."),
            );
            e.target = Some(target);
            Err(e)
        };
        if let Some(n) = asked.max_sessions.filter(|n| *n > self.max_pool_sessions) {
            return over(
                "properties.scaleConfiguration.maxConcurrentSessions".into(),
                format!(
                    "maxConcurrentSessions {n} is above this host's bound of {}",
                    self.max_pool_sessions
                ),
                "--max-pool-sessions",
            );
        }
        if let Some(n) = asked
            .ready_sessions
            .filter(|n| *n > self.max_ready_sessions)
        {
            return over(
                "properties.scaleConfiguration.readySessionInstances".into(),
                format!(
                    "readySessionInstances {n} is above this host's bound of {}",
                    self.max_ready_sessions
                ),
                "--max-ready-sessions",
            );
        }
        let cpu_bound = self.max_cpu_millicores();
        if let Some(m) = asked.cpu_millicores.filter(|m| *m > cpu_bound) {
            return over(
                format!("{resources_at}.cpu"),
                format!(
                    "cpu {} is above this host's bound of {} cores per session",
                    cores(m),
                    cores(cpu_bound)
                ),
                if Some(cpu_bound) == self.host_cpu_ceiling_millicores {
                    "--host-cpu-ceiling"
                } else {
                    "--max-session-cpus"
                },
            );
        }
        if let Some(b) = asked
            .memory_bytes
            .filter(|b| *b > self.max_session_memory_bytes)
        {
            return over(
                format!("{resources_at}.memory"),
                format!(
                    "memory {} MiB is above this host's bound of {} MiB per session",
                    b >> 20,
                    self.max_session_memory_bytes >> 20
                ),
                "--max-session-memory",
            );
        }
        if let Some(p) = asked.pids.filter(|p| *p > self.max_session_pids) {
            return over(
                format!("{resources_at}.pids"),
                format!(
                    "pids {p} is above this host's bound of {} per session",
                    self.max_session_pids
                ),
                "--max-session-pids",
            );
        }
        Ok(())
    }

    /// The most one session may get: the per-session bound, and never above the ceiling of
    /// all sandboxes (cgroup v1 refuses a child quota above its parent's).
    pub fn max_cpu_millicores(&self) -> u64 {
        match self.host_cpu_ceiling_millicores {
            Some(c) => c.min(self.max_session_cpu_millicores),
            None => self.max_session_cpu_millicores,
        }
    }

    /// The CPU bound a session gets when its pool names none.
    pub fn default_cpu_millicores(&self) -> u64 {
        self.session_cpu_millicores.min(self.max_cpu_millicores())
    }
}

fn cores(millicores: u64) -> String {
    let c = millicores as f64 / 1000.0;
    format!("{c}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits {
            session_cpu_millicores: 1000,
            max_session_cpu_millicores: 2000,
            host_cpu_ceiling_millicores: None,
            max_session_memory_bytes: 4 << 30,
            max_session_pids: 1000,
            max_pool_sessions: 50,
            max_ready_sessions: 5,
            ..Limits::default()
        }
    }

    #[test]
    fn each_bound_is_named_with_its_flag() {
        let l = limits();
        let at = "properties.limits";
        let cases = [
            (
                Asked {
                    max_sessions: Some(51),
                    ..Default::default()
                },
                "maxConcurrentSessions",
                "--max-pool-sessions",
            ),
            (
                Asked {
                    ready_sessions: Some(6),
                    ..Default::default()
                },
                "readySessionInstances",
                "--max-ready-sessions",
            ),
            (
                Asked {
                    cpu_millicores: Some(2500),
                    ..Default::default()
                },
                "properties.limits.cpu",
                "--max-session-cpus",
            ),
            (
                Asked {
                    memory_bytes: Some(5 << 30),
                    ..Default::default()
                },
                "properties.limits.memory",
                "--max-session-memory",
            ),
            (
                Asked {
                    pids: Some(1001),
                    ..Default::default()
                },
                "properties.limits.pids",
                "--max-session-pids",
            ),
        ];
        for (asked, target, flag) in cases {
            let e = l.check(&asked, at).expect_err(target);
            assert_eq!((e.status, e.code.as_str()), (400, "LimitExceeded"));
            assert!(e.target.as_deref().unwrap_or("").contains(target), "{e:?}");
            assert!(e.message.contains(flag), "{e:?}");
        }
        let within = Asked {
            max_sessions: Some(50),
            ready_sessions: Some(5),
            cpu_millicores: Some(2000),
            memory_bytes: Some(4 << 30),
            pids: Some(1000),
        };
        l.check(&within, at).expect("at the bounds is allowed");
    }

    #[test]
    fn the_host_ceiling_caps_every_session() {
        let l = Limits {
            host_cpu_ceiling_millicores: Some(500),
            ..limits()
        };
        assert_eq!(l.max_cpu_millicores(), 500);
        assert_eq!(l.default_cpu_millicores(), 500);
        let e = l
            .check(
                &Asked {
                    cpu_millicores: Some(600),
                    ..Default::default()
                },
                "r",
            )
            .expect_err("above the ceiling");
        assert!(e.message.contains("--host-cpu-ceiling"), "{e:?}");
    }

    #[test]
    fn host_capacity_is_read() {
        let h = HostCapacity::detect();
        assert!(h.cpu_millicores >= 1000);
        assert!(h.memory_bytes > 1 << 20);
        assert!(h.pids > 0);
        assert_eq!(mem_total("MemTotal:  1024 kB\n"), Some(1 << 20));
    }
}
