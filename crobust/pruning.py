"""Structured pruning: remove whole filters / neurons (rows of the matricised layers) by their norm.

A layer's W (out × in·kh·kw for a conv, out × in for a dense layer; :mod:`crobust.models.matrices`) has one row
per output channel / neuron. Pruning keeps a boolean **mask** (…, out) per prunable layer and removes the rows with
mask False. The prunable layers are every layer but the stem (the first conv / ViT patch embedding) and the head
(the first author's template, docs/findings.md §3: "the first conv and the classifier are never
pruned"); for an MLP every hidden layer (input layer included) is prunable, its head is not.

Criteria (row norms ‖W_{i,:}‖₂):

- :func:`ratio_masks`: each layer removes its ⌊ratio·out⌋ lowest-norm rows (the fixed per-layer-ratio baseline);
- :func:`global_ratio_masks`: the ⌊ratio·R⌋ lowest-norm rows among all R prunable rows (one threshold for every
  layer; each layer keeps at least ``min_keep`` rows so no layer is cut through);
- :func:`epsilon_masks` (ε-pruning, docs/paper.md §E11): each layer removes the largest number n of its lowest-norm rows
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

Fine-tuning after pruning:

- :func:`fit_masked` — the population trainer (:func:`crobust.training.fit`) with its parameter mask
  (:func:`parameter_mask`, ``PopulationState.param_mask``): every step's gradient is multiplied by the 0/1 mask
  before the optimiser, so pruned entries stay exactly 0 under SGD, AdamW, weight decay, every penalty (L1 and
  the alignment penalty included, whose chosen subgradient at 0 is not 0) and the Frobenius projection.
  Per-member masks, batch-norm models (their running statistics carried along) and any ``TrainConfig`` work as
  in ``fit``.
- :func:`fine_tune` — any other trainer, through :class:`MaskedModel` (the masks in the forward pass, so the loss
  gives pruned weights zero gradients). The raw entries behind the mask then stay zero except under penalties
  whose subgradient at 0 is non-zero (L1, alignment: they drift behind the mask, never reaching the forward
  pass); the result is masked once more, so the returned model is exactly pruned either way.

Identical settings across arms: pass the same ``config`` and ``members`` to every arm; nothing here depends on
the criterion that made the masks.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable, Mapping

import chex
import jax
import jax.numpy as jnp
import numpy as np

from crobust._errors import CrobustError
from crobust.models.matrices import LayerSpec, get_leaf, layer_specs, spec_matrix

__all__ = ["prunable_specs", "row_norms", "ratio_masks", "global_ratio_masks", "epsilon_masks", "epsilon_for_ratio",
           "apply_masks", "prune", "mask_summary", "MaskedModel", "fine_tune", "parameter_mask", "fit_masked",
           "masked_start"]


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


def parameter_mask(params: Mapping, masks: Mapping) -> dict:
    """The 0/1 multiplier of every parameter entry that ``masks`` removes: :func:`apply_masks` of a tree of ones
    shaped like ``params`` (a params tree or ``{'params': ...}``, returned alike; float32; kernel output columns,
    biases and the layer's own batch-norm scale/bias at the removed rows are 0, every other entry 1), so that
    ``apply_masks(params, masks) == params * parameter_mask(params, masks)``."""
    return apply_masks(jax.tree.map(lambda a: jnp.ones(jnp.shape(a), jnp.float32), params), masks)


def fit_masked(model, data, config, members, variables: Mapping, masks: Mapping, **fit_kwargs):
    """Fine-tune pruned models with :func:`crobust.training.fit`, the pruned entries held at exactly 0.

    ``variables``: one model's (every member starts from a copy) or stacked per member (M, ...); batch-norm models
    may pass their ``batch_stats`` along (the members start from them). ``masks``: one model's ``(out,)`` masks
    (every member pruned alike) or per member ``(M, out)``. The members start from ``apply_masks(variables, masks)``
    with a fresh optimiser state (as any run ``fit`` starts), the Frobenius projection's reference norms those of
    the pruned start, and the trainer's parameter mask (:class:`crobust.training.PopulationState`
    ``param_mask`` = :func:`parameter_mask`): gradients of pruned entries are zeroed before the optimiser, so they
    stay exactly 0 under every optimiser and penalty (L1 and the alignment penalty included, whose subgradient at
    0 is not 0), and the trained models are exactly pruned without masking them again. Returns
    the :class:`~crobust.training.FitResult`. Identical settings across arms: pass the same ``config`` and
    ``members`` to every arm; nothing here depends on the criterion that made the masks.
    """
    from crobust import training

    state = training.init_population(model, data, config, members)
    m = len(members)
    like = state.params["params"]

    def stacked(tree, ref):
        one = jax.tree.structure(tree) == jax.tree.structure(ref) and all(
            jnp.shape(a) == jnp.shape(r)[1:] for a, r in zip(jax.tree.leaves(tree), jax.tree.leaves(ref)))
        out = jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (m,) + jnp.shape(a)), tree) if one else tree
        try:
            chex.assert_trees_all_equal_shapes(out, ref)
        except AssertionError as e:
            raise CrobustError(f"variables do not match the model's parameters (one model's or {m} members'): "
                               f"{str(e).splitlines()[0]}") from None
        return jax.tree.map(lambda a, r: jnp.asarray(a, r.dtype), out, ref)

    params = {"params": stacked(_params(variables), like)}
    model_state = state.model_state
    extra = {k: v for k, v in variables.items() if k != "params"} if "params" in variables else {}
    if model_state is not None and extra:
        model_state = stacked(extra, model_state)
    state = state.replace(params=params, best_params=params, model_state=model_state, best_model_state=model_state)
    return training.fit(model, data, config, members, state=masked_start(state, config, masks), **fit_kwargs)


def masked_start(state, config, masks: Mapping):
    """A population state (:class:`crobust.training.PopulationState`, e.g. a fresh or staged start) pruned by
    ``masks`` for masked fine-tuning: parameters ``apply_masks(params, masks)`` (best parameters alike), the
    trainer's ``param_mask`` = :func:`parameter_mask` and the Frobenius reference norms of the pruned start.
    ``masks``: one model's ``(out,)`` masks (every member pruned alike) or per member ``(M, out)``. This is the
    start :func:`fit_masked` trains from; a study's pruning stage (:class:`crobust.study.staging.Start` ``masks``)
    starts from it too."""
    from crobust.training.population import reference_norms

    m = state.num_members
    per_member = {}
    for name, mask in masks.items():
        mask = np.asarray(mask, bool)
        if mask.ndim == 1:
            mask = np.broadcast_to(mask, (m,) + mask.shape)
        if mask.ndim != 2 or mask.shape[0] != m:
            raise CrobustError(f"mask for {name!r} must be (out,) or ({m}, out), got {np.shape(masks[name])}")
        per_member[name] = mask
    params = apply_masks(state.params, per_member)
    return state.replace(params=params, best_params=params, ref_norms=reference_norms(params, config),
                         param_mask=parameter_mask(params, per_member))
