"""Measures of the MLP compressibility studies (``mlp_compressibility``, ``source_invariance``): per-layer
compressibility and norm ratios, and their mean over the encoder's hidden layers as one common axis per member.

A measure is called as ``measure(ctx, pop)`` and returns ``{Column: (M,) values}`` (see
:mod:`crobust.study.measures`); :data:`MEASURES` is this module's registry.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from crobust import optim
from crobust.models.matrices import is_hidden_layer
from crobust.study.measures import layer_metrics
from crobust.study.table import column

HIDDEN_MEAN = "hidden_mean"      # the ``layer`` qualifier of a mean over the hidden layers
DEFAULT_METRICS = ("eps_nu_q2", "eps_sigma_q2", "beta_nu", "beta_sigma", "ratio_2_fro", "ratio_inf_fro")


def hidden_layer_mean(values: np.ndarray, layers: Sequence[str]) -> np.ndarray:
    """The mean over the hidden layers of a (M, L) per-layer array whose columns are the layers ``layers``: (M,).

    m_i = (1/λ) Σ_{l ∈ hidden} v_{i,l}, λ = number of hidden layers, the hidden layers being those of
    :func:`crobust.models.matrices.is_hidden_layer`: every layer but the stem, the head and the residual shortcuts
    (an MLP's are all but the head). The head is left out because no regulariser of these studies acts on it
    (docs/paper.md §E3: group lasso, the nuclear norm and the factorisation act on the encoder) and its shape
    (C × width) differs from every hidden layer's; the stem and the shortcuts, because the penalties skip the
    stem and a shortcut is not a layer of the hidden chain."""
    values = np.asarray(values, np.float64)
    hidden = [i for i, name in enumerate(layers) if is_hidden_layer(name)]
    if not hidden:
        raise ValueError(f"no hidden layer among {list(layers)}")
    return values[:, hidden].mean(axis=1)


def layer_compressibility(select: Sequence[str] = DEFAULT_METRICS):
    """The :func:`crobust.metrics.layer_report` metrics named in ``select`` (at the configured κ), per layer:
    ``<metric>[layer=hidden_i]`` and ``<metric>[layer=head]``, and their mean over the hidden layers
    ``<metric>[layer=hidden_mean]`` (:func:`hidden_layer_mean`; the layers averaged are logged per population
    under ``hidden_mean_layers`` in ``evaluation.json``).

    Default: ε_ν and ε_σ (q = 2: ε(k) = ‖tail of the sorted row-ℓ1 norms / singular values beyond the top
    k = d − ⌊(1−κ)d⌋‖₂ / ‖all‖₂; lower = more compressible), β_ν and β_σ (dispersion), ‖W‖₂/‖W‖_F and ‖W‖_∞/‖W‖_F."""
    per_layer = layer_metrics(select)

    def measure(ctx, pop):
        out = dict(per_layer(ctx, pop))
        for name in select:
            cols = [(dict(c.qualifiers)["layer"], v) for c, v in out.items() if c.measurement == name]
            values = np.stack([v for _, v in cols], axis=1)                         # (M, L), forward order
            layers = [layer for layer, _ in cols]
            out[column(name, layer=HIDDEN_MEAN)] = hidden_layer_mean(values, layers)
            ctx.log.setdefault("hidden_mean_layers", {})[pop.name] = [la for la in layers if is_hidden_layer(la)]
        return out
    return measure


def lr_over_batch():
    """``lr_over_batch`` = η/B: each member's learning rate η as the trainer used it (the per-member lr stored in
    its optimiser state) over the population's batch size B (its ``batch`` coordinate; a population without one
    gets no column) — the ratio that orders the heavy-tailedness of SGD's iterates (Barsbey et al., NeurIPS 2021)."""
    def measure(ctx, pop):
        if "batch" not in pop.coords:
            return {}
        lr = np.asarray(optim.learning_rate(pop.fit.state.opt_state), np.float64).reshape(-1)[:pop.size]
        return {column("lr_over_batch"): lr / float(pop.coords["batch"])}
    return measure


MEASURES: dict[str, Callable] = {"layer_compressibility": layer_compressibility, "lr_over_batch": lr_over_batch}

__all__ = ["HIDDEN_MEAN", "DEFAULT_METRICS", "hidden_layer_mean", "layer_compressibility", "lr_over_batch",
           "MEASURES"]
