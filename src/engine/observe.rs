//! What a long-lived process (`watch`, the console) saw over time: the lag each poll found and
//! how its runs ended. One status is a moment; health also judges a trend (lag growing poll
//! after poll while still under `warn_lag`) and a history (the last runs failed), and only a
//! process that keeps watching can see those. A one-shot `status` has none and judges the moment.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Lag observations kept per (pipeline, upstream): enough for the longest trend health asks.
pub const LAG_OBSERVATIONS: usize = crate::config::MAX_LAG_GROWTH_POLLS + 1;

/// A pipeline's runs as this process saw them end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RunRecord {
    /// Runs that failed in a row since the last one that succeeded (0: the last one succeeded).
    pub consecutive_failures: u32,
    /// The last failure's error, first line (kept after a success, for the detail pane).
    pub last_error: Option<String>,
}

#[derive(Debug, Default)]
pub struct Observations {
    lag: Mutex<HashMap<(String, String), VecDeque<u64>>>,
    runs: Mutex<HashMap<String, RunRecord>>,
}

impl Observations {
    /// One poll's lag of `pipeline` on `upstream`, in versions.
    pub fn record_lag(&self, pipeline: &str, upstream: &str, lag_versions: u64) {
        let mut lag = self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let seen = lag.entry((pipeline.to_string(), upstream.to_string())).or_default();
        if seen.len() == LAG_OBSERVATIONS {
            seen.pop_front();
        }
        seen.push_back(lag_versions);
    }

    /// The lags polls found, oldest first.
    pub fn lag_history(&self, pipeline: &str, upstream: &str) -> Vec<u64> {
        let lag = self.lag.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        lag.get(&(pipeline.to_string(), upstream.to_string())).map_or_else(Vec::new, |s| s.iter().copied().collect())
    }

    /// How a run of `pipeline` ended: `Err` with its error, or `Ok`.
    pub fn record_run(&self, pipeline: &str, result: Result<(), String>) {
        let mut runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let record = runs.entry(pipeline.to_string()).or_default();
        match result {
            Ok(()) => record.consecutive_failures = 0,
            Err(e) => {
                record.consecutive_failures += 1;
                record.last_error = Some(e.lines().next().unwrap_or_default().to_string());
            }
        }
    }

    /// How runs of `pipeline` ended so far in this process.
    pub fn runs(&self, pipeline: &str) -> RunRecord {
        let runs = self.runs.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        runs.get(pipeline).cloned().unwrap_or_default()
    }
}

/// Versions `latest` is ahead of `processed` (every version, from 0, when never read).
pub fn lag_versions(latest: u64, processed: Option<i64>) -> u64 {
    match processed {
        Some(p) => (latest as i64 - p).max(0) as u64,
        None => latest + 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lag_keeps_the_newest_observations_and_runs_count_failures_in_a_row() {
        let o = Observations::default();
        for lag in 0..(LAG_OBSERVATIONS as u64 + 3) {
            o.record_lag("p", "u", lag);
        }
        let seen = o.lag_history("p", "u");
        assert_eq!((seen.len(), seen[0], *seen.last().expect("some")), (LAG_OBSERVATIONS, 3, LAG_OBSERVATIONS as u64 + 2));
        assert!(o.lag_history("p", "other").is_empty());
        o.record_run("p", Err("boom\nmore".into()));
        o.record_run("p", Err("bang".into()));
        assert_eq!(o.runs("p"), RunRecord { consecutive_failures: 2, last_error: Some("bang".into()) });
        o.record_run("p", Ok(()));
        assert_eq!(o.runs("p").consecutive_failures, 0);
        assert_eq!(o.runs("q"), RunRecord::default());
    }
}
