"""crobust.models: exact parameter counts, depth semantics, PyTorch-default initialisation, the one
flax-kernel → paper-matrix conversion (orientation, low rank, conv matricisation), normalisation inside the
model, the penultimate representation z, and bad input. Every forward pass is checked against a numpy chain
built from ``layer_matrices``, so a transpose anywhere fails."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._errors import CrobustError
from crobust.models import MLP, LowRankDense, LowRankMLP, hidden_matrices, kernel_to_matrix, layer_matrices
from crobust.models import low_rank_to_matrix


def _n_weights(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _random_params(model, x, seed=0):
    """Parameters of ``model`` with the init's structure (``eval_shape``: nothing compiled) and random values.

    Forward-pass tests use these instead of ``model.init`` (which is tested on its own): an eager flax init
    compiles every random op separately and costs seconds on a 2-core CPU.
    """
    rng = np.random.default_rng(seed)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros(np.shape(x), jnp.float32))
    return jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(s.shape[0]), jnp.float32),
                        shapes)


def _np_forward(mats, x_flat):
    """Bias-free ReLU chain in float64 from paper matrices W (out × in): h ← relu(h Wᵀ), logits = z W_headᵀ."""
    names = list(mats)
    h = np.asarray(x_flat, np.float64)
    for name in names[:-1]:
        h = np.maximum(h @ np.asarray(mats[name], np.float64).T, 0.0)
    return h @ np.asarray(mats[names[-1]], np.float64).T, h


# ----------------------------------------------------------------------------------------------------------
# Parameter counts and depth


def test_paper_mlp_parameter_count_cifar_shapes():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(MLP(10, 2000, depth=5).init, jax.random.key(0), x)
    assert _n_weights(shapes) == 18_164_000
    p = shapes["params"]
    assert sorted(p) == ["head", "hidden_0", "hidden_1", "hidden_2", "hidden_3"]
    assert p["hidden_0"]["kernel"].shape == (3072, 2000)
    assert p["head"]["kernel"].shape == (2000, 10)


def test_paper_low_rank_mlp_parameter_count_cifar_shapes():
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(LowRankMLP(10, 2000, rank=15, depth=5).init, jax.random.key(0), x)
    assert _n_weights(shapes) == 276_080
    p = shapes["params"]
    assert p["hidden_0"]["down"].shape == (3072, 15) and p["hidden_0"]["up"].shape == (15, 2000)
    assert p["hidden_3"]["down"].shape == (2000, 15)
    assert p["head"]["kernel"].shape == (2000, 10)          # the head stays dense


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_depth_counts_weight_matrices(depth):
    x = jnp.zeros((1, 4, 4, 2))
    params = jax.eval_shape(MLP(3, 7, depth=depth).init, jax.random.key(1), x)["params"]
    assert sorted(params) == sorted([f"hidden_{i}" for i in range(depth - 1)] + ["head"])
    mats = layer_matrices(jax.tree.map(lambda a: np.zeros(a.shape, np.float32), params))
    assert list(mats) == [f"hidden_{i}" for i in range(depth - 1)] + ["head"]   # forward order
    fan_in = 32
    for name in list(mats)[:-1]:
        assert mats[name].shape == (7, fan_in)
        fan_in = 7
    assert mats["head"].shape == (3, fan_in)


def test_depth_one_is_linear():
    model = MLP(5, 11, depth=1)
    rng = np.random.default_rng(0)
    x1, x2 = (jnp.asarray(rng.standard_normal((6, 3, 3, 2)), jnp.float32) for _ in range(2))
    params = _random_params(model, x1)
    f = lambda x: np.asarray(model.apply(params, x), np.float64)
    # a ReLU anywhere would break additivity and homogeneity under a sign flip
    np.testing.assert_allclose(f(x1 + x2), f(x1) + f(x2), atol=1e-5)
    np.testing.assert_allclose(f(-2.0 * x1), -2.0 * f(x1), atol=1e-5)
    # and depth 2 is not linear
    model2 = MLP(5, 11, depth=2)
    p2 = _random_params(model2, x1)
    g = lambda x: np.asarray(model2.apply(p2, x), np.float64)
    assert np.max(np.abs(g(-x1) + g(x1))) > 1e-2


# ----------------------------------------------------------------------------------------------------------
# Initialisation


def test_dense_init_is_torch_kaiming_uniform_a_sqrt5():
    fan_in, width, classes = 256, 512, 64
    model = MLP(classes, width, depth=2, use_bias=True)
    params = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1, 16, 16, 1)))["params"]
    for kernel, fin in ((params["hidden_0"]["kernel"], fan_in), (params["head"]["kernel"], width)):
        w = np.asarray(kernel, np.float64).ravel()
        bound = 1.0 / np.sqrt(fin)
        assert np.max(np.abs(w)) <= bound * (1 + 1e-6)
        assert np.max(w) > 0.99 * bound and np.min(w) < -0.99 * bound       # uniform fills the interval
        var = 1.0 / (3.0 * fin)
        se = np.sqrt((bound ** 4 / 5 - var ** 2) / w.size)                   # std error of the sample variance
        assert abs(np.mean(w ** 2) - var) < 5 * se
        assert abs(np.mean(w)) < 5 * np.sqrt(var / w.size)
        # uniform, not a normal of the same variance: E w⁴ = b⁴/5 (normal: 3·var² = b⁴/3)
        assert abs(np.mean(w ** 4) / bound ** 4 - 0.2) < 0.01
    # biases (the reference's --bias): torch's U(±1/√fan_in), not zeros
    for name, fin in (("hidden_0", fan_in), ("head", width)):
        b = np.asarray(params[name]["bias"])
        assert np.max(np.abs(b)) <= 1 / np.sqrt(fin) * (1 + 1e-6)
        assert np.max(np.abs(b)) > 0.5 / np.sqrt(fin)


def test_low_rank_init_product_frobenius_norm():
    """'reference': E‖AB‖²_F = out/9 (a third of the dense layer's out/3); 'frobenius_matched': out/3."""
    fan_in, out, rank, n_keys = 64, 480, 6, 16
    x = jnp.zeros((1, fan_in))
    init = jax.jit(lambda k: (LowRankDense(out, rank, "reference").init(k, x)["params"],
                              LowRankDense(out, rank, "frobenius_matched").init(k, x)["params"]))
    sq = {"reference": [], "frobenius_matched": []}
    for k in range(n_keys):
        ref, matched = init(jax.random.key(200 + k))
        # each factor is torch's default for its own fan-in: U(±1/√in) for B = downᵀ, U(±1/√r) for A = upᵀ
        assert np.max(np.abs(ref["down"])) <= 1 / np.sqrt(fan_in) * (1 + 1e-6)
        assert np.max(np.abs(ref["up"])) <= 1 / np.sqrt(rank) * (1 + 1e-6)
        assert np.max(np.abs(ref["up"])) > 0.9 / np.sqrt(rank)
        for name, p in (("reference", ref), ("frobenius_matched", matched)):
            w = np.asarray(low_rank_to_matrix(p["down"], p["up"]), np.float64)
            sq[name].append(np.sum(w ** 2))
        # the matched init is the same draw with both factors scaled by 3^{1/4}
        np.testing.assert_allclose(np.asarray(matched["up"]), 3 ** 0.25 * np.asarray(ref["up"]), rtol=1e-6)
    # E‖AB‖²_F = out·in·r·(1/(3r))·(1/(3·in)) = out/9. One draw's relative std is ≈ 3 % at these sizes,
    # so 4 % on the mean of 16 draws is > 5 standard errors.
    assert abs(np.mean(sq["reference"]) - out / 9) < 0.04 * out / 9, np.mean(sq["reference"])
    assert abs(np.mean(sq["frobenius_matched"]) - out / 3) < 0.04 * out / 3, np.mean(sq["frobenius_matched"])


# ----------------------------------------------------------------------------------------------------------
# Orientation: the one conversion


def test_planted_dominant_output_neuron_is_a_row():
    model = MLP(4, 9, depth=3)
    params = _random_params(model, jnp.zeros((1, 5, 1, 1)))
    j = 6
    kernel = params["params"]["hidden_1"]["kernel"]
    # column j of the flax kernel (in, out) = the weights INTO output unit j; made large and positive
    params["params"]["hidden_1"]["kernel"] = kernel.at[:, j].set(50.0 * jnp.abs(kernel[:, j]))
    w = np.asarray(layer_matrices(params)["hidden_1"])
    assert w.shape == (9, 9)
    row_l1 = np.abs(w).sum(axis=1)
    col_l1 = np.abs(w).sum(axis=0)
    assert int(np.argmax(row_l1)) == j
    assert row_l1[j] > 10 * np.max(np.delete(row_l1, j))
    assert np.max(col_l1) < row_l1[j]              # in the transposed view it would be smeared over a column
    # and it is the output unit j that dominates the activations
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(50, 5, 1, 1)), jnp.float32)
    _, z = model.apply(params, x, return_repr=True)
    assert int(np.argmax(np.abs(np.asarray(z)).mean(0))) == j


def test_forward_equals_numpy_chain_from_layer_matrices():
    rng = np.random.default_rng(1)
    model = MLP(7, 13, depth=4)                         # in 24 → 13 → 13 → 13 → 7: every layer non-square
    x = jnp.asarray(rng.standard_normal((20, 2, 4, 3)), jnp.float32)
    params = _random_params(model, x)
    mats = layer_matrices(params)
    assert [m.shape for m in mats.values()] == [(13, 24), (13, 13), (13, 13), (7, 13)]
    ref, _ = _np_forward(mats, np.asarray(x).reshape(20, -1))
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), ref, rtol=1e-5, atol=1e-5)
    # accepts the 'params' entry too, with identical matrices
    for name, w in layer_matrices(params["params"]).items():
        np.testing.assert_array_equal(np.asarray(w), np.asarray(mats[name]))
    assert list(hidden_matrices(params)) == ["hidden_0", "hidden_1", "hidden_2"]


def test_low_rank_matrix_and_forward():
    rng = np.random.default_rng(2)
    model = LowRankMLP(5, 12, rank=3, depth=3)
    x = jnp.asarray(rng.standard_normal((16, 3, 3, 2)), jnp.float32)
    params = _random_params(model, x)
    mats = layer_matrices(params)
    for name in ("hidden_0", "hidden_1"):
        leaf = params["params"][name]
        ref = (np.asarray(leaf["down"], np.float64) @ np.asarray(leaf["up"], np.float64)).T
        np.testing.assert_allclose(np.asarray(mats[name]), ref, rtol=1e-5, atol=1e-6)
        assert mats[name].shape == (12, leaf["down"].shape[0])
        assert np.linalg.matrix_rank(ref) == 3
    ref_logits, _ = _np_forward(mats, np.asarray(x).reshape(16, -1))
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), ref_logits, rtol=1e-5, atol=1e-5)


def test_layer_matrices_keep_a_member_axis_and_order_numerically():
    rng = np.random.default_rng(3)
    tree = {f"hidden_{i}": {"kernel": rng.standard_normal((4, 6, 6)).astype(np.float32)} for i in range(11)}
    tree["head"] = {"kernel": rng.standard_normal((4, 6, 2)).astype(np.float32)}
    mats = layer_matrices({"params": tree})
    assert list(mats) == [f"hidden_{i}" for i in range(11)] + ["head"]     # hidden_10 after hidden_9
    np.testing.assert_array_equal(np.asarray(mats["hidden_10"]), np.swapaxes(tree["hidden_10"]["kernel"], -1, -2))
    assert mats["head"].shape == (4, 2, 6)


@pytest.mark.parametrize("lead", [(), (3,)])
def test_conv_kernel_matricisation_matches_torch_layout(lead):
    rng = np.random.default_rng(4)
    kh, kw, cin, cout = 3, 2, 4, 5
    k = rng.standard_normal(lead + (kh, kw, cin, cout)).astype(np.float32)
    # torch weight (out, in, kh, kw) ↔ flax (kh, kw, in, out); torch's matricisation is weight.reshape(out, -1)
    nl = len(lead)
    torch_w = np.transpose(k, tuple(range(nl)) + (nl + 3, nl + 2, nl, nl + 1))
    ref = torch_w.reshape(lead + (cout, cin * kh * kw))
    got = np.asarray(kernel_to_matrix(k))
    np.testing.assert_array_equal(got, ref)
    # element-wise: row o, column (i, a, b) ↦ i·kh·kw + a·kw + b holds kernel[a, b, i, o]
    o, i, a, b = 4, 2, 1, 1
    assert got[(..., o, i * kh * kw + a * kw + b)].ravel()[0] == k[(..., a, b, i, o)].ravel()[0]
    # a dense kernel is simply transposed
    d = rng.standard_normal((7, 3)).astype(np.float32)
    np.testing.assert_array_equal(np.asarray(kernel_to_matrix(d)), d.T)


def test_conv_matricisation_equals_a_convolution_as_matrix_product():
    """W·patch reproduces a 'VALID' convolution when a patch is flattened in (in, kh, kw) order."""
    rng = np.random.default_rng(5)
    kh, kw, cin, cout = 2, 3, 2, 4
    k = rng.standard_normal((kh, kw, cin, cout)).astype(np.float32)
    x = rng.standard_normal((1, 5, 6, cin)).astype(np.float32)
    conv = jax.lax.conv_general_dilated(x, k, (1, 1), "VALID", dimension_numbers=("NHWC", "HWIO", "NHWC"))
    w = np.asarray(kernel_to_matrix(k), np.float64)
    r, c = 2, 1
    patch = np.transpose(x[0, r:r + kh, c:c + kw, :], (2, 0, 1)).reshape(-1)       # (in, kh, kw)
    np.testing.assert_allclose(w @ patch, np.asarray(conv)[0, r, c], rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Normalisation inside, representation z


def test_normalisation_is_inside_the_model():
    rng = np.random.default_rng(6)
    mean, std = (0.2, 0.5, 0.7), (0.1, 0.3, 0.25)
    x = rng.uniform(size=(8, 4, 4, 3)).astype(np.float32)
    inside = MLP(6, 10, depth=3, mean=mean, std=std)
    plain = MLP(6, 10, depth=3)
    params = _random_params(inside, x)
    xn = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)        # per channel (last axis)
    np.testing.assert_allclose(np.asarray(inside.apply(params, x)), np.asarray(plain.apply(params, xn)),
                               rtol=1e-5, atol=1e-5)
    ref, _ = _np_forward(layer_matrices(params), xn.reshape(8, -1))                 # flattened in (H, W, C) order
    np.testing.assert_allclose(np.asarray(inside.apply(params, x)), ref, rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(np.asarray(inside.apply(params, x)) - np.asarray(plain.apply(params, x)))) > 1e-2


@pytest.mark.parametrize("low_rank", [False, True])
def test_return_repr_is_last_hidden_relu_output(low_rank):
    rng = np.random.default_rng(7)
    model = LowRankMLP(4, 15, rank=5, depth=3) if low_rank else MLP(4, 15, depth=3)
    x = jnp.asarray(rng.standard_normal((25, 3, 3, 1)), jnp.float32)
    params = _random_params(model, x)
    logits, z = model.apply(params, x, return_repr=True)
    z = np.asarray(z)
    assert z.shape == (25, 15)
    assert np.all(z >= 0) and np.any(z == 0) and np.any(z > 0)
    head = np.asarray(params["params"]["head"]["kernel"], np.float64)
    np.testing.assert_allclose(np.asarray(logits), z @ head, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), np.asarray(logits), rtol=0, atol=0)
    ref_logits, ref_z = _np_forward(layer_matrices(params), np.asarray(x).reshape(25, -1))
    np.testing.assert_allclose(z, ref_z, rtol=1e-5, atol=1e-5)


# ----------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("fan_in, width, rank", [(12, 9, 0), (12, 9, -1), (12, 9, 10), (6, 9, 7), (12, 9, 13)])
def test_low_rank_rank_out_of_range_raises(fan_in, width, rank):
    # valid ranks are 1..min(fan_in, width)
    with pytest.raises(CrobustError, match="rank"):
        LowRankMLP(3, width, rank=rank, depth=2).init(jax.random.key(0), jnp.zeros((1, fan_in)))
    ok = min(fan_in, width)                                                               # the boundary is fine
    shapes = jax.eval_shape(LowRankMLP(3, width, rank=ok, depth=2).init, jax.random.key(0), jnp.zeros((1, fan_in)))
    assert shapes["params"]["hidden_0"]["down"].shape == (fan_in, ok)


def test_bad_depth_and_init_name_raise():
    with pytest.raises(CrobustError, match="depth"):
        MLP(3, 9, depth=0).init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(CrobustError, match="depth"):
        LowRankMLP(3, 9, rank=2, depth=1).init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(CrobustError, match="reference, frobenius_matched"):
        LowRankMLP(3, 9, rank=2, depth=2, factor_init="xavier").init(jax.random.key(0), jnp.zeros((1, 4)))
    with pytest.raises(CrobustError):
        layer_matrices({"params": {"encoder": {"kernel": np.zeros((2, 2))}}})
