"""crobust.regularizers and crobust._linalg: every penalty against a numpy float64 reference on random parameter
trees (with the reference code's layer exclusions), the nuclear norm's U Vᵀ gradient against numpy and a finite
difference, invariances, the Frobenius projection, bad input, and the CPU-safe SVD (including the jaxlib 0.10.2
batched-LAPACK deadlock, run in a subprocess with a timeout so a regression fails instead of hanging)."""

import os
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import _linalg
from crobust import regularizers as R
from crobust._errors import CrobustError

IN, H, C = 20, 12, 5          # input dim, hidden width, classes


def _dense_tree(seed=0, depth=3, width=H, bias=False, lead=()):
    """A random MLP parameter tree in the flax layout: hidden_i/kernel (in, out), head/kernel (width, C)."""
    rng = np.random.default_rng(seed)
    tree, fan_in = {}, IN
    for i in range(depth - 1):
        tree[f"hidden_{i}"] = {"kernel": rng.standard_normal(lead + (fan_in, width)).astype(np.float32)}
        if bias:
            tree[f"hidden_{i}"]["bias"] = rng.standard_normal(lead + (width,)).astype(np.float32)
        fan_in = width
    tree["head"] = {"kernel": rng.standard_normal(lead + (fan_in, C)).astype(np.float32)}
    if bias:
        tree["head"]["bias"] = rng.standard_normal(lead + (C,)).astype(np.float32)
    return {"params": tree}


def _low_rank_tree(seed=0, depth=3, rank=3):
    rng = np.random.default_rng(seed)
    tree, fan_in = {}, IN
    for i in range(depth - 1):
        tree[f"hidden_{i}"] = {"down": rng.standard_normal((fan_in, rank)).astype(np.float32),
                               "up": rng.standard_normal((rank, H)).astype(np.float32)}
        fan_in = H
    tree["head"] = {"kernel": rng.standard_normal((H, C)).astype(np.float32)}
    return {"params": tree}


def _np_hidden(tree):
    """numpy float64 paper matrices W (out × in) of the hidden layers (A·B = (down@up)ᵀ for low rank)."""
    out = []
    for name, leaf in sorted(tree["params"].items()):
        if not name.startswith("hidden_"):
            continue
        if "kernel" in leaf:
            out.append(np.asarray(leaf["kernel"], np.float64).T)
        else:
            out.append((np.asarray(leaf["down"], np.float64) @ np.asarray(leaf["up"], np.float64)).T)
    return out


def _nuc(w):
    return float(np.sum(np.linalg.svd(w, compute_uv=False)))


def _close(got, want, rtol=1e-5):
    np.testing.assert_allclose(float(got), float(want), rtol=rtol)


# ----------------------------------------------------------------------------------------------------------
# Penalties against numpy


def test_l1_sums_every_leaf_including_head_and_biases():
    tree = _dense_tree(1, bias=True)
    want = sum(np.abs(np.asarray(x, np.float64)).sum() for x in jax.tree.leaves(tree))
    _close(R.l1(tree, 0.3), 0.3 * want)
    head = np.abs(tree["params"]["head"]["kernel"]).sum() + np.abs(tree["params"]["head"]["bias"]).sum()
    assert head > 0.05 * want                       # the head is a real part of the sum
    _close(R.get_penalty("l1")(tree["params"], 1.0), want)   # the unwrapped tree too


def test_group_lasso_is_sum_of_hidden_row_norms_head_excluded():
    tree = _dense_tree(2)
    want = sum(np.linalg.norm(w, axis=1).sum() for w in _np_hidden(tree))
    _close(R.group_lasso(tree, 0.7), 0.7 * want)
    # rows are OUTPUT neurons: the column-norm sum differs (a transpose would be caught)
    cols = sum(np.linalg.norm(w, axis=0).sum() for w in _np_hidden(tree))
    assert abs(cols - want) > 1e-2 * want
    # the head does not enter: scaling it changes nothing
    big_head = jax.tree.map(lambda x: x, tree)
    big_head["params"]["head"]["kernel"] = 100.0 * tree["params"]["head"]["kernel"]
    _close(R.group_lasso(big_head, 0.7), 0.7 * want)


def test_group_lasso_keeps_a_hidden_layer_whose_width_equals_num_classes():
    # the reference excludes by out == num_classes; crobust by name, so a width-C hidden layer still counts
    tree = _dense_tree(3, width=C)
    want = sum(np.linalg.norm(w, axis=1).sum() for w in _np_hidden(tree))
    assert len(_np_hidden(tree)) == 2
    _close(R.group_lasso(tree, 1.0), want)


def test_scale_invariant_reference_bounds_and_invariance():
    tree = _dense_tree(4)
    mats = _np_hidden(tree)
    want = sum(np.linalg.norm(w, axis=1).sum() / np.linalg.norm(w) for w in mats)
    _close(R.scale_invariant(tree, 0.5), 0.5 * want)
    for w in mats:                                   # each layer's term lies in [1, √h]
        t = np.linalg.norm(w, axis=1).sum() / np.linalg.norm(w)
        assert 1.0 <= t <= np.sqrt(w.shape[0])
    # W → c_l W per layer (different c per layer) leaves it unchanged; the head is irrelevant
    scaled = {"params": {name: {"kernel": leaf["kernel"] * c} for (name, leaf), c in
                         zip(sorted(tree["params"].items()), (7.0, 0.01, 3.0))}}
    _close(R.scale_invariant(scaled, 0.5), 0.5 * want, rtol=1e-5)
    # a single non-zero row reaches the lower bound 1 per layer
    one_row = {"params": {"hidden_0": {"kernel": np.zeros((IN, H), np.float32)}, "head": tree["params"]["head"]}}
    one_row["params"]["hidden_0"]["kernel"][:, 3] = 1.0
    _close(R.scale_invariant(one_row, 1.0), 1.0)


def test_group_lasso_scales_linearly_and_is_a_norm_sum():
    tree = _dense_tree(5)
    base = float(R.group_lasso(tree, 1.0))
    for c in (0.5, 3.0):
        scaled = jax.tree.map(lambda x: c * x, tree)
        _close(R.group_lasso(scaled, 1.0), c * base)
    _close(R.group_lasso(tree, 2.5), 2.5 * base)


def test_nuclear_dense_sums_singular_values_of_hidden_layers():
    tree = _dense_tree(6, depth=4)
    want = sum(_nuc(w) for w in _np_hidden(tree))
    _close(R.nuclear(tree, 0.2), 0.2 * want)
    head = _nuc(np.asarray(tree["params"]["head"]["kernel"], np.float64))
    assert head > 0.1 * want                         # including the head would be visible
    _close(R.nuclear_factors(tree, 0.2), 0.2 * want)  # dense: the reference's rule is the same


def test_nuclear_low_rank_uses_product_and_factors_variant_uses_factors():
    tree = _low_rank_tree(7)
    want = sum(_nuc(w) for w in _np_hidden(tree))
    _close(R.nuclear(tree, 1.0), want)
    factors = sum(_nuc(np.asarray(leaf[k], np.float64)) for name, leaf in tree["params"].items()
                  if name.startswith("hidden_") for k in ("down", "up"))
    _close(R.nuclear_factors(tree, 1.5), 1.5 * factors)
    assert abs(factors - want) > 0.05 * want         # the two rules are really different


def test_none_penalty_is_zero_and_registry_is_complete():
    tree = _dense_tree(8)
    assert float(R.get_penalty("none")(tree, 3.0)) == 0.0
    assert set(R.PENALTIES) == {"none", "l1", "group_lasso", "scale_invariant", "nuclear", "nuclear_factors",
                              "beta_control", "alignment"}
    for name in R.PENALTIES:                         # α = 0 switches every penalty off
        assert float(R.get_penalty(name)(tree, 0.0)) == 0.0


def test_penalties_take_a_traced_alpha_under_vmap():
    trees = _dense_tree(9, lead=(3,))
    alphas = jnp.asarray([0.0, 0.1, 1.0])
    got = jax.vmap(R.nuclear)(trees, alphas)
    for m in range(3):
        one = jax.tree.map(lambda x: x[m], trees)
        want = float(alphas[m]) * sum(_nuc(w) for w in _np_hidden(one))
        np.testing.assert_allclose(float(got[m]), want, rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------------------------------------------------
# Nuclear-norm gradient


@pytest.mark.parametrize("shape", [(9, 14), (14, 9)])
def test_nuclear_norm_vjp_is_u_vt(shape):
    rng = np.random.default_rng(10)
    w = rng.standard_normal(shape).astype(np.float32)
    u, s, vt = np.linalg.svd(w.astype(np.float64), full_matrices=False)
    _close(R.nuclear_norm(w), s.sum())
    g = np.asarray(jax.grad(R.nuclear_norm)(jnp.asarray(w)))
    np.testing.assert_allclose(g, u @ vt, atol=2e-5)
    # central finite difference of the penalty along a random direction
    d = rng.standard_normal(shape)
    d /= np.linalg.norm(d)
    h = 1e-2
    f = lambda a: float(R.nuclear_norm(jnp.asarray(a, jnp.float32)))
    fd = (f(w + h * d) - f(w - h * d)) / (2 * h)
    np.testing.assert_allclose(fd, np.sum(g * d), rtol=2e-2, atol=2e-3)
    # and against numpy's own (float64) finite difference: the forward value is right, not only the VJP
    fd64 = (_nuc(w + h * d) - _nuc(w - h * d)) / (2 * h)
    np.testing.assert_allclose(np.sum(g * d), fd64, rtol=1e-2, atol=1e-3)


def test_nuclear_norm_vjp_batched_and_cotangent_scaled():
    rng = np.random.default_rng(11)
    w = rng.standard_normal((2, 3, 6, 5)).astype(np.float32)
    weights = jnp.asarray(rng.uniform(0.5, 2.0, (2, 3)), jnp.float32)
    g = np.asarray(jax.grad(lambda a: jnp.sum(weights * R.nuclear_norm(a)))(jnp.asarray(w)))
    for i in range(2):
        for j in range(3):
            u, _, vt = np.linalg.svd(w[i, j].astype(np.float64), full_matrices=False)
            np.testing.assert_allclose(g[i, j], float(weights[i, j]) * (u @ vt), atol=3e-5)
    gv = np.asarray(jax.vmap(jax.grad(R.nuclear_norm))(jnp.asarray(w[0])))   # under vmap too
    np.testing.assert_allclose(gv, g[0] / np.asarray(weights[0])[:, None, None], atol=3e-5)


def test_nuclear_penalty_gradient_through_the_tree():
    tree = jax.tree.map(jnp.asarray, _dense_tree(12))
    grads = jax.grad(lambda p: R.nuclear(p, 0.3))(tree)["params"]
    np.testing.assert_array_equal(np.asarray(grads["head"]["kernel"]), 0.0)        # head excluded
    for name in ("hidden_0", "hidden_1"):
        k = np.asarray(tree["params"][name]["kernel"], np.float64)
        u, _, vt = np.linalg.svd(k.T, full_matrices=False)
        # d/dK of ‖Kᵀ‖_* is (U Vᵀ)ᵀ
        np.testing.assert_allclose(np.asarray(grads[name]["kernel"]), 0.3 * (u @ vt).T, atol=2e-5)
    lr = jax.tree.map(jnp.asarray, _low_rank_tree(13))
    g = jax.grad(lambda p: R.nuclear(p, 1.0))(lr)["params"]["hidden_0"]
    down, up = (np.asarray(lr["params"]["hidden_0"][k], np.float64) for k in ("down", "up"))
    u, _, vt = np.linalg.svd((down @ up).T, full_matrices=False)
    gk = (u @ vt).T                                  # gradient w.r.t. the product K = down @ up
    np.testing.assert_allclose(np.asarray(g["down"]), gk @ up.T, atol=5e-5)
    np.testing.assert_allclose(np.asarray(g["up"]), down.T @ gk, atol=5e-5)


# ----------------------------------------------------------------------------------------------------------
# Projection


def test_frobenius_projection_dense_restores_norms_and_keeps_head():
    tree = _dense_tree(14)
    ref = {"hidden_0": 2.0, "hidden_1": 0.5}
    out = R.frobenius_projection(tree, ref)
    assert set(out) == {"params"}
    norms = R.hidden_frobenius_norms(out)
    for name, target in ref.items():
        _close(norms[name], target)
        w0 = np.asarray(tree["params"][name]["kernel"], np.float64)
        w1 = np.asarray(out["params"][name]["kernel"], np.float64)
        np.testing.assert_allclose(w1, w0 * target / np.linalg.norm(w0), rtol=1e-5)   # same direction
    np.testing.assert_array_equal(np.asarray(out["params"]["head"]["kernel"]), tree["params"]["head"]["kernel"])
    unwrapped = R.frobenius_projection(tree["params"], ref)                          # layout preserved
    assert "params" not in unwrapped
    _close(R.hidden_frobenius_norms(unwrapped)["hidden_1"], 0.5)


def test_frobenius_projection_low_rank_uses_the_product_norm():
    tree = _low_rank_tree(15)
    ref = {"hidden_0": 3.0, "hidden_1": 0.2}
    out = R.frobenius_projection(tree, ref)
    for name, target in ref.items():
        leaf0, leaf1 = tree["params"][name], out["params"][name]
        prod = np.asarray(leaf1["down"], np.float64) @ np.asarray(leaf1["up"], np.float64)
        _close(np.linalg.norm(prod), target)
        c = target / np.linalg.norm(np.asarray(leaf0["down"], np.float64) @ np.asarray(leaf0["up"], np.float64))
        for k in ("down", "up"):                      # both factors by √c: their balance is kept
            np.testing.assert_allclose(np.asarray(leaf1[k]), np.sqrt(c) * np.asarray(leaf0[k]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(out["params"]["head"]["kernel"]), tree["params"]["head"]["kernel"])
    # hidden_frobenius_norms of a low-rank tree is the product's norm
    _close(R.hidden_frobenius_norms(tree)["hidden_0"], np.linalg.norm(_np_hidden(tree)[0]))


# ----------------------------------------------------------------------------------------------------------
# Bad input


def test_row_penalties_refuse_low_rank_models():
    tree = _low_rank_tree(16)
    with pytest.raises(CrobustError, match="dense"):
        R.group_lasso(tree, 1.0)
    with pytest.raises(CrobustError, match="dense"):
        R.scale_invariant(tree, 1.0)


def test_unknown_regulariser_lists_the_choices():
    with pytest.raises(CrobustError) as info:
        R.get_penalty("nuclear_norm")
    msg = str(info.value)
    assert "nuclear_norm" in msg
    for name in R.PENALTIES:
        assert name in msg


# ----------------------------------------------------------------------------------------------------------
# crobust._linalg


def test_linalg_svd_batched_matches_numpy():
    rng = np.random.default_rng(17)
    for shape in [(7, 4), (2, 3, 5, 8), (3, 8, 5)]:
        w = rng.standard_normal(shape).astype(np.float32)
        u, s, vt = (np.asarray(a, np.float64) for a in _linalg.svd(w))
        k = min(shape[-2:])
        assert u.shape == shape[:-1] + (k,) and s.shape == shape[:-2] + (k,) and vt.shape == shape[:-2] + (k, shape[-1])
        ref = np.linalg.svd(w.astype(np.float64), compute_uv=False)
        np.testing.assert_allclose(s, ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(np.asarray(_linalg.svdvals(w)), ref, rtol=1e-5, atol=1e-5)
        assert np.all(np.diff(s, axis=-1) <= 0)
        np.testing.assert_allclose((u * s[..., None, :]) @ vt, w, atol=1e-5)
        eye = np.broadcast_to(np.eye(k), shape[:-2] + (k, k))
        np.testing.assert_allclose(np.swapaxes(u, -1, -2) @ u, eye, atol=1e-5)
        np.testing.assert_allclose(vt @ np.swapaxes(vt, -1, -2), eye, atol=1e-5)


def test_linalg_svd_under_vmap_and_jit_matches_numpy():
    rng = np.random.default_rng(18)
    w = rng.standard_normal((4, 2, 6, 3)).astype(np.float32)
    ref = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    s_v = jax.jit(jax.vmap(_linalg.svdvals))(w)                  # vmap over a batched call: nested batching
    np.testing.assert_allclose(np.asarray(s_v), ref, rtol=1e-5, atol=1e-5)
    u, s, vt = jax.vmap(jax.vmap(_linalg.svd))(w)
    np.testing.assert_allclose(np.asarray(s), ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray((u * s[..., None, :]) @ vt), w, atol=1e-5)


_DEADLOCK_SCRIPT = textwrap.dedent("""
    import os
    # the hang needed as many concurrent batched LAPACK calls as the intra-op pool has threads (2 on CI);
    # pin this process to 2 cores so the test means the same thing on a bigger machine
    if hasattr(os, "sched_setaffinity") and len(os.sched_getaffinity(0)) > 2:
        os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:2])
    import jax, jax.numpy as jnp, numpy as np
    from crobust import _linalg
    from crobust import regularizers as R

    rng = np.random.default_rng(0)
    a = rng.standard_normal((8, 24, 16)).astype(np.float32)
    b = rng.standard_normal((8, 16, 16)).astype(np.float32)

    def member(x, y):            # two independent SVDs per member, as the nuclear norms of two layers
        s1, s2 = _linalg.svdvals(x), _linalg.svd(y)[1]
        tree = {"params": {"hidden_0": {"kernel": x}, "hidden_1": {"kernel": y}, "head": {"kernel": y}}}
        g = jax.grad(lambda p: R.nuclear(p, 1.0))(tree)
        return jnp.sum(s1), jnp.sum(s2), g["params"]["hidden_1"]["kernel"]

    fn = jax.jit(jax.vmap(member))
    for _ in range(3):
        s1, s2, g = jax.block_until_ready(fn(a, b))
    ref1 = np.linalg.svd(a.astype(np.float64), compute_uv=False).sum(-1)
    ref2 = np.linalg.svd(b.astype(np.float64), compute_uv=False).sum(-1)
    assert np.allclose(s1, ref1, rtol=1e-5) and np.allclose(s2, ref2, rtol=1e-5), (s1, ref1, s2, ref2)
    assert np.all(np.isfinite(np.asarray(g)))
    print("OK")
""")


def test_two_batched_svds_in_a_vmapped_jit_do_not_deadlock():
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    try:
        proc = subprocess.run([sys.executable, "-c", _DEADLOCK_SCRIPT], capture_output=True, text=True,
                              timeout=60, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail("a jitted, vmapped program with two batched SVDs over 8 members hung (> 60 s): "
                    "the jaxlib 0.10.2 batched-LAPACK deadlock is back (see crobust/_linalg.py)")
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().endswith("OK")


# ----------------------------------------------------------------------------------------------------------
# The SVD-free (polar, Newton–Schulz) route of the nuclear norm, against a float64 SVD

def _planted(m, n, sig, seed):
    """U diag(sig) Vᵀ (m, n) with random orthonormal U, V: a matrix whose singular values we choose."""
    rng = np.random.default_rng(seed)
    u, _ = np.linalg.qr(rng.standard_normal((m, m)))
    v, _ = np.linalg.qr(rng.standard_normal((n, n)))
    k = len(sig)
    return ((u[:, :k] * np.asarray(sig)) @ v[:, :k].T).astype(np.float32)


_SPECTRA = {
    # σ from 1 down to 1e-6: condition number 1e6 (the smallest ones are below the schedule's ℓ0 = 1e-4)
    "ill_conditioned": (40, 70, np.logspace(0, -6, 40)),
    # 15 non-zero σ of 40: rank-deficient; the zero ones become float32 round-off ~1e-7·σ1
    "rank_deficient": (40, 60, np.r_[np.linspace(3.0, 1.0, 15), np.zeros(25)]),
    # two blocks of equal σ (U, V not unique, U Vᵀ is)
    "repeated": (36, 36, np.r_[np.full(18, 2.0), np.full(18, 0.5)]),
    # tall: the iteration runs on Wᵀ
    "tall_random": (80, 30, None),
}


def _spectrum_case(name):
    m, n, sig = _SPECTRA[name]
    if sig is None:
        return np.random.default_rng(3).standard_normal((m, n)).astype(np.float32)
    return _planted(m, n, sig, seed=len(name))


@pytest.mark.parametrize("name", sorted(_SPECTRA))
@pytest.mark.parametrize("method", ["polar", "svd"])
def test_nuclear_norm_value_and_subgradient_against_float64_svd(name, method):
    """Value: relative 1e-5 of the float64 SVD's Σσ (float32 inputs; the polar route's guarded error is ≤ 3e-6).
    Gradient G: a valid subgradient, checked by its defining properties with float32 round-off allowances:
    ⟨G, W⟩ = ‖W‖_* (1e-5 relative), ‖G‖₂ ≤ 1 + 1e-5, and in W's SVD basis U_rᵀ G V_r = I (1e-3: a direction
    with σ_i ~ 1e-4·σ1 converges to q_i within that), U_rᵀ G (I − V_rV_rᵀ) ≈ 0, (I − U_rU_rᵀ) G V_r ≈ 0 on the
    directions with σ_i ≥ 1e-3·σ1 (r of them); the rest, Z, has ‖Z‖₂ ≤ 1 + 1e-5."""
    w = _spectrum_case(name)
    w64 = w.astype(np.float64)
    u, s, vt = np.linalg.svd(w64, full_matrices=False)
    want = s.sum()
    val = float(jax.jit(lambda a: R.nuclear_norm(a, method))(w))
    assert val == pytest.approx(want, rel=1e-5)
    g = np.asarray(jax.jit(jax.grad(lambda a: R.nuclear_norm(a, method)))(w), np.float64)
    assert np.sum(g * w64) == pytest.approx(want, rel=1e-5)
    assert np.linalg.norm(g, 2) <= 1.0 + 1e-5
    r = int(np.sum(s >= 1e-3 * s[0]))
    ur, vr = u[:, :r], vt[:r].T
    np.testing.assert_allclose(ur.T @ g @ vr, np.eye(r), atol=1e-3)
    pu, pv = np.eye(w.shape[0]) - ur @ ur.T, np.eye(w.shape[1]) - vr @ vr.T
    np.testing.assert_allclose(ur.T @ g @ pv, 0.0, atol=1e-3)
    np.testing.assert_allclose(pu @ g @ vr, 0.0, atol=1e-3)
    assert np.linalg.norm(pu @ g @ pv, 2) <= 1.0 + 1e-5


def test_polar_route_equals_svd_route_on_random_layers_and_under_vmap():
    """The two methods compute the same maths: on a batch of random (well-conditioned) layers the values agree to
    float32 round-off and the gradients (U Vᵀ) to 2e-5 absolute, also under an outer vmap (a population)."""
    rng = np.random.default_rng(21)
    w = jnp.asarray(rng.standard_normal((3, 2, 12, 20)), jnp.float32)
    f = {m: jax.jit(jax.vmap(jax.value_and_grad(lambda a, m=m: jnp.sum(R.nuclear_norm(a, m)))))
         for m in ("polar", "svd")}
    (vp, gp), (vs, gs) = f["polar"](w), f["svd"](w)
    np.testing.assert_allclose(np.asarray(vp), np.asarray(vs), rtol=2e-6)
    np.testing.assert_allclose(np.asarray(gp), np.asarray(gs), atol=2e-5)


def test_polar_zero_matrix_and_guard():
    from crobust import _polar
    q, val, bound, extra = _polar.polar_with_info(jnp.zeros((5, 7)))
    assert float(val) == 0.0 and np.all(np.asarray(q) == 0.0) and float(bound) == 0.0 and int(extra) == 0
    # σ spread over 1 … 1e-5 with most of ‖W‖_* below ℓ0·s: the guard must keep iterating (extra > 0) until the
    # value is within the guard; with the guard off (max_extra = 0) the error is visibly larger
    w = _planted(30, 30, np.r_[1.0, np.full(29, 3e-5)], seed=5)
    want = np.linalg.svd(w.astype(np.float64), compute_uv=False).sum()
    _, v_on, _, k_on = _polar.polar_with_info(jnp.asarray(w))
    _, v_off, _, _ = _polar.polar_with_info(jnp.asarray(w), max_extra=0)
    assert int(k_on) > 0
    assert abs(float(v_on) - want) <= 1e-5 * want < abs(float(v_off) - want)
    with pytest.raises(CrobustError, match="nuclear-norm method"):
        R.nuclear_norm(w, "qr")


# ----------------------------------------------------------------------------------------------------------
# Several penalty terms

def test_two_penalties_with_strengths_a_and_0_equal_the_single_penalty_a():
    """0·R(θ) is exactly 0 and has an exactly zero gradient where R is finite, and x + 0 = x in floating point, so
    (a, 0) reproduces the single penalty a bit for bit, value and gradient, in either order of the terms."""
    tree = jax.tree.map(jnp.asarray, _dense_tree(seed=3))
    a = jnp.float32(0.37)
    single = lambda p: R.get_penalty("group_lasso")(p, a)                                    # noqa: E731
    for terms in ((("group_lasso", "alpha"), ("beta_control", "beta_control")),
                  (("nuclear", "nuclear"), ("group_lasso", "alpha"))):
        both = R.combined_penalty(terms)
        strengths = {"alpha": a, "beta_control": jnp.float32(0.0), "nuclear": jnp.float32(0.0)}
        v1, g1 = jax.value_and_grad(single)(tree)
        v2, g2 = jax.value_and_grad(lambda p: both(p, strengths))(tree)
        assert float(v1) == float(v2)
        for x, y in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_combined_penalty_is_the_sum_of_its_terms_against_numpy():
    tree = _dense_tree(seed=4)
    ws = _np_hidden(tree)
    rows = sum(np.linalg.norm(w, axis=1).sum() for w in ws)
    nuc = sum(_nuc(w) for w in ws)
    both = R.combined_penalty((("group_lasso", "alpha"), ("nuclear", "nuclear")), nuclear_method="svd")
    _close(both(tree, {"alpha": 0.2, "nuclear": 0.05}), 0.2 * rows + 0.05 * nuc)
    # a single term is that penalty at its own strength, whatever the axis is called
    _close(R.combined_penalty((("nuclear", "nuclear"),), nuclear_method="svd")(tree, {"nuclear": 0.3}), 0.3 * nuc)
    with pytest.raises(CrobustError, match="at least one"):
        R.combined_penalty(())
    with pytest.raises(CrobustError, match="regularizer.*group_lasso"):
        R.combined_penalty((("group_laso", "alpha"),))
