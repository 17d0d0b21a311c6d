//! Status: per upstream its latest version and last commit, per pipeline its progress and lag.
//! Upstreams are probed concurrently (bounded), so 100+ tables stay cheap to refresh.

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::Result;
use futures::StreamExt;
use serde::Serialize;

use crate::config::display_uri;
use crate::store::lake;
use crate::store::link;
use crate::engine::Engine;
use crate::store::tracker::TrackerRow;
use crate::util::time::format_ms;

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
    pub lag_seconds: Option<f64>,
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

/// Probe one upstream: latest version, CDF flag, last commit.
pub async fn probe_upstream(engine: &Engine, name: &str) -> UpstreamStatus {
    let uri = match engine.config.upstream(name) {
        Ok(u) => u.uri.clone(),
        Err(e) => return failed(name, String::new(), e.to_string()),
    };
    let shown = display_uri(&uri);
    let table = match engine.tables.latest(name, &uri, &engine.config.storage_options).await {
        Ok(t) => t,
        Err(e) => return failed(name, shown, format!("{e}")),
    };
    let latest = table.version();
    let commit = match latest {
        Some(v) => lake::read_commit(&table, v).await.ok().flatten(),
        None => None,
    };
    let ms = commit.as_ref().and_then(|c| c.timestamp_ms);
    UpstreamStatus {
        name: name.into(),
        uri: shown,
        latest_version: latest,
        cdf_enabled: lake::cdf_enabled(&table),
        last_commit_ts: ms.and_then(format_ms),
        last_commit_ms: ms,
        last_operation: commit.and_then(|c| c.operation),
        error: None,
    }
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

/// Gather the whole status: upstream probes and link counts run concurrently.
pub async fn status(engine: &Engine) -> Result<Status> {
    // Every probe future owns what it uses (an engine clone, shared rows), so the whole status
    // future is `Send` and the console can spawn it.
    let probes = engine.config.upstreams.keys().cloned().map(|n| {
        let engine = engine.clone();
        async move { probe_upstream(&engine, &n).await }
    });
    let mut upstreams: Vec<UpstreamStatus> =
        futures::stream::iter(probes).buffer_unordered(PROBE_CONCURRENCY).collect().await;
    upstreams.sort_by(|a, b| a.name.cmp(&b.name));
    let tracker = engine.tracker().await?;
    let rows = Arc::new(tracker.rows(None).await?);
    let by_name: Arc<HashMap<String, UpstreamStatus>> =
        Arc::new(upstreams.iter().map(|u| (u.name.clone(), u.clone())).collect());
    let pipelines = engine.config.pipelines.values().cloned().map(|p| {
        let (engine, rows, by_name) = (engine.clone(), rows.clone(), by_name.clone());
        async move { pipeline_status(&engine, &p, &rows, &by_name).await }
    });
    let pipelines = futures::stream::iter(pipelines).buffered(PROBE_CONCURRENCY).collect::<Vec<_>>().await;
    Ok(Status { upstreams, pipelines })
}

async fn pipeline_status(
    engine: &Engine,
    p: &crate::config::Pipeline,
    rows: &[TrackerRow],
    upstreams: &HashMap<String, UpstreamStatus>,
) -> PipelineStatus {
    let (link_rows, last_write) = match engine.tables.owned(&p.link_table, &engine.config.storage_options).await {
        Ok(Some(t)) => {
            let (rows, write) = futures::join!(link::row_count(&t), link::last_write(&t));
            (rows.ok(), write.ok().flatten())
        }
        Ok(None) => (Some(0), None),
        Err(_) => (None, None),
    };
    let mine: Vec<&TrackerRow> = rows.iter().filter(|r| r.pipeline_name == p.name).collect();
    let ups = p
        .upstream_names()
        .into_iter()
        .map(|u| {
            let row = mine.iter().find(|r| r.upstream == u);
            let processed = row.and_then(|r| r.processed());
            let st = upstreams.get(u.as_str());
            let latest = st.and_then(|s| s.latest_version);
            let lag_versions = latest.map(|l| match processed {
                Some(p) => (l as i64 - p).max(0) as u64,
                None => l + 1,
            });
            let lag_seconds = match (st.and_then(|s| s.last_commit_ms), row.and_then(|r| r.last_processed_ts)) {
                (Some(latest_ms), Some(done_ms)) => Some(((latest_ms - done_ms).max(0)) as f64 / 1000.0),
                (Some(_), None) if lag_versions == Some(0) => Some(0.0),
                _ => None,
            };
            PipelineUpstreamStatus {
                upstream: u,
                processed_version: processed,
                latest_version: latest,
                lag_versions,
                lag_seconds: if lag_versions == Some(0) { Some(0.0) } else { lag_seconds },
                pending_run_id: row.and_then(|r| r.pending_run_id),
                pending_change_rows: None,
            }
        })
        .collect();
    PipelineStatus {
        name: p.name.clone(),
        link_table: display_uri(&p.link_table),
        key: p.key.clone(),
        link_rows,
        last_run_id: mine.iter().filter_map(|r| r.run_id).max(),
        last_write,
        upstreams: ups,
    }
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
