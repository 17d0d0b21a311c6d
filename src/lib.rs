//! deltalink: reads the Change Data Feed of upstream Delta tables, maps change rows to the
//! downstream entity keys they affect, and MERGEs those keys into one Delta link table per
//! pipeline, with a Delta tracker table recording how far each pipeline has read each upstream.
//!
//! Layers, each importing only from the ones before it (`tests/it/architecture.rs` keeps it so):
//! - [`util`]: time, arrow helpers, hashing, owned tasks, who runs us — no crate imports;
//! - [`config`] (the TOML contract) and [`Error`] (errors an operator can act on);
//! - [`store`]: Delta I/O — lake, change feed, tracker, lease, link table;
//! - [`engine`]: key mapping and the exactly-once run;
//! - [`ops`]: status, resets, watch, the demo lake;
//! - [`describe`]: the words both front ends use for plans, ranges and steps;
//! - [`console`]: the terminal console; [`cli`]: the command line.

pub mod util;

pub mod config;
mod error;

pub mod store;

pub mod engine;

pub mod ops;

pub mod describe;

pub mod console;

pub mod cli;

pub use config::Config;
pub use engine::{Engine, RunOptions, RunReport};
pub use error::Error;
