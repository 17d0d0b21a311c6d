//! Reading an upstream's Change Data Feed over a pinned version range.
//!
//! delta-rs only checks CDF enablement on commits that carry metadata, and it silently turns
//! file rewrites into delete+insert of every row when CDF was off (see NOTES-delta-rs). So
//! every range is checked here first, and every failure names the upstream and the fix.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};
use deltalake::datafusion::prelude::{lit, DataFrame, SessionContext};
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::delta_datafusion::DeltaCdfTableProvider;
use deltalake::{DeltaTable, DeltaTableError};

use crate::store::lake::{self, EarliestReadable};
use crate::Error;

pub const CHANGE_TYPE: &str = "_change_type";
pub const COMMIT_VERSION: &str = "_commit_version";
pub const COMMIT_TIMESTAMP: &str = "_commit_timestamp";

/// Change type given to rows taken from a snapshot when the early log is gone.
pub const SNAPSHOT_CHANGE: &str = "snapshot";

/// What to read from one upstream in one run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadRange {
    /// Change rows of versions `start..=end`.
    Changes { start: u64, end: u64 },
    /// Every row of the snapshot at `snapshot` (the oldest readable state), then the change rows
    /// of `snapshot+1..=end`. Used by `start = "earliest"` on a table whose early log is gone.
    SnapshotThenChanges { snapshot: u64, end: u64 },
}

impl ReadRange {
    pub fn end(&self) -> u64 {
        match self {
            ReadRange::Changes { end, .. } | ReadRange::SnapshotThenChanges { end, .. } => *end,
        }
    }
    /// Number of commits the range covers (a snapshot counts as one).
    pub fn commits(&self) -> u64 {
        match self {
            ReadRange::Changes { start, end } => end + 1 - start,
            ReadRange::SnapshotThenChanges { snapshot, end } => end - snapshot + 1,
        }
    }
}

/// Plan what a pipeline reads from an upstream, given how far it has read.
/// `processed = None` means never read (start from the earliest readable state); -1 means
/// "before version 0" (read the whole change feed).
/// Returns `None` when there is nothing new.
pub fn plan_range(processed: Option<i64>, pinned: u64, earliest: EarliestReadable) -> Option<ReadRange> {
    match processed {
        Some(p) if p >= pinned as i64 => None,
        Some(p) => Some(ReadRange::Changes { start: (p + 1).max(0) as u64, end: pinned }),
        None => match earliest {
            EarliestReadable::FullHistory => Some(ReadRange::Changes { start: 0, end: pinned }),
            EarliestReadable::FromSnapshot(s) if s >= pinned => {
                Some(ReadRange::SnapshotThenChanges { snapshot: pinned, end: pinned })
            }
            EarliestReadable::FromSnapshot(s) => Some(ReadRange::SnapshotThenChanges { snapshot: s, end: pinned }),
        },
    }
}

/// Counts CDF scans so tests and `run` output can show how many reads were made.
#[derive(Debug, Default)]
pub struct ScanCounter(AtomicU64);

impl ScanCounter {
    pub fn incr(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

/// Check that the change feed really covers `start..=end` of `table` (loaded at `end`).
pub async fn check_range(name: &str, table: &DeltaTable, start: u64, end: u64) -> Result<()> {
    let table_name = table_display_name(name, table);
    if !lake::cdf_enabled(table) {
        return Err(Error::CdfNotEnabled { name: name.into(), table: table_name, since: String::new() }.into());
    }
    if let Some(mode) = lake::column_mapping_mode(table) {
        return Err(Error::ColumnMappingUnsupported { name: name.into(), table: table_name, mode }.into());
    }
    // Track the CDF setting through the range: the last commit turning it off, and the first
    // metadata change (commits before it ran under the configuration of version start-1).
    let mut first_metadata: Option<u64> = None;
    let mut last_off: Option<u64> = None;
    let mut enabled_at: Option<u64> = None;
    for v in start..=end {
        let Some(commit) = lake::read_commit(table, v).await? else {
            let listing = lake::list_log(table).await?;
            let earliest = listing.earliest_readable(end).first_change_version();
            return Err(Error::VersionsUnavailable {
                name: name.into(),
                from: start,
                to: end,
                earliest,
                why: format!("commit {v} is no longer in the log (log retention or manual deletion)"),
            }
            .into());
        };
        // Files written while column mapping was on carry physical column names: keys would
        // read as NULL even if the mapping is off again by `end`.
        if let Some(mode) = commit.column_mapping {
            return Err(Error::ColumnMappingUnsupported { name: name.into(), table: table_name, mode }.into());
        }
        if commit.has_metadata && first_metadata.is_none() {
            first_metadata = Some(v);
        }
        match commit.cdf_setting {
            Some(false) => {
                last_off = Some(v);
                enabled_at = None;
            }
            Some(true) if enabled_at.is_none() => enabled_at = Some(v),
            _ => {}
        }
    }
    let off_before = match first_metadata.filter(|m| *m > start) {
        Some(_) => {
            let mut before = table.clone();
            before.load_version(start - 1).await.wrap_err_with(|| {
                format!("upstream `{name}`: cannot load version {} to check its CDF setting", start - 1)
            })?;
            if let Some(mode) = lake::column_mapping_mode(&before) {
                return Err(Error::ColumnMappingUnsupported { name: name.into(), table: table_name, mode }.into());
            }
            !lake::cdf_enabled(&before)
        }
        None => false,
    };
    if last_off.is_some() || off_before {
        let since = match enabled_at {
            Some(on) => format!(" for versions {start}..={} (it is enabled from version {on})", on.saturating_sub(1)),
            None => format!(" over versions {start}..={end}"),
        };
        return Err(Error::CdfNotEnabled { name: name.into(), table: table_name, since }.into());
    }
    Ok(())
}

fn table_display_name(name: &str, table: &DeltaTable) -> String {
    let uri = crate::config::display_uri(table.table_url());
    if table.table_url().scheme() == "file" {
        format!("delta.`{}` /* upstream {name} */", uri.trim_end_matches('/'))
    } else {
        format!("delta.`{uri}`")
    }
}

/// A DataFrame of the change rows of `start..=end`: table columns plus `_change_type`,
/// `_commit_version`, `_commit_timestamp`. `table` must be loaded at `end`, so the schema
/// matches the range's end.
pub async fn changes_frame(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
    start: u64,
    end: u64,
    counter: &ScanCounter,
) -> Result<DataFrame> {
    let builder = table.clone().scan_cdf().with_starting_version(start).with_ending_version(end);
    let provider = DeltaCdfTableProvider::try_new(builder)
        .map_err(|e| map_cdf_error(name, start, end, e))
        .wrap_err_with(|| format!("upstream `{name}`: cannot read the change feed {start}..={end}"))?;
    counter.incr();
    Ok(ctx.read_table(Arc::new(provider))?)
}

/// A DataFrame of every row of the snapshot at `version`, shaped like change rows.
pub async fn snapshot_frame(
    ctx: &SessionContext,
    name: &str,
    table: &DeltaTable,
    version: u64,
    counter: &ScanCounter,
) -> Result<DataFrame> {
    let mut at = table.clone();
    if at.version() != Some(version) {
        at.load_version(version)
            .await
            .wrap_err_with(|| format!("upstream `{name}`: cannot load the snapshot at version {version}"))?;
    }
    let ts = lake::read_commit(&at, version).await?.and_then(|c| c.timestamp_ms);
    at.update_datafusion_session(&ctx.state())?;
    let provider = at.table_provider().await?;
    counter.incr();
    let df = ctx.read_table(provider)?;
    Ok(df
        .with_column(CHANGE_TYPE, lit(SNAPSHOT_CHANGE))?
        .with_column(COMMIT_VERSION, lit(ScalarValue::UInt64(Some(version))))?
        .with_column(COMMIT_TIMESTAMP, lit(ScalarValue::TimestampMillisecond(ts, None)))?)
}

/// Turn delta-rs's CDF errors into ones that say which upstream and what to do.
pub fn map_cdf_error(name: &str, start: u64, end: u64, e: DeltaTableError) -> color_eyre::Report {
    match e {
        DeltaTableError::InvalidVersion(v) => Error::VersionsUnavailable {
            name: name.into(),
            from: start,
            to: end,
            earliest: v,
            why: "the log no longer holds them".into(),
        }
        .into(),
        other => other.into(),
    }
}

/// Turn an execution error (e.g. a data file removed by VACUUM, delta-rs #3392) into a clear one.
pub fn explain_read_error(name: &str, start: u64, end: u64, e: color_eyre::Report) -> color_eyre::Report {
    if names_a_missing_file(&e) {
        return e.wrap_err(format!(
            "upstream `{name}`: versions {start}..={end} are no longer readable (a data file they reference was removed, e.g. by VACUUM)\n  {}",
            unreadable_fix("PIPELINE", &format!(" --upstream {name}"))
        ));
    }
    e.wrap_err(format!("upstream `{name}`: reading changes {start}..={end} failed"))
}

/// Whether a read failed because a data file the log references is gone (VACUUM, a hand
/// delete): a missing object that is a parquet file, not any "not found" (a missing table, a
/// missing column or a refused credential say so in words of their own).
pub fn names_a_missing_file(e: &color_eyre::Report) -> bool {
    let text = format!("{e:#}");
    (text.contains("not found") || text.contains("No such file")) && text.contains(".parquet")
}

/// What to do about versions whose data files are gone: no reset re-reads them (their change
/// rows are lost with the files), so say plainly that the way on skips them.
pub fn unreadable_fix(pipeline: &str, upstream_flag: &str) -> String {
    format!(
        "no reset can re-read those versions (their files are gone); the change rows they held are lost to every reader\n  fix: deltalink tracker reset {pipeline}{upstream_flag} --to-latest  SKIPS them: backfill downstream the keys they touched (at worst every current key of the table)"
    )
}
