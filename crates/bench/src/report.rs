//! The bench's output: one row per figure, sandpool beside each peer measured in the same run,
//! as ratios of medians, with the target each ratio is held to.

use crate::stats::Summary;
use serde::Serialize;

/// A measured value: a latency distribution, or a single quantity (bytes, ops/s).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Value {
    Latency(Summary),
    Quantity { value: f64, unit: &'static str },
}

impl Value {
    /// The number ratios are taken of: the median for latencies.
    fn headline(&self) -> f64 {
        match self {
            Value::Latency(s) => s.p50_us,
            Value::Quantity { value, .. } => *value,
        }
    }

    fn render(&self) -> String {
        match self {
            Value::Latency(s) => format!("p50 {} p99 {}", us(s.p50_us), us(s.p99_us)),
            Value::Quantity { value, unit } => format!("{value:.1} {unit}"),
        }
    }
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2}ms", v / 1000.0)
    } else {
        format!("{v:.0}µs")
    }
}

/// A bound on `sandpool / peer` (or on the quantity itself when `peer` is `None`).
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub peer: Option<&'static str>,
    pub at_most: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub figure: String,
    pub sandpool: Value,
    pub peers: Vec<(String, Value)>,
    pub target: Option<Target>,
}

impl Row {
    pub fn ratio_to(&self, peer: &str) -> Option<f64> {
        let (_, v) = self.peers.iter().find(|(name, _)| name == peer)?;
        Some(self.sandpool.headline() / v.headline())
    }

    /// Whether the target holds; `None` when the row has no target or lacks its peer.
    pub fn meets_target(&self) -> Option<bool> {
        let t = self.target.as_ref()?;
        let measured = match t.peer {
            Some(peer) => self.ratio_to(peer)?,
            None => self.sandpool.headline(),
        };
        Some(measured <= t.at_most)
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn print(&self) {
        println!(
            "{:<44} {:<28} {:<40} target",
            "figure", "sandpool", "peers (ratio sandpool/peer)"
        );
        for row in &self.rows {
            let peers: Vec<String> = row
                .peers
                .iter()
                .map(|(name, v)| {
                    format!(
                        "{name}: {} ({:.2}x)",
                        v.render(),
                        row.ratio_to(name).unwrap_or(f64::NAN)
                    )
                })
                .collect();
            let target = match (&row.target, row.meets_target()) {
                (Some(t), Some(ok)) => format!(
                    "≤{}{} {}",
                    t.at_most,
                    t.peer.map(|p| format!("x {p}")).unwrap_or_default(),
                    if ok { "met" } else { "MISSED" }
                ),
                _ => String::new(),
            };
            println!(
                "{:<44} {:<28} {:<40} {}",
                row.figure,
                row.sandpool.render(),
                peers.join("; "),
                target
            );
        }
    }

    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}
