//! The distinct keys a run affects, with what marked each: the result of grouping, written to
//! the link table or shown as a preview.

use deltalake::arrow::array::Array;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::RecordBatch;
use deltalake::arrow::datatypes::Field;

use crate::util::arrow::{display_value, timestamp_type};

use super::provenance::{CommitTimes, ProvenanceTexts, change_type_of, provenance_text};
use super::table::{Overflow, SortedKeyValues, SortedKeys, prefetch};

/// The keys a run affects, grouped per key (and per upstream within a key), before anything is
/// written. Entries are sorted by key.
pub struct AffectedKeys {
    pub key: Vec<String>,
    pub change_rows: u64,
    pub null_key_rows: u64,
    pub distinct_keys: u64,
    /// Upstream names in lexical order; a [`Hit`]'s `upstream` indexes this.
    pub(crate) upstreams: Vec<String>,
    /// Key fields as written (string encodings read as plain `Utf8`).
    pub(crate) key_fields: Vec<Field>,
    pub(crate) keys: SortedKeys,
    pub(crate) overflow: Overflow,
    /// Commit time (epoch µs) of each (upstream, version) seen: provenance says when too.
    pub(crate) commit_ts: HashMap<(u16, i64), i64>,
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
            times.stamps[u][slot] = crate::util::time::format_ms(us.div_euclid(1000));
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
