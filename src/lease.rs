//! Per-pipeline leases: two deltalink processes (two operators, or watch + a manual run) never
//! run or reset the same pipeline at once.
//!
//! A lease is a small JSON object under the tracker's location, one per *generation*:
//! `_leases/<pipeline>/<generation>.json`, created only with an atomic create-if-absent put
//! (object_store `PutMode::Create`). The newest generation is the lease. The holder rewrites its
//! object every [`HEARTBEAT`]; a lease whose heartbeat is older than [`TTL`], or whose holder
//! process is gone on this host, has expired. Taking over an expired generation N means creating
//! generation N+1: of several processes taking over at the same moment exactly one create
//! succeeds (a delete-then-create takeover let two of them through). The winner then deletes
//! the older generations.
//!
//! A lease also ends when its [`Lease`] is dropped without [`Lease::release`] — the run's task
//! was cancelled (the console's cancel aborts it) or panicked: the process keeps running, so
//! neither rule above would free the pipeline before the TTL. Each lease carries a token; the
//! tokens of the leases this process holds live in [`LIVE`], and a lease of this process whose
//! token is no longer there is stale. Heartbeats and releases only touch a lease object that
//! still carries their token, so a holder that stalled past its TTL never clobbers its
//! successor's.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use futures::TryStreamExt;
use deltalake::{ObjectStore, ObjectStoreError, Path};
use serde::{Deserialize, Serialize};

use crate::lake;
use crate::runner::Engine;
use crate::tracker::{now_ms, operator};

pub const HEARTBEAT: Duration = Duration::from_secs(15);
pub const TTL: Duration = Duration::from_secs(60);

/// Tokens of the leases held by live [`Lease`] values of this process.
static LIVE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

fn live(token: &str) -> bool {
    LIVE.lock().map(|set| set.contains(token)).unwrap_or(true)
}

/// Who holds a lease, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseHolder {
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub since_ms: i64,
    pub heartbeat_ms: i64,
    /// Identifies one holding (older leases have none).
    #[serde(default)]
    pub token: String,
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
            token: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// Expired: heartbeat too old, the holder process is gone (same host only), or the holder
    /// is this process and dropped the lease (a cancelled run).
    pub fn expired(&self) -> bool {
        if now_ms() - self.heartbeat_ms > TTL.as_millis() as i64 {
            return true;
        }
        let here = self.host == hostname();
        (here && !process_alive(self.pid)) || (here && self.pid == std::process::id() && !live(&self.token))
    }

    fn same_holding(&self, other: &LeaseHolder) -> bool {
        (&self.host, self.pid, self.since_ms, &self.token) == (&other.host, other.pid, other.since_ms, &other.token)
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

/// A held lease; call [`Lease::release`] when done (a crash leaves it to expire; a drop frees
/// it for this process at once and deletes it in the background).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    generation: Generation,
    me: LeaseHolder,
    heartbeat: tokio::task::JoinHandle<()>,
    released: bool,
    /// Keeps the token live while this value lives.
    _registered: Registered,
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

/// One generation of a pipeline's lease: where its object lives.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Generation {
    pipeline: String,
    number: u64,
}

impl Generation {
    fn path(&self) -> Path {
        object_path(&self.pipeline, self.number)
    }

    fn next(&self) -> Generation {
        Generation { pipeline: self.pipeline.clone(), number: self.number + 1 }
    }
}

/// The object of `pipeline`'s lease generation `number` (zero-padded so names sort by number).
pub fn object_path(pipeline: &str, number: u64) -> Path {
    Path::from(format!("_leases/{pipeline}/{number:020}.json"))
}

/// The generations of `pipeline`'s lease that exist, oldest first.
async fn generations(store: &Arc<dyn ObjectStore>, pipeline: &str) -> Result<Vec<Generation>> {
    let prefix = Path::from(format!("_leases/{pipeline}"));
    let objects: Vec<_> = store.list(Some(&prefix)).try_collect().await.wrap_err("cannot list the lease")?;
    let mut found: Vec<Generation> = objects
        .iter()
        .filter_map(|o| o.location.filename()?.strip_suffix(".json")?.parse().ok())
        .map(|number| Generation { pipeline: pipeline.into(), number })
        .collect();
    found.sort_by_key(|g| g.number);
    Ok(found)
}

/// The newest generation and its holder (`None` when unreadable, e.g. deleted meanwhile).
async fn newest(store: &Arc<dyn ObjectStore>, pipeline: &str) -> Result<Option<(Generation, Option<LeaseHolder>)>> {
    newest_of(store, generations(store, pipeline).await?).await
}

async fn newest_of(store: &Arc<dyn ObjectStore>, mut generations: Vec<Generation>) -> Result<Option<(Generation, Option<LeaseHolder>)>> {
    let Some(generation) = generations.pop() else { return Ok(None) };
    let holder = read(store, &generation.path()).await?;
    Ok(Some((generation, holder)))
}

/// The current holder of `pipeline`'s lease, if any (expired or not).
pub async fn current(engine: &Engine, pipeline: &str) -> Result<Option<LeaseHolder>> {
    let store = store_for(engine).await?;
    Ok(newest(&store, pipeline).await?.and_then(|(_, holder)| holder))
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
    let me = LeaseHolder::me(purpose);
    // Live before the lease object exists: another task of this process may read the object
    // before this one resumes, and must not take it for a dropped lease.
    let registered = Registered::new(&me.token);
    let first = Generation { pipeline: pipeline.into(), number: 0 };
    for _ in 0..3 {
        let listed = match generations(&store, pipeline).await {
            Ok(listed) => listed,
            Err(e) => return Err(storage_error(engine, pipeline, e)),
        };
        let generation = match newest_of(&store, listed.clone()).await {
            Ok(None) => first.clone(),
            Ok(Some((_, Some(holder)))) if !holder.expired() => {
                return Err(LeaseHeld { pipeline: pipeline.into(), holder: holder.describe(), ttl: TTL.as_secs() }.into())
            }
            Ok(Some((expired, _))) => {
                tracing::warn!(pipeline, "taking over an expired lease");
                expired.next()
            }
            Err(e) => return Err(storage_error(engine, pipeline, e)),
        };
        let body = PutPayload::from(serde_json::to_vec(&me)?);
        match store.put_opts(&generation.path(), body, PutOptions::from(PutMode::Create)).await {
            Ok(_) => {
                // A listing is no snapshot: one taken while another contender created the next
                // generation and deleted the one it took over can miss both, and offer
                // generation 0 beside a live newer one (seen: two of eight contenders won). The
                // newer one existed before ours was created, so listing again shows it: the
                // contender with the older generation gives it up, and the next attempt names
                // the holder.
                let now = generations(&store, pipeline).await.map_err(|e| storage_error(engine, pipeline, e))?;
                if now.last().is_some_and(|newest| newest.number > generation.number) {
                    let _ = store.delete(&generation.path()).await;
                    continue;
                }
                for old in &listed {
                    let _ = store.delete(&old.path()).await;
                }
                let heartbeat = spawn_heartbeat(store.clone(), generation.clone(), me.clone());
                return Ok(Lease { store, generation, me, heartbeat, released: false, _registered: registered });
            }
            // Another process created this generation first: look again at who holds it.
            Err(ObjectStoreError::AlreadyExists { .. }) => continue,
            Err(e) => return Err(storage_error(engine, pipeline, color_eyre::Report::new(e))),
        }
    }
    Err(eyre!("pipeline `{pipeline}`: other processes kept taking the lease at the same moment; try again"))
}

fn storage_error(engine: &Engine, pipeline: &str, e: color_eyre::Report) -> color_eyre::Report {
    let what = format!("the lease of pipeline `{pipeline}` (kept under the tracker)");
    if let Some(problem) = crate::lake::storage_problem(&what, &engine.config.tracker_uri, &format!("{e:#}")) {
        return problem.into();
    }
    e.wrap_err(format!("cannot take the lease of pipeline `{pipeline}`"))
}

/// A token in [`LIVE`] until dropped (with the [`Lease`] that holds it, or the failed attempt).
struct Registered(String);

impl Registered {
    fn new(token: &str) -> Self {
        if let Ok(mut set) = LIVE.lock() {
            set.insert(token.to_string());
        }
        Registered(token.to_string())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if let Ok(mut set) = LIVE.lock() {
            set.remove(&self.0);
        }
    }
}

fn spawn_heartbeat(store: Arc<dyn ObjectStore>, generation: Generation, mut me: LeaseHolder) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(HEARTBEAT).await;
            if !holds(&store, &generation, &me).await {
                tracing::warn!(pipeline = generation.pipeline, "lease taken over by another process (this holder stalled past its TTL)");
                return;
            }
            me.heartbeat_ms = now_ms();
            if let Ok(body) = serde_json::to_vec(&me) {
                let _ = store.put(&generation.path(), PutPayload::from(body)).await;
            }
        }
    })
}

/// Whether `generation` is still the newest and its object records `me`'s holding.
async fn holds(store: &Arc<dyn ObjectStore>, generation: &Generation, me: &LeaseHolder) -> bool {
    matches!(newest(store, &generation.pipeline).await, Ok(Some((g, Some(holder)))) if g == *generation && holder.same_holding(me))
}

/// Delete `me`'s own generation object if it still records `me` (newest or not: a holder that
/// stalled and rewrote it after a takeover must not leave it behind).
async fn delete_own(store: &Arc<dyn ObjectStore>, generation: &Generation, me: &LeaseHolder) {
    let path = generation.path();
    if !matches!(read(store, &path).await, Ok(Some(holder)) if holder.same_holding(me)) {
        return;
    }
    if let Err(e) = store.delete(&path).await {
        tracing::warn!(error = %e, "could not delete lease; it will expire");
    }
}

impl Lease {
    pub async fn release(mut self) {
        self.heartbeat.abort();
        let _ = (&mut self.heartbeat).await;
        delete_own(&self.store, &self.generation, &self.me).await;
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if self.released {
            return;
        }
        // Dropped unreleased: the holding task was cancelled or panicked. This process already
        // treats the lease as expired; delete it for the others too.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, generation, me) = (self.store.clone(), self.generation.clone(), self.me.clone());
            runtime.spawn(async move { delete_own(&store, &generation, &me).await });
        }
    }
}
