//! The distinct keys a run affects, with what marked each: the result of grouping, written to
//! the link table or shown as a preview.

use deltalake::arrow::array::Array;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::{ArrayRef, RecordBatch};
use deltalake::arrow::buffer::ScalarBuffer;
use deltalake::arrow::datatypes::Field;

use crate::util::arrow::{display_value, timestamp_type};

use super::provenance::{CommitTimes, ProvenanceTexts, change_type_of, provenance_text};
use super::table::{Overflow, SortedKeyValues, SortedKeys, prefetch};

/// The keys a run affects, grouped per key (and per upstream within a key), before anything is
/// written: sorted runs of distinct keys, one per grouping shard (a key is in one run only).
/// The runs are read merged in key order; they are not merged into one copy (for millions of
/// keys that copy was a tenth of a second on one core, with every other core idle).
pub struct AffectedKeys {
    pub key: Vec<String>,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    /// Upstream names in lexical order; a [`Hit`]'s `upstream` indexes this.
    pub(crate) upstreams: Vec<String>,
    /// Key fields as written (string encodings read as plain `Utf8`).
    pub(crate) key_fields: Vec<Field>,
    pub(crate) runs: Vec<KeyRun>,
    /// Commit time (epoch µs) of each (upstream, version) seen: provenance says when too.
    pub(crate) commit_ts: HashMap<(u16, i64), i64>,
}

/// One shard's keys, sorted, with the overflow arena their further hits are chained in.
pub(crate) struct KeyRun {
    pub(crate) keys: SortedKeys,
    pub(crate) overflow: Overflow,
}

impl KeyRun {
    fn len(&self) -> usize {
        self.keys.entries.len()
    }
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

/// Key ranges of each run that one part of [`AffectedKeys::per_key_batch`] builds.
type PartRanges = Vec<std::ops::Range<usize>>;

/// A part's key ranges (one per run) and the slots of the whole batch's per-key vectors its
/// keys fill: per key its last change time (`i64::MIN` for none, the nulls are set afterwards),
/// where its hits end (counted from the part's first hit) and, for an integer key, the key.
struct Slots<'a> {
    ranges: &'a [std::ops::Range<usize>],
    ts: &'a mut [i64],
    ends: &'a mut [i32],
    ints: Option<&'a mut [i64]>,
}

/// The ids of one part's hits, before the parts are put together. A provenance text outside
/// the numbered ones is `-(i + 1)`, `i` indexing `missing`: the texts are numbered once the
/// parts are done, in key order.
#[derive(Default)]
struct PartIds {
    upstream_ids: Vec<i32>,
    provenance_ids: Vec<i32>,
    missing: Vec<(u16, i64)>,
}

impl AffectedKeys {
    /// One row per distinct non-null key, sorted by key: the link-table write's source. Columns: the key,
    /// `last_change_ts`, `upstreams` and `provenance` (`upstream@version:change_type@commit time`).
    /// Built on a blocking thread: long CPU work for millions of keys.
    pub async fn per_key(self: Arc<Self>) -> Result<RecordBatch> {
        tokio::task::spawn_blocking(move || {
            let rows = self.per_key_batch();
            // The key tables are freed off the path to the first write.
            drop_in_background(self);
            rows
        })
        .await?
    }

    /// Whether key `i` of run `a` sorts before key `j` of run `b` (runs of one grouping hold
    /// keys of one kind: the kind `group::Preparer` fixed on the run's first batch).
    fn less(&self, (a, i): (usize, usize), (b, j): (usize, usize)) -> bool {
        match (&self.runs[a].keys.keys, &self.runs[b].keys.keys) {
            (SortedKeyValues::Int(x), SortedKeyValues::Int(y)) => x.get(i) < y.get(j),
            (SortedKeyValues::Rows(_, x), SortedKeyValues::Rows(_, y)) => x.get(i) < y.get(j),
            _ => false,
        }
    }

    /// `each(run, index)` for the keys of `ranges` (one range per run) in key order, while it
    /// returns true.
    fn in_key_order(&self, ranges: &[std::ops::Range<usize>], mut each: impl FnMut(usize, usize) -> bool) {
        let mut heads: Vec<usize> = ranges.iter().map(|r| r.start).collect();
        loop {
            let mut best: Option<usize> = None;
            for (r, range) in ranges.iter().enumerate() {
                if heads[r] < range.end && best.is_none_or(|b| self.less((r, heads[r]), (b, heads[b]))) {
                    best = Some(r);
                }
            }
            let Some(r) = best else { return };
            if !each(r, heads[r]) {
                return;
            }
            heads[r] += 1;
        }
    }

    /// The runs' key ranges split into `parts` parts of about equal size, in key order: cut at
    /// quantiles of the largest run, each other run cut where those keys would go.
    fn split(&self, parts: usize) -> Vec<PartRanges> {
        let Some(largest) = (0..self.runs.len()).max_by_key(|&r| self.runs[r].len()) else { return vec![Vec::new()] };
        let cut = |p: usize| -> Vec<usize> {
            if p == 0 {
                return vec![0; self.runs.len()];
            }
            if p == parts {
                return self.runs.iter().map(KeyRun::len).collect();
            }
            let pivot = (largest, self.runs[largest].len() * p / parts);
            // The first key of each run that does not sort before the pivot.
            (0..self.runs.len())
                .map(|r| if r == largest { pivot.1 } else { partition_point(self.runs[r].len(), |i| self.less((r, i), pivot)) })
                .collect()
        };
        let cuts: Vec<Vec<usize>> = (0..=parts).map(cut).collect();
        cuts.windows(2).map(|w| w[0].iter().zip(&w[1]).map(|(a, b)| *a..*b).collect()).collect()
    }

    /// The `upstreams` and `provenance` lists hold dictionary indices: a run's millions of keys
    /// share a few names and provenance texts, and the texts spelled out per key were most of
    /// a large run's peak memory. Writers spell them out a file's slice at a time (see
    /// `link::sorted_merge::conform`).
    ///
    /// Large runs are built in parts over the cores, each a contiguous range of keys (one
    /// core walking 3M keys' hits and writing their ids left the other idle for a sixth of a
    /// from-scratch run).
    fn per_key_batch(&self) -> Result<RecordBatch> {
        use deltalake::arrow::array::{Int32Array, ListArray, TimestampMicrosecondArray};
        use deltalake::arrow::buffer::{NullBuffer, OffsetBuffer};
        use deltalake::arrow::datatypes::Int32Type;
        let n = self.distinct_keys as usize;
        // A key's hits are its inline one plus those in its run's overflow arena.
        let hits = n + self.runs.iter().map(|r| r.overflow.0.len()).sum::<usize>();
        if i32::try_from(hits).is_err() {
            return Err(eyre!("a run's keys have over 2^31 upstream hits; run the pipeline over a smaller version range"));
        }
        let stamps = self.commit_times();
        let mut texts = ProvenanceTexts::new(&stamps, &self.upstreams);
        let parts = if n < 1 << 18 { 1 } else { std::thread::available_parallelism().map_or(1, |c| c.get()).clamp(1, 4) };
        let ranges = self.split(parts);
        let part_lens: Vec<usize> = ranges.iter().map(|part| part.iter().map(|r| r.len()).sum()).collect();
        let mut last_ts = vec![0i64; n];
        let mut offsets = vec![0i32; n + 1];
        // Integer keys are written in place too; row-encoded ones come back per part.
        let int_keys = self.runs.first().is_some_and(|r| matches!(r.keys.keys, SortedKeyValues::Int(_)));
        let mut ints = vec![0i64; if int_keys { n } else { 0 }];
        let mut keys: Vec<Vec<ArrayRef>> = Vec::with_capacity(ranges.len());
        let mut ids: Vec<PartIds> = Vec::with_capacity(ranges.len());
        {
            // Each part writes its keys' slots of `last_ts` and `offsets`.
            let mut ts_rest = last_ts.as_mut_slice();
            let mut ends_rest = &mut offsets[1..];
            let mut ints_rest = ints.as_mut_slice();
            let mut work = Vec::with_capacity(ranges.len());
            for (part, &len) in ranges.iter().zip(&part_lens) {
                let (ts, rest) = std::mem::take(&mut ts_rest).split_at_mut(len);
                let (ends, rest_ends) = std::mem::take(&mut ends_rest).split_at_mut(len);
                let (part_ints, rest_ints) = std::mem::take(&mut ints_rest).split_at_mut(if int_keys { len } else { 0 });
                (ts_rest, ends_rest, ints_rest) = (rest, rest_ends, rest_ints);
                work.push(Slots { ranges: part, ts, ends, ints: int_keys.then_some(part_ints) });
            }
            let texts = &texts;
            let built: Vec<Result<(Vec<ArrayRef>, PartIds)>> = std::thread::scope(|scope| {
                let mut work = work.into_iter();
                let first = work.next();
                let others: Vec<_> = work.map(|slots| scope.spawn(move || self.build_part(slots, texts))).collect();
                let mut built = vec![first.map_or_else(|| Ok((Vec::new(), PartIds::default())), |slots| self.build_part(slots, texts))];
                for handle in others {
                    built.push(handle.join().unwrap_or_else(|_| Err(eyre!("building the link rows failed: a worker thread panicked"))));
                }
                built
            });
            for part in built {
                let (k, i) = part?;
                keys.push(k);
                ids.push(i);
            }
        }
        // Parts counted their hits from zero: move each past the parts before it, and number
        // the provenance texts they could not. The first part's ids are extended in place
        // (growing a mapping moves its pages, not its bytes), the others copied after them.
        let mut upstream_ids: Vec<i32> = Vec::new();
        let mut provenance_ids: Vec<i32> = Vec::new();
        let mut at = 0usize;
        let mut text = String::new();
        for (&len, mut part_ids) in part_lens.iter().zip(ids) {
            let base = upstream_ids.len() as i32;
            if base > 0 {
                offsets[at + 1..=at + len].iter_mut().for_each(|o| *o += base);
            }
            at += len;
            let numbered: Vec<i32> = part_ids
                .missing
                .iter()
                .map(|&(upstream, packed)| {
                    let stamp = stamps.get(upstream, packed >> 3);
                    provenance_text(&mut text, &self.upstreams[upstream as usize], packed, stamp);
                    texts.add(&text)
                })
                .collect();
            let resolve = |id: i32| if id < 0 { numbered[(-id - 1) as usize] } else { id };
            if upstream_ids.is_empty() {
                part_ids.provenance_ids.iter_mut().for_each(|id| *id = resolve(*id));
                upstream_ids = std::mem::take(&mut part_ids.upstream_ids);
                provenance_ids = std::mem::take(&mut part_ids.provenance_ids);
                upstream_ids.reserve_exact(hits - upstream_ids.len());
                provenance_ids.reserve_exact(hits - provenance_ids.len());
            } else {
                upstream_ids.extend_from_slice(&part_ids.upstream_ids);
                provenance_ids.extend(part_ids.provenance_ids.iter().map(|&id| resolve(id)));
            }
            drop_in_background(part_ids);
        }
        let offsets = OffsetBuffer::new(ScalarBuffer::from(offsets));
        let list = |ids: Vec<i32>, values: Vec<&str>| -> Result<ArrayRef> {
            let dictionary = crate::util::arrow::dictionary_of::<Int32Type>(Int32Array::from(ids), Arc::new(deltalake::arrow::array::StringArray::from(values)))?;
            let item = Arc::new(Field::new("element", dictionary.data_type().clone(), true));
            Ok(Arc::new(ListArray::try_new(item, offsets.clone(), Arc::new(dictionary), None)?))
        };
        // The two lists side by side: each checks that its ids are in its dictionary, a pass
        // over millions of them.
        let (upstreams, provenance) = std::thread::scope(|scope| {
            let upstreams = scope.spawn(|| list(upstream_ids, self.upstreams.iter().map(String::as_str).collect()));
            let provenance = list(provenance_ids, texts.all.iter().map(String::as_str).collect());
            (upstreams.join().unwrap_or_else(|_| Err(eyre!("building the link rows failed: a worker thread panicked"))), provenance)
        });
        let mut columns = if int_keys {
            let ints: ArrayRef = Arc::new(deltalake::arrow::array::Int64Array::new(ScalarBuffer::from(ints), None));
            vec![deltalake::arrow::compute::cast(&ints, self.key_fields[0].data_type())?]
        } else {
            concat_parts(keys, self.key_fields.len())?
        };
        let mut fields = self.key_fields.clone();
        let known = last_ts.iter().any(|t| *t == i64::MIN).then(|| NullBuffer::from_iter(last_ts.iter().map(|t| *t != i64::MIN)));
        columns.push(Arc::new(TimestampMicrosecondArray::new(ScalarBuffer::from(last_ts), known).with_timezone("UTC")) as ArrayRef);
        fields.push(Field::new("last_change_ts", timestamp_type(), true));
        columns.push(upstreams?);
        columns.push(provenance?);
        for name in ["upstreams", "provenance"] {
            fields.push(Field::new(name, columns[fields.len()].data_type().clone(), true));
        }
        Ok(RecordBatch::try_new(Arc::new(deltalake::arrow::datatypes::Schema::new(fields)), columns)?)
    }

    /// One part of the link rows (see [`PartIds`]): its keys' last change times, hit ends and
    /// (integer) keys written into its slots, its row-encoded keys' columns returned, with its
    /// hits' ids.
    fn build_part(&self, slots: Slots<'_>, texts: &ProvenanceTexts) -> Result<(Vec<ArrayRef>, PartIds)> {
        let Slots { ranges: part, ts, ends, mut ints } = slots;
        let mut ids = PartIds::default();
        let mut order: Vec<(usize, usize)> = Vec::with_capacity(if ints.is_some() { 0 } else { ts.len() });
        const AHEAD: usize = 16;
        let mut k = 0;
        self.in_key_order(part, |r, i| {
            let run = &self.runs[r];
            if let Some(ahead) = run.keys.entries.get(i + AHEAD) {
                prefetch(&run.overflow, ahead.earlier);
            }
            let entry = &run.keys.entries[i];
            ts[k] = entry.last_ts;
            entry.for_each_hit(&run.overflow, |hit| {
                ids.upstream_ids.push(i32::from(hit.upstream));
                let id = texts.index(hit.upstream, hit.packed).unwrap_or_else(|| {
                    ids.missing.push((hit.upstream, hit.packed));
                    -(ids.missing.len() as i32)
                });
                ids.provenance_ids.push(id);
            });
            ends[k] = ids.upstream_ids.len() as i32;
            match (&mut ints, &run.keys.keys) {
                (Some(ints), SortedKeyValues::Int(keys)) => ints[k] = keys.get(i),
                _ => order.push((r, i)),
            }
            k += 1;
            true
        });
        if ints.is_some() {
            return Ok((Vec::new(), ids));
        }
        Ok((self.key_columns(&order)?, ids))
    }

    /// Key columns of the keys at `order` (run, index), in the key's arrow types.
    fn key_columns(&self, order: &[(usize, usize)]) -> Result<Vec<ArrayRef>> {
        use deltalake::arrow::array::Int64Array;
        let Some(first) = self.runs.first() else {
            return Ok(self.key_fields.iter().map(|f| deltalake::arrow::array::new_empty_array(f.data_type())).collect());
        };
        match &first.keys.keys {
            SortedKeyValues::Int(_) => {
                let value = |&(r, i): &(usize, usize)| match &self.runs[r].keys.keys {
                    SortedKeyValues::Int(v) => v.get(i),
                    SortedKeyValues::Rows(..) => 0,
                };
                let ints: ArrayRef = Arc::new(Int64Array::from_iter_values(order.iter().map(value)));
                Ok(vec![deltalake::arrow::compute::cast(&ints, self.key_fields[0].data_type())?])
            }
            SortedKeyValues::Rows(converter, _) => {
                let parser = converter.parser();
                let rows = order.iter().filter_map(|&(r, i)| match &self.runs[r].keys.keys {
                    SortedKeyValues::Rows(_, keys) => Some(parser.parse(keys.get(i))),
                    SortedKeyValues::Int(_) => None,
                });
                Ok(converter.convert_rows(rows)?)
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
            times.stamps[u][slot] = crate::util::time::format_ms(us.div_euclid(1000));
        }
        times
    }

    /// Preview rows — key, upstream, latest commit version and change type — ordered by key,
    /// then upstream; at most `limit` of them.
    pub fn preview_rows(&self, limit: Option<usize>) -> Result<Vec<PreviewRow>> {
        let limit = limit.unwrap_or(usize::MAX);
        let mut wanted: Vec<(usize, usize)> = Vec::new();
        let mut rows = 0;
        let whole: Vec<std::ops::Range<usize>> = self.runs.iter().map(|r| 0..r.len()).collect();
        self.in_key_order(&whole, |r, i| {
            if rows >= limit {
                return false;
            }
            rows += self.runs[r].keys.entries[i].hit_count(&self.runs[r].overflow);
            wanted.push((r, i));
            true
        });
        let columns = self.key_columns(&wanted)?;
        let stamps = self.commit_times();
        let mut out = Vec::new();
        for (at, &(r, i)) in wanted.iter().enumerate() {
            let key: Vec<String> = columns.iter().map(|c| display_value(c.as_ref(), at)).collect();
            let run = &self.runs[r];
            run.keys.entries[i].for_each_hit(&run.overflow, |hit| {
                if out.len() >= limit {
                    return;
                }
                out.push(PreviewRow {
                    key: key.clone(),
                    upstream: self.upstreams[hit.upstream as usize].clone(),
                    commit_version: hit.packed >> 3,
                    change_type: change_type_of(hit.packed).to_string(),
                    commit_time: stamps.get(hit.upstream, hit.packed >> 3).map(str::to_string),
                    change_rows: u64::from(hit.rows),
                });
            });
        }
        Ok(out)
    }
}

/// The first index in `0..len` for which `below` is false (`below` holds for a prefix).
fn partition_point(len: usize, below: impl Fn(usize) -> bool) -> usize {
    let (mut lo, mut hi) = (0, len);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if below(mid) {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The parts' key columns put together in part order (a single part's are taken as they are).
fn concat_parts(mut parts: Vec<Vec<ArrayRef>>, columns: usize) -> Result<Vec<ArrayRef>> {
    if parts.len() == 1 {
        return Ok(parts.pop().unwrap_or_default());
    }
    (0..columns)
        .map(|c| {
            let arrays: Vec<&dyn Array> = parts.iter().filter_map(|p| p.get(c)).map(|a| a.as_ref()).collect();
            Ok(deltalake::arrow::compute::concat(&arrays)?)
        })
        .collect()
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

/// Frees `value` on a thread of its own: a run's key tables and id vectors are hundreds of
/// megabytes, and unmapping them took ~10 ms of the serial stretch between building the link
/// rows and writing them (profiled on the heavy-churn lake).
fn drop_in_background<T: Send + 'static>(value: T) {
    // When no thread can be started, the failed spawn drops its closure, and `value` with it.
    let _ = std::thread::Builder::new().name("deltalink-free".into()).spawn(move || drop(value));
}

#[cfg(test)]
mod tests {
    use deltalake::arrow::array::{AsArray, Int64Array, StringArray, TimestampMicrosecondArray};
    use deltalake::arrow::datatypes::{DataType, Field, Schema, TimeUnit};
    use deltalake::datafusion::prelude::{DataFrame, SessionContext};

    use super::*;

    /// Link rows of a run large enough to be built in parts, from two shards' runs of string
    /// keys, against an oracle written out per key: every key once, in order, with its
    /// upstreams and provenance texts — those of a version without a commit time too (numbered
    /// after the parts).
    #[tokio::test]
    async fn link_rows_built_in_parts_match_an_oracle_key_by_key() -> Result<()> {
        const KEYS: usize = 300_000;
        let ts = 1_790_000_000_000_000i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8, true),
            Field::new("_change_type", DataType::Utf8, true),
            Field::new("_commit_version", DataType::Int64, true),
            Field::new("_commit_timestamp", DataType::Timestamp(TimeUnit::Microsecond, None), true),
        ]));
        let frame = |rows: Vec<(usize, &str, i64, Option<i64>)>| -> Result<DataFrame> {
            let batch = RecordBatch::try_new(schema.clone(), vec![
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| format!("k{:07}", r.0)))),
                Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
                Arc::new(Int64Array::from_iter_values(rows.iter().map(|r| r.2))),
                Arc::new(TimestampMicrosecondArray::from_iter(rows.iter().map(|r| r.3))),
            ])?;
            Ok(SessionContext::new().read_batch(batch)?)
        };
        // Upstream `a` inserts every key (in a scrambled order); `b` updates every third, in a
        // version with a commit time or, every fifth of those, in one without.
        let a: Vec<_> = (0..KEYS).map(|i| (i * 7_919 % KEYS, "insert", 1, Some(ts))).collect();
        let b: Vec<_> = (0..KEYS).step_by(3).map(|i| if i % 5 == 0 { (i, "update_postimage", 3, None) } else { (i, "update_postimage", 2, Some(ts + 1_000_000)) }).collect();
        let changes = vec![("b".to_string(), frame(b)?), ("a".to_string(), frame(a)?)];
        let affected = Arc::new(super::super::group_changes(changes, &["k".to_string()], 2, 0).await?);
        assert!(affected.runs.len() > 1, "two shards' runs");
        let rows = affected.clone().per_key().await?;

        let list = DataType::List(Arc::new(Field::new("element", DataType::Utf8, true)));
        let spelled = |name: &str| deltalake::arrow::compute::cast(rows.column_by_name(name).expect(name), &list);
        let (upstreams, provenance) = (spelled("upstreams")?, spelled("provenance")?);
        let (upstreams, provenance) = (upstreams.as_list::<i32>(), provenance.as_list::<i32>());
        let keys = rows.column(0).as_string::<i32>();
        let texts = |l: &deltalake::arrow::array::ListArray, i: usize| -> Vec<String> {
            l.value(i).as_string::<i32>().iter().map(|v| v.unwrap_or_default().to_string()).collect()
        };
        let stamp = |us: i64| crate::util::time::format_ms(us / 1000).unwrap_or_default();
        assert_eq!(rows.num_rows(), KEYS);
        for i in 0..KEYS {
            assert_eq!(keys.value(i), format!("k{i:07}"), "keys in order, each once");
            let mut expected_upstreams = vec!["a".to_string()];
            let mut expected_provenance = vec![format!("a@1:insert@{}", stamp(ts))];
            if i % 3 == 0 {
                expected_upstreams.push("b".into());
                expected_provenance.push(match i % 5 {
                    0 => "b@3:update_postimage".to_string(),
                    _ => format!("b@2:update_postimage@{}", stamp(ts + 1_000_000)),
                });
            }
            assert_eq!(texts(upstreams, i), expected_upstreams, "key {i}");
            assert_eq!(texts(provenance, i), expected_provenance, "key {i}");
        }
        Ok(())
    }
}
