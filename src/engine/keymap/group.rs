//! Grouping change rows into keys: one streaming pass per source, in shards over the cores
//! for large reads, merged in key order.

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr, eyre};
use deltalake::arrow::array::{Array, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch};
use deltalake::arrow::buffer::ScalarBuffer;
use deltalake::arrow::row::{RowConverter, Rows};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type};
use deltalake::datafusion::error::DataFusionError;
use deltalake::datafusion::physical_plan::SendableRecordBatchStream;
use deltalake::datafusion::prelude::DataFrame;

use super::affected::{AffectedKeys, KeyRun};
use super::project::change_ts_type;
use super::provenance::change_ranks;
use super::table::{BLOCK_BITS, DenseKeyTable, IntKeyTable, IntKeys, KeyEntry, KeyMap, Overflow, RowKeyTable, SortedEntries, SortedKeyValues, SortedKeys};

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
    // Every upstream's scan is planned and started at once, each on a task of its own (planning
    // a CDF scan reads the range's commits, 15-25 ms for 60 of them); the streams are folded one
    // after another, the first as soon as it is planned (measured: waiting for every plan held
    // the first fold back by up to 10 ms).
    let streams = changes
        .into_iter()
        .map(|(upstream, frame)| (upstream, crate::util::task::spawn_owned(frame.execute_stream())))
        .collect();
    let count = Shard::count(cores);
    let expected = Expected { rows_per_shard: expected_rows / count };
    let affected = match count {
        1 => group_here(streams, key, upstreams, expected).await?,
        _ => group_in_shards(streams, key, upstreams, count, expected).await?,
    };
    tracing::info!(rows = affected.change_rows, keys = affected.distinct_keys, "change rows grouped");
    Ok(affected)
}

/// The task that plans and starts one upstream's scan.
type Planned = crate::util::task::Owned<Result<SendableRecordBatchStream, DataFusionError>>;

/// Per upstream, in fold order, the task that plans and starts its scan.
pub(crate) type ChangeStreams = Vec<(String, Planned)>;

/// The stream of `upstream` once its task has planned it.
async fn started(upstream: &str, planned: Planned) -> Result<SendableRecordBatchStream> {
    let reading = || format!("reading the change rows of upstream `{upstream}` failed");
    planned.await.wrap_err_with(reading)?.wrap_err_with(reading)
}

/// Prepare and fold every batch on this task as it arrives; sort on a blocking thread (sorting
/// millions of keys is long CPU work: off the async workers, which also drive the timers the
/// console's frames wait on).
pub(crate) async fn group_here(streams: ChangeStreams, key: &[String], upstreams: Vec<String>, expected: Expected) -> Result<AffectedKeys> {
    use futures::StreamExt;
    let mut preparer = Preparer::new(key, 1);
    let mut grouper = Grouper::new(Shard { index: 0 }, expected);
    for (upstream, planned) in streams {
        let mut stream = started(&upstream, planned).await?;
        let index = upstreams.binary_search(&upstream).unwrap_or(0) as u16;
        while let Some(batch) = stream.next().await {
            let batch = batch.wrap_err_with(|| format!("reading the change rows of upstream `{upstream}` failed"))?;
            let grouping = || format!("grouping the change rows of upstream `{upstream}` by key failed");
            if let Some(prepared) = preparer.prepare(index, &batch).wrap_err_with(grouping)? {
                grouper.fold(&prepared).wrap_err_with(grouping)?;
            }
        }
    }
    tokio::task::spawn_blocking(move || preparer.finish(upstreams, vec![grouper.finish()])).await?
}

/// One grouper per shard of the key space, each folding and sorting on a thread of its own.
/// Each batch is prepared once, here, for every shard (profiled: with each shard casting,
/// ranking and hashing every row of every batch and keeping its own, that work was an eighth
/// of a from-scratch run's CPU, the two shards together). Profiled before: a single grouper
/// kept one core busy while the scans left the other mostly idle.
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
        // Batches are sent to every shard in turn: with room for only a few, a shard whose
        // batches happened to hold more of its keys filled its queue and held the sending back,
        // and the other shard ran dry (profiled: the read phase kept 1.75 of 2 cores busy).
        // Thirty-two prepared batches (8k rows, ~10 bytes a row, see `PerRow`) even that out:
        // a from-scratch run of the heavy-churn lake 0.90-0.97 s -> 0.84-0.86 s, memory unchanged.
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Arc<Prepared>>(32);
        let upstreams = upstreams.clone();
        shards.push(tokio::task::spawn_blocking(move || {
            let mut grouper = Grouper::new(Shard { index }, expected);
            while let Some(batch) = rx.blocking_recv() {
                let name = upstreams.get(usize::from(batch.upstream)).map_or("?", String::as_str);
                grouper
                    .fold(&batch)
                    .wrap_err_with(|| format!("grouping the change rows of upstream `{name}` by key failed"))?;
            }
            Ok::<_, color_eyre::Report>(grouper.finish())
        }));
        batches.push(tx);
    }
    let mut preparer = Preparer::new(key, count);
    'read: for (upstream, planned) in streams {
        let mut stream = started(&upstream, planned).await?;
        let index = upstreams.binary_search(&upstream).unwrap_or(0) as u16;
        while let Some(batch) = stream.next().await {
            let batch = batch.wrap_err_with(|| format!("reading the change rows of upstream `{upstream}` failed"))?;
            let Some(prepared) = preparer
                .prepare(index, &batch)
                .wrap_err_with(|| format!("grouping the change rows of upstream `{upstream}` by key failed"))?
            else {
                continue;
            };
            let prepared = Arc::new(prepared);
            for tx in &batches {
                if tx.send(prepared.clone()).await.is_err() {
                    break 'read; // that shard failed: its error is reported below
                }
            }
        }
    }
    drop(batches);
    let mut runs = Vec::with_capacity(count);
    for shard in shards {
        runs.push(shard.await??);
    }
    preparer.finish(upstreams, runs)
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

    /// The shard of `count` that owns the key of hash `h`.
    fn owner(h: u64, count: usize) -> usize {
        (h >> 40) as usize & (count - 1)
    }
}

/// The owner of no row: its key is NULL.
const NO_OWNER: u8 = u8::MAX;

/// Each row's shard of `count` by `owner(row)` (not asked with one shard: an integer key's
/// owner costs a hash the fold does not use), [`NO_OWNER`] for a NULL key; and how many rows
/// have a NULL key.
fn owners(n: usize, count: usize, owner: impl Fn(usize) -> usize, null: impl Fn(usize) -> bool) -> (Vec<u8>, u64) {
    let owners: Vec<u8> = (0..n).map(|i| if null(i) { NO_OWNER } else if count == 1 { 0 } else { owner(i) as u8 }).collect();
    let nulls = owners.iter().filter(|&&o| o == NO_OWNER).count() as u64;
    (owners, nulls)
}

/// The rows that `shard` owns, in order. Written without a branch on the owner (a filter
/// mispredicted it about every other row with two shards: profiled, ~7 % of a from-scratch
/// run's CPU).
fn rows_of(owners: &[u8], shard: usize) -> Vec<u32> {
    let shard = shard as u8;
    let mut rows = vec![0u32; owners.len()];
    let mut len = 0;
    for (i, &owner) in owners.iter().enumerate() {
        rows[len] = i as u32;
        len += usize::from(owner == shard);
    }
    rows.truncate(len);
    rows
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

/// A batch of projected change rows as the shards fold it, prepared once for all of them. The
/// columns are the batch's own (cast only where their type differs): what is added per row is
/// two bytes, a rank and an owner.
pub(crate) struct Prepared {
    pub(crate) upstream: u16,
    pub(crate) keys: PreparedKeys,
    /// Per row: the rank of its change type (see [`change_ranks`]).
    pub(crate) ranks: Vec<u8>,
    pub(crate) version: PerRow,
    /// Commit times (µs).
    pub(crate) ts: PerRow,
    /// Per row: the shard that folds it (see [`owners`]).
    pub(crate) owners: Vec<u8>,
}

impl Prepared {
    /// Row `i`'s version and change type packed (see [`KeyEntry`]).
    fn packed(&self, i: usize) -> i64 {
        self.version.get(i).unwrap_or(0) * 8 + i64::from(self.ranks[i])
    }

    /// Row `i`'s commit time (µs), `i64::MIN` when none is known.
    fn ts(&self, i: usize) -> i64 {
        self.ts.get(i).unwrap_or(i64::MIN)
    }
}

/// A column of a prepared batch that is often one value throughout: a change-data file's rows
/// share their commit's version and time. Kept as that value, a batch in flight to the shards
/// holds two bytes a row instead of eighteen, and folding a row reads no array for them.
pub(crate) enum PerRow {
    Same(Option<i64>),
    Values(PrimitiveArray<Int64Type>),
}

impl PerRow {
    /// `values` (of any i64-backed type) as one value where it is one throughout.
    fn of<T: ArrowPrimitiveType<Native = i64>>(values: &PrimitiveArray<T>) -> PerRow {
        let n = values.len();
        if values.null_count() == n {
            return PerRow::Same(None);
        }
        let first = values.values()[0];
        if values.null_count() == 0 && values.values().iter().all(|v| *v == first) {
            return PerRow::Same(Some(first));
        }
        PerRow::Values(values.reinterpret_cast::<Int64Type>())
    }

    fn get(&self, i: usize) -> Option<i64> {
        match self {
            PerRow::Same(v) => *v,
            PerRow::Values(a) => a.is_valid(i).then(|| a.value(i)),
        }
    }

    /// The runs of equal values in row order, as (first row, value).
    fn runs(&self, n: usize) -> Vec<(usize, Option<i64>)> {
        match self {
            PerRow::Same(v) => vec![(0, *v)],
            PerRow::Values(_) => {
                let mut runs: Vec<(usize, Option<i64>)> = Vec::new();
                for i in 0..n {
                    let v = self.get(i);
                    if runs.last().is_none_or(|(_, last)| *last != v) {
                        runs.push((i, v));
                    }
                }
                runs
            }
        }
    }
}

pub(crate) enum PreparedKeys {
    /// A single integer key, as `i64` (NULL rows are owned by no shard).
    Int(ScalarBuffer<i64>),
    /// Keys row-encoded by the run's one converter, with their hashes.
    Rows { converter: Arc<RowConverter>, rows: Rows, hashes: Vec<u64> },
}

/// Turns a run's batches of change rows into [`Prepared`] ones, and counts what every shard
/// would otherwise count again: rows, NULL keys, commit times.
pub(crate) struct Preparer {
    key: Vec<String>,
    shards: usize,
    /// The key's types, fixed by the first batch; later batches (another source may type the
    /// key differently, e.g. a `sql` source) are cast to them.
    key_fields: Option<Vec<Field>>,
    /// The row encoding of keys that are not a single integer.
    converter: Option<Arc<RowConverter>>,
    change_rows: u64,
    null_key_rows: u64,
    commit_ts: HashMap<(u16, i64), i64>,
}

impl Preparer {
    fn new(key: &[String], shards: usize) -> Self {
        Preparer {
            key: key.to_vec(),
            shards,
            key_fields: None,
            converter: None,
            change_rows: 0,
            null_key_rows: 0,
            commit_ts: HashMap::new(),
        }
    }

    fn init(&mut self, batch: &RecordBatch) -> Result<()> {
        use deltalake::arrow::row::SortField;
        let nkeys = self.key.len();
        let fields: Vec<Field> = batch.schema().fields()[..nkeys]
            .iter()
            .map(|f| Field::new(f.name(), plain_strings(f.data_type()), true))
            .collect();
        if nkeys != 1 || !is_small_int(fields[0].data_type()) {
            let sort = fields.iter().map(|f| SortField::new(f.data_type().clone())).collect();
            self.converter = Some(Arc::new(RowConverter::new(sort)?));
        }
        self.key_fields = Some(fields);
        Ok(())
    }

    /// One batch of projected change rows (key columns, change type, version, timestamp) as
    /// the shards fold it; `None` when it has no row.
    fn prepare(&mut self, upstream: u16, batch: &RecordBatch) -> Result<Option<Prepared>> {
        use deltalake::arrow::compute::cast;
        use deltalake::arrow::datatypes::TimestampMicrosecondType;
        let n = batch.num_rows();
        if n == 0 {
            return Ok(None);
        }
        if self.key_fields.is_none() {
            self.init(batch)?;
        }
        let fields = self.key_fields.as_deref().unwrap_or_default();
        let nkeys = fields.len();
        let key_columns = batch.columns()[..nkeys]
            .iter()
            .zip(fields)
            .map(|(c, f)| if c.data_type() == f.data_type() { Ok(c.clone()) } else { cast(c, f.data_type()) })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        let ranks = change_ranks(batch.column(nkeys))?;
        let version = PerRow::of(cast(batch.column(nkeys + 1), &DataType::Int64)?.as_primitive::<Int64Type>());
        let ts = PerRow::of(cast(batch.column(nkeys + 2), &change_ts_type())?.as_primitive::<TimestampMicrosecondType>());
        self.note_commit_times(upstream, n, &version, &ts);
        let count = self.shards;
        let (keys, (owners, nulls)) = match &self.converter {
            None => {
                let k = cast(&key_columns[0], &DataType::Int64)?;
                let k = k.as_primitive::<Int64Type>();
                let values = k.values();
                // Shards own integer keys by block (see `DenseKeyTable`), so that each shard's
                // direct table allocates only the blocks it fills, whichever table it ends with.
                let owners = owners(n, count, |i| Shard::owner(IntKeyTable::hash(values[i] >> BLOCK_BITS), count), |i| k.is_null(i));
                (PreparedKeys::Int(values.clone()), owners)
            }
            Some(converter) => {
                let rows = converter.convert_columns(&key_columns)?;
                let hashes: Vec<u64> = (0..n).map(|i| RowKeyTable::hash(rows.row(i).as_ref())).collect();
                let owners = owners(n, count, |i| Shard::owner(hashes[i], count), |i| key_columns.iter().any(|c| c.is_null(i)));
                (PreparedKeys::Rows { converter: converter.clone(), rows, hashes }, owners)
            }
        };
        self.change_rows += n as u64;
        self.null_key_rows += nulls;
        Ok(Some(Prepared { upstream, keys, ranks, version, ts, owners }))
    }

    /// One commit time per (upstream, version): rows of a version come together, so one
    /// insert per run of a version (one per batch where it is the same throughout).
    fn note_commit_times(&mut self, upstream: u16, n: usize, version: &PerRow, ts: &PerRow) {
        let runs = version.runs(n);
        for (at, &(first, v)) in runs.iter().enumerate() {
            let end = runs.get(at + 1).map_or(n, |next| next.0);
            // The run's first commit time.
            let (Some(v), Some(t)) = (v, (first..end).find_map(|i| ts.get(i))) else { continue };
            self.commit_ts.entry((upstream, v)).or_insert(t);
        }
    }

    /// The run's grouped keys: the shards' sorted runs side by side (read merged in key order,
    /// see [`AffectedKeys`]), with what was counted here.
    fn finish(self, upstreams: Vec<String>, runs: Vec<KeyRun>) -> Result<AffectedKeys> {
        let distinct_keys = runs.iter().map(|r| r.keys.entries.len() as u64).sum();
        // A shard that saw no key has no key kind of its own: leave it out.
        let runs = runs.into_iter().filter(|r| !r.keys.entries.is_empty()).collect();
        // Without any row the key types are unknown; nothing is written then.
        let key_fields = self.key_fields.unwrap_or_else(|| self.key.iter().map(|k| Field::new(k, DataType::Int64, true)).collect());
        Ok(AffectedKeys {
            key: self.key,
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

/// One shard's keys while a run's batches are folded.
pub(crate) struct Grouper {
    pub(crate) shard: Shard,
    pub(crate) expected: Expected,
    pub(crate) keys: Option<KeyMap>,
    pub(crate) overflow: Overflow,
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
    fn new(shard: Shard, expected: Expected) -> Self {
        Grouper { shard, expected, keys: None, overflow: Overflow::default() }
    }

    /// Fold this shard's rows of a prepared batch.
    fn fold(&mut self, batch: &Prepared) -> Result<()> {
        let mine = rows_of(&batch.owners, self.shard.index);
        if mine.is_empty() {
            return Ok(());
        }
        let upstream = batch.upstream;
        let overflow = &mut self.overflow;
        match &batch.keys {
            PreparedKeys::Int(values) => {
                let expected = self.expected;
                let mut from = 0;
                if let KeyMap::Direct(table) = self.keys.get_or_insert_with(|| KeyMap::Direct(DenseKeyTable::expecting(expected.rows_per_shard))) {
                    match fold_direct(table, overflow, values, &mine, upstream, |i| (batch.packed(i), batch.ts(i))) {
                        Ok(()) => return Ok(()),
                        Err(at) => from = at,
                    }
                    // Keys too spread out to address directly: the rest of the run is hashed.
                    if let Some(KeyMap::Direct(table)) = self.keys.take() {
                        tracing::debug!(shard = self.shard.index, keys = table.len(), "keys too spread out to address directly: hashing them");
                        self.keys = Some(KeyMap::Int(table.into_hashed()?));
                    }
                }
                let Some(KeyMap::Int(table)) = self.keys.as_mut() else { return Err(eyre!("an integer key met a grouping of row-encoded keys")) };
                let mine = &mine[from..];
                // Each of this shard's keys hashed once (by position in `mine`).
                let hashes: Vec<u64> = mine.iter().map(|&i| IntKeyTable::hash(values[i as usize])).collect();
                // Each lookup chases two cache misses: slot, then entry (a row never reads the
                // overflow arena, see `KeyEntry`). Each is started a stage ahead of the next,
                // once the one it depends on has landed.
                const AHEAD: usize = 8;
                for (at, &i) in mine.iter().enumerate() {
                    if let Some(&h) = hashes.get(at + 2 * AHEAD) {
                        table.prefetch_slot(h);
                    }
                    if let Some(&h) = hashes.get(at + AHEAD) {
                        table.prefetch_entry(h);
                    }
                    let i = i as usize;
                    let mut fresh = false;
                    let entry = table.upsert(values[i], hashes[at], || {
                        fresh = true;
                        KeyEntry::new(upstream, batch.packed(i), batch.ts(i))
                    })?;
                    if !fresh {
                        entry.add(overflow, upstream, batch.packed(i), batch.ts(i));
                    }
                }
            }
            PreparedKeys::Rows { converter, rows, hashes } => {
                let keys = self.keys.get_or_insert_with(|| KeyMap::Rows(converter.clone(), RowKeyTable::default()));
                let KeyMap::Rows(_, table) = keys else { return Err(eyre!("a row-encoded key met a grouping of integer keys")) };
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
                    let mut fresh = false;
                    let entry = table.upsert(rows.row(i).as_ref(), hashes[i], || {
                        fresh = true;
                        KeyEntry::new(upstream, batch.packed(i), batch.ts(i))
                    })?;
                    if !fresh {
                        entry.add(overflow, upstream, batch.packed(i), batch.ts(i));
                    }
                }
            }
        }
        Ok(())
    }

    /// This shard's keys, sorted.
    fn finish(self) -> KeyRun {
        let keys = match self.keys {
            None => SortedKeys::default(),
            Some(KeyMap::Direct(table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Int(keys), entries }
            }
            Some(KeyMap::Int(table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Int(IntKeys::Plain(keys)), entries: SortedEntries::Flat(entries) }
            }
            Some(KeyMap::Rows(converter, table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Rows(converter, keys), entries: SortedEntries::Flat(entries) }
            }
        };
        KeyRun { keys, overflow: self.overflow }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{Int64Array, TimestampMicrosecondArray};

    /// A column of one value (a change-data file's version or commit time) is kept as that
    /// value; NULLs anywhere, or a second value, keep it per row, and every row reads back as
    /// it was.
    #[test]
    fn per_row_columns_are_one_value_only_where_every_row_holds_it() {
        let cases: [Vec<Option<i64>>; 5] = [
            vec![Some(7); 5],
            vec![None; 3],
            vec![Some(7), Some(7), Some(8)],
            vec![Some(7), None, Some(7)],
            vec![Some(-1)],
        ];
        for values in cases {
            let column = PerRow::of(&TimestampMicrosecondArray::from(values.clone()));
            let one = values.iter().all(|v| *v == values[0]);
            assert_eq!(matches!(column, PerRow::Same(_)), one, "{values:?}");
            let read: Vec<Option<i64>> = (0..values.len()).map(|i| column.get(i)).collect();
            assert_eq!(read, values);
        }
    }

    /// Each (upstream, version) gets the commit time of its first row that has one, whether
    /// the batch holds one version or runs of several (a version may come back later).
    #[test]
    fn commit_times_are_noted_once_per_version_from_its_first_row_with_a_time() {
        let mut preparer = Preparer::new(&["k".to_string()], 1);
        let version = Int64Array::from(vec![Some(1), Some(1), Some(2), Some(2), None, Some(1), Some(3)]);
        let ts = TimestampMicrosecondArray::from(vec![Some(10), Some(11), None, Some(21), Some(99), Some(12), None]);
        preparer.note_commit_times(4, 7, &PerRow::of(&version), &PerRow::of(&ts));
        preparer.note_commit_times(5, 3, &PerRow::of(&Int64Array::from(vec![6; 3])), &PerRow::of(&TimestampMicrosecondArray::from(vec![60; 3])));
        let mut noted: Vec<((u16, i64), i64)> = preparer.commit_ts.into_iter().collect();
        noted.sort();
        assert_eq!(noted, vec![((4, 1), 10), ((4, 2), 21), ((5, 6), 60)]);
    }
}
