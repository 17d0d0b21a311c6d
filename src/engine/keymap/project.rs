//! Projecting a source's change rows to the key columns (and the CDF columns grouping needs),
//! directly or from a `sql` mapping's output.

use color_eyre::eyre::Result;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, SchemaRef, TimeUnit};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::{Expr, cast, ident, lit};
use deltalake::datafusion::prelude::DataFrame;

use crate::Error;
use crate::store::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};

/// Commit timestamps on their way to grouping: epoch microseconds, UTC as Delta defines them,
/// without a zone. A cast that adds a zone to zoneless values adjusts each one through the
/// zone's rules (profiled: ~5 % of a from-scratch run); casts between zoneless units do not.
pub(crate) fn change_ts_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, None)
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
    exprs.push(cast(ident(COMMIT_TIMESTAMP), change_ts_type()).alias(COMMIT_TIMESTAMP));
    Ok(df.select(exprs)?)
}

/// Whether a key of type `found` casts losslessly enough to the link table's `expected`:
/// widening integers and string encodings do; anything else means the column was retyped and
/// a cast could turn keys into NULLs or different values.
pub(crate) fn same_key_family(found: &DataType, expected: &DataType) -> bool {
    let strings = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    found == expected || (found.is_integer() && expected.is_integer()) || (strings(found) && strings(expected))
}

pub(crate) fn cast_key(e: Expr, ty: Option<&DataType>) -> Expr {
    match ty {
        Some(t) => cast(e, t.clone()),
        None => e,
    }
}

/// Shape a `sql` source's output like projected change rows. With `provenance`, the query
/// returned the change row's version/type/time; otherwise the range end is the version.
pub fn project_sql_output(
    df: DataFrame,
    key: &[String],
    key_types: Option<&[DataType]>,
    provenance: bool,
    pinned: Option<(u64, Option<i64>)>,
) -> Result<DataFrame> {
    use crate::engine::sqlmap::{PROV_TS, PROV_TYPE, PROV_VERSION};
    use deltalake::datafusion::scalar::ScalarValue;
    let mut exprs: Vec<Expr> = key
        .iter()
        .enumerate()
        .map(|(i, k)| cast_key(ident(k), key_types.map(|t| &t[i])).alias(k))
        .collect();
    if provenance {
        exprs.push(ident(PROV_TYPE).alias(CHANGE_TYPE));
        exprs.push(cast(ident(PROV_VERSION), DataType::Int64).alias(COMMIT_VERSION));
        exprs.push(cast(ident(PROV_TS), change_ts_type()).alias(COMMIT_TIMESTAMP));
    } else {
        let (version, ts) = pinned.unwrap_or((0, None));
        exprs.push(lit("join").alias(CHANGE_TYPE));
        exprs.push(lit(version as i64).alias(COMMIT_VERSION));
        exprs.push(lit(ScalarValue::TimestampMicrosecond(ts.map(|t| t * 1000), None)).alias(COMMIT_TIMESTAMP));
    }
    Ok(df.select(exprs)?)
}

/// An in-memory table of collected batches. The batches' own schema wins over the planned one:
/// they can differ in nullability (and string view types), which MemTable rejects.
pub fn mem_table(planned: SchemaRef, batches: Vec<RecordBatch>) -> Result<MemTable> {
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    Ok(MemTable::try_new(schema, vec![batches])?)
}
