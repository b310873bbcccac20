"""Checkpoints of a population's training with Orbax: resume after a kill, a pre-emption or Ctrl-C, bit for bit.

Usage::

    result = crobust.fit(model, data, cfg, members, checkpoint_dir="runs/x/checkpoints", checkpoint_every=1000)
    # killed (SIGKILL, pre-emption) or interrupted (Ctrl-C / SIGTERM)? Run the same call again: it restores the
    # latest checkpoint, trains only what is left, and returns what an uninterrupted run returns (bitwise on CPU),
    # including the full per-block history.

What a checkpoint holds (one Orbax step per saved block, ``<dir>/<block>/``): the whole
:class:`crobust.training.PopulationState` of the real members — parameters, optimiser state, per-member best
parameters and best validation loss/step, early-stopping and divergence flags, the Frobenius reference norms,
the members' splits, the model state (batch-norm running statistics, and the copy that goes with the best
parameters; absent for MLPs), the per-member step (which is the data-order position: the batch of step s is a function of
the member key and s) and the member keys (typed keys saved as ``jax.random.key_data`` and re-wrapped) — plus
the fit loop's host-side history, the block count, the training wall time so far and a fingerprint of what
determines training (train config, members, model, training data). Nothing else is needed to continue, so the
resumed run computes exactly the numbers the uninterrupted one would.

Atomicity: Orbax writes each checkpoint into ``<block>.orbax-checkpoint-tmp-*`` and renames it into place when
it is complete; a directory with that suffix (a save that was killed) is never restored and is removed when the
next run opens the folder. Integrity: the metadata holds the SHA-256 of every array's bytes (state and history),
checked on restore, so bytes changed on the disk (a bad sector, a stray write) are caught even where the file
format would read them. The last ``max_to_keep`` (2) checkpoints are kept; if the newest cannot be read or fails
its checksums, one line on stderr names it and why, and the one before it is used; none left is one
:class:`~crobust.CrobustError`. Arrays with no element (a member's validation split when ``val_ratio`` = 0) are
not written (Orbax cannot) and are restored from their shape. A checkpoint written by a different configuration
is refused with one :class:`~crobust.CrobustError` naming what differs. Saving is synchronous (a few tens of ms for the studies'
populations), collective on a multi-host run (every process calls it; put the folder on a file system every
host sees), and happens every ``checkpoint_every`` optimiser steps (rounded up to whole blocks), at the end,
and on an interrupt.

Interrupts: while :func:`crobust.training.fit` runs with a checkpoint folder, SIGINT (Ctrl-C) and SIGTERM
(what a pre-empted TPU VM or a batch scheduler sends) let the current block finish, write a checkpoint, print one
line saying where it is and that rerunning the same command resumes, and raise :class:`TrainingInterrupted` (a
``KeyboardInterrupt``). A second signal stops at once, without a checkpoint.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import signal
import sys
import threading
from typing import Any, Mapping, Sequence

import jax
import numpy as np

from crobust._errors import CrobustError
from crobust.parallel import is_key as _is_key

FORMAT = 1


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on SIGINT/SIGTERM after writing a checkpoint; ``checkpoint_dir`` and ``step`` say where."""

    def __init__(self, message: str, checkpoint_dir: str | None = None, step: int | None = None):
        super().__init__(message)
        self.message, self.checkpoint_dir, self.step = message, checkpoint_dir, step

    def __str__(self) -> str:
        return self.message


# --------------------------------------------------------------------------------------------------------------
# Fingerprint

def _jsonable(x):
    from crobust.records import _jsonable as j
    return j(x)


# The trainer's state layout and the meaning of its step counter (data order, optimiser rule). Bumped whenever either
# changes, so that a checkpoint of an older crobust is refused by name instead of failing inside Orbax or,
# worse, resuming with another data order. 2: crobust.optim state, Feistel index-shuffle data order. 3: the model
# state (batch-norm statistics) and its best-validation copy in the state; schedules, augmentation and member axes.
# 4: the optimiser state is optax's (inject_hyperparams), leaves in another order.
STATE_FORMAT = 4


# TrainConfig fields added after state format 4 → their default. At the default such a field is left out of the
# description, so a checkpoint written before the field existed still resumes.
ADDED_TRAIN_FIELDS = {"penalties": (), "trainable": None}


def describe(model, data, config, members: Sequence[Mapping]) -> dict:
    """What determines a training run, as JSON-able data (the fingerprint hashes it); the fields of
    :data:`ADDED_TRAIN_FIELDS` appear only where they differ from their default."""
    images = np.ascontiguousarray(np.asarray(data.train_images))
    labels = np.ascontiguousarray(np.asarray(data.train_labels))
    digest = hashlib.sha256()
    for a in (images, labels):
        digest.update(str((a.dtype.str, a.shape)).encode())
        digest.update(memoryview(a).cast("B"))
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    cfg = {k: v for k, v in cfg.items() if not (k in ADDED_TRAIN_FIELDS and v == ADDED_TRAIN_FIELDS[k])}
    cfg = {k: v for k, v in cfg.items() if k not in getattr(type(config), "NOT_IDENTITY", ())}   # layout only
    return _jsonable({
        "state_format": STATE_FORMAT,
        "train_config": cfg,
        "members": [dict(m) for m in members],
        "model": repr(model),
        "data": {"name": getattr(data, "name", None), "train_images": list(images.shape),
                 "train_sha256": digest.hexdigest()},
    })


def fingerprint(description: Mapping) -> str:
    return hashlib.sha256(json.dumps(description, sort_keys=True).encode()).hexdigest()[:16]


def _differences(old: Mapping, new: Mapping) -> list[str]:
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, Mapping) and isinstance(b, Mapping) and k == "train_config":
            out += [f"{f} ({a.get(f)!r} → {b.get(f)!r})" for f in sorted(set(a) | set(b)) if a.get(f) != b.get(f)]
        elif k == "members" and isinstance(a, list) and isinstance(b, list):
            out.append(f"members ({len(a)} → {len(b)})" if len(a) != len(b) else "members (hyper-parameters/seeds)")
        elif k == "state_format":
            out.append(f"state_format ({a!r} → {b!r}: written by another crobust version)")
        else:
            out.append(k)
    return out


# --------------------------------------------------------------------------------------------------------------
# Save / restore

def _leaf_dict(state) -> dict:
    leaves = jax.tree.leaves(state)
    return {f"{i:04d}": (jax.random.key_data(x) if _is_key(x) else x) for i, x in enumerate(leaves)}


def checksum(a) -> str:
    """SHA-256 of an array's dtype, shape and bytes (C order)."""
    a = np.ascontiguousarray(np.asarray(a))
    digest = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    digest.update(memoryview(a).cast("B") if a.size else b"")
    return digest.hexdigest()


def _nonempty(arrays: Mapping) -> dict:
    return {k: v for k, v in arrays.items() if int(np.prod(np.shape(v))) > 0}


@dataclasses.dataclass
class Restored:
    state: Any
    history: dict[str, list]
    n_blocks: int
    wall_time: float
    step: int


class Checkpointer:
    """Orbax checkpoints of one population's training in ``directory`` (see the module docstring)."""

    def __init__(self, directory, *, description: Mapping, every_blocks: int = 1, max_to_keep: int = 2,
                 stream=None):
        import orbax.checkpoint as ocp  # imported here: Orbax is only needed when checkpointing

        if every_blocks <= 0:
            raise CrobustError(f"checkpoint interval must be positive, got {every_blocks} block(s)")
        self._ocp = ocp
        self.directory = os.path.abspath(os.fspath(directory))
        self.description = dict(description)
        self.fingerprint = fingerprint(self.description)
        self.every_blocks = int(every_blocks)
        self.last_saved = None
        self._stream = stream
        _quiet_closed_loop_callbacks()
        options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, create=True,
                                               enable_async_checkpointing=False, cleanup_tmp_directories=True)
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "meta"))

    @property
    def stream(self):
        """Where a skipped checkpoint is reported: the stream given, else ``sys.stderr`` as it is now."""
        return sys.stderr if self._stream is None else self._stream

    # -- restore ---------------------------------------------------------------------------------------------
    def steps(self) -> list[int]:
        self.manager.reload()
        return sorted(self.manager.all_steps())

    def _meta(self, step: int) -> dict:
        ocp = self._ocp
        return dict(self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore())).meta)

    def restore(self, template_state) -> Restored | None:
        """The newest readable checkpoint as a state shaped like ``template_state`` (host arrays), or None.

        Refuses (CrobustError) a checkpoint written by a different configuration.
        """
        ocp = self._ocp
        steps = self.steps()
        if not steps:
            return None
        template_leaves, treedef = jax.tree.flatten(template_state)
        errors, skipped = [], []
        for step in reversed(steps):
            try:
                meta = self._meta(step)
            except Exception as e:  # an unreadable checkpoint: try the one before
                errors.append(f"{step}: {type(e).__name__}: {_first_line(e)}")
                skipped.append(step)
                continue
            self._refuse_another_configuration(meta)
            target = {f"{i:04d}": np.zeros((jax.random.key_data(x) if _is_key(x) else x).shape,
                                           (jax.random.key_data(x) if _is_key(x) else x).dtype)
                      for i, x in enumerate(template_leaves)}
            hist_meta = meta["history"]
            target_hist = {k: np.zeros(tuple(v["shape"]), np.dtype(v["dtype"])) for k, v in hist_meta.items()}
            try:
                out = self.manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore({"leaves": _nonempty(target), "history": _nonempty(target_hist)})))
            except Exception as e:
                errors.append(f"{step}: {type(e).__name__}: {_first_line(e)}")
                skipped.append(step)
                continue
            arrays = {"leaves": {**target, **dict(out.state["leaves"])},
                      "history": {**target_hist, **dict(out.state.get("history", {}))}}
            bad = _checksum_failures(meta.get("checksums"), arrays)
            if bad:
                errors.append(f"{step}: {len(bad)} array(s) fail their checksum ({', '.join(bad[:3])})")
                skipped.append(step)
                continue
            leaves = []
            for i, tmpl in enumerate(template_leaves):
                arr = np.asarray(arrays["leaves"][f"{i:04d}"])
                if _is_key(tmpl):
                    arr = jax.random.wrap_key_data(arr, impl=jax.random.key_impl(tmpl))
                leaves.append(arr)
            history = {k: list(np.asarray(arrays["history"][k])) for k in hist_meta}
            self.last_saved = int(meta["n_blocks"])
            if errors:
                print(f"checkpoint(s) {', '.join(self.path(k) for k in skipped)} unreadable or corrupt "
                      f"({'; '.join(errors)}): resuming from {self.path(step)}", file=self.stream, flush=True)
            return Restored(state=jax.tree.unflatten(treedef, leaves), history=history,
                            n_blocks=int(meta["n_blocks"]), wall_time=float(meta.get("wall_time_s", 0.0)),
                            step=int(meta.get("step", 0)))
        raise CrobustError(f"no readable checkpoint in {self.directory} ({'; '.join(errors)}); delete the folder "
                           f"to start over")

    def _refuse_another_configuration(self, meta: Mapping) -> None:
        if meta.get("fingerprint") != self.fingerprint:
            diff = _differences(meta.get("description", {}), self.description)
            raise CrobustError(
                f"the checkpoint in {self.directory} was written by a different training configuration "
                f"(differs in: {', '.join(diff) if diff else 'fingerprint'}); rerun with the original settings "
                f"or use another checkpoint folder / --workdir (or delete {self.directory} to start over)")

    def check_configuration(self) -> None:
        """Refuse (the :class:`CrobustError` of :meth:`restore`) when the newest checkpoint whose metadata reads was
        written by another configuration; reads metadata only, so a run can be refused before it changes a file."""
        for step in reversed(self.steps()):
            try:
                meta = self._meta(step)
            except Exception:  # unreadable: restore will say so and try the one before
                continue
            self._refuse_another_configuration(meta)
            return

    # -- save ------------------------------------------------------------------------------------------------
    def due(self, n_blocks: int) -> bool:
        return n_blocks % self.every_blocks == 0 and n_blocks != self.last_saved

    def save(self, state, history: Mapping[str, list], n_blocks: int, wall_time: float) -> str:
        """Write checkpoint ``n_blocks`` (atomically); ``state`` holds only the real members."""
        ocp = self._ocp
        hist = {k: np.stack(v) for k, v in history.items()}
        leaves = {k: np.asarray(v) for k, v in _leaf_dict(state).items()}
        step = int(np.max(np.asarray(state.step))) if getattr(state, "step", None) is not None else 0
        meta = {"format": FORMAT, "fingerprint": self.fingerprint, "description": self.description,
                "n_blocks": int(n_blocks), "step": step, "wall_time_s": float(wall_time),
                "history": {k: {"shape": list(v.shape), "dtype": v.dtype.str} for k, v in hist.items()},
                "checksums": {"leaves": {k: checksum(v) for k, v in leaves.items()},
                              "history": {k: checksum(v) for k, v in hist.items()}}}
        if int(n_blocks) in self.manager.all_steps():   # an unreadable checkpoint restore skipped: rewrite it
            self.manager.delete(int(n_blocks))
        self.manager.save(int(n_blocks), args=ocp.args.Composite(
            state=ocp.args.StandardSave({"leaves": _nonempty(leaves), "history": _nonempty(hist)}),
            meta=ocp.args.JsonSave(meta)), force=True)
        self.manager.wait_until_finished()
        self.last_saved = int(n_blocks)
        return self.path(n_blocks)

    def path(self, n_blocks: int) -> str:
        return os.path.join(self.directory, str(int(n_blocks)))

    def close(self) -> None:
        self.manager.close()


def _is_closed_loop_callback(unraisable) -> bool:
    """An "Event loop is closed" ``RuntimeError`` raised by asyncio's ``call_soon_threadsafe``: a read of Orbax's
    (tensorstore) that completes after the ``asyncio.run`` that asked for it ended — which happens to the reads a
    failed restore abandons. Nothing is lost: the restore has already failed and been reported."""
    exc, tb = unraisable.exc_value, unraisable.exc_traceback
    if not isinstance(exc, RuntimeError) or str(exc) != "Event loop is closed":
        return False
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_code.co_filename.endswith(os.path.join("asyncio", "base_events.py"))


def _quiet_closed_loop_callbacks() -> None:
    """Drop :func:`_is_closed_loop_callback` reports from ``sys.unraisablehook`` (each is a traceback of ~5 lines on
    stderr, dozens around one skipped checkpoint); every other report goes to the hook as before. Installed once."""
    hook = sys.unraisablehook
    if getattr(hook, "_crobust_quiet", False):
        return

    def quiet(unraisable):
        if not _is_closed_loop_callback(unraisable):
            hook(unraisable)

    quiet._crobust_quiet = True
    sys.unraisablehook = quiet


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def _checksum_failures(expected: Mapping | None, arrays: Mapping) -> list[str]:
    """Names of the arrays whose :func:`checksum` differs from the one saved (none to compare: a checkpoint of an
    older crobust, nothing fails)."""
    if not expected:
        return []
    return [f"{group}/{k}" for group in ("leaves", "history") for k, want in expected.get(group, {}).items()
            if k not in arrays[group] or checksum(arrays[group][k]) != want]


def check_configuration(directory, *, description: Mapping) -> None:
    """:meth:`Checkpointer.check_configuration` for ``directory`` if it holds checkpoints (nothing is created)."""
    if not os.path.isdir(directory) or not any(d.isdigit() for d in os.listdir(directory)):
        return
    ckpt = Checkpointer(directory, description=description)
    try:
        ckpt.check_configuration()
    finally:
        ckpt.close()


def every_blocks(checkpoint_every: int, eval_every: int) -> int:
    """A checkpoint interval in optimiser steps → whole blocks (rounded up); ``checkpoint_every`` must be > 0."""
    if isinstance(checkpoint_every, bool) or not isinstance(checkpoint_every, (int, np.integer)) \
            or checkpoint_every <= 0:
        raise CrobustError(f"checkpoint_every must be a positive number of steps, got {checkpoint_every!r}")
    return max(1, math.ceil(int(checkpoint_every) / int(eval_every)))


# --------------------------------------------------------------------------------------------------------------
# Interrupts

class InterruptGuard:
    """While active, SIGINT/SIGTERM only set a flag (checked between blocks); a second one raises at once."""

    SIGNALS = ("SIGINT", "SIGTERM")

    def __init__(self, enabled: bool = True, stream=sys.stderr):
        self.enabled, self.stream = enabled, stream
        self.signal: str | None = None
        self._old: dict = {}

    def _handler(self, signum, frame):
        if self.signal is not None:
            raise KeyboardInterrupt(f"second {signal.Signals(signum).name}: stopped without a checkpoint")
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal} received: finishing the current block and writing a checkpoint "
              f"(send it again to stop at once, without one)", file=self.stream, flush=True)

    def __enter__(self):
        if self.enabled and threading.current_thread() is threading.main_thread():
            for name in self.SIGNALS:
                sig = getattr(signal, name, None)
                if sig is None:
                    continue
                try:
                    self._old[sig] = signal.getsignal(sig)
                    signal.signal(sig, self._handler)
                except (ValueError, OSError):  # pragma: no cover - not the main interpreter
                    self._old.pop(sig, None)
        return self

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old if old is not None else signal.SIG_DFL)
        self._old.clear()
        return False

    def requested(self) -> bool:
        """True when a signal arrived here — or, on a multi-host run, on any host (all hosts agree)."""
        local = self.signal is not None
        if jax.process_count() > 1:
            from jax.experimental import multihost_utils
            return bool(np.any(multihost_utils.process_allgather(np.int32(local))))
        return local


__all__ = ["Checkpointer", "Restored", "check_configuration", "TrainingInterrupted", "InterruptGuard", "describe", "fingerprint",
           "every_blocks"]
