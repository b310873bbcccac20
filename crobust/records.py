"""Run directories: ``config.json``, ``metrics.jsonl``, figures with their numbers, and a status that never lies.

Layout of a run directory::

    <workdir>/
      run.json          {"status": "running" | "complete" | "failed" | "interrupted", "study", "preset", "started",
                         "finished", ...}
      config.json       the resolved configuration, and under "provenance" where it came from (crobust's version
                         and git commit, jax/jaxlib/flax/optax versions, backend, devices; :mod:`crobust.provenance`)
      .lock             the lock of the process running in the folder (:class:`WorkdirLock`)
      metrics.jsonl     one JSON object per (member, measurement), appended and flushed as they are measured
      *.png + *.csv     each figure and the numbers behind it
      report.md         written last, atomically; its presence with status "complete" means the run finished

Every file except ``metrics.jsonl`` is written to a temporary name and renamed into place (atomic on POSIX), so
a crash or a kill never leaves a truncated file that looks complete; every file is created with the mode the
umask gives (as ``open`` and matplotlib create theirs). Only process 0 of a multi-host run writes
(:func:`is_writer`), and it holds the folder's lock.

What a run may touch: :meth:`RunDir.start` refuses a folder that holds another run (a different configuration, or
run files without a ``config.json`` to compare with) before it writes anything, and :meth:`RunDir.finish` writes
only into a run this object started, so a refused command never changes a file of an existing run.
"""

from __future__ import annotations

import csv
import datetime as _dt
import errno
import io
import json
import math
import os
import socket
import sys
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
        os.fchmod(fd, 0o666 & ~umask())                  # mkstemp creates 0600; the umask's mode as open() gives
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def umask() -> int:
    """The process's umask (read from ``/proc/self/status`` where it is, else set and restored at once)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


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
        self._started = False

    # -- lifecycle -------------------------------------------------------------------------------------------
    def status(self) -> dict | None:
        f = self.path / "run.json"
        return json.loads(f.read_text()) if f.exists() else None

    def start(self, config: Mapping, *, extra: Mapping | None = None, provenance: Mapping | None = None,
              not_identity: Sequence[str] = ()) -> None:
        """Check that the folder may hold this run, then write ``config.json`` and mark the run as running.

        Refused, before any file is written (pass another ``--workdir``): a folder whose ``config.json`` holds a
        different configuration, and a folder with run files but no ``config.json`` (its configuration cannot be
        compared). A folder whose run kept nothing (no checkpoint, no report, no records: e.g. it failed at once)
        is taken over whatever its configuration. A folder with the same configuration is reused:
        ``metrics.jsonl`` is restarted, since measurements are recomputed from the (checkpointed) training
        state. ``provenance`` goes into ``config.json`` under ``"provenance"`` and is not compared; nor are the dotted keys
        ``not_identity`` (``'train.execution'``): settings of how, never what, is computed.
        """
        if not self.writer:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        self.check_reusable(config, not_identity)
        write_json(self.path / "config.json", {**dict(config), **({"provenance": provenance} if provenance else {})})
        self._meta = {"study": self.study, "preset": self.preset, "status": "running", "started": _now(),
                      **(dict(extra) if extra else {})}
        write_json(self.path / "run.json", self._meta)
        self._started = True
        (self.path / "metrics.jsonl").write_text("")
        for stale in ("report.md",):
            if (self.path / stale).exists():
                (self.path / stale).unlink()

    def check_reusable(self, config: Mapping, not_identity: Sequence[str] = ()) -> None:
        """Refuse (one :class:`CrobustError`) a folder that holds another run (:meth:`start`); writes nothing."""
        config = _jsonable(dict(config))
        old_config = self.path / "config.json"
        if self._keeps_nothing() or self._holds_only_source_checkpoints():
            return
        if not old_config.exists():
            raise CrobustError(f"workdir {self.path} holds a run without its config.json, so its configuration "
                               f"cannot be compared with this one; choose another --workdir or delete it")
        try:
            previous = json.loads(old_config.read_text())
        except (OSError, ValueError) as e:
            raise CrobustError(f"workdir {self.path}: its config.json cannot be read ({e}); choose another "
                               f"--workdir or delete it") from None
        if not isinstance(previous, dict):
            previous = {}
        previous.pop("provenance", None)
        if _without(previous, not_identity) != _without(config, not_identity):
            raise CrobustError(f"workdir {self.path} holds a run with a different configuration; "
                               f"choose another --workdir or delete it")

    def _holds_only_source_checkpoints(self) -> bool:
        """Whether the folder holds nothing but population checkpoints, as another study leaves it when it trains
        a population of this folder's study as its own source (``Start(population, study=...)``): no config, run
        record, report or records. Such a folder is this study's to run in; each checkpoint is restored only if its
        fingerprint (model, config, members, data) matches the population that finds it, else refused."""
        allowed = {"checkpoints", WorkdirLock.NAME, WorkdirLock.FALLBACK}
        return (self.path / "checkpoints").is_dir() and all(p.name in allowed for p in self.path.iterdir())

    def _keeps_nothing(self) -> bool:
        """Whether the folder holds no result a run could lose: no checkpoint, report or records."""
        ckpt = self.path / "checkpoints"
        if ckpt.is_dir() and any(ckpt.iterdir()):
            return False
        metrics = self.path / "metrics.jsonl"
        return not (self.path / "report.md").exists() and not (metrics.exists() and metrics.stat().st_size > 0)

    @property
    def started(self) -> bool:
        """Whether :meth:`start` of this object marked the run as running (only then may it record an end)."""
        return self._started

    def finish(self, status: str = "complete", **info) -> None:
        """Record the run's end in ``run.json``; nothing unless this object started the run."""
        if not self.writer or not self._started:
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


# --------------------------------------------------------------------------------------------------------------
# The workdir lock

_NO_FLOCK = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EINVAL, errno.ENOSYS)


class WorkdirLock:
    """One run at a time in a run directory: an exclusive ``flock`` on ``<workdir>/.lock``.

    The kernel releases a ``flock`` when its holder dies (a kill, a crash), so a lock is never left behind. The file
    names the holder (host, pid, start) for the message a second run gets: one :class:`CrobustError` line, the
    command line's exit 2. Where the file system does not honour ``flock`` (some NFS and FUSE mounts: ``ENOLCK``,
    ``EOPNOTSUPP``, …) it says so in one line on ``stream`` and falls back to ``<workdir>/.lock.pid``, created
    exclusively (``O_EXCL``) with the holder's host and pid and removed on release; a fallback lock of a process
    that is gone from this host is taken over, one of another host must be removed by hand (the message says so).
    Only the process that writes records takes it (:func:`is_writer`). A context manager.
    """

    NAME = ".lock"
    FALLBACK = ".lock.pid"

    def __init__(self, path, *, stream=None):
        self.path = Path(path)
        self.stream = stream
        self._fd: int | None = None
        self._fallback: Path | None = None

    @staticmethod
    def _holder() -> dict:
        return {"host": socket.gethostname(), "pid": os.getpid(), "started": _now()}

    def acquire(self) -> "WorkdirLock":
        import fcntl

        fd = os.open(self.path / self.NAME, os.O_RDWR | os.O_CREAT, 0o666 & ~umask())
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                held = _read_holder(fd)
                os.close(fd)
                raise CrobustError(f"workdir {self.path} is in use by {_describe(held)}; wait for that run to end "
                                   f"or choose another --workdir") from None
            os.close(fd)
            if e.errno not in _NO_FLOCK:
                raise
            why = errno.errorcode.get(e.errno, e.errno)
            print(f"note: the file system of {self.path} does not honour flock ({why}); locking with "
                  f"{self.path / self.FALLBACK} (host and pid) instead",
                  file=self.stream or sys.stderr, flush=True)
            self._acquire_fallback()
            return self
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(self._holder()).encode(), 0)
        self._fd = fd
        return self

    def _acquire_fallback(self) -> None:
        path = self.path / self.FALLBACK
        for _ in range(2):
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666 & ~umask())
            except FileExistsError:
                try:
                    held = json.loads(path.read_text() or "{}")
                except (OSError, ValueError):
                    held = {}
                if held.get("host") == socket.gethostname() and not _alive(held.get("pid")):
                    path.unlink(missing_ok=True)                  # its holder is gone from this host: stale
                    continue
                raise CrobustError(f"workdir {self.path} is in use by {_describe(held)} (lock file {path}; remove it "
                                   f"if that process is gone)") from None
            with os.fdopen(fd, "w") as f:
                f.write(json.dumps(self._holder()))
            self._fallback = path
            return
        raise CrobustError(f"workdir {self.path}: cannot create the lock file {path}")  # pragma: no cover - a race

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)                                   # closing the file releases the flock
            self._fd = None
        if self._fallback is not None:
            self._fallback.unlink(missing_ok=True)
            self._fallback = None

    def __enter__(self) -> "WorkdirLock":
        return self.acquire()

    def __exit__(self, *exc) -> bool:
        self.release()
        return False


def _read_holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (OSError, ValueError):
        return {}


def _describe(held: Mapping) -> str:
    if not held.get("pid"):
        return "another process (holder unknown)"
    return f"host {held.get('host', '?')} pid {held['pid']} (since {held.get('started', '?')})"


def _alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ProcessLookupError, TypeError, ValueError):
        return False
    except PermissionError:
        return True
    return True
