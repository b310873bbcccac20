"""ResNet-18 row sparsity (experiments/resnet_row_sparsity.py, docs/paper.md §E4): the smoke preset end to end, the
dead-filter count and the row penalty on planted kernels against their closed forms, the paper preset on stand-in
CIFAR-10 archives (reference recipe: no validation split, the last parameters measured), and bad settings."""

import csv
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust import regularizers
from crobust._errors import CrobustError
from crobust.config import derive, resolve
from crobust.models.resnet import ResNet18
from experiments import resnet_row_sparsity as S
from tests._paper_data import run_paper_preset, write_cifar10
from _study_runs import smoke_run


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, w, out = smoke_run("resnet_row_sparsity", tmp_path_factory)     # shared with the contract tests
    return w, out


def test_smoke_runs_end_to_end_with_every_claim_and_measure(smoke):
    w, out = smoke
    report = (w / "report.md").read_text()
    assert "## Verdicts" in report and "row penalty: ℓ∞ robust accuracy falls" in report
    one_cpu = jax.default_backend() == "cpu" and jax.device_count() == 1      # how its attacks ran, said
    assert ("attacks `host_steps`" if one_cpu else "attacks `program`") in report
    verdicts = json.loads((w / "verdicts.json").read_text())
    assert {v["family"] for v in verdicts} == {"primary", "secondary", "check"}
    assert all(v["verdict"] in ("supported", "contradicted", "inconclusive", "skipped") for v in verdicts)
    rows = list(csv.DictReader((w / "members.csv").open()))
    cfg = S.PRESETS["smoke"]
    assert len(rows) == len(cfg.grid.alpha) * cfg.grid.seeds and {r["population"] for r in rows} == {"row"}
    for key in ("clean_acc", "robust_acc[norm=linf,eps=0.05]", "ra_over_sa[norm=linf]",
                "eps_nu_q2[layer=hidden_mean]", "norm_fro[layer=layer1_0/conv1]", "dead_filters", "dead_fraction",
                "shift[norm=linf]", "median_margin", "head_fro"):
        assert all(np.isfinite(float(r[key])) for r in rows), key
    # robust accuracy never exceeds the clean accuracy on the same points; RA/SA is their ratio
    for r in rows:
        ra, sa = float(r["robust_acc[norm=linf,eps=0.05]"]), float(r["clean_acc_points"])
        assert ra <= sa + 1e-12 and np.isclose(float(r["ra_over_sa[norm=linf]"]), ra / sa)
    # width 4, one block per stage: 4+4 | 8+8+8 | 16·3 | 32·3 filters in the penalised convs (shortcuts included)
    assert {float(r["dead_filters"]) / float(r["dead_fraction"]) for r in rows if float(r["dead_filters"]) > 0} \
        <= {176.0}
    assert (w / "row_sparsity_vs_alpha.png").exists() and (w / "ra_vs_eps_linf_row.png").exists()
    assert "best-validation parameters (10% held out" in report


def _planted(rank=None, width=4):
    model = ResNet18(num_classes=10, width=width, rank=rank, stage_sizes=(1, 1, 1, 1))
    variables = model.init(jax.random.key(0), jnp.zeros((1, 8, 8, 1)))
    return jax.tree.map(lambda x: jnp.stack([x, x]), {"params": variables["params"]})      # M = 2 members


def test_dead_filter_count_on_planted_zero_and_tiny_filters():
    """Member 1 gets 3 filters of layer2_0/conv1 set to 0, one of layer3_0/shortcut scaled to 1e-7 of the layer's
    largest row norm (dead: ≤ 1e-6 × max) and one of layer4_0/conv2 scaled to 1e-5 of it (alive); member 0 is the
    initialisation (no dead filter). Total: 176 filters in the penalised convs of width 4 (stem excluded)."""
    params = _planted()
    p = params["params"]

    def scale_rows(kernel, rows, factor):
        w = np.array(kernel)
        top = np.sqrt((w[1] ** 2).sum(axis=(0, 1, 2))).max()
        for i in rows:
            w[1, ..., i] *= factor * top / np.sqrt((w[1, ..., i] ** 2).sum())
        return jnp.asarray(w)
    p["layer2_0"]["conv1"]["kernel"] = scale_rows(p["layer2_0"]["conv1"]["kernel"], (0, 3, 5), 0.0)
    p["layer3_0"]["shortcut"]["kernel"] = scale_rows(p["layer3_0"]["shortcut"]["kernel"], (2,), 1e-7)
    p["layer4_0"]["conv2"]["kernel"] = scale_rows(p["layer4_0"]["conv2"]["kernel"], (7,), 1e-5)
    dead, total = S.dead_filter_counts(params)
    np.testing.assert_array_equal(dead, [0.0, 4.0])
    np.testing.assert_array_equal(total, [176.0, 176.0])
    # the stem is not counted: zeroing all its filters changes nothing
    p["stem"]["kernel"] = jnp.zeros_like(p["stem"]["kernel"])
    np.testing.assert_array_equal(S.dead_filter_counts(params)[0], [0.0, 4.0])


def test_dead_filter_count_of_a_low_rank_conv_reads_the_product():
    """A low-rank conv W = upᵀ·mat(down): zeroing column i of ``up`` (the i-th output filter's mixing weights)
    kills exactly filter i of W; zeroing one of the r down filters kills none (rank r − 1 but every row alive)."""
    params = _planted(rank=2)
    p = params["params"]
    up = np.array(p["layer2_0"]["conv2"]["up"])                     # (M, r, out)
    up[1, :, 4] = 0.0
    p["layer2_0"]["conv2"]["up"] = jnp.asarray(up)
    down = np.array(p["layer3_0"]["conv1"]["down"])                 # (M, kh, kw, in, r)
    down[1, ..., 0] = 0.0
    p["layer3_0"]["conv1"]["down"] = jnp.asarray(down)
    np.testing.assert_array_equal(S.dead_filter_counts(params)[0], [0.0, 1.0])


def test_the_row_penalty_matches_its_closed_form_on_every_conv_but_the_stem():
    """scale_invariant(params, α) = α Σ_l Σ_i ‖W_i‖₂ / ‖W‖_F over every conv kernel but the stem's (shortcuts
    included), each (kh, kw, in, out) kernel flattened to out × in·kh·kw, recomputed here in float64 from the raw
    kernels; float32 sums of ≤ 96 terms: relative tolerance 1e-5."""
    params = jax.tree.map(lambda x: x[0], _planted())
    alpha = 0.1
    expected, n_layers = 0.0, 0
    for block, mods in params["params"].items():
        for name, leaf in (mods.items() if block.startswith("layer") else ()):
            if "kernel" in leaf and leaf["kernel"].ndim == 4:
                k = np.asarray(leaf["kernel"], np.float64)
                w = np.moveaxis(k, -1, 0).reshape(k.shape[-1], -1)             # out × (kh·kw·in)
                rows = np.sqrt((w ** 2).sum(axis=1))
                expected += rows.sum() / np.sqrt((rows ** 2).sum())
                n_layers += 1
    assert n_layers == 11                       # 4 blocks × 2 convs + 3 shortcuts
    got = float(regularizers.scale_invariant(params, alpha))
    np.testing.assert_allclose(got, alpha * expected, rtol=1e-5)
    # the stem is not penalised: changing it leaves the value unchanged
    params["params"]["stem"]["kernel"] = params["params"]["stem"]["kernel"] * 0 + 1.0
    np.testing.assert_allclose(float(regularizers.scale_invariant(params, alpha)), alpha * expected, rtol=1e-5)


@pytest.mark.parametrize("setting, needle", [
    (["lowrank.ranks=8"], "lowrank.ranks must be < model.width"),
    (["lowrank.ranks=2,2"], "lowrank.ranks must be distinct"),
    (["train.regularizer=group_lasso"], "train.regularizer must be 'scale_invariant'"),
    (["grid.alpha=0.01,0.1"], "grid.alpha needs 0"),
    (["model.rank=2"], "model must be a dense resnet18"),
    (["train.val_ratio=0", "train.patience=100"], "train.val_ratio must be > 0 with early stopping")])
def test_bad_settings_are_one_clear_error(setting, needle):
    with pytest.raises(CrobustError, match=needle.replace("(", r"\(")):
        resolve(S.PRESETS, "small", setting)


def test_presets_keep_the_hub_contract_and_the_paper_recipe():
    small, paper = S.PRESETS["small"], S.PRESETS["paper"]
    assert small.grid.alpha == (0.0, 0.03, 0.1) and small.grid.seeds == 3 and small.train.val_ratio == 0.1
    assert paper.train.val_ratio == 0.0 and paper.train.patience is None          # reference: last parameters
    assert (paper.model.stem, paper.model.width, tuple(paper.model.stage_sizes)) == ("imagenet", 64, (2, 2, 2, 2))
    assert (paper.train.lr, paper.train.momentum, paper.train.weight_decay, paper.train.batch_size,
            paper.train.max_steps, paper.train.augment) == (0.1, 0.9, 5e-4, 100, 100_000, "full")
    assert derive(paper, {"model.stem": "cifar"}).model.stem == "cifar"              # the stated variant


def test_paper_preset_on_stand_in_cifar10_measures_the_last_parameters(tmp_path):
    """The paper preset (reference recipe, ImageNet stem) on stand-in CIFAR-10 archives, width 8, one seed of α ∈
    {0, 0.1} and rank 2: both arms run, no member is validated (val_ratio 0: best_step −1) and the report says the
    last parameters are measured."""
    data = write_cifar10(tmp_path / "data")
    out = run_paper_preset(S.STUDY, tmp_path / "w", data, **{"grid.alpha": (0.0, 0.1), "grid.seeds": 1,
                                                             "lowrank.ranks": (2,), "model.width": 8})
    w = tmp_path / "w"
    rows = list(csv.DictReader((w / "members.csv").open()))
    assert [r["population"] for r in rows] == ["row", "row", "rank_2"]
    assert all(float(r["best_step"]) == -1 and float(r["stopped_step"]) == 2 for r in rows)
    report = (w / "report.md").read_text()
    assert "no validation split: each member's result (what is measured) is its last parameters" in report
    assert "cifar10" in report and (w / "low_rank_vs_rank.png").exists()
    assert {v.paper for v in out["verdicts"]} >= {"C1", "C2"}
    # the preset's whole ensemble runs here on the ImageNet-stem ResNet-18 (the other paper tests use APGD-CE alone)
    evaluation = report.split("## Evaluation")[1].split("###")[0]
    assert all(f"{name} (" in evaluation for name in ("APGD-CE", "APGD-T", "FAB-T", "Square"))
