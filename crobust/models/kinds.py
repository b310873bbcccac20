"""Models by name: for each kind, the settings it reads, their checks, how it is built and its first hidden layer.

A *settings* object is anything with the attributes a kind reads (the study block
:class:`crobust.study.ModelConfig` is one); :data:`KINDS` maps each name to its :class:`ModelKind`:

=========  ==============================================  ====================================================
kind       settings read                                   first hidden layer (:attr:`ModelKind.first_hidden`)
=========  ==============================================  ====================================================
mlp        width, depth                                    ``hidden_0``
lowrank    width, depth, rank                              ``hidden_0``
resnet18   width, stem, stage_sizes, rank                  ``layer1_0/conv1``
vgg16      width, rank                                     ``conv_1``
wrn        depth, widen, base_width, rank                  ``group1_0/conv1``
vit        patch_size, hidden_size, num_layers,            ``Transformer/encoderblock_0/``
           num_heads, mlp_dim, checkpoint                  ``MultiHeadDotProductAttention_1/query``
=========  ==============================================  ====================================================

Hidden layers (:func:`crobust.models.matrices.hidden_layers`) are every weight layer but the stem, the head,
the shortcut convs and a ViT's ``pre_logits``; the first hidden layer is the first of them in forward order, the
layer a study means by W¹ (for an MLP the input layer, for the others the first layer after the stem).
``rank`` is the rank of every hidden layer (lowrank: required, possibly given per population) or, for the
convolutional kinds, of every conv but the stem (``None``: dense).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Callable, Optional

from crobust._errors import CrobustError, check_choice


@dataclasses.dataclass(frozen=True)
class ModelKind:
    """One model kind: ``fields`` (the settings it reads, besides ``kind``), ``check(settings)`` (one
    :class:`CrobustError` line per bad value), ``make(settings, num_classes, mean, std, rank)`` → the flax module,
    ``first_hidden(settings)`` → the first hidden layer's name and ``first_hidden_width(settings)`` → its number of
    output units (rows of W), ``check_images(settings, (H, W, C))`` → why the images do not fit, or None."""

    name: str
    doc: str
    fields: tuple[str, ...]
    check: Callable[[Any], None]
    make: Callable[..., Any]
    first_hidden: Callable[[Any], str]
    first_hidden_width: Callable[[Any], int]
    check_images: Callable[[Any, tuple], Optional[str]] = lambda s, shape: None


def _positive(settings, *names: str) -> None:
    for name in names:
        v = getattr(settings, name)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise CrobustError(f"model.{name} must be a positive integer, got {v!r}")


def _rank(settings, rank: Optional[int]) -> Optional[int]:
    r = settings.rank if rank is None else rank
    if r is not None and (isinstance(r, bool) or not isinstance(r, int) or r < 1):
        raise CrobustError(f"model.rank must be a positive integer or none, got {r!r}")
    return r


# ------------------------------------------------------------------------------------------------------------ MLPs

def _check_mlp(s) -> None:
    if s.width <= 0 or s.depth < 2:
        raise CrobustError(f"model.width must be > 0 and model.depth >= 2 (one hidden layer at least); got "
                           f"width={s.width}, depth={s.depth}")
    _rank(s, None)
    if s.kind == "mlp" and s.rank is not None:
        raise CrobustError(f"model.rank ({s.rank}) does not apply to kind mlp (a dense MLP): use kind lowrank, or "
                           f"set model.rank=none")


def _make_mlp(s, num_classes, mean, std, rank):
    from crobust.models.mlp import MLP
    return MLP(num_classes=num_classes, width=s.width, depth=s.depth, mean=mean, std=std)


def _make_lowrank(s, num_classes, mean, std, rank):
    from crobust.models.mlp import LowRankMLP
    r = _rank(s, rank)
    if r is None or not 1 <= r <= s.width:
        raise CrobustError(f"a low-rank model needs 1 <= rank <= width ({s.width}), got {r}")
    return LowRankMLP(num_classes=num_classes, width=s.width, depth=s.depth, rank=r, mean=mean, std=std)


# ------------------------------------------------------------------------------------------------ convolutional

def _check_resnet(s) -> None:
    _positive(s, "width")
    check_choice("model.stem", s.stem, ("cifar", "imagenet"))
    if not s.stage_sizes or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in s.stage_sizes):
        raise CrobustError(f"model.stage_sizes must be blocks per stage, each >= 1 ((2, 2, 2, 2) = ResNet-18), got "
                           f"{s.stage_sizes!r}")
    _rank(s, None)


def _make_resnet(s, num_classes, mean, std, rank):
    from crobust.models.resnet import ResNet18
    return ResNet18(num_classes=num_classes, stem=s.stem, width=s.width, rank=_rank(s, rank), mean=mean, std=std,
                    stage_sizes=tuple(s.stage_sizes))


def _check_vgg(s) -> None:
    _positive(s, "width")
    _rank(s, None)


def _vgg_images(s, shape) -> Optional[str]:
    if shape[0] % 32 or shape[1] % 32:
        return f"vgg16 needs images whose height and width are multiples of 32 (five 2×2 max-pools), got {shape}"
    return None


def _make_vgg(s, num_classes, mean, std, rank):
    from crobust.models.vgg import VGG16
    return VGG16(num_classes=num_classes, width=s.width, rank=_rank(s, rank), mean=mean, std=std)


def _check_wrn(s) -> None:
    if isinstance(s.depth, bool) or not isinstance(s.depth, int) or s.depth < 10 or (s.depth - 4) % 6:
        raise CrobustError(f"model.depth of a WRN must be 6n + 4 with n >= 1 (10, 16, 22, 28, …), got {s.depth!r}")
    _positive(s, "widen", "base_width")
    _rank(s, None)


def _make_wrn(s, num_classes, mean, std, rank):
    from crobust.models.wrn import WRN
    return WRN(depth=s.depth, widen=s.widen, num_classes=num_classes, base=s.base_width, rank=_rank(s, rank),
               mean=mean, std=std)


# --------------------------------------------------------------------------------------------------------- ViT

def vit_mlp_dim(s) -> int:
    """The ViT MLP blocks' hidden size: ``mlp_dim``, or 4·``hidden_size`` when it is None (ViT-B's ratio)."""
    return 4 * s.hidden_size if s.mlp_dim is None else s.mlp_dim


def _check_vit(s) -> None:
    _positive(s, "patch_size", "hidden_size", "num_layers", "num_heads")
    if s.mlp_dim is not None:
        _positive(s, "mlp_dim")
    if s.hidden_size % s.num_heads:
        raise CrobustError(f"model.hidden_size ({s.hidden_size}) must be a multiple of model.num_heads "
                           f"({s.num_heads})")
    if s.rank is not None:
        raise CrobustError("model.rank does not apply to a vit (no low-rank ViT layers); set it to none")
    if s.checkpoint is not None and not os.path.isfile(os.path.expanduser(s.checkpoint)):
        raise CrobustError(f"model.checkpoint: no file {s.checkpoint}")


def _vit_images(s, shape) -> Optional[str]:
    if shape[0] % s.patch_size or shape[1] % s.patch_size:
        return f"vit images {shape[:2]} are not a multiple of model.patch_size {s.patch_size}"
    return None


def _make_vit(s, num_classes, mean, std, rank):
    from crobust.models.vit import ViT
    if rank is not None:
        raise CrobustError("a vit has no low-rank form; build it without rank")
    # a pretrained checkpoint expects its own input scaling (0.5/0.5, ViT's default); a fresh ViT the data's
    norm = {} if s.checkpoint is not None else {"mean": mean, "std": std}
    return ViT(num_classes=num_classes, patch_size=s.patch_size, hidden_size=s.hidden_size,
               num_layers=s.num_layers, num_heads=s.num_heads, mlp_dim=vit_mlp_dim(s), **norm)


def checkpoint_prepare(path) -> Callable:
    """``state ↦ state`` for :class:`crobust.study.Population` ``prepare``: every member's ViT parameters from the
    ``.npz`` checkpoint at ``path`` (read once; :func:`crobust.models.vit.merge_pretrained`: position embeddings
    resized, a head of another shape swapped for the member's own fresh one), ``best_params`` the same, and the
    Frobenius projection's reference norms (when the state has any) those of the loaded parameters. The optimiser
    state is left as initialised: its moments start at zero whatever the parameters."""
    def prepare(state):
        import jax
        import jax.numpy as jnp

        from crobust import regularizers
        from crobust.models.vit import load_npz, merge_pretrained

        ckpt = load_npz(os.path.expanduser(path))
        members = [merge_pretrained(ckpt, jax.tree.map(lambda a: a[i], state.params))
                   for i in range(state.num_members)]
        params = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
        ref = jax.vmap(regularizers.hidden_frobenius_norms)(params) if state.ref_norms else state.ref_norms
        return state.replace(params=params, best_params=params, ref_norms=ref)
    return prepare


_VIT_FIRST = "Transformer/encoderblock_0/MultiHeadDotProductAttention_1/query"

KINDS: dict[str, ModelKind] = {k.name: k for k in (
    ModelKind("mlp", "bias-free ReLU MLP of depth weight matrices, hidden width", ("width", "depth"),
              _check_mlp, _make_mlp, lambda s: "hidden_0", lambda s: s.width),
    ModelKind("lowrank", "the MLP with every hidden layer factorised W = A·B at rank r", ("width", "depth", "rank"),
              _check_mlp, _make_lowrank, lambda s: "hidden_0", lambda s: s.width),
    ModelKind("resnet18", "ResNet-18 (stem cifar/imagenet), stages of width·2^s channels",
              ("width", "stem", "stage_sizes", "rank"), _check_resnet, _make_resnet, lambda s: "layer1_0/conv1",
              lambda s: s.width),
    ModelKind("vgg16", "VGG-16 with batch norm for 32×32 inputs, width·(1, 2, 4, 8, 8) channels", ("width", "rank"),
              _check_vgg, _make_vgg, lambda s: "conv_1", lambda s: s.width, _vgg_images),
    ModelKind("wrn", "wide ResNet WRN-depth-widen, base_width·widen·(1, 2, 4) channels",
              ("depth", "widen", "base_width", "rank"), _check_wrn, _make_wrn, lambda s: "group1_0/conv1",
              lambda s: s.base_width * s.widen),
    ModelKind("vit", "Vision Transformer, optionally from a pretrained .npz checkpoint (head swapped)",
              ("patch_size", "hidden_size", "num_layers", "num_heads", "mlp_dim", "checkpoint"), _check_vit,
              _make_vit, lambda s: _VIT_FIRST, lambda s: s.hidden_size, _vit_images),
)}
"""Every model kind by name (module docstring)."""


def get_kind(name: str) -> ModelKind:
    """The :class:`ModelKind` called ``name``; one clear error listing the kinds otherwise."""
    check_choice("model.kind", name, tuple(KINDS))
    return KINDS[name]


__all__ = ["KINDS", "ModelKind", "checkpoint_prepare", "get_kind", "vit_mlp_dim"]
