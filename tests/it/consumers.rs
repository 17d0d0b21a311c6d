//! Downstream consumers of a link table: a Python job using the shipped client
//! (`src/clients/deltalink_consumer.py`) consumes, reads, processes and acks across many runs,
//! with a run landing between each consume and its read. The oracle is the upstream model: the
//! keys each run's commits changed, computed without deltalink.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use deltalink::engine::RunOptions;
use deltalink::ops::consume::{self, Acked};
use deltalink::ops::maintain::{maintain, MaintainOptions};

use crate::common::*;

/// One step of the downstream job: consume, optionally let a run land, read at the batch's
/// version, record the keys it processed, ack. Prints what it did as JSON.
const JOB_STEP: &str = r#"
import json, subprocess, sys
sys.path.insert(0, sys.argv[1])
import deltalink_consumer as dl
binary, config, land = sys.argv[2], sys.argv[3], sys.argv[4] == "1"
if not land:
    # The whole helper: consume -> read -> process -> ack.
    seen = []
    batch = dl.run_once("p", "daily_job", lambda rows: seen.extend(rows.column("k").to_pylist()), binary=binary, config=config)
    print(json.dumps({"after": batch.after_run_id, "through": batch.through_run_id, "version": batch.link_version, "keys": seen, "landed": None}))
    sys.exit(0)
batch = dl.next_batch("p", "daily_job", binary=binary, config=config)
# A run lands between the consume and the read.
run = json.loads(subprocess.run([binary, "--config", config, "run", "p", "--json"], check=True, capture_output=True, text=True).stdout)
landed = run[0].get("run_id")
rows = batch.read()
keys = rows.column("k").to_pylist()
assert len(keys) == batch.keys, (len(keys), batch.keys)
batch.ack()
batch.ack()  # idempotent
print(json.dumps({"after": batch.after_run_id, "through": batch.through_run_id, "version": batch.link_version, "keys": keys, "landed": landed}))
"#;

#[derive(serde::Deserialize, Debug)]
struct Step {
    after: i64,
    through: i64,
    keys: Vec<i64>,
    landed: Option<i64>,
}

fn job_step(py: &str, config: &Path, land: bool) -> Step {
    let clients = concat!(env!("CARGO_MANIFEST_DIR"), "/src/clients");
    let out = Command::new(py)
        .args(["-c", JOB_STEP, clients, env!("CARGO_BIN_EXE_deltalink"), config.to_str().expect("utf-8"), if land { "1" } else { "0" }])
        .output()
        .expect("run python");
    assert!(out.status.success(), "job step failed:\n{}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("job output {e}: {}", String::from_utf8_lossy(&out.stdout)))
}

fn consumer_config() -> String {
    simple_config(&["a"], &[("p", &["a"])]) + "[[pipelines.p.consumers]]\nname = \"daily_job\"\n"
}

async fn commits(a: &mut ModelTable, rng: &mut rand::rngs::SmallRng, n: usize) -> Affected {
    let mut changed = Affected::new();
    for _ in 0..n {
        changed.extend(a.random_commit(rng, 40).await);
    }
    changed
}

/// A lake with the consumer pipeline over one model upstream, for the tests that run a
/// downstream job's Python reads; `None` (said on stderr) without a Python that has deltalake
/// and polars. `_lake` keeps the lake's folder for as long as the test holds it.
struct JobLake {
    py: String,
    rt: tokio::runtime::Runtime,
    _lake: Lake,
    engine: deltalink::Engine,
    config: std::path::PathBuf,
    a: ModelTable,
    rng: rand::rngs::SmallRng,
}

impl JobLake {
    fn open(seed: u64) -> Option<Self> {
        let Some(py) = crate::readers::python() else {
            eprintln!("SKIPPED: set DELTALINK_PYTHON to a python with deltalake + polars (.ci/run does)");
            return None;
        };
        let rt = rt();
        let lake = Lake::new();
        let engine = lake.engine(&consumer_config());
        let config = lake.path("deltalink.toml");
        let a = rt.block_on(ModelTable::create(&lake.path("a"), true));
        Some(JobLake { py, rt, _lake: lake, engine, config, a, rng: seeded(seed) })
    }
}

#[test]
fn a_downstream_job_processes_every_change_once_while_runs_land_between_consume_and_read() {
    let Some(JobLake { py, rt, _lake, engine, config, mut a, mut rng }) = JobLake::open(22) else { return };
    // The oracle: run_id -> keys its commits changed.
    let mut runs: BTreeMap<i64, Affected> = BTreeMap::new();
    let mut delivered: Vec<(i64, i64)> = Vec::new();
    for round in 0..5 {
        let changed = rt.block_on(commits(&mut a, &mut rng, 3));
        let rep = rt.block_on(engine.run("p", &RunOptions::default())).expect("run");
        runs.insert(rep.run_id.expect("run id"), changed);
        // Committed now, run by the job between its consume and its read.
        let landing = rt.block_on(commits(&mut a, &mut rng, 2));
        let step = job_step(&py, &config, true);
        let landed = step.landed.expect("the landing run wrote");
        runs.insert(landed, landing);
        assert!(step.through < landed, "round {round}: the batch was answered before run {landed} landed: {step:?}");
        let expected: BTreeSet<i64> = runs.range(step.after + 1..=step.through).flat_map(|(_, k)| k.iter().copied()).collect();
        let got: BTreeSet<i64> = step.keys.iter().copied().collect();
        assert_eq!(got.len(), step.keys.len(), "round {round}: a key delivered twice in one batch");
        assert_eq!(got, expected, "round {round}: batch of runs {}..={}", step.after + 1, step.through);
        delivered.push((step.after, step.through));
    }
    // The last batch, through the whole helper, picks up the run that landed last.
    let last = job_step(&py, &config, false);
    let expected: BTreeSet<i64> = runs.range(last.after + 1..=last.through).flat_map(|(_, k)| k.iter().copied()).collect();
    assert_eq!(last.keys.iter().copied().collect::<BTreeSet<_>>(), expected);
    delivered.push((last.after, last.through));
    // Batches are contiguous from run 0 to the newest: no run skipped, none delivered twice.
    let mut at = 0;
    for (after, through) in &delivered {
        assert_eq!(*after, at, "batches {delivered:?} are not contiguous");
        at = *through;
    }
    assert_eq!(at, *runs.keys().max().expect("runs"), "the last batch reaches the newest run");

    // Every ack is on record, moving forward only.
    let history = rt.block_on(async { engine.tracker().await?.history(200).await }).expect("history");
    let acks: Vec<(i64, i64)> = history
        .iter()
        .filter(|h| h.action.as_deref() == Some("ack"))
        .map(|h| (h.details["from_run_id"].as_i64().unwrap_or(-1), h.details["to_run_id"].as_i64().unwrap_or(-1)))
        .rev()
        .collect();
    assert_eq!(acks, delivered.iter().copied().filter(|(a, t)| t > a).collect::<Vec<_>>(), "one audited ack per batch (the repeated ack wrote nothing)");
    let st = rt.block_on(deltalink::ops::status::status(&engine)).expect("status");
    let c = &st.pipelines[0].consumers[0];
    assert_eq!((c.acked_run_id, c.keys_waiting, c.lag_seconds), (at, 0, 0.0), "caught up: {c:?}");
}

#[test]
fn acks_refuse_going_back_and_runs_that_do_not_exist_and_a_rewind_redelivers_on_record() {
    let rt = rt();
    let lake = Lake::new();
    let engine = lake.engine(&consumer_config());
    rt.block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let first = a.insert(&[Some(1), Some(2)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run 1");
        a.insert(&[Some(3)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run 2");

        let unknown = consume::consume(&engine, "p", "nightly").await.expect_err("undeclared consumer");
        assert!(format!("{unknown:#}").contains("[[pipelines.p.consumers]]"), "{unknown:#}");
        let batch = consume::consume(&engine, "p", "daily_job").await.expect("consume");
        assert_eq!((batch.after_run_id, batch.through_run_id, batch.keys), (0, 2, 3));
        assert!(batch.reads.spark_sql.contains(&format!("VERSION AS OF {} WHERE run_id > 0 AND run_id <= 2", batch.link_version)), "{}", batch.reads.spark_sql);

        let beyond = consume::ack(&engine, "p", "daily_job", 3, None).await.expect_err("no run 3");
        assert!(format!("{beyond:#}").contains("has no run 3: its newest run is 2"), "{beyond:#}");
        assert_eq!(consume::ack(&engine, "p", "daily_job", 2, Some("done")).await.expect("ack"), Acked::Moved { from: 0, to: 2 });
        assert_eq!(consume::ack(&engine, "p", "daily_job", 2, None).await.expect("again"), Acked::AlreadyAcked { at: 2 });
        let back = consume::ack(&engine, "p", "daily_job", 1, None).await.expect_err("backwards");
        assert!(format!("{back:#}").contains("--rewind"), "{back:#}");

        // A rewind: dry run, then on record; the next batch hands out run 2's key again.
        let plan = consume::plan_rewind(&engine, "p", "daily_job", 1).await.expect("plan");
        assert_eq!((plan.from_run_id, plan.to_run_id, plan.keys_again), (2, 1, 1));
        assert_eq!(consume::consume(&engine, "p", "daily_job").await.expect("dry run wrote nothing").keys, 0);
        consume::execute_rewind(&engine, &plan, "job lost its output").await.expect("rewind");
        let again = consume::consume(&engine, "p", "daily_job").await.expect("consume");
        assert_eq!((again.after_run_id, again.through_run_id, again.keys), (1, 2, 1));
        let stale = consume::execute_rewind(&engine, &plan, "twice").await.expect_err("moved since the dry run");
        assert!(format!("{stale:#}").contains("since the dry run"), "{stale:#}");
        let history = engine.tracker().await.expect("tracker").history(50).await.expect("history");
        let rewind = history.iter().find(|h| h.action.as_deref() == Some("ack-rewind")).expect("rewind audited");
        assert_eq!(rewind.reason.as_deref(), Some("job lost its output"));
        assert!(!first.is_empty());
        // What waits for the consumer counts in the pipeline's health, by its own objectives
        // (default warn_lag 26 h): current upstreams, a consumer 27 h behind.
        let later = deltalink::util::time::now_ms() + 27 * 3_600_000;
        let st = deltalink::ops::status::status_at(&engine, later).await.expect("status");
        let c = &st.pipelines[0].consumers[0];
        assert_eq!((c.acked_run_id, c.runs_waiting, c.keys_waiting), (1, 1, 1), "{c:?}");
        assert_eq!(st.pipelines[0].health.state, deltalink::ops::health::HealthState::Lagging, "{:?}", st.pipelines[0].health);
        assert!(st.pipelines[0].health.reason.starts_with("consumer `daily_job`: oldest unconsumed change is 1d 03h old"), "{}", st.pipelines[0].health.reason);
        let metrics = deltalink::ops::metrics::Metrics::new();
        metrics.observe_status(&st);
        let text = metrics.encode().expect("encode");
        assert!(text.contains(r#"deltalink_consumer_keys_waiting{pipeline="p",consumer="daily_job"} 1"#), "{text}");
        // Two acks of the same consumer at once: one moves it, the other finds it moved (never
        // two commits of the same step).
        let (x, y) = tokio::join!(consume::ack(&engine, "p", "daily_job", 2, None), consume::ack(&engine, "p", "daily_job", 2, None));
        // Both may answer `Moved` when the second finds exactly its own row already written (same
        // millisecond): a retry of a landed commit is let through without another commit.
        let moved = [&x, &y].iter().filter(|r| matches!(r, Ok(Acked::Moved { from: 1, to: 2 }))).count();
        assert!(moved >= 1, "{x:?} {y:?}");
        for r in [&x, &y] {
            if let Err(e) = r {
                assert!(format!("{e:#}").contains("its progress changed while this ack ran"), "{e:#}");
            }
        }
        let history = engine.tracker().await.expect("tracker").history(50).await.expect("history");
        let steps = history.iter().filter(|h| h.action.as_deref() == Some("ack") && h.details["from_run_id"] == 1).count();
        assert_eq!(steps, 1, "one audited ack from run 1");
        // Upstream rows are not consumer rows: the tracker's pipeline rows stay as they were.
        let rows = engine.tracker().await.expect("tracker").rows(Some("p")).await.expect("rows");
        assert_eq!(rows.iter().map(|r| r.upstream.as_str()).collect::<Vec<_>>(), vec!["a"]);
    });
}

/// The reads `consume` prints are pasted into a Python session as they are.
const PASTE_READS: &str = r#"
import json, sys
import polars as pl
from deltalake import DeltaTable, QueryBuilder
reads = json.loads(sys.argv[1])
print(json.dumps({
    "polars": sorted(eval(reads["polars"])["k"].to_list()),
    "deltalake": sorted(eval(reads["deltalake"]).column("k").to_pylist()),
}))
"#;

fn deltalink_cli(config: &Path, args: &[&str]) -> std::process::Output {
    deltalink_as("daily-job", config, args)
}

fn cli_ok(config: &Path, args: &[&str]) -> String {
    succeeded(&deltalink_cli(config, args), &format!("deltalink {args:?}"))
}

/// From the binary, as a downstream team uses it: the polars and deltalake reads that `consume`
/// prints, run as printed, return exactly the keys the batch's runs changed (the upstream
/// model's oracle); `ack`, then `ack --rewind` (a dry run that counts the keys delivered again,
/// refused without a reason, then on record) hands those keys out again.
#[test]
fn the_printed_reads_return_the_batch_and_ack_rewind_works_from_the_binary() {
    let Some(JobLake { py, rt, _lake, engine, config, mut a, mut rng }) = JobLake::open(23) else { return };
    let first = rt.block_on(commits(&mut a, &mut rng, 3));
    cli_ok(&config, &["run", "p"]);

    let batch: serde_json::Value = serde_json::from_str(&cli_ok(&config, &["consume", "p", "--consumer", "daily_job", "--json"])).expect("consume --json");
    assert_eq!((batch["after_run_id"].as_i64(), batch["through_run_id"].as_i64()), (Some(0), Some(1)), "{batch}");
    let out = Command::new(&py).args(["-c", PASTE_READS, &batch["reads"].to_string()]).output().expect("run python");
    assert!(out.status.success(), "the printed reads do not run:\n{}", String::from_utf8_lossy(&out.stderr));
    let read: serde_json::Value = serde_json::from_slice(&out.stdout).expect("python output");
    let expected: Vec<i64> = first.iter().copied().collect();
    assert_eq!(read["polars"], serde_json::json!(expected), "the polars read");
    assert_eq!(read["deltalake"], serde_json::json!(expected), "the deltalake read");
    assert_eq!(batch["keys"].as_u64(), Some(expected.len() as u64));

    assert_eq!(cli_ok(&config, &["ack", "p", "--consumer", "daily_job", "--through-run", "1"]).trim(), "consumer daily_job of p: acked through run 1 (was 0)");
    let second = rt.block_on(commits(&mut a, &mut rng, 2));
    cli_ok(&config, &["run", "p"]);
    cli_ok(&config, &["ack", "p", "--consumer", "daily_job", "--through-run", "2"]);

    // Back to run 0 (a dry run): every key of runs 1 and 2 would be delivered again.
    let dry = cli_ok(&config, &["ack", "p", "--consumer", "daily_job", "--through-run", "0", "--rewind"]);
    assert!(dry.starts_with(&format!("DRY RUN: consumer daily_job of p: acked run 2 → 0; {} keys of runs 1..=2 will be delivered again", first.union(&second).count())), "{dry}");
    let no_reason = deltalink_cli(&config, &["ack", "p", "--consumer", "daily_job", "--through-run", "0", "--rewind", "--execute"]);
    assert!(!no_reason.status.success() && String::from_utf8_lossy(&no_reason.stderr).contains("a rewind needs --reason"), "{}", String::from_utf8_lossy(&no_reason.stderr));
    let back: serde_json::Value = serde_json::from_str(&cli_ok(&config, &["consume", "p", "--consumer", "daily_job", "--json"])).expect("consume");
    assert_eq!(back["keys"].as_u64(), Some(0), "the refused rewind wrote nothing");
    let done = cli_ok(&config, &["ack", "p", "--consumer", "daily_job", "--through-run", "1", "--rewind", "--execute", "--reason", "lost run 2's output"]);
    assert!(done.starts_with(&format!("REWOUND: consumer daily_job of p: acked run 2 → 1; {} keys of runs 2..=2", second.len())), "{done}");
    let redelivered: serde_json::Value = serde_json::from_str(&cli_ok(&config, &["consume", "p", "--consumer", "daily_job", "--json"])).expect("consume");
    assert_eq!((redelivered["after_run_id"].as_i64(), redelivered["through_run_id"].as_i64(), redelivered["keys"].as_u64()), (Some(1), Some(2), Some(second.len() as u64)));
    let history = rt.block_on(async { engine.tracker().await?.history(50).await }).expect("history");
    let rewind = history.iter().find(|h| h.action.as_deref() == Some("ack-rewind")).expect("the rewind is audited");
    assert_eq!(rewind.reason.as_deref(), Some("lost run 2's output"));
}

#[test]
fn maintain_compacts_and_vacuums_but_keeps_what_a_consumer_is_reading() {
    let rt = rt();
    let lake = Lake::new();
    // Tiny link files (one per write) to compact into one of the usual size.
    let engine = lake.engine(&without_deletion_vectors(&consumer_config(), "p")).with_link_file_size(1);
    let options = || MaintainOptions::dry_run().with_retention(std::time::Duration::ZERO).with_clock_skew(std::time::Duration::ZERO).with_target_file_size(8 << 20);
    rt.block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        // Many small runs, each rewriting the file of the key it touches: small files and
        // removed files.
        for i in 0..6 {
            a.insert(&[Some(i), Some(100 + i)]).await;
            engine.run("p", &RunOptions::default()).await.expect("run");
        }
        let batch = consume::consume(&engine, "p", "daily_job").await.expect("consume");
        let reading = batch.link_version;
        let rows_then = read_at(&engine, reading).await;
        for i in 0..4 {
            a.update_payload(&[i + 1]).await;
            engine.run("p", &RunOptions::default()).await.expect("run");
        }
        let before_rows = link_rows(&engine, "p").await;
        let plan = maintain(&engine, &["p".to_string()], false, &options()).await.expect("dry run");
        assert_eq!(plan.len(), 1);
        assert!(!plan[0].executed && plan[0].compact_files >= 2, "{plan:?}");
        assert_eq!(plan[0].keep_from_version, Some(reading as i64));
        let files_before = walk_files(&lake.path("_deltalink/links/p")).len();
        let done = maintain(&engine, &["p".to_string()], true, &options().with_execute(true))
            .await
            .expect("maintain");
        let link = &done[0];
        assert!(link.after.files < link.before.files, "compacted: {link:?}");
        assert!(link.vacuum_files > 0, "files removed before the consumer's version are vacuumed: {link:?}");
        assert_eq!(link_rows(&engine, "p").await, before_rows, "same rows after upkeep");
        // The consumer's version still reads the same rows: vacuum kept its files.
        assert_eq!(read_at(&engine, reading).await, rows_then);
        let tracker = done.iter().find(|t| t.table == "tracker").expect("tracker maintained");
        assert!(tracker.vacuum_files > 0, "the tracker's rewritten files are removed: {tracker:?}");
        let files_after = walk_files(&lake.path("_deltalink/links/p")).len();
        assert!(files_after <= files_before, "{files_before} → {files_after}");
        let history = engine.tracker().await.expect("tracker").history(10).await.expect("history");
        assert!(history.iter().any(|h| h.action.as_deref() == Some("maintain")), "upkeep is on record");

        // Acked and consumed past it: the old version is no longer kept, and vacuum removes it.
        consume::ack(&engine, "p", "daily_job", batch.through_run_id, None).await.expect("ack");
        let latest = consume::consume(&engine, "p", "daily_job").await.expect("consume");
        consume::ack(&engine, "p", "daily_job", latest.through_run_id, None).await.expect("ack");
        maintain(&engine, &["p".to_string()], false, &options().with_execute(true)).await.expect("maintain");
        let mut old = link_table(&engine, "p").await.expect("link");
        assert!(old.load_version(reading).await.is_ok(), "the log still has the version");
        assert!(read_version(&engine, reading).await.is_err(), "its files are gone once no consumer reads it");
    });
}

async fn read_version(engine: &deltalink::Engine, version: u64) -> color_eyre::Result<Vec<(Vec<String>, i64)>> {
    let mut t = link_table(engine, "p").await.expect("link");
    t.load_version(version).await?;
    deltalink::store::link::all_keys(&t, &["k".to_string()]).await
}

async fn read_at(engine: &deltalink::Engine, version: u64) -> Vec<(Vec<String>, i64)> {
    read_version(engine, version).await.expect("read at version")
}

#[test]
fn maintain_rewrites_files_whose_deletion_vectors_hide_most_rows_and_changes_no_data() {
    let rt = rt();
    let lake = Lake::new();
    let engine = lake.engine(&consumer_config());
    rt.block_on(async {
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&(0..100).map(Some).collect::<Vec<_>>()).await;
        engine.run("p", &RunOptions::default()).await.expect("run 1: one file of 100 keys");
        // Two runs touching 40 then 30 of its keys: marked deleted in the file, written anew
        // beside it, until 70 of its 100 rows are hidden.
        a.update_payload(&(1..=40).collect::<Vec<_>>()).await;
        engine.run("p", &RunOptions::default()).await.expect("run 2");
        a.update_payload(&(41..=70).collect::<Vec<_>>()).await;
        engine.run("p", &RunOptions::default()).await.expect("run 3");
        let table = link_table(&engine, "p").await.expect("link");
        let heavy = deltalink::store::link::heavily_deleted_files(&table, 0.5).expect("heavy files");
        assert_eq!((heavy.files, heavy.rows_dropped), (1, 70), "the first file hides 70 of its 100 rows");
        let (rows, feed) = link_rows_and_feed(&engine, "p").await;

        let opts = MaintainOptions::dry_run().with_retention(std::time::Duration::from_secs(7 * 86_400));
        let plan = maintain(&engine, &["p".to_string()], false, &opts).await.expect("dry run");
        assert_eq!(plan[0].purge.files, 1, "{plan:?}");
        let done = maintain(&engine, &["p".to_string()], false, &opts.with_execute(true)).await.expect("maintain");
        assert_eq!((done[0].purge.files, done[0].purge.rows_dropped), (1, 70), "{done:?}");
        let table = link_table(&engine, "p").await.expect("link");
        assert_eq!(deltalink::store::link::heavily_deleted_files(&table, 0.5).expect("heavy").files, 0);
        assert_eq!(link_rows_and_feed(&engine, "p").await, (rows, feed), "same rows, same change feed");
        // And the next run still merges into the purged and compacted table.
        a.update_payload(&[99]).await;
        engine.run("p", &RunOptions::default()).await.expect("run after maintain");
        let keys = link_keys(&engine, "p").await;
        assert_eq!((keys.len(), keys[&98]), (100, 4), "key 98 (row 99) changed by run 4");
    });
}

/// A full VACUUM deletes files no commit references (a run that died before its commit leaves
/// them), but not young ones, whatever the retention: a writer's files exist before its commit
/// refers to them, and the tracker takes commits from other processes without a lease.
#[test]
fn maintain_vacuums_old_unreferenced_files_but_never_young_ones() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&consumer_config());
        a.insert(&[Some(1), Some(2)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run");
        let mut orphans = Vec::new();
        for table in ["_deltalink/links/p", "_deltalink/tracker"] {
            let young = lake.path(table).join("part-00000-young-not-yet-committed.parquet");
            let old = lake.path(table).join("part-00000-old-never-committed.parquet");
            for f in [&young, &old] {
                std::fs::write(f, b"a writer's file").expect("write");
            }
            let two_hours_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
            std::fs::File::options().write(true).open(&old).expect("open").set_modified(two_hours_ago).expect("mtime");
            orphans.push((young, old));
        }
        let opts = MaintainOptions::dry_run().with_retention(std::time::Duration::ZERO).with_execute(true);
        maintain(&engine, &["p".to_string()], true, &opts).await.expect("maintain");
        for (young, old) in orphans {
            assert!(young.exists(), "kept: {}", young.display());
            assert!(!old.exists(), "vacuumed: {}", old.display());
        }
        let keys: Affected = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(keys, [1, 2].into_iter().collect::<Affected>());
    });
}
