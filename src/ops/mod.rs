//! Operations on top of the engine: status, audited tracker resets, watch, the demo lake.

pub mod demo;
pub mod reset;
pub mod status;
pub mod watch;
