//! One load in flight and its last result. Each thing the console loads in the background (a
//! link page, a preview, pending row counts, the tracker, a form's dry run) keeps one of these:
//! a newer request supersedes the one in flight, and a result lands only if it is the one the
//! slot waits for.

use crate::console::msg::TaskId;

#[derive(Clone, Debug)]
pub struct Slot<T> {
    /// The last result that landed (kept while a newer load runs, so the view does not blank).
    pub value: Option<T>,
    /// The task whose result the slot waits for.
    pub loading: Option<TaskId>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Slot { value: None, loading: None }
    }
}

impl<T> Slot<T> {
    pub fn is_loading(&self) -> bool {
        self.loading.is_some()
    }

    /// Wait for `id` from now on (a load it supersedes was stopped first: see [`Slot::stop`]).
    pub fn start(&mut self, id: TaskId) {
        self.loading = Some(id);
    }

    /// Stop waiting (the load was superseded or cancelled elsewhere); the task to cancel.
    pub fn stop(&mut self) -> Option<TaskId> {
        self.loading.take()
    }

    /// Whether a result of task `id` is for this slot: the task it waits for, or any when it
    /// waits for none (a result nobody superseded).
    pub fn wants(&self, id: TaskId) -> bool {
        self.loading.is_none_or(|l| l == id)
    }

    /// Take the result of task `id` if the slot wants it.
    pub fn land(&mut self, id: TaskId, value: T) -> bool {
        if !self.wants(id) {
            return false;
        }
        self.loading = None;
        self.value = Some(value);
        true
    }

    /// Task `id` ended without a result: stop waiting if the slot waited for it.
    pub fn forget(&mut self, id: TaskId) {
        if self.loading == Some(id) {
            self.loading = None;
        }
    }

    /// Forget the value (what it answered no longer matches what is shown).
    pub fn clear(&mut self) {
        self.value = None;
    }
}

impl<T, E> Slot<Result<T, E>> {
    /// The value when the last load succeeded.
    pub fn ok(&self) -> Option<&T> {
        self.value.as_ref().and_then(|v| v.as_ref().ok())
    }
}
