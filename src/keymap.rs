//! Key mapping: from change rows to the distinct entity keys they affect, with provenance.
//!
//! Every change type counts (insert, delete, both images of an update, and snapshot rows), so
//! a key column that changed value marks both the old and the new key. Aggregation runs in
//! DataFusion and is streamed: memory grows with distinct keys, not with change rows.

use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, TimeUnit};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::{cast, ident, lit, Expr};
use deltalake::datafusion::prelude::{DataFrame, SessionContext};

use crate::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::Error;

/// Name of the provenance column carrying the upstream in intermediate frames.
pub const UPSTREAM_COL: &str = "_upstream";

pub fn quote(ident: &str) -> String {
    format!("\"{}\"", ident.replace('"', "\"\""))
}

/// The Delta/Arrow type the link table uses for timestamps.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Project one source's change rows onto the pipeline key (renamed, cast to `key_types`) plus
/// the provenance columns. Fails with a clear error when a key column is missing.
pub fn project_source(
    df: DataFrame,
    upstream: &str,
    pipeline: &str,
    source_columns: &[String],
    key: &[String],
    key_types: Option<&[DataType]>,
) -> Result<DataFrame> {
    let schema = df.schema().clone();
    let mut exprs: Vec<Expr> = Vec::with_capacity(key.len() + 4);
    for (i, (src, dst)) in source_columns.iter().zip(key).enumerate() {
        if schema.field_with_unqualified_name(src).is_err() {
            let available = schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .filter(|n| !n.starts_with("_c"))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(Error::KeyColumnMissing {
                name: upstream.into(),
                column: src.clone(),
                pipeline: pipeline.into(),
                available,
            }
            .into());
        }
        if let Some(expected) = key_types.map(|t| &t[i]) {
            let found = schema.field_with_unqualified_name(src)?.data_type();
            if !same_key_family(found, expected) {
                return Err(Error::KeyColumnRetyped {
                    name: upstream.into(),
                    column: src.clone(),
                    pipeline: pipeline.into(),
                    found: found.to_string(),
                    expected: expected.to_string(),
                }
                .into());
            }
        }
        exprs.push(cast_key(ident(src), key_types.map(|t| &t[i])).alias(dst));
    }
    exprs.push(ident(CHANGE_TYPE));
    exprs.push(cast(ident(COMMIT_VERSION), DataType::Int64).alias(COMMIT_VERSION));
    exprs.push(cast(ident(COMMIT_TIMESTAMP), timestamp_type()).alias(COMMIT_TIMESTAMP));
    exprs.push(lit(upstream.to_string()).alias(UPSTREAM_COL));
    Ok(df.select(exprs)?)
}

/// Whether a key of type `found` casts losslessly enough to the link table's `expected`:
/// widening integers and string encodings do; anything else means the column was retyped and
/// a cast could turn keys into NULLs or different values.
fn same_key_family(found: &DataType, expected: &DataType) -> bool {
    let strings = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    found == expected || (found.is_integer() && expected.is_integer()) || (strings(found) && strings(expected))
}

fn cast_key(e: Expr, ty: Option<&DataType>) -> Expr {
    match ty {
        Some(t) => cast(e, t.clone()),
        None => e,
    }
}

/// Shape a `sql` source's output like projected change rows. With `provenance`, the query
/// returned the change row's version/type/time; otherwise the range end is the version.
pub fn project_sql_output(
    df: DataFrame,
    upstream: &str,
    key: &[String],
    key_types: Option<&[DataType]>,
    provenance: bool,
    pinned: Option<(u64, Option<i64>)>,
) -> Result<DataFrame> {
    use crate::sqlmap::{PROV_TS, PROV_TYPE, PROV_VERSION};
    use deltalake::datafusion::scalar::ScalarValue;
    let mut exprs: Vec<Expr> = key
        .iter()
        .enumerate()
        .map(|(i, k)| cast_key(ident(k), key_types.map(|t| &t[i])).alias(k))
        .collect();
    if provenance {
        exprs.push(ident(PROV_TYPE).alias(CHANGE_TYPE));
        exprs.push(cast(ident(PROV_VERSION), DataType::Int64).alias(COMMIT_VERSION));
        exprs.push(cast(ident(PROV_TS), timestamp_type()).alias(COMMIT_TIMESTAMP));
    } else {
        let (version, ts) = pinned.unwrap_or((0, None));
        exprs.push(lit("join").alias(CHANGE_TYPE));
        exprs.push(lit(version as i64).alias(COMMIT_VERSION));
        exprs.push(lit(ScalarValue::TimestampMicrosecond(ts.map(|t| t * 1000), Some("UTC".into()))).alias(COMMIT_TIMESTAMP));
    }
    exprs.push(lit(upstream.to_string()).alias(UPSTREAM_COL));
    Ok(df.select(exprs)?)
}

/// The keys a run affects, grouped per (key, upstream), before anything is written.
#[derive(Debug, Clone)]
pub struct AffectedKeys {
    pub key: Vec<String>,
    /// Rows: key columns, then `_upstream`, `_version` (latest commit), `_ts`, `_last_change`,
    /// `_rows` at positions `key.len()..key.len()+5`.
    pub per_upstream: Vec<RecordBatch>,
    pub schema: SchemaRef,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    /// One row per distinct non-null key (see [`AffectedKeys::per_key`]).
    per_key: (SchemaRef, Vec<RecordBatch>),
}

/// Group projected change rows (a union of [`project_source`] frames) per key and upstream.
pub async fn group_changes(ctx: &SessionContext, changes: DataFrame, key: &[String]) -> Result<AffectedKeys> {
    let view = format!("__changes_{}", uuid::Uuid::new_v4().simple());
    ctx.register_table(view.as_str(), changes.into_view())?;
    let keys = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    let sql = format!(
        "SELECT {keys}, {up}, max({ver}) AS _version, max({ts}) AS _ts, \
         last_value({ct} ORDER BY {ver}, {ct}) AS _last_change, count(*) AS _rows \
         FROM {view} GROUP BY {keys}, {up}",
        up = quote(UPSTREAM_COL),
        ver = quote(COMMIT_VERSION),
        ts = quote(COMMIT_TIMESTAMP),
        ct = quote(CHANGE_TYPE),
    );
    let result = async {
        let df = ctx.sql(&sql).await?;
        let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
        let batches = df.collect().await?;
        Ok::<_, color_eyre::Report>((schema, batches))
    }
    .await;
    ctx.deregister_table(view.as_str())?;
    let (schema, batches) = result.wrap_err("grouping change rows by key failed")?;
    let mut affected = AffectedKeys {
        key: key.to_vec(),
        per_upstream: batches,
        schema,
        change_rows: 0,
        null_key_rows: 0,
        distinct_keys: 0,
        per_key: (Arc::new(deltalake::arrow::datatypes::Schema::empty()), vec![]),
    };
    affected.count_rows();
    affected.per_key = affected.aggregate_per_key(ctx).await?;
    affected.distinct_keys = affected.per_key.1.iter().map(|b| b.num_rows() as u64).sum();
    tracing::info!(rows = affected.change_rows, keys = affected.distinct_keys, "change rows grouped");
    Ok(affected)
}

impl AffectedKeys {
    fn count_rows(&mut self) {
        let nkeys = self.key.len();
        for b in &self.per_upstream {
            let rows = b.column(nkeys + 4).as_primitive::<Int64Type>();
            for i in 0..b.num_rows() {
                let n = rows.value(i) as u64;
                self.change_rows += n;
                if (0..nkeys).any(|k| b.column(k).is_null(i)) {
                    self.null_key_rows += n;
                }
            }
        }
    }

    /// Per-upstream rows whose key has no nulls (null keys are counted, never written).
    pub fn non_null_frame(&self, ctx: &SessionContext) -> Result<DataFrame> {
        let table = mem_table(self.schema.clone(), self.per_upstream.clone())?;
        let df = ctx.read_table(Arc::new(table))?;
        let not_null = self
            .key
            .iter()
            .map(|k| ident(k).is_not_null())
            .reduce(Expr::and)
            .unwrap_or_else(|| lit(true));
        Ok(df.filter(not_null)?)
    }

    /// One row per distinct key (sorted, materialised): the MERGE source.
    pub fn per_key(&self, ctx: &SessionContext) -> Result<DataFrame> {
        let (schema, batches) = &self.per_key;
        Ok(ctx.read_table(Arc::new(mem_table(schema.clone(), batches.clone())?))?)
    }

    /// Aggregate per key: `last_change_ts`, `upstreams` and `provenance` lists. Sorted by key
    /// and materialised, so the MERGE source has statistics for file pruning. (Ordered
    /// `array_agg(... ORDER BY ...)` was 100x slower here than `array_sort(array_agg(...))`.)
    async fn aggregate_per_key(&self, ctx: &SessionContext) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        let view = format!("__per_upstream_{}", uuid::Uuid::new_v4().simple());
        ctx.register_table(view.as_str(), self.non_null_frame(ctx)?.into_view())?;
        let keys = self.key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
        let sql = format!(
            "SELECT {keys}, max(_ts) AS last_change_ts, \
             array_sort(array_agg({up})) AS upstreams, \
             array_sort(array_agg(concat({up}, '@', CAST(_version AS VARCHAR), ':', _last_change))) AS provenance \
             FROM {view} GROUP BY {keys} ORDER BY {keys}",
            up = quote(UPSTREAM_COL),
        );
        let result = async {
            let df = ctx.sql(&sql).await?;
            let schema: SchemaRef = Arc::new(df.schema().as_arrow().clone());
            Ok::<_, color_eyre::Report>((schema, df.collect().await?))
        }
        .await;
        ctx.deregister_table(view.as_str())?;
        result
    }

    /// Preview rows: key, upstream, latest commit version, latest change type — ordered by key.
    pub async fn preview_rows(&self, ctx: &SessionContext, limit: Option<usize>) -> Result<Vec<PreviewRow>> {
        let mut order: Vec<_> = self.key.iter().map(|k| ident(k).sort(true, false)).collect();
        order.push(ident(UPSTREAM_COL).sort(true, false));
        let mut df = self.non_null_frame(ctx)?.sort(order)?;
        if let Some(n) = limit {
            df = df.limit(0, Some(n))?;
        }
        let nkeys = self.key.len();
        let mut rows = Vec::new();
        for b in df.collect().await? {
            for i in 0..b.num_rows() {
                let key = (0..nkeys).map(|k| display_value(b.column(k), i)).collect();
                rows.push(PreviewRow {
                    key,
                    upstream: display_value(b.column(nkeys), i),
                    commit_version: b.column(nkeys + 1).as_primitive::<Int64Type>().value(i),
                    change_type: display_value(b.column(nkeys + 3), i),
                    change_rows: b.column(nkeys + 4).as_primitive::<Int64Type>().value(i) as u64,
                });
            }
        }
        Ok(rows)
    }
}

/// An in-memory table of collected batches. The batches' own schema wins over the planned one:
/// they can differ in nullability (and string view types), which MemTable rejects.
pub fn mem_table(planned: SchemaRef, batches: Vec<RecordBatch>) -> Result<MemTable> {
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    Ok(MemTable::try_new(schema, vec![batches])?)
}

/// One affected key as preview shows it: which upstream commit caused it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewRow {
    pub key: Vec<String>,
    pub upstream: String,
    pub commit_version: i64,
    pub change_type: String,
    pub change_rows: u64,
}

/// Render one cell for people (preview, console). Strings unquoted; others via arrow's formatter.
pub fn display_value(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    deltalake::arrow::util::display::array_value_to_string(array, row).unwrap_or_else(|_| "?".into())
}

/// Arrow field for a list of strings as Delta stores it.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}
