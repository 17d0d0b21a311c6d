//! Purging deleted rows: a file whose deletion vector deletes most of its rows costs readers a
//! full read for a few live rows, and delta-rs's OPTIMIZE leaves it alone (it only bins files
//! below the target size). Such files are rewritten with their live rows only, in key order,
//! in one commit that changes no data (`dataChange = false`, as OPTIMIZE and Delta's
//! `REORG TABLE … APPLY (PURGE)` commit), so change-feed readers see nothing.

use std::sync::Arc;

use color_eyre::eyre::Result;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Action;
use deltalake::DeltaTable;

use super::files::{write_data, Uncommitted};
use super::layout::target_files;
use super::rows::read_live_rows;

/// What a purge did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Purged {
    pub files: u64,
    /// Rows the rewritten files no longer carry (their deletion vectors' rows).
    pub rows_dropped: u64,
}

/// Files of `table` whose deletion vectors delete at least `min_fraction` of their rows, with
/// the rows they delete.
/// Callers check first that the sorted-key MERGE writes this table (`sorted_merge::applies`).
pub(crate) fn heavy_files(table: &DeltaTable, min_fraction: f64) -> Result<Vec<(super::layout::TargetFile, u64)>> {
    Ok(target_files(table, "", None)?
        .into_iter()
        .filter_map(|f| {
            let deleted = f.deletion_vector()?.cardinality.max(0) as u64;
            let rows = f.rows.filter(|r| *r > 0)?;
            (deleted as f64 / rows as f64 >= min_fraction).then_some((f, deleted))
        })
        .collect())
}

/// Rewrite the heavy files (see [`heavy_files`]) without their deleted rows.
pub(crate) async fn purge(table: &DeltaTable, min_fraction: f64, props: CommitProperties) -> Result<(DeltaTable, Purged)> {
    let heavy = heavy_files(table, min_fraction)?;
    if heavy.is_empty() {
        return Ok((table.clone(), Purged::default()));
    }
    let store = table.log_store().object_store(None);
    let schema = Arc::new(table.snapshot()?.snapshot().arrow_schema().as_ref().clone());
    let written = Arc::new(Uncommitted::new(store.clone()));
    let mut actions = Vec::new();
    let mut purged = Purged::default();
    for (file, deleted) in heavy {
        let live = read_live_rows(&store, &file, &schema).await?;
        if live.num_rows() > 0 {
            // One file for what is left of one file: compaction may merge them afterwards.
            for mut add in write_data(table, live.clone(), live.num_rows(), &written).await? {
                add.data_change = false;
                actions.push(Action::Add(add));
            }
        }
        let mut remove = file.remove.clone();
        remove.data_change = false;
        actions.push(Action::Remove(remove));
        purged.files += 1;
        purged.rows_dropped += deleted;
    }
    let operation = deltalake::protocol::DeltaOperation::Optimize { predicate: None, target_size: 0 };
    let committed = deltalake::kernel::transaction::CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    written.keep();
    let mut table = table.clone();
    table.state = Some(committed.snapshot());
    Ok((table, purged))
}
