"""Training configuration shared by every member of a population: :class:`TrainConfig` and
:class:`AdversarialTraining` (frozen dataclasses), and :data:`HPARAMS`, the registry of the numeric settings a
member may set for itself (a member axis: traced per member, one compiled program for the whole grid)."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Callable, ClassVar

from crobust import optim, precision, regularizers
from crobust._errors import CrobustError, check_choice

OPTIMIZERS = optim.OPTIMIZERS
AUGMENTATIONS = ("none", "crop_flip", "full")
LR_SCHEDULES = ("constant", "multistep", "cosine")
AT_METHODS = ("pgd", "trades")
AT_NORMS = ("linf", "l2")
EXECUTIONS = ("auto", "scan", "host_loop")


@dataclasses.dataclass(frozen=True)
class AdversarialTraining:
    """Adversarial training inside the jitted population step (docs/reference-code.md §5; Zhang et al. 2019).

    ``method='pgd'`` (the reference): each step, the first ⌊ratio·B⌋ points of a random permutation of the batch
    are replaced by PGD adversarial examples (``n_iter`` steps of size ``step_size`` in an ``norm`` ball of radius
    ``eps``, one random start, labels = the model's clean predictions when ``labels='predicted'``, clipped to
    [0,1] unless ``clip=False``); the step is then taken on the mixed batch with the true labels.

    ``method='trades'`` (Zhang et al. 2019, TRADES): every point x of the batch gets x' = the PGD maximiser of
    KL(f(x) ‖ f(x')) over the ball (start x + 0.001·N(0, I), ``n_iter`` steps of ``step_size``, as the authors'
    code), and the loss is CE(f(x), y) + β·(1/B) Σ_n KL(softmax f(x_n) ‖ softmax f(x'_n)); ``ratio`` and
    ``labels`` do not apply.

    While attacking, the model is in eval mode (batch norm uses its running statistics and does not update them);
    the step itself is in train mode. ``eps``, ``step_size``, ``ratio`` and ``beta`` are the defaults of the member
    axes ``at_eps``, ``at_step_size``, ``at_ratio`` and ``trades_beta`` (:data:`HPARAMS`); ``ratio`` is also the
    largest ratio a member may use (it fixes how many points are attacked, a static shape).
    """

    norm: str = "linf"
    eps: float = 8 / 255
    step_size: float = 2 / 255
    n_iter: int = 10
    ratio: float = 0.5
    labels: str = "predicted"
    clip: bool = False
    method: str = "pgd"
    beta: float = 6.0

    def validate(self) -> None:
        check_choice("adversarial norm", self.norm, AT_NORMS)
        check_choice("adversarial method", self.method, AT_METHODS)
        check_choice("adversarial labels", self.labels, ("true", "predicted"))
        if isinstance(self.n_iter, bool) or not isinstance(self.n_iter, int) or self.n_iter < 1:
            raise CrobustError(f"adversarial n_iter must be a positive integer, got {self.n_iter!r}")
        if not 0.0 < self.ratio <= 1.0:
            raise CrobustError(f"adversarial ratio must be in (0, 1], got {self.ratio}")
        if not self.eps >= 0 or not self.step_size > 0 or not self.beta >= 0:
            raise CrobustError(f"adversarial eps must be >= 0, step_size > 0 and beta >= 0, got eps {self.eps}, "
                               f"step_size {self.step_size}, beta {self.beta}")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything about training that is shared by all members of a population.

    Defaults follow the reference FCN recipe (AdamW 1e-3, wd 0.01, 10 % validation, selection on validation loss),
    scaled down; the study presets set their own values.

    ``matmul_precision`` (:mod:`crobust.precision`): the precision of the training step's matrix products —
    ``'float32'`` (default; full fp32 on every backend — the reference code sets torch's ``'high'``, which lets
    Ampere and later GPUs use TF32, docs/reference-code.md §4), ``'tf32'`` or ``'bf16'`` (opt-in speed settings on
    GPUs/TPUs; a CPU computes fp32 regardless). Metrics, bounds and the nuclear norm's value run at full float32
    whatever it says.
    ``nuclear_method``: how the nuclear-norm penalty gets U Vᵀ (:func:`crobust.regularizers.nuclear_norm`:
    ``'auto'`` = ``'polar'``, or ``'svd'``).

    ``augment``: ``'none'``, ``'crop_flip'`` (random 4-pixel-padded crop + horizontal flip) or ``'full'``
    (crop_flip, then colour jitter and a random affine map, the reference's ``--aug full``);
    :mod:`crobust.training.augment`.

    ``lr_schedule`` multiplies every member's learning rate by a factor of the epoch e = ⌊step / S⌋, S = n_train
    // batch_size (the trainer's epochs; stepped once per epoch, as the reference steps torch's schedulers):
    ``'constant'`` 1; ``'multistep'`` γ^(number of ``lr_milestones`` ≤ e) (MultiStepLR); ``'cosine'``
    ρ + (1 − ρ)·(1 + cos(π·min(e, T)/T))/2 with T = ``cosine_epochs`` (default: the epochs of ``max_steps``) and
    ρ = ``cosine_min_ratio`` = η_min / η (torch's CosineAnnealingLR up to T; torch's is periodic beyond T, this
    one stays at η_min). Built from optax's schedules (:func:`crobust.training.block.lr_factor`).

    Penalties: the loss is cross-entropy + Σ_t s_t·R_t(θ) over the terms of :meth:`penalty_terms`. ``regularizer``
    is the first term, its strength the member axis ``alpha``; each name in ``penalties`` adds a term R_t (a
    penalty of :data:`crobust.regularizers.PENALTIES`) whose strength is the member axis of that same name, e.g.
    ``regularizer='group_lasso', penalties=('beta_control',)`` with members ``{'alpha': 0.1, 'beta_control':
    0.01}`` trains on CE + 0.1·R_row + 0.01·R_β. Without ``penalties`` the loss is CE + α·R as before.

    ``trainable``: a regular expression searched in each parameter's path (``'head/'``, ``'^(?!encoder/)'``;
    paths as :func:`crobust.training.update.leaf_paths`), or None (every parameter trains). The parameters it does
    not match are frozen: they do not move at all — no gradient step, no weight decay, no optimiser state — and
    neither do the batch-norm statistics of frozen layers (the model runs in eval mode when every statistic is
    frozen); :mod:`crobust.training.update`.

    ``execution``: how members are executed on the backend, never what they compute (:mod:`crobust.training.execution`):
    ``'scan'`` (a block's steps in one compiled loop), ``'host_loop'`` (a host loop of compiled single steps, member
    after member) or ``'auto'`` (host_loop for convolutional models on a single CPU device, scan otherwise). Not
    part of a run's identity (:data:`NOT_IDENTITY`): a checkpoint resumes under another strategy.
    """

    #: fields that choose how members are computed, never what: left out of a run's identity (checkpoints, run folders)
    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("execution",)

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
    penalties: tuple[str, ...] = ()
    projection: str = "none"
    adversarial: AdversarialTraining | None = None
    eval_batch_size: int = 2048
    matmul_precision: str = precision.DEFAULT_TRAINING_PRECISION
    nuclear_method: str = "auto"
    augment: str = "none"
    lr_schedule: str = "constant"
    lr_milestones: tuple[int, ...] = (100, 150)
    lr_gamma: float = 0.1
    cosine_epochs: int | None = None
    cosine_min_ratio: float = 0.0
    trainable: str | None = None
    execution: str = "auto"

    def validate(self, n_train_total: int | None = None) -> None:
        """Check every field; with ``n_train_total`` (the training set's size) also the split and batch size."""
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("regularizer", self.regularizer, tuple(regularizers.PENALTIES))
        for name in self.penalties:
            check_choice("penalties entry", name, PENALTY_AXES)
        if len(set(self.penalties)) != len(self.penalties) or self.regularizer in self.penalties:
            raise CrobustError(f"penalties {self.penalties!r} must name each penalty once, and not the regularizer "
                               f"{self.regularizer!r} (its strength is alpha)")
        check_choice("projection", self.projection, regularizers.PROJECTIONS)
        precision.check_training_precision(self.matmul_precision)
        check_choice("nuclear_method", self.nuclear_method, regularizers.NUCLEAR_METHODS)
        check_choice("augment", self.augment, AUGMENTATIONS)
        check_choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check_choice("execution", self.execution, EXECUTIONS)
        for name in ("batch_size", "max_steps", "eval_every", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise CrobustError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.val_ratio < 1.0:
            raise CrobustError(f"val_ratio must be in [0, 1), got {self.val_ratio}")
        if self.patience is not None and self.patience < 0:
            raise CrobustError(f"patience must be >= 0 or None, got {self.patience}")
        for name in ("lr", "weight_decay", "momentum", "val_ratio", "lr_gamma", "cosine_min_ratio"):
            if not math.isfinite(getattr(self, name)):
                raise CrobustError(f"{name} must be a finite number, got {getattr(self, name)}")
        if self.lr <= 0:
            raise CrobustError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0:
            raise CrobustError(f"weight_decay must be >= 0, got {self.weight_decay}")
        if any(int(m) != m or m <= 0 for m in self.lr_milestones) or list(self.lr_milestones) != sorted(
                self.lr_milestones):
            raise CrobustError(f"lr_milestones must be increasing positive epochs, got {self.lr_milestones!r}")
        if not 0.0 < self.lr_gamma <= 1.0:
            raise CrobustError(f"lr_gamma must be in (0, 1], got {self.lr_gamma}")
        if self.cosine_epochs is not None and self.cosine_epochs <= 0:
            raise CrobustError(f"cosine_epochs must be a positive number of epochs or None, got {self.cosine_epochs}")
        if not 0.0 <= self.cosine_min_ratio <= 1.0:
            raise CrobustError(f"cosine_min_ratio must be in [0, 1], got {self.cosine_min_ratio}")
        if self.adversarial is not None:
            self.adversarial.validate()
        if self.trainable is not None:
            try:
                re.compile(self.trainable)
            except re.error as e:
                raise CrobustError(f"trainable must be a regular expression, got {self.trainable!r}: {e}") from None
        if n_train_total is None:
            return
        n_val = int(math.floor(self.val_ratio * n_train_total))
        if n_val == 0 and self.patience is not None:
            raise CrobustError("early stopping (patience) needs a validation split: set val_ratio > 0 or patience=None")
        if self.batch_size > n_train_total - n_val:
            raise CrobustError(f"batch_size {self.batch_size} is larger than the training split "
                               f"({n_train_total - n_val} points after holding out {n_val} for validation)")

    def penalty_terms(self) -> tuple[tuple[str, str], ...]:
        """The loss's penalty terms as (penalty name, member axis of its strength): ``(regularizer, 'alpha')``
        first, then ``(name, name)`` for each name in ``penalties`` (class docstring)."""
        return ((self.regularizer, "alpha"),) + tuple((name, name) for name in self.penalties)


# --------------------------------------------------------------------------------------------------------------
# Member axes

@dataclasses.dataclass(frozen=True)
class HParam:
    """A numeric training setting that a member may set for itself (traced per member).

    ``default(config)`` is the value of a member that does not set it; a value must lie in [low, high]
    (``low_open``: > low); ``needs(config)`` says why the setting cannot apply under ``config`` (None: it can).
    """

    doc: str
    default: Callable[[TrainConfig], float]
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    needs: Callable[[TrainConfig], str | None] = lambda config: None

    def check(self, name: str, value: float, config: TrainConfig) -> None:
        high = self.high(config) if callable(self.high) else self.high
        below = value <= self.low if self.low_open else value < self.low
        if below or value > high or not math.isfinite(value):
            lo = f"> {self.low:g}" if self.low_open else f">= {self.low:g}"
            hi = "" if high == math.inf else f" and <= {high:g}"
            raise CrobustError(f"{name} must be {lo}{hi}, got {value:g}")


def _at(field: str, fallback: float):
    return lambda c: getattr(c.adversarial, field) if c.adversarial is not None else fallback


def _needs_at(c: TrainConfig):
    return None if c.adversarial is not None else "it needs adversarial training (TrainConfig.adversarial)"


def _needs_trades(c: TrainConfig):
    return None if c.adversarial is not None and c.adversarial.method == "trades" else \
        "it needs adversarial=AdversarialTraining(method='trades')"


def _needs_sgd(c: TrainConfig):
    return None if c.optimizer == "sgd" else f"momentum is an sgd setting (optimizer is {c.optimizer!r})"


def _needs_term(name: str):
    return lambda c: None if name in c.penalties else (
        f"it is the strength of the penalty term {name!r}, which TrainConfig.penalties does not list"
        + (" (the regularizer's own strength is alpha)" if c.regularizer == name else ""))


PENALTY_AXES = tuple(name for name in regularizers.PENALTIES if name != "none")
"""The penalties a term of ``TrainConfig.penalties`` may name; each is also the member axis of its strength."""


HPARAMS: dict[str, HParam] = {
    "alpha": HParam("regulariser strength α", lambda c: 0.0, low=0.0),
    "lr": HParam("learning rate (before the schedule's factor)", lambda c: c.lr, low=0.0, low_open=True),
    "weight_decay": HParam("weight decay (decoupled for adamw, coupled for sgd)", lambda c: c.weight_decay, low=0.0),
    "momentum": HParam("sgd momentum μ", lambda c: c.momentum, low=0.0, high=1.0, needs=_needs_sgd),
    "at_eps": HParam("adversarial-training radius ε (pixel units)", _at("eps", 0.0), low=0.0, needs=_needs_at),
    "at_step_size": HParam("adversarial-training attack step η (pixel units)", _at("step_size", 1.0), low=0.0,
                           low_open=True, needs=_needs_at),
    "at_ratio": HParam("fraction of each batch replaced by adversarial examples (≤ the config's ratio)",
                       _at("ratio", 0.0), low=0.0, high=lambda c: c.adversarial.ratio, needs=_needs_at),
    "trades_beta": HParam("TRADES β", _at("beta", 0.0), low=0.0, needs=_needs_trades),
    **{name: HParam(f"strength of the penalty term {name} (TrainConfig.penalties)", lambda c: 0.0, low=0.0,
                    needs=_needs_term(name)) for name in PENALTY_AXES},
}
"""Every member axis: name → :class:`HParam`. A member dict / :func:`grid` axis may name any of these."""

HPARAM_NAMES = tuple(HPARAMS)


def check_hparam_name(name: str) -> None:
    """Raise one clear error unless ``name`` is a registered member axis (or ``seed``)."""
    if name not in HPARAMS and name != "seed":
        raise CrobustError(f"unknown member key {name!r} (not a hyper-parameter member axis); valid: "
                           f"{', '.join(HPARAMS)}, seed")
