"""Universal adversarial training (UAT) for the population trainer: each step trains on the batch moved by one
shared perturbation δ that maximises the batch's mean loss.

Usage::

    from crobust import training
    from crobust.training.universal import UniversalAdversary
    uat = UniversalAdversary(norm="linf", eps=0.1, n_iter=3)
    result = training.fit(model, data, uat.train_config(cfg), members, adversary=uat)

Each optimiser step on a batch {(x_n, y_n)}_{n=1..B} is the min–max of Shafahi et al. (AAAI 2020) over one
perturbation shared by the batch,

    min_θ  max_{‖δ‖ ≤ ε}  (1/B) Σ_n ℓ(f_θ(clip(x_n + δ, 0, 1)), y_n),

with the inner maximum approximated by ``n_iter`` steepest-ascent steps from δ⁰ = 0 (as
:func:`crobust.attacks.universal_perturbation`):

    g = ∇_δ (1/B) Σ_n ℓ(f_θ(clip(x_n + δ, 0, 1)), y_n),   δ ← Π_ε(δ + η·d(g)),   d = sign (ℓ∞) or g/‖g‖₂ (ℓ2),

δ of the shape of one image, Π_ε the projection onto the ε-ball around 0, η = ``step_size`` (default 2.5·ε/n_iter,
so the iterate can reach the ball's boundary and come back). The training step then uses clip(x_n + δ, 0, 1) for
every point of the batch (``ratio`` 1.0) with the true labels; θ is held fixed (no gradient through δ).

**How this differs from Shafahi et al.** Their δ is *persistent*: one δ for the whole training set, updated by one
ascent step per mini-batch (δ ← Π_ε(δ + η·sign(g))) and carried from batch to batch and epoch to epoch, so it
accumulates evidence over the data set at the cost of one extra gradient per step. Here δ is recomputed from 0 for
every batch with ``n_iter`` ascent steps (cost ``n_iter`` extra gradients per step): a perturbation universal to
the batch (B points, e.g. 128) rather than to the data set, and never stale with respect to the current θ. The
population trainer's state has no slot to carry a δ between steps, and this keeps its compiled block unchanged
(the adversary is the trainer's ``adversary`` hook). Both share the defining constraint: one perturbation for
many inputs, so training can only remove directions that are adversarial for most inputs at once — the global
directions a compressible layer creates.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import jax
import jax.numpy as jnp

from crobust._errors import CrobustError, check_choice
from crobust.training.objective import cross_entropy
from crobust.training.config import AdversarialTraining, TrainConfig


def shared_perturbation(logits_fn, x, y, *, eps, norm: str = "linf", n_iter: int = 3, step_size=None):
    """δ (shape ``x.shape[1:]``) ≈ argmax_{‖δ‖ ≤ ε} mean_n CE(logits_fn(clip(x_n + δ, 0, 1)), y_n) by ``n_iter``
    steepest-ascent steps from 0 (see the module docstring); ε and the step may be traced."""
    from crobust.attacks import projections as P

    step = 2.5 * eps / n_iter if step_size is None else step_size

    def mean_loss(delta):
        return cross_entropy(logits_fn(jnp.clip(x + delta, 0.0, 1.0)), y)

    def ascend(delta, _):
        g = jax.grad(mean_loss)(delta)
        g = jnp.where(jnp.isnan(g), 0.0, g)
        return P.project_delta(delta + step * P.steepest_direction(g[None], norm)[0], eps, norm), None

    delta, _ = jax.lax.scan(ascend, jnp.zeros(x.shape[1:], x.dtype), None, length=n_iter)
    return delta


@dataclasses.dataclass(frozen=True)
class UniversalAdversary:
    """The trainer's adversary for universal adversarial training (module docstring): called as
    ``adversary(apply_fn, params, x, y, key) -> clip(x + δ, 0, 1)`` with one δ for the whole batch. Frozen and
    hashable, so fits with equal settings share one compiled block. ``key`` is unused (δ starts at 0)."""

    norm: str = "linf"
    eps: float = 0.1
    n_iter: int = 3
    step_size: Optional[float] = None

    def validate(self) -> None:
        check_choice("uat.norm", self.norm, ("linf", "l2"))
        if not self.eps > 0:
            raise CrobustError(f"uat.eps must be > 0, got {self.eps}")
        if self.n_iter < 1:
            raise CrobustError(f"uat.n_iter must be >= 1, got {self.n_iter}")
        if self.step_size is not None and not self.step_size > 0:
            raise CrobustError(f"uat.step_size must be > 0 or none, got {self.step_size}")

    @property
    def step(self) -> float:
        return 2.5 * self.eps / self.n_iter if self.step_size is None else self.step_size

    def __call__(self, apply_fn, params, x, y, key):
        del key
        delta = shared_perturbation(lambda z: apply_fn(params, z), x, y, eps=self.eps, norm=self.norm,
                                    n_iter=self.n_iter, step_size=self.step)
        return jnp.clip(x + delta, 0.0, 1.0)

    def train_config(self, config: TrainConfig) -> TrainConfig:
        """``config`` with adversarial training on every point of each batch (ratio 1.0, true labels, inputs kept in
        [0, 1]); the ε / steps recorded there are this adversary's, used when it is passed as ``fit(adversary=…)``."""
        self.validate()
        return dataclasses.replace(config, adversarial=AdversarialTraining(
            norm=self.norm, eps=self.eps, step_size=self.step, n_iter=self.n_iter, ratio=1.0, labels="true",
            clip=True))


__all__ = ["UniversalAdversary", "shared_perturbation"]
