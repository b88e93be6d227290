//! The bench's output: one row per figure, sandpool beside each peer measured in the same run,
//! as ratios of medians, with the target each ratio is held to.

use crate::stats::Summary;
use serde::Serialize;
use serde_json::json;

/// A measured value: a latency distribution, a single quantity (bytes; lower is better), or a
/// rate (ops/s, MiB/s; higher is better).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Value {
    Latency(Summary),
    Quantity { value: f64, unit: &'static str },
    Rate { rate: f64, unit: &'static str },
}

impl Value {
    /// The number ratios are taken of: the median for latencies.
    pub fn headline(&self) -> f64 {
        match self {
            Value::Latency(s) => s.p50_us,
            Value::Quantity { value, .. } => *value,
            Value::Rate { rate, .. } => *rate,
        }
    }

    fn higher_is_better(&self) -> bool {
        matches!(self, Value::Rate { .. })
    }

    fn render(&self) -> String {
        match self {
            Value::Latency(s) => format!("p50 {}, p99 {}", us(s.p50_us), us(s.p99_us)),
            Value::Quantity { value, unit } | Value::Rate { rate: value, unit } => {
                format!("{value:.1} {unit}")
            }
        }
    }
}

fn us(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.2} ms", v / 1000.0)
    } else {
        format!("{v:.0} µs")
    }
}

/// A bound on `sandpool / peer` (or on the quantity itself when `peer` is `None`). The bound is
/// an upper one for latencies and quantities, a lower one for rates (higher is better), so
/// `at_most` reads "at least" for a [`Value::Rate`] row.
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
        Some(if self.sandpool.higher_is_better() {
            measured >= t.at_most
        } else {
            measured <= t.at_most
        })
    }

    fn target_text(&self) -> String {
        let Some(t) = &self.target else {
            return String::new();
        };
        let op = if self.sandpool.higher_is_better() {
            "≥"
        } else {
            "≤"
        };
        match t.peer {
            Some(p) => format!("{op} {}× {p}", t.at_most),
            None => format!("{op} {}", t.at_most),
        }
    }

    fn met_text(&self) -> &'static str {
        match self.meets_target() {
            Some(true) => "met",
            Some(false) => "**missed**",
            None => "",
        }
    }
}

#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
    /// What the run could not clean up from the host (`None`: not checked by this scenario).
    pub leftovers: Option<Vec<String>>,
}

impl Report {
    /// The table as Markdown (readable in a terminal, pasted as is into docs/benchmarks.md).
    pub fn print(&self) {
        println!("| figure | sandpool | peers (ratio sandpool / peer) | target | |");
        println!("|---|---|---|---|---|");
        for row in &self.rows {
            let peers: Vec<String> = row
                .peers
                .iter()
                .map(|(name, v)| {
                    format!(
                        "{name} {} ({:.2}×)",
                        v.render(),
                        row.ratio_to(name).unwrap_or(f64::NAN)
                    )
                })
                .collect();
            println!(
                "| {} | {} | {} | {} | {} |",
                row.figure,
                row.sandpool.render(),
                if peers.is_empty() {
                    "—".to_string()
                } else {
                    peers.join("; ")
                },
                row.target_text(),
                row.met_text()
            );
        }
    }

    /// Every row with its peers' ratios and whether its target was met.
    pub fn to_json(&self) -> serde_json::Value {
        let rows: Vec<serde_json::Value> = self
            .rows
            .iter()
            .map(|row| {
                let peers: Vec<serde_json::Value> = row
                    .peers
                    .iter()
                    .map(|(name, v)| json!({"name": name, "value": v, "ratio": row.ratio_to(name)}))
                    .collect();
                json!({
                    "figure": row.figure,
                    "sandpool": row.sandpool,
                    "headline": row.sandpool.headline(),
                    "peers": peers,
                    "target": row.target,
                    "target_text": row.target_text(),
                    "met": row.meets_target(),
                })
            })
            .collect();
        json!({"rows": rows, "leftovers": self.leftovers})
    }

    pub fn write_json(&self, path: &std::path::Path) -> anyhow::Result<()> {
        std::fs::write(path, serde_json::to_vec_pretty(&self.to_json())?)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rate(rate: f64) -> Value {
        Value::Rate {
            rate,
            unit: "exec/s",
        }
    }

    #[test]
    fn rates_are_held_to_a_lower_bound_and_latencies_to_an_upper_one() {
        let mut row = Row {
            figure: "throughput".into(),
            sandpool: rate(60.0),
            peers: vec![("fork+exec".into(), rate(100.0))],
            target: Some(Target {
                peer: Some("fork+exec"),
                at_most: 0.5,
            }),
        };
        assert_eq!(row.meets_target(), Some(true));
        row.sandpool = rate(40.0);
        assert_eq!(row.meets_target(), Some(false));
        row.sandpool = Value::Quantity {
            value: 40.0,
            unit: "KiB",
        };
        row.peers = vec![(
            "fork+exec".into(),
            Value::Quantity {
                value: 100.0,
                unit: "KiB",
            },
        )];
        assert_eq!(row.meets_target(), Some(true));
        let json = Report {
            rows: vec![row],
            leftovers: Some(Vec::new()),
        }
        .to_json();
        assert_eq!(json["rows"][0]["met"], true);
        assert_eq!(json["rows"][0]["peers"][0]["ratio"], 0.4);
    }
}
