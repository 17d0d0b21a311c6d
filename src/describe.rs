//! Words for plans, ranges, steps and reset targets, shared by the command line and the console
//! so both say the same thing the same way.

use crate::engine::{JoinedRead, Outcome, ReadRangeView, RunReport, Step, UpstreamRead};
use crate::ops::reset::ResetTarget;

/// 1234567 → "1,234,567".
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// One line saying what a run did, the same words in `run`'s output, `watch`'s and the
/// console's Activity log: `run #7 written: 126 change rows → 42 keys (40 new, 2 updated) in 1.23s`.
pub fn run_summary(r: &RunReport) -> String {
    let run = r.run_id.map_or_else(|| "?".to_string(), |id| id.to_string());
    let took = format!("{:.2}s", r.duration.as_secs_f64());
    match r.outcome {
        Outcome::NothingNew => format!("nothing new in {took}"),
        Outcome::Recovered => format!("run #{run} recovered (tracker completed) in {took}"),
        Outcome::Written => {
            let mut s = format!(
                "run #{run} written: {} change rows → {} keys ({} new, {} updated) in {took}",
                thousands(r.change_rows),
                thousands(r.distinct_keys),
                thousands(r.keys_inserted),
                thousands(r.keys_updated),
            );
            if r.null_key_rows > 0 {
                s += &format!("; {} NULL-key rows skipped", thousands(r.null_key_rows));
            }
            for j in &r.joined {
                s += &format!("; joined {}: {} of {} files", j.upstream, j.files_read, j.files_total);
            }
            s
        }
    }
}

/// What a run read of a table that a `sql` source joins.
pub fn joined_read(j: &JoinedRead) -> String {
    let how = if j.pruned_on.is_empty() {
        "whole: the query does not let it be narrowed to the change rows".to_string()
    } else {
        format!("narrowed to the change rows' values of {}", j.pruned_on.join(", "))
    };
    format!("{} of {} files, {} rows ({how})", j.files_read, j.files_total, j.rows_read)
}

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

/// A consumer's next batch, with the reads that fetch exactly its rows.
pub fn consumer_batch(b: &crate::ops::consume::Batch) -> String {
    if b.keys == 0 && b.through_run_id == b.after_run_id {
        return format!(
            "consumer {} of {}: nothing new (acked through run {}, link table at version {})\n",
            b.consumer, b.pipeline, b.after_run_id, b.link_version
        );
    }
    format!(
        "consumer {} of {}: {} keys of runs {}..={} at link table version {}\n  then: deltalink ack {} --consumer {} --through-run {}\n\n  Spark SQL: {}\n  polars:    {}\n  deltalake: {}\n",
        b.consumer,
        b.pipeline,
        b.keys,
        b.after_run_id + 1,
        b.through_run_id,
        b.link_version,
        b.pipeline,
        b.consumer,
        b.through_run_id,
        b.reads.spark_sql,
        b.reads.polars,
        b.reads.deltalake
    )
}

/// One table's upkeep, planned or done: files and bytes before → after, what vacuum removes.
pub fn table_upkeep(t: &crate::ops::maintain::TableUpkeep) -> String {
    let mb = |b: u64| format!("{:.1} MB", b as f64 / 1e6);
    let verb = if t.executed { "" } else { "would " };
    let keep = t.keep_from_version.map(|v| format!("; versions from {v} kept readable for consumers")).unwrap_or_default();
    format!(
        "{} ({}): {} files, {} ({} with deletion vectors) → {} files{}\n  {}compaction {verb}rewrite {} small files; vacuum {verb}delete {} files ({}) removed more than {} ago{keep}",
        t.table,
        t.uri,
        t.before.files,
        mb(t.before.bytes),
        t.before.with_deletion_vectors,
        t.after.files,
        if t.executed { format!(", {}", mb(t.after.bytes)) } else { String::new() },
        match t.purge.files {
            0 => String::new(),
            n => format!("{n} files whose deletion vectors hide most rows {verb}be rewritten without {} deleted rows; ", t.purge.rows_dropped),
        },
        t.compact_files,
        t.vacuum_files,
        mb(t.vacuum_bytes),
        crate::util::time::human_seconds(t.retention_seconds as f64),
    )
}
