//! Helpers with no knowledge of Delta or the engine: time formatting, arrow types, hashing,
//! owned tasks, who is running deltalink, and the cores the console's engine uses. Nothing here imports the rest of the crate.

pub mod arrow;
pub mod cpu;
pub mod hash;
pub(crate) mod task;
pub mod time;
pub mod who;
