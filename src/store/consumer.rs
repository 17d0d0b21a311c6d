//! A downstream consumer's progress, kept in the tracker beside its pipeline's upstream rows,
//! and the link-table reads that say what a consumer has still to read.
//!
//! The contract: a consumer that acked run A reads, at one link-table version V, the rows with
//! `A < run_id <= T`, where T is the newest run committed at V. Every run MERGEs the keys it
//! saw with its own run_id, so a key changed by any run in `(A, T]` carries a run_id in that
//! range at V (a later run can only raise it, and later runs are not visible at V), and a key
//! changed only before A or only after T does not.

use color_eyre::eyre::{Result, WrapErr};
use deltalake::arrow::array::{Array, AsArray};
use deltalake::arrow::datatypes::{Int64Type, TimestampMicrosecondType};
use deltalake::datafusion::functions_aggregate::expr_fn::{count, count_distinct, min};
use deltalake::datafusion::logical_expr::{col, lit};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::DeltaTable;

use crate::store::link::{LAST_CHANGE_COL, RUN_ID_COL};
use crate::store::tracker::{TrackerRow, CONSUMER_ROW_PREFIX};

/// The tracker's `upstream` value for `consumer`'s progress row.
pub fn row_key(consumer: &str) -> String {
    format!("{CONSUMER_ROW_PREFIX}{consumer}")
}

/// One consumer's progress, as its tracker row holds it: `run_id` is the run it acked through,
/// `pending_version` / `pending_run_id` the link version and run of its last `consume` answer
/// (a version it may still be reading, which upkeep keeps readable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumerProgress {
    pub consumer: String,
    /// The row as read (`None`: the consumer has never consumed or acked): a write's
    /// compare-and-set condition.
    pub row: Option<TrackerRow>,
}

impl ConsumerProgress {
    /// `consumer`'s progress among a pipeline's consumer rows.
    pub fn find(rows: &[TrackerRow], consumer: &str) -> ConsumerProgress {
        let key = row_key(consumer);
        ConsumerProgress { consumer: consumer.to_string(), row: rows.iter().find(|r| r.upstream == key).cloned() }
    }

    /// Every run through this one is processed; 0 when nothing is acked (run ids start at 1).
    pub fn acked(&self) -> i64 {
        self.row.as_ref().and_then(|r| r.run_id).unwrap_or(0)
    }

    /// The last `consume` answer: (link version, through run).
    pub fn reading(&self) -> Option<(i64, i64)> {
        let r = self.row.as_ref()?;
        Some((r.pending_version?, r.pending_run_id?))
    }

    /// The row to write, starting from the one read.
    pub fn next_row(&self, pipeline: &str) -> TrackerRow {
        self.row.clone().unwrap_or_else(|| TrackerRow::new(pipeline, &row_key(&self.consumer)))
    }
}

/// What waits for a consumer in a link table version: rows with a run_id above what it acked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    pub keys: u64,
    /// Distinct runs among those rows (a run whose keys were all changed again later counts
    /// under the later run).
    pub runs: u64,
    /// The oldest change time among those rows (ms since epoch): the key's latest change, so a
    /// key changed twice shows its second change.
    pub oldest_change_ms: Option<i64>,
}

/// Rows of `table` (one version of a link table) with `after < run_id <= through` (no upper
/// bound when `through` is `None`), counted with their runs and oldest change time.
pub async fn waiting(table: &DeltaTable, after: i64, through: Option<i64>) -> Result<Waiting> {
    if table.snapshot()?.log_data().num_files() == 0 {
        return Ok(Waiting::default());
    }
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut df = ctx.read_table(table.table_provider().await?)?.filter(col(RUN_ID_COL).gt(lit(after)))?;
    if let Some(t) = through {
        df = df.filter(col(RUN_ID_COL).lt_eq(lit(t)))?;
    }
    let batches = df
        .aggregate(vec![], vec![count(lit(1)), count_distinct(col(RUN_ID_COL)), min(col(LAST_CHANGE_COL))])?
        .collect()
        .await
        .wrap_err("cannot count the link table's unconsumed rows")?;
    let Some(b) = batches.iter().find(|b| b.num_rows() > 0) else { return Ok(Waiting::default()) };
    let long = |i: usize| b.column(i).as_primitive_opt::<Int64Type>().filter(|a| a.is_valid(0)).map(|a| a.value(0));
    let oldest = b.column(2).as_primitive_opt::<TimestampMicrosecondType>().filter(|a| a.is_valid(0)).map(|a| a.value(0) / 1000);
    Ok(Waiting { keys: long(0).unwrap_or(0) as u64, runs: long(1).unwrap_or(0) as u64, oldest_change_ms: oldest })
}
