//! An operator's pause of a pipeline, kept in the tracker beside its upstream rows under
//! `upstream = "@pause"`: who paused it, when and why (the commit that wrote it is in the
//! tracker's audit log too). The row stays after a resume, marked resumed, so the compare-and-set
//! of the next pause has a row to compare with.
//!
//! Row encoding: `last_processed_version` is 1 while paused and 0 once resumed; `updated_by`,
//! `updated_at` and `note` say who, when and why.

use crate::store::tracker::{TrackerRow, PAUSE_ROW};
use crate::util::time::format_ms;

/// A pause in force.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    pub by: String,
    /// When it was paused.
    pub at: Option<String>,
    pub reason: String,
}

impl Pause {
    /// The pause in force for `pipeline` among tracker rows, if any.
    pub fn find(rows: &[TrackerRow], pipeline: &str) -> Option<Pause> {
        let row = pause_row(rows, pipeline)?;
        (row.last_processed_version == Some(1)).then(|| Pause {
            by: row.updated_by.clone().unwrap_or_else(|| "?".into()),
            at: row.updated_at.and_then(format_ms),
            reason: row.note.clone().unwrap_or_default(),
        })
    }

    /// "paused by alice at 2026-12-06 10:00:00 UTC: upstream being rebuilt".
    pub fn describe(&self) -> String {
        let at = self.at.as_deref().map_or(String::new(), |t| format!(" at {t}"));
        format!("paused by {}{at}: {}", self.by, self.reason)
    }
}

/// `pipeline`'s pause row as read (paused or resumed), the compare-and-set condition of the
/// next pause or resume.
pub fn pause_row<'a>(rows: &'a [TrackerRow], pipeline: &str) -> Option<&'a TrackerRow> {
    rows.iter().find(|r| r.pipeline_name == pipeline && r.upstream == PAUSE_ROW)
}

/// The row that pauses (`paused`) or resumes `pipeline`, written now by this operator.
pub fn row(pipeline: &str, paused: bool, reason: &str) -> TrackerRow {
    let mut row = TrackerRow::new(pipeline, PAUSE_ROW);
    row.last_processed_version = Some(i64::from(paused));
    row.stamp(reason);
    row
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pause_is_in_force_until_its_row_says_resumed() {
        let paused = row("p", true, "upstream rebuilt");
        assert_eq!(Pause::find(std::slice::from_ref(&paused), "other"), None);
        let pause = Pause::find(std::slice::from_ref(&paused), "p").expect("paused");
        assert_eq!(pause.reason, "upstream rebuilt");
        assert!(pause.describe().starts_with(&format!("paused by {} at ", pause.by)), "{}", pause.describe());
        assert!(pause.describe().ends_with(": upstream rebuilt"));
        let resumed = row("p", false, "fixed");
        assert_eq!(Pause::find(&[resumed], "p"), None);
    }
}
