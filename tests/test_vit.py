"""crobust.models.vit: the vision_transformer / big_vision parameter layout (key by key), loading a checkpoint the
test writes itself in that ``.npz`` layout (same outputs), the head swap, position-embedding resizing, the B/16
shape, the attention layers in ``layer_matrices``, and bad checkpoints."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._errors import CrobustError
from crobust.models import VIT_B16, layer_matrices, load_pretrained, vit
from crobust.models.vit import VIT_TINY_TEST, load_npz, resize_posemb


@pytest.fixture(autouse=True)
def _full_float32():
    """Reference comparisons at full float32 on every backend (a GPU's default TF32 convs/matmuls are ~1e-3
    relative, far above the float32 tolerances stated in these tests)."""
    with jax.default_matmul_precision("float32"):
        yield

D, HEADS, MLP_DIM, P = 16, 2, 32, 4


def _expected_keys(n_layers, rep=False):
    """The checkpoint keys of google-research/vision_transformer's VisionTransformer, written out by hand."""
    keys = {"cls", "embedding/kernel", "embedding/bias", "head/kernel", "head/bias",
            "Transformer/posembed_input/pos_embedding", "Transformer/encoder_norm/scale",
            "Transformer/encoder_norm/bias"}
    for i in range(n_layers):
        b = f"Transformer/encoderblock_{i}/"
        keys |= {b + f"{ln}/{p}" for ln in ("LayerNorm_0", "LayerNorm_2") for p in ("scale", "bias")}
        keys |= {b + f"MultiHeadDotProductAttention_1/{m}/{p}" for m in ("query", "key", "value", "out")
                 for p in ("kernel", "bias")}
        keys |= {b + f"MlpBlock_3/Dense_{j}/{p}" for j in (0, 1) for p in ("kernel", "bias")}
    if rep:
        keys |= {"pre_logits/kernel", "pre_logits/bias"}
    return keys


def _random_params(model, hw, seed=0):
    rng = np.random.default_rng(seed)
    shp = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32))
    return jax.tree.map(lambda s: jnp.asarray(0.3 * rng.standard_normal(s.shape), jnp.float32), shp)


def _write_checkpoint(path, params):
    """Write ``params`` the way a vision_transformer checkpoint stores them: one array per '/'-joined key (the
    keys built here independently of crobust's own flattener)."""
    flat = {}

    def walk(node, prefix):
        for k, v in node.items():
            if isinstance(v, dict):
                walk(v, prefix + k + "/")
            else:
                flat[prefix + k] = np.asarray(v)

    walk(jax.tree.map(np.asarray, params["params"]), "")
    np.savez(path, **flat)
    return flat


def test_parameter_layout_is_the_vision_transformer_one_and_b16_count():
    model = vit(VIT_TINY_TEST, 10)
    flat = {}
    p = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))["params"]
    for path, leaf in jax.tree_util.tree_leaves_with_path(p):
        flat["/".join(k.key for k in path)] = leaf.shape
    assert set(flat) == _expected_keys(2)
    assert flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query/kernel"] == (D, HEADS, D // HEADS)
    assert flat["Transformer/encoderblock_0/MultiHeadDotProductAttention_1/out/kernel"] == (HEADS, D // HEADS, D)
    assert flat["embedding/kernel"] == (P, P, 3, D)
    assert flat["Transformer/posembed_input/pos_embedding"] == (1, 1 + 4, D)
    assert flat["cls"] == (1, 1, D)
    # ViT-B/16 at 224×224 with the 1000-class ImageNet head: 86,567,656 parameters (the published count)
    b16 = jax.eval_shape(vit(VIT_B16, 1000).init, jax.random.key(0),
                         jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32))
    assert sum(int(np.prod(x.shape)) for x in jax.tree.leaves(b16)) == 86_567_656


def test_checkpoint_round_trip_gives_the_same_outputs(tmp_path):
    model = vit(VIT_TINY_TEST, 10)
    params = _random_params(model, 8, seed=1)
    path = tmp_path / "vit_tiny.npz"
    flat = _write_checkpoint(path, params)
    assert set(flat) == _expected_keys(2)
    fresh = jax.jit(model.init)(jax.random.key(5), jnp.zeros((1, 8, 8, 3)))
    loaded = load_pretrained(model, path, fresh)
    x = jnp.asarray(np.random.default_rng(2).uniform(size=(3, 8, 8, 3)), jnp.float32)
    apply = jax.jit(model.apply)
    want = np.asarray(apply(params, x))
    np.testing.assert_array_equal(np.asarray(apply(loaded, x)), want)   # the same arrays: bit-identical
    assert np.std(want) > 0.1
    # big_vision's layout: the same keys under 'params/'
    np.savez(tmp_path / "bv.npz", **{"params/" + k: v for k, v in flat.items()})
    tree = load_npz(tmp_path / "bv.npz")
    np.testing.assert_array_equal(tree["cls"], flat["cls"])


def test_head_swap_and_position_embedding_resize(tmp_path):
    src = vit(VIT_TINY_TEST, 10)
    params = _random_params(src, 8, seed=3)
    path = tmp_path / "vit.npz"
    _write_checkpoint(path, params)
    # fine-tune on 3 classes at 16×16 inputs (4×4 patch grid instead of 2×2)
    tgt = vit(VIT_TINY_TEST, 3)
    fresh = jax.jit(tgt.init)(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    loaded = load_pretrained(tgt, path, fresh)["params"]
    assert loaded["head"]["kernel"].shape == (D, 3)
    np.testing.assert_array_equal(np.asarray(loaded["head"]["kernel"]), 0.0)        # fresh, zero-initialised head
    np.testing.assert_array_equal(np.asarray(loaded["embedding"]["kernel"]),
                                  np.asarray(params["params"]["embedding"]["kernel"]))
    pe_old = np.asarray(params["params"]["Transformer"]["posembed_input"]["pos_embedding"])
    pe_new = np.asarray(loaded["Transformer"]["posembed_input"]["pos_embedding"])
    assert pe_new.shape == (1, 17, D)
    np.testing.assert_array_equal(pe_new[:, 0], pe_old[:, 0])                         # class token kept
    # bilinear resize of a constant grid is that constant; of a linear ramp, a linear ramp
    ramp = np.zeros((1, 5, 1), np.float32)
    ramp[0, 1:, 0] = np.array([0.0, 1.0, 0.0, 1.0])                                  # 2×2 grid varying along x
    r = np.asarray(resize_posemb(ramp, 17))[0, 1:, 0].reshape(4, 4)
    np.testing.assert_allclose(r, np.tile(r[0], (4, 1)), atol=1e-6)
    assert np.all(np.diff(r[0]) >= 0) and r[0, 0] == 0.0 and r[0, -1] == 1.0
    x = jnp.asarray(np.random.default_rng(4).uniform(size=(2, 16, 16, 3)), jnp.float32)
    np.testing.assert_array_equal(np.asarray(jax.jit(tgt.apply)({"params": loaded}, x)), 0.0)   # zero head: logits 0


def test_bad_checkpoints_raise(tmp_path):
    model = vit(VIT_TINY_TEST, 10)
    fresh = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, 8, 8, 3)))
    with pytest.raises(CrobustError, match="not found"):
        load_pretrained(model, tmp_path / "missing.npz", fresh)
    flat = _write_checkpoint(tmp_path / "a.npz", _random_params(model, 8))
    del flat["Transformer/encoder_norm/scale"]
    np.savez(tmp_path / "b.npz", **flat)
    with pytest.raises(CrobustError, match="lacks Transformer/encoder_norm/scale"):
        load_pretrained(model, tmp_path / "b.npz", fresh)
    wide = vit(VIT_TINY_TEST.__class__(4, 32, 2, 2, 32), 10)
    _write_checkpoint(tmp_path / "c.npz", _random_params(wide, 8))
    with pytest.raises(CrobustError, match="shape"):
        load_pretrained(model, tmp_path / "c.npz", fresh)


def test_vit_layer_matrices_attention_orientation():
    model = vit(VIT_TINY_TEST, 10)
    params = _random_params(model, 8, seed=6)
    mats = layer_matrices(params)
    names = list(mats)
    assert names[0] == "embedding" and names[-1] == "head"
    blk = "Transformer/encoderblock_0/"
    assert names[1:7] == [blk + "MultiHeadDotProductAttention_1/" + m for m in ("query", "key", "value", "out")] + \
        [blk + "MlpBlock_3/Dense_0", blk + "MlpBlock_3/Dense_1"]
    p = params["params"]["Transformer"]["encoderblock_0"]["MultiHeadDotProductAttention_1"]
    z = np.random.default_rng(7).standard_normal((5, D)).astype(np.float32)
    q = np.einsum("nd,dhk->nhk", z, np.asarray(p["query"]["kernel"])).reshape(5, -1)
    np.testing.assert_allclose(z @ np.asarray(mats[blk + "MultiHeadDotProductAttention_1/query"]).T, q, rtol=1e-5,
                               atol=1e-5)
    heads = np.random.default_rng(8).standard_normal((5, HEADS, D // HEADS)).astype(np.float32)
    o = np.einsum("nhk,hkd->nd", heads, np.asarray(p["out"]["kernel"]))
    np.testing.assert_allclose(heads.reshape(5, -1) @ np.asarray(mats[blk + "MultiHeadDotProductAttention_1/out"]).T,
                               o, rtol=1e-5, atol=1e-5)
    assert mats["embedding"].shape == (D, 3 * P * P)
