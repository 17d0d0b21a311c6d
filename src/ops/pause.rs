//! Pause and resume a pipeline from the keyboard or the command line: the operator's own
//! `paused` state, recorded in the tracker (audited like a reset) so every process sees it —
//! `watch` and `run --all` skip the pipeline, `run NAME` refuses it, health says `paused`.
//!
//! A pause takes no lease: a run already under way finishes (its keys are not lost), and the
//! next one is refused. Resets, replays and maintenance still work: a pause is how an operator
//! keeps the scheduler off a pipeline while fixing it.

use color_eyre::eyre::{eyre, Result};
use serde::Serialize;

use crate::engine::Engine;
use crate::store::lease;
use crate::store::pause::{self, Pause};
use crate::store::tracker::{Audit, RowWrite};

/// What a pause or resume did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Paused {
    /// Committed; `run_in_progress`: a run held the pipeline then and will finish.
    Changed { run_in_progress: bool },
    /// It was already in that state: nothing written (the pause in force, when pausing).
    Already { pause: Option<Pause> },
}

/// Pause `pipeline` (`paused`) or resume it, recording `reason` and the operator.
pub async fn set_paused(engine: &Engine, pipeline: &str, paused: bool, reason: &str) -> Result<Paused> {
    let verb = if paused { "pause" } else { "resume" };
    engine.refuse_if_read_only(&format!("{verb} of pipeline `{pipeline}`"))?;
    engine.config.pipeline(pipeline)?;
    let mut tracker = engine.tracker().await?;
    let rows = tracker.pause_rows(Some(pipeline)).await?;
    let current = Pause::find(&rows, pipeline);
    if current.is_some() == paused {
        return Ok(Paused::Already { pause: current });
    }
    let mut audit = Audit::new(verb, pipeline);
    audit.reason = Some(reason.to_string());
    let write = RowWrite::new(pause::row(pipeline, paused, reason), pause::pause_row(&rows, pipeline).cloned());
    tracker.upsert(&[write], &audit).await.map_err(|e| match e.downcast_ref::<crate::Error>() {
        Some(crate::Error::Fenced { .. }) => eyre!(
            "pipeline `{pipeline}`: another operator paused or resumed it while this {verb} ran; nothing was written\n  fix: `deltalink status` shows its state now; {verb} again if still needed"
        ),
        _ => e,
    })?;
    Ok(Paused::Changed { run_in_progress: lease::held(&engine.config, pipeline).await })
}
