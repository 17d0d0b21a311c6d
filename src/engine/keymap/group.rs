//! Grouping change rows into keys: one streaming pass per source, in shards over the cores
//! for large reads, merged in key order.

use deltalake::arrow::array::Array;
use color_eyre::eyre::WrapErr;
use deltalake::arrow::array::AsArray;
use std::collections::HashMap;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::{DataType, Field, Int64Type};
use deltalake::datafusion::prelude::DataFrame;

use super::affected::{AffectedKeys, KeyRun};
use super::project::change_ts_type;
use super::provenance::change_ranks;
use super::table::{BLOCK_BITS, DenseKeyTable, IntKeyTable, KeyEntry, KeyMap, Overflow, RowKeyTable, SortedKeyValues, SortedKeys};

/// Group projected change rows per key. `changes` holds one frame (a union of
/// [`project_source`] frames) per upstream. The rows are streamed into one hash map keyed by
/// the key alone (a plain `i64` for integer keys, arrow's row encoding otherwise): memory grows
/// with distinct keys, not change rows. Profiled: grouping in DataFusion per upstream, then
/// sorting and building the per-key lists in arrow, was most of a run's CPU and its peak memory.
///
/// `cores` is how many cores this grouping may keep busy: the key space is split into that
/// many shards (rounded down to a power of two, at most 4), each folded, and sorted, on a
/// thread of its own.
///
/// `expected_rows`: at least how many change rows the frames hold, where the caller knows (0
/// when not; see [`Expected`]).
pub async fn group_changes(mut changes: Vec<(String, DataFrame)>, key: &[String], cores: usize, expected_rows: usize) -> Result<AffectedKeys> {
    // Folded in lexical order of upstream (see `KeyEntry`).
    changes.sort_by(|a, b| a.0.cmp(&b.0));
    let mut upstreams: Vec<String> = changes.iter().map(|(u, _)| u.clone()).collect();
    upstreams.sort_unstable();
    upstreams.dedup();
    // Every upstream's scan is planned and started at once (planning a CDF scan reads the
    // range's commits); the streams are then folded one after another.
    let streams = futures::future::try_join_all(changes.into_iter().map(|(upstream, frame)| async move {
        let stream = frame
            .execute_stream()
            .await
            .wrap_err_with(|| format!("reading the change rows of upstream `{upstream}` failed"))?;
        Ok::<_, color_eyre::Report>((upstream, stream))
    }))
    .await?;
    let count = Shard::count(cores);
    let expected = Expected { rows_per_shard: expected_rows / count };
    let affected = match count {
        1 => group_here(streams, key, upstreams, expected).await?,
        _ => group_in_shards(streams, key, upstreams, count, expected).await?,
    };
    tracing::info!(rows = affected.change_rows, keys = affected.distinct_keys, "change rows grouped");
    Ok(affected)
}

pub(crate) type ChangeStreams = Vec<(String, deltalake::datafusion::physical_plan::SendableRecordBatchStream)>;

/// Fold every batch on this task as it arrives; sort on a blocking thread (sorting millions of
/// keys is long CPU work: off the async workers, which also drive the timers the console's
/// frames wait on).
pub(crate) async fn group_here(streams: ChangeStreams, key: &[String], upstreams: Vec<String>, expected: Expected) -> Result<AffectedKeys> {
    use futures::StreamExt;
    let mut grouper = Grouper::new(key.len(), Shard { index: 0, count: 1 }, expected);
    for (upstream, mut stream) in streams {
        let index = upstreams.binary_search(&upstream).unwrap_or(0) as u16;
        while let Some(batch) = stream.next().await {
            let batch = batch.wrap_err_with(|| format!("reading the change rows of upstream `{upstream}` failed"))?;
            grouper
                .fold(index, &batch)
                .wrap_err_with(|| format!("grouping the change rows of upstream `{upstream}` by key failed"))?;
        }
    }
    let key = key.to_vec();
    tokio::task::spawn_blocking(move || grouper.finish(&key, upstreams)).await?
}

/// One grouper per shard of the key space, each folding and sorting on a thread of its own:
/// every shard sees every batch and keeps the keys that hash to it. Profiled: a single
/// grouper kept one core busy while the scans left the other mostly idle.
pub(crate) async fn group_in_shards(
    streams: ChangeStreams,
    key: &[String],
    upstreams: Vec<String>,
    count: usize,
    expected: Expected,
) -> Result<AffectedKeys> {
    use futures::StreamExt;
    let mut batches = Vec::with_capacity(count);
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u16, RecordBatch)>(4);
        let (key, upstreams) = (key.to_vec(), upstreams.clone());
        shards.push(tokio::task::spawn_blocking(move || {
            let mut grouper = Grouper::new(key.len(), Shard { index, count }, expected);
            while let Some((upstream, batch)) = rx.blocking_recv() {
                let name = upstreams.get(usize::from(upstream)).map_or("?", String::as_str);
                grouper
                    .fold(upstream, &batch)
                    .wrap_err_with(|| format!("grouping the change rows of upstream `{name}` by key failed"))?;
            }
            grouper.finish(&key, upstreams)
        }));
        batches.push(tx);
    }
    'read: for (upstream, mut stream) in streams {
        let index = upstreams.binary_search(&upstream).unwrap_or(0) as u16;
        while let Some(batch) = stream.next().await {
            let batch = batch.wrap_err_with(|| format!("reading the change rows of upstream `{upstream}` failed"))?;
            for tx in &batches {
                if tx.send((index, batch.clone())).await.is_err() {
                    break 'read; // that shard failed: its error is reported below
                }
            }
        }
    }
    drop(batches);
    let mut parts = Vec::with_capacity(count);
    for shard in shards {
        parts.push(shard.await??);
    }
    merge_shards(parts)
}

/// How large a grouping's run is expected to be: change rows it holds at least (0 when unknown:
/// a CDF scan's plan carries no row count; the engine knows that a run reading an upstream from
/// its first version reads at least its live rows). A direct table may spend up to what a hash
/// table would for that many keys before its keys have filled its blocks (see `DenseKeyTable`).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Expected {
    pub(crate) rows_per_shard: usize,
}

/// One of the parts of the key space that grouping splits a run's keys into, by a few high
/// bits of a hash: of the key's block of 128 for an integer key (a shard's direct table then
/// allocates only its own blocks), of the row-encoded key otherwise (bits the row table's
/// probing does not rely on: they pick neither the home slot nor the slot's tag).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Shard {
    pub(crate) index: usize,
    pub(crate) count: usize,
}

impl Shard {
    /// As many shards as `cores`, rounded down to a power of two, at most 4.
    fn count(cores: usize) -> usize {
        match cores {
            0 | 1 => 1,
            2 | 3 => 2,
            _ => 4,
        }
    }

    /// Whether the key of hash `h` is this shard's (with one shard, every key is).
    fn owns(&self, h: u64) -> bool {
        self.count == 1 || (h >> 40) as usize & (self.count - 1) == self.index
    }

    /// The rows of a batch of `n` this shard folds: those whose key is not NULL and whose
    /// owner hash (`owner(row)`, asked only when there are several shards) is its.
    fn rows(&self, n: usize, owner: impl Fn(usize) -> u64, null: impl Fn(usize) -> bool) -> Vec<u32> {
        (0..n).filter(|&i| !null(i) && self.owns(owner(i))).map(|i| i as u32).collect()
    }
}

/// The shards' grouped keys as one run's: their sorted runs side by side (read merged in key
/// order, see [`AffectedKeys`]), their counts summed.
pub(crate) fn merge_shards(parts: Vec<AffectedKeys>) -> Result<AffectedKeys> {
    let mut parts = parts.into_iter();
    let Some(mut merged) = parts.next() else { return Err(eyre!("grouping produced no shard")) };
    for part in parts {
        merged.change_rows += part.change_rows;
        merged.null_key_rows += part.null_key_rows;
        merged.distinct_keys += part.distinct_keys;
        merged.commit_ts.extend(part.commit_ts);
        merged.runs.extend(part.runs);
    }
    // A shard that saw no key has no key kind of its own: leave it out.
    merged.runs.retain(|r| !r.keys.entries.is_empty());
    let ints = merged.runs.iter().filter(|r| matches!(r.keys.keys, SortedKeyValues::Int(_))).count();
    if ints != 0 && ints != merged.runs.len() {
        return Err(eyre!("grouping shards disagree on the key's type"));
    }
    Ok(merged)
}

/// Fold the rows `mine` of a batch into a direct table: `Err(at)` when the key of row
/// `mine[at]` lies too far from the others (that row and those after it are not folded).
/// `hit(row)`: the row's packed change and commit time.
fn fold_direct(
    table: &mut DenseKeyTable,
    overflow: &mut Overflow,
    values: &[i64],
    mine: &[u32],
    upstream: u16,
    hit: impl Fn(usize) -> (i64, i64),
) -> std::result::Result<(), usize> {
    // One cache miss a row, the entry, started a few rows ahead. (Also prefetching the key's
    // last overflow hit, as the hash table does, read each entry a stage early and measured no
    // faster.)
    const AHEAD: usize = 8;
    for (at, &i) in mine.iter().enumerate() {
        if let Some(&ahead) = mine.get(at + 2 * AHEAD) {
            table.prefetch(values[ahead as usize]);
        }
        let i = i as usize;
        let (packed, ts) = hit(i);
        let mut fresh = false;
        let Some(entry) = table.upsert(values[i], || {
            fresh = true;
            KeyEntry::new(upstream, packed, ts)
        }) else {
            return Err(at);
        };
        if !fresh {
            entry.add(overflow, upstream, packed, ts);
        }
    }
    Ok(())
}

pub(crate) struct Grouper {
    pub(crate) shard: Shard,
    pub(crate) expected: Expected,
    pub(crate) nkeys: usize,
    pub(crate) key_fields: Option<Vec<Field>>,
    pub(crate) keys: Option<KeyMap>,
    pub(crate) overflow: Overflow,
    pub(crate) change_rows: u64,
    pub(crate) null_key_rows: u64,
    pub(crate) commit_ts: HashMap<(u16, i64), i64>,
}

/// A single integer key of a type that converts to i64 without loss.
pub(crate) fn is_small_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32
    )
}

pub(crate) fn plain_strings(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    }
}

impl Grouper {
    fn new(nkeys: usize, shard: Shard, expected: Expected) -> Self {
        Grouper {
            shard,
            expected,
            nkeys,
            key_fields: None,
            keys: None,
            overflow: Overflow::default(),
            change_rows: 0,
            null_key_rows: 0,
            commit_ts: HashMap::new(),
        }
    }

    /// Fix the key types on the first batch; later batches (another source may type the key
    /// differently, e.g. a `sql` source) are cast to them.
    fn init(&mut self, batch: &RecordBatch) -> Result<()> {
        use deltalake::arrow::row::{RowConverter, SortField};
        let fields: Vec<Field> = batch.schema().fields()[..self.nkeys]
            .iter()
            .map(|f| Field::new(f.name(), plain_strings(f.data_type()), true))
            .collect();
        self.keys = Some(if self.nkeys == 1 && is_small_int(fields[0].data_type()) {
            KeyMap::Direct(DenseKeyTable::expecting(self.expected.rows_per_shard))
        } else {
            let sort = fields.iter().map(|f| SortField::new(f.data_type().clone())).collect();
            KeyMap::Rows(RowConverter::new(sort)?, RowKeyTable::default())
        });
        self.key_fields = Some(fields);
        Ok(())
    }

    /// Fold one batch of projected change rows (key columns, change type, version, timestamp).
    fn fold(&mut self, upstream: u16, batch: &RecordBatch) -> Result<()> {
        use deltalake::arrow::compute::cast;
        use deltalake::arrow::datatypes::TimestampMicrosecondType;
        if batch.num_rows() == 0 {
            return Ok(());
        }
        if self.keys.is_none() {
            self.init(batch)?;
        }
        let nkeys = self.nkeys;
        let fields = self.key_fields.as_ref().map(Vec::as_slice).unwrap_or_default();
        let key_columns = batch.columns()[..nkeys]
            .iter()
            .zip(fields)
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ranks = change_ranks(batch.column(nkeys))?;
        let version = cast(batch.column(nkeys + 1), &DataType::Int64)?;
        let version = version.as_primitive::<Int64Type>();
        let ts = cast(batch.column(nkeys + 2), &change_ts_type())?;
        let ts = ts.as_primitive::<TimestampMicrosecondType>();
        let packed = |i: usize| if version.is_null(i) { 0 } else { version.value(i) * 8 } + i64::from(ranks[i]);
        let ts_at = |i: usize| if ts.is_null(i) { i64::MIN } else { ts.value(i) };
        let null_key = |i: usize| key_columns.iter().any(|c| c.is_null(i));

        let n = batch.num_rows();
        // Every shard sees every row; the first counts them (and the NULL keys).
        if self.shard.index == 0 {
            self.change_rows += n as u64;
            self.null_key_rows += (0..n).filter(|&i| null_key(i)).count() as u64;
        }
        let shard = self.shard;
        // One commit time per (upstream, version): rows of a version come together, so a
        // compare per row and an insert per version.
        let mut seen: Option<i64> = None;
        for i in (0..n).filter(|&i| !version.is_null(i) && !ts.is_null(i)) {
            if seen != Some(version.value(i)) {
                seen = Some(version.value(i));
                self.commit_ts.entry((upstream, version.value(i))).or_insert(ts.value(i));
            }
        }
        let overflow = &mut self.overflow;
        match self.keys.as_mut() {
            Some(KeyMap::Direct(_) | KeyMap::Int(_)) => {
                let k = cast(&key_columns[0], &DataType::Int64)?;
                let k = k.as_primitive::<Int64Type>();
                let values = k.values();
                // Shards own integer keys by block (see `DenseKeyTable`), so that each shard's
                // direct table allocates only the blocks it fills, whichever table it ends with.
                let mine = shard.rows(n, |i| IntKeyTable::hash(values[i] >> BLOCK_BITS), |i| k.is_null(i));
                let mut from = 0;
                if let Some(KeyMap::Direct(table)) = self.keys.as_mut() {
                    match fold_direct(table, overflow, values, &mine, upstream, |i| (packed(i), ts_at(i))) {
                        Ok(()) => return Ok(()),
                        Err(at) => from = at,
                    }
                    // Keys too spread out to address directly: the rest of the run is hashed.
                    if let Some(KeyMap::Direct(table)) = self.keys.take() {
                        tracing::debug!(shard = shard.index, keys = table.len(), "keys too spread out to address directly: hashing them");
                        self.keys = Some(KeyMap::Int(table.into_hashed()?));
                    }
                }
                let Some(KeyMap::Int(table)) = self.keys.as_mut() else { return Ok(()) };
                let mine = &mine[from..];
                // Each key hashed once; a shard walks only its own rows (prefetching for the
                // others' keys spent memory bandwidth on lines it never used).
                let hashes: Vec<u64> = values.iter().map(|v| IntKeyTable::hash(*v)).collect();
                // Each lookup chases two cache misses: slot, then entry (a row never reads the
                // overflow arena, see `KeyEntry`). Each is started a stage ahead of the next,
                // once the one it depends on has landed.
                const AHEAD: usize = 8;
                for (at, &i) in mine.iter().enumerate() {
                    if let Some(&ahead) = mine.get(at + 2 * AHEAD) {
                        table.prefetch_slot(hashes[ahead as usize]);
                    }
                    if let Some(&ahead) = mine.get(at + AHEAD) {
                        table.prefetch_entry(hashes[ahead as usize]);
                    }
                    let i = i as usize;
                    let mut fresh = false;
                    let entry = table.upsert(values[i], hashes[i], || {
                        fresh = true;
                        KeyEntry::new(upstream, packed(i), ts_at(i))
                    })?;
                    if !fresh {
                        entry.add(overflow, upstream, packed(i), ts_at(i));
                    }
                }
            }
            Some(KeyMap::Rows(converter, table)) => {
                let rows = converter.convert_columns(&key_columns)?;
                let hashes: Vec<u64> = (0..n).map(|i| RowKeyTable::hash(rows.row(i).as_ref())).collect();
                let mine = shard.rows(n, |i| hashes[i], null_key);
                // As for integer keys: slot, then key and entry, each started a stage ahead of
                // the one that needs it.
                const AHEAD: usize = 8;
                for (at, &i) in mine.iter().enumerate() {
                    if let Some(&ahead) = mine.get(at + 2 * AHEAD) {
                        table.prefetch_slot(hashes[ahead as usize]);
                    }
                    if let Some(&ahead) = mine.get(at + AHEAD) {
                        table.prefetch_key(hashes[ahead as usize]);
                    }
                    let i = i as usize;
                    let row = rows.row(i);
                    let h = hashes[i];
                    let mut fresh = false;
                    let entry = table.upsert(row.as_ref(), h, || {
                        fresh = true;
                        KeyEntry::new(upstream, packed(i), ts_at(i))
                    })?;
                    if !fresh {
                        entry.add(overflow, upstream, packed(i), ts_at(i));
                    }
                }
            }
            None => {}
        }
        Ok(())
    }

    fn finish(self, key: &[String], upstreams: Vec<String>) -> Result<AffectedKeys> {
        let keys = match self.keys {
            None => SortedKeys::default(),
            Some(KeyMap::Direct(table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Int(keys), entries }
            }
            Some(KeyMap::Int(table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Int(keys), entries }
            }
            Some(KeyMap::Rows(converter, table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Rows(converter, keys), entries }
            }
        };
        let distinct_keys = keys.entries.len() as u64;
        let runs = vec![KeyRun { keys, overflow: self.overflow }];
        // Without any row the key types are unknown; nothing is written then.
        let key_fields = self.key_fields.unwrap_or_else(|| key.iter().map(|k| Field::new(k, DataType::Int64, true)).collect());
        Ok(AffectedKeys {
            key: key.to_vec(),
            change_rows: self.change_rows,
            null_key_rows: self.null_key_rows,
            distinct_keys,
            upstreams,
            key_fields,
            runs,
            commit_ts: self.commit_ts,
        })
    }
}
