//! The engine handle: a validated config plus shared state, cheap to clone into tasks.

use color_eyre::eyre::WrapErr;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::Result;
use deltalake::DeltaTable;
use deltalake::datafusion::prelude::SessionContext;
use deltalake::delta_datafusion::DeltaSessionContext;

use crate::Error;
use crate::config::Config;
use crate::store::cdf::ScanCounter;
use crate::store::lake;
use crate::store::link::MergeStrategy;
use crate::store::tracker::Tracker;

/// Link-table file size: small enough that a MERGE of clustered keys skips most files, and
/// that reading and writing a rewritten table spreads over the cores.
pub const DEFAULT_LINK_FILE_SIZE: u64 = 8 * 1024 * 1024;

/// The engine: a validated config plus shared state. Cheap to clone into tasks.
#[derive(Clone)]
pub struct Engine {
    pub config: Arc<Config>,
    pub read_only: bool,
    pub scans: Arc<ScanCounter>,
    /// Upstream log probes kept between status refreshes (moved forward incrementally).
    pub probes: Arc<crate::store::probe::ProbeCache>,
    /// Link tables kept loaded between status refreshes (moved forward incrementally).
    pub tables: Arc<lake::TableCache>,
    /// Commit facts read by status's retention guard (commits never change once written).
    pub commits: Arc<lake::CommitCache>,
    /// Lags seen by polls and how runs ended, for health's trends (see [`Observations`]).
    pub observed: Arc<super::observe::Observations>,
    /// Target size of link-table files (see [`LinkMerge::target_file_size`]).
    pub link_file_size: u64,
    pub merge_strategy: MergeStrategy,
    /// Set while `run_many` runs a cycle: shared pins and shared change reads.
    pub(crate) cycle: Option<Arc<Cycle>>,
}

/// One cycle of `run_many`: every upstream is pinned once, and a range that several pipelines
/// read is scanned once and fanned out from memory (central reads).
#[derive(Default)]
pub(crate) struct Cycle {
    /// Each upstream's table at the cycle's pin, opened once (by the first pipeline to ask;
    /// different upstreams open concurrently).
    pub(crate) pins: std::sync::Mutex<HashMap<String, Arc<tokio::sync::OnceCell<DeltaTable>>>>,
    /// The tracker table as last loaded: a run brings it up to date from there instead of
    /// loading it whole (profiled: ~35 ms of each small pipeline's run).
    pub(crate) tracker: tokio::sync::Mutex<Option<DeltaTable>>,
    /// Upstreams read by two or more of the cycle's pipelines: their change reads are cached,
    /// projected to the columns the cycle needs (`None` = all, when a `sql` source reads it).
    pub(crate) shared: HashMap<String, Option<Vec<String>>>,
    /// One cell per (upstream, range): the first pipeline reads it, the others wait for it;
    /// different upstreams are read concurrently.
    pub(crate) reads: std::sync::Mutex<HashMap<(String, u64, u64), Arc<tokio::sync::OnceCell<SharedRead>>>>,
    /// Turns at the CPU- and memory-heavy part of a run (reading changes, building and merging
    /// link rows), as many as cores. Twice as many pipelines are in flight, so that one's
    /// lease, log reads and commits (waiting on storage, not on a core) overlap another's
    /// heavy part: profiled on 100 upstreams x 20 pipelines, two pipelines at a time kept the
    /// cores 70 % busy. A shared read's cell is filled by a run holding a turn, so a run
    /// waiting on it while holding one of its own always sees it filled.
    pub(crate) heavy: Option<tokio::sync::Semaphore>,
    /// How many pipelines the cycle runs.
    pub(crate) pipelines: usize,
}

pub(crate) type SharedRead = Arc<Vec<deltalake::arrow::array::RecordBatch>>;

pub fn session() -> SessionContext {
    DeltaSessionContext::new().into_inner()
}

impl Engine {
    pub fn new(config: Config) -> Self {
        Engine {
            config: Arc::new(config),
            read_only: false,
            scans: Arc::new(ScanCounter::default()),
            probes: Arc::default(),
            tables: Arc::default(),
            commits: Arc::default(),
            observed: Arc::default(),
            link_file_size: DEFAULT_LINK_FILE_SIZE,
            merge_strategy: MergeStrategy::default(),
            cycle: None,
        }
    }

    /// How link-table MERGEs run (default: deltalink's sorted-key MERGE).
    pub fn with_merge_strategy(mut self, strategy: MergeStrategy) -> Self {
        self.merge_strategy = strategy;
        self
    }

    /// Target size of link-table files (default 8 MiB).
    pub fn with_link_file_size(mut self, bytes: u64) -> Self {
        self.link_file_size = bytes.max(1);
        self
    }

    pub fn with_read_only(mut self, read_only: bool) -> Self {
        self.read_only = read_only;
        self
    }

    pub(crate) fn storage(&self) -> &HashMap<String, String> {
        &self.config.storage_options
    }

    pub async fn tracker(&self) -> Result<Tracker> {
        let Some(cycle) = &self.cycle else { return Tracker::open(&self.config.tracker_uri, self.storage()).await };
        let mut cached = cycle.tracker.lock().await;
        let tracker = match cached.take() {
            Some(table) => {
                let mut t = Tracker::loaded(&self.config.tracker_uri, self.storage(), table);
                t.refresh().await?;
                t
            }
            None => Tracker::open(&self.config.tracker_uri, self.storage()).await?,
        };
        *cached = tracker.table().cloned();
        Ok(tracker)
    }

    /// How many cores a run's grouping may keep busy: all of them for a run of its own (or a
    /// preview); in a cycle, its share of the cores among the pipelines running their heavy
    /// part at once. Measured: splitting each of two concurrent pipelines' grouping over both
    /// cores made a 1M-row lake's from-scratch cycle 20 % slower.
    pub(crate) fn grouping_cores(&self) -> usize {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        match &self.cycle {
            Some(cycle) => cores / cycle.pipelines.clamp(1, cores),
            None => cores,
        }
    }

    /// A turn at a run's heavy part when running in a cycle (see [`Cycle::heavy`]).
    pub(crate) async fn heavy_turn(&self) -> Result<Option<tokio::sync::SemaphorePermit<'_>>> {
        let Some(heavy) = self.cycle.as_ref().and_then(|c| c.heavy.as_ref()) else { return Ok(None) };
        Ok(Some(heavy.acquire().await.wrap_err("the cycle's run queue was closed")?))
    }

    pub(crate) fn refuse_if_read_only(&self, what: &str) -> Result<()> {
        if self.read_only {
            return Err(Error::ReadOnly { what: what.into() }.into());
        }
        Ok(())
    }
}
