"""Measures of vulnerability to universal (input-agnostic) perturbations.

A universal perturbation δ (one image-shaped array, ‖δ‖ ≤ ε) is learned per member on ``n_source`` training
images by :func:`crobust.attacks.universal_perturbation` (batch-mean-gradient ascent, docs/paper.md §3.6) and applied
to the study's evaluation points (the first ``eval.n_points`` test images, none of which it saw). With
c_n = [f(x_n) = y_n] and u_n = [f(clip(x_n + δ, 0, 1)) = y_n] over the N evaluation points:

- ``uap_acc[norm, eps]`` = (1/N) Σ_n c_n·u_n — universal accuracy, a point counting only when it is classified
  correctly both clean and perturbed (as robust accuracy counts);
- ``uap_over_sa[norm, eps]`` = Σ_n c_n·u_n / Σ_n c_n — the share of the clean-correct points that δ leaves correct
  (the paper's "UAE accuracy / clean accuracy", docs/paper.md §3.6; NaN when no point is correct clean);
- ``uap_top_energy[norm]`` at the headline ε: ‖V_kᵀa‖²/‖a‖² for a = δ/std (δ as the layer sees it) and V_k the top-k
  right singular vectors of the measured layer (k = ``measure.top_k``; a random direction gives k/d): whether the
  universal direction is the layer's dominant input direction.

Randomness: the data order of member m's passes comes from ``member_eval_keys(seed_m, 'universal/<norm>')`` folded
with the ε's index on the grid (:func:`crobust.study.measures.member_eval_keys`), never from its position.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import metrics, parallel
from crobust._errors import CrobustError
from crobust._format import format_eps
from crobust.attacks import universal_perturbation
from crobust.data import to_float
from crobust.models import layer_matrices
from crobust.study.measures import Context, TrainedPopulation, layer_or_first_hidden, member_eval_keys
from crobust.study.table import col, column

NORMS = ("linf", "l2")


@dataclasses.dataclass(frozen=True)
class UniversalConfig:
    """Universal perturbations: ε grids per norm (pixel units) with a headline ε on each, the ``n_source`` training
    images δ is learned on, and the attack's ``n_passes`` passes over them in batches of ``batch_size`` with step
    ``step_frac``·ε (:func:`crobust.attacks.universal_perturbation`)."""

    eps_linf: tuple[float, ...] = (0.0, 0.1, 0.2, 0.3)
    eps_l2: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    headline_linf: float = 0.2
    headline_l2: float = 1.0
    n_source: int = 1000
    n_passes: int = 5
    batch_size: int = 128
    step_frac: float = 0.1

    def validate(self) -> None:
        for norm in NORMS:
            grid, head = self.grid(norm), self.headline(norm)
            if not grid or any(e < 0 for e in grid):
                raise CrobustError(f"universal.eps_{norm} must be a non-empty list of values >= 0, got {grid}")
            if not head > 0 or self.grid_index(norm, head) is None:
                raise CrobustError(f"universal.headline_{norm} {format_eps(head)} must be > 0 and one of "
                                   f"universal.eps_{norm} ({', '.join(format_eps(e) for e in grid)})")
        for name in ("n_source", "n_passes", "batch_size"):
            if getattr(self, name) < 1:
                raise CrobustError(f"universal.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.step_frac <= 1:
            raise CrobustError(f"universal.step_frac must be in (0, 1], got {self.step_frac}")

    def grid(self, norm: str) -> tuple[float, ...]:
        return self.eps_linf if norm == "linf" else self.eps_l2

    def headline(self, norm: str) -> float:
        return self.headline_linf if norm == "linf" else self.headline_l2

    def grid_index(self, norm: str, eps: float):
        for i, g in enumerate(self.grid(norm)):
            if math.isclose(g, eps, rel_tol=1e-6, abs_tol=1e-9):
                return i
        return None


def universal_scores(clean_logits, pert_logits, y):
    """(universal accuracy, its ratio to clean accuracy) from logits (N, C) at x and at clip(x + δ) and labels (N,):
    (1/N) Σ c_n u_n and Σ c_n u_n / Σ c_n (NaN when Σ c_n = 0), c, u the correctness indicators."""
    c = jnp.argmax(clean_logits, -1) == y
    u = jnp.argmax(pert_logits, -1) == y
    both = jnp.sum(c & u).astype(jnp.float32)
    n_clean = jnp.sum(c).astype(jnp.float32)
    return both / y.shape[0], jnp.where(n_clean > 0, both / jnp.maximum(n_clean, 1.0), jnp.nan)


def uap_key(ucfg: UniversalConfig, norm: str) -> str:
    """The table key of ``uap_over_sa`` at ``norm``'s headline ε."""
    return col("uap_over_sa", norm=norm, eps=format_eps(ucfg.headline(norm)))


def universal_accuracy(ucfg: UniversalConfig, norms: Sequence[str] = NORMS, layer: Optional[str] = None):
    """``uap_acc[norm, eps]``, ``uap_over_sa[norm, eps]`` over each norm's universal ε grid and
    ``uap_top_energy[norm]`` at its headline (module docstring), the energy against ``layer`` (default: the model's
    first hidden layer, an MLP's input layer)."""
    def measure(ctx: Context, pop: TrainedPopulation):
        w_name = layer_or_first_hidden(layer, pop.params)
        n_src = min(ucfg.n_source, int(ctx.data.train_images.shape[0]))
        xs = to_float(ctx.data.train_images[:n_src])
        ys = jnp.asarray(ctx.data.train_labels[:n_src], jnp.int32)
        std = jnp.asarray(ctx.data.std, jnp.float32)
        out = {}
        for norm in norms:
            grid = ucfg.grid(norm)
            hi = ucfg.grid_index(norm, ucfg.headline(norm))
            keys = member_eval_keys(pop.seeds, f"universal/{norm}")

            def one(p, v, key):
                logits_fn = pop.member_apply(v)
                clean = logits_fn(ctx.x)
                accs, ratios, deltas = [], [], []
                for i, eps in enumerate(grid):
                    delta = universal_perturbation(logits_fn, xs, ys, jax.random.fold_in(key, i), eps=eps, norm=norm,
                                                   n_passes=ucfg.n_passes, batch_size=ucfg.batch_size,
                                                   step_size=ucfg.step_frac * eps)
                    acc, ratio = universal_scores(clean, logits_fn(jnp.clip(ctx.x + delta, 0.0, 1.0)), ctx.y)
                    accs.append(acc)
                    ratios.append(ratio)
                    deltas.append(delta)
                a = (deltas[hi] / std).reshape(1, -1)
                energy = metrics.singular_direction_alignment(layer_matrices(p)[w_name], a,
                                                              k=ctx.measure.top_k)["top_energy"][0]
                return jnp.stack(accs), jnp.stack(ratios), energy

            accs, ratios, energy = parallel.population_map(one, pop.params, pop.variables, keys)
            for i, eps in enumerate(grid):
                out[column("uap_acc", norm=norm, eps=format_eps(eps))] = np.asarray(accs)[:, i]
                out[column("uap_over_sa", norm=norm, eps=format_eps(eps))] = np.asarray(ratios)[:, i]
            out[column("uap_top_energy", norm=norm)] = np.asarray(energy)
        return out
    return measure


MEASURES: dict[str, Callable] = {
    "universal_accuracy": universal_accuracy,
}

__all__ = ["UniversalConfig", "universal_scores", "universal_accuracy", "uap_key", "MEASURES"]
