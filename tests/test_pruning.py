"""crobust.pruning: ratio 0 is the identity; pruning a planted dead filter/neuron changes no output; a pruned
channel is exactly zero after its batch norm; per-layer and global ratios remove exactly the requested number of
lowest-norm rows; ε-pruning meets its target per layer and is maximal; the ε sweep reaches the global ratio;
masked fine-tuning (a generic fit-like callable and crobust.training.fit on digits) keeps pruned weights at zero."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import pruning as P
from crobust._errors import CrobustError
from crobust.models import MLP, WRN, ResNet18, layer_matrices


@pytest.fixture(autouse=True)
def _full_float32():
    """Reference comparisons at full float32 on every backend (a GPU's default TF32 convs/matmuls are ~1e-3
    relative, far above the float32 tolerances stated in these tests)."""
    with jax.default_matmul_precision("float32"):
        yield

MODEL = ResNet18(4, stem="cifar", width=4, stage_sizes=(1, 1))


def _variables(model=MODEL, seed=0, hw=8):
    rng = np.random.default_rng(seed)
    shp = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, hw, hw, 3), jnp.float32))

    def draw(path, s):
        name = path[-1].key
        if name in ("scale", "var"):
            return jnp.asarray(rng.uniform(0.5, 1.5, s.shape), jnp.float32)
        if name in ("bias", "mean"):
            return jnp.asarray(0.1 * rng.standard_normal(s.shape), jnp.float32)
        return jnp.asarray(rng.standard_normal(s.shape) * np.sqrt(2.0 / np.prod(s.shape[:-1])), jnp.float32)

    return jax.tree_util.tree_map_with_path(draw, shp)


def _np_norms(v):
    mats = layer_matrices(v)
    return {n: np.linalg.norm(np.asarray(w, np.float64), axis=-1) for n, w in mats.items()
            if n not in ("stem", "head")}


X = jnp.asarray(np.random.default_rng(1).uniform(size=(5, 8, 8, 3)), jnp.float32)


def test_prunable_layers_skip_stem_and_head():
    v = _variables()
    names = list(P.prunable_specs(v))
    assert "stem" not in names and "head" not in names
    assert names == ["layer1_0/conv1", "layer1_0/conv2", "layer2_0/conv1", "layer2_0/conv2", "layer2_0/shortcut"]


@pytest.mark.parametrize("how", [dict(ratio=0.0), dict(global_ratio=0.0), dict(epsilon=0.0), dict(epsilon_ratio=0.0)])
def test_ratio_zero_is_the_identity(how):
    v = _variables(seed=2)
    pruned, masks = P.prune(v, **how)
    assert all(np.all(m) for m in masks.values())
    for a, b in zip(jax.tree.leaves(v), jax.tree.leaves(pruned)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_pruning_a_planted_dead_filter_changes_no_output():
    v = _variables(seed=3)
    o = 2
    p = v["params"]["layer1_0"]
    p["conv1"]["kernel"] = p["conv1"]["kernel"].at[..., o].set(0.0)            # a dead channel: zero filter and
    p["conv1_bn"]["scale"] = p["conv1_bn"]["scale"].at[o].set(0.0)             # its BN outputs 0
    p["conv1_bn"]["bias"] = p["conv1_bn"]["bias"].at[o].set(0.0)
    masks = P.ratio_masks(v, 0.25)                                             # 1 of 4 rows per layer goes
    assert np.flatnonzero(~masks["layer1_0/conv1"]).tolist() == [o]           # the planted zero row is the lowest
    only = {"layer1_0/conv1": masks["layer1_0/conv1"]}
    pruned = P.apply_masks(v, only)
    apply = jax.jit(MODEL.apply)
    np.testing.assert_array_equal(np.asarray(apply(pruned, X)), np.asarray(apply(v, X)))
    # a WRN conv2 (into the residual sum, no BN of its own): a zero filter alone is dead
    wrn = WRN(10, 1, num_classes=3, base=2)
    w = _variables(wrn, seed=4)
    k = w["params"]["group2_0"]["conv2"]["kernel"]
    w["params"]["group2_0"]["conv2"]["kernel"] = k.at[..., 1].set(0.0)
    m = P.ratio_masks(w, 0.25)["group2_0/conv2"]
    assert np.flatnonzero(~m).tolist() == [1]
    wp = P.apply_masks(w, {"group2_0/conv2": m})
    np.testing.assert_array_equal(np.asarray(jax.jit(wrn.apply)(wp, X)), np.asarray(jax.jit(wrn.apply)(w, X)))


def test_pruning_a_planted_zero_neuron_of_an_mlp_changes_no_output():
    model = MLP(3, 6, depth=3)
    rng = np.random.default_rng(5)
    v = {"params": {"hidden_0": {"kernel": jnp.asarray(rng.standard_normal((8 * 8 * 3, 6)), jnp.float32)},
                    "hidden_1": {"kernel": jnp.asarray(rng.standard_normal((6, 6)), jnp.float32)},
                    "head": {"kernel": jnp.asarray(rng.standard_normal((6, 3)), jnp.float32)}}}
    v["params"]["hidden_1"]["kernel"] = v["params"]["hidden_1"]["kernel"].at[:, 4].set(0.0)
    pruned, masks = P.prune(v, global_ratio=1 / 12)                           # 1 of 12 hidden rows
    assert np.flatnonzero(~masks["hidden_1"]).tolist() == [4] and np.all(masks["hidden_0"])
    np.testing.assert_array_equal(np.asarray(model.apply(pruned, X)), np.asarray(model.apply(v, X)))
    assert "head" not in masks


def test_masking_removes_the_channel_after_its_batch_norm():
    v = _variables(seed=6)
    mask = np.ones(8, bool)
    mask[[1, 6]] = False
    pruned = P.apply_masks(v, {"layer2_0/conv1": mask})
    p = pruned["params"]["layer2_0"]
    assert np.all(np.asarray(p["conv1"]["kernel"])[..., [1, 6]] == 0)
    assert np.all(np.asarray(p["conv1"]["kernel"])[..., mask] == np.asarray(v["params"]["layer2_0"]["conv1"]["kernel"])[..., mask])
    assert np.all(np.asarray(p["conv1_bn"]["scale"])[[1, 6]] == 0) and np.all(np.asarray(p["conv1_bn"]["bias"])[[1, 6]] == 0)
    _, st = MODEL.apply(pruned, X, capture_intermediates=True, mutable=["intermediates"])
    bn_out = np.asarray(st["intermediates"]["layer2_0"]["conv1_bn"]["__call__"][0])
    assert np.all(bn_out[..., [1, 6]] == 0) and np.all(np.any(bn_out[..., mask] != 0, axis=(0, 1, 2)))
    # running statistics are untouched
    np.testing.assert_array_equal(np.asarray(pruned["batch_stats"]["layer2_0"]["conv1_bn"]["mean"]),
                                  np.asarray(v["batch_stats"]["layer2_0"]["conv1_bn"]["mean"]))


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_per_layer_ratio_removes_the_lowest_rows_of_each_layer(ratio):
    v = _variables(seed=7)
    norms = _np_norms(v)
    masks = P.ratio_masks(v, ratio)
    for n, m in masks.items():
        assert int(np.sum(~m)) == math.floor(ratio * m.shape[0])
        if np.any(~m):
            assert np.max(norms[n][~m]) <= np.min(norms[n][m])


@pytest.mark.parametrize("ratio", [0.2, 0.5, 0.8])
def test_global_ratio_is_reached_with_one_threshold(ratio):
    v = _variables(seed=8)
    norms = _np_norms(v)
    masks = P.global_ratio_masks(v, ratio)
    total = sum(m.size for m in masks.values())
    removed = sum(int(np.sum(~m)) for m in masks.values())
    assert removed == math.floor(ratio * total)
    assert all(np.sum(m) >= 1 for m in masks.values())                        # min_keep = 1
    gone = np.concatenate([norms[n][~m] for n, m in masks.items()])
    # every kept row that is not a layer's protected largest row has a norm ≥ every removed one
    kept = np.concatenate([np.sort(norms[n][m])[:-1] for n, m in masks.items()])
    assert np.max(gone) <= np.min(kept)
    with pytest.raises(CrobustError, match="min_keep"):
        P.global_ratio_masks(v, 0.99)


@pytest.mark.parametrize("eps", [0.01, 0.05, 0.2, 0.5])
def test_epsilon_pruning_meets_its_target_per_layer_and_is_maximal(eps):
    v = _variables(seed=9)
    norms = _np_norms(v)
    masks = P.epsilon_masks(v, eps)
    for n, m in masks.items():
        sq = norms[n] ** 2
        share = np.sum(sq[~m]) / np.sum(sq)
        assert share <= eps                                                    # the target relative error
        assert np.sum(m) >= 1
        # maximal: removing the smallest kept row as well would exceed ε, so the kept k is the smallest that works
        nxt = np.min(sq[m])
        assert (np.sum(sq[~m]) + nxt) / np.sum(sq) > eps or np.sum(m) == 1
        if np.any(~m):
            assert np.max(norms[n][~m]) <= np.min(norms[n][m])                 # lowest-norm rows go first


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.6])
def test_epsilon_sweep_reaches_the_global_ratio(ratio):
    v = _variables(seed=10)
    norms = _np_norms(v)
    eps, masks, achieved = P.epsilon_for_ratio(v, ratio)
    total = sum(m.size for m in masks.values())
    removed = sum(int(np.sum(~m)) for m in masks.values())
    assert removed == math.floor(ratio * total)                               # random norms: no ties
    np.testing.assert_allclose(achieved, removed / total)
    for n, m in masks.items():
        assert np.sum(norms[n][~m] ** 2) / np.sum(norms[n] ** 2) <= eps * (1 + 1e-12)
    # the same masks as ε-pruning at that ε, and a slightly smaller ε removes fewer rows
    same = P.epsilon_masks(v, eps)
    assert all(np.array_equal(same[n], masks[n]) for n in masks)
    fewer = P.epsilon_masks(v, np.nextafter(eps, 0.0))
    assert sum(int(np.sum(~m)) for m in fewer.values()) < removed


def test_population_masks_are_per_member():
    a, b = _variables(seed=11), _variables(seed=12)
    pop = jax.tree.map(lambda x, y: jnp.stack([x, y]), a, b)
    for fn in (lambda t: P.ratio_masks(t, 0.5), lambda t: P.epsilon_masks(t, 0.1),
               lambda t: P.global_ratio_masks(t, 0.4), lambda t: P.epsilon_for_ratio(t, 0.4)[1]):
        mp, ma, mb = fn(pop), fn(a), fn(b)
        for n in ma:
            np.testing.assert_array_equal(mp[n][0], ma[n])
            np.testing.assert_array_equal(mp[n][1], mb[n])
    pruned = P.apply_masks(pop, P.ratio_masks(pop, 0.5))
    one = P.apply_masks(b, P.ratio_masks(b, 0.5))
    for x, y in zip(jax.tree.leaves(pruned), jax.tree.leaves(one)):
        np.testing.assert_array_equal(np.asarray(x)[1], np.asarray(y))


def test_bad_arguments_raise():
    v = _variables(seed=13)
    with pytest.raises(CrobustError, match="exactly one"):
        P.prune(v, ratio=0.1, epsilon=0.1)
    with pytest.raises(CrobustError, match=r"\[0, 1\)"):
        P.ratio_masks(v, 1.0)
    with pytest.raises(CrobustError, match="unknown layer"):
        P.apply_masks(v, {"nope": np.ones(3, bool)})
    with pytest.raises(CrobustError, match="rows"):
        P.apply_masks(v, {"layer1_0/conv1": np.ones(3, bool)})


# ----------------------------------------------------------------------------------------------------------
# fine-tuning


def _sgd_fit_like(model, variables, *, x, y, steps, lr):
    """A minimal fit-like trainer: full-batch SGD on cross-entropy + weight decay from ``variables``."""
    def loss(p):
        logits = model.apply(p, x)
        ce = -jnp.mean(jax.nn.log_softmax(logits)[jnp.arange(y.shape[0]), y])
        return ce + 1e-3 * sum(jnp.sum(q * q) for q in jax.tree.leaves(p))

    step = jax.jit(lambda p: jax.tree.map(lambda a, g: a - lr * g, p, jax.grad(loss)(p)))
    for _ in range(steps):
        variables = step(variables)
    return variables


def test_fine_tune_with_a_fit_like_callable_keeps_pruned_weights_at_zero():
    model = MLP(3, 10, depth=3)
    rng = np.random.default_rng(14)
    shp = jax.eval_shape(model.init, jax.random.key(0), jax.ShapeDtypeStruct((1, 8, 8, 3), jnp.float32))
    v = jax.tree.map(lambda s: jnp.asarray(rng.standard_normal(s.shape) / np.sqrt(s.shape[0]), jnp.float32), shp)
    pruned, masks = P.prune(v, ratio=0.4)
    y = jnp.asarray(rng.integers(0, 3, 5))
    tuned = P.fine_tune(_sgd_fit_like, model, pruned, masks, x=X, y=y, steps=5, lr=0.5)
    for name in ("hidden_0", "hidden_1"):
        k0, k1 = np.asarray(pruned["params"][name]["kernel"]), np.asarray(tuned["params"][name]["kernel"])
        assert np.all(k1[:, ~masks[name]] == 0)
        assert np.max(np.abs(k1[:, masks[name]] - k0[:, masks[name]])) > 1e-4   # the kept weights did train
    # where a pruned filter would revive without the mask (WRN conv2 feeds the residual sum, so its zeroed filter
    # still gets gradients), the masked forward keeps it at zero
    wrn = WRN(10, 1, num_classes=3, base=2)
    w = _variables(wrn, seed=15)
    wp, wm = P.prune(w, ratio=0.5)
    name = "group2_0/conv2"
    free = _sgd_fit_like(wrn, wp, x=X, y=y, steps=3, lr=0.5)
    assert np.any(np.asarray(free["params"]["group2_0"]["conv2"]["kernel"])[..., ~wm[name]] != 0)
    kept = P.fine_tune(_sgd_fit_like, wrn, wp, wm, x=X, y=y, steps=3, lr=0.5)
    k = np.asarray(kept["params"]["group2_0"]["conv2"]["kernel"])
    assert np.all(k[..., ~wm[name]] == 0) and np.any(k[..., wm[name]] != np.asarray(
        wp["params"]["group2_0"]["conv2"]["kernel"])[..., wm[name]])


def test_fit_masked_fine_tunes_an_mlp_population_with_the_trainer():
    from crobust.data import load_dataset
    from crobust.training import TrainConfig, grid

    data = load_dataset("digits")
    model = MLP(10, width=12, depth=3, mean=data.mean, std=data.std)
    v = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1,) + data.train_images.shape[1:]))
    pruned, masks = P.prune(v, epsilon_ratio=0.5)
    cfg = TrainConfig(optimizer="adamw", lr=1e-2, batch_size=64, max_steps=10, eval_every=10, patience=None,
                      regularizer="group_lasso", projection="frobenius")
    res = P.fit_masked(model, data, cfg, grid(alpha=[1e-4], seeds=[0, 1]), pruned, masks, progress=False)
    assert int(np.max(np.asarray(res.state.step))) == 10
    for name, m in masks.items():
        k = np.asarray(res.params["params"][name]["kernel"])                  # (members, in, out)
        assert np.all(k[:, :, ~m] == 0)
        assert np.any(k[:, :, m] != np.asarray(pruned["params"][name]["kernel"])[None][:, :, m])
    # the Frobenius projection kept the pruned model's own scale
    for name in masks:
        got = np.linalg.norm(np.asarray(res.params["params"][name]["kernel"])[0])
        np.testing.assert_allclose(got, np.linalg.norm(np.asarray(pruned["params"][name]["kernel"])), rtol=1e-4)


def _digits_and_pruned_mlp(seed=0):
    from crobust.data import load_dataset

    data = load_dataset("digits")
    model = MLP(10, width=12, depth=3, mean=data.mean, std=data.std)
    v = jax.jit(model.init)(jax.random.key(seed), jnp.zeros((1,) + data.train_images.shape[1:]))
    return data, model, v


def test_the_trainers_mask_holds_pruned_entries_at_exactly_zero_where_the_penalty_would_revive_them():
    """L1 gives a pruned entry a non-zero gradient (jax's d|x|/dx at 0 is 1): the same run without the trainer's
    mask revives the pruned columns, with it they stay exactly 0."""
    from crobust.training import TrainConfig, fit, grid

    data, model, v = _digits_and_pruned_mlp()
    pruned, masks = P.prune(v, ratio=0.5)
    cfg = TrainConfig(optimizer="adamw", lr=1e-2, batch_size=64, max_steps=10, eval_every=10, patience=None,
                      regularizer="l1", projection="frobenius")
    members = grid(alpha=[1e-3], seeds=[0])
    res = P.fit_masked(model, data, cfg, members, pruned, masks, progress=False)
    raw = res.state.params["params"]
    for name, m in masks.items():
        assert np.all(np.asarray(raw[name]["kernel"])[:, :, ~m] == 0), name
    # the same start without the mask: the pruned columns come back
    state = res.state
    from crobust.training import init_population
    free = init_population(model, data, cfg, members)
    stacked = jax.tree.map(lambda a: jnp.asarray(a)[None], {"params": pruned["params"]})
    free = free.replace(params=stacked, best_params=stacked, ref_norms=state.ref_norms)
    revived = fit(model, data, cfg, members, state=free, progress=False).state.params["params"]
    assert any(np.any(np.asarray(revived[n]["kernel"])[:, :, ~m] != 0) for n, m in masks.items())


def test_fit_masked_takes_per_member_masks_and_stacked_variables():
    from crobust.training import TrainConfig, grid

    data, model, v0 = _digits_and_pruned_mlp(0)
    _, _, v1 = _digits_and_pruned_mlp(1)
    (p0, m0), (p1, m1) = P.prune(v0, ratio=0.25), P.prune(v1, ratio=0.5)
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), v0, v1)
    masks = {n: np.stack([m0[n], m1[n]]) for n in m0}
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=64, max_steps=5, eval_every=5, patience=None)
    res = P.fit_masked(model, data, cfg, grid(seeds=[0, 1]), stacked, masks, progress=False)
    for i, (start, m) in enumerate(((p0, m0), (p1, m1))):
        for name in m:
            k = np.asarray(res.params["params"][name]["kernel"])[i]
            assert np.all(k[:, ~m[name]] == 0) and np.sum(np.any(k != 0, axis=0)) == np.sum(m[name])
            assert np.any(k[:, m[name]] != np.asarray(start["params"][name]["kernel"])[:, m[name]])
    with pytest.raises(CrobustError, match="mask for 'hidden_0' must be"):
        P.fit_masked(model, data, cfg, grid(seeds=[0, 1, 2]), v0, masks, progress=False)


def test_fit_masked_fine_tunes_a_batch_norm_resnet_and_keeps_its_running_statistics():
    """A tiny ResNet-18 (CIFAR stem, width 4, one stage of one block: stem, two 3×3 convs with their BNs) pruned at
    50 % per layer: the pruned convs' output columns and their own BN scale/bias stay 0 (the channel is removed),
    the members start from the given running statistics and update them in train mode."""
    from crobust.data import load_dataset
    from crobust.training import TrainConfig, grid

    data = load_dataset("digits")
    model = ResNet18(10, stem="cifar", width=4, stage_sizes=(1,), mean=tuple(data.mean), std=tuple(data.std))
    v = jax.jit(model.init)(jax.random.key(3), jnp.zeros((1,) + data.train_images.shape[1:]))
    pruned, masks = P.prune(v, ratio=0.5)
    cfg = TrainConfig(optimizer="sgd", lr=0.05, batch_size=32, max_steps=3, eval_every=3, patience=None,
                      regularizer="l1")
    res = P.fit_masked(model, data, cfg, grid(alpha=[1e-3], seeds=[0]), pruned, masks, progress=False)
    got = res.state.params["params"]
    for name, m in masks.items():
        spec = P.prunable_specs({"params": got})[name]
        parent = got
        for part in spec.path[:-1]:
            parent = parent[part]
        k = np.asarray(parent[spec.path[-1]]["kernel"])
        assert np.all(k[..., ~m] == 0), name
        bn = parent.get(spec.path[-1] + "_bn")
        if bn is not None:
            assert np.all(np.asarray(bn["scale"])[:, ~m] == 0) and np.all(np.asarray(bn["bias"])[:, ~m] == 0)
    start = jax.tree.leaves(pruned["batch_stats"])
    after = jax.tree.leaves(res.state.model_state["batch_stats"])
    assert len(start) == len(after) and any(not np.allclose(a, np.asarray(b)[0]) for a, b in zip(start, after))
