//! Opening Delta tables and reading the facts deltalink needs from their logs
//! (latest version, commit info, earliest readable version, CDF enablement).

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

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

/// Link tables kept loaded between status refreshes: a refresh lists the log past the cached
/// version and applies only new commits, instead of replaying the log each time.
#[derive(Default)]
pub struct TableCache(tokio::sync::Mutex<HashMap<String, DeltaTable>>);

impl TableCache {
    /// A table deltalink owns (link table) at its latest version; `None` when it does not exist.
    /// The cached table is moved forward to its latest commit, or opened again when there is
    /// none or it cannot be moved forward (dropped or re-created underneath: its versions would
    /// start again below ours, so the cached version's commit is checked to be still there).
    pub async fn owned(&self, uri: &Url, storage: &HashMap<String, String>) -> Result<Option<DeltaTable>> {
        let cached = self.0.lock().await.get(uri.as_str()).cloned();
        let table = match cached {
            Some(mut t) => match t.update_incremental(None).await {
                Ok(()) if still_there(&t).await => Some(t),
                _ => open_owned(uri, storage).await?,
            },
            None => open_owned(uri, storage).await?,
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
    // S3, Azure and GCS codes, then the bare statuses for stores that send no code.
    const DENIED: [&str; 9] = [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "AuthorizationFailure",
        "ExpiredToken",
        "AuthenticationRequired",
        "InvalidAuthentication",
        "403 Forbidden",
        "401 Unauthorized",
    ];
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
    list_log_after(table, None).await
}

/// The log entries after version `after`'s commit (all of them for `None`): a poll of a table
/// with a long log lists what is new, not the whole log.
pub async fn list_log_after(table: &DeltaTable, after: Option<u64>) -> Result<LogListing> {
    let store = table.log_store();
    let object_store = store.object_store(None);
    let mut listing = LogListing::default();
    let mut entries = match after {
        // Entries sort by name, and names start with the zero-padded version.
        Some(v) => object_store.list_with_offset(Some(store.log_path()), &store.log_path().clone().join(format!("{v:020}.json"))),
        None => object_store.list(Some(store.log_path())),
    };
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

const LOG_RETENTION_PROPERTY: &str = "delta.logRetentionDuration";
const DELETED_FILE_RETENTION_PROPERTY: &str = "delta.deletedFileRetentionDuration";
/// Delta's defaults when the properties are unset.
const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(30 * 86_400);
const DEFAULT_DELETED_FILE_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How long a table keeps what a change-feed reader needs: its commit files (log retention,
/// enforced when a checkpoint cleans the log) and the data and change files those commits
/// name (deleted-file retention, enforced by VACUUM).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub log: Duration,
    pub deleted_files: Duration,
}

impl Retention {
    /// A commit older than this may have lost its log entry or its files.
    pub fn readable_for(&self) -> Duration {
        self.log.min(self.deleted_files)
    }

    pub fn describe(&self) -> String {
        format!(
            "log retention {}, deleted-file retention {}",
            crate::util::time::human_seconds(self.log.as_secs_f64()),
            crate::util::time::human_seconds(self.deleted_files.as_secs_f64())
        )
    }
}

/// The table's retention properties, Delta's defaults (30 and 7 days) where unset or unreadable.
pub fn retention(table: &DeltaTable) -> Retention {
    match table.snapshot() {
        Ok(snapshot) => retention_of(snapshot.metadata().configuration()),
        Err(_) => retention_of(&HashMap::new()),
    }
}

/// The retention properties of a table configuration (see [`retention`]).
pub fn retention_of(configuration: &HashMap<String, String>) -> Retention {
    let property = |key: &str| parse_interval(configuration.get(key)?);
    Retention {
        log: property(LOG_RETENTION_PROPERTY).unwrap_or(DEFAULT_LOG_RETENTION),
        deleted_files: property(DELETED_FILE_RETENTION_PROPERTY).unwrap_or(DEFAULT_DELETED_FILE_RETENTION),
    }
}

/// A Delta interval property, as Spark writes it: `interval 7 days`, `interval 1 week`,
/// `interval 36 hours`, `interval 30 seconds`.
pub fn parse_interval(text: &str) -> Option<Duration> {
    let text = text.trim().to_ascii_lowercase();
    crate::util::time::parse_duration(text.strip_prefix("interval").unwrap_or(&text)).ok()
}

/// When a commit was made and what it did.
#[derive(Debug, Clone, PartialEq)]
pub struct CommitFacts {
    pub timestamp_ms: Option<i64>,
    pub operation: Option<String>,
    /// For a `VACUUM START`: the retention it ran with (its `RETAIN`, else the table's).
    pub vacuum_retention_ms: Option<i64>,
}

impl CommitFacts {
    fn of(commit: CommitSummary) -> CommitFacts {
        let parameters = commit.info.as_ref().and_then(|i| i.operation_parameters.as_ref());
        CommitFacts::new(commit.timestamp_ms, commit.operation, |name| parameters?.get(name).cloned())
    }

    /// From a commit's time, operation and its `operationParameters` (looked up by name).
    pub fn new(timestamp_ms: Option<i64>, operation: Option<String>, parameter: impl Fn(&str) -> Option<serde_json::Value>) -> CommitFacts {
        let is_vacuum = operation.as_deref().is_some_and(|op| op.eq_ignore_ascii_case("VACUUM START"));
        // delta-rs records numbers, Spark strings.
        let number = |name: &str| {
            let value = parameter(name)?;
            value.as_i64().or_else(|| value.as_str()?.parse().ok())
        };
        let vacuum_retention_ms = if is_vacuum { number("specifiedRetentionMillis").or_else(|| number("defaultRetentionMillis")) } else { None };
        CommitFacts { timestamp_ms, operation, vacuum_retention_ms }
    }
}

/// Commit facts by (table, version), read once: a commit never changes after it is written, and
/// the retention guard looks at every unread commit on each status refresh.
#[derive(Default)]
pub struct CommitCache(std::sync::Mutex<HashMap<(String, u64), CommitFacts>>);

/// Beyond this many cached commits the cache starts over (memory stays bounded on big fleets).
const COMMIT_CACHE_MAX: usize = 200_000;

impl CommitCache {
    /// The facts of `version`; `None` when its commit file is gone.
    pub async fn get(&self, table: &DeltaTable, version: u64) -> Result<Option<CommitFacts>> {
        let key = (table.table_url().to_string(), version);
        if let Some(facts) = self.lock().get(&key) {
            return Ok(Some(facts.clone()));
        }
        let Some(commit) = read_commit(table, version).await? else { return Ok(None) };
        let facts = CommitFacts::of(commit);
        self.insert(table, version, facts.clone());
        Ok(Some(facts))
    }

    /// Remember the facts of `version` of `table` (read here, or by a status probe).
    pub fn insert(&self, table: &DeltaTable, version: u64, facts: CommitFacts) {
        let mut cache = self.lock();
        if cache.len() >= COMMIT_CACHE_MAX {
            cache.clear();
        }
        cache.insert((table.table_url().to_string(), version), facts);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, u64), CommitFacts>> {
        // A panic while holding the lock leaves a consistent map (inserts are single calls).
        self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A VACUUM recorded in a table's history.
#[derive(Debug, Clone, PartialEq)]
pub struct VacuumSeen {
    pub version: u64,
    pub timestamp_ms: i64,
    /// The retention it ran with, when recorded: it removed files unreferenced for longer.
    pub retention_ms: Option<i64>,
}

/// How many of the newest unread commits the retention guard reads for VACUUMs.
pub const VACUUM_SCAN_LIMIT: u64 = 500;

/// The VACUUMs committed in `from..=to` (the newest [`VACUUM_SCAN_LIMIT`] commits of it), read
/// from their commit info (`VACUUM START`, as delta-rs and Spark record them, with the
/// retention they ran with).
pub async fn vacuums_in(cache: &CommitCache, table: &DeltaTable, from: u64, to: u64) -> Result<Vec<VacuumSeen>> {
    use futures::StreamExt;
    let first = from.max(to.saturating_sub(VACUUM_SCAN_LIMIT - 1));
    let reads = (first..=to).map(|v| async move { (v, cache.get(table, v).await) });
    let facts: Vec<(u64, Result<Option<CommitFacts>>)> = futures::stream::iter(reads).buffered(16).collect().await;
    let mut seen = Vec::new();
    for (version, facts) in facts {
        let Some(facts) = facts? else { continue };
        let is_vacuum = facts.operation.as_deref().is_some_and(|op| op.eq_ignore_ascii_case("VACUUM START"));
        if let (true, Some(timestamp_ms)) = (is_vacuum, facts.timestamp_ms) {
            seen.push(VacuumSeen { version, timestamp_ms, retention_ms: facts.vacuum_retention_ms });
        }
    }
    Ok(seen)
}

#[cfg(test)]
mod retention_tests {
    use super::*;

    #[test]
    fn delta_interval_properties_read_as_spark_writes_them() {
        assert_eq!(parse_interval("interval 7 days"), Some(Duration::from_secs(7 * 86_400)));
        assert_eq!(parse_interval("interval 1 week"), Some(Duration::from_secs(604_800)));
        assert_eq!(parse_interval("INTERVAL 36 HOURS"), Some(Duration::from_secs(36 * 3_600)));
        assert_eq!(parse_interval("interval 30 seconds"), Some(Duration::from_secs(30)));
        assert_eq!(parse_interval("interval seven days"), None);
        assert_eq!(parse_interval("interval 2 fortnights"), None);
    }
}
