//! Helpers with no knowledge of Delta or the engine: time formatting, arrow types, hashing,
//! owned tasks, and who is running deltalink. Nothing here imports the rest of the crate.

pub mod arrow;
pub mod hash;
pub(crate) mod task;
pub mod time;
pub mod who;
