//! The server's one Prometheus registry (the Prometheus project's `prometheus-client`): HTTP
//! request counts and latency recorded as requests finish, and, at each scrape, the pool
//! manager's and the Run Command runner's own numbers read from their snapshots by a collector.
//!
//! The pool manager keeps its counters lock-free in its own crate (its bench and tests read them
//! too, and prometheus-client's histogram takes a write lock per observation and offers no
//! reading); only their exposition is here.

use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::runcommand::Commands;
use crate::sessions::Pools;

/// What `/metrics` answers with.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

const BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

pub struct Metrics {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

impl Metrics {
    /// The registry: HTTP series, and those of the pool manager and the runner once startup
    /// has created them (nothing of theirs until then).
    pub fn new(pools: Pools, commands: Commands) -> Self {
        let mut registry = Registry::default();
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "sandpool_http_requests",
            "HTTP requests by method, route template and status",
            requests.clone(),
        );
        let latency: LatencyFamily =
            Family::new_with_constructor(|| Histogram::new(BUCKETS.iter().copied()));
        registry.register(
            "sandpool_http_request_duration_seconds",
            "HTTP request latency by method and route template",
            latency.clone(),
        );
        registry.register_collector(Box::new(PoolCollector(pools)));
        registry.register_collector(Box::new(RunnerCollector(commands)));
        Self {
            registry,
            requests,
            latency,
        }
    }

    pub fn record(&self, method: &str, route: &str, status: u16, elapsed: Duration) {
        let route = &label_value(route);
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status,
            })
            .inc();
        self.latency
            .get_or_create(&RouteLabels {
                method: method.to_owned(),
                route: route.to_owned(),
            })
            .observe(elapsed.as_secs_f64());
    }

    /// The OpenMetrics text of every series.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics failed");
        }
        out
    }
}

/// prometheus-client 0.24 writes label values as given: escaped here as the exposition format
/// requires (route templates hold none of these; a future label might).
fn label_value(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: u64) -> std::fmt::Result {
    let g = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
}

/// One labelled counter per `(label value, count)`.
fn counters(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, u64)],
) -> std::fmt::Result {
    let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, n) in values {
        ConstCounter::new(*n).encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// A histogram from the pool manager's snapshot (cumulative buckets, `+Inf` = count) in the
/// per-bucket form the encoder takes.
fn histogram(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &sandpool_pools::Histogram,
) -> std::fmt::Result {
    let mut buckets = Vec::with_capacity(h.buckets.len() + 1);
    let mut below = 0;
    for (le, cumulative) in &h.buckets {
        buckets.push((*le, cumulative.saturating_sub(below)));
        below = *cumulative;
    }
    buckets.push((f64::MAX, h.count.saturating_sub(below)));
    let mut metric = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
    metric.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_seconds,
        h.count,
        &buckets,
        None,
    )
}

struct PoolCollector(Pools);

impl std::fmt::Debug for PoolCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PoolCollector")
    }
}

impl Collector for PoolCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(manager) = self.0.manager() else {
            return Ok(());
        };
        let snap = manager.metrics();
        for (name, help, value) in [
            (
                "sandpool_pool_ready_sessions",
                "Started, unbound sandboxes per pool",
                (|p: &sandpool_pools::PoolGauges| p.ready) as fn(&_) -> u64,
            ),
            (
                "sandpool_pool_allocated_sessions",
                "Sessions bound to an identifier per pool",
                |p| p.allocated,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for p in &snap.pools {
                let pool = p.pool.to_string();
                let g = ConstGauge::new(i64::try_from(value(p)).unwrap_or(i64::MAX));
                g.encode(family.encode_family(&[("pool", pool.as_str())])?)?;
            }
        }
        counters(
            &mut encoder,
            "sandpool_session_allocations",
            "Sessions allocated, by source (ready or on_demand)",
            "source",
            &snap.allocations,
        )?;
        let rejected = ConstCounter::new(snap.allocations_rejected);
        rejected.encode(encoder.encode_descriptor(
            "sandpool_session_allocations_rejected",
            "Allocations refused at maxConcurrentSessions",
            None,
            rejected.metric_type(),
        )?)?;
        let died = ConstCounter::new(snap.sessions_sandbox_died);
        died.encode(encoder.encode_descriptor(
            "sandpool_sessions_sandbox_died",
            "Sessions ended because their sandbox died (killed from the host, out of memory, main process exited)",
            None,
            died.metric_type(),
        )?)?;
        counters(
            &mut encoder,
            "sandpool_executions",
            "Finished executions by outcome",
            "outcome",
            &snap.executions,
        )?;
        histogram(
            &mut encoder,
            "sandpool_session_allocation_duration_seconds",
            "Time to make a new session usable",
            &snap.allocation_latency,
        )?;
        histogram(
            &mut encoder,
            "sandpool_execution_duration_seconds",
            "Duration of finished executions",
            &snap.execution_latency,
        )
    }
}

struct RunnerCollector(Commands);

impl std::fmt::Debug for RunnerCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RunnerCollector")
    }
}

impl Collector for RunnerCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let Some(runner) = self.0.runner() else {
            return Ok(());
        };
        let m = runner.metrics();
        gauge(
            &mut encoder,
            "sandpool_runcommand_queued",
            "Run Command commands accepted and waiting for a worker",
            m.queued,
        )?;
        gauge(
            &mut encoder,
            "sandpool_runcommand_running",
            "Run Command commands running now",
            m.running,
        )?;
        counters(
            &mut encoder,
            "sandpool_runcommand_finished",
            "Run Command commands finished, by state",
            "state",
            &[("Succeeded", m.succeeded), ("Failed", m.failed)],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_buckets() {
        let m = Metrics::new(Pools::default(), Commands::default());
        m.record("GET", "/healthz", 200, Duration::from_millis(3));
        m.record("GET", "/healthz", 200, Duration::from_millis(300));
        m.record("GET", "/a\"b", 404, Duration::from_millis(1));
        let text = m.render();
        assert!(
            text.contains(
                "sandpool_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 2"
            ),
            "{text}"
        );
        let healthz = "method=\"GET\",route=\"/healthz\"";
        assert!(
            text.contains(&format!("_bucket{{le=\"0.005\",{healthz}}} 1")),
            "{text}"
        );
        assert!(
            text.contains(&format!("_bucket{{le=\"+Inf\",{healthz}}} 2")),
            "{text}"
        );
        // Label values are escaped; the exposition ends as OpenMetrics says.
        assert!(text.contains("route=\"/a\\\"b\""), "{text}");
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn snapshot_histograms_keep_their_counts() {
        let mut out = String::new();
        let h = sandpool_pools::Histogram {
            buckets: vec![(0.1, 1), (1.0, 3)],
            count: 4,
            sum_seconds: 9.5,
        };
        #[derive(Debug)]
        struct One(sandpool_pools::Histogram);
        impl Collector for One {
            fn encode(&self, mut e: DescriptorEncoder) -> std::fmt::Result {
                histogram(&mut e, "x_seconds", "x", &self.0)
            }
        }
        let mut registry = Registry::default();
        registry.register_collector(Box::new(One(h)));
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        for line in [
            "x_seconds_bucket{le=\"0.1\"} 1",
            "x_seconds_bucket{le=\"1.0\"} 3",
            "x_seconds_bucket{le=\"+Inf\"} 4",
            "x_seconds_count 4",
            "x_seconds_sum 9.5",
        ] {
            assert!(out.lines().any(|l| l == line), "no '{line}' in:\n{out}");
        }
    }
}
