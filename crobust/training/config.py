"""Training configuration shared by every member of a population: :class:`TrainConfig` and
:class:`AdversarialTraining` (frozen dataclasses; a member's own hyper-parameters live in its member dict)."""

from __future__ import annotations

import dataclasses
import math

from crobust import optim, precision, regularizers
from crobust._errors import CrobustError, check_choice

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

    ``matmul_precision`` (:mod:`crobust.precision`): the precision of the training step's matrix products —
    ``'float32'`` (default; full fp32 on every backend, as the reference PyTorch code, which never enables TF32),
    ``'tf32'`` or ``'bf16'`` (opt-in speed settings on GPUs/TPUs; a CPU computes fp32 regardless). Metrics,
    bounds and the nuclear norm's value run at full float32 whatever it says.
    ``nuclear_method``: how the nuclear-norm penalty gets U Vᵀ (:func:`crobust.regularizers.nuclear_norm`:
    ``'auto'`` = ``'polar'``, or ``'svd'``).
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
    matmul_precision: str = precision.DEFAULT_TRAINING_PRECISION
    nuclear_method: str = "auto"

    def validate(self, n_train_total: int | None = None) -> None:
        """Check every field; with ``n_train_total`` (the training set's size) also the split and batch size."""
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("regularizer", self.regularizer, tuple(regularizers.PENALTIES))
        check_choice("projection", self.projection, regularizers.PROJECTIONS)
        precision.check_training_precision(self.matmul_precision)
        check_choice("nuclear_method", self.nuclear_method, regularizers.NUCLEAR_METHODS)
        for name in ("batch_size", "max_steps", "eval_every", "eval_batch_size"):
            if getattr(self, name) <= 0:
                raise CrobustError(f"{name} must be a positive integer, got {getattr(self, name)}")
        if not 0.0 <= self.val_ratio < 1.0:
            raise CrobustError(f"val_ratio must be in [0, 1), got {self.val_ratio}")
        if self.patience is not None and self.patience < 0:
            raise CrobustError(f"patience must be >= 0 or None, got {self.patience}")
        if self.lr <= 0:
            raise CrobustError(f"lr must be > 0, got {self.lr}")
        if n_train_total is None:
            return
        n_val = int(math.floor(self.val_ratio * n_train_total))
        if n_val == 0 and self.patience is not None:
            raise CrobustError("early stopping (patience) needs a validation split: set val_ratio > 0 or patience=None")
        if self.batch_size > n_train_total - n_val:
            raise CrobustError(f"batch_size {self.batch_size} is larger than the training split "
                               f"({n_train_total - n_val} points after holding out {n_val} for validation)")

