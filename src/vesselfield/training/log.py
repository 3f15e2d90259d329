"""The run log: ``log.csv`` appended to as rows arrive, rows packed into checkpoints, TensorBoard.

:class:`CsvLog` keeps a run's rows in memory (they are what a loop returns) and mirrors them to
``log.csv`` for people and spreadsheets: each row is appended (and flushed) as it arrives; the
header is written once; a row that brings a new column rewrites the file atomically with the
union of the columns (earlier rows leave the new cells empty). Nothing reads ``log.csv`` back:
a resumed run restores its rows from the checkpoint (:func:`pack_rows` / :func:`unpack_rows`)
and rewrites the file from them.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Iterable, Mapping

from vesselfield.errors import VesselfieldError
from vesselfield.io.atomic import write_text_atomic

__all__ = ["CsvLog", "open_tensorboard", "pack_rows", "unpack_rows"]


class CsvLog:
    """Rows of numbers kept in memory and mirrored to a CSV file as they arrive.

    Args:
        path: the CSV file (``log.csv``), or None to keep the rows in memory only (e.g. on the
            processes other than rank 0 of a distributed run).
        rows: rows that are already done (a resumed run's rows, from its checkpoint). The file
            is rewritten from them now; with no rows an existing file is removed, so that the
            file always holds this run's rows and nothing else.

    Attributes:
        rows: every row so far, as given (dicts of column -> number).
        columns: the union of the rows' columns, in order of first appearance.
    """

    def __init__(self, path=None, rows: Iterable[Mapping] = ()):
        self.path = None if path is None else Path(path)
        self.rows: list[dict] = [dict(r) for r in rows]
        self.columns: list[str] = []
        for row in self.rows:
            self.columns += [k for k in row if k not in self.columns]
        self._file = None
        self._writer = None
        self._rewrite()

    def append(self, row: Mapping) -> None:
        """Add one row: appended to the file, or the file rewritten when the row adds a column."""
        row = dict(row)
        self.rows.append(row)
        new = [k for k in row if k not in self.columns]
        self.columns += new
        if self.path is None:
            return
        if new or self._writer is None:
            self._rewrite()
        else:
            self._writer.writerow(row)
            self._file.flush()

    def close(self) -> None:
        """Close the file (the rows stay available)."""
        if self._file is not None:
            self._file.close()
        self._file = self._writer = None

    def __enter__(self) -> "CsvLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _rewrite(self) -> None:
        self.close()
        if self.path is None:
            return
        if not self.rows:
            self.path.unlink(missing_ok=True)
            return
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=self.columns)
        writer.writeheader()
        writer.writerows(self.rows)
        write_text_atomic(self.path, buf.getvalue())
        self._file = open(self.path, "a", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.columns)


def pack_rows(rows: Iterable[Mapping]) -> dict:
    """Rows of numbers -> a compact plain table for a checkpoint (loadable with ``weights_only=True``).

    Returns:
        ``{"columns": [str], "integer": [str], "values": (N, C) float64 tensor, "present": (N, C)
        bool tensor}``: ``integer`` names the columns whose values are all ints (restored as
        ints; exact up to 2**53), ``present`` marks the cells a row has (NaN values survive).

    Raises:
        VesselfieldError: a value is not a number.
    """
    import torch

    rows = [{str(k): v for k, v in r.items()} for r in rows]
    columns: list[str] = []
    for row in rows:
        columns += [k for k in row if k not in columns]
    position = {c: j for j, c in enumerate(columns)}
    values = [[math.nan] * len(columns) for _ in rows]
    present = [[False] * len(columns) for _ in rows]
    integer = set(columns)
    for i, row in enumerate(rows):
        for k, v in row.items():
            if not isinstance(v, (int, float)) or isinstance(v, bool):
                raise VesselfieldError(f"log value {k}={v!r} is not a number")
            values[i][position[k]] = float(v)
            present[i][position[k]] = True
            if not isinstance(v, int):
                integer.discard(k)
    values = torch.tensor(values, dtype=torch.float64).reshape(len(rows), len(columns))
    present = torch.tensor(present, dtype=torch.bool).reshape(len(rows), len(columns))
    return {"columns": columns, "integer": [c for c in columns if c in integer], "values": values,
            "present": present}


def unpack_rows(table: Mapping) -> list[dict]:
    """The rows given to :func:`pack_rows`, from its table."""
    columns = list(table["columns"])
    integer = set(table["integer"])
    values = table["values"].tolist()
    present = table["present"].tolist()
    return [{c: (int(v) if c in integer else float(v)) for c, v, p in zip(columns, vs, ps) if p}
            for vs, ps in zip(values, present)]


def open_tensorboard(log_dir, purge_step: int = 0):
    """A ``torch.utils.tensorboard.SummaryWriter`` on ``log_dir``, or None when TensorBoard is absent.

    ``purge_step``: a resumed run discards the events from this step on (they are redone).
    """
    try:
        from torch.utils.tensorboard import SummaryWriter
    except Exception:  # TensorBoard is optional
        return None
    try:
        return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)
    except Exception:
        return None
