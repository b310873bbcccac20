"""Vision Transformer (Dosovitskiy et al. 2021) in the parameter layout of google-research/vision_transformer and
big_vision, with loading of their ``.npz`` checkpoints and a head swap for fine-tuning.

Input: pixel-space images in [0, 1], (N, H, W, C), normalised inside by ``mean``/``std`` (default 0.5/0.5: the
pretrained ViT checkpoints expect inputs in [−1, 1]). Output: logits (N, num_classes); with ``return_repr=True``
also z (N, hidden), the class-token feature the head acts on (after ``pre_logits`` when present).

Forward: patches of p×p pixels are embedded by a p×p stride-p conv (``embedding``), a learned ``cls`` token is
prepended, learned position embeddings are added, then ``num_layers`` pre-LN encoder blocks

    x ← x + MHSA(LN(x));   x ← x + MLP(LN(x)),   MLP = Dense(mlp_dim) → GELU (tanh approximation) → Dense(hidden),

a final LayerNorm (ε = 1e-6 everywhere), the class token, and a linear head. No dropout (the modules are always
deterministic; fine-tuning recipes of the robustness literature use none).

Parameter tree (exactly the checkpoint's, keys joined by ``/`` in the ``.npz``)::

    embedding/{kernel (p, p, C, D), bias}         cls (1, 1, D)
    Transformer/posembed_input/pos_embedding (1, 1 + n_patches, D)
    Transformer/encoderblock_{i}/LayerNorm_0/{scale, bias}
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/{query,key,value}/{kernel (D, heads, D/heads), bias}
    Transformer/encoderblock_{i}/MultiHeadDotProductAttention_1/out/{kernel (heads, D/heads, D), bias (D,)}
    Transformer/encoderblock_{i}/LayerNorm_2/{scale, bias}
    Transformer/encoderblock_{i}/MlpBlock_3/Dense_0/{kernel (D, mlp), bias}, .../Dense_1/{kernel (mlp, D), bias}
    Transformer/encoder_norm/{scale, bias}
    pre_logits/{kernel, bias}   (only with representation_size)
    head/{kernel (D, C), bias}

Configurations: :data:`VIT_CIFAR` (patch 4 for 32×32 inputs, ViT-S-like width), :data:`VIT_B16` (the standard
B/16: patch 16, D 768, 12 layers, 12 heads, MLP 3072), :data:`VIT_TINY_TEST` (tests).

Loading (:func:`load_pretrained`): the checkpoint's arrays replace the freshly initialised ones; the head (and
``pre_logits`` when the model has no representation layer) is **swapped**: a checkpoint head whose shape differs
from the model's (another number of classes) is dropped and the model's fresh head is kept — zero-initialised, as
the vision_transformer fine-tuning code does, so fine-tuning starts from the pretrained features with logits 0.
Position embeddings of another grid size (e.g. a 224×224 checkpoint used on 32×32 inputs) are resized by bilinear
interpolation of the patch grid, the class token's embedding kept (as vision_transformer's ``resize_posemb``).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError
from crobust.models.conv import normalise


@dataclasses.dataclass(frozen=True)
class ViTConfig:
    patch_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int


VIT_CIFAR = ViTConfig(patch_size=4, hidden_size=384, num_layers=6, num_heads=6, mlp_dim=1536)
VIT_B16 = ViTConfig(patch_size=16, hidden_size=768, num_layers=12, num_heads=12, mlp_dim=3072)
VIT_TINY_TEST = ViTConfig(patch_size=4, hidden_size=16, num_layers=2, num_heads=2, mlp_dim=32)


class _PosEmbed(nn.Module):
    @nn.compact
    def __call__(self, x):
        pe = self.param("pos_embedding", nn.initializers.normal(stddev=0.02), (1,) + tuple(x.shape[1:]))
        return x + pe


class _MlpBlock(nn.Module):
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        init = dict(kernel_init=nn.initializers.xavier_uniform(), bias_init=nn.initializers.normal(stddev=1e-6))
        y = nn.gelu(nn.Dense(self.mlp_dim, name="Dense_0", **init)(x))
        return nn.Dense(x.shape[-1], name="Dense_1", **init)(y)


class _EncoderBlock(nn.Module):
    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        y = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_0")(x)
        y = nn.MultiHeadDotProductAttention(num_heads=self.num_heads, kernel_init=nn.initializers.xavier_uniform(),
                                            deterministic=True, name="MultiHeadDotProductAttention_1")(y, y)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-6, name="LayerNorm_2")(x)
        return x + _MlpBlock(self.mlp_dim, name="MlpBlock_3")(y)


class _Encoder(nn.Module):
    num_layers: int
    num_heads: int
    mlp_dim: int

    @nn.compact
    def __call__(self, x):
        x = _PosEmbed(name="posembed_input")(x)
        for i in range(self.num_layers):
            x = _EncoderBlock(self.num_heads, self.mlp_dim, name=f"encoderblock_{i}")(x)
        return nn.LayerNorm(epsilon=1e-6, name="encoder_norm")(x)


class ViT(nn.Module):
    """Vision Transformer (see the module docstring); build one from a config with :func:`vit`.

    ``train`` is accepted for a uniform model interface and changes nothing (no dropout, no batch norm).
    ``image_size`` (S, or None: the input's own size): the input (N, H, W, C) is first resized to (N, S, S, C) by
    ``jax.image.resize`` (bilinear; antialiased when it shrinks), a differentiable part of the model, so a
    pretrained checkpoint sees its own resolution while an attack perturbs the H × W image (ε in its pixel units).
    """

    num_classes: int
    patch_size: int = 4
    hidden_size: int = 384
    num_layers: int = 6
    num_heads: int = 6
    mlp_dim: int = 1536
    representation_size: int | None = None
    mean: Sequence[float] = (0.5,)
    std: Sequence[float] = (0.5,)
    image_size: int | None = None

    @nn.compact
    def __call__(self, x, train: bool = False, return_repr: bool = False):
        del train
        if self.hidden_size % self.num_heads:
            raise CrobustError(f"hidden_size {self.hidden_size} must be divisible by num_heads {self.num_heads}")
        if self.image_size is not None and tuple(x.shape[1:3]) != (self.image_size,) * 2:
            x = jax.image.resize(x, (x.shape[0], self.image_size, self.image_size, x.shape[3]), "bilinear")
        x = normalise(x, self.mean, self.std)
        p = int(self.patch_size)
        if x.shape[1] % p or x.shape[2] % p:
            raise CrobustError(f"image size {tuple(x.shape[1:3])} is not a multiple of the patch size {p}")
        x = nn.Conv(self.hidden_size, (p, p), strides=(p, p), padding="VALID", name="embedding")(x)
        n, h, w, c = x.shape
        x = x.reshape(n, h * w, c)
        cls = self.param("cls", nn.initializers.zeros, (1, 1, c))
        x = jnp.concatenate([jnp.broadcast_to(cls, (n, 1, c)), x], axis=1)
        x = _Encoder(self.num_layers, self.num_heads, self.mlp_dim, name="Transformer")(x)
        z = x[:, 0]
        if self.representation_size is not None:
            z = jnp.tanh(nn.Dense(self.representation_size, name="pre_logits")(z))
        logits = nn.Dense(self.num_classes, kernel_init=nn.initializers.zeros, name="head")(z)
        return (logits, z) if return_repr else logits


def vit(config: ViTConfig, num_classes: int, **kwargs) -> ViT:
    """A :class:`ViT` with the shape of ``config`` (``VIT_CIFAR``, ``VIT_B16``, …); kwargs: mean, std,
    representation_size."""
    return ViT(num_classes=num_classes, **dataclasses.asdict(config), **kwargs)


# --------------------------------------------------------------------------------------------------------------
# checkpoints


def flatten_params(tree: Mapping, prefix: str = "") -> dict:
    """{'a/b/c': array} from a nested params tree (the ``.npz`` key layout)."""
    out = {}
    for k, v in tree.items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten_params(v, key + "/"))
        else:
            out[key] = np.asarray(v)
    return out


def unflatten_params(flat: Mapping) -> dict:
    """The nested tree from {'a/b/c': array}."""
    tree: dict = {}
    for key, v in flat.items():
        node = tree
        parts = key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = v
    return tree


def save_npz(path, params: Mapping) -> None:
    """Write ``params`` (a ViT's params tree or ``{'params': …}``) as a vision_transformer-layout ``.npz``."""
    tree = params.get("params", params) if isinstance(params, Mapping) else params
    np.savez(path, **flatten_params(tree))


def load_npz(path) -> dict:
    """The nested params tree of a vision_transformer / big_vision ``.npz`` checkpoint (numpy arrays)."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise CrobustError(f"ViT checkpoint not found: {path}")
    with np.load(path, allow_pickle=False) as f:
        flat = {k: f[k] for k in f.files}
    # big_vision stores the same tree under a 'params/' prefix
    if flat and all(k.startswith("params/") for k in flat):
        flat = {k[len("params/"):]: v for k, v in flat.items()}
    return unflatten_params(flat)


def resize_posemb(posemb, n_tokens: int):
    """(1, 1 + g², D) → (1, n_tokens, D): the class token kept, the g×g grid resized bilinearly to g'×g'."""
    posemb = jnp.asarray(posemb)
    if posemb.shape[1] == n_tokens:
        return posemb
    cls, grid = posemb[:, :1], posemb[0, 1:]
    g_old, g_new = math.isqrt(grid.shape[0]), math.isqrt(n_tokens - 1)
    if g_old * g_old != grid.shape[0] or g_new * g_new != n_tokens - 1:
        raise CrobustError(f"cannot resize position embeddings of {posemb.shape[1]} tokens to {n_tokens} "
                           "(square patch grids plus a class token needed)")
    grid = grid.reshape(g_old, g_old, -1)
    grid = jax.image.resize(grid, (g_new, g_new, grid.shape[-1]), method="bilinear")
    return jnp.concatenate([cls, grid.reshape(1, g_new * g_new, -1)], axis=1)


def load_pretrained(model: ViT, path, init_params: Mapping) -> dict:
    """``{'params': …}`` for ``model`` from the checkpoint at ``path``, fresh head swapped in (module docstring).

    ``init_params``: the model's freshly initialised variables (``model.init(key, x)``); they supply the new head
    and are the shape template every checkpoint array is checked against.
    """
    return merge_pretrained(load_npz(path), init_params)


def merge_pretrained(ckpt: Mapping, init_params: Mapping) -> dict:
    """:func:`load_pretrained` on a checkpoint tree already read (:func:`load_npz`); ``ckpt`` is not modified, so
    one tree serves many members."""
    fresh = init_params.get("params", init_params)
    ckpt = _copy_dicts(ckpt)
    if "head" in ckpt and _shapes(ckpt["head"]) != _shapes(fresh["head"]):
        del ckpt["head"]                                        # another number of classes: swap the head
    if "pre_logits" in ckpt and "pre_logits" not in fresh:
        del ckpt["pre_logits"]
    pe_path = ("Transformer", "posembed_input", "pos_embedding")
    try:
        pe = ckpt[pe_path[0]][pe_path[1]][pe_path[2]]
        want = fresh[pe_path[0]][pe_path[1]][pe_path[2]].shape[1]
        ckpt[pe_path[0]][pe_path[1]][pe_path[2]] = np.asarray(resize_posemb(pe, want))
    except KeyError:
        pass
    merged = _merge(fresh, ckpt, ())
    return {"params": merged}


def _copy_dicts(tree: Mapping) -> dict:
    """The nested dicts of ``tree`` copied, its arrays shared."""
    return {k: _copy_dicts(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def _shapes(tree):
    return jax.tree.map(lambda a: tuple(np.shape(a)), dict(tree))


def _merge(fresh, ckpt, path):
    if not isinstance(fresh, Mapping):
        arr = np.asarray(ckpt)
        if arr.shape != tuple(fresh.shape):
            raise CrobustError(f"checkpoint array {'/'.join(path)} has shape {arr.shape}, the model needs "
                               f"{tuple(fresh.shape)}")
        return jnp.asarray(arr, fresh.dtype)
    extra = set(ckpt) - set(fresh)
    if extra:
        raise CrobustError(f"checkpoint has parameters the model lacks: "
                           f"{sorted('/'.join(path + (e,)) for e in extra)}")
    out = {}
    for k, v in fresh.items():
        if k in ckpt:
            out[k] = _merge(v, ckpt[k], path + (k,))
        elif k == "head" and not path:
            out[k] = v
        else:
            raise CrobustError(f"checkpoint lacks {'/'.join(path + (k,))}")
    return out
