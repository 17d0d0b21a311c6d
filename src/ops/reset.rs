//! Tracker resets, like Kafka's consumer-group offset reset: to a version, to earliest, to
//! latest, shift by N, to a point in time. Planning is a dry run that reports, per upstream,
//! current → new version and how many commits and change rows would be re-read or skipped;
//! executing is one audited tracker commit (operator, reason, from, to).

use color_eyre::eyre::{eyre, Result};
use deltalake::DeltaTable;
use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::store::cdf;
use crate::store::lake::{self, EarliestReadable};
use crate::engine::{session, Engine};
use crate::store::lease::Fence;
use crate::store::tracker::{Audit, RowWrite, TrackerRow};

/// Where to move a pipeline's tracker position.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ResetTarget {
    /// Processed through version N (the next run reads N+1 onwards).
    Version(i64),
    /// Re-read all readable history.
    Earliest,
    /// Skip everything up to the latest version.
    Latest,
    /// Move by N versions (negative re-reads).
    ShiftBy(i64),
    /// Processed through the last version committed at or before this instant (RFC 3339).
    DateTime(chrono::DateTime<chrono::Utc>),
}

/// The effect of a reset on one upstream.
#[derive(Debug, Clone, Serialize)]
pub struct ResetChange {
    pub upstream: String,
    pub current: Option<i64>,
    /// New processed version; `None` = re-read from the oldest snapshot (log truncated).
    pub new: Option<i64>,
    /// Lowest and highest valid processed versions (-1 = before version 0).
    pub valid: (i64, i64),
    pub latest: u64,
    /// Commits that the next run will re-read (positive) or that are skipped (negative).
    pub commits_delta: i64,
    /// Change rows in the re-read or skipped commits.
    pub change_rows: u64,
}

/// A dry-run plan; nothing is written until [`execute_reset`].
#[derive(Debug, Clone, Serialize)]
pub struct ResetPlan {
    pub pipeline: String,
    pub target: ResetTarget,
    pub changes: Vec<ResetChange>,
}

/// Plan a reset of `pipeline` for `upstreams` (all of its upstreams when empty). Refuses
/// impossible targets with the valid range in the message. Writes nothing.
pub async fn plan_reset(engine: &Engine, pipeline: &str, upstreams: &[String], target: ResetTarget) -> Result<ResetPlan> {
    let p = engine.config.pipeline(pipeline)?;
    if !p.reset_allowed {
        return Err(eyre!(
            "pipeline `{pipeline}` has `reset_allowed = false` in {}: resets and replays into its link table are refused",
            engine.config.path.display()
        ));
    }
    let names = select_upstreams(&p.upstream_names(), upstreams, pipeline)?;
    let rows = engine.tracker().await?.rows(Some(pipeline)).await?;
    let mut changes = Vec::new();
    for name in names {
        let current = rows.iter().find(|r| r.upstream == name).and_then(|r| r.last_processed_version);
        let u = engine.config.upstream(&name)?;
        let table = lake::open_upstream(&name, &u.uri, &engine.config.storage_options).await?;
        changes.push(plan_one(engine, &name, &table, current, &target).await?);
    }
    Ok(ResetPlan { pipeline: pipeline.into(), target, changes })
}

fn select_upstreams(all: &[String], wanted: &[String], pipeline: &str) -> Result<Vec<String>> {
    if wanted.is_empty() {
        return Ok(all.to_vec());
    }
    for w in wanted {
        if !all.contains(w) {
            return Err(eyre!("pipeline `{pipeline}` does not read upstream `{w}`; it reads: {}", all.join(", ")));
        }
    }
    Ok(wanted.to_vec())
}

async fn plan_one(engine: &Engine, name: &str, table: &DeltaTable, current: Option<i64>, target: &ResetTarget) -> Result<ResetChange> {
    let latest = lake::table_version(table)?;
    let earliest = lake::list_log(table).await?.earliest_readable(latest);
    let lowest = earliest.lowest_processed().map_or(-1, |v| v as i64);
    let valid = (lowest, latest as i64);
    let range_msg = |what: String| {
        eyre!("upstream `{name}`: {what}; valid versions are {lowest}..={latest} (-1 = before the first commit: re-read everything)")
    };
    let new: Option<i64> = match target {
        ResetTarget::Version(v) => Some(*v),
        ResetTarget::Latest => Some(latest as i64),
        ResetTarget::Earliest => match earliest {
            EarliestReadable::FullHistory => Some(-1),
            EarliestReadable::FromSnapshot(_) => None,
        },
        ResetTarget::ShiftBy(n) => {
            let c = current.ok_or_else(|| eyre!("upstream `{name}` has never been processed by this pipeline: --shift-by needs a current version; use --to-version or --to-earliest"))?;
            Some(c + n)
        }
        ResetTarget::DateTime(t) => Some(version_at(name, table, latest, lowest, t.timestamp_millis()).await?),
    };
    if let Some(v) = new {
        if v < lowest || v > latest as i64 {
            return Err(range_msg(format!("version {v} is out of range")));
        }
    }
    let (from, to) = {
        let a = current.unwrap_or(-1);
        let b = new.unwrap_or(lowest);
        (a.min(b), a.max(b))
    };
    let commits_delta = current.unwrap_or(-1) - new.unwrap_or(lowest);
    let change_rows = if to > from { count_change_rows(engine, name, table, (from + 1) as u64, to as u64).await? } else { 0 };
    Ok(ResetChange { upstream: name.into(), current, new, valid, latest, commits_delta, change_rows })
}

/// The last version committed at or before `ts_ms`. Commit timestamps are made monotonic as
/// Delta time travel does (a commit stamped before its predecessor counts as the predecessor's
/// time + 1 ms), so a skewed clock on one writer cannot pull the target back past later commits.
async fn version_at(name: &str, table: &DeltaTable, latest: u64, lowest: i64, ts_ms: i64) -> Result<i64> {
    let first = lowest.max(0) as u64;
    let stamps: Vec<Option<i64>> = futures::stream::iter(first..=latest)
        .map(|v| async move { lake::read_commit(table, v).await.map(|c| c.and_then(|c| c.timestamp_ms)) })
        .buffered(16)
        .try_collect()
        .await?;
    let mut found = None;
    let mut floor = i64::MIN;
    for (v, stamp) in (first..=latest).zip(stamps) {
        let Some(t) = stamp else { continue };
        floor = t.max(floor.saturating_add(1));
        if floor > ts_ms {
            break;
        }
        found = Some(v as i64);
    }
    if let Some(v) = found {
        return Ok(v);
    }
    let first_ts = lake::read_commit(table, first).await?.and_then(|c| c.timestamp_ms);
    let when = first_ts.and_then(crate::util::time::format_ms).unwrap_or_else(|| "unknown".into());
    Err(eyre!(
        "upstream `{name}`: no readable commit at or before {}; its earliest readable commit is version {first} at {when}",
        crate::util::time::format_ms(ts_ms).unwrap_or_default()
    ))
}

/// Change rows of `name` over versions `from..=to` (counted by a scan of the change feed).
pub async fn count_change_rows(engine: &Engine, name: &str, table: &DeltaTable, from: u64, to: u64) -> Result<u64> {
    let ctx = session();
    cdf::check_range(name, table, from, to).await?;
    let df = cdf::changes_frame(&ctx, name, table, from, to, &engine.scans).await?;
    Ok(df.count().await? as u64)
}

/// The dry run showed "current → new" and what that re-reads; if a run moved the tracker since,
/// executing it would do something else than what the operator confirmed.
fn refuse_if_moved(plan: &ResetPlan, existing: &[TrackerRow]) -> Result<()> {
    for c in &plan.changes {
        let now = existing.iter().find(|r| r.upstream == c.upstream).and_then(|r| r.processed());
        if now != c.current {
            let shown = |v: Option<i64>| v.map_or("never read".to_string(), |v| v.to_string());
            return Err(eyre!(
                "pipeline `{}`, upstream `{}`: the tracker moved since the dry run (it showed {}, it is now {}); nothing was reset\n  fix: run the dry run again and check what it re-reads or skips",
                plan.pipeline,
                c.upstream,
                shown(c.current),
                shown(now)
            ));
        }
    }
    Ok(())
}

/// Commit a planned reset with the operator and reason in the tracker's commit info.
/// Refused in read-only mode and while a run of the pipeline holds its lease.
pub async fn execute_reset(engine: &Engine, plan: &ResetPlan, reason: &str) -> Result<()> {
    if engine.read_only {
        return Err(crate::Error::ReadOnly { what: format!("tracker reset of pipeline `{}`", plan.pipeline) }.into());
    }
    let lease = crate::store::lease::acquire(&engine.config, &plan.pipeline, "tracker reset").await?;
    let result = write_reset(engine, plan, reason, &lease.fence()).await;
    lease.release().await;
    result
}

/// One compare-and-set commit over the rows as read here: a run that lost its lease and wakes
/// up later cannot write over the reset (its own commits are refused), and a pending intent
/// the reset clears gives up its run_id for good (the run that wrote it may still commit its
/// keys; the next run takes a newer run_id).
async fn write_reset(engine: &Engine, plan: &ResetPlan, reason: &str, fence: &Fence) -> Result<()> {
    let mut tracker = engine.tracker().await?;
    let existing = tracker.rows(Some(&plan.pipeline)).await?;
    refuse_if_moved(plan, &existing)?;
    let mut rows = Vec::new();
    for c in &plan.changes {
        let read = existing.iter().find(|r| r.upstream == c.upstream).cloned();
        let mut row = read.clone().unwrap_or_else(|| TrackerRow::new(&plan.pipeline, &c.upstream));
        row.last_processed_version = c.new;
        row.last_processed_ts = match c.new {
            Some(v) if v >= 0 => {
                let u = engine.config.upstream(&c.upstream)?;
                let t = lake::open_upstream(&c.upstream, &u.uri, &engine.config.storage_options).await?;
                lake::read_commit(&t, v as u64).await?.and_then(|c| c.timestamp_ms)
            }
            _ => None,
        };
        row.run_id = row.run_id.max(row.pending_run_id);
        row.pending_version = None;
        row.pending_run_id = None;
        row.stamp(format!("reset: {reason}"));
        rows.push(RowWrite::new(row, read));
    }
    let mut audit = Audit::new("reset", &plan.pipeline).fenced(fence);
    audit.reason = Some(reason.to_string());
    audit.details = serde_json::json!({
        "target": plan.target,
        "changes": plan.changes.iter().map(|c| serde_json::json!({
            "upstream": c.upstream, "from": c.current, "to": c.new,
            "commits_delta": c.commits_delta, "change_rows": c.change_rows,
        })).collect::<Vec<_>>(),
    });
    fence.check()?;
    tracker.upsert(&rows, &audit).await
}
