//! Operations on top of the engine: status, health, metrics and alerts, audited tracker resets, watch,
//! the demo lake.

pub mod alerts;
pub mod demo;
pub mod health;
pub mod metrics;
pub mod reset;
pub mod status;
pub mod watch;
