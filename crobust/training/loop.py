"""The host loop: :func:`fit` runs the compiled block until every member has stopped, diverged or reached
``max_steps``, with progress lines, checkpoints and graceful interruption; :func:`evaluate` gives clean loss and
accuracy per member."""

from __future__ import annotations

import collections
import functools
import math
import sys
import time
from typing import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import checkpoint as _checkpoint
from crobust import optim, parallel
from crobust._errors import CrobustError
from crobust.training import execution as _execution
from crobust.training.block import chunked_loss_acc, make_block_fn
from crobust.training.config import TrainConfig
from crobust.training.population import FitResult, PopulationState, init_population, member_hparams

class Progress:
    """One line per host sync (at most every ``every_s`` seconds): step, members alive, losses, ETA."""

    def __init__(self, total_steps: int, label: str = "train", stream=None, every_s: float = 2.0,
                 enabled: bool = True):
        self.total, self.label, self._stream, self.every_s, self.enabled = total_steps, label, stream, every_s, enabled
        self.t0 = time.perf_counter()
        self.last = -math.inf
        # the step and time of the first update (after a resume the step is not 0): the ETA's origin
        self.first_step, self.t0_step = None, None

    @property
    def stream(self):
        """The stream given, else ``sys.stderr`` as it is now (not as it was when crobust was imported)."""
        return sys.stderr if self._stream is None else self._stream

    def update(self, step: int, alive: int, members: int, val_loss: float, final: bool = False):
        now = time.perf_counter()
        if self.first_step is None:
            self.first_step, self.t0_step = step, now
        if not self.enabled or (not final and now - self.last < self.every_s):
            return
        self.last = now
        elapsed = now - self.t0
        span = now - self.t0_step
        rate = (step - self.first_step) / span if span > 0 else 0.0
        if not alive:
            eta = "0s"
        else:
            eta = f"{(self.total - step) / rate:.0f}s" if rate > 0 else "?"
        print(f"[{self.label}] step {step}/{self.total} | members alive {alive}/{members} | "
              f"mean val loss {val_loss:.4f} | {elapsed:.1f}s elapsed | ETA {eta}", file=self.stream, flush=True)


_BLOCK_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
BLOCK_CACHE_SIZE = 16


def _compiled_block(model, config: TrainConfig, adversary, members_per_group, layout, execution: str = "scan"):
    """The jitted block for this (model, config, adversary, member layout, shardings), built once per process;
    under ``execution='host_loop'`` the host loop of jitted steps instead (:mod:`crobust.training.execution`).

    ``fit`` calls with the same model, configuration and layout share one ``jax.jit`` object, so a second call with
    the same array shapes runs the executable compiled by the first (new member values are traced arrays). Returns
    ``(jitted_block, traces)``; ``traces[0]`` counts the traces of the shared function, i.e. its compilations.
    Up to :data:`BLOCK_CACHE_SIZE` blocks are kept (least recently used dropped first); an unhashable model or
    adversary gets a fresh, uncached block.
    """
    key = (model, config, adversary, members_per_group, layout.sharding, layout.replicated, execution)
    try:
        hit = _BLOCK_CACHE.get(key)
    except TypeError:                                    # unhashable part: no sharing
        key, hit = None, None
    if hit is not None:
        _BLOCK_CACHE.move_to_end(key)
        return hit
    traces = [0]
    if execution == "host_loop":
        built = _execution.make_host_loop_block(model, config, adversary, members_per_group=members_per_group,
                                                counter=traces)
    else:
        block = make_block_fn(model, config, adversary, members_per_group=members_per_group)

        @functools.wraps(block)
        def counted_block(*args):  # runs once per trace, i.e. once per compilation
            traces[0] += 1
            return block(*args)

        built = jax.jit(counted_block, in_shardings=(layout.sharding, layout.sharding, layout.replicated,
                                                     layout.replicated),
                        out_shardings=(layout.sharding, layout.replicated))
    if key is not None:
        _BLOCK_CACHE[key] = (built, traces)
        while len(_BLOCK_CACHE) > BLOCK_CACHE_SIZE:
            _BLOCK_CACHE.popitem(last=False)
    return built, traces


def _check_state_matches_members(state: PopulationState, hparams: dict, members: Sequence[Mapping]) -> None:
    """A given state must belong to these members: same count, and the lr / weight decay its optimiser state holds
    (the values the steps use) equal to the members' (else training would silently use the state's)."""
    if state.num_members != len(members):
        raise CrobustError(f"the state has {state.num_members} members but {len(members)} were given")
    for name, held in (("lr", optim.learning_rate(state.opt_state)),
                       ("weight_decay", optim.weight_decay(state.opt_state))):
        held, want = np.asarray(held, np.float32), np.asarray(hparams[name], np.float32)
        bad = np.flatnonzero(held != want)
        if bad.size:
            i = int(bad[0])
            raise CrobustError(f"member {i} ({members[i]}) has {name} {float(want[i]):g} but the given state was "
                               f"initialised with {float(held[i]):g}; use init_population for these members or "
                               f"crobust.optim.with_hparams to change the state")


def fit(model, data, config: TrainConfig, members: Sequence[Mapping], *, state: PopulationState | None = None,
        on_block: Callable[[PopulationState, dict], None] | None = None, progress: bool | Progress = True,
        adversary: Callable | None = None, block_fn: Callable | None = None, mesh=None,
        checkpoint_dir=None, checkpoint_every: int | None = None, checkpoint_extra: Mapping | None = None,
        members_per_group: int | None | str = "auto", offload: int | None | str = "auto") -> FitResult:
    """Train every member of a population until each has stopped, diverged or reached ``config.max_steps``.

    Args:
      model: a flax module with ``apply(params, x)`` → logits for pixel-space x in [0, 1]; or, for a model with
        mutable state such as batch norm, ``apply(variables, x, train=bool)`` (state in ``result.model_state``;
        evaluate it through :func:`crobust.training.for_evaluation`).
      data: a :class:`crobust.data.Dataset` (uint8 images (N,H,W,C), int labels).
      config: the shared :class:`TrainConfig`.
      members: a list of member dicts (see :func:`grid`).
      state: resume from this state (e.g. a checkpoint) instead of initialising.
      on_block: called after every block with the new state and that block's per-member metrics (host numpy).
      progress: print progress lines (or pass a :class:`Progress`).
      adversary: ``adversary(apply_fn, variables, x, y, key) -> x_adv``, replacing the default PGD of
        ``config.adversarial`` (:func:`make_block_fn`).
      block_fn: a pre-built jitted block function (to share one compile across calls); state and data are then
        passed to it as they are (no padding or sharding).
      mesh: the mesh whose ``'members'`` axis the population is sharded over (default: every device of every
        host, :func:`crobust.parallel.member_mesh`; one device is a mesh of one). The population is padded to a
        multiple of the device count; padding members never appear in the result (:mod:`crobust.parallel`).
      checkpoint_dir: write Orbax checkpoints of the whole state here, and resume from the newest one when it
        exists (refused with a :class:`CrobustError` if it was written by a different configuration); while
        training, SIGINT/SIGTERM finish the current block, checkpoint and raise
        :class:`crobust.checkpoint.TrainingInterrupted` (:mod:`crobust.checkpoint`).
      checkpoint_every: optimiser steps between checkpoints, rounded up to whole blocks (default: every block);
        a checkpoint is also written when training ends.
      checkpoint_extra: JSON-able entries added to the checkpoint's description (what a checkpoint must match to
        be resumed), e.g. where a stage started (:func:`crobust.study.staging.start_identity`).
      members_per_group: how members are laid out in the compiled block (:func:`make_block_fn`), or per call of
        the host loop (``config.execution``, :func:`crobust.training.execution.make_host_loop_block`); ignored when
        ``block_fn`` is given.
      offload: members per device-resident chunk with the population's state kept in host memory (each block
        copies a chunk in, steps it and copies it back; the last chunk is padded with a copy of the last member,
        whose results are dropped), for populations whose state exceeds device memory; ``None``: the whole state
        on the device; ``"auto"``: :func:`crobust.parallel.offload_chunk_for_memory` from the device's free memory
        (None on a CPU, on several devices or processes — the member axis is sharded there). Like
        ``members_per_group`` it changes where members are computed, never what: members are independent.

    Returns:
      :class:`FitResult` (after a resume: the full history and the total training wall time).
    """
    members = [dict(m) for m in members]
    hparams = member_hparams(members, config)
    if checkpoint_dir is None and checkpoint_every is not None:
        raise CrobustError("checkpoint_every needs a checkpoint_dir")
    every = None if checkpoint_dir is None else _checkpoint.every_blocks(
        config.eval_every if checkpoint_every is None else checkpoint_every, config.eval_every)
    if state is None:
        state = init_population(model, data, config, members)
    else:
        config.validate(int(data.train_labels.shape[0]))
    prog = progress if isinstance(progress, Progress) else Progress(config.max_steps, enabled=bool(progress))
    history: dict[str, list] = {}
    n_blocks, wall_before, ckpt = 0, 0.0, None
    try:
        if checkpoint_dir is not None:
            ckpt = _checkpoint.Checkpointer(checkpoint_dir, every_blocks=every,
                                            description={**_checkpoint.describe(model, data, config, members),
                                                         **(checkpoint_extra or {})},
                                            stream=prog.stream)
            restored = ckpt.restore(state)
            if restored is not None:
                state, history, n_blocks, wall_before = (restored.state, restored.history, restored.n_blocks,
                                                         restored.wall_time)
                if prog.enabled:
                    print(f"[{prog.label}] resumed from {ckpt.path(n_blocks)} (step {restored.step})",
                          file=prog.stream, flush=True)
        # after any restore: a checkpoint of another configuration is refused first, with the checkpoint's own message
        _check_state_matches_members(state, hparams, members)
        alive_now = ~(np.asarray(state.stopped) | np.asarray(state.diverged))
        start_step = int(np.max(np.asarray(state.step)))
        images = jnp.asarray(data.train_images)
        labels = jnp.asarray(data.train_labels, jnp.int32)
        n_members, traces, get = len(members), None, (lambda tree: tree)
        execution = "given" if block_fn is not None else _execution.resolve(config.execution, state.params)
        chunk = None if block_fn is not None else _offload_chunk(offload, state, config, n_members, mesh)
        if chunk is not None:
            host = jax.devices("cpu")[0]
            state, hparams = jax.device_put(state, host), jax.device_put(hparams, host)
            layout = parallel.MemberLayout(chunk, mesh)
            images, labels = layout.put_replicated(images), layout.put_replicated(labels)
            jitted, traces = _compiled_block(model, config, adversary, members_per_group, layout, execution)
            traces_before = traces[0]
            block_fn = _offloaded_block(jitted, layout, chunk, n_members, host)
        elif block_fn is None:
            layout = parallel.MemberLayout(n_members, mesh)
            state, hparams = layout.put(state), layout.put(hparams)
            images, labels = layout.put_replicated(images), layout.put_replicated(labels)
            block_fn, traces = _compiled_block(model, config, adversary, members_per_group, layout, execution)
            traces_before, get = traces[0], layout.get
        t0 = time.perf_counter()
        with _checkpoint.InterruptGuard(enabled=ckpt is not None, stream=prog.stream) as guard:
            while alive_now.any():
                state, metrics = block_fn(state, hparams, images, labels)
                metrics = {k: np.asarray(v)[:n_members] for k, v in jax.device_get(metrics).items()}
                n_blocks += 1
                for k, v in metrics.items():
                    history.setdefault(k, []).append(v)
                alive_now = metrics["alive"]
                alive = int(np.sum(alive_now))
                step = int(np.max(metrics["step"]))
                val = metrics["val_loss"][metrics["evaluated"]]
                val = val[np.isfinite(val)]                    # none without a validation split (val_ratio 0)
                prog.update(step, alive, n_members, float(np.mean(val)) if val.size else float("nan"),
                            final=alive == 0)
                if on_block is not None:
                    on_block(get(state), metrics)
                if ckpt is not None:
                    stop = guard.requested()
                    if stop or alive == 0 or ckpt.due(n_blocks):
                        path = ckpt.save(get(state), history, n_blocks, wall_before + time.perf_counter() - t0)
                    if stop:
                        message = (f"interrupted ({guard.signal or 'signal on another host'}) at step {step}: "
                                   f"checkpoint written to {path}; rerun the same command to resume")
                        print(message, file=prog.stream, flush=True)
                        raise _checkpoint.TrainingInterrupted(message, ckpt.directory, step)
            if ckpt is not None and n_blocks == 0:   # finished at its start (every member stopped): still checkpointed
                ckpt.save(get(state), history, 0, wall_before)
    finally:                       # also on a refusal or an interrupt: Orbax's threads end here, quietly
        if ckpt is not None:
            ckpt.close()
    state = get(state)
    wall = wall_before + time.perf_counter() - t0
    cache_size = getattr(block_fn, "_cache_size", None)
    compiles = (traces[0] - traces_before) if traces is not None else (
        int(cache_size()) if callable(cache_size) else -1)
    return FitResult(members=members, state=state,
                     history={k: np.stack(v) for k, v in history.items()} if history else {},
                     wall_time=wall, steps_run=int(np.max(np.asarray(state.step))) - start_step,
                     compiles=compiles, execution=execution)


def _offload_chunk(offload, state: PopulationState, config: TrainConfig, n_members: int, mesh) -> int | None:
    """The chunk size ``fit``'s ``offload`` asks for (its docstring), or None for a device-resident state."""
    layout = parallel.MemberLayout(n_members, mesh)
    several = layout.n_devices > 1 or layout.multi_process          # the member axis is sharded across them
    if offload == "auto":
        if several:
            return None
        return parallel.offload_chunk_for_memory(
            parallel.state_bytes(state) // max(n_members, 1),
            parallel.member_step_bytes(state.params, batch_size=config.batch_size,
                                       eval_batch_size=config.eval_batch_size),
            parallel.device_free_bytes(), n_members)
    if offload is None:
        return None
    if not isinstance(offload, int) or isinstance(offload, bool) or offload < 1:
        raise CrobustError(f"offload must be None, 'auto' or a positive integer, got {offload!r}")
    if several:
        raise CrobustError("offload runs on one device: with several devices or processes the member axis is "
                           "sharded across them instead")
    return None if offload >= n_members else offload


def _offloaded_block(jitted, layout, chunk: int, n_members: int, host):
    """``block(state, hparams, images, labels)`` over a host-resident state: chunks of ``chunk`` members copied to
    the device, stepped by ``jitted`` (compiled for ``chunk`` members) and copied back; metrics as numpy."""
    def block(state, hparams, images, labels):
        states, metrics = [], []
        for lo in range(0, n_members, chunk):
            keep = min(chunk, n_members - lo)
            idx = np.minimum(np.arange(lo, lo + chunk), n_members - 1)       # pad: repeat the last member
            take = lambda tree: layout.put(jax.tree.map(lambda a: a[idx], tree))
            new, m = jitted(take(state), take(hparams), images, labels)
            states.append(jax.device_put(jax.tree.map(lambda a: a[:keep], layout.get(new)), host))
            metrics.append({k: np.asarray(v)[:keep] for k, v in jax.device_get(m).items()})
        state = jax.tree.map(lambda *parts: jnp.concatenate(parts), *states)
        return state, {k: np.concatenate([m[k] for m in metrics]) for k in metrics[0]}
    return block


def evaluate(apply_fn, params, images, labels, *, batch_size: int = 2048):
    """Per-member clean (loss, accuracy) on a dataset split; params have a leading member axis (for a model with
    batch norm: ``apply_fn, params = crobust.training.for_evaluation(model, result)``, eval mode).

    ``apply_fn`` is a static argument of one cached compiled program (``model.apply``, or the
    :class:`~crobust.training.population.EvalApply` of ``for_evaluation``), so a second call with new parameters
    or data of the same shapes compiles nothing; a closure's captured values are part of that program.

    Returns two (M,) arrays: mean cross-entropy and accuracy in [0, 1].
    """
    return _evaluate_members(params, jnp.asarray(images), jnp.asarray(labels, jnp.int32), apply_fn=apply_fn,
                             batch_size=int(batch_size))


@functools.partial(jax.jit, static_argnames=("apply_fn", "batch_size"))
def _evaluate_members(params, images, labels, *, apply_fn, batch_size):
    """:func:`evaluate`'s program: one compilation per (apply_fn, shapes, batch size), the data traced."""
    idx = jnp.arange(labels.shape[0], dtype=jnp.int32)
    return jax.vmap(lambda p: chunked_loss_acc(apply_fn, p, images, labels, idx, batch_size))(params)
