//! Every upstream problem of design item 9 gives a clear error that says how to fix it,
//! and bad config fails at load naming the file, line and field.

use deltalink::engine::RunOptions;
use deltalink::Config;

use crate::common::*;

fn message(e: color_eyre::Report) -> String {
    format!("{e:#}")
}

#[test]
fn missing_upstream_is_named_with_its_config_field() {
    rt().block_on(async {
        let lake = Lake::new();
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must fail"));
        assert!(e.contains("upstream `a`") && e.contains("does not exist"), "{e}");
        assert!(e.contains("upstreams.a.uri"), "{e}");
        assert!(engine.tracker().await.expect("tracker").table().is_none(), "nothing written");
    });
}

#[test]
fn cdf_disabled_prints_the_alter_table_to_run() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), false).await;
        a.insert(&[Some(1)]).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must fail"));
        assert!(e.contains("does not have the Change Data Feed enabled"), "{e}");
        assert!(e.contains("SET TBLPROPERTIES (delta.enableChangeDataFeed = true)"), "{e}");
        assert!(deltalink::store::lake::open_owned(&engine.config.pipeline("p").unwrap().link_table, &Default::default())
            .await
            .expect("open")
            .is_none());
    });
}

#[test]
fn cdf_enabled_mid_history_says_from_which_version() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), false).await;
        a.insert(&[Some(1)]).await;
        let t = a
            .table
            .clone()
            .set_tbl_properties()
            .with_properties([("delta.enableChangeDataFeed".to_string(), "true".to_string())].into())
            .await
            .expect("enable cdf");
        a.table = t;
        let enabled_at = a.version();
        a.insert(&[Some(2)]).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must fail"));
        assert!(e.contains(&format!("enabled from version {enabled_at}")), "{e}");
    });
}

#[test]
fn missing_key_column_lists_the_columns_there_are() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let cfg = simple_config(&["a"], &[("p", &["a"])]).replace("keys = [\"k\"]", "keys = [\"kk\"]");
        let engine = lake.engine(&cfg);
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must fail"));
        assert!(e.contains("has no column `kk`"), "{e}");
        assert!(e.contains("row_id") && e.contains("payload"), "{e}");
    });
}

#[test]
fn processed_version_below_earliest_readable_names_the_earliest() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        a.insert(&[Some(1)]).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        engine.run("p", &RunOptions::default()).await.expect("run");
        for k in 2..6 {
            a.insert(&[Some(k)]).await;
        }
        let cp = a.version();
        deltalake::checkpoints::create_checkpoint(&a.table, None).await.expect("checkpoint");
        for v in 0..cp {
            std::fs::remove_file(lake.path(&format!("a/_delta_log/{v:020}.json"))).expect("rm");
        }
        a.insert(&[Some(9)]).await;
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must fail"));
        assert!(e.contains("not readable for versions 2"), "{e}");
        assert!(e.contains(&format!("earliest readable version is {}", cp + 1)), "{e}");
        assert!(e.contains("tracker reset p --upstream a") || e.contains("tracker reset PIPELINE --upstream a"), "{e}");
    });
}

fn config_error(toml: &str) -> String {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("bad.toml");
    std::fs::write(&p, toml).expect("write");
    Config::load(&p).expect_err("config must be rejected").to_string()
}

const GOOD: &str = r#"[tracker]
uri = "t"
[upstreams.a]
uri = "a"
[pipelines.p]
link_table = "l"
key = ["k"]
[[pipelines.p.sources]]
upstream = "a"
keys = ["k"]
"#;

#[test]
fn config_errors_name_file_line_and_field() {
    let dir = tempfile::tempdir().expect("tmp");
    let p = dir.path().join("ok.toml");
    std::fs::write(&p, GOOD).expect("write");
    let c = Config::load(&p).expect("good config loads");
    assert_eq!(c.pipelines["p"].key, vec!["k"]);
    assert_eq!(c.upstreams["a"].uri.to_file_path().expect("path"), dir.path().join("a"), "relative to the config's folder");

    let e = config_error(&GOOD.replace("key = [\"k\"]", "key = [\"k\"]\nkeyz = 1"));
    assert!(e.contains("bad.toml") && e.contains("line 8") && e.contains("keyz"), "{e}");

    let e = config_error(&GOOD.replace("upstream = \"a\"", "upstream = \"nope\""));
    assert!(e.contains("bad.toml:9") && e.contains("pipelines.p.sources[0].upstream") && e.contains("unknown upstream `nope`"), "{e}");

    let e = config_error(&GOOD.replace("keys = [\"k\"]", "keys = []"));
    assert!(e.contains("bad.toml:10") && e.contains("pipelines.p.sources[0].keys") && e.contains("is empty"), "{e}");

    let e = config_error(&GOOD.replace("key = [\"k\"]", "key = []"));
    assert!(e.contains("bad.toml:7") && e.contains("pipelines.p.key"), "{e}");

    let e = config_error(&format!("{GOOD}[upstreams.a]\nuri = \"again\"\n"));
    assert!(e.contains("bad.toml") && e.contains("duplicate") && e.contains("line 11"), "{e}");

    let e = config_error(&GOOD.replace("key = [\"k\"]", "key = [\"k\", \"k\"]"));
    assert!(e.contains("listed twice"), "{e}");

    let e = config_error(&GOOD.replace("keys = [\"k\"]", "keys = [\"k\", \"j\"]"));
    assert!(e.contains("gives 2 column(s) but the pipeline key"), "{e}");
}

#[test]
fn a_link_table_deleted_by_hand_is_refused_with_the_rebuild_command() {
    // A pipeline mapping by columns, and one mapping only through `sql` (its link table's key
    // types come from the query's planned output).
    let by_columns = simple_config(&["a"], &[("p", &["a"])]);
    let by_sql = by_columns.replace("keys = [\"k\"]", "sql = \"SELECT c.k AS k FROM changes c\"");
    for config in [by_columns, by_sql] {
        rt().block_on(async {
            let lake = Lake::new();
            let mut a = ModelTable::create(&lake.path("a"), true).await;
            let engine = lake.engine(&config);
            // The first run finds only a NULL key: the link table is created all the same.
            a.insert(&[None]).await;
            engine.run("p", &RunOptions::default()).await.expect("run");
            assert!(lake.path("_deltalink/links/p/_delta_log").exists(), "created by a run without keys ({config})");
            std::fs::remove_dir_all(lake.path("_deltalink/links/p")).expect("delete link table");
            a.insert(&[Some(2)]).await;
            let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
            assert!(e.contains("link table") && e.contains("is missing") && e.contains("--to-earliest"), "{e}");
            assert!(!lake.path("_deltalink/links/p").exists(), "nothing recreated silently");
        });
    }
}

#[test]
fn a_tracker_whose_schema_was_changed_by_hand_is_refused() {
    rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        a.insert(&[Some(1)]).await;
        // A tracker-shaped table missing the run_id column, made by someone else.
        let uri = url_of(&lake.path("_deltalink/tracker"));
        std::fs::create_dir_all(lake.path("_deltalink/tracker")).expect("mkdir");
        deltalake::DeltaTable::try_from_url(uri)
            .await
            .expect("handle")
            .create()
            .with_columns([
                deltalake::schema::StructField::new("pipeline_name", deltalake::schema::DataType::STRING, false),
                deltalake::schema::StructField::new("upstream", deltalake::schema::DataType::STRING, false),
            ])
            .await
            .expect("create");
        let e = message(engine.run("p", &RunOptions::default()).await.expect_err("must refuse"));
        assert!(e.contains("tracker table") && e.contains("was its schema changed by hand"), "{e}");
    });
}

#[test]
fn the_default_config_describes_the_demo_lake() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("configs/deltalink.toml");
    let c = Config::load(&path).expect("configs/deltalink.toml loads");
    let demo = Config::parse(deltalink::ops::demo::DEMO_CONFIG, std::path::Path::new("/x/demo-lake/deltalink.toml")).expect("demo config");
    assert_eq!(c.pipelines.keys().collect::<Vec<_>>(), demo.pipelines.keys().collect::<Vec<_>>());
    assert!(c.upstreams["publications"].uri.path().ends_with("/demo-lake/publications/"), "{}", c.upstreams["publications"].uri);
}
