"""The transfer study (``experiments/transfer.py``, docs/paper.md §E8): the smoke preset end to end, a planted
linear probe on a frozen encoder against closed-form gradient descent, and the paper preset on stand-in archives."""

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import data as data_lib
from crobust._errors import CrobustError
from crobust.config import derive, validate
from crobust.data import to_float
from crobust.models import ResNet18
from crobust.study import open_run
from crobust.training import TrainConfig, fit, grid, init_population, update
from crobust.training.stages import start_from
from experiments import transfer as T
from tests import _paper_data
from _study_runs import smoke_run


def _encoder_leaves(params, model_state):
    variables = {**params, **(model_state or {})}
    paths = jax.tree.leaves(update.leaf_paths(variables))
    return {p: np.asarray(x) for p, x in zip(paths, jax.tree.leaves(variables)) if not p.startswith("head/")}


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, workdir, result = smoke_run("transfer", tmp_path_factory)           # shared with the contract tests
    return workdir, result


def test_smoke_probe_keeps_the_pretrained_encoder_bit_for_bit_and_trains_its_head(smoke):
    workdir, _ = smoke
    run = open_run(workdir, study=T.STUDY)
    for probe, source in T.sources(T.PRESETS["smoke"]).items():
        pre, pro = run[source], run[probe]
        a, b = _encoder_leaves(pre.params, pre.model_state), _encoder_leaves(pro.params, pro.model_state)
        assert set(a) == set(b) and any("batch_stats" not in p and "mean" in p for p in b)   # BN statistics too
        for path in a:
            np.testing.assert_array_equal(b[path], a[path], err_msg=path)
        head_pre, head_pro = (np.asarray(x.params["params"]["head"]["kernel"]) for x in (pre, pro))
        assert head_pre.shape == head_pro.shape and not np.array_equal(head_pre, head_pro)


def test_smoke_report_verdicts_and_member_table(smoke):
    workdir, result = smoke
    report = (workdir / "report.md").read_text()
    cfg = T.PRESETS["smoke"]
    assert "source task digits classes [0, 1, 2, 3, 4] → target task digits classes [5, 6, 7, 8, 9]" in report
    assert "only parameters matching `^head/` trained" in report
    verdicts = {v.text: v for v in result["verdicts"]}
    assert {c.text for c in T.claims(cfg)} == set(verdicts)
    assert verdicts[next(c.text for c in T.claims(cfg) if c.paper == "frozen")].verdict == "supported"
    assert [v.family for v in result["verdicts"] if v.paper == "C8"][:3] == ["primary"] * 3
    rows = list(csv.DictReader(open(workdir / "members.csv")))
    pops = {r["population"] for r in rows}
    assert pops == {"pretrain", "probe", "pretrain_rank_2", "probe_rank_2"}
    ra = "robust_acc[norm=linf,eps=0.05]"
    eps_nu = "eps_nu_q2[layer=hidden_mean]"
    for r in rows:
        is_probe = r["stage"] == "probe"
        assert (r[ra] != "") == is_probe                                # only the probes are attacked
        assert (r["encoder_max_change"] == "0.0") if is_probe else r["encoder_max_change"] == ""
    # The probe's compressibility columns are its frozen encoder's: exactly the pretrain member's.
    by = {(r["population"], r["member"]): r for r in rows}
    for probe, source in T.sources(cfg).items():
        for (pop, m), r in by.items():
            if pop == probe:
                assert r[eps_nu] == by[(source, m)][eps_nu]
    # The α = 0 probes are the dense end of the rank arm, at rank 8·width; the others carry no rank.
    for r in rows:
        if r["population"] == "probe":
            assert r["rank"] == (str(8 * cfg.model.width) if float(r["alpha"]) == 0 else "")


def test_smoke_probe_accuracy_is_that_of_a_linear_classifier_on_the_frozen_features(smoke):
    """The recorded clean accuracy of each probe equals the accuracy of argmax(z·W + b) computed in float64 on the
    frozen encoder's features z of the target test set (a near-tie may flip between float32 and float64: at most
    one point of slack)."""
    workdir, _ = smoke
    run = open_run(workdir, study=T.STUDY)
    target = run.datasets["probe"]
    assert target.classes == (5, 6, 7, 8, 9)
    recorded = [float(r["clean_acc"]) for r in run.members if r["population"] == "probe"]
    pro = run["probe"]
    x = to_float(target.test_images)
    for m, acc in enumerate(recorded):
        v = jax.tree.map(lambda a: a[m], {**pro.params, **pro.model_state})
        _, z = pro.model.apply(v, x, train=False, return_repr=True)
        head = v["params"]["head"]
        logits = np.asarray(z, np.float64) @ np.asarray(head["kernel"], np.float64) + np.asarray(head["bias"])
        direct = float(np.mean(np.argmax(logits, 1) == target.test_labels))
        assert abs(direct - acc) <= 1.0 / len(target.test_labels) + 1e-9


def test_planted_probe_is_gradient_descent_on_logistic_regression_over_frozen_features():
    """A tiny ResNet encoder with planted (non-trivial) batch-norm statistics, frozen by the study's parameter map
    and trainable pattern; three full-batch SGD steps (no momentum, no decay, constant lr) of the probe must equal
    closed-form gradient descent on the multinomial logistic loss over the frozen features in float64:
    W ← W − η·Zᵀ(softmax(ZW + b) − Y)/N, b ← b − η·1ᵀ(softmax(ZW + b) − Y)/N. Tolerance: float32 round-off of the
    features and of sums over N = 120 points (rtol 1e-4, atol 1e-6); the encoder does not move at all."""
    data = data_lib.subsample(data_lib.load_dataset("digits", classes=(5, 6, 7, 8, 9)), n_train=120, n_test=20,
                              seed=0)
    encoder = ResNet18(num_classes=5, width=2, stage_sizes=(1, 1, 1, 1), mean=tuple(data.mean), std=tuple(data.std))
    members = grid(seeds=(3, 4))
    src_cfg = TrainConfig(optimizer="sgd", lr=0.1, batch_size=120, max_steps=1, val_ratio=0.0, patience=None)
    src = init_population(encoder, data, src_cfg, members)
    rng = np.random.default_rng(0)
    planted_stats = jax.tree.map(lambda a: jnp.asarray(rng.uniform(0.5, 1.5, a.shape) * np.sign(rng.normal(size=a.shape)),
                                                       a.dtype), src.model_state)
    planted_stats = jax.tree_util.tree_map_with_path(
        lambda p, a: jnp.abs(a) if "var" in str(p[-1]) else a, planted_stats)
    probe_cfg = TrainConfig(optimizer="sgd", lr=0.5, momentum=0.0, weight_decay=0.0, batch_size=120, max_steps=3,
                            eval_every=3, val_ratio=0.0, patience=None, regularizer="none",
                            trainable=T.HEAD)
    probe = T.probe_model(encoder, data.num_classes)
    fresh = init_population(probe, data, probe_cfg, members)
    start = start_from(fresh, probe_cfg, src.params, planted_stats, keep=T.ENCODER)
    result = fit(probe, data, probe_cfg, members, state=start, progress=False)

    before = _encoder_leaves(start.params, start.model_state)
    after = _encoder_leaves(result.state.params, result.state.model_state)
    for path in before:
        np.testing.assert_array_equal(after[path], before[path], err_msg=path)
    np.testing.assert_array_equal(before["stem_bn/mean"], np.asarray(planted_stats["batch_stats"]["stem_bn"]["mean"]))

    x = to_float(data.train_images)
    y = np.eye(5)[data.train_labels]
    for m in range(2):
        v = jax.tree.map(lambda a: a[m], {**start.params, **start.model_state})
        _, z = probe.apply(v, x, train=False, return_repr=True)
        z = np.asarray(z, np.float64)
        w = np.asarray(v["params"]["head"]["kernel"], np.float64)
        b = np.asarray(v["params"]["head"]["bias"], np.float64)
        for _ in range(3):
            s = z @ w + b
            p = np.exp(s - s.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            w, b = w - 0.5 * z.T @ (p - y) / len(y), b - 0.5 * (p - y).mean(0)
        head = result.state.params["params"]["head"]
        np.testing.assert_allclose(np.asarray(head["kernel"][m]), w, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(np.asarray(head["bias"][m]), b, rtol=1e-4, atol=1e-6)
        assert not np.allclose(w, np.asarray(v["params"]["head"]["kernel"]))       # the head did move


def test_bad_configs_are_one_error_before_anything_runs(tmp_path):
    small = T.PRESETS["small"]
    with pytest.raises(CrobustError, match="must be disjoint class sets"):
        validate(derive(small, {"transfer.target_classes": (4, 5, 6)}))
    with pytest.raises(CrobustError, match="train the head alone"):
        validate(derive(small, {"probe.trainable": None}))
    with pytest.raises(CrobustError, match="transfer.ranks must be < 8·model.width"):
        validate(derive(small, {"transfer.ranks": (64,)}))
    with pytest.raises(CrobustError, match="classes must be"):     # an unknown target class: one line, nothing written
        T.STUDY.run(derive(T.PRESETS["smoke"], {"transfer.target_classes": (5, 42)}), tmp_path / "x",
                    preset="smoke", progress=False)
    assert not (tmp_path / "x").exists() or not any((tmp_path / "x").iterdir())


def test_paper_preset_on_stand_in_archives(tmp_path):
    """CIFAR-100 → CIFAR-10 from the genuine binary layouts: two members per population, two steps each (pretrain
    and probe), width 8 and one block per stage on the ImageNet stem."""
    data_dir = tmp_path / "data"
    _paper_data.write_cifar10(data_dir)
    _paper_data.write_cifar100(data_dir)
    workdir = tmp_path / "paper" / "transfer"
    _paper_data.run_paper_preset(T.STUDY, workdir, data_dir, **{
        "grid.alpha": (0.0, 0.1), "grid.seeds": 1, "model.width": 8, "transfer.ranks": (16,),
        "probe.max_steps": 2, "probe.eval_every": 1, "probe.batch_size": 8, **_paper_data.ONE_ATTACK,
        **_paper_data.SHALLOW})
    run = open_run(workdir, study=T.STUDY)
    assert run.datasets["pretrain"].num_classes == 100 and run.datasets["probe"].num_classes == 10
    assert run["probe"].model.num_classes == 10 and tuple(run["probe"].model.mean) == tuple(
        data_lib.REFERENCE_STATS["cifar100"][0])                     # the encoder keeps the source's normalisation
    rows = list(csv.DictReader(open(workdir / "members.csv")))
    assert sorted(r["population"] for r in rows) == ["pretrain", "pretrain", "pretrain_rank_16", "probe", "probe",
                                                     "probe_rank_16"]
    assert all(r["encoder_max_change"] == "0.0" for r in rows if r["stage"] == "probe")
