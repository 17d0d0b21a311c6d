//! Provenance: which upstream, commit and change type marked a key, as text and as ranks.

use deltalake::arrow::array::Array;
use deltalake::arrow::array::AsArray;
use std::collections::HashMap;

use color_eyre::eyre::Result;
use deltalake::arrow::datatypes::DataType;

/// Change types in lexical order: a change's rank packs into `version * 8 + rank`, so the
/// latest change of a key is a plain max (a tie in version resolves as ORDER BY version,
/// change type would). Rank 7 is an unknown change type.
pub(crate) const CHANGE_TYPE_RANKS: [&str; 6] = ["delete", "insert", "join", "snapshot", "update_postimage", "update_preimage"];

pub(crate) fn change_type_of(packed: i64) -> &'static str {
    CHANGE_TYPE_RANKS.get((packed & 7) as usize).copied().unwrap_or("unknown")
}

/// Formatted commit times by upstream and version, indexed instead of hashed: looked up once
/// per key and upstream of a run (millions of times), over a run's few versions.
pub(crate) struct CommitTimes {
    /// Per upstream, its lowest version seen.
    pub(crate) base: Vec<i64>,
    pub(crate) stamps: Vec<Vec<Option<String>>>,
}

impl CommitTimes {
    pub(crate) fn get(&self, upstream: u16, version: i64) -> Option<&str> {
        let u = upstream as usize;
        let slot = usize::try_from(version - *self.base.get(u)?).ok()?;
        self.stamps[u].get(slot)?.as_deref()
    }
}

/// Provenance texts of every (upstream, version, change type) in the commit-time spans,
/// formatted once and numbered: a run's millions of keys share a few of them (formatting per
/// key and upstream was a tenth of a large run; then holding each key's copy, most of its
/// memory). Texts outside the spans (no commit time) are added as they come.
pub(crate) struct ProvenanceTexts {
    /// Per upstream, `base version * 8` and where its texts start in `all`: `packed - base`
    /// counts from there.
    pub(crate) base: Vec<(i64, usize, usize)>,
    pub(crate) all: Vec<String>,
    pub(crate) added: HashMap<String, i32>,
}

impl ProvenanceTexts {
    pub(crate) fn new(stamps: &CommitTimes, upstreams: &[String]) -> Self {
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

    pub(crate) fn index(&self, upstream: u16, packed: i64) -> Option<i32> {
        let &(base, start, len) = self.base.get(upstream as usize)?;
        let at = usize::try_from(packed - base).ok().filter(|at| *at < len)?;
        i32::try_from(start + at).ok()
    }

    pub(crate) fn add(&mut self, text: &str) -> i32 {
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
pub(crate) fn provenance_text(text: &mut String, name: &str, packed: i64, stamp: Option<&str>) {
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
pub(crate) fn push_decimal(text: &mut String, v: i64) {
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

/// Rank of each row's change type (see [`CHANGE_TYPE_RANKS`]). A dictionary-encoded column
/// (as CDF scans read `_change_type`) is ranked through its few values, not spelled out per row.
pub(crate) fn change_ranks(column: &deltalake::arrow::array::ArrayRef) -> Result<Vec<u8>> {
    if let Some(dictionary) = column.as_any_dictionary_opt() {
        let value_ranks = change_ranks(dictionary.values())?;
        let keys = dictionary.normalized_keys();
        return Ok((0..column.len()).map(|i| if column.is_null(i) { 7 } else { value_ranks.get(keys[i]).copied().unwrap_or(7) }).collect());
    }
    let plain = match column.data_type() {
        DataType::Utf8 => column.clone(),
        _ => deltalake::arrow::compute::cast(column, &DataType::Utf8)?,
    };
    let names = plain.as_string::<i32>();
    // A change file's rows come in runs of one change type (an update's pre- and post-images,
    // a delete's rows): the previous row's rank is reused while its name repeats (profiled: the
    // lookup per row was ~2 % of a from-scratch heavy-churn read's CPU, on the reading task).
    let mut last: Option<(&str, u8)> = None;
    Ok((0..names.len())
        .map(|i| {
            if names.is_null(i) {
                return 7;
            }
            let name = names.value(i);
            match last {
                Some((seen, rank)) if seen == name => rank,
                _ => {
                    let rank = rank_of(name);
                    last = Some((name, rank));
                    rank
                }
            }
        })
        .collect())
}

fn rank_of(name: &str) -> u8 {
    CHANGE_TYPE_RANKS.iter().position(|t| *t == name).map_or(7, |r| r as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use deltalake::arrow::array::{ArrayRef, DictionaryArray, StringArray};
    use deltalake::arrow::datatypes::Int32Type;
    use std::sync::Arc;

    #[test]
    fn change_ranks_follow_each_rows_name_through_runs_nulls_and_dictionaries() -> Result<()> {
        let names = [Some("update_preimage"), Some("update_preimage"), None, Some("update_postimage"), Some("insert"), Some("insert"), Some("delete"), Some("bogus")];
        let expected: Vec<u8> = names.iter().map(|n| n.map_or(7, rank_of)).collect();
        assert_eq!(expected, vec![5, 5, 7, 4, 1, 1, 0, 7]);
        let plain: ArrayRef = Arc::new(StringArray::from(names.to_vec()));
        assert_eq!(change_ranks(&plain)?, expected);
        let dictionary: ArrayRef = Arc::new(names.iter().copied().collect::<DictionaryArray<Int32Type>>());
        assert_eq!(change_ranks(&dictionary)?, expected);
        Ok(())
    }
}
