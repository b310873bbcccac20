"""Member-execution strategies (crobust.training.execution): every strategy and member layout gives each member the
results it gets trained alone, up to float round-off — early stopping and a diverged (frozen) member included; a run
killed mid-training resumes bitwise under the CPU strategy, and under another strategy to round-off; the strategy
is recorded but is not part of a run's identity; ``'auto'`` follows its documented rule. The evaluation of a
population member by member (one compiled call each) equals one program and robust_accuracy.

A tiny batch-norm CNN (test_training_cnn's, 4 channels) on 8×8 digits, 3 members, 8 steps in blocks of 3 (the last
block is cut at max_steps).
"""

import dataclasses
import shutil
import types

import jax
import numpy as np
import pytest
from jax.tree_util import Partial

from _trees import assert_trees_close, member
from crobust import checkpoint, evaluation, parallel, records
from crobust._errors import CrobustError
from crobust.data import subsample
from crobust.models import MLP
from crobust.attacks import _stepping
from crobust.training import TrainConfig, execution, fit
from test_checkpoint import _assert_bitwise, _flat
from test_training_cnn import DATA, TinyCNN

DS = subsample(DATA, n_train=400, n_test=50, seed=0)
CNN = TinyCNN(width=4, mean=tuple(DS.mean), std=tuple(DS.std))
CFG = TrainConfig(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, batch_size=32, max_steps=8,
                  eval_every=3, patience=3, val_ratio=0.2, augment="crop_flip")
# member 2's first step overflows (lr 1e30): it diverges in block 0 and is frozen from then on
MEMBERS = [{"seed": 0}, {"seed": 1, "lr": 0.05}, {"seed": 2, "lr": 1e30}]
# (execution, members_per_group): today's CPU scan, the vmapped scan (accelerators), the host loop member by
# member (the CPU rule for convolutions), in vmapped groups of 2 (a group of 2, then of 1), and all members vmapped
LAYOUTS = [("scan", 1), ("scan", None), ("host_loop", 1), ("host_loop", 2), ("host_loop", None)]
# 8 SGD steps of one member laid out differently (inside or outside a loop, vmapped or not): XLA fuses and batches
# the float32 convolutions differently (~1e-7 per operation); measured ≤ 6e-7 of each leaf's scale on a CPU.
# 1e-5 is ~15× that and far below any coupling between members (they differ by O(1)).
RTOL = 1e-5


def _fit(cfg, members, **kw):
    return fit(CNN, DS, cfg, members, progress=False, **kw)


@pytest.fixture(scope="module")
def runs():
    host = dataclasses.replace(CFG, execution="host_loop")
    alone = [_fit(host, [m], members_per_group=1) for m in MEMBERS]
    by_layout = {(ex, g): _fit(dataclasses.replace(CFG, execution=ex), MEMBERS, members_per_group=g)
                 for ex, g in LAYOUTS}
    return types.SimpleNamespace(alone=alone, by_layout=by_layout)


@pytest.mark.parametrize("layout", LAYOUTS, ids=[f"{ex}-{g}" for ex, g in LAYOUTS])
def test_every_strategy_gives_each_member_its_results_trained_alone(runs, layout):
    res = runs.by_layout[layout]
    assert res.execution == layout[0]
    for i, alone in enumerate(runs.alone):
        for a, b in ((res.params, alone.params), (res.model_state, alone.model_state),
                     (res.best_params, alone.best_params), (res.best_model_state, alone.best_model_state),
                     (res.state.opt_state, alone.state.opt_state)):
            assert_trees_close(member(a, i), member(b, 0), rtol=RTOL)
        n = alone.history["step"].shape[0]          # blocks until it stopped; in the population it then stays put
        for k in ("step", "alive", "evaluated"):
            np.testing.assert_array_equal(res.history[k][:n, i], alone.history[k][:, 0], err_msg=k)
        assert not res.history["alive"][n - 1:, i].any() and (res.history["step"][n:, i] == alone.state.step[0]).all()
        np.testing.assert_allclose(res.history["val_loss"][:n, i], alone.history["val_loss"][:, 0], rtol=RTOL)
        np.testing.assert_array_equal(np.asarray(res.state.best_step)[i], np.asarray(alone.state.best_step)[0])


@pytest.mark.parametrize("group", [1, 2])
def test_members_side_by_side_on_threads_give_bitwise_the_results_of_one_thread(runs, group, monkeypatch):
    """The host loop's worker threads (crobust.parallel.host_map) only change when each member's calls run: the
    same compiled programs on the same inputs, so one thread and three give identical bits (members, or groups
    of 2, each on its own thread; the diverged member and the cut last block included)."""
    host = dataclasses.replace(CFG, execution="host_loop")
    got = {}
    for threads in ("1", "3"):
        monkeypatch.setenv(parallel.ENV_HOST_THREADS, threads)
        got[threads] = _fit(host, MEMBERS, members_per_group=group)
    _assert_bitwise(_flat(got["1"]), _flat(got["3"]))
    monkeypatch.setenv(parallel.ENV_HOST_THREADS, "two")
    with pytest.raises(CrobustError, match="CROBUST_HOST_THREADS must be a positive integer"):
        parallel.host_threads()


def test_host_map_keeps_order_and_raises_the_first_error():
    import threading
    seen = set()

    def fn(i):
        seen.add(threading.current_thread().name)
        return i * i

    assert parallel.host_map(fn, 7, threads=3) == [i * i for i in range(7)]
    assert any(name.startswith("crobust-member") for name in seen)        # the calls ran on the worker threads

    def bad(i):
        if i == 4:
            raise ValueError("member 4")
        return i

    with pytest.raises(ValueError, match="member 4"):
        parallel.host_map(bad, 6, threads=2)


def test_the_planted_divergence_and_the_cut_last_block_happen(runs):
    # what the equality above covers: member 2 diverges in block 0 and never steps again (frozen); the others run
    # 3 + 3 + 2 steps (the last block is cut at max_steps) or stop early on patience
    h = runs.by_layout[("host_loop", 1)].history
    assert h["step"].shape[0] == 3
    assert not h["alive"][:, 2].any() and (h["step"][:, 2] == 0).all()
    assert bool(np.asarray(runs.by_layout[("host_loop", 1)].state.diverged)[2])
    assert h["step"][-1, 0] == 8 or not h["alive"][-1, 0]


def test_a_kill_mid_training_resumes_bitwise_under_the_host_loop_and_to_round_off_under_scan(runs, tmp_path):
    host = dataclasses.replace(CFG, execution="host_loop")
    reference = runs.by_layout[("host_loop", 1)]
    ckdir = tmp_path / "ck"

    class Killed(Exception):
        pass

    def crash(state, metrics):             # dies in block 1 before its checkpoint: the one of block 0 is the last
        if int(np.max(metrics["step"])) > 3:
            raise Killed

    with pytest.raises(Killed):
        _fit(host, MEMBERS, members_per_group=1, checkpoint_dir=ckdir, on_block=crash)
    shutil.copytree(ckdir, tmp_path / "ck_scan")
    resumed = _fit(host, MEMBERS, members_per_group=1, checkpoint_dir=ckdir)
    assert resumed.steps_run == 8 - 3
    _assert_bitwise(_flat(resumed), _flat(reference))          # whole state, best parameters and full history

    other = _fit(dataclasses.replace(CFG, execution="scan"), MEMBERS, members_per_group=1,
                 checkpoint_dir=tmp_path / "ck_scan")                 # the host loop's checkpoint, accepted
    assert other.execution == "scan" and other.steps_run == 8 - 3
    for a, b in ((other.params, reference.params), (other.best_params, reference.best_params),
                 (other.model_state, reference.model_state)):
        assert_trees_close(a, b, rtol=RTOL)
    np.testing.assert_array_equal(other.history["step"], reference.history["step"])


def test_the_strategy_is_recorded_but_not_part_of_a_run_identity(tmp_path):
    describe = lambda ex: checkpoint.describe(CNN, DS, dataclasses.replace(CFG, execution=ex), MEMBERS)
    assert checkpoint.fingerprint(describe("scan")) == checkpoint.fingerprint(describe("host_loop"))
    assert checkpoint.fingerprint(describe("scan")) != checkpoint.fingerprint(
        checkpoint.describe(CNN, DS, dataclasses.replace(CFG, lr=0.2), MEMBERS))
    run = records.RunDir(tmp_path / "run", study="s", preset="p")
    cfg = lambda **train: {"train": {**dataclasses.asdict(CFG), **train}}
    run.start(cfg(execution="scan"), not_identity=["train.execution"])
    run.start(cfg(execution="host_loop"), not_identity=["train.execution"])          # the same run: reused
    assert '"execution": "host_loop"' in (tmp_path / "run" / "config.json").read_text()  # and recorded
    (tmp_path / "run" / "report.md").write_text("a finished run")       # a run that kept something is guarded
    with pytest.raises(CrobustError, match="different configuration"):
        run.start(cfg(execution="scan", lr=0.2), not_identity=["train.execution"])


def test_auto_is_the_documented_rule_and_a_bad_setting_is_one_clear_error(runs):
    conv = runs.alone[0].params
    shapes = jax.eval_shape(MLP(num_classes=10, width=8, depth=2).init, jax.random.key(0), DS.train_images[:1])
    mlp = jax.tree.map(lambda s: np.zeros((2, *s.shape), s.dtype), shapes)          # a stacked population of 2
    assert parallel.is_convolutional(conv) and not parallel.is_convolutional(mlp)
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1
    assert execution.resolve("auto", conv) == ("host_loop" if one_cpu else "scan")
    assert execution.resolve("auto", mlp) == "scan"
    assert execution.resolve("scan", conv) == "scan"
    with pytest.raises(CrobustError, match="execution"):
        dataclasses.replace(CFG, execution="vmap").validate()
    with pytest.raises(CrobustError, match="execution"):
        execution.resolve("loop", conv)


def test_population_evaluation_member_by_member_equals_one_program_and_robust_accuracy(runs):
    # the trained CNN population (best parameters with their running statistics), APGD-CE and FGSM on 48 test points
    res = runs.by_layout[("host_loop", 1)]
    variables = {**res.best_params, **res.best_model_state}
    x, y = DS.test_images[:48].astype(np.float32) / 255.0, DS.test_labels[:48]
    keys = jax.random.split(jax.random.key(5), len(MEMBERS))
    kw = dict(eps=[4 / 255, 16 / 255], attacks=(("apgd-ce", {"n_iter": 5}), "fgsm"), on_fail="ignore")
    by_member = evaluation.population_robust_accuracy(CNN.apply, variables, x, y, member_keys=keys,
                                                      execution="host_loop", **kw)
    program = evaluation.population_robust_accuracy(CNN.apply, variables, x, y, member_keys=keys,
                                                    execution="program", **kw)
    stepped = evaluation.population_robust_accuracy(CNN.apply, variables, x, y, member_keys=keys,
                                                    execution="host_steps", **kw)
    compiled = _stepping._invoke._cache_size()
    again = evaluation.population_robust_accuracy(CNN.apply, jax.tree.map(lambda a: a[::-1], variables), x, y,
                                                  member_keys=keys, execution="host_steps", **kw)
    assert _stepping._invoke._cache_size() == compiled        # other weights: every iteration's program reused
    np.testing.assert_array_equal(again[0].robust_flags, stepped[-1].robust_flags if len(MEMBERS) == 1 else
                                  evaluation.population_robust_accuracy(
                                      CNN.apply, jax.tree.map(lambda a: a[-1:], variables), x, y,
                                      member_keys=keys[:1], execution="host_steps", **kw)[0].robust_flags)
    for m in range(len(MEMBERS)):
        alone = evaluation.robust_accuracy(Partial(CNN.apply, member(variables, m)), x, y, keys[m], **kw)
        # member by member runs robust_accuracy's own program on that member: the same numbers, bit for bit
        np.testing.assert_array_equal(by_member[m].robust_flags, alone.robust_flags)
        np.testing.assert_array_equal(by_member[m].clean_correct, program[m].clean_correct)
        # one program (lax.map over members) rounds differently: at most one borderline point per ε may flip
        assert np.sum(by_member[m].robust_flags != program[m].robust_flags) <= len(kw["eps"])
        # every attack iteration its own program: the same operations fused differently, the same bound
        assert np.sum(stepped[m].robust_flags != by_member[m].robust_flags) <= len(kw["eps"])
        assert np.sum(stepped[m].clean_correct != by_member[m].clean_correct) <= 1
        assert stepped[m].layout["eps_loop"] is True
    with pytest.raises(CrobustError, match="execution"):
        evaluation.population_robust_accuracy(CNN.apply, variables, x, y, member_keys=keys, execution="vmap", **kw)
