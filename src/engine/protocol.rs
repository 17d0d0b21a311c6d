//! A run: pin upstream versions, read their change feed, map to keys, MERGE into the link
//! table, advance the tracker — exactly once across crashes.
//!
//! Protocol (see README "Exactly once"), all under the pipeline's lease:
//! 1. pin `to = latest` per upstream;
//! 2. tracker commit "intent": `pending_version = to`, `pending_run_id = R` for every upstream;
//! 3. read `(processed, to]`, group keys;
//! 4. link-table MERGE carrying the application transaction (`deltalink:<pipeline>`, R) and
//!    the pins; refused unless the link table's last run is older than R;
//! 5. tracker commit "run": `last_processed_version = to`, `run_id = R`, intent cleared.
//!
//! Fencing: every commit first checks the lease is still held ([`crate::store::lease::Fence`]), and
//! tracker commits are compare-and-set on the rows the run read (step 2) or wrote (step 5), so
//! a run that lost its lease and wakes up late is refused instead of overwriting a newer run's
//! or an operator's write.
//!
//! On start, a pending intent is resolved first: if the link table holds R's commit with the
//! intent's pins, step 4 happened and only step 5 is redone; if it holds nothing of R, the run
//! is redone with the same pinned versions and the same R (its intent claimed again under this
//! lease); anything else (another writer's commit) abandons the intent for a new run. A run
//! that dies anywhere converges to one clean run.

use std::time::Instant;

use color_eyre::eyre::Result;
use deltalake::DeltaTable;

use crate::config::Pipeline;
use crate::store::cdf;
use crate::store::lake;
use crate::store::lease::Fence;
use crate::store::pause::Pause;
use crate::store::link::{self, WriteKind};
use crate::store::tracker::{Audit, RowWrite, Tracker, TrackerRow};

use super::core::{Engine, session};
use super::options::{RunOptions, Step, send};
use super::plan::{Plan, configured_rows};
use super::report::{Outcome, RunReport};

impl Engine {

    /// Run one pipeline once, holding its lease so no other process runs or resets it meanwhile.
    pub async fn run(&self, name: &str, opts: &RunOptions) -> Result<RunReport> {
        self.refuse_if_read_only(&format!("run of pipeline `{name}`"))?;
        self.config.pipeline(name)?;
        let result = async {
            let lease = crate::store::lease::acquire(&self.config, name, "run").await?;
            let result = self.run_leased(name, opts, &lease.fence()).await;
            lease.release().await;
            result
        }
        .await;
        self.observe_run(name, &result);
        result
    }

    /// Count the run's end for health (`failing` after failed runs), unless another process
    /// held the pipeline (that run is someone else's, not a failure of this one) or an operator
    /// paused it (health says `paused`).
    fn observe_run(&self, name: &str, result: &Result<RunReport>) {
        let busy = result.as_ref().err().is_some_and(|e| {
            e.downcast_ref::<crate::store::lease::LeaseHeld>().is_some()
                || matches!(e.downcast_ref::<crate::Error>(), Some(crate::Error::Paused { .. }))
        });
        if !busy {
            self.observed.record_run(name, result.as_ref().map(|_| ()).map_err(|e| format!("{e:#}")));
        }
    }

    pub(crate) async fn run_leased(&self, name: &str, opts: &RunOptions, fence: &Fence) -> Result<RunReport> {
        let started = Instant::now();
        let scans_before = self.scans.get();
        let pipeline = self.config.pipeline(name)?.clone();
        let mut tracker = self.tracker().await?;
        // Checked under the lease: a pause committed before this run took it stops the run.
        if let Some(pause) = Pause::find(&tracker.pause_rows(Some(name)).await?, name) {
            return Err(crate::Error::Paused { pipeline: name.to_string(), pause: pause.describe() }.into());
        }
        let rows = configured_rows(&pipeline, tracker.rows(Some(name)).await?);
        let link = lake::open_owned(&pipeline.link_table, self.storage()).await?;
        let committed = match &link {
            Some(t) => link::committed_run_id(t, name).await?,
            None => None,
        };

        let resume = match self.resolve_pending(&rows, link.as_ref(), committed).await? {
            PendingRun::Committed(pending) => {
                return self.complete_committed(&pipeline, &mut tracker, &rows, pending, fence, started).await;
            }
            PendingRun::None | PendingRun::Abandoned => false,
            PendingRun::NotCommitted => true,
        };
        let mut plan = self.plan(&pipeline, &rows, link, committed, resume).await?;
        opts.passed(name, Step::Pinned).await?;
        let mut report =
            RunReport { resumed: plan.resumed, upstreams: plan.reads.clone(), ..RunReport::new(name, Outcome::NothingNew) };
        if !plan.has_work() {
            report.duration = started.elapsed();
            return Ok(report);
        }
        // A resumed intent is claimed again under this lease: a run that wrote it and wakes up
        // late then finds its rows changed and is refused.
        fence.check()?;
        let intent = plan_rows(&plan, RowState::Intent);
        let record_intent = async {
            tracker.upsert(&writes_over(&intent, |u| plan.prior.get(u).cloned()), &audit("run-intent", &plan).fenced(fence)).await?;
            // Created even by a run without keys, so a missing link table later means lost data.
            let link = self.link_table_for(&plan, None).await?;
            // Handed on to the write (see below): opening it again there, after the read, held
            // back the first link file by ~8 ms.
            let committed = match &plan.link {
                Some(_) => plan.link_committed,
                None => link::committed_run_id(&link, name).await?,
            };
            opts.passed(name, Step::IntentRecorded).await?;
            Ok::<_, color_eyre::Report>((link, committed))
        };
        // The changes are read while the intent is committed: the read writes nothing and its
        // versions are pinned, and the intent is durable before any link file is written (both
        // have ended before the run goes on). Measured: the intent's commit (and its retry when
        // another pipeline's intent took the tracker version) held back the read by 20-80 ms.
        let read = async {
            let heavy = self.heavy_turn().await?;
            let ctx = session();
            Ok::<_, color_eyre::Report>((heavy, self.read_keys(&ctx, &plan).await?))
        };
        // An intent that fails ends the run at once; a read that ends first (done or failed)
        // waits for the intent, whose error comes first: the intent is settled either way, as it
        // was when it came before the read.
        let ((heavy, affected), (link, link_committed)) = {
            tokio::pin!(record_intent, read);
            tokio::select! {
                intent = &mut record_intent => {
                    let intent = intent?;
                    (read.await?, intent)
                }
                read = &mut read => {
                    let intent = record_intent.await?;
                    (read?, intent)
                }
            }
        };
        // The link table as the intent left it: this run holds the lease, so it is the table
        // the write builds on (see `Plan::link`).
        (plan.link, plan.link_committed) = (Some(link), link_committed);
        opts.passed(name, Step::ChangesRead).await?;
        report.change_rows = affected.as_ref().map_or(0, |a| a.change_rows);
        report.null_key_rows = affected.as_ref().map_or(0, |a| a.null_key_rows);
        report.distinct_keys = affected.as_ref().map_or(0, |a| a.distinct_keys);
        report.joined = plan.joined.reads();
        if report.null_key_rows > 0 {
            tracing::warn!(pipeline = name, rows = report.null_key_rows, "change rows with a NULL key were skipped");
            send(opts, name, format!("{} change rows had a NULL key and were not written", report.null_key_rows));
        }

        if let Some(affected) = affected.filter(|a| a.distinct_keys > 0) {
            let before_commit = || {
                fence.check()?;
                opts.reached(name, Step::LinkFilesWritten)
            };
            let metrics = self.write_keys(&plan, affected, WriteKind::Run, Some(fence), &before_commit).await?;
            report.keys_inserted = metrics.inserted;
            report.keys_updated = metrics.updated;
            report.link_files_rewritten = metrics.files_rewritten;
            report.link_files_marked = metrics.files_marked;
            report.link_merge = metrics.duration;
        }
        opts.passed(name, Step::LinkCommitted).await?;
        drop(heavy);

        fence.check()?;
        let done = plan_rows(&plan, RowState::Done);
        tracker.upsert(&writes_over(&done, |u| intent.iter().find(|r| r.upstream == u).cloned()), &audit("run", &plan).fenced(fence)).await?;
        opts.passed(name, Step::TrackerCommitted).await?;

        report.run_id = Some(plan.run_id);
        report.outcome = Outcome::Written;
        report.cdf_scans = self.scans.get() - scans_before;
        report.duration = started.elapsed();
        Ok(report)
    }

    /// What became of the run whose intent is pending in `rows`, judged from the link table:
    /// its commit is there with the intent's pins, nothing of it is there, or another writer's
    /// commit took its run_id (a stale intent: never trusted).
    pub(crate) async fn resolve_pending(&self, rows: &[TrackerRow], link: Option<&DeltaTable>, committed: Option<i64>) -> Result<PendingRun> {
        let Some(pending) = rows.iter().filter_map(|r| r.pending_run_id).max() else {
            return Ok(PendingRun::None);
        };
        if committed.unwrap_or(0) < pending {
            return Ok(PendingRun::NotCommitted);
        }
        let intent: std::collections::BTreeMap<String, i64> = rows
            .iter()
            .filter(|r| r.pending_run_id == Some(pending))
            .filter_map(|r| Some((r.upstream.clone(), r.pending_version?)))
            .collect();
        let found = match link {
            Some(t) => link::run_commit_pins(t, pending).await?,
            None => link::RunCommit::Missing,
        };
        Ok(match found {
            // Every upstream of the intent pinned alike (the commit may name more: an upstream
            // removed from the pipeline since).
            link::RunCommit::Pinned(pins) if intent.iter().all(|(u, v)| pins.get(u) == Some(v)) => PendingRun::Committed(pending),
            // Written before commits recorded their pins: the intent is all there is to go by.
            link::RunCommit::Unpinned => PendingRun::Committed(pending),
            _ => {
                tracing::warn!(run_id = pending, ?intent, "the link table's commit of the pending run is not this intent's; the intent is abandoned for a new run");
                PendingRun::Abandoned
            }
        })
    }

    /// A run whose link commit landed but whose tracker commit did not: finish it.
    pub(crate) async fn complete_committed(
        &self,
        pipeline: &Pipeline,
        tracker: &mut Tracker,
        rows: &[TrackerRow],
        pending: i64,
        fence: &Fence,
        started: Instant,
    ) -> Result<RunReport> {
        let done = completed_rows(rows, pending, "run (recovered)");
        let mut a = Audit::new("run-recovered", &pipeline.name).fenced(fence);
        a.details = serde_json::json!({
            "run_id": pending,
            "upstreams": rows.iter().filter(|r| r.pending_run_id == Some(pending)).map(|r| serde_json::json!({
                "upstream": r.upstream, "from": r.last_processed_version, "to": r.pending_version,
            })).collect::<Vec<_>>(),
        });
        fence.check()?;
        tracker.upsert(&writes_over(&done, |u| rows.iter().find(|r| r.upstream == u).cloned()), &a).await?;
        Ok(RunReport {
            run_id: Some(pending),
            resumed: true,
            duration: started.elapsed(),
            ..RunReport::new(&pipeline.name, Outcome::Recovered)
        })
    }
}

pub(crate) fn explain(e: color_eyre::Report, plan: &Plan) -> color_eyre::Report {
    let ranges: Vec<String> = plan
        .reads
        .iter()
        .filter_map(|r| r.range.map(|g| format!("upstream `{}` versions {}..={}", r.upstream, g.from, g.to)))
        .collect();
    if cdf::names_a_missing_file(&e) {
        // The missing object's path names the upstream it belongs to.
        let text = format!("{e:#}");
        let gone: Vec<String> = plan
            .reads
            .iter()
            .filter(|r| r.range.is_some())
            .filter(|r| plan.tables.get(&r.upstream).is_some_and(|t| text.contains(t.table_url().path())))
            .map(|r| r.upstream.clone())
            .collect();
        let upstream_flag = match gone.as_slice() {
            [one] => format!(" --upstream {one}"),
            _ => String::new(),
        };
        return e.wrap_err(format!(
            "pipeline `{}`: the change feed is not readable: a data file it references is gone (VACUUM?) in {}\n  {}",
            plan.pipeline.name,
            ranges.join(", "),
            cdf::unreadable_fix(&plan.pipeline.name, &upstream_flag)
        ));
    }
    e.wrap_err(format!("pipeline `{}`: reading changes ({}) failed", plan.pipeline.name, ranges.join(", ")))
}

/// What became of a pending run (see [`Engine::resolve_pending`]).
pub(crate) enum PendingRun {
    None,
    /// Its link commit landed: only the tracker is to be completed.
    Committed(i64),
    /// Nothing of it landed: redo it with its pins and run_id.
    NotCommitted,
    /// Another writer's commit holds its run_id: plan a new run instead.
    Abandoned,
}

/// The rows of a committed pending run, completed: processed through its pins.
pub(crate) fn completed_rows(rows: &[TrackerRow], pending: i64, note: &str) -> Vec<TrackerRow> {
    rows.iter()
        .filter(|r| r.pending_run_id == Some(pending))
        .map(|r| {
            let mut d = r.clone();
            d.last_processed_version = r.pending_version;
            d.last_processed_ts = IntentNote::parse(r.note.as_deref()).pinned_ts;
            d.run_id = Some(pending);
            d.pending_version = None;
            d.pending_run_id = None;
            d.stamp(note);
            d
        })
        .collect()
}

/// Each row written over the row `read` gives for its upstream (compare-and-set).
pub(crate) fn writes_over(rows: &[TrackerRow], read: impl Fn(&str) -> Option<TrackerRow>) -> Vec<RowWrite> {
    rows.iter().map(|r| RowWrite::new(r.clone(), read(&r.upstream))).collect()
}

/// What an intent row's note keeps for a recovery that only completes the tracker: the pinned
/// commit's time, and whether the upstream was untracked (a `start = "latest"` pipeline's
/// first run records its pin and reads nothing — also when it is resumed).
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct IntentNote {
    pub(crate) pinned_ts: Option<i64>,
    pub(crate) untracked: bool,
}

impl IntentNote {
    fn format(&self) -> Option<String> {
        let mut parts = Vec::new();
        if let Some(t) = self.pinned_ts {
            parts.push(format!("pending_ts={t}"));
        }
        if self.untracked {
            parts.push("untracked".to_string());
        }
        (!parts.is_empty()).then(|| parts.join(";"))
    }

    pub(crate) fn parse(note: Option<&str>) -> IntentNote {
        let mut parsed = IntentNote::default();
        for part in note.unwrap_or_default().split(';') {
            if let Some(t) = part.strip_prefix("pending_ts=") {
                parsed.pinned_ts = t.parse().ok();
            } else if part == "untracked" {
                parsed.untracked = true;
            }
        }
        parsed
    }
}

#[derive(Clone, Copy)]
pub(crate) enum RowState {
    Intent,
    Done,
}

pub(crate) fn plan_rows(plan: &Plan, state: RowState) -> Vec<TrackerRow> {
    plan.reads
        .iter()
        .map(|r| {
            let mut row = plan
                .prior
                .get(&r.upstream)
                .cloned()
                .unwrap_or_else(|| TrackerRow::new(&plan.pipeline.name, &r.upstream));
            match state {
                RowState::Intent => {
                    row.pending_version = Some(r.pinned as i64);
                    row.pending_run_id = Some(plan.run_id);
                    // Kept so a recovery that only completes the tracker still records the commit time.
                    row.note = IntentNote { pinned_ts: r.pinned_ts, untracked: !r.tracked }.format();
                }
                RowState::Done => {
                    row.last_processed_version = Some(r.pinned as i64);
                    row.last_processed_ts = r.pinned_ts;
                    row.run_id = Some(plan.run_id);
                    row.pending_version = None;
                    row.pending_run_id = None;
                    row.note = Some("run".into());
                }
            }
            row.touch();
            row
        })
        .collect()
}

pub(crate) fn audit(action: &'static str, plan: &Plan) -> Audit {
    let mut a = Audit::new(action, &plan.pipeline.name);
    a.details = serde_json::json!({
        "run_id": plan.run_id,
        "upstreams": plan.reads.iter().map(|r| serde_json::json!({
            "upstream": r.upstream, "from": r.processed, "to": r.pinned,
        })).collect::<Vec<_>>(),
    });
    a
}
