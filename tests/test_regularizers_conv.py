"""crobust.regularizers on convolutional parameter trees (numpy float64 references on the torch matricisation,
with the reference exclusions: stem and head skipped), the mitigations of docs/paper.md §E11 (β-control against a
numpy top-5 % variance, the alignment penalty against ``metrics.alignment_term`` and the exact pattern maximum it
bounds, its gradient), and the Frobenius projection on nested layers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import regularizers as R
from crobust._errors import CrobustError
from crobust.metrics import alignment_term
from crobust.models import MLP, ResNet18


@pytest.fixture(autouse=True)
def _full_float32():
    """Reference comparisons at full float32 on every backend (a GPU's default TF32 convs/matmuls are ~1e-3
    relative, far above the float32 tolerances stated in these tests)."""
    with jax.default_matmul_precision("float32"):
        yield

MODEL = ResNet18(5, stem="cifar", width=2, stage_sizes=(1, 1))


def _variables(seed=0, model=MODEL, hw=8):
    rng = np.random.default_rng(seed)
    shp = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32))
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shp)


def _np_conv_layers(variables, include_stem=False):
    """{path: W (out, in·kh·kw) float64} of every conv kernel (torch order: weight.reshape(out, -1))."""
    out = {}

    def walk(node, path):
        for k, v in node.items():
            if isinstance(v, dict) and "kernel" in v:
                if v["kernel"].ndim == 4 and (include_stem or path + (k,) != ("stem",)):
                    kern = np.asarray(v["kernel"], np.float64)
                    out["/".join(path + (k,))] = np.transpose(kern, (3, 2, 0, 1)).reshape(kern.shape[3], -1)
            elif isinstance(v, dict):
                walk(v, path + (k,))

    walk(variables["params"], ())
    return out


def test_conv_penalties_match_numpy_with_stem_and_head_excluded():
    v = _variables(1)
    mats = _np_conv_layers(v)
    assert len(mats) == 5 and "stem" not in mats                     # layer1_0: 2, layer2_0: 2 + shortcut
    gl = sum(np.sum(np.linalg.norm(w, axis=1)) for w in mats.values())
    np.testing.assert_allclose(float(R.group_lasso(v, 0.3)), 0.3 * gl, rtol=1e-5)
    si = sum(np.sum(np.linalg.norm(w, axis=1)) / np.linalg.norm(w) for w in mats.values())
    np.testing.assert_allclose(float(R.scale_invariant(v, 0.3)), 0.3 * si, rtol=1e-5)
    nuc = sum(np.sum(np.linalg.svd(w, compute_uv=False)) for w in mats.values())
    np.testing.assert_allclose(float(R.nuclear(v, 0.3)), 0.3 * nuc, rtol=1e-4)
    # l1: every parameter (BN scale/bias, head weight and bias, the stem), never the running statistics
    l1 = sum(np.sum(np.abs(np.asarray(x, np.float64))) for x in jax.tree.leaves(v["params"]))
    np.testing.assert_allclose(float(R.l1(v, 0.3)), 0.3 * l1, rtol=1e-5)
    # the excluded layers really are excluded: changing the stem or head changes none of the row penalties
    v2 = jax.tree.map(lambda a: a, v)
    v2["params"]["stem"] = {"kernel": 10 * v["params"]["stem"]["kernel"]}
    v2["params"]["head"] = {"kernel": 10 * v["params"]["head"]["kernel"], "bias": v["params"]["head"]["bias"]}
    for pen in (R.group_lasso, R.scale_invariant, R.nuclear, R.beta_control, R.alignment):
        np.testing.assert_allclose(float(pen(v2, 1.0)), float(pen(v, 1.0)), rtol=1e-6)


def test_low_rank_conv_penalties():
    model = ResNet18(5, stem="cifar", width=2, stage_sizes=(1, 1), rank=3)
    v = _variables(2, model)
    with pytest.raises(CrobustError, match="dense model"):
        R.group_lasso(v, 1.0)
    mats, facs = [], []

    def walk(node):
        for k, x in node.items():
            if isinstance(x, dict) and "down" in x:
                d = np.asarray(x["down"], np.float64)
                b = np.transpose(d, (3, 2, 0, 1)).reshape(d.shape[3], -1)         # (r, in·kh·kw)
                a = np.asarray(x["up"], np.float64).T                             # (out, r)
                mats.append(a @ b)
                facs.append((a, b))
            elif isinstance(x, dict):
                walk(x)

    walk(v["params"])
    nuc = lambda w: np.sum(np.linalg.svd(w, compute_uv=False))
    np.testing.assert_allclose(float(R.nuclear(v, 1.0)), sum(nuc(w) for w in mats), rtol=1e-4)
    np.testing.assert_allclose(float(R.nuclear_factors(v, 1.0)), sum(nuc(a) + nuc(b) for a, b in facs), rtol=1e-4)


def _np_beta(mats, frac=0.05):
    total = 0.0
    for w in mats:
        nu = np.sort(np.sum(np.abs(w), axis=1))[::-1]
        h = nu.shape[0]
        K = max(h - int((1 - frac) * h), 2)
        total += np.var(nu[:K])
    return total


def test_beta_control_is_the_variance_of_the_top_filter_norms():
    v = _variables(3)
    mats = list(_np_conv_layers(v).values())
    np.testing.assert_allclose(float(R.beta_control(v, 0.7)), 0.7 * _np_beta(mats), rtol=1e-5)
    # an MLP: 40 neurons → top 5 % = 2 rows; 100 neurons → 5
    rng = np.random.default_rng(4)
    tree = {"params": {"hidden_0": {"kernel": rng.standard_normal((10, 40)).astype(np.float32)},
                       "hidden_1": {"kernel": rng.standard_normal((40, 100)).astype(np.float32)},
                       "head": {"kernel": rng.standard_normal((100, 3)).astype(np.float32)}}}
    ws = [np.asarray(tree["params"][f"hidden_{i}"]["kernel"], np.float64).T for i in range(2)]
    np.testing.assert_allclose(float(R.beta_control(tree, 1.0)), _np_beta(ws), rtol=1e-5)
    np.testing.assert_allclose(float(R.beta_control(tree, 1.0, top_fraction=0.2)), _np_beta(ws, 0.2), rtol=1e-5)
    # ℓ2 filter norms on request
    nu2 = np.sort(np.linalg.norm(ws[1], axis=1))[::-1][:5]
    nu2a = np.sort(np.linalg.norm(ws[0], axis=1))[::-1][:2]
    np.testing.assert_allclose(float(R.beta_control(tree, 1.0, q=2)), np.var(nu2) + np.var(nu2a), rtol=1e-4)
    # equal top norms: zero; quadratic in the scale; the gradient only touches the top rows
    eq = {"params": {"hidden_0": {"kernel": np.ones((10, 40), np.float32)}, "head": tree["params"]["head"]}}
    eq["params"]["head"] = {"kernel": np.ones((40, 3), np.float32)}
    assert float(R.beta_control(eq, 1.0)) == 0.0
    np.testing.assert_allclose(float(R.beta_control(jax.tree.map(lambda a: 3 * a, tree), 1.0)),
                               9 * float(R.beta_control(tree, 1.0)), rtol=1e-5)
    g = jax.grad(lambda t: R.beta_control(t, 1.0))(tree)["params"]["hidden_1"]["kernel"]
    touched = np.any(np.asarray(g) != 0, axis=0)                               # per output neuron
    top5 = np.argsort(-np.sum(np.abs(ws[1]), axis=1))[:5]
    assert set(np.flatnonzero(touched)) == set(top5)


def test_alignment_penalty_is_the_sum_of_alignment_terms_and_bounds_the_exact_one():
    rng = np.random.default_rng(5)
    widths = [12, 9, 10, 4]
    tree = {"params": {}}
    fan_in = 6
    for i, w in enumerate(widths[:-1]):
        tree["params"][f"hidden_{i}"] = {"kernel": rng.standard_normal((fan_in, w)).astype(np.float32)}
        fan_in = w
    tree["params"]["head"] = {"kernel": rng.standard_normal((fan_in, widths[-1])).astype(np.float32)}
    ws = [np.asarray(tree["params"][f"hidden_{i}"]["kernel"]).T for i in range(3)]
    want = sum(float(alignment_term(ws[i], ws[i + 1], kappa=0.3, p="inf", form="neuron", mode="bound")["A"])
               for i in range(2))
    got = float(R.alignment(tree, 2.0, kappa=0.3))
    np.testing.assert_allclose(got, 2.0 * want, rtol=1e-5)
    exact = sum(float(alignment_term(ws[i], ws[i + 1], kappa=0.3, p="inf", form="neuron", mode="exact")["A"])
                for i in range(2))
    assert got / 2.0 >= exact * (1 - 1e-6)                                   # the surrogate is a sound upper bound
    # differentiable: finite gradient, and a small gradient step lowers it
    g = jax.grad(lambda t: R.alignment(t, 1.0, kappa=0.3))(tree)
    leaves = jax.tree.leaves(g)
    assert all(np.all(np.isfinite(np.asarray(x))) for x in leaves)
    assert any(np.any(np.asarray(x) != 0) for x in leaves)
    stepped = jax.tree.map(lambda p, d: p - 1e-3 * d, tree, g)
    assert float(R.alignment(stepped, 1.0, kappa=0.3)) < got / 2.0


def test_alignment_on_conv_layers_collapses_the_taps():
    v = _variables(6)
    mats = _np_conv_layers(v)
    names = list(mats)                   # walk order = forward order for this tree
    assert names == ["layer1_0/conv1", "layer1_0/conv2", "layer2_0/conv1", "layer2_0/conv2", "layer2_0/shortcut"]
    col = {}
    for n, w in mats.items():
        kern = np.asarray(eval_path(v["params"], n)["kernel"])
        col[n] = np.sum(np.abs(w.reshape(w.shape[0], kern.shape[2], -1)), axis=-1)
    want = 0.0
    for a, b in zip(names[:-1], names[1:]):
        if col[b].shape[1] == col[a].shape[0]:
            want += float(alignment_term(col[a], col[b], kappa=0.1, p="inf", form="neuron", mode="bound")["A"])
    # pairs used: l1c1→l1c2 (2→2), l1c2→l2c1 (2 in), l2c1→l2c2 (4→4); l2c2 (4 out) → shortcut (2 in) does not chain
    np.testing.assert_allclose(float(R.alignment(v, 1.0)), want, rtol=1e-5)
    assert want > 0


def eval_path(tree, name):
    for p in name.split("/"):
        tree = tree[p]
    return tree


def test_penalties_vmap_over_members_of_a_conv_population():
    v = jax.tree.map(lambda *xs: np.stack(xs), _variables(7), _variables(8))
    alphas = jnp.asarray([0.5, 2.0])
    for pen in (R.group_lasso, R.beta_control, R.alignment):
        got = np.asarray(jax.vmap(pen)(v, alphas))
        for m in range(2):
            one = jax.tree.map(lambda a: a[m], v)
            np.testing.assert_allclose(got[m], float(pen(one, alphas[m])), rtol=1e-4)


def test_frobenius_projection_on_nested_conv_layers():
    v = _variables(9)
    ref = R.hidden_frobenius_norms(v)
    assert "stem" in ref and "head" not in ref and "layer2_0/shortcut" in ref
    scaled = jax.tree.map(lambda a: 2.5 * a, v)
    back = R.frobenius_projection(scaled, ref)
    for name, n in R.hidden_frobenius_norms(back).items():
        np.testing.assert_allclose(float(n), float(ref[name]), rtol=1e-5)
    np.testing.assert_array_equal(np.asarray(back["params"]["head"]["kernel"]),
                                  np.asarray(scaled["params"]["head"]["kernel"]))
    np.testing.assert_array_equal(np.asarray(back["params"]["stem_bn"]["scale"]),
                                  np.asarray(scaled["params"]["stem_bn"]["scale"]))
    assert "batch_stats" in back


def test_mlp_penalties_unchanged_by_the_generalisation():
    """The MLP path still penalises every hidden layer (input layer included) and never the head."""
    model = MLP(3, 7, depth=3)
    rng = np.random.default_rng(10)
    shp = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 5), jnp.float32))
    v = jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(np.float32), shp)
    ws = [np.asarray(v["params"][f"hidden_{i}"]["kernel"], np.float64).T for i in range(2)]
    np.testing.assert_allclose(float(R.group_lasso(v, 1.0)), sum(np.sum(np.linalg.norm(w, axis=1)) for w in ws),
                               rtol=1e-5)


def test_vit_penalties_skip_embedding_head_and_attention_pairs():
    from crobust.models import layer_matrices, vit
    from crobust.models.vit import VIT_TINY_TEST

    model = vit(VIT_TINY_TEST, 4)
    v = _variables(11, model)
    mats = {n: np.asarray(w, np.float64) for n, w in layer_matrices(v).items()}
    body = [n for n in mats if n not in ("embedding", "head")]
    assert len(body) == 12                                                  # 2 blocks × (q, k, v, out, 2 dense)
    gl = sum(np.sum(np.linalg.norm(mats[n], axis=1)) for n in body)
    np.testing.assert_allclose(float(R.group_lasso(v, 1.0)), gl, rtol=1e-5)
    dense = [n for n in body if "MlpBlock" in n]                            # D0, D1, D0, D1 in forward order
    want = sum(float(alignment_term(mats[a].astype(np.float32), mats[b].astype(np.float32), kappa=0.1, p="inf",
                                    form="neuron", mode="bound")["A"])
               for a, b in zip(dense[:-1], dense[1:]) if mats[b].shape[1] == mats[a].shape[0])
    np.testing.assert_allclose(float(R.alignment(v, 1.0)), want, rtol=1e-5)
