"""Adversarial training inside the population step: the reference's PGD batch mixing and TRADES.

Both attack the model in **eval mode**: the ``logits_fn`` given here is the member's network with its current
parameters (no gradient flows to them) and, for batch norm, its running statistics, which the attack neither
uses as batch statistics nor updates. Radii and steps are pixel units and may be traced (member axes
``at_eps``, ``at_step_size``, ``at_ratio``, ``trades_beta``; :data:`crobust.training.HPARAMS`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from crobust.attacks import projections as P
from crobust.training.config import AdversarialTraining


def pgd_examples(logits_fn, x, y, key, at: AdversarialTraining, eps, step_size):
    """PGD adversarial examples of x (the reference's ART PGD: one random start, last iterate)."""
    from crobust import attacks  # lazily: attacks are only needed for adversarial training

    return attacks.pgd(logits_fn, x, y, key, eps=eps, norm=at.norm, n_iter=at.n_iter, step_size=step_size,
                       n_restarts=1, keep="max_loss", labels=at.labels, clip=at.clip)


def mix_adversarial(attack, x, y, key, at: AdversarialTraining, ratio):
    """Replace the first ⌊ratio·B⌋ points of a random permutation of the batch by ``attack(x_sel, y_sel, key)``.

    n_max = ⌊at.ratio·B⌋ points are attacked (a static shape: the config's ratio is the largest a member may use);
    the member's own ``ratio`` (traced, ≤ at.ratio) keeps the first ⌊ratio·B + 10⁻³⌋ of them (the 10⁻³ absorbs
    the float32 rounding of the ratio, exact for B < 10⁴) and leaves the others clean.
    """
    b = x.shape[0]
    n_max = int(math.floor(at.ratio * b))
    if n_max == 0:
        return x
    k_perm, k_att = jax.random.split(key)
    sel = jax.random.permutation(k_perm, b)[:n_max]
    x_sel = x[sel]
    x_adv = jax.lax.stop_gradient(attack(x_sel, y[sel], k_att))
    keep = jnp.arange(n_max) < jnp.floor(ratio * b + 1e-3)
    x_adv = jnp.where(keep.reshape((n_max,) + (1,) * (x.ndim - 1)), x_adv, x_sel)
    return x.at[sel].set(x_adv)


def kl_divergence(logits_p, logits_q):
    """(1/B) Σ_n KL(softmax p_n ‖ softmax q_n) = (1/B) Σ_n Σ_c p_nc (log p_nc − log q_nc) (torch's batchmean)."""
    log_p, log_q = jax.nn.log_softmax(logits_p), jax.nn.log_softmax(logits_q)
    return jnp.mean(jnp.sum(jnp.exp(log_p) * (log_p - log_q), axis=-1))


def trades_examples(logits_fn, x, key, at: AdversarialTraining, eps, step_size):
    """TRADES' inner maximisation (Zhang et al. 2019, their code): x' = x + 0.001·N(0, I) projected, then
    ``n_iter`` steps x' ← Π(x' + η·d(∇ Σ_n KL(f(x_n) ‖ f(x'_n)))) with d = sign (ℓ∞) or g/‖g‖₂ (ℓ2; the authors'
    ℓ2 variant runs SGD on δ instead — here the same normalised step as PGD), Π the ball's projection (and [0, 1]
    when ``at.clip``). The clean distribution f(x) is fixed (no gradient)."""
    p_clean = jax.lax.stop_gradient(logits_fn(x))
    if at.norm == "linf":
        lo, hi = x - eps, x + eps
        if at.clip:
            lo, hi = jnp.maximum(lo, 0.0), jnp.minimum(hi, 1.0)
        project = lambda v: jnp.clip(v, lo, hi)
    else:
        project = lambda v: P.project_l2(v, x, eps, at.clip)
    grad_fn = jax.grad(lambda z: kl_divergence(p_clean, logits_fn(z)) * x.shape[0])

    def body(_, x_adv):
        return project(x_adv + step_size * P.steepest_direction(grad_fn(x_adv), at.norm))

    start = project(x + 0.001 * jax.random.normal(key, x.shape, x.dtype))
    return jax.lax.stop_gradient(jax.lax.fori_loop(0, at.n_iter, body, start))

