//! Operations on top of the engine: downstream consumers (consume, ack), status, health, metrics and alerts, audited tracker resets and pauses, watch,
//! the demo lake.

pub mod alerts;
pub mod consume;
pub mod demo;
pub mod health;
pub mod maintain;
pub mod metrics;
pub mod pause;
pub mod reset;
pub mod status;
pub mod watch;
