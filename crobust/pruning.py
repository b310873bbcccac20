"""Structured pruning: remove whole filters / neurons (rows of the matricised layers) by their norm.

A layer's W (out × in·kh·kw for a conv, out × in for a dense layer; :mod:`crobust.models.matrices`) has one row
per output channel / neuron. Pruning keeps a boolean **mask** (…, out) per prunable layer and removes the rows with
mask False. The prunable layers are every layer but the stem (the first conv / ViT patch embedding) and the head
(the first author's template, /work/shared/spec/FINDINGS.md §3: "the first conv and the classifier are never
pruned"); for an MLP every hidden layer (input layer included) is prunable, its head is not.

Criteria (row norms ‖W_{i,:}‖₂):

- :func:`ratio_masks`: each layer removes its ⌊ratio·out⌋ lowest-norm rows (the fixed per-layer-ratio baseline);
- :func:`global_ratio_masks`: the ⌊ratio·R⌋ lowest-norm rows among all R prunable rows (one threshold for every
  layer; each layer keeps at least ``min_keep`` rows so no layer is cut through);
- :func:`epsilon_masks` (ε-pruning, PAPER.md §E11): each layer removes the largest number n of its lowest-norm rows
  whose share of the squared Frobenius norm stays within ε, Σ_{removed} ‖W_{i,:}‖₂² ≤ ε·‖W‖_F², i.e. keeps the
  smallest k = out − n meeting the target relative error ‖W − W_k‖_F/‖W‖_F ≤ √ε;
- :func:`epsilon_for_ratio`: the ε at which ε-pruning removes (at least) ⌊ratio·R⌋ rows in total. The number of rows
  ε-pruning removes is N(ε) = #{(l, j): c^l_j ≤ ε} with c^l_j the cumulative share of layer l's j smallest rows
  (j < out_l), a step function of ε, so the sweep is exact: ε* = the ⌊ratio·R⌋-th smallest c^l_j. N(ε*) equals the
  target unless shares tie (e.g. several zero rows), where it can exceed it; the achieved ratio is returned.

Masks are computed on the host in float64 numpy (a one-off, exact selection; ties broken by the row index, lower
first). Leading member axes are allowed: each member gets its own masks.

**What pruning does to the parameters** (:func:`apply_masks`): a removed row is *masked*, not deleted, so pruned
models are plain parameter trees of the same shapes, evaluated by the same evaluation code. For output channel o of
a layer: the kernel's output column o is zeroed (dense (in, out): ``kernel[:, o]``; conv (kh, kw, in, out):
``kernel[..., o]``; low rank: ``up[:, o]``), its bias entry o is zeroed, and if a batch norm normalises this layer's
output alone (the module ``<layer>_bn`` of the crobust conv models) its scale and bias at o are zeroed too, so the
channel's output is exactly 0 after the BN (γ·(x − μ)/σ + β with γ = β = 0) and the channel is truly removed
(running statistics are left as they are; they no longer matter). For a conv whose output enters a residual sum
without its own BN (WRN's conv2/shortcut), masking removes the branch's contribution to that channel of the sum.

Fine-tuning after pruning (:func:`fine_tune`, :func:`fit_masked`): the same training code with the masks enforced
in the forward pass (:class:`MaskedModel`), so the loss gives pruned weights zero gradients and the pruned model
is exactly the masked one throughout. The stored (raw) entries behind the mask stay zero under SGD, Adam(W), weight
decay, the group-lasso / scale-invariant / β-control penalties and the Frobenius projection (each maps a zero row
to a zero update), but **not under penalties whose chosen subgradient at 0 is non-zero**: L1 and the alignment
penalty (jax's derivative of |x| at 0 is 1) and the nuclear norm (its U Vᵀ includes the singular vectors of the
zero singular values a zero row creates). With those the raw masked entries drift: they never reach the forward
pass, but they enter the penalty's value and the Frobenius projection's norm.
The result is masked once more, so the returned model is exactly pruned either way; exact masking of the raw
parameters inside every step needs the trainer's own mask support (issue 13, trainer items). Identical settings across arms: pass the same ``config`` and ``members`` to every arm; nothing here
depends on the criterion that made the masks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError
from crobust.models.matrices import LayerSpec, get_leaf, layer_specs, spec_matrix

__all__ = ["prunable_specs", "row_norms", "ratio_masks", "global_ratio_masks", "epsilon_masks", "epsilon_for_ratio",
           "apply_masks", "prune", "mask_summary", "MaskedModel", "fine_tune", "fit_masked"]


def _params(variables):
    return variables.get("params", variables) if isinstance(variables, Mapping) else variables


def prunable_specs(variables: Mapping) -> dict:
    """{layer name: LayerSpec} of the prunable layers (every layer but the stem and the head), forward order."""
    return {n: s for n, s in layer_specs(_params(variables)).items() if not (s.is_stem or s.is_head)}


def row_norms(variables: Mapping) -> dict:
    """{layer name: (…, out) float64 numpy} ℓ2 norms of the rows of W (filters / neurons) of the prunable layers."""
    tree = _params(variables)
    out = {}
    for name, spec in prunable_specs(tree).items():
        w = np.asarray(spec_matrix(get_leaf(tree, spec), spec), np.float64)
        out[name] = np.sqrt(np.sum(w * w, axis=-1))
    return out


def _check_ratio(ratio, what="ratio"):
    r = float(ratio)
    if not 0.0 <= r < 1.0:
        raise CrobustError(f"pruning {what} must be in [0, 1), got {ratio}")
    return r


def _lowest(norms_1d, n: int):
    """Keep mask removing the n lowest entries (stable: lower index first among ties)."""
    keep = np.ones(norms_1d.shape[0], bool)
    if n > 0:
        keep[np.argsort(norms_1d, kind="stable")[:n]] = False
    return keep


def _per_member(norms: dict, fn):
    """Apply fn({name: (out,)}) → {name: (out,) mask} to every member of (…, out) norms."""
    lead = next(iter(norms.values())).shape[:-1]
    out = {n: np.ones(v.shape, bool) for n, v in norms.items()}
    for idx in np.ndindex(*lead):
        masks = fn({n: v[idx] for n, v in norms.items()})
        for n, m in masks.items():
            out[n][idx] = m
    return out


def ratio_masks(variables: Mapping, ratio: float) -> dict:
    """Keep masks removing ⌊ratio·out⌋ lowest-ℓ2-norm rows of every prunable layer (ratio 0: keep all)."""
    r = _check_ratio(ratio)
    return _per_member(row_norms(variables),
                       lambda nm: {n: _lowest(v, int(math.floor(r * v.shape[0]))) for n, v in nm.items()})


def global_ratio_masks(variables: Mapping, ratio: float, *, min_keep: int = 1) -> dict:
    """Keep masks removing the ⌊ratio·R⌋ lowest-ℓ2-norm rows among all R prunable rows, every layer keeping at least
    its ``min_keep`` largest rows (refused if the ratio needs more)."""
    r = _check_ratio(ratio)

    def one(nm):
        names = list(nm)
        total = sum(v.shape[0] for v in nm.values())
        n = int(math.floor(r * total))
        cap = total - sum(min(min_keep, v.shape[0]) for v in nm.values())
        if n > cap:
            raise CrobustError(f"global ratio {ratio} removes {n} of {total} rows but min_keep={min_keep} per layer "
                               f"allows at most {cap}")
        vals, owner, row = [], [], []
        for li, name in enumerate(names):
            v = nm[name].copy()
            protect = np.argsort(-v, kind="stable")[:min_keep]
            v[protect] = np.inf
            vals.append(v)
            owner.append(np.full(v.shape[0], li))
            row.append(np.arange(v.shape[0]))
        vals, owner, row = np.concatenate(vals), np.concatenate(owner), np.concatenate(row)
        order = np.lexsort((row, owner, vals))[:n]                 # by norm, then layer, then row index
        masks = {name: np.ones(nm[name].shape[0], bool) for name in names}
        for o, i in zip(owner[order], row[order]):
            masks[names[o]][i] = False
        return masks

    return _per_member(row_norms(variables), one)


def _cumulative_shares(v):
    """c_j, j = 1..out−1: the share of Σ v² held by the j smallest rows (ascending order, stable), and the order."""
    order = np.argsort(v, kind="stable")
    sq = v[order] ** 2
    total = np.sum(sq)
    c = np.cumsum(sq)[:-1] / total if total > 0 else np.zeros(max(v.shape[0] - 1, 0))
    return c, order


def _eps_keep(v, eps):
    c, order = _cumulative_shares(v)
    n = int(np.searchsorted(c, eps, side="right"))               # largest n with c_n ≤ ε (c is non-decreasing)
    keep = np.ones(v.shape[0], bool)
    keep[order[:n]] = False
    return keep


def epsilon_masks(variables: Mapping, eps: float) -> dict:
    """ε-pruning: each prunable layer removes its largest number of lowest-norm rows whose share of ‖W‖_F² is ≤ ε
    (keeps the smallest k with ‖W − W_k‖_F² ≤ ε‖W‖_F²); at least one row is always kept."""
    e = float(eps)
    if not 0.0 <= e < 1.0:
        raise CrobustError(f"epsilon must be in [0, 1), got {eps}")
    return _per_member(row_norms(variables), lambda nm: {n: _eps_keep(v, e) for n, v in nm.items()})


def epsilon_for_ratio(variables: Mapping, ratio: float):
    """(ε, masks, achieved ratio): the ε at which ε-pruning removes ⌊ratio·R⌋ of the R prunable rows (module
    docstring: exact, from the sorted cumulative shares). With leading member axes ε and the achieved ratio are
    (…,)-shaped numpy arrays."""
    r = _check_ratio(ratio)
    norms = row_norms(variables)
    lead = next(iter(norms.values())).shape[:-1]
    eps_out = np.zeros(lead, np.float64)
    got = np.zeros(lead, np.float64)
    masks = {n: np.ones(v.shape, bool) for n, v in norms.items()}
    for idx in np.ndindex(*lead):
        nm = {n: v[idx] for n, v in norms.items()}
        total = sum(v.shape[0] for v in nm.values())
        n_target = int(math.floor(r * total))
        if n_target == 0:
            e = 0.0
            one = {n: np.ones(v.shape[0], bool) for n, v in nm.items()}
        else:
            shares = np.sort(np.concatenate([_cumulative_shares(v)[0] for v in nm.values()]))
            if n_target > shares.shape[0]:
                raise CrobustError(f"ratio {ratio} asks for {n_target} of {total} rows; ε-pruning keeps one row per "
                                   f"layer, so at most {shares.shape[0]} can go")
            e = float(shares[n_target - 1])
            one = {n: _eps_keep(v, e) for n, v in nm.items()}
        eps_out[idx] = e
        got[idx] = sum(int(np.sum(~m)) for m in one.values()) / total
        for n, m in one.items():
            masks[n][idx] = m
    if not lead:
        return float(eps_out), masks, float(got)
    return eps_out, masks, got


# --------------------------------------------------------------------------------------------------------------
# applying masks


def _mask_out_axes(mask, like, lead: int, out_shape):
    """A (…lead, out_flat) mask reshaped to broadcast against an array (…lead, <in axes>, *out_shape)."""
    m = jnp.asarray(mask).reshape(mask.shape[:lead] + tuple(out_shape))
    n_mid = jnp.ndim(like) - lead - len(out_shape)
    return m.reshape(m.shape[:lead] + (1,) * n_mid + tuple(out_shape))


def apply_masks(variables: Mapping, masks: Mapping) -> dict:
    """The variables with every masked row removed (module docstring): kernel output column, bias, and the scale and
    bias of the layer's own batch norm ``<layer>_bn`` zeroed. Works on a variables dict (``batch_stats`` kept) or a
    bare params tree; jnp only, so it can run inside jit/grad (masks are constants)."""
    wrapped = isinstance(variables, Mapping) and "params" in variables
    tree = _copy(_params(variables))
    specs = layer_specs(tree)
    for name, mask in masks.items():
        if name not in specs:
            raise CrobustError(f"mask for unknown layer {name!r}; layers: {list(specs)}")
        spec: LayerSpec = specs[name]
        parent = tree
        for part in spec.path[:-1]:
            parent = parent[part]
        leaf = dict(parent[spec.path[-1]])
        mask = jnp.asarray(mask)
        key = "kernel" if "kernel" in leaf else "up"
        w = leaf[key]
        n_in = 1 if key == "up" else spec.n_in
        out_shape = jnp.shape(w)[spec.lead + n_in:]
        if math.prod(out_shape) != mask.shape[-1]:
            raise CrobustError(f"mask for {name!r} has {mask.shape[-1]} rows, the layer has {math.prod(out_shape)}")
        leaf[key] = w * _mask_out_axes(mask, w, spec.lead, out_shape).astype(w.dtype)
        if "bias" in leaf:
            leaf["bias"] = leaf["bias"] * _mask_out_axes(mask, leaf["bias"], spec.lead, out_shape).astype(
                leaf["bias"].dtype)
        parent[spec.path[-1]] = leaf
        bn_name = spec.path[-1] + "_bn"
        if bn_name in parent:
            bn = dict(parent[bn_name])
            for k in ("scale", "bias"):
                if k in bn:
                    bn[k] = bn[k] * _mask_out_axes(mask, bn[k], spec.lead, out_shape).astype(bn[k].dtype)
            parent[bn_name] = bn
    if wrapped:
        out = dict(variables)
        out["params"] = tree
        return out
    return tree


def _copy(tree):
    return {k: _copy(v) if isinstance(v, Mapping) else v for k, v in tree.items()}


def prune(variables: Mapping, *, ratio: float | None = None, global_ratio: float | None = None,
          epsilon: float | None = None, epsilon_ratio: float | None = None):
    """(pruned variables, masks) by exactly one criterion: per-layer ``ratio``, ``global_ratio``, ε-pruning at
    ``epsilon``, or ε-pruning swept to the global ``epsilon_ratio``."""
    given = {k: v for k, v in dict(ratio=ratio, global_ratio=global_ratio, epsilon=epsilon,
                                   epsilon_ratio=epsilon_ratio).items() if v is not None}
    if len(given) != 1:
        raise CrobustError(f"give exactly one of ratio, global_ratio, epsilon, epsilon_ratio; got {sorted(given)}")
    (kind, value), = given.items()
    if kind == "ratio":
        masks = ratio_masks(variables, value)
    elif kind == "global_ratio":
        masks = global_ratio_masks(variables, value)
    elif kind == "epsilon":
        masks = epsilon_masks(variables, value)
    else:
        masks = epsilon_for_ratio(variables, value)[1]
    return apply_masks(variables, masks), masks


def mask_summary(masks: Mapping) -> dict:
    """{layer: (kept rows, rows)} and 'total' (member axes summed)."""
    out = {n: (int(np.sum(m)), int(np.size(m))) for n, m in masks.items()}
    out["total"] = (sum(k for k, _ in out.values()), sum(t for _, t in out.values()))
    return out


# --------------------------------------------------------------------------------------------------------------
# fine-tuning


@dataclasses.dataclass(frozen=True, eq=False)
class MaskedModel:
    """A model whose forward pass applies fixed masks to its parameters: ``init``/``apply`` as the wrapped flax
    module's, with :func:`apply_masks` in front. Gradients of masked weights are therefore zero. The masks must be
    one model's (no member axis): every member of a population is fine-tuned with the same masks."""

    model: object
    masks: Mapping

    def init(self, *args, **kwargs):
        return apply_masks(self.model.init(*args, **kwargs), self.masks)

    def apply(self, variables, *args, **kwargs):
        return self.model.apply(apply_masks(variables, self.masks), *args, **kwargs)

    def __getattr__(self, name):                      # mean, std, num_classes, … of the wrapped model
        if name in ("model", "masks") or name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.model, name)


def fine_tune(fit_like: Callable, model, variables: Mapping, masks: Mapping, **kwargs):
    """Fine-tune a pruned model with any trainer: ``fit_like(masked_model, variables, **kwargs)`` must train starting
    from ``variables`` and return the trained variables; the result is masked again (exactly pruned).

    Use the same ``fit_like`` and ``kwargs`` for every arm of a comparison."""
    for n, m in masks.items():
        if np.ndim(m) != 1:
            raise CrobustError(f"fine_tune needs one model's masks (out,), layer {n!r} has shape {np.shape(m)}")
    trained = fit_like(MaskedModel(model, masks), variables, **kwargs)
    return apply_masks(trained, masks)


def fit_masked(model, data, config, members, variables: Mapping, masks: Mapping, **fit_kwargs):
    """Fine-tune a pruned MLP with :func:`crobust.training.fit`: every member starts from ``variables`` (one model's,
    copied to each member) with ``masks`` enforced; returns the :class:`~crobust.training.FitResult` whose params
    and best params are masked.

    The optimiser state is fresh (as for any run started by ``fit``); the Frobenius projection's reference norms are
    the pruned model's own, so ``projection='frobenius'`` keeps the pruned scale (exactly, except with the L1,
    nuclear and alignment penalties: see the module docstring). Models with batch norm need the trainer's mutable-state support (issue 13
    items 5–10), which ``fit`` does not have yet; per-member masks need the trainer's mask support.
    """
    from crobust import regularizers, training

    masked = MaskedModel(model, masks)
    state = training.init_population(masked, data, config, members)
    start = apply_masks(variables, masks)
    m = len(members)
    stacked = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (m,) + jnp.shape(a)), start)
    stacked = jax.tree.map(lambda ref, a: a.astype(ref.dtype), state.params, stacked)
    state = state.replace(params=stacked, best_params=stacked,
                          ref_norms=jax.vmap(regularizers.hidden_frobenius_norms)(stacked))
    result = training.fit(masked, data, config, members, state=state, **fit_kwargs)
    final = result.state.replace(params=jax.vmap(lambda p: apply_masks(p, masks))(result.state.params),
                                 best_params=jax.vmap(lambda p: apply_masks(p, masks))(result.state.best_params))
    return dataclasses.replace(result, state=final)
