//! The keys of a run while they are folded: hash tables of integer keys and of row-encoded
//! keys, each key's hits (upstream, commit, change type), and the keys sorted at the end.

use color_eyre::eyre::{Result, eyre};

use crate::util::hash::{FastHash, FoldHasher};

/// One upstream's share of a key: its latest change (packed) and how many change rows it had.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) upstream: u16,
    pub(crate) rows: u32,
    pub(crate) packed: i64,
}

impl Hit {
    pub(crate) fn add(&mut self, packed: i64) {
        self.packed = self.packed.max(packed);
        self.rows = self.rows.saturating_add(1);
    }
}

/// Everything known about one key. The hit of the latest upstream that marked it is inline;
/// the hits of earlier upstreams are chained, newest first, through the grouper's overflow
/// arena (no allocation per key: a boxed list per key made malloc a quarter of the grouping
/// time). Upstreams are folded in lexical order, so a row's upstream is the inline hit's or a
/// new one, whose arrival moves the inline hit to the end of the arena: a row never reads the
/// arena (profiled: with the last hit in the arena, reading it back was an eighth of a
/// from-scratch run's samples on the 1M-row lake, whose keys have up to four upstreams).
#[derive(Debug, Clone, Copy)]
pub(crate) struct KeyEntry {
    /// Latest commit timestamp (µs), `i64::MIN` when none is known.
    pub(crate) last_ts: i64,
    pub(crate) current: Hit,
    /// The newest of the earlier upstreams' hits in the overflow arena, [`NO_HIT`] when none.
    pub(crate) earlier: u32,
}

pub(crate) const NO_HIT: u32 = u32::MAX;

/// Hits of keys' earlier upstreams, each linking to the hit before it of the same key.
#[derive(Default)]
pub(crate) struct Overflow(pub(crate) Vec<(Hit, u32)>);

impl KeyEntry {
    /// A [`DenseKeyTable`] slot no key has taken: no change row counted.
    pub(crate) const EMPTY: KeyEntry = KeyEntry { last_ts: i64::MIN, current: Hit { upstream: 0, rows: 0, packed: 0 }, earlier: NO_HIT };

    pub(crate) fn new(upstream: u16, packed: i64, ts: i64) -> Self {
        KeyEntry { last_ts: ts, current: Hit { upstream, rows: 1, packed }, earlier: NO_HIT }
    }

    pub(crate) fn add(&mut self, overflow: &mut Overflow, upstream: u16, packed: i64, ts: i64) {
        self.last_ts = self.last_ts.max(ts);
        if self.current.upstream == upstream {
            return self.current.add(packed);
        }
        debug_assert!(self.current.upstream < upstream, "upstreams must be folded in lexical order");
        let index = overflow.0.len() as u32;
        overflow.0.push((self.current, self.earlier));
        self.earlier = index;
        self.current = Hit { upstream, rows: 1, packed };
    }

    /// `each(hit)` for the key's hits in upstream (lexical) order.
    pub(crate) fn for_each_hit(&self, overflow: &Overflow, mut each: impl FnMut(Hit)) {
        // The arena chains them newest first: put back in order through a buffer on the stack
        // (a key has a hit per upstream, a few), spilling to the heap past eight.
        const ON_STACK: usize = 8;
        let mut newest_first = [self.current; ON_STACK];
        let (mut n, mut spilled) = (0, Vec::new());
        let mut at = self.earlier;
        while let Some(&(hit, before)) = overflow.0.get(at as usize) {
            if n < ON_STACK {
                newest_first[n] = hit;
                n += 1;
            } else {
                spilled.push(hit);
            }
            at = before;
        }
        spilled.iter().rev().chain(newest_first[..n].iter().rev()).for_each(|hit| each(*hit));
        each(self.current);
    }

    /// How many upstreams marked the key.
    pub(crate) fn hit_count(&self, overflow: &Overflow) -> usize {
        let mut count = 0;
        self.for_each_hit(overflow, |_| count += 1);
        count
    }
}

/// Keys while folding: a single integer key (lossless as i64), addressed directly while they
/// lie close together, else hashed; or arrow's row encoding.
pub(crate) enum KeyMap {
    Direct(DenseKeyTable),
    Int(IntKeyTable),
    Rows(std::sync::Arc<deltalake::arrow::row::RowConverter>, RowKeyTable),
}

/// Row-encoded keys (arrow's row format: they sort as the key columns do) in one buffer: no
/// allocation per key (a boxed key cost a malloc and free each, and its pointer a cache miss
/// on every comparison of the sort).
#[derive(Default)]
pub(crate) struct RowKeys {
    pub(crate) bytes: Vec<u8>,
    /// Where each key ends in `bytes` (it starts where the previous one ends).
    pub(crate) ends: Vec<usize>,
}

impl RowKeys {
    pub(crate) fn with_capacity(keys: usize, bytes: usize) -> Self {
        RowKeys { bytes: Vec::with_capacity(bytes), ends: Vec::with_capacity(keys) }
    }

    pub(crate) fn len(&self) -> usize {
        self.ends.len()
    }

    pub(crate) fn get(&self, i: usize) -> &[u8] {
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        &self.bytes[start..self.ends[i]]
    }

    pub(crate) fn push(&mut self, key: &[u8]) {
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
pub(crate) struct RowKeyTable {
    pub(crate) slots: Vec<u64>,
    pub(crate) keys: RowKeys,
    pub(crate) entries: Vec<KeyEntry>,
}

impl RowKeyTable {
    pub(crate) fn hash(key: &[u8]) -> u64 {
        std::hash::BuildHasher::hash_one(&FastHash::default(), key)
    }

    /// The home slot of a key whose slot tag is `tag`, among `capacity` (a power of two up to
    /// 2^32) slots: the tag mixed (shards split keys by some of its bits) and its top bits taken.
    fn home(tag: u64, capacity: usize) -> usize {
        let bits = capacity.trailing_zeros();
        ((tag as u32).wrapping_mul(0x9E37_79B1) >> (32 - bits)) as usize
    }

    /// The entry of `key` (of hash `h`, see [`Self::hash`]), created by `new` when absent.
    pub(crate) fn upsert(&mut self, key: &[u8], h: u64, new: impl FnOnce() -> KeyEntry) -> Result<&mut KeyEntry> {
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
    pub(crate) fn prefetch_slot(&self, h: u64) {
        if !self.slots.is_empty() {
            prefetch_address(&self.slots[Self::home(h >> 32, self.slots.len())]);
        }
    }

    /// Start loading the key bytes and the entry that the home slot of a key of hash `h`
    /// points at (where most lookups end; the caller still compares); `None` when the slot is
    /// empty. Reads the home slot: call it after [`Self::prefetch_slot`] had time to land.
    #[inline]
    pub(crate) fn prefetch_key(&self, h: u64) -> Option<()> {
        if self.slots.is_empty() {
            return None;
        }
        let slot = *self.slots.get(Self::home(h >> 32, self.slots.len()))?;
        let index = IntKeyTable::index(slot);
        let start = if index == 0 { 0 } else { *self.keys.ends.get(index - 1)? };
        prefetch_address(self.keys.bytes.get(start)?);
        prefetch_address(self.entries.get(index)?);
        Some(())
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
    pub(crate) fn into_sorted(self) -> (RowKeys, Vec<KeyEntry>) {
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
pub(crate) fn probe(slots: &[u64], home: usize, h: u64, is_key: impl Fn(usize) -> bool) -> std::result::Result<usize, usize> {
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
pub(crate) fn free_slot(slots: &[u64], home: usize) -> usize {
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
pub(crate) fn new_entry_index(len: usize) -> Result<usize> {
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
pub(crate) struct IntKeyTable {
    pub(crate) slots: Vec<u64>,
    pub(crate) entries: Vec<(i64, KeyEntry)>,
}

impl IntKeyTable {
    pub(crate) fn hash(key: i64) -> u64 {
        let mut h = FoldHasher::default();
        h.mix(key as u64);
        h.0
    }

    /// Where probing for a key of hash `h` (see [`Self::hash`]) starts.
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

    /// The entry of `key` (of hash `h`, see [`Self::hash`]), created by `new` when absent.
    pub(crate) fn upsert(&mut self, key: i64, h: u64, new: impl FnOnce() -> KeyEntry) -> Result<&mut KeyEntry> {
        if (self.entries.len() + 1) * 2 > self.slots.len() {
            self.grow();
        }
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

    /// Start loading the home slot of a key of hash `h`.
    #[inline]
    pub(crate) fn prefetch_slot(&self, h: u64) {
        if let Some(slot) = self.slots.get(self.home(h)) {
            prefetch_address(slot);
        }
    }

    /// The entry the home slot of a key of hash `h` points at, if any: where most lookups end
    /// at this load factor (the caller checks the key). For prefetching only.
    #[inline]
    pub(crate) fn peek(&self, h: u64) -> Option<&(i64, KeyEntry)> {
        let slot = *self.slots.get(self.home(h))?;
        self.entries.get(Self::index(slot))
    }

    /// Start loading the entry of a key of hash `h` (both its ends: an entry can straddle two
    /// cache lines). Reads the home slot: call it after [`Self::prefetch_slot`] had time to land.
    #[inline]
    pub(crate) fn prefetch_entry(&self, h: u64) {
        if let Some(entry) = self.peek(h) {
            prefetch_address(entry);
            prefetch_address(&entry.1.earlier);
        }
    }
}

impl IntKeyTable {
    /// Keys and entries in key order. The keys of a run usually span less than 2^32 values:
    /// then each key's offset from the smallest and its entry's index share one `u64`, radix
    /// sorted on the offset's digits alone (profiled: comparison-sorting the 40-byte entries was
    /// a sixteenth of a from-scratch run); wider spans are comparison-sorted.
    pub(crate) fn into_sorted(self) -> (Vec<i64>, Vec<KeyEntry>) {
        let IntKeyTable { slots, mut entries } = self;
        drop(slots);
        let (Some(min), Some(max)) = (entries.iter().map(|e| e.0).min(), entries.iter().map(|e| e.0).max()) else {
            return (Vec::new(), Vec::new());
        };
        let span = (i128::from(max) - i128::from(min)) as u128;
        if span >= 1 << 32 || entries.len() >= 1 << 32 {
            entries.sort_unstable_by_key(|(k, _)| *k);
            return entries.into_iter().unzip();
        }
        let mut packed: Vec<u64> = entries.iter().enumerate().map(|(i, (k, _))| ((k - min) as u64) << 32 | i as u64).collect();
        radix_sort_high_half(&mut packed, 128 - span.leading_zeros());
        let sorted = packed.iter().map(|p| entries[*p as u32 as usize].1).collect();
        drop(entries);
        // In place (same size): no third vector at the peak.
        let keys = packed.into_iter().map(|p| min + (p >> 32) as i64).collect();
        (keys, sorted)
    }
}

/// Integer keys that lie close together (identity columns, surrogate keys) addressed
/// directly: a key's offset picks its entry, in blocks of [`BLOCK`] consecutive keys allocated
/// when first touched. A change row costs one cache miss (its entry) where the hash table
/// costs two (slot, then entry), nothing is hashed, and the keys come out sorted by walking the
/// blocks (no sort). Profiled on the heavy-churn lake: the hash table's lookups were over half
/// of a from-scratch run's CPU, and sorting its entries a tenth of the wall time.
///
/// It stays direct only while that costs at most [`DenseKeyTable::HEADROOM`], plus what a hash
/// table would need for the keys the run is expected to bring (at most 64 MiB), more than a
/// hash table needs for the keys so far: [`DenseKeyTable::upsert`] says when a key would break
/// that (keys spread thin over a wide range), and the grouping moves to an [`IntKeyTable`].
/// The grant is what lets a large run whose keys arrive in random order stay direct: its first
/// keys each touch a block of their own. A small run (an incremental one touching keys here
/// and there) gets little: measured on the 1M-row lake, where 230k keys fell all over a 2M
/// range, addressing them directly took 30 MB more than hashing them, and longer.
#[derive(Default)]
pub(crate) struct DenseKeyTable {
    /// Block number (`key >> BLOCK_BITS`) of `blocks[0]`.
    first_block: i64,
    /// Per block from `first_block`: 1 + its place among the allocated blocks, 0 for none.
    blocks: Vec<u32>,
    /// The allocated blocks, [`BLOCK`] entries each, [`CHUNK_BLOCKS`] to a chunk (one vector
    /// grown by doubling copied every entry at each step: a seventh of a from-scratch run's
    /// page faults). An untaken entry is [`KeyEntry::EMPTY`].
    chunks: Vec<Vec<KeyEntry>>,
    blocks_allocated: usize,
    len: usize,
    /// Memory granted for the keys the run is expected to bring (see [`Self::expecting`]).
    granted: usize,
}

/// Blocks per chunk of a direct table: 2 MiB.
const CHUNK_BLOCKS: usize = 512;

/// A direct table's keys per block: a block of 32-byte entries is one 4 KiB page.
pub(crate) const BLOCK_BITS: u32 = 7;
const BLOCK: usize = 1 << BLOCK_BITS;

impl DenseKeyTable {
    /// Memory a direct table may always use beyond what a hash table would for the same keys.
    const HEADROOM: usize = 4 << 20;
    /// At most this much more for the keys a run is expected to bring.
    const MAX_GRANT: usize = 64 << 20;
    /// A hash table's bytes per key ([`IntKeyTable`]: a 40-byte entry and slots at most half
    /// full, at the slack of their doubling), rounded down.
    const HASHED_PER_KEY: usize = 80;
    /// Blocks indexed at most: a 16 MiB index, keys spanning 2^29 values.
    const MAX_BLOCKS: usize = 1 << 22;

    /// The entry of `key`, created by `new` when absent; `None` (nothing changed) when the key
    /// lies too far from the others for direct addressing to pay.
    pub(crate) fn upsert(&mut self, key: i64, new: impl FnOnce() -> KeyEntry) -> Option<&mut KeyEntry> {
        let (chunk, at) = self.slot(key)?;
        let entry = &mut self.chunks[chunk][at];
        if entry.current.rows == 0 {
            *entry = new();
            self.len += 1;
        }
        Some(entry)
    }

    /// The chunk and index of the entry of `key` in block `place` (1-based).
    fn at(place: usize, key: i64) -> (usize, usize) {
        let block = place - 1;
        (block / CHUNK_BLOCKS, (block % CHUNK_BLOCKS) * BLOCK + (key as usize & (BLOCK - 1)))
    }

    /// A table for a run expected to bring up to `keys` keys to it.
    pub(crate) fn expecting(keys: usize) -> Self {
        DenseKeyTable { granted: keys.saturating_mul(Self::HASHED_PER_KEY).min(Self::MAX_GRANT), ..Self::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Where `key`'s entry is (chunk, index), its block allocated if need be.
    fn slot(&mut self, key: i64) -> Option<(usize, usize)> {
        let block = key >> BLOCK_BITS;
        if self.blocks.is_empty() {
            self.first_block = block;
            self.blocks.push(0);
        }
        if block < self.first_block {
            // Grown by at least its size, as for the blocks above: keys that arrive in
            // descending order do not shift the index once per block.
            let needed = usize::try_from(self.first_block - block).ok().filter(|n| self.blocks.len() + n <= Self::MAX_BLOCKS)?;
            let more = needed.max(self.blocks.len()).min(Self::MAX_BLOCKS - self.blocks.len());
            self.blocks.splice(0..0, std::iter::repeat_n(0, more));
            self.first_block -= more as i64;
        }
        let b = usize::try_from(block - self.first_block).ok().filter(|b| *b < Self::MAX_BLOCKS)?;
        if b >= self.blocks.len() {
            self.blocks.resize((b + 1).max(self.blocks.len() * 2).min(Self::MAX_BLOCKS), 0);
        }
        let place = match self.blocks[b] {
            0 => {
                if (self.blocks_allocated + 1) * BLOCK * std::mem::size_of::<KeyEntry>() > Self::HEADROOM + self.granted + Self::HASHED_PER_KEY * self.len {
                    return None;
                }
                if self.blocks_allocated % CHUNK_BLOCKS == 0 {
                    self.chunks.push(Vec::with_capacity(CHUNK_BLOCKS * BLOCK));
                }
                self.chunks.last_mut()?.extend(std::iter::repeat_n(KeyEntry::EMPTY, BLOCK));
                self.blocks_allocated += 1;
                self.blocks[b] = self.blocks_allocated as u32;
                self.blocks[b]
            }
            place => place,
        };
        Some(Self::at(place as usize, key))
    }

    /// The entry of `key` if its block exists (taken or not). For prefetching only.
    #[inline]
    pub(crate) fn peek(&self, key: i64) -> Option<&KeyEntry> {
        let b = usize::try_from((key >> BLOCK_BITS).wrapping_sub(self.first_block)).ok()?;
        let place = *self.blocks.get(b)? as usize;
        if place == 0 {
            return None;
        }
        let (chunk, at) = Self::at(place, key);
        self.chunks.get(chunk)?.get(at)
    }

    /// Start loading the entry of `key`.
    #[inline]
    pub(crate) fn prefetch(&self, key: i64) {
        if let Some(entry) = self.peek(key) {
            prefetch_address(entry);
        }
    }

    /// Keys in key order (the blocks walked in order), their entries left in their chunks.
    /// Each chunk's taken entries are first moved to its front, in place, and the rest of it
    /// given back: a chunk is as large as its blocks' key range, taken or not, and it lives
    /// while the link rows are built (kept whole, the run's peak was 40 MB higher).
    pub(crate) fn into_sorted(mut self) -> (IntKeys, SortedEntries) {
        // Per allocated block: which of its keys are taken, and where its first now is.
        let mut taken: Vec<u128> = vec![0; self.blocks_allocated];
        let mut starts: Vec<u32> = vec![0; self.blocks_allocated];
        for (c, chunk) in self.chunks.iter_mut().enumerate() {
            let mut len = 0;
            for from in 0..chunk.len() {
                let block = c * CHUNK_BLOCKS + from / BLOCK;
                if from % BLOCK == 0 {
                    starts[block] = len as u32;
                }
                if chunk[from].current.rows != 0 {
                    taken[block] |= 1 << (from % BLOCK);
                    chunk[len] = chunk[from];
                    len += 1;
                }
            }
            chunk.truncate(len);
            chunk.shrink_to_fit();
        }
        let (mut offsets, mut places) = (Vec::with_capacity(self.len), Vec::with_capacity(self.len));
        for (b, &place) in self.blocks.iter().enumerate() {
            let Some(block) = (place as usize).checked_sub(1) else { continue };
            // Below 2^29, as `at` (`MAX_BLOCKS` blocks of `BLOCK`).
            let first_offset = (b << BLOCK_BITS) as u32;
            let mut at = (block / CHUNK_BLOCKS * CHUNK_ENTRIES) as u32 + starts[block];
            let mut mask = taken[block];
            while mask != 0 {
                offsets.push(first_offset + mask.trailing_zeros());
                places.push(at);
                at += 1;
                mask &= mask - 1;
            }
        }
        let keys = IntKeys::Offsets { base: self.first_block << BLOCK_BITS, offsets };
        (keys, SortedEntries::Placed { chunks: self.chunks, places })
    }

    /// The same keys and entries in a hash table.
    pub(crate) fn into_hashed(self) -> Result<IntKeyTable> {
        let (keys, entries) = self.into_sorted();
        let mut table = IntKeyTable::default();
        for (i, &entry) in entries.iter().enumerate() {
            let key = keys.get(i);
            table.upsert(key, IntKeyTable::hash(key), || entry)?;
        }
        Ok(table)
    }
}

/// Sorted integer keys: a hash table's, or a direct table's as offsets from its first block's
/// first key (they span less than 2^29 values): half the memory, which the places of its
/// entries (see [`SortedEntries`]) take instead.
pub(crate) enum IntKeys {
    Plain(Vec<i64>),
    Offsets { base: i64, offsets: Vec<u32> },
}

impl IntKeys {
    /// The `i`th key (as a vector's index: out of bounds is a bug in the caller).
    #[inline]
    pub(crate) fn get(&self, i: usize) -> i64 {
        match self {
            IntKeys::Plain(keys) => keys[i],
            IntKeys::Offsets { base, offsets } => base + i64::from(offsets[i]),
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        match self {
            IntKeys::Plain(keys) => keys.len(),
            IntKeys::Offsets { offsets, .. } => offsets.len(),
        }
    }

    #[cfg(test)]
    fn to_vec(&self) -> Vec<i64> {
        (0..self.len()).map(|i| self.get(i)).collect()
    }
}

/// Entries of a chunk of a direct table.
const CHUNK_ENTRIES: usize = CHUNK_BLOCKS * BLOCK;

/// The entries of sorted keys, parallel to them: a vector, or a direct table's chunks as they
/// were filled, with each key's place in them. (Copying a direct table's entries out in key
/// order was 5 % of a from-scratch run's CPU, and the copy, beside the chunks, its peak memory.)
pub(crate) enum SortedEntries {
    Flat(Vec<KeyEntry>),
    Placed { chunks: Vec<Vec<KeyEntry>>, places: Vec<u32> },
}

impl SortedEntries {
    pub(crate) fn len(&self) -> usize {
        match self {
            SortedEntries::Flat(entries) => entries.len(),
            SortedEntries::Placed { places, .. } => places.len(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The entry of the `i`th key.
    #[inline]
    pub(crate) fn get(&self, i: usize) -> Option<&KeyEntry> {
        match self {
            SortedEntries::Flat(entries) => entries.get(i),
            SortedEntries::Placed { chunks, places } => {
                let place = *places.get(i)? as usize;
                chunks.get(place / CHUNK_ENTRIES)?.get(place % CHUNK_ENTRIES)
            }
        }
    }

    /// The entries in key order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &KeyEntry> {
        (0..self.len()).filter_map(|i| self.get(i))
    }
}

impl std::ops::Index<usize> for SortedEntries {
    type Output = KeyEntry;

    /// As a vector's: out of bounds is a bug in the caller.
    fn index(&self, i: usize) -> &KeyEntry {
        match self.get(i) {
            Some(entry) => entry,
            None => panic!("sorted entry {i} out of {}", self.len()),
        }
    }
}

/// Sort `values` by their upper 32 bits, of which only the lowest `bits` may be set: a stable
/// least-significant-digit radix sort, 11 bits a pass (a 2048-count histogram stays in L1).
fn radix_sort_high_half(values: &mut Vec<u64>, bits: u32) {
    const DIGIT: u32 = 11;
    let mut spare = vec![0u64; values.len()];
    let mut shift = 32;
    while shift < 32 + bits {
        let digit = |v: u64| ((v >> shift) & ((1 << DIGIT) - 1)) as usize;
        let mut starts = [0usize; 1 << DIGIT];
        for v in values.iter() {
            starts[digit(*v)] += 1;
        }
        let mut at = 0;
        for count in starts.iter_mut() {
            (*count, at) = (at, at + *count);
        }
        for v in values.iter() {
            let d = digit(*v);
            spare[starts[d]] = *v;
            starts[d] += 1;
        }
        std::mem::swap(values, &mut spare);
        shift += DIGIT;
    }
}

/// Keys after folding, sorted (row encodings sort as arrow sorts the key columns); `entries`
/// is parallel to the key vector.
pub(crate) struct SortedKeys {
    pub(crate) keys: SortedKeyValues,
    pub(crate) entries: SortedEntries,
}

impl Default for SortedKeys {
    /// No keys (typed as integers: a grouping that saw no row does not know the key's type).
    fn default() -> Self {
        SortedKeys { keys: SortedKeyValues::Int(IntKeys::Plain(Vec::new())), entries: SortedEntries::Flat(Vec::new()) }
    }
}

pub(crate) enum SortedKeyValues {
    Int(IntKeys),
    Rows(std::sync::Arc<deltalake::arrow::row::RowConverter>, RowKeys),
}

/// Hint the CPU to load what `index` points at in `overflow`. Walking the sorted keys chases
/// each key's overflow hits at random: prefetching a few keys ahead turned that from the top
/// single cost of building the link rows into noise.
#[inline]
pub(crate) fn prefetch(overflow: &Overflow, index: u32) {
    if let Some(hit) = overflow.0.get(index as usize) {
        prefetch_address(hit);
    }
}

/// Hint the CPU to load the cache line of `value` (no-op off x86_64).
#[inline]
pub(crate) fn prefetch_address<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch never faults, whatever the address; it is only a hint.
    #[allow(unused_unsafe)]
    unsafe {
        core::arch::x86_64::_mm_prefetch(value as *const T as *const i8, core::arch::x86_64::_MM_HINT_T0)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The row-key table against a BTreeMap: byte keys of 0–19 bytes over a four-letter
    /// alphabet (repeats, shared prefixes, keys that are prefixes of others — which the sort's
    /// zero-padded eight-byte prefixes must not confuse), through many growths. Every key finds
    /// the entry of its first occurrence, and the sorted keys come out in byte order, once each,
    /// with their entries.
    /// Integer keys come out sorted with their entries whatever their span: narrow (radix
    /// sorted, negative keys included, one pass or several) and wide (comparison sorted).
    #[test]
    fn int_key_table_sorts_narrow_and_wide_spans() -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(11);
        for (low, high) in [(-1_000i64, 1_000i64), (0, 1 << 20), (-(1 << 31), 1 << 31), (i64::MIN / 2, i64::MAX / 2), (7, 8)] {
            let mut table = IntKeyTable::default();
            let mut oracle = std::collections::BTreeMap::<i64, i64>::new();
            for n in 0..20_000i64 {
                let key = rng.gen_range(low..high);
                let first = *oracle.entry(key).or_insert(n);
                let entry = table.upsert(key, IntKeyTable::hash(key), || KeyEntry::new(0, n, 0))?;
                assert_eq!(entry.current.packed, first);
            }
            let (keys, entries) = table.into_sorted();
            let sorted: Vec<(i64, i64)> = keys.into_iter().zip(entries.iter().map(|e| e.current.packed)).collect();
            assert_eq!(sorted, oracle.into_iter().collect::<Vec<_>>(), "keys in {low}..{high}");
        }
        assert_eq!(IntKeyTable::default().into_sorted().0, Vec::<i64>::new());
        Ok(())
    }

    /// The direct table against a BTreeMap: dense keys in random order, keys below the first
    /// block (negative ones too), and, once keys spread too thin, `None` without a change; the
    /// keys so far move to a hash table whole. Every key finds its first occurrence's entry.
    #[test]
    fn direct_key_table_matches_a_btree_map_and_hands_over_when_sparse() -> Result<()> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(5);
        let mut table = DenseKeyTable::expecting(200_000);
        let mut oracle = std::collections::BTreeMap::<i64, i64>::new();
        for n in 0..200_000i64 {
            let key = if n < 1_000 { 500_000 - n } else { rng.gen_range(-100_000..300_000) };
            let first = *oracle.entry(key).or_insert(n);
            let entry = table.upsert(key, || KeyEntry::new(0, n, 0)).expect("dense keys stay direct");
            assert_eq!(entry.current.packed, first, "key {key}");
        }
        let (keys, entries) = table.into_sorted();
        let sorted: Vec<(i64, i64)> = keys.to_vec().into_iter().zip(entries.iter().map(|e| e.current.packed)).collect();
        assert_eq!(sorted, oracle.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>());

        // Keys 4096 apart: each a block of its own, until the headroom is spent.
        let mut sparse = DenseKeyTable::expecting(1 << 30);
        let mut kept = std::collections::BTreeMap::<i64, i64>::new();
        let mut refused = None;
        for n in 0..100_000i64 {
            let key = n * 4_096 - (1 << 40);
            match sparse.upsert(key, || KeyEntry::new(0, n, 0)) {
                Some(_) => {
                    kept.insert(key, n);
                }
                None => {
                    refused = Some(key);
                    break;
                }
            }
        }
        let refused = refused.expect("sparse keys leave direct addressing");
        assert!(kept.len() > 10_000, "the headroom and the grant hold 68 MiB of blocks first: {}", kept.len());
        let mut hashed = sparse.into_hashed()?;
        assert_eq!(hashed.entries.len(), kept.len(), "the refused key was not added");
        assert!(!kept.contains_key(&refused));
        for (key, first) in &kept {
            let entry = hashed.upsert(*key, IntKeyTable::hash(*key), || KeyEntry::new(0, -1, 0))?;
            assert_eq!(entry.current.packed, *first);
        }

        // A key beyond the widest span an index covers is refused at once.
        let mut wide = DenseKeyTable::default();
        assert!(wide.upsert(0, || KeyEntry::new(0, 0, 0)).is_some());
        assert!(wide.upsert(1 << 62, || KeyEntry::new(0, 1, 0)).is_none());
        assert!(wide.upsert(-(1 << 62), || KeyEntry::new(0, 2, 0)).is_none());
        assert_eq!(wide.into_sorted().0.to_vec(), vec![0]);
        Ok(())
    }

    /// A key's hits come back in upstream order with their row counts and latest change,
    /// however many upstreams marked it (past the eight put back in order on the stack too),
    /// and keys sharing one arena keep their own hits.
    #[test]
    fn a_keys_hits_come_back_in_upstream_order() {
        let mut overflow = Overflow::default();
        let mut keys = [KeyEntry::new(0, 8, 1), KeyEntry::new(1, 16, 1)];
        for upstream in 1..12u16 {
            for (k, entry) in keys.iter_mut().enumerate() {
                if upstream as usize > k {
                    for version in [3, 2] {
                        entry.add(&mut overflow, upstream, version * 8 + k as i64, 5);
                    }
                }
            }
        }
        for (k, entry) in keys.iter().enumerate() {
            let mut hits = Vec::new();
            entry.for_each_hit(&overflow, |h| hits.push((h.upstream, h.rows, h.packed)));
            let mut expected = vec![(k as u16, 1, 8 * (k as i64 + 1))];
            expected.extend((k as u16 + 1..12).map(|u| (u, 2, 24 + k as i64)));
            assert_eq!(hits, expected, "key {k}");
            assert_eq!(entry.hit_count(&overflow), expected.len());
            assert_eq!(entry.last_ts, 5);
        }
    }

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
            assert_eq!(entry.current.packed, first, "key {key:?}");
        }
        let (keys, entries) = table.into_sorted();
        let sorted: Vec<(Vec<u8>, i64)> = (0..keys.len()).map(|i| (keys.get(i).to_vec(), entries[i].current.packed)).collect();
        assert!(sorted.len() > 10_000, "mostly distinct keys: {}", sorted.len());
        assert_eq!(sorted, oracle.into_iter().collect::<Vec<_>>());
        Ok(())
    }
}
