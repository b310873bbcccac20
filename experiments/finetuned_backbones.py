"""Larger and pretrained backbones (docs/paper.md §E5; claim C10, and C1 beyond ResNet-18).

Three arms, each a population per penalty strength α × seeds (α = 0 the unregularised baseline):

- ``vit`` (C10): a pretrained Vision Transformer fine-tuned on the target task with the scale-invariant row
  penalty α Σ_l (Σ_i ‖W^l_{i,:}‖₂)/‖W^l‖_F over every encoder matrix (attention query/key/value/out, each
  flattened to D × D, and both MLP layers; not the patch embedding, not the head: ``regularised_matrices``); all
  parameters train. In ``smoke``/``small`` the pretrained ViT is our own: the population ``vit_pretrain`` (a small
  ViT trained from scratch on digits 0–4, no penalty) and the stage ``vit_finetune`` =
  ``Start("vit_pretrain", keep=everything but the head)`` fine-tuned on digits 5–9 (the study's data) with a fresh,
  zero-initialised head. In ``paper`` it is ViT-B/16 from a local ``.npz`` checkpoint (``backbones.checkpoint``,
  the ImageNet-21k ``ViT-B_16.npz`` of google-research/vision_transformer), fine-tuned on CIFAR-10 with
  vision_transformer's recipe; the images are resized to the checkpoint's 224 × 224 inside the model (bilinear,
  ``ViT.image_size``), so the attacks perturb the 32 × 32 image. When that file is absent the ViT arm is skipped
  and the report says so in one line; the other arms run.
- ``vgg`` (C1): VGG-16-BN trained from scratch with the same penalty (every conv but the first). Its five max-pools
  need 32 × 32 inputs: the 8 × 8 digits are zero-padded to 32 × 32 inside the model (centred, ``VGG16.pad_to``), so
  the attacks perturb the digit's 64 pixels only, as they do for the WRN and ViT (padding the data instead would
  let an ℓ∞ attack paint the 960 padding pixels too); CIFAR-10 is already 32 × 32.
- ``wrn`` (C1): a wide ResNet trained from scratch with the penalty (every block conv; no pooling constraint, so
  on the native images): WRN-10-1 with base width 8 in ``small``, WRN-28-10 in ``paper``.

Headline: the ensemble's per-point worst case (APGD-CE, APGD-T, Square) at one ε per norm, with the attack-budget
ladder on each arm's extreme α; compressibility (ε_ν of the row norms, hidden-layer mean) as the manipulation check.

Command::

    python -m experiments.finetuned_backbones --preset small --workdir runs/finetuned_backbones
    python -m experiments.finetuned_backbones --preset paper --set backbones.checkpoint=/path/to/ViT-B_16.npz

Expected results: ``smoke`` runs the ViT and VGG arms end to end (no verdict at its size). ``small``: expected, as
the paper claims, that ℓ∞ and ℓ2 RA fall with α in each arm while row compressibility rises. The ViT's α grid
{0, 0.3, 1, 3} is set by the manipulation check, not by the outcome: 600 fine-tuning steps at SGD lr 0.01 with
α ≤ 0.1 moved the encoder's ε_ν (hidden-layer mean) by 0.008 from 0.914, so the study tested nothing; α = 1 takes
it to about 0.37 and α = 3 to about 0.001. ``small`` trains 4 seeds, not 3: at 3 the six-claim secondary family
(VGG and WRN) could reach p 0.054 at best after Holm's correction (``--power``), so it could not decide; a fourth
seed costs about 75 s. Observed (December 2026, 2-core CPU, 4 seeds): the ViT's ℓ∞ RA stays at α ≤ 1 (0.45 →
0.48) and falls to 0.28 at α = 3, where clean accuracy falls too (0.92 → 0.83); the mean within-seed ρ is −0.48
(flat, then a fall), p 0.098, and at equal clean accuracy the fall is 0.08 ± 0.06: C10 inconclusive, from the
shape of the trend rather than the number of seeds (the rule can reach p 0.001 here). VGG and WRN take α ∈ {0,
0.1, 0.3}: ℓ∞ RA falls from 0.78 to 0.57 (VGG, p 0.013, Holm 0.052: inconclusive) and from 0.89 to 0.66 (WRN, p
0.002, Holm 0.012: supported; ℓ2 likewise), but clean accuracy falls with it (WRN by 3.75 points: the
flat-accuracy confound contradicted; VGG by 5) and at equal clean accuracy the WRN's fall is not significant (p
0.48): C1 beyond ResNet-18 is seen in RA, and the clean-accuracy confound is why it stays unresolved here. Every
ladder check vouches for the headline. ``paper``: not run here (a GPU and the checkpoint file).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Optional

import numpy as np

from crobust import training
from crobust._errors import CrobustError
from crobust.config import derive
from crobust.data import Dataset
from crobust.data._dataset import channel_stats
from crobust.models.kinds import checkpoint_prepare
from crobust.models.vgg import centred_pad_widths
from crobust.study import (DataConfig, EvalConfig, Flat, GridConfig, Holds, Matched, ModelConfig, Population,
                           Start, Study, StudyConfig, Trend, col, headline_ra)
from crobust.study import measures as M
from crobust.study import measures_compressibility as MC
from crobust.study import recipes
from crobust.training import TrainConfig

from experiments import resnet_row_sparsity as E4

ARMS = ("vit", "vgg", "wrn")
HM = MC.HIDDEN_MEAN
PRETRAIN_KEEP = r"^(?!head/)"       # every parameter but the head's: the fine-tuning stage's fresh head
VIT_B16_FILE = "ViT-B_16.npz"       # gs://vit_models/imagenet21k/ViT-B_16.npz (google-research/vision_transformer)


@dataclasses.dataclass(frozen=True)
class BackbonesConfig:
    """The arms besides the study's own ViT fine-tuning blocks (``model`` = the ViT, ``train`` = its fine-tuning
    recipe, ``grid.alpha`` = its penalty strengths, ``data`` = the target task):

    - ``include``: the arms run (``vit``, ``vgg``, ``wrn``);
    - ``checkpoint``: a vision_transformer ``.npz`` the ViT starts from (its shape is ``model``'s); ``None``: the ViT
      is pretrained here on ``source`` with ``pretrain``. A path that does not exist skips the ViT arm (one line in
      the report), it is not an error: the checkpoint is the one input no machine here can fetch;
    - ``image_size``: the ViT's input is resized to this inside the model (None: the images' own size);
    - ``vgg``, ``wrn``: the two from-scratch models; ``conv_train`` their recipe; ``conv_alpha`` their α grid;
      ``pad_to``: the VGG zero-pads its input (centred) to this square size inside the model."""

    include: tuple[str, ...] = ARMS
    checkpoint: Optional[str] = None
    image_size: Optional[int] = None
    source: DataConfig = DataConfig("digits", classes=(0, 1, 2, 3, 4))
    pretrain: TrainConfig = TrainConfig()
    vgg: ModelConfig = ModelConfig(kind="vgg16", width=4)
    wrn: ModelConfig = ModelConfig(kind="wrn", depth=10, widen=1, base_width=8)
    conv_train: TrainConfig = TrainConfig()
    conv_alpha: tuple[float, ...] = (0.0, 0.1)
    pad_to: int = 32

    def validate(self) -> None:
        if not self.include or set(self.include) - set(ARMS) or len(set(self.include)) != len(self.include):
            raise CrobustError(f"backbones.include must name distinct arms among {', '.join(ARMS)}, got "
                               f"{self.include}")
        if self.vgg.kind != "vgg16" or self.wrn.kind != "wrn":
            raise CrobustError(f"backbones.vgg.kind must be vgg16 and backbones.wrn.kind wrn, got "
                               f"{self.vgg.kind}, {self.wrn.kind}")
        if len(self.conv_alpha) < 2 or min(self.conv_alpha) < 0:
            raise CrobustError(f"backbones.conv_alpha needs at least two values >= 0, got {self.conv_alpha}")
        if isinstance(self.pad_to, bool) or not isinstance(self.pad_to, int) or self.pad_to < 32 or self.pad_to % 32:
            raise CrobustError(f"backbones.pad_to must be a multiple of 32 (VGG-16's five max-pools), got "
                               f"{self.pad_to}")
        if self.image_size is not None and (isinstance(self.image_size, bool) or not isinstance(self.image_size, int)
                                            or self.image_size < 1):
            raise CrobustError(f"backbones.image_size must be a positive integer or none, got {self.image_size!r}")
        for name in ("pretrain", "conv_train"):
            if not getattr(self, name).val_ratio > 0:
                raise CrobustError(f"backbones.{name}.val_ratio must be > 0 (measures read best-validation "
                                   f"parameters)")


@dataclasses.dataclass(frozen=True)
class Config(StudyConfig):
    backbones: BackbonesConfig = BackbonesConfig()

    def validate(self) -> None:
        super().validate()
        b = self.backbones
        if self.model.kind != "vit":
            raise CrobustError(f"model.kind must be vit (the fine-tuned backbone), got {self.model.kind}")
        if self.model.checkpoint is not None:
            raise CrobustError("give the ViT checkpoint as backbones.checkpoint (a missing file skips the ViT arm), "
                               "not model.checkpoint")
        if b.image_size is not None and b.image_size % self.model.patch_size:
            raise CrobustError(f"backbones.image_size ({b.image_size}) must be a multiple of model.patch_size "
                               f"({self.model.patch_size})")
        if len(self.grid.alpha) < 2:
            raise CrobustError(f"grid.alpha (the ViT's fine-tuning strengths) needs at least two values, got "
                               f"{self.grid.alpha}")


def pad_images(data: Dataset, size: int) -> Dataset:
    """``data`` with every image zero-padded, centred, to size × size (left/top pad ⌊(size − H)/2⌋); an image
    already that size is unchanged. The channel statistics are recomputed on the padded training images (the
    model normalises with them); the labels, classes and pixel values of the original area are unchanged."""
    h, w = data.image_shape[:2]
    if (h, w) == (size, size):
        return data
    pad = centred_pad_widths(h, w, size)                 # the same placement as VGG16(pad_to=size) inside the model
    train, test = np.pad(data.train_images, pad), np.pad(data.test_images, pad)
    mean, std = channel_stats(train)
    return dataclasses.replace(data, train_images=train, test_images=test, mean=mean, std=std,
                               source=f"{data.source}, zero-padded to {size}×{size}")


BASE = Config(
    data=DataConfig("digits", classes=(5, 6, 7, 8, 9)),
    model=ModelConfig(kind="vit", patch_size=2, hidden_size=32, num_layers=2, num_heads=2, mlp_dim=64),
    train=recipes.train_config(recipes.VIT_FINETUNE, lr=0.01, batch_size=64, max_steps=600, eval_every=100,
                               val_ratio=0.1, regularizer="scale_invariant"),
    grid=GridConfig(alpha=(0.0, 0.3, 1.0, 3.0), seeds=3),   # the fine-tuning penalty's range: module docstring
    backbones=BackbonesConfig(
        pretrain=recipes.train_config(recipes.ADAMW_MLP, batch_size=64, max_steps=1000, eval_every=100,
                                      patience=None),
        conv_train=derive(E4.BASE.train, {"max_steps": 400, "eval_every": 100}),
        conv_alpha=(0.0, 0.1, 0.3)),
    eval=E4.BASE.eval)

PRESETS = {
    # small evaluates each arm on 100 points at ε ∈ {0, headline} per norm: three architectures' attack programs are
    # the cost of this study on a CPU
    # and 4 seeds: the secondary family (VGG, WRN) cannot reach the level at 3 (module docstring)
    "small": derive(BASE, {"eval.n_points": 100, "eval.eps_linf": (0.0, 0.05), "eval.eps_l2": (0.0, 0.25),
                           "grid.seeds": 4}),
    "smoke": derive(BASE, {**recipes.smoke(), **recipes.under("data", recipes.SMOKE_DIGITS),
                           "backbones.source.n_train": 600, "backbones.source.n_test": 200,
                           "backbones.pretrain.max_steps": 60, "backbones.pretrain.eval_every": 30,
                           "backbones.conv_train.max_steps": 20, "backbones.conv_train.eval_every": 10,
                           "backbones.vgg.width": 2, "backbones.include": ("vit", "vgg"), "grid.alpha": (0.0, 0.1),
                           "backbones.conv_alpha": (0.0, 0.1), "train.max_steps": 60, "train.eval_every": 30,
                           "eval.n_points": 50,
                           "eval.eps_linf": (0.0, 0.05), "eval.eps_l2": (0.0, 0.25)}),
    "paper": derive(BASE, {**recipes.under("train", recipes.VIT_FINETUNE), "train.regularizer": "scale_invariant",
                           "data.dataset": "cifar10", "data.classes": None, "data.download": True,
                           "model.patch_size": 16, "model.hidden_size": 768, "model.num_layers": 12,
                           "model.num_heads": 12, "model.mlp_dim": 3072, "grid.alpha": (0.0, 0.01, 0.03, 0.1),
                           "backbones.checkpoint": VIT_B16_FILE, "backbones.image_size": 224,
                           "backbones.vgg.width": 64, "backbones.wrn.depth": 28, "backbones.wrn.widen": 10,
                           "backbones.wrn.base_width": 16,

                           "backbones.conv_alpha": (0.0, 0.01, 0.03, 0.1), "checkpoint_every": 2000}),
}
# the conv arms' recipe (the reference ResNet recipe with a validation split) and the attack settings: E4's paper ones
PRESETS["paper"] = dataclasses.replace(
    PRESETS["paper"], eval=E4.PRESETS["paper"].eval,
    backbones=dataclasses.replace(PRESETS["paper"].backbones,
                                  conv_train=derive(E4.PRESETS["paper"].train, {"val_ratio": 0.1})))


def vit_skipped(cfg) -> Optional[str]:
    """Why the ViT arm does not run (its checkpoint file is absent), or None."""
    b = cfg.backbones
    if "vit" not in b.include or b.checkpoint is None or os.path.isfile(os.path.expanduser(b.checkpoint)):
        return None
    return (f"ViT arm skipped: no checkpoint file {b.checkpoint} (needs the ImageNet-21k ViT-B/16 weights of "
            f"google-research/vision_transformer, gs://vit_models/imagenet21k/{VIT_B16_FILE}, as a local .npz; set "
            f"backbones.checkpoint=<path>); the VGG and WRN arms ran")


def arms_run(cfg) -> tuple[str, ...]:
    return tuple(a for a in cfg.backbones.include if a != "vit" or vit_skipped(cfg) is None)


def populations(cfg, data):
    b, seeds = cfg.backbones, cfg.grid.seed_list
    pops = []
    if "vit" in arms_run(cfg):
        members = tuple(training.grid(alpha=cfg.grid.alpha, seeds=seeds))
        if b.checkpoint is None:
            source = b.source.load()
            pretrained = Population("vit_pretrain", cfg.model.build(source).clone(image_size=b.image_size),
                                    dataclasses.replace(b.pretrain, regularizer="none"),
                                    tuple(training.grid(seeds=seeds)), {"arm": "vit_pretrain"}, data=b.source)
            start = Start("vit_pretrain", keep=PRETRAIN_KEEP, members=tuple(seeds.index(m["seed"]) for m in members))
            pops += [pretrained, Population("vit_finetune", cfg.model.build(data).clone(image_size=b.image_size),
                                            cfg.train, members, {"arm": "vit"}, start=start)]
        else:
            model = dataclasses.replace(cfg.model, checkpoint=b.checkpoint)
            pops.append(Population("vit_finetune", model.build(data).clone(image_size=b.image_size), cfg.train,
                                   members, {"arm": "vit"}, prepare=checkpoint_prepare(b.checkpoint)))
    conv_members = tuple(training.grid(alpha=b.conv_alpha, seeds=seeds))
    if "vgg" in b.include:      # normalised with the padded images' statistics, padded inside the model
        model = b.vgg.build(pad_images(data, b.pad_to)).clone(pad_to=b.pad_to)
        pops.append(Population("vgg", model, b.conv_train, conv_members, {"arm": "vgg"}))
    if "wrn" in b.include:
        pops.append(Population("wrn", b.wrn.build(data), b.conv_train, conv_members, {"arm": "wrn"}))
    return pops


def not_on(measure, names):
    """``measure`` for every population but those named ``names`` (nothing measured there)."""
    @functools.wraps(measure)
    def wrapped(ctx, pop):
        return {} if pop.name in names else measure(ctx, pop)
    return wrapped


def measures(cfg):
    """Every arm: clean accuracy, margins and head norm, the ensemble's RA, row/spectral compressibility and norms,
    the budget ladder on the extreme α, the training record; the source ViTs (``vit_pretrain``, no penalty) only
    clean accuracy and their training record."""
    regularised = tuple(p for p, a in (("vit_finetune", "vit"), ("vgg", "vgg"), ("wrn", "wrn")) if a in arms_run(cfg))
    src = ("vit_pretrain",)
    return [M.clean_accuracy(), not_on(M.margins_and_head(), src), not_on(M.robust_accuracy(("linf", "l2")), src),
            not_on(MC.layer_compressibility(MC.DEFAULT_METRICS + ("norm_fro",)), src),
            M.budget_convergence(populations=regularised), M.training_record()]


# Robust accuracy falls by at least EFFECT from α = 0 to the largest α; clean accuracy flat within FLAT < EFFECT.
EFFECT, FLAT = 0.03, 0.02


def claims(cfg):
    e = cfg.eval
    ra_inf, ra_2 = headline_ra(e, "linf"), headline_ra(e, "l2")
    out = []
    for arm in arms_run(cfg):
        where = (("arm", arm),)
        family, paper = ("primary", "C10") if arm == "vit" else ("secondary", "C1")
        name = {"vit": "fine-tuned ViT", "vgg": "VGG-16-BN", "wrn": "WRN"}[arm]
        out += [
            Trend(paper, f"{name}: ℓ∞ robust accuracy falls by ≥ {EFFECT:g} as α grows", family, x="alpha",
                  y=ra_inf, direction="decreasing", where=where, min_change=EFFECT),
            Trend(paper, f"{name}: ℓ2 robust accuracy falls by ≥ {EFFECT:g} as α grows", family, x="alpha",
                  y=ra_2, direction="decreasing", where=where, min_change=EFFECT),
            Matched(paper, f"{name}: ℓ∞ RA falls by ≥ {EFFECT:g} as α grows at equal clean accuracy", family,
                    x="alpha", y=ra_inf, where=where, direction="decreasing", min_change=EFFECT),
            Trend("E5", f"{name}: row compressibility rises (ε_ν, hidden-layer mean, falls): the penalty worked",
                  "check", x="alpha", y=col("eps_nu_q2", layer=HM), direction="decreasing", where=where),
            Flat("confound", f"{name}: clean accuracy changes by less than {FLAT:g} across α", x="alpha",
                 y="clean_acc", tolerance=FLAT, where=where),
            Holds("headline", f"{name}: every α = 0 model keeps ≥ 10 % ℓ∞ RA at the headline ε", "check",
                  lhs=ra_inf, rhs=0.1, where=where + (("alpha", 0.0),)),
        ]
    return out


def figures(cfg):
    return []


def summary(cfg):
    e = cfg.eval
    return ["clean_acc", headline_ra(e, "linf"), headline_ra(e, "l2"), col("eps_nu_q2", layer=HM),
            col("norm_fro", layer=HM), "median_margin", "head_fro"]


def notes(cfg):
    b = cfg.backbones
    out = [why for why in (vit_skipped(cfg),) if why]
    if b.checkpoint is None and "vit" in b.include:
        out.append(f"Stand-ins: the pretrained backbone is our own small ViT (patch {cfg.model.patch_size}, width "
                   f"{cfg.model.hidden_size}, {cfg.model.num_layers} layers), pretrained from scratch here on "
                   f"{b.source.dataset} classes {b.source.classes} (population vit_pretrain, no penalty) and "
                   f"fine-tuned on {cfg.data.dataset} classes {cfg.data.classes} (the study's data) — for an "
                   f"ImageNet-21k ViT-B/16 fine-tuned on CIFAR-10. The stage keeps every pretrained parameter but "
                   f"the head (fresh, zero-initialised) and trains all of them.")
    elif "vit" in arms_run(cfg):
        out.append(f"The ViT starts from {b.checkpoint} (head swapped for a fresh zero one, position embeddings "
                   f"resized when the grid differs); images resized to {b.image_size}×{b.image_size} inside the "
                   f"model (bilinear), so ε is in the {cfg.data.dataset} images' own pixel units.")
    out += [
        f"Penalty: the scale-invariant row penalty α Σ_l (Σ_i ‖W^l_i,:‖₂)/‖W^l‖_F (the reference's row form, "
        f"invariant to W → cW) in every arm; in the ViT on every encoder matrix (query/key/value/out projections "
        f"as D × D, both MLP layers), not the patch embedding or head. ViT α ∈ {tuple(cfg.grid.alpha)}, VGG/WRN "
        f"α ∈ {tuple(b.conv_alpha)}.",
        f"VGG-16-BN (width {b.vgg.width}) zero-pads the images to {b.pad_to}×{b.pad_to} inside the model (five "
        f"max-pools; the attacks perturb only the images' own pixels, as for the other arms); WRN-"
        f"{b.wrn.depth}-{b.wrn.widen} (base width {b.wrn.base_width}) on the native images. Both from scratch with "
        f"the SGD recipe of the ResNet study (docs/paper.md §E4). Arms run: {', '.join(arms_run(cfg))}.",
        "Not covered, and why: CLIP fine-tuned on image–text pairs and evaluated zero-shot on ImageNet-1k, Swin, and "
        "the ImageNet WideResNet-101-2 need ImageNet-scale weights and data (CLIP and Swin checkpoints, "
        "ImageNet-1k, Flickr30k) that no machine of this project can reach, and crobust has no CLIP text tower, "
        "Swin model or ImageNet loader; only the ViT can start from a local checkpoint (backbones.checkpoint).",
        f"Families: the fine-tuned ViT's RA trends and the matched comparison are the primary (C10) family; the "
        f"VGG/WRN ones the secondary (C1 beyond ResNet-18); that each penalty raised row compressibility and that "
        f"the α = 0 models keep RA at the headline are checks. Confounds beside them: a Flat clean-accuracy claim "
        f"per arm (tolerance {FLAT:g}), the matched comparison, margins, ‖W_head‖_F and the hidden layers' "
        f"Frobenius norms (table).",
        "docs/paper.md §E5 gives no settings (α grid, schedule, seeds, ε); those here are our choice.",
    ]
    return out


STUDY = Study(name="finetuned_backbones",
              title="Larger and pretrained backbones: sparsity-regularised ViT fine-tuning, VGG-16-BN, WRN "
                    "(docs/paper.md §E5; C10, C1)",
              paper_claims=("C10", "C1"), presets=PRESETS, populations=populations, measures=measures, claims=claims,
              figures=figures, notes=notes, summary=summary, group_by=("arm", "alpha"))
run = STUDY.run
main = STUDY.main

if __name__ == "__main__":
    raise SystemExit(main())
