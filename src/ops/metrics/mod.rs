//! Prometheus / OpenMetrics metrics: lag, retention time left and health per (pipeline,
//! upstream) and consumer lag per (pipeline, consumer) from a [`Status`], run counters and durations from the runs `watch` makes. Encoded
//! by the `prometheus-client` crate (the OpenMetrics text format, escaping and `_total`
//! suffixes are its job); served over HTTP by [`server`].

pub mod server;

use std::sync::atomic::AtomicU64;

use color_eyre::eyre::{Result, WrapErr};
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::engine::RunReport;
use crate::ops::health::HealthState;
use crate::ops::status::Status;

/// Every verdict, so each pipeline exports one series per state (1 for its current one).
const STATES: [HealthState; 6] = [
    HealthState::Ok,
    HealthState::Paused,
    HealthState::Lagging,
    HealthState::Stalled,
    HealthState::AtRisk,
    HealthState::Failing,
];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct UpstreamLabels {
    pipeline: String,
    upstream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    pipeline: String,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PipelineLabels {
    pipeline: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    pipeline: String,
    state: String,
}

type FloatGauge = Gauge<f64, AtomicU64>;

fn run_duration_histogram() -> Histogram {
    // 0.1 s to ~7 min: a small incremental run up to a heavy backfill.
    Histogram::new(exponential_buckets(0.1, 2.0, 13))
}

/// The metrics of one process (`watch` keeps one for its lifetime).
pub struct Metrics {
    registry: Registry,
    lag_versions: Family<UpstreamLabels, Gauge>,
    lag_seconds: Family<UpstreamLabels, FloatGauge>,
    retention_left: Family<UpstreamLabels, FloatGauge>,
    health: Family<StateLabels, Gauge>,
    consumer_lag_seconds: Family<ConsumerLabels, FloatGauge>,
    consumer_runs_waiting: Family<ConsumerLabels, Gauge>,
    consumer_keys_waiting: Family<ConsumerLabels, Gauge>,
    runs: Family<PipelineLabels, Counter>,
    failures: Family<PipelineLabels, Counter>,
    duration: Family<PipelineLabels, Histogram, fn() -> Histogram>,
    keys_written: Family<PipelineLabels, Counter>,
    change_rows: Family<PipelineLabels, Counter>,
    last_success: Family<PipelineLabels, FloatGauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut m = Metrics {
            lag_versions: Family::default(),
            lag_seconds: Family::default(),
            retention_left: Family::default(),
            health: Family::default(),
            consumer_lag_seconds: Family::default(),
            consumer_runs_waiting: Family::default(),
            consumer_keys_waiting: Family::default(),
            runs: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(run_duration_histogram as fn() -> Histogram),
            keys_written: Family::default(),
            change_rows: Family::default(),
            last_success: Family::default(),
            registry: Registry::default(),
        };
        let registry = &mut m.registry;
        registry.register("deltalink_lag_versions", "Upstream versions the pipeline has not read", m.lag_versions.clone());
        registry.register(
            "deltalink_lag_seconds",
            "Age of the oldest upstream commit the pipeline has not read (0 when current)",
            m.lag_seconds.clone(),
        );
        registry.register(
            "deltalink_retention_seconds_left",
            "Time before the oldest unread commit may become unreadable (log or deleted-file retention, VACUUM); absent when nothing is unread",
            m.retention_left.clone(),
        );
        registry.register("deltalink_health", "1 for the pipeline's current health state, 0 for the others", m.health.clone());
        registry.register(
            "deltalink_consumer_lag_seconds",
            "Age of the oldest link-table change a downstream consumer has not acked (0 when caught up)",
            m.consumer_lag_seconds.clone(),
        );
        registry.register("deltalink_consumer_runs_waiting", "Runs with keys a downstream consumer has not acked", m.consumer_runs_waiting.clone());
        registry.register("deltalink_consumer_keys_waiting", "Link-table keys a downstream consumer has not acked", m.consumer_keys_waiting.clone());
        registry.register("deltalink_runs", "Runs finished (any outcome) by this process", m.runs.clone());
        registry.register("deltalink_run_failures", "Runs that failed in this process", m.failures.clone());
        registry.register("deltalink_run_duration_seconds", "Duration of finished runs", m.duration.clone());
        registry.register("deltalink_keys_written", "Distinct keys written into link tables", m.keys_written.clone());
        registry.register("deltalink_change_rows_read", "Upstream change rows read", m.change_rows.clone());
        registry.register(
            "deltalink_last_success_timestamp_seconds",
            "When the pipeline's last successful run in this process finished (Unix time)",
            m.last_success.clone(),
        );
        m
    }

    /// Set the gauges from a status: lag, retention time left and health, per pipeline.
    pub fn observe_status(&self, st: &Status) {
        for p in &st.pipelines {
            for u in &p.upstreams {
                let labels = UpstreamLabels { pipeline: p.name.clone(), upstream: u.upstream.clone() };
                set_or_remove(&self.lag_versions, &labels, u.lag_versions.map(|v| v as i64), |g, v| {
                    g.set(v);
                });
                set_or_remove(&self.lag_seconds, &labels, u.lag_seconds, |g, v| {
                    g.set(v);
                });
                set_or_remove(&self.retention_left, &labels, u.retention_seconds_left, |g, v| {
                    g.set(v);
                });
            }
            for c in &p.consumers {
                let labels = ConsumerLabels { pipeline: p.name.clone(), consumer: c.name.clone() };
                self.consumer_lag_seconds.get_or_create(&labels).set(c.lag_seconds);
                self.consumer_runs_waiting.get_or_create(&labels).set(c.runs_waiting as i64);
                self.consumer_keys_waiting.get_or_create(&labels).set(c.keys_waiting as i64);
            }
            for state in STATES {
                let labels = StateLabels { pipeline: p.name.clone(), state: state.word().to_string() };
                self.health.get_or_create(&labels).set(i64::from(p.health.state == state));
            }
        }
    }

    /// Count a finished run of `pipeline` (at `now_seconds`, Unix time).
    pub fn observe_run(&self, pipeline: &str, result: &Result<RunReport>, now_seconds: f64) {
        let labels = PipelineLabels { pipeline: pipeline.to_string() };
        self.runs.get_or_create(&labels).inc();
        match result {
            Ok(r) => {
                self.duration.get_or_create(&labels).observe(r.duration.as_secs_f64());
                self.keys_written.get_or_create(&labels).inc_by(r.distinct_keys);
                self.change_rows.get_or_create(&labels).inc_by(r.change_rows);
                self.last_success.get_or_create(&labels).set(now_seconds);
            }
            Err(_) => {
                self.failures.get_or_create(&labels).inc();
            }
        }
    }

    /// The OpenMetrics text exposition (also what Prometheus's text parser reads).
    pub fn encode(&self) -> Result<String> {
        let mut text = String::new();
        encode(&mut text, &self.registry).wrap_err("encoding the metrics")?;
        Ok(text)
    }
}

/// Set the series of `labels` to `value`, or drop it when there is none: an absent series says
/// "does not apply" (nothing unread), where 0 would say "no time left".
fn set_or_remove<M, T>(family: &Family<UpstreamLabels, M>, labels: &UpstreamLabels, value: Option<T>, set: impl Fn(&M, T)) {
    match value {
        Some(v) => set(&family.get_or_create(labels), v),
        None => {
            family.remove(labels);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::Outcome;

    /// The run series as a scrape shows them after one run that wrote and one that failed.
    #[test]
    fn runs_count_into_counters_a_histogram_and_the_last_success() {
        let m = Metrics::new();
        let written = RunReport {
            run_id: Some(3),
            change_rows: 120,
            distinct_keys: 40,
            duration: std::time::Duration::from_millis(1_500),
            ..RunReport::new("p", Outcome::Written)
        };
        m.observe_run("p", &Ok(written), 1_700_000_000.0);
        m.observe_run("p", &Err(color_eyre::eyre::eyre!("boom")), 1_700_000_060.0);
        let text = m.encode().expect("encode");
        for line in [
            "deltalink_runs_total{pipeline=\"p\"} 2",
            "deltalink_run_failures_total{pipeline=\"p\"} 1",
            "deltalink_keys_written_total{pipeline=\"p\"} 40",
            "deltalink_change_rows_read_total{pipeline=\"p\"} 120",
            "deltalink_run_duration_seconds_count{pipeline=\"p\"} 1",
            "deltalink_run_duration_seconds_sum{pipeline=\"p\"} 1.5",
            "deltalink_last_success_timestamp_seconds{pipeline=\"p\"} 1700000000",
        ] {
            assert!(text.lines().any(|l| l.starts_with(line)), "missing `{line}` in:\n{text}");
        }
    }
}
