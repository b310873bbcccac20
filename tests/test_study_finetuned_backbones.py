"""experiments.finetuned_backbones: the smoke preset end to end, the fine-tuning stage's start (the pretrained
encoder bit for bit, a fresh zero head), the digits' zero padding and the ViT's in-model resize against direct
references, and the paper preset on stand-in CIFAR-10 with a ViT checkpoint the test writes, or without it (the
ViT arm skipped in one line)."""

from __future__ import annotations

import csv

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from crobust._errors import CrobustError
from crobust.config import derive, validate
from crobust.data import load_dataset
import importlib

from crobust.study import open_run, staging
from experiments import finetuned_backbones as FB
from tests._paper_data import run_paper_preset, write_cifar10
from _study_runs import smoke_run

vit_lib = importlib.import_module("crobust.models.vit")   # the module (crobust.models.vit is also a function)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    _, _, workdir, _ = smoke_run("finetuned_backbones", tmp_path_factory)     # shared with the contract tests
    return workdir


def _members(workdir):
    with open(workdir / "members.csv") as f:
        return list(csv.DictReader(f))


def test_smoke_runs_every_arm_with_verdicts_and_the_stand_in_line(smoke):
    report = (smoke / "report.md").read_text()
    rows = _members(smoke)
    cfg = FB.PRESETS["smoke"]
    # members: the pretrained ViTs (one per seed), then α × seeds for the fine-tuned ViT, the VGG and the WRN
    by_pop = {}
    for r in rows:
        by_pop.setdefault(r["population"], []).append(r)
    seeds = cfg.grid.seeds
    assert {p: len(v) for p, v in by_pop.items()} == {
        "vit_pretrain": seeds, "vit_finetune": len(cfg.grid.alpha) * seeds,
        "vgg": len(cfg.backbones.conv_alpha) * seeds}      # the smoke preset runs no WRN (the paper test does)
    assert {r["arm"] for r in by_pop["vit_finetune"]} == {"vit"}
    for r in rows:                                  # every member measured: a clean accuracy in [0, 1]
        assert 0.0 <= float(r["clean_acc"]) <= 1.0
    assert "pretrained from scratch here on digits classes (0, 1, 2, 3, 4)" in report
    assert "Not covered, and why: CLIP" in report
    # the primary family is the fine-tuned ViT's (C10); VGG/WRN are secondary (C1)
    verdicts = report.split("### Primary claims")[1]
    primary, secondary = verdicts.split("### Secondary claims")
    assert "C10: fine-tuned ViT: ℓ∞ robust accuracy falls" in primary and "VGG" not in primary
    assert "C1: VGG-16-BN: ℓ∞ robust accuracy falls" in secondary.split("## Checks")[0]
    assert "ViT arm skipped" not in report


def test_the_fine_tuning_stage_starts_from_the_pretrained_encoder_bit_for_bit_with_a_zero_head(smoke):
    run = open_run(smoke)
    pretrain = run["vit_pretrain"]
    pop = next(p for p in FB.populations(run.config, run.data) if p.name == "vit_finetune")
    state = staging.initial_state(pop, run.data, pretrain.fit)
    seeds = run.config.grid.seed_list
    src = [seeds.index(m["seed"]) for m in pop.members]
    assert sorted(set(src)) == list(range(len(seeds))) and len(src) == len(pop.members)
    start = vit_lib.flatten_params(jax.tree.map(np.asarray, state.params))
    source = vit_lib.flatten_params(jax.tree.map(np.asarray, pretrain.fit.best_params))
    assert set(start) == set(source)
    for key, value in start.items():
        if key.startswith(("head/", "params/head/")):
            assert not np.any(value), key              # the fresh head: zero-initialised
        else:
            np.testing.assert_array_equal(value, source[key][np.asarray(src)], err_msg=key)
    # and fine-tuning moved the encoder (all parameters train)
    tuned = vit_lib.flatten_params(jax.tree.map(np.asarray, run["vit_finetune"].params))
    emb = next(k for k in tuned if k.endswith("Transformer/encoderblock_0/MlpBlock_3/Dense_0/kernel"))
    assert np.abs(tuned[emb] - start[emb]).max() > 0


def test_pad_images_centres_the_digits_in_zeros_against_a_loop():
    data = load_dataset("digits")
    padded = FB.pad_images(data, 32)
    assert padded.image_shape == (32, 32, 1)
    want = np.zeros((data.n_test, 32, 32, 1), np.uint8)
    for n in range(data.n_test):                     # brute force: copy each pixel to its place
        for i in range(8):
            for j in range(8):
                want[n, 12 + i, 12 + j, 0] = data.test_images[n, i, j, 0]
    np.testing.assert_array_equal(padded.test_images, want)
    np.testing.assert_array_equal(padded.test_labels, data.test_labels)
    # the statistics are the padded images': the float64 mean of the pixels / 255, which channel_stats rounds to 4 decimals
    assert padded.mean[0] == pytest.approx(padded.train_images.astype(np.float64).mean() / 255, abs=5e-5)
    assert FB.pad_images(padded, 32) is padded
    with pytest.raises(CrobustError, match="cannot pad"):
        FB.pad_images(padded, 16)


def test_the_vgg_pads_inside_the_model_so_attacks_perturb_only_the_digit():
    """The study's VGG takes the 8×8 digits and pads them itself: its logits on a digit equal the unpadded model's
    on the data-padded image (the same operations after the pad: equal to float32 round-off), and its input
    gradient — what an attack follows — lives on the 64 pixels of the digit alone."""
    data = load_dataset("digits", classes=(5, 6, 7, 8, 9))
    cfg = FB.PRESETS["smoke"]
    vgg = next(p for p in FB.populations(cfg, data) if p.name == "vgg")
    assert vgg.data is None and vgg.model.pad_to == 32                   # the study's own 8×8 data, padded inside
    padded = FB.pad_images(data, 32)
    plain = vgg.model.clone(pad_to=None)
    x = jnp.asarray(data.test_images[:4], jnp.float32) / 255
    xp = jnp.asarray(padded.test_images[:4], jnp.float32) / 255
    variables = plain.init(jax.random.key(0), xp)
    np.testing.assert_allclose(np.asarray(vgg.model.apply(variables, x)), np.asarray(plain.apply(variables, xp)),
                               rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda v: vgg.model.apply(variables, v).sum())(x)
    assert grad.shape == (4, 8, 8, 1) and float(jnp.abs(grad).max()) > 0


def test_the_vits_in_model_resize_is_the_model_applied_to_the_resized_image():
    # an upsampled image of a piecewise-constant input seen by patch 8 at 16×16 equals patch 4 on the 8×8 image when
    # the patch kernel is the 2×2 nearest upsampling of the smaller one; here we check the exact identity the
    # model promises instead: ViT(image_size=S)(x) == ViT()(resize(x, S)), and that a constant image stays constant.
    model = vit_lib.vit(vit_lib.VIT_TINY_TEST, 3, image_size=16)
    plain = vit_lib.vit(vit_lib.VIT_TINY_TEST, 3)
    x = jnp.asarray(np.random.default_rng(0).uniform(size=(2, 8, 8, 3)), jnp.float32)
    params = plain.init(jax.random.key(0), jnp.zeros((1, 16, 16, 3)))
    params = jax.tree.map(lambda a: a + 0.05 * jax.random.normal(jax.random.key(1), a.shape), params)
    big = jax.image.resize(x, (2, 16, 16, 3), "bilinear")
    np.testing.assert_allclose(np.asarray(model.apply(params, x)), np.asarray(plain.apply(params, big)), atol=1e-6)
    const = jnp.full((1, 8, 8, 3), 0.3)
    np.testing.assert_allclose(np.asarray(jax.image.resize(const, (1, 16, 16, 3), "bilinear")), 0.3, atol=1e-6)


def test_bad_settings_are_one_error():
    for delta, match in (({"backbones.include": ("vit", "swin")}, "backbones.include"),
                         ({"backbones.pad_to": 40}, "multiple of 32"),
                         ({"backbones.image_size": 31}, "multiple of model.patch_size"),
                         ({"grid.alpha": (0.0,)}, "at least two values")):
        with pytest.raises(CrobustError, match=match):
            validate(derive(FB.PRESETS["smoke"], delta))


TINY_PAPER = {"grid.seeds": 1, "grid.alpha": (0.0, 0.1), "backbones.conv_alpha": (0.0, 0.1),
              "backbones.vgg.width": 2, "backbones.wrn.depth": 10, "backbones.wrn.widen": 1,
              "backbones.wrn.base_width": 2, "backbones.conv_train.max_steps": 2,
              "backbones.conv_train.eval_every": 1, "backbones.conv_train.batch_size": 8,
              "backbones.conv_train.patience": None, "backbones.conv_train.min_steps": 0,
              "model.patch_size": 8, "model.hidden_size": 8, "model.num_layers": 1, "model.num_heads": 2,
              "model.mlp_dim": 16, "backbones.image_size": 64, "eval.attacks": ("apgd-ce",)}


@pytest.fixture(scope="module")
def paper_data(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("cifar"))


def test_paper_preset_fine_tunes_a_checkpoint_at_its_resolution(tmp_path, paper_data):
    # a checkpoint of the ViT's shape at 224/16 = 14 → here 64/8 = 8 patches a side, with a 1000-class head: the
    # head is swapped for CIFAR-10's, and the 64×64 position grid is what the model at image_size 64 needs
    ckpt_model = vit_lib.ViT(num_classes=1000, patch_size=8, hidden_size=8, num_layers=1, num_heads=2, mlp_dim=16)
    params = ckpt_model.init(jax.random.key(3), jnp.zeros((1, 64, 64, 3)))
    path = tmp_path / "ViT-tiny.npz"
    vit_lib.save_npz(path, params)
    workdir = tmp_path / "run"
    run_paper_preset(FB.STUDY, workdir, paper_data, **TINY_PAPER, **{"backbones.checkpoint": str(path)})
    rows = _members(workdir)
    assert sorted({r["population"] for r in rows}) == ["vgg", "vit_finetune", "wrn"]
    run = open_run(workdir)
    tuned = run["vit_finetune"]
    assert tuned.model.image_size == 64
    # the encoder started from the file: after two SGD steps it is still close to it (lr 0.03, gradients O(1))
    flat = vit_lib.flatten_params(jax.tree.map(np.asarray, tuned.params))
    pos = "params/Transformer/posembed_input/pos_embedding"
    assert flat[pos].shape == (2, 1, 65, 8)                     # members × the checkpoint's (1, tokens, width)
    ref = np.asarray(params["params"]["Transformer"]["posembed_input"]["pos_embedding"])[0]
    assert np.abs(flat[pos] - ref).max() < 0.1 * np.abs(ref).max()
    assert flat["params/head/kernel"].shape == (2, 8, 10)
    report = (workdir / "report.md").read_text()
    assert "ViT arm skipped" not in report and f"The ViT starts from {path}" in report


def test_paper_preset_without_the_checkpoint_skips_the_vit_arm_in_one_line(tmp_path, paper_data):
    workdir = tmp_path / "run"
    missing = tmp_path / "nowhere" / "ViT-B_16.npz"
    run_paper_preset(FB.STUDY, workdir, paper_data, **TINY_PAPER, **{"backbones.checkpoint": str(missing)})
    assert sorted({r["population"] for r in _members(workdir)}) == ["vgg", "wrn"]
    report = (workdir / "report.md").read_text()
    lines = [line for line in report.splitlines() if "ViT arm skipped" in line]
    assert len(lines) == 1 and str(missing) in lines[0] and "ViT-B_16.npz" in lines[0]
    assert "fine-tuned ViT:" not in report       # no claim on an arm that did not run
