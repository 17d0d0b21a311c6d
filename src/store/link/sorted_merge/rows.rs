//! Link rows in memory: reading a file's live rows, conforming them to the table's types, and
//! merge-joining them with a run's sorted keys.

use deltalake::logstore::object_store::ObjectStoreExt;
use color_eyre::eyre::WrapErr;
use deltalake::arrow::array::AsArray;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::{Array, ArrayRef, RecordBatch, StringArray, UInt32Array, new_null_array};
use deltalake::arrow::compute::{cast, concat_batches, filter_record_batch, take_record_batch};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::{ObjectStore, Path};

use crate::store::link::columns::{CREATED_COL, LAST_CHANGE_COL, PIPELINE_COL, PROVENANCE_COL, RUN_ID_COL, UPDATED_COL, UPSTREAMS_COL};

use super::layout::TargetFile;

/// Columns a MERGE overwrites on a touched key; the others (pipeline, key, created_at) stay.
pub(crate) const UPDATED: [&str; 5] = [RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL, UPDATED_COL];

/// Rows `rows` (sorted row indices of a data file), cast to `schema`.
pub(crate) async fn read_rows(
    bytes: impl deltalake::parquet::file::reader::ChunkReader + Clone + 'static,
    schema: &SchemaRef,
    rows: &[u32],
) -> Result<RecordBatch> {
    let (schema, rows) = (schema.clone(), rows.to_vec());
    tokio::task::spawn_blocking(move || {
        let metadata = dictionary_list_metadata(&bytes)?;
        let mut parts = Vec::new();
        for (group, selection) in row_group_selections(metadata.metadata(), &rows) {
            // A batch of selected rows decodes every row up to its last one: at the few percent
            // of a file a run touches, 64k selected rows would decode most of the file at once.
            // One row group at a time: a batch spanning two has two dictionaries, and the
            // reader then spells its strings out and hashes them into a new one (profiled: a
            // twentieth of an incremental run).
            let reader = ParquetRecordBatchReaderBuilder::new_with_metadata(bytes.clone(), metadata.clone())
                .with_row_groups(vec![group])
                .with_row_selection(selection)
                .with_batch_size(4 * 1024)
                .build()?;
            for batch in reader {
                parts.push(conform_keeping_dictionaries(&batch?, &schema)?);
            }
        }
        let Some(first) = parts.first() else { return Ok(RecordBatch::new_empty(schema)) };
        Ok::<_, color_eyre::Report>(concat_batches(&first.schema(), &parts)?)
    })
    .await?
    .wrap_err("cannot decode a link-table file's touched rows")
}

/// Per row group holding some of `rows` (sorted indices into the file), that group and the
/// selection of those rows within it.
fn row_group_selections(
    metadata: &deltalake::parquet::file::metadata::ParquetMetaData,
    rows: &[u32],
) -> Vec<(usize, deltalake::parquet::arrow::arrow_reader::RowSelection)> {
    use deltalake::parquet::arrow::arrow_reader::RowSelection;
    let mut out = Vec::new();
    let (mut start, mut at) = (0usize, 0usize);
    for (group, meta) in metadata.row_groups().iter().enumerate() {
        let end = start + meta.num_rows().max(0) as usize;
        let first = at;
        while at < rows.len() && (rows[at] as usize) < end {
            at += 1;
        }
        if at > first {
            let mut mask = vec![false; end - start];
            for &r in &rows[first..at] {
                mask[r as usize - start] = true;
            }
            out.push((group, RowSelection::from_filters(&[mask.into()])));
        }
        start = end;
    }
    out
}

/// A reader of a link file whose lists of strings (the upstreams and provenance) decode as
/// lists of dictionary-encoded strings where the file stores them so: a touched row's
/// provenance is then a few indices into the row group's dictionary instead of its strings
/// (they go out again as change data's pre-images only, spelled out a slice at a time). A
/// file whose schema takes no such hint is read as it is.
fn dictionary_list_metadata<R>(bytes: &R) -> Result<deltalake::parquet::arrow::arrow_reader::ArrowReaderMetadata>
where
    R: deltalake::parquet::file::reader::ChunkReader + 'static,
{
    use deltalake::parquet::arrow::arrow_reader::{ArrowReaderMetadata, ArrowReaderOptions};
    let plain = ArrowReaderMetadata::load(bytes, ArrowReaderOptions::new())?;
    let fields: Vec<Field> = plain.schema().fields().iter().map(|f| f.as_ref().clone().with_data_type(dictionary_list(f.data_type()))).collect();
    let hinted = Arc::new(Schema::new_with_metadata(fields, plain.schema().metadata().clone()));
    Ok(match ArrowReaderMetadata::try_new(plain.metadata().clone(), ArrowReaderOptions::new().with_schema(hinted)) {
        Ok(hinted) => hinted,
        Err(_) => plain,
    })
}

/// `List<Utf8>` as `List<Dictionary<Int32, Utf8>>` (the item field kept); other types as they are.
pub(crate) fn dictionary_list(t: &DataType) -> DataType {
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
pub(crate) struct Picks {
    pub(crate) keep: Vec<(usize, usize)>,
    pub(crate) update: Vec<(usize, usize)>,
    pub(crate) post: Vec<((usize, usize), (usize, usize))>,
}

/// Merge the files' rows (each put in key order if it is not) with the new keys, by key.
pub(crate) fn merge_by_key(
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

/// `incoming` in key order as the link table's key types sort, which is what pruning, grouping
/// and the merge-join rely on. The run's keys arrive sorted in the types they were grouped in;
/// cast to the table's types (a `sql` source may return another type) the order can change, or
/// two keys can become one: the latter is refused, since a MERGE cannot apply both.
pub(crate) fn sorted_and_unique(incoming: RecordBatch, key_index: &[usize]) -> Result<RecordBatch> {
    if let [single] = key_index {
        if ascends_strictly(incoming.column(*single)) == Some(true) {
            return Ok(incoming);
        }
    }
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
            columns.iter().map(|c| crate::util::arrow::display_value(c.as_ref(), w[0] as usize)).collect();
        return Err(eyre!(
            "two of the run's keys become the same key ({}) in the link table's key types\n  fix: make every source return the key in the link table's types (cast it in the `sql`)",
            shown.join(", ")
        ));
    }
    Ok(take_record_batch(&incoming, &UInt32Array::from(order))?)
}

/// Whether a key column without NULLs ascends strictly, compared as values (as the row
/// format orders them: integers by value, strings by bytes); `None` for other columns. A run's
/// keys come so: row-encoding 3M of them only to compare them took ~0.07 s on one core.
fn ascends_strictly(column: &ArrayRef) -> Option<bool> {
    use deltalake::arrow::datatypes::{Int32Type, Int64Type};
    fn strictly<T: PartialOrd>(v: &[T]) -> bool {
        v.windows(2).all(|w| w[0] < w[1])
    }
    if column.null_count() > 0 {
        return None;
    }
    match column.data_type() {
        DataType::Int64 => Some(strictly(column.as_primitive::<Int64Type>().values())),
        DataType::Int32 => Some(strictly(column.as_primitive::<Int32Type>().values())),
        DataType::Utf8 => {
            let s = column.as_string::<i32>();
            Some((1..s.len()).all(|i| s.value(i - 1) < s.value(i)))
        }
        _ => None,
    }
}

/// A data file's rows that its deletion vector (if any) does not delete, cast to `schema`.
pub(crate) async fn read_live_rows(store: &Arc<dyn ObjectStore>, file: &TargetFile, schema: &SchemaRef) -> Result<RecordBatch> {
    let batch = read_file(store.clone(), &file.path, schema).await?;
    if file.deletion_vector().is_none() {
        return Ok(batch);
    }
    let deleted = file.deleted_rows(store).await?;
    let live: deltalake::arrow::array::BooleanArray = (0..batch.num_rows() as u64).map(|i| Some(!deleted.contains(i))).collect();
    Ok(filter_record_batch(&batch, &live)?)
}

/// Read one data file whole, its columns cast to the link rows' schema by name.
pub(crate) async fn read_file(store: Arc<dyn ObjectStore>, path: &Path, schema: &SchemaRef) -> Result<RecordBatch> {
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
pub(crate) async fn fetch(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<impl deltalake::parquet::file::reader::ChunkReader + Clone + 'static> {
    Ok(store.get(path).await.wrap_err_with(|| format!("cannot read link-table file {path}"))?.bytes().await?)
}

/// `batch` with the columns of `schema`, found by name and cast (list field names, string
/// encodings); a column the file lacks is all NULL. Link rows of a run carry their upstream
/// and provenance lists dictionary-encoded (see `AffectedKeys::per_key`): this spells them
/// out, a writer's slice or a file group's keys at a time.
pub(crate) fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
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
/// stays so (each field typed as its column is). Constant columns are spelled out: the rows
/// they are kept for mix with a file's.
pub(crate) fn conform_keeping_dictionaries(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let list = |t: &DataType| matches!(t, DataType::List(_));
    let columns = schema
        .fields()
        .iter()
        .map(|f| match batch.column_by_name(f.name()) {
            Some(c) if c.data_type() == f.data_type() || (list(f.data_type()) && spelled_out(c.data_type()) == *f.data_type()) => Ok(c.clone()),
            Some(c) => Ok(cast(c, f.data_type())?),
            None => Ok(new_null_array(f.data_type(), batch.num_rows())),
        })
        .collect::<Result<Vec<_>>>()?;
    with_own_types(schema, columns)
}

/// A list of dictionary-encoded values as the list of those values, converting only the
/// elements of the rows at hand (a cast would convert every element under a sliced list); a
/// dictionary-encoded constant column as its values.
pub(crate) fn spell_out(column: &ArrayRef) -> Result<ArrayRef> {
    use deltalake::arrow::array::ListArray;
    use deltalake::arrow::buffer::{OffsetBuffer, ScalarBuffer};
    if let DataType::Dictionary(_, values) = column.data_type() {
        return Ok(cast(column, values)?);
    }
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
pub(crate) fn assemble(
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
pub(crate) fn with_own_types(schema: &SchemaRef, columns: Vec<ArrayRef>) -> Result<RecordBatch> {
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
pub(crate) fn gather_string_lists(columns: &[&dyn Array], picks: &[(usize, usize)]) -> Result<Option<ArrayRef>> {
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
pub(crate) fn stretches(picks: &[(usize, usize)]) -> Vec<(usize, usize, usize)> {
    let mut out: Vec<(usize, usize, usize)> = Vec::new();
    for &(source, row) in picks {
        match out.last_mut() {
            Some((s, start, len)) if *s == source && *start + *len == row => *len += 1,
            _ => out.push((source, row, 1)),
        }
    }
    out
}

pub(crate) fn copy_stretches(columns: &[&dyn Array], stretches: &[(usize, usize, usize)], rows: usize) -> Result<ArrayRef> {
    use deltalake::arrow::array::{make_array, MutableArrayData};
    let data: Vec<_> = columns.iter().map(|c| c.to_data()).collect();
    let mut out = MutableArrayData::new(data.iter().collect(), true, rows);
    for &(source, start, len) in stretches {
        out.try_extend(source, start, start + len)?;
    }
    Ok(make_array(out.freeze()))
}

/// Link rows for the incoming keys, as the table stores them.
pub(crate) fn incoming_rows(
    table_schema: &SchemaRef,
    pipeline: &str,
    run_id: i64,
    now_us: i64,
    per_key: &RecordBatch,
) -> Result<RecordBatch> {
    use deltalake::arrow::array::{Int8Array, Int64Array, TimestampMicrosecondArray};
    use deltalake::arrow::buffer::ScalarBuffer;
    use deltalake::arrow::datatypes::Int8Type;
    let n = per_key.num_rows();
    let mut fields = Vec::new();
    // The run's constant columns as dictionaries of their one value, all over one buffer of
    // zero keys (never written to: its pages stay unmapped), spelled out a writer's slice at a
    // time like the lists (see `conform`). Built at full length, the four took ~70 MB of fresh
    // pages for 3M keys, faulted in while one core built them (profiled: ~0.03 s of a
    // from-scratch run on the heavy-churn lake).
    let zeros = Int8Array::new(ScalarBuffer::from(vec![0i8; n]), None);
    let constant = |value: ArrayRef| -> Result<ArrayRef> { Ok(Arc::new(crate::util::arrow::dictionary_of::<Int8Type>(zeros.clone(), value)?)) };
    let columns = table_schema
        .fields()
        .iter()
        .map(|f| {
            let column: ArrayRef = match f.name().as_str() {
                PIPELINE_COL => constant(Arc::new(StringArray::from(vec![pipeline])))?,
                RUN_ID_COL => constant(Arc::new(Int64Array::from(vec![run_id])))?,
                CREATED_COL | UPDATED_COL => constant(Arc::new(TimestampMicrosecondArray::from(vec![now_us]).with_timezone("UTC")))?,
                name => match per_key.column_by_name(name) {
                    Some(c) => c.clone(),
                    None => new_null_array(f.data_type(), n),
                },
            };
            // Dictionary-encoded lists and constants stay so until written (see `conform`).
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

/// `t` with dictionary-encoded values as those values: a list's (the field kept), or a
/// constant column's (see [`incoming_rows`]).
pub(crate) fn spelled_out(t: &DataType) -> DataType {
    match t {
        DataType::List(item) => match item.data_type() {
            DataType::Dictionary(_, values) => DataType::List(Arc::new(item.as_ref().clone().with_data_type(values.as_ref().clone()))),
            _ => t.clone(),
        },
        DataType::Dictionary(_, values) => values.as_ref().clone(),
        _ => t.clone(),
    }
}
