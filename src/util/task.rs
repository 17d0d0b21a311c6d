//! Spawned tasks tied to their owner: CPU-heavy parts of a run go to tasks of their own (so they
//! use every core), and when the run's own task is cancelled they must stop with it instead of
//! running on detached, holding leases and writing files nobody will commit.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this handle is dropped.
pub struct Owned<T>(JoinHandle<T>);

/// `tokio::spawn`, aborted with the returned handle.
pub fn spawn_owned<F>(future: F) -> Owned<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    Owned(tokio::spawn(future))
}

impl<T> Future for Owned<T> {
    type Output = Result<T, JoinError>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        Pin::new(&mut self.0).poll(cx)
    }
}

impl<T> Drop for Owned<T> {
    fn drop(&mut self) {
        self.0.abort();
    }
}
