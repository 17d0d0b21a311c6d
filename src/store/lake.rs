//! Opening Delta tables and reading the facts deltalink needs from their logs
//! (latest version, commit info, earliest readable version, CDF enablement).

use std::collections::{BTreeSet, HashMap};

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::kernel::{Action, CommitInfo};
use deltalake::logstore::get_actions;
use deltalake::{DeltaTable, DeltaTableBuilder, DeltaTableError};
use futures::TryStreamExt;
use url::Url;

use crate::config::display_uri;
use crate::Error;

/// The table property that turns the Change Data Feed on.
pub const CDF_PROPERTY: &str = "delta.enableChangeDataFeed";

/// Open an upstream table at its latest version, turning "not there" and "not Delta" into
/// errors that say which upstream and how to fix the config.
pub async fn open_upstream(name: &str, uri: &Url, storage: &HashMap<String, String>) -> Result<DeltaTable> {
    if uri.scheme() == "file" {
        let exists = uri.to_file_path().map(|p| p.exists()).unwrap_or(false);
        if !exists {
            return Err(Error::UpstreamMissing { name: name.into(), uri: display_uri(uri) }.into());
        }
    }
    let mut table = builder(uri, storage)?.build().map_err(|e| not_delta(name, uri, e))?;
    match table.load().await {
        Ok(()) => Ok(table),
        Err(e) => {
            if let Some(problem) = storage_problem(&format!("upstream `{name}`"), uri, &e) {
                return Err(problem.into());
            }
            match e {
                DeltaTableError::NotATable(_) if uri.scheme() != "file" => {
                    Err(Error::UpstreamMissing { name: name.into(), uri: display_uri(uri) }.into())
                }
                e => Err(not_delta(name, uri, e).into()),
            }
        }
    }
}

/// Upstream tables kept loaded between status refreshes: a refresh lists the log past the
/// cached version and applies only new commits, instead of replaying the log each time.
#[derive(Default)]
pub struct TableCache(tokio::sync::Mutex<HashMap<String, DeltaTable>>);

impl TableCache {
    /// The upstream at its latest version, from the cache when it has it.
    pub async fn latest(&self, name: &str, uri: &Url, storage: &HashMap<String, String>) -> Result<DeltaTable> {
        let table = self.refreshed(uri, async { open_upstream(name, uri, storage).await.map(Some) }).await?;
        table.ok_or_else(|| eyre!("upstream `{name}` at {} vanished while it was opened", display_uri(uri)))
    }

    /// A table deltalink owns (link table) at its latest version; `None` when it does not exist.
    pub async fn owned(&self, uri: &Url, storage: &HashMap<String, String>) -> Result<Option<DeltaTable>> {
        self.refreshed(uri, open_owned(uri, storage)).await
    }

    /// The cached table moved forward to its latest commit, or `open` when there is none or it
    /// cannot be moved forward (dropped or re-created underneath: its versions would start
    /// again below ours, so the cached version's commit is checked to be still there).
    async fn refreshed(
        &self,
        uri: &Url,
        open: impl std::future::Future<Output = Result<Option<DeltaTable>>>,
    ) -> Result<Option<DeltaTable>> {
        let cached = self.0.lock().await.get(uri.as_str()).cloned();
        let table = match cached {
            Some(mut t) => match t.update_incremental(None).await {
                Ok(()) if still_there(&t).await => Some(t),
                _ => open.await?,
            },
            None => open.await?,
        };
        let mut cache = self.0.lock().await;
        match &table {
            Some(t) => cache.insert(uri.as_str().to_string(), t.clone()),
            None => cache.remove(uri.as_str()),
        };
        Ok(table)
    }
}

async fn still_there(table: &DeltaTable) -> bool {
    match table.version() {
        Some(v) => matches!(read_commit(table, v).await, Ok(Some(_))),
        None => false,
    }
}

/// Recognise object-store failures (credentials, endpoint, bucket) in an error, so the message
/// says which of them to fix instead of "not a Delta table". Never echoes credentials: only
/// the store's error code or the connection failure is kept.
pub fn storage_problem(what: &str, uri: &Url, e: &dyn std::fmt::Display) -> Option<Error> {
    if uri.scheme() == "file" {
        return None;
    }
    let text = e.to_string();
    let (what, uri) = (what.to_string(), display_uri(uri));
    const DENIED: [&str; 6] =
        ["InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "AuthorizationFailure", "ExpiredToken", "403 Forbidden"];
    if let Some(code) = DENIED.iter().find(|c| text.contains(**c)) {
        return Some(Error::StorageDenied { what, uri, code: code.to_string() });
    }
    if text.contains("NoSuchBucket") || text.contains("ContainerNotFound") {
        return Some(Error::BucketMissing { what, uri });
    }
    const UNREACHABLE: [&str; 5] =
        ["Connection refused", "tcp connect error", "dns error", "operation timed out", "error sending request"];
    if let Some(detail) = UNREACHABLE.iter().find(|c| text.contains(**c)) {
        return Some(Error::StorageUnreachable { what, uri, detail: detail.to_string() });
    }
    None
}

fn not_delta(name: &str, uri: &Url, e: DeltaTableError) -> Error {
    Error::NotDelta { name: name.into(), uri: display_uri(uri), detail: e.to_string() }
}

pub fn builder(uri: &Url, storage: &HashMap<String, String>) -> Result<DeltaTableBuilder> {
    DeltaTableBuilder::from_url(uri.clone())
        .map(|b| b.with_storage_options(storage.clone()))
        .wrap_err_with(|| format!("invalid table location {}", display_uri(uri)))
}

/// Open a table deltalink owns (tracker, link table); `None` when it does not exist yet.
pub async fn open_owned(uri: &Url, storage: &HashMap<String, String>) -> Result<Option<DeltaTable>> {
    if uri.scheme() == "file" {
        let log = uri.to_file_path().map(|p| p.join("_delta_log")).ok();
        if !log.map(|l| l.exists()).unwrap_or(false) {
            return Ok(None);
        }
    }
    let mut table = builder(uri, storage)?.build()?;
    match table.load().await {
        Ok(()) => Ok(Some(table)),
        Err(e) => {
            if let Some(problem) = storage_problem("deltalink's table", uri, &e) {
                return Err(problem.into());
            }
            match e {
                DeltaTableError::NotATable(_) => Ok(None),
                e => Err(e).wrap_err_with(|| format!("cannot open {}", display_uri(uri))),
            }
        }
    }
}

/// An uninitialised handle at `uri`, ready for `create()`; local folders are created.
pub async fn table_for_create(uri: &Url, storage: &HashMap<String, String>) -> Result<DeltaTable> {
    if uri.scheme() == "file" {
        if let Ok(p) = uri.to_file_path() {
            std::fs::create_dir_all(&p).wrap_err_with(|| format!("cannot create folder {}", p.display()))?;
        }
    }
    Ok(builder(uri, storage)?.build()?)
}

pub fn table_version(table: &DeltaTable) -> Result<u64> {
    table.version().ok_or_else(|| eyre!("table {} has no loaded version", table.table_url()))
}

pub fn cdf_enabled(table: &DeltaTable) -> bool {
    table
        .snapshot()
        .ok()
        .and_then(|s| s.metadata().configuration().get(CDF_PROPERTY).cloned())
        .map(|v| v.eq_ignore_ascii_case("true"))
        .unwrap_or(false)
}

const COLUMN_MAPPING_PROPERTY: &str = "delta.columnMapping.mode";

/// The table's column-mapping mode when it is on (`name` or `id`).
pub fn column_mapping_mode(table: &DeltaTable) -> Option<String> {
    let snapshot = table.snapshot().ok()?;
    let mode = snapshot.metadata().configuration().get(COLUMN_MAPPING_PROPERTY)?.clone();
    (!mode.eq_ignore_ascii_case("none")).then_some(mode)
}

/// What a commit says about itself.
#[derive(Debug, Clone, Default)]
pub struct CommitSummary {
    pub version: u64,
    /// Milliseconds since the epoch (in-commit timestamp when the writer records one).
    pub timestamp_ms: Option<i64>,
    pub operation: Option<String>,
    pub info: Option<CommitInfo>,
    /// `Some(true/false)` when the commit changes table metadata and says whether CDF is on.
    pub cdf_setting: Option<bool>,
    /// The column-mapping mode a metadata change turns on (`name`, `id`); `None` when off.
    pub column_mapping: Option<String>,
    pub has_metadata: bool,
}

/// Read one commit's actions; `None` when the commit file is gone (log retention).
pub async fn read_commit(table: &DeltaTable, version: u64) -> Result<Option<CommitSummary>> {
    let store = table.log_store();
    let Some(bytes) = store.read_commit_entry(version).await? else {
        return Ok(None);
    };
    let actions = get_actions(version, &bytes)?;
    let mut summary = CommitSummary { version, ..Default::default() };
    for action in actions {
        match action {
            Action::CommitInfo(ci) => {
                summary.timestamp_ms = ci.in_commit_timestamp.or(ci.timestamp);
                summary.operation = ci.operation.clone();
                summary.info = Some(ci);
            }
            Action::Metadata(md) => {
                summary.has_metadata = true;
                summary.cdf_setting = Some(
                    md.configuration()
                        .get(CDF_PROPERTY)
                        .map(|v| v.eq_ignore_ascii_case("true"))
                        .unwrap_or(false),
                );
                summary.column_mapping = md
                    .configuration()
                    .get(COLUMN_MAPPING_PROPERTY)
                    .filter(|mode| !mode.eq_ignore_ascii_case("none"))
                    .cloned();
            }
            _ => {}
        }
    }
    Ok(Some(summary))
}

/// The versions still present in `_delta_log`: commit files and checkpoints.
#[derive(Debug, Clone, Default)]
pub struct LogListing {
    pub commits: BTreeSet<u64>,
    pub checkpoints: BTreeSet<u64>,
}

impl LogListing {
    /// Earliest version from which a reader can reconstruct history up to `latest`:
    /// `Changes(0)` when the whole log is there, else `Snapshot(v)` for the oldest checkpoint
    /// followed by an unbroken run of commit files.
    pub fn earliest_readable(&self, latest: u64) -> EarliestReadable {
        if self.contiguous_from(0, latest) {
            return EarliestReadable::FullHistory;
        }
        for &cp in &self.checkpoints {
            if cp <= latest && self.contiguous_from(cp + 1, latest) {
                return EarliestReadable::FromSnapshot(cp);
            }
        }
        EarliestReadable::FromSnapshot(latest)
    }

    fn contiguous_from(&self, from: u64, latest: u64) -> bool {
        (from..=latest).all(|v| self.commits.contains(&v))
    }
}

/// Where the oldest readable state of a table is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EarliestReadable {
    /// Commit 0 onwards is present: the change feed covers the whole history.
    FullHistory,
    /// Commits before this version are gone; a snapshot at it is the oldest full state.
    FromSnapshot(u64),
}

impl EarliestReadable {
    /// The lowest version whose change rows can be read.
    pub fn first_change_version(&self) -> u64 {
        match self {
            EarliestReadable::FullHistory => 0,
            EarliestReadable::FromSnapshot(v) => v + 1,
        }
    }
    /// The lowest version a tracker may point at (processed through it).
    pub fn lowest_processed(&self) -> Option<u64> {
        match self {
            EarliestReadable::FullHistory => None,
            EarliestReadable::FromSnapshot(v) => Some(*v),
        }
    }
}

pub async fn list_log(table: &DeltaTable) -> Result<LogListing> {
    let store = table.log_store();
    let object_store = store.object_store(None);
    let mut listing = LogListing::default();
    let mut entries = object_store.list(Some(store.log_path()));
    while let Some(meta) = entries.try_next().await? {
        let Some(file) = meta.location.filename() else { continue };
        let Some((stem, rest)) = file.split_once('.') else { continue };
        let Ok(v) = stem.parse::<u64>() else { continue };
        if rest == "json" {
            listing.commits.insert(v);
        } else if rest.starts_with("checkpoint") {
            listing.checkpoints.insert(v);
        }
    }
    Ok(listing)
}

/// A MERGE as its commit info records it, for the MERGEs deltalink commits itself (tracker
/// upserts, the link table's sorted-key MERGE). No predicate: the commit counts as reading the
/// whole table, so any concurrent commit conflicts with it.
pub fn merge_operation(merge_predicate: &str) -> deltalake::protocol::DeltaOperation {
    use deltalake::protocol::{DeltaOperation, MergePredicate};
    DeltaOperation::Merge {
        predicate: None,
        merge_predicate: Some(merge_predicate.to_string()),
        matched_predicates: vec![MergePredicate { action_type: "update".into(), predicate: None }],
        not_matched_predicates: vec![MergePredicate { action_type: "insert".into(), predicate: None }],
        not_matched_by_source_predicates: vec![],
    }
}
