//! The link table's MERGE, done on sorted keys instead of through a DataFusion join.
//!
//! A run's keys arrive sorted and unique, and deltalink writes link files sorted by key, in
//! disjoint key ranges. So the MERGE is: give each key to the one key range whose slot of the key
//! space holds it (by the files' min/max statistics; see [`slot_groups`]), stream each such file
//! merge-joined with its keys, and rewrite only the files that hold a touched key —
//! touched rows get the run's columns, new keys join the rewritten rows, and everything goes
//! back sorted by key, in one commit with the change-data file (pre/post images, inserts) and
//! the run's application transaction. Profiled: delta-rs's MERGE (a hash join over the whole
//! target, string views, list columns through `interleave`) was ~90 % of an incremental run.
//!
//! In a link table with deletion vectors enabled (deltalink creates them so), a key range
//! whose run touches few of its rows is not rewritten: the touched rows are marked deleted in
//! a deletion vector and written anew, with the range's new keys, in a file of their own that
//! overlaps the range (see [`Job::mark_and_overlay`]). A range of several such files, or with
//! half its rows deleted, is rewritten whole again (see [`marking_pays`]).
//!
//! Tables this path does not cover (partition columns, or deletion vectors stored at absolute
//! paths, i.e. written by another engine) go through delta-rs's MERGE instead.

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::arrow::array::{new_null_array, Array, ArrayRef, AsArray, RecordBatch, StringArray, UInt32Array};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, Add, AddCDCFile, DeletionVectorDescriptor, Remove};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::writer::{DeltaWriter, RecordBatchWriter};
use deltalake::logstore::object_store::ObjectStoreExt;
use deltalake::{DeltaTable, ObjectStore, Path};
use futures::{StreamExt, TryStreamExt};
use roaring::RoaringTreemap;

use super::deletion_vector;
use super::{LinkWriteMetrics, CREATED_COL, LAST_CHANGE_COL, PIPELINE_COL, PROVENANCE_COL, RUN_ID_COL, UPDATED_COL, UPSTREAMS_COL};
use crate::cdf::CHANGE_TYPE;
use crate::keymap::FastHash;

/// Columns a MERGE overwrites on a touched key; the others (pipeline, key, created_at) stay.
const UPDATED: [&str; 5] = [RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL, UPDATED_COL];

/// One existing data file of the link table.
struct TargetFile {
    path: Path,
    remove: Remove,
    /// The file as it is added again with a new deletion vector.
    add: Add,
    /// (min, max) of the first key column from the file's statistics, when it is an integer or
    /// a string column.
    first_key_range: Option<(KeyBound, KeyBound)>,
    /// Rows in the file (its statistics), counting those its deletion vector deletes.
    rows: Option<u64>,
}

impl TargetFile {
    fn deletion_vector(&self) -> Option<&DeletionVectorDescriptor> {
        self.remove.deletion_vector.as_ref()
    }

    /// How many rows its deletion vector deletes (as the log says).
    fn deleted_count(&self) -> u64 {
        self.deletion_vector().map_or(0, |dv| dv.cardinality.max(0) as u64)
    }

    /// The rows its deletion vector deletes (none without one).
    async fn deleted_rows(&self, store: &Arc<dyn ObjectStore>) -> Result<RoaringTreemap> {
        match self.deletion_vector() {
            Some(dv) => deletion_vector::read(store, dv).await.wrap_err_with(|| format!("link-table file {}", self.path)),
            None => Ok(RoaringTreemap::new()),
        }
    }
}

/// Whether this path can MERGE into `table`: no partition columns, and deletion vectors only
/// where deltalink reads them (beside the table or inline).
/// (An empty table qualifies: the MERGE is then a sorted append.)
pub(super) fn applies(table: &DeltaTable) -> Result<bool> {
    let snapshot = table.snapshot()?;
    if !snapshot.metadata().partition_columns().is_empty() {
        return Ok(false);
    }
    Ok(snapshot.log_data().iter().all(|f| f.deletion_vector_descriptor().is_none_or(|dv| deletion_vector::readable(&dv))))
}

/// Whether the table takes deletion vectors (`delta.enableDeletionVectors`, which delta-rs
/// only lets a table set with the table feature in its protocol).
fn takes_deletion_vectors(table: &DeltaTable) -> Result<bool> {
    Ok(table.snapshot()?.snapshot().table_properties().enable_deletion_vectors == Some(true))
}

/// Files a key range may hold before a MERGE touching it rewrites it whole (see [`marking_pays`]).
const MAX_FILES_PER_RANGE: usize = 4;

/// Whether a key range's touched rows are better marked deleted, and written anew in a file of
/// their own, than the range rewritten: while the range has few files, and at most half of its
/// rows would then be deleted ones (`incoming`, the run's keys in the range, counts new keys
/// too: an upper bound of the rows it marks). Reads of a range pay for its deleted rows and
/// its extra files; the rewrite that follows puts it back as one set of disjoint files.
fn marking_pays(files: &[TargetFile], incoming: usize) -> bool {
    let rows: Option<u64> = files.iter().map(|f| f.rows).sum();
    let deleted: u64 = files.iter().map(TargetFile::deleted_count).sum();
    files.len() < MAX_FILES_PER_RANGE && rows.is_some_and(|rows| (deleted + incoming as u64) * 2 <= rows)
}

/// File groups rewritten at once (each decodes on one task and encodes on another).
const GROUPS_AT_ONCE: usize = 3;

/// MERGE `incoming` — full link rows (table schema order) sorted by key, one per key — into
/// `table` in one commit carrying `props` (the run's application transaction); through
/// deletion vectors where `deletion_vectors` and the table takes them.
pub(super) async fn merge(
    table: &DeltaTable,
    key: &[String],
    incoming: RecordBatch,
    props: &(dyn Fn(&LinkWriteMetrics) -> CommitProperties + Sync),
    predicate: String,
    target_file_size: u64,
    deletion_vectors: bool,
    before_commit: &(dyn Fn() -> Result<()> + Sync),
) -> Result<(DeltaTable, LinkWriteMetrics)> {
    let started = std::time::Instant::now();
    // The table's own types; `incoming` may hold its lists dictionary-encoded (see `conform`).
    let schema: SchemaRef = Arc::new(table.snapshot()?.snapshot().arrow_schema().as_ref().clone());
    let key_index: Vec<usize> =
        key.iter().map(|k| schema.index_of(k).map_err(|_| eyre!("link rows have no key column `{k}`"))).collect::<Result<_>>()?;
    let incoming = sorted_and_unique(incoming, &key_index)?;
    let first_key = FirstKeys::of(&incoming, key_index[0])?;
    let files = target_files(table, &key[0], first_key.as_ref())?;
    let deletion_vectors = deletion_vectors && takes_deletion_vectors(table)?;
    let (groups, appended) = match (&first_key, key_ranges(files, deletion_vectors)) {
        (Some(keys), Ok(ranges)) => slot_groups(ranges, keys),
        (_, Ok(ranges)) => {
            let files = ranges.into_iter().flatten().collect();
            (group_by_file(prune(files, first_key.as_ref()), first_key.as_ref(), incoming.num_rows()), 0..0)
        }
        (_, Err(files)) => (group_by_file(prune(files, first_key.as_ref()), first_key.as_ref(), incoming.num_rows()), 0..0),
    };
    let store = table.object_store();
    // Every file written from here on, deleted again unless the commit below is attempted:
    // an error, an injected fault or a cancelled task leaves no unreferenced file behind.
    let written = Arc::new(Uncommitted::new(store.clone()));
    let job = Arc::new(Job {
        table: table.clone(),
        store: store.clone(),
        schema: schema.clone(),
        key_index,
        target_file_size,
        deletion_vectors,
        written: written.clone(),
        // A lone file's rewrite is split in two by row groups (see `Job::parts`): decoding
        // and encoding each on a task, a pipeline whose MERGE touches one file uses two cores
        // for each. (Two files already keep two cores busy.)
        parts: if key.len() == 1 && groups.len() == 1 { 2 } else { 1 },
    });
    let prepared = async {
        // Groups go `GROUPS_AT_ONCE` at a time, each its own task (decoding, merging and encoding
        // are CPU: as futures of one task they would share one core); memory holds about that
        // many files' batches.
        let mut results: Vec<(usize, Rewrite)> = futures::stream::iter(groups.into_iter().enumerate().map(|(i, group)| {
            let job = job.clone();
            let slice = incoming.slice(group.rows.start, group.rows.len());
            async move {
                let done = crate::task::spawn_owned(async move { job.rewrite_group(group, slice).await }).await??;
                Ok::<_, color_eyre::Report>((i, done))
            }
        }))
        .buffer_unordered(GROUPS_AT_ONCE)
        .try_collect()
        .await?;
        results.sort_by_key(|(i, _)| *i);
        let rewritten = started.elapsed();

        let mut actions: Vec<Action> = Vec::new();
        let mut leftovers = Vec::new();
        let mut metrics = LinkWriteMetrics::default();
        leftovers.push(incoming.slice(appended.start, appended.len()));
        for (_, r) in results {
            metrics.files_rewritten += (r.removes.len() - r.marked) as u64;
            metrics.files_marked += r.marked as u64;
            metrics.updated += r.updated;
            metrics.inserted += r.inserted;
            actions.extend(r.removes.into_iter().map(Action::Remove));
            actions.extend(r.adds.into_iter().map(Action::Add));
            actions.extend(r.cdc.map(Action::Cdc));
            leftovers.extend(r.leftover);
        }
        // New keys in no file's slot or range: appended as files of their own, in key order.
        // A single part (all of a first write) stays as it came, spelled out by the writers.
        let mut leftovers: Vec<RecordBatch> = leftovers.into_iter().filter(|b| b.num_rows() > 0).collect();
        let leftovers = match leftovers.len() {
            0 | 1 => leftovers.pop(),
            _ => Some(concat_batches(&schema, &leftovers.iter().map(|b| conform(b, &schema)).collect::<Result<Vec<_>>>()?)?),
        };
        if let Some(leftovers) = leftovers {
            let per_file = rows_per_file(target_file_size, 0, 0, &leftovers)?;
            actions.extend(write_data(table, leftovers.clone(), per_file, &written).await?.into_iter().map(Action::Add));
            metrics.inserted += leftovers.num_rows() as u64;
            // Beside other change data, these inserts need theirs too (see `rewrite_group`).
            if actions.iter().any(|a| matches!(a, Action::Cdc(_))) {
                let inserts = [conform(&leftovers, &schema)?];
                let cdc = write_change_data(&store, &schema, ChangeImages { inserts: &inserts, ..ChangeImages::default() }).await?;
                written.add(cdc.iter().map(|c| c.path.clone()));
                actions.extend(cdc.map(Action::Cdc));
            }
        }
        tracing::debug!(
            ms = started.elapsed().as_millis() as u64,
            rewrites_ms = rewritten.as_millis() as u64,
            files = metrics.files_rewritten,
            marked = metrics.files_marked,
            "sorted-key MERGE written"
        );
        before_commit()?;
        Ok::<_, color_eyre::Report>((actions, metrics))
    };
    let (actions, metrics) = match prepared.await {
        Ok(prepared) => prepared,
        Err(e) => {
            written.discard().await;
            return Err(e);
        }
    };
    // From here the files may be referenced (a commit that failed after it landed would look
    // like any other failure): they stay, for VACUUM to judge.
    written.keep();
    commit(table, props(&metrics), predicate, actions, metrics).await
}

/// Files a MERGE wrote that no commit references yet. [`Uncommitted::discard`] deletes them;
/// dropped without [`Uncommitted::keep`] (the task was cancelled), it deletes them in the
/// background.
struct Uncommitted {
    store: Arc<dyn ObjectStore>,
    paths: std::sync::Mutex<Option<Vec<Path>>>,
}

impl Uncommitted {
    fn new(store: Arc<dyn ObjectStore>) -> Self {
        Uncommitted { store, paths: std::sync::Mutex::new(Some(Vec::new())) }
    }

    /// Record files as written (table-relative paths, as in Add actions).
    fn add(&self, paths: impl IntoIterator<Item = String>) {
        if let Ok(mut guard) = self.paths.lock() {
            if let Some(list) = guard.as_mut() {
                list.extend(paths.into_iter().map(Path::from));
            }
        }
    }

    fn take(&self) -> Vec<Path> {
        self.paths.lock().ok().and_then(|mut g| g.take()).unwrap_or_default()
    }

    fn keep(&self) {
        self.take();
    }

    async fn discard(&self) {
        delete_files(&self.store, self.take()).await;
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        let paths = self.take();
        if paths.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move { delete_files(&store, paths).await });
        }
    }
}

async fn delete_files(store: &Arc<dyn ObjectStore>, paths: Vec<Path>) {
    for path in paths {
        match store.delete(&path).await {
            Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(file = %path, error = %e, "could not delete an uncommitted link file"),
        }
    }
}

/// The table's files sorted by their first key's range, when every file has a range and no two
/// ranges overlap (as deltalink writes them copy-on-write); otherwise the files as they were.
fn disjoint_layout(mut files: Vec<TargetFile>) -> Result<Vec<TargetFile>, Vec<TargetFile>> {
    if files.iter().any(|f| f.first_key_range.is_none()) {
        return Err(files);
    }
    files.sort_by(|a, b| a.first_key_range.as_ref().map(|r| &r.0).cmp(&b.first_key_range.as_ref().map(|r| &r.0)));
    let disjoint = files.windows(2).all(|w| match (&w[0].first_key_range, &w[1].first_key_range) {
        (Some((_, max)), Some((min, _))) => max < min,
        _ => false,
    });
    if disjoint { Ok(files) } else { Err(files) }
}

/// The table's files in key ranges, in key order: files whose first-key ranges overlap share a
/// range (a file and the files that took over some of its rows through deletion vectors, see
/// [`Job::mark_and_overlay`]). The files as they were when one has no range, or when ranges
/// overlap in a table without deletion vectors (written by another writer).
fn key_ranges(mut files: Vec<TargetFile>, overlays: bool) -> Result<Vec<Vec<TargetFile>>, Vec<TargetFile>> {
    files.sort_by(|a, b| a.first_key_range.as_ref().map(|r| &r.0).cmp(&b.first_key_range.as_ref().map(|r| &r.0)));
    // (highest key so far, files) per range.
    let mut ranges: Vec<(KeyBound, Vec<TargetFile>)> = Vec::new();
    let mut rest = files.into_iter();
    while let Some(file) = rest.next() {
        let Some((min, max)) = file.first_key_range.clone() else {
            return Err(ranges.into_iter().flat_map(|(_, files)| files).chain([file]).chain(rest).collect());
        };
        match ranges.last_mut() {
            Some((end, members)) if min <= *end => {
                if max > *end {
                    *end = max;
                }
                members.push(file);
            }
            _ => ranges.push((max, vec![file])),
        }
    }
    if !overlays && ranges.iter().any(|(_, files)| files.len() > 1) {
        return Err(ranges.into_iter().flat_map(|(_, files)| files).collect());
    }
    Ok(ranges.into_iter().map(|(_, files)| files).collect())
}

/// Groups for disjoint key ranges (see [`key_ranges`]): each range owns the slot of the key
/// space from its minimum up to the next range's minimum (the first range's slot also takes
/// every key below it; the last one's ends at its maximum). A key goes to the range whose slot
/// holds it, including keys in the gap after a range's maximum, so a rewritten range never
/// reaches into the next one and the layout stays disjoint run after run. Ranges whose slot
/// holds no incoming key are left alone. Returns the groups and the rows above every range
/// (appended as new files, which stay above them).
fn slot_groups(ranges: Vec<Vec<TargetFile>>, keys: &FirstKeys) -> (Vec<Group>, std::ops::Range<usize>) {
    // A range's (lowest minimum, highest maximum); every file of a range has bounds (see `key_ranges`).
    let span = |files: &[TargetFile]| -> Option<(KeyBound, KeyBound)> {
        let mut bounds = files.iter().filter_map(|f| f.first_key_range.clone());
        let first = bounds.next()?;
        Some(bounds.fold(first, |(lo, hi), (min, max)| (lo.min(min), hi.max(max))))
    };
    let last_max = ranges.last().and_then(|files| span(files)).map(|(_, max)| max);
    let above = last_max.map_or(0, |max| keys.at_most(&max));
    let next_mins: Vec<Option<KeyBound>> = ranges.iter().skip(1).map(|files| span(files).map(|(min, _)| min)).chain([None]).collect();
    let mut groups = Vec::new();
    let mut start = 0;
    for (files, next_min) in ranges.into_iter().zip(next_mins) {
        let end = next_min.map_or(above, |min| keys.below(&min));
        if end > start {
            groups.push(Group { files, rows: start..end, own: true });
        }
        start = end;
    }
    (groups, above..keys.len())
}

/// The files whose first-key range holds one of `keys` (all of them without ranges).
fn prune(files: Vec<TargetFile>, keys: Option<&FirstKeys>) -> Vec<TargetFile> {
    files
        .into_iter()
        .filter(|f| match (keys, &f.first_key_range) {
            (Some(keys), Some((min, max))) => {
                let at = keys.below(min);
                at < keys.len() && keys.cmp_at(at, max).is_le()
            }
            _ => true,
        })
        .collect()
}

/// Candidate files with the incoming rows each may hold. When every candidate has an integer
/// key range and the ranges are disjoint (as deltalink writes them), each file is its own group
/// with the incoming rows from its minimum up to the next file's: files are then read, merged
/// and written one at a time. Otherwise one group holds every candidate and every row.
///
/// A file of its own group is always rewritten (or marked): pruning kept it because one of the incoming
/// keys falls in its range, so the key is either in the file or a new key that must join it
/// (appended elsewhere, it would overlap the file's range and break the disjoint layout).
fn group_by_file(candidates: Vec<TargetFile>, first_key: Option<&FirstKeys>, rows: usize) -> Vec<Group> {
    let one_group = |files| vec![Group { files, rows: 0..rows, own: false }];
    let Some(keys) = first_key else { return one_group(candidates) };
    let candidates = match disjoint_layout(candidates) {
        Ok(sorted) if !sorted.is_empty() => sorted,
        Ok(files) | Err(files) => return one_group(files),
    };
    let starts: Vec<usize> = candidates
        .iter()
        .enumerate()
        .map(|(j, f)| match (j, &f.first_key_range) {
            (0, _) | (_, None) => 0,
            (_, Some((min, _))) => keys.below(min),
        })
        .collect();
    candidates
        .into_iter()
        .enumerate()
        .map(|(j, f)| Group { files: vec![f], rows: starts[j]..starts.get(j + 1).copied().unwrap_or(rows), own: true })
        .collect()
}

/// Files rewritten together with the incoming rows (a range of them) that may fall in them;
/// `own`: the files of one key range of their own (always rewritten or marked, see
/// [`group_by_file`]).
struct Group {
    files: Vec<TargetFile>,
    rows: std::ops::Range<usize>,
    own: bool,
}

/// What rewriting one group of files produced.
#[derive(Default)]
struct Rewrite {
    removes: Vec<Remove>,
    adds: Vec<deltalake::kernel::Add>,
    /// Of `removes`, files added again with a deletion vector instead of rewritten.
    marked: usize,
    updated: u64,
    /// Touched rows before and after, and new keys merged into the rewritten files.
    pre: Vec<RecordBatch>,
    post: Vec<RecordBatch>,
    inserts: Vec<RecordBatch>,
    /// Post-images and inserts in one batch, each row with its change type (the new rows of a
    /// marked range are both, in key order: not copied apart).
    labelled: Option<(RecordBatch, ArrayRef)>,
    /// The group's new keys when none of its files held a touched key (nothing rewritten).
    leftover: Option<RecordBatch>,
    /// Rows inserted, and the change-data file of `pre`, `post`, `inserts` and `labelled`,
    /// written by the group's own task (one file at the end of the MERGE was a serial tenth
    /// of it).
    inserted: u64,
    cdc: Option<AddCDCFile>,
}

struct Job {
    table: DeltaTable,
    store: Arc<dyn ObjectStore>,
    schema: SchemaRef,
    key_index: Vec<usize>,
    target_file_size: u64,
    /// The table takes deletion vectors (see [`Job::mark_and_overlay`]).
    deletion_vectors: bool,
    written: Arc<Uncommitted>,
    /// Parts a lone sorted file's rewrite is split into (by row groups), at most.
    parts: usize,
}

impl Job {
    /// Row encodings of the key columns in the link table's types (they sort as the keys do).
    fn key_converter(&self) -> Result<RowConverter> {
        let fields = self.key_index.iter().map(|&i| SortField::new(self.schema.field(i).data_type().clone())).collect();
        Ok(RowConverter::new(fields)?)
    }

    fn key_rows(&self, converter: &RowConverter, batch: &RecordBatch) -> Result<deltalake::arrow::row::Rows> {
        Ok(converter.convert_columns(&self.key_index.iter().map(|&i| batch.column(i).clone()).collect::<Vec<_>>())?)
    }

    /// A file of its own streams (see [`Job::rewrite_sorted_file`]); anything else, or a file
    /// that turns out not to be sorted by key, is rewritten whole ([`Job::rewrite`], which
    /// looks keys up by hash and sorts what is out of order).
    async fn rewrite_group(self: Arc<Self>, group: Group, incoming: RecordBatch) -> Result<Rewrite> {
        let mut done = self.rewrite_files(group, incoming).await?;
        done.inserted += done.inserts.iter().map(|b| b.num_rows() as u64).sum::<u64>();
        // A commit that only adds files reads as inserts of their rows; once it also removes
        // files, the change data must say what really changed (else readers see every row
        // deleted and re-inserted). In a table with deletion vectors any group may be the one
        // that writes change data, so every group that adds a file writes its own.
        if !done.removes.is_empty() || (self.deletion_vectors && !done.adds.is_empty()) {
            let (pre, post, inserts) = (std::mem::take(&mut done.pre), std::mem::take(&mut done.post), std::mem::take(&mut done.inserts));
            let images = ChangeImages { pre: &pre, post: &post, inserts: &inserts, labelled: done.labelled.take() };
            done.cdc = write_change_data(&self.store, &self.schema, images).await?;
            self.written.add(done.cdc.iter().map(|c| c.path.clone()));
        }
        Ok(done)
    }

    async fn rewrite_files(self: &Arc<Self>, group: Group, incoming: RecordBatch) -> Result<Rewrite> {
        // Marking keeps the incoming lists dictionary-encoded until written (its new rows take
        // the run's columns as they are); rewrites mix incoming rows with files' rows.
        if group.own && self.deletion_vectors && marking_pays(&group.files, incoming.num_rows()) {
            let incoming = conform_keeping_dictionaries(&incoming, &self.schema)?;
            if let Some(done) = self.mark_and_overlay(&group.files, &incoming).await? {
                return Ok(done);
            }
            tracing::debug!(files = group.files.len(), "link files not sorted by key: rewritten whole");
        }
        let incoming = conform(&incoming, &self.schema)?;
        if let (true, [file]) = (group.own, group.files.as_slice()) {
            if file.deletion_vector().is_none() {
                if let Some(done) = self.rewrite_sorted_file(file, &incoming).await? {
                    return Ok(done);
                }
                tracing::debug!(file = %file.path, "link file not sorted by key: rewritten whole");
            }
        }
        self.rewrite(group.files, incoming, group.own).await
    }

    /// Rewrite one file sorted by key, streaming: batch by batch, its rows are merge-joined with
    /// the incoming rows (also sorted) and written out, so memory holds one batch and the
    /// writer's buffer instead of the whole file twice. `incoming` is sorted and unique (see
    /// [`sorted_and_unique`]). `None` when the file is not sorted (what it wrote so far is
    /// never committed). With [`Job::parts`] above one, contiguous runs of row groups are
    /// rewritten at once, each with the incoming keys of its key range, into files of its own.
    async fn rewrite_sorted_file(self: &Arc<Self>, file: &TargetFile, incoming: &RecordBatch) -> Result<Option<Rewrite>> {
        use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
        let bytes = fetch(&self.store, &file.path).await?;
        // The footer, parsed once for every part's reader.
        let reader_metadata = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::default())?;
        let metadata = reader_metadata.metadata();
        let file_rows = metadata.file_metadata().num_rows().max(0) as usize;
        let per_file = rows_per_file(self.target_file_size, file.remove.size.unwrap_or(0).max(0) as u64, file_rows, incoming)?;
        let parts = self.row_group_parts(metadata, incoming)?;
        let runs = parts.into_iter().map(|(row_groups, rows)| {
            let builder = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), reader_metadata.clone()).with_row_groups(row_groups);
            let (job, incoming) = (self.clone(), incoming.slice(rows.start, rows.len()));
            crate::task::spawn_owned(async move { job.rewrite_row_groups(builder, &incoming, per_file).await })
        });
        let mut out = Rewrite { removes: vec![file.remove.clone()], ..Rewrite::default() };
        let mut unsorted = false;
        for part in futures::future::try_join_all(runs).await? {
            match part? {
                Some(part) => {
                    out.adds.extend(part.adds);
                    out.updated += part.updated;
                    out.pre.extend(part.pre);
                    out.post.extend(part.post);
                    out.inserts.extend(part.inserts);
                }
                None => unsorted = true,
            }
        }
        if unsorted {
            // Another part's files are never committed either.
            delete_files(&self.store, out.adds.iter().map(|a| Path::from(a.path.as_str())).collect()).await;
            return Ok(None);
        }
        Ok(Some(out))
    }

    /// The row groups of a sorted file in up to [`Job::parts`] contiguous runs, each with the
    /// rows of `incoming` in its key range (the first from the lowest key, the last up to the
    /// highest): by the first key column's row-group statistics, which must show the groups
    /// in key order without overlap; else one run of every row group and every incoming row.
    fn row_group_parts(
        &self,
        metadata: &deltalake::parquet::file::metadata::ParquetMetaData,
        incoming: &RecordBatch,
    ) -> Result<Vec<(Vec<usize>, std::ops::Range<usize>)>> {
        use deltalake::parquet::file::statistics::Statistics;
        let whole = vec![((0..metadata.num_row_groups()).collect(), 0..incoming.num_rows())];
        let parts = self.parts.min(metadata.num_row_groups());
        let key = self.schema.field(self.key_index[0]).name();
        let column = metadata.file_metadata().schema_descr().columns().iter().position(|c| c.path().string() == *key);
        let (true, Some(column)) = (parts > 1, column) else { return Ok(whole) };
        let ranges: Option<Vec<(i64, i64)>> = metadata
            .row_groups()
            .iter()
            .map(|rg| match rg.column(column).statistics()? {
                Statistics::Int64(v) => Some((*v.min_opt()?, *v.max_opt()?)),
                Statistics::Int32(v) => Some((i64::from(*v.min_opt()?), i64::from(*v.max_opt()?))),
                _ => None,
            })
            .collect();
        let Some(ranges) = ranges.filter(|r| r.windows(2).all(|w| w[0].1 < w[1].0)) else { return Ok(whole) };
        let Some(keys) = first_int_keys(incoming, self.key_index[0])? else { return Ok(whole) };
        let per_part = ranges.len().div_ceil(parts);
        let starts: Vec<usize> = (0..ranges.len()).step_by(per_part).collect();
        Ok(starts
            .iter()
            .enumerate()
            .map(|(p, &start)| {
                let end = starts.get(p + 1).copied().unwrap_or(ranges.len());
                let from = if p == 0 { 0 } else { keys.partition_point(|k| *k < ranges[start].0) };
                let to = if end == ranges.len() { keys.len() } else { keys.partition_point(|k| *k < ranges[end].0) };
                ((start..end).collect(), from..to)
            })
            .collect())
    }

    /// One run of row groups of a sorted file, merge-joined with `incoming` (see
    /// [`Job::rewrite_sorted_file`]).
    async fn rewrite_row_groups(
        &self,
        rows: ParquetRecordBatchReaderBuilder<impl deltalake::parquet::file::reader::ChunkReader + 'static>,
        incoming: &RecordBatch,
        per_file: usize,
    ) -> Result<Option<Rewrite>> {
        const BATCH: usize = 64 * 1024;
        let schema = &self.schema;
        let converter = self.key_converter()?;
        let incoming_keys = self.key_rows(&converter, incoming)?;
        let builder = rows.with_batch_size(BATCH);
        let mut output = RowsOut::new(&self.table, per_file, self.written.clone())?;
        let mut out = Rewrite::default();
        let mut inserted: Vec<u32> = Vec::new();
        let (m, mut j, mut j_matched) = (incoming.num_rows(), 0usize, false);
        let mut last_key: Option<deltalake::arrow::row::OwnedRow> = None;
        for batch in builder.build()? {
            let batch = conform(&batch?, schema)?;
            let keys = self.key_rows(&converter, &batch)?;
            let n = batch.num_rows();
            let ordered = (1..n).all(|i| keys.row(i - 1) <= keys.row(i))
                && last_key.as_ref().is_none_or(|prev| n == 0 || prev.row() <= keys.row(0));
            if !ordered {
                output.abandon(&self.store).await;
                return Ok(None);
            }
            let mut picks = Picks { keep: Vec::with_capacity(n), update: Vec::with_capacity(n), post: Vec::new() };
            let mut touched: Vec<u32> = Vec::new();
            for i in 0..n {
                let key = keys.row(i);
                while j < m && incoming_keys.row(j) < key {
                    if !j_matched {
                        picks.keep.push((1, j));
                        picks.update.push((1, j));
                        inserted.push(j as u32);
                    }
                    j += 1;
                    j_matched = false;
                }
                if j < m && incoming_keys.row(j) == key {
                    picks.keep.push((0, i));
                    picks.update.push((1, j));
                    picks.post.push(((0, i), (1, j)));
                    touched.push(i as u32);
                    j_matched = true;
                } else {
                    picks.keep.push((0, i));
                    picks.update.push((0, i));
                }
            }
            let sources = [&batch, incoming];
            output.write(assemble(schema, &sources, &picks.keep, &picks.update)?).await?;
            out.updated += picks.post.len() as u64;
            let (post_keep, post_update): (Vec<_>, Vec<_>) = picks.post.into_iter().unzip();
            out.post.push(assemble(schema, &sources, &post_keep, &post_update)?);
            out.pre.push(take_record_batch(&batch, &UInt32Array::from(touched))?);
            if n > 0 {
                last_key = Some(keys.row(n - 1).owned());
            }
        }
        // New keys beyond the file's last row.
        let tail: Vec<u32> = (j..m).filter(|&r| !(r == j && j_matched)).map(|r| r as u32).collect();
        output.write(take_record_batch(incoming, &UInt32Array::from(tail.clone()))?).await?;
        inserted.extend(tail);
        out.adds = output.finish().await?;
        out.inserts = vec![take_record_batch(incoming, &UInt32Array::from(inserted))?];
        Ok(Some(out))
    }

    /// Replace the rows of a key range's files that `incoming` touches without rewriting the
    /// files: each file's key columns are read and merge-joined with the incoming keys (rows
    /// its deletion vector already deletes are skipped), the touched rows are read whole (their
    /// pre-images, and the columns a MERGE keeps), their row indices join the file's deletion
    /// vector, and every incoming key of the range — updated rows and new keys, in key order —
    /// goes into new files that overlap the range. A run touching a tenth of a file writes a
    /// tenth of it plus a bitmap instead of all of it. `None` when a file is not sorted by key
    /// (nothing written is committed).
    async fn mark_and_overlay(self: &Arc<Self>, files: &[TargetFile], incoming: &RecordBatch) -> Result<Option<Rewrite>> {
        let schema = &self.schema;
        let incoming_keys = Arc::new(SortedKeys::of(self, incoming)?);
        // Per incoming key: (touched file, its row among that file's touched rows).
        let mut matched: Vec<Option<(usize, usize)>> = vec![None; incoming.num_rows()];
        let mut touched: Vec<Marked> = Vec::new();
        for file in files {
            let bytes = fetch(&self.store, &file.path).await?;
            let deleted = file.deleted_rows(&self.store).await?;
            let Some((pairs, file_rows)) = self.join_keys(bytes.clone(), incoming_keys.clone()).await? else { return Ok(None) };
            let mut rows: Vec<u32> = Vec::new();
            for (i, j) in pairs.into_iter().filter(|(i, _)| !deleted.contains(u64::from(*i))) {
                matched[j as usize] = Some((touched.len(), rows.len()));
                rows.push(i);
            }
            if rows.is_empty() {
                continue;
            }
            let pre = read_rows(bytes, schema, &rows, file_rows).await?;
            touched.push(Marked { file, deleted, rows, pre });
        }

        let from_incoming = touched.len();
        let keep: Vec<(usize, usize)> = matched.iter().enumerate().map(|(j, m)| m.unwrap_or((from_incoming, j))).collect();
        let update: Vec<(usize, usize)> = (0..incoming.num_rows()).map(|j| (from_incoming, j)).collect();
        let mut sources: Vec<&RecordBatch> = touched.iter().map(|t| &t.pre).collect();
        sources.push(incoming);
        let rows = assemble(schema, &sources, &keep, &update)?;
        let changes: StringArray =
            matched.iter().map(|m| Some(if m.is_some() { "update_postimage" } else { "insert" })).collect();
        let updated = matched.iter().filter(|m| m.is_some()).count() as u64;
        let mut out = Rewrite {
            updated,
            inserted: incoming.num_rows() as u64 - updated,
            labelled: Some((rows.clone(), Arc::new(changes))),
            ..Rewrite::default()
        };
        let file_bytes: u64 = files.iter().filter_map(|f| f.remove.size).map(|s| s.max(0) as u64).sum();
        let file_rows: u64 = files.iter().filter_map(|f| f.rows).sum();
        let per_file = rows_per_file(self.target_file_size, file_bytes, file_rows as usize, &rows)?;
        out.adds = write_data(&self.table, rows, per_file, &self.written).await?;
        // The range's vectors go into one file (one write to the store, not one per file).
        let vectors: Vec<RoaringTreemap> = touched
            .iter_mut()
            .map(|t| {
                let mut deleted = std::mem::take(&mut t.deleted);
                deleted.extend(t.rows.iter().map(|&r| u64::from(r)));
                deleted
            })
            .collect();
        if !vectors.is_empty() {
            let (descriptors, path) = deletion_vector::write(&self.store, &vectors).await?;
            self.written.add([path.to_string()]);
            for (Marked { file, pre, .. }, dv) in touched.into_iter().zip(descriptors) {
                out.removes.push(file.remove.clone());
                out.adds.push(Add { deletion_vector: Some(dv), data_change: true, stats: loose_bounds(file.add.stats.clone()), ..file.add.clone() });
                out.marked += 1;
                out.pre.push(pre);
            }
        }
        Ok(Some(out))
    }

    /// The (file row, incoming row) pairs of the keys a sorted link file shares with `incoming`,
    /// and the file's row count: its key columns read and joined a batch at a time (read whole
    /// they were megabytes per file in flight). `None` when the file is not sorted by key.
    async fn join_keys<R>(self: &Arc<Self>, bytes: R, incoming: Arc<SortedKeys>) -> Result<Option<(Vec<(u32, u32)>, usize)>>
    where
        R: deltalake::parquet::file::reader::ChunkReader + Send + 'static,
    {
        use deltalake::parquet::arrow::ProjectionMask;
        let job = self.clone();
        tokio::task::spawn_blocking(move || {
            let key_schema = Arc::new(job.schema.project(&job.key_index)?);
            let builder = ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(64 * 1024);
            let names = key_schema.fields().iter().map(|f| f.name().as_str());
            let projection = ProjectionMask::columns(builder.parquet_schema(), names);
            let (mut pairs, mut file_rows, mut from) = (Vec::new(), 0usize, 0usize);
            let mut previous: Option<SortedKeys> = None;
            for batch in builder.with_projection(projection).build()? {
                let batch = conform(&batch?, &key_schema)?;
                let keys = SortedKeys::of_columns(&job, batch.columns())?;
                let follows = match &previous {
                    Some(p) if p.len() > 0 && keys.len() > 0 => p.cmp(p.len() - 1, &keys, 0).is_some_and(|o| o.is_le()),
                    _ => true,
                };
                let Some((found, next)) = keys.join(&incoming, from).filter(|_| follows) else { return Ok(None) };
                let base = u32::try_from(file_rows).map_err(|_| eyre!("link file of over 4 billion rows"))?;
                pairs.extend(found.into_iter().map(|(i, j)| (i + base, j)));
                (file_rows, from) = (file_rows + batch.num_rows(), next);
                previous = Some(keys);
            }
            Ok::<_, color_eyre::Report>(Some((pairs, file_rows)))
        })
        .await?
        .wrap_err("cannot decode a link-table file's keys")
    }

    /// Read a group's files, and rewrite those holding one of `incoming`'s keys (or all of them,
    /// `always`): touched rows get the run's columns, the new keys join them, in key order.
    async fn rewrite(&self, candidates: Vec<TargetFile>, incoming: RecordBatch, always: bool) -> Result<Rewrite> {
        if candidates.is_empty() {
            // Every key is new (a first run, or keys beyond every file's range).
            return Ok(Rewrite { leftover: Some(incoming), ..Rewrite::default() });
        }
        let schema = &self.schema;
        let converter = self.key_converter()?;
        let incoming_keys = self.key_rows(&converter, &incoming)?;
        let mut lookup: HashMap<&[u8], u32, FastHash> = HashMap::with_capacity_and_hasher(incoming.num_rows(), FastHash::default());
        for i in 0..incoming.num_rows() {
            lookup.insert(incoming_keys.row(i).data(), i as u32);
        }
        let reads: Vec<(TargetFile, RecordBatch)> = futures::stream::iter(candidates.into_iter().map(|file| async move {
            let batch = read_live_rows(&self.store, &file, schema).await?;
            Ok::<_, color_eyre::Report>((file, batch))
        }))
        .buffer_unordered(2)
        .try_collect()
        .await?;

        // Keep the files holding a touched key, with each row's match in `incoming`.
        let mut seen = vec![false; incoming.num_rows()];
        let mut files: Vec<RecordBatch> = Vec::new();
        let mut file_keys = Vec::new();
        let mut matches: Vec<Vec<Option<u32>>> = Vec::new();
        let mut out = Rewrite::default();
        for (file, batch) in reads {
            let rows = self.key_rows(&converter, &batch)?;
            let matched: Vec<Option<u32>> = (0..batch.num_rows()).map(|i| lookup.get(rows.row(i).data()).copied()).collect();
            if !always && matched.iter().all(Option::is_none) {
                continue;
            }
            for src in matched.iter().flatten() {
                seen[*src as usize] = true;
            }
            files.push(batch);
            file_keys.push(rows);
            matches.push(matched);
            out.removes.push(file.remove);
        }
        let new_keys: Vec<u32> = (0..incoming.num_rows() as u32).filter(|&i| !seen[i as usize]).collect();
        if files.is_empty() {
            out.leftover = Some(incoming);
            return Ok(out);
        }
        let picks = merge_by_key(&files, &file_keys, &matches, &incoming_keys, &new_keys);
        for (f, batch) in files.iter().enumerate() {
            let touched = UInt32Array::from((0..batch.num_rows() as u32).filter(|&i| matches[f][i as usize].is_some()).collect::<Vec<_>>());
            out.pre.push(take_record_batch(batch, &touched)?);
        }
        out.updated = picks.post.len() as u64;
        let mut sources: Vec<&RecordBatch> = files.iter().collect();
        sources.push(&incoming);
        let rows = assemble(schema, &sources, &picks.keep, &picks.update)?;
        let (post_keep, post_update): (Vec<_>, Vec<_>) = picks.post.iter().copied().unzip();
        out.post.push(assemble(schema, &sources, &post_keep, &post_update)?);
        out.inserts = vec![take_record_batch(&incoming, &UInt32Array::from(new_keys))?];

        let file_bytes: u64 = out.removes.iter().filter_map(|r| r.size).map(|s| s as u64).sum();
        let file_rows: usize = files.iter().map(|b| b.num_rows()).sum();
        drop(sources);
        drop(files);
        let per_file = rows_per_file(self.target_file_size, file_bytes, file_rows, &rows)?;
        out.adds = write_data(&self.table, rows, per_file, &self.written).await?;
        Ok(out)
    }
}

/// Key columns to merge-join: a single integer key as its values (no row encoding of each of a
/// link file's keys, 64k-row batch by batch), others as row encodings.
enum SortedKeys {
    Int(Vec<i64>),
    Rows(deltalake::arrow::row::Rows),
}

impl SortedKeys {
    fn of(job: &Job, batch: &RecordBatch) -> Result<Self> {
        Self::of_columns(job, &job.key_index.iter().map(|&i| batch.column(i).clone()).collect::<Vec<_>>())
    }

    /// `columns`: the key columns in key order.
    fn of_columns(job: &Job, columns: &[ArrayRef]) -> Result<Self> {
        if let [column] = columns {
            if column.null_count() == 0 {
                if let Some(ints) = int_values(column)? {
                    return Ok(SortedKeys::Int(ints));
                }
            }
        }
        Ok(SortedKeys::Rows(job.key_converter()?.convert_columns(columns)?))
    }

    fn len(&self) -> usize {
        match self {
            SortedKeys::Int(v) => v.len(),
            SortedKeys::Rows(r) => r.num_rows(),
        }
    }

    fn cmp(&self, i: usize, other: &Self, j: usize) -> Option<std::cmp::Ordering> {
        match (self, other) {
            (SortedKeys::Int(a), SortedKeys::Int(b)) => Some(a[i].cmp(&b[j])),
            (SortedKeys::Rows(a), SortedKeys::Rows(b)) => Some(a.row(i).cmp(&b.row(j))),
            _ => None,
        }
    }

    /// (own row, `other`'s row) of every key both hold, both sides sorted, from `other`'s row
    /// `from` on; and where in `other` the next part of this side goes on from. `None` when
    /// this side is not sorted (or the two were encoded differently).
    fn join(&self, other: &Self, from: usize) -> Option<(Vec<(u32, u32)>, usize)> {
        let (n, m) = (self.len(), other.len());
        if !(1..n).all(|i| self.cmp(i - 1, self, i).is_some_and(|o| o.is_le())) {
            return None;
        }
        let mut pairs = Vec::new();
        let (mut i, mut j) = (0, from);
        while i < n && j < m {
            match self.cmp(i, other, j)? {
                std::cmp::Ordering::Less => i += 1,
                std::cmp::Ordering::Greater => j += 1,
                std::cmp::Ordering::Equal => {
                    pairs.push((i as u32, j as u32));
                    i += 1;
                }
            }
        }
        Some((pairs, j))
    }
}

/// A file whose touched rows [`Job::mark_and_overlay`] marks deleted: its deletion vector so
/// far, the touched rows' indices, and those rows as they were.
struct Marked<'a> {
    file: &'a TargetFile,
    deleted: RoaringTreemap,
    rows: Vec<u32>,
    pre: RecordBatch,
}

/// Rows `rows` (sorted row indices of a data file of `total` rows), cast to `schema`.
async fn read_rows(
    bytes: impl deltalake::parquet::file::reader::ChunkReader + 'static,
    schema: &SchemaRef,
    rows: &[u32],
    total: usize,
) -> Result<RecordBatch> {
    use deltalake::parquet::arrow::arrow_reader::RowSelection;
    let mut mask = vec![false; total];
    for &r in rows {
        mask[r as usize] = true;
    }
    let selection = RowSelection::from_filters(&[mask.into()]);
    let schema = schema.clone();
    tokio::task::spawn_blocking(move || {
        // A batch of selected rows decodes every row up to its last one: at the few percent of
        // a file a run touches, 64k selected rows would decode most of the file at once.
        let builder = dictionary_list_reader(bytes)?.with_batch_size(4 * 1024).with_row_selection(selection);
        let batches = builder.build()?.collect::<std::result::Result<Vec<_>, _>>()?;
        let parts = batches.iter().map(|b| conform_keeping_dictionaries(b, &schema)).collect::<Result<Vec<_>>>()?;
        let Some(first) = parts.first() else { return Ok(RecordBatch::new_empty(schema)) };
        Ok::<_, color_eyre::Report>(concat_batches(&first.schema(), &parts)?)
    })
    .await?
    .wrap_err("cannot decode a link-table file's touched rows")
}

/// A reader of a link file whose lists of strings (the upstreams and provenance) decode as
/// lists of dictionary-encoded strings where the file stores them so: a touched row's
/// provenance is then a few indices into the row group's dictionary instead of its strings
/// (they go out again as change data's pre-images only, spelled out a slice at a time). A
/// file whose schema takes no such hint is read as it is.
fn dictionary_list_reader<R>(bytes: R) -> Result<ParquetRecordBatchReaderBuilder<R>>
where
    R: deltalake::parquet::file::reader::ChunkReader + 'static,
{
    use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    let plain = ArrowReaderMetadata::load(&bytes, ArrowReaderOptions::new())?;
    let fields: Vec<Field> = plain.schema().fields().iter().map(|f| f.as_ref().clone().with_data_type(dictionary_list(f.data_type()))).collect();
    let hinted = Arc::new(Schema::new_with_metadata(fields, plain.schema().metadata().clone()));
    let metadata = match ArrowReaderMetadata::try_new(plain.metadata().clone(), ArrowReaderOptions::new().with_schema(hinted)) {
        Ok(hinted) => hinted,
        Err(_) => plain,
    };
    Ok(ParquetRecordBatchReaderBuilder::new_with_metadata(bytes, metadata))
}

/// `List<Utf8>` as `List<Dictionary<Int32, Utf8>>` (the item field kept); other types as they are.
fn dictionary_list(t: &DataType) -> DataType {
    match t {
        DataType::List(item) if *item.data_type() == DataType::Utf8 => {
            let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
            DataType::List(Arc::new(item.as_ref().clone().with_data_type(dictionary)))
        }
        _ => t.clone(),
    }
}

/// Where each rewritten row comes from: `keep` for the columns a MERGE keeps, `update` for the
/// run's columns ((source, row), source `files.len()` being the incoming rows), and the
/// (keep, update) pick of every touched row for its post-image.
struct Picks {
    keep: Vec<(usize, usize)>,
    update: Vec<(usize, usize)>,
    post: Vec<((usize, usize), (usize, usize))>,
}

/// Merge the files' rows (each put in key order if it is not) with the new keys, by key.
fn merge_by_key(
    files: &[RecordBatch],
    file_keys: &[deltalake::arrow::row::Rows],
    matches: &[Vec<Option<u32>>],
    incoming_keys: &deltalake::arrow::row::Rows,
    new_keys: &[u32],
) -> Picks {
    let incoming_source = files.len();
    let mut runs: Vec<Vec<(usize, u32)>> = files
        .iter()
        .enumerate()
        .map(|(f, b)| {
            let mut order: Vec<u32> = (0..b.num_rows() as u32).collect();
            let rows = &file_keys[f];
            if !(1..b.num_rows()).all(|i| rows.row(i - 1) <= rows.row(i)) {
                order.sort_unstable_by(|x, y| rows.row(*x as usize).cmp(&rows.row(*y as usize)));
            }
            order.into_iter().map(|i| (f, i)).collect()
        })
        .collect();
    runs.push(new_keys.iter().map(|&s| (incoming_source, s)).collect());
    let key_of = |(source, row): (usize, u32)| -> &[u8] {
        if source == incoming_source {
            incoming_keys.row(row as usize).data()
        } else {
            file_keys[source].row(row as usize).data()
        }
    };
    let total = runs.iter().map(Vec::len).sum();
    let mut picks = Picks { keep: Vec::with_capacity(total), update: Vec::with_capacity(total), post: Vec::new() };
    let mut take = |source: usize, row: usize| {
        if source == incoming_source {
            picks.keep.push((source, row));
            picks.update.push((source, row));
        } else if let Some(src) = matches[source][row] {
            picks.keep.push((source, row));
            picks.update.push((incoming_source, src as usize));
            picks.post.push(((source, row), (incoming_source, src as usize)));
        } else {
            picks.keep.push((source, row));
            picks.update.push((source, row));
        }
    };
    let mut heads = vec![0usize; runs.len()];
    loop {
        // The run with the smallest head, and the smallest head of the others: rows are taken
        // from the former up to the latter at one comparison each (files hold disjoint key
        // ranges, so this takes long stretches of a file at once).
        let mut best: Option<usize> = None;
        let mut second: Option<&[u8]> = None;
        for r in 0..runs.len() {
            let Some(&head) = runs[r].get(heads[r]) else { continue };
            let key = key_of(head);
            match best {
                Some(b) if key >= key_of(runs[b][heads[b]]) => second = Some(second.map_or(key, |s| s.min(key))),
                Some(b) => {
                    let old = key_of(runs[b][heads[b]]);
                    second = Some(second.map_or(old, |s| s.min(old)));
                    best = Some(r);
                }
                None => best = Some(r),
            }
        }
        let Some(r) = best else { break };
        while let Some(&(source, row)) = runs[r].get(heads[r]) {
            if second.is_some_and(|s| key_of((source, row)) > s) {
                break;
            }
            heads[r] += 1;
            take(source, row as usize);
        }
    }
    picks
}

/// Commit the MERGE's actions (with the run's application transaction in `props`).
async fn commit(
    table: &DeltaTable,
    props: CommitProperties,
    predicate: String,
    actions: Vec<Action>,
    metrics: LinkWriteMetrics,
) -> Result<(DeltaTable, LinkWriteMetrics)> {
    let operation = crate::lake::merge_operation(&predicate);
    let committed = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    // The commit hands back the table state at its version: no need to reload the log.
    let mut table = table.clone();
    table.state = Some(committed.snapshot());
    Ok((table, metrics))
}

/// `incoming` in key order as the link table's key types sort, which is what pruning, grouping
/// and the merge-join rely on. The run's keys arrive sorted in the types they were grouped in;
/// cast to the table's types (a `sql` source may return another type) the order can change, or
/// two keys can become one: the latter is refused, since a MERGE cannot apply both.
fn sorted_and_unique(incoming: RecordBatch, key_index: &[usize]) -> Result<RecordBatch> {
    let columns: Vec<ArrayRef> = key_index.iter().map(|&i| incoming.column(i).clone()).collect();
    let converter = RowConverter::new(columns.iter().map(|c| SortField::new(c.data_type().clone())).collect())?;
    let rows = converter.convert_columns(&columns)?;
    if (1..incoming.num_rows()).all(|i| rows.row(i - 1) < rows.row(i)) {
        return Ok(incoming);
    }
    let mut order: Vec<u32> = (0..incoming.num_rows() as u32).collect();
    order.sort_unstable_by(|a, b| rows.row(*a as usize).cmp(&rows.row(*b as usize)));
    if let Some(w) = order.windows(2).find(|w| rows.row(w[0] as usize) == rows.row(w[1] as usize)) {
        let shown: Vec<String> =
            columns.iter().map(|c| crate::keymap::display_value(c.as_ref(), w[0] as usize)).collect();
        return Err(eyre!(
            "two of the run's keys become the same key ({}) in the link table's key types\n  fix: make every source return the key in the link table's types (cast it in the `sql`)",
            shown.join(", ")
        ));
    }
    Ok(take_record_batch(&incoming, &UInt32Array::from(order))?)
}

/// The link table's data files, with the first key column's range from their statistics (read
/// as the run's first keys are typed).
fn target_files(table: &DeltaTable, first_key: &str, keys: Option<&FirstKeys>) -> Result<Vec<TargetFile>> {
    let snapshot = table.snapshot()?;
    Ok(snapshot
        .log_data()
        .iter()
        .map(|f| TargetFile {
            path: f.object_store_path(),
            remove: f.remove_action(true),
            // The file's add as the log holds it (delta-rs calls this an internal API).
            #[allow(deprecated)]
            add: f.add_action(),
            first_key_range: keys.and_then(|keys| f.stats().and_then(|s| keys.range_in(&s, first_key))),
            rows: f.num_records().map(|n| n as u64),
        })
        .collect())
}

/// A file's statistics once a deletion vector hides some of its rows: the bounds still hold
/// (they cover the rows left) but may be loose, which the protocol marks `tightBounds: false`.
fn loose_bounds(stats: Option<String>) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(stats.as_deref()?).ok()?;
    value.as_object_mut()?.insert("tightBounds".into(), serde_json::Value::Bool(false));
    Some(value.to_string())
}

/// The incoming rows' first key column as sorted i64s, when it is an integer column.
fn first_int_keys(incoming: &RecordBatch, index: usize) -> Result<Option<Vec<i64>>> {
    int_values(incoming.column(index))
}

/// A bound of a link file's first-key range (from its statistics): integer or string, as the
/// key column is. Strings order byte by byte, as parquet's statistics and the sorted keys do
/// (a bound a writer truncated is still a bound: the minimum cut short, the maximum rounded up).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum KeyBound {
    Int(i64),
    Text(String),
}

/// The run's first key column, sorted (see [`sorted_and_unique`]), by which link files' key
/// ranges route and prune: integers as i64s, strings as they are.
enum FirstKeys {
    Int(Vec<i64>),
    Text(StringArray),
}

impl FirstKeys {
    /// `None` when the column is neither, or holds a NULL (the files are then taken as they are).
    fn of(incoming: &RecordBatch, index: usize) -> Result<Option<Self>> {
        let column = incoming.column(index);
        if column.null_count() > 0 {
            return Ok(None);
        }
        if let Some(ints) = int_values(column)? {
            return Ok(Some(FirstKeys::Int(ints)));
        }
        Ok(match column.data_type() {
            // (Over 2 GiB of keys cannot be one string array: the files are then taken as they are.)
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => {
                cast(column, &DataType::Utf8).ok().map(|keys| FirstKeys::Text(keys.as_string::<i32>().clone()))
            }
            _ => None,
        })
    }

    fn len(&self) -> usize {
        match self {
            FirstKeys::Int(v) => v.len(),
            FirstKeys::Text(v) => v.len(),
        }
    }

    /// Key `i` against `bound` (kinds never differ: bounds are read as the keys are typed).
    fn cmp_at(&self, i: usize, bound: &KeyBound) -> std::cmp::Ordering {
        match (self, bound) {
            (FirstKeys::Int(v), KeyBound::Int(b)) => v[i].cmp(b),
            (FirstKeys::Text(v), KeyBound::Text(b)) => v.value(i).cmp(b.as_str()),
            (FirstKeys::Int(_), KeyBound::Text(_)) => std::cmp::Ordering::Less,
            (FirstKeys::Text(_), KeyBound::Int(_)) => std::cmp::Ordering::Greater,
        }
    }

    /// How many keys sort below `bound`.
    fn below(&self, bound: &KeyBound) -> usize {
        self.count_while(|o| o.is_lt(), bound)
    }

    /// How many keys sort at or below `bound`.
    fn at_most(&self, bound: &KeyBound) -> usize {
        self.count_while(|o| o.is_le(), bound)
    }

    /// The length of the keys' prefix whose comparison with `bound` satisfies `holds` (a
    /// binary search: the keys are sorted).
    fn count_while(&self, holds: impl Fn(std::cmp::Ordering) -> bool, bound: &KeyBound) -> usize {
        let (mut lo, mut hi) = (0, self.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if holds(self.cmp_at(mid, bound)) {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// A file's (min, max) of `column` in its statistics JSON, read as these keys are typed.
    fn range_in(&self, stats: &str, column: &str) -> Option<(KeyBound, KeyBound)> {
        let v: serde_json::Value = serde_json::from_str(stats).ok()?;
        let (min, max) = (v.get("minValues")?.get(column)?, v.get("maxValues")?.get(column)?);
        match self {
            FirstKeys::Int(_) => Some((KeyBound::Int(min.as_i64()?), KeyBound::Int(max.as_i64()?))),
            FirstKeys::Text(_) => Some((KeyBound::Text(min.as_str()?.to_string()), KeyBound::Text(text_upper_bound(max.as_str()?)?))),
        }
    }
}

/// A string maximum from a file's statistics as a sure upper bound. Delta Spark before 3.3
/// truncated a long maximum and appended U+FFFD, which sorts below the characters outside the
/// basic plane a key may go on with: such a maximum becomes its prefix with the last character
/// incremented (above every string starting with the prefix); `None` (no range) when none can be.
fn text_upper_bound(max: &str) -> Option<String> {
    let Some(prefix) = max.strip_suffix('\u{FFFD}') else { return Some(max.to_string()) };
    let mut chars: Vec<char> = prefix.chars().collect();
    while let Some(last) = chars.pop() {
        let next = (u32::from(last) + 1..=u32::from(char::MAX)).find_map(char::from_u32);
        if let Some(next) = next {
            chars.push(next);
            return Some(chars.into_iter().collect());
        }
    }
    None
}

/// A signed integer column's values as i64s (a NULL's slot reads as whatever it holds).
fn int_values(column: &ArrayRef) -> Result<Option<Vec<i64>>> {
    if !matches!(column.data_type(), DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) {
        return Ok(None);
    }
    let ints = cast(column, &DataType::Int64)?;
    Ok(Some(ints.as_primitive::<Int64Type>().values().to_vec()))
}

/// A data file's rows that its deletion vector (if any) does not delete, cast to `schema`.
async fn read_live_rows(store: &Arc<dyn ObjectStore>, file: &TargetFile, schema: &SchemaRef) -> Result<RecordBatch> {
    let batch = read_file(store.clone(), &file.path, schema).await?;
    if file.deletion_vector().is_none() {
        return Ok(batch);
    }
    let deleted = file.deleted_rows(store).await?;
    let live: deltalake::arrow::array::BooleanArray = (0..batch.num_rows() as u64).map(|i| Some(!deleted.contains(i))).collect();
    Ok(filter_record_batch(&batch, &live)?)
}

/// Read one data file whole, its columns cast to the link rows' schema by name.
async fn read_file(store: Arc<dyn ObjectStore>, path: &Path, schema: &SchemaRef) -> Result<RecordBatch> {
    let bytes = fetch(&store, path).await?;
    let schema = schema.clone();
    let path = path.to_string();
    tokio::task::spawn_blocking(move || {
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes)?.with_batch_size(64 * 1024).build()?;
        let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
        let parts = batches.iter().map(|b| conform(b, &schema)).collect::<Result<Vec<_>>>()?;
        Ok::<_, color_eyre::Report>(concat_batches(&schema, &parts)?)
    })
    .await?
    .wrap_err_with(|| format!("cannot decode link-table file {path}"))
}

/// The bytes of one link-table file.
async fn fetch(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<impl deltalake::parquet::file::reader::ChunkReader + Clone + 'static> {
    Ok(store.get(path).await.wrap_err_with(|| format!("cannot read link-table file {path}"))?.bytes().await?)
}

/// `batch` with the columns of `schema`, found by name and cast (list field names, string
/// encodings); a column the file lacks is all NULL. Link rows of a run carry their upstream
/// and provenance lists dictionary-encoded (see `AffectedKeys::per_key`): this spells them
/// out, a writer's slice or a file group's keys at a time.
fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let kept = conform_keeping_dictionaries(batch, schema)?;
    let columns = kept
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { spell_out(c) })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}

/// [`conform`], but a list of dictionary-encoded strings where `schema` has a list of strings
/// stays so (each field typed as its column is).
fn conform_keeping_dictionaries(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() || spelled_out(c.data_type()) == *f.data_type() => Ok(c.clone()),
            Some(c) => Ok(cast(c, f.data_type())?),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    with_own_types(schema, columns)
}

/// A list of dictionary-encoded values as the list of those values, converting only the
/// elements of the rows at hand (a cast would convert every element under a sliced list).
fn spell_out(column: &ArrayRef) -> Result<ArrayRef> {
    use deltalake::arrow::array::ListArray;
    use deltalake::arrow::buffer::{OffsetBuffer, ScalarBuffer};
    let (Some(list), DataType::List(item)) = (column.as_list_opt::<i32>(), spelled_out(column.data_type())) else {
        return Ok(column.clone());
    };
    let offsets = list.value_offsets();
    let (first, last) = (offsets[0], offsets[offsets.len() - 1]);
    let values = cast(&list.values().slice(first as usize, (last - first) as usize), item.data_type())?;
    let offsets: Vec<i32> = offsets.iter().map(|o| o - first).collect();
    Ok(Arc::new(ListArray::try_new(item, OffsetBuffer::new(ScalarBuffer::from(offsets)), values, list.nulls().cloned())?))
}

/// Rows built by picking, per column, from `sources`: the run's columns (see [`UPDATED`]) by
/// `update_picks`, every other column by `keep_picks`. Picks that run in long stretches of
/// consecutive rows (the kept columns: most rows of a rewritten file are unchanged) are copied
/// as ranges; picks that switch source every few rows (the run's columns where many keys
/// changed) are gathered row by row, which arrow's `interleave` does without the per-range
/// overhead of `MutableArrayData` (profiled: a fifth of an incremental MERGE went to ranges a
/// few rows long).
fn assemble(
    schema: &SchemaRef,
    sources: &[&RecordBatch],
    keep_picks: &[(usize, usize)],
    update_picks: &[(usize, usize)],
) -> Result<RecordBatch> {
    let (keep_stretches, update_stretches) = (stretches(keep_picks), stretches(update_picks));
    let columns = schema
        .fields()
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let (picks, stretches) =
                if UPDATED.contains(&f.name().as_str()) { (update_picks, &update_stretches) } else { (keep_picks, &keep_stretches) };
            if let [(source, 0, len)] = stretches.as_slice() {
                // All of one source, in order (a marked range's run columns are the incoming
                // rows as they are): that source's column, not a copy of it, in its own type.
                // (A part of a source is copied: a slice would keep the whole source alive.)
                if *len == sources[*source].num_rows() {
                    return Ok(sources[*source].column(i).clone());
                }
            }
            let columns: Vec<&dyn Array> = sources.iter().map(|b| b.column(i).as_ref()).collect();
            if stretches.len() * 16 > picks.len() {
                if let Some(lists) = gather_string_lists(&columns, picks)? {
                    return Ok(lists);
                }
                return Ok(deltalake::arrow::compute::interleave(&columns, picks)?);
            }
            copy_stretches(&columns, stretches, picks.len())
        })
        .collect::<Result<Vec<ArrayRef>>>()?;
    with_own_types(schema, columns)
}

/// A batch of `columns` under `schema`'s fields, each field typed as its column is (lists of
/// dictionary-encoded strings stay so until written; see [`conform`]).
fn with_own_types(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
    if schema.fields().iter().zip(&columns).all(|(f, c)| f.data_type() == c.data_type()) {
        return Ok(RecordBatch::try_new(schema.clone(), columns)?);
    }
    let fields: Vec<Field> = schema.fields().iter().zip(&columns).map(|(f, c)| f.as_ref().clone().with_data_type(c.data_type().clone())).collect();
    Ok(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, schema.metadata().clone())), columns)?)
}

/// `interleave` for lists of strings without NULL elements (the upstreams and provenance
/// columns) in one pass: list offsets, string offsets and bytes copied per picked row.
/// arrow's own goes through a vector of every picked element first (profiled: most of the
/// time spent assembling rows). `None` for other columns.
fn gather_string_lists(columns: &[&dyn Array], picks: &[(usize, usize)]) -> Result<Option<ArrayRef>> {
    use deltalake::arrow::array::{BooleanBufferBuilder, ListArray};
    use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer, ScalarBuffer};
    let lists: Option<Vec<&ListArray>> = columns.iter().map(|c| c.as_list_opt::<i32>()).collect();
    let Some(lists) = lists else { return Ok(None) };
    let strings: Option<Vec<&StringArray>> =
        lists.iter().map(|l| l.values().as_string_opt::<i32>().filter(|v| v.null_count() == 0)).collect();
    let (Some(strings), Some(first)) = (strings, lists.first()) else { return Ok(None) };
    let overflow = || eyre!("link rows too large to assemble in one batch (over 2 GiB of provenance)");
    let (mut items, mut bytes) = (0usize, 0usize);
    for &(s, r) in picks {
        let (a, b) = (lists[s].value_offsets()[r] as usize, lists[s].value_offsets()[r + 1] as usize);
        items += b - a;
        bytes += (strings[s].value_offsets()[b] - strings[s].value_offsets()[a]) as usize;
    }
    i32::try_from(bytes.max(items)).map_err(|_| overflow())?;
    let mut list_offsets: Vec<i32> = Vec::with_capacity(picks.len() + 1);
    let mut string_offsets: Vec<i32> = Vec::with_capacity(items + 1);
    let mut values: Vec<u8> = Vec::with_capacity(bytes);
    let mut valid = BooleanBufferBuilder::new(picks.len());
    let has_nulls = lists.iter().any(|l| l.null_count() > 0);
    list_offsets.push(0);
    string_offsets.push(0);
    for &(s, r) in picks {
        let (a, b) = (lists[s].value_offsets()[r] as usize, lists[s].value_offsets()[r + 1] as usize);
        let offsets = &strings[s].value_offsets()[a..=b];
        let shift = values.len() as i32 - offsets[0];
        string_offsets.extend(offsets[1..].iter().map(|o| o + shift));
        values.extend_from_slice(&strings[s].value_data()[offsets[0] as usize..offsets[b - a] as usize]);
        list_offsets.push((string_offsets.len() - 1) as i32);
        if has_nulls {
            valid.append(lists[s].is_valid(r));
        }
    }
    // SAFETY: whole strings of valid string arrays, copied with offsets shifted by where they
    // land: valid UTF-8 at valid, increasing offsets (re-validating was a tenth of this).
    let elements = unsafe { StringArray::new_unchecked(OffsetBuffer::new_unchecked(ScalarBuffer::from(string_offsets)), values.into(), None) };
    let field = match first.data_type() {
        DataType::List(field) => field.clone(),
        _ => return Ok(None),
    };
    let nulls = has_nulls.then(|| NullBuffer::new(valid.finish()));
    Ok(Some(Arc::new(ListArray::try_new(field, OffsetBuffer::new(ScalarBuffer::from(list_offsets)), Arc::new(elements), nulls)?)))
}

/// Picks as (source, first row, rows): runs of consecutive rows of one source.
fn stretches(picks: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(source, row) in picks {
        match out.last_mut() {
            Some((s, start, len)) if *s == source && *start + *len == row => *len += 1,
            _ => out.push((source, row, 1)),
        }
    }
    out
}

fn copy_stretches(columns: &[&dyn Array], stretches: &[(usize, usize, usize)], rows: usize) -> Result<ArrayRef> {
    use deltalake::arrow::array::{make_array, MutableArrayData};
    let data: Vec<_> = columns.iter().map(|c| c.to_data()).collect();
    let mut out = MutableArrayData::new(data.iter().collect(), true, rows);
    for &(source, start, len) in stretches {
        out.try_extend(source, start, start + len)?;
    }
    Ok(make_array(out.freeze()))
}

/// Write the rewritten rows as new data files of about `rows_per_file` rows each (contiguous
/// key ranges), written concurrently; their Add actions.
async fn write_data(
    table: &DeltaTable,
    rows: RecordBatch,
    rows_per_file: usize,
    written: &Arc<Uncommitted>,
) -> Result<Vec<deltalake::kernel::Add>> {
    let schema = RecordBatchWriter::for_table(table)?.arrow_schema();
    let rows_per_file = rows_per_file.max(1);
    let writes = (0..rows.num_rows()).step_by(rows_per_file).map(|at| {
        let chunk = rows.slice(at, rows_per_file.min(rows.num_rows() - at));
        let (writer, written, schema) = (link_writer(table), written.clone(), schema.clone());
        crate::task::spawn_owned(async move {
            let mut writer = writer?;
            // Handed over in slices, spelled out one at a time: the writer encodes as it goes.
            const SLICE: usize = 64 * 1024;
            for at in (0..chunk.num_rows()).step_by(SLICE) {
                writer.write(conform(&chunk.slice(at, SLICE.min(chunk.num_rows() - at)), &schema)?).await?;
            }
            let adds = writer.flush().await?;
            written.add(adds.iter().map(|a| a.path.clone()));
            Ok::<_, color_eyre::Report>(adds)
        })
    });
    let mut adds = Vec::new();
    for file in futures::future::try_join_all(writes).await? {
        adds.extend(file?);
    }
    Ok(adds)
}

/// A writer for link files. Files are cut by rows here (the writer's own size rolling, by
/// encoded bytes in memory, would cut them far below the target). Row groups of 128k rows:
/// a row group is encoded in one go inside a `write` call, and a million-row group held an
/// async worker for long enough to stall the console's frames.
/// The key columns are written without a dictionary: each key appears once in a link table,
/// so a row group's dictionary would hold every value (plus an index per row) and cost a hash
/// per value to build. The upstream and provenance lists carry no statistics: nothing prunes
/// on them, and their min/max cost two string comparisons per value (profiled: ~5 % of an
/// incremental run).
fn link_writer(table: &DeltaTable) -> Result<RecordBatchWriter> {
    let writer = RecordBatchWriter::for_table(table)?;
    let properties = link_file_properties(&writer.arrow_schema());
    Ok(writer.with_target_file_size(u64::MAX / 2).with_writer_properties(properties))
}

/// Parquet properties of link-table data and change-data files (see [`link_writer`]).
fn link_file_properties(schema: &Schema) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use deltalake::parquet::schema::types::ColumnPath;
    // Statistics untruncated: a string key's file ranges route runs (see `FirstKeys`), and a
    // maximum rounded up at 64 bytes would overlap the next file's range where keys share a
    // long prefix.
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_statistics_truncate_length(None);
    for field in schema.fields().iter().filter(|f| !crate::link::is_link_column(f.name()) && f.name() != CHANGE_TYPE) {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
    }
    for list in [crate::link::UPSTREAMS_COL, crate::link::PROVENANCE_COL] {
        let element = ColumnPath::new(vec![list.to_string(), "list".into(), "element".into()]);
        properties = properties.set_column_statistics_enabled(element, EnabledStatistics::None);
    }
    properties.build()
}

/// Rows written in order into files of `per_file` rows, encoded on a task of their own: a
/// rewrite decodes and merges on one core while its rows are encoded on the other (profiled:
/// encoding is about half a rewrite; one file's rewrite used to be one core's work, so a
/// pipeline whose MERGE touched an odd number of files left a core idle at the end).
struct RowsOut {
    rows: tokio::sync::mpsc::Sender<RecordBatch>,
    encoder: crate::task::Owned<Result<Vec<deltalake::kernel::Add>>>,
}

impl RowsOut {
    fn new(table: &DeltaTable, per_file: usize, written: Arc<Uncommitted>) -> Result<Self> {
        let writer = link_writer(table)?;
        let (rows, mut incoming) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let encoder = crate::task::spawn_owned(async move {
            let mut files = FileCutter { schema: writer.arrow_schema(), writer, per_file: per_file.max(1), in_file: 0, adds: Vec::new(), written };
            while let Some(batch) = incoming.recv().await {
                files.write(batch).await?;
            }
            files.flush().await?;
            Ok(files.adds)
        });
        Ok(RowsOut { rows, encoder })
    }

    async fn write(&mut self, rows: RecordBatch) -> Result<()> {
        if self.rows.send(rows).await.is_ok() {
            return Ok(());
        }
        // The encoder stopped: its error says why. (The caller drops `self` on this error:
        // the finished task is not polled again.)
        match (&mut self.encoder).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(eyre!("the link file encoder stopped early")),
            Err(e) => Err(eyre!("the link file encoder stopped: {e}")),
        }
    }

    async fn finish(self) -> Result<Vec<deltalake::kernel::Add>> {
        let RowsOut { rows, encoder } = self;
        drop(rows);
        encoder.await.map_err(|e| eyre!("the link file encoder stopped: {e}"))?
    }

    /// Delete the files written so far (a rewrite given up for another: never committed).
    async fn abandon(self, store: &Arc<dyn ObjectStore>) {
        if let Ok(adds) = self.finish().await {
            delete_files(store, adds.iter().map(|a| Path::from(a.path.as_str())).collect()).await;
        }
    }
}

/// The encoder's side of [`RowsOut`]: one writer, flushed into a new file at each cut.
struct FileCutter {
    writer: RecordBatchWriter,
    schema: SchemaRef,
    per_file: usize,
    in_file: usize,
    adds: Vec<deltalake::kernel::Add>,
    written: Arc<Uncommitted>,
}

impl FileCutter {
    async fn flush(&mut self) -> Result<()> {
        let adds = self.writer.flush().await?;
        self.written.add(adds.iter().map(|a| a.path.clone()));
        self.adds.extend(adds);
        Ok(())
    }

    async fn write(&mut self, rows: RecordBatch) -> Result<()> {
        let rows = conform(&rows, &self.schema)?;
        let mut at = 0;
        while at < rows.num_rows() {
            let take = (self.per_file - self.in_file).min(rows.num_rows() - at);
            self.writer.write(rows.slice(at, take)).await?;
            self.in_file += take;
            at += take;
            if self.in_file >= self.per_file {
                self.flush().await?;
                self.in_file = 0;
            }
        }
        Ok(())
    }
}

/// Rows per file for about `target_bytes` per file: from the sizes of the files being
/// rewritten, or (a first write) from the rows' size in memory, which parquet's dictionary
/// and snappy encoding shrink about twelvefold for link rows (measured).
fn rows_per_file(target_bytes: u64, file_bytes: u64, file_rows: usize, rows: &RecordBatch) -> Result<usize> {
    const MEMORY_TO_FILE: f64 = 12.0;
    let bytes_per_row = match (file_bytes, file_rows) {
        (0, _) | (_, 0) if rows.num_rows() > 0 => {
            // Measured on rows as written: dictionary-encoded lists (see `conform`) are spelled
            // out, a sample of them.
            let mut per_row = 0.0;
            for column in rows.columns() {
                let spelled = spelled_out(column.data_type());
                per_row += if spelled == *column.data_type() {
                    column.get_array_memory_size() as f64 / rows.num_rows() as f64
                } else {
                    let sample = spell_out(&column.slice(0, rows.num_rows().min(16 * 1024)))?;
                    sample.get_array_memory_size() as f64 / sample.len() as f64
                };
            }
            per_row / MEMORY_TO_FILE
        }
        (0, _) | (_, 0) => return Ok(1 << 20),
        _ => file_bytes as f64 / file_rows as f64,
    }
    .max(1.0);
    Ok(((target_bytes as f64 / bytes_per_row) as usize).max(1024))
}

/// The rows of a change-data file: pre- and post-images of the touched keys, the inserted
/// keys, and rows that carry their own change type.
#[derive(Default)]
struct ChangeImages<'a> {
    pre: &'a [RecordBatch],
    post: &'a [RecordBatch],
    inserts: &'a [RecordBatch],
    labelled: Option<(RecordBatch, ArrayRef)>,
}

/// One change-data file of `images`.
async fn write_change_data(store: &Arc<dyn ObjectStore>, schema: &SchemaRef, images: ChangeImages<'_>) -> Result<Option<AddCDCFile>> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    let cdc_schema = Arc::new(Schema::new(fields));
    // Parts keep their own column types (a marked range's new rows hold dictionary-encoded
    // lists): spelled out a slice at a time as they are written.
    let with_change_type = |b: &RecordBatch, change: ArrayRef| -> Result<RecordBatch> {
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
        let mut columns = b.columns().to_vec();
        columns.push(change);
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    };
    let constant = |change: &str, rows: usize| -> ArrayRef { Arc::new(StringArray::from(vec![change; rows])) };
    let mut parts = Vec::new();
    for (batches, change) in [(images.pre, "update_preimage"), (images.post, "update_postimage"), (images.inserts, "insert")] {
        for b in batches {
            parts.push(with_change_type(b, constant(change, b.num_rows()))?);
        }
    }
    if let Some((b, changes)) = &images.labelled {
        parts.push(with_change_type(b, changes.clone())?);
    }
    let rows: usize = parts.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(None);
    }
    // Encoded on a blocking thread: a run touching millions of keys writes millions of images,
    // seconds of CPU that would otherwise hold an async worker (and the console's frames).
    let buffer = tokio::task::spawn_blocking(move || {
        let mut buffer = Vec::new();
        let properties = link_file_properties(&cdc_schema);
        let mut writer = ArrowWriter::try_new(&mut buffer, cdc_schema.clone(), Some(properties))?;
        const SLICE: usize = 64 * 1024;
        for b in &parts {
            for at in (0..b.num_rows()).step_by(SLICE) {
                writer.write(&conform(&b.slice(at, SLICE.min(b.num_rows() - at)), &cdc_schema)?)?;
            }
        }
        writer.close()?;
        Ok::<_, color_eyre::Report>(buffer)
    })
    .await??;
    let name = format!("_change_data/cdc-00000-{}.c000.snappy.parquet", uuid::Uuid::new_v4());
    let size = buffer.len() as i64;
    store
        .put(&Path::from(name.as_str()), buffer.into())
        .await
        .wrap_err_with(|| format!("cannot write link-table change data {name}"))?;
    Ok(Some(AddCDCFile { path: name, size, partition_values: HashMap::new(), data_change: false, tags: None }))
}

/// Link rows for the incoming keys, as the table stores them.
pub(super) fn incoming_rows(
    table_schema: &SchemaRef,
    pipeline: &str,
    run_id: i64,
    now_us: i64,
    per_key: &RecordBatch,
) -> Result<RecordBatch> {
    use deltalake::arrow::array::{Int64Array, TimestampMicrosecondArray};
    let n = per_key.num_rows();
    let mut fields = Vec::new();
    let columns = table_schema
        .fields()
        .iter()
        .map(|f| {
            let column: ArrayRef = match f.name().as_str() {
                PIPELINE_COL => Arc::new(StringArray::from(vec![pipeline; n])),
                RUN_ID_COL => Arc::new(Int64Array::from(vec![run_id; n])),
                CREATED_COL | UPDATED_COL => Arc::new(TimestampMicrosecondArray::from(vec![now_us; n]).with_timezone("UTC")),
                name => match per_key.column_by_name(name) {
                    Some(c) => c.clone(),
                    None => new_null_array(f.data_type(), n),
                },
            };
            // Lists of dictionary-encoded strings stay so until written (see `conform`).
            let column = if column.data_type() == f.data_type() || spelled_out(column.data_type()) == *f.data_type() {
                column
            } else {
                cast(&column, f.data_type()).wrap_err_with(|| format!("link column `{}`", f.name()))?
            };
            fields.push(f.as_ref().clone().with_data_type(column.data_type().clone()));
            Ok(column)
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(RecordBatch::try_new(Arc::new(Schema::new_with_metadata(fields, table_schema.metadata().clone())), columns)?)
}

/// `t` with a list of dictionary-encoded values as the list of those values (the field kept).
fn spelled_out(t: &DataType) -> DataType {
    match t {
        DataType::List(item) => match item.data_type() {
            DataType::Dictionary(_, values) => DataType::List(Arc::new(item.as_ref().clone().with_data_type(values.as_ref().clone()))),
            _ => t.clone(),
        },
        _ => t.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, ListBuilder, StringBuilder};

    /// Spark's truncated maximum (prefix + U+FFFD) widens above every string with that prefix,
    /// characters outside the basic plane included; other maxima stay as they are.
    #[test]
    fn a_spark_truncated_string_maximum_widens_to_a_sure_bound() {
        let bound = text_upper_bound("abc\u{FFFD}").expect("a bound");
        assert!(bound.as_str() > "abc\u{1F33C}tail" && bound.as_str() > "abc\u{10FFFF}", "{bound:?}");
        assert_eq!(bound, "abd");
        assert_eq!(text_upper_bound("abc").as_deref(), Some("abc"));
        assert_eq!(text_upper_bound("a\u{10FFFF}\u{FFFD}").as_deref(), Some("b"));
        assert_eq!(text_upper_bound("\u{10FFFF}\u{FFFD}"), None);
    }

    /// Touched rows keep their lists of strings as dictionary indices (what bounds a marked
    /// range's memory), across row groups and with NULL and empty lists, and spell out to
    /// exactly the rows that were written.
    #[tokio::test]
    async fn touched_rows_decode_lists_as_dictionaries_and_spell_out_to_the_written_rows() -> Result<()> {
        let rows = 10_000usize;
        let mut lists = ListBuilder::new(StringBuilder::new());
        for i in 0..rows {
            match i % 7 {
                0 => lists.append_null(),
                1 => lists.append(true),
                _ => {
                    for j in 0..i % 4 {
                        lists.values().append_value(format!("t{:03}@{}:update_postimage", j, i % 13));
                    }
                    lists.append(true);
                }
            }
        }
        let lists = lists.finish();
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Int64, true),
            Field::new(PROVENANCE_COL, lists.data_type().clone(), true),
        ]));
        let written = RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from_iter_values(0..rows as i64)), Arc::new(lists)])?;
        let file = tempfile::tempfile()?;
        let properties = deltalake::parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(3_000)).build();
        let mut writer = ArrowWriter::try_new(file.try_clone()?, schema.clone(), Some(properties))?;
        writer.write(&written)?;
        writer.close()?;

        let touched: Vec<u32> = (0..rows as u32).filter(|i| i % 3 == 0 || (2_990..3_010).contains(i)).collect();
        let pre = read_rows(file, &schema, &touched, rows).await?;
        let DataType::List(item) = pre.column(1).data_type() else { panic!("provenance read as {}", pre.column(1).data_type()) };
        assert!(matches!(item.data_type(), DataType::Dictionary(..)), "provenance elements read as {}", item.data_type());
        let expected = take_record_batch(&written, &UInt32Array::from(touched))?;
        assert_eq!(conform(&pre, &schema)?, expected);
        Ok(())
    }
}
