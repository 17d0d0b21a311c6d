//! The replay form: which upstreams, which version range, into which table, why. As with the
//! reset form, Enter first asks the engine for a dry run (a `replay` without `execute`); only
//! a dry run of exactly the inputs shown can be proposed for confirmation.

use std::path::Path;

use crate::console::msg::{Job, WriteOp};
use crate::console::state::form::{step_field, DryRunForm, Form, UpstreamScope};
use crate::console::state::slot::Slot;
use crate::engine::{Replay, ReplayReport};

/// The form's fields, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplayField {
    Scope,
    From,
    To,
    Into,
    Reason,
}

impl ReplayField {
    const ORDER: [ReplayField; 5] =
        [ReplayField::Scope, ReplayField::From, ReplayField::To, ReplayField::Into, ReplayField::Reason];

    fn step(self, d: isize) -> ReplayField {
        step_field(&Self::ORDER, self, d)
    }
}

#[derive(Clone, Debug)]
pub struct ReplayForm {
    pub pipeline: String,
    pub scope: UpstreamScope,
    pub from: String,
    /// Empty: up to each upstream's latest version.
    pub to: String,
    /// Empty: the pipeline's own link table; else a scratch table at this path or URI.
    pub into: String,
    pub reason: String,
    pub focus: ReplayField,
    pub plan: Slot<Result<ReplayReport, String>>,
}

impl ReplayForm {
    pub fn new(pipeline: &str, upstreams: Vec<String>, upstream: Option<&str>) -> ReplayForm {
        ReplayForm {
            pipeline: pipeline.to_string(),
            scope: UpstreamScope::new(upstreams, upstream),
            from: String::new(),
            to: String::new(),
            into: String::new(),
            reason: String::new(),
            focus: ReplayField::From,
            plan: Slot::default(),
        }
    }

    /// Whether the replay writes into the pipeline's own link table (not a scratch table).
    pub fn into_production(&self) -> bool {
        self.into.trim().is_empty()
    }

    /// The replay the inputs describe (a dry run unless `execute`), or what to fix. A relative
    /// `into` path resolves against `base` (the console passes the config file's folder).
    pub fn replay(&self, execute: bool, base: &Path) -> Result<Replay, String> {
        let from = self.from.trim();
        let from_version = from.parse().map_err(|_| format!("from: `{from}` is not a version number"))?;
        let to = self.to.trim();
        let to_version =
            if to.is_empty() { None } else { Some(to.parse().map_err(|_| format!("to: `{to}` is not a version number"))?) };
        let into = match self.into.trim() {
            "" => None,
            path => Some(crate::config::resolve_table_uri(path, base).map_err(|e| format!("into: {e}"))?),
        };
        let reason = self.reason.trim();
        Ok(Replay {
            pipeline: self.pipeline.clone(),
            from_version,
            to_version,
            upstreams: self.scope.selected(),
            into,
            execute,
            reason: (!reason.is_empty()).then(|| reason.to_string()),
        })
    }
}

impl Form for ReplayForm {
    fn move_focus(&mut self, d: isize) {
        self.focus = self.focus.step(d);
    }

    /// ←/→ on the scope field.
    fn cycle(&mut self, d: isize) {
        if self.focus == ReplayField::Scope {
            self.scope.cycle(d);
            self.plan.clear();
        }
    }

    /// Edit the focused text field; a dry run of other inputs no longer applies.
    fn edit(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self.focus {
            ReplayField::From => f(&mut self.from),
            ReplayField::To => f(&mut self.to),
            ReplayField::Into => f(&mut self.into),
            ReplayField::Reason => f(&mut self.reason),
            ReplayField::Scope => return,
        }
        if self.focus != ReplayField::Reason {
            self.plan.clear();
        }
    }
}

impl DryRunForm for ReplayForm {
    type Plan = ReplayReport;
    const VERB: &'static str = "replay";

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn plan(&self) -> &Slot<Result<ReplayReport, String>> {
        &self.plan
    }

    fn plan_mut(&mut self) -> &mut Slot<Result<ReplayReport, String>> {
        &mut self.plan
    }

    fn has_reason(&self) -> bool {
        !self.reason.trim().is_empty()
    }

    fn focus_reason(&mut self) {
        self.focus = ReplayField::Reason;
    }

    fn dry_run_job(&self, base: &Path) -> Result<Job, String> {
        self.replay(false, base).map(Job::PlanReplay)
    }

    fn write_op(&self, dry_run: ReplayReport, base: &Path) -> Result<WriteOp, String> {
        self.replay(true, base).map(|replay| WriteOp::Replay { replay, dry_run })
    }
}
