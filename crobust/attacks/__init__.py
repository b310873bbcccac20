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
    x_adv = A.fab_t(logits_fn, x, y, key, eps=8/255, **A.presets.FAB_T)
    x_adv, radius = A.fmn(logits_fn, x, y, key, norm="l2")              # per-point smallest adversarial radius
    robust_at = A.robust_accuracy_curve(radius, [0.1, 0.25, 0.5])           # robust accuracy at every ε from one run

Every fixed-budget attack has the signature ``attack(logits_fn, x, y, key, *, eps, norm=..., ..., labels="true", clip=True)``
and returns x_adv with ‖x_adv − x‖ ≤ ε (norm over all non-batch axes). ``logits_fn`` maps images in [0, 1] to
logits and never exposes a normalisation: ε is always in pixel units. Bad arguments raise
:class:`crobust._errors.CrobustError` naming the argument; value checks (ε ≥ 0, x in [0, 1], labels < C) run
when the values are concrete and are skipped under tracing. The minimum-norm attacks (``fmn``, ``fab_min_norm``)
return ``(x_adv, radius)`` instead: each point's smallest adversarial perturbation found (0 for a point already
misclassified, ∞ where none was found).

Call forms (parameters travel as data). Each public attack is one cached ``jax.jit`` whose model argument is a
``jax.tree_util.Partial`` with the parameters as traced leaves, so a second call with the same function, shapes
and settings reuses the compiled program and new parameters are always used:

- ``logits_fn = jax.tree_util.Partial(model.apply, params)``: used as it is.
- a plain closure, e.g. ``lambda x: model.apply(params, x)`` or a nested ``def``: the arrays it captures are
  lifted into such a Partial (rebuilt around them at trace time), keyed by its code and the non-array captures,
  so it compiles once too and every call uses the arrays the closure holds *at that call* — never stale weights.
  A new lambda object with the same code and captures of the same shapes reuses the program.
- anything else (an object with ``__call__``, a bound method, a closure that captures an object): compiled for
  that call only, so whatever it reads now is used; correct, but it pays compilation every time, and a one-time
  :class:`RecompileWarning` (per code object) names the Partial form.

Inside ``jit``/``vmap`` (a tracer among the arguments or captures) the attacks are traced into the caller's program.

Captures (exactly what the closure form sees, recursively; ``crobust.attacks._closure``):

- of a Python function (``def``, ``lambda``): its closure cells, ``__defaults__`` and ``__kwdefaults__``; and,
  when ``logits_fn`` is a plain function (or a ``functools.partial`` of one), for the functions defined in its
  module (``logits_fn`` itself and its helpers there), the module globals their code names — read at each call,
  so rebinding a global array is seen;
- of a ``functools.partial`` (including ``Partial``): the function, ``args`` and ``keywords``; of a bound method:
  its function and ``__self__`` (so ``functools.partial(model.apply, params)`` with a flax module is seen);
- the values found there: ``jax.Array`` and ``numpy.ndarray`` → traced arguments (a NumPy array changed in
  place is read again at the next call); tuples, lists, dicts, namedtuples and registered pytree nodes (flax
  ``FrozenDict``, …) → flattened and each leaf seen; Python and NumPy scalars, strings, ``None``, dtypes →
  static, keyed by value (a new value compiles a new program); modules, classes, builtins, ufuncs, callables made
  by jax transforms (``jax.jit``, ``custom_jvp``), and functions of other modules named as globals → static,
  keyed by identity and not looked into (as ``jax.jit`` treats them: arrays they capture are baked in); objects
  with a value-based ``__hash__`` (flax modules, frozen dataclasses) → static, keyed by value, as jax keys static
  arguments.
- not seen (the call falls back to compiling afresh, with the hint): objects hashed by identity (their attributes
  could change unseen: ``self.params``), a function that reaches itself, an empty cell; globals of functions
  defined in other modules, and class attributes, are not looked at at all.

``apgd_art`` is ART's AutoProjectedGradientDescent (what the reference code could run), a weaker variant kept to
measure how much a weaker evaluation would overstate robustness.
"""

from crobust.attacks import losses, presets, projections
from crobust.attacks._closure import RecompileWarning
from crobust.attacks.apgd import apgd, apgd_t
from crobust.attacks.apgd_art import apgd_art
from crobust.attacks.fab import fab, fab_min_norm, fab_t
from crobust.attacks.fgsm import fgm, fgsm
from crobust.attacks.fmn import fmn, robust_accuracy_curve
from crobust.attacks.pgd import pgd
from crobust.attacks.square import square
from crobust.attacks.universal import universal_accuracy, universal_perturbation

__all__ = ["fgsm", "fgm", "pgd", "apgd", "apgd_t", "apgd_art", "fab", "fab_t", "fab_min_norm", "fmn",
           "robust_accuracy_curve", "square", "universal_perturbation", "universal_accuracy", "losses", "projections",
           "presets", "RecompileWarning"]
