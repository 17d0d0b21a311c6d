//! Downstream readers: the Python `deltalake` + `polars` packages (another Delta reader) read the
//! link table and its change feed and get the same keys. `.ci/run` installs them in a venv and
//! sets DELTALINK_PYTHON; without it the test says SKIPPED.

use std::collections::BTreeSet;
use std::process::Command;

use deltalink::engine::RunOptions;

use crate::common::*;

pub(crate) fn python() -> Option<String> {
    let py = std::env::var("DELTALINK_PYTHON").ok()?;
    let ok = Command::new(&py).args(["-c", "import deltalake, polars"]).status().ok()?.success();
    ok.then_some(py)
}

const READ_LINK: &str = r#"
import sys, json
from deltalake import DeltaTable
import polars as pl
uri, reader = sys.argv[1], sys.argv[2]
dt = DeltaTable(uri)
# pyarrow datasets refuse tables with deletion vectors (deltalake 1.6); polars reads them.
df = pl.read_delta(uri) if reader == "polars" else pl.from_arrow(dt.to_pyarrow_table())
cdf = pl.from_arrow(__import__("pyarrow").table(dt.load_cdf(starting_version=0)))
inserted = cdf.filter(pl.col("_change_type") == "insert")["k"].to_list()
images = lambda t: sorted([k, r] for k, r in cdf.filter(pl.col("_change_type") == t).select(["k", "run_id"]).iter_rows())
print(json.dumps({"keys": sorted(df["k"].to_list()), "cdf_inserts": sorted(inserted),
                  "pre": images("update_preimage"), "post": images("update_postimage"),
                  "runs": sorted(set(df["run_id"].to_list())), "upstreams": df["upstreams"].to_list()[0]}))
"#;

/// `p`'s link table takes deletion vectors (run 2 marks key 1's row in the first file), read
/// by polars; `cow`'s is copy-on-write (`deletion_vectors = false`), read through pyarrow,
/// which refuses deletion vectors.
#[test]
fn python_deltalake_and_polars_read_the_link_table_and_its_change_feed() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: set DELTALINK_PYTHON to a python with deltalake + polars (.ci/run does)");
        return;
    };
    let (lake, expected) = rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let config = without_deletion_vectors(&simple_config(&["a"], &[("p", &["a"]), ("cow", &["a"])]), "cow");
        let engine = lake.engine(&config);
        let mut keys = a.insert(&(1..=40).map(Some).collect::<Vec<_>>()).await;
        for p in ["p", "cow"] {
            engine.run(p, &RunOptions::default()).await.expect("run 1");
        }
        keys.extend(a.update_key(&[1], 100).await);
        for p in ["p", "cow"] {
            engine.run(p, &RunOptions::default()).await.expect("run 2");
        }
        let marked = link_table(&engine, "p").await.expect("link table");
        assert_eq!(files_with_deletion_vectors(&marked), 1, "run 2 marked key 1's row instead of rewriting the file");
        let copied = link_table(&engine, "cow").await.expect("link table");
        assert_eq!(files_with_deletion_vectors(&copied), 0, "copy-on-write");
        (lake, keys)
    });
    for (pipeline, reader) in [("p", "polars"), ("cow", "pyarrow")] {
        read_link_table_with_python(&py, &lake, pipeline, reader, &expected);
    }
}

fn read_link_table_with_python(py: &str, lake: &Lake, pipeline: &str, reader: &str, expected: &BTreeSet<i64>) {
    let uri = lake.path(&format!("_deltalink/links/{pipeline}"));
    let out = Command::new(py)
        .args(["-c", READ_LINK, uri.to_str().expect("utf-8"), reader])
        .output()
        .expect("run python");
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from python");
    let keys: BTreeSet<i64> = v["keys"].as_array().expect("keys").iter().map(|k| k.as_i64().expect("int")).collect();
    assert_eq!(&keys, expected, "{pipeline} read by {reader}");
    let inserted: BTreeSet<i64> = v["cdf_inserts"].as_array().expect("cdf").iter().map(|k| k.as_i64().expect("int")).collect();
    assert_eq!(&inserted, expected, "every key appears as an insert in the link table's change feed");
    // Run 2 moved row 1 from key 1 to 101: key 1 was updated from run 1 to run 2, 101 inserted.
    assert_eq!(v["pre"], serde_json::json!([[1, 1]]), "update pre-image: the key as run 1 left it");
    assert_eq!(v["post"], serde_json::json!([[1, 2]]), "update post-image: the key as run 2 wrote it");
    assert_eq!(v["runs"], serde_json::json!([1, 2]));
    assert_eq!(v["upstreams"], serde_json::json!(["a"]));
}

/// Python `deltalake` as the upstream writer: appends, a MERGE that moves a row to another key,
/// a delete, a checkpoint, then more appends. It prints the keys each commit touched (its own
/// bookkeeping, not a CDF read), which is the oracle for deltalink's link table.
const WRITE_UPSTREAM: &str = r#"
import sys, json
import pyarrow as pa
from deltalake import DeltaTable, write_deltalake
uri = sys.argv[1]
cdf = {"delta.enableChangeDataFeed": "true"}
touched = set()
rows = pa.table({"row_id": pa.array(range(1, 21), pa.int64()), "k": pa.array([i * 10 for i in range(1, 21)], pa.int64()),
                 "payload": [f"p{i}" for i in range(1, 21)]})
write_deltalake(uri, rows, configuration=cdf)
touched |= {i * 10 for i in range(1, 21)}
dt = DeltaTable(uri)
src = pa.table({"row_id": pa.array([3], pa.int64()), "k": pa.array([999], pa.int64()), "payload": ["moved"]})
dt.merge(src, "t.row_id = s.row_id", source_alias="s", target_alias="t").when_matched_update_all().execute()
touched |= {30, 999}
dt = DeltaTable(uri)
dt.delete("row_id = 5")
touched.add(50)
dt = DeltaTable(uri)
dt.create_checkpoint()
write_deltalake(uri, pa.table({"row_id": pa.array([21], pa.int64()), "k": pa.array([210], pa.int64()), "payload": ["p21"]}), mode="append")
touched.add(210)
print(json.dumps({"keys": sorted(touched), "version": DeltaTable(uri).version()}))
"#;

#[test]
fn tables_written_by_python_deltalake_with_a_checkpoint_are_read_exactly() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: set DELTALINK_PYTHON to a python with deltalake + polars (.ci/run does)");
        return;
    };
    let lake = Lake::new();
    let out = Command::new(py)
        .args(["-c", WRITE_UPSTREAM, lake.path("a").to_str().expect("utf-8")])
        .output()
        .expect("run python");
    assert!(out.status.success(), "python writer failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from python");
    let expected: BTreeSet<i64> = v["keys"].as_array().expect("keys").iter().map(|k| k.as_i64().expect("int")).collect();
    assert!(lake.path("a/_delta_log/00000000000000000002.checkpoint.parquet").exists(), "a checkpoint was written");
    rt().block_on(async {
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let r = engine.run("p", &RunOptions::default()).await.expect("run");
        assert_eq!(r.upstreams[0].pinned as i64, v["version"].as_i64().expect("version"));
        let got: BTreeSet<i64> = link_keys(&engine, "p").await.into_keys().collect();
        assert_eq!(got, expected, "the old and new key of the moved row, the deleted key, all inserts");
    });
}
