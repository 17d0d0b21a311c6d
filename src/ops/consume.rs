//! Downstream consumers of a link table: `consume` hands out the next batch (a link-table version
//! and the run range it covers), `ack` records that the consumer processed it. Progress rows
//! live in the tracker (see `store::consumer`), each write an audited compare-and-set commit.

use color_eyre::eyre::{eyre, Result};
use deltalake::DeltaTable;
use serde::Serialize;

use crate::config::{display_uri, Pipeline};
use crate::engine::Engine;
use crate::store::consumer::{self, ConsumerProgress};
use crate::store::lake;
use crate::store::link;
use crate::store::tracker::{Audit, RowWrite, Tracker};

/// The next batch for a consumer: read the link table at `link_version`, rows with
/// `after_run_id < run_id <= through_run_id`. The same rows however many runs land meanwhile.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Batch {
    pub pipeline: String,
    pub consumer: String,
    /// Where the link table is (as configured; a local path for local tables).
    pub link_table: String,
    pub link_version: u64,
    pub after_run_id: i64,
    pub through_run_id: i64,
    /// Rows (one per key) in the batch.
    pub keys: u64,
    pub key_columns: Vec<String>,
    /// Ready-to-paste reads of exactly the batch's rows.
    pub reads: Reads,
}

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Reads {
    pub spark_sql: String,
    pub polars: String,
    pub deltalake: String,
}

impl Reads {
    fn new(location: &str, version: u64, after: i64, through: i64) -> Reads {
        let run = link::RUN_ID_COL;
        Reads {
            spark_sql: format!("SELECT * FROM delta.`{location}` VERSION AS OF {version} WHERE {run} > {after} AND {run} <= {through}"),
            polars: format!(
                "pl.read_delta({location:?}, version={version}).filter((pl.col({run:?}) > {after}) & (pl.col({run:?}) <= {through}))"
            ),
            // QueryBuilder scans through delta-rs, which applies deletion vectors (pyarrow
            // datasets refuse tables that have them).
            deltalake: format!(
                "QueryBuilder().register(\"link\", DeltaTable({location:?}, version={version})).execute(\"SELECT * FROM link WHERE {run} > {after} AND {run} <= {through}\").read_all()"
            ),
        }
    }
}

/// A table location as readers outside deltalink take it: a local path for `file://`.
fn reader_location(uri: &url::Url) -> String {
    match uri.scheme() {
        "file" => uri.to_file_path().map(|p| p.display().to_string()).unwrap_or_else(|_| uri.to_string()),
        _ => display_uri(uri),
    }
}

/// The pipeline and its consumer `name`, or an error listing the declared ones.
fn declared<'a>(engine: &'a Engine, pipeline: &str, name: &str) -> Result<&'a Pipeline> {
    let p = engine.config.pipeline(pipeline)?;
    if p.consumers.iter().any(|c| c.name == name) {
        return Ok(p);
    }
    let known: Vec<&str> = p.consumers.iter().map(|c| c.name.as_str()).collect();
    Err(eyre!(
        "pipeline `{pipeline}` has no consumer `{name}` (declared: {})\n  fix: declare it in {} as\n    [[pipelines.{pipeline}.consumers]]\n    name = \"{name}\"",
        if known.is_empty() { "none".to_string() } else { known.join(", ") },
        engine.config.path.display()
    ))
}

async fn progress(tracker: &Tracker, pipeline: &str, name: &str) -> Result<ConsumerProgress> {
    Ok(ConsumerProgress::find(&tracker.consumer_rows(Some(pipeline)).await?, name))
}

/// The link table; `None` until a run creates it.
async fn link_table(engine: &Engine, p: &Pipeline) -> Result<Option<DeltaTable>> {
    lake::open_owned(&p.link_table, &engine.config.storage_options).await
}

/// The newest run_id of a pipeline: what its link table's commits and its tracker rows record
/// (a run that found no keys commits only to the tracker).
async fn newest_run(tracker: &Tracker, table: Option<&DeltaTable>, pipeline: &str) -> Result<i64> {
    let committed = match table {
        Some(t) => link::committed_run_id(t, pipeline).await?.unwrap_or(0),
        None => 0,
    };
    let tracked = tracker.rows(Some(pipeline)).await?.iter().filter_map(|r| r.run_id).max().unwrap_or(0);
    Ok(committed.max(tracked))
}

/// The next batch for `name`, recorded in the tracker as the version it may be reading (so
/// link-table upkeep keeps that version readable). Nothing new: an empty batch, not recorded.
pub async fn consume(engine: &Engine, pipeline: &str, name: &str) -> Result<Batch> {
    let p = declared(engine, pipeline, name)?;
    let mut tracker = engine.tracker().await?;
    let progress = progress(&tracker, pipeline, name).await?;
    let after = progress.acked();
    let Some(table) = link_table(engine, p).await? else {
        return Err(eyre!(
            "pipeline `{pipeline}` has no link table yet at {}: nothing to consume\n  fix: run it first (`deltalink run {pipeline}`)",
            display_uri(&p.link_table)
        ));
    };
    let version = lake::table_version(&table)?;
    // The newest run visible at this version: its own transaction, read from this snapshot.
    let through = link::committed_run_id(&table, pipeline).await?.unwrap_or(0).max(after);
    let keys = if through > after { consumer::waiting(&table, after, Some(through)).await?.keys } else { 0 };
    let location = reader_location(&p.link_table);
    let batch = Batch {
        pipeline: pipeline.into(),
        consumer: name.into(),
        reads: Reads::new(&location, version, after, through),
        link_table: location,
        link_version: version,
        after_run_id: after,
        through_run_id: through,
        keys,
        key_columns: p.key.clone(),
    };
    if through > after && progress.reading() != Some((version as i64, through)) {
        engine.refuse_if_read_only(&format!("recording consumer `{name}`'s batch"))?;
        let mut row = progress.next_row(pipeline);
        row.pending_version = Some(version as i64);
        row.pending_run_id = Some(through);
        row.stamp(format!("consume: runs {after}..={through} at link version {version}"));
        let mut audit = Audit::new("consume", pipeline);
        audit.details = serde_json::json!({ "consumer": name, "link_version": version, "after_run_id": after, "through_run_id": through, "keys": keys });
        let written = tracker.upsert(&[RowWrite::new(row, progress.row.clone())], &audit).await;
        raced(written, pipeline, name, "consume")?;
    }
    Ok(batch)
}

/// What an ack did.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Acked {
    Moved { from: i64, to: i64 },
    /// Already acked through this run: nothing written.
    AlreadyAcked { at: i64 },
}

/// Record that `name` processed every run through `through`. Forward only (see [`plan_rewind`]);
/// refused for a run newer than any the pipeline has made.
pub async fn ack(engine: &Engine, pipeline: &str, name: &str, through: i64, reason: Option<&str>) -> Result<Acked> {
    let p = declared(engine, pipeline, name)?;
    let mut tracker = engine.tracker().await?;
    let progress = progress(&tracker, pipeline, name).await?;
    let acked = progress.acked();
    if through == acked {
        return Ok(Acked::AlreadyAcked { at: acked });
    }
    if through < acked {
        return Err(eyre!(
            "consumer `{name}` of pipeline `{pipeline}` has acked through run {acked}; acking run {through} would move it back, and the ack was refused\n  fix: to have runs {}..={acked} delivered again, rewind: deltalink ack {pipeline} --consumer {name} --through-run {through} --rewind (a dry run; add --execute --reason …)",
            through + 1
        ));
    }
    let table = link_table(engine, p).await?;
    let newest = newest_run(&tracker, table.as_ref(), pipeline).await?;
    if through > newest {
        return Err(eyre!(
            "pipeline `{pipeline}` has no run {through}: its newest run is {newest}; nothing was acked\n  fix: ack the through_run_id that `deltalink consume {pipeline} --consumer {name}` gave"
        ));
    }
    engine.refuse_if_read_only(&format!("ack of consumer `{name}`"))?;
    let mut row = progress.next_row(pipeline);
    row.run_id = Some(through);
    row.stamp(match reason {
        Some(r) => format!("ack: {r}"),
        None => format!("ack through run {through}"),
    });
    let mut audit = Audit::new("ack", pipeline);
    audit.reason = reason.map(String::from);
    audit.details = serde_json::json!({ "consumer": name, "from_run_id": acked, "to_run_id": through });
    let written = tracker.upsert(&[RowWrite::new(row, progress.row.clone())], &audit).await;
    raced(written, pipeline, name, "ack")?;
    Ok(Acked::Moved { from: acked, to: through })
}

/// A dry run of moving a consumer back: the keys it will be handed again.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct RewindPlan {
    pub pipeline: String,
    pub consumer: String,
    pub from_run_id: i64,
    pub to_run_id: i64,
    /// Rows of the latest link table with `to < run_id <= from`: delivered again.
    pub keys_again: u64,
}

/// Plan moving `name` back to `to` (runs after it are delivered again). Writes nothing.
pub async fn plan_rewind(engine: &Engine, pipeline: &str, name: &str, to: i64) -> Result<RewindPlan> {
    let p = declared(engine, pipeline, name)?;
    let tracker = engine.tracker().await?;
    let from = progress(&tracker, pipeline, name).await?.acked();
    if to < 0 || to > from {
        return Err(eyre!(
            "consumer `{name}` of pipeline `{pipeline}` has acked through run {from}: a rewind goes back to a run from 0 (everything again) to {from}, not {to}\n  fix: to move forward, ack without --rewind"
        ));
    }
    let keys_again = match link_table(engine, p).await? {
        Some(t) if to < from => consumer::waiting(&t, to, Some(from)).await?.keys,
        _ => 0,
    };
    Ok(RewindPlan { pipeline: pipeline.into(), consumer: name.into(), from_run_id: from, to_run_id: to, keys_again })
}

/// Commit a planned rewind, audited with the operator and reason; refused when the consumer
/// acked since the dry run (what the operator confirmed would no longer be what happens).
pub async fn execute_rewind(engine: &Engine, plan: &RewindPlan, reason: &str) -> Result<()> {
    engine.refuse_if_read_only(&format!("rewind of consumer `{}`", plan.consumer))?;
    let mut tracker = engine.tracker().await?;
    let progress = progress(&tracker, &plan.pipeline, &plan.consumer).await?;
    if progress.acked() != plan.from_run_id {
        return Err(eyre!(
            "consumer `{}` of pipeline `{}` acked since the dry run (it showed run {}, it is now {}); nothing was rewound\n  fix: run the dry run again",
            plan.consumer,
            plan.pipeline,
            plan.from_run_id,
            progress.acked()
        ));
    }
    let mut row = progress.next_row(&plan.pipeline);
    row.run_id = Some(plan.to_run_id);
    row.stamp(format!("rewind: {reason}"));
    let mut audit = Audit::new("ack-rewind", &plan.pipeline);
    audit.reason = Some(reason.to_string());
    audit.details = serde_json::json!({
        "consumer": plan.consumer, "from_run_id": plan.from_run_id, "to_run_id": plan.to_run_id, "keys_again": plan.keys_again,
    });
    let written = tracker.upsert(&[RowWrite::new(row, progress.row.clone())], &audit).await;
    raced(written, &plan.pipeline, &plan.consumer, "rewind")
}

/// A consumer's write refused because its row changed after it was read (another consume or
/// ack of the same consumer at the same time), in a consumer's words.
fn raced(written: Result<()>, pipeline: &str, name: &str, what: &str) -> Result<()> {
    written.map_err(|e| match e.downcast_ref::<crate::Error>() {
        Some(crate::Error::Fenced { .. }) => eyre!(
            "consumer `{name}` of pipeline `{pipeline}`: its progress changed while this {what} ran (another consume or ack of the same consumer); nothing was written\n  fix: run it again; `deltalink status` shows where the consumer is"
        ),
        _ => e,
    })
}
