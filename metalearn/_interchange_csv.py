"""The interchange format as files: ``plans.csv`` and ``steps.csv``, out of and into a store.

Writing turns the store's batches into interchange frames (UTC timestamps as ISO-8601 text
with a ``Z``) and appends them with RFC 4180 line ends; reading keeps every cell as text
(blank is missing, nothing else is) for :func:`~metalearn._interchange.validate_frames`,
and labels rows by file and line for its errors.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

import pandas as pd

from metalearn._interchange import PLAN_COLUMNS, STEP_COLUMNS, RowLabel, format_timestamps
from metalearn._readers import PlanBatch

__all__ = ["interchange_frames", "read_csv", "write_csv"]


def interchange_frames(batch: PlanBatch) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A batch's plans and steps in the interchange columns, timestamps as text."""
    plan_frame, step_frame = batch.to_pandas()
    for name in ("started_at", "finished_at"):
        plan_frame[name] = format_timestamps(plan_frame[name])
    return plan_frame[list(PLAN_COLUMNS)], step_frame[list(STEP_COLUMNS)]


def write_csv(batches: Iterable[PlanBatch], directory: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write ``plans.csv`` and ``steps.csv`` into ``directory`` (created, files replaced):
    the headers, then each batch in order."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "plans.csv", out / "steps.csv"
    for path, columns in zip(paths, (PLAN_COLUMNS, STEP_COLUMNS), strict=True):
        path.unlink(missing_ok=True)
        _append(pd.DataFrame(columns=list(columns)), path, header=True)
    for batch in batches:
        for frame, path in zip(interchange_frames(batch), paths, strict=True):
            _append(frame, path, header=False)
    return paths


def _append(frame: pd.DataFrame, path: Path, *, header: bool) -> None:
    # RFC 4180 line ends: a CR inside a text field then gets quoted too
    frame.to_csv(path, mode="a", header=header, index=False, lineterminator="\r\n")


def read_csv(
    plans_path: str | os.PathLike[str], steps_path: str | os.PathLike[str]
) -> tuple[pd.DataFrame, pd.DataFrame, RowLabel]:
    """Both files as text frames, and the row label naming file and line (header = 1)."""
    paths = {"plans": Path(plans_path), "steps": Path(steps_path)}
    plan_frame, step_frame = (
        pd.read_csv(paths[t], dtype="str", keep_default_na=False, na_values=[])
        for t in ("plans", "steps")
    )

    def label(table: str, row: int) -> str:
        return f"{paths[table].name} line {row + 2}"

    return plan_frame, step_frame, label
