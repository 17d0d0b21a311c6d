//! Words for plans, ranges, steps and reset targets, shared by the command line and the console
//! so both say the same thing the same way.

use crate::engine::{ReadRangeView, Step, UpstreamRead};
use crate::ops::reset::ResetTarget;

/// What a run or preview reads from one upstream.
pub fn read_range(u: &UpstreamRead) -> String {
    let from = u.processed.map_or("never read".to_string(), |p| format!("processed {p}"));
    match u.range {
        None if u.processed.is_none() => format!("{from}, starts at latest {}", u.pinned),
        None => format!("{from}, latest {}: nothing new", u.pinned),
        Some(ReadRangeView { snapshot: Some(s), from: a, to: b }) => format!("{from}: snapshot at {s} + changes {a}..={b}"),
        Some(ReadRangeView { from: a, to: b, .. }) => format!("{from}: changes {a}..={b} ({} commits)", b + 1 - a),
    }
}

/// A run's step as the progress gauge and the Pipelines view name it.
pub fn step_label(s: Step) -> &'static str {
    match s {
        Step::Pinned => "versions pinned",
        Step::IntentRecorded => "intent recorded",
        Step::ChangesRead => "changes read",
        Step::LinkFilesWritten => "link files written",
        Step::LinkCommitted => "link table committed",
        Step::TrackerCommitted => "tracker committed",
    }
}

/// A reset's target as the confirmation and the audit preview name it.
pub fn reset_target(t: &ResetTarget) -> String {
    match t {
        ResetTarget::Version(v) => format!("version {v}"),
        ResetTarget::Earliest => "earliest".into(),
        ResetTarget::Latest => "latest".into(),
        ResetTarget::ShiftBy(n) => format!("shift by {n:+}"),
        ResetTarget::DateTime(d) => format!("{}", d.format("%Y-%m-%d %H:%M:%SZ")),
    }
}
