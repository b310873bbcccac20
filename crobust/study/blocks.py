"""The configuration blocks a study is made of (frozen dataclasses, each validating itself; nested in a study's
config and set from the command line with dotted keys, :mod:`crobust.config`).

- :class:`DataConfig` — which dataset, which classes, how many points;
- :class:`ModelConfig` — a model by name (mlp, lowrank, resnet18, vgg16, wrn, vit) and the fields its kind reads;
- :class:`~crobust.training.TrainConfig` — the trainer's shared settings (used as it is);
- :class:`GridConfig` — the member grid: compression strengths α × seeds;
- :class:`EvalConfig` — ε grids and headlines per norm, the attack ensemble and its budget, the budget-convergence
  check;
- :class:`MeasureConfig` — the κ, energy and top-k of the compressibility and alignment measures.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

from crobust import data as data_lib
from crobust.models.kinds import checkpoint_prepare, get_kind
from crobust.training import TrainConfig
from crobust._errors import CrobustError, check_choice
from crobust._format import format_eps

NORMS = ("linf", "l2")
EVAL_EXECUTIONS = ("auto", "program", "host_loop", "host_steps")     # crobust.evaluation.EXECUTIONS
ENSEMBLE_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t", "fab", "fab-t", "square", "pgd", "fgsm", "fgm", "apgd-art")


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """``dataset`` (:data:`crobust.data.DATASETS`), optional ``classes`` (kept and relabelled 0..k−1), a stratified
    subsample of ``n_train`` / ``n_test`` points, where to look (``data_dir``) and whether to download."""

    dataset: str = "digits"
    classes: Optional[tuple[int, ...]] = None
    n_train: Optional[int] = None
    n_test: Optional[int] = None
    data_dir: Optional[str] = None
    download: bool = False

    def validate(self) -> None:
        check_choice("dataset", self.dataset, tuple(data_lib.DATASETS))
        for name in ("n_train", "n_test"):
            if getattr(self, name) is not None and getattr(self, name) <= 0:
                raise CrobustError(f"data.{name} must be >= 1 or none, got {getattr(self, name)}")
        if self.classes is not None and len(set(self.classes)) < 2:
            raise CrobustError(f"data.classes must name at least two distinct classes, got {self.classes}")

    def load(self) -> data_lib.Dataset:
        ds = data_lib.load_dataset(self.dataset, data_dir=self.data_dir, download=self.download,
                                   classes=self.classes)
        if self.n_train or self.n_test:
            ds = data_lib.subsample(ds, n_train=self.n_train, n_test=self.n_test, seed=0)
        return ds


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """A model by name: ``kind`` ∈ mlp, lowrank, resnet18, vgg16, wrn, vit (:data:`crobust.models.KINDS`, whose
    checks and constructors these are); each kind reads only its own fields (:attr:`used`):

    - ``width``: the MLP's hidden width; ResNet-18's and VGG-16's first-stage channels (64 = the standard nets);
    - ``depth``: the MLP's number of weight matrices (≥ 2); a WRN's depth d = 6n + 4;
    - ``rank``: the rank of every hidden layer of ``lowrank`` (required there, or given per population to
      :meth:`build`), of every non-stem conv of resnet18 / vgg16 / wrn (none: dense);
    - ``stem`` (``cifar`` / ``imagenet``), ``stage_sizes`` (blocks per stage): resnet18;
    - ``widen`` (k), ``base_width`` (16 in WRN-d-k): wrn;
    - ``patch_size``, ``hidden_size``, ``num_layers``, ``num_heads``, ``mlp_dim`` (none: 4·hidden_size),
      ``checkpoint`` (a vision_transformer ``.npz`` to start from, :meth:`prepare`): vit.
    """

    kind: str = "mlp"
    width: int = 64
    depth: int = 2
    rank: Optional[int] = None
    stem: str = "cifar"
    stage_sizes: tuple[int, ...] = (2, 2, 2, 2)
    widen: int = 10
    base_width: int = 16
    patch_size: int = 4
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    mlp_dim: Optional[int] = None
    checkpoint: Optional[str] = None

    def validate(self) -> None:
        get_kind(self.kind).check(self)

    @property
    def used(self) -> tuple[str, ...]:
        """The fields this kind reads (besides ``kind``)."""
        return get_kind(self.kind).fields

    @property
    def first_hidden_layer(self) -> str:
        """The name of the model's first hidden layer (W¹; :func:`crobust.models.hidden_layers`), e.g. ``hidden_0``
        for an MLP, ``layer1_0/conv1`` for a ResNet: the layer a study's single-layer measures and claims read."""
        return get_kind(self.kind).first_hidden(self)

    @property
    def first_hidden_width(self) -> int:
        """Output units (rows of W) of :attr:`first_hidden_layer`."""
        return get_kind(self.kind).first_hidden_width(self)

    def build(self, data: data_lib.Dataset, *, rank: Optional[int] = None):
        """The flax module for ``data`` (its classes and normalisation statistics); ``rank`` overrides
        ``model.rank`` (a population per rank)."""
        kind = get_kind(self.kind)
        kind.check(self)
        why = kind.check_images(self, tuple(int(d) for d in data.train_images.shape[1:]))
        if why is not None:
            raise CrobustError(why)
        return kind.make(self, data.num_classes, data.mean, data.std, rank)

    def prepare(self):
        """A :class:`~crobust.study.Population` ``prepare`` hook that loads ``checkpoint`` into every member
        (:func:`crobust.models.kinds.checkpoint_prepare`), or None without a checkpoint."""
        return None if self.checkpoint is None else checkpoint_prepare(self.checkpoint)


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Members: every compression strength ``alpha`` × ``seeds`` seeds (``seed_offset`` … ``seed_offset+seeds−1``)."""

    alpha: tuple[float, ...] = (0.0,)
    seeds: int = 4
    seed_offset: int = 0

    def validate(self) -> None:
        if not self.alpha or min(self.alpha) < 0:
            raise CrobustError(f"grid.alpha must be a non-empty list of values >= 0, got {self.alpha}")
        if self.seeds <= 0:
            raise CrobustError(f"grid.seeds must be >= 1, got {self.seeds}")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.seed_offset, self.seed_offset + self.seeds))


@dataclasses.dataclass(frozen=True)
class EvalConfig:
    """Robust accuracy: the first ``n_points`` test points, ε grids per norm (pixel units) with one headline ε on
    each grid, the attack ensemble and its budget.

    ``attacks`` is the ensemble (per point the worst case over all of them); ``n_iter`` / ``n_restarts`` set the
    APGD (and PGD, FAB) iterations and restarts, ``n_targets`` APGD-T's (and FAB-T's) target classes (capped at C − 1), ``n_queries``
    Square's queries. ``art_n_iter`` / ``art_n_restarts``: the budget of ART's APGD where a study reports it beside
    the ensemble (ART's defaults, 100 × 5, are what the reference code would have run). ``convergence_iters`` ×
    ``convergence_restarts`` (× ``convergence_queries``, Square's query budgets, whose first entry is ``n_queries``;
    empty: Square is left out of the ladder): the attack-budget convergence check on the least and most compressed
    members at each headline (empty ``convergence_iters``: not run). ``radii_iters``: the iterations of the
    Fast Minimum-Norm attack where a study measures per-point radii (:mod:`crobust.study.measures_radii`).
    ``execution``: how the attacks run (:func:`crobust.evaluation.population_robust_accuracy`: ``'auto'``,
    ``'program'``, ``'host_loop'``, ``'host_steps'``); recorded in ``config.json`` and the report but not part of
    the run's identity (how, never what: the results agree to float round-off).
    """

    n_points: int = 360
    eps_linf: tuple[float, ...] = (0.0, 0.02, 0.05, 0.1, 0.15, 0.2)
    eps_l2: tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 1.0)
    headline_linf: float = 0.1
    headline_l2: float = 0.5
    attacks: tuple[str, ...] = ("apgd-ce", "apgd-t", "square")
    n_iter: int = 100
    n_restarts: int = 1
    n_targets: int = 9
    n_queries: int = 5000
    convergence_iters: tuple[int, ...] = ()
    convergence_restarts: tuple[int, ...] = (1,)
    convergence_queries: tuple[int, ...] = ()
    art_n_iter: int = 100
    art_n_restarts: int = 5
    radii_iters: int = 100
    execution: str = "auto"

    NOT_IDENTITY: ClassVar[tuple[str, ...]] = ("execution",)

    def validate(self) -> None:
        if self.n_points <= 0:
            raise CrobustError(f"eval.n_points must be >= 1, got {self.n_points}")
        for norm in NORMS:
            grid, headline = self.grid(norm), self.headline(norm)
            if any(e < 0 for e in grid):
                raise CrobustError(f"eval.eps_{norm} must be >= 0, got {grid}")
            if headline <= 0:
                raise CrobustError(f"eval.headline_{norm} must be > 0, got {headline}")
            if self.grid_index(norm, headline) is None:
                raise CrobustError(f"eval.headline_{norm} {format_eps(headline)} must be one of eval.eps_{norm} "
                                   f"({', '.join(format_eps(e) for e in grid)}): the headline is read off that grid")
        if not self.attacks:
            raise CrobustError("eval.attacks must name at least one attack")
        for a in self.attacks:
            check_choice("eval.attacks entry", a, ENSEMBLE_ATTACKS)
        check_choice("eval.execution", self.execution, EVAL_EXECUTIONS)
        for name in ("n_iter", "n_restarts", "n_targets", "n_queries", "art_n_iter", "art_n_restarts", "radii_iters"):
            if getattr(self, name) <= 0:
                raise CrobustError(f"eval.{name} must be >= 1, got {getattr(self, name)}")
        if any(i <= 0 for i in self.convergence_iters) or any(r <= 0 for r in self.convergence_restarts):
            raise CrobustError("eval.convergence_iters and eval.convergence_restarts must be >= 1")
        if self.convergence_iters and (self.n_iter, self.n_restarts) not in self.convergence_rungs():
            raise CrobustError(f"the headline budget eval.n_iter × eval.n_restarts = {self.n_iter} × {self.n_restarts} "
                               f"must be a rung of the convergence ladder "
                               f"({', '.join(f'{t}×{r}' for t, r in self.convergence_rungs())}): the ladder vouches "
                               f"only for a budget it ran")
        q = self.convergence_queries
        if q and (list(q) != sorted(set(q)) or q[0] != self.n_queries or "square" not in self.attacks):
            raise CrobustError(f"eval.convergence_queries must be increasing Square query budgets starting at "
                               f"eval.n_queries ({self.n_queries}), with square among eval.attacks; got {q}")

    def convergence_rungs(self) -> list[tuple[int, int]]:
        """The (iterations, restarts) budgets of the convergence ladder (:func:`crobust.evaluation.
        budget_convergence`): the iterations at the first restart count, then the restarts at the most iterations."""
        if not self.convergence_iters:
            return []
        its, rs = self.convergence_iters, self.convergence_restarts
        return [(t, rs[0]) for t in its] + [(its[-1], r) for r in rs[1:]]

    def grid(self, norm: str) -> tuple[float, ...]:
        return self.eps_linf if norm == "linf" else self.eps_l2

    def headline(self, norm: str) -> float:
        return self.headline_linf if norm == "linf" else self.headline_l2

    def grid_index(self, norm: str, eps: float) -> Optional[int]:
        for i, g in enumerate(self.grid(norm)):
            if math.isclose(g, eps, rel_tol=1e-6, abs_tol=1e-9):
                return i
        return None


@dataclasses.dataclass(frozen=True)
class MeasureConfig:
    """``kappa``: kept fraction for k_ν, k_σ (ε_ν, ε_σ at k = ⌈κ·h⌉); ``energy``: the share of Σσ² that defines
    prunability; ``top_k``: how many top right singular vectors the alignment measure compares with the rest."""

    kappa: float = 0.1
    energy: float = 0.9
    top_k: int = 1

    def validate(self) -> None:
        if not 0 < self.kappa <= 1:
            raise CrobustError(f"measure.kappa must be in (0, 1], got {self.kappa}")
        if not 0 < self.energy < 1:
            raise CrobustError(f"measure.energy must be in (0, 1), got {self.energy}")
        if self.top_k < 1:
            raise CrobustError(f"measure.top_k must be >= 1, got {self.top_k}")


@dataclasses.dataclass(frozen=True)
class StudyConfig:
    """The blocks every study has; a study subclasses it to add its own fields or blocks.

    ``checkpoint_every``: optimiser steps between training checkpoints (``<workdir>/checkpoints/<population>``).

    Each member's result, which every measure reads, is its best-validation parameters; with ``train.val_ratio`` 0
    (no validation split, the reference ResNet recipe) it is its last parameters, and early stopping
    (``train.patience``) is then refused.
    """

    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    grid: GridConfig = GridConfig()
    eval: EvalConfig = EvalConfig()
    measure: MeasureConfig = MeasureConfig()
    checkpoint_every: int = 1000

    def common_blocks(self) -> dict:
        """The fields every study config has (this class's), by name, without a subclass's own blocks: what a study
        takes from another study's preset to build its own config on the same data, model, recipe and grid."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(StudyConfig)}

    def validate(self) -> None:
        if self.checkpoint_every <= 0:
            raise CrobustError(f"checkpoint_every must be >= 1 (optimiser steps), got {self.checkpoint_every}")
        if not self.train.val_ratio > 0 and self.train.patience is not None:
            raise CrobustError(f"train.val_ratio must be > 0 with early stopping (train.patience "
                               f"{self.train.patience}), got {self.train.val_ratio}: early stopping reads the "
                               f"validation loss; set train.patience=None to keep each member's last parameters")
        width = self.model.first_hidden_width
        if self.measure.top_k >= width:
            raise CrobustError(f"measure.top_k must be < the width of the model's first hidden layer "
                               f"{self.model.first_hidden_layer} ({width}), got {self.measure.top_k}")
