//! Downstream readers: the Python `deltalake` + `polars` packages (another Delta reader) read the
//! link table and its change feed and get the same keys. `.ci/run` installs them in a venv and
//! sets DELTALINK_PYTHON; without it the test says SKIPPED.

use std::collections::BTreeSet;
use std::process::Command;

use deltalink::runner::RunOptions;

use crate::common::*;

fn python() -> Option<String> {
    let py = std::env::var("DELTALINK_PYTHON").ok()?;
    let ok = Command::new(&py).args(["-c", "import deltalake, polars"]).status().ok()?.success();
    ok.then_some(py)
}

const READ_LINK: &str = r#"
import sys, json
from deltalake import DeltaTable
import polars as pl
uri = sys.argv[1]
dt = DeltaTable(uri)
df = pl.from_arrow(dt.to_pyarrow_table())
cdf = pl.from_arrow(__import__("pyarrow").table(dt.load_cdf(starting_version=0)))
inserted = cdf.filter(pl.col("_change_type") == "insert")["k"].to_list()
print(json.dumps({"keys": sorted(df["k"].to_list()), "cdf_inserts": sorted(inserted),
                  "runs": sorted(set(df["run_id"].to_list())), "upstreams": df["upstreams"].to_list()[0]}))
"#;

#[test]
fn python_deltalake_and_polars_read_the_link_table_and_its_change_feed() {
    let Some(py) = python() else {
        eprintln!("SKIPPED: set DELTALINK_PYTHON to a python with deltalake + polars (.ci/run does)");
        return;
    };
    let (lake, expected) = rt().block_on(async {
        let lake = Lake::new();
        let mut a = ModelTable::create(&lake.path("a"), true).await;
        let engine = lake.engine(&simple_config(&["a"], &[("p", &["a"])]));
        let mut keys = a.insert(&[Some(1), Some(2), Some(3)]).await;
        engine.run("p", &RunOptions::default()).await.expect("run 1");
        keys.extend(a.update_key(&[1], 100).await);
        engine.run("p", &RunOptions::default()).await.expect("run 2");
        (lake, keys)
    });
    let out = Command::new(py)
        .args(["-c", READ_LINK, lake.path("_deltalink/links/p").to_str().expect("utf-8")])
        .output()
        .expect("run python");
    assert!(out.status.success(), "python reader failed: {}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json from python");
    let keys: BTreeSet<i64> = v["keys"].as_array().expect("keys").iter().map(|k| k.as_i64().expect("int")).collect();
    assert_eq!(keys, expected);
    let inserted: BTreeSet<i64> = v["cdf_inserts"].as_array().expect("cdf").iter().map(|k| k.as_i64().expect("int")).collect();
    assert_eq!(inserted, expected, "every key appears as an insert in the link table's change feed");
    assert_eq!(v["runs"], serde_json::json!([1, 2]));
    assert_eq!(v["upstreams"], serde_json::json!(["a"]));
}
