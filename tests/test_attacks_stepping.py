"""crobust.attacks._stepping: an attack's loops driven from the host compute what the lax loops compute, compile
each iteration once across calls with new captured arrays (never stale), and are the lax loops under tracing or
outside host stepping; the attacks run host-stepped agree with their one-program form."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.tree_util import Partial

from crobust.attacks import _stepping as S
from crobust.attacks import apgd, apgd_t, square


def _counting():
    traces = []

    def body(i, s):
        traces.append(1)
        return s * 3 + i                          # int32: exact in every form
    return body, traces


def test_host_loops_equal_the_lax_loops_exactly_on_integer_state():
    v = jnp.arange(5, dtype=jnp.int32)
    w = jnp.asarray([1, 0, 2], jnp.int32)
    body = lambda i, s: s * 2 + i + w[i % 3]
    cond = lambda s: s[0] < 1000
    step = lambda s: s * 2 + w[0]
    seg = lambda c, x: (c + x * w[1:].sum(), c * x)
    with S.host_stepped():
        host = (S.fori_loop(1, 7, body, v), S.while_loop(cond, step, v), S.scan(seg, v, jnp.arange(4)),
                S.map(lambda r: r * w.sum(), jnp.arange(6).reshape(3, 2)),
                S.vmap(lambda a, b: a * b[:2], in_axes=(1, None))(jnp.arange(6).reshape(2, 3), w))
    lax = (jax.lax.fori_loop(1, 7, body, v), jax.lax.while_loop(cond, step, v), jax.lax.scan(seg, v, jnp.arange(4)),
           jax.lax.map(lambda r: r * w.sum(), jnp.arange(6).reshape(3, 2)),
           jax.vmap(lambda a, b: a * b[:2], in_axes=(1, None))(jnp.arange(6).reshape(2, 3), w))
    for h, l in zip(jax.tree.leaves(host), jax.tree.leaves(lax)):
        np.testing.assert_array_equal(h, l)


def test_the_body_compiles_once_and_every_call_uses_the_arrays_it_holds_then():
    def loop(offset):                               # a new closure each call, over a new array
        return S.fori_loop(0, 4, lambda i, s: s * 3 + i + offset, jnp.zeros(3, jnp.int32))

    with S.host_stepped():
        first = loop(jnp.asarray([1, 2, 3], jnp.int32))
        compiled = S._invoke._cache_size()
        second = loop(jnp.asarray([5, 5, 5], jnp.int32))
    assert S._invoke._cache_size() == compiled      # the second call's four iterations reuse the program
    want = lambda off: jax.lax.fori_loop(0, 4, lambda i, s: s * 3 + i + off, jnp.zeros(3, jnp.int32))
    np.testing.assert_array_equal(first, want(jnp.asarray([1, 2, 3], jnp.int32)))
    np.testing.assert_array_equal(second, want(jnp.asarray([5, 5, 5], jnp.int32)))   # not the first call's


def test_outside_host_stepping_or_under_tracing_the_loop_is_traced_once_into_one_program():
    body, traces = _counting()
    S.fori_loop(0, 5, body, jnp.zeros(2, jnp.int32))
    assert len(traces) == 1                         # lax.fori_loop: the body traced once, no host iterations
    body, traces = _counting()
    with S.host_stepped():
        out = jax.jit(lambda v: S.fori_loop(0, 5, body, v))(jnp.zeros(2, jnp.int32))
        assert len(traces) == 1 and S.active(out)   # a tracer inside: the lax loop in the caller's program
    assert not S.active(jnp.zeros(1))               # the mode ends with the block


def _mlp():
    k1, k2 = jax.random.split(jax.random.key(0))
    params = {"w1": jax.random.normal(k1, (64, 32)) / 8, "w2": jax.random.normal(k2, (32, 10)) / 6}
    apply = lambda p, x: jnp.tanh(x.reshape(x.shape[0], -1) @ p["w1"]) @ p["w2"]
    x = jax.random.uniform(jax.random.key(1), (40, 8, 8, 1))
    y = jnp.argmax(apply(params, x), -1)
    return Partial(apply, params), x, y


@pytest.mark.parametrize("attack,kw", [(apgd, dict(n_iter=30, norm="linf")), (apgd, dict(n_iter=30, norm="l2")),
                                       (apgd_t, dict(n_iter=20, n_target_classes=3, norm="linf")),
                                       (square, dict(n_queries=200, norm="linf")),
                                       (square, dict(n_queries=200, norm="l2"))])
def test_a_host_stepped_attack_agrees_with_its_one_program_form(attack, kw):
    f, x, y = _mlp()
    eps = 0.05 if kw["norm"] == "linf" else 0.5
    program = np.asarray(attack(f, x, y, jax.random.key(3), eps=eps, **kw))
    with S.host_stepped():
        host = np.asarray(attack(f, x, y, jax.random.key(3), eps=eps, **kw))
    # The same operations per iteration in the same order, fused differently by XLA: float32 round-off (~1e-7 of
    # values ≤ 1) per step. A sign step (ℓ∞) or an accept/reject (Square) can turn on a near-tie and send one point
    # elsewhere, so nearly all points, not all, must agree to 1e-5; every point must be an admissible output.
    close = np.all(np.abs(host - program).reshape(len(x), -1) <= 1e-5, axis=1)
    assert close.mean() >= 0.9, close.mean()
    delta = (host - np.asarray(x)).reshape(len(x), -1)
    radius = np.abs(delta).max(1) if kw["norm"] == "linf" else np.linalg.norm(delta, axis=1)
    assert np.all(radius <= eps + 1e-6) and host.min() >= 0 and host.max() <= 1
    wrong = lambda xa: np.asarray(jnp.argmax(f(jnp.asarray(xa)), -1) != y)
    assert abs(int(wrong(host).sum()) - int(wrong(program).sum())) <= 2
