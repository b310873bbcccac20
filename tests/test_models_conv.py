"""Convolutional models (ResNet-18 with both stems, VGG-16-BN, WRN), the low-rank convolution and its SVD
initialisation, batch-norm modes, and ``layer_matrices`` on conv models: known parameter counts, stage shapes,
running statistics against a numpy mean, full-rank SVD factorisation equal to the dense conv, planted filters.

Tiny widths and short stages keep every compile to a few seconds on a 2-core CPU."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import metrics
from crobust._errors import CrobustError
from crobust.models import (VGG16, WRN, LowRankConv, ResNet18, factorise, kernel_to_matrix, layer_matrices,
                            layer_specs, low_rank_from_dense, regularised_matrices)


@pytest.fixture(autouse=True)
def _full_float32():
    """Reference comparisons at full float32 on every backend (a GPU's default TF32 convs/matmuls are ~1e-3
    relative, far above the float32 tolerances stated in these tests)."""
    with jax.default_matmul_precision("float32"):
        yield


def _count(tree):
    return sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(tree))


def _shapes(model, hw=32, c=3):
    return jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, hw, hw, c), jnp.float32))


def _random_variables(model, hw, seed=0, c=3):
    """Variables with the init's structure and random values: N(0, 2/fan_in) kernels, BN scale ~ U(0.5, 1.5),
    biases/BN bias ~ N(0, 0.1), running mean ~ N(0, 0.1), running var ~ U(0.5, 2)."""
    rng = np.random.default_rng(seed)
    shp = _shapes(model, hw, c)

    def draw(path, s):
        name = path[-1].key
        if name == "scale":
            v = rng.uniform(0.5, 1.5, s.shape)
        elif name == "var":
            v = rng.uniform(0.5, 2.0, s.shape)
        elif name in ("bias", "mean"):
            v = 0.1 * rng.standard_normal(s.shape)
        else:
            fan_in = int(np.prod(s.shape[:-1]))
            v = rng.standard_normal(s.shape) * np.sqrt(2.0 / fan_in)
        return jnp.asarray(v, jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shp)


# ----------------------------------------------------------------------------------------------------------
# parameter counts (trainable parameters: BN scale and bias count, running statistics do not)


@pytest.mark.parametrize("model, want", [
    (ResNet18(10, stem="imagenet"), 11_181_642),          # torchvision resnet18(num_classes=10)
    (ResNet18(10, stem="cifar"), 11_173_962),             # 7×7×3×64 stem → 3×3×3×64
    (VGG16(10), 14_728_266),                              # VGG16 of kuangliu/pytorch-cifar (BN, 512 → 10)
    (WRN(28, 10, num_classes=10), 36_479_194),            # WRN-28-10
    (WRN(16, 4, num_classes=10), 2_748_890),              # WRN-16-4
])
def test_known_parameter_counts(model, want):
    v = _shapes(model)
    assert _count(v["params"]) == want
    assert set(v) == {"params", "batch_stats"}


def test_low_rank_resnet_shapes_and_count():
    r, w = 8, 64
    v = _shapes(ResNet18(10, stem="imagenet", rank=r))["params"]
    assert v["stem"]["kernel"].shape == (7, 7, 3, w)                       # the stem stays dense
    assert v["layer1_0"]["conv1"]["down"].shape == (3, 3, w, r)
    assert v["layer1_0"]["conv1"]["up"].shape == (r, w)
    assert v["layer2_0"]["shortcut"]["down"].shape == (1, 1, w, r)         # downsampling 1×1 factorised too
    assert v["layer2_0"]["shortcut"]["up"].shape == (r, 2 * w)
    assert v["head"]["kernel"].shape == (8 * w, 10)
    dense = _count(_shapes(ResNet18(10, stem="imagenet"))["params"])
    convs = [s for s in layer_specs(_shapes(ResNet18(10, stem="imagenet"))).values()
             if s.kind == "conv" and not s.is_stem]
    full = _shapes(ResNet18(10, stem="imagenet"))["params"]
    # every non-stem conv (kh, kw, in, out) becomes kh·kw·in·r + r·out weights
    saved = 0
    for s in convs:
        node = full
        for p in s.path:
            node = node[p]
        kh, kw, cin, cout = node["kernel"].shape
        saved += kh * kw * cin * cout - (kh * kw * cin * r + r * cout)
    assert _count(v) == dense - saved


# ----------------------------------------------------------------------------------------------------------
# stems and stage resolutions


@pytest.mark.parametrize("stem, sizes", [("cifar", (32, 16, 8, 4)), ("imagenet", (8, 4, 2, 1))])
def test_stems_give_the_stage_resolutions_on_32x32(stem, sizes):
    model = ResNet18(5, stem=stem, width=2, stage_sizes=(1, 1, 1, 1))
    x = jnp.zeros((1, 32, 32, 3))
    v = _random_variables(model, 32)
    _, state = model.apply(v, x, capture_intermediates=True, mutable=["intermediates"])
    inter = state["intermediates"]
    got = tuple(inter[f"layer{s}_0"]["__call__"][0].shape[1] for s in range(1, 5))
    assert got == sizes
    assert inter[f"layer4_0"]["__call__"][0].shape[-1] == 16


# ----------------------------------------------------------------------------------------------------------
# batch norm modes


def test_train_mode_updates_running_stats_eval_mode_uses_them():
    model = ResNet18(3, stem="cifar", width=2, stage_sizes=(1, 1, 1, 1), mean=(0.5, 0.4, 0.3), std=(0.2, 0.3, 0.4))
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.uniform(size=(6, 16, 16, 3)), jnp.float32)
    v = _random_variables(model, 16)
    out, upd = model.apply(v, x, train=True, mutable=["batch_stats"])
    # the stem BN's running mean moves 10 % of the way to the batch mean of the stem conv output (PyTorch momentum)
    xn = (np.asarray(x) - np.array([0.5, 0.4, 0.3])) / np.array([0.2, 0.3, 0.4])
    y = jax.lax.conv_general_dilated(jnp.asarray(xn, jnp.float32), v["params"]["stem"]["kernel"], (1, 1),
                                     ((1, 1), (1, 1)), dimension_numbers=("NHWC", "HWIO", "NHWC"))
    want = 0.9 * np.asarray(v["batch_stats"]["stem_bn"]["mean"]) + 0.1 * np.mean(np.asarray(y), axis=(0, 1, 2))
    np.testing.assert_allclose(np.asarray(upd["batch_stats"]["stem_bn"]["mean"]), want, rtol=1e-4, atol=1e-5)
    # eval mode: a sample's logits do not depend on the rest of the batch; train mode: they do
    ev_all = np.asarray(model.apply(v, x))
    ev_one = np.asarray(model.apply(v, x[:2]))
    np.testing.assert_allclose(ev_all[:2], ev_one, rtol=1e-5, atol=1e-5)
    tr_one, _ = model.apply(v, x[:2], train=True, mutable=["batch_stats"])
    assert np.max(np.abs(np.asarray(out)[:2] - np.asarray(tr_one))) > 1e-4
    # eval mode changes nothing (no mutable collection needed) and differs from train mode
    assert np.max(np.abs(ev_all - np.asarray(out))) > 1e-4


@pytest.mark.parametrize("make, hw", [
    (lambda: VGG16(4, width=2), 32),
    (lambda: WRN(10, 1, num_classes=4, base=2), 16),
    (lambda: ResNet18(4, stem="imagenet", width=2, stage_sizes=(1, 1, 1, 1)), 32),
])
def test_forward_shapes_repr_and_head(make, hw):
    model = make()
    v = _random_variables(model, hw)
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(3, hw, hw, 3)), jnp.float32)
    logits, z = model.apply(v, x, return_repr=True)
    assert logits.shape == (3, 4)
    head = v["params"]["head"]
    np.testing.assert_allclose(np.asarray(logits), np.asarray(z) @ np.asarray(head["kernel"]) + np.asarray(head["bias"]),
                               rtol=1e-5, atol=1e-5)


def test_bad_model_arguments_raise():
    with pytest.raises(CrobustError, match="stem"):
        _shapes(ResNet18(3, stem="tiny"))
    with pytest.raises(CrobustError, match="6n"):
        _shapes(WRN(27, 2))
    with pytest.raises(CrobustError, match="multiples of 32"):
        _shapes(VGG16(3, width=2), hw=16)
    with pytest.raises(CrobustError, match="rank"):
        _shapes(ResNet18(3, width=2, rank=0))


# ----------------------------------------------------------------------------------------------------------
# low-rank convolution


def test_low_rank_conv_is_kxk_to_r_then_1x1_with_stride():
    rng = np.random.default_rng(3)
    mod = LowRankConv(5, 3, rank=2, strides=2)
    x = jnp.asarray(rng.standard_normal((2, 7, 7, 4)), jnp.float32)
    p = mod.init(jax.random.key(0), x)
    down, up = np.asarray(p["params"]["down"], np.float64), np.asarray(p["params"]["up"], np.float64)
    y = np.asarray(mod.apply(p, x))
    assert y.shape == (2, 4, 4, 5)                                         # torch: floor((7 + 2 − 3)/2) + 1 = 4
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1), (0, 0)))
    for (n, i, j) in [(0, 0, 0), (1, 3, 2), (0, 2, 3)]:
        patch = xp[n, 2 * i:2 * i + 3, 2 * j:2 * j + 3, :]                 # (3, 3, in)
        mid = np.einsum("abc,abcr->r", patch, down)
        np.testing.assert_allclose(y[n, i, j], mid @ up, rtol=1e-5, atol=1e-5)
    # PyTorch default init: U(±1/√fan_in), fan_in = in·k·k for down and r for up
    assert np.max(np.abs(down)) <= 1 / np.sqrt(4 * 9) and np.max(np.abs(up)) <= 1 / np.sqrt(2)


@pytest.mark.parametrize("strides, k", [(1, 3), (2, 3), (2, 1)])
def test_full_rank_svd_factorisation_equals_the_dense_conv(strides, k):
    """At r = min(out, in·k·k) the SVD factors reproduce W exactly, so the low-rank conv equals the dense conv up
    to float32 rounding: tolerance 1e-5 relative to the output scale (sums of ~50 products of O(1) terms)."""
    rng = np.random.default_rng(4)
    cin, cout = 6, 5
    kern = rng.standard_normal((k, k, cin, cout)).astype(np.float32)
    w = kernel_to_matrix(kern)
    r = min(cout, cin * k * k)
    tree = {"conv": {"kernel": kern}, "head": {"kernel": np.zeros((cout, 2), np.float32)}}
    lr = low_rank_from_dense(tree, r)
    mod = LowRankConv(cout, k, rank=r, strides=strides)
    x = jnp.asarray(rng.standard_normal((2, 8, 8, cin)), jnp.float32)
    got = np.asarray(mod.apply({"params": lr["conv"]}, x))
    pad = k // 2
    want = np.asarray(jax.lax.conv_general_dilated(x, kern, (strides, strides), ((pad, pad), (pad, pad)),
                                                   dimension_numbers=("NHWC", "HWIO", "NHWC"),
                                                   precision=jax.lax.Precision.HIGHEST))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.max(np.abs(want)))
    # and its matricised W = upᵀ·mat(down) is W
    got_w = np.asarray(layer_matrices(lr)["conv"])
    np.testing.assert_allclose(got_w, np.asarray(w), rtol=0, atol=1e-5 * np.max(np.abs(w)))


def test_truncated_svd_factors_are_the_best_rank_r_approximation():
    rng = np.random.default_rng(5)
    w = rng.standard_normal((7, 12)).astype(np.float32)
    a, b = factorise(w, 3)
    s = np.linalg.svd(w.astype(np.float64), compute_uv=False)
    prod = np.asarray(a, np.float64) @ np.asarray(b, np.float64)
    np.testing.assert_allclose(np.linalg.svd(prod, compute_uv=False)[:3], s[:3], rtol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(w - prod), np.sqrt(np.sum(s[3:] ** 2)), rtol=1e-4)   # Eckart–Young
    # balanced: both factors carry Σ^{1/2}
    np.testing.assert_allclose(np.linalg.norm(np.asarray(a), axis=0), np.sqrt(s[:3]), rtol=1e-5)
    a9, b9 = factorise(w, 9)                                                # r > min(out, in): zero padding
    assert a9.shape == (7, 9) and b9.shape == (9, 12)
    np.testing.assert_allclose(np.asarray(a9) @ np.asarray(b9), w, atol=1e-5)


def test_svd_initialised_resnet_equals_the_dense_resnet_at_full_rank():
    """Whole network: a dense ResNet and its SVD-initialised low-rank copy at full rank give the same logits
    (float32: atol 1e-4 relative to the logit scale after ~10 layers of rounding)."""
    dense = ResNet18(4, stem="imagenet", width=2, stage_sizes=(1, 1))
    v = _random_variables(dense, 32, seed=6)
    r = 4                                                                   # ≥ min(out, in·k·k) of every conv
    low = ResNet18(4, stem="imagenet", width=2, stage_sizes=(1, 1), rank=r)
    lv = low_rank_from_dense(v, r)
    assert jax.tree.map(jnp.shape, lv) == jax.tree.map(jnp.shape, _shapes(low))
    x = jnp.asarray(np.random.default_rng(7).uniform(size=(4, 32, 32, 3)), jnp.float32)
    want = np.asarray(dense.apply(v, x))
    got = np.asarray(low.apply(lv, x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.max(np.abs(want)))
    lv2 = low_rank_from_dense(v, 1)                                          # rank 1 really changes the network
    low1 = ResNet18(4, stem="imagenet", width=2, stage_sizes=(1, 1), rank=1)
    assert np.max(np.abs(np.asarray(low1.apply(lv2, x)) - want)) > 1e-3 * np.max(np.abs(want))


# ----------------------------------------------------------------------------------------------------------
# layer_matrices on conv models


def test_resnet_layer_matrices_names_order_shapes():
    v = _random_variables(ResNet18(3, stem="cifar", width=2), 16)
    mats = layer_matrices(v)
    names = list(mats)
    assert names[0] == "stem" and names[-1] == "head"
    assert names[1:4] == ["layer1_0/conv1", "layer1_0/conv2", "layer1_1/conv1"]
    assert names.index("layer2_0/shortcut") == names.index("layer2_0/conv2") + 1
    assert names.index("layer4_1/conv2") == len(names) - 2
    assert len(names) == 1 + 16 + 3 + 1                                      # stem, 16 block convs, 3 shortcuts, head
    assert mats["stem"].shape == (2, 3 * 9)
    assert mats["layer2_0/conv1"].shape == (4, 2 * 9)
    assert mats["layer2_0/shortcut"].shape == (4, 2)
    assert mats["head"].shape == (3, 16)
    assert "stem" not in regularised_matrices(v) and "head" not in regularised_matrices(v)
    assert len(regularised_matrices(v)) == len(names) - 2


def test_planted_dominant_filter_is_found_as_a_row_and_in_the_layer_report():
    model = ResNet18(3, stem="cifar", width=4, stage_sizes=(1, 1))      # two stages: 7 layers keep the report quick
    v = _random_variables(model, 16, seed=8)
    k = np.array(v["params"]["layer2_0"]["conv1"]["kernel"])               # (3, 3, 4, 8)
    rng = np.random.default_rng(9)
    planted = rng.standard_normal((3, 3, 4)).astype(np.float32) * 50.0
    k[..., 5] = planted
    v["params"]["layer2_0"]["conv1"]["kernel"] = jnp.asarray(k)
    w = np.asarray(layer_matrices(v)["layer2_0/conv1"])
    assert w.shape == (8, 36)
    assert int(np.argmax(np.sum(np.abs(w), axis=1))) == 5
    np.testing.assert_array_equal(w[5], np.transpose(planted, (2, 0, 1)).reshape(-1))   # (in, kh, kw) order
    # ε_ν and the whole report work on a conv model (lipschitz needs chaining dense layers: off)
    rep = metrics.layer_report(v["params"], population=False, lipschitz=False)
    li = rep["layers"].index("layer2_0/conv1")
    assert rep["shapes"][li] == (8, 36)
    nu = np.sort(np.sum(np.abs(w.astype(np.float64)), axis=1))[::-1]
    K = 8 - int(0.9 * 8)                                                    # κ = 0.1 keeps 1 of 8
    want_eps = np.sqrt(np.sum(nu[K:] ** 2)) / np.sqrt(np.sum(nu ** 2))      # q = 2 on ν
    np.testing.assert_allclose(float(rep["layer_metrics"]["eps_nu_q2"][0, li]), want_eps, rtol=1e-4)
    others = [float(rep["layer_metrics"]["eps_nu_q2"][0, j]) for j in range(len(rep["layers"])) if j != li]
    assert float(rep["layer_metrics"]["eps_nu_q2"][0, li]) < min(others)    # the planted layer is the most compressible


def test_initialisation_is_torchvision_and_pytorch_default():
    """Dense convs N(0, 2/(out·kh·kw)) (torchvision's kaiming_normal fan_out), BN scale 1 / bias 0 and running
    mean 0 / var 1, head U(±1/√in) with bias U(±1/√in), low-rank factors U(±1/√fan_in) (PyTorch's conv default).
    Sample-std tolerance: ±10 % for ≥ 1,000 draws (5σ of the sample std's relative spread 1/√(2n) ≈ 2.2 %)."""
    model = ResNet18(10, stem="cifar", width=16, stage_sizes=(1,))
    v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    k = np.asarray(v["params"]["layer1_0"]["conv2"]["kernel"])                # (3, 3, 16, 16): 2,304 draws
    np.testing.assert_allclose(np.std(k), np.sqrt(2.0 / (16 * 9)), rtol=0.1)
    assert abs(np.mean(k)) < 0.1 * np.std(k)
    bn = v["params"]["layer1_0"]["conv2_bn"]
    assert np.all(np.asarray(bn["scale"]) == 1) and np.all(np.asarray(bn["bias"]) == 0)
    st = v["batch_stats"]["layer1_0"]["conv2_bn"]
    assert np.all(np.asarray(st["mean"]) == 0) and np.all(np.asarray(st["var"]) == 1)
    head = v["params"]["head"]
    bound = 1 / np.sqrt(16)
    for leaf in (head["kernel"], head["bias"]):
        a = np.asarray(leaf)
        assert np.max(np.abs(a)) <= bound and np.max(np.abs(a)) > 0.5 * bound
    low = ResNet18(10, stem="cifar", width=16, stage_sizes=(1,), rank=4)
    lv = jax.jit(low.init)(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))["params"]["layer1_0"]["conv2"]
    down, up = np.asarray(lv["down"]), np.asarray(lv["up"])                  # (3, 3, 16, 4), (4, 16)
    np.testing.assert_allclose(np.std(down), 1 / np.sqrt(3 * 16 * 9), rtol=0.1)     # U(±b): std b/√3
    assert np.max(np.abs(down)) <= 1 / np.sqrt(16 * 9) and np.max(np.abs(up)) <= 1 / np.sqrt(4)


def test_svd_initialised_low_rank_mlp_equals_the_dense_mlp_at_full_rank():
    from crobust.models import MLP, LowRankMLP

    rng = np.random.default_rng(12)
    dense = MLP(3, 6, depth=3)
    shp = jax.eval_shape(dense.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 2, 2, 2), jnp.float32))
    v = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape), jnp.float32), shp)
    lv = low_rank_from_dense(v, 6)
    assert lv["params"]["hidden_0"]["down"].shape == (8, 6) and lv["params"]["hidden_1"]["up"].shape == (6, 6)
    np.testing.assert_array_equal(np.asarray(lv["params"]["head"]["kernel"]), np.asarray(v["params"]["head"]["kernel"]))
    x = jnp.asarray(rng.uniform(size=(4, 2, 2, 2)), jnp.float32)
    want = np.asarray(dense.apply(v, x))
    got = np.asarray(LowRankMLP(3, 6, rank=6, depth=3).apply(lv, x))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.max(np.abs(want)))
