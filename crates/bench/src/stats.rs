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

#[cfg(test)]
mod tests {
    use super::*;

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
