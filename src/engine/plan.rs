//! Planning a run: versions pinned, ranges decided, key types checked — nothing written.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use color_eyre::eyre::{Result, eyre};
use deltalake::DeltaTable;
use deltalake::arrow::datatypes::DataType;
use deltalake::schema::DataType as DeltaType;

use crate::Error;
use crate::config::{KeyMapping, Pipeline, StartFrom};
use crate::store::cdf::{self, ReadRange};
use crate::store::counted::ScanTally;
use crate::store::lake;
use crate::store::link;
use crate::store::tracker::TrackerRow;

use super::core::Engine;
use super::report::{JoinedRead, ReadRangeView, UpstreamRead};

impl Engine {

    /// Pin versions and decide ranges; resume a pending intent with its own pins and run_id.
    /// `resume`: the pending intent in `rows` is redone (else it is ignored: there is none, or
    /// it was abandoned); `link` and `committed` are the link table and its last run as read.
    pub(crate) async fn plan(&self, pipeline: &Pipeline, rows: &[TrackerRow], link: Option<DeltaTable>, committed: Option<i64>, resume: bool) -> Result<Plan> {
        let prior: HashMap<String, TrackerRow> = rows.iter().map(|r| (r.upstream.clone(), r.clone())).collect();
        let pending_run = rows.iter().filter_map(|r| r.pending_run_id).max().filter(|_| resume);
        let names = pipeline.upstream_names();
        // Each upstream opened, its range decided and checked concurrently (the range's log is
        // listed and its commits read, a few milliseconds per upstream); a failure is reported
        // for the first upstream in the config's order that has one.
        let planned = futures::future::join_all(names.iter().map(|n| async {
            let (table, read) = self.open_pinned(n, prior.get(n), pending_run).await?;
            let read = decide_range(pipeline, &table, read).await?;
            check_readable(&read, &table).await?;
            Ok::<_, color_eyre::Report>((table, read))
        }))
        .await;
        let mut reads = Vec::new();
        let mut tables = HashMap::new();
        for (name, planned) in names.iter().zip(planned) {
            let (table, read) = planned?;
            reads.push(read);
            tables.insert(name.clone(), table);
        }
        self.open_sql_tables(pipeline, &mut tables).await?;
        check_link_table_present(pipeline, rows, link.as_ref())?;
        key_types_over_sources(pipeline, &tables, link.as_ref())?;
        let run_id = match pending_run {
            Some(r) => r,
            None => {
                // An abandoned intent's run_id is never reused: its writer may still commit it.
                let last = rows.iter().flat_map(|r| [r.run_id, r.pending_run_id]).flatten().max().unwrap_or(0);
                last.max(committed.unwrap_or(0)) + 1
            }
        };
        let link_committed = if link.is_some() { committed } else { None };
        Ok(Plan {
            pipeline: pipeline.clone(),
            run_id,
            resumed: pending_run.is_some(),
            reads,
            tables,
            prior,
            link,
            link_committed,
            joined: JoinedScans::default(),
        })
    }

    /// Key column types: the link table's when it existed at planning, else the `keys` sources'
    /// (the widest integer where they differ in width, as the link table will be created);
    /// `None` for a pipeline of `sql` sources only (their output types are used).
    pub(crate) fn arrow_key_types(&self, plan: &Plan) -> Result<Option<Vec<DataType>>> {
        // The link table as planned, not as now: a run reads while its intent creates a new
        // table, and the types must not depend on which comes first (the keys are cast to the
        // table's types when written either way).
        if let Some(t) = &plan.link {
            return link::arrow_key_types(t, &plan.pipeline.key).map(Some);
        }
        let mut widest: Option<Vec<DataType>> = None;
        for source in &plan.pipeline.sources {
            let (KeyMapping::Columns(cols), Some(table)) = (&source.mapping, plan.tables.get(&source.upstream)) else { continue };
            let schema = table.snapshot()?.snapshot().arrow_schema();
            let types = cols
                .iter()
                .map(|c| {
                    schema.field_with_name(c).map(|f| f.data_type().clone()).map_err(|_| {
                        color_eyre::Report::from(Error::KeyColumnMissing {
                            name: source.upstream.clone(),
                            column: c.clone(),
                            pipeline: plan.pipeline.name.clone(),
                            available: schema.fields().iter().map(|f| f.name().as_str()).collect::<Vec<_>>().join(", "),
                        })
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            widest = Some(match widest {
                None => types,
                Some(w) => w.into_iter().zip(types).map(|(a, b)| if wider_integer(&b, &a) { b } else { a }).collect(),
            });
        }
        Ok(widest)
    }
}

/// A planned run: versions pinned, ranges decided, nothing written.
pub(crate) struct Plan {
    pub(crate) pipeline: Pipeline,
    pub(crate) run_id: i64,
    pub(crate) resumed: bool,
    pub(crate) reads: Vec<UpstreamRead>,
    pub(crate) tables: HashMap<String, DeltaTable>,
    pub(crate) prior: HashMap<String, TrackerRow>,
    /// The link table as opened when planning (`None`: not created yet, or a replay), or as
    /// the run's intent created it: a run holds the pipeline's lease, so nothing else writes
    /// it meanwhile, and opening it again at every step reloaded its log four more times per run.
    pub(crate) link: Option<DeltaTable>,
    /// The last run committed into `link` as opened (its application transaction).
    pub(crate) link_committed: Option<i64>,
    /// The scans of tables that `sql` sources join, tallied as they run.
    pub(crate) joined: JoinedScans,
}

/// A joined table's scan in a run, and what it read so far.
#[derive(Debug, Clone)]
pub(crate) struct JoinedScan {
    pub(crate) source: String,
    pub(crate) upstream: String,
    pub(crate) pruned_on: Vec<String>,
    pub(crate) files_total: u64,
    pub(crate) tally: Arc<ScanTally>,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct JoinedScans(Arc<Mutex<Vec<JoinedScan>>>);

impl JoinedScans {
    pub(crate) fn record(&self, scan: JoinedScan) {
        if let Ok(mut scans) = self.0.lock() {
            scans.push(scan);
        }
    }

    /// What each joined table's scan read (call once the run's reads are done).
    pub(crate) fn reads(&self) -> Vec<JoinedRead> {
        let scans = self.0.lock().map(|s| s.clone()).unwrap_or_default();
        scans
            .into_iter()
            .map(|s| JoinedRead {
                source: s.source,
                upstream: s.upstream,
                pruned_on: s.pruned_on,
                files_read: s.tally.files(),
                files_total: s.files_total,
                rows_read: s.tally.rows(),
            })
            .collect()
    }
}

impl Plan {
    pub(crate) fn has_work(&self) -> bool {
        self.resumed || self.reads.iter().any(|r| r.processed != Some(r.pinned as i64))
    }
}

pub(crate) async fn decide_range(pipeline: &Pipeline, table: &DeltaTable, mut read: UpstreamRead) -> Result<UpstreamRead> {
    if !read.tracked && pipeline.start == StartFrom::Latest {
        return Ok(read); // a new `latest` pipeline records the pin and reads nothing
    }
    let earliest = match read.processed {
        None => lake::list_log(table).await?.earliest_readable(read.pinned),
        Some(_) => lake::EarliestReadable::FullHistory,
    };
    read.range = cdf::plan_range(read.processed, read.pinned, earliest).map(Into::into);
    Ok(read)
}

/// Whether two locations name the same table (a trailing slash aside).
pub(crate) fn same_table(a: &url::Url, b: &url::Url) -> bool {
    a.as_str().trim_end_matches('/') == b.as_str().trim_end_matches('/')
}

/// Each key column's type over the pipeline's `keys` sources — the widest where they are
/// integers of different widths, so a new link table holds every source's keys — checked against
/// the link table's when it exists. Sources whose keys cannot share the column they are written
/// to are refused while planning (before the intent), naming both columns; `None` for a
/// pipeline of `sql` sources only.
pub(crate) fn key_types_over_sources(
    pipeline: &Pipeline,
    tables: &HashMap<String, DeltaTable>,
    link: Option<&DeltaTable>,
) -> Result<Option<Vec<(String, DeltaType)>>> {
    let key = &pipeline.key;
    let mut chosen: Vec<Option<(DeltaType, String)>> = vec![None; key.len()];
    for source in &pipeline.sources {
        let (KeyMapping::Columns(cols), Some(table)) = (&source.mapping, tables.get(&source.upstream)) else { continue };
        let types = link::key_types_from(table, &source.upstream, &pipeline.name, cols, key)?;
        for (i, ((_, t), column)) in types.into_iter().zip(cols).enumerate() {
            let here = format!("upstream `{}` column `{column}` ({t})", source.upstream);
            let widened = match &chosen[i] {
                None => true,
                Some((c, _)) if c == &t => false,
                Some((c, there)) => match (integer_width(c), integer_width(&t)) {
                    (Some(a), Some(b)) => b > a,
                    _ => return Err(key_types_differ(pipeline, &key[i], there, &here, "they are not of one kind")),
                },
            };
            if widened {
                chosen[i] = Some((t, here));
            }
        }
    }
    if chosen.iter().all(Option::is_none) {
        return Ok(None);
    }
    if let Some(link) = link {
        let schema = link.snapshot()?.schema();
        for (k, (t, source)) in key.iter().zip(&chosen).filter_map(|(k, c)| Some((k, c.as_ref()?))) {
            let Some(held) = schema.field(k).map(|f| f.data_type().clone()) else { continue };
            if let (Some(wide), Some(narrow)) = (integer_width(t), integer_width(&held)) {
                if wide > narrow {
                    let table = format!("the link table's column `{k}` ({held})");
                    return Err(key_types_differ(pipeline, k, &table, source, "its keys may not fit the link table's column"));
                }
            }
        }
    }
    Ok(Some(key.iter().cloned().zip(chosen.into_iter().map(|c| c.map(|(t, _)| t).unwrap_or(DeltaType::STRING))).collect()))
}

/// Whether `a` is an integer type wider than the integer type `b`.
pub(crate) fn wider_integer(a: &DataType, b: &DataType) -> bool {
    a.is_integer() && b.is_integer() && a.primitive_width() > b.primitive_width()
}

/// The width rank of a Delta integer type (`None`: not an integer).
pub(crate) fn integer_width(t: &DeltaType) -> Option<u8> {
    [DeltaType::BYTE, DeltaType::SHORT, DeltaType::INTEGER, DeltaType::LONG].iter().position(|i| i == t).map(|p| p as u8)
}

pub(crate) fn key_types_differ(pipeline: &Pipeline, key: &str, first: &str, second: &str, why: &str) -> color_eyre::Report {
    Error::KeyTypesDiffer { pipeline: pipeline.name.clone(), key: key.into(), first: first.into(), second: second.into(), why: why.into() }.into()
}

/// A link table deleted by hand while the tracker says runs happened would silently lose
/// every key written so far: refuse and say how to rebuild it.
pub(crate) fn check_link_table_present(pipeline: &Pipeline, rows: &[TrackerRow], link: Option<&DeltaTable>) -> Result<()> {
    if let (Some(run), None) = (rows.iter().filter_map(|r| r.run_id).max(), link) {
        return Err(eyre!(
            "pipeline `{}`: its link table {} is missing, but the tracker records run {run}; the keys written so far are gone\n  fix: rebuild it from history with  deltalink tracker reset {} --to-earliest --execute --reason \"link table lost\"  then  deltalink run {}",
            pipeline.name,
            crate::config::display_uri(&pipeline.link_table),
            pipeline.name,
            pipeline.name
        ));
    }
    Ok(())
}

/// Refuse a range the change feed cannot serve (CDF off, versions gone) before anything is
/// written, so a failing run leaves no intent behind.
pub(crate) async fn check_readable(read: &UpstreamRead, table: &DeltaTable) -> Result<()> {
    match read.range.map(ReadRangeView::to_range) {
        Some(ReadRange::Changes { start, end }) => cdf::check_range(&read.upstream, table, start, end).await,
        Some(ReadRange::SnapshotThenChanges { snapshot, end }) if end > snapshot => {
            cdf::check_range(&read.upstream, table, snapshot + 1, end).await
        }
        _ => Ok(()),
    }
}

/// The pipeline's rows of the upstreams it reads now: a row of an upstream removed from the
/// config (its intent included) no longer takes part in runs.
pub(crate) fn configured_rows(pipeline: &Pipeline, mut rows: Vec<TrackerRow>) -> Vec<TrackerRow> {
    let names = pipeline.upstream_names();
    rows.retain(|r| names.contains(&r.upstream));
    rows
}
