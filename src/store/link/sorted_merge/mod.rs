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

use futures::TryStreamExt;
use futures::StreamExt;
mod files;
mod job;
mod layout;
mod purge;
mod rows;

pub use self::purge::Purged;
pub(crate) use self::purge::{heavy_files, purge};

pub(crate) use self::rows::incoming_rows;

use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::DeltaTable;
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::compute::concat_batches;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::kernel::Action;

use crate::store::link::columns::LinkWriteMetrics;
use crate::store::link::deletion_vector;

use self::files::{ChangeImages, Uncommitted, commit, rows_per_file, write_change_data, write_data};
use self::job::Job;
use self::layout::{FirstKeys, Rewrite, group_by_file, key_ranges, prune, slot_groups, takes_deletion_vectors, target_files};
use self::rows::{conform, sorted_and_unique};

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

/// File groups rewritten at once (each decodes on one task and encodes on another).
pub(crate) const GROUPS_AT_ONCE: usize = 3;

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
                let done = crate::util::task::spawn_owned(async move { job.rewrite_group(group, slice).await }).await??;
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

#[cfg(test)]
mod tests {
    use super::layout::*;
    use super::rows::*;
    use super::*;
    use deltalake::arrow::array::{Array, Int64Array, ListBuilder, StringBuilder, UInt32Array};
    use deltalake::arrow::compute::take_record_batch;
    use deltalake::arrow::datatypes::{DataType, Field, Schema};
    use deltalake::parquet::arrow::ArrowWriter;
    use crate::store::link::columns::PROVENANCE_COL;

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
        let properties = deltalake::parquet::file::properties::WriterProperties::builder().set_max_row_group_row_count(Some(3_000)).build();
        let mut writer = ArrowWriter::try_new(Vec::new(), schema.clone(), Some(properties))?;
        writer.write(&written)?;
        // Read back as a run reads a link file: its bytes fetched from the store.
        let store: Arc<dyn deltalake::ObjectStore> = Arc::new(deltalake::logstore::object_store::memory::InMemory::new());
        let path = deltalake::Path::from("link.parquet");
        deltalake::logstore::object_store::ObjectStoreExt::put(&store, &path, writer.into_inner()?.into()).await?;
        let file = fetch(&store, &path).await?;

        let touched: Vec<u32> = (0..rows as u32).filter(|i| i % 3 == 0 || (2_990..3_010).contains(i)).collect();
        let pre = read_rows(file, &schema, &touched).await?;
        let DataType::List(item) = pre.column(1).data_type() else { panic!("provenance read as {}", pre.column(1).data_type()) };
        assert!(matches!(item.data_type(), DataType::Dictionary(..)), "provenance elements read as {}", item.data_type());
        let expected = take_record_batch(&written, &UInt32Array::from(touched))?;
        assert_eq!(conform(&pre, &schema)?, expected);
        Ok(())
    }

    /// A run's constant columns travel as one-value dictionaries and spell out, a slice at a
    /// time, to exactly the plain columns of the table's schema; conformed for mixing with a
    /// file's rows, they are spelled out while the lists stay dictionary-encoded.
    #[test]
    fn constant_columns_spell_out_to_the_tables_types_slice_by_slice() -> Result<()> {
        use crate::store::link::columns::{CREATED_COL, PIPELINE_COL, RUN_ID_COL, UPSTREAMS_COL};
        use deltalake::arrow::array::{ArrayRef, AsArray, DictionaryArray, Int32Array, ListArray, StringArray};
        use deltalake::arrow::buffer::OffsetBuffer;
        use deltalake::arrow::datatypes::{Int32Type, TimeUnit, TimestampMicrosecondType};
        let n = 50_000usize;
        let strings = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
        let timestamp = DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()));
        let table = Arc::new(Schema::new(vec![
            Field::new(PIPELINE_COL, DataType::Utf8, false),
            Field::new("k", DataType::Int64, true),
            Field::new(RUN_ID_COL, DataType::Int64, false),
            Field::new(UPSTREAMS_COL, strings, true),
            Field::new(CREATED_COL, timestamp, true),
        ]));
        let ids = DictionaryArray::<Int32Type>::try_new(Int32Array::from_iter_values((0..n as i32).map(|i| i % 2)), Arc::new(StringArray::from(vec!["a", "b"])))?;
        let item = Arc::new(Field::new("element", ids.data_type().clone(), true));
        let upstreams = ListArray::try_new(item, OffsetBuffer::from_lengths(std::iter::repeat_n(1, n)), Arc::new(ids), None)?;
        let per_key = RecordBatch::try_from_iter([
            ("k", Arc::new(Int64Array::from_iter_values(0..n as i64)) as ArrayRef),
            (UPSTREAMS_COL, Arc::new(upstreams)),
        ])?;
        let incoming = incoming_rows(&table, "orders", 7, 1_700_000_000_000_000, &per_key)?;
        assert!(matches!(incoming.column(0).data_type(), DataType::Dictionary(..)), "the pipeline name travels as a dictionary");

        for (at, len) in [(0, 8_192), (8_192, 8_192), (49_990, 10)] {
            let slice = conform(&incoming.slice(at, len), &table)?;
            assert_eq!(slice.schema(), table);
            assert!(slice.column(0).as_string::<i32>().iter().all(|p| p == Some("orders")));
            assert!(slice.column(2).as_primitive::<deltalake::arrow::datatypes::Int64Type>().values().iter().all(|r| *r == 7));
            let created = slice.column(4).as_primitive::<TimestampMicrosecondType>();
            assert!(created.values().iter().all(|t| *t == 1_700_000_000_000_000) && created.null_count() == 0);
            let keys = slice.column(1).as_primitive::<deltalake::arrow::datatypes::Int64Type>();
            assert_eq!(keys.values().to_vec(), (at as i64..(at + len) as i64).collect::<Vec<_>>());
        }

        let mixed = conform_keeping_dictionaries(&incoming, &table)?;
        assert_eq!(mixed.column(0).data_type(), &DataType::Utf8, "constants are spelled out for mixing");
        assert_eq!(mixed.column(2).data_type(), &DataType::Int64);
        let DataType::List(item) = mixed.column(3).data_type() else { panic!("upstreams as {}", mixed.column(3).data_type()) };
        assert!(matches!(item.data_type(), DataType::Dictionary(..)), "lists stay dictionary-encoded");
        Ok(())
    }
}
