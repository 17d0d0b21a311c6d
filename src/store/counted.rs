//! A table provider that tallies what its scans read: the files a Delta scan kept after file
//! skipping (delta-rs's `count_files_scanned` metric) and the rows it produced. A run reports
//! this per joined table, so an operator sees whether a join's cost follows the change.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use deltalake::arrow::datatypes::SchemaRef;
use deltalake::datafusion::catalog::{Session, TableProvider};
use deltalake::datafusion::common::Result;
use deltalake::datafusion::common::tree_node::{TreeNode, TreeNodeRecursion};
use deltalake::datafusion::datasource::TableType;
use deltalake::datafusion::execution::TaskContext;
use deltalake::datafusion::logical_expr::{Expr, TableProviderFilterPushDown};
use deltalake::datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use deltalake::datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, PhysicalExpr, PlanProperties, SendableRecordBatchStream,
};
use futures::StreamExt;

/// What the scans of one [`CountedProvider`] read.
#[derive(Debug, Default)]
pub struct ScanTally {
    rows: AtomicU64,
    /// The scans that ran (each once, however many partitions), whose file metrics are read afterwards.
    plans: Mutex<Vec<Arc<dyn ExecutionPlan>>>,
}

impl ScanTally {
    /// Rows produced by the scans so far.
    pub fn rows(&self) -> u64 {
        self.rows.load(Ordering::Relaxed)
    }

    /// Files the scans kept after file skipping (summed over scans: a table read twice counts twice).
    pub fn files(&self) -> u64 {
        let plans = match self.plans.lock() {
            Ok(p) => p.clone(),
            Err(_) => return 0,
        };
        let mut files = 0u64;
        for plan in plans {
            let _ = plan.apply(|node| {
                if let Some(n) = node.metrics().and_then(|m| m.sum_by_name("count_files_scanned")) {
                    files += n.as_usize() as u64;
                }
                Ok(TreeNodeRecursion::Continue)
            });
        }
        files
    }
}

/// Wraps a provider; every scan it plans is tallied in `tally`.
#[derive(Debug)]
pub struct CountedProvider {
    inner: Arc<dyn TableProvider>,
    tally: Arc<ScanTally>,
}

impl CountedProvider {
    pub fn new(inner: Arc<dyn TableProvider>, tally: Arc<ScanTally>) -> Self {
        CountedProvider { inner, tally }
    }
}

#[async_trait]
impl TableProvider for CountedProvider {
    fn schema(&self) -> SchemaRef {
        self.inner.schema()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    fn supports_filters_pushdown(&self, filters: &[&Expr]) -> Result<Vec<TableProviderFilterPushDown>> {
        self.inner.supports_filters_pushdown(filters)
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let plan = self.inner.scan(state, projection, filters, limit).await?;
        Ok(Arc::new(CountingExec { input: plan, tally: self.tally.clone() }))
    }
}

/// Passes its input through, counting rows into the tally.
#[derive(Debug)]
struct CountingExec {
    input: Arc<dyn ExecutionPlan>,
    tally: Arc<ScanTally>,
}

impl DisplayAs for CountingExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "CountingExec")
    }
}

impl ExecutionPlan for CountingExec {
    fn name(&self) -> &str {
        "CountingExec"
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        self.input.properties()
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn with_new_children(self: Arc<Self>, mut children: Vec<Arc<dyn ExecutionPlan>>) -> Result<Arc<dyn ExecutionPlan>> {
        match children.pop() {
            Some(input) if children.is_empty() => Ok(Arc::new(CountingExec { input, tally: self.tally.clone() })),
            _ => Err(deltalake::datafusion::error::DataFusionError::Internal("CountingExec takes one child".into())),
        }
    }

    fn execute(&self, partition: usize, context: Arc<TaskContext>) -> Result<SendableRecordBatchStream> {
        // The input as it runs (optimizer rules may have replaced the one planned).
        if let Ok(mut plans) = self.tally.plans.lock() {
            if !plans.iter().any(|p| Arc::ptr_eq(p, &self.input)) {
                plans.push(self.input.clone());
            }
        }
        let stream = self.input.execute(partition, context)?;
        let schema = stream.schema();
        let tally = self.tally.clone();
        let counted = stream.inspect(move |batch| {
            if let Ok(b) = batch {
                tally.rows.fetch_add(b.num_rows() as u64, Ordering::Relaxed);
            }
        });
        Ok(Box::pin(RecordBatchStreamAdapter::new(schema, counted)))
    }
}
