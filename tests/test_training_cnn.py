"""The population trainer with batch norm (a tiny CNN on 8×8 digits): a population of 2 equals 2 separate runs;
running statistics are per member, follow the best parameters, survive a checkpoint, and are never used as batch
statistics nor updated while attacking; validation runs in eval mode; adversarial training (a member axis ε)
really raises PGD accuracy over the plain step.

Real data (sklearn digits); the tiny CNN has two 3×3 convolutions with batch norm, 8 channels.
"""

import types

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from _trees import assert_trees_close, member
from crobust import attacks, training
from crobust.data import load_dataset, to_float
from crobust.training import AdversarialTraining, TrainConfig, fit, grid, init_population
from crobust.training import adversarial
from crobust.training.block import block_batch_indices
from crobust.training.population import stream_key

DATA = load_dataset("digits")


class TinyCNN(nn.Module):
    """conv3×3(8) → BN → ReLU → conv3×3(8, stride 2) → BN → ReLU → global average → dense(10)."""

    num_classes: int = 10
    width: int = 8
    mean: tuple = (0.0,)
    std: tuple = (1.0,)

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        x = (jnp.asarray(x, jnp.float32) - jnp.asarray(self.mean)) / jnp.asarray(self.std)
        for stride in (1, 2):
            x = nn.Conv(self.width, (3, 3), strides=stride, use_bias=False)(x)
            x = nn.relu(nn.BatchNorm(use_running_average=not train, momentum=0.9)(x))
        z = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes)(z)
        return (logits, z) if return_repr else logits


CNN = TinyCNN(mean=tuple(DATA.mean), std=tuple(DATA.std))
# SGD (Adam would amplify round-off, see test_training.py), crop+flip, a multistep schedule inside the run
# (1294 training points / 64 = 20 steps per epoch; milestone at epoch 1 = step 20).
CFG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=64, max_steps=40,
                  eval_every=20, patience=None, val_ratio=0.1, augment="crop_flip", lr_schedule="multistep",
                  lr_milestones=(1,), lr_gamma=0.5)
MEMBERS = [{"seed": 0, "lr": 0.1}, {"seed": 1, "lr": 0.05}]


@pytest.fixture(scope="module")
def pair():
    snaps = []
    with jax.default_matmul_precision("float32"):          # no TF32 on GPUs: the tolerances below are float32's
        res = fit(CNN, DATA, CFG, MEMBERS, progress=False, members_per_group=None,      # one vmapped program
                  on_block=lambda s, m: snaps.append(jax.device_get((s.step, s.params, s.model_state))))
        alone = [fit(CNN, DATA, CFG, [m], progress=False) for m in MEMBERS]
    return types.SimpleNamespace(res=res, alone=alone, snaps=snaps,
                                 init=init_population(CNN, DATA, CFG, MEMBERS))


def test_a_population_of_two_bn_cnns_equals_two_separate_runs(pair):
    # 40 SGD steps of a vmapped vs a single-member program: batched convolutions round differently (float32,
    # ~1e-7 per op), amplified by training: 4e-7 of each leaf's scale measured on a CPU; 1e-5 is 25× that and far
    # below any real coupling between members (the two differ by O(1)).
    res = pair.res
    for i, alone in enumerate(pair.alone):
        for a, b in ((res.params, alone.params), (res.model_state, alone.model_state),
                     (res.best_params, alone.best_params), (res.best_model_state, alone.best_model_state)):
            assert_trees_close(member(a, i), member(b, 0), rtol=1e-5)
        np.testing.assert_allclose(res.history["val_loss"][:, i], alone.history["val_loss"][:, 0], rtol=1e-5)
        np.testing.assert_array_equal(res.history["step"][:, i], alone.history["step"][:, 0])


def test_batch_norm_statistics_are_per_member_and_trained(pair):
    ms, ms0 = pair.res.model_state, pair.init.model_state
    assert set(ms) == {"batch_stats"}
    for leaf, leaf0 in zip(jax.tree.leaves(ms), jax.tree.leaves(ms0)):
        leaf, leaf0 = np.asarray(leaf), np.asarray(leaf0)
        assert leaf.shape[0] == 2
        assert not np.allclose(leaf[0], leaf[1])            # each member its own running statistics
        assert not np.allclose(leaf, leaf0)                 # updated by the steps (train mode)
    # the MLP path has none
    mlp_state = init_population(training_mlp(), DATA, CFG, MEMBERS)
    assert mlp_state.model_state is None and mlp_state.best_model_state is None


def training_mlp():
    from crobust.models import MLP
    return MLP(10, width=8, depth=2, mean=DATA.mean, std=DATA.std)


def test_validation_uses_running_statistics_and_best_state_follows_best_params(pair):
    res = pair.res
    apply_fn, variables = training.for_evaluation(CNN, res, "final")
    assert set(variables) == {"params", "batch_stats"}
    for i in range(2):
        val_idx = np.asarray(res.state.val_idx[i])
        v = jax.tree.map(lambda a: a[i:i + 1], variables)
        loss, acc = training.evaluate(apply_fn, v, DATA.train_images[val_idx], DATA.train_labels[val_idx])
        # the last block's validation was in eval mode with the final parameters and running statistics
        np.testing.assert_allclose(float(loss[0]), res.history["val_loss"][-1, i], rtol=2e-5)
        np.testing.assert_allclose(float(acc[0]), res.history["val_acc"][-1, i], atol=1e-6)
        # batch statistics would give other logits: the check above can tell the modes apart
        x = to_float(jnp.asarray(DATA.train_images[val_idx]))
        v0 = jax.tree.map(lambda a: a[0], v)
        batch_logits, _ = CNN.apply(v0, x, train=True, mutable=["batch_stats"])
        assert float(jnp.max(jnp.abs(batch_logits - apply_fn(v0, x)))) > 1e-2
        # best parameters and best statistics come from the same block
        best_step = int(res.state.best_step[i])
        snap = next(s for s in pair.snaps if int(s[0][i]) == best_step)
        assert_trees_close(member(res.best_params, i), member(snap[1], i), rtol=0)
        assert_trees_close(member(res.best_model_state, i), member(snap[2], i), rtol=0)


def test_model_state_round_trips_through_a_checkpoint(pair, tmp_path):
    # the same model, config and layout as pair.alone[0]: its compiled block is reused
    with jax.default_matmul_precision("float32"):          # as pair's runs
        first = fit(CNN, DATA, CFG, MEMBERS[:1], progress=False, checkpoint_dir=tmp_path / "ck")
        again = fit(CNN, DATA, CFG, MEMBERS[:1], progress=False, checkpoint_dir=tmp_path / "ck")  # restores only
    assert again.steps_run == 0
    for a, b, c in ((first.state.model_state, again.state.model_state, pair.alone[0].state.model_state),
                    (first.state.best_model_state, again.state.best_model_state,
                     pair.alone[0].state.best_model_state),
                    (first.params, again.params, pair.alone[0].params)):
        assert jax.tree.structure(a) == jax.tree.structure(b) == jax.tree.structure(c)
        for x, y, z in zip(jax.tree.leaves(a), jax.tree.leaves(b), jax.tree.leaves(c)):
            np.testing.assert_array_equal(np.asarray(x), np.asarray(y))
            np.testing.assert_array_equal(np.asarray(x), np.asarray(z))     # same program, same numbers


# Adversarial training shared by the two tests below (one compiled block): members at_eps 0 and 0.1, same seed.
AT = AdversarialTraining(norm="linf", eps=0.1, step_size=0.05, n_iter=3, ratio=0.5, labels="true", clip=True)
AT_CFG = TrainConfig(optimizer="sgd", lr=0.05, weight_decay=5e-4, batch_size=64, max_steps=300, eval_every=100,
                     patience=None, adversarial=AT)
AT_MEMBERS = grid(at_eps=[0.0, 0.1], seeds=[0])


@jax.default_matmul_precision("float32")
def test_the_attack_runs_in_eval_mode_and_leaves_the_running_statistics_alone():
    """One AT step (the last before max_steps), recomputed by hand from the documented streams: the adversarial
    half of the batch is made with the *running* statistics, and the step's new running statistics are exactly one
    train-mode update on the mixed batch (an attack in train mode would have changed both)."""
    init = init_population(CNN, DATA, AT_CFG, AT_MEMBERS)
    last = AT_CFG.max_steps - 1
    init = init.replace(step=jnp.full_like(init.step, last))
    res = fit(CNN, DATA, AT_CFG, AT_MEMBERS, state=init, progress=False)
    np.testing.assert_array_equal(res.state.step, [AT_CFG.max_steps] * 2)
    s = jax.tree.map(lambda a: a[1], init)                                  # the member with at_eps = 0.1
    ids = block_batch_indices(stream_key(s.key, "data"), s.step, s.train_idx, AT_CFG.batch_size, 1)[0]
    x, y = to_float(jnp.asarray(DATA.train_images)[ids]), jnp.asarray(DATA.train_labels, jnp.int32)[ids]
    variables = {**s.params, **s.model_state}

    @jax.jit
    def mixed(variables):
        logits_fn = lambda z: CNN.apply(variables, z, train=False)
        attack = lambda xs, ys, k: adversarial.pgd_examples(logits_fn, xs, ys, k, AT, AT.eps, AT.step_size)
        return adversarial.mix_adversarial(attack, x, y, jax.random.fold_in(stream_key(s.key, "attack"), last), AT,
                                           AT.ratio)

    x_mix = mixed(variables)
    assert 0 < int(jnp.sum(jnp.any(x_mix != x, axis=(1, 2, 3)))) <= 32
    update = lambda xb: CNN.apply(variables, xb, train=True, mutable=["batch_stats"])[1]
    want, clean = update(x_mix), update(x)
    got = member(res.state.model_state, 1)
    for g, w, c in zip(jax.tree.leaves(got), jax.tree.leaves(want), jax.tree.leaves(clean)):
        g, w, c = np.asarray(g), np.asarray(w), np.asarray(c)
        # float32 round-off of the same computation in two programs; the clean-batch update differs by far more
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)
        assert np.max(np.abs(c - w)) > 100 * np.max(np.abs(g - w))


@jax.default_matmul_precision("float32")                  # as the test above: its compiled block is reused
def test_adversarial_training_raises_pgd_accuracy_over_the_plain_step():
    """at_eps 0 is the plain step (PGD in a ball of radius 0 returns the clean points); PGD-10 at ε = 0.1 on the
    digits test set (360 images), eval mode."""
    res = fit(CNN, DATA, AT_CFG, AT_MEMBERS, progress=False)
    apply_fn, variables = training.for_evaluation(CNN, res)
    x, y = to_float(jnp.asarray(DATA.test_images)), jnp.asarray(DATA.test_labels, jnp.int32)

    @jax.jit
    @jax.vmap
    def accuracies(v):
        f = lambda z: apply_fn(v, z)
        x_adv = attacks.pgd(f, x, y, jax.random.key(7), eps=0.1, n_iter=10, norm="linf")
        return jnp.mean(jnp.argmax(f(x), -1) == y), jnp.mean(jnp.argmax(f(x_adv), -1) == y)

    clean, robust = (np.asarray(a) for a in accuracies(variables))
    # measured while writing: plain ≈ 0.03, AT ≈ 0.3 robust; both ≈ 0.9 clean
    assert clean[0] > 0.8 and clean[1] > 0.7, clean
    assert robust[1] > robust[0] + 0.15, robust


def test_a_population_of_two_resnets_equals_two_separate_runs():
    """The issue's case on the real architecture: ResNet-18 blocks (CIFAR stem, residual sums, a strided 1×1
    shortcut, batch norm after every conv), width 4, two stages, 10 SGD steps with crop+flip. Same bound and
    reason as the tiny CNN above (batched vs single-member convolutions round differently, ~1e-7 per op)."""
    from crobust.models import ResNet18

    net = ResNet18(10, stem="cifar", width=4, stage_sizes=(1, 1), mean=tuple(DATA.mean), std=tuple(DATA.std))
    cfg = TrainConfig(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, batch_size=32, max_steps=10,
                      eval_every=5, patience=None, val_ratio=0.1, augment="crop_flip")
    with jax.default_matmul_precision("float32"):
        res = fit(net, DATA, cfg, MEMBERS, progress=False, members_per_group=None)
        alone = [fit(net, DATA, cfg, [m], progress=False) for m in MEMBERS]
    for i, one in enumerate(alone):
        for a, b in ((res.params, one.params), (res.model_state, one.model_state)):
            assert_trees_close(member(a, i), member(b, 0), rtol=1e-5)
        np.testing.assert_allclose(res.history["val_loss"][:, i], one.history["val_loss"][:, 0], rtol=1e-5)
    # and the members really differ (seeds and learning rates): the comparison above is not between copies
    assert not np.allclose(np.asarray(jax.tree.leaves(res.params)[0][0]), np.asarray(jax.tree.leaves(res.params)[0][1]))
