//! Summaries of timed samples: min / median / p99, and the ratio of two medians.

use serde::Serialize;

/// Min, median and p99 of one side (server or floor) of a row, in the row's unit.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Summary {
    pub min: f64,
    pub median: f64,
    pub p99: f64,
    pub samples: usize,
}

impl Summary {
    /// `None` for no samples. NaNs sort last and never panic.
    pub fn of(samples: &[f64]) -> Option<Summary> {
        if samples.is_empty() {
            return None;
        }
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
        Some(Summary {
            min: sorted[0],
            median: at(0.5),
            p99: at(0.99),
            samples: sorted.len(),
        })
    }
}

/// Server median ÷ floor median (> 1 is slower); `None` when the floor is zero.
pub fn ratio(server: &Summary, floor: &Summary) -> Option<f64> {
    (floor.median > 0.0).then(|| server.median / floor.median)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_p99_of_a_small_set() {
        let summary = Summary::of(&[3.0, 1.0, 2.0]).expect("samples");
        assert_eq!((summary.min, summary.median, summary.p99), (1.0, 2.0, 3.0));
        assert!(Summary::of(&[]).is_none());
    }
}
