"""Models by name (``model.kind``): every kind builds from ``--set`` assignments with its own small settings on
synthetic 32×32 RGB data and trains one step; each kind's first hidden layer is the first of the layers
:func:`crobust.models.hidden_layers` names (stem, shortcuts and head excluded); each kind's bad settings are one
clear line; the single-layer measures default to that layer; a ViT starts from a checkpoint with a fresh head."""

import dataclasses

import jax
import numpy as np
import pytest

from crobust import config as config_lib
from crobust import data as data_lib
from crobust import training
from crobust._errors import CrobustError
from crobust.models import KINDS, hidden_layers, layer_matrices, layer_specs
from crobust.models.vit import save_npz
from crobust.study import ModelConfig, StudyConfig
from crobust.study import measures as M

DATA = data_lib.load_dataset("synthetic_gaussian", n_train=40, n_test=8, image_shape=(32, 32, 3))
# no validation split: one program less to compile (a conv net's compile is most of this module's time)
ONE_STEP = training.TrainConfig(optimizer="sgd", lr=0.05, batch_size=8, max_steps=1, eval_every=1, patience=None,
                                val_ratio=0.0)

SMALL = {
    "mlp": ("model.width=8",),
    "lowrank": ("model.width=8", "model.rank=2"),
    "resnet18": ("model.width=8", "model.stage_sizes=1,1", "model.stem=imagenet", "model.rank=2"),
    "vgg16": ("model.width=4",),
    "wrn": ("model.depth=10", "model.widen=2", "model.base_width=4"),
    "vit": ("model.hidden_size=16", "model.num_heads=2", "model.num_layers=1", "model.patch_size=8"),
}
FIRST_HIDDEN = {"mlp": "hidden_0", "lowrank": "hidden_0", "resnet18": "layer1_0/conv1", "vgg16": "conv_1",
                "wrn": "group1_0/conv1", "vit": "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query"}


def _from_command_line(kind, *extra):
    cfg = config_lib.override(StudyConfig(), (f"model.kind={kind}",) + SMALL[kind] + extra)
    config_lib.validate(cfg)
    return cfg


@pytest.fixture(scope="module")
def trained():
    """Each kind built from the command line and trained one SGD step (one member)."""
    out = {}
    for kind in KINDS:
        cfg = _from_command_line(kind)
        model = cfg.model.build(DATA)
        init = training.init_population(model, DATA, ONE_STEP, training.grid(seeds=[0]))
        fit = training.fit(model, DATA, ONE_STEP, training.grid(seeds=[0]), state=init, progress=False)
        out[kind] = (cfg, model, init, fit)
    return out


def test_the_kinds_are_the_six_named_ones():
    assert set(KINDS) == set(SMALL) == {"mlp", "lowrank", "resnet18", "vgg16", "wrn", "vit"}


@pytest.mark.parametrize("kind", list(SMALL))
def test_every_kind_builds_from_the_command_line_and_trains_one_step(trained, kind):
    cfg, _, init, fit = trained[kind]
    assert cfg.model.kind == kind and set(cfg.model.used) <= {f.name for f in dataclasses.fields(ModelConfig)}
    assert int(fit.state.step[0]) == 1 and not bool(fit.state.diverged[0])
    moved = [not np.array_equal(a, b) for a, b in zip(jax.tree.leaves(init.params), jax.tree.leaves(fit.params))]
    assert any(moved) and all(np.all(np.isfinite(x)) for x in jax.tree.leaves(fit.params))
    # the kind's first hidden layer is the first hidden layer of the built model, and has the width it declares
    hidden = hidden_layers(fit.params)
    assert hidden[0] == cfg.model.first_hidden_layer == FIRST_HIDDEN[kind]
    specs = layer_specs(fit.params)
    assert not any(specs[h].is_stem or specs[h].is_head or h.endswith("shortcut") for h in hidden)
    assert layer_matrices(fit.params)[hidden[0]].shape[-2] == cfg.model.first_hidden_width


def test_hidden_layers_of_a_resnet_leave_out_stem_shortcuts_and_head(trained):
    params = trained["resnet18"][3].params
    names = list(layer_specs(params))
    assert names[0] == "stem" and names[-1] == "head" and "layer2_0/shortcut" in names
    assert hidden_layers(params) == ["layer1_0/conv1", "layer1_0/conv2", "layer2_0/conv1", "layer2_0/conv2"]
    tree = params["params"]                                                 # model.rank=2: low-rank convs
    assert tree["layer1_0"]["conv1"]["down"].shape[-1] == 2 and tree["layer2_0"]["shortcut"]["down"].shape[-1] == 2
    assert "kernel" in tree["stem"]                                         # the stem stays dense


@pytest.mark.parametrize("kind, sets, match", [
    ("wrn", ("model.depth=12",), "WRN must be 6n"),
    ("vit", ("model.hidden_size=10", "model.num_heads=4"), "hidden_size .10. must be a multiple of model.num_heads"),
    ("vit", ("model.rank=2",), "rank does not apply to a vit"),
    ("resnet18", ("model.stem=tiny",), "model.stem.*cifar, imagenet"),
    ("resnet18", ("model.stage_sizes=2,0",), "stage_sizes"),
    ("mlp", ("model.rank=4",), "rank .4. does not apply to kind mlp"),
    ("lowrank", ("model.width=0",), "model.width must be > 0"),
    ("vit", ("model.checkpoint=/nonexistent/vit.npz",), "no file /nonexistent/vit.npz"),
])
def test_bad_settings_of_each_kind_are_one_line(kind, sets, match):
    with pytest.raises(CrobustError, match=match) as err:
        _from_command_line(kind, *sets)
    assert "\n" not in str(err.value)


def test_unknown_kind_images_and_top_k_are_checked_against_the_model():
    with pytest.raises(CrobustError, match="model.kind.*mlp, lowrank, resnet18, vgg16, wrn, vit"):
        config_lib.validate(config_lib.override(StudyConfig(), ["model.kind=resnet50"]))
    digits = data_lib.load_dataset("digits")                                 # 8×8 images
    with pytest.raises(CrobustError, match="vgg16 needs images.*multiples of 32"):
        _from_command_line("vgg16").model.build(digits)
    with pytest.raises(CrobustError, match="not a multiple of model.patch_size 3"):
        _from_command_line("vit", "model.patch_size=3").model.build(DATA)
    # measure.top_k is bounded by the first hidden layer's width, whatever the kind (wrn: base_width·widen = 8)
    with pytest.raises(CrobustError, match="top_k must be < the width of .* group1_0/conv1 .8."):
        _from_command_line("wrn", "measure.top_k=8")
    assert _from_command_line("wrn", "measure.top_k=7").measure.top_k == 7


def _population(kind, trained):
    cfg, model, _, fit = trained[kind]
    return M.TrainedPopulation(kind, model, [{"seed": 0}], {}, fit, fit.best_params, fit.best_model_state)


def test_the_spectrum_measure_defaults_to_the_first_hidden_layer(trained):
    ctx = M.Context.build(StudyConfig().eval, StudyConfig().measure, DATA)
    mlp = _population("mlp", trained)
    default, explicit = M.spectrum()(ctx, mlp), M.spectrum("hidden_0")(ctx, mlp)
    assert default.keys() == explicit.keys()
    for k in default:
        np.testing.assert_array_equal(default[k], explicit[k])
    conv = M.spectrum()(ctx, _population("resnet18", trained))
    assert {dict(c.qualifiers)["layer"] for c in conv} == {"layer1_0/conv1"}


def test_singular_alignment_refuses_a_layer_that_does_not_read_pixels(trained):
    ctx = M.Context.build(StudyConfig().eval, StudyConfig().measure, DATA)
    with pytest.raises(CrobustError, match="layer1_0/conv1 reads 72 inputs, not the 3072 pixels"):
        M.singular_alignment()(ctx, _population("resnet18", trained))


def test_a_vit_starts_from_its_checkpoint_with_a_fresh_head(trained, tmp_path):
    """The checkpoint (a ViT of the same shape for 5 classes) replaces every parameter but the head, whose shape
    differs: the member keeps its fresh (zero) head. best_params start equal to params."""
    _, model, init, _ = trained["vit"]
    saved = dataclasses.replace(model, num_classes=5).init(jax.random.key(7), data_lib.to_float(DATA.test_images[:1]))
    save_npz(tmp_path / "vit.npz", saved)
    cfg = _from_command_line("vit", f"model.checkpoint={tmp_path / 'vit.npz'}")
    assert cfg.model.build(DATA).mean == (0.5,)                  # a checkpoint's own input scaling, not the data's
    state = cfg.model.prepare()(init)                             # the same parameter shapes as that model's
    got = jax.tree.map(lambda a: np.asarray(a[0]), state.params["params"])
    assert set(got) == set(saved["params"])
    for name in got:
        if name != "head":
            for x, y in zip(jax.tree.leaves(got[name]), jax.tree.leaves(saved["params"][name])):
                np.testing.assert_array_equal(x, np.asarray(y))
    assert got["head"]["kernel"].shape == (16, DATA.num_classes) and not np.any(got["head"]["kernel"])
    for x, y in zip(jax.tree.leaves(state.params), jax.tree.leaves(state.best_params)):
        np.testing.assert_array_equal(x, y)
    assert ModelConfig().prepare() is None
