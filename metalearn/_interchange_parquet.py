"""A store's plans and steps as two Parquet datasets, for a lakehouse (Spark, DuckDB, ...).

``DIR/plans/`` and ``DIR/steps/`` hold the interchange columns (the README's table), with
``started_at`` and ``finished_at`` as UTC timestamps, hive-partitioned by the plan's finish
day (``finished_day=YYYY-MM-DD/``; a plan's steps sit in its plan's day). Rows are in the
store's ``seq`` order within each file.

Exports are incremental: ``DIR/_metalearn_export.json`` records the store's identity and
the last exported ``seq``, and the next export appends only the plans after it. Files are
named by the seq range they hold, so an export interrupted before it wrote the manifest is
redone in place on the next call (the same names, overwritten), never doubled. A directory
that another store exported into is refused.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds

from metalearn._errors import InvalidArgumentError
from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS
from metalearn._readers import PlanBatch

__all__ = ["MANIFEST", "PARTITION", "ParquetExport", "write_parquet"]

MANIFEST = "_metalearn_export.json"
"""The file in an export directory that says which store it holds, up to which seq."""
PARTITION = "finished_day"
"""The hive partition column of both datasets: the plan's finish day (UTC), ``YYYY-MM-DD``."""

_PARTITIONING = ds.partitioning(pa.schema([(PARTITION, pa.string())]), flavor="hive")


@dataclass(frozen=True)
class ParquetExport:
    """What one :meth:`HistoryStore.export_parquet` call wrote.

    ``plans`` and ``steps`` exported by this call, the seqs it covered
    (``after_seq < seq <= last_seq``; equal when nothing was new) and the two dataset
    directories.
    """

    plans: int
    steps: int
    after_seq: int
    last_seq: int
    plans_path: Path
    steps_path: Path


def write_parquet(
    directory: str | os.PathLike[str],
    *,
    store_id: str,
    batches_after: Callable[[int], Iterable[PlanBatch]],
) -> ParquetExport:
    """Append the plans after the directory's last exported seq (``batches_after(seq)``
    gives them, oldest first), then record the new last seq."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    after = _exported_through(out, store_id)
    last, plans, steps = after, 0, 0
    for batch in batches_after(after):
        first = last
        last = batch.last_seq
        plans += batch.plans.num_rows
        steps += batch.steps.num_rows
        _write_batch(out, batch, f"seq-{first + 1:013d}-{last:013d}-{{i}}.parquet")
    if last != after or not (out / MANIFEST).exists():
        _record(out, store_id, last)
    return ParquetExport(plans, steps, after, last, out / "plans", out / "steps")


def _exported_through(out: Path, store_id: str) -> int:
    manifest = out / MANIFEST
    if not manifest.exists():
        if (out / "plans").exists() or (out / "steps").exists():
            raise InvalidArgumentError(
                f"{out} holds plans/ or steps/ but no {MANIFEST}: it is not a metalearn "
                "export (or its manifest was deleted); export into an empty directory"
            )
        return 0
    recorded = json.loads(manifest.read_text())
    if recorded.get("store_id") != store_id:
        raise InvalidArgumentError(
            f"{out} holds an export of another store ({recorded.get('store_id')!r}, this is "
            f"{store_id!r}); export into an empty directory"
        )
    return int(recorded["last_seq"])


def _record(out: Path, store_id: str, last_seq: int) -> None:
    staged = out / f"{MANIFEST}.tmp"
    staged.write_text(json.dumps({"store_id": store_id, "last_seq": last_seq}) + "\n")
    staged.replace(out / MANIFEST)  # atomic: a reader sees the old or the new manifest


def _write_batch(out: Path, batch: PlanBatch, basename: str) -> None:
    day = pc.strftime(batch.plans.column("finished_at"), format="%Y-%m-%d")
    plans = batch.plans.select(list(PLAN_COLUMNS)).append_column(PARTITION, day)
    step_day = pc.take(day, pc.index_in(batch.steps.column("seq"), batch.plans.column("seq")))
    steps = batch.steps.select(list(STEP_COLUMNS)).append_column(PARTITION, step_day)
    for name, table in (("plans", plans), ("steps", steps)):
        ds.write_dataset(
            table, out / name, format="parquet", partitioning=_PARTITIONING,
            basename_template=basename, existing_data_behavior="overwrite_or_ignore",
        )  # fmt: skip
