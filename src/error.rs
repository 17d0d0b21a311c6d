//! Errors an operator can act on. Each message says what failed, where, and what to do.

/// Upstream and pipeline problems with the fix in the message (design brief, item 9).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("upstream `{name}` at {uri} does not exist (no Delta table there)\n  fix: check `upstreams.{name}.uri` in the config, or create the table")]
    UpstreamMissing { name: String, uri: String },

    #[error("upstream `{name}` at {uri} is not a Delta table: {detail}\n  fix: point `upstreams.{name}.uri` at the table's root folder (the one holding _delta_log)")]
    NotDelta { name: String, uri: String, detail: String },

    #[error("upstream `{name}` does not have the Change Data Feed enabled{since}\n  fix: run  ALTER TABLE {table} SET TBLPROPERTIES (delta.enableChangeDataFeed = true)\n  then reset the tracker to a version at or after the one that enables it")]
    CdfNotEnabled { name: String, table: String, since: String },

    #[error("upstream `{name}`: the change feed is not readable for versions {from}..={to}: {why}\n  earliest readable version is {earliest}\n  fix: deltalink tracker reset PIPELINE --upstream {name} --to-earliest  (keys changed in the lost versions must be backfilled downstream)")]
    VersionsUnavailable { name: String, from: u64, to: u64, earliest: u64, why: String },

    #[error("upstream `{name}` has no column `{column}` (needed by pipeline `{pipeline}`); its columns are: {available}\n  fix: correct the `keys`/`key` columns of pipeline `{pipeline}` (was the column renamed or dropped?)")]
    KeyColumnMissing { name: String, column: String, pipeline: String, available: String },

    #[error("unknown pipeline `{name}`; configured pipelines: {known}")]
    UnknownPipeline { name: String, known: String },

    #[error("unknown upstream `{name}`; configured upstreams: {known}")]
    UnknownUpstream { name: String, known: String },

    #[error("pipeline `{pipeline}`: the tracker is at version {processed} of `{upstream}`, which is newer than its latest version {latest}\n  was the table re-created? fix: deltalink tracker reset {pipeline} --upstream {upstream} --to-latest (or --to-earliest to re-read it)")]
    TrackerAhead { pipeline: String, upstream: String, processed: u64, latest: u64 },

    #[error("{what} is refused: deltalink runs with --read-only")]
    ReadOnly { what: String },

    #[error("injected fault at step {0:?} (testing only)")]
    InjectedFault(crate::runner::Step),
}
