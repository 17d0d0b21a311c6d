"""A downstream job's side of deltalink: consume -> read -> process -> ack.

Copy this file next to your job (it needs the Python `deltalake` package and the `deltalink`
binary on PATH, or pass `binary=`). The contract it follows:

1. `deltalink consume P --consumer C --json` answers a link-table version V and a run range
   (after, through]. deltalink records V as a version C may be reading (upkeep keeps it).
2. Read the link table *at version V*, rows with after < run_id <= through: exactly the keys
   changed by those runs, however many runs land meanwhile.
3. Process them; only then `deltalink ack P --consumer C --through-run through`.

A job that dies between 2 and 3 gets the same batch again (its runs are not acked), so
processing must be idempotent per key, which reprocessing a key's current state is.

    import deltalink_consumer as dl
    def process(rows):            # a pyarrow.Table of the batch's link rows
        for key in rows.column("author_id").to_pylist():
            rebuild(key)
    dl.run_once("author_pipeline", "daily_job", process)
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

__all__ = ["Batch", "next_batch", "run_once"]


@dataclass
class Batch:
    pipeline: str
    consumer: str
    link_table: str
    link_version: int
    after_run_id: int
    through_run_id: int
    keys: int
    key_columns: list
    reads: dict
    # How to call deltalink again (for ack).
    command: Sequence[str] = field(default_factory=lambda: ["deltalink"], repr=False)

    @property
    def empty(self) -> bool:
        return self.through_run_id <= self.after_run_id

    def read(self, storage_options: Optional[dict] = None):
        """The batch's link rows as a pyarrow.Table, read at the batch's link version.

        Through delta-rs's own scan (deltalake's QueryBuilder), which applies the deletion
        vectors link tables use; pyarrow datasets refuse such tables."""
        import pyarrow
        from deltalake import DeltaTable, QueryBuilder

        table = DeltaTable(self.link_table, version=self.link_version, storage_options=storage_options)
        sql = f"SELECT * FROM link WHERE run_id > {self.after_run_id} AND run_id <= {self.through_run_id}"
        return pyarrow.table(QueryBuilder().register("link", table).execute(sql).read_all())

    def ack(self, reason: Optional[str] = None) -> None:
        """Record that every run through `through_run_id` is processed (idempotent)."""
        if self.empty:
            return
        args = ["ack", self.pipeline, "--consumer", self.consumer, "--through-run", str(self.through_run_id)]
        if reason:
            args += ["--reason", reason]
        _deltalink(self.command, args)


def _deltalink(command: Sequence[str], args: Sequence[str]) -> str:
    done = subprocess.run([*command, *args], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"deltalink {' '.join(args)} failed ({done.returncode}):\n{done.stderr.strip()}")
    return done.stdout


def next_batch(pipeline: str, consumer: str, *, binary: str = "deltalink", config: Optional[str] = None) -> Batch:
    """The consumer's next batch (maybe empty)."""
    command = [binary] + (["--config", config] if config else [])
    answer = json.loads(_deltalink(command, ["consume", pipeline, "--consumer", consumer, "--json"]))
    return Batch(command=command, **answer)


def run_once(
    pipeline: str,
    consumer: str,
    process: Callable[[object], None],
    *,
    binary: str = "deltalink",
    config: Optional[str] = None,
    storage_options: Optional[dict] = None,
) -> Batch:
    """Consume one batch, hand its rows to `process`, and ack it once `process` returned."""
    batch = next_batch(pipeline, consumer, binary=binary, config=config)
    if not batch.empty:
        process(batch.read(storage_options))
        batch.ack()
    return batch
