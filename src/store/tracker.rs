//! The tracker: a Delta table with one row per (pipeline, upstream) recording how far the
//! pipeline has read that upstream, plus the intent of an in-flight run.
//!
//! Every change is a MERGE commit whose commit info says what and why
//! (`deltalink.action`, `deltalink.pipeline`, operator, reason; several upserts committed
//! together list each under `deltalink.batch`): the tracker's own Delta history is the audit log.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::arrow::array::{
    Array, ArrayRef, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use deltalake::arrow::datatypes::{Field, Int64Type, Schema, TimestampMicrosecondType};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::schema::{DataType as DeltaType, StructField};
use deltalake::DeltaTable;
use url::Url;

use crate::config::display_uri;
use crate::util::arrow::timestamp_type;
use crate::util::who::operator;
use crate::store::lake;

/// One (pipeline, upstream) progress record.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TrackerRow {
    pub pipeline_name: String,
    pub upstream: String,
    /// Last upstream version fully processed; `None` = never read.
    pub last_processed_version: Option<i64>,
    /// Commit time of that version (ms since epoch).
    pub last_processed_ts: Option<i64>,
    pub run_id: Option<i64>,
    /// Intent of an in-flight run: the version pinned and the run_id it will commit as.
    pub pending_version: Option<i64>,
    pub pending_run_id: Option<i64>,
    pub updated_at: Option<i64>,
    pub updated_by: Option<String>,
    pub note: Option<String>,
}

impl TrackerRow {
    pub fn new(pipeline: &str, upstream: &str) -> Self {
        TrackerRow {
            pipeline_name: pipeline.into(),
            upstream: upstream.into(),
            last_processed_version: None,
            last_processed_ts: None,
            run_id: None,
            pending_version: None,
            pending_run_id: None,
            updated_at: None,
            updated_by: None,
            note: None,
        }
    }
    pub fn processed(&self) -> Option<i64> {
        self.last_processed_version
    }

    /// Written now, by this operator.
    pub fn touch(&mut self) {
        self.updated_at = Some(crate::util::time::now_ms());
        self.updated_by = Some(operator());
    }

    /// Written now, by this operator, with `note` saying why.
    pub fn stamp(&mut self, note: impl Into<String>) {
        self.touch();
        self.note = Some(note.into());
    }
}

/// The `upstream` of a consumer's progress row starts with this (config refuses upstream names
/// starting with `@`).
pub const CONSUMER_ROW_PREFIX: &str = "@consumer:";

pub fn is_consumer_row(upstream: &str) -> bool {
    upstream.starts_with(CONSUMER_ROW_PREFIX)
}

/// The `upstream` of a pipeline's pause row (see `store::pause`).
pub const PAUSE_ROW: &str = "@pause";

/// Rows that record something other than an upstream's progress (consumers, pauses): their
/// `upstream` starts with `@`, which config refuses in upstream names.
fn is_control_row(upstream: &str) -> bool {
    upstream.starts_with('@')
}

const COLUMNS: [(&str, Kind); 10] = [
    ("pipeline_name", Kind::Str),
    ("upstream", Kind::Str),
    ("last_processed_version", Kind::Long),
    ("last_processed_ts", Kind::Ts),
    ("run_id", Kind::Long),
    ("pending_version", Kind::Long),
    ("pending_run_id", Kind::Long),
    ("updated_at", Kind::Ts),
    ("updated_by", Kind::Str),
    ("note", Kind::Str),
];

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Long,
    Ts,
}

fn delta_columns() -> Vec<StructField> {
    COLUMNS
        .iter()
        .enumerate()
        .map(|(i, (n, k))| {
            let t = match k {
                Kind::Str => DeltaType::STRING,
                Kind::Long => DeltaType::LONG,
                Kind::Ts => DeltaType::TIMESTAMP,
            };
            StructField::new(*n, t, i >= 2)
        })
        .collect()
}

/// A row to write and the row its writer read before: the write's compare-and-set condition.
/// A stale writer (one that lost its lease and woke up late) finds the row changed and is
/// refused instead of overwriting what a newer writer or an operator wrote.
#[derive(Debug, Clone)]
pub struct RowWrite {
    pub row: TrackerRow,
    /// The row as the writer read it; `None`: there was no row.
    pub expected: Option<TrackerRow>,
}

impl RowWrite {
    pub fn new(row: TrackerRow, expected: Option<TrackerRow>) -> Self {
        RowWrite { row, expected }
    }

    /// Whether `current` (the row in the tracker now) lets this write through: it is what the
    /// writer read, or already this very write (a retry of a commit that landed).
    fn allowed(&self, current: Option<&TrackerRow>) -> Allowed {
        if current == Some(&self.row) {
            Allowed::AlreadyWritten
        } else if current == self.expected.as_ref() {
            Allowed::Yes
        } else {
            Allowed::No
        }
    }
}

#[derive(PartialEq, Eq)]
enum Allowed {
    Yes,
    AlreadyWritten,
    No,
}

/// A row in words, for a refused write's message.
fn describe_row(row: Option<&TrackerRow>) -> String {
    let Some(r) = row else { return "absent".into() };
    let v = |x: Option<i64>| x.map_or("none".to_string(), |x| x.to_string());
    format!(
        "processed {}, run {}, pending {} (run {}), written by {} ({})",
        v(r.last_processed_version),
        v(r.run_id),
        v(r.pending_version),
        v(r.pending_run_id),
        r.updated_by.as_deref().unwrap_or("?"),
        r.note.as_deref().unwrap_or(""),
    )
}

/// What a tracker commit is, recorded in its commit info.
#[derive(Debug, Clone)]
pub struct Audit {
    pub action: &'static str,
    pub pipeline: String,
    pub operator: String,
    pub reason: Option<String>,
    pub details: serde_json::Value,
    /// The lease generation (fencing token) the commit was made under.
    pub lease_generation: Option<u64>,
}

impl Audit {
    pub fn new(action: &'static str, pipeline: &str) -> Self {
        Audit {
            action,
            pipeline: pipeline.into(),
            operator: operator(),
            reason: None,
            details: serde_json::Value::Null,
            lease_generation: None,
        }
    }

    /// Made under the lease whose fencing token is `fence`.
    pub fn fenced(mut self, fence: &crate::store::lease::Fence) -> Self {
        self.lease_generation = Some(fence.generation());
        self
    }

    /// The commit-info fields of this audit.
    fn fields(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut fields = serde_json::Map::new();
        fields.insert("deltalink.action".into(), serde_json::json!(self.action));
        fields.insert("deltalink.pipeline".into(), serde_json::json!(self.pipeline));
        fields.insert("deltalink.operator".into(), serde_json::json!(self.operator));
        if let Some(r) = &self.reason {
            fields.insert("deltalink.reason".into(), serde_json::json!(r));
        }
        if !self.details.is_null() {
            fields.insert("deltalink.details".into(), self.details.clone());
        }
        if let Some(g) = self.lease_generation {
            fields.insert("deltalink.lease_generation".into(), serde_json::json!(g));
        }
        fields.insert("deltalink.host".into(), serde_json::json!(crate::util::who::hostname()));
        fields
    }
}

pub struct Tracker {
    uri: Url,
    storage: HashMap<String, String>,
    table: Option<DeltaTable>,
}

impl Tracker {
    /// Open the tracker; it is created on first write, so read-only use never writes.
    pub async fn open(uri: &Url, storage: &HashMap<String, String>) -> Result<Tracker> {
        let table = lake::open_owned(uri, storage)
            .await
            .wrap_err_with(|| format!("cannot open the tracker table {}", display_uri(uri)))?;
        if let Some(t) = &table {
            check_schema(t)?;
        }
        Ok(Tracker { uri: uri.clone(), storage: storage.clone(), table })
    }

    /// A tracker over a table loaded before (its schema checked then); [`Tracker::refresh`]
    /// brings it up to date.
    pub fn loaded(uri: &Url, storage: &HashMap<String, String>, table: DeltaTable) -> Tracker {
        Tracker { uri: uri.clone(), storage: storage.clone(), table: Some(table) }
    }

    pub fn uri(&self) -> &Url {
        &self.uri
    }

    pub fn table(&self) -> Option<&DeltaTable> {
        self.table.as_ref()
    }

    async fn ensure_created(&mut self) -> Result<DeltaTable> {
        if let Some(t) = &self.table {
            return Ok(t.clone());
        }
        let handle = lake::table_for_create(&self.uri, &self.storage).await?;
        let created = handle
            .create()
            .with_table_name("deltalink_tracker")
            .with_comment("deltalink tracker: (pipeline, upstream) -> last processed version")
            .with_columns(delta_columns())
            .await;
        let t = match created {
            Ok(t) => t,
            Err(e) => match lake::open_owned(&self.uri, &self.storage).await? {
                Some(t) => t, // created concurrently by another process
                None => return Err(e).wrap_err_with(|| format!("cannot create the tracker table {}", display_uri(&self.uri))),
            },
        };
        self.table = Some(t.clone());
        Ok(t)
    }

    /// Reload to the latest version (other processes write the tracker too).
    pub async fn refresh(&mut self) -> Result<()> {
        match &mut self.table {
            Some(t) => t.update_state().await.wrap_err("cannot refresh the tracker table")?,
            None => {
                self.table = lake::open_owned(&self.uri, &self.storage).await?;
            }
        }
        Ok(())
    }

    /// All (pipeline, upstream) rows, or those of one pipeline (consumers' and pauses' rows are
    /// not among them: see [`Tracker::consumer_rows`] and [`Tracker::pause_rows`]).
    pub async fn rows(&self, pipeline: Option<&str>) -> Result<Vec<TrackerRow>> {
        Ok(self.all_rows(pipeline).await?.into_iter().filter(|r| !is_control_row(&r.upstream)).collect())
    }

    /// The pause rows (of one pipeline), paused or resumed (see `store::pause`).
    pub async fn pause_rows(&self, pipeline: Option<&str>) -> Result<Vec<TrackerRow>> {
        Ok(self.all_rows(pipeline).await?.into_iter().filter(|r| r.upstream == PAUSE_ROW).collect())
    }

    /// The progress rows of downstream consumers (of one pipeline), kept beside the upstream
    /// rows under `upstream = "@consumer:NAME"` (see `store::consumer`).
    pub async fn consumer_rows(&self, pipeline: Option<&str>) -> Result<Vec<TrackerRow>> {
        Ok(self.all_rows(pipeline).await?.into_iter().filter(|r| is_consumer_row(&r.upstream)).collect())
    }

    async fn all_rows(&self, pipeline: Option<&str>) -> Result<Vec<TrackerRow>> {
        let Some(table) = &self.table else { return Ok(vec![]) };
        let all = match Latest::rows_of(&self.uri, table) {
            Some(rows) => rows,
            None => {
                let rows = Arc::new(read_rows(table).await?);
                Latest::remember(&self.uri, table, &rows);
                rows
            }
        };
        let mut rows: Vec<TrackerRow> = all.iter().filter(|r| pipeline.is_none_or(|p| r.pipeline_name == p)).cloned().collect();
        rows.sort_by(|a, b| (&a.pipeline_name, &a.upstream).cmp(&(&b.pipeline_name, &b.upstream)));
        Ok(rows)
    }

    /// Upsert rows in one commit carrying `audit` in its commit info, each only if the
    /// tracker still holds the row its writer read ([`RowWrite`]; refused with
    /// [`crate::Error::Fenced`] otherwise). Retries on concurrent commits by other pipelines
    /// (each retry reloads, checks the rows again and redoes the MERGE).
    pub async fn upsert(&mut self, writes: &[RowWrite], audit: &Audit) -> Result<()> {
        if writes.is_empty() {
            return Ok(());
        }
        self.commit(writes, audit).await
    }

    /// A commit that moves no version and only carries `audit` (a replay: the tracker's
    /// history is the audit log of everything an operator did to a pipeline).
    pub async fn record(&mut self, audit: &Audit) -> Result<()> {
        self.commit(&[], audit).await
    }

    async fn commit(&mut self, writes: &[RowWrite], audit: &Audit) -> Result<()> {
        // Upserts of this process go one at a time (pipelines of a cycle finish together):
        // each rewrites the whole tracker, so two at once would conflict and back off. An
        // upsert queues, then waits for the turn; the turn's holder commits every upsert
        // queued for its tracker in one commit (a group commit: a cycle of many small
        // pipelines queued behind the turn, two upserts per pipeline, ~6 ms each).
        let (outcome, mut done_by_another) = tokio::sync::oneshot::channel();
        let id = NEXT_QUEUED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Queued::with(|queue| queue.push(Queued { id, uri: self.uri.clone(), writes: writes.to_vec(), audit: audit.clone(), outcome }));
        let _leaves_queue_if_cancelled = InQueue(id);
        let _turn = UPSERTS.lock().await;
        let context = format!("cannot write the tracker table {} ({})", display_uri(&self.uri), audit.action);
        let failed = |e: color_eyre::Report| Err(e).wrap_err(context.clone());
        // A holder before us took this upsert and settled it before giving up the turn.
        if let Ok(outcome) = done_by_another.try_recv() {
            return match outcome {
                Ok(table) => {
                    self.table = Some(table);
                    Ok(())
                }
                Err(e) => failed(eyre!(e)),
            };
        }
        let batch: Vec<Queued> = Queued::with(|queue| {
            let (batch, rest) = std::mem::take(queue).into_iter().partition(|q| q.uri == self.uri);
            *queue = rest;
            batch
        });
        let mut upserts: Vec<(&[RowWrite], &Audit)> = batch.iter().map(|q| (q.writes.as_slice(), &q.audit)).collect();
        let own = match batch.iter().position(|q| q.id == id) {
            Some(own) => own,
            None => {
                // A holder before us took this upsert and was cancelled before settling it.
                // Committing it again is safe whether or not that holder's commit landed: a
                // row already written is let through as such (see `RowWrite::allowed`).
                upserts.push((writes, audit));
                upserts.len() - 1
            }
        };
        let verdicts = match self.commit_rows(&upserts).await {
            Ok(verdicts) => verdicts,
            Err(e) => {
                let text = format!("{e:#}");
                for q in batch.into_iter().filter(|q| q.id != id) {
                    let _ = q.outcome.send(Err(text.clone()));
                }
                return failed(e);
            }
        };
        let table = self.table.clone();
        let mut verdicts: Vec<Option<std::result::Result<(), crate::Error>>> = verdicts.into_iter().map(Some).collect();
        for (i, q) in batch.into_iter().enumerate().filter(|(_, q)| q.id != id) {
            let verdict = verdicts[i].take().unwrap_or(Ok(()));
            let outcome = match verdict {
                Ok(()) => table.clone().ok_or_else(|| "no tracker table".to_string()),
                Err(e) => Err(e.to_string()),
            };
            let _ = q.outcome.send(outcome);
        }
        match verdicts[own].take() {
            Some(Err(refused)) => Err(refused.into()),
            _ => Ok(()),
        }
    }

    /// Commit `upserts` whose rows are still as their writers read them, in one commit; the
    /// verdict of each, in order. It starts from the state the previous commit left (kept in
    /// `LATEST`), without reloading the log or re-reading the rows; a commit by another process
    /// since makes this one conflict, and the retry starts from storage (and checks again).
    async fn commit_rows(&mut self, upserts: &[(&[RowWrite], &Audit)]) -> Result<Vec<std::result::Result<(), crate::Error>>> {
        let mut base = match Latest::newer_than(&self.uri, self.table.as_ref()) {
            Some(base) => base,
            None => self.load_base().await?,
        };
        let mut attempt = 0;
        loop {
            let checked = check_in_order(&base.rows, upserts);
            let rows: Vec<TrackerRow> = checked.iter().filter_map(|c| c.rows.as_ref()).flatten().cloned().collect();
            let audits: Vec<&Audit> = upserts.iter().zip(&checked).filter(|(_, c)| c.rows.is_some()).map(|((_, a), _)| *a).collect();
            if audits.is_empty() {
                return Ok(checked.into_iter().map(|c| c.verdict).collect());
            }
            match merge_rows(&base, &rows, &audits).await {
                Ok(committed) => {
                    Latest::remember(&self.uri, &committed.table, &committed.rows);
                    self.table = Some(committed.table);
                    return Ok(checked.into_iter().map(|c| c.verdict).collect());
                }
                Err(e) if attempt < 20 && is_conflict(&e) => {
                    attempt += 1;
                    // Back off a little (jittered) so racing writers interleave instead of colliding again.
                    let jitter = rand::random::<u64>() % 40;
                    tokio::time::sleep(Duration::from_millis(10 * attempt + jitter)).await;
                    base = self.load_base().await?;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// The latest tracker version in storage (created if missing) and its rows.
    async fn load_base(&mut self) -> Result<Base> {
        if self.table.is_some() {
            self.refresh().await?;
        }
        let table = self.ensure_created().await?;
        let rows = Arc::new(read_rows(&table).await?);
        Latest::remember(&self.uri, &table, &rows);
        Ok(Base { table, rows })
    }

    /// The tracker's history (newest first): the audit trail of runs and resets.
    pub async fn history(&self, limit: usize) -> Result<Vec<HistoryEntry>> {
        let Some(table) = &self.table else { return Ok(vec![]) };
        let latest = lake::table_version(table)?;
        let mut out = Vec::new();
        let mut v = latest as i64;
        while v >= 0 && out.len() < limit {
            if let Some(c) = lake::read_commit(table, v as u64).await? {
                let info = c.info.unwrap_or_default();
                let meta = &info.info;
                let operation = c.operation.unwrap_or_default();
                let (version, at) = (v as u64, c.timestamp_ms);
                // A group commit carries every upsert's audit: one entry each, newest first.
                match meta.get("deltalink.batch").and_then(|b| b.as_array()) {
                    Some(batch) => out.extend(
                        batch.iter().rev().filter_map(|a| a.as_object()).map(|a| history_entry(version, at, &operation, &|k| a.get(k))),
                    ),
                    None => out.push(history_entry(version, at, &operation, &|k| meta.get(k))),
                }
            }
            v -= 1;
        }
        out.truncate(limit);
        Ok(out)
    }
}

/// Check a group commit's upserts in queue order, each against the rows as the upserts before
/// it leave them: two upserts of one row in one group (two acks of one consumer in one process)
/// cannot both pass a compare-and-set that only one of them can win.
fn check_in_order(base: &[TrackerRow], upserts: &[(&[RowWrite], &Audit)]) -> Vec<Checked> {
    let mut current: Vec<TrackerRow> = base.to_vec();
    let mut out = Vec::with_capacity(upserts.len());
    for (writes, audit) in upserts {
        let checked = check_writes(&current, writes, audit);
        for row in checked.rows.iter().flatten() {
            match current.iter_mut().find(|r| r.pipeline_name == row.pipeline_name && r.upstream == row.upstream) {
                Some(r) => *r = row.clone(),
                None => current.push(row.clone()),
            }
        }
        out.push(checked);
    }
    out
}

/// What one upsert does on a base: the rows it writes (`None`: it is not committed) and its
/// verdict for its caller.
struct Checked {
    rows: Option<Vec<TrackerRow>>,
    verdict: std::result::Result<(), crate::Error>,
}

/// Check an upsert's compare-and-set conditions against `base`. An upsert whose rows are all
/// already written (a retried commit that landed) is settled without another commit; a
/// `record` (no rows) always commits its audit.
fn check_writes(base: &[TrackerRow], writes: &[RowWrite], audit: &Audit) -> Checked {
    let current = |w: &RowWrite| base.iter().find(|r| r.pipeline_name == w.row.pipeline_name && r.upstream == w.row.upstream);
    let mut changes = false;
    for w in writes {
        match w.allowed(current(w)) {
            Allowed::Yes => changes = true,
            Allowed::AlreadyWritten => {}
            Allowed::No => {
                let why = format!(
                    "the tracker row of {} is now {}, not {} as read",
                    match w.row.upstream.strip_prefix(CONSUMER_ROW_PREFIX) {
                        Some(consumer) => format!("consumer `{consumer}`"),
                        None if w.row.upstream == PAUSE_ROW => "the pipeline's pause".to_string(),
                        None => format!("upstream `{}`", w.row.upstream),
                    },
                    describe_row(current(w)),
                    describe_row(w.expected.as_ref())
                );
                let refused = crate::Error::Fenced {
                    pipeline: audit.pipeline.clone(),
                    what: format!("the tracker commit `{}`", audit.action),
                    why,
                    generation: audit.lease_generation.unwrap_or_default(),
                };
                return Checked { rows: None, verdict: Err(refused) };
            }
        }
    }
    if !changes && !writes.is_empty() {
        return Checked { rows: None, verdict: Ok(()) };
    }
    // Rows already written are written again with the others: the same values.
    let rows = writes.iter().map(|w| w.row.clone()).collect();
    Checked { rows: Some(rows), verdict: Ok(()) }
}

/// One audit of a tracker commit, from its commit-info fields (`fields` looks one up).
fn history_entry<'a>(
    version: u64,
    timestamp_ms: Option<i64>,
    operation: &str,
    fields: &dyn Fn(&str) -> Option<&'a serde_json::Value>,
) -> HistoryEntry {
    let text = |k: &str| fields(k).and_then(|x| x.as_str()).map(String::from);
    HistoryEntry {
        version,
        timestamp_ms,
        operation: operation.to_string(),
        action: text("deltalink.action"),
        pipeline: text("deltalink.pipeline"),
        operator: text("deltalink.operator"),
        reason: text("deltalink.reason"),
        details: fields("deltalink.details").cloned().unwrap_or_default(),
    }
}

/// One commit of the tracker table, as the audit log shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct HistoryEntry {
    pub version: u64,
    pub timestamp_ms: Option<i64>,
    pub operation: String,
    pub action: Option<String>,
    pub pipeline: Option<String>,
    pub operator: Option<String>,
    pub reason: Option<String>,
    pub details: serde_json::Value,
}

fn is_conflict(e: &color_eyre::Report) -> bool {
    let text = format!("{e:#}");
    let text = text.to_lowercase();
    ["concurrent", "conflict", "versionalreadyexists", "already exists", "metadata changed"].iter().any(|s| text.contains(s))
}

fn check_schema(table: &DeltaTable) -> Result<()> {
    let schema = table.snapshot()?.schema();
    for want in delta_columns() {
        match schema.field(want.name()) {
            Some(f) if f.data_type() == want.data_type() => {}
            _ => {
                return Err(eyre!(
                    "the tracker table {} has no column `{}` of type {} (was its schema changed by hand?)\n  fix: restore it from its Delta history (RESTORE), or point [tracker].uri at a new location",
                    display_uri(table.table_url()),
                    want.name(),
                    want.data_type()
                ))
            }
        }
    }
    Ok(())
}

static UPSERTS: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An upsert waiting for the turn, and where its outcome goes when another holder of the turn
/// commits it.
struct Queued {
    id: u64,
    uri: Url,
    writes: Vec<RowWrite>,
    audit: Audit,
    outcome: tokio::sync::oneshot::Sender<std::result::Result<DeltaTable, String>>,
}

static QUEUED: std::sync::Mutex<Vec<Queued>> = std::sync::Mutex::new(Vec::new());
static NEXT_QUEUED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

impl Queued {
    fn with<T>(f: impl FnOnce(&mut Vec<Queued>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves nothing half-written here.
        let mut queue = QUEUED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut queue)
    }
}

/// An upsert whose run is cancelled while it waits leaves the queue (unless a holder of the
/// turn took it already), so no later commit writes it.
struct InQueue(u64);

impl Drop for InQueue {
    fn drop(&mut self) {
        Queued::with(|queue| queue.retain(|q| q.id != self.0));
    }
}

/// A tracker version and all its rows.
#[derive(Clone)]
struct Base {
    table: DeltaTable,
    rows: Arc<Vec<TrackerRow>>,
}

/// The newest tracker state this process has loaded or committed, shared by every [`Tracker`]
/// of the same table: the pipelines of a cycle each read the rows and upsert twice, and each
/// upsert used to reload the log, re-read the rows the previous one had just written and
/// reload the log again after committing (profiled: 9 of an upsert's 14 ms, 40 upserts in a
/// cycle of 20 pipelines).
struct Latest {
    uri: Url,
    /// Which table and version: a tracker deleted and created again has a new id.
    id: String,
    version: u64,
    base: Base,
}

static LATEST: std::sync::Mutex<Option<Latest>> = std::sync::Mutex::new(None);

/// A loaded table's id and version.
fn identity(table: &DeltaTable) -> Option<(String, u64)> {
    let snapshot = table.snapshot().ok()?;
    Some((snapshot.metadata().id().to_string(), table.version()?))
}

impl Latest {
    fn with<T>(f: impl FnOnce(&mut Option<Latest>) -> T) -> T {
        // A panic elsewhere while holding the lock leaves nothing half-written here.
        let mut latest = LATEST.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        f(&mut latest)
    }

    fn holds(&self, uri: &Url, id: &str) -> bool {
        self.uri == *uri && self.id == id
    }

    /// Keep `rows` as the state of `table` unless something newer of the same table is kept.
    fn remember(uri: &Url, table: &DeltaTable, rows: &Arc<Vec<TrackerRow>>) {
        let Some((id, version)) = identity(table) else { return };
        Latest::with(|latest| {
            if latest.as_ref().is_none_or(|l| !l.holds(uri, &id) || l.version <= version) {
                let base = Base { table: table.clone(), rows: rows.clone() };
                *latest = Some(Latest { uri: uri.clone(), id, version, base });
            }
        })
    }

    /// The rows of exactly `table`'s version, if kept.
    fn rows_of(uri: &Url, table: &DeltaTable) -> Option<Arc<Vec<TrackerRow>>> {
        let (id, version) = identity(table)?;
        Latest::with(|latest| latest.as_ref().filter(|l| l.holds(uri, &id) && l.version == version).map(|l| l.base.rows.clone()))
    }

    /// The kept state of `mine`'s table, if it is at least as new as `mine`.
    fn newer_than(uri: &Url, mine: Option<&DeltaTable>) -> Option<Base> {
        let (id, version) = identity(mine?)?;
        Latest::with(|latest| latest.as_ref().filter(|l| l.holds(uri, &id) && l.version >= version).map(|l| l.base.clone()))
    }
}

async fn read_rows(table: &DeltaTable) -> Result<Vec<TrackerRow>> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let df = ctx.read_table(table.table_provider().await?)?;
    let batches = df.collect().await.wrap_err("cannot read the tracker table")?;
    let mut rows = Vec::new();
    for b in &batches {
        rows.extend(rows_from_batch(b)?);
    }
    Ok(rows)
}

/// Upsert by rewriting the whole tracker (one row per pipeline and upstream: a few hundred
/// rows) as one file, in a commit that removes every file it read. Recorded as a MERGE with no
/// predicate, so any concurrent tracker commit conflicts with it and the caller retries:
/// upserts are serialised. Profiled: delta-rs's MERGE took ~30 ms per upsert, two per run —
/// the fixed cost that dominated a cycle of many small pipelines.
async fn merge_rows(base: &Base, rows: &[TrackerRow], audits: &[&Audit]) -> Result<Base> {
    use deltalake::kernel::transaction::CommitBuilder;
    use deltalake::kernel::Action;
    use deltalake::writer::{DeltaWriter, RecordBatchWriter};

    let table = &base.table;
    let mut all: std::collections::BTreeMap<(String, String), TrackerRow> =
        base.rows.iter().map(|r| ((r.pipeline_name.clone(), r.upstream.clone()), r.clone())).collect();
    for r in rows {
        all.insert((r.pipeline_name.clone(), r.upstream.clone()), r.clone());
    }
    let all: Vec<TrackerRow> = all.into_values().collect();
    let batch = batch_from_rows(&all)?;
    let mut writer = RecordBatchWriter::for_table(table)?;
    let schema = writer.arrow_schema();
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) => Ok(deltalake::arrow::compute::cast(c, f.data_type())?),
            // A column added by hand: deltalink does not know it, so it stays empty.
            None => Ok(deltalake::arrow::array::new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    writer.write(RecordBatch::try_new(schema, columns)?).await?;
    let mut actions: Vec<Action> = table.snapshot()?.log_data().iter().map(|f| Action::Remove(f.remove_action(true))).collect();
    actions.extend(writer.flush().await?.into_iter().map(Action::Add));

    let metadata = audit_metadata(audits);
    let operation = lake::merge_operation("t.pipeline_name = s.pipeline_name AND t.upstream = s.upstream");
    let committed = CommitBuilder::from(CommitProperties::default().with_metadata(metadata))
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    // The commit hands back the table state at its version: no need to reload the log.
    let mut table = table.clone();
    table.state = Some(committed.snapshot());
    Ok(Base { table, rows: Arc::new(all) })
}

/// A tracker commit's commit info: the first audit's fields, and all of them under
/// `deltalink.batch` when several upserts share the commit (see [`Tracker::history`]).
fn audit_metadata(audits: &[&Audit]) -> Vec<(String, serde_json::Value)> {
    let mut metadata: Vec<(String, serde_json::Value)> = audits.first().map(|a| a.fields().into_iter().collect()).unwrap_or_default();
    if audits.len() > 1 {
        let all = audits.iter().map(|a| serde_json::Value::Object(a.fields())).collect();
        metadata.push(("deltalink.batch".to_string(), serde_json::Value::Array(all)));
    }
    metadata
}

fn batch_from_rows(rows: &[TrackerRow]) -> Result<RecordBatch> {
    let s = |f: fn(&TrackerRow) -> Option<&str>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<StringArray>()) };
    let l = |f: fn(&TrackerRow) -> Option<i64>| -> ArrayRef { Arc::new(rows.iter().map(f).collect::<Int64Array>()) };
    let t = |f: fn(&TrackerRow) -> Option<i64>| -> ArrayRef {
        Arc::new(rows.iter().map(f).collect::<TimestampMicrosecondArray>().with_timezone("UTC"))
    };
    let columns: Vec<ArrayRef> = vec![
        s(|r| Some(r.pipeline_name.as_str())),
        s(|r| Some(r.upstream.as_str())),
        l(|r| r.last_processed_version),
        t(|r| r.last_processed_ts.map(|ms| ms * 1000)),
        l(|r| r.run_id),
        l(|r| r.pending_version),
        l(|r| r.pending_run_id),
        t(|r| r.updated_at.map(|ms| ms * 1000)),
        s(|r| r.updated_by.as_deref()),
        s(|r| r.note.as_deref()),
    ];
    let fields: Vec<Field> = COLUMNS
        .iter()
        .zip(&columns)
        .map(|((n, k), a)| {
            let dt = match k {
                Kind::Ts => timestamp_type(),
                _ => a.data_type().clone(),
            };
            Field::new(*n, dt, true)
        })
        .collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn rows_from_batch(b: &RecordBatch) -> Result<Vec<TrackerRow>> {
    let idx = |n: &str| b.schema().index_of(n).map_err(|_| eyre!("tracker table has no column `{n}`"));
    let s = |n: &str| -> Result<Vec<Option<String>>> {
        // Readers may hand back Utf8View; normalise to Utf8.
        let c = deltalake::arrow::compute::cast(b.column(idx(n)?), &deltalake::arrow::datatypes::DataType::Utf8)?;
        let a = c.as_string_opt::<i32>().ok_or_else(|| eyre!("tracker column `{n}` is not a string"))?;
        Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i).to_string())).collect())
    };
    let l = |n: &str| -> Result<Vec<Option<i64>>> {
        let c = b.column(idx(n)?);
        let a = c.as_primitive_opt::<Int64Type>().ok_or_else(|| eyre!("tracker column `{n}` is not a long"))?;
        Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i))).collect())
    };
    let t = |n: &str| -> Result<Vec<Option<i64>>> {
        let c = b.column(idx(n)?);
        let a = c
            .as_primitive_opt::<TimestampMicrosecondType>()
            .ok_or_else(|| eyre!("tracker column `{n}` is not a timestamp"))?;
        Ok((0..a.len()).map(|i| a.is_valid(i).then(|| a.value(i) / 1000)).collect())
    };
    let (p, u) = (s("pipeline_name")?, s("upstream")?);
    let (lv, lt, rid) = (l("last_processed_version")?, t("last_processed_ts")?, l("run_id")?);
    let (pv, prid, ua) = (l("pending_version")?, l("pending_run_id")?, t("updated_at")?);
    let (ub, note) = (s("updated_by")?, s("note")?);
    Ok((0..b.num_rows())
        .map(|i| TrackerRow {
            pipeline_name: p[i].clone().unwrap_or_default(),
            upstream: u[i].clone().unwrap_or_default(),
            last_processed_version: lv[i],
            last_processed_ts: lt[i],
            run_id: rid[i],
            pending_version: pv[i],
            pending_run_id: prid[i],
            updated_at: ua[i],
            updated_by: ub[i].clone(),
            note: note[i].clone(),
        })
        .collect())
}


#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_commit_lets_only_one_of_two_upserts_of_a_row_read_alike_through() {
        let row = |note: &str| TrackerRow { run_id: Some(2), note: Some(note.into()), ..TrackerRow::new("p", "@consumer:job") };
        let (first, second) = ([RowWrite::new(row("first"), None)], [RowWrite::new(row("second"), None)]);
        let audit = Audit::new("ack", "p");
        let checked = check_in_order(&[], &[(&first, &audit), (&second, &audit)]);
        assert!(checked[0].verdict.is_ok() && checked[0].rows.is_some(), "the first wins");
        assert!(matches!(checked[1].verdict, Err(crate::Error::Fenced { .. })), "the second read a row that is no longer there");
        assert!(checked[1].rows.is_none(), "and writes nothing");
        // The same row twice (a retried commit) is let through without being written again.
        let again = check_in_order(&[], &[(&first, &audit), (&first, &audit)]);
        assert!(again[1].verdict.is_ok() && again[1].rows.is_none());
    }
}
