//! Test support: upstream tables with a modelled history, configs in temp dirs, and an oracle.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::protocol::SaveMode;
use deltalake::schema::{DataType as DeltaType, StructField};
use deltalake::{DeltaTable, TableProperty};
use deltalink::config::resolve_table_uri;
use deltalink::{Config, Engine};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

pub type Key = i64;

/// An upstream table `(row_id, k, payload)` plus a model of its rows, so tests know exactly
/// which keys each commit affects without asking deltalink.
pub struct ModelTable {
    pub table: DeltaTable,
    /// row_id -> key (None = NULL key)
    pub rows: BTreeMap<i64, Option<Key>>,
    pub next_row: i64,
}

/// Keys affected by one commit, as the oracle computes them (NULL keys dropped).
pub type Affected = BTreeSet<Key>;

pub fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("tokio runtime")
}

pub fn url_of(dir: &Path) -> url::Url {
    resolve_table_uri(dir.to_str().expect("utf-8 path"), Path::new("/")).expect("url")
}

impl ModelTable {
    pub async fn create(dir: &Path, cdf: bool) -> ModelTable {
        std::fs::create_dir_all(dir).expect("mkdir");
        ModelTable::create_at(url_of(dir), &HashMap::new(), cdf).await
    }

    /// Create at any URL (e.g. `s3://…`) with object-store options.
    pub async fn create_at(uri: url::Url, storage: &HashMap<String, String>, cdf: bool) -> ModelTable {
        let handle = deltalake::DeltaTableBuilder::from_url(uri)
            .expect("table url")
            .with_storage_options(storage.clone())
            .build()
            .expect("handle");
        let mut b = handle.create().with_columns([
            StructField::new("row_id", DeltaType::LONG, false),
            StructField::new("k", DeltaType::LONG, true),
            StructField::new("payload", DeltaType::STRING, true),
        ]);
        if cdf {
            b = b.with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"));
        }
        let table = b.await.expect("create table");
        ModelTable { table, rows: BTreeMap::new(), next_row: 1 }
    }

    pub fn version(&self) -> u64 {
        self.table.version().expect("version")
    }

    pub async fn insert(&mut self, keys: &[Option<Key>]) -> Affected {
        let ids: Vec<i64> = (0..keys.len() as i64).map(|i| self.next_row + i).collect();
        self.next_row += keys.len() as i64;
        let schema = Arc::new(Schema::new(vec![
            Field::new("row_id", DataType::Int64, false),
            Field::new("k", DataType::Int64, true),
            Field::new("payload", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(ids.clone())),
            Arc::new(Int64Array::from(keys.to_vec())),
            Arc::new(StringArray::from(ids.iter().map(|i| format!("p{i}")).collect::<Vec<_>>())),
        ];
        let batch = RecordBatch::try_new(schema, cols).expect("batch");
        self.table = self.table.clone().write(vec![batch]).with_save_mode(SaveMode::Append).await.expect("append");
        for (id, k) in ids.iter().zip(keys) {
            self.rows.insert(*id, *k);
        }
        keys.iter().flatten().copied().collect()
    }

    fn pick(&self, rng: &mut SmallRng, n: usize) -> Vec<i64> {
        let ids: Vec<i64> = self.rows.keys().copied().collect();
        if ids.is_empty() {
            return vec![];
        }
        let mut picked: BTreeSet<i64> = BTreeSet::new();
        for _ in 0..n {
            picked.insert(ids[rng.gen_range(0..ids.len())]);
        }
        picked.into_iter().collect()
    }

    fn in_list(ids: &[i64]) -> String {
        format!("row_id IN ({})", ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(", "))
    }

    /// Update the payload of some rows: their (unchanged) keys are affected.
    pub async fn update_payload(&mut self, ids: &[i64]) -> Affected {
        if ids.is_empty() {
            return Affected::new();
        }
        // A fresh value each time: delta-rs writes no change rows for an update that changes nothing.
        let value = format!("'u{}'", self.version() + 1);
        let (t, _) = self.table.clone().update().with_predicate(Self::in_list(ids)).with_update("payload", value.as_str()).await.expect("update");
        self.table = t;
        ids.iter().filter_map(|i| self.rows[i]).collect()
    }

    /// Move rows to another key: both the old and the new key are affected.
    pub async fn update_key(&mut self, ids: &[i64], delta: i64) -> Affected {
        if ids.is_empty() {
            return Affected::new();
        }
        let (t, _) = self
            .table
            .clone()
            .update()
            .with_predicate(Self::in_list(ids))
            .with_update("k", format!("k + {delta}").as_str())
            .await
            .expect("update key");
        self.table = t;
        let mut out = Affected::new();
        for i in ids {
            if let Some(k) = self.rows[i] {
                out.insert(k);
                out.insert(k + delta);
                self.rows.insert(*i, Some(k + delta));
            }
        }
        out
    }

    pub async fn delete(&mut self, ids: &[i64]) -> Affected {
        if ids.is_empty() {
            return Affected::new();
        }
        let (t, _) = self.table.clone().delete().with_predicate(Self::in_list(ids)).await.expect("delete");
        self.table = t;
        ids.iter().filter_map(|i| self.rows.remove(i).flatten()).collect()
    }

    /// One random commit (insert / payload update / key update / delete) and its affected keys.
    pub async fn random_commit(&mut self, rng: &mut SmallRng, key_space: i64) -> Affected {
        let choice = if self.rows.is_empty() { 0 } else { rng.gen_range(0..4) };
        match choice {
            0 => {
                let n = rng.gen_range(1..6);
                let keys: Vec<Option<Key>> = (0..n).map(|_| Some(rng.gen_range(0..key_space))).collect();
                self.insert(&keys).await
            }
            1 => {
                let ids = self.pick(rng, 3);
                self.update_payload(&ids).await
            }
            2 => {
                let ids = self.pick(rng, 2);
                let d = rng.gen_range(1..5);
                self.update_key(&ids, d).await
            }
            _ => {
                let ids = self.pick(rng, 2);
                self.delete(&ids).await
            }
        }
    }

    pub fn current_keys(&self) -> Affected {
        self.rows.values().flatten().copied().collect()
    }
}

/// A lake in a temp dir with a config file; tables under `dir/<name>`.
pub struct Lake {
    pub dir: tempfile::TempDir,
}

impl Lake {
    pub fn new() -> Lake {
        Lake { dir: tempfile::tempdir().expect("tempdir") }
    }
    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }
    /// Write `deltalink.toml` and load it.
    pub fn config(&self, toml: &str) -> Config {
        let p = self.path("deltalink.toml");
        std::fs::write(&p, toml).expect("write config");
        Config::load(&p).expect("valid config")
    }
    pub fn engine(&self, toml: &str) -> Engine {
        Engine::new(self.config(toml))
    }
    /// An engine whose config reads `${NAME}` values from `env` (never the process
    /// environment: setting that in a multi-threaded test binary races with its readers).
    pub fn engine_with_env(&self, toml: &str, env: &[(&str, &str)]) -> Engine {
        let lookup = |var: &str| env.iter().find(|(k, _)| *k == var).map(|(_, v)| v.to_string());
        Engine::new(Config::parse_with_env(toml, &self.path("deltalink.toml"), &lookup).expect("valid config"))
    }
}

/// Config with one pipeline per (name, upstreams) over tables `(row_id, k, payload)` keyed by `k`.
pub fn simple_config(upstreams: &[&str], pipelines: &[(&str, &[&str])]) -> String {
    let mut s = String::from("[tracker]\nuri = \"_deltalink/tracker\"\n");
    for u in upstreams {
        s += &format!("[upstreams.{u}]\nuri = \"{u}\"\n");
    }
    for (p, ups) in pipelines {
        s += &format!("[pipelines.{p}]\nlink_table = \"_deltalink/links/{p}\"\nkey = [\"k\"]\n");
        for u in ups.iter() {
            s += &format!("[[pipelines.{p}.sources]]\nupstream = \"{u}\"\nkeys = [\"k\"]\n");
        }
    }
    s
}

/// A pipeline's link table; `None` while it does not exist.
pub async fn link_table(engine: &Engine, pipeline: &str) -> Option<deltalake::DeltaTable> {
    let p = engine.config.pipeline(pipeline).expect("pipeline");
    deltalink::store::lake::open_owned(&p.link_table, &engine.config.storage_options).await.expect("open link")
}

/// Every row of a pipeline's link table as (key rendered as text, run_id), sorted; empty while
/// the table does not exist.
pub async fn link_rows(engine: &Engine, pipeline: &str) -> Vec<(Vec<String>, i64)> {
    let Some(t) = link_table(engine, pipeline).await else { return Vec::new() };
    let key = &engine.config.pipeline(pipeline).expect("pipeline").key;
    deltalink::store::link::all_keys(&t, key).await.expect("read link")
}

/// The link table's (key, run_id) pairs of a pipeline, keys parsed back to integers.
pub async fn link_keys(engine: &Engine, pipeline: &str) -> BTreeMap<Key, i64> {
    link_rows(engine, pipeline).await.into_iter().map(|(k, run)| (k[0].parse::<i64>().expect("int key"), run)).collect()
}

pub fn seeded(seed: u64) -> SmallRng {
    SmallRng::seed_from_u64(seed)
}

/// Every link row (key, run_id, last change, upstreams, provenance) and every change-feed row
/// of a pipeline's link table, rendered and sorted (creation/update times left out).
pub async fn link_rows_and_feed(engine: &Engine, pipeline: &str) -> (Vec<String>, Vec<String>) {
    use deltalake::datafusion::prelude::{ident, SessionContext};
    use deltalake::delta_datafusion::DeltaCdfTableProvider;
    let t = link_table(engine, pipeline).await.expect("link table");
    let render = |batches: Vec<deltalake::arrow::array::RecordBatch>| -> Vec<String> {
        let mut out: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                (0..b.num_rows()).map(move |i| {
                    (0..b.num_columns()).map(|c| deltalink::util::arrow::display_value(b.column(c), i)).collect::<Vec<_>>().join(" | ")
                })
            })
            .collect();
        out.sort();
        out
    };
    let key = engine.config.pipeline(pipeline).expect("pipeline").key.clone();
    let mut columns: Vec<&str> = key.iter().map(String::as_str).collect();
    columns.extend(["run_id", "last_change_ts", "upstreams", "provenance"]);
    let ctx = SessionContext::new();
    t.update_datafusion_session(&ctx.state()).expect("session");
    let rows = ctx
        .read_table(t.table_provider().await.expect("provider"))
        .expect("read")
        .select(columns.iter().map(|c| ident(*c)).collect::<Vec<_>>())
        .expect("select")
        .collect()
        .await
        .expect("collect");
    let provider = DeltaCdfTableProvider::try_new(t.clone().scan_cdf().with_starting_version(0)).expect("cdf");
    let mut feed_columns: Vec<&str> = columns.clone();
    feed_columns.extend(["_change_type", "_commit_version"]);
    let feed = ctx
        .read_table(std::sync::Arc::new(provider))
        .expect("read cdf")
        .select(feed_columns.iter().map(|c| ident(*c)).collect::<Vec<_>>())
        .expect("select")
        .collect()
        .await
        .expect("collect cdf");
    (render(rows), render(feed))
}

/// Assert that two pipelines' link tables hold the same rows and the same change feed (see
/// [`link_rows_and_feed`]); the rows, for further checks. A difference names the first line
/// that differs instead of printing tables of hundreds of thousands of rows.
pub async fn assert_link_tables_agree(engine: &Engine, pipeline: &str, other: &Engine, other_pipeline: &str, context: &str) -> Vec<String> {
    let (rows, feed) = link_rows_and_feed(engine, pipeline).await;
    let (other_rows, other_feed) = link_rows_and_feed(other, other_pipeline).await;
    assert_same_lines(&rows, &other_rows, &format!("{context}: link rows of `{pipeline}` and `{other_pipeline}`"));
    assert_same_lines(&feed, &other_feed, &format!("{context}: change feeds of `{pipeline}` and `{other_pipeline}`"));
    rows
}

fn assert_same_lines(a: &[String], b: &[String], what: &str) {
    if a != b {
        let at = a.iter().zip(b).position(|(x, y)| x != y).unwrap_or(a.len().min(b.len()));
        panic!("{what} differ: {} against {} lines, first difference at line {at}: {:?} against {:?}", a.len(), b.len(), a.get(at), b.get(at));
    }
}

/// Every file under `dir`, recursively (empty when `dir` does not exist).
pub fn walk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .flat_map(|e| if e.path().is_dir() { walk_files(&e.path()) } else { vec![e.path()] })
        .collect()
}

/// Data files under a table's folder that no commit of its log ever added (abandoned writes).
pub fn unreferenced_data_files(root: &std::path::Path) -> Vec<String> {
    let mut added = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(root.join("_delta_log")).expect("log folder") {
        let path = entry.expect("log entry").path();
        if path.extension().is_some_and(|e| e == "json") {
            for line in std::fs::read_to_string(&path).expect("commit").lines() {
                let action: serde_json::Value = serde_json::from_str(line).expect("action json");
                if let Some(p) = action["add"]["path"].as_str() {
                    added.insert(p.to_string());
                }
                if let Some(dv) = action["add"]["deletionVector"]["pathOrInlineDv"].as_str() {
                    added.insert(deletion_vector_file(dv));
                }
            }
        }
    }
    std::fs::read_dir(root)
        .expect("table folder")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|name| (name.ends_with(".parquet") || name.ends_with(".bin")) && !added.contains(name))
        .collect()
}

/// The file name of a deletion vector stored beside the table (`<Z85 of its UUID>`).
fn deletion_vector_file(encoded: &str) -> String {
    let bytes = z85::decode(&encoded[encoded.len().saturating_sub(20)..]).expect("z85 deletion vector id");
    format!("deletion_vector_{}.bin", uuid::Uuid::from_slice(&bytes).expect("uuid"))
}

/// `config` with `[pipelines.<pipeline>]` set to keep its link table copy-on-write.
pub fn without_deletion_vectors(config: &str, pipeline: &str) -> String {
    let header = format!("[pipelines.{pipeline}]\n");
    assert!(config.contains(&header), "no pipeline `{pipeline}` in the config");
    config.replacen(&header, &format!("{header}deletion_vectors = false\n"), 1)
}

/// Files of a link table with a deletion vector.
pub fn files_with_deletion_vectors(table: &deltalake::DeltaTable) -> usize {
    table.snapshot().expect("snapshot").log_data().iter().filter(|f| f.deletion_vector_descriptor().is_some()).count()
}

/// Upstreams `a` and `b` with one row each and every pipeline of `config` (a `simple_config`
/// over them, perhaps extended) run once; `config` is written to the lake's `deltalink.toml`
/// for the binary. Returns the two tables.
pub async fn two_pipelines_run_once(lake: &Lake, config: &str) -> (ModelTable, ModelTable) {
    let mut a = ModelTable::create(&lake.path("a"), true).await;
    a.insert(&[Some(1)]).await;
    let mut b = ModelTable::create(&lake.path("b"), true).await;
    b.insert(&[Some(1)]).await;
    std::fs::write(lake.path("deltalink.toml"), config).expect("write config");
    for (name, result) in lake.engine(config).run_many(&[], &deltalink::engine::RunOptions::default()).await {
        result.unwrap_or_else(|e| panic!("first run of {name}: {e:#}"));
    }
    (a, b)
}

/// `deltalink --config CONFIG ARGS…` run by operator `user` (as the audit log records it), with
/// no colour and no backtrace: what a person at a shell or a cron job would see.
pub fn deltalink_as(user: &str, config: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_deltalink"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env("USER", user)
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .output()
        .expect("spawn deltalink")
}

/// The stdout of a command that must have succeeded (its stdout and stderr shown if not).
pub fn succeeded(out: &Output, what: &str) -> String {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{what} failed:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// Number of commits in a table's log.
pub fn log_commits(table: &Path) -> usize {
    std::fs::read_dir(table.join("_delta_log")).map_or(0, |d| d.filter(|e| e.as_ref().is_ok_and(|e| e.path().extension().is_some_and(|x| x == "json"))).count())
}
