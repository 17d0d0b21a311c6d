//! Writing a merge's files — data files cut to the target size, the change-data file — and
//! removing them again if the merge does not commit.

use deltalake::logstore::object_store::ObjectStoreExt;
use color_eyre::eyre::WrapErr;
use deltalake::writer::DeltaWriter;
use std::collections::HashMap;
use std::sync::Arc;

use color_eyre::eyre::{Result, eyre};
use deltalake::arrow::array::{ArrayRef, RecordBatch, StringArray};
use deltalake::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::kernel::transaction::{CommitBuilder, CommitProperties};
use deltalake::kernel::{Action, AddCDCFile};
use deltalake::parquet::arrow::ArrowWriter;
use deltalake::writer::RecordBatchWriter;
use deltalake::{DeltaTable, ObjectStore, Path};

use crate::store::cdf::CHANGE_TYPE;
use crate::store::link::columns::LinkWriteMetrics;

use super::rows::{conform, spell_out, spelled_out};

/// Files a MERGE wrote that no commit references yet. [`Uncommitted::discard`] deletes them;
/// dropped without [`Uncommitted::keep`] (the task was cancelled), it deletes them in the
/// background.
pub(crate) struct Uncommitted {
    pub(crate) store: Arc<dyn ObjectStore>,
    pub(crate) paths: std::sync::Mutex<Option<Vec<Path>>>,
}

impl Uncommitted {
    pub(crate) fn new(store: Arc<dyn ObjectStore>) -> Self {
        Uncommitted { store, paths: std::sync::Mutex::new(Some(Vec::new())) }
    }

    /// Record files as written (table-relative paths, as in Add actions).
    pub(crate) fn add(&self, paths: impl IntoIterator<Item = String>) {
        if let Ok(mut guard) = self.paths.lock() {
            if let Some(list) = guard.as_mut() {
                list.extend(paths.into_iter().map(Path::from));
            }
        }
    }

    fn take(&self) -> Vec<Path> {
        self.paths.lock().ok().and_then(|mut g| g.take()).unwrap_or_default()
    }

    pub(crate) fn keep(&self) {
        self.take();
    }

    pub(crate) async fn discard(&self) {
        delete_files(&self.store, self.take()).await;
    }
}

impl Drop for Uncommitted {
    fn drop(&mut self) {
        let paths = self.take();
        if paths.is_empty() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = self.store.clone();
            runtime.spawn(async move { delete_files(&store, paths).await });
        }
    }
}

pub(crate) async fn delete_files(store: &Arc<dyn ObjectStore>, paths: Vec<Path>) {
    for path in paths {
        match store.delete(&path).await {
            Ok(()) | Err(deltalake::ObjectStoreError::NotFound { .. }) => {}
            Err(e) => tracing::warn!(file = %path, error = %e, "could not delete an uncommitted link file"),
        }
    }
}

/// Commit the MERGE's actions (with the run's application transaction in `props`).
pub(crate) async fn commit(
    table: &DeltaTable,
    props: CommitProperties,
    predicate: String,
    actions: Vec<Action>,
    metrics: LinkWriteMetrics,
) -> Result<(DeltaTable, LinkWriteMetrics)> {
    let operation = crate::store::lake::merge_operation(&predicate);
    let committed = CommitBuilder::from(props)
        .with_actions(actions)
        .build(Some(table.snapshot()?), table.log_store(), operation)
        .await?;
    // The commit hands back the table state at its version: no need to reload the log.
    let mut table = table.clone();
    table.state = Some(committed.snapshot());
    Ok((table, metrics))
}

/// Write the rewritten rows as new data files of about `rows_per_file` rows each (contiguous
/// key ranges), written concurrently; their Add actions.
pub(crate) async fn write_data(
    table: &DeltaTable,
    rows: RecordBatch,
    rows_per_file: usize,
    written: &Arc<Uncommitted>,
) -> Result<Vec<deltalake::kernel::Add>> {
    let schema = RecordBatchWriter::for_table(table)?.arrow_schema();
    // As many files as `rows_per_file` asks for, of equal rows: a short last file left a core
    // idle while another finished a full one (profiled: ~50 ms of a 3M-row first write).
    let files = rows.num_rows().div_ceil(rows_per_file.max(1)).max(1);
    let rows_per_file = rows.num_rows().div_ceil(files).max(1);
    let writes = (0..rows.num_rows()).step_by(rows_per_file).map(|at| {
        let chunk = rows.slice(at, rows_per_file.min(rows.num_rows() - at));
        let (writer, written, schema) = (link_writer(table), written.clone(), schema.clone());
        crate::util::task::spawn_owned(async move {
            let mut writer = writer?;
            // Handed over in slices, spelled out one at a time: the writer encodes as it goes.
            // A slice's spelled-out lists stay under glibc's mmap threshold (1 MiB, see
            // main.rs), so their memory is reused from slice to slice; at 64k rows each was a
            // fresh mapping, faulted in page by page (profiled: a fifth of a from-scratch run's
            // page faults).
            const SLICE: usize = 8 * 1024;
            for at in (0..chunk.num_rows()).step_by(SLICE) {
                writer.write(conform(&chunk.slice(at, SLICE.min(chunk.num_rows() - at)), &schema)?).await?;
                // Encoding never waits, so without this a file's task would hold its worker to
                // the end: the files' tasks take turns, and an idle worker takes one over.
                tokio::task::yield_now().await;
            }
            let adds = writer.flush().await?;
            written.add(adds.iter().map(|a| a.path.clone()));
            Ok::<_, color_eyre::Report>(adds)
        })
    });
    let mut adds = Vec::new();
    for file in futures::future::try_join_all(writes).await? {
        adds.extend(file?);
    }
    Ok(adds)
}

/// A writer for link files. Files are cut by rows here (the writer's own size rolling, by
/// encoded bytes in memory, would cut them far below the target). Row groups of 128k rows:
/// a row group is encoded in one go inside a `write` call, and a million-row group held an
/// async worker for long enough to stall the console's frames.
/// The key columns are written without a dictionary: each key appears once in a link table,
/// so a row group's dictionary would hold every value (plus an index per row) and cost a hash
/// per value to build. The upstream and provenance lists carry no statistics: nothing prunes
/// on them, and their min/max cost two string comparisons per value (profiled: ~5 % of an
/// incremental run).
pub(crate) fn link_writer(table: &DeltaTable) -> Result<RecordBatchWriter> {
    let writer = RecordBatchWriter::for_table(table)?;
    let properties = link_file_properties(&writer.arrow_schema());
    Ok(writer.with_target_file_size(u64::MAX / 2).with_writer_properties(properties))
}

/// Parquet properties of link-table data and change-data files (see [`link_writer`]).
pub(crate) fn link_file_properties(schema: &Schema) -> deltalake::parquet::file::properties::WriterProperties {
    use deltalake::parquet::basic::Compression;
    use deltalake::parquet::file::properties::{EnabledStatistics, WriterProperties};
    use deltalake::parquet::schema::types::ColumnPath;
    // Statistics untruncated: a string key's file ranges route runs (see `FirstKeys`), and a
    // maximum rounded up at 64 bytes would overlap the next file's range where keys share a
    // long prefix.
    let mut properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_statistics_truncate_length(None);
    for field in schema.fields().iter().filter(|f| !crate::store::link::columns::is_link_column(f.name()) && f.name() != CHANGE_TYPE) {
        properties = properties.set_column_dictionary_enabled(ColumnPath::from(field.name().as_str()), false);
    }
    for list in [crate::store::link::columns::UPSTREAMS_COL, crate::store::link::columns::PROVENANCE_COL] {
        let element = ColumnPath::new(vec![list.to_string(), "list".into(), "element".into()]);
        properties = properties.set_column_statistics_enabled(element, EnabledStatistics::None);
    }
    properties.build()
}

/// Rows written in order into files of `per_file` rows, encoded on a task of their own: a
/// rewrite decodes and merges on one core while its rows are encoded on the other (profiled:
/// encoding is about half a rewrite; one file's rewrite used to be one core's work, so a
/// pipeline whose MERGE touched an odd number of files left a core idle at the end).
pub(crate) struct RowsOut {
    pub(crate) rows: tokio::sync::mpsc::Sender<RecordBatch>,
    pub(crate) encoder: crate::util::task::Owned<Result<Vec<deltalake::kernel::Add>>>,
}

impl RowsOut {
    pub(crate) fn new(table: &DeltaTable, per_file: usize, written: Arc<Uncommitted>) -> Result<Self> {
        let writer = link_writer(table)?;
        let (rows, mut incoming) = tokio::sync::mpsc::channel::<RecordBatch>(2);
        let encoder = crate::util::task::spawn_owned(async move {
            let mut files = FileCutter { schema: writer.arrow_schema(), writer, per_file: per_file.max(1), in_file: 0, adds: Vec::new(), written };
            while let Some(batch) = incoming.recv().await {
                files.write(batch).await?;
            }
            files.flush().await?;
            Ok(files.adds)
        });
        Ok(RowsOut { rows, encoder })
    }

    pub(crate) async fn write(&mut self, rows: RecordBatch) -> Result<()> {
        if self.rows.send(rows).await.is_ok() {
            return Ok(());
        }
        // The encoder stopped: its error says why. (The caller drops `self` on this error:
        // the finished task is not polled again.)
        match (&mut self.encoder).await {
            Ok(Err(e)) => Err(e),
            Ok(Ok(_)) => Err(eyre!("the link file encoder stopped early")),
            Err(e) => Err(eyre!("the link file encoder stopped: {e}")),
        }
    }

    pub(crate) async fn finish(self) -> Result<Vec<deltalake::kernel::Add>> {
        let RowsOut { rows, encoder } = self;
        drop(rows);
        encoder.await.map_err(|e| eyre!("the link file encoder stopped: {e}"))?
    }

    /// Delete the files written so far (a rewrite given up for another: never committed).
    pub(crate) async fn abandon(self, store: &Arc<dyn ObjectStore>) {
        if let Ok(adds) = self.finish().await {
            delete_files(store, adds.iter().map(|a| Path::from(a.path.as_str())).collect()).await;
        }
    }
}

/// The encoder's side of [`RowsOut`]: one writer, flushed into a new file at each cut.
pub(crate) struct FileCutter {
    pub(crate) writer: RecordBatchWriter,
    pub(crate) schema: SchemaRef,
    pub(crate) per_file: usize,
    pub(crate) in_file: usize,
    pub(crate) adds: Vec<deltalake::kernel::Add>,
    pub(crate) written: Arc<Uncommitted>,
}

impl FileCutter {
    async fn flush(&mut self) -> Result<()> {
        let adds = self.writer.flush().await?;
        self.written.add(adds.iter().map(|a| a.path.clone()));
        self.adds.extend(adds);
        Ok(())
    }

    async fn write(&mut self, rows: RecordBatch) -> Result<()> {
        let rows = conform(&rows, &self.schema)?;
        let mut at = 0;
        while at < rows.num_rows() {
            let take = (self.per_file - self.in_file).min(rows.num_rows() - at);
            self.writer.write(rows.slice(at, take)).await?;
            self.in_file += take;
            at += take;
            if self.in_file >= self.per_file {
                self.flush().await?;
                self.in_file = 0;
            }
        }
        Ok(())
    }
}

/// Rows per file for about `target_bytes` per file: from the sizes of the files being
/// rewritten, or (a first write) from the rows' size in memory, which parquet's dictionary
/// and snappy encoding shrink about twelvefold for link rows (measured).
pub(crate) fn rows_per_file(target_bytes: u64, file_bytes: u64, file_rows: usize, rows: &RecordBatch) -> Result<usize> {
    const MEMORY_TO_FILE: f64 = 12.0;
    let bytes_per_row = match (file_bytes, file_rows) {
        (0, _) | (_, 0) if rows.num_rows() > 0 => {
            // Measured on rows as written: dictionary-encoded lists (see `conform`) are spelled
            // out, a sample of them.
            let mut per_row = 0.0;
            for column in rows.columns() {
                let spelled = spelled_out(column.data_type());
                per_row += if spelled == *column.data_type() {
                    column.get_array_memory_size() as f64 / rows.num_rows() as f64
                } else {
                    let sample = spell_out(&column.slice(0, rows.num_rows().min(16 * 1024)))?;
                    sample.get_array_memory_size() as f64 / sample.len() as f64
                };
            }
            per_row / MEMORY_TO_FILE
        }
        (0, _) | (_, 0) => return Ok(1 << 20),
        _ => file_bytes as f64 / file_rows as f64,
    }
    .max(1.0);
    Ok(((target_bytes as f64 / bytes_per_row) as usize).max(1024))
}

/// The rows of a change-data file: pre- and post-images of the touched keys, the inserted
/// keys, and rows that carry their own change type.
#[derive(Default)]
pub(crate) struct ChangeImages<'a> {
    pub(crate) pre: &'a [RecordBatch],
    pub(crate) post: &'a [RecordBatch],
    pub(crate) inserts: &'a [RecordBatch],
    pub(crate) labelled: Option<(RecordBatch, ArrayRef)>,
}

/// One change-data file of `images`.
pub(crate) async fn write_change_data(store: &Arc<dyn ObjectStore>, schema: &SchemaRef, images: ChangeImages<'_>) -> Result<Option<AddCDCFile>> {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
    let cdc_schema = Arc::new(Schema::new(fields));
    // Parts keep their own column types (a marked range's new rows hold dictionary-encoded
    // lists): spelled out a slice at a time as they are written.
    let with_change_type = |b: &RecordBatch, change: ArrayRef| -> Result<RecordBatch> {
        let mut fields: Vec<Field> = b.schema().fields().iter().map(|f| f.as_ref().clone()).collect();
        fields.push(Field::new(CHANGE_TYPE, DataType::Utf8, false));
        let mut columns = b.columns().to_vec();
        columns.push(change);
        Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
    };
    let constant = |change: &str, rows: usize| -> ArrayRef { Arc::new(StringArray::from(vec![change; rows])) };
    let mut parts = Vec::new();
    for (batches, change) in [(images.pre, "update_preimage"), (images.post, "update_postimage"), (images.inserts, "insert")] {
        for b in batches {
            parts.push(with_change_type(b, constant(change, b.num_rows()))?);
        }
    }
    if let Some((b, changes)) = &images.labelled {
        parts.push(with_change_type(b, changes.clone())?);
    }
    let rows: usize = parts.iter().map(|b| b.num_rows()).sum();
    if rows == 0 {
        return Ok(None);
    }
    // Encoded on a blocking thread: a run touching millions of keys writes millions of images,
    // seconds of CPU that would otherwise hold an async worker (and the console's frames).
    let buffer = tokio::task::spawn_blocking(move || {
        let mut buffer = Vec::new();
        let properties = link_file_properties(&cdc_schema);
        let mut writer = ArrowWriter::try_new(&mut buffer, cdc_schema.clone(), Some(properties))?;
        const SLICE: usize = 64 * 1024;
        for b in &parts {
            for at in (0..b.num_rows()).step_by(SLICE) {
                writer.write(&conform(&b.slice(at, SLICE.min(b.num_rows() - at)), &cdc_schema)?)?;
            }
        }
        writer.close()?;
        Ok::<_, color_eyre::Report>(buffer)
    })
    .await??;
    let name = format!("_change_data/cdc-00000-{}.c000.snappy.parquet", uuid::Uuid::new_v4());
    let size = buffer.len() as i64;
    store
        .put(&Path::from(name.as_str()), buffer.into())
        .await
        .wrap_err_with(|| format!("cannot write link-table change data {name}"))?;
    Ok(Some(AddCDCFile { path: name, size, partition_values: HashMap::new(), data_change: false, tags: None }))
}
