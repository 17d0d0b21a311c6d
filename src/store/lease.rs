//! Per-pipeline leases: two deltalink processes (two operators, or watch + a manual run) never
//! run or reset the same pipeline at once, and a holder that lost its lease stops writing.
//!
//! A lease is a small JSON object under the tracker's location, one per *generation*:
//! `_leases/<pipeline>/<generation>.json`, created only with an atomic create-if-absent put
//! (object_store `PutMode::Create`). The newest generation is the lease; generations only grow
//! (a release leaves its object behind marked `released`), so the generation is a fencing
//! token: every commit a holder makes records it. Taking over generation N means creating N+1:
//! of several processes taking over at the same moment exactly one create succeeds.
//!
//! Expiry never compares one host's clock with another's. The holder rewrites its object every
//! quarter of its TTL and counts itself the holder only until 3/4 of the TTL after the start of
//! its last confirmed heartbeat, on its own monotonic clock ([`Fence::check`], before every
//! commit); a heartbeat that fails is retried, and one that comes too late does not revive the
//! lease. A contender takes an unreleased lease over only after watching its object unchanged
//! for the holder's whole TTL on *its* monotonic clock (or at once when the holder's process is
//! gone on this host). A frozen holder that wakes up after that finds its lease lost before its
//! next commit; one frozen between that check and a commit is refused by the commit itself
//! (tracker writes are compare-and-set, link commits must carry a newer run_id).
//!
//! A lease also ends when its [`Lease`] is dropped without [`Lease::release`] — the run's task
//! was cancelled (the console's cancel aborts it) or panicked. Each lease carries a token; the
//! tokens of the leases this process holds live in [`LIVE`], and a lease of this process whose
//! token is no longer there is free. Heartbeats and releases only touch a lease object that
//! still carries their token.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use color_eyre::eyre::{eyre, Result, WrapErr};
use deltalake::logstore::object_store::{ObjectStoreExt, PutMode, PutOptions, PutPayload};
use deltalake::{ObjectStore, ObjectStoreError, Path};
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};

use crate::store::lake;
use crate::config::Config;
use crate::util::time::now_ms;
use crate::util::who::hostname;

/// Tokens of the leases held by live [`Lease`] values of this process.
static LIVE: LazyLock<Mutex<HashSet<String>>> = LazyLock::new(Mutex::default);

fn live(token: &str) -> bool {
    LIVE.lock().map(|set| set.contains(token)).unwrap_or(true)
}

fn default_ttl_ms() -> u64 {
    crate::config::DEFAULT_LEASE_TTL_SECONDS * 1000
}

/// Who holds a lease, and since when.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LeaseHolder {
    pub operator: String,
    pub host: String,
    pub pid: u32,
    pub purpose: String,
    pub since_ms: i64,
    /// The holder's wall clock at its last heartbeat: shown to people, never used to decide
    /// expiry across hosts.
    pub heartbeat_ms: i64,
    /// Identifies one holding (older leases have none).
    #[serde(default)]
    pub token: String,
    /// The holder's TTL: contenders wait this long without a heartbeat before taking over.
    #[serde(default = "default_ttl_ms")]
    pub ttl_ms: u64,
    /// Released by its holder: free, and kept as the newest generation so generations only grow.
    #[serde(default)]
    pub released: bool,
}

impl LeaseHolder {
    fn me(purpose: &str, ttl: Duration) -> Self {
        let now = now_ms();
        LeaseHolder {
            operator: crate::util::who::operator(),
            host: hostname(),
            pid: std::process::id(),
            purpose: purpose.into(),
            since_ms: now,
            heartbeat_ms: now,
            token: uuid::Uuid::new_v4().to_string(),
            ttl_ms: ttl.as_millis() as u64,
            released: false,
        }
    }

    fn ttl(&self) -> Duration {
        Duration::from_millis(self.ttl_ms.max(1))
    }

    /// Free without waiting: released, its process is gone (this host only), or it is this
    /// process's and was dropped (a cancelled run).
    fn free(&self) -> bool {
        let here = self.host == hostname();
        self.released
            || (here && !process_alive(self.pid))
            || (here && self.pid == std::process::id() && !live(&self.token))
    }

    /// Looks expired to a person reading it: free, or no heartbeat for a TTL by this host's
    /// clock. (Taking a lease over also watches it for a TTL: see [`acquire`].)
    pub fn expired(&self) -> bool {
        self.free() || now_ms() - self.heartbeat_ms > self.ttl_ms as i64
    }

    fn same_holding(&self, other: &LeaseHolder) -> bool {
        (&self.host, self.pid, self.since_ms, &self.token) == (&other.host, other.pid, other.since_ms, &other.token)
    }

    pub fn describe(&self) -> String {
        let since = crate::util::time::format_ms(self.since_ms).unwrap_or_default();
        format!("{} on {} (pid {}, {}) since {since}", self.operator, self.host, self.pid, self.purpose)
    }
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

/// How long a holding stays valid, on the holder's monotonic clock: the last confirmed
/// heartbeat's start plus 3/4 of the TTL (the rest is margin for a contender's polling and
/// the store's latency).
struct Holding {
    confirmed: Mutex<Instant>,
    lost: AtomicBool,
    ttl: Duration,
    /// Heartbeats still to fail as if the store were unreachable (see
    /// [`Lease::fail_next_heartbeats`]).
    injected_failures: AtomicUsize,
}

impl Holding {
    fn new(confirmed: Instant, ttl: Duration) -> Self {
        Holding { confirmed: Mutex::new(confirmed), lost: AtomicBool::new(false), ttl, injected_failures: AtomicUsize::new(0) }
    }

    /// Whether this heartbeat is to fail (one injected failure used up).
    fn injected_failure(&self) -> bool {
        self.injected_failures.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok()
    }

    fn valid_for(&self) -> Duration {
        self.ttl * 3 / 4
    }

    fn valid_at(&self, at: Instant) -> bool {
        let confirmed = *self.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        !self.lost.load(Ordering::SeqCst) && at.saturating_duration_since(confirmed) < self.valid_for()
    }

    /// A heartbeat that started at `started` succeeded: valid from there on, unless the
    /// holding had already lapsed (a contender may have taken over meanwhile).
    fn confirm(&self, started: Instant) -> bool {
        if !self.valid_at(started) {
            self.lose();
            return false;
        }
        *self.confirmed.lock().unwrap_or_else(|p| p.into_inner()) = started;
        true
    }

    fn lose(&self) {
        self.lost.store(true, Ordering::SeqCst);
    }
}

/// A holder's fencing token: the lease generation, and whether the holding is still valid.
/// Checked before every commit; recorded in every commit's info.
#[derive(Clone)]
pub struct Fence {
    pipeline: String,
    generation: u64,
    holding: Arc<Holding>,
}

impl Fence {
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Refuse to commit once the holding cannot be confirmed (see the module doc).
    pub fn check(&self) -> Result<(), crate::Error> {
        if self.holding.valid_at(Instant::now()) {
            return Ok(());
        }
        let confirmed = *self.holding.confirmed.lock().unwrap_or_else(|p| p.into_inner());
        Err(crate::Error::LeaseLost {
            pipeline: self.pipeline.clone(),
            generation: self.generation,
            silent_ms: confirmed.elapsed().as_millis() as u64,
        })
    }
}

/// A held lease; call [`Lease::release`] when done (a crash leaves it to expire; a drop frees
/// it for this process at once and marks it released in the background).
pub struct Lease {
    store: Arc<dyn ObjectStore>,
    generation: Generation,
    me: LeaseHolder,
    holding: Arc<Holding>,
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

async fn store_for(config: &Config) -> Result<Arc<dyn ObjectStore>> {
    let uri = &config.tracker_uri;
    if uri.scheme() == "file" {
        if let Ok(p) = uri.to_file_path() {
            std::fs::create_dir_all(&p).wrap_err_with(|| format!("cannot create {}", p.display()))?;
        }
    }
    Ok(lake::builder(uri, &config.storage_options)?.build()?.object_store())
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

/// The current holder of `pipeline`'s lease, if any (expired or released ones too).
pub async fn current(config: &Config, pipeline: &str) -> Result<Option<LeaseHolder>> {
    let store = store_for(config).await?;
    Ok(newest(&store, pipeline).await?.and_then(|(_, holder)| holder))
}

/// Whether a live lease holds `pipeline` now (a holder that is neither released nor silent
/// past its TTL); `false` when the lease cannot be read.
pub async fn held(config: &Config, pipeline: &str) -> bool {
    matches!(current(config, pipeline).await, Ok(Some(holder)) if !holder.expired())
}

/// The newest lease generation of `pipeline` (`None` before its first lease).
pub async fn current_generation(config: &Config, pipeline: &str) -> Result<Option<u64>> {
    let store = store_for(config).await?;
    Ok(generations(&store, pipeline).await?.last().map(|g| g.number))
}

async fn read(store: &Arc<dyn ObjectStore>, path: &Path) -> Result<Option<LeaseHolder>> {
    match store.get(path).await {
        Ok(r) => {
            let bytes = r.bytes().await?;
            // An unreadable lease (torn write) is treated as free rather than blocking forever.
            Ok(serde_json::from_slice(&bytes).ok())
        }
        Err(ObjectStoreError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e).wrap_err("cannot read the lease"),
    }
}

/// What a contender makes of the newest generation.
enum Verdict {
    /// Create this generation.
    Take(Generation),
    Busy(LeaseHolder),
    /// Silent by its holder's clock: watch it on ours before taking it over.
    Watch(Generation, LeaseHolder),
}

fn judge(newest: Option<(Generation, Option<LeaseHolder>)>, first: &Generation) -> Verdict {
    match newest {
        None => Verdict::Take(first.clone()),
        Some((generation, None)) => Verdict::Take(generation.next()),
        Some((generation, Some(holder))) if holder.free() => Verdict::Take(generation.next()),
        Some((_, Some(holder))) if !holder.expired() => Verdict::Busy(holder),
        Some((generation, Some(holder))) => Verdict::Watch(generation, holder),
    }
}

/// A lease being watched for silence: since when (this host's monotonic clock) it is unchanged.
struct Watched {
    generation: Generation,
    holder: LeaseHolder,
    since: Instant,
}

/// Take `pipeline`'s lease for `purpose`, or refuse naming who holds it and since when. A lease
/// whose holder fell silent is watched for the holder's TTL before it is taken over.
pub async fn acquire(config: &Config, pipeline: &str, purpose: &str) -> Result<Lease> {
    let store = store_for(config).await?;
    let me = LeaseHolder::me(purpose, config.lease_ttl);
    // Live before the lease object exists: another task of this process may read the object
    // before this one resumes, and must not take it for a dropped lease.
    let registered = Registered::new(&me.token);
    let first = Generation { pipeline: pipeline.into(), number: 0 };
    let mut watched: Option<Watched> = None;
    let mut races = 0;
    while races < 3 {
        let listed = generations(&store, pipeline).await.map_err(|e| storage_error(config, pipeline, e))?;
        let newest = newest_of(&store, listed.clone()).await.map_err(|e| storage_error(config, pipeline, e))?;
        let generation = match judge(newest, &first) {
            Verdict::Take(generation) => generation,
            Verdict::Busy(holder) => return Err(busy(pipeline, &holder).into()),
            Verdict::Watch(generation, holder) => {
                match &watched {
                    Some(w) if w.generation == generation && w.holder == holder => {
                        if w.since.elapsed() < holder.ttl() {
                            tokio::time::sleep(poll_interval(holder.ttl())).await;
                            continue;
                        }
                        tracing::warn!(pipeline, holder = holder.describe(), "taking over a lease silent for its whole TTL");
                        generation.next()
                    }
                    Some(w) if w.generation == generation => {
                        // It heartbeated while watched: alive, only its clock is behind ours.
                        return Err(busy(pipeline, &holder).into());
                    }
                    _ => {
                        tracing::warn!(
                            pipeline,
                            holder = holder.describe(),
                            ttl_s = holder.ttl().as_secs_f64(),
                            "the lease's holder looks silent; watching it for its TTL before taking over"
                        );
                        watched = Some(Watched { generation, holder: holder.clone(), since: Instant::now() });
                        tokio::time::sleep(poll_interval(holder.ttl())).await;
                        continue;
                    }
                }
            }
        };
        // Valid from before the create: a contender can only count our silence from later on.
        let created_at = Instant::now();
        let body = PutPayload::from(serde_json::to_vec(&me)?);
        match store.put_opts(&generation.path(), body, PutOptions::from(PutMode::Create)).await {
            Ok(_) => {
                // A listing is no snapshot: one taken while another contender created the next
                // generation and deleted the one it took over can miss both, and offer a
                // generation beside a live newer one. The newer one existed before ours was
                // created, so listing again shows it: the contender with the older generation
                // gives it up, and the next attempt names the holder.
                let now = generations(&store, pipeline).await.map_err(|e| storage_error(config, pipeline, e))?;
                if now.last().is_some_and(|newest| newest.number > generation.number) {
                    let _ = store.delete(&generation.path()).await;
                    races += 1;
                    continue;
                }
                for old in listed.iter().filter(|g| g.number < generation.number) {
                    let _ = store.delete(&old.path()).await;
                }
                let holding = Arc::new(Holding::new(created_at, config.lease_ttl));
                let heartbeat = spawn_heartbeat(store.clone(), generation.clone(), me.clone(), holding.clone());
                return Ok(Lease { store, generation, me, holding, heartbeat, released: false, _registered: registered });
            }
            // Another process created this generation first: look again at who holds it.
            Err(ObjectStoreError::AlreadyExists { .. }) => races += 1,
            Err(e) => return Err(storage_error(config, pipeline, color_eyre::Report::new(e))),
        }
    }
    Err(eyre!("pipeline `{pipeline}`: other processes kept taking the lease at the same moment; try again"))
}

fn busy(pipeline: &str, holder: &LeaseHolder) -> LeaseHeld {
    LeaseHeld { pipeline: pipeline.into(), holder: holder.describe(), ttl: holder.ttl().as_secs() }
}

/// How often a watched lease is read again: often enough to see a heartbeat (every quarter
/// TTL) several times over.
fn poll_interval(ttl: Duration) -> Duration {
    (ttl / 8).clamp(Duration::from_millis(20), Duration::from_secs(1))
}

fn storage_error(config: &Config, pipeline: &str, e: color_eyre::Report) -> color_eyre::Report {
    let what = format!("the lease of pipeline `{pipeline}` (kept under the tracker)");
    if let Some(problem) = crate::store::lake::storage_problem(&what, &config.tracker_uri, &format!("{e:#}")) {
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

/// Rewrite the lease object every quarter TTL; after a failure, retry sooner. Stops for good
/// when another generation took over or the holding lapsed (a heartbeat that came too late).
fn spawn_heartbeat(store: Arc<dyn ObjectStore>, generation: Generation, mut me: LeaseHolder, holding: Arc<Holding>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let every = holding.ttl / 4;
        let mut wait = every;
        loop {
            tokio::time::sleep(wait).await;
            let started = Instant::now();
            if holding.injected_failure() {
                tracing::warn!(pipeline = generation.pipeline, "lease heartbeat failed (injected); retrying");
                wait = every / 3;
                continue;
            }
            match holds(&store, &generation, &me).await {
                Ok(true) => {}
                Ok(false) => {
                    holding.lose();
                    tracing::warn!(pipeline = generation.pipeline, "lease taken over by another process (this holder stalled past its TTL)");
                    return;
                }
                Err(e) => {
                    tracing::warn!(pipeline = generation.pipeline, error = %format!("{e:#}"), "lease heartbeat failed; retrying");
                    wait = every / 3;
                    continue;
                }
            }
            me.heartbeat_ms = now_ms();
            let put = match serde_json::to_vec(&me) {
                Ok(body) => store.put(&generation.path(), PutPayload::from(body)).await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match put {
                Ok(()) if holding.confirm(started) => wait = every,
                Ok(()) => {
                    tracing::warn!(pipeline = generation.pipeline, "lease heartbeat came after the lease lapsed; this holder stops before its next commit");
                    return;
                }
                Err(error) => {
                    tracing::warn!(pipeline = generation.pipeline, error, "lease heartbeat failed; retrying");
                    wait = every / 3;
                }
            }
        }
    })
}

/// Whether `generation` is still the newest and its object records `me`'s holding.
async fn holds(store: &Arc<dyn ObjectStore>, generation: &Generation, me: &LeaseHolder) -> Result<bool> {
    Ok(matches!(newest(store, &generation.pipeline).await?, Some((g, Some(holder))) if g == *generation && holder.same_holding(me) && !holder.released))
}

/// Mark `me`'s own generation object released if it still records `me` (newest or not: a
/// holder that stalled and rewrote it after a takeover must not leave it looking held).
async fn release_own(store: &Arc<dyn ObjectStore>, generation: &Generation, me: &LeaseHolder) {
    let path = generation.path();
    if !matches!(read(store, &path).await, Ok(Some(holder)) if holder.same_holding(me)) {
        return;
    }
    let released = LeaseHolder { released: true, heartbeat_ms: now_ms(), ..me.clone() };
    let put = match serde_json::to_vec(&released) {
        Ok(body) => store.put(&path, PutPayload::from(body)).await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    if let Err(error) = put {
        tracing::warn!(error, "could not release the lease; it will expire");
    }
}

impl Lease {
    /// The fencing token of this holding, for the commits made under it.
    pub fn fence(&self) -> Fence {
        Fence { pipeline: self.generation.pipeline.clone(), generation: self.generation.number, holding: self.holding.clone() }
    }

    /// Fault injection for tests: this lease's next `n` heartbeats fail as they would with
    /// the store unreachable.
    #[doc(hidden)]
    pub fn fail_next_heartbeats(&self, n: usize) {
        self.holding.injected_failures.store(n, Ordering::SeqCst);
    }

    /// Injected heartbeat failures not used up yet (see [`Lease::fail_next_heartbeats`]).
    #[doc(hidden)]
    pub fn heartbeat_failures_pending(&self) -> usize {
        self.holding.injected_failures.load(Ordering::SeqCst)
    }

    pub async fn release(mut self) {
        self.heartbeat.abort();
        let _ = (&mut self.heartbeat).await;
        self.holding.lose();
        release_own(&self.store, &self.generation, &self.me).await;
        self.released = true;
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.heartbeat.abort();
        self.holding.lose();
        if self.released {
            return;
        }
        // Dropped unreleased: the holding task was cancelled or panicked. This process already
        // treats the lease as free; mark it released for the others too.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (store, generation, me) = (self.store.clone(), self.generation.clone(), self.me.clone());
            runtime.spawn(async move { release_own(&store, &generation, &me).await });
        }
    }
}
