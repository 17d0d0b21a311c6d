//! One merge job: a group of key ranges and the keys that fall in them, rewritten or marked.

use futures::TryStreamExt;
use color_eyre::eyre::WrapErr;
use futures::StreamExt;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray, UInt32Array};
use deltalake::arrow::compute::take_record_batch;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::arrow::row::{RowConverter, SortField};
use deltalake::kernel::Add;
use deltalake::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use deltalake::{DeltaTable, ObjectStore, Path};
use roaring::RoaringTreemap;

use crate::store::link::deletion_vector;
use crate::util::hash::FastHash;

use super::files::{ChangeImages, RowsOut, Uncommitted, delete_files, rows_per_file, write_change_data, write_data};
use super::layout::{Group, Marked, Rewrite, TargetFile, first_int_keys, int_values, loose_bounds, marking_pays};
use super::rows::{Picks, assemble, conform, conform_keeping_dictionaries, fetch, merge_by_key, read_live_rows, read_rows};

pub(crate) struct Job {
    pub(crate) table: DeltaTable,
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) schema: SchemaRef,
    pub(crate) key_index: Vec<usize>,
    pub(crate) target_file_size: u64,
    /// The table takes deletion vectors (see [`Job::mark_and_overlay`]).
    pub(crate) deletion_vectors: bool,
    pub(crate) written: Arc<Uncommitted>,
    /// Parts a lone sorted file's rewrite is split into (by row groups), at most.
    pub(crate) parts: usize,
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
    pub(crate) async fn rewrite_group(self: Arc<Self>, group: Group, incoming: RecordBatch) -> Result<Rewrite> {
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
            crate::util::task::spawn_owned(async move { job.rewrite_row_groups(builder, &incoming, per_file).await })
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
            let Some(pairs) = self.join_keys(bytes.clone(), incoming_keys.clone()).await? else { return Ok(None) };
            let mut rows: Vec<u32> = Vec::new();
            for (i, j) in pairs.into_iter().filter(|(i, _)| !deleted.contains(u64::from(*i))) {
                matched[j as usize] = Some((touched.len(), rows.len()));
                rows.push(i);
            }
            if rows.is_empty() {
                continue;
            }
            let pre = read_rows(bytes, schema, &rows).await?;
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

    /// The (file row, incoming row) pairs of the keys a sorted link file shares with `incoming`:
    /// its key columns read and joined a batch at a time (read whole they were megabytes per
    /// file in flight). `None` when the file is not sorted by key.
    async fn join_keys<R>(self: &Arc<Self>, bytes: R, incoming: Arc<SortedKeys>) -> Result<Option<Vec<(u32, u32)>>>
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
            Ok::<_, color_eyre::Report>(Some(pairs))
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
pub(crate) enum SortedKeys {
    Int(deltalake::arrow::buffer::ScalarBuffer<i64>),
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
