//! Per-pipeline leases: two deltalink processes (two operators, or watch + a manual run) never
//! run or reset the same pipeline at once.
//!
//! A lease is a small JSON object `_leases/<pipeline>.json` under the tracker's location,
//! created with an atomic create-if-absent put (object_store `PutMode::Create`). The holder
//! rewrites it every [`HEARTBEAT`]; a lease whose heartbeat is older than [`TTL`], or whose
//! holder process is gone on this host, has expired and may be taken over.

use std::sync::Arc;
use std::time::Duration;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use deltalake::{ObjectStore, ObjectStoreError, Path};
use serde::{Deserialize, Serialize};

use crate::lake;
use crate::runner::Engine;
use crate::tracker::{now_ms, operator};

pub const HEARTBEAT: Duration = Duration::from_secs(15);
pub const TTL: Duration = Duration::from_secs(60);

/// Who holds a lease, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseHolder {
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub since_ms: i64,
    pub heartbeat_ms: i64,
}

impl LeaseHolder {
    fn me(purpose: &str) -> Self {
        let now = now_ms();
        LeaseHolder {
            operator: operator(),
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.into(),
            since_ms: now,
            heartbeat_ms: now,
        }
    }

    /// Expired: heartbeat too old, or the holder process is gone (same host only).
    pub fn expired(&self) -> bool {
        if now_ms() - self.heartbeat_ms > TTL.as_millis() as i64 {
            return true;
        }
        self.host == hostname() && !process_alive(self.pid)
    }

    pub fn describe(&self) -> String {
        let since = crate::status::format_ms(self.since_ms).unwrap_or_default();
        format!("{} on {} (pid {}, {}) since {since}", self.operator, self.host, self.pid, self.purpose)
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

fn process_alive(pid: u32) -> bool {
    let proc_dir = std::path::Path::new("/proc");
    if !proc_dir.exists() {
        return true; // cannot tell: rely on the TTL
    }
    match std::fs::read_to_string(proc_dir.join(pid.to_string()).join("stat")) {
        // A zombie (state Z) has exited; its parent just has not reaped it yet.
        Ok(stat) => !stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}

/// A held lease; call [`Lease::release`] when done (a crash leaves it to expire).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    path: Path,
    heartbeat: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
#[error("pipeline `{pipeline}` is busy: leased by {holder}\n  wait for it to finish, or if that process is gone the lease expires {ttl}s after its last heartbeat")]
pub struct LeaseHeld {
    pub pipeline: String,
    pub holder: String,
    pub ttl: u64,
}

async fn store_for(engine: &Engine) -> Result<Arc<dyn ObjectStore>> {
    let uri = &engine.config.tracker_uri;
    if uri.scheme() == "file" {
        if let Ok(p) = uri.to_file_path() {
            std::fs::create_dir_all(&p).wrap_err_with(|| format!("cannot create {}", p.display()))?;
        }
    }
    Ok(lake::builder(uri, &engine.config.storage_options)?.build()?.object_store())
}

fn lease_path(pipeline: &str) -> Path {
    Path::from(format!("_leases/{pipeline}.json"))
}

/// The current holder of `pipeline`'s lease, if any (expired or not).
pub async fn current(engine: &Engine, pipeline: &str) -> Result<Option<LeaseHolder>> {
    let store = store_for(engine).await?;
    read(&store, &lease_path(pipeline)).await
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<LeaseHolder>> {
    match store.get(path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            // An unreadable lease (torn write) is treated as expired rather than blocking forever.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(ObjectStoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).wrap_err("cannot read the lease"),
    }
}

/// Take `pipeline`'s lease for `purpose`, or refuse naming who holds it and since when.
pub async fn acquire(engine: &Engine, pipeline: &str, purpose: &str) -> Result<Lease> {
    let store = store_for(engine).await?;
    let path = lease_path(pipeline);
    let me = LeaseHolder::me(purpose);
    for _ in 0..2 {
        let body = PutPayload::from(serde_json::to_vec(&me)?);
        match store.put_opts(&path, body, PutOptions::from(PutMode::Create)).await {
            Ok(_) => {
                let heartbeat = spawn_heartbeat(store.clone(), path.clone(), me.clone());
                return Ok(Lease { store, path, heartbeat });
            }
            Err(ObjectStoreError::AlreadyExists { .. }) => match read(&store, &path).await? {
                Some(holder) if !holder.expired() => {
                    return Err(LeaseHeld { pipeline: pipeline.into(), holder: holder.describe(), ttl: TTL.as_secs() }.into())
                }
                // Expired (or unreadable): remove it and try once more to create ours.
                _ => {
                    tracing::warn!(pipeline, "taking over an expired lease");
                    let _ = store.delete(&path).await;
                }
            },
            Err(e) => {
                let what = format!("the lease of pipeline `{pipeline}` (kept under the tracker)");
                if let Some(problem) = crate::lake::storage_problem(&what, &engine.config.tracker_uri, &e) {
                    return Err(problem.into());
                }
                return Err(e).wrap_err_with(|| format!("cannot write the lease of pipeline `{pipeline}`"));
            }
        }
    }
    Err(eyre!("pipeline `{pipeline}`: another process took the lease at the same moment; try again"))
}

fn spawn_heartbeat(store: Arc<dyn ObjectStore>, path: Path, mut me: LeaseHolder) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            me.heartbeat_ms = now_ms();
            if let Ok(body) = serde_json::to_vec(&me) {
                let _ = store.put(&path, PutPayload::from(body)).await;
            }
        }
    })
}

impl Lease {
    pub async fn release(self) {
        self.heartbeat.abort();
        let _ = self.heartbeat.await;
        if let Err(e) = self.store.delete(&self.path).await {
            tracing::warn!(error = %e, "could not delete lease; it will expire");
        }
    }
}
