//! Operations on top of the engine: status, health and metrics, audited tracker resets, watch,
//! the demo lake.

pub mod demo;
pub mod health;
pub mod metrics;
pub mod reset;
pub mod status;
pub mod watch;
