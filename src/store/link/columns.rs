//! The link table's own columns and what a write of it reports: the vocabulary the link module
//! and its sorted-key MERGE share (kept below both, so neither imports the other for it).

pub const PIPELINE_COL: &str = "pipeline_name";
pub const RUN_ID_COL: &str = "run_id";
pub const LAST_CHANGE_COL: &str = "last_change_ts";
pub const UPSTREAMS_COL: &str = "upstreams";
pub const PROVENANCE_COL: &str = "provenance";
pub const CREATED_COL: &str = "created_at";
pub const UPDATED_COL: &str = "updated_at";

/// Whether `name` is one of the link table's own columns (not a key column).
pub fn is_link_column(name: &str) -> bool {
    [PIPELINE_COL, RUN_ID_COL, LAST_CHANGE_COL, UPSTREAMS_COL, PROVENANCE_COL, CREATED_COL, UPDATED_COL].contains(&name)
}

/// What a link-table write did.
#[derive(Debug, Clone, Copy, Default)]
pub struct LinkWriteMetrics {
    pub inserted: u64,
    pub updated: u64,
    /// Existing link-table files the write rewrote (a first write rewrites none).
    pub files_rewritten: u64,
    /// Existing link-table files given a deletion vector for the rows the write replaced,
    /// instead of being rewritten.
    pub files_marked: u64,
    /// Set by the caller that timed the write.
    pub duration: std::time::Duration,
}
