"""The closure form of the public attacks (crobust.attacks._closure): the arrays a plain function captures are traced
data of one cached program, so a later call reuses the program and always uses the arrays the closure holds at that
call; a callable that captures anything else compiles afresh with a one-time hint, and is never stale either.

Every test asserts "new weights used" the same way: ``flipped`` negates the MLP's last layer, so argmax becomes argmin
and every point is misclassified clean, and every attack returns such points unchanged — a program that kept the old
weights would move them. Compilations are counted with the public attack's cached jit (``compiled._cache_size()``).
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

import crobust.attacks as A
from _margins import assert_far_from_ties


def _mlp(params, q):
    """A 16-8-3 tanh MLP on (N, 4, 4, 1) images."""
    return jnp.tanh(q.reshape(q.shape[0], -1) @ params["w1"]) @ params["w2"]


@functools.lru_cache(maxsize=None)
def _setup():
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.uniform(0, 1, (24, 4, 4, 1)).astype(np.float32))
    params = {"w1": jnp.asarray(rng.normal(size=(16, 8)).astype(np.float32)),
              "w2": jnp.asarray(rng.normal(size=(8, 3)).astype(np.float32))}
    assert_far_from_ties(_mlp(params, x))            # the labels are the model's clean decisions, away from ties
    y = jnp.argmax(_mlp(params, x), -1)
    flipped = {"w1": params["w1"], "w2": -params["w2"]}       # logits negated: every point misclassified clean
    return x, y, params, flipped


def _rebindable(params):
    """A nested function over ``params`` and a setter that rebinds its closure cell (``nonlocal``)."""
    def logits(q):
        return _mlp(params, q)

    def rebind(new):
        nonlocal params
        params = new

    return logits, rebind


def test_a_closure_reuses_its_program_and_uses_the_arrays_its_cells_hold_at_each_call():
    x, y, params, flipped = _setup()
    kw = dict(eps=0.3, n_iter=3)                                  # the program of _ATTACKS["apgd"] below
    logits, rebind = _rebindable(params)
    moved = A.apgd(logits, x, y, jax.random.key(0), **kw)
    size = A.apgd.compiled._cache_size()
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1
    # the lifted program computes what the explicit Partial form computes (the same operations, so the same bits)
    np.testing.assert_array_equal(np.asarray(A.apgd(Partial(_mlp, params), x, y, jax.random.key(0), **kw)),
                                  np.asarray(moved))
    size = A.apgd.compiled._cache_size()
    # another function object of the same code over other arrays: the same program, the new weights
    other, _ = _rebindable(flipped)
    np.testing.assert_array_equal(np.asarray(A.apgd(other, x, y, jax.random.key(0), **kw)), np.asarray(x))
    # the same function object, its cell rebound to other arrays and back
    rebind(flipped)
    np.testing.assert_array_equal(np.asarray(A.apgd(logits, x, y, jax.random.key(0), **kw)), np.asarray(x))
    rebind(params)
    np.testing.assert_array_equal(np.asarray(A.apgd(logits, x, y, jax.random.key(0), **kw)), np.asarray(moved))
    assert A.apgd.compiled._cache_size() == size                       # no new compilation after the first two


def test_numpy_arrays_changed_in_place_and_rebound_globals_are_seen():
    x, y, params, flipped = _setup()
    kw = dict(eps=0.3, keep="best")
    host = {k: np.array(v) for k, v in params.items()}                  # NumPy arrays, mutated below
    f = lambda q: _mlp(host, q)
    moved = A.fgsm(f, x, y, **kw)
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1
    size = A.fgsm.compiled._cache_size()
    host["w2"] *= -1.0                                                   # in place: the same objects
    np.testing.assert_array_equal(np.asarray(A.fgsm(f, x, y, **kw)), np.asarray(x))
    assert A.fgsm.compiled._cache_size() == size
    # a module-level function reading a module global: the global is read at each call
    global _GLOBAL_PARAMS
    _GLOBAL_PARAMS = params
    np.testing.assert_array_equal(np.asarray(A.fgsm(_global_logits, x, y, **kw)), np.asarray(moved))
    size = A.fgsm.compiled._cache_size()
    _GLOBAL_PARAMS = flipped
    np.testing.assert_array_equal(np.asarray(A.fgsm(_global_logits, x, y, **kw)), np.asarray(x))
    assert A.fgsm.compiled._cache_size() == size


_GLOBAL_PARAMS = None


def _global_logits(q):
    return _mlp(_GLOBAL_PARAMS, q)


def test_a_changed_non_array_capture_compiles_a_new_program():
    x, y, params, _ = _setup()
    kw = dict(eps=0.3, keep="best")

    def scaled(sign):
        return lambda q: sign * _mlp(params, q)

    moved = A.fgsm(scaled(1.0), x, y, **kw)
    size = A.fgsm.compiled._cache_size()
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1
    np.testing.assert_array_equal(np.asarray(A.fgsm(scaled(-1.0), x, y, **kw)), np.asarray(x))   # −1 is static
    assert A.fgsm.compiled._cache_size() == size + 1
    np.testing.assert_array_equal(np.asarray(A.fgsm(scaled(1.0), x, y, **kw)), np.asarray(moved))
    assert A.fgsm.compiled._cache_size() == size + 1


class _Holder:
    """An object hashed by identity: its attributes can change without the closure seeing a new value."""

    def __init__(self, params):
        self.params = params


def test_a_closure_over_an_object_compiles_afresh_with_one_hint_and_is_never_stale():
    x, y, params, flipped = _setup()
    kw = dict(eps=0.3, keep="best")
    holder = _Holder(params)
    f = lambda q: _mlp(holder.params, q)
    size = A.fgsm.compiled._cache_size()
    with pytest.warns(A.RecompileWarning, match=r"_Holder object.*Partial\(apply_fn, params\)"):
        moved = A.fgsm(f, x, y, **kw)
    assert float(jnp.max(jnp.abs(moved - x))) > 0.1
    holder.params = flipped
    with warnings.catch_warnings():
        warnings.simplefilter("error", A.RecompileWarning)                 # once per code object
        np.testing.assert_array_equal(np.asarray(A.fgsm(f, x, y, **kw)), np.asarray(x))
    assert A.fgsm.compiled._cache_size() == size                           # compiled outside the cache


# every public attack, at the smallest budget that runs its loop
_ATTACKS = {
    "fgsm": (A.fgsm, {}),
    "fgm": (A.fgm, dict(norm="l2")),
    "pgd": (A.pgd, dict(n_iter=2)),
    "apgd": (A.apgd, dict(n_iter=3)),
    "apgd_t": (A.apgd_t, dict(n_iter=3, n_target_classes=2, loss="ce-targeted")),
    "square": (A.square, dict(n_queries=5)),
    "apgd_art": (A.apgd_art, dict(n_iter=3, n_restarts=1, labels="true")),
}


@pytest.mark.parametrize("name", sorted(_ATTACKS))
def test_every_public_attack_compiles_a_closure_once_and_uses_its_new_arrays(name):
    attack, settings = _ATTACKS[name]
    x, y, params, flipped = _setup()
    kw = dict(eps=0.3, **settings)
    moved = attack(_rebindable(params)[0], x, y, jax.random.key(1), **kw)
    size = attack.compiled._cache_size()
    assert np.any(np.asarray(moved) != np.asarray(x))
    np.testing.assert_array_equal(np.asarray(attack(_rebindable(flipped)[0], x, y, jax.random.key(1), **kw)),
                                  np.asarray(x))
    assert attack.compiled._cache_size() == size


def test_universal_perturbation_compiles_a_closure_once_and_uses_its_new_arrays():
    x, y, params, flipped = _setup()
    kw = dict(eps=0.3, n_passes=1, batch_size=8)
    delta = A.universal_perturbation(_rebindable(params)[0], x, y, jax.random.key(2), **kw)
    size = A.universal_perturbation.compiled._cache_size()
    delta_flipped = A.universal_perturbation(_rebindable(flipped)[0], x, y, jax.random.key(2), **kw)
    assert A.universal_perturbation.compiled._cache_size() == size
    # the same data order and start: only the weights differ, so a stale program would return the same δ
    assert float(jnp.max(jnp.abs(delta_flipped - delta))) > 0.01


def test_a_closure_over_tracers_is_traced_into_the_callers_program():
    x, y, params, flipped = _setup()
    run = jax.jit(lambda p: A.fgsm(_rebindable(p)[0], x, y, eps=0.3))
    np.testing.assert_array_equal(np.asarray(run(params)), np.asarray(A.fgsm(_rebindable(params)[0], x, y, eps=0.3)))
    np.testing.assert_array_equal(np.asarray(run(flipped)), np.asarray(x))


def test_what_the_lifting_sees():
    """crobust.attacks._closure.lift directly (no attack compiled): which captures become traced leaves, which are
    keys, and which make it refuse."""
    from crobust.attacks._closure import Unseen, lift
    from crobust.models import MLP

    x, _, params, flipped = _setup()
    leaves = lambda f: lift(f).args[0]
    key = lambda f: lift(f).func
    # a flax model's bound apply in a functools.partial: the module is a key (hashed by value), params the leaves
    model = MLP(num_classes=3, width=8, depth=2, mean=(0.5,), std=(0.25,))
    variables = model.init(jax.random.key(0), x[:1])
    f = functools.partial(model.apply, variables)
    assert len(leaves(f)) == len(jax.tree.leaves(variables))
    np.testing.assert_array_equal(np.asarray(lift(f)(x)), np.asarray(f(x)))
    # cells, defaults and nested functions: every array is a leaf, in a key shared by equal code and shapes
    inner = _rebindable(params)[0]
    outer = lambda q, scale=jnp.float32(2.0): scale * inner(q)
    assert len(leaves(outer)) == 2 + 1                                    # w1, w2 (through inner) and the default
    np.testing.assert_array_equal(np.asarray(lift(outer)(x)), np.asarray(outer(x)))
    assert key(_rebindable(params)[0]) == key(_rebindable(flipped)[0])
    # a Python scalar is part of the key (a new shape is not: that is jax's own key, the abstract value)
    scaled = lambda s: (lambda q: s * q)
    assert key(scaled(2.0)) == key(scaled(2.0)) and key(scaled(2.0)) != key(scaled(3.0))
    assert key(scaled(2)) != key(scaled(2.0))                            # keyed by type too: 2 == 2.0 in Python
    # a jitted function is a static part (as jax.jit treats it), an identity-hashed object is refused
    jitted = jax.jit(jnp.tanh)
    assert len(leaves(lambda q: jitted(inner(q)))) == 2
    holder = _Holder(params)
    with pytest.raises(Unseen, match="_Holder object"):
        lift(lambda q: _mlp(holder.params, q))
    with pytest.raises(Unseen, match="_HolderModel object"):
        lift(_HolderModel(params).logits)
    with pytest.raises(Unseen, match="not a plain function"):
        lift(jitted)


class _HolderModel(_Holder):
    def logits(self, q):
        return _mlp(self.params, q)


def test_a_flax_modules_apply_read_anew_lifts_to_the_same_program_and_its_new_weights():
    # ``model.apply`` is a new bound-method object at every attribute access and forwards flax's ``__wrapped__``:
    # it is seen as its function and module (equal templates), not keyed by the identity of one access
    import flax.linen as nn
    from crobust.attacks._closure import lift
    model = nn.Dense(3)
    x = jnp.ones((2, 4))
    params = model.init(jax.random.key(0), x)
    first, second = lift(Partial(model.apply, params)), lift(Partial(model.apply, jax.tree.map(jnp.negative, params)))
    assert first.func == second.func and hash(first.func) == hash(second.func)
    np.testing.assert_array_equal(second(x), -model.apply(params, x))      # Dense of negated weights and bias
