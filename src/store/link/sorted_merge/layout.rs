//! Where a run's keys fall among the link table's files: each file's key range (from its
//! min/max statistics or its first keys), the slot of the key space each range owns, and which
//! files a run must rewrite or may only mark.

use color_eyre::eyre::WrapErr;
use deltalake::arrow::array::{Array, AsArray};
use std::sync::Arc;

use color_eyre::eyre::Result;
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::compute::cast;
use deltalake::arrow::buffer::ScalarBuffer;
use deltalake::arrow::datatypes::{DataType, Int64Type};
use deltalake::kernel::{Add, AddCDCFile, DeletionVectorDescriptor, Remove};
use deltalake::{DeltaTable, ObjectStore, Path};
use roaring::RoaringTreemap;

use crate::store::link::deletion_vector;

/// One existing data file of the link table.
pub(crate) struct TargetFile {
    pub(crate) path: Path,
    pub(crate) remove: Remove,
    /// The file as it is added again with a new deletion vector.
    pub(crate) add: Add,
    /// (min, max) of the first key column from the file's statistics, when it is an integer or
    /// a string column.
    pub(crate) first_key_range: Option<(KeyBound, KeyBound)>,
    /// Rows in the file (its statistics), counting those its deletion vector deletes.
    pub(crate) rows: Option<u64>,
}

impl TargetFile {
    pub(crate) fn deletion_vector(&self) -> Option<&DeletionVectorDescriptor> {
        self.remove.deletion_vector.as_ref()
    }

    /// How many rows its deletion vector deletes (as the log says).
    fn deleted_count(&self) -> u64 {
        self.deletion_vector().map_or(0, |dv| dv.cardinality.max(0) as u64)
    }

    /// The rows its deletion vector deletes (none without one).
    pub(crate) async fn deleted_rows(&self, store: &Arc<dyn ObjectStore>) -> Result<RoaringTreemap> {
        match self.deletion_vector() {
            Some(dv) => deletion_vector::read(store, dv).await.wrap_err_with(|| format!("link-table file {}", self.path)),
            None => Ok(RoaringTreemap::new()),
        }
    }
}

/// Whether the table takes deletion vectors (`delta.enableDeletionVectors`, which delta-rs
/// only lets a table set with the table feature in its protocol).
pub(crate) fn takes_deletion_vectors(table: &DeltaTable) -> Result<bool> {
    Ok(table.snapshot()?.snapshot().table_properties().enable_deletion_vectors == Some(true))
}

/// Files a key range may hold before a MERGE touching it rewrites it whole (see [`marking_pays`]).
pub(crate) const MAX_FILES_PER_RANGE: usize = 4;

/// Whether a key range's touched rows are better marked deleted, and written anew in a file of
/// their own, than the range rewritten: while the range has few files, and at most half of its
/// rows would then be deleted ones (`incoming`, the run's keys in the range, counts new keys
/// too: an upper bound of the rows it marks). Reads of a range pay for its deleted rows and
/// its extra files; the rewrite that follows puts it back as one set of disjoint files.
pub(crate) fn marking_pays(files: &[TargetFile], incoming: usize) -> bool {
    let rows: Option<u64> = files.iter().map(|f| f.rows).sum();
    let deleted: u64 = files.iter().map(TargetFile::deleted_count).sum();
    files.len() < MAX_FILES_PER_RANGE && rows.is_some_and(|rows| (deleted + incoming as u64) * 2 <= rows)
}

/// The table's files sorted by their first key's range, when every file has a range and no two
/// ranges overlap (as deltalink writes them copy-on-write); otherwise the files as they were.
pub(crate) fn disjoint_layout(mut files: Vec<TargetFile>) -> Result<Vec<TargetFile>, Vec<TargetFile>> {
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
pub(crate) fn key_ranges(mut files: Vec<TargetFile>, overlays: bool) -> Result<Vec<Vec<TargetFile>>, Vec<TargetFile>> {
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
pub(crate) fn slot_groups(ranges: Vec<Vec<TargetFile>>, keys: &FirstKeys) -> (Vec<Group>, std::ops::Range<usize>) {
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
pub(crate) fn prune(files: Vec<TargetFile>, keys: Option<&FirstKeys>) -> Vec<TargetFile> {
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
pub(crate) fn group_by_file(candidates: Vec<TargetFile>, first_key: Option<&FirstKeys>, rows: usize) -> Vec<Group> {
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
pub(crate) struct Group {
    pub(crate) files: Vec<TargetFile>,
    pub(crate) rows: std::ops::Range<usize>,
    pub(crate) own: bool,
}

/// What rewriting one group of files produced.
#[derive(Default)]
pub(crate) struct Rewrite {
    pub(crate) removes: Vec<Remove>,
    pub(crate) adds: Vec<deltalake::kernel::Add>,
    /// Of `removes`, files added again with a deletion vector instead of rewritten.
    pub(crate) marked: usize,
    pub(crate) updated: u64,
    /// Touched rows before and after, and new keys merged into the rewritten files.
    pub(crate) pre: Vec<RecordBatch>,
    pub(crate) post: Vec<RecordBatch>,
    pub(crate) inserts: Vec<RecordBatch>,
    /// Post-images and inserts in one batch, each row with its change type (the new rows of a
    /// marked range are both, in key order: not copied apart).
    pub(crate) labelled: Option<(RecordBatch, ArrayRef)>,
    /// The group's new keys when none of its files held a touched key (nothing rewritten).
    pub(crate) leftover: Option<RecordBatch>,
    /// Rows inserted, and the change-data file of `pre`, `post`, `inserts` and `labelled`,
    /// written by the group's own task (one file at the end of the MERGE was a serial tenth
    /// of it).
    pub(crate) inserted: u64,
    pub(crate) cdc: Option<AddCDCFile>,
}

/// A file whose touched rows [`Job::mark_and_overlay`] marks deleted: its deletion vector so
/// far, the touched rows' indices, and those rows as they were.
pub(crate) struct Marked<'a> {
    pub(crate) file: &'a TargetFile,
    pub(crate) deleted: RoaringTreemap,
    pub(crate) rows: Vec<u32>,
    pub(crate) pre: RecordBatch,
}

/// The link table's data files, with the first key column's range from their statistics (read
/// as the run's first keys are typed).
pub(crate) fn target_files(table: &DeltaTable, first_key: &str, keys: Option<&FirstKeys>) -> Result<Vec<TargetFile>> {
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
pub(crate) fn loose_bounds(stats: Option<String>) -> Option<String> {
    let mut value: serde_json::Value = serde_json::from_str(stats.as_deref()?).ok()?;
    value.as_object_mut()?.insert("tightBounds".into(), serde_json::Value::Bool(false));
    Some(value.to_string())
}

/// The incoming rows' first key column as sorted i64s, when it is an integer column.
pub(crate) fn first_int_keys(incoming: &RecordBatch, index: usize) -> Result<Option<ScalarBuffer<i64>>> {
    int_values(incoming.column(index))
}

/// A bound of a link file's first-key range (from its statistics): integer or string, as the
/// key column is. Strings order byte by byte, as parquet's statistics and the sorted keys do
/// (a bound a writer truncated is still a bound: the minimum cut short, the maximum rounded up).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum KeyBound {
    Int(i64),
    Text(String),
}

/// The run's first key column, sorted (see [`sorted_and_unique`]), by which link files' key
/// ranges route and prune: integers as i64s, strings as they are.
pub(crate) enum FirstKeys {
    Int(ScalarBuffer<i64>),
    Text(StringArray),
}

impl FirstKeys {
    /// `None` when the column is neither, or holds a NULL (the files are then taken as they are).
    pub(crate) fn of(incoming: &RecordBatch, index: usize) -> Result<Option<Self>> {
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
pub(crate) fn text_upper_bound(max: &str) -> Option<String> {
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
pub(crate) fn int_values(column: &ArrayRef) -> Result<Option<ScalarBuffer<i64>>> {
    if !matches!(column.data_type(), DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64) {
        return Ok(None);
    }
    let ints = cast(column, &DataType::Int64)?;
    // Shared, not copied (an i64 column is not cast either).
    Ok(Some(ints.as_primitive::<Int64Type>().values().clone()))
}
