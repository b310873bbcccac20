"""The member table: one row per member of every population, its coordinates and its measured columns.

A *column* is one measured quantity, named by its measurement and qualifiers (:class:`Column`):
``Column('robust_acc', norm='linf', eps='8/255')`` has the key ``'robust_acc[norm=linf,eps=8/255]'``;
``Column('clean_acc')`` is ``'clean_acc'``. The same names are the records' vocabulary: every (member, column)
is one JSON line ``{study coordinates…, "measurement": "robust_acc", "norm": "linf", "eps": "8/255", "value": …}``,
as :func:`crobust.metrics.report_rows` writes a layer metric (``"layer": "hidden_0"``).

Coordinates are what a member *is* (``population``, ``member`` — its index inside its population —, ``seed``,
``alpha``, ``rank``, …); columns are what was measured on it. Claims and figures read both by name.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping, Sequence

import numpy as np

from crobust._errors import CrobustError


@dataclasses.dataclass(frozen=True)
class Column:
    """A measured quantity: ``measurement`` plus qualifiers (in the order given) such as norm, ε, layer."""

    measurement: str
    qualifiers: tuple[tuple[str, Any], ...] = ()

    @property
    def key(self) -> str:
        if not self.qualifiers:
            return self.measurement
        return f"{self.measurement}[{','.join(f'{k}={v}' for k, v in self.qualifiers)}]"

    def __str__(self) -> str:
        return self.key


def col(measurement: str, **qualifiers) -> str:
    """The key of ``Column(measurement, qualifiers)``: ``col('robust_acc', norm='l2', eps='0.5')``."""
    return Column(measurement, tuple(qualifiers.items())).key


def column(measurement: str, **qualifiers) -> Column:
    return Column(measurement, tuple(qualifiers.items()))


class MemberTable:
    """Coordinates × columns for every member (see the module docstring)."""

    def __init__(self):
        self.coords: list[dict] = []
        self.columns: dict[str, np.ndarray] = {}
        self.meta: dict[str, Column] = {}

    def __len__(self) -> int:
        return len(self.coords)

    # -- building ---------------------------------------------------------------------------------------------
    def add_members(self, coords: Sequence[Mapping]) -> slice:
        """Append members; returns the slice of their rows (columns of earlier rows are NaN-padded)."""
        start = len(self.coords)
        self.coords += [dict(c) for c in coords]
        for key, values in self.columns.items():
            self.columns[key] = np.concatenate([values, np.full(len(coords), np.nan)])
        return slice(start, len(self.coords))

    def set(self, rows: slice, column: Column | str, values) -> None:
        """Set ``column`` for the members in ``rows`` (one value each)."""
        if isinstance(column, str):
            column = Column(column)
        values = np.asarray(values, np.float64).reshape(-1)
        n = rows.stop - rows.start
        if values.shape[0] != n:
            raise CrobustError(f"column {column.key}: {values.shape[0]} values for {n} members")
        if column.key not in self.columns:
            self.columns[column.key] = np.full(len(self.coords), np.nan)
            self.meta[column.key] = column
        self.columns[column.key][rows] = values

    # -- reading ----------------------------------------------------------------------------------------------
    def __getitem__(self, key: str) -> np.ndarray:
        if key in self.columns:
            return self.columns[key]
        if any(key in c for c in self.coords):
            return self.coord(key)
        raise CrobustError(f"no column or coordinate {key!r} in the table; columns: {', '.join(self.columns)}")

    def __contains__(self, key: str) -> bool:
        return key in self.columns or any(key in c for c in self.coords)

    def coord(self, name: str) -> np.ndarray:
        """A coordinate as an array: numbers as float64 (NaN where a member lacks it), else objects."""
        values = [c.get(name) for c in self.coords]
        if all(v is None or isinstance(v, (int, float, np.integer, np.floating)) for v in values):
            return np.array([np.nan if v is None else float(v) for v in values])
        return np.array(values, dtype=object)

    def where(self, **coords) -> np.ndarray:
        """A boolean mask of the members whose coordinates equal the given values."""
        mask = np.ones(len(self.coords), bool)
        for name, value in coords.items():
            mask &= np.array([c.get(name) == value for c in self.coords])
        return mask

    def member_rows(self) -> list[dict]:
        """One dict per member: its coordinates, then every column by key (``members.csv``)."""
        return [{**c, **{k: _py(v[i]) for k, v in self.columns.items()}} for i, c in enumerate(self.coords)]

    def records(self, **extra) -> list[dict]:
        """One record per (member, column): coordinates, ``measurement``, qualifiers, ``value`` (``metrics.jsonl``)."""
        out = []
        for i, c in enumerate(self.coords):
            for key, values in self.columns.items():
                meta = self.meta[key]
                out.append({**extra, **c, "measurement": meta.measurement, **dict(meta.qualifiers),
                            "value": _py(values[i])})
        return out

    def group_stats(self, by: str | Sequence[str], key: str) -> list[dict]:
        """Per distinct value of the coordinate(s) ``by``: mean, standard deviation, min, max and count of the
        finite values of ``key`` (in order of first appearance)."""
        by = (by,) if isinstance(by, str) else tuple(by)
        values = self[key]
        groups: dict[tuple, list[int]] = {}
        for i, c in enumerate(self.coords):
            groups.setdefault(tuple(c.get(b) for b in by), []).append(i)
        rows = []
        for g, idx in groups.items():
            v = values[idx]
            v = v[np.isfinite(v)]
            rows.append({**dict(zip(by, g)), "mean": float(v.mean()) if v.size else math.nan,
                         "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
                         "min": float(v.min()) if v.size else math.nan,
                         "max": float(v.max()) if v.size else math.nan, "n": int(v.size)})
        return rows


def _py(v):
    v = float(v)
    return v if math.isfinite(v) else None


__all__ = ["Column", "col", "column", "MemberTable"]
