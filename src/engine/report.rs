//! What a run, a preview and a replay report: the data both front ends word (see [`crate::describe`]).

use std::time::Duration;

use serde::Serialize;

use crate::engine::keymap::PreviewRow;
use crate::store::cdf::ReadRange;

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
    pub(crate) fn to_range(self) -> ReadRange {
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

/// What a `sql` source read of a table it joins: files and rows after pruning by the change rows' join keys.
#[derive(Debug, Clone, Serialize)]
pub struct JoinedRead {
    /// The upstream whose `sql` joins the table.
    pub source: String,
    /// The joined upstream.
    pub upstream: String,
    /// Its columns that the change rows' values pruned the scan on (empty: read whole).
    pub pruned_on: Vec<String>,
    /// Files of its snapshot that were read, of `files_total` (scans of change images not counted).
    pub files_read: u64,
    pub files_total: u64,
    pub rows_read: u64,
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
    /// Per table a `sql` source joins: what its scan read.
    pub joined: Vec<JoinedRead>,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
    /// Of `duration`, the link-table MERGE: files written and committed (seconds in JSON).
    #[serde(serialize_with = "ser_duration")]
    pub link_merge: Duration,
}

impl RunReport {
    /// A report of `pipeline` with nothing counted yet.
    pub(crate) fn new(pipeline: &str, outcome: Outcome) -> Self {
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
            joined: vec![],
            duration: Duration::ZERO,
            link_merge: Duration::ZERO,
        }
    }
}

pub(crate) fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
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
    /// The target is the pipeline's own link table (left empty, or `--into` its path): every
    /// downstream reader sees the keys, so the production guards apply.
    pub into_link_table: bool,
    pub upstreams: Vec<UpstreamRead>,
    pub change_rows: u64,
    pub distinct_keys: u64,
    pub run_id: Option<i64>,
    pub written: bool,
    #[serde(serialize_with = "ser_duration")]
    pub duration: Duration,
}
