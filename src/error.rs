//! Errors an operator can act on. Each message says what failed, where, and what to do.

/// Upstream and pipeline problems with the fix in the message (design brief, item 9).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream `{name}` at {uri} does not exist (no Delta table there)\n  fix: check `upstreams.{name}.uri` in the config, or create the table")]
    UpstreamMissing { name: String, uri: String },

    #[error("upstream `{name}` at {uri} is not a Delta table: {detail}\n  fix: point `upstreams.{name}.uri` at the table's root folder (the one holding _delta_log)")]
    NotDelta { name: String, uri: String, detail: String },

    #[error("{what} at {uri}: the object store refused access ({code})\n  fix: check the credentials deltalink is given (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AZURE_STORAGE_*, GOOGLE_APPLICATION_CREDENTIALS in the environment, or the [storage] table of the config) and that they may read this location (and write deltalink's own tables)")]
    StorageDenied { what: String, uri: String, code: String },

    #[error("{what} at {uri}: the object store cannot be reached ({detail})\n  fix: check the endpoint (AWS_ENDPOINT_URL or the [storage] table; http:// endpoints also need AWS_ALLOW_HTTP = \"true\") and the network; options max_retries / timeout in [storage] bound how long deltalink waits")]
    StorageUnreachable { what: String, uri: String, detail: String },

    #[error("{what} at {uri}: the bucket or container does not exist\n  fix: check the bucket name in the URI (and the region / endpoint it is looked up at)")]
    BucketMissing { what: String, uri: String },

    #[error("upstream `{name}` does not have the Change Data Feed enabled{since}\n  fix: run  ALTER TABLE {table} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)\n  then reset the tracker to a version at or after the one that enables it")]
    CdfNotEnabled { name: String, table: String, since: String },

    #[error("upstream `{name}` uses column mapping (delta.columnMapping.mode = {mode}); delta-rs cannot read the change feed of such tables yet, and reading its files by physical name would return wrong keys, so deltalink refuses it\n  fix: turn column mapping off on the table (Databricks Runtime 15.3+: ALTER TABLE {table} SET TBLPROPERTIES ('delta.columnMapping.mode' = 'none')), or point this upstream at a copy written without column mapping")]
    ColumnMappingUnsupported { name: String, table: String, mode: String },

    #[error("upstream `{name}`: the change feed is not readable for versions {from}..={to}: {why}\n  earliest readable version is {earliest}\n  fix: deltalink tracker reset PIPELINE --upstream {name} --to-earliest  (keys changed in the lost versions must be backfilled downstream)")]
    VersionsUnavailable { name: String, from: u64, to: u64, earliest: u64, why: String },

    #[error("upstream `{name}` has no column `{column}` (needed by pipeline `{pipeline}`); its columns are: {available}\n  fix: correct the `keys`/`key` columns of pipeline `{pipeline}` (was the column renamed or dropped?)")]
    KeyColumnMissing { name: String, column: String, pipeline: String, available: String },

    #[error("upstream `{name}`: key column `{column}` is now {found}, but the link table of pipeline `{pipeline}` holds {expected} (was the column retyped?)\n  fix: restore the column's type upstream, or map it with a `sql` source that casts it (SELECT CAST({column} AS ...) AS ...); to re-key the pipeline, move its link table aside and run deltalink tracker reset {pipeline} --to-earliest")]
    KeyColumnRetyped { name: String, column: String, pipeline: String, found: String, expected: String },

    #[error("pipeline `{pipeline}`: key column `{key}` comes from {first} and from {second}: {why}; refused before anything was written\n  fix: give the sources one key type (a `sql` source can CAST), or, to widen the link table, move it aside and run  deltalink tracker reset {pipeline} --to-earliest")]
    KeyTypesDiffer { pipeline: String, key: String, first: String, second: String, why: String },

    #[error("unknown pipeline `{name}`; configured pipelines: {known}")]
    UnknownPipeline { name: String, known: String },

    #[error("unknown upstream `{name}`; configured upstreams: {known}")]
    UnknownUpstream { name: String, known: String },

    #[error("pipeline `{pipeline}`: the tracker is at version {processed} of `{upstream}`, which is newer than its latest version {latest}\n  was the table re-created? fix: deltalink tracker reset {pipeline} --upstream {upstream} --to-earliest reads the new table from its first version (nothing skipped); --to-latest would skip every key it holds now")]
    TrackerAhead { pipeline: String, upstream: String, processed: u64, latest: u64 },

    #[error("pipeline `{pipeline}` is {pause}; runs of it are refused until it is resumed (watch and run --all skip it)\n  fix: deltalink resume {pipeline} --reason TEXT  (resets, replays and maintenance work while it is paused)")]
    Paused { pipeline: String, pause: String },

    #[error("{what} is refused: deltalink runs with --read-only")]
    ReadOnly { what: String },

    #[error("pipeline `{pipeline}`: this process lost its lease (generation {generation}; no heartbeat confirmed for {silent_ms} ms: paused, or the store unreachable); it stopped before committing, so nothing it had not committed is written\n  fix: nothing to undo; another process may hold the pipeline now, and the next run continues from the tracker")]
    LeaseLost { pipeline: String, generation: u64, silent_ms: u64 },

    #[error("pipeline `{pipeline}`: {what} was refused: {why}\n  another process or an operator wrote it after this one read it (this writer held lease generation {generation}); nothing was overwritten\n  fix: nothing to undo; the next run starts from the tracker and link table as they are now")]
    Fenced { pipeline: String, what: String, why: String, generation: u64 },

    /// Testing: a fault injected after the named step of a run.
    #[error("injected fault at step {0} (testing only)")]
    InjectedFault(String),
}
