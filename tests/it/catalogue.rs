//! The bad-input catalogue of the README: each input gets a clear message with the fix, and
//! nothing is written (tracker and link table untouched) unless the row says what is kept.

use std::sync::Arc;

use deltalake::arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema};
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use deltalake::schema::{DataType as DeltaType, StructField};
use deltalake::TableProperty;
use deltalink::ops::reset::{plan_reset, ResetTarget};
use deltalink::engine::RunOptions;
use deltalink::Engine;

use crate::common::*;

fn message(e: color_eyre::Report) -> String {
    format!("{e:#}")
}

/// Tracker version of (p, a), or None when the tracker has no row.
async fn processed(engine: &Engine) -> Option<i64> {
    let tracker = engine.tracker().await.expect("tracker");
    tracker.rows(Some("p")).await.expect("rows").first().and_then(|r| r.processed())
}

/// A lake with upstream `a` (one insert, run once) and pipeline `p` over it.
async fn lake_after_one_run() -> (Lake, ModelTable, Engine) {
    let lake = Lake::new();
    let mut a = ModelTable::create(&lake.path("a"), true).await;
    a.insert(&[Some(1)]).await;
    let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
    engine.run("p", &RunOptions::default()).await.expect("first run");
    (lake, a, engine)
}

#[test]
fn a_folder_that_is_not_delta_names_the_setting_to_fix() {
    rt().block_on(async {
        let lake = Lake::new();
        std::fs::create_dir_all(lake.path("a")).expect("mkdir");
        std::fs::write(lake.path("a/part-0000.parquet"), b"not a delta table").expect("write");
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("upstream `a`") && e.contains("is not a Delta table"), "{e}");
        assert!(e.contains("fix: point `upstreams.a.uri`"), "{e}");
        assert!(!lake.path("_deltalink/tracker/_delta_log").exists(), "nothing written");
        assert!(!lake.path("_deltalink/links/p").exists(), "nothing written");
    });
}

#[test]
fn an_unknown_pipeline_lists_the_configured_ones() {
    rt().block_on(async {
        let lake = Lake::new();
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"]), ("q", &["a"])]));
        let e = message(engine.run("nope", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("unknown pipeline `nope`; configured pipelines: p, q"), "{e}");
        let e = message(plan_reset(&engine, "p", &["zz".into()], ResetTarget::Latest).await.expect_err("must refuse"));
        assert!(e.contains("zz") && e.contains("a"), "{e}");
    });
}

#[test]
fn vacuumed_data_files_are_reported_as_unreadable_versions() {
    rt().block_on(async {
        let (lake, mut a, engine) = lake_after_one_run().await;
        a.insert(&[Some(2)]).await;
        let gone = a.version();
        a.insert(&[Some(3)]).await;
        // Remove the data file that version `gone` added, as VACUUM would after a rewrite.
        let log = std::fs::read_to_string(lake.path(&format!("a/_delta_log/{gone:020}.json"))).expect("log");
        let add: serde_json::Value = log
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json"))
            .find(|v| v.get("add").is_some())
            .expect("an add action");
        let file = add["add"]["path"].as_str().expect("path");
        std::fs::remove_file(lake.path(&format!("a/{file}"))).expect("remove data file");
        let before = processed(&engine).await;
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("upstream `a`") && e.contains("not readable"), "{e}");
        // The fix says that it skips versions, and what the skipped keys need.
        assert!(e.contains("--to-latest  SKIPS them") && e.contains("backfill"), "{e}");
        assert_eq!(processed(&engine).await, before, "the tracker did not move");
        assert_eq!(link_keys(&engine, "p").await.len(), 1, "the link table is untouched");
    });
}

/// Someone overwrites the upstream with a new schema (CDF kept on): `k` retyped to a string, or
/// gone. The run is refused before anything is written: tracker and link table keep their
/// versions.
#[test]
fn a_retyped_or_dropped_key_column_is_refused_before_any_write() {
    let retyped = (Field::new("k", DataType::Utf8, true), Arc::new(StringArray::from(vec!["k-10"])) as ArrayRef);
    for key_column in [Some(retyped), None] {
        rt().block_on(async {
            let (_lake, a, engine) = lake_after_one_run().await;
            let mut fields = vec![Field::new("row_id", DataType::Int64, false)];
            let mut cols: Vec<ArrayRef> = vec![Arc::new(Int64Array::from(vec![10]))];
            if let Some((field, col)) = key_column.clone() {
                fields.push(field);
                cols.push(col);
            }
            fields.push(Field::new("payload", DataType::Utf8, true));
            cols.push(Arc::new(StringArray::from(vec!["x"])));
            let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols).expect("batch");
            a.table
                .clone()
                .write(vec![batch])
                .with_save_mode(SaveMode::Overwrite)
                .with_schema_mode(SchemaMode::Overwrite)
                .await
                .expect("overwrite with a new schema");
            let before = (processed(&engine).await, link_version(&engine).await);
            let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
            if key_column.is_some() {
                assert!(e.contains("key column `k` is now Utf8") && e.contains("holds Int64"), "{e}");
                assert!(e.contains("was the column retyped?") && e.contains("fix:"), "{e}");
            } else {
                assert!(e.contains("no column `k`") && e.contains("row_id") && e.contains("payload"), "{e}");
            }
            assert_eq!((processed(&engine).await, link_version(&engine).await), before, "tracker and link table did not move");
            assert_eq!(link_keys(&engine, "p").await.len(), 1, "the link table is untouched");
        });
    }
}

async fn link_version(engine: &Engine) -> Option<u64> {
    link_table(engine, "p").await.and_then(|t| t.version())
}

#[test]
fn null_keys_are_skipped_and_very_long_keys_kept_whole() {
    rt().block_on(async {
        let lake = Lake::new();
        std::fs::create_dir_all(lake.path("a")).expect("mkdir");
        let table = deltalake::DeltaTable::try_from_url(url_of(&lake.path("a")))
            .await
            .expect("handle")
            .create()
            .with_columns([
                StructField::new("id", DeltaType::LONG, false),
                StructField::new("name", DeltaType::STRING, true),
            ])
            .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
            .await
            .expect("create");
        let long = "x".repeat(100_000) + "-end";
        let schema = Arc::new(Schema::new(vec![
            Field::new("id", DataType::Int64, false),
            Field::new("name", DataType::Utf8, true),
        ]));
        let cols: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![1, 2, 3])),
            Arc::new(StringArray::from(vec![Some("short"), None, Some(long.as_str())])),
        ];
        let batch = RecordBatch::try_new(schema, cols).expect("batch");
        table.write(vec![batch]).with_save_mode(SaveMode::Append).await.expect("append");
        let cfg = simple_config(&["a"], &[("p", &["a"])]).replace("\"k\"", "\"name\"");
        let engine = lake.engine(&cfg);
        let r = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!((r.distinct_keys, r.null_key_rows), (2, 1), "{r:?}");
        let mut keys: Vec<String> = link_rows(&engine, "p").await.into_iter().map(|(k, _)| k[0].clone()).collect();
        keys.sort();
        assert_eq!(keys, vec!["short".to_string(), long], "the long key is stored whole");
    });
}

#[test]
fn a_link_table_whose_schema_was_changed_by_hand_is_refused() {
    rt().block_on(async {
        let (lake, mut a, engine) = lake_after_one_run().await;
        // Someone replaces the link table with one that lacks run_id and the provenance columns.
        std::fs::remove_dir_all(lake.path("_deltalink/links/p")).expect("rm");
        std::fs::create_dir_all(lake.path("_deltalink/links/p")).expect("mkdir");
        deltalake::DeltaTable::try_from_url(url_of(&lake.path("_deltalink/links/p")))
            .await
            .expect("handle")
            .create()
            .with_columns([
                StructField::new("pipeline_name", DeltaType::STRING, false),
                StructField::new("k", DeltaType::LONG, true),
            ])
            .await
            .expect("create");
        a.insert(&[Some(2)]).await;
        let before = processed(&engine).await;
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("link table") && e.contains("was its schema changed by hand?"), "{e}");
        assert!(e.contains("fix:"), "{e}");
        assert_eq!(processed(&engine).await, before, "the tracker did not move");
    });
}

/// Rewrite the commit timestamp of `version` in its log file, as a writer with a wrong clock would.
fn stamp_commit(lake: &Lake, table: &str, version: u64, ts_ms: i64) {
    let path = lake.path(&format!("{table}/_delta_log/{version:020}.json"));
    let log = std::fs::read_to_string(&path).expect("log");
    let lines: Vec<String> = log
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).expect("json");
            if let Some(ci) = v.get_mut("commitInfo") {
                ci["timestamp"] = serde_json::json!(ts_ms);
            }
            v.to_string()
        })
        .collect();
    std::fs::write(&path, lines.join("\n") + "\n").expect("rewrite log");
}

fn commit_ts(lake: &Lake, table: &str, version: u64) -> i64 {
    let log = std::fs::read_to_string(lake.path(&format!("{table}/_delta_log/{version:020}.json"))).expect("log");
    log.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find_map(|v| v.get("commitInfo").and_then(|c| c["timestamp"].as_i64()))
        .expect("commit timestamp")
}

#[test]
fn clock_skew_in_commit_timestamps_does_not_lose_keys_or_misplace_resets() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await; // v1
        a.insert(&[Some(2)]).await; // v2: its writer's clock is 20 years behind
        a.insert(&[Some(3)]).await; // v3: its writer's clock is 50 years ahead
        let t1 = commit_ts(&lake, "a", 1);
        stamp_commit(&lake, "a", 2, t1 - 20 * 365 * 86_400_000);
        stamp_commit(&lake, "a", 3, t1 + 50 * 365 * 86_400_000);
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        // Versions, not clocks, bound a run: every key arrives.
        engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(link_keys(&engine, "p").await.keys().copied().collect::<Vec<_>>(), vec![1, 2, 3]);
        let st = deltalink::ops::status::status(&engine).await.expect("status");
        let lag = st.pipelines[0].upstreams[0].lag_seconds.expect("lag");
        assert!(lag >= 0.0, "lag is never negative: {lag}");
        // A timestamp reset made monotonic as Delta time travel does: v2's stamp from the past
        // counts as just after v1, so "at or before t1" is v1, not v2.
        let at = chrono::DateTime::from_timestamp_millis(t1).expect("t1");
        let plan = plan_reset(&engine, "p", &[], ResetTarget::DateTime(at)).await.expect("plan");
        assert_eq!(plan.changes[0].new, Some(1), "{plan:?}");
    });
}

#[test]
fn an_unset_environment_variable_in_storage_names_the_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("deltalink.toml");
    let cfg = "[storage]\nAWS_SECRET_ACCESS_KEY = \"${DELTALINK_TEST_NEVER_SET_9F2}\"\n".to_string() + &simple_config(&["a"], &[("p", &["a"])]);
    std::fs::write(&p, cfg).expect("write");
    let e = deltalink::Config::load(&p).expect_err("must be refused").to_string();
    assert!(e.contains("deltalink.toml:2: field `storage.AWS_SECRET_ACCESS_KEY`"), "{e}");
    assert!(e.contains("`DELTALINK_TEST_NEVER_SET_9F2` is not set") && e.contains("fix: export"), "{e}");
}

#[test]
fn a_tracker_ahead_of_a_recreated_upstream_is_refused() {
    rt().block_on(async {
        let (lake, mut a, engine) = lake_after_one_run().await;
        a.insert(&[Some(2)]).await;
        engine.run("p", &RunOptions::default()).await.expect("second run");
        // The upstream is dropped and re-created: its versions start again below the tracker's.
        std::fs::remove_dir_all(lake.path("a")).expect("drop table");
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(7)]).await;
        let before = processed(&engine).await;
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("newer than its latest version 1") && e.contains("was the table re-created?"), "{e}");
        assert!(e.contains("tracker reset p --upstream a"), "{e}");
        assert_eq!(processed(&engine).await, before, "the tracker did not move");
    });
}

/// In a cycle (`run --all`, `watch`: upstreams pinned once for every pipeline), a re-created
/// upstream is refused for each pipeline that reads it, and the cycle's other pipelines run.
#[test]
fn a_recreated_upstream_in_a_cycle_refuses_its_readers_and_the_others_run() {
    rt().block_on(async {
        let lake = Lake::new();
        let engine = lake.engine(&simple_config(&["a", "b"], &[("p", &["a"]), ("q", &["b"]), ("r", &["a"])]));
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        a.insert(&[Some(2)]).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        b.insert(&[Some(1)]).await;
        for (name, r) in engine.run_many(&[], &RunOptions::default()).await {
            r.unwrap_or_else(|e| panic!("first cycle, {name}: {e:#}"));
        }
        std::fs::remove_dir_all(lake.path("a")).expect("drop table");
        ModelTable::create(&lake.path("a"), true).await.insert(&[Some(7)]).await;
        b.insert(&[Some(5)]).await;
        let results = engine.run_many(&[], &RunOptions::default()).await;
        for (name, r) in &results {
            match name.as_str() {
                "q" => assert_eq!(r.as_ref().expect("q reads only b").distinct_keys, 1),
                _ => {
                    let e = format!("{:#}", r.as_ref().expect_err("a reader of the re-created table"));
                    assert!(e.contains(&format!("pipeline `{name}`: the tracker is at version 2 of `a`, which is newer than its latest version 1")), "{e}");
                    assert!(e.contains(&format!("tracker reset {name} --upstream a --to-earliest")), "{e}");
                }
            }
        }
        assert_eq!(results.len(), 3);
    });
}

/// An upstream `(row_id LONG, k INT)` with CDF, holding `keys`.
async fn int_keyed_table(dir: &std::path::Path, keys: &[i32]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let table = deltalake::DeltaTableBuilder::from_url(url_of(dir))
        .expect("url")
        .build()
        .expect("handle")
        .create()
        .with_columns([StructField::new("row_id", DeltaType::LONG, false), StructField::new("k", DeltaType::INTEGER, true)])
        .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
        .await
        .expect("create");
    let schema = Arc::new(Schema::new(vec![Field::new("row_id", DataType::Int64, false), Field::new("k", DataType::Int32, true)]));
    let rows: Vec<i64> = (0..keys.len() as i64).collect();
    let batch = RecordBatch::try_new(schema, vec![Arc::new(Int64Array::from(rows)), Arc::new(deltalake::arrow::array::Int32Array::from(keys.to_vec()))])
        .expect("batch");
    table.write(vec![batch]).with_save_mode(SaveMode::Append).await.expect("write");
}

/// Sources whose key columns differ in width (INT in one upstream, LONG in another): a new link
/// table takes the wider type and holds every key; a link table created narrower refuses the
/// wider source while planning — before any intent — naming both columns.
#[test]
fn key_columns_of_different_integer_widths_widen_or_are_refused_before_the_intent() {
    rt().block_on(async {
        let lake = Lake::new();
        int_keyed_table(&lake.path("a"), &[1, 2]).await;
        let mut b = ModelTable::create(&lake.path("b"), true).await;
        b.insert(&[Some(5_000_000_000)]).await;

        let both = simple_config(&["a", "b"], &[("p", &["a", "b"])]);
        let engine = lake.engine(&both);
        engine.run("p", &RunOptions::default()).await.expect("the link table takes the wider type");
        let keys: Vec<i64> = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(keys, vec![1, 2, 5_000_000_000]);

        // `q` first reads only `a`: its link table's key is an INT; then `b` is added.
        let narrow = lake.engine(&simple_config(&["a", "b"], &[("q", &["a"])]));
        narrow.run("q", &RunOptions::default()).await.expect("q over a");
        let widened = lake.engine(&simple_config(&["a", "b"], &[("q", &["a", "b"])]));
        let e = message(widened.run("q", &RunOptions::default()).await.expect_err("refused"));
        assert!(e.contains("key column `k`") && e.contains("upstream `b` column `k`") && e.contains("link table's column `k`"), "{e}");
        assert!(e.contains("may not fit") && e.contains("fix:"), "{e}");
        let rows = widened.tracker().await.expect("t").rows(Some("q")).await.expect("rows");
        assert!(rows.iter().all(|r| r.pending_run_id.is_none()), "refused before the intent: {rows:?}");
    });
}

/// Commit a metadata change to `a` by hand (as another writer would): `a`'s configuration with
/// `delta.columnMapping.mode` set to `mode`.
fn commit_column_mapping(lake: &Lake, version: u64, mode: &str) {
    let log = lake.path("a/_delta_log");
    let first = std::fs::read_to_string(log.join(format!("{:020}.json", 0))).expect("read version 0");
    let mut metadata: serde_json::Value = first
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|a| a.get("metaData").is_some())
        .expect("version 0 has metadata");
    metadata["metaData"]["configuration"]["delta.columnMapping.mode"] = serde_json::Value::from(mode);
    let info = serde_json::json!({"commitInfo": {"timestamp": 1_796_000_000_000_i64 + version as i64, "operation": "SET TBLPROPERTIES"}});
    std::fs::write(log.join(format!("{version:020}.json")), format!("{info}\n{metadata}\n")).expect("write commit");
}

#[test]
fn column_mapping_turned_on_and_off_again_inside_the_range_is_refused() {
    rt().block_on(async {
        let (lake, mut a, engine) = lake_after_one_run().await;
        a.insert(&[Some(2)]).await; // version 2
        commit_column_mapping(&lake, 3, "name");
        commit_column_mapping(&lake, 4, "none");
        let before = processed(&engine).await;
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("a range with column mapping must be refused"));
        assert!(e.contains("column mapping (delta.columnMapping.mode = name)"), "{e}");
        assert_eq!(processed(&engine).await, before, "the tracker did not move");
        assert_eq!(link_keys(&engine, "p").await.len(), 1, "the link table is untouched");
    });
}
