"""SVD initialisation of a low-rank model from a dense checkpoint.

For each layer the reference code factorises (every conv but the stem, every hidden dense layer of an MLP; never
the head), with W (out × in·kh·kw) the matricised kernel (:mod:`crobust.models.matrices`) and W = U Σ Vᵀ its thin
SVD, the rank-r factors are the balanced truncation

    A = U_r Σ_r^{1/2}  (out × r),   B = Σ_r^{1/2} V_rᵀ  (r × in·kh·kw),   A·B = the best rank-r approximation of W

(Eckart–Young), stored as ``up`` = Aᵀ (r, out) and ``down`` = B reshaped back to the kernel layout (kh, kw, in, r)
(dense: (in, r)). When r exceeds min(out, in·kh·kw) the extra factor columns are zero, so A·B = W exactly. Biases
and every other parameter (batch norm, stem, head) are copied unchanged; the result has the parameter tree of the
same architecture built with ``rank=r``.

Precision: the SVD runs in float32 (:func:`jnp.linalg.svd`), so at full rank A·B equals W to float32 rounding,
‖A·B − W‖ ≲ 10·ε_f32·‖W‖ per entry for these sizes, and a conv set from it equals the dense conv to the same
relative tolerance.
"""

from __future__ import annotations

from typing import Mapping

import jax.numpy as jnp

from crobust._errors import CrobustError
from crobust.models.matrices import get_leaf, layer_specs, spec_matrix


def factorise(w, rank: int):
    """(A (…, out, r), B (…, r, in)) with A·B the best rank-``rank`` approximation of W (…, out, in), balanced
    (both carry Σ^{1/2}); zero-padded columns/rows when rank > min(out, in)."""
    if int(rank) < 1:
        raise CrobustError(f"rank must be >= 1, got {rank}")
    w = jnp.asarray(w, jnp.float32)
    u, s, vt = jnp.linalg.svd(w, full_matrices=False)
    h = s.shape[-1]
    r = min(int(rank), h)
    root = jnp.sqrt(s[..., :r])
    a = u[..., :, :r] * root[..., None, :]
    b = root[..., :, None] * vt[..., :r, :]
    if rank > h:
        pad = int(rank) - h
        a = jnp.concatenate([a, jnp.zeros(a.shape[:-1] + (pad,), a.dtype)], axis=-1)
        b = jnp.concatenate([b, jnp.zeros(b.shape[:-2] + (pad, b.shape[-1]), b.dtype)], axis=-2)
    return a, b


def _unmatricise_conv(b, kh: int, kw: int, cin: int):
    """B (…, r, in·kh·kw), columns in (in, kh, kw) order → kernel (…, kh, kw, in, r), the inverse of
    :func:`~crobust.models.matrices.kernel_to_matrix`."""
    *lead, r, _ = b.shape
    nl = len(lead)
    k = b.reshape(*lead, r, cin, kh, kw)                             # (…, r, in, kh, kw)
    return jnp.transpose(k, tuple(range(nl)) + (nl + 2, nl + 3, nl + 1, nl))


def low_rank_from_dense(variables: Mapping, rank: int) -> dict:
    """The variables of the rank-``rank`` model, SVD-initialised from the dense model's ``variables``.

    ``variables``: a flax variables dict (``{'params': …, 'batch_stats': …}``) or a bare params tree of a dense
    MLP / ResNet18 / VGG16 / WRN (leading member axes allowed). Returns the same kind of dict.
    """
    wrapped = isinstance(variables, Mapping) and "params" in variables
    tree = variables["params"] if wrapped else variables
    specs = layer_specs(tree)
    new = _copy(tree)
    for spec in specs.values():
        if spec.is_head or spec.is_stem:
            continue
        if spec.kind not in ("dense", "conv"):
            raise CrobustError(f"layer {spec.name!r} is {spec.kind}; only dense and conv layers can be factorised")
        leaf = get_leaf(tree, spec)
        a, b = factorise(spec_matrix(leaf, spec), rank)
        kernel = jnp.asarray(leaf["kernel"])
        if spec.kind == "conv":
            kh, kw, cin = kernel.shape[spec.lead:spec.lead + 3]
            down = _unmatricise_conv(b, kh, kw, cin)
        else:
            down = jnp.swapaxes(b, -1, -2)
        out = {"down": down.astype(kernel.dtype), "up": jnp.swapaxes(a, -1, -2).astype(kernel.dtype)}
        if "bias" in leaf:
            out["bias"] = leaf["bias"]
        node = new
        for c in spec.path[:-1]:
            node = node[c]
        node[spec.path[-1]] = out
    if wrapped:
        result = {k: v for k, v in variables.items()}
        result["params"] = new
        return result
    return new


def _copy(tree):
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}
