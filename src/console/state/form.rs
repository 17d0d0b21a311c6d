//! The reset form: which upstreams, which target, why. Submitting it first asks the engine
//! for a dry run (`plan_reset`); only a planned reset can be proposed for confirmation.
//! [`Form`] is what it shares with the replay form: the keys that move, cycle and edit.


use crate::ops::reset::{ResetPlan, ResetTarget};

use crate::console::msg::TaskId;

/// The editing both forms offer (Tab/arrows between fields, ←/→ through choices, typing).
pub trait Form {
    fn move_focus(&mut self, d: isize);
    fn cycle(&mut self, d: isize);
    fn edit(&mut self, f: &mut dyn FnMut(&mut String));
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
        let i = Self::ORDER.iter().position(|f| *f == self).unwrap_or(0) as isize;
        Self::ORDER[(i + d).rem_euclid(Self::ORDER.len() as isize) as usize]
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
    /// The dry run of exactly the inputs shown (any edit clears it).
    pub plan: Option<Result<ResetPlan, String>>,
    pub planning: Option<TaskId>,
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
            plan: None,
            planning: None,
        }
    }

    /// The planned reset, when a dry run of the current inputs succeeded.
    pub fn planned(&self) -> Option<&ResetPlan> {
        self.plan.as_ref().and_then(|p| p.as_ref().ok())
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
        self.plan = None;
    }

    /// Edit the focused text field; the dry run no longer matches, so it is dropped.
    fn edit(&mut self, f: &mut dyn FnMut(&mut String)) {
        match self.focus {
            FormField::Value => f(&mut self.value),
            FormField::Reason => f(&mut self.reason),
            FormField::Scope | FormField::Target => return,
        }
        if self.focus == FormField::Value {
            self.plan = None;
        }
    }
}

