//! Status: per upstream its latest version and last commit, per pipeline its progress, lag,
//! retention guard and health. Upstreams are probed concurrently (bounded), so 100+ tables
//! stay cheap to refresh; commit facts are cached (commits never change).

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::Result;
use futures::StreamExt;
use serde::Serialize;

use crate::config::{display_uri, Config, Pipeline, StartFrom};
use crate::ops::health::{self, Health, UpstreamFacts};
use crate::store::lake::{self, CommitCache, Retention};
use crate::store::lease;
use crate::store::consumer::{self, ConsumerProgress};
use crate::store::link;
use crate::store::pause::Pause;
use crate::engine::Engine;
use crate::store::tracker::TrackerRow;
use crate::util::time::{format_ms, human_seconds, now_ms};
use deltalake::DeltaTable;
use crate::store::probe::Probe;

/// How many upstream tables are probed at once.
const PROBE_CONCURRENCY: usize = 16;

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UpstreamStatus {
    pub name: String,
    pub uri: String,
    pub latest_version: Option<u64>,
    pub cdf_enabled: bool,
    pub last_commit_ts: Option<String>,
    #[serde(skip)]
    pub last_commit_ms: Option<i64>,
    pub last_operation: Option<String>,
    /// Why the table could not be probed (missing, not Delta, no access).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineUpstreamStatus {
    pub upstream: String,
    pub processed_version: Option<i64>,
    pub latest_version: Option<u64>,
    pub lag_versions: Option<u64>,
    /// Age of the oldest commit not read yet (0 when current).
    pub lag_seconds: Option<f64>,
    /// Time before the oldest unread commit may become unreadable (log or deleted-file
    /// retention, or a VACUUM that already ran); negative when it may already be. `None`
    /// when nothing is unread or the pipeline never ran.
    pub retention_seconds_left: Option<f64>,
    /// What bounds `retention_seconds_left`, in words.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retention_note: Option<String>,
    pub health: Health,
    /// A run is in flight (or died) with this run_id pending.
    pub pending_run_id: Option<i64>,
    /// Change rows in the versions not read yet; counted (a scan) only when asked for
    /// ([`count_pending_rows`]), else absent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending_change_rows: Option<u64>,
}

impl PipelineUpstreamStatus {
    /// The versions the pipeline has not read yet, `(from, to)` inclusive; `None` when it is
    /// caught up or the latest version is unknown.
    pub fn pending_versions(&self) -> Option<(u64, u64)> {
        let to = self.latest_version?;
        let from = self.processed_version.map_or(0, |v| (v + 1).max(0) as u64);
        (from <= to).then_some((from, to))
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PipelineStatus {
    pub name: String,
    pub link_table: String,
    pub key: Vec<String>,
    pub link_rows: Option<u64>,
    pub last_run_id: Option<i64>,
    /// The last run or replay written into the link table, by whichever process.
    pub last_write: Option<link::LinkWrite>,
    pub upstreams: Vec<PipelineUpstreamStatus>,
    /// Downstream consumers of its link table and how far behind they are.
    pub consumers: Vec<ConsumerStatus>,
    /// The worst of its upstreams' and consumers' verdicts.
    pub health: Health,
    /// An operator's pause in force (`deltalink pause`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause: Option<Pause>,
}

/// End-to-end freshness: what waits in the link table for one consumer.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsumerStatus {
    pub name: String,
    /// Every run through this one is processed (0: none yet).
    pub acked_run_id: i64,
    /// Its last `consume` answer (link version, through run), which it may still be reading.
    pub reading_version: Option<i64>,
    pub reading_through_run_id: Option<i64>,
    pub runs_waiting: u64,
    pub keys_waiting: u64,
    /// Upstream commit time of the oldest change waiting (a key changed twice shows its
    /// second change).
    pub oldest_unconsumed_change: Option<String>,
    /// Its age (0 when nothing waits).
    pub lag_seconds: f64,
    pub health: Health,
}

impl PipelineStatus {
    /// Whether a monitor should hear about it.
    pub fn needs_attention(&self) -> bool {
        self.health.state != health::HealthState::Ok
    }
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Status {
    pub upstreams: Vec<UpstreamStatus>,
    pub pipelines: Vec<PipelineStatus>,
}

impl Status {
    pub fn upstream(&self, name: &str) -> Option<&UpstreamStatus> {
        self.upstreams.iter().find(|u| u.name == name)
    }
}

/// Probe one upstream's log: latest version, CDF flag, last commit; and the probe, for the
/// pipelines' retention guard.
async fn probe(engine: &Engine, name: &str) -> (UpstreamStatus, Option<Probe>) {
    let uri = match engine.config.upstream(name) {
        Ok(u) => u.uri.clone(),
        Err(e) => return (failed(name, String::new(), e.to_string()), None),
    };
    let shown = display_uri(&uri);
    let probe = match engine.probes.probe(name, &uri, &engine.config.storage_options, &engine.commits).await {
        Ok(p) => p,
        Err(e) => return (failed(name, shown, format!("{e}")), None),
    };
    let status = UpstreamStatus {
        name: name.into(),
        uri: shown,
        latest_version: Some(probe.latest),
        cdf_enabled: probe.cdf_enabled(),
        last_commit_ts: probe.last_commit_ms.and_then(format_ms),
        last_commit_ms: probe.last_commit_ms,
        last_operation: probe.last_operation.clone(),
        error: None,
    };
    (status, Some(probe))
}

fn failed(name: &str, uri: String, error: String) -> UpstreamStatus {
    UpstreamStatus {
        name: name.into(),
        uri,
        latest_version: None,
        cdf_enabled: false,
        last_commit_ts: None,
        last_commit_ms: None,
        last_operation: None,
        error: Some(error),
    }
}

/// Record each (pipeline, upstream)'s lag in `st` as one poll of this process (the console's
/// refresh; `watch` records its own polls), for health's "lag grew at each of the last polls".
pub fn observe(engine: &Engine, st: &Status) {
    for p in &st.pipelines {
        for u in &p.upstreams {
            if let Some(lag) = u.lag_versions {
                engine.observed.record_lag(&p.name, &u.upstream, lag);
            }
        }
    }
}

/// Gather the whole status: upstream probes and link counts run concurrently.
pub async fn status(engine: &Engine) -> Result<Status> {
    status_at(engine, now_ms()).await
}

/// [`status`] as of `now` (milliseconds since the epoch): lag and retention are ages at that
/// instant (tests and what-if checks ask about a later one).
pub async fn status_at(engine: &Engine, now: i64) -> Result<Status> {
    // Every probe future owns what it uses (an engine clone, shared rows), so the whole status
    // future is `Send` and the console can spawn it.
    let probes = engine.config.upstreams.keys().cloned().map(|n| {
        let engine = engine.clone();
        async move { probe(&engine, &n).await }
    });
    let probed: Vec<(UpstreamStatus, Option<Probe>)> =
        futures::stream::iter(probes).buffer_unordered(PROBE_CONCURRENCY).collect().await;
    let tables: Arc<HashMap<String, Probe>> =
        Arc::new(probed.iter().filter_map(|(u, t)| Some((u.name.clone(), t.clone()?))).collect());
    let mut upstreams: Vec<UpstreamStatus> = probed.into_iter().map(|(u, _)| u).collect();
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let tracker = engine.tracker().await?;
    let rows = Arc::new(tracker.rows(None).await?);
    let consumer_rows = Arc::new(tracker.consumer_rows(None).await?);
    let pause_rows = Arc::new(tracker.pause_rows(None).await?);
    let by_name: Arc<HashMap<String, UpstreamStatus>> =
        Arc::new(upstreams.iter().map(|u| (u.name.clone(), u.clone())).collect());
    let pipelines = engine.config.pipelines.values().cloned().map(|p| {
        let (engine, rows, by_name, tables) = (engine.clone(), rows.clone(), by_name.clone(), tables.clone());
        let (consumer_rows, pause) = (consumer_rows.clone(), Pause::find(&pause_rows, &p.name));
        async move { pipeline_status(&engine, &p, &rows, &consumer_rows, pause, &by_name, &tables, now).await }
    });
    let pipelines = futures::stream::iter(pipelines).buffered(PROBE_CONCURRENCY).collect::<Vec<_>>().await;
    Ok(Status { upstreams, pipelines })
}

#[allow(clippy::too_many_arguments)]
async fn pipeline_status(
    engine: &Engine,
    p: &Pipeline,
    rows: &[TrackerRow],
    consumer_rows: &[TrackerRow],
    pause: Option<Pause>,
    upstreams: &HashMap<String, UpstreamStatus>,
    tables: &HashMap<String, Probe>,
    now: i64,
) -> PipelineStatus {
    let link = engine.tables.owned(&p.link_table, &engine.config.storage_options).await.map_err(|e| format!("{e:#}"));
    let (link_rows, last_write) = match &link {
        Ok(Some(t)) => {
            let (rows, write) = futures::join!(link::row_count(t), link::last_write(t));
            (rows.ok(), write.ok().flatten())
        }
        Ok(None) => (Some(0), None),
        Err(_) => (None, None),
    };
    let mine: Vec<&TrackerRow> = rows.iter().filter(|r| r.pipeline_name == p.name).collect();
    let pending = mine.iter().any(|r| r.pending_run_id.is_some());
    // A pending intent is a run in progress while a live lease holds the pipeline.
    let run_in_progress = pending && lease::held(&engine.config, &p.name).await;
    let mut ups = Vec::new();
    for u in p.upstream_names() {
        let row = mine.iter().find(|r| r.upstream == u).copied();
        let st = upstreams.get(u.as_str());
        let guard = match tables.get(u.as_str()) {
            Some(table) => unread_guard(&engine.commits, table, first_unread(p, row), now).await,
            None => UnreadGuard::default(),
        };
        let history = engine.observed.lag_history(&p.name, &u);
        let judged = Judged { run_in_progress, lag_history: &history, operator_pause: pause.as_ref().map(Pause::describe) };
        ups.push(upstream_progress(p, &engine.config, u, row, st, guard, &judged));
    }
    let consumers = consumers_status(p, link.as_ref().map(Option::as_ref), consumer_rows, now).await;
    let runs = health::assess_runs(&p.name, &engine.observed.runs(&p.name), engine.config.failing_after_runs);
    let health = health::worst(
        ups.iter().map(|u| u.health.clone()).chain(runs).chain(consumers.iter().map(|c| c.health.clone())),
    );
    PipelineStatus {
        name: p.name.clone(),
        link_table: display_uri(&p.link_table),
        key: p.key.clone(),
        link_rows,
        last_run_id: mine.iter().filter_map(|r| r.run_id).max(),
        last_write,
        upstreams: ups,
        consumers,
        health,
        pause,
    }
}

/// What a pipeline's upstream verdicts share beyond the tracker row and the probe.
struct Judged<'a> {
    run_in_progress: bool,
    lag_history: &'a [u64],
    operator_pause: Option<String>,
}

/// Each consumer of `p`: what waits for it in the latest link table (`link`, or why it could
/// not be opened), judged by its own SLO.
async fn consumers_status(p: &Pipeline, link: Result<Option<&DeltaTable>, &String>, rows: &[TrackerRow], now: i64) -> Vec<ConsumerStatus> {
    if p.consumers.is_empty() {
        return Vec::new();
    }
    let mine: Vec<TrackerRow> = rows.iter().filter(|r| r.pipeline_name == p.name).cloned().collect();
    let mut out = Vec::new();
    for c in &p.consumers {
        let progress = ConsumerProgress::find(&mine, &c.name);
        let acked = progress.acked();
        let waiting = match link {
            Ok(Some(t)) => consumer::waiting(t, acked, None).await.map_err(|e| format!("{e:#}")),
            Ok(None) => Ok(consumer::Waiting::default()),
            Err(e) => Err(e.clone()),
        };
        let w = waiting.clone().unwrap_or_default();
        let lag_seconds = w.oldest_change_ms.map_or(0.0, |t| (now - t).max(0) as f64 / 1000.0);
        let facts = health::ConsumerFacts {
            pipeline: &p.name,
            consumer: &c.name,
            error: waiting.as_ref().err().map(String::as_str),
            acked_run_id: acked,
            keys_waiting: w.keys,
            runs_waiting: w.runs,
            lag_seconds,
        };
        out.push(ConsumerStatus {
            name: c.name.clone(),
            acked_run_id: acked,
            reading_version: progress.reading().map(|(v, _)| v),
            reading_through_run_id: progress.reading().map(|(_, r)| r),
            runs_waiting: w.runs,
            keys_waiting: w.keys,
            oldest_unconsumed_change: w.oldest_change_ms.and_then(format_ms),
            lag_seconds,
            health: health::assess_consumer(&c.slo, &facts),
        });
    }
    out
}

/// One upstream's progress and verdict for pipeline `p`.
fn upstream_progress(
    p: &Pipeline,
    config: &Config,
    upstream: String,
    row: Option<&TrackerRow>,
    st: Option<&UpstreamStatus>,
    guard: UnreadGuard,
    judged: &Judged<'_>,
) -> PipelineUpstreamStatus {
    let processed = row.and_then(TrackerRow::processed);
    let latest = st.and_then(|s| s.latest_version);
    let lag_versions = latest.map(|l| crate::engine::lag_versions(l, processed));
    let lag_seconds = if lag_versions == Some(0) { Some(0.0) } else { guard.lag_seconds };
    let retention_seconds_left = if lag_versions == Some(0) { None } else { guard.seconds_left };
    let pending_run_id = row.and_then(|r| r.pending_run_id);
    let facts = UpstreamFacts {
        pipeline: &p.name,
        upstream: &upstream,
        error: st.and_then(|s| s.error.as_deref()),
        processed_version: processed,
        lag_versions,
        lag_seconds,
        retention_seconds_left,
        retention_note: guard.note.as_deref(),
        pending_run_id,
        run_in_progress: judged.run_in_progress,
        paused: p.paused,
        operator_pause: judged.operator_pause.as_deref(),
        lag_history: judged.lag_history,
        growth_polls: config.lag_growth_polls,
    };
    let health = health::assess_upstream(&p.slo, config.retention_margin, &facts);
    PipelineUpstreamStatus {
        upstream,
        processed_version: processed,
        latest_version: latest,
        lag_versions,
        lag_seconds,
        retention_seconds_left,
        retention_note: guard.note,
        health,
        pending_run_id,
        pending_change_rows: None,
    }
}

/// What the retention guard found about the commits a pipeline has not read.
#[derive(Debug, Default)]
struct UnreadGuard {
    lag_seconds: Option<f64>,
    seconds_left: Option<f64>,
    note: Option<String>,
}

/// The oldest version the pipeline's next run will read from the change feed: the one after
/// its processed version, or for a pipeline that never ran with `start = "earliest"`, version 0.
#[derive(Debug, Clone, Copy)]
enum FirstUnread {
    After(u64),
    /// A first run from the start: if commit 0 is gone the run begins at a snapshot (see
    /// *`start = "earliest"` on a truncated log*), which is no loss.
    FromStart,
}

fn first_unread(p: &Pipeline, row: Option<&TrackerRow>) -> Option<FirstUnread> {
    match (row.and_then(TrackerRow::processed), p.start) {
        (Some(processed), _) => Some(FirstUnread::After((processed + 1).max(0) as u64)),
        (None, StartFrom::Earliest) => Some(FirstUnread::FromStart),
        // A first run at the latest version reads no history: nothing can be lost.
        (None, StartFrom::Latest) => None,
    }
}

/// The age of the oldest unread commit and how long it stays readable: the shorter of the
/// table's log and deleted-file retention from its commit time, or zero when a VACUUM that
/// ran since may already have removed its files.
async fn unread_guard(commits: &CommitCache, probe: &Probe, first: Option<FirstUnread>, now: i64) -> UnreadGuard {
    let Some(first) = first else { return UnreadGuard::default() };
    let (table, latest) = (&probe.handle, probe.latest);
    let first_unread = match first {
        FirstUnread::After(v) => v,
        FirstUnread::FromStart => 0,
    };
    if first_unread > latest {
        return UnreadGuard::default();
    }
    let retention = probe.retention();
    let oldest_ms = match commits.get(table, first_unread).await {
        Ok(Some(facts)) => facts.timestamp_ms,
        Ok(None) if matches!(first, FirstUnread::FromStart) => return UnreadGuard::default(),
        Ok(None) => {
            return UnreadGuard {
                lag_seconds: None,
                seconds_left: Some(0.0),
                note: Some(format!("commit {first_unread} is no longer in the log ({})", retention.describe())),
            }
        }
        Err(_) => None,
    };
    let Some(oldest_ms) = oldest_ms else { return UnreadGuard::default() };
    let age = (now - oldest_ms).max(0) as f64 / 1000.0;
    let mut guard = UnreadGuard {
        lag_seconds: Some(age),
        seconds_left: Some(retention.readable_for().as_secs_f64() - age),
        note: Some(retention.describe()),
    };
    if let Some(note) = vacuumed_since(commits, table, first_unread, latest, oldest_ms, &retention).await {
        guard.seconds_left = Some(0.0);
        guard.note = Some(note);
    }
    guard
}

/// A VACUUM after the oldest unread commit that ran when that commit's files were already
/// past the retention it used (its `RETAIN`, else the table's deleted-file retention): it may
/// have removed files the unread range needs.
async fn vacuumed_since(
    commits: &CommitCache,
    table: &DeltaTable,
    first_unread: u64,
    latest: u64,
    oldest_ms: i64,
    retention: &Retention,
) -> Option<String> {
    let vacuums = lake::vacuums_in(commits, table, first_unread, latest).await.ok()?;
    let default_ms = retention.deleted_files.as_millis() as i64;
    let v = vacuums.into_iter().find(|v| v.timestamp_ms - oldest_ms > v.retention_ms.unwrap_or(default_ms))?;
    let used = v.retention_ms.unwrap_or(default_ms) as f64 / 1000.0;
    Some(format!(
        "VACUUM at version {} ({}) removed files unreferenced for over {}",
        v.version,
        format_ms(v.timestamp_ms).unwrap_or_default(),
        human_seconds(used)
    ))
}

/// Fill in each pipeline's pending change rows per upstream: a count over the change feed of
/// the versions it has not read (0 when caught up). Costs a scan per behind (pipeline,
/// upstream), so `status` does it only when asked (`--count-rows`). An upstream that cannot be
/// counted (versions gone, CDF off) keeps `None`; `run` names the problem.
pub async fn count_pending_rows(engine: &Engine, status: &mut Status) {
    for p in &mut status.pipelines {
        for u in &mut p.upstreams {
            u.pending_change_rows = match (u.pending_versions(), u.latest_version) {
                (Some((from, to)), _) => count_changes(engine, &u.upstream, from, to).await.ok(),
                (None, Some(_)) => Some(0),
                (None, None) => None,
            };
        }
    }
}

/// Change rows of upstream `name` over versions `from..=to`, read at version `to`.
pub async fn count_changes(engine: &Engine, name: &str, from: u64, to: u64) -> Result<u64> {
    let uri = &engine.config.upstream(name)?.uri;
    let mut table = lake::open_upstream(name, uri, &engine.config.storage_options).await?;
    if lake::table_version(&table)? != to {
        table.load_version(to).await?;
    }
    crate::ops::reset::count_change_rows(engine, name, &table, from, to).await
}
