//! Delta I/O: opening tables and reading their logs, pinned change-feed reads, the tracker
//! table (with consumers' progress and operators' pauses), the lease, and the link table with its merge. Never sees the engine.

pub mod cdf;
pub mod consumer;
pub mod counted;
pub mod lake;
pub mod lease;
pub mod link;
pub mod pause;
pub mod probe;
pub mod tracker;
