//! Joins whose cost follows the change: a `sql` source's joined table is read only where the
//! change rows can join it.
//!
//! In `… FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id`, a row of `aff` whose `sp_id` is not
//! among the change rows' `sp_id`s cannot reach the output, so the scan of `aff` is given
//! `sp_id IN (those values)` (or, for many values, ranges that cover them): delta-rs skips the
//! files whose statistics exclude them and Parquet the row groups. The filter is applied to the
//! table's snapshot and to its change images alike (the relation the delta rule reads).
//!
//! That is only sound where the query says so, and it is proved on the query's optimized plan
//! (so `WHERE c.x = t.x`, `IN (SELECT …)` and CTEs count too): **every** read of the table must
//! sit under a join that equates one of its columns with a column of `changes`, through nodes
//! that commute with a row filter (projection, alias, filter, sort, distinct, grouping by that
//! column), on a side that the
//! join only keeps when it matches (inner and semi joins; the optional side of an outer join; the
//! filtering side of an anti join). Anything else — a full join, a LIMIT or aggregate between
//! the table and the join, `IS NOT DISTINCT FROM` or a `NOT IN` join — reads the whole table.

use std::cmp::Ordering;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::Result;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::common::tree_node::TreeNodeRecursion;
use deltalake::datafusion::common::{Column, JoinType, NullEquality, ScalarValue};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::{Distinct, LogicalPlan};
use deltalake::datafusion::prelude::{DataFrame, Expr, ident, lit};

use super::core::session;
use super::sqlmap::CHANGES;

/// A list longer than this becomes covering ranges (the filter stays small to plan and test).
const MAX_LIST: usize = 256;
/// Ranges a long list is cut into, at its widest gaps.
const MAX_RANGES: usize = 256;

/// A column of the joined table that the query equates with a column of `changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct KeyLink {
    pub table_column: String,
    pub changes_column: String,
}

/// For each table the query joins, the links that let its scan be pruned (tables that cannot
/// be pruned are absent). `schemas` are the relations' schemas, `changes` included.
pub(crate) async fn plan_links(sql: &str, schemas: &[(String, SchemaRef)]) -> Result<HashMap<String, Vec<KeyLink>>> {
    let ctx = session();
    for (name, schema) in schemas {
        ctx.register_table(name.as_str(), Arc::new(MemTable::try_new(schema.clone(), vec![vec![]])?))?;
    }
    let unoptimized = ctx.sql(sql).await?.into_unoptimized_plan();
    let optimized = ctx.state().optimize(&unoptimized)?;
    Ok(schemas
        .iter()
        .filter(|(name, _)| name != CHANGES)
        .filter_map(|(name, _)| Some((name.clone(), links_for(&optimized, name)?)))
        .collect())
}

/// The links that cover every scan of `table` in `plan`, or `None` if some scan has none.
pub(crate) fn links_for(plan: &LogicalPlan, table: &str) -> Option<Vec<KeyLink>> {
    let mut scans: Vec<*const LogicalPlan> = Vec::new();
    let mut proofs: Vec<(*const LogicalPlan, KeyLink)> = Vec::new();
    let _ = plan.apply_with_subqueries(|node| {
        match node {
            LogicalPlan::TableScan(scan) if scan.table_name.table().eq_ignore_ascii_case(table) => scans.push(node as *const _),
            LogicalPlan::Join(join) => proofs.extend(join_proofs(join, table)),
            _ => {}
        }
        Ok(TreeNodeRecursion::Continue)
    });
    if scans.is_empty() || !scans.iter().all(|s| proofs.iter().any(|(p, _)| p == s)) {
        return None;
    }
    let mut links: Vec<KeyLink> = Vec::new();
    for (_, link) in proofs {
        if !links.contains(&link) {
            links.push(link);
        }
    }
    Some(links)
}

/// The scans of `table` that this join prunes, each with the link that proves it.
fn join_proofs(join: &deltalake::datafusion::logical_expr::Join, table: &str) -> Vec<(*const LogicalPlan, KeyLink)> {
    if join.null_equality == NullEquality::NullEqualsNull || join.null_aware {
        return vec![];
    }
    let mut out = Vec::new();
    for (l, r) in &join.on {
        let (Some(l), Some(r)) = (l.try_as_col(), r.try_as_col()) else { continue };
        for (table_side, table_col, other_side, other_col, table_on_left) in
            [(&join.left, l, &join.right, r, true), (&join.right, r, &join.left, l, false)]
        {
            if !keeps_only_matches(join.join_type, table_on_left) {
                continue;
            }
            let Some((scan, table_column)) = trace(table_side, table_col, false) else { continue };
            let Some((origin, changes_column)) = trace(other_side, other_col, true) else { continue };
            if scan_of(scan, table) && scan_of(origin, CHANGES) {
                out.push((scan as *const _, KeyLink { table_column, changes_column }));
            }
        }
    }
    out
}

fn scan_of(plan: &LogicalPlan, table: &str) -> bool {
    matches!(plan, LogicalPlan::TableScan(s) if s.table_name.table().eq_ignore_ascii_case(table))
}

/// Whether the join outputs a row of the given side only with a match from the other side (or
/// never lets an unmatched row of it change the output): then rows that match nothing may go.
fn keeps_only_matches(join_type: JoinType, on_left: bool) -> bool {
    match join_type {
        JoinType::Inner | JoinType::LeftSemi | JoinType::RightSemi => true,
        JoinType::Left | JoinType::LeftAnti | JoinType::LeftMark => !on_left,
        JoinType::Right | JoinType::RightAnti | JoinType::RightMark => on_left,
        JoinType::Full => false,
    }
}

/// Follow `col` down to the scan it comes from, unchanged. The table's side passes only nodes
/// that commute with a row filter on that column; the `changes` side may also pass joins and limits (its
/// values stay a subset of the change rows' values).
fn trace<'a>(plan: &'a LogicalPlan, col: &Column, changes_side: bool) -> Option<(&'a LogicalPlan, String)> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            scan.projected_schema.index_of_column(col).ok()?;
            (changes_side || scan.fetch.is_none()).then(|| (plan, col.name.clone()))
        }
        LogicalPlan::SubqueryAlias(a) => {
            let idx = a.schema.index_of_column(col).ok()?;
            let (q, f) = a.input.schema().qualified_field(idx);
            trace(&a.input, &Column::new(q.cloned(), f.name()), changes_side)
        }
        LogicalPlan::Projection(p) => {
            let idx = p.schema.index_of_column(col).ok()?;
            let inner = match &p.expr[idx] {
                Expr::Alias(a) => a.expr.try_as_col()?,
                e => e.try_as_col()?,
            };
            trace(&p.input, inner, changes_side)
        }
        LogicalPlan::Filter(f) => trace(&f.input, col, changes_side),
        LogicalPlan::Distinct(Distinct::All(input)) => trace(input, col, changes_side),
        // A group-by column: filtering on it drops whole groups and leaves the others as they were.
        LogicalPlan::Aggregate(a) => {
            let idx = a.schema.index_of_column(col).ok()?;
            trace(&a.input, a.group_expr.get(idx)?.try_as_col()?, changes_side)
        }
        LogicalPlan::Sort(s) if changes_side || s.fetch.is_none() => trace(&s.input, col, changes_side),
        LogicalPlan::Limit(l) if changes_side => trace(&l.input, col, changes_side),
        LogicalPlan::Join(j) if changes_side => {
            let side = if j.left.schema().index_of_column(col).is_ok() { &j.left } else { &j.right };
            trace(side, col, changes_side)
        }
        _ => None,
    }
}

/// The filter for a joined table: a row passes when, for some link, its column holds a value
/// the change rows hold in theirs (a superset when the values are cut into ranges).
pub(crate) async fn key_filter(changes: &DataFrame, links: &[KeyLink]) -> Result<Expr> {
    let mut terms = Vec::new();
    for link in links {
        let values = distinct_values(changes, &link.changes_column).await?;
        terms.push(covering(&link.table_column, values));
    }
    Ok(terms.into_iter().reduce(Expr::or).unwrap_or_else(|| lit(false)))
}

async fn distinct_values(changes: &DataFrame, column: &str) -> Result<Vec<ScalarValue>> {
    let batches = changes.clone().select(vec![ident(column)])?.distinct()?.collect().await?;
    let mut values = Vec::new();
    for batch in &batches {
        let array = batch.column(0);
        for i in 0..array.len() {
            if array.is_valid(i) {
                values.push(ScalarValue::try_from_array(array, i)?);
            }
        }
    }
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    Ok(values)
}

/// `column IN (values)`, or for a long list ranges that cover the values (cut at the widest
/// gaps where values have a distance, in equal runs otherwise). `values` are sorted, not null.
pub(crate) fn covering(column: &str, values: Vec<ScalarValue>) -> Expr {
    if values.is_empty() {
        return lit(false); // no change row has a value: no row of the table can join one
    }
    if values.len() <= MAX_LIST {
        return ident(column).in_list(values.into_iter().map(lit).collect(), false);
    }
    let cuts = range_cuts(&values, MAX_RANGES);
    let mut start = 0;
    let mut terms = Vec::new();
    for end in cuts.into_iter().chain(std::iter::once(values.len())) {
        let (lo, hi) = (values[start].clone(), values[end - 1].clone());
        terms.push(ident(column).between(lit(lo), lit(hi)));
        start = end;
    }
    terms.into_iter().reduce(Expr::or).unwrap_or_else(|| lit(false))
}

/// Indices where the sorted `values` are split into at most `ranges` runs.
fn range_cuts(values: &[ScalarValue], ranges: usize) -> Vec<usize> {
    let gaps: Option<Vec<(u64, usize)>> =
        values.windows(2).enumerate().map(|(i, w)| Some((w[0].distance_u64(&w[1])?, i + 1))).collect();
    let mut cuts: Vec<usize> = match gaps {
        Some(mut gaps) => {
            // Adjacent integers leave nothing between them to skip.
            gaps.retain(|(gap, _)| *gap > 1);
            gaps.sort_by(|a, b| b.0.cmp(&a.0));
            gaps.into_iter().take(ranges - 1).map(|(_, i)| i).collect()
        }
        None => {
            let per = values.len().div_ceil(ranges);
            (1..ranges).map(|k| k * per).filter(|&i| i < values.len()).collect()
        }
    };
    cuts.sort_unstable();
    cuts
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};

    fn schemas() -> Vec<(String, SchemaRef)> {
        let changes = Schema::new(vec![
            Field::new("sp_id", DataType::Int64, true),
            Field::new("name", DataType::Utf8, true),
            Field::new("_change_type", DataType::Utf8, true),
        ]);
        let aff = Schema::new(vec![Field::new("sp_id", DataType::Int64, true), Field::new("inst", DataType::Int64, true)]);
        let other = Schema::new(vec![Field::new("inst", DataType::Int64, true), Field::new("k", DataType::Int64, true)]);
        vec![("changes".into(), Arc::new(changes)), ("aff".into(), Arc::new(aff)), ("other".into(), Arc::new(other))]
    }

    async fn links(sql: &str) -> HashMap<String, Vec<KeyLink>> {
        plan_links(sql, &schemas()).await.expect("plans")
    }

    fn on_sp_id() -> Vec<KeyLink> {
        vec![KeyLink { table_column: "sp_id".into(), changes_column: "sp_id".into() }]
    }

    #[tokio::test]
    async fn equi_joins_with_changes_prune_in_every_spelling() {
        for sql in [
            "SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id",
            "SELECT ra.inst FROM changes c, aff ra WHERE ra.sp_id = c.sp_id AND c.name <> 'x'",
            "SELECT inst FROM aff WHERE sp_id IN (SELECT sp_id FROM changes)",
            "SELECT ra.inst FROM changes c LEFT JOIN aff ra ON c.sp_id = ra.sp_id",
            "WITH x AS (SELECT DISTINCT sp_id FROM changes) SELECT a.inst FROM (SELECT * FROM aff WHERE inst > 0) a JOIN x ON a.sp_id = x.sp_id",
            "SELECT ra.inst FROM aff ra JOIN changes c ON ra.sp_id = c.sp_id JOIN aff rb ON rb.sp_id = c.sp_id",
            "SELECT g.m AS inst FROM changes c JOIN (SELECT sp_id, max(inst) AS m FROM aff GROUP BY sp_id) g ON g.sp_id = c.sp_id",
        ] {
            assert_eq!(links(sql).await.get("aff"), Some(&on_sp_id()), "{sql}");
        }
    }

    #[tokio::test]
    async fn rows_that_can_reach_the_output_unmatched_keep_the_whole_table() {
        for sql in [
            // every row of aff is output, matched or not
            "SELECT ra.inst FROM aff ra LEFT JOIN changes c ON c.sp_id = ra.sp_id",
            "SELECT ra.inst FROM changes c FULL JOIN aff ra ON c.sp_id = ra.sp_id",
            "SELECT inst FROM aff WHERE sp_id NOT IN (SELECT sp_id FROM changes)",
            // which rows a LIMIT or an aggregate sees depends on the rows it is given
            "SELECT ra.inst FROM changes c JOIN (SELECT * FROM aff LIMIT 10) ra ON c.sp_id = ra.sp_id",
            "SELECT ra.m AS inst FROM changes c JOIN (SELECT min(sp_id) AS sp_id, max(inst) AS m FROM aff) ra ON c.sp_id = ra.sp_id",
            // one read of aff is pruned, the other is not
            "SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id UNION ALL SELECT inst FROM aff",
            // NULL matches NULL
            "SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id IS NOT DISTINCT FROM ra.sp_id",
        ] {
            assert_eq!(links(sql).await.get("aff"), None, "{sql}");
        }
    }

    #[tokio::test]
    async fn a_table_joined_only_through_another_table_is_not_pruned_by_changes() {
        let got = links("SELECT o.k FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id JOIN other o ON o.inst = ra.inst").await;
        assert_eq!(got.get("aff"), Some(&on_sp_id()));
        assert_eq!(got.get("other"), None);
    }

    #[test]
    fn long_lists_become_ranges_cut_at_the_widest_gaps() {
        let clustered: Vec<ScalarValue> =
            (0..300).map(|i| ScalarValue::Int64(Some(if i < 150 { i } else { 1_000_000 + i }))).collect();
        let expr = covering("sp_id", clustered);
        let text = expr.to_string();
        assert!(text.contains("BETWEEN Int64(0) AND Int64(149)"), "{text}");
        assert!(text.contains("BETWEEN Int64(1000150) AND Int64(1000299)"), "{text}");
        assert_eq!(covering("sp_id", vec![]), lit(false));
        let strings: Vec<ScalarValue> = (0..1000).map(|i| ScalarValue::Utf8(Some(format!("k{i:04}")))).collect();
        let text = covering("name", strings).to_string();
        let ranges = text.matches("BETWEEN").count();
        assert!(ranges > 1 && ranges <= MAX_RANGES && text.contains("k0000") && text.contains("k0999"), "{ranges}: {text}");
    }

    /// Soundness against the unpruned query itself: over random small tables (NULLs included),
    /// every query whose plan allows narrowing returns the same rows with `aff` narrowed by
    /// [`key_filter`] as with `aff` whole — including shapes that must not be narrowed, in case
    /// the analysis ever allowed one.
    #[tokio::test]
    async fn narrowing_never_changes_a_querys_rows() {
        use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
        use deltalake::arrow::util::display::array_value_to_string;
        use deltalake::datafusion::prelude::SessionContext;
        use rand::{Rng, SeedableRng};

        const QUERIES: [(&str, bool); 16] = [
            ("SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id", true),
            ("SELECT ra.inst FROM changes c LEFT JOIN aff ra ON c.sp_id = ra.sp_id", true),
            ("SELECT inst FROM aff WHERE sp_id IN (SELECT sp_id FROM changes)", true),
            ("SELECT c.sp_id AS inst FROM changes c WHERE NOT EXISTS (SELECT 1 FROM aff a WHERE a.sp_id = c.sp_id)", true),
            ("SELECT c.sp_id AS inst, count(ra.inst) AS n FROM changes c LEFT JOIN aff ra ON c.sp_id = ra.sp_id GROUP BY c.sp_id", true),
            ("SELECT g.m AS inst FROM changes c JOIN (SELECT sp_id, max(inst) AS m FROM aff GROUP BY sp_id) g ON g.sp_id = c.sp_id", true),
            ("WITH x AS (SELECT DISTINCT sp_id FROM changes) SELECT a.inst FROM (SELECT * FROM aff WHERE inst > 2) a JOIN x ON a.sp_id = x.sp_id", true),
            ("SELECT ra.inst FROM aff ra JOIN changes c ON ra.sp_id = c.sp_id JOIN aff rb ON rb.sp_id = c.sp_id", true),
            ("SELECT o.k AS inst FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id JOIN other o ON o.inst = ra.inst", true),
            ("SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id = ra.sp_id AND ra.inst > c.sp_id WHERE ra.inst IS NULL OR c.name <> 'x'", true),
            ("SELECT ra.inst FROM aff ra LEFT JOIN changes c ON c.sp_id = ra.sp_id", false),
            ("SELECT ra.inst FROM changes c RIGHT JOIN aff ra ON c.sp_id = ra.sp_id", false),
            ("SELECT ra.inst FROM changes c FULL JOIN aff ra ON c.sp_id = ra.sp_id", false),
            ("SELECT inst FROM aff WHERE sp_id NOT IN (SELECT sp_id FROM changes)", false),
            ("SELECT ra.inst FROM changes c JOIN aff ra ON c.sp_id + 1 = ra.sp_id", false),
            ("SELECT count(*) AS inst FROM changes c JOIN (SELECT * FROM aff ORDER BY inst LIMIT 3) ra ON c.sp_id = ra.sp_id", false),
        ];
        let ints = |rng: &mut rand::rngs::SmallRng, n: usize| -> ArrayRef {
            Arc::new(Int64Array::from((0..n).map(|_| (rng.gen_range(0..10) > 0).then(|| rng.gen_range(0..8))).collect::<Vec<_>>()))
        };
        let schemas = schemas();
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        for (sql, narrows) in QUERIES {
            let mut narrowed_cases = 0;
            for case in 0..60 {
                let (nc, na, no) = (rng.gen_range(0..5), rng.gen_range(0..12), rng.gen_range(0..6));
                let names: ArrayRef = Arc::new(StringArray::from((0..nc).map(|i| format!("n{i}")).collect::<Vec<_>>()));
                let kinds: ArrayRef = Arc::new(StringArray::from(vec!["insert"; nc]));
                let tables = [
                    RecordBatch::try_new(schemas[0].1.clone(), vec![ints(&mut rng, nc), names, kinds]).expect("changes"),
                    RecordBatch::try_new(schemas[1].1.clone(), vec![ints(&mut rng, na), ints(&mut rng, na)]).expect("aff"),
                    RecordBatch::try_new(schemas[2].1.clone(), vec![ints(&mut rng, no), ints(&mut rng, no)]).expect("other"),
                ];
                let ctx_with = |narrow: Option<Expr>| {
                    let tables = tables.clone();
                    let schemas = schemas.clone();
                    async move {
                        let ctx = SessionContext::new();
                        for ((name, schema), batch) in schemas.iter().zip(tables) {
                            let mem = Arc::new(MemTable::try_new(schema.clone(), vec![vec![batch]]).expect("mem"));
                            match (&narrow, name.as_str()) {
                                (Some(f), "aff") => ctx.register_table("aff", ctx.read_table(mem).expect("read").filter(f.clone()).expect("filter").into_view()),
                                _ => ctx.register_table(name.as_str(), mem),
                            }
                            .expect("register");
                        }
                        ctx
                    }
                };
                let rows = |ctx: SessionContext| async move {
                    let batches = ctx.sql(sql).await.expect(sql).collect().await.expect(sql);
                    let mut out: Vec<String> = batches
                        .iter()
                        .flat_map(|b| (0..b.num_rows()).map(move |r| (0..b.num_columns()).map(|c| array_value_to_string(b.column(c), r).expect("text")).collect::<Vec<_>>().join(",")))
                        .collect();
                    out.sort();
                    out
                };
                let Some(links) = plan_links(sql, &schemas).await.expect("plans").remove("aff") else { continue };
                let whole = ctx_with(None).await;
                let filter = key_filter(&whole.table("changes").await.expect("changes"), &links).await.expect("filter");
                assert_eq!(rows(ctx_with(Some(filter.clone())).await).await, rows(whole).await, "case {case}: {sql} narrowed by {filter}");
                narrowed_cases += 1;
            }
            assert_eq!(narrowed_cases > 0, narrows, "{sql}");
        }
    }

}
