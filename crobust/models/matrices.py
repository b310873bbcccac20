"""The one place where flax kernels become the paper's weight matrices.

The paper's W maps inputs to outputs, shape (out × in), and a *neuron* is a row of W. Flax stores a ``Dense``
kernel as (in, out) and a ``Conv`` kernel as (kh, kw, in, out). :func:`kernel_to_matrix` converts:

- dense kernel K (in, out)           → W = Kᵀ, shape (out, in);
- conv kernel K (kh, kw, in, out)    → W of shape (out, in·kh·kw), each row one filter flattened in the order
  (in, kh, kw), the same matricisation as PyTorch's ``weight.reshape(out, -1)`` on an (out, in, kh, kw) tensor;
- low-rank pair (``down`` (in, r), ``up`` (r, out)) → W = A·B = (down @ up)ᵀ, shape (out, in).

:func:`layer_matrices` walks the parameter tree of any crobust model (MLP, LowRankMLP, ResNet18, VGG16, WRN,
ViT) and returns the matrices in forward order (``hidden_0``, …, ``head``; ``stem``, ``layer1_0/conv1``, …,
``head``); every module holding a ``kernel`` (or a ``down``/``up`` pair) is a layer, named by its module path.
Further conventions:

- flax ``DenseGeneral`` kernels (attention): query/key/value (hidden, heads, head_dim) → W ((heads·head_dim) × hidden);
  out (heads, head_dim, hidden) → W (hidden × (heads·head_dim)) (a module named ``out`` has two input axes);
- low-rank conv (``down`` (kh, kw, in, r), ``up`` (r, out)) → W = upᵀ · mat(down), (out, in·kh·kw);
- leading axes (e.g. a population's member axis) are carried through: a kernel of shape (M, in, out) gives W of
  shape (M, out, in). Their number is read from the head's kernel, so a dense kernel and a conv kernel with
  member axes are never confused.

:func:`layer_specs` gives each layer's path and kind (used by :mod:`crobust.regularizers` and :mod:`crobust.pruning`
to write back into the tree); :func:`regularised_matrices` is the reference code's penalised set (stem and head
excluded); :func:`hidden_layers` names the hidden layers (stem, head and shortcuts excluded).
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Mapping

import jax.numpy as jnp

from crobust._errors import CrobustError


def kernel_to_matrix(kernel, *, conv: bool | None = None):
    """Flax kernel → paper matrix W (out × in·kh·kw), keeping any leading batch axes.

    Args:
      kernel: (..., in, out) for dense, (..., kh, kw, in, out) for conv.
      conv: whether ``kernel`` is a conv kernel; by default a kernel with ≥ 4 dims is taken to be one (so a
        population of dense kernels, (M, in, out), must be passed with ``conv=False`` only if it has 4 dims).
    """
    kernel = jnp.asarray(kernel)
    if conv is None:
        conv = kernel.ndim >= 4
    if conv:
        *lead, kh, kw, cin, cout = kernel.shape
        # (..., kh, kw, in, out) -> (..., out, in, kh, kw) -> (..., out, in*kh*kw)
        nl = len(lead)
        perm = tuple(range(nl)) + (nl + 3, nl + 2, nl, nl + 1)
        return jnp.transpose(kernel, perm).reshape(*lead, cout, cin * kh * kw)
    return jnp.swapaxes(kernel, -1, -2)


def low_rank_to_matrix(down, up):
    """W = A·B for a :class:`~crobust.models.mlp.LowRankDense` (A = upᵀ, B = downᵀ), shape (..., out, in)."""
    return jnp.swapaxes(jnp.asarray(down) @ jnp.asarray(up), -1, -2)


# --------------------------------------------------------------------------------------------------------------
# Layers of any model: found by walking the parameter tree.

STEM_NAMES = ("stem", "embedding")
HEAD_NAME = "head"
SHORTCUT_NAME = "shortcut"
PRE_LOGITS_NAME = "pre_logits"
_ATTENTION_ORDER = {"query": 0, "key": 1, "value": 2, "out": 3}


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Where a layer lives in the parameter tree and how its leaves become W (out × in).

    ``path``: module path from the params root (``('layer1_0', 'conv1')``); ``kind``: ``'dense'``, ``'conv'``,
    ``'dense_general'`` (a flax ``DenseGeneral`` kernel with ``n_in`` input axes, e.g. attention's query
    (hidden, heads, head_dim) and out (heads, head_dim, hidden)), ``'low_rank'`` or ``'low_rank_conv'``;
    ``n_in``: input axes of the kernel (dense 1, conv 3, low-rank: of ``down``); ``lead``: leading (member) axes."""

    path: tuple
    kind: str
    n_in: int
    lead: int

    @property
    def name(self) -> str:
        return "/".join(self.path)

    @property
    def is_stem(self) -> bool:
        return len(self.path) == 1 and self.path[0] in STEM_NAMES

    @property
    def is_head(self) -> bool:
        return self.path == (HEAD_NAME,)

    @property
    def is_hidden(self) -> bool:
        """A hidden layer (:func:`is_hidden_layer`)."""
        return is_hidden_layer(self.name)


def is_hidden_layer(name: str) -> bool:
    """Whether the layer called ``name`` (a :func:`layer_specs` name) is a hidden layer: neither the stem
    (``stem``, a ViT's ``embedding``), the head, a ViT's ``pre_logits`` nor a residual shortcut's 1×1 conv (ResNet,
    WRN: it maps a block's input, outside the chain of hidden layers)."""
    path = tuple(name.split("/"))
    return not ((len(path) == 1 and path[0] in STEM_NAMES + (HEAD_NAME, PRE_LOGITS_NAME))
                or path[-1] == SHORTCUT_NAME)


def _natural(s: str):
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.findall(r"\d+|\D+", s))


def _component_key(name: str):
    if name in _ATTENTION_ORDER:                      # flax MultiHeadDotProductAttention: forward order q, k, v, out
        return (0, _ATTENTION_ORDER[name], ())
    m = re.fullmatch(r"[A-Z]\w*?_(\d+)", name)       # flax auto-names Class_N are numbered in creation order
    if m:
        return (1, int(m.group(1)), ())
    return (2, 0, _natural(name))


def _path_key(path: tuple):
    top = 0 if path[0] in STEM_NAMES else (2 if path[0] == HEAD_NAME else 1)
    return (top, tuple(_component_key(c) for c in path))


def _walk(tree, prefix=()):
    """(path, leaf dict) for every module that owns a 'kernel' or a 'down'/'up' pair."""
    for key, sub in tree.items():
        if not isinstance(sub, Mapping):
            continue
        path = prefix + (str(key),)
        if "kernel" in sub and not isinstance(sub["kernel"], Mapping):
            yield path, sub
        elif "down" in sub and "up" in sub and not isinstance(sub["down"], Mapping):
            yield path, sub
        else:
            yield from _walk(sub, path)


def _params_tree(params):
    return params.get("params", params) if isinstance(params, Mapping) else params


def layer_specs(params: Mapping) -> dict:
    """{layer name: :class:`LayerSpec`} for every weight layer of any crobust model, in forward order.

    The number of leading (member) axes is read from the head's kernel (``head``/``kernel`` is (…, in, out) in every
    crobust model), so a population's leaves and a single model's are both understood. Names are the module paths
    joined by ``/`` (``hidden_0``, ``layer2_0/shortcut``, ``Transformer/encoderblock_3/MlpBlock_3/Dense_1``).
    """
    tree = _params_tree(params)
    if not isinstance(tree, Mapping):
        raise CrobustError("params must be a flax variables dict or its 'params' entry")
    head = tree.get(HEAD_NAME)
    if not isinstance(head, Mapping) or ("kernel" not in head):
        raise CrobustError("no 'head' layer with a 'kernel' in the parameter tree (every crobust model ends in one)")
    lead = jnp.ndim(head["kernel"]) - 2
    if lead < 0:
        raise CrobustError(f"the head kernel must be (..., in, out), got shape {jnp.shape(head['kernel'])}")
    specs = {}
    for path, leaf in _walk(tree):
        if "kernel" in leaf:
            nd = jnp.ndim(leaf["kernel"]) - lead
            if nd == 2:
                kind, n_in = "dense", 1
            elif nd == 4:
                kind, n_in = "conv", 3
            elif nd == 3:
                kind, n_in = "dense_general", 2 if path[-1] == "out" else 1
            else:
                raise CrobustError(f"layer {'/'.join(path)!r}: kernel of shape {jnp.shape(leaf['kernel'])} is neither "
                                   f"dense nor conv with {lead} leading axes")
        else:
            nd = jnp.ndim(leaf["down"]) - lead
            if nd not in (2, 4) or jnp.ndim(leaf["up"]) - lead != 2:
                raise CrobustError(f"layer {'/'.join(path)!r}: low-rank factors of shapes {jnp.shape(leaf['down'])}, "
                                   f"{jnp.shape(leaf['up'])} are not (in, r)/(kh, kw, in, r) and (r, out)")
            kind, n_in = ("low_rank", 1) if nd == 2 else ("low_rank_conv", 3)
        specs[path] = LayerSpec(path, kind, n_in, lead)
    return {s.name: s for s in (specs[p] for p in sorted(specs, key=_path_key))}


def get_leaf(params: Mapping, spec: LayerSpec) -> Mapping:
    """The leaf dict ({'kernel', …} or {'down', 'up', …}) of ``spec``'s layer."""
    node = _params_tree(params)
    for c in spec.path:
        node = node[c]
    return node


def spec_matrix(leaf: Mapping, spec: LayerSpec):
    """W (…, out, in) of one layer from its leaf dict (see the module docstring for the conventions)."""
    if spec.kind == "dense":
        return kernel_to_matrix(leaf["kernel"], conv=False)
    if spec.kind == "conv":
        return kernel_to_matrix(leaf["kernel"], conv=True)
    if spec.kind == "dense_general":
        k = jnp.asarray(leaf["kernel"])
        lead_shape = k.shape[:spec.lead]
        fan_in = math.prod(k.shape[spec.lead:spec.lead + spec.n_in])
        return jnp.swapaxes(k.reshape(*lead_shape, fan_in, -1), -1, -2)
    if spec.kind == "low_rank":
        return low_rank_to_matrix(leaf["down"], leaf["up"])
    # low-rank conv: W = upᵀ · mat(down), mat(down) of shape (r, in·kh·kw)
    b = kernel_to_matrix(leaf["down"], conv=True)
    return jnp.swapaxes(jnp.asarray(leaf["up"]), -1, -2) @ b


def layer_matrices(params: Mapping, *, include_head: bool = True) -> dict:
    """{layer name: W (..., out, in)} for every weight layer of any crobust model, in forward order.

    MLP / LowRankMLP: ``hidden_0`` … ``hidden_{L-1}``, ``head``. Convolutional models: the stem first, then every
    conv (matricised (out, in·kh·kw); low-rank convs as A·B) in forward order, then ``head``; ViT: ``embedding`` (the
    patch conv), the attention's query/key/value ((heads·head_dim) × hidden) and out (hidden × (heads·head_dim)), the
    MLP blocks' dense layers, ``head``. Accepts the flax variables dict (``{'params': {...}}``; batch statistics are
    ignored) or its ``'params'`` entry.
    """
    specs = layer_specs(params)
    return {name: spec_matrix(get_leaf(params, s), s) for name, s in specs.items()
            if include_head or not s.is_head}


def hidden_matrices(params: Mapping) -> dict:
    """:func:`layer_matrices` without the head: the encoder Φ's layers W¹ … W^λ (the stem included)."""
    return layer_matrices(params, include_head=False)


def hidden_layers(params: Mapping) -> list[str]:
    """The hidden layers' names in forward order: every weight layer but the stem, the head, the residual
    shortcuts and a ViT's ``pre_logits`` (:func:`is_hidden_layer`). MLP: ``hidden_0`` … (the input layer
    included: an MLP has no stem); ResNet / WRN: the block convs ``conv1``, ``conv2``; VGG: ``conv_1`` …
    ``conv_12``; ViT: the encoder blocks' attention projections and MLP layers. The first is the layer a study
    calls W¹. (:func:`hidden_matrices`, by contrast, is every layer but the head: the scale-controlled encoder.)"""
    return [name for name, s in layer_specs(params).items() if s.is_hidden]


def regularised_matrices(params: Mapping) -> dict:
    """The layers the reference code's penalties act on (docs/reference-code.md §2): every layer but the head and the
    stem (the first conv / the ViT patch embedding). For an MLP this is every hidden layer, the input layer
    included (it is a dense layer, not a stem)."""
    specs = layer_specs(params)
    return {name: spec_matrix(get_leaf(params, s), s) for name, s in specs.items() if not (s.is_head or s.is_stem)}
