"""Run directories: ``config.json``, ``metrics.jsonl``, figures with their numbers, and a status that never lies.

Layout of a run directory::

    <workdir>/
      run.json          {"status": "running" | "complete" | "failed", "study", "preset", "started", "finished", ...}
      config.json       the resolved configuration
      metrics.jsonl     one JSON object per (member, measurement), appended and flushed as they are measured
      *.png + *.csv     each figure and the numbers behind it
      report.md         written last, atomically; its presence with status "complete" means the run finished

Every file except ``metrics.jsonl`` is written to a temporary name and renamed into place (atomic on POSIX), so
a crash or a kill never leaves a truncated file that looks complete. Only process 0 of a multi-host run writes
(:func:`is_writer`).
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from crobust._errors import CrobustError


def is_writer() -> bool:
    """True on the process that writes records (process 0 of a multi-host JAX run, or a single process)."""
    try:
        import jax
        return jax.process_index() == 0
    except Exception:  # pragma: no cover - jax always importable here
        return True


def _jsonable(x):
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _jsonable(np.asarray(x).tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return None if math.isnan(x) else ("inf" if x > 0 else "-inf")
    if isinstance(x, (np.floating, np.integer, np.bool_)):
        return _jsonable(x.item())
    return x


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same folder and ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(_jsonable(obj), indent=2, sort_keys=False) + "\n")


def write_csv(path: Path, rows: Sequence[Mapping]) -> None:
    """Rows (dicts) → CSV, atomically; the columns are the union of the rows' keys in order of first appearance
    (a row without a key leaves that cell empty: e.g. members of populations with different coordinates)."""
    buf = io.StringIO()
    if rows:
        writer = csv.DictWriter(buf, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: _jsonable(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _without(config: Mapping, dotted: Sequence[str]) -> dict:
    """``config`` (nested dicts) without the dotted keys ``dotted``; a key that is not there is ignored."""
    out = json.loads(json.dumps(config))
    for path in dotted:
        *parents, last = path.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(last, None)
    return out


class RunDir:
    """A run directory for one study run (see the module docstring)."""

    def __init__(self, path, *, study: str, preset: str, writer: bool | None = None):
        self.path = Path(path)
        self.study, self.preset = study, preset
        self.writer = is_writer() if writer is None else writer
        self._meta: dict = {}

    # -- lifecycle -------------------------------------------------------------------------------------------
    def status(self) -> dict | None:
        f = self.path / "run.json"
        return json.loads(f.read_text()) if f.exists() else None

    def start(self, config: Mapping, *, extra: Mapping | None = None, not_identity: Sequence[str] = ()) -> None:
        """Create the folder, write ``config.json`` and mark the run as running.

        A folder that holds a run of a different study or configuration is refused (pass another
        ``--workdir``); a folder with the same configuration is reused: ``metrics.jsonl`` is restarted, since
        measurements are recomputed from the (checkpointed) training state. ``not_identity``: dotted keys
        (``'train.execution'``) recorded but not compared — settings of how, never what, is computed.
        """
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        old_config = self.path / "config.json"
        if old_config.exists():
            previous = json.loads(old_config.read_text())
            if _without(previous, not_identity) != _without(_jsonable(dict(config)), not_identity):
                raise CrobustError(f"workdir {self.path} holds a run with a different configuration; "
                                   f"choose another --workdir or delete it")
        write_json(self.path / "config.json", config)
        self._meta = {"study": self.study, "preset": self.preset, "status": "running", "started": _now(),
                      **(dict(extra) if extra else {})}
        write_json(self.path / "run.json", self._meta)
        (self.path / "metrics.jsonl").write_text("")
        for stale in ("report.md",):
            if (self.path / stale).exists():
                (self.path / stale).unlink()

    def finish(self, status: str = "complete", **info) -> None:
        if not self.writer:
            return
        self._meta.update(status=status, finished=_now(), **info)
        write_json(self.path / "run.json", self._meta)

    # -- records ---------------------------------------------------------------------------------------------
    def log(self, records: Iterable[Mapping]) -> None:
        """Append one JSON line per record to ``metrics.jsonl`` and flush it to disk."""
        if not self.writer:
            return
        with open(self.path / "metrics.jsonl", "a", encoding="utf-8") as f:
            for r in records:
                f.write(json.dumps(_jsonable(r), sort_keys=False) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def write_json(self, name: str, obj: Any) -> Path:
        if self.writer:
            write_json(self.path / name, obj)
        return self.path / name

    def write_csv(self, name: str, rows: Sequence[Mapping]) -> Path:
        if self.writer:
            write_csv(self.path / name, rows)
        return self.path / name

    def write_text(self, name: str, text: str) -> Path:
        if self.writer:
            atomic_write_text(self.path / name, text)
        return self.path / name

    def file(self, name: str) -> Path:
        return self.path / name


def read_jsonl(path) -> list[dict]:
    """All records of a ``metrics.jsonl``."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
