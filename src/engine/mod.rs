//! The engine: maps change rows to keys (directly or through SQL) and runs a pipeline exactly
//! once over a pinned range. One file per part of a run: [`plan`](self) (pin, decide ranges,
//! check key types), `read` (change rows, `sql` relations, a cycle's shared reads), `write`
//! (the link table), `protocol` (the exactly-once run alone), `cycle` (many pipelines at once),
//! `preview`, `replay`, and the `report`s they return.

pub mod keymap;
pub mod sqlmap;

mod core;
mod cycle;
mod observe;
mod options;
mod plan;
mod preview;
mod protocol;
mod prune;
mod read;
mod replay;
mod report;
mod write;

pub use self::core::{session, Engine, DEFAULT_LINK_FILE_SIZE};
pub use self::observe::{lag_versions, Observations, RunRecord, LAG_OBSERVATIONS};
pub use self::options::{RunEvent, RunOptions, Step};
pub(crate) use self::options::test_point;
pub use self::report::{JoinedRead, Outcome, Preview, ReadRangeView, Replay, ReplayReport, RunReport, UpstreamRead};
