//! The built-in demo lake: CDF-enabled upstream tables shaped like the motivating examples,
//! a history of inserts, updates (also of key columns) and deletes, a config for it, and a
//! background writer that keeps committing so the console always has something moving.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use color_eyre::eyre::{Result, WrapErr};
use deltalake::arrow::array::{ArrayRef, Int32Array, Int64Array, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{Field, Schema};
use deltalake::protocol::SaveMode;
use deltalake::schema::{DataType as DeltaType, StructField};
use deltalake::{DeltaTable, TableProperty};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};

use crate::config::resolve_table_uri;
use crate::store::lake;

pub const DEMO_TABLES: [&str; 4] = ["publications", "author_publication_link", "d_spmaster", "d_daisng_ranked_affiliation"];

/// The config written next to the demo tables.
pub const DEMO_CONFIG: &str = r#"# deltalink demo lake (written by `deltalink demo`)
[tracker]
uri = "_deltalink/tracker"

[upstreams.publications]
uri = "publications"
[upstreams.author_publication_link]
uri = "author_publication_link"
[upstreams.d_spmaster]
uri = "d_spmaster"
[upstreams.d_daisng_ranked_affiliation]
uri = "d_daisng_ranked_affiliation"

# publications ⋈ author_publication_link, keyed by pub_id
[pipelines.enriched_publications]
link_table = "_deltalink/links/enriched_publications"
key = ["pub_id"]
start = "earliest"
[[pipelines.enriched_publications.sources]]
upstream = "publications"
keys = ["pub_id"]
[[pipelines.enriched_publications.sources]]
upstream = "author_publication_link"
keys = ["pub_id"]
# a downstream job reading the link table (`deltalink consume` / `ack`)
[[pipelines.enriched_publications.consumers]]
name = "search_index"

# shares author_publication_link with enriched_publications (separate progress)
[pipelines.author_profiles]
link_table = "_deltalink/links/author_profiles"
key = ["author_id"]
[[pipelines.author_profiles.sources]]
upstream = "author_publication_link"
keys = ["author_id"]

# a composite key
[pipelines.researcher_affiliations]
link_table = "_deltalink/links/researcher_affiliations"
key = ["sp_id", "institution_key"]
[[pipelines.researcher_affiliations.sources]]
upstream = "d_daisng_ranked_affiliation"
keys = ["sp_id", "institution_key"]

# join mapping: d_spmaster rows reach institutions only through d_daisng_ranked_affiliation
[pipelines.institution_rollup]
link_table = "_deltalink/links/institution_rollup"
key = ["institution_key"]
[[pipelines.institution_rollup.sources]]
upstream = "d_spmaster"
sql = """
SELECT ra.institution_key
FROM changes c JOIN d_daisng_ranked_affiliation ra ON c.sp_id = ra.sp_id
"""
[[pipelines.institution_rollup.sources]]
upstream = "d_daisng_ranked_affiliation"
keys = ["institution_key"]

[pipelines.spmaster_profiles]
link_table = "_deltalink/links/spmaster_profiles"
key = ["sp_id"]
[[pipelines.spmaster_profiles.sources]]
upstream = "d_spmaster"
keys = ["sp_id"]
[[pipelines.spmaster_profiles.sources]]
upstream = "d_daisng_ranked_affiliation"
keys = ["sp_id"]
"#;

/// Options for building a demo lake.
#[derive(Debug, Clone)]
pub struct DemoOptions {
    pub dir: PathBuf,
    /// Commits of mixed inserts/updates/deletes written after the initial load.
    pub commits: usize,
    pub seed: u64,
}

impl DemoOptions {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        DemoOptions { dir: dir.into(), commits: 240, seed: 42 }
    }
    pub fn with_commits(mut self, n: usize) -> Self {
        self.commits = n;
        self
    }
}

/// Progress while the demo lake is built (commits written so far, of total).
pub type DemoProgress<'a> = &'a (dyn Fn(usize, usize) + Send + Sync);

/// Create the demo lake (or reuse it when its config exists). Returns the config path.
pub async fn ensure_demo_lake(opts: &DemoOptions, progress: DemoProgress<'_>) -> Result<PathBuf> {
    std::fs::create_dir_all(&opts.dir).wrap_err_with(|| format!("cannot create demo folder {}", opts.dir.display()))?;
    let config_path = opts.dir.join("deltalink.toml");
    if config_path.exists() && DEMO_TABLES.iter().all(|t| opts.dir.join(t).join("_delta_log").exists()) {
        return Ok(config_path);
    }
    let mut writer = DemoWriter::create(&opts.dir, opts.seed).await?;
    for i in 0..opts.commits {
        writer.step().await?;
        progress(i + 1, opts.commits);
    }
    std::fs::write(&config_path, DEMO_CONFIG).wrap_err_with(|| format!("cannot write {}", config_path.display()))?;
    Ok(config_path)
}

/// Writes random but realistic commits to the demo tables.
pub struct DemoWriter {
    tables: Vec<DeltaTable>,
    rng: SmallRng,
    next_id: i64,
}

fn columns(table: &str) -> Vec<(&'static str, DeltaType)> {
    match table {
        "publications" => vec![("pub_id", DeltaType::LONG), ("title", DeltaType::STRING), ("year", DeltaType::INTEGER)],
        "author_publication_link" => vec![("author_id", DeltaType::LONG), ("pub_id", DeltaType::LONG)],
        "d_spmaster" => vec![("sp_id", DeltaType::LONG), ("full_name", DeltaType::STRING), ("country", DeltaType::STRING)],
        _ => vec![("sp_id", DeltaType::LONG), ("institution_key", DeltaType::LONG), ("rank", DeltaType::INTEGER)],
    }
}

impl DemoWriter {
    /// Open the demo tables under `dir`, creating and loading them when missing.
    pub async fn create(dir: &Path, seed: u64) -> Result<Self> {
        let mut tables = Vec::new();
        for name in DEMO_TABLES {
            let uri = resolve_table_uri(name, dir).map_err(color_eyre::eyre::Report::msg)?;
            let table = match lake::open_owned(&uri, &Default::default()).await? {
                Some(t) => t,
                None => {
                    let fields: Vec<StructField> =
                        columns(name).into_iter().map(|(c, t)| StructField::new(c, t, true)).collect();
                    lake::table_for_create(&uri, &Default::default())
                        .await?
                        .create()
                        .with_table_name(name)
                        .with_columns(fields)
                        .with_configuration_property(TableProperty::EnableChangeDataFeed, Some("true"))
                        .await
                        .wrap_err_with(|| format!("cannot create demo table {name}"))?
                }
            };
            tables.push(table);
        }
        let mut w = DemoWriter { tables, rng: SmallRng::seed_from_u64(seed), next_id: 1 };
        let fresh = w.tables.iter().all(|t| t.version() == Some(0));
        w.next_id = 1 + w.tables.iter().filter_map(|t| t.version()).max().unwrap_or(0) as i64 * 1000;
        if fresh {
            for i in 0..DEMO_TABLES.len() {
                w.insert(i, 200).await?;
            }
        }
        Ok(w)
    }

    /// One commit: an insert, update, key update or delete on a random table.
    pub async fn step(&mut self) -> Result<()> {
        let t = self.rng.gen_range(0..DEMO_TABLES.len());
        match self.rng.gen_range(0..10) {
            0..=3 => {
                let n = self.rng.gen_range(1..20);
                self.insert(t, n).await
            }
            4..=6 => self.update(t).await,
            7 => self.update_key(t).await,
            _ => self.delete(t).await,
        }
    }

    fn ids(&mut self, n: usize) -> Vec<i64> {
        let start = self.next_id;
        self.next_id += n as i64;
        (start..start + n as i64).collect()
    }

    async fn insert(&mut self, t: usize, n: usize) -> Result<()> {
        let ids = self.ids(n);
        let small = |rng: &mut SmallRng| -> Vec<i64> { (0..n).map(|_| rng.gen_range(1..400)).collect() };
        let name = DEMO_TABLES[t];
        let cols: Vec<ArrayRef> = match name {
            "publications" => vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(ids.iter().map(|i| format!("Paper {i}")).collect::<Vec<_>>())),
                Arc::new(Int32Array::from((0..n).map(|_| self.rng.gen_range(1990..2027)).collect::<Vec<i32>>())),
            ],
            "author_publication_link" => {
                let authors = small(&mut self.rng);
                let pubs: Vec<i64> = (0..n).map(|_| self.rng.gen_range(1..self.next_id.max(2))).collect();
                vec![Arc::new(Int64Array::from(authors)), Arc::new(Int64Array::from(pubs))]
            }
            "d_spmaster" => vec![
                Arc::new(Int64Array::from(ids.clone())),
                Arc::new(StringArray::from(ids.iter().map(|i| format!("Researcher {i}")).collect::<Vec<_>>())),
                Arc::new(StringArray::from((0..n).map(|i| ["SE", "NL", "US", "JP"][i % 4]).collect::<Vec<_>>())),
            ],
            _ => {
                let sps: Vec<i64> = (0..n).map(|_| self.rng.gen_range(1..self.next_id.max(2))).collect();
                vec![
                    Arc::new(Int64Array::from(sps)),
                    Arc::new(Int64Array::from(small(&mut self.rng))),
                    Arc::new(Int32Array::from((0..n).map(|i| i as i32 % 3 + 1).collect::<Vec<_>>())),
                ]
            }
        };
        let fields: Vec<Field> = columns(name)
            .iter()
            .zip(&cols)
            .map(|((c, _), a)| Field::new(*c, a.data_type().clone(), true))
            .collect();
        let batch = RecordBatch::try_new(Arc::new(Schema::new(fields)), cols)?;
        let table = self.tables[t].clone();
        self.tables[t] = table.write(vec![batch]).with_save_mode(SaveMode::Append).await?;
        Ok(())
    }

    fn predicate(&mut self, t: usize) -> String {
        let col = columns(DEMO_TABLES[t])[0].0;
        format!("{col} % 37 = {}", self.rng.gen_range(0..37))
    }

    async fn update(&mut self, t: usize) -> Result<()> {
        let pred = self.predicate(t);
        let (col, expr) = match DEMO_TABLES[t] {
            "publications" => ("year", "year + 1"),
            "author_publication_link" => ("author_id", "author_id + 1"),
            "d_spmaster" => ("country", "'DE'"),
            _ => ("rank", "rank + 1"),
        };
        let table = self.tables[t].clone();
        let (table, _) = table.update().with_predicate(pred).with_update(col, expr).await?;
        self.tables[t] = table;
        Ok(())
    }

    /// An update of a key column: both the old and the new key must be marked.
    async fn update_key(&mut self, t: usize) -> Result<()> {
        let pred = self.predicate(t);
        let (col, expr) = match DEMO_TABLES[t] {
            "publications" => ("pub_id", "pub_id + 100000"),
            "author_publication_link" => ("pub_id", "pub_id + 1"),
            "d_spmaster" => ("sp_id", "sp_id + 100000"),
            _ => ("institution_key", "institution_key + 1"),
        };
        let table = self.tables[t].clone();
        let (table, _) = table.update().with_predicate(pred).with_update(col, expr).await?;
        self.tables[t] = table;
        Ok(())
    }

    async fn delete(&mut self, t: usize) -> Result<()> {
        let pred = self.predicate(t);
        let table = self.tables[t].clone();
        let (table, _) = table.delete().with_predicate(pred).await?;
        self.tables[t] = table;
        Ok(())
    }
}
