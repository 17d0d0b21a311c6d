//! Link-table and tracker upkeep: a table that takes a MERGE every few minutes gathers small
//! files, deletion vectors and removed files nobody reads. `maintain` rewrites link files whose
//! deletion vectors delete most of their rows (deltalink's own purge), compacts small files with
//! delta-rs's OPTIMIZE (its scan applies deletion vectors, so compacted files hold live rows
//! only), then VACUUMs files no reader can need: never files a version at or after the oldest
//! version a registered consumer may still be reading (its last `consume` answer), nor files
//! removed more recently than the retention. A dry run first, with files and bytes before → after.

use std::time::Duration;

use color_eyre::eyre::{Result, WrapErr};
use deltalake::operations::vacuum::VacuumMode;
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, Path};
use std::future::IntoFuture;
use futures::StreamExt;
use serde::Serialize;

use crate::config::display_uri;
use crate::engine::Engine;
use crate::store::consumer::ConsumerProgress;
use crate::store::lake;
use crate::store::lease::Fence;
use crate::store::link::{self, Purged};
use crate::store::tracker::Audit;
use crate::util::time::now_ms;

/// What to maintain and how.
#[derive(Debug, Clone)]
pub struct MaintainOptions {
    /// Keep removed files younger than this (default: the table's
    /// `delta.deletedFileRetentionDuration`, 7 days when unset).
    pub retention: Option<Duration>,
    /// Files below this size are compacted (default: the engine's link-table file size).
    pub target_file_size: Option<u64>,
    /// How far the clocks of the hosts writing the link table may disagree: files removed up to
    /// this long before a consumer's version was committed are kept too.
    pub clock_skew: Duration,
    pub execute: bool,
}

/// A file whose deletion vector deletes this share of its rows or more is rewritten.
pub const PURGE_FRACTION: f64 = 0.5;

/// Files no commit references are vacuumed only once older than this, whatever retention the
/// operator asks for: a writer's files exist before its commit refers to them (a run's link
/// files; a tracker commit, which takes no lease), and an hour is far beyond any commit's
/// write-to-commit time. Files a commit removed follow the retention alone.
pub const MIN_VACUUM_RETENTION: Duration = Duration::from_secs(3600);

/// Default [`MaintainOptions::clock_skew`].
pub const DEFAULT_CLOCK_SKEW: Duration = Duration::from_secs(300);

impl MaintainOptions {
    pub fn dry_run() -> Self {
        MaintainOptions { retention: None, target_file_size: None, clock_skew: DEFAULT_CLOCK_SKEW, execute: false }
    }
    pub fn with_target_file_size(mut self, bytes: u64) -> Self {
        self.target_file_size = Some(bytes);
        self
    }
    pub fn with_clock_skew(mut self, skew: Duration) -> Self {
        self.clock_skew = skew;
        self
    }
    pub fn with_retention(mut self, retention: Duration) -> Self {
        self.retention = Some(retention);
        self
    }
    pub fn with_execute(mut self, execute: bool) -> Self {
        self.execute = execute;
        self
    }
}

/// Files of a table version: how many, how big, how many carry a deletion vector.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Files {
    pub files: u64,
    pub bytes: u64,
    pub with_deletion_vectors: u64,
}

impl Files {
    fn of(table: &DeltaTable) -> Result<Files> {
        let snapshot = table.snapshot()?;
        let mut f = Files::default();
        for file in snapshot.log_data().iter() {
            f.files += 1;
            f.bytes += file.size().max(0) as u64;
            f.with_deletion_vectors += u64::from(file.deletion_vector_descriptor().is_some());
        }
        Ok(f)
    }
}

/// Upkeep of one table: planned (dry run) or done.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TableUpkeep {
    /// `link table of P` or `tracker`.
    pub table: String,
    pub uri: String,
    pub before: Files,
    /// After compaction (estimated by the dry run: small files binned to the target size).
    pub after: Files,
    /// Files whose deletion vectors delete most of their rows, rewritten with their live rows
    /// (link tables; delta-rs's OPTIMIZE skips files above the target size whatever they hide).
    pub purge: Purged,
    /// Small files compaction rewrites.
    pub compact_files: u64,
    /// Files no longer referenced that vacuum deletes (storage, not the table's rows).
    pub vacuum_files: u64,
    pub vacuum_bytes: u64,
    /// The retention vacuum used: the operator's, raised to keep what consumers may read.
    pub retention_seconds: u64,
    /// The oldest link-table version a consumer may still be reading (kept readable).
    pub keep_from_version: Option<i64>,
    pub executed: bool,
}

/// Maintain the link tables of `pipelines` (all when empty) and, with `tracker`, the tracker.
pub async fn maintain(engine: &Engine, pipelines: &[String], tracker: bool, opts: &MaintainOptions) -> Result<Vec<TableUpkeep>> {
    let names: Vec<String> = if pipelines.is_empty() { engine.config.pipelines.keys().cloned().collect() } else { pipelines.to_vec() };
    let mut out = Vec::new();
    for name in &names {
        if let Some(upkeep) = maintain_link(engine, name, opts).await? {
            out.push(upkeep);
        }
    }
    if tracker {
        if let Some(upkeep) = maintain_tracker(engine, opts).await? {
            out.push(upkeep);
        }
    }
    Ok(out)
}

/// One pipeline's link table, under its lease when executing (no run commits meanwhile, and a
/// full vacuum cannot take the files of a run about to commit).
async fn maintain_link(engine: &Engine, pipeline: &str, opts: &MaintainOptions) -> Result<Option<TableUpkeep>> {
    let p = engine.config.pipeline(pipeline)?;
    let Some(table) = lake::open_owned(&p.link_table, &engine.config.storage_options).await? else { return Ok(None) };
    let rows = engine.tracker().await?.consumer_rows(Some(pipeline)).await?;
    let keep_from = p.consumers.iter().filter_map(|c| ConsumerProgress::find(&rows, &c.name).reading()).map(|(v, _)| v).min();
    let subject = Subject::Link(pipeline);
    if !opts.execute {
        return plan(engine, &table, subject, keep_from, opts).await.map(Some);
    }
    engine.refuse_if_read_only(&format!("maintenance of the link table of `{pipeline}`"))?;
    let lease = crate::store::lease::acquire(&engine.config, pipeline, "maintain").await?;
    // The table as of now, under the lease: one opened before it may predate a run's commit.
    let table = lake::open_owned(&p.link_table, &engine.config.storage_options).await?.unwrap_or(table);
    crate::engine::test_point("maintain-leased");
    let result = execute(engine, table, subject, keep_from, Some(&lease.fence()), opts).await;
    lease.release().await;
    result.map(Some)
}

/// The tracker: rewritten whole by every commit, so nothing to compact but many removed files.
async fn maintain_tracker(engine: &Engine, opts: &MaintainOptions) -> Result<Option<TableUpkeep>> {
    let tracker = engine.tracker().await?;
    let Some(table) = tracker.table().cloned() else { return Ok(None) };
    if !opts.execute {
        return plan(engine, &table, Subject::Tracker, None, opts).await.map(Some);
    }
    engine.refuse_if_read_only("maintenance of the tracker")?;
    // No lease: tracker commits are compare-and-set, and the vacuum keeps young files.
    execute(engine, table, Subject::Tracker, None, None, opts).await.map(Some)
}

/// Which table is maintained.
#[derive(Clone, Copy)]
enum Subject<'a> {
    /// A pipeline's link table: written by deltalink, so its deletion vectors can be purged.
    Link(&'a str),
    Tracker,
}

impl Subject<'_> {
    fn label(self) -> String {
        match self {
            Subject::Link(p) => format!("link table of {p}"),
            Subject::Tracker => "tracker".into(),
        }
    }
}

fn target_size(engine: &Engine, opts: &MaintainOptions) -> u64 {
    opts.target_file_size.unwrap_or(engine.link_file_size).max(1)
}

/// The dry run: what compaction would leave (small files binned to the target size; a bin of
/// one file is left alone, as delta-rs does) and what vacuum would delete.
async fn plan(engine: &Engine, table: &DeltaTable, subject: Subject<'_>, keep_from: Option<i64>, opts: &MaintainOptions) -> Result<TableUpkeep> {
    let before = Files::of(table)?;
    let target = target_size(engine, opts);
    let purge = match subject {
        Subject::Link(_) => link::heavily_deleted_files(table, PURGE_FRACTION)?,
        Subject::Tracker => Purged::default(),
    };
    // A purged file comes back as a file of its live rows: about its size less what it hides.
    let snapshot = table.snapshot()?;
    let log_data = snapshot.log_data();
    let sizes = log_data.iter().map(|f| {
        let size = f.size().max(0) as u64;
        let hidden = match (f.deletion_vector_descriptor(), f.num_records()) {
            (Some(dv), Some(rows)) if rows > 0 && dv.cardinality as f64 / rows as f64 >= PURGE_FRACTION => dv.cardinality as f64 / rows as f64,
            _ => 0.0,
        };
        (size as f64 * (1.0 - hidden)) as u64
    });
    let small: Vec<u64> = sizes.filter(|s| *s < target).collect();
    let small_bytes: u64 = small.iter().sum();
    let compact_files = if small.len() >= 2 { small.len() as u64 } else { 0 };
    let written = if compact_files > 0 { small_bytes.div_ceil(target).max(1) } else { 0 };
    let after = Files { files: before.files - compact_files + written, bytes: before.bytes, with_deletion_vectors: before.with_deletion_vectors };
    let retention = retention(table, keep_from, opts).await?;
    let (vacuum_files, vacuum_bytes) = vacuum(table.clone(), retention, false).await?.1;
    Ok(TableUpkeep {
        table: subject.label(),
        uri: display_uri(table.table_url()),
        before,
        after,
        purge,
        compact_files,
        vacuum_files,
        vacuum_bytes,
        retention_seconds: retention.as_secs(),
        keep_from_version: keep_from,
        executed: false,
    })
}

/// Purge, compact and vacuum; with `fence` (a link table's lease), each step only while the
/// lease is still held: a process frozen past its lease must not commit over the runs of the
/// process that took the pipeline over, nor vacuum against a log it no longer knows.
async fn execute(
    engine: &Engine,
    table: DeltaTable,
    subject: Subject<'_>,
    keep_from: Option<i64>,
    fence: Option<&Fence>,
    opts: &MaintainOptions,
) -> Result<TableUpkeep> {
    let held = || fence.map_or(Ok(()), Fence::check);
    let what = subject.label();
    let before = Files::of(&table)?;
    let target = target_size(engine, opts);
    let uri = display_uri(table.table_url());
    let mut audit = Audit::new("maintain", if let Subject::Link(p) = subject { p } else { "" });
    let props = || {
        deltalake::kernel::transaction::CommitProperties::default().with_metadata(vec![
            ("deltalink.action".to_string(), serde_json::json!("maintain")),
            ("deltalink.operator".to_string(), serde_json::json!(audit.operator)),
        ])
    };
    held()?;
    let (table, purge) = match subject {
        Subject::Link(_) => link::purge_deleted_rows(&table, PURGE_FRACTION, props()).await.wrap_err_with(|| format!("{what} ({uri})"))?,
        Subject::Tracker => (table, Purged::default()),
    };
    held()?;
    let (table, compacted) = table
        .optimize()
        .with_target_size(std::num::NonZeroU64::new(target).unwrap_or(std::num::NonZeroU64::MIN))
        .with_commit_properties(props())
        .await
        .wrap_err_with(|| format!("OPTIMIZE of the {what} ({uri}) failed; nothing was compacted"))?;
    let after = Files::of(&table)?;
    let retention = retention(&table, keep_from, opts).await?;
    held()?;
    let (_, (vacuum_files, vacuum_bytes)) = vacuum(table, retention, true).await.wrap_err_with(|| format!("VACUUM of the {what} ({uri}) failed"))?;
    let upkeep = TableUpkeep {
        table: what,
        uri,
        before,
        after,
        purge,
        compact_files: compacted.num_files_removed,
        vacuum_files,
        vacuum_bytes,
        retention_seconds: retention.as_secs(),
        keep_from_version: keep_from,
        executed: true,
    };
    // On record in the tracker's audit log, like every other write an operator makes.
    audit.details = serde_json::to_value(&upkeep)?;
    engine.tracker().await?.record(&audit).await?;
    Ok(upkeep)
}

/// The vacuum retention: the operator's (default the table's deleted-file retention), raised so
/// that no file removed after the oldest version a consumer may be reading is deleted (a file
/// that version reads was removed at a later commit, stamped no earlier than that version's,
/// give or take the writers' clock skew).
async fn retention(table: &DeltaTable, keep_from: Option<i64>, opts: &MaintainOptions) -> Result<Duration> {
    let base = opts.retention.unwrap_or_else(|| lake::retention(table).deleted_files);
    let Some(v) = keep_from.filter(|v| *v >= 0) else { return Ok(base) };
    let committed = lake::read_commit(table, v as u64).await?.and_then(|c| c.timestamp_ms);
    // A version whose commit cannot be read any more: keep everything that still exists.
    let Some(at) = committed else { return Ok(Duration::from_secs(100 * 365 * 86_400)) };
    // Slack for clock skew between the writers that stamped the removes and this host.
    let since = Duration::from_millis((now_ms() - at).max(0) as u64) + opts.clock_skew;
    Ok(base.max(since))
}

/// Vacuum, or only its dry run; the files deleted (or that would be) and their bytes. Files a
/// commit removed go once older than `retention`. Files no commit references (a run that died
/// before its commit leaves them) go too, but only once older than [`MIN_VACUUM_RETENTION`]
/// as well: a writer's files exist before its commit refers to them.
async fn vacuum(table: DeltaTable, retention: Duration, execute: bool) -> Result<(DeltaTable, (u64, u64))> {
    let passes = [(VacuumMode::Lite, retention), (VacuumMode::Full, retention.max(MIN_VACUUM_RETENTION))];
    let run = |table: DeltaTable, mode: VacuumMode, retention: Duration, dry_run: bool| {
        table
            .vacuum()
            .with_mode(mode)
            .with_retention_period(chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX))
            .with_enforce_retention_duration(false)
            .with_dry_run(dry_run)
            .into_future()
    };
    let store = table.object_store();
    let mut table = table;
    let mut planned: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
    for (mode, r) in passes.clone() {
        let (t, metrics) = run(table, mode, r, true).await?;
        table = t;
        planned.extend(metrics.files_deleted);
    }
    // Owned paths and sizes summed after collecting: a future borrowing into the stream's
    // closures would not be `Send` for the console's task.
    let paths: Vec<Path> = planned.iter().map(|p| Path::from(p.as_str())).collect();
    let heads = paths.into_iter().map(move |path| {
        let store = store.clone();
        async move { store.head(&path).await.map(|m| m.size).unwrap_or(0) }
    });
    let sizes: Vec<u64> = futures::stream::iter(heads).buffer_unordered(16).collect().await;
    let bytes = sizes.iter().sum();
    if !execute {
        return Ok((table, (planned.len() as u64, bytes)));
    }
    let mut deleted = 0u64;
    for (mode, r) in passes {
        let (t, metrics) = run(table, mode, r, false).await?;
        table = t;
        deleted += metrics.files_deleted.len() as u64;
    }
    Ok((table, (deleted, bytes)))
}
