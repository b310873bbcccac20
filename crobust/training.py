"""The population trainer: many members (hyper-parameters × seeds) trained in one jitted program.

Usage::

    import crobust
    data = crobust.data.load_dataset("digits")
    model = crobust.models.MLP(num_classes=10, width=64, depth=3, mean=data.mean, std=data.std)
    members = crobust.training.grid(alpha=[0.0, 1e-3, 1e-2, 1e-1], seeds=range(8))      # 32 members
    cfg = crobust.training.TrainConfig(regularizer="nuclear", projection="frobenius", max_steps=2000)
    result = crobust.training.fit(model, data, cfg, members)
    result.params        # stacked final parameters, leading axis = 32 members
    result.best_params   # each member's best-validation parameters
    result.history       # per-block arrays (n_blocks, 32): step, train_loss, val_loss, val_acc, alive

Design (DESIGN.md, "a population, not a seed"):

- **Members.** A member is a dict of hyper-parameters (``alpha``, optionally ``lr``, ``weight_decay``) plus a
  ``seed``. All members share array shapes and are stacked on a leading axis; their hyper-parameters are traced
  arrays on that axis, so one compiled program serves the whole grid.
- **Keys.** Every random stream of a member derives from its own seed, never from its position or the device
  layout: ``key = jax.random.key(seed)``; init = fold_in(key, 0), data order = fold_in(key, 1), validation split =
  fold_in(key, 2), attack noise = fold_in(key, 3). Members with the same seed and different α therefore share
  initial weights, data order and validation split (common random numbers: differences across α are due to α).
  Training a member alone gives the same result as training it inside a population (tested, to float tolerance).
- **Data.** The whole dataset is resident on the device as uint8 and scaled to [0, 1] inside the step. Each member
  has its own validation split (⌊val_ratio·N⌋ points, as the reference's ``random_split``) and its own order:
  epoch e is the keyed permutation π_e = ``crobust.shuffle.index_shuffle(fold_in(data_key, e), ·, n_train)`` of
  its training indices (a Feistel cipher with cycle walking: batch positions are computed directly, no sort),
  consumed in ``n_train // batch_size`` full batches (the remainder of an epoch is dropped so that shapes are
  static; every point is still visited because each epoch reshuffles).
- **Blocks.** ``eval_every`` steps run inside one ``lax.scan`` per member, then the validation loss is computed,
  early stopping is updated and the host receives a few numbers per member (progress, history). The members are
  vmapped (accelerators, sharded populations) or, on one CPU device, stepped in small groups one after another so
  that each member's working set stays in cache (``members_per_group`` in :func:`make_block_fn`).
- **Early stopping** (REFERENCE_CODE.md §4, ``--val_criterion loss --val_keep_best_model``): at each block end a
  member with ``step ≥ min_steps`` whose validation loss is strictly below its best so far stores its parameters
  as best (``jnp.where``, no control flow); it stops when ``step − best_step ≥ patience``. A stopped member is
  frozen (its parameters and optimiser state no longer change) while the others continue. The program ends when
  every member has stopped, diverged or reached ``max_steps``.
- **Divergence.** A step whose loss is not finite is not applied, and neither is any later step of that block;
  at the end of the block a member that met a non-finite loss or ended with non-finite parameters is put back to
  its state at the start of the block, marked ``diverged`` and frozen. Its best parameters stay as they were.
  (Checking the parameters once per block rather than after every step saves a pass over every member's
  parameters per step; with ``eval_every=1`` the two rules are the same.)
- **Optimisers.** ``adamw`` is torch's AdamW (β 0.9/0.999, ε 1e-8, decoupled decay on every parameter, as the
  reference's ``--lr_algorithm adam``); ``sgd`` is torch SGD with momentum and coupled L2 decay. Both are
  :mod:`crobust.optim`: the update rules written as one maskable elementwise pass, lr and weight decay stored
  per member in the optimiser state (traced values).
- **Loss** = mean cross-entropy + regulariser(params, α) (:mod:`crobust.regularizers`); after each optimiser step
  the optional projection (``frobenius``: every hidden layer back to its initial Frobenius norm) is applied.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import math
import sys
import time
from typing import Any, Callable, Iterable, Mapping, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import optax

from crobust import checkpoint as _checkpoint
from crobust import optim, parallel, regularizers
from crobust._errors import CrobustError, check_choice
from crobust.shuffle import index_shuffle

OPTIMIZERS = optim.OPTIMIZERS
HPARAM_NAMES = ("alpha", "lr", "weight_decay")


@dataclasses.dataclass(frozen=True)
class AdversarialTraining:
    """PGD adversarial training as in the reference code's README (REFERENCE_CODE.md §5).

    Each step, the first ⌊ratio·B⌋ points of a random permutation of the batch are replaced by PGD adversarial
    examples (``n_iter`` steps of size ``step_size`` in an ``norm`` ball of radius ``eps``, one random start,
    labels = the model's clean predictions when ``labels='predicted'``, clipped to [0,1] unless ``clip=False``);
    the step is then taken on the mixed batch with the true labels.
    """

    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    n_iter: int = 10
    ratio: float = 0.5
    labels: str = "predicted"
    clip: bool = False


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything about training that is shared by all members of a population.

    Defaults follow the reference FCN recipe (AdamW 1e-3, wd 0.01, 10 % validation, selection on validation loss),
    scaled down; the study presets set their own values.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 1e-2
    momentum: float = 0.9
    batch_size: int = 128
    max_steps: int = 2000
    eval_every: int = 100
    patience: int | None = 500
    min_steps: int = 0
    val_ratio: float = 0.1
    regularizer: str = "none"
    projection: str = "none"
    adversarial: AdversarialTraining | None = None
    eval_batch_size: int = 2048

    def validate(self, n_train_total: int) -> None:
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("regularizer", self.regularizer, tuple(regularizers.PENALTIES))
        check_choice("projection", self.projection, regularizers.PROJECTIONS)
        for name in ("batch_size", "max_steps", "eval_every", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise CrobustError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.val_ratio < 1.0:
            raise CrobustError(f"val_ratio must be in [0, 1), got {self.val_ratio}")
        n_val = int(math.floor(self.val_ratio * n_train_total))
        if n_val == 0 and self.patience is not None:
            raise CrobustError("early stopping (patience) needs a validation split: set val_ratio > 0 or patience=None")
        if self.batch_size > n_train_total - n_val:
            raise CrobustError(f"batch_size {self.batch_size} is larger than the training split "
                               f"({n_train_total - n_val} points after holding out {n_val} for validation)")
        if self.patience is not None and self.patience < 0:
            raise CrobustError(f"patience must be >= 0 or None, got {self.patience}")
        if self.lr <= 0:
            raise CrobustError(f"lr must be > 0, got {self.lr}")


# --------------------------------------------------------------------------------------------------------------
# Members

def grid(seeds: Iterable[int] = (0,), **axes: Sequence[float]) -> list[dict]:
    """The Cartesian product of hyper-parameter values × seeds, seeds varying fastest.

    ``grid(alpha=[0, 0.1], seeds=range(3))`` → 6 members ``{'alpha': 0, 'seed': 0}``, … ``{'alpha': 0.1, 'seed': 2}``.
    """
    for name in axes:
        check_choice("hyper-parameter", name, HPARAM_NAMES)
    names = list(axes)
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise CrobustError("seeds must not be empty")
    members = []
    for values in itertools.product(*(axes[n] for n in names)):
        for seed in seeds:
            members.append({**dict(zip(names, (float(v) for v in values))), "seed": seed})
    return members


def _member_hparams(members: Sequence[Mapping], config: TrainConfig) -> dict:
    """Stack the members' hyper-parameters into traced arrays (M,), filling defaults from ``config``."""
    if not members:
        raise CrobustError("a population needs at least one member")
    defaults = {"alpha": 0.0, "lr": config.lr, "weight_decay": config.weight_decay}
    out = {k: [] for k in defaults}
    for m in members:
        unknown = set(m) - set(defaults) - {"seed"}
        if unknown:
            raise CrobustError(f"unknown member key(s) {sorted(unknown)}; valid: {', '.join(HPARAM_NAMES)}, seed")
        for k, d in defaults.items():
            out[k].append(float(m.get(k, d)))
    if min(out["alpha"]) < 0:
        raise CrobustError(f"alpha must be >= 0, got {min(out['alpha'])}")
    if min(out["lr"]) <= 0:
        raise CrobustError(f"lr must be > 0, got {min(out['lr'])}")
    if min(out["weight_decay"]) < 0:
        raise CrobustError(f"weight_decay must be >= 0, got {min(out['weight_decay'])}")
    return {k: jnp.asarray(v, jnp.float32) for k, v in out.items()}


def member_keys(members: Sequence[Mapping]) -> jax.Array:
    """One typed PRNG key per member, ``jax.random.key(seed)``."""
    return jax.vmap(jax.random.key)(jnp.asarray([int(m.get("seed", 0)) for m in members], jnp.uint32))


# --------------------------------------------------------------------------------------------------------------
# State

@flax.struct.dataclass
class PopulationState:
    """Everything that determines the continuation of training, stacked on a leading member axis (M, ...).

    A checkpoint of this pytree (plus the config) is enough to resume bit-for-bit: the data position is ``step``
    and every random stream is derived from ``key`` and ``step``.
    """

    params: Any
    opt_state: Any
    best_params: Any
    ref_norms: Any          # {hidden layer: ‖W₀‖_F} for the Frobenius projection
    key: jax.Array          # per-member base key (typed)
    train_idx: jax.Array    # (M, n_train) int32: indices of the member's training split
    val_idx: jax.Array      # (M, n_val) int32: indices of its validation split
    step: jax.Array         # (M,) int32: optimiser steps taken
    best_val: jax.Array     # (M,) float32: best validation loss (inf until the first eligible evaluation)
    best_step: jax.Array    # (M,) int32: step of the best evaluation (-1 if none)
    stopped: jax.Array      # (M,) bool: stopped by early stopping or max_steps
    diverged: jax.Array     # (M,) bool: a non-finite loss or parameter was met

    @property
    def num_members(self) -> int:
        return int(self.step.shape[0])


@dataclasses.dataclass
class FitResult:
    """What :func:`fit` returns. Arrays have a leading member axis M; ``history`` arrays are (n_blocks, M)."""

    members: list[dict]
    state: PopulationState
    history: dict[str, np.ndarray]
    wall_time: float
    steps_run: int
    compiles: int

    @property
    def params(self):
        return self.state.params

    @property
    def best_params(self):
        """Best-validation parameters; a member that never had an eligible evaluation keeps its final ones."""
        has_best = self.state.best_step >= 0
        return jax.tree.map(lambda b, p: jnp.where(_bcast(has_best, b), b, p), self.state.best_params,
                            self.state.params)


def _bcast(mask, like):
    return mask.reshape(mask.shape + (1,) * (like.ndim - mask.ndim))


def _where(mask, a, b):
    """Per-member select on pytrees with a leading member axis ... or a scalar mask inside vmap."""
    return jax.tree.map(lambda x, y: jnp.where(_bcast(mask, x), x, y), a, b)


def split_indices(key, n: int, val_ratio: float):
    """(train_idx, val_idx): a random split of range(n) with ⌊val_ratio·n⌋ validation points (vmap-able)."""
    n_val = int(math.floor(val_ratio * n))
    perm = jax.random.permutation(key, n).astype(jnp.int32)
    return perm[n_val:], perm[:n_val]


def init_population(model, data, config: TrainConfig, members: Sequence[Mapping]) -> PopulationState:
    """Initialise every member (vmap over member keys): parameters, optimiser state, splits, bookkeeping."""
    n_total = int(data.train_labels.shape[0])
    config.validate(n_total)
    hp = _member_hparams(members, config)
    keys = member_keys(members)
    x0 = jnp.zeros((1,) + tuple(data.train_images.shape[1:]), jnp.float32)

    def one(key, lr, wd):
        params = model.init(jax.random.fold_in(key, 0), x0)
        opt_state = optim.init(config.optimizer, params, lr, wd)
        train_idx, val_idx = split_indices(jax.random.fold_in(key, 2), n_total, config.val_ratio)
        return params, opt_state, train_idx, val_idx

    # lax.map, not vmap: the same values, and XLA compiles flax's initialisers for one member about twice as fast
    # (an init is run once; its compile was most of its cost: 3.2 s vs 1.5 s for a 64-wide MLP on the CPU).
    params, opt_state, train_idx, val_idx = jax.jit(lambda k, lr, wd: jax.lax.map(lambda a: one(*a), (k, lr, wd)))(
        keys, hp["lr"], hp["weight_decay"])
    m = len(members)
    return PopulationState(
        params=params, opt_state=opt_state, best_params=params,
        ref_norms=jax.vmap(regularizers.hidden_frobenius_norms)(params), key=keys,
        train_idx=train_idx, val_idx=val_idx,
        step=jnp.zeros((m,), jnp.int32), best_val=jnp.full((m,), jnp.inf, jnp.float32),
        best_step=jnp.full((m,), -1, jnp.int32), stopped=jnp.zeros((m,), bool), diverged=jnp.zeros((m,), bool))


# --------------------------------------------------------------------------------------------------------------
# The compiled block

def to_unit(images):
    """uint8 (or float in [0,255]) images → float32 in [0, 1]."""
    return jnp.asarray(images, jnp.float32) / 255.0


def cross_entropy(logits, labels):
    """Mean softmax cross-entropy, −(1/N) Σ_n log softmax(logits_n)[y_n]."""
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


def _block_batch_indices(key, step0, train_idx, batch_size: int, block: int):
    """Dataset indices (block, B) of the batches for steps step0 … step0+block−1 of one member.

    Batch s is ``train_idx[π_e(p·B + j)]``, j < B, with e, p = divmod(step0+s, S), S = n_train // B and π_e the
    keyed permutation :func:`crobust.shuffle.index_shuffle` of [0, n_train) under ``fold_in(key, e)``: each
    position is computed directly, no epoch is materialised or sorted.
    """
    n_train = train_idx.shape[0]
    spe = n_train // batch_size
    steps = step0 + jnp.arange(block)
    epoch, pos = steps // spe, steps % spe
    positions = pos[:, None] * batch_size + jnp.arange(batch_size)[None, :]
    keys = jax.vmap(lambda e: jax.random.fold_in(key, e))(epoch)
    return train_idx[jax.vmap(lambda k, p: index_shuffle(k, p, n_train))(keys, positions)]


def _chunked_loss_acc(apply_fn, params, images, labels, idx, chunk: int):
    """Mean cross-entropy and accuracy of ``params`` on images[idx], evaluated in chunks of ``chunk`` points."""
    n = idx.shape[0]
    chunk = min(chunk, n)
    n_chunks = -(-n // chunk)
    pad = n_chunks * chunk - n
    idx_p = jnp.concatenate([idx, jnp.zeros((pad,), idx.dtype)]).reshape(n_chunks, chunk)
    w = jnp.concatenate([jnp.ones((n,)), jnp.zeros((pad,))]).reshape(n_chunks, chunk)

    def body(carry, inp):
        ids, wt = inp
        logits = apply_fn(params, to_unit(images[ids]))
        ce = optax.softmax_cross_entropy_with_integer_labels(logits, labels[ids])
        correct = (jnp.argmax(logits, -1) == labels[ids]).astype(jnp.float32)
        return (carry[0] + jnp.sum(ce * wt), carry[1] + jnp.sum(correct * wt)), None

    (loss_sum, correct_sum), _ = jax.lax.scan(body, (0.0, 0.0), (idx_p, w))
    return loss_sum / n, correct_sum / n


MEMBER_CACHE_BUDGET_BYTES = 512 * 1024


def auto_members_per_group(params) -> int | None:
    """How many members a compiled block steps together (see :func:`make_block_fn`); ``params`` stacked (M, ...).

    On accelerators, or when there are several devices (the member axis is sharded): ``None``, every member in one
    vmapped program. On a single CPU device: G = ⌊budget / (16 · P)⌋ clipped to [1, M], with P the parameters per
    member and 16 · P the bytes of its parameters, gradient and two moments (float32), budget
    :data:`MEMBER_CACHE_BUDGET_BYTES` — a group's optimiser working set then stays in the CPU's cache. Measured
    (``benchmarks/bench_training.py``, 2-core Xeon): 784→400→10 × 32 members 316 member-steps/s all vmapped vs
    360 one at a time; 64→64×2→10, 8,020 at G = 4 vs 7,280 all vmapped.
    """
    if not parallel.loops_over_members():
        return None
    leaves = jax.tree.leaves(params)
    per_member = sum(int(np.prod(x.shape[1:])) for x in leaves)
    return int(max(1, min(parallel.leading_size(params), MEMBER_CACHE_BUDGET_BYTES // max(16 * per_member, 1))))


def make_block_fn(model, config: TrainConfig, adversary: Callable | None = None, *,
                  members_per_group: int | None | str = "auto"):
    """Build ``block(state, hparams, images, labels) -> (state, metrics)``: ``eval_every`` steps for every member.

    ``adversary(apply_fn, params, x, y, key) -> x_adv`` is used for adversarial training when
    ``config.adversarial`` is set (default: :func:`crobust.attacks.pgd` with the config's settings).

    ``members_per_group`` is how the members are laid out in the program, never what they compute: ``None``
    vmaps every member (one wide program: accelerators, sharded populations); an integer G runs groups of G
    vmapped members one group after another (``lax.map``): on a CPU a member's parameters and optimiser state then
    stay in cache through its step, and with G = 1 a stopped or diverged member's block is skipped outright
    (``lax.cond``). ``"auto"``: :func:`auto_members_per_group`, decided when the block is traced. Members are
    independent, so every layout gives the same results up to float rounding of the batched matmuls.
    """
    check_choice("optimizer", config.optimizer, optim.OPTIMIZERS)
    if not (members_per_group is None or members_per_group == "auto"
            or (isinstance(members_per_group, int) and members_per_group >= 1)):
        raise CrobustError(f"members_per_group must be None, 'auto' or a positive integer, got {members_per_group!r}")
    penalty = regularizers.get_penalty(config.regularizer)
    apply_fn = model.apply
    block = config.eval_every
    at = config.adversarial
    if at is not None and adversary is None:
        adversary = _default_adversary(at)

    def member_block(state_m, hp_m, images, labels):
        (params0, opt0, best_params, ref_norms, key, train_idx, val_idx, step0, best_val, best_step,
         stopped, diverged) = state_m
        frozen = stopped | diverged

        def train(params, opt_state):
            batches = _block_batch_indices(jax.random.fold_in(key, 1), step0, train_idx, config.batch_size, block)

            def one_step(carry, ids):
                params, opt_state, step, bad, loss_sum, n_active = carry
                x, y = to_unit(images[ids]), labels[ids]
                if at is not None:
                    x = _mix_adversarial(adversary, apply_fn, params, x, y, jax.random.fold_in(
                        jax.random.fold_in(key, 3), step), at)

                def loss_fn(p):
                    return cross_entropy(apply_fn(p, x), y) + penalty(p, hp_m["alpha"])

                loss, grads = jax.value_and_grad(loss_fn)(params)
                finite = jnp.isfinite(loss)
                ok = (~bad) & (step < config.max_steps) & finite
                new_params, opt_state = optim.step(config.optimizer, params, grads, opt_state, ok,
                                                   momentum=config.momentum)
                if config.projection == "frobenius":
                    new_params = _where(ok, regularizers.frobenius_projection(new_params, ref_norms), params)
                bad = bad | ((step < config.max_steps) & ~finite)
                return (new_params, opt_state, step + ok.astype(jnp.int32), bad,
                        loss_sum + jnp.where(ok, loss, 0.0), n_active + ok.astype(jnp.int32)), None

            init = (params, opt_state, step0, jnp.bool_(False), jnp.float32(0.0), jnp.int32(0))
            (params, opt_state, step, bad, loss_sum, n_active), _ = jax.lax.scan(one_step, init, batches)
            # One finiteness check per block: a member whose loss or parameters stopped being finite goes back to
            # where it started the block, and is frozen from then on (below).
            bad = bad | ~jnp.all(jnp.asarray([jnp.all(jnp.isfinite(x)) for x in jax.tree.leaves(params)]))
            params, opt_state = _where(bad, params0, params), _where(bad, opt0, opt_state)
            return (params, opt_state, jnp.where(bad, step0, step), bad, jnp.where(bad, 0.0, loss_sum),
                    jnp.where(bad, 0, n_active))

        def skip(params, opt_state):
            return params, opt_state, step0, jnp.bool_(False), jnp.float32(0.0), jnp.int32(0)

        params, opt_state, new_step, bad, loss_sum, n_active = jax.lax.cond(frozen, skip, train, params0, opt0)
        diverged = diverged | bad

        # Validation and early stopping (REFERENCE_CODE.md §4).
        if val_idx.shape[0] > 0:
            val_loss, val_acc = _chunked_loss_acc(apply_fn, params, images, labels, val_idx, config.eval_batch_size)
        else:
            val_loss, val_acc = jnp.float32(jnp.nan), jnp.float32(jnp.nan)
        evaluated = n_active > 0
        eligible = evaluated & (new_step >= config.min_steps) & ~diverged
        improved = eligible & (val_loss < best_val)
        best_val = jnp.where(improved, val_loss, best_val)
        best_step = jnp.where(improved, new_step, best_step)
        best_params = _where(improved, params, best_params)
        stop = new_step >= config.max_steps
        if config.patience is not None:
            stop = stop | ((best_step >= 0) & (new_step - best_step >= config.patience))
        stopped = stopped | stop
        metrics = {"step": new_step, "train_loss": loss_sum / jnp.maximum(n_active, 1), "val_loss": val_loss,
                   "val_acc": val_acc, "evaluated": evaluated, "alive": ~(stopped | diverged)}
        new_state = (params, opt_state, best_params, ref_norms, key, train_idx, val_idx, new_step, best_val,
                     best_step, stopped, diverged)
        return new_state, metrics

    def block_fn(state: PopulationState, hparams, images, labels):
        flat = (state.params, state.opt_state, state.best_params, state.ref_norms, state.key, state.train_idx,
                state.val_idx, state.step, state.best_val, state.best_step, state.stopped, state.diverged)
        group = auto_members_per_group(state.params) if members_per_group == "auto" else members_per_group
        new, metrics = parallel.map_members(lambda f, h: member_block(f, h, images, labels), flat, hparams,
                                            group=group)
        return PopulationState(*new), metrics

    return block_fn


def _default_adversary(at: AdversarialTraining):
    from crobust import attacks  # imported lazily: attacks are only needed for adversarial training

    def adversary(apply_fn, params, x, y, key):
        return attacks.pgd(lambda z: apply_fn(params, z), x, y, key, eps=at.eps, norm=at.norm,
                           n_iter=at.n_iter, step_size=at.step_size, n_restarts=1, keep="max_loss",
                           labels=at.labels, clip=at.clip)

    return adversary


def _mix_adversarial(adversary, apply_fn, params, x, y, key, at: AdversarialTraining):
    """Replace the first ⌊ratio·B⌋ points of a random permutation of the batch by adversarial examples."""
    b = x.shape[0]
    n_adv = int(math.floor(at.ratio * b))
    if n_adv == 0:
        return x
    k_perm, k_att = jax.random.split(key)
    sel = jax.random.permutation(k_perm, b)[:n_adv]
    x_adv = adversary(apply_fn, jax.lax.stop_gradient(params), x[sel], y[sel], k_att)
    return x.at[sel].set(jax.lax.stop_gradient(x_adv))


# --------------------------------------------------------------------------------------------------------------
# The host loop

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


def _check_state_matches_members(state: PopulationState, hparams: dict, members: Sequence[Mapping]) -> None:
    """A given state must belong to these members: same count, and the lr / weight decay its optimiser state holds
    (the values the steps use) equal to the members' (else training would silently use the state's)."""
    if state.num_members != len(members):
        raise CrobustError(f"the state has {state.num_members} members but {len(members)} were given")
    for name, held in (("lr", state.opt_state.lr), ("weight_decay", state.opt_state.weight_decay)):
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
        checkpoint_dir=None, checkpoint_every: int | None = None,
        members_per_group: int | None | str = "auto") -> FitResult:
    """Train every member of a population until each has stopped, diverged or reached ``config.max_steps``.

    Args:
      model: a flax module with ``apply(params, x)`` → logits for pixel-space x in [0, 1].
      data: a :class:`crobust.data.Dataset` (uint8 images (N,H,W,C), int labels).
      config: the shared :class:`TrainConfig`.
      members: a list of member dicts (see :func:`grid`).
      state: resume from this state (e.g. a checkpoint) instead of initialising.
      on_block: called after every block with the new state and that block's per-member metrics (host numpy).
      progress: print progress lines (or pass a :class:`Progress`).
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
      members_per_group: how members are laid out in the compiled block (:func:`make_block_fn`); ignored when
        ``block_fn`` is given.

    Returns:
      :class:`FitResult` (after a resume: the full history and the total training wall time).
    """
    members = [dict(m) for m in members]
    hparams = _member_hparams(members, config)
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
    if checkpoint_dir is not None:
        ckpt = _checkpoint.Checkpointer(checkpoint_dir, every_blocks=every,
                                        description=_checkpoint.describe(model, data, config, members))
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
    if block_fn is None:
        layout = parallel.MemberLayout(n_members, mesh)
        state, hparams = layout.put(state), layout.put(hparams)
        images, labels = layout.put_replicated(images), layout.put_replicated(labels)
        block = make_block_fn(model, config, adversary, members_per_group=members_per_group)
        traces, get = [0], layout.get

        @functools.wraps(block)
        def counted_block(*args):  # runs once per trace, i.e. once per compilation
            traces[0] += 1
            return block(*args)

        block_fn = jax.jit(counted_block, in_shardings=(layout.sharding, layout.sharding, layout.replicated,
                                                        layout.replicated),
                           out_shardings=(layout.sharding, layout.replicated))
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
            prog.update(step, alive, n_members, float(np.nanmean(val)) if val.size else float("nan"),
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
    if ckpt is not None:
        ckpt.close()
    state = get(state)
    wall = wall_before + time.perf_counter() - t0
    cache_size = getattr(block_fn, "_cache_size", None)
    compiles = traces[0] if traces is not None else (int(cache_size()) if callable(cache_size) else -1)
    return FitResult(members=members, state=state,
                     history={k: np.stack(v) for k, v in history.items()} if history else {},
                     wall_time=wall, steps_run=int(np.max(np.asarray(state.step))) - start_step,
                     compiles=compiles)


def evaluate(apply_fn, params, images, labels, *, batch_size: int = 2048):
    """Per-member clean (loss, accuracy) on a dataset split; params have a leading member axis.

    Returns two (M,) arrays: mean cross-entropy and accuracy in [0, 1].
    """
    images = jnp.asarray(images)
    labels = jnp.asarray(labels, jnp.int32)
    idx = jnp.arange(labels.shape[0], dtype=jnp.int32)
    fn = jax.jit(jax.vmap(lambda p: _chunked_loss_acc(apply_fn, p, images, labels, idx, batch_size)))
    return fn(params)
