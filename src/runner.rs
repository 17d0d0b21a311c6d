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
//! Fencing: every commit first checks the lease is still held ([`crate::lease::Fence`]), and
//! tracker commits are compare-and-set on the rows the run read (step 2) or wrote (step 5), so
//! a run that lost its lease and wakes up late is refused instead of overwriting a newer run's
//! or an operator's write.
//!
//! On start, a pending intent is resolved first: if the link table holds R's commit with the
//! intent's pins, step 4 happened and only step 5 is redone; if it holds nothing of R, the run
//! is redone with the same pinned versions and the same R (its intent claimed again under this
//! lease); anything else (another writer's commit) abandons the intent for a new run. A run
//! that dies anywhere converges to one clean run.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::prelude::{DataFrame, SessionContext};
use deltalake::delta_datafusion::DeltaSessionContext;
use deltalake::schema::DataType as DeltaType;
use deltalake::DeltaTable;
use futures::StreamExt;
use serde::Serialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::cdf::{self, ReadRange, ScanCounter};
use crate::config::{Config, KeyMapping, Pipeline, StartFrom};
use crate::keymap::{self, AffectedKeys, PreviewRow};
use crate::lake;
use crate::link::{self, LinkMerge, LinkWriteMetrics, MergeStrategy, WriteKind};
use crate::sqlmap;
use crate::lease::Fence;
use crate::tracker::{now_ms, Audit, RowWrite, Tracker, TrackerRow};
use crate::Error;

/// The steps of a run, named so faults can be injected between them in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Step {
    Pinned,
    IntentRecorded,
    ChangesRead,
    /// The link table's new files are written, its commit not made yet.
    LinkFilesWritten,
    LinkCommitted,
    TrackerCommitted,
}

/// Progress a run reports while it works (the console shows these).
#[derive(Debug, Clone)]
pub enum RunEvent {
    Step { pipeline: String, step: Step },
    Message { pipeline: String, text: String },
    /// One pipeline of a `run_many` cycle finished (the others may still be running).
    Finished { pipeline: String, result: std::result::Result<RunReport, String> },
}

/// Options of a run, built like delta-rs's operation builders.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    fail_after: Option<Step>,
    hold_after: Option<(Step, Arc<tokio::sync::Notify>)>,
    events: Option<UnboundedSender<RunEvent>>,
}

impl RunOptions {
    /// Testing: return an error right after `step` (the process state is as if it died there).
    pub fn with_fault_after(mut self, step: Step) -> Self {
        self.fail_after = Some(step);
        self
    }
    /// Testing: right after `step`, notify `held` and wait until the run's task is cancelled
    /// (a cancel at a known step, without sleeps).
    pub fn with_hold_after(mut self, step: Step, held: Arc<tokio::sync::Notify>) -> Self {
        self.hold_after = Some((step, held));
        self
    }
    pub fn with_events(mut self, tx: UnboundedSender<RunEvent>) -> Self {
        self.events = Some(tx);
        self
    }
    /// [`RunOptions::reached`], then the test hold, if any, at this step.
    async fn passed(&self, pipeline: &str, step: Step) -> Result<()> {
        self.reached(pipeline, step)?;
        if let Some((_, held)) = self.hold_after.as_ref().filter(|(s, _)| *s == step) {
            held.notify_one();
            std::future::pending::<()>().await;
        }
        Ok(())
    }
    fn reached(&self, pipeline: &str, step: Step) -> Result<()> {
        tracing::info!(pipeline, step = step_name(step), "run step reached");
        if let Some(tx) = &self.events {
            let _ = tx.send(RunEvent::Step { pipeline: pipeline.into(), step });
        }
        if self.fail_after == Some(step) {
            return Err(Error::InjectedFault(step).into());
        }
        if std::env::var("DELTALINK_FAULT_AFTER").ok().as_deref() == Some(step_name(step)) {
            // A real crash (for kill tests): the process dies with no unwinding or cleanup.
            std::process::abort();
        }
        if std::env::var("DELTALINK_STOP_AFTER").ok().as_deref() == Some(step_name(step)) {
            // A real freeze (for fencing tests): the process stops as SIGSTOP, a VM pause or a
            // long GC would stop it, at a known step; SIGCONT wakes it up.
            stop_self();
        }
        Ok(())
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn stop_self() {
    // SAFETY: raise(2) with a valid signal number has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGSTOP);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn stop_self() {
    tracing::warn!("DELTALINK_STOP_AFTER is only supported on Linux (glibc)");
}

pub fn step_name(step: Step) -> &'static str {
    match step {
        Step::Pinned => "pinned",
        Step::IntentRecorded => "intent",
        Step::ChangesRead => "read",
        Step::LinkFilesWritten => "files",
        Step::LinkCommitted => "link",
        Step::TrackerCommitted => "tracker",
    }
}

/// What one upstream contributes to a run.
#[derive(Debug, Clone, Serialize)]
pub struct UpstreamRead {
    pub upstream: String,
    /// Version processed before this run (`None` = never read, -1 = read from version 0 on).
    pub processed: Option<i64>,
    /// The tracker has a row for this upstream (a reset to earliest leaves `processed` empty).
    pub tracked: bool,
    pub pinned: u64,
    /// Commit time of the pinned version (ms).
    pub pinned_ts: Option<i64>,
    /// What is read; `None` when nothing is new (or a `start = "latest"` pipeline starts).
    pub range: Option<ReadRangeView>,
}

/// Serializable view of a [`ReadRange`].
#[derive(Debug, Clone, Copy, Serialize)]
pub struct ReadRangeView {
    pub snapshot: Option<u64>,
    pub from: u64,
    pub to: u64,
}

impl From<ReadRange> for ReadRangeView {
    fn from(r: ReadRange) -> Self {
        match r {
            ReadRange::Changes { start, end } => ReadRangeView { snapshot: None, from: start, to: end },
            ReadRange::SnapshotThenChanges { snapshot, end } => {
                ReadRangeView { snapshot: Some(snapshot), from: snapshot + 1, to: end }
            }
        }
    }
}

impl ReadRangeView {
    fn to_range(self) -> ReadRange {
        match self.snapshot {
            Some(s) => ReadRange::SnapshotThenChanges { snapshot: s, end: self.to },
            None => ReadRange::Changes { start: self.from, end: self.to },
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Nothing new upstream: nothing was written.
    NothingNew,
    /// Keys merged (possibly zero) and the tracker advanced.
    Written,
    /// A previous run had committed its keys but died before the tracker: only the tracker was completed.
    Recovered,
}

/// What a run did, as `run` prints it.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    pub pipeline: String,
    pub run_id: Option<i64>,
    pub outcome: Outcome,
    pub resumed: bool,
    pub upstreams: Vec<UpstreamRead>,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    pub keys_inserted: u64,
    pub keys_updated: u64,
    /// Link-table files the MERGE rewrote (few when the changed keys are clustered).
    pub link_files_rewritten: u64,
    /// Link-table files that took a deletion vector for the rows the MERGE replaced.
    pub link_files_marked: u64,
    pub cdf_scans: u64,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Of `duration`, the link-table MERGE: files written and committed (seconds in JSON).
    #[serde(serialize_with = "ser_duration")]
    pub link_merge: Duration,
}

impl RunReport {
    /// A report of `pipeline` with nothing counted yet.
    fn new(pipeline: &str, outcome: Outcome) -> Self {
        RunReport {
            pipeline: pipeline.into(),
            run_id: None,
            outcome,
            resumed: false,
            upstreams: vec![],
            change_rows: 0,
            null_key_rows: 0,
            distinct_keys: 0,
            keys_inserted: 0,
            keys_updated: 0,
            link_files_rewritten: 0,
            link_files_marked: 0,
            cdf_scans: 0,
            duration: Duration::ZERO,
            link_merge: Duration::ZERO,
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Link-table file size: small enough that a MERGE of clustered keys skips most files, and
/// that reading and writing a rewritten table spreads over the cores.
pub const DEFAULT_LINK_FILE_SIZE: u64 = 8 * 1024 * 1024;

/// The engine: a validated config plus shared state. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    pub read_only: bool,
    pub scans: Arc<ScanCounter>,
    /// Upstream snapshots kept between status refreshes (moved forward incrementally).
    pub tables: Arc<lake::TableCache>,
    /// Target size of link-table files (see [`LinkMerge::target_file_size`]).
    pub link_file_size: u64,
    pub merge_strategy: MergeStrategy,
    /// Set while `run_many` runs a cycle: shared pins and shared change reads.
    cycle: Option<Arc<Cycle>>,
}

/// One cycle of `run_many`: every upstream is pinned once, and a range that several pipelines
/// read is scanned once and fanned out from memory (central reads).
#[derive(Default)]
struct Cycle {
    /// Each upstream's table at the cycle's pin, opened once (by the first pipeline to ask;
    /// different upstreams open concurrently).
    pins: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<DeltaTable>>>>,
    /// The tracker table as last loaded: a run brings it up to date from there instead of
    /// loading it whole (profiled: ~35 ms of each small pipeline's run).
    tracker: tokio::sync::Mutex<Option<DeltaTable>>,
    /// Upstreams read by two or more of the cycle's pipelines: their change reads are cached,
    /// projected to the columns the cycle needs (`None` = all, when a `sql` source reads it).
    shared: HashMap<String, Option<Vec<String>>>,
    /// One cell per (upstream, range): the first pipeline reads it, the others wait for it;
    /// different upstreams are read concurrently.
    reads: std::sync::Mutex<HashMap<(String, u64, u64), Arc<tokio::sync::OnceCell<SharedRead>>>>,
    /// Turns at the CPU- and memory-heavy part of a run (reading changes, building and merging
    /// link rows), as many as cores. Twice as many pipelines are in flight, so that one's
    /// lease, log reads and commits (waiting on storage, not on a core) overlap another's
    /// heavy part: profiled on 100 upstreams x 20 pipelines, two pipelines at a time kept the
    /// cores 70 % busy. A shared read's cell is filled by a run holding a turn, so a run
    /// waiting on it while holding one of its own always sees it filled.
    heavy: Option<tokio::sync::Semaphore>,
    /// How many pipelines the cycle runs.
    pipelines: usize,
}

type SharedRead = Arc<Vec<deltalake::arrow::array::RecordBatch>>;

/// The columns of `upstream` that the cycle's pipelines need from its change rows; `None` when
/// some `sql` source may read any column of it.
fn columns_needed(pipelines: &[&Pipeline], upstream: &str) -> Option<Vec<String>> {
    let mut cols: Vec<String> = Vec::new();
    for p in pipelines {
        let sql_reads_it = p.sources.iter().any(|s| matches!(s.mapping, KeyMapping::Sql(_)) && p.upstream_names().iter().any(|u| u == upstream));
        if sql_reads_it {
            return None;
        }
        for s in p.sources.iter().filter(|s| s.upstream == upstream) {
            if let KeyMapping::Columns(c) = &s.mapping {
                cols.extend(c.iter().cloned());
            }
        }
    }
    cols.sort();
    cols.dedup();
    Some(cols)
}

/// A planned run: versions pinned, ranges decided, nothing written.
struct Plan {
    pipeline: Pipeline,
    run_id: i64,
    resumed: bool,
    reads: Vec<UpstreamRead>,
    tables: HashMap<String, DeltaTable>,
    prior: HashMap<String, TrackerRow>,
    /// The link table as opened when planning (`None`: not created yet, or a replay): a run
    /// holds the pipeline's lease, so nothing else writes it meanwhile, and opening it again
    /// at every step reloaded its log four more times per run.
    link: Option<DeltaTable>,
    /// The last run committed into `link` as opened (its application transaction).
    link_committed: Option<i64>,
}

impl Plan {
    fn has_work(&self) -> bool {
        self.resumed || self.reads.iter().any(|r| r.processed != Some(r.pinned as i64))
    }
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Engine {
            config: Arc::new(config),
            read_only: false,
            scans: Arc::new(ScanCounter::default()),
            tables: Arc::default(),
            link_file_size: DEFAULT_LINK_FILE_SIZE,
            merge_strategy: MergeStrategy::default(),
            cycle: None,
        }
    }

    /// How link-table MERGEs run (default: deltalink's sorted-key MERGE).
    pub fn with_merge_strategy(mut self, strategy: MergeStrategy) -> Self {
        self.merge_strategy = strategy;
        self
    }

    /// Target size of link-table files (default 8 MiB).
    pub fn with_link_file_size(mut self, bytes: u64) -> Self {
        self.link_file_size = bytes.max(1);
        self
    }

    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    fn storage(&self) -> &HashMap<String, String> {
        &self.config.storage_options
    }

    pub async fn tracker(&self) -> Result<Tracker> {
        let Some(cycle) = &self.cycle else { return Tracker::open(&self.config.tracker_uri, self.storage()).await };
        let mut cached = cycle.tracker.lock().await;
        let tracker = match cached.take() {
            Some(table) => {
                let mut t = Tracker::loaded(&self.config.tracker_uri, self.storage(), table);
                t.refresh().await?;
                t
            }
            None => Tracker::open(&self.config.tracker_uri, self.storage()).await?,
        };
        *cached = tracker.table().cloned();
        Ok(tracker)
    }

    /// How many cores a run's grouping may keep busy: all of them for a run of its own (or a
    /// preview); in a cycle, its share of the cores among the pipelines running their heavy
    /// part at once. Measured: splitting each of two concurrent pipelines' grouping over both
    /// cores made a 1M-row lake's from-scratch cycle 20 % slower.
    fn grouping_cores(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match &self.cycle {
            Some(cycle) => cores / cycle.pipelines.clamp(1, cores),
            None => cores,
        }
    }

    /// A turn at a run's heavy part when running in a cycle (see [`Cycle::heavy`]).
    async fn heavy_turn(&self) -> Result<Option<tokio::sync::SemaphorePermit<'_>>> {
        let Some(heavy) = self.cycle.as_ref().and_then(|c| c.heavy.as_ref()) else { return Ok(None) };
        Ok(Some(heavy.acquire().await.wrap_err("the cycle's run queue was closed")?))
    }

    fn refuse_if_read_only(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { what: what.into() }.into());
        }
        Ok(())
    }

    /// Run one pipeline once, holding its lease so no other process runs or resets it meanwhile.
    pub async fn run(&self, name: &str, opts: &RunOptions) -> Result<RunReport> {
        self.refuse_if_read_only(&format!("run of pipeline `{name}`"))?;
        self.config.pipeline(name)?;
        let lease = crate::lease::acquire(self, name, "run").await?;
        let result = self.run_leased(name, opts, &lease.fence()).await;
        lease.release().await;
        result
    }

    async fn run_leased(&self, name: &str, opts: &RunOptions, fence: &Fence) -> Result<RunReport> {
        let started = Instant::now();
        let scans_before = self.scans.get();
        let pipeline = self.config.pipeline(name)?.clone();
        let mut tracker = self.tracker().await?;
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
        let plan = self.plan(&pipeline, &rows, link, committed, resume).await?;
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
        tracker.upsert(&writes_over(&intent, |u| plan.prior.get(u).cloned()), &audit("run-intent", &plan).fenced(fence)).await?;
        // Created even by a run without keys, so a missing link table later means lost data.
        self.link_table_for(&plan, None).await?;
        opts.passed(name, Step::IntentRecorded).await?;

        let heavy = self.heavy_turn().await?;
        let ctx = session();
        let affected = self.read_keys(&ctx, &plan).await?;
        opts.passed(name, Step::ChangesRead).await?;
        report.change_rows = affected.as_ref().map_or(0, |a| a.change_rows);
        report.null_key_rows = affected.as_ref().map_or(0, |a| a.null_key_rows);
        report.distinct_keys = affected.as_ref().map_or(0, |a| a.distinct_keys);
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

    /// The keys the next run would write, with provenance; writes nothing (same code path).
    pub async fn preview(&self, name: &str, limit: Option<usize>) -> Result<Preview> {
        let pipeline = self.config.pipeline(name)?.clone();
        let tracker = self.tracker().await?;
        let rows = configured_rows(&pipeline, tracker.rows(Some(name)).await?);
        let link = lake::open_owned(&pipeline.link_table, self.storage()).await?;
        let committed = match &link {
            Some(t) => link::committed_run_id(t, name).await?,
            None => None,
        };
        // What the next run will do with a pending run decides what it reads: a committed one
        // is only completed (its keys are written already), an abandoned one is re-planned.
        let (rows, resume) = match self.resolve_pending(&rows, link.as_ref(), committed).await? {
            PendingRun::Committed(pending) => {
                let done = completed_rows(&rows, pending, "preview");
                let rows = rows.iter().map(|r| done.iter().find(|d| d.upstream == r.upstream).unwrap_or(r).clone()).collect();
                (rows, false)
            }
            PendingRun::None | PendingRun::Abandoned => (rows, false),
            PendingRun::NotCommitted => (rows, true),
        };
        let plan = self.plan(&pipeline, &rows, link, committed, resume).await?;
        let ctx = session();
        let affected = self.read_keys(&ctx, &plan).await?;
        let (rows, change_rows, null_key_rows, distinct_keys) = match &affected {
            Some(a) => (a.preview_rows(limit)?, a.change_rows, a.null_key_rows, a.distinct_keys),
            None => (vec![], 0, 0, 0),
        };
        Ok(Preview {
            pipeline: name.into(),
            key: pipeline.key.clone(),
            upstreams: plan.reads,
            change_rows,
            null_key_rows,
            distinct_keys,
            rows,
        })
    }

    /// What became of the run whose intent is pending in `rows`, judged from the link table:
    /// its commit is there with the intent's pins, nothing of it is there, or another writer's
    /// commit took its run_id (a stale intent: never trusted).
    async fn resolve_pending(&self, rows: &[TrackerRow], link: Option<&DeltaTable>, committed: Option<i64>) -> Result<PendingRun> {
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
    async fn complete_committed(
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

    /// Pin versions and decide ranges; resume a pending intent with its own pins and run_id.
    /// `resume`: the pending intent in `rows` is redone (else it is ignored: there is none, or
    /// it was abandoned); `link` and `committed` are the link table and its last run as read.
    async fn plan(&self, pipeline: &Pipeline, rows: &[TrackerRow], link: Option<DeltaTable>, committed: Option<i64>, resume: bool) -> Result<Plan> {
        let prior: HashMap<String, TrackerRow> = rows.iter().map(|r| (r.upstream.clone(), r.clone())).collect();
        let pending_run = rows.iter().filter_map(|r| r.pending_run_id).max().filter(|_| resume);
        let names = pipeline.upstream_names();
        let opened = futures::future::try_join_all(names.iter().map(|n| self.open_pinned(n, prior.get(n), pending_run))).await?;
        let mut reads = Vec::new();
        let mut tables = HashMap::new();
        for (name, (table, read)) in names.iter().zip(opened) {
            let read = decide_range(pipeline, &table, read).await?;
            check_readable(&read, &table).await?;
            reads.push(read);
            tables.insert(name.clone(), table);
        }
        self.open_sql_tables(pipeline, &mut tables).await?;
        check_link_table_present(pipeline, rows, link.as_ref())?;
        key_types_over_sources(pipeline, &tables, link.as_ref())?;
        let run_id = match pending_run {
            Some(r) => r,
            None => {
                // An abandoned intent's run_id is never reused: its writer may still commit it.
                let last = rows.iter().flat_map(|r| [r.run_id, r.pending_run_id]).flatten().max().unwrap_or(0);
                last.max(committed.unwrap_or(0)) + 1
            }
        };
        let link_committed = if link.is_some() { committed } else { None };
        Ok(Plan { pipeline: pipeline.clone(), run_id, resumed: pending_run.is_some(), reads, tables, prior, link, link_committed })
    }

    /// The link table, as opened when planning, or now (it is created after the intent).
    async fn planned_link_table(&self, plan: &Plan) -> Result<Option<DeltaTable>> {
        match &plan.link {
            Some(t) => Ok(Some(t.clone())),
            None => lake::open_owned(&plan.pipeline.link_table, self.storage()).await,
        }
    }

    /// Upstreams that `sql` sources join and that are not read already (a replay of some of a
    /// pipeline's upstreams joins the others at their latest versions).
    async fn open_sql_tables(&self, pipeline: &Pipeline, tables: &mut HashMap<String, DeltaTable>) -> Result<()> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        for source in &pipeline.sources {
            let KeyMapping::Sql(sql) = &source.mapping else { continue };
            let prepared = sqlmap::prepare(sql, &pipeline.name, &source.upstream, &names)?;
            refuse_joins_outside(pipeline, &source.upstream, &prepared.tables)?;
            for t in prepared.tables {
                if !tables.contains_key(&t) {
                    let u = self.config.upstream(&t)?;
                    tables.insert(t.clone(), lake::open_upstream(&t, &u.uri, self.storage()).await?);
                }
            }
        }
        Ok(())
    }

    /// Check every `sql` source against the upstream schemas (unknown tables, syntax, output
    /// columns) so a typo fails at start-up, not at 3 a.m. Reads schemas only.
    pub async fn validate_sql(&self) -> Result<()> {
        for pipeline in self.config.pipelines.values() {
            for source in &pipeline.sources {
                if let KeyMapping::Sql(sql) = &source.mapping {
                    self.plan_sql(pipeline, &source.upstream, sql).await?;
                }
            }
        }
        Ok(())
    }

    /// Plan one `sql` source against empty relations of the upstream schemas; its output schema.
    async fn plan_sql(&self, pipeline: &Pipeline, upstream: &str, sql: &str) -> Result<deltalake::arrow::datatypes::Schema> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        let prepared = sqlmap::prepare(sql, &pipeline.name, upstream, &names)?;
        refuse_joins_outside(pipeline, upstream, &prepared.tables)?;
        let ctx = session();
        ctx.register_table(sqlmap::CHANGES, self.empty_relation(upstream, true).await?)?;
        for t in &prepared.tables {
            ctx.register_table(t.as_str(), self.empty_relation(t, false).await?)?;
        }
        let df = ctx.sql(&prepared.sql).await.wrap_err_with(|| {
            format!("pipeline `{}`, source `{upstream}`: the `sql` does not plan against the upstream schemas", pipeline.name)
        })?;
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        sqlmap::check_output(&columns, &pipeline.key, &pipeline.name, upstream)?;
        Ok(df.schema().as_arrow().clone())
    }

    async fn empty_relation(&self, name: &str, with_cdf_columns: bool) -> Result<Arc<dyn deltalake::datafusion::catalog::TableProvider>> {
        use deltalake::arrow::datatypes::{Field, Schema, TimeUnit};
        let u = self.config.upstream(name)?;
        let table = lake::open_upstream(name, &u.uri, self.storage()).await?;
        let schema = table.snapshot()?.snapshot().arrow_schema();
        let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
        if with_cdf_columns {
            fields.push(Field::new(cdf::CHANGE_TYPE, DataType::Utf8, true));
            fields.push(Field::new(cdf::COMMIT_VERSION, DataType::UInt64, true));
            fields.push(Field::new(cdf::COMMIT_TIMESTAMP, DataType::Timestamp(TimeUnit::Millisecond, None), true));
        }
        let schema = Arc::new(Schema::new(fields));
        Ok(Arc::new(deltalake::datafusion::datasource::MemTable::try_new(schema, vec![vec![]])?))
    }

    /// Open an upstream at the version this run reads up to: the latest, or the intent's pin.
    async fn open_pinned(
        &self,
        name: &str,
        prior: Option<&TrackerRow>,
        pending_run: Option<i64>,
    ) -> Result<(DeltaTable, UpstreamRead)> {
        let upstream = self.config.upstream(name)?;
        let processed = prior.and_then(|r| r.last_processed_version);
        let mut table = match (&self.cycle, pending_run) {
            (Some(cycle), None) => {
                let cell = match cycle.pins.lock() {
                    Ok(mut pins) => pins.entry(name.to_string()).or_default().clone(),
                    Err(_) => Arc::default(), // poisoned by a panicked run: open it afresh
                };
                let pinned = cell.get_or_try_init(|| lake::open_upstream(name, &upstream.uri, self.storage())).await?.clone();
                // Another process ran this pipeline past the cycle's pin meanwhile: pin its
                // latest version instead (the table was not re-created: see below).
                let cycle_pin = lake::table_version(&pinned)? as i64;
                if processed.is_some_and(|p| p > cycle_pin) {
                    lake::open_upstream(name, &upstream.uri, self.storage()).await?
                } else {
                    pinned
                }
            }
            _ => lake::open_upstream(name, &upstream.uri, self.storage()).await?,
        };
        let latest = lake::table_version(&table)?;
        let pinned = match prior.and_then(|r| r.pending_version).filter(|_| pending_run.is_some()) {
            Some(p) => p as u64,
            None => latest,
        };
        if pinned != latest {
            table.load_version(pinned).await.wrap_err_with(|| format!("upstream `{name}`: cannot load pinned version {pinned}"))?;
        }
        if let Some(p) = processed.filter(|p| *p > latest as i64) {
            return Err(Error::TrackerAhead {
                pipeline: prior.map(|r| r.pipeline_name.clone()).unwrap_or_default(),
                upstream: name.into(),
                processed: p as u64,
                latest,
            }
            .into());
        }
        let pinned_ts = lake::read_commit(&table, pinned).await?.and_then(|c| c.timestamp_ms);
        // An upstream that was untracked when an intent was written stays untracked while that
        // intent is its row (resumed or abandoned): the row exists only because of the intent.
        let tracked = prior.is_some_and(|r| !IntentNote::parse(r.note.as_deref()).untracked);
        Ok((table, UpstreamRead { upstream: name.into(), processed, tracked, pinned, pinned_ts, range: None }))
    }

    /// Read every source's change rows for the plan and group them per key.
    async fn read_keys(&self, ctx: &SessionContext, plan: &Plan) -> Result<Option<AffectedKeys>> {
        let key_types = self.arrow_key_types(plan).await?;
        // Upstreams are planned (and shared reads collected) concurrently: planning a CDF scan
        // reads the range's commits, ~0.1 s per upstream when done one after another.
        let reads = plan.reads.iter().filter_map(|read| {
            let range = read.range.map(ReadRangeView::to_range)?;
            let table = &plan.tables[&read.upstream];
            Some(async move { Ok::<_, color_eyre::Report>((read.upstream.clone(), self.read_range(ctx, &read.upstream, table, range).await?)) })
        });
        let raw: HashMap<String, Vec<DataFrame>> = futures::future::try_join_all(reads).await?.into_iter().collect();
        // One frame per upstream (a source's frames unioned), grouped by key upstream by upstream.
        let mut frames: Vec<(String, DataFrame)> = Vec::new();
        let mut add = |upstream: &str, df: DataFrame| -> Result<()> {
            match frames.iter_mut().find(|(u, _)| u == upstream) {
                Some((_, acc)) => *acc = acc.clone().union(df)?,
                None => frames.push((upstream.to_string(), df)),
            }
            Ok(())
        };
        for source in &plan.pipeline.sources {
            let Some(changes) = raw.get(&source.upstream) else { continue };
            match &source.mapping {
                KeyMapping::Columns(cols) => {
                    for df in changes {
                        add(
                            &source.upstream,
                            keymap::project_source(
                                df.clone(),
                                &source.upstream,
                                &plan.pipeline.name,
                                cols,
                                &plan.pipeline.key,
                                key_types.as_deref(),
                            )?,
                        )?;
                    }
                }
                KeyMapping::Sql(sql) => {
                    let df = self.sql_source(ctx, plan, &source.upstream, sql, changes, &raw, key_types.as_deref()).await?;
                    add(&source.upstream, df)?;
                }
            }
        }
        if frames.is_empty() {
            return Ok(None);
        }
        let affected = keymap::group_changes(frames, &plan.pipeline.key, self.grouping_cores())
            .await
            .map_err(|e| explain(e, plan))?;
        Ok(Some(affected))
    }

    /// Run one `sql` source: `changes` is this upstream's change rows; every other upstream the
    /// query names is its snapshot at the pinned version plus its pre-images and deleted rows of
    /// this run (the delta rule, made complete when both sides change in one run).
    async fn sql_source(
        &self,
        ctx: &SessionContext,
        plan: &Plan,
        upstream: &str,
        sql: &str,
        changes: &[DataFrame],
        raw: &HashMap<String, Vec<DataFrame>>,
        key_types: Option<&[DataType]>,
    ) -> Result<DataFrame> {
        let names: Vec<String> = self.config.upstreams.keys().cloned().collect();
        let prepared = sqlmap::prepare(sql, &plan.pipeline.name, upstream, &names)?;
        let changes_df = union_by_name(changes.to_vec())?.ok_or_else(|| eyre!("no change frames for `{upstream}`"))?;
        let mut registered = vec![sqlmap::CHANGES.to_string()];
        ctx.register_table(sqlmap::CHANGES, changes_df.into_view())?;
        let result = async {
            for t in &prepared.tables {
                let relation = self.relation_with_images(ctx, plan, t, raw.get(t)).await?;
                ctx.register_table(t.as_str(), relation.into_view())?;
                registered.push(t.clone());
            }
            ctx.sql(&prepared.sql).await.map_err(color_eyre::Report::from)
        }
        .await;
        for r in &registered {
            ctx.deregister_table(r.as_str())?;
        }
        let df = result.wrap_err_with(|| format!("pipeline `{}`, source `{upstream}`: the `sql` failed", plan.pipeline.name))?;
        let columns: Vec<String> = df.schema().fields().iter().map(|f| f.name().clone()).collect();
        sqlmap::check_output(&columns, &plan.pipeline.key, &plan.pipeline.name, upstream)?;
        let read = plan.reads.iter().find(|r| r.upstream == upstream);
        keymap::project_sql_output(df, &plan.pipeline.key, key_types, prepared.provenance, read.map(|r| (r.pinned, r.pinned_ts)))
    }

    /// Another upstream as a SQL source sees it: snapshot at the pin ∪ this run's pre-images/deletes.
    async fn relation_with_images(
        &self,
        ctx: &SessionContext,
        plan: &Plan,
        name: &str,
        images: Option<&Vec<DataFrame>>,
    ) -> Result<DataFrame> {
        let table = plan.tables.get(name).ok_or_else(|| eyre!("upstream `{name}` was not pinned for this run"))?;
        table.update_datafusion_session(&ctx.state())?;
        let snapshot = ctx.read_table(table.table_provider().await?)?;
        let columns: Vec<String> = snapshot.schema().fields().iter().map(|f| f.name().clone()).collect();
        let mut all = vec![snapshot];
        for df in images.into_iter().flatten() {
            let before = df
                .clone()
                .filter(
                    deltalake::datafusion::prelude::ident(cdf::CHANGE_TYPE)
                        .in_list(vec![deltalake::datafusion::prelude::lit("delete"), deltalake::datafusion::prelude::lit("update_preimage")], false),
                )?
                .select(columns.iter().map(|c| deltalake::datafusion::prelude::ident(c)).collect::<Vec<_>>())?;
            all.push(before);
        }
        union_by_name(all)?.ok_or_else(|| eyre!("no relation for `{name}`"))
    }

    async fn read_range(&self, ctx: &SessionContext, name: &str, table: &DeltaTable, range: ReadRange) -> Result<Vec<DataFrame>> {
        match range {
            ReadRange::Changes { start, end } => {
                match self.cycle.as_ref().filter(|c| c.shared.contains_key(name)) {
                    Some(cycle) => Ok(vec![self.shared_changes(ctx, cycle, name, table, start, end).await?]),
                    None => Ok(vec![cdf::changes_frame(ctx, name, table, start, end, &self.scans).await?]),
                }
            }
            ReadRange::SnapshotThenChanges { snapshot, end } => {
                let mut frames = vec![cdf::snapshot_frame(ctx, name, table, snapshot, &self.scans).await?];
                if end > snapshot {
                    frames.push(cdf::changes_frame(ctx, name, table, snapshot + 1, end, &self.scans).await?);
                }
                Ok(frames)
            }
        }
    }

    /// A change range read once per cycle and served from memory to every pipeline that reads it.
    async fn shared_changes(
        &self,
        ctx: &SessionContext,
        cycle: &Cycle,
        name: &str,
        table: &DeltaTable,
        start: u64,
        end: u64,
    ) -> Result<DataFrame> {
        let cell = {
            let mut reads = cycle.reads.lock().map_err(|_| eyre!("shared read cache poisoned"))?;
            reads.entry((name.to_string(), start, end)).or_default().clone()
        };
        let columns = cycle.shared.get(name).cloned().flatten();
        let batches = cell
            .get_or_try_init(|| async {
                let mut df = cdf::changes_frame(ctx, name, table, start, end, &self.scans).await?;
                if let Some(cols) = &columns {
                    let mut keep: Vec<&str> = cols.iter().map(String::as_str).collect();
                    keep.extend([cdf::CHANGE_TYPE, cdf::COMMIT_VERSION, cdf::COMMIT_TIMESTAMP]);
                    // A missing key column is reported by the pipeline's own projection later.
                    let present: Vec<&str> =
                        keep.into_iter().filter(|c| df.schema().field_with_unqualified_name(c).is_ok()).collect();
                    df = df.select_columns(&present)?;
                }
                let batches = df.collect().await.map_err(|e| cdf::explain_read_error(name, start, end, e.into()))?;
                Ok::<SharedRead, color_eyre::Report>(Arc::new(batches))
            })
            .await?
            .clone();
        let planned = match batches.first() {
            Some(b) => b.schema(),
            None => cdf::changes_frame(ctx, name, table, start, end, &ScanCounter::default()).await?.schema().inner().clone(),
        };
        let mem = keymap::mem_table(planned, batches.as_ref().clone())?;
        Ok(ctx.read_table(Arc::new(mem))?)
    }

    /// Key column types: the link table's when it exists, else the `keys` sources' (the widest
    /// integer where they differ in width, as the link table will be created); `None` for a
    /// pipeline of `sql` sources only (their output types are used).
    async fn arrow_key_types(&self, plan: &Plan) -> Result<Option<Vec<DataType>>> {
        if let Some(t) = self.planned_link_table(plan).await? {
            return link::arrow_key_types(&t, &plan.pipeline.key).map(Some);
        }
        let mut widest: Option<Vec<DataType>> = None;
        for source in &plan.pipeline.sources {
            let (KeyMapping::Columns(cols), Some(table)) = (&source.mapping, plan.tables.get(&source.upstream)) else { continue };
            let schema = table.snapshot()?.snapshot().arrow_schema();
            let types = cols
                .iter()
                .map(|c| {
                    schema.field_with_name(c).map(|f| f.data_type().clone()).map_err(|_| {
                        color_eyre::Report::from(Error::KeyColumnMissing {
                            name: source.upstream.clone(),
                            column: c.clone(),
                            pipeline: plan.pipeline.name.clone(),
                            available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                        })
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            widest = Some(match widest {
                None => types,
                Some(w) => w.into_iter().zip(types).map(|(a, b)| if wider_integer(&b, &a) { b } else { a }).collect(),
            });
        }
        Ok(widest)
    }

    /// MERGE a run's (or replay's) keys into the pipeline's link table under `plan.run_id`.
    ///
    /// Refused unless the link table's last run is older than `plan.run_id`: a writer that lost
    /// its lease cannot commit a run over a newer one, nor the same run twice. The check reads
    /// the snapshot the commit is built on, and the commit carries the pipeline's application
    /// transaction, so a concurrent commit of another run conflicts with it: check and commit
    /// are one step.
    async fn write_keys(
        &self,
        plan: &Plan,
        affected: AffectedKeys,
        kind: WriteKind,
        fence: Option<&Fence>,
        before_commit: &(dyn Fn() -> Result<()> + Sync),
    ) -> Result<LinkWriteMetrics> {
        let per_key = kind.mark_provenance(Arc::new(affected).per_key().await?)?;
        let table = self.link_table_for(plan, Some(&per_key.schema())).await?;
        let committed = match &plan.link {
            Some(_) => plan.link_committed,
            None => link::committed_run_id(&table, &plan.pipeline.name).await?,
        };
        if let Some(newer) = committed.filter(|c| *c >= plan.run_id) {
            return Err(Error::Fenced {
                pipeline: plan.pipeline.name.clone(),
                what: format!("the link-table commit of run {}", plan.run_id),
                why: format!("the link table already holds run {newer}"),
                generation: fence.map_or(0, Fence::generation),
            }
            .into());
        }
        let pinned: std::collections::BTreeMap<String, i64> = plan.reads.iter().map(|r| (r.upstream.clone(), r.pinned as i64)).collect();
        let merge = LinkMerge {
            pipeline: &plan.pipeline.name,
            key: &plan.pipeline.key,
            run_id: plan.run_id,
            kind,
            now_us: now_ms() * 1000,
            target_file_size: self.link_file_size,
            strategy: self.merge_strategy,
            deletion_vectors: plan.pipeline.deletion_vectors,
            before_commit,
            pinned: &pinned,
            lease_generation: fence.map(Fence::generation),
        };
        let started = Instant::now();
        let metrics = merge.execute(table, per_key).await.map_err(|e| link_conflict(e, plan, fence))?.1;
        Ok(LinkWriteMetrics { duration: started.elapsed(), ..metrics })
    }

    async fn link_table_for(&self, plan: &Plan, per_key: Option<&deltalake::arrow::datatypes::SchemaRef>) -> Result<DeltaTable> {
        let key_types: Vec<(String, DeltaType)> = match key_types_over_sources(&plan.pipeline, &plan.tables, None)? {
            Some(types) => types,
            // Only `sql` sources: the key types of the keys at hand, else of the first query's
            // planned output.
            None => match per_key {
                Some(schema) => link::delta_key_types(schema, &plan.pipeline.key)?,
                None => {
                    let (upstream, sql) = plan
                        .pipeline
                        .sources
                        .iter()
                        .find_map(|s| match &s.mapping {
                            KeyMapping::Sql(sql) => Some((s.upstream.as_str(), sql.as_str())),
                            _ => None,
                        })
                        .ok_or_else(|| eyre!("pipeline `{}` has no sources", plan.pipeline.name))?;
                    link::delta_key_types(&self.plan_sql(&plan.pipeline, upstream, sql).await?, &plan.pipeline.key)?
                }
            },
        };
        match &plan.link {
            Some(t) => link::checked(t.clone(), &plan.pipeline.name, &key_types),
            None => link::open_or_create(&plan.pipeline.link_table, &plan.pipeline.name, &key_types, plan.pipeline.deletion_vectors, self.storage()).await,
        }
    }

    /// Re-derive keys for an explicit version range without moving the tracker: into the
    /// pipeline's link table (a new run_id, provenance marked as replay) or into a scratch
    /// link table. A dry run (nothing written) unless `replay.execute`.
    pub async fn replay(&self, replay: &Replay) -> Result<ReplayReport> {
        self.replay_with(replay, &RunOptions::default()).await
    }

    /// [`Engine::replay`] reporting its steps (and, in tests, failing after one) like a run:
    /// `IntentRecorded` after the `replay-intent` audit, `LinkFilesWritten` and `LinkCommitted`
    /// around the link-table commit, `TrackerCommitted` after the `replay` audit.
    pub async fn replay_with(&self, replay: &Replay, opts: &RunOptions) -> Result<ReplayReport> {
        let started = Instant::now();
        let mut pipeline = self.config.pipeline(&replay.pipeline)?.clone();
        // `--into` the pipeline's own link table is a production replay, with its guards.
        let scratch = replay.into.as_ref().filter(|into| !same_table(into, &pipeline.link_table));
        if scratch.is_none() && !pipeline.reset_allowed && replay.execute {
            return Err(eyre!(
                "pipeline `{}` has `reset_allowed = false` in {}: replays into its link table are refused (use --into URI for a scratch table)",
                pipeline.name,
                self.config.path.display()
            ));
        }
        if replay.execute {
            self.refuse_if_read_only(&format!("replay of pipeline `{}`", pipeline.name))?;
        }
        if let Some(into) = scratch {
            pipeline.link_table = into.clone();
        }
        let names = if replay.upstreams.is_empty() { pipeline.upstream_names() } else { replay.upstreams.clone() };
        let mut reads = Vec::new();
        let mut tables = HashMap::new();
        for name in names {
            if !pipeline.sources.iter().any(|s| s.upstream == name) {
                return Err(eyre!("pipeline `{}` does not read upstream `{name}`", pipeline.name));
            }
            let u = self.config.upstream(&name)?;
            let mut table = lake::open_upstream(&name, &u.uri, self.storage()).await?;
            let latest = lake::table_version(&table)?;
            let to = replay.to_version.unwrap_or(latest);
            if to > latest || replay.from_version > to {
                return Err(eyre!(
                    "upstream `{name}`: cannot replay {}..={to}; its versions are 0..={latest} and --from-version must not exceed --to-version",
                    replay.from_version
                ));
            }
            if to != latest {
                table.load_version(to).await?;
            }
            let range = ReadRange::Changes { start: replay.from_version, end: to };
            let pinned_ts = lake::read_commit(&table, to).await?.and_then(|c| c.timestamp_ms);
            let read = UpstreamRead {
                upstream: name.clone(),
                processed: Some(replay.from_version as i64 - 1),
                tracked: true,
                pinned: to,
                pinned_ts,
                range: Some(range.into()),
            };
            check_readable(&read, &table).await?;
            reads.push(read);
            tables.insert(name, table);
        }
        // Tables a `sql` source joins, replayed or not (at their latest versions).
        self.open_sql_tables(&pipeline, &mut tables).await?;
        let mut plan = Plan { pipeline, run_id: 0, resumed: false, reads, tables, prior: HashMap::new(), link: None, link_committed: None };
        let ctx = session();
        let affected = self.read_keys(&ctx, &plan).await?;
        let mut report = ReplayReport {
            pipeline: replay.pipeline.clone(),
            target: crate::config::display_uri(&plan.pipeline.link_table),
            upstreams: plan.reads.clone(),
            change_rows: affected.as_ref().map_or(0, |a| a.change_rows),
            distinct_keys: affected.as_ref().map_or(0, |a| a.distinct_keys),
            run_id: None,
            written: false,
            duration: Duration::ZERO,
        };
        if !replay.execute {
            report.duration = started.elapsed();
            return Ok(report);
        }
        let lease = crate::lease::acquire(self, &replay.pipeline, "replay").await?;
        let fence = lease.fence();
        let result = async {
            plan.run_id = self.next_run_id_for_replay(&plan, scratch.is_none()).await?;
            // Audited before anything is written, so a replay that dies mid-write is on record
            // too (as started, never finished); the second record says it finished.
            let audited = |action| {
                let mut audit = audit(action, &plan).fenced(&fence);
                audit.reason = replay.reason.clone();
                audit.details["into"] = serde_json::json!(crate::config::display_uri(&plan.pipeline.link_table));
                audit
            };
            let name = replay.pipeline.as_str();
            let mut tracker = self.tracker().await?;
            fence.check()?;
            tracker.record(&audited("replay-intent")).await?;
            opts.passed(name, Step::IntentRecorded).await?;
            if let Some(a) = affected.filter(|a| a.distinct_keys > 0) {
                let before_commit = || {
                    fence.check()?;
                    opts.reached(name, Step::LinkFilesWritten)
                };
                self.write_keys(&plan, a, WriteKind::Replay, Some(&fence), &before_commit).await?;
            }
            opts.passed(name, Step::LinkCommitted).await?;
            fence.check()?;
            tracker.record(&audited("replay")).await?;
            opts.passed(name, Step::TrackerCommitted).await?;
            Ok::<_, color_eyre::Report>(())
        }
        .await;
        lease.release().await;
        result?;
        report.run_id = Some(plan.run_id);
        report.written = true;
        report.duration = started.elapsed();
        Ok(report)
    }

    async fn next_run_id_for_replay(&self, plan: &Plan, production: bool) -> Result<i64> {
        let committed = match lake::open_owned(&plan.pipeline.link_table, self.storage()).await? {
            Some(t) => link::committed_run_id(&t, &plan.pipeline.name).await?.unwrap_or(0),
            None => 0,
        };
        if !production {
            return Ok(committed + 1);
        }
        let rows = configured_rows(&plan.pipeline, self.tracker().await?.rows(Some(&plan.pipeline.name)).await?);
        if rows.iter().any(|r| r.pending_run_id.is_some()) {
            return Err(eyre!(
                "pipeline `{}` has an unfinished run; run it first (`deltalink run {}`) so it completes, then replay",
                plan.pipeline.name,
                plan.pipeline.name
            ));
        }
        Ok(rows.iter().flat_map(|r| [r.run_id, r.pending_run_id]).flatten().max().unwrap_or(0).max(committed) + 1)
    }

    /// Run several pipelines (all when `names` is empty), one after another.
    pub async fn run_many(&self, names: &[String], opts: &RunOptions) -> Vec<(String, Result<RunReport>)> {
        let names: Vec<String> =
            if names.is_empty() { self.config.pipelines.keys().cloned().collect() } else { names.to_vec() };
        let mut readers: HashMap<String, usize> = HashMap::new();
        for n in &names {
            if let Ok(p) = self.config.pipeline(n) {
                for u in p.upstream_names() {
                    *readers.entry(u).or_default() += 1;
                }
            }
        }
        let pipelines: Vec<&Pipeline> = names.iter().filter_map(|n| self.config.pipeline(n).ok()).collect();
        // Pipelines run concurrently (bounded), each as its own task: as futures of one task
        // their CPU work (grouping, building and encoding link rows) shared one core.
        let parallel = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(2, 8);
        let cycle = Cycle {
            shared: readers
                .into_iter()
                .filter(|(_, n)| *n > 1)
                .map(|(u, _)| {
                    let cols = columns_needed(&pipelines, &u);
                    (u, cols)
                })
                .collect(),
            heavy: Some(tokio::sync::Semaphore::new(parallel)),
            pipelines: names.len(),
            ..Default::default()
        };
        let engine = Engine { cycle: Some(Arc::new(cycle)), ..self.clone() };
        let runs = names.into_iter().map(|n| {
            let (engine, opts) = (engine.clone(), opts.clone());
            async move {
                let task = {
                    let (n, opts) = (n.clone(), opts.clone());
                    crate::task::spawn_owned(async move { engine.run(&n, &opts).await })
                };
                let r = task.await.unwrap_or_else(|e| Err(eyre!("the run of pipeline `{n}` stopped: {e}")));
                if let Some(tx) = &opts.events {
                    let result = r.as_ref().map(Clone::clone).map_err(|e| format!("{e:#}"));
                    let _ = tx.send(RunEvent::Finished { pipeline: n.clone(), result });
                }
                (n, r)
            }
        });
        // Unordered: a finished pipeline frees its slot at once, not when the ones started
        // before it finish too; the results are put back in the order of `names`.
        let mut done: Vec<(usize, (String, Result<RunReport>))> = futures::stream::iter(runs.enumerate())
            .map(|(i, run)| async move { (i, run.await) })
            .buffer_unordered(parallel * 2)
            .collect()
            .await;
        done.sort_by_key(|(i, _)| *i);
        done.into_iter().map(|(_, r)| r).collect()
    }
}

async fn decide_range(pipeline: &Pipeline, table: &DeltaTable, mut read: UpstreamRead) -> Result<UpstreamRead> {
    if !read.tracked && pipeline.start == StartFrom::Latest {
        return Ok(read); // a new `latest` pipeline records the pin and reads nothing
    }
    let earliest = match read.processed {
        None => lake::list_log(table).await?.earliest_readable(read.pinned),
        Some(_) => lake::EarliestReadable::FullHistory,
    };
    read.range = cdf::plan_range(read.processed, read.pinned, earliest).map(Into::into);
    Ok(read)
}

/// A link commit that lost to another writer's (the same run committed by a process that took
/// the lease over, or a newer run) in the fencing error's words; other errors as they are.
fn link_conflict(e: color_eyre::Report, plan: &Plan, fence: Option<&Fence>) -> color_eyre::Report {
    if !format!("{e:#}").to_lowercase().contains("concurrent transaction") {
        return e;
    }
    Error::Fenced {
        pipeline: plan.pipeline.name.clone(),
        what: format!("the link-table commit of run {}", plan.run_id),
        why: format!("another writer committed to the link table since this run read it ({e:#})"),
        generation: fence.map_or(0, Fence::generation),
    }
    .into()
}

/// Whether two locations name the same table (a trailing slash aside).
fn same_table(a: &url::Url, b: &url::Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// A `sql` source may join only upstreams the pipeline reads: another table would be read at
/// whatever version is latest (a redo of the run could see another one) and its own changes
/// would never mark keys (the delta rule needs its change rows too).
fn refuse_joins_outside(pipeline: &Pipeline, upstream: &str, joined: &[String]) -> Result<()> {
    let reads = pipeline.upstream_names();
    let Some(outside) = joined.iter().find(|t| !reads.contains(t)) else { return Ok(()) };
    Err(eyre!(
        "pipeline `{}`, source `{upstream}`: the `sql` joins upstream `{outside}`, which is not a source of the pipeline: it would be read unpinned and its changes would never mark keys\n  fix: add it as a source ([[pipelines.{}.sources]] upstream = \"{outside}\" with the `keys` or `sql` that map its changes to the key)",
        pipeline.name,
        pipeline.name
    ))
}

/// Each key column's type over the pipeline's `keys` sources — the widest where they are
/// integers of different widths, so a new link table holds every source's keys — checked against
/// the link table's when it exists. Sources whose keys cannot share the column they are written
/// to are refused while planning (before the intent), naming both columns; `None` for a
/// pipeline of `sql` sources only.
fn key_types_over_sources(
    pipeline: &Pipeline,
    tables: &HashMap<String, DeltaTable>,
    link: Option<&DeltaTable>,
) -> Result<Option<Vec<(String, DeltaType)>>> {
    let key = &pipeline.key;
    let mut chosen: Vec<Option<(DeltaType, String)>> = vec![None; key.len()];
    for source in &pipeline.sources {
        let (KeyMapping::Columns(cols), Some(table)) = (&source.mapping, tables.get(&source.upstream)) else { continue };
        let types = link::key_types_from(table, &source.upstream, &pipeline.name, cols, key)?;
        for (i, ((_, t), column)) in types.into_iter().zip(cols).enumerate() {
            let here = format!("upstream `{}` column `{column}` ({t})", source.upstream);
            let widened = match &chosen[i] {
                None => true,
                Some((c, _)) if c == &t => false,
                Some((c, there)) => match (integer_width(c), integer_width(&t)) {
                    (Some(a), Some(b)) => b > a,
                    _ => return Err(key_types_differ(pipeline, &key[i], there, &here, "they are not of one kind")),
                },
            };
            if widened {
                chosen[i] = Some((t, here));
            }
        }
    }
    if chosen.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(link) = link {
        let schema = link.snapshot()?.schema();
        for (k, (t, source)) in key.iter().zip(&chosen).filter_map(|(k, c)| Some((k, c.as_ref()?))) {
            let Some(held) = schema.field(k).map(|f| f.data_type().clone()) else { continue };
            if let (Some(wide), Some(narrow)) = (integer_width(t), integer_width(&held)) {
                if wide > narrow {
                    let table = format!("the link table's column `{k}` ({held})");
                    return Err(key_types_differ(pipeline, k, &table, source, "its keys may not fit the link table's column"));
                }
            }
        }
    }
    Ok(Some(key.iter().cloned().zip(chosen.into_iter().map(|c| c.map(|(t, _)| t).unwrap_or(DeltaType::STRING))).collect()))
}

/// Whether `a` is an integer type wider than the integer type `b`.
fn wider_integer(a: &DataType, b: &DataType) -> bool {
    a.is_integer() && b.is_integer() && a.primitive_width() > b.primitive_width()
}

/// The width rank of a Delta integer type (`None`: not an integer).
fn integer_width(t: &DeltaType) -> Option<u8> {
    [DeltaType::BYTE, DeltaType::SHORT, DeltaType::INTEGER, DeltaType::LONG].iter().position(|i| i == t).map(|p| p as u8)
}

fn key_types_differ(pipeline: &Pipeline, key: &str, first: &str, second: &str, why: &str) -> color_eyre::Report {
    Error::KeyTypesDiffer { pipeline: pipeline.name.clone(), key: key.into(), first: first.into(), second: second.into(), why: why.into() }.into()
}

/// A link table deleted by hand while the tracker says runs happened would silently lose
/// every key written so far: refuse and say how to rebuild it.
fn check_link_table_present(pipeline: &Pipeline, rows: &[TrackerRow], link: Option<&DeltaTable>) -> Result<()> {
    if let (Some(run), None) = (rows.iter().filter_map(|r| r.run_id).max(), link) {
        return Err(eyre!(
            "pipeline `{}`: its link table {} is missing, but the tracker records run {run}; the keys written so far are gone\n  fix: rebuild it from history with  deltalink tracker reset {} --to-earliest --execute --reason \"link table lost\"  then  deltalink run {}",
            pipeline.name,
            crate::config::display_uri(&pipeline.link_table),
            pipeline.name,
            pipeline.name
        ));
    }
    Ok(())
}

/// Refuse a range the change feed cannot serve (CDF off, versions gone) before anything is
/// written, so a failing run leaves no intent behind.
async fn check_readable(read: &UpstreamRead, table: &DeltaTable) -> Result<()> {
    match read.range.map(ReadRangeView::to_range) {
        Some(ReadRange::Changes { start, end }) => cdf::check_range(&read.upstream, table, start, end).await,
        Some(ReadRange::SnapshotThenChanges { snapshot, end }) if end > snapshot => {
            cdf::check_range(&read.upstream, table, snapshot + 1, end).await
        }
        _ => Ok(()),
    }
}

fn explain(e: color_eyre::Report, plan: &Plan) -> color_eyre::Report {
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

fn union_by_name(frames: Vec<DataFrame>) -> Result<Option<DataFrame>> {
    let mut it = frames.into_iter();
    let Some(first) = it.next() else { return Ok(None) };
    Ok(Some(it.try_fold(first, |acc, f| acc.union_by_name(f))?))
}

pub fn session() -> SessionContext {
    DeltaSessionContext::new().into_inner()
}

fn send(opts: &RunOptions, pipeline: &str, text: String) {
    if let Some(tx) = &opts.events {
        let _ = tx.send(RunEvent::Message { pipeline: pipeline.into(), text });
    }
}

/// What became of a pending run (see [`Engine::resolve_pending`]).
enum PendingRun {
    None,
    /// Its link commit landed: only the tracker is to be completed.
    Committed(i64),
    /// Nothing of it landed: redo it with its pins and run_id.
    NotCommitted,
    /// Another writer's commit holds its run_id: plan a new run instead.
    Abandoned,
}

/// The pipeline's rows of the upstreams it reads now: a row of an upstream removed from the
/// config (its intent included) no longer takes part in runs.
fn configured_rows(pipeline: &Pipeline, mut rows: Vec<TrackerRow>) -> Vec<TrackerRow> {
    let names = pipeline.upstream_names();
    rows.retain(|r| names.contains(&r.upstream));
    rows
}

/// The rows of a committed pending run, completed: processed through its pins.
fn completed_rows(rows: &[TrackerRow], pending: i64, note: &str) -> Vec<TrackerRow> {
    rows.iter()
        .filter(|r| r.pending_run_id == Some(pending))
        .map(|r| {
            let mut d = r.clone();
            d.last_processed_version = r.pending_version;
            d.last_processed_ts = IntentNote::parse(r.note.as_deref()).pinned_ts;
            d.run_id = Some(pending);
            d.pending_version = None;
            d.pending_run_id = None;
            d.updated_at = Some(now_ms());
            d.updated_by = Some(crate::tracker::operator());
            d.note = Some(note.into());
            d
        })
        .collect()
}

/// Each row written over the row `read` gives for its upstream (compare-and-set).
fn writes_over(rows: &[TrackerRow], read: impl Fn(&str) -> Option<TrackerRow>) -> Vec<RowWrite> {
    rows.iter().map(|r| RowWrite::new(r.clone(), read(&r.upstream))).collect()
}

/// What an intent row's note keeps for a recovery that only completes the tracker: the pinned
/// commit's time, and whether the upstream was untracked (a `start = "latest"` pipeline's
/// first run records its pin and reads nothing — also when it is resumed).
#[derive(Debug, Default, PartialEq, Eq)]
struct IntentNote {
    pinned_ts: Option<i64>,
    untracked: bool,
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

    fn parse(note: Option<&str>) -> IntentNote {
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
enum RowState {
    Intent,
    Done,
}

fn plan_rows(plan: &Plan, state: RowState) -> Vec<TrackerRow> {
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
            row.updated_at = Some(now_ms());
            row.updated_by = Some(crate::tracker::operator());
            row
        })
        .collect()
}

fn audit(action: &'static str, plan: &Plan) -> Audit {
    let mut a = Audit::new(action, &plan.pipeline.name);
    a.details = serde_json::json!({
        "run_id": plan.run_id,
        "upstreams": plan.reads.iter().map(|r| serde_json::json!({
            "upstream": r.upstream, "from": r.processed, "to": r.pinned,
        })).collect::<Vec<_>>(),
    });
    a
}

/// What `preview` shows: the keys of the next run with provenance.
#[derive(Debug, Clone, Serialize)]
pub struct Preview {
    pub pipeline: String,
    pub key: Vec<String>,
    pub upstreams: Vec<UpstreamRead>,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    pub rows: Vec<PreviewRow>,
}

/// A replay request: re-derive keys over an explicit range.
#[derive(Debug, Clone)]
pub struct Replay {
    pub pipeline: String,
    pub from_version: u64,
    pub to_version: Option<u64>,
    pub upstreams: Vec<String>,
    pub into: Option<url::Url>,
    pub execute: bool,
    /// Why, for the tracker's audit log.
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ReplayReport {
    pub pipeline: String,
    pub target: String,
    pub upstreams: Vec<UpstreamRead>,
    pub change_rows: u64,
    pub distinct_keys: u64,
    pub run_id: Option<i64>,
    pub written: bool,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
}
