//! Counters and latency histograms of the pool manager, kept lock-free so the request path only
//! pays for a few atomic adds; the server renders a [`PoolMetrics`] snapshot as Prometheus text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::{ExecutionStatus, PoolKey};

/// Upper bounds (seconds) of the latency buckets: from a warm allocation (sub-millisecond) to the
/// longest execution (an hour).
const BOUNDS: [f64; 18] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    60.0, 300.0, 3600.0,
];

/// A snapshot of one histogram in Prometheus' shape.
#[derive(Debug, Clone, PartialEq)]
pub struct Histogram {
    /// (upper bound in seconds, cumulative count of observations ≤ bound), ascending; the `+Inf`
    /// bucket is `count`.
    pub buckets: Vec<(f64, u64)>,
    pub count: u64,
    pub sum_seconds: f64,
}

/// Gauges of one pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolGauges {
    pub pool: PoolKey,
    /// Started, unbound sandboxes.
    pub ready: u64,
    /// Sessions bound to an identifier (including ones being allocated).
    pub allocated: u64,
    /// Ready sandboxes being started.
    pub starting: u64,
}

/// Everything the manager measures, at one instant.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolMetrics {
    pub pools: Vec<PoolGauges>,
    /// Label `source`: `ready` or `on_demand`.
    pub allocations: Vec<(&'static str, u64)>,
    /// Acquires refused because the pool was at `max_concurrent_sessions`.
    pub allocations_rejected: u64,
    /// Sessions ended because their sandbox's init exited (killed from the host, OOM, or the
    /// main process of an `OnContainerExit` session ended).
    pub sessions_sandbox_died: u64,
    /// Label `outcome`: `succeeded`, `failed` or `timed_out`.
    pub executions: Vec<(&'static str, u64)>,
    /// Time from an acquire that creates a session to the session being usable.
    pub allocation_latency: Histogram,
    /// Duration of finished executions.
    pub execution_latency: Histogram,
}

#[derive(Default)]
pub(crate) struct AtomicHistogram {
    buckets: [AtomicU64; BOUNDS.len()],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    pub(crate) fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BOUNDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    fn snapshot(&self) -> Histogram {
        let mut cumulative = 0;
        let buckets = BOUNDS
            .iter()
            .zip(&self.buckets)
            .map(|(b, c)| {
                cumulative += c.load(Ordering::Relaxed);
                (*b, cumulative)
            })
            .collect();
        Histogram {
            buckets,
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    Ready,
    OnDemand,
}

#[derive(Default)]
pub(crate) struct Metrics {
    from_ready: AtomicU64,
    on_demand: AtomicU64,
    rejected: AtomicU64,
    sandbox_died: AtomicU64,
    succeeded: AtomicU64,
    failed: AtomicU64,
    timed_out: AtomicU64,
    allocation_latency: AtomicHistogram,
    execution_latency: AtomicHistogram,
}

impl Metrics {
    pub(crate) fn allocated(&self, source: Source, latency: Duration) {
        match source {
            Source::Ready => &self.from_ready,
            Source::OnDemand => &self.on_demand,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.allocation_latency.observe(latency);
    }

    pub(crate) fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn sandbox_died(&self) {
        self.sandbox_died.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn executed(&self, status: ExecutionStatus, duration: Duration) {
        match status {
            ExecutionStatus::Succeeded => &self.succeeded,
            ExecutionStatus::TimedOut => &self.timed_out,
            ExecutionStatus::Failed | ExecutionStatus::Running => &self.failed,
        }
        .fetch_add(1, Ordering::Relaxed);
        self.execution_latency.observe(duration);
    }

    pub(crate) fn snapshot(&self, pools: Vec<PoolGauges>) -> PoolMetrics {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        PoolMetrics {
            pools,
            allocations: vec![
                ("ready", load(&self.from_ready)),
                ("on_demand", load(&self.on_demand)),
            ],
            allocations_rejected: load(&self.rejected),
            sessions_sandbox_died: load(&self.sandbox_died),
            executions: vec![
                ("succeeded", load(&self.succeeded)),
                ("failed", load(&self.failed)),
                ("timed_out", load(&self.timed_out)),
            ],
            allocation_latency: self.allocation_latency.snapshot(),
            execution_latency: self.execution_latency.snapshot(),
        }
    }
}

impl PoolMetrics {
    /// The count of allocations from `source` (`ready` or `on_demand`).
    pub fn allocations_from(&self, source: &str) -> u64 {
        lookup(&self.allocations, source)
    }

    /// The count of executions that ended with `outcome` (`succeeded`, `failed`, `timed_out`).
    pub fn executions_with(&self, outcome: &str) -> u64 {
        lookup(&self.executions, outcome)
    }

    pub fn pool(&self, key: &PoolKey) -> Option<&PoolGauges> {
        self.pools.iter().find(|p| &p.pool == key)
    }
}

fn lookup(list: &[(&'static str, u64)], label: &str) -> u64 {
    list.iter()
        .find(|(l, _)| *l == label)
        .map(|(_, n)| *n)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = AtomicHistogram::default();
        h.observe(Duration::from_micros(100));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(7200));
        let s = h.snapshot();
        assert_eq!(s.count, 3);
        assert_eq!(s.buckets[0], (0.0005, 1));
        let at_5ms = s.buckets.iter().find(|(b, _)| *b == 0.005).map(|x| x.1);
        assert_eq!(at_5ms, Some(2));
        // Beyond the last bound: only in +Inf (count).
        assert_eq!(s.buckets.last().map(|x| x.1), Some(2));
        assert!(s.sum_seconds > 7200.0);
    }
}
