//! Health: one verdict per (pipeline, upstream) and the worst of them per pipeline, each with
//! its reason in words. Pure — `status` gathers the facts, and every front end (`status
//! --json`, `status --check`, the console) shows these same verdicts.

use std::time::Duration;

use serde::Serialize;

use crate::config::LagSlo;
use crate::engine::RunRecord;
use crate::util::time::human_seconds;

/// A verdict, from good to bad (the order `worst` picks by).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthState {
    /// Current, or behind by less than `warn_lag`.
    Ok,
    /// The operator paused it (`deltalink pause`, or `paused = true` in the config): lag is not
    /// judged, retention and failures still are.
    Paused,
    /// The oldest unread commit is older than `warn_lag`, or lag grew at each of the last
    /// `lag_growth_polls` polls (a long-running process's trend).
    Lagging,
    /// The oldest unread commit is older than `max_lag`: the pipeline is not keeping up.
    Stalled,
    /// Unread commits are about to fall out of the upstream's retention (or a VACUUM may
    /// already have removed their files): keys would be lost.
    AtRisk,
    /// The upstream cannot be read, a run died after its intent and nothing recovers it, or
    /// the last `failing_after_runs` runs of this process failed.
    Failing,
}

impl HealthState {
    /// The word shown everywhere (also in `NO_COLOR` terminals and JSON).
    pub fn word(self) -> &'static str {
        match self {
            HealthState::Ok => "ok",
            HealthState::Paused => "paused",
            HealthState::Lagging => "lagging",
            HealthState::Stalled => "stalled",
            HealthState::AtRisk => "at_risk",
            HealthState::Failing => "failing",
        }
    }

    pub fn severity(self) -> Severity {
        match self {
            // The operator's own choice: listed by `--check`, but no alarm.
            HealthState::Ok | HealthState::Paused => Severity::Ok,
            HealthState::Lagging => Severity::Warning,
            HealthState::Stalled | HealthState::AtRisk | HealthState::Failing => Severity::Critical,
        }
    }
}

/// Monitoring-plugin severities; `status --check` exits with the worst one's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Ok = 0,
    Warning = 1,
    Critical = 2,
    /// The status itself could not be read (tracker unreachable, bad config).
    Unknown = 3,
}

impl Severity {
    pub fn label(self) -> &'static str {
        match self {
            Severity::Ok => "OK",
            Severity::Warning => "WARNING",
            Severity::Critical => "CRITICAL",
            Severity::Unknown => "UNKNOWN",
        }
    }

    pub fn exit_code(self) -> i32 {
        self as i32
    }
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Health {
    pub state: HealthState,
    pub reason: String,
}

impl Health {
    fn new(state: HealthState, reason: impl Into<String>) -> Health {
        Health { state, reason: reason.into() }
    }
}

impl Default for Health {
    fn default() -> Health {
        Health::new(HealthState::Ok, "current")
    }
}

/// What status knows about one (pipeline, upstream).
#[derive(Debug, Clone, Default)]
pub struct UpstreamFacts<'a> {
    pub pipeline: &'a str,
    pub upstream: &'a str,
    /// The upstream could not be read.
    pub error: Option<&'a str>,
    pub processed_version: Option<i64>,
    pub lag_versions: Option<u64>,
    /// Age of the oldest commit the pipeline has not read (0 when current).
    pub lag_seconds: Option<f64>,
    /// Time before the oldest unread commit may become unreadable (negative: it may already be).
    pub retention_seconds_left: Option<f64>,
    /// What limits it (the retention properties, or the VACUUM that ran).
    pub retention_note: Option<&'a str>,
    /// A run's intent is in the tracker without its "done".
    pub pending_run_id: Option<i64>,
    /// A live lease holds the pipeline (a run in progress, not a dead one).
    pub run_in_progress: bool,
    /// The config pauses the pipeline.
    pub paused: bool,
    /// An operator paused it (`deltalink pause`): who, when and why, in words.
    pub operator_pause: Option<&'a str>,
    /// Lag in versions at each poll of this process, oldest first (empty for a one-shot status).
    pub lag_history: &'a [u64],
    /// Polls in a row at which lag must grow to be `lagging` under `warn_lag` (0: off).
    pub growth_polls: usize,
}

/// The last `growth_polls` polls' lags, oldest first, when each grew over the one before.
fn growing(history: &[u64], growth_polls: usize) -> Option<&[u64]> {
    if growth_polls == 0 || history.len() <= growth_polls {
        return None;
    }
    let last = &history[history.len() - growth_polls - 1..];
    last.windows(2).all(|w| w[1] > w[0]).then_some(last)
}

/// The verdict for one (pipeline, upstream), checked from worst to best.
pub fn assess_upstream(slo: &LagSlo, retention_margin: Duration, f: &UpstreamFacts<'_>) -> Health {
    if let Some(e) = f.error {
        let first = e.lines().next().unwrap_or_default();
        return Health::new(HealthState::Failing, format!("cannot read upstream `{}`: {first}", f.upstream));
    }
    if let (Some(run), false) = (f.pending_run_id, f.run_in_progress) {
        return Health::new(
            HealthState::Failing,
            format!(
                "run {run} stopped after its intent and no process holds the pipeline; run `deltalink run {}` (it recovers run {run} first) and check why it stopped",
                f.pipeline
            ),
        );
    }
    if let Some(left) = f.retention_seconds_left.filter(|l| *l < retention_margin.as_secs_f64()) {
        return Health::new(HealthState::AtRisk, at_risk_reason(f, left, retention_margin));
    }
    if let Some(pause) = f.operator_pause {
        return Health::new(
            HealthState::Paused,
            format!("{pause}; watch and run skip it and its lag is not judged; `deltalink resume {}` resumes it", f.pipeline),
        );
    }
    if f.paused {
        return Health::new(
            HealthState::Paused,
            format!("paused in the config (pipelines.{}.paused = true): watch and run --all skip it and its lag is not judged; remove the line to resume", f.pipeline),
        );
    }
    let trend = growing(f.lag_history, f.growth_polls);
    match (f.lag_seconds, f.lag_versions) {
        (Some(lag), _) if lag > slo.max.as_secs_f64() => Health::new(
            HealthState::Stalled,
            format!(
                "`{}`: oldest unread commit is {} old, above max_lag {}; is the scheduler or `watch` running?",
                f.upstream,
                human_seconds(lag),
                human_seconds(slo.max.as_secs_f64())
            ),
        ),
        (Some(lag), _) if lag > slo.warn.as_secs_f64() => Health::new(
            HealthState::Lagging,
            format!(
                "`{}`: oldest unread commit is {} old, above warn_lag {}",
                f.upstream,
                human_seconds(lag),
                human_seconds(slo.warn.as_secs_f64())
            ),
        ),
        (_, Some(0)) => Health::default(),
        _ if trend.is_some() => Health::new(
            HealthState::Lagging,
            format!(
                "`{}`: lag grew at each of the last {} polls ({} versions), still under warn_lag {}; is the pipeline keeping up with its upstream?",
                f.upstream,
                f.growth_polls,
                trend.unwrap_or_default().iter().map(u64::to_string).collect::<Vec<_>>().join(" → "),
                human_seconds(slo.warn.as_secs_f64())
            ),
        ),
        (lag, _) if f.processed_version.is_none() => Health::new(
            HealthState::Ok,
            format!("`{}`: not run yet{}", f.upstream, lag.map_or(String::new(), |l| format!(" (oldest commit {} old)", human_seconds(l)))),
        ),
        (lag, versions) => Health::new(
            HealthState::Ok,
            format!(
                "`{}`: {} versions behind{}, within warn_lag",
                f.upstream,
                versions.map_or("?".to_string(), |v| v.to_string()),
                lag.map_or(String::new(), |l| format!(" ({} old)", human_seconds(l)))
            ),
        ),
    }
}

fn at_risk_reason(f: &UpstreamFacts<'_>, left: f64, margin: Duration) -> String {
    let when = if left <= 0.0 {
        "may already be unreadable".to_string()
    } else {
        format!("can become unreadable in {} (margin {})", human_seconds(left), human_seconds(margin.as_secs_f64()))
    };
    let note = f.retention_note.map_or(String::new(), |n| format!(" ({n})"));
    format!(
        "`{}`: unread commits from version {} {when}{note}; run `deltalink run {}` now, or back the upstream up; a reset past them skips their keys",
        f.upstream,
        f.processed_version.map_or(0, |p| p + 1),
        f.pipeline
    )
}

/// What status knows about one downstream consumer of a pipeline.
#[derive(Debug, Clone, Default)]
pub struct ConsumerFacts<'a> {
    pub pipeline: &'a str,
    pub consumer: &'a str,
    /// The link table could not be read.
    pub error: Option<&'a str>,
    pub acked_run_id: i64,
    pub keys_waiting: u64,
    pub runs_waiting: u64,
    /// Age of the oldest change waiting for it (0 when nothing waits).
    pub lag_seconds: f64,
}

/// The verdict for one consumer against its own lag objectives.
pub fn assess_consumer(slo: &LagSlo, f: &ConsumerFacts<'_>) -> Health {
    let who = format!("consumer `{}`", f.consumer);
    if let Some(e) = f.error {
        return Health::new(HealthState::Failing, format!("{who}: cannot read the link table: {}", e.lines().next().unwrap_or_default()));
    }
    let waiting = format!("{} keys of {} runs after run {} waiting", f.keys_waiting, f.runs_waiting, f.acked_run_id);
    let over = |limit: Duration, name: &str| {
        format!("{who}: oldest unconsumed change is {} old, above {name} {} ({waiting}); is the job running and acking?", human_seconds(f.lag_seconds), human_seconds(limit.as_secs_f64()))
    };
    if f.lag_seconds > slo.max.as_secs_f64() {
        Health::new(HealthState::Stalled, over(slo.max, "max_lag"))
    } else if f.lag_seconds > slo.warn.as_secs_f64() {
        Health::new(HealthState::Lagging, over(slo.warn, "warn_lag"))
    } else if f.keys_waiting == 0 {
        Health::new(HealthState::Ok, format!("{who}: caught up through run {}", f.acked_run_id))
    } else {
        Health::new(HealthState::Ok, format!("{who}: {waiting}, within warn_lag"))
    }
}

/// `failing` when the last `failing_after` runs of `pipeline` that this process saw failed.
pub fn assess_runs(pipeline: &str, runs: &RunRecord, failing_after: u32) -> Option<Health> {
    let n = runs.consecutive_failures;
    (n >= failing_after.max(1)).then(|| {
        let what = if n == 1 { "the last run failed".to_string() } else { format!("the last {n} runs failed") };
        Health::new(
            HealthState::Failing,
            format!(
                "{what}: {}; the next poll retries; `deltalink run {pipeline}` shows the whole error",
                runs.last_error.as_deref().unwrap_or("(no message)")
            ),
        )
    })
}

/// The worst of several verdicts (the first of equals): a pipeline's health.
pub fn worst(healths: impl IntoIterator<Item = Health>) -> Health {
    healths.into_iter().fold(None, |acc: Option<Health>, h| match acc {
        Some(a) if a.state >= h.state => Some(a),
        _ => Some(h),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLO: LagSlo = LagSlo { warn: Duration::from_secs(3_600), max: Duration::from_secs(6 * 3_600) };
    const MARGIN: Duration = Duration::from_secs(86_400);

    fn facts(lag_seconds: f64, left: Option<f64>) -> UpstreamFacts<'static> {
        UpstreamFacts {
            pipeline: "p",
            upstream: "u",
            processed_version: Some(3),
            lag_versions: Some(if lag_seconds > 0.0 { 2 } else { 0 }),
            lag_seconds: Some(lag_seconds),
            retention_seconds_left: left,
            ..Default::default()
        }
    }

    #[test]
    fn each_state_is_reached_at_its_threshold_and_the_worst_wins() {
        let at = |f: &UpstreamFacts<'_>| assess_upstream(&SLO, MARGIN, f).state;
        assert_eq!(at(&facts(0.0, None)), HealthState::Ok);
        assert_eq!(at(&facts(3_600.0, None)), HealthState::Ok, "at warn_lag exactly: not yet");
        assert_eq!(at(&facts(3_601.0, None)), HealthState::Lagging);
        assert_eq!(at(&facts(6.0 * 3_600.0 + 1.0, None)), HealthState::Stalled);
        assert_eq!(at(&facts(60.0, Some(86_399.0))), HealthState::AtRisk, "inside the margin");
        assert_eq!(at(&facts(60.0, Some(86_401.0))), HealthState::Ok);
        let dead = UpstreamFacts { pending_run_id: Some(7), ..facts(60.0, None) };
        assert_eq!(at(&dead), HealthState::Failing);
        let live = UpstreamFacts { run_in_progress: true, ..dead.clone() };
        assert_eq!(at(&live), HealthState::Ok, "a pending intent under a live lease is a run in progress");
        let paused = UpstreamFacts { paused: true, ..facts(7.0 * 3_600.0, None) };
        assert_eq!(at(&paused), HealthState::Paused, "a paused pipeline's lag is not judged");
        let paused_at_risk = UpstreamFacts { paused: true, ..facts(60.0, Some(10.0)) };
        assert_eq!(at(&paused_at_risk), HealthState::AtRisk, "but keys about to be lost still are");
        let held = UpstreamFacts { operator_pause: Some("paused by alice: upstream rebuilt"), ..facts(7.0 * 3_600.0, None) };
        let h = assess_upstream(&SLO, MARGIN, &held);
        assert_eq!(h.state, HealthState::Paused);
        assert!(h.reason.starts_with("paused by alice: upstream rebuilt; "), "{}", h.reason);
        assert_eq!(HealthState::Paused.severity(), Severity::Ok);
        let broken = UpstreamFacts { error: Some("permission denied\nmore"), ..facts(0.0, None) };
        let h = assess_upstream(&SLO, MARGIN, &broken);
        assert_eq!((h.state, h.reason.as_str()), (HealthState::Failing, "cannot read upstream `u`: permission denied"));
        let w = worst([
            assess_upstream(&SLO, MARGIN, &facts(3_601.0, None)),
            assess_upstream(&SLO, MARGIN, &facts(60.0, Some(-5.0))),
            assess_upstream(&SLO, MARGIN, &facts(7.0 * 3_600.0, None)),
        ]);
        assert_eq!(w.state, HealthState::AtRisk);
        assert!(w.reason.contains("from version 4 may already be unreadable"), "{}", w.reason);
        assert_eq!(worst([]), Health::default());
    }

    #[test]
    fn lag_growing_poll_after_poll_is_lagging_before_warn_lag_and_failed_runs_are_failing() {
        let at = |history: &[u64]| {
            let f = UpstreamFacts { lag_history: history, growth_polls: 3, ..facts(60.0, None) };
            assess_upstream(&SLO, MARGIN, &f)
        };
        assert_eq!(at(&[]).state, HealthState::Ok, "a one-shot status has no trend");
        assert_eq!(at(&[1, 2, 3]).state, HealthState::Ok, "three polls are two growths, not three");
        let grew = at(&[9, 1, 2, 3, 4]);
        assert_eq!(grew.state, HealthState::Lagging);
        assert!(grew.reason.contains("grew at each of the last 3 polls (1 → 2 → 3 → 4 versions)"), "{}", grew.reason);
        assert_eq!(at(&[1, 2, 2, 4]).state, HealthState::Ok, "a poll without growth breaks the trend");
        assert_eq!(at(&[1, 2, 3, 1]).state, HealthState::Ok, "caught up part of the way");
        let off = UpstreamFacts { lag_history: &[1, 2, 3, 4, 5], growth_polls: 0, ..facts(60.0, None) };
        assert_eq!(assess_upstream(&SLO, MARGIN, &off).state, HealthState::Ok, "0 turns the trend off");
        let current = UpstreamFacts { lag_history: &[1, 2, 3, 4], growth_polls: 3, ..facts(0.0, None) };
        assert_eq!(assess_upstream(&SLO, MARGIN, &current).state, HealthState::Ok, "current now: the trend is over");

        let runs = |n: u32| RunRecord { consecutive_failures: n, last_error: Some("table not found".into()) };
        assert_eq!(assess_runs("p", &runs(0), 1), None);
        let failed = assess_runs("p", &runs(1), 1).expect("one failure is enough at 1");
        assert_eq!(failed.state, HealthState::Failing);
        assert!(failed.reason.starts_with("the last run failed: table not found;"), "{}", failed.reason);
        assert_eq!(assess_runs("p", &runs(2), 3), None);
        assert!(assess_runs("p", &runs(3), 3).expect("three").reason.starts_with("the last 3 runs failed"));
    }

    #[test]
    fn a_consumer_is_judged_by_the_age_of_its_oldest_unconsumed_change() {
        let at = |lag: f64| {
            let f = ConsumerFacts { pipeline: "p", consumer: "daily", keys_waiting: 3, runs_waiting: 1, lag_seconds: lag, ..Default::default() };
            assess_consumer(&SLO, &f)
        };
        assert_eq!(at(3_600.0).state, HealthState::Ok);
        assert_eq!(at(3_601.0).state, HealthState::Lagging);
        let stalled = at(6.0 * 3_600.0 + 1.0);
        assert_eq!(stalled.state, HealthState::Stalled);
        assert!(stalled.reason.starts_with("consumer `daily`: oldest unconsumed change is 6h 00m old, above max_lag 6h 00m"), "{}", stalled.reason);
    }
}
