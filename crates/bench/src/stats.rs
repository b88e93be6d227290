//! Order statistics over repeated measurements.

use serde::Serialize;
use std::time::Duration;

/// Summary of one figure's samples, in microseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub samples: usize,
    pub p50_us: f64,
    pub p99_us: f64,
    pub mean_us: f64,
}

impl Summary {
    pub fn of(samples: &[Duration]) -> Summary {
        assert!(!samples.is_empty(), "a figure needs at least one sample");
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let pick = |q: f64| us[((us.len() - 1) as f64 * q).round() as usize];
        Summary {
            samples: us.len(),
            p50_us: pick(0.50),
            p99_us: pick(0.99),
            mean_us: us.iter().sum::<f64>() / us.len() as f64,
        }
    }
}

/// Sizes of the rounds `iterations` samples are taken in: each figure gets a run of up to ten
/// consecutive samples per round, the figures taking turns. Turns spread load that comes and
/// goes on a shared machine over every figure alike; runs keep one figure from paying for the
/// aftermath of another's (a container teardown right before each sample).
pub fn rounds(iterations: usize) -> Vec<usize> {
    const RUN: usize = 10;
    let mut left = iterations;
    let mut out = Vec::new();
    while left > 0 {
        out.push(left.min(RUN));
        left -= left.min(RUN);
    }
    out
}

/// Samples of several figures, taken in turns (see [`rounds`]).
pub struct Interleaved {
    samples: Vec<Vec<Duration>>,
}

impl Interleaved {
    pub fn new(figures: usize) -> Self {
        Interleaved {
            samples: vec![Vec::new(); figures],
        }
    }

    pub fn push(&mut self, figure: usize, d: Duration) {
        self.samples[figure].push(d);
    }

    pub fn median(&self, figure: usize) -> Duration {
        Duration::from_secs_f64(Summary::of(&self.samples[figure]).p50_us / 1e6)
    }

    pub fn summary(&self, figure: usize) -> crate::report::Value {
        crate::report::Value::Latency(Summary::of(&self.samples[figure]))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounds_add_up_to_the_iterations() {
        assert_eq!(rounds(25), vec![10, 10, 5]);
        assert_eq!(rounds(3), vec![3]);
        assert!(rounds(0).is_empty());
    }

    #[test]
    fn percentiles_of_a_known_series() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = Summary::of(&samples);
        assert_eq!(s.samples, 100);
        assert_eq!(s.p50_us, 51.0);
        assert_eq!(s.p99_us, 99.0);
        assert!((s.mean_us - 50.5).abs() < 1e-9);
    }
}
