"""Measures for the paper's bounds on trained members: the Corollary 3.3 bound against the measured robustness gap,
and Theorem 3.1 as printed beside its sound form.

**Gap and bound** (:func:`gap_and_bound`; docs/paper.md §3.5, :mod:`crobust.metrics.bounds`). For a two-class model the
softmax cross-entropy of the logits (z₀, z₁) at label y is log(1 + e^{−s·(z₁ − z₀)}), s = 2y − 1: the logistic loss
of the logit difference, i.e. of the binary head C = c₁ − c₀ on z = Φ(x). On the evaluation points (x_i, y_i),
i = 1…N, and at the norm's headline budget δ:

- F = (1/N) Σ_i ℓ(x_i), the clean mean loss;
- F^adv = (1/N) Σ_i max(ℓ(x_i), ℓ(x̃_i), ℓ(x̂_i)) with x̃_i the highest-loss iterate of one APGD-CE run that maximises
  ℓ (``eval.n_iter`` iterations, random start; :func:`crobust.attacks.apgd.apgd_single_run`) and x̂_i the ensemble's
  worst-case point kept by the robust-accuracy measure — a lower estimate of E max_{‖a‖≤δ} ℓ(x + a) (the box
  [0, 1] only shrinks the set searched, so every estimate stays below the true sup over the ball);
- ``gap`` = F^adv − F, and Corollary 3.3's ``gap_bound`` = δ·L̂^p_Φ·‖C‖_{p*} for the naive and aligned Lipschitz
  bounds L̂ of the encoder (:func:`crobust.metrics.encoder_lipschitz`, the hidden layers, at κ = ``measure.kappa``,
  times 1/min(std) for the model's input normalisation); ``bound_over_gap`` = gap_bound/gap.

Each member's bound and gap come from the same parameters (its own row); the tests recompute one member by brute
force. Matrix products run at full float32 precision (no TF32 on accelerators).

**Theorem 3.1** (:func:`theorem31_forms`; docs/paper.md §3.3, docs/findings.md §1). For a layer W (h × d, h rows =
neurons), singular values σ (h_σ = min(h, d) of them) and neuron ℓ1 norms ν (h of them), at kept counts k:

- spectral, sound (q = 1, exact residual): ‖W‖₂ ≤ (1 − ε_σ,1)/(1 − β_σ)·√h_σ/k·‖W‖_F;
- spectral, printed with q = 2 (the reference code's q): the same with ε_σ,2 = ‖σ − σ_k‖₂/‖σ‖₂;
- neuron, sound (crobust's form): ‖W‖_∞ ≤ (1 − ε_ν,1)/(1 − β_ν)·√(h·d)/k_ν·‖W‖_F;
- neuron, printed, read as docs/findings.md §1 does (k_r → h/k_ν under the root, ε_r := ε_ν):
  ‖W‖_∞ ≤ (1 − ε_ν)/(1 − β_ν)·(√(h/k_ν) + h·ε_ν/k_ν)·‖W‖_F, at q = 1 and at q = 2. It is the sound bound's
  split form (√(d/k_ν) + ε_ν√(h·d)/k_ν) with d replaced by h, so it can fail only where d > h.

with β = 1 − v_(k)/v_(1) at the same k. Columns ``t31_<form>[layer]`` hold each right-hand side, ``t31_spectral_lhs``
/ ``t31_neuron_lhs`` the operator norms; a form holds on a member when lhs ≤ rhs.
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from crobust import metrics, parallel
from crobust.attacks import losses as attack_losses
from crobust.attacks.apgd import apgd_single_run
from crobust.models import hidden_matrices, layer_matrices
from crobust.study.dependencies import declare
from crobust.study.measures import _cached_adv, member_eval_keys
from crobust.study.table import column


def per_point_ce(logits, y):
    """Softmax cross-entropy per point (N,); for two classes the logistic loss of z₁ − z₀ (module docstring)."""
    return jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, y[:, None], axis=-1)[:, 0]


def corollary33_bound(mats, head, delta: float, p, *, kappa: float, input_scale: float) -> dict:
    """δ·L̂^p_Φ·‖C‖_{p*} for one member: ``mats`` its hidden matrices (out, in), ``head`` (2, h). Returns naive and
    aligned bounds, the Lipschitz bounds and ‖C‖_{p*}."""
    lip = metrics.encoder_lipschitz(list(mats), p=p, kappa=kappa, input_scale=input_scale)
    c = metrics.binary_head_vector(head)
    dual = metrics.robustness_gap_bound(1.0, 1.0, c, p)
    return {"lip_naive": lip["naive"], "lip_aligned": lip["aligned"], "head_dual": dual,
            "bound_naive": delta * lip["naive"] * dual, "bound_aligned": delta * lip["aligned"] * dual}


def gap_and_bound(norms: Sequence[str] = ("l2",)):
    """Per norm at its headline δ (module docstring): ``clean_loss``, ``adv_loss[norm]``, ``gap[norm]``,
    ``gap_bound_naive[norm]``, ``gap_bound_aligned[norm]``, ``bound_over_gap_naive[norm]``,
    ``bound_over_gap_aligned[norm]``, ``lipschitz_naive[norm]``, ``lipschitz_aligned[norm]``, ``head_dual[norm]``
    (‖C‖₁ for ℓ∞, ‖C‖₂ for ℓ2). Requires the robust-accuracy measure's headline examples of the same norms."""
    def measure(ctx, pop):
        out = {}
        scale = float(1.0 / np.min(np.asarray(ctx.data.std, np.float64)))
        for norm in norms:
            delta = float(ctx.eval.headline(norm))
            p = 2 if norm == "l2" else "inf"
            x_hat = _cached_adv(ctx, pop, norm)
            keys = member_eval_keys(pop.seeds, f"gap/{norm}")

            def one(params, variables, key, xh):
                with jax.default_matmul_precision("float32"):
                    return _one(params, variables, key, xh)

            def _one(params, variables, key, xh):
                f = pop.member_apply(variables)
                x_best, _, _, _ = apgd_single_run(f, lambda z: attack_losses.cross_entropy(z, ctx.y), ctx.x, ctx.y,
                                                  key, delta, norm, ctx.eval.n_iter)
                clean = per_point_ce(f(ctx.x), ctx.y)
                worst = jnp.maximum(clean, jnp.maximum(per_point_ce(f(x_best), ctx.y), per_point_ce(f(xh), ctx.y)))
                mats = list(hidden_matrices(params).values())
                head = layer_matrices(params)["head"]
                b = corollary33_bound(mats, head, delta, p, kappa=ctx.measure.kappa, input_scale=scale)
                return {"clean": jnp.mean(clean), "adv": jnp.mean(worst), **b}
            r = {k: np.asarray(v, np.float64) for k, v in parallel.population_map(one, pop.params, pop.variables, keys,
                                                                                   x_hat).items()}
            gap = r["adv"] - r["clean"]
            out[column("clean_loss")] = r["clean"]
            out[column("adv_loss", norm=norm)] = r["adv"]
            out[column("gap", norm=norm)] = gap
            for kind in ("naive", "aligned"):
                out[column(f"gap_bound_{kind}", norm=norm)] = r[f"bound_{kind}"]
                out[column(f"bound_over_gap_{kind}", norm=norm)] = np.where(gap > 0, r[f"bound_{kind}"] /
                                                                            np.where(gap > 0, gap, 1.0), np.nan)
                out[column(f"lipschitz_{kind}", norm=norm)] = r[f"lip_{kind}"]
            out[column("head_dual", norm=norm)] = r["head_dual"]
        return out
    return declare(measure, requires=[f"x_adv/{norm}" for norm in norms])


# --------------------------------------------------------------------------------------------------------------
# Theorem 3.1, printed and sound

def _top_k_stats(v, k: int, q: float):
    """(ε_q, 1 − β) of the non-negative vectors v (..., n) at kept count k: ε_q = ‖v − v_k‖_q/‖v‖_q (0 for v = 0),
    1 − β = v_(k)/v_(1) (1 for v = 0)."""
    s = jnp.sort(v, axis=-1)[..., ::-1]
    total = jnp.sum(s ** q, axis=-1) ** (1.0 / q)
    tail = jnp.sum(s[..., k:] ** q, axis=-1) ** (1.0 / q)
    eps = jnp.where(total > 0, tail / jnp.where(total > 0, total, 1.0), 0.0)
    omb = jnp.where(s[..., 0] > 0, s[..., k - 1] / jnp.where(s[..., 0] > 0, s[..., 0], 1.0), 1.0)
    return eps, omb


def _chain(eps, omb, factor):
    """(1 − ε)/(1 − β)·factor, +∞ where 1 − β = 0 (the k-th entry is 0) and the factor is positive."""
    return jnp.where(omb > 0, (1 - eps) * factor / jnp.where(omb > 0, omb, 1.0), jnp.where(factor > 0, jnp.inf, 0.0))


def spectral_printed(w, k: int, q: float = 2):
    """Theorem 3.1's spectral RHS as printed with ε at ``q``: (1 − ε_σ,q)/(1 − β_σ)·√h_σ/k·‖W‖_F; W (..., h, d)."""
    sig = metrics.singular_values(w)
    eps, omb = _top_k_stats(sig, k, q)
    fro = jnp.sqrt(jnp.sum(sig * sig, axis=-1))
    return _chain(eps, omb, math.sqrt(sig.shape[-1]) / k * fro)


def neuron_printed(w, k: int, q: float = 1):
    """Theorem 3.1's neuron RHS as printed, read with k_r → h/k_ν and ε_r := ε_ν (docs/findings.md §1):
    (1 − ε_ν)/(1 − β_ν)·(√(h/k) + h·ε_ν/k)·‖W‖_F, ν the row ℓ1 norms, ε_ν at ``q``; W (..., h, d)."""
    h = w.shape[-2]
    nu = jnp.sum(jnp.abs(w), axis=-1)
    eps, omb = _top_k_stats(nu, k, q)
    fro = jnp.sqrt(jnp.sum(w * w, axis=(-2, -1)))
    return _chain(eps, omb, (math.sqrt(h / k) + h * eps / k) * fro)


def theorem31_forms(layers: Sequence[str] = ("hidden_0", "hidden_1")):
    """Per layer, at k_σ = min(⌈κ·h_σ⌉, rank) (``rank``: the population's coordinate, when it has one — beyond
    it σ_k = 0 and the bound is +∞) and k_ν = ⌈κ·h⌉ (κ = ``measure.kappa``, counted as
    :func:`crobust.metrics.kept_count`): ``t31_spectral_lhs`` = ‖W‖₂, ``t31_spectral_sound``,
    ``t31_spectral_printed_q2``, ``t31_neuron_lhs`` = ‖W‖_∞, ``t31_neuron_sound``, ``t31_neuron_printed_q1``,
    ``t31_neuron_printed_q2`` (module docstring), each right-hand side over its lhs (``t31_<form>_over_lhs``; < 1:
    the form fails on that member), and ``t31_k_sigma`` / ``t31_k_nu``."""
    def measure(ctx, pop):
        mats = layer_matrices(pop.params)
        out = {}
        for layer in layers:
            w = jnp.asarray(mats[layer], jnp.float32)                      # (M, h, d)
            h, d = w.shape[-2:]
            k_sigma = metrics.kept_count(min(h, d), kappa=ctx.measure.kappa)
            rank: Optional[int] = pop.coords.get("rank")
            if rank is not None:
                k_sigma = max(1, min(k_sigma, int(rank)))
            k_nu = metrics.kept_count(h, kappa=ctx.measure.kappa)
            with jax.default_matmul_precision("float32"):
                spec = metrics.theorem31_spectral(w, k=k_sigma)
                neu = metrics.theorem31_neuron(w, k=k_nu)
                cols = {"t31_spectral_lhs": spec["lhs"], "t31_spectral_sound": spec["rhs"],
                        "t31_spectral_printed_q2": spectral_printed(w, k_sigma, 2),
                        "t31_neuron_lhs": neu["lhs"], "t31_neuron_sound": neu["rhs_fro"],
                        "t31_neuron_printed_q1": neuron_printed(w, k_nu, 1),
                        "t31_neuron_printed_q2": neuron_printed(w, k_nu, 2)}
            for name, v in cols.items():
                out[column(name, layer=layer)] = np.asarray(v, np.float64)
            for name, v in cols.items():
                if not name.endswith("_lhs"):
                    lhs = cols["t31_spectral_lhs" if "spectral" in name else "t31_neuron_lhs"]
                    out[column(f"{name}_over_lhs", layer=layer)] = np.asarray(v / lhs, np.float64)
            out[column("t31_k_sigma", layer=layer)] = np.full(pop.size, float(k_sigma))
            out[column("t31_k_nu", layer=layer)] = np.full(pop.size, float(k_nu))
        return out
    return measure


MEASURES = {"gap_and_bound": gap_and_bound, "theorem31_forms": theorem31_forms}

__all__ = ["per_point_ce", "corollary33_bound", "gap_and_bound", "spectral_printed", "neuron_printed",
           "theorem31_forms", "MEASURES"]
