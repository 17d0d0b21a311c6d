//! Key mapping: from change rows to the distinct entity keys they affect, with provenance.
//!
//! Every change type counts (insert, delete, both images of an update, and snapshot rows), so
//! a key column that changed value marks both the old and the new key. Change rows stream
//! into one hash map per run: memory grows with distinct keys, not with change rows.

use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::arrow::array::{Array, AsArray, RecordBatch};
use deltalake::arrow::datatypes::{DataType, Field, Int64Type, SchemaRef, TimeUnit};
use deltalake::datafusion::datasource::MemTable;
use deltalake::datafusion::logical_expr::{cast, ident, lit, Expr};
use deltalake::datafusion::prelude::DataFrame;

use crate::cdf::{CHANGE_TYPE, COMMIT_TIMESTAMP, COMMIT_VERSION};
use crate::Error;

/// The Delta/Arrow type the link table uses for timestamps.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

/// Commit timestamps on their way to grouping: epoch microseconds, UTC as Delta defines them,
/// without a zone. A cast that adds a zone to zoneless values adjusts each one through the
/// zone's rules (profiled: ~5 % of a from-scratch run); casts between zoneless units do not.
fn change_ts_type() -> DataType {
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
fn same_key_family(found: &DataType, expected: &DataType) -> bool {
    let strings = |t: &DataType| matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View);
    found == expected || (found.is_integer() && expected.is_integer()) || (strings(found) && strings(expected))
}

fn cast_key(e: Expr, ty: Option<&DataType>) -> Expr {
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
    use crate::sqlmap::{PROV_TS, PROV_TYPE, PROV_VERSION};
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

/// The keys a run affects, grouped per key (and per upstream within a key), before anything is
/// written. Entries are sorted by key.
pub struct AffectedKeys {
    pub key: Vec<String>,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    /// Upstream names in lexical order; a [`Hit`]'s `upstream` indexes this.
    upstreams: Vec<String>,
    /// Key fields as written (string encodings read as plain `Utf8`).
    key_fields: Vec<Field>,
    keys: SortedKeys,
    overflow: Overflow,
    /// Commit time (epoch µs) of each (upstream, version) seen: provenance says when too.
    commit_ts: HashMap<(u16, i64), i64>,
}

impl std::fmt::Debug for AffectedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AffectedKeys")
            .field("key", &self.key)
            .field("change_rows", &self.change_rows)
            .field("null_key_rows", &self.null_key_rows)
            .field("distinct_keys", &self.distinct_keys)
            .finish_non_exhaustive()
    }
}

/// Group projected change rows per key. `changes` holds one frame (a union of
/// [`project_source`] frames) per upstream. The rows are streamed into one hash map keyed by
/// the key alone (a plain `i64` for integer keys, arrow's row encoding otherwise): memory grows
/// with distinct keys, not change rows. Profiled: grouping in DataFusion per upstream, then
/// sorting and building the per-key lists in arrow, was most of a run's CPU and its peak memory.
///
/// `cores` is how many cores this grouping may keep busy: the key space is split into that
/// many shards (rounded down to a power of two, at most 4), each folded, and sorted, on a
/// thread of its own.
pub async fn group_changes(mut changes: Vec<(String, DataFrame)>, key: &[String], cores: usize) -> Result<AffectedKeys> {
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
    let affected = match count {
        1 => group_here(streams, key, upstreams).await?,
        _ => group_in_shards(streams, key, upstreams, count).await?,
    };
    tracing::info!(rows = affected.change_rows, keys = affected.distinct_keys, "change rows grouped");
    Ok(affected)
}

type ChangeStreams = Vec<(String, deltalake::datafusion::physical_plan::SendableRecordBatchStream)>;

/// Fold every batch on this task as it arrives; sort on a blocking thread (sorting millions of
/// keys is long CPU work: off the async workers, which also drive the timers the console's
/// frames wait on).
async fn group_here(streams: ChangeStreams, key: &[String], upstreams: Vec<String>) -> Result<AffectedKeys> {
    use futures::StreamExt;
    let mut grouper = Grouper::new(key.len(), Shard { index: 0, count: 1 });
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
async fn group_in_shards(streams: ChangeStreams, key: &[String], upstreams: Vec<String>, count: usize) -> Result<AffectedKeys> {
    use futures::StreamExt;
    let mut batches = Vec::with_capacity(count);
    let mut shards = Vec::with_capacity(count);
    for index in 0..count {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<(u16, RecordBatch)>(4);
        let (key, upstreams) = (key.to_vec(), upstreams.clone());
        shards.push(tokio::task::spawn_blocking(move || {
            let mut grouper = Grouper::new(key.len(), Shard { index, count });
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

/// One of the parts of the key space that grouping splits a run's keys into, by a few bits of
/// the key's hash that neither table's probing relies on (they pick neither the home slot nor
/// hashbrown's tag byte; the integer table's tag loses them, which only costs a rare compare).
#[derive(Debug, Clone, Copy)]
struct Shard {
    index: usize,
    count: usize,
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

    /// Whether the key whose hash `hash` computes is this shard's (with one shard, every key
    /// is, and no hash is computed: the inline grouping of a cycle's runs pays nothing).
    fn owns(&self, hash: impl FnOnce() -> u64) -> bool {
        self.count == 1 || (hash() >> 40) as usize & (self.count - 1) == self.index
    }
}

/// The shards' grouped keys as one run's: their sorted keys merged in order, their overflow
/// arenas one after another (each shard's hit indices moved past the arenas before it).
fn merge_shards(parts: Vec<AffectedKeys>) -> Result<AffectedKeys> {
    let mut parts = parts.into_iter();
    let Some(mut merged) = parts.next() else { return Err(eyre!("grouping produced no shard")) };
    let mut others: Vec<AffectedKeys> = parts.collect();
    if others.is_empty() {
        return Ok(merged);
    }
    let mut runs: Vec<(SortedKeys, u32)> = Vec::with_capacity(others.len() + 1);
    let arena = |len: usize| u32::try_from(len).ok().filter(|l| *l < NO_HIT);
    let too_many = || eyre!("a run affects more keys than one grouping holds; run the pipeline over a smaller version range");
    for part in &mut others {
        let offset = arena(merged.overflow.0.len()).ok_or_else(too_many)?;
        merged.change_rows += part.change_rows;
        merged.null_key_rows += part.null_key_rows;
        merged.distinct_keys += part.distinct_keys;
        merged.commit_ts.extend(part.commit_ts.drain());
        merged.overflow.0.extend(part.overflow.0.drain(..).map(|(hit, next)| (hit, shifted(next, offset))));
        arena(merged.overflow.0.len()).ok_or_else(too_many)?;
        runs.push((std::mem::take(&mut part.keys), offset));
    }
    runs.insert(0, (std::mem::take(&mut merged.keys), 0));
    // A shard that saw no key has no key kind of its own: leave it out.
    runs.retain(|(k, _)| !k.entries.is_empty());
    merged.keys = match runs.first().map(|(k, _)| &k.keys) {
        None => SortedKeys::default(),
        Some(SortedKeyValues::Int(_)) => {
            let mut ints = Vec::with_capacity(runs.len());
            for (k, offset) in runs {
                match k.keys {
                    SortedKeyValues::Int(keys) => ints.push((keys, k.entries, offset)),
                    SortedKeyValues::Rows(..) => return Err(eyre!("grouping shards disagree on the key's type")),
                }
            }
            let runs: Vec<&[i64]> = ints.iter().map(|(keys, ..)| keys.as_slice()).collect();
            let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            let total = lens.iter().sum();
            let (mut keys, mut entries) = (Vec::with_capacity(total), Vec::with_capacity(total));
            merge_in_order(&lens, |(a, i), (b, j)| runs[a][i] < runs[b][j], |r, i| {
                keys.push(ints[r].0[i]);
                entries.push(shifted_entry(ints[r].1[i], ints[r].2));
            });
            SortedKeys { keys: SortedKeyValues::Int(keys), entries }
        }
        Some(SortedKeyValues::Rows(..)) => {
            let mut rows = Vec::with_capacity(runs.len());
            let mut converter = None;
            for (k, offset) in runs {
                match k.keys {
                    SortedKeyValues::Rows(c, keys) => {
                        converter.get_or_insert(c);
                        rows.push((keys, k.entries, offset));
                    }
                    SortedKeyValues::Int(_) => return Err(eyre!("grouping shards disagree on the key's type")),
                }
            }
            let converter = converter.ok_or_else(|| eyre!("grouping shards lost the key's encoding"))?;
            let runs: Vec<&RowKeys> = rows.iter().map(|(keys, ..)| keys).collect();
            let lens: Vec<usize> = runs.iter().map(|r| r.len()).collect();
            let total = lens.iter().sum();
            let mut keys = RowKeys::with_capacity(total, runs.iter().map(|k| k.bytes.len()).sum());
            let mut entries = Vec::with_capacity(total);
            merge_in_order(&lens, |(a, i), (b, j)| runs[a].get(i) < runs[b].get(j), |r, i| {
                keys.push(runs[r].get(i));
                entries.push(shifted_entry(rows[r].1[i], rows[r].2));
            });
            SortedKeys { keys: SortedKeyValues::Rows(converter, keys), entries }
        }
    };
    Ok(merged)
}

/// An overflow index moved by `offset` (none stays none).
fn shifted(at: u32, offset: u32) -> u32 {
    if at == NO_HIT {
        NO_HIT
    } else {
        at + offset
    }
}

/// Sorted runs of distinct keys (of `lens` keys each) merged: `each(run, index)` for every
/// key, in key order (no order vector: for 10M keys it was 160 MB). `less((a, i), (b, j))`:
/// whether key `i` of run `a` sorts before key `j` of run `b`.
fn merge_in_order(lens: &[usize], less: impl Fn((usize, usize), (usize, usize)) -> bool, mut each: impl FnMut(usize, usize)) {
    let mut heads = vec![0usize; lens.len()];
    loop {
        let mut best: Option<usize> = None;
        for (r, len) in lens.iter().enumerate() {
            if heads[r] < *len && best.is_none_or(|b| less((r, heads[r]), (b, heads[b]))) {
                best = Some(r);
            }
        }
        let Some(r) = best else { break };
        each(r, heads[r]);
        heads[r] += 1;
    }
}

/// A shard's entry with its overflow indices moved by the shard's offset in the merged arena.
fn shifted_entry(entry: KeyEntry, offset: u32) -> KeyEntry {
    KeyEntry { next: shifted(entry.next, offset), last: shifted(entry.last, offset), ..entry }
}

/// Change types in lexical order: a change's rank packs into `version * 8 + rank`, so the
/// latest change of a key is a plain max (a tie in version resolves as ORDER BY version,
/// change type would). Rank 7 is an unknown change type.
const CHANGE_TYPE_RANKS: [&str; 6] = ["delete", "insert", "join", "snapshot", "update_postimage", "update_preimage"];

fn change_type_of(packed: i64) -> &'static str {
    CHANGE_TYPE_RANKS.get((packed & 7) as usize).copied().unwrap_or("unknown")
}

/// One upstream's share of a key: its latest change (packed) and how many change rows it had.
#[derive(Debug, Clone, Copy)]
struct Hit {
    upstream: u16,
    rows: u32,
    packed: i64,
}

impl Hit {
    fn add(&mut self, packed: i64) {
        self.packed = self.packed.max(packed);
        self.rows = self.rows.saturating_add(1);
    }
}

/// Everything known about one key. The first upstream's hit is inline; hits of further
/// upstreams are chained through the grouper's overflow arena (no allocation per key: a boxed
/// list per key made malloc a quarter of the grouping time). Upstreams are folded in lexical
/// order, so a key's hits are chained in that order and a new row's upstream is its first or
/// its last hit: no chain walk.
#[derive(Debug, Clone, Copy)]
struct KeyEntry {
    /// Latest commit timestamp (µs), `i64::MIN` when none is known.
    last_ts: i64,
    first: Hit,
    /// First and last hit in the overflow arena, [`NO_HIT`] when none.
    next: u32,
    last: u32,
}

const NO_HIT: u32 = u32::MAX;

/// Hits beyond a key's first, each linking to the next of the same key.
#[derive(Default)]
struct Overflow(Vec<(Hit, u32)>);

impl KeyEntry {
    fn new(upstream: u16, packed: i64, ts: i64) -> Self {
        KeyEntry { last_ts: ts, first: Hit { upstream, rows: 1, packed }, next: NO_HIT, last: NO_HIT }
    }

    fn add(&mut self, overflow: &mut Overflow, upstream: u16, packed: i64, ts: i64) {
        self.last_ts = self.last_ts.max(ts);
        let last = match self.last {
            NO_HIT => &mut self.first,
            at => &mut overflow.0[at as usize].0,
        };
        if last.upstream == upstream {
            return last.add(packed);
        }
        debug_assert!(last.upstream < upstream, "upstreams must be folded in lexical order");
        let index = overflow.0.len() as u32;
        overflow.0.push((Hit { upstream, rows: 1, packed }, NO_HIT));
        match self.last {
            NO_HIT => self.next = index,
            at => overflow.0[at as usize].1 = index,
        }
        self.last = index;
    }

    /// Hits in upstream (lexical) order.
    fn hits<'a>(&'a self, overflow: &'a Overflow) -> impl Iterator<Item = Hit> + 'a {
        let mut at = self.next;
        std::iter::once(self.first).chain(std::iter::from_fn(move || {
            let (hit, next) = *overflow.0.get(at as usize)?;
            at = next;
            Some(hit)
        }))
    }

    fn last_ts(&self) -> Option<i64> {
        (self.last_ts != i64::MIN).then_some(self.last_ts)
    }
}

/// A multiply-fold hasher: keys come from the operator's own tables, so std's DoS-resistant
/// SipHash buys nothing here and costs a third of the grouping time.
#[derive(Default, Clone, Copy)]
pub(crate) struct FoldHasher(u64);

impl FoldHasher {
    fn mix(&mut self, v: u64) {
        let full = u128::from(self.0 ^ v) * 0x9E37_79B9_7F4A_7C15_u128;
        self.0 = (full as u64) ^ ((full >> 64) as u64);
    }
}

impl std::hash::Hasher for FoldHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }
    fn write_i64(&mut self, v: i64) {
        self.mix(v as u64);
    }
    fn write_usize(&mut self, v: usize) {
        self.mix(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

pub(crate) type FastHash = std::hash::BuildHasherDefault<FoldHasher>;
/// Keys while folding: a single integer key (lossless as i64) or arrow's row encoding.
enum KeyMap {
    Int(IntKeyTable),
    Rows(deltalake::arrow::row::RowConverter, RowKeyTable),
}

/// Row-encoded keys (arrow's row format: they sort as the key columns do) in one buffer: no
/// allocation per key (a boxed key cost a malloc and free each, and its pointer a cache miss
/// on every comparison of the sort).
#[derive(Default)]
struct RowKeys {
    bytes: Vec<u8>,
    /// Where each key ends in `bytes` (it starts where the previous one ends).
    ends: Vec<usize>,
}

impl RowKeys {
    fn with_capacity(keys: usize, bytes: usize) -> Self {
        RowKeys { bytes: Vec::with_capacity(bytes), ends: Vec::with_capacity(keys) }
    }

    fn len(&self) -> usize {
        self.ends.len()
    }

    fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    fn push(&mut self, key: &[u8]) {
        self.bytes.extend_from_slice(key);
        self.ends.push(self.bytes.len());
    }

    /// The order that sorts the keys (byte order), as indices. Each key's first eight bytes,
    /// read as a big-endian number, settle most comparisons without touching the keys (for
    /// a string key they are its first seven bytes after the row format's marker).
    fn sorted_order(&self) -> Vec<u32> {
        let prefix = |i: usize| {
            let key = self.get(i);
            let mut word = [0u8; 8];
            let n = key.len().min(8);
            word[..n].copy_from_slice(&key[..n]);
            u64::from_be_bytes(word)
        };
        let mut order: Vec<(u64, u32)> = (0..self.len()).map(|i| (prefix(i), i as u32)).collect();
        order.sort_unstable_by(|a, b| a.0.cmp(&b.0).then_with(|| self.get(a.1 as usize).cmp(self.get(b.1 as usize))));
        order.into_iter().map(|(_, i)| i).collect()
    }
}

/// Row-encoded keys to their entries, as [`IntKeyTable`] holds integers: open addressing over
/// slots of `hash tag << 32 | index + 1`, keys and entries dense in insertion order. A key's
/// home slot is taken from its tag alone, so growing moves slots without reading a key or
/// hashing it again (profiled: rehashing from the keys was a third of grouping 10M strings).
#[derive(Default)]
struct RowKeyTable {
    slots: Vec<u64>,
    keys: RowKeys,
    entries: Vec<KeyEntry>,
}

impl RowKeyTable {
    fn hash(key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&FastHash::default(), key)
    }

    /// The home slot of a key whose slot tag is `tag`, among `capacity` (a power of two up to
    /// 2^32) slots: the tag mixed (shards split keys by some of its bits) and its top bits taken.
    fn home(tag: u64, capacity: usize) -> usize {
        let bits = capacity.trailing_zeros();
        ((tag as u32).wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
    }

    /// The entry of `key` (of hash `h`, see [`Self::hash`]), created by `new` when absent.
    fn upsert(&mut self, key: &[u8], h: u64, new: impl FnOnce() -> KeyEntry) -> Result<&mut KeyEntry> {
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow()?;
        }
        let home = Self::home(h >> 32, self.slots.len());
        match probe(&self.slots, home, h, |index| self.keys.get(index) == key) {
            Ok(index) => Ok(&mut self.entries[index]),
            Err(at) => {
                let index = new_entry_index(self.entries.len())?;
                self.slots[at] = IntKeyTable::slot(h, index);
                self.keys.push(key);
                self.entries.push(new());
                Ok(&mut self.entries[index])
            }
        }
    }

    /// Start loading the home slot of a key of hash `h`.
    #[inline]
    fn prefetch_slot(&self, h: u64) {
        if !self.slots.is_empty() {
            prefetch_address(&self.slots[Self::home(h >> 32, self.slots.len())]);
        }
    }

    /// The entry the home slot of a key of hash `h` points at, if any, after starting to load
    /// that key's bytes (where most lookups end; the caller still compares). Reads the home
    /// slot: call it after [`Self::prefetch_slot`] had time to land.
    #[inline]
    fn prefetch_key(&self, h: u64) -> Option<&KeyEntry> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = *self.slots.get(Self::home(h >> 32, self.slots.len()))?;
        let index = IntKeyTable::index(slot);
        let start = if index == 0 { 0 } else { *self.keys.ends.get(index - 1)? };
        prefetch_address(self.keys.bytes.get(start)?);
        let entry = self.entries.get(index)?;
        prefetch_address(entry);
        Some(entry)
    }

    /// Double the slots (at least 1024) and move every taken one (see [`IntKeyTable::grow`]).
    fn grow(&mut self) -> Result<()> {
        let capacity = (self.slots.len() * 2).max(1024);
        if capacity > 1 << 32 {
            return Err(eyre!("a run affects too many distinct keys for one grouping; run the pipeline over a smaller version range"));
        }
        let old = std::mem::replace(&mut self.slots, Vec::with_capacity(capacity));
        self.slots.resize(capacity, 0);
        for slot in old.into_iter().filter(|s| *s != 0) {
            let at = free_slot(&self.slots, Self::home(slot >> 32, capacity));
            self.slots[at] = slot;
        }
        Ok(())
    }

    /// Keys and entries in key order.
    fn into_sorted(self) -> (RowKeys, Vec<KeyEntry>) {
        let RowKeyTable { slots, keys, entries } = self;
        drop(slots);
        let order = keys.sorted_order();
        let mut sorted = RowKeys::with_capacity(keys.len(), keys.bytes.len());
        for &i in &order {
            sorted.push(keys.get(i as usize));
        }
        drop(keys);
        (sorted, order.iter().map(|&i| entries[i as usize]).collect())
    }
}

/// Linear probing over `slots` (a power of two of them, at most half full; see
/// [`IntKeyTable`]) from `home` for a key of hash `h`: `Ok(index)` of the entry whose slot tag
/// matches and that `is_key` accepts, `Err(at)` the empty slot where the key goes.
#[inline]
fn probe(slots: &[u64], home: usize, h: u64, is_key: impl Fn(usize) -> bool) -> std::result::Result<usize, usize> {
    let mask = slots.len() - 1;
    let mut at = home;
    loop {
        let slot = slots[at];
        if slot == 0 {
            return Err(at);
        }
        if slot >> 32 == h >> 32 && is_key(IntKeyTable::index(slot)) {
            return Ok(IntKeyTable::index(slot));
        }
        at = (at + 1) & mask;
    }
}

/// The first empty slot from `home` on (placing a key while growing: it is not there yet).
fn free_slot(slots: &[u64], home: usize) -> usize {
    let mask = slots.len() - 1;
    let mut at = home;
    while slots[at] != 0 {
        at = (at + 1) & mask;
    }
    at
}

/// The index a table's next new entry takes (`len`, the entries so far). A slot keeps an entry
/// index below u32::MAX. 4 billion keys would not fit in memory anyway, but say so rather than
/// corrupt the table.
fn new_entry_index(len: usize) -> Result<usize> {
    if len >= (u32::MAX - 1) as usize {
        return Err(eyre!("a run affects more than {} distinct keys; run the pipeline over a smaller version range", u32::MAX - 1));
    }
    Ok(len)
}

/// Integer keys to their entries: open addressing (linear probing, at most half full) over
/// slots of `hash tag << 32 | entry index + 1` (0 = empty), the entries dense in insertion
/// order. Change rows hit keys at random, so a lookup is two cache misses (slot, entry) on a
/// large run; [`IntKeyTable::prefetch_slot`] and [`IntKeyTable::prefetch_entry`] let a batch
/// start them a few rows ahead, overlapping them with the work on earlier rows (std's map
/// gives no way to prefetch a key's bucket).
/// The dense entries are also what [`Grouper::finish`] sorts, with no copy out of a map.
#[derive(Default)]
struct IntKeyTable {
    slots: Vec<u64>,
    entries: Vec<(i64, KeyEntry)>,
}

impl IntKeyTable {
    fn hash(key: i64) -> u64 {
        let mut h = FoldHasher::default();
        h.mix(key as u64);
        h.0
    }

    /// Where probing for a key of hash `h` starts.
    fn home(&self, h: u64) -> usize {
        h as usize & self.slots.len().wrapping_sub(1)
    }

    /// A taken slot: the hash's upper half as a tag, the entry's index plus one (0 is empty).
    fn slot(h: u64, index: usize) -> u64 {
        (h >> 32) << 32 | (index as u64 + 1)
    }

    /// The entry index a slot holds (`usize::MAX` for an empty one).
    fn index(slot: u64) -> usize {
        (slot as u32).wrapping_sub(1) as usize
    }

    /// The entry of `key`, created by `new` when absent.
    fn upsert(&mut self, key: i64, new: impl FnOnce() -> KeyEntry) -> Result<&mut KeyEntry> {
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let h = Self::hash(key);
        match probe(&self.slots, self.home(h), h, |index| self.entries[index].0 == key) {
            Ok(index) => Ok(&mut self.entries[index].1),
            Err(at) => {
                let index = new_entry_index(self.entries.len())?;
                self.slots[at] = Self::slot(h, index);
                self.entries.push((key, new()));
                Ok(&mut self.entries[index].1)
            }
        }
    }

    /// Double the slots (at least 1024) and place every entry again.
    fn grow(&mut self) {
        let capacity = (self.slots.len() * 2).max(1024);
        // Zeroed by writing, not `vec![0; n]`: calloc's fresh pages map the shared zero page on
        // the first probe's read, and the write after it faults again to copy it, flushing
        // every core's TLB each time (profiled: a fifth of a from-scratch run).
        self.slots = Vec::with_capacity(capacity);
        self.slots.resize(capacity, 0);
        for (index, (key, _)) in self.entries.iter().enumerate() {
            let h = Self::hash(*key);
            let at = free_slot(&self.slots, self.home(h));
            self.slots[at] = Self::slot(h, index);
        }
    }

    /// Start loading the home slot of `key`.
    #[inline]
    fn prefetch_slot(&self, key: i64) {
        if let Some(slot) = self.slots.get(self.home(Self::hash(key))) {
            prefetch_address(slot);
        }
    }

    /// The entry the home slot of `key` points at, if any: where most lookups end at this load
    /// factor (the caller checks the key). For prefetching only.
    #[inline]
    fn peek(&self, key: i64) -> Option<&(i64, KeyEntry)> {
        let slot = *self.slots.get(self.home(Self::hash(key)))?;
        self.entries.get(Self::index(slot))
    }

    /// Start loading the entry of `key` (both its ends: an entry can straddle two cache
    /// lines). Reads the home slot: call it after [`Self::prefetch_slot`] had time to land.
    #[inline]
    fn prefetch_entry(&self, key: i64) {
        if let Some(entry) = self.peek(key) {
            prefetch_address(entry);
            prefetch_address(&entry.1.last);
        }
    }
}

/// Keys after folding, sorted (row encodings sort as arrow sorts the key columns); `entries`
/// is parallel to the key vector.
struct SortedKeys {
    keys: SortedKeyValues,
    entries: Vec<KeyEntry>,
}

impl Default for SortedKeys {
    /// No keys (typed as integers: a grouping that saw no row does not know the key's type).
    fn default() -> Self {
        SortedKeys { keys: SortedKeyValues::Int(Vec::new()), entries: Vec::new() }
    }
}

enum SortedKeyValues {
    Int(Vec<i64>),
    Rows(deltalake::arrow::row::RowConverter, RowKeys),
}

/// Hint the CPU to load what `index` points at in `overflow`. Walking the sorted keys chases
/// each key's overflow hits at random: prefetching a few keys ahead turned that from the top
/// single cost of building the link rows into noise.
#[inline]
fn prefetch(overflow: &Overflow, index: u32) {
    if let Some(hit) = overflow.0.get(index as usize) {
        prefetch_address(hit);
    }
}

/// Hint the CPU to load the cache line of `value` (no-op off x86_64).
#[inline]
fn prefetch_address<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; it is only a hint.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch(value as *const T as *const i8, core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

struct Grouper {
    shard: Shard,
    nkeys: usize,
    key_fields: Option<Vec<Field>>,
    keys: Option<KeyMap>,
    overflow: Overflow,
    change_rows: u64,
    null_key_rows: u64,
    commit_ts: HashMap<(u16, i64), i64>,
}

/// A single integer key of a type that converts to i64 without loss.
fn is_small_int(t: &DataType) -> bool {
    matches!(
        t,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32
    )
}

fn plain_strings(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View | DataType::LargeUtf8 => DataType::Utf8,
        other => other.clone(),
    }
}

impl Grouper {
    fn new(nkeys: usize, shard: Shard) -> Self {
        Grouper {
            shard,
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
            KeyMap::Int(IntKeyTable::default())
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
        let counts = self.shard.index == 0;
        if counts {
            self.change_rows += n as u64;
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
            Some(KeyMap::Int(table)) => {
                let k = cast(&key_columns[0], &DataType::Int64)?;
                let k = k.as_primitive::<Int64Type>();
                let values = k.values();
                // Each lookup chases up to three cache misses: slot, entry, the key's last
                // overflow hit. Each is started a stage ahead of the next, once the one it
                // depends on has landed. A NULL key's value holds some number: prefetching for
                // it is harmless.
                const AHEAD: usize = 8;
                for i in 0..n {
                    if let Some(ahead) = values.get(i + 3 * AHEAD) {
                        table.prefetch_slot(*ahead);
                    }
                    if let Some(ahead) = values.get(i + 2 * AHEAD) {
                        table.prefetch_entry(*ahead);
                    }
                    if let Some((_, entry)) = values.get(i + AHEAD).and_then(|k| table.peek(*k)) {
                        prefetch(overflow, entry.last);
                    }
                    if k.is_null(i) {
                        self.null_key_rows += u64::from(counts);
                        continue;
                    }
                    if !shard.owns(|| IntKeyTable::hash(values[i])) {
                        continue;
                    }
                    let mut fresh = false;
                    let entry = table.upsert(values[i], || {
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
                // As for integer keys: slot, then key and entry, then the key's last overflow
                // hit, each started a stage ahead of the one that needs it.
                const AHEAD: usize = 8;
                for i in 0..n {
                    if let Some(ahead) = hashes.get(i + 3 * AHEAD) {
                        table.prefetch_slot(*ahead);
                    }
                    if let Some(entry) = hashes.get(i + 2 * AHEAD).and_then(|h| table.prefetch_key(*h)) {
                        prefetch(overflow, entry.last);
                    }
                    if null_key(i) {
                        self.null_key_rows += u64::from(counts);
                        continue;
                    }
                    let row = rows.row(i);
                    let h = hashes[i];
                    if !shard.owns(|| h) {
                        continue;
                    }
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
            Some(KeyMap::Int(table)) => {
                let IntKeyTable { slots, entries: mut v } = table;
                drop(slots);
                v.sort_unstable_by_key(|(k, _)| *k);
                let (keys, entries) = v.into_iter().unzip();
                SortedKeys { keys: SortedKeyValues::Int(keys), entries }
            }
            Some(KeyMap::Rows(converter, table)) => {
                let (keys, entries) = table.into_sorted();
                SortedKeys { keys: SortedKeyValues::Rows(converter, keys), entries }
            }
        };
        let distinct_keys = keys.entries.len() as u64;
        // Without any row the key types are unknown; nothing is written then.
        let key_fields = self.key_fields.unwrap_or_else(|| key.iter().map(|k| Field::new(k, DataType::Int64, true)).collect());
        Ok(AffectedKeys {
            key: key.to_vec(),
            change_rows: self.change_rows,
            null_key_rows: self.null_key_rows,
            distinct_keys,
            upstreams,
            key_fields,
            keys,
            overflow: self.overflow,
            commit_ts: self.commit_ts,
        })
    }
}

/// Formatted commit times by upstream and version, indexed instead of hashed: looked up once
/// per key and upstream of a run (millions of times), over a run's few versions.
struct CommitTimes {
    /// Per upstream, its lowest version seen.
    base: Vec<i64>,
    stamps: Vec<Vec<Option<String>>>,
}

impl CommitTimes {
    fn get(&self, upstream: u16, version: i64) -> Option<&str> {
        let u = upstream as usize;
        let slot = usize::try_from(version - *self.base.get(u)?).ok()?;
        self.stamps[u].get(slot)?.as_deref()
    }
}

/// Provenance texts of every (upstream, version, change type) in the commit-time spans,
/// formatted once and numbered: a run's millions of keys share a few of them (formatting per
/// key and upstream was a tenth of a large run; then holding each key's copy, most of its
/// memory). Texts outside the spans (no commit time) are added as they come.
struct ProvenanceTexts {
    /// Per upstream, `base version * 8` and where its texts start in `all`: `packed - base`
    /// counts from there.
    base: Vec<(i64, usize, usize)>,
    all: Vec<String>,
    added: HashMap<String, i32>,
}

impl ProvenanceTexts {
    fn new(stamps: &CommitTimes, upstreams: &[String]) -> Self {
        let mut texts = ProvenanceTexts { base: Vec::new(), all: Vec::new(), added: HashMap::new() };
        for (u, name) in upstreams.iter().enumerate() {
            let base = stamps.base.get(u).copied().unwrap_or(0);
            let versions = stamps.stamps.get(u).map_or(0, Vec::len) as i64;
            let start = texts.all.len();
            for packed in base * 8..(base + versions) * 8 {
                let mut text = String::new();
                provenance_text(&mut text, name, packed, stamps.get(u as u16, packed >> 3));
                texts.all.push(text);
            }
            texts.base.push((base * 8, start, texts.all.len() - start));
        }
        texts
    }

    fn index(&self, upstream: u16, packed: i64) -> Option<i32> {
        let &(base, start, len) = self.base.get(upstream as usize)?;
        let at = usize::try_from(packed - base).ok().filter(|at| *at < len)?;
        i32::try_from(start + at).ok()
    }

    fn add(&mut self, text: &str) -> i32 {
        if let Some(id) = self.added.get(text) {
            return *id;
        }
        let id = self.all.len() as i32;
        self.all.push(text.to_string());
        self.added.insert(text.to_string(), id);
        id
    }
}

/// `upstream@version:change_type[@commit time]` into `text`, built by hand: formatting
/// machinery per key and upstream was a tenth of a large run.
fn provenance_text(text: &mut String, name: &str, packed: i64, stamp: Option<&str>) {
    text.clear();
    text.push_str(name);
    text.push('@');
    push_decimal(text, packed >> 3);
    text.push(':');
    text.push_str(change_type_of(packed));
    if let Some(stamp) = stamp {
        text.push('@');
        text.push_str(stamp);
    }
}

/// Append `v` in decimal.
fn push_decimal(text: &mut String, v: i64) {
    if v < 0 {
        text.push('-');
    }
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = v.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    text.extend(digits[at..].iter().map(|d| char::from(*d)));
}

/// Rank of each row's change type (see [`CHANGE_TYPE_RANKS`]).
fn change_ranks(column: &deltalake::arrow::array::ArrayRef) -> Result<Vec<u8>> {
    let plain = match column.data_type() {
        DataType::Utf8 => column.clone(),
        _ => deltalake::arrow::compute::cast(column, &DataType::Utf8)?,
    };
    let names = plain.as_string::<i32>();
    Ok((0..names.len())
        .map(|i| {
            if names.is_null(i) {
                return 7;
            }
            let name = names.value(i);
            CHANGE_TYPE_RANKS.iter().position(|t| *t == name).map_or(7, |r| r as u8)
        })
        .collect())
}

impl AffectedKeys {
    /// One row per distinct non-null key, sorted by key: the link-table write's source. Columns: the key,
    /// `last_change_ts`, `upstreams` and `provenance` (`upstream@version:change_type@commit time`).
    /// Built on a blocking thread: long CPU work for millions of keys.
    pub async fn per_key(self: Arc<Self>) -> Result<RecordBatch> {
        tokio::task::spawn_blocking(move || self.per_key_batch()).await?
    }

    /// The `upstreams` and `provenance` lists hold dictionary indices: a run's millions of keys
    /// share a few names and provenance texts, and the texts spelled out per key were most of
    /// a large run's peak memory. Writers spell them out a file's slice at a time (see
    /// `link::sorted_merge::conform`).
    fn per_key_batch(&self) -> Result<RecordBatch> {
        use deltalake::arrow::array::{ArrayRef, DictionaryArray, Int32Array, ListArray, TimestampMicrosecondArray};
        use deltalake::arrow::buffer::{OffsetBuffer, ScalarBuffer};
        use deltalake::arrow::datatypes::Int32Type;
        let n = self.distinct_keys as usize;
        let mut text = String::new();
        let mut last_ts: Vec<Option<i64>> = Vec::with_capacity(n);
        // A key's hits are its inline one plus those in the overflow arena.
        let hits = n + self.overflow.0.len();
        let stamps = self.commit_times();
        let mut texts = ProvenanceTexts::new(&stamps, &self.upstreams);
        let mut offsets: Vec<i32> = Vec::with_capacity(n + 1);
        let mut upstream_ids: Vec<i32> = Vec::with_capacity(hits);
        let mut provenance_ids: Vec<i32> = Vec::with_capacity(hits);
        offsets.push(0);
        const AHEAD: usize = 16;
        let entries = &self.keys.entries;
        for (i, entry) in entries.iter().enumerate() {
            if let Some(ahead) = entries.get(i + AHEAD) {
                prefetch(&self.overflow, ahead.next);
                prefetch(&self.overflow, ahead.last);
            }
            last_ts.push(entry.last_ts());
            for hit in entry.hits(&self.overflow) {
                upstream_ids.push(i32::from(hit.upstream));
                let id = match texts.index(hit.upstream, hit.packed) {
                    Some(id) => id,
                    None => {
                        let stamp = stamps.get(hit.upstream, hit.packed >> 3);
                        provenance_text(&mut text, &self.upstreams[hit.upstream as usize], hit.packed, stamp);
                        texts.add(&text)
                    }
                };
                provenance_ids.push(id);
            }
            let end = i32::try_from(upstream_ids.len()).map_err(|_| eyre!("a run's keys have over 2^31 upstream hits"))?;
            offsets.push(end);
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let list = |ids: Vec<i32>, values: Vec<&str>| -> Result<ArrayRef> {
            let dictionary = DictionaryArray::<Int32Type>::try_new(Int32Array::from(ids), Arc::new(deltalake::arrow::array::StringArray::from(values)))?;
            let item = Arc::new(Field::new("element", dictionary.data_type().clone(), true));
            Ok(Arc::new(ListArray::try_new(item, offsets.clone(), Arc::new(dictionary), None)?))
        };
        let mut columns = self.key_columns(0..n)?;
        let mut fields = self.key_fields.clone();
        columns.push(Arc::new(TimestampMicrosecondArray::from(last_ts).with_timezone("UTC")) as ArrayRef);
        fields.push(Field::new("last_change_ts", timestamp_type(), true));
        columns.push(list(upstream_ids, self.upstreams.iter().map(String::as_str).collect())?);
        columns.push(list(provenance_ids, texts.all.iter().map(String::as_str).collect())?);
        for name in ["upstreams", "provenance"] {
            fields.push(Field::new(name, columns[fields.len()].data_type().clone(), true));
        }
        Ok(RecordBatch::try_new(Arc::new(deltalake::arrow::datatypes::Schema::new(fields)), columns)?)
    }

    /// Key columns of the sorted entries in `range`, in the key's arrow types.
    fn key_columns(&self, range: std::ops::Range<usize>) -> Result<Vec<deltalake::arrow::array::ArrayRef>> {
        use deltalake::arrow::array::Int64Array;
        match &self.keys.keys {
            SortedKeyValues::Int(v) => {
                let ints: deltalake::arrow::array::ArrayRef = Arc::new(Int64Array::from_iter_values(v[range].iter().copied()));
                Ok(vec![deltalake::arrow::compute::cast(&ints, self.key_fields[0].data_type())?])
            }
            SortedKeyValues::Rows(converter, keys) => {
                let parser = converter.parser();
                Ok(converter.convert_rows(range.map(|i| parser.parse(keys.get(i))))?)
            }
        }
    }

    /// Each (upstream, version)'s commit time as RFC 3339 (UTC, seconds), formatted once.
    fn commit_times(&self) -> CommitTimes {
        let n = self.upstreams.len();
        let mut spans: Vec<Option<(i64, i64)>> = vec![None; n];
        for (u, v) in self.commit_ts.keys() {
            let span = &mut spans[*u as usize];
            *span = Some(span.map_or((*v, *v), |(lo, hi)| (lo.min(*v), hi.max(*v))));
        }
        let mut times = CommitTimes { base: vec![0; n], stamps: vec![Vec::new(); n] };
        for (u, span) in spans.into_iter().enumerate() {
            if let Some((lo, hi)) = span {
                times.base[u] = lo;
                times.stamps[u] = vec![None; (hi - lo + 1) as usize];
            }
        }
        for ((u, v), us) in &self.commit_ts {
            let (u, slot) = (*u as usize, (v - times.base[*u as usize]) as usize);
            times.stamps[u][slot] = crate::status::format_ms(us.div_euclid(1000));
        }
        times
    }

    /// Preview rows — key, upstream, latest commit version and change type — ordered by key,
    /// then upstream; at most `limit` of them.
    pub fn preview_rows(&self, limit: Option<usize>) -> Result<Vec<PreviewRow>> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut wanted = 0;
        let mut rows = 0;
        for entry in &self.keys.entries {
            if rows >= limit {
                break;
            }
            rows += entry.hits(&self.overflow).count();
            wanted += 1;
        }
        let columns = self.key_columns(0..wanted)?;
        let stamps = self.commit_times();
        let mut out = Vec::new();
        for (i, entry) in self.keys.entries.iter().take(wanted).enumerate() {
            let key: Vec<String> = columns.iter().map(|c| display_value(c.as_ref(), i)).collect();
            for hit in entry.hits(&self.overflow) {
                if out.len() >= limit {
                    break;
                }
                out.push(PreviewRow {
                    key: key.clone(),
                    upstream: self.upstreams[hit.upstream as usize].clone(),
                    commit_version: hit.packed >> 3,
                    change_type: change_type_of(hit.packed).to_string(),
                    commit_time: stamps.get(hit.upstream, hit.packed >> 3).map(str::to_string),
                    change_rows: u64::from(hit.rows),
                });
            }
        }
        Ok(out)
    }
}

/// An in-memory table of collected batches. The batches' own schema wins over the planned one:
/// they can differ in nullability (and string view types), which MemTable rejects.
pub fn mem_table(planned: SchemaRef, batches: Vec<RecordBatch>) -> Result<MemTable> {
    let schema = batches.first().map(|b| b.schema()).unwrap_or(planned);
    Ok(MemTable::try_new(schema, vec![batches])?)
}

/// One affected key as preview shows it: which upstream commit caused it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PreviewRow {
    pub key: Vec<String>,
    pub upstream: String,
    pub commit_version: i64,
    pub change_type: String,
    /// When that commit happened (RFC 3339, UTC), when known.
    pub commit_time: Option<String>,
    pub change_rows: u64,
}

/// Render one cell for people (preview, console). Strings unquoted; others via arrow's formatter.
pub fn display_value(array: &dyn Array, row: usize) -> String {
    if array.is_null(row) {
        return "NULL".into();
    }
    deltalake::arrow::util::display::array_value_to_string(array, row).unwrap_or_else(|_| "?".into())
}

/// Arrow field for a list of strings as Delta stores it.
pub fn string_list_type() -> DataType {
    DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-key table against a BTreeMap: byte keys of 0–19 bytes over a four-letter
    /// alphabet (repeats, shared prefixes, keys that are prefixes of others — which the sort's
    /// zero-padded eight-byte prefixes must not confuse), through many growths. Every key finds
    /// the entry of its first occurrence, and the sorted keys come out in byte order, once each,
    /// with their entries.
    #[test]
    fn row_key_table_matches_a_btree_map() -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let mut table = RowKeyTable::default();
        let mut oracle = std::collections::BTreeMap::<Vec<u8>, i64>::new();
        for n in 0..50_000i64 {
            let key: Vec<u8> = (0..rng.gen_range(0..20)).map(|_| rng.gen_range(0..4u8)).collect();
            let first = *oracle.entry(key.clone()).or_insert(n);
            let entry = table.upsert(&key, RowKeyTable::hash(&key), || KeyEntry::new(0, n, 0))?;
            assert_eq!(entry.first.packed, first, "key {key:?}");
        }
        let (keys, entries) = table.into_sorted();
        let sorted: Vec<(Vec<u8>, i64)> = (0..keys.len()).map(|i| (keys.get(i).to_vec(), entries[i].first.packed)).collect();
        assert!(sorted.len() > 10_000, "mostly distinct keys: {}", sorted.len());
        assert_eq!(sorted, oracle.into_iter().collect::<Vec<_>>());
        Ok(())
    }
}
