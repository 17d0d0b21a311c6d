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
        let Ok(field) = schema.field_with_unqualified_name(src) else {
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
        };
        if let Some(expected) = key_types.map(|t| &t[i]) {
            let found = field.data_type();
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

/// Group projected change rows per key and upstream. `changes` holds one frame (a union of
/// [`project_source`] frames) per upstream: each is grouped by the key alone — a single-column
/// group-by on the key type, which DataFusion does far faster than grouping by (key, upstream)
/// strings (profiled: the multi-column group values dominated a run).
pub async fn group_changes(ctx: &SessionContext, changes: Vec<(String, DataFrame)>, key: &[String]) -> Result<AffectedKeys> {
    let mut batches = Vec::new();
    let mut schema = None;
    for (upstream, frame) in changes {
        let (s, b) = group_one_upstream(ctx, &upstream, frame, key)
            .await
            .wrap_err_with(|| format!("grouping the change rows of upstream `{upstream}` by key failed"))?;
        schema.get_or_insert(s);
        batches.extend(b);
    }
    let schema = schema.unwrap_or_else(|| Arc::new(deltalake::arrow::datatypes::Schema::empty()));
    let mut affected = AffectedKeys {
        key: key.to_vec(),
        per_upstream: batches.into_iter().filter(|b| b.num_rows() > 0).collect(),
        schema,
        change_rows: 0,
        null_key_rows: 0,
        distinct_keys: 0,
        per_key: (Arc::new(deltalake::arrow::datatypes::Schema::empty()), vec![]),
    };
    affected.count_rows();
    affected.per_key = affected.aggregate_per_key()?;
    affected.distinct_keys = affected.per_key.1.iter().map(|b| b.num_rows() as u64).sum();
    tracing::info!(rows = affected.change_rows, keys = affected.distinct_keys, "change rows grouped");
    Ok(affected)
}

async fn group_one_upstream(
    ctx: &SessionContext,
    upstream: &str,
    frame: DataFrame,
    key: &[String],
) -> Result<(SchemaRef, Vec<RecordBatch>)> {
    let view = format!("__changes_{}", uuid::Uuid::new_v4().simple());
    ctx.register_table(view.as_str(), frame.into_view())?;
    let keys = key.iter().map(|k| quote(k)).collect::<Vec<_>>().join(", ");
    // The latest change per key is packed into one integer, `version * 8 + rank(change type)`,
    // so a plain max() finds it: `last_value(… ORDER BY …)` compared scalar values row by row
    // (profiled: the top cost of grouping). Ranks follow the names' lexical order, so a tie in
    // version resolves as ORDER BY version, change type would.
    let rank = CHANGE_TYPE_RANKS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("WHEN '{t}' THEN {i}"))
        .collect::<Vec<_>>()
        .join(" ");
    let unrank = CHANGE_TYPE_RANKS
        .iter()
        .enumerate()
        .map(|(i, t)| format!("WHEN {i} THEN '{t}'"))
        .collect::<Vec<_>>()
        .join(" ");
    let sql = format!(
        "SELECT {keys}, {up_value} AS {up}, _packed / 8 AS _version, _ts, \
         CASE _packed % 8 {unrank} ELSE 'unknown' END AS _last_change, _rows FROM ( \
           SELECT {keys}, max(CAST({ver} AS BIGINT) * 8 + CASE {ct} {rank} ELSE 7 END) AS _packed, \
                  max({ts}) AS _ts, count(*) AS _rows \
           FROM {view} GROUP BY {keys})",
        up_value = sql_string(upstream),
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
    result
}

/// Concatenate batches whose string columns may differ in encoding (Utf8 / Utf8View: `sql`
/// sources and parquet reads differ) by casting every column to the first batch's type, with
/// every string encoding read as plain `Utf8` (what the per-key pass reads).
fn concat_unified(batches: &[RecordBatch], schema: &SchemaRef) -> Result<RecordBatch> {
    use deltalake::arrow::compute::{cast, concat_batches};
    let plain = |t: &DataType| match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    };
    let fields: Vec<Field> = schema.fields().iter().map(|f| Field::new(f.name(), plain(f.data_type()), true)).collect();
    let target: SchemaRef = Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
    let unified = batches
        .iter()
        .map(|b| {
            let columns = b
                .columns()
                .iter()
                .zip(target.fields())
                .map(|(c, f)| cast(c, f.data_type()))
                .collect::<std::result::Result<Vec<_>, _>>()?;
            Ok(RecordBatch::try_new(target.clone(), columns)?)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(concat_batches(&target, &unified)?)
}

/// Change types in lexical order (their rank packs into the latest-change integer).
const CHANGE_TYPE_RANKS: [&str; 6] = ["delete", "insert", "join", "snapshot", "update_postimage", "update_preimage"];

fn sql_string(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
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

    /// Aggregate per key: `last_change_ts`, `upstreams` and `provenance` lists, sorted by key
    /// and materialised so the MERGE source has statistics for file pruning. Done in arrow
    /// (sort + one pass): DataFusion's `array_agg` has no grouped accumulator and went row by
    /// row through scalar values (profiled: most of a large run's CPU; ordered `array_agg` was
    /// 100x slower still).
    fn aggregate_per_key(&self) -> Result<(SchemaRef, Vec<RecordBatch>)> {
        use deltalake::arrow::array::{ListBuilder, StringBuilder, TimestampMicrosecondArray, UInt32Array};
        use deltalake::arrow::compute::{filter_record_batch, is_not_null, take, take_record_batch};
        use deltalake::arrow::datatypes::TimestampMicrosecondType;
        use deltalake::arrow::row::{RowConverter, SortField};

        let nkeys = self.key.len();
        let all = concat_unified(&self.per_upstream, &self.schema_of_rows())?;
        let mut keep = deltalake::arrow::array::BooleanArray::from(vec![true; all.num_rows()]);
        for k in 0..nkeys {
            keep = deltalake::arrow::compute::and(&keep, &is_not_null(all.column(k))?)?;
        }
        let rows = filter_record_batch(&all, &keep)?;
        // Sort by key, then upstream. Upstreams become small integer ranks; an integer key is
        // sorted as plain i64 tuples (profiled: comparing arrow row encodings spent most of
        // its time in memcmp calls); other keys use the row encoding.
        let up_text = rows.column(nkeys).as_string::<i32>();
        let mut names: Vec<&str> = up_text.iter().flatten().collect();
        names.sort_unstable();
        names.dedup();
        let up_rank: Vec<u32> =
            up_text.iter().map(|u| names.binary_search(&u.unwrap_or_default()).unwrap_or(0) as u32).collect();
        let int_key = (nkeys == 1 && rows.column(0).data_type().is_integer())
            .then(|| deltalake::arrow::compute::cast(rows.column(0), &DataType::Int64))
            .transpose()?;
        let (order, starts): (Vec<u32>, Vec<u32>) = match &int_key {
            Some(k) => {
                let k = k.as_primitive::<Int64Type>();
                let mut t: Vec<(i64, u32, u32)> = (0..rows.num_rows()).map(|i| (k.value(i), up_rank[i], i as u32)).collect();
                t.sort_unstable();
                let starts = (0..t.len()).filter(|&i| i == 0 || t[i].0 != t[i - 1].0).map(|i| i as u32).collect();
                (t.into_iter().map(|x| x.2).collect(), starts)
            }
            None => {
                let converter =
                    RowConverter::new((0..nkeys).map(|i| SortField::new(rows.column(i).data_type().clone())).collect())?;
                let keys = converter.convert_columns(&rows.columns()[..nkeys])?;
                let mut order: Vec<u32> = (0..rows.num_rows() as u32).collect();
                order.sort_unstable_by(|&a, &b| {
                    let (a, b) = (a as usize, b as usize);
                    keys.row(a).cmp(&keys.row(b)).then(up_rank[a].cmp(&up_rank[b]))
                });
                let starts = (0..order.len())
                    .filter(|&i| i == 0 || keys.row(order[i] as usize) != keys.row(order[i - 1] as usize))
                    .map(|i| i as u32)
                    .collect();
                (order, starts)
            }
        };
        let sorted = take_record_batch(&rows, &UInt32Array::from(order))?;
        let n = sorted.num_rows();
        // Strings are plain Utf8 here (concat_unified); numbers are cast in case a source typed them differently.
        let (upstream, last_change) = (sorted.column(nkeys).as_string::<i32>(), sorted.column(nkeys + 3).as_string::<i32>());
        let version = deltalake::arrow::compute::cast(sorted.column(nkeys + 1), &DataType::Int64)?;
        let version = version.as_primitive::<Int64Type>();
        let ts = deltalake::arrow::compute::cast(sorted.column(nkeys + 2), &timestamp_type())?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let mut last_ts: Vec<Option<i64>> = Vec::with_capacity(starts.len());
        let mut upstreams = ListBuilder::new(StringBuilder::new());
        let mut provenance = ListBuilder::new(StringBuilder::new());
        for (g, &start) in starts.iter().enumerate() {
            let end = starts.get(g + 1).map_or(n, |e| *e as usize);
            let mut max_ts: Option<i64> = None;
            for i in start as usize..end {
                if ts.is_valid(i) {
                    max_ts = max_ts.max(Some(ts.value(i)));
                }
                if i == start as usize || upstream.value(i) != upstream.value(i - 1) {
                    upstreams.values().append_value(upstream.value(i));
                }
                provenance.values().append_value(format!("{}@{}:{}", upstream.value(i), version.value(i), last_change.value(i)));
            }
            last_ts.push(max_ts);
            upstreams.append(true);
            provenance.append(true);
        }
        let first_rows = UInt32Array::from(starts);
        let mut columns: Vec<deltalake::arrow::array::ArrayRef> = Vec::with_capacity(nkeys + 3);
        let mut fields: Vec<Field> = Vec::with_capacity(nkeys + 3);
        for k in 0..nkeys {
            columns.push(take(sorted.column(k).as_ref(), &first_rows, None)?);
            fields.push(sorted.schema().field(k).clone());
        }
        columns.push(Arc::new(TimestampMicrosecondArray::from(last_ts).with_timezone("UTC")));
        fields.push(Field::new("last_change_ts", timestamp_type(), true));
        let upstreams = upstreams.finish();
        fields.push(Field::new("upstreams", upstreams.data_type().clone(), true));
        columns.push(Arc::new(upstreams));
        let provenance = provenance.finish();
        fields.push(Field::new("provenance", provenance.data_type().clone(), true));
        columns.push(Arc::new(provenance));
        let schema: SchemaRef = Arc::new(deltalake::arrow::datatypes::Schema::new(fields));
        let batch = RecordBatch::try_new(schema.clone(), columns)?;
        Ok((schema, vec![batch]))
    }

    /// The schema the per-upstream batches really have (nullability may differ from the plan's).
    fn schema_of_rows(&self) -> SchemaRef {
        self.per_upstream.first().map(|b| b.schema()).unwrap_or_else(|| self.schema.clone())
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
