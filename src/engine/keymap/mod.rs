//! Key mapping: from change rows to the distinct entity keys they affect, with provenance.
//!
//! Every change type counts (insert, delete, both images of an update, and snapshot rows), so
//! a key column that changed value marks both the old and the new key. Change rows stream
//! into one hash map per run: memory grows with distinct keys, not with change rows.
//!
//! Bottom to top: `table` (the hash tables), `provenance`, `project` (source rows to key
//! columns), `affected` (the result), `group` (the fold over change rows).

mod affected;
mod group;
mod project;
mod provenance;
mod table;

pub use self::affected::{AffectedKeys, PreviewRow};
pub use self::group::group_changes;
pub use self::project::{mem_table, project_source, project_sql_output};
