//! deltalink: reads the Change Data Feed of upstream Delta tables, maps change rows to the
//! downstream entity keys they affect, and MERGEs those keys into one Delta link table per
//! pipeline, with a Delta tracker table recording how far each pipeline has read each upstream.
//!
//! Module map (one per concept of the design brief):
//! - [`config`]: the TOML contract; [`lake`]: opening tables and reading their logs;
//! - [`cdf`]: change-feed reads over pinned ranges; [`keymap`]: change rows → keys;
//! - [`link`]: the link table; [`tracker`]: progress and audit; [`runner`]: a run, exactly once;
//! - [`status`]: lag and versions; [`demo`]: the built-in demo lake; [`cli`]: the command line;
//! - [`who`]: the operator and host recorded in the audit trail and the lease.

pub mod cdf;
pub mod cli;
pub mod config;
pub mod console;
pub mod demo;
mod error;
pub mod keymap;
pub mod lake;
pub mod lease;
pub mod link;
pub mod reset;
pub mod runner;
pub mod sqlmap;
pub mod status;
mod task;
pub mod tracker;
pub mod watch;
pub mod who;

pub use config::Config;
pub use error::Error;
pub use runner::{Engine, RunOptions, RunReport};
