//! Tables written by other writers: Spark 3.5 / Delta 3.0 and Spark 4.1 / Delta 4.3 (in-commit
//! timestamps), a Databricks-layout table with deletion vectors, and a column-mapped table written
//! by Python `deltalake`, copied from tests/fixtures (see its README for their change feeds).

use std::collections::BTreeSet;
use std::path::Path;

use deltalink::engine::RunOptions;

use crate::common::*;

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for e in std::fs::read_dir(from).expect("read fixture dir") {
        let e = e.expect("entry");
        let dest = to.join(e.file_name());
        if e.file_type().expect("type").is_dir() {
            copy_dir(&e.path(), &dest);
        } else {
            std::fs::copy(e.path(), dest).expect("copy");
        }
    }
}

fn fixture_lake(name: &str, key: &str) -> Lake {
    let lake = Lake::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(name);
    copy_dir(&src, &lake.path("up"));
    let cfg = format!(
        "[tracker]\nuri = \"tracker\"\n[upstreams.up]\nuri = \"up\"\n[pipelines.p]\nlink_table = \"link\"\nkey = [\"{key}\"]\n[[pipelines.p.sources]]\nupstream = \"up\"\nkeys = [\"{key}\"]\n"
    );
    std::fs::write(lake.path("deltalink.toml"), cfg).expect("config");
    lake
}

/// (key, upstream version of its latest change, change type) as preview reports them.
async fn provenance(lake: &Lake) -> BTreeSet<(String, i64, String)> {
    let engine = deltalink::Engine::new(deltalink::Config::load(lake.path("deltalink.toml")).expect("config"));
    let p = engine.preview("p", None).await.expect("preview");
    p.rows.into_iter().map(|r| (r.key[0].clone(), r.commit_version, r.change_type)).collect()
}

fn expect(rows: &[(&str, i64, &str)]) -> BTreeSet<(String, i64, String)> {
    rows.iter().map(|(k, v, c)| (k.to_string(), *v, c.to_string())).collect()
}

#[test]
fn spark_partitioned_cdf_table() {
    rt().block_on(async {
        let lake = fixture_lake("spark-cdf/cdf-table", "id");
        // 0 insert 1..10; 1 update 2,3,4; 2 update 5,6,7; 3 delete 7 (latest change per key).
        let got = provenance(&lake).await;
        let mut want = vec![("1", 0, "insert"), ("8", 0, "insert"), ("9", 0, "insert"), ("10", 0, "insert")];
        want.extend([("2", 1), ("3", 1), ("4", 1), ("5", 2), ("6", 2)].map(|(k, v)| (k, v, "update_preimage")));
        want.push(("7", 3, "delete"));
        assert_eq!(got, expect(&want));
        let engine = deltalink::Engine::new(deltalink::Config::load(lake.path("deltalink.toml")).expect("config"));
        let r = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(r.distinct_keys, 10);
        let link = link_keys(&engine, "p").await;
        assert_eq!(link.keys().copied().collect::<Vec<_>>(), (1..=10).collect::<Vec<_>>());
    });
}

#[test]
fn spark_non_partitioned_cdf_table() {
    rt().block_on(async {
        let lake = fixture_lake("spark-cdf/cdf-table-non-partitioned", "id");
        let got = provenance(&lake).await;
        let latest: Vec<(String, i64)> = got.iter().map(|(k, v, _)| (k.clone(), *v)).collect();
        let mut want: Vec<(String, i64)> = vec![
            ("1", 4), ("10", 0), ("2", 4), ("3", 1), ("4", 1), ("5", 2), ("6", 2), ("7", 3), ("8", 0), ("9", 0),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        want.sort();
        assert_eq!(latest, want);
    });
}

#[test]
fn spark_in_commit_timestamp_table_keyed_by_name() {
    rt().block_on(async {
        let lake = fixture_lake("spark-cdf/cdc_ict_table", "name");
        let got = provenance(&lake).await;
        let keys: Vec<(String, i64)> = got.iter().map(|(k, v, _)| (k.clone(), *v)).collect();
        assert_eq!(
            keys,
            vec![("Dan".into(), 2), ("Dave".into(), 2), ("Kate".into(), 3), ("Steve".into(), 3)]
        );
        let engine = deltalink::Engine::new(deltalink::Config::load(lake.path("deltalink.toml")).expect("config"));
        engine.run("p", &RunOptions::default()).await.expect("run");
        let st = deltalink::ops::status::status(&engine).await.expect("status");
        let u = &st.upstreams[0];
        assert_eq!(u.latest_version, Some(3));
        assert!(u.cdf_enabled);
        assert!(u.last_commit_ts.is_some(), "in-commit timestamp read: {u:?}");
        assert_eq!(st.pipelines[0].upstreams[0].lag_versions, Some(0));
        assert_eq!(st.pipelines[0].link_rows, Some(4));
    });
}

#[test]
fn deletion_vector_table_with_file_and_inline_vectors() {
    rt().block_on(async {
        let lake = fixture_lake("dv-table", "id");
        // 0 insert 1..10; 1 DV delete 3,7 (+cdc file); 2 insert 11,12; 3 DV update 5 (+cdc file);
        // 4 inline-DV delete 9 with no cdc file (the reader diffs the old and new vectors).
        let got = provenance(&lake).await;
        let mut want: Vec<(&str, i64, &str)> =
            ["1", "2", "4", "6", "8", "10"].iter().map(|k| (*k, 0, "insert")).collect();
        want.extend([("3", 1, "delete"), ("7", 1, "delete"), ("11", 2, "insert"), ("12", 2, "insert")]);
        want.extend([("5", 3, "update_preimage"), ("9", 4, "delete")]);
        assert_eq!(got, expect(&want));
        let engine = deltalink::Engine::new(deltalink::Config::load(lake.path("deltalink.toml")).expect("config"));
        let r = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(r.distinct_keys, 12);
        let link = link_keys(&engine, "p").await;
        assert_eq!(link.keys().copied().collect::<Vec<_>>(), (1..=12).collect::<Vec<_>>());
    });
}

#[test]
fn column_mapped_table_is_refused_and_nothing_is_written() {
    rt().block_on(async {
        let lake = fixture_lake("column-mapping", "id");
        let engine = deltalink::Engine::new(deltalink::Config::load(lake.path("deltalink.toml")).expect("config"));
        let e = engine.run("p", &RunOptions::default()).await.expect_err("column mapping must be refused");
        let msg = format!("{e:#}");
        assert!(msg.contains("column mapping (delta.columnMapping.mode = name)"), "{msg}");
        assert!(msg.contains("fix:"), "{msg}");
        let e = engine.preview("p", None).await.expect_err("preview must refuse too");
        assert!(format!("{e:#}").contains("column mapping"), "{e:#}");
        assert!(!lake.path("link").exists(), "no link table may be created");
        assert!(!lake.path("tracker/_delta_log").exists(), "no tracker may be created");
        let lease = deltalink::store::lease::current(&engine.config, "p").await.expect("lease");
        assert!(lease.as_ref().is_none_or(|l| l.released), "the run's lease must be released: {lease:?}");
    });
}
