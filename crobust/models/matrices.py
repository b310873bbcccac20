"""The one place where flax kernels become the paper's weight matrices.

The paper's W maps inputs to outputs, shape (out × in), and a *neuron* is a row of W. Flax stores a ``Dense``
kernel as (in, out) and a ``Conv`` kernel as (kh, kw, in, out). :func:`kernel_to_matrix` converts:

- dense kernel K (in, out)           → W = Kᵀ, shape (out, in);
- conv kernel K (kh, kw, in, out)    → W of shape (out, in·kh·kw), each row one filter flattened in the order
  (in, kh, kw), the same matricisation as PyTorch's ``weight.reshape(out, -1)`` on an (out, in, kh, kw) tensor;
- low-rank pair (``down`` (in, r), ``up`` (r, out)) → W = A·B = (down @ up)ᵀ, shape (out, in).

:func:`layer_matrices` walks an MLP / LowRankMLP parameter tree and returns the matrices in forward order
(``hidden_0``, ``hidden_1``, …, ``head``). Leading axes (e.g. a population's member axis) are carried through:
a kernel of shape (M, in, out) gives W of shape (M, out, in).
"""

from __future__ import annotations

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


def _layer_order(name: str):
    m = re.fullmatch(r"hidden_(\d+)", name)
    return (0, int(m.group(1))) if m else (1, 0)


def layer_matrices(params: Mapping, *, include_head: bool = True) -> dict:
    """{layer name: W (..., out, in)} for every layer of an MLP or LowRankMLP, in forward order.

    Accepts the flax variables dict (``{'params': {...}}``) or its ``'params'`` entry.
    """
    tree = params.get("params", params) if isinstance(params, Mapping) else params
    names = sorted((n for n in tree if n.startswith("hidden_") or n == "head"), key=_layer_order)
    if not names:
        raise CrobustError("no layers named hidden_<i>/head in the parameter tree")
    out = {}
    for name in names:
        leaf = tree[name]
        if name == "head" and not include_head:
            continue
        if "kernel" in leaf:
            out[name] = kernel_to_matrix(leaf["kernel"], conv=False)
        elif "down" in leaf and "up" in leaf:
            out[name] = low_rank_to_matrix(leaf["down"], leaf["up"])
        else:
            raise CrobustError(f"layer {name!r} has neither a 'kernel' nor a 'down'/'up' pair")
    return out


def hidden_matrices(params: Mapping) -> dict:
    """:func:`layer_matrices` without the head: the encoder Φ's layers W¹ … W^λ."""
    return layer_matrices(params, include_head=False)
