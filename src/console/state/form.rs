//! The dry-run forms (reset and replay) and what they share: [`Form`] is the editing (the keys
//! that move, cycle and type), [`DryRunForm`] the protocol — Enter asks the engine for a dry
//! run of exactly the inputs shown, any edit drops it, and only a dry run with a reason can be
//! proposed for confirmation. The reset form lives here; the replay form in `replay.rs`.

use std::path::Path;

use crate::console::msg::{Job, WriteOp};
use crate::console::state::slot::Slot;
use crate::ops::reset::{ResetPlan, ResetTarget};

/// The editing both forms offer (Tab/arrows between fields, ←/→ through choices, typing).
pub trait Form {
    fn move_focus(&mut self, d: isize);
    fn cycle(&mut self, d: isize);
    fn edit(&mut self, f: &mut dyn FnMut(&mut String));
}

/// A form whose first Enter dry-runs its inputs and whose second Enter proposes the write that
/// dry run describes. The console's state drives every such form with the same two functions
/// (`submit_dry_run_form`, `dry_run_loaded`).
pub trait DryRunForm: Form {
    /// What the dry run answers.
    type Plan: Clone;
    /// The operation's name in labels and the log ("reset", "replay").
    const VERB: &'static str;
    fn pipeline(&self) -> &str;
    /// The dry run of exactly the inputs shown (any edit clears it), and the one in flight.
    fn plan(&self) -> &Slot<Result<Self::Plan, String>>;
    fn plan_mut(&mut self) -> &mut Slot<Result<Self::Plan, String>>;
    /// Whether a reason for the audit trail was typed.
    fn has_reason(&self) -> bool;
    fn focus_reason(&mut self);
    /// The job that dry-runs the inputs, or what to fix. Relative paths resolve against `base`.
    fn dry_run_job(&self, base: &Path) -> Result<Job, String>;
    /// The write that `plan` (a dry run of these inputs) describes, or what to fix.
    fn write_op(&self, plan: Self::Plan, base: &Path) -> Result<WriteOp, String>;
}

/// The field `d` steps from `at` in Tab order `order` (wrapping).
pub(crate) fn step_field<T: Copy + PartialEq>(order: &[T], at: T, d: isize) -> T {
    let i = order.iter().position(|f| *f == at).unwrap_or(0) as isize;
    order[(i + d).rem_euclid(order.len() as isize) as usize]
}

/// Which of a pipeline's upstreams a form acts on: one of them, or all (the position after
/// the last, where ←/→ also stops).
#[derive(Clone, Debug)]
pub struct UpstreamScope {
    upstreams: Vec<String>,
    at: usize,
}

impl UpstreamScope {
    /// `upstream` when it is one of `upstreams`, else all of them.
    pub fn new(upstreams: Vec<String>, upstream: Option<&str>) -> Self {
        let at = upstream.and_then(|u| upstreams.iter().position(|x| x == u)).unwrap_or(upstreams.len());
        UpstreamScope { upstreams, at }
    }

    pub fn label(&self) -> String {
        match self.upstreams.get(self.at) {
            Some(u) => u.clone(),
            None => format!("all {} upstreams", self.upstreams.len()),
        }
    }

    /// The engine's upstreams argument: the one chosen, or empty for all.
    pub fn selected(&self) -> Vec<String> {
        self.upstreams.get(self.at).map(|u| vec![u.clone()]).unwrap_or_default()
    }

    pub fn cycle(&mut self, d: isize) {
        let n = self.upstreams.len() as isize + 1;
        self.at = (self.at as isize + d).rem_euclid(n) as usize;
    }
}

/// The kinds of reset target, in the order ←/→ cycles through them.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TargetKind {
    Version,
    Earliest,
    Latest,
    ShiftBy,
    DateTime,
}

impl TargetKind {
    pub const ALL: [TargetKind; 5] =
        [TargetKind::Version, TargetKind::Earliest, TargetKind::Latest, TargetKind::ShiftBy, TargetKind::DateTime];

    pub fn label(self) -> &'static str {
        match self {
            TargetKind::Version => "to version",
            TargetKind::Earliest => "to earliest",
            TargetKind::Latest => "to latest",
            TargetKind::ShiftBy => "shift by",
            TargetKind::DateTime => "to date-time",
        }
    }

    /// What to type in the value field (empty when the kind takes no value).
    pub fn hint(self) -> &'static str {
        match self {
            TargetKind::Version => "N: processed through N, the next run reads N+1 on",
            TargetKind::Earliest => "",
            TargetKind::Latest => "",
            TargetKind::ShiftBy => "-N re-reads N commits, +N skips N",
            TargetKind::DateTime => "2025-01-31 or 2025-01-31 12:00[:00] (UTC) or RFC 3339",
        }
    }

    pub fn takes_value(self) -> bool {
        !self.hint().is_empty()
    }
}

/// The form's fields, in Tab order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FormField {
    Scope,
    Target,
    Value,
    Reason,
}

impl FormField {
    const ORDER: [FormField; 4] = [FormField::Scope, FormField::Target, FormField::Value, FormField::Reason];

    fn step(self, d: isize) -> FormField {
        step_field(&Self::ORDER, self, d)
    }
}

#[derive(Clone, Debug)]
pub struct ResetForm {
    pub pipeline: String,
    pub scope: UpstreamScope,
    pub kind: TargetKind,
    pub value: String,
    pub reason: String,
    pub focus: FormField,
    pub plan: Slot<Result<ResetPlan, String>>,
}

impl ResetForm {
    /// A form for `pipeline`, scoped to `upstream` when given, else to all its upstreams.
    pub fn new(pipeline: &str, upstreams: Vec<String>, upstream: Option<&str>) -> ResetForm {
        ResetForm {
            pipeline: pipeline.to_string(),
            scope: UpstreamScope::new(upstreams, upstream),
            kind: TargetKind::Version,
            value: String::new(),
            reason: String::new(),
            focus: FormField::Target,
            plan: Slot::default(),
        }
    }

    /// The target the inputs describe, or what to fix.
    pub fn target(&self) -> Result<ResetTarget, String> {
        let v = self.value.trim();
        match self.kind {
            TargetKind::Earliest => Ok(ResetTarget::Earliest),
            TargetKind::Latest => Ok(ResetTarget::Latest),
            TargetKind::Version => {
                v.parse().map(ResetTarget::Version).map_err(|_| format!("`{v}` is not a version number"))
            }
            TargetKind::ShiftBy => v
                .trim_start_matches('+')
                .parse()
                .map(ResetTarget::ShiftBy)
                .map_err(|_| format!("`{v}` is not a shift like -10 or +5")),
            TargetKind::DateTime => crate::util::time::parse_instant(v).map(ResetTarget::DateTime),
        }
    }
}

impl Form for ResetForm {
    fn move_focus(&mut self, d: isize) {
        self.focus = self.focus.step(d);
    }

    /// ←/→ on the scope or target field.
    fn cycle(&mut self, d: isize) {
        match self.focus {
            FormField::Scope => self.scope.cycle(d),
            FormField::Target => {
                let all = TargetKind::ALL;
                let i = all.iter().position(|k| *k == self.kind).unwrap_or(0) as isize;
                self.kind = all[(i + d).rem_euclid(all.len() as isize) as usize];
            }
            FormField::Value | FormField::Reason => return,
        }
        self.plan.clear();
    }

    /// Edit the focused text field; the dry run no longer matches, so it is dropped.
    fn edit(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self.focus {
            FormField::Value => f(&mut self.value),
            FormField::Reason => f(&mut self.reason),
            FormField::Scope | FormField::Target => return,
        }
        if self.focus == FormField::Value {
            self.plan.clear();
        }
    }
}

impl DryRunForm for ResetForm {
    type Plan = ResetPlan;
    const VERB: &'static str = "reset";

    fn pipeline(&self) -> &str {
        &self.pipeline
    }

    fn plan(&self) -> &Slot<Result<ResetPlan, String>> {
        &self.plan
    }

    fn plan_mut(&mut self) -> &mut Slot<Result<ResetPlan, String>> {
        &mut self.plan
    }

    fn has_reason(&self) -> bool {
        !self.reason.trim().is_empty()
    }

    fn focus_reason(&mut self) {
        self.focus = FormField::Reason;
    }

    fn dry_run_job(&self, _base: &Path) -> Result<Job, String> {
        let target = self.target()?;
        Ok(Job::PlanReset { pipeline: self.pipeline.clone(), upstreams: self.scope.selected(), target })
    }

    fn write_op(&self, plan: ResetPlan, _base: &Path) -> Result<WriteOp, String> {
        Ok(WriteOp::Reset { plan, reason: self.reason.trim().to_string() })
    }
}

