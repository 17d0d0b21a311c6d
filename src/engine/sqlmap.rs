//! Join mapping: a source may give `sql` instead of `keys`.
//!
//! In the SQL, `changes` is this upstream's change rows for the run (all columns plus
//! `_change_type`, `_commit_version`, `_commit_timestamp`), and every other upstream is visible
//! by its name. To make the delta rule complete, another upstream's relation is its snapshot at
//! the version pinned for the run **plus its change images of the run** (pre-images and deleted
//! rows): a joined row that existed at the start of the range or exists at its end, and involves a
//! changed row, is found even when both sides changed in the same run.
//!
//! For provenance, a simple `SELECT … FROM changes [AS c] …` is rewritten to also return
//! `c._commit_version`, `c._change_type`, `c._commit_timestamp`; other query shapes get the range
//! end as their version and `join` as their change type.

use std::ops::ControlFlow;

use color_eyre::eyre::{eyre, Result};
use deltalake::datafusion::sql::sqlparser::ast::{
    self, visit_relations, GroupByExpr, Ident, ObjectName, SelectItem, SetExpr, Statement, TableFactor,
};
use deltalake::datafusion::sql::sqlparser::dialect::GenericDialect;
use deltalake::datafusion::sql::sqlparser::parser::Parser;

use crate::store::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};

/// The name under which a source's own change rows are visible.
pub const CHANGES: &str = "changes";
pub const PROV_VERSION: &str = "__dl_commit_version";
pub const PROV_TYPE: &str = "__dl_change_type";
pub const PROV_TS: &str = "__dl_commit_timestamp";

/// A parsed and checked mapping query.
#[derive(Debug, Clone)]
pub struct PreparedSql {
    /// The SQL to run (with provenance columns added when possible).
    pub sql: String,
    /// Other upstreams the query reads (excluding `changes` and CTE names).
    pub tables: Vec<String>,
    /// Whether the query returns the provenance columns.
    pub provenance: bool,
}

/// Parse `sql`, check its tables are `changes` or configured upstreams, add provenance columns.
pub fn prepare(sql: &str, pipeline: &str, source: &str, upstreams: &[String]) -> Result<PreparedSql> {
    let at = || format!("pipeline `{pipeline}`, source `{source}`");
    let mut stmts = Parser::parse_sql(&GenericDialect {}, sql).map_err(|e| eyre!("{}: the `sql` does not parse: {e}", at()))?;
    if stmts.len() != 1 {
        return Err(eyre!("{}: the `sql` must be exactly one SELECT statement (found {})", at(), stmts.len()));
    }
    let mut stmt = stmts.remove(0);
    let Statement::Query(query) = &mut stmt else {
        return Err(eyre!("{}: the `sql` must be a SELECT query", at()));
    };
    let ctes: Vec<String> = query
        .with
        .as_ref()
        .map(|w| w.cte_tables.iter().map(|c| c.alias.name.value.to_lowercase()).collect())
        .unwrap_or_default();
    let provenance = add_provenance(query);
    let mut tables: Vec<String> = Vec::new();
    let mut unknown: Option<String> = None;
    let _ = visit_relations(&stmt, |rel: &ObjectName| {
        let name = last_part(rel).to_lowercase();
        if name == CHANGES || ctes.contains(&name) || tables.contains(&name) {
            return ControlFlow::<()>::Continue(());
        }
        if upstreams.iter().any(|u| u.to_lowercase() == name) {
            tables.push(name);
        } else if unknown.is_none() {
            unknown = Some(rel.to_string());
        }
        ControlFlow::Continue(())
    });
    if let Some(t) = unknown {
        return Err(eyre!(
            "{}: the `sql` reads unknown table `{t}`; it may read `changes` (this upstream's change rows) and the configured upstreams: {}",
            at(),
            upstreams.join(", ")
        ));
    }
    Ok(PreparedSql { sql: stmt.to_string(), tables, provenance })
}

fn last_part(name: &ObjectName) -> String {
    name.0
        .last()
        .and_then(|p| p.as_ident())
        .map(|i| i.value.clone())
        .unwrap_or_else(|| name.to_string())
}

/// Append the change row's version, type and time to a plain SELECT over `changes`.
fn add_provenance(query: &mut ast::Query) -> bool {
    let SetExpr::Select(select) = query.body.as_mut() else { return false };
    let grouped = !matches!(&select.group_by, GroupByExpr::Expressions(e, m) if e.is_empty() && m.is_empty());
    if select.distinct.is_some() || grouped || select.having.is_some() {
        return false;
    }
    let qualifier = select.from.iter().flat_map(|t| std::iter::once(&t.relation).chain(t.joins.iter().map(|j| &j.relation))).find_map(|f| match f {
        TableFactor::Table { name, alias, .. } if last_part(name).eq_ignore_ascii_case(CHANGES) => {
            Some(alias.as_ref().map_or_else(|| Ident::new(CHANGES), |a| a.name.clone()))
        }
        _ => None,
    });
    let Some(q) = qualifier else { return false };
    for (col, alias) in [(COMMIT_VERSION, PROV_VERSION), (CHANGE_TYPE, PROV_TYPE), (COMMIT_TIMESTAMP, PROV_TS)] {
        select.projection.push(SelectItem::ExprWithAlias {
            expr: ast::Expr::CompoundIdentifier(vec![q.clone(), Ident::with_quote('"', col)]),
            alias: Ident::with_quote('"', alias),
        });
    }
    true
}

/// Check the query's output columns are exactly the pipeline key (plus provenance columns).
pub fn check_output(columns: &[String], key: &[String], pipeline: &str, source: &str) -> Result<()> {
    let returned: Vec<&String> = columns.iter().filter(|c| !c.starts_with("__dl_")).collect();
    let missing: Vec<&String> = key.iter().filter(|k| !returned.contains(k)).collect();
    let extra: Vec<&&String> = returned.iter().filter(|c| !key.contains(c)).collect();
    if missing.is_empty() && extra.is_empty() && returned.len() == key.len() {
        return Ok(());
    }
    Err(eyre!(
        "pipeline `{pipeline}`, source `{source}`: the `sql` must return exactly the key columns {key:?}, but it returned {returned:?}{}{}",
        if missing.is_empty() { String::new() } else { format!("; missing {missing:?}") },
        if extra.is_empty() { String::new() } else { format!("; unexpected {extra:?} (alias them, e.g. `ra.institution_key AS institution_key`, or drop them)") },
    ))
}
