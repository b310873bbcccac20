"""Pieces shared by the gradient attacks (private)."""

from __future__ import annotations

import functools
import inspect

import jax
import jax.numpy as jnp

from crobust.attacks import _stepping
from crobust.attacks._closure import as_data


def value_and_input_grad(logits_fn, loss_fn):
    """x → (loss (N,), logits (N, C), ∂(Σ_n loss_n)/∂x (N, ...)), NaN gradient entries set to 0 (as ART does).

    The per-example loss is summed before differentiation (as AutoAttack and ART do); since the models act per
    example, row n of the gradient is ∂ loss_n / ∂ x_n.
    """

    def total(x_adv):
        logits = logits_fn(x_adv)
        per_example = loss_fn(logits)
        return jnp.sum(per_example), (per_example, logits)

    def evaluate(x_adv):
        # the gradient transform is applied here, not captured: a captured jax transform would be keyed by identity
        # when an iteration is lifted into a cached program (crobust.attacks._stepping), a new key per attack call
        (_, (per_example, logits)), grad = jax.value_and_grad(total, has_aux=True)(x_adv)
        grad = jnp.where(jnp.isnan(grad), 0.0, grad)
        return per_example, logits, grad

    return evaluate


def predicts(logits, y):
    """argmax_j z_j == y, shape (N,) bool."""
    return jnp.argmax(logits, axis=-1) == y


def select_runs(values, index):
    """Pick run index[n] for every example n from values of shape (R, N, ...)."""
    idx = jnp.reshape(index, (1,) + index.shape + (1,) * (values.ndim - 2))
    return jnp.take_along_axis(values, idx, axis=0)[0]


# --------------------------------------------------------------------------------------------------------------
# Public entry points: parameters travel as data, compilation is reused

DYNAMIC = ("eps", "step_size", "eps_step", "perturbations")


def _has_tracer(tree) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree))


def _static_names(impl, dynamic=DYNAMIC) -> tuple[str, ...]:
    sig = inspect.signature(impl)
    return tuple(name for name, p in sig.parameters.items()
                 if p.kind is inspect.Parameter.KEYWORD_ONLY and name not in dynamic)


def public_attack(impl, check=None, dynamic=()):
    """Wrap ``impl(logits_fn, x, y, key, **kwargs)`` as a public attack that compiles once per model and shapes.

    Call forms of the wrapped attack:

    - ``attack(jax.tree_util.Partial(apply_fn, params), x, y, key, eps=..., ...)``: ``params`` are leaves of the
      Partial, i.e. traced arguments of one cached ``jax.jit``; a second call with the same ``apply_fn``, the same
      shapes and the same static settings reuses the compiled program, and new weights are always used.
    - ``attack(logits_fn, ...)`` with a plain function (a closure, a lambda, a bound method, or a
      ``functools.partial`` of one): its captured arrays are lifted into such a Partial
      (:func:`crobust.attacks._closure.lift`; what is seen is listed in the package docstring), so it too compiles
      once per code, non-array captures and shapes, and every call uses the arrays the closure holds at that call.
    - any other callable, or a closure capturing something that cannot be passed as data: compiled afresh for this
      call only (``jax.jit`` of ``functools.partial(impl, logits_fn)``), so whatever it reads *now* is used, with a
      one-time :class:`~crobust.attacks._closure.RecompileWarning` per code object naming the Partial form.
    - inside ``jit`` / ``vmap`` / ``grad`` (any argument or captured array is a tracer), or under
      :func:`crobust.attacks._stepping.host_stepped`: ``impl`` is called directly (traced into the caller's
      program, or run eagerly with its loops stepped from the host).

    ``eps``, ``step_size``, ``eps_step`` and ``perturbations`` are traced, and so are the keywords named in
    ``dynamic`` (array arguments of one attack, e.g. FMN's ``starting_points``); every other keyword is static. Value
    checks (x in [0, 1], ε ≥ 0, labels < C) run eagerly before compiling, as the check-then-trace order of ``impl``
    would skip them.
    """
    traced = DYNAMIC + tuple(dynamic)
    static = _static_names(impl, traced)
    defaults = {name: p.default for name, p in inspect.signature(impl).parameters.items()
                if p.kind is inspect.Parameter.KEYWORD_ONLY and p.default is not inspect.Parameter.empty}
    cached = jax.jit(impl, static_argnames=static)
    caller = "crobust.attacks." + impl.__name__.lstrip("_")

    @functools.wraps(impl)
    def attack(logits_fn, x, y, key=None, **kwargs):
        if _has_tracer((x, y, key, {k: kwargs.get(k) for k in traced})) or _stepping.active():
            return impl(logits_fn, x, y, key, **kwargs)     # traced into the caller, or its loops host-stepped
        model = logits_fn if isinstance(logits_fn, jax.tree_util.Partial) else as_data(logits_fn, caller)
        if model is not None and _has_tracer(model):
            return impl(logits_fn, x, y, key, **kwargs)
        if check is not None:
            check(logits_fn, x, y, **{**defaults, **kwargs})
        if model is not None:
            return cached(model, x, y, key, **kwargs)
        return jax.jit(functools.partial(impl, logits_fn), static_argnames=static)(x, y, key, **kwargs)

    attack.impl = impl
    attack.compiled = cached          # the cached jit (inspection: compiled._cache_size())
    return attack
