//! The link table: one Delta table per pipeline holding the keys that changed upstream.
//!
//! Columns: `pipeline_name`, the key columns (upstream types), `run_id` (monotonic per
//! pipeline), `last_change_ts`, `upstreams`, `provenance` (`upstream@version:change_type@commit time`),
//! `created_at`, `updated_at`. CDF is enabled so downstream readers can stream it.

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::DataType;
use deltalake::datafusion::common::Column;
use deltalake::datafusion::logical_expr::{cast, col, ident, lit, Expr};
use deltalake::datafusion::prelude::SessionContext;
use deltalake::datafusion::scalar::ScalarValue;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Transaction;
use deltalake::protocol::SaveMode;
use deltalake::schema::{ArrayType, DataType as DeltaType, StructField};
use deltalake::{DeltaTable, TableProperty};
use url::Url;

use crate::config::display_uri;
use crate::util::arrow::{display_value, string_list_type, timestamp_type};
use crate::store::lake;

mod columns;
mod deletion_vector;
mod sorted_merge;

pub use columns::{
    is_link_column, LinkWriteMetrics, CREATED_COL, LAST_CHANGE_COL, PIPELINE_COL, PROVENANCE_COL, RUN_ID_COL, UPDATED_COL, UPSTREAMS_COL,
};

pub use sorted_merge::Purged;

/// The application id under which a pipeline's link-table commits record their run_id.
pub fn app_id(pipeline: &str) -> String {
    format!("deltalink:{pipeline}")
}

/// Why a link-table commit happened (recorded in the commit metadata).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteKind {
    Run,
    Replay,
}

impl WriteKind {
    pub fn as_str(&self) -> &'static str {
        match self {
            WriteKind::Run => "run",
            WriteKind::Replay => "replay",
        }
    }

    /// A replay's provenance entries read `replay:upstream@version:change_type@time`, so readers of
    /// a link row tell keys re-derived by an operator from keys of live changes.
    pub fn mark_provenance(self, per_key: RecordBatch) -> Result<RecordBatch> {
        use deltalake::arrow::array::{Array, AsArray, ListArray, StringArray};
        use deltalake::arrow::datatypes::{Field, Schema};
        let Ok(i) = per_key.schema().index_of(PROVENANCE_COL) else { return Ok(per_key) };
        let Some(list) = per_key.column(i).as_list_opt::<i32>().filter(|_| self == WriteKind::Replay) else { return Ok(per_key) };
        let values = deltalake::arrow::compute::cast(list.values(), &DataType::Utf8)?;
        let marked: StringArray = values.as_string::<i32>().iter().map(|v| v.map(|s| format!("replay:{s}"))).collect();
        let item = Arc::new(Field::new("item", DataType::Utf8, true));
        let marked = ListArray::try_new(item, list.offsets().clone(), Arc::new(marked), list.nulls().cloned())?;
        let mut columns = per_key.columns().to_vec();
        let mut fields: Vec<_> = per_key.schema().fields().iter().cloned().collect();
        fields[i] = Arc::new(Field::new(PROVENANCE_COL, marked.data_type().clone(), true));
        columns[i] = Arc::new(marked);
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    }
}

/// Link-table schema for a pipeline whose key columns have the given Delta types.
pub fn link_columns(key: &[(String, DeltaType)]) -> Vec<StructField> {
    let mut cols = vec![StructField::new(PIPELINE_COL, DeltaType::STRING, false)];
    cols.extend(key.iter().map(|(k, t)| StructField::new(k.clone(), t.clone(), true)));
    let list = || DeltaType::Array(Box::new(ArrayType::new(DeltaType::STRING, true)));
    cols.extend([
        StructField::new(RUN_ID_COL, DeltaType::LONG, false),
        StructField::new(LAST_CHANGE_COL, DeltaType::TIMESTAMP, true),
        StructField::new(UPSTREAMS_COL, list(), true),
        StructField::new(PROVENANCE_COL, list(), true),
        StructField::new(CREATED_COL, DeltaType::TIMESTAMP, true),
        StructField::new(UPDATED_COL, DeltaType::TIMESTAMP, true),
    ]);
    cols
}

/// Open the link table, creating it (CDF on) when missing.
pub async fn open_or_create(
    uri: &Url,
    pipeline: &str,
    key: &[(String, DeltaType)],
    deletion_vectors: bool,
    storage: &HashMap<String, String>,
) -> Result<DeltaTable> {
    if let Some(t) = lake::open_owned(uri, storage).await? {
        return checked(t, pipeline, key);
    }
    let table = lake::table_for_create(uri, storage).await?;
    // A run touching a few keys of a large file marks their rows deleted and writes them anew
    // instead of copying the file (see `sorted_merge`).
    let deletion_vectors = deletion_vectors.then_some("true");
    let created = table
        .create()
        .with_table_name(format!("deltalink_link_{pipeline}"))
        .with_comment(format!("deltalink link table of pipeline {pipeline}"))
        .with_columns(link_columns(key))
        .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
        .with_configuration_property(TableProperty::EnableDeletionVectors, deletion_vectors)
        .await;
    match created {
        Ok(t) => Ok(t),
        // Another process created it between our check and our create: use theirs.
        Err(_) if lake::open_owned(uri, storage).await?.is_some() => lake::open_owned(uri, storage)
            .await?
            .ok_or_else(|| eyre!("link table {} vanished", display_uri(uri))),
        Err(e) => Err(e).wrap_err_with(|| format!("cannot create link table {} of pipeline `{pipeline}`", display_uri(uri))),
    }
}

/// An opened link table, once its columns are what deltalink writes (see [`check_schema`]).
pub fn checked(table: DeltaTable, pipeline: &str, key: &[(String, DeltaType)]) -> Result<DeltaTable> {
    check_schema(&table, pipeline, key)?;
    Ok(table)
}

/// Refuse a link table whose columns were changed by hand: writing into it would mix schemas.
/// Key columns only need to exist: their types are the table's own (what upstream keys are cast
/// to, and refused for when an upstream column was retyped).
fn check_schema(table: &DeltaTable, pipeline: &str, key: &[(String, DeltaType)]) -> Result<()> {
    let schema = table.snapshot()?.schema();
    for want in link_columns(key) {
        let is_key = key.iter().any(|(k, _)| k == want.name());
        match schema.field(want.name()) {
            Some(f) if is_key || f.data_type() == want.data_type() => {}
            Some(f) => {
                return Err(eyre!(
                    "link table {} of pipeline `{pipeline}`: column `{}` has type {} but deltalink expects {}\n  fix: restore the column, or move the table away so deltalink recreates it (then replay the pipeline)",
                    display_uri(table.table_url()),
                    want.name(),
                    f.data_type(),
                    want.data_type()
                ))
            }
            None => {
                return Err(eyre!(
                    "link table {} of pipeline `{pipeline}` has no column `{}`; was its schema changed by hand?\n  fix: restore the column, or move the table away so deltalink recreates it (then replay the pipeline)",
                    display_uri(table.table_url()),
                    want.name()
                ))
            }
        }
    }
    Ok(())
}

/// The run_id last committed into the link table for `pipeline` (its application transaction).
pub async fn committed_run_id(table: &DeltaTable, pipeline: &str) -> Result<Option<i64>> {
    Ok(table.snapshot()?.transaction_version(table.log_store().as_ref(), app_id(pipeline)).await?)
}

/// What the link table's commit of one run says it read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunCommit {
    /// The commit of that run, with the pinned version of each upstream it recorded.
    Pinned(std::collections::BTreeMap<String, i64>),
    /// The commit of that run, made before commits recorded their pins.
    Unpinned,
    /// No commit of that run among the commits looked at.
    Missing,
}

/// Find the commit of `run_id` in `pipeline`'s link table (newest first, at most `LOOK_BACK`
/// commits) and what it says it read.
pub async fn run_commit_pins(table: &DeltaTable, run_id: i64) -> Result<RunCommit> {
    const LOOK_BACK: u64 = 200;
    let latest = crate::store::lake::table_version(table)?;
    for version in (latest.saturating_sub(LOOK_BACK)..=latest).rev() {
        let Some(commit) = crate::store::lake::read_commit(table, version).await? else { continue };
        let Some(info) = commit.info.as_ref().map(|i| &i.info) else { continue };
        match info.get("deltalink.run_id").and_then(|v| v.as_i64()) {
            Some(r) if r == run_id => {}
            Some(r) if r < run_id => return Ok(RunCommit::Missing),
            _ => continue,
        }
        return Ok(match info.get("deltalink.pinned") {
            Some(pins) => RunCommit::Pinned(serde_json::from_value(pins.clone()).unwrap_or_default()),
            None => RunCommit::Unpinned,
        });
    }
    Ok(RunCommit::Missing)
}

/// MERGE the affected keys into the link table in one commit that also records `run_id` as the
/// pipeline's application transaction (so a crash after this commit is detected on restart).
pub struct LinkMerge<'a> {
    pub pipeline: &'a str,
    pub key: &'a [String],
    pub run_id: i64,
    pub kind: WriteKind,
    pub now_us: i64,
    /// Target size of the files a write produces: the keys arrive sorted, so files hold
    /// disjoint key ranges and a later MERGE of clustered keys rewrites only the files it hits.
    pub target_file_size: u64,
    pub strategy: MergeStrategy,
    /// Replace rows through deletion vectors where the table takes them (the pipeline's
    /// `deletion_vectors`; see [`sorted_merge`]).
    pub deletion_vectors: bool,
    /// Called once the new files are written, right before the commit (a fault point in
    /// tests: a run that dies here leaves files no commit references; the run checks its
    /// lease here).
    pub before_commit: &'a (dyn Fn() -> Result<()> + Sync),
    /// The run's pinned version of each upstream, recorded in the commit so that recovery can
    /// tell this run's commit from another writer's ([`run_commit_pins`]).
    pub pinned: &'a std::collections::BTreeMap<String, i64>,
    /// The lease generation the commit is made under (recorded for the audit trail).
    pub lease_generation: Option<u64>,
}

/// How a link-table MERGE is executed (both give the same table; see [`sorted_merge`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum MergeStrategy {
    /// deltalink's own MERGE over sorted keys: rewrites only files holding a touched key.
    #[default]
    SortedKeys,
    /// delta-rs's MERGE (a DataFusion join); also the fallback for tables with deletion
    /// vectors or partition columns.
    DeltaRs,
}

impl LinkMerge<'_> {
    /// MERGE the keys (`per_key`: one row per key, sorted by key) into the link table, by the
    /// sorted-key MERGE ([`sorted_merge`]; into an empty table it is a sorted append), or by
    /// delta-rs (an append into an empty table, else its MERGE) for tables the former does not
    /// cover or when [`MergeStrategy::DeltaRs`] is chosen.
    pub async fn execute(self, table: DeltaTable, per_key: RecordBatch) -> Result<(DeltaTable, LinkWriteMetrics)> {
        if self.strategy == MergeStrategy::SortedKeys && sorted_merge::applies(&table)? {
            let schema = std::sync::Arc::new(table.snapshot()?.snapshot().arrow_schema().as_ref().clone());
            let incoming = sorted_merge::incoming_rows(&schema, self.pipeline, self.run_id, self.now_us, &per_key)?;
            let props = |written: &LinkWriteMetrics| self.commit_properties(Some(written));
            return sorted_merge::merge(&table, self.key, incoming, &props, self.predicate_text(), self.target_file_size, self.deletion_vectors, self.before_commit)
                .await
                .wrap_err_with(|| format!("MERGE into the link table of pipeline `{}` failed", self.pipeline));
        }
        let ctx = SessionContext::new();
        let per_key = ctx.read_batch(per_key)?;
        let now = || lit(ScalarValue::TimestampMicrosecond(Some(self.now_us), Some("UTC".into())));
        let mut exprs: Vec<Expr> = vec![lit(self.pipeline.to_string()).alias(PIPELINE_COL)];
        exprs.extend(self.key.iter().map(|k| ident(k)));
        exprs.push(lit(self.run_id).alias(RUN_ID_COL));
        exprs.push(cast(ident(LAST_CHANGE_COL), timestamp_type()).alias(LAST_CHANGE_COL));
        exprs.push(cast(ident(UPSTREAMS_COL), string_list_type()).alias(UPSTREAMS_COL));
        exprs.push(cast(ident(PROVENANCE_COL), string_list_type()).alias(PROVENANCE_COL));
        exprs.push(now().alias(CREATED_COL));
        exprs.push(now().alias(UPDATED_COL));
        let source = per_key.select(exprs)?;
        let empty = table.snapshot()?.log_data().num_files() == 0;
        // delta-rs writes and commits in one call: the fault point comes before both.
        (self.before_commit)()?;

        let on = |k: &str| {
            Expr::Column(Column::new(Some("target"), k)).eq(Expr::Column(Column::new(Some("source"), k)))
        };
        let predicate = self.key.iter().map(|k| on(k)).reduce(Expr::and).ok_or_else(|| eyre!("empty key"))?;
        let src = |c: &str| Expr::Column(Column::new(Some("source"), c));
        let updated = [RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL, UPDATED_COL];
        let mut inserted: Vec<String> = vec![PIPELINE_COL.into()];
        inserted.extend(self.key.iter().cloned());
        inserted.extend([RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL, CREATED_COL, UPDATED_COL].map(String::from));

        if empty {
            let rows = source.clone().count().await? as u64;
            let written = LinkWriteMetrics { inserted: rows, ..Default::default() };
            let table = table
                .write(Vec::new())
                .with_input_plan(source.logical_plan().clone())
                .with_save_mode(SaveMode::Append)
                .with_target_file_size(std::num::NonZeroU64::new(self.target_file_size))
                .with_commit_properties(self.commit_properties(Some(&written)))
                .await
                .wrap_err_with(|| format!("first write into the link table of pipeline `{}` failed", self.pipeline))?;
            return Ok((table, written));
        }
        let (table, metrics) = table
            .merge(source, predicate)
            .with_source_alias("source")
            .with_target_alias("target")
            // delta-rs records its MERGE's row counts in the commit's operation metrics.
            .with_commit_properties(self.commit_properties(None))
            .when_matched_update(|u| updated.iter().fold(u, |u, c| u.update(*c, src(c))))?
            .when_not_matched_insert(|i| {
                inserted.iter().fold(i, |i, c| i.set(Column::new_unqualified(c.as_str()), src(c)))
            })?
            .await
            .wrap_err_with(|| format!("MERGE into the link table of pipeline `{}` failed", self.pipeline))?;
        let metrics = LinkWriteMetrics {
            inserted: metrics.num_target_rows_inserted as u64,
            updated: metrics.num_target_rows_updated as u64,
            files_rewritten: metrics.num_target_files_removed as u64,
            ..Default::default()
        };
        Ok((table, metrics))
    }

    /// The commit's metadata and the run's application transaction (see exactly-once), with
    /// the keys `written` when known before the commit ([`last_write`] reads them back).
    fn commit_properties(&self, written: Option<&LinkWriteMetrics>) -> CommitProperties {
        let mut metadata = vec![
            ("deltalink.pipeline".to_string(), serde_json::json!(self.pipeline)),
            ("deltalink.run_id".to_string(), serde_json::json!(self.run_id)),
            ("deltalink.kind".to_string(), serde_json::json!(self.kind.as_str())),
            ("deltalink.pinned".to_string(), serde_json::json!(self.pinned)),
        ];
        if let Some(g) = self.lease_generation {
            metadata.push(("deltalink.lease_generation".to_string(), serde_json::json!(g)));
        }
        if let Some(w) = written {
            metadata.push(("deltalink.keys_inserted".to_string(), serde_json::json!(w.inserted)));
            metadata.push(("deltalink.keys_updated".to_string(), serde_json::json!(w.updated)));
        }
        CommitProperties::default()
            .with_application_transaction(Transaction::new(app_id(self.pipeline), self.run_id))
            .with_metadata(metadata)
    }

    /// The MERGE condition as text, for the commit's history entry.
    fn predicate_text(&self) -> String {
        self.key.iter().map(|k| format!("target.{k} = source.{k}")).collect::<Vec<_>>().join(" AND ")
    }
}

/// The latest write of a run or replay into a link table, as its commit records it: what the
/// console and `status` show as a pipeline's last run, whichever process made it.
#[derive(Debug, Clone, serde::Serialize, PartialEq)]
pub struct LinkWrite {
    pub version: u64,
    pub run_id: i64,
    /// `run` or `replay`.
    pub kind: String,
    /// Commit time, RFC 3339 (UTC).
    pub at: Option<String>,
    #[serde(skip)]
    pub at_ms: Option<i64>,
    pub keys_inserted: Option<u64>,
    pub keys_updated: Option<u64>,
}

impl LinkWrite {
    /// `run 12 at 2026-11-26T10:03:41Z: 2349 new, 113098 updated keys` (the counts when the
    /// commit recorded them).
    pub fn describe(&self) -> String {
        let at = self.at.as_deref().map(|t| format!(" at {t}")).unwrap_or_default();
        let keys = match (self.keys_inserted, self.keys_updated) {
            (Some(i), Some(u)) => format!(": {i} new, {u} updated keys"),
            _ => String::new(),
        };
        format!("{} {}{at}{keys}", self.kind, self.run_id)
    }
}

/// The latest run or replay commit among the link table's last few commits (others, e.g. an
/// OPTIMIZE by another engine, are skipped); `None` when there is none.
pub async fn last_write(table: &DeltaTable) -> Result<Option<LinkWrite>> {
    const LOOK_BACK: u64 = 8;
    let latest = crate::store::lake::table_version(table)?;
    for version in (latest.saturating_sub(LOOK_BACK)..=latest).rev() {
        let Some(commit) = crate::store::lake::read_commit(table, version).await? else { continue };
        let Some(info) = commit.info.as_ref().map(|i| &i.info) else { continue };
        let Some(run_id) = info.get("deltalink.run_id").and_then(|v| v.as_i64()) else { continue };
        let metric = |ours: &str, delta_rs: &str| {
            info.get(ours).and_then(|v| v.as_u64()).or_else(|| {
                let m = info.get("operationMetrics")?.get(delta_rs)?;
                m.as_u64().or_else(|| m.as_str()?.parse().ok())
            })
        };
        return Ok(Some(LinkWrite {
            version,
            run_id,
            kind: info.get("deltalink.kind").and_then(|v| v.as_str()).unwrap_or("run").to_string(),
            at: commit.timestamp_ms.and_then(crate::util::time::format_ms),
            at_ms: commit.timestamp_ms,
            keys_inserted: metric("deltalink.keys_inserted", "num_target_rows_inserted"),
            keys_updated: metric("deltalink.keys_updated", "num_target_rows_updated"),
        }));
    }
    Ok(None)
}

/// Files whose deletion vectors delete at least `min_fraction` of their rows: how many, and
/// how many rows they no longer need to carry.
/// None in a table the sorted-key MERGE does not write (partition columns, or deletion
/// vectors another engine stored at absolute paths).
pub fn heavily_deleted_files(table: &DeltaTable, min_fraction: f64) -> Result<Purged> {
    if !sorted_merge::applies(table)? {
        return Ok(Purged::default());
    }
    let heavy = sorted_merge::heavy_files(table, min_fraction)?;
    Ok(Purged { files: heavy.len() as u64, rows_dropped: heavy.iter().map(|(_, d)| d).sum() })
}

/// Rewrite those files with their live rows only, in a commit that changes no data (see
/// `sorted_merge::purge`).
pub async fn purge_deleted_rows(table: &DeltaTable, min_fraction: f64, props: CommitProperties) -> Result<(DeltaTable, Purged)> {
    if !sorted_merge::applies(table)? {
        return Ok((table.clone(), Purged::default()));
    }
    sorted_merge::purge(table, min_fraction, props).await.wrap_err("rewriting link-table files whose deletion vectors delete most rows")
}

/// Number of rows in a link table (from the Delta log's file statistics where possible).
pub async fn row_count(table: &DeltaTable) -> Result<u64> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let df = ctx.read_table(table.table_provider().await?)?;
    Ok(df.count().await? as u64)
}

/// How the console pages through a link table.
#[derive(Debug, Clone, Default)]
pub struct LinkQuery {
    /// Case-insensitive substring matched against the key columns rendered as text.
    pub filter: Option<String>,
    pub sort: LinkSort,
    pub offset: usize,
    pub limit: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LinkSort {
    #[default]
    RunIdDesc,
    ChangeTimeDesc,
    Key,
}

/// One page of link rows, rendered as text for display.
#[derive(Debug, Clone, Default)]
pub struct LinkPage {
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub total_matching: u64,
}

/// Read one page of a link table; only the page is materialised, never the whole table.
pub async fn browse(table: &DeltaTable, key: &[String], q: &LinkQuery) -> Result<LinkPage> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let mut df = ctx.read_table(table.table_provider().await?)?;
    if let Some(f) = q.filter.as_ref().filter(|f| !f.is_empty()) {
        let pattern = format!("%{}%", f.to_lowercase());
        let m = key
            .iter()
            .map(|k| {
                deltalake::datafusion::functions::expr_fn::lower(cast(ident(k), DataType::Utf8)).like(lit(pattern.clone()))
            })
            .reduce(Expr::or)
            .unwrap_or_else(|| lit(true));
        df = df.filter(m)?;
    }
    let total_matching = df.clone().count().await? as u64;
    let mut order = match q.sort {
        LinkSort::RunIdDesc => vec![col(RUN_ID_COL).sort(false, true)],
        LinkSort::ChangeTimeDesc => vec![col(LAST_CHANGE_COL).sort(false, true)],
        LinkSort::Key => vec![],
    };
    order.extend(key.iter().map(|k| ident(k).sort(true, false)));
    let df = df.sort(order)?.limit(q.offset, Some(q.limit.max(1)))?;
    let shown: Vec<String> = key
        .iter()
        .cloned()
        .chain([RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL].map(String::from))
        .collect();
    let df = df.select(shown.iter().map(|c| ident(c)).collect::<Vec<Expr>>())?;
    let batches: Vec<RecordBatch> = df.collect().await?;
    let mut rows = Vec::new();
    for b in &batches {
        for i in 0..b.num_rows() {
            rows.push((0..b.num_columns()).map(|c| display_value(b.column(c), i)).collect());
        }
    }
    Ok(LinkPage { columns: shown, rows, total_matching })
}

/// Every key in the link table (as display strings) — for tests and small tables.
pub async fn all_keys(table: &DeltaTable, key: &[String]) -> Result<Vec<(Vec<String>, i64)>> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let df = ctx.read_table(table.table_provider().await?)?;
    let mut cols: Vec<Expr> = key.iter().map(|k| ident(k)).collect();
    cols.push(ident(RUN_ID_COL));
    let batches = df.select(cols)?.collect().await?;
    let n = key.len();
    let mut out = Vec::new();
    for b in &batches {
        let run = b.column(n).as_any().downcast_ref::<deltalake::arrow::array::Int64Array>();
        for i in 0..b.num_rows() {
            let k = (0..n).map(|c| display_value(b.column(c), i)).collect();
            out.push((k, run.map(|r| r.value(i)).unwrap_or(-1)));
        }
    }
    out.sort();
    Ok(out)
}

/// Delta types of the key columns as found in an upstream's schema, for creating a link table.
pub fn key_types_from(table: &DeltaTable, upstream: &str, pipeline: &str, columns: &[String], key: &[String]) -> Result<Vec<(String, DeltaType)>> {
    let schema = table.snapshot()?.schema();
    columns
        .iter()
        .zip(key)
        .map(|(src, dst)| {
            let f = schema.field(src).ok_or_else(|| crate::Error::KeyColumnMissing {
                name: upstream.into(),
                column: src.clone(),
                pipeline: pipeline.into(),
                available: schema.fields().map(|f| f.name().clone()).collect::<Vec<_>>().join(", "),
            })?;
            Ok((dst.clone(), f.data_type().clone()))
        })
        .collect()
}

/// Delta types for key columns produced by a `sql` source (a pipeline without `keys` sources).
pub fn delta_key_types(schema: &deltalake::arrow::datatypes::Schema, key: &[String]) -> Result<Vec<(String, DeltaType)>> {
    key.iter()
        .map(|k| {
            let f = schema.field_with_name(k).map_err(|_| eyre!("key column `{k}` missing from the mapping output"))?;
            let t = match f.data_type() {
                DataType::Int64 | DataType::UInt32 => DeltaType::LONG,
                DataType::Int32 | DataType::UInt16 => DeltaType::INTEGER,
                DataType::Int16 | DataType::UInt8 => DeltaType::SHORT,
                DataType::Int8 => DeltaType::BYTE,
                DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => DeltaType::STRING,
                DataType::Boolean => DeltaType::BOOLEAN,
                DataType::Date32 => DeltaType::DATE,
                DataType::Float64 => DeltaType::DOUBLE,
                other => return Err(eyre!("key column `{k}` has type {other}, which a link table cannot hold; cast it in the `sql`")),
            };
            Ok((k.clone(), t))
        })
        .collect()
}

/// Arrow types matching the link table's key columns (what change rows are cast to).
pub fn arrow_key_types(table: &DeltaTable, key: &[String]) -> Result<Vec<DataType>> {
    let schema = table.snapshot()?.snapshot().arrow_schema();
    key.iter()
        .map(|k| Ok(schema.field_with_name(k).map_err(|_| eyre!("link table has no key column `{k}`"))?.data_type().clone()))
        .collect()
}
