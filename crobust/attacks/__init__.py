"""Adversarial attacks in pure JAX: jit- and vmap-compatible, ε traced, pixel-space inputs in [0, 1].

Usage::

    import jax, jax.numpy as jnp
    import crobust.attacks as A
    W = jax.random.normal(jax.random.key(0), (64, 10))
    logits_fn = lambda x: x.reshape(x.shape[0], -1) @ W          # images (N, 8, 8, 1) in [0,1] → logits (N, 10)
    x = jax.random.uniform(jax.random.key(1), (16, 8, 8, 1)); y = jnp.arange(16) % 10
    key = jax.random.key(2)
    x_adv = A.apgd(logits_fn, x, y, key, eps=8/255, norm="linf", loss="ce", n_iter=100)
    x_adv = A.pgd(logits_fn, x, y, key, eps=8/255, **A.presets.PGD_EVAL)
    x_adv = A.square(logits_fn, x, y, key, eps=8/255, n_queries=1000)

Every attack has the signature ``attack(logits_fn, x, y, key, *, eps, norm=..., ..., labels="true", clip=True)``
and returns x_adv with ‖x_adv − x‖ ≤ ε (norm over all non-batch axes). ``logits_fn`` maps images in [0, 1] to
logits and never exposes a normalisation: ε is always in pixel units. Bad arguments raise
:class:`crobust._errors.CrobustError` naming the argument; value checks (ε ≥ 0, x in [0, 1], labels < C) run
when the values are concrete and are skipped under tracing.

Call form (parameters travel as data): pass ``logits_fn = jax.tree_util.Partial(model.apply, params)``. Each
public attack is one cached ``jax.jit`` with the Partial as a traced argument, so a second call with the same
``model.apply``, shapes and settings reuses the compiled program, and new ``params`` are always used. Any other
callable (a lambda closing over weights) is compiled for that call only: correct, but it pays compilation every
time. Inside ``jit``/``vmap`` the attacks are traced into the caller's program.

``apgd_art`` is ART's AutoProjectedGradientDescent (what the reference code could run), a weaker variant kept to
measure how much a weaker evaluation would overstate robustness.
"""

from crobust.attacks import losses, presets, projections
from crobust.attacks.apgd import apgd, apgd_t
from crobust.attacks.apgd_art import apgd_art
from crobust.attacks.fgsm import fgm, fgsm
from crobust.attacks.pgd import pgd
from crobust.attacks.square import square
from crobust.attacks.universal import universal_accuracy, universal_perturbation

__all__ = ["fgsm", "fgm", "pgd", "apgd", "apgd_t", "apgd_art", "square", "universal_perturbation", "universal_accuracy",
           "losses", "projections", "presets"]
