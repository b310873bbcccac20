"""Freezing (``TrainConfig.trainable``) and staged starts (:mod:`crobust.training.stages`): a frozen encoder does
not move at all under AdamW with weight decay and batch norm — parameters, batch-norm statistics and optimiser
state — while the trainable part trains; a partly frozen batch-norm model keeps the frozen layers' statistics.

A tiny CNN on 8×8 digits: encoder = conv 3×3(4) → BN → ReLU → mean; head = BN(4) → dense(10).
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._errors import CrobustError
from crobust.data import load_dataset
from crobust.training import TrainConfig, fit, init_population, objective, stages, update

DATA = load_dataset("digits")


class Encoder(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool):
        x = nn.Conv(4, (3, 3))(jnp.asarray(x, jnp.float32))
        return jnp.mean(nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x)), axis=(1, 2))


class Head(nn.Module):
    @nn.compact
    def __call__(self, z, train: bool):
        return nn.Dense(10)(nn.BatchNorm(use_running_average=not train, momentum=0.9)(z))


class Net(nn.Module):
    @nn.compact
    def __call__(self, x, train: bool = False):
        return Head(name="head")(Encoder(name="encoder")(x, train), train)


NET = Net()
MEMBERS = [{"seed": 0}, {"seed": 1}]
PRETRAIN = TrainConfig(optimizer="adamw", lr=1e-2, weight_decay=0.1, batch_size=32, max_steps=10, eval_every=5,
                       patience=None)


@pytest.fixture(scope="module")
def pre():
    return fit(NET, DATA, PRETRAIN, MEMBERS, progress=False)


def _stage(pre, trainable, optimizer="adamw"):
    """Fine-tune the pretrained members for 10 steps with ``trainable``; (start state, result)."""
    cfg = TrainConfig(optimizer=optimizer, lr=1e-2, weight_decay=0.1, batch_size=32, max_steps=10, eval_every=5,
                      patience=None, trainable=trainable)
    start = stages.start_from(init_population(NET, DATA, cfg, MEMBERS), cfg, pre.best_params, pre.best_model_state)
    return start, fit(NET, DATA, cfg, MEMBERS, state=start, progress=False)


def _part(tree, prefix):
    return {k: v for k, v in tree.items() if k.startswith(prefix)}


def _flat(tree):
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(x)
            for path, x in jax.tree_util.tree_leaves_with_path(tree)}


@pytest.mark.parametrize("optimizer", ["adamw", "sgd"])
def test_a_frozen_encoder_is_bit_identical_after_fine_tuning_with_weight_decay_and_batch_norm(pre, optimizer):
    start, res = _stage(pre, "^head/", optimizer)
    before, after = _flat({**start.params, **start.model_state}), _flat({**res.params, **res.model_state})
    frozen = [k for k in before if "/encoder/" in f"/{k}"]
    assert frozen and {k for k in frozen if "batch_stats" in k}            # kernels, biases, BN scale/bias, stats
    for k in frozen:
        np.testing.assert_array_equal(after[k], before[k], err_msg=k)       # bit for bit
    # The head trained: its parameters and its batch-norm statistics (train mode) moved.
    for k in before.keys() - set(frozen):
        assert np.max(np.abs(after[k] - before[k])) > 1e-4, k
    # The optimiser keeps no state for the frozen part (no moments to decay or to carry).
    n_opt = sum(x.size for x in jax.tree.leaves(res.state.opt_state.inner_state))
    n_head = sum(x.size for x in jax.tree.leaves(_part(res.params["params"], "head")))
    assert n_opt == (2 if optimizer == "adamw" else 1) * n_head + (2 if optimizer == "adamw" else 0)


def test_without_freezing_weight_decay_and_batch_statistics_move_the_encoder(pre):
    # The planted contrast: the same stage with every parameter trainable moves the encoder (so the test above
    # can fail), and so does a gradient mask alone — AdamW's decoupled decay −η·wd·p acts on masked entries too.
    start, res = _stage(pre, None)
    assert np.max(np.abs(np.asarray(res.params["params"]["encoder"]["Conv_0"]["kernel"])
                         - np.asarray(start.params["params"]["encoder"]["Conv_0"]["kernel"]))) > 1e-4
    cfg = TrainConfig(lr=1e-2, weight_decay=0.1, batch_size=32, max_steps=10, eval_every=5, patience=None)
    masked = start.replace(param_mask=jax.tree.map(
        lambda path, x: jnp.full(x.shape, 0.0 if path.startswith("encoder") else 1.0),
        update.leaf_paths(start.params), start.params))
    res_mask = fit(NET, DATA, cfg, MEMBERS, state=masked, progress=False)
    k0 = np.asarray(start.params["params"]["encoder"]["Conv_0"]["kernel"])
    k1 = np.asarray(res_mask.params["params"]["encoder"]["Conv_0"]["kernel"])
    lr_wd = 1e-2 * 0.1
    np.testing.assert_allclose(k1, k0 * (1 - lr_wd) ** 10, rtol=1e-5)    # only the decay acted: (1 − η·wd)^10


def test_when_every_statistic_is_frozen_the_model_trains_in_eval_mode(pre):
    # Only the head's dense layer trains: both BN layers are frozen, so the step runs in eval mode (running
    # statistics normalise), and the dense layer's gradient is that of the eval-mode model.
    start, res = _stage(pre, "^head/Dense_0/")
    for k, v in _flat(res.model_state).items():
        np.testing.assert_array_equal(v, _flat(start.model_state)[k], err_msg=k)
    x = jnp.asarray(DATA.train_images[:8], jnp.float32) / 255.0
    y = jnp.asarray(DATA.train_labels[:8])
    one = jax.tree.map(lambda a: a[0], {**start.params, **start.model_state})
    logits_fn = objective.train_apply(NET.apply, True, update.stats_labels(
        {"batch_stats": one["batch_stats"]}, {"params": one["params"]}, "^head/Dense_0/"))
    given = {"batch_stats": one["batch_stats"]}
    logits, ms = logits_fn({"params": one["params"]}, given, x)
    np.testing.assert_array_equal(np.asarray(logits), np.asarray(NET.apply(one, x, train=False)))
    assert ms is given


def test_stage_start_keeps_the_mapped_leaves_and_the_fresh_head(pre):
    cfg = TrainConfig(lr=1e-2, batch_size=32, max_steps=10, eval_every=5, patience=None, trainable="^head/")
    fresh = init_population(NET, DATA, cfg, MEMBERS)
    start = stages.start_from(fresh, cfg, pre.best_params, pre.best_model_state, keep="^encoder/")
    got, old, new = _flat({**start.params, **start.model_state}), _flat(
        {**pre.best_params, **pre.best_model_state}), _flat({**fresh.params, **fresh.model_state})
    for k in got:
        np.testing.assert_array_equal(got[k], (old if "/encoder/" in f"/{k}" else new)[k], err_msg=k)
    with pytest.raises(CrobustError, match="keeps nothing"):
        stages.start_from(fresh, cfg, pre.best_params, pre.best_model_state, keep="^nothing/")


def test_a_trainable_pattern_that_matches_nothing_is_one_clear_error():
    cfg = TrainConfig(batch_size=32, max_steps=5, eval_every=5, patience=None, trainable="^decoder/")
    with pytest.raises(CrobustError, match="matches no parameter"):
        init_population(NET, DATA, cfg, MEMBERS)
    with pytest.raises(CrobustError, match="regular expression"):
        TrainConfig(trainable="(").validate()
