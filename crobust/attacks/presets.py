"""Named attack settings, as read-only mappings of keyword arguments.

Usage::

    from crobust.attacks import pgd, apgd, presets
    x_adv = pgd(logits_fn, x, y, key, eps=8/255, **presets.PGD_TRAIN)       # PGD-10, step 2/255
    x_adv = apgd(logits_fn, x, y, key, eps=8/255, **presets.APGD_CE)

- ``PGD_TRAIN``: training-time PGD — 10 steps of 2/255, one random start (docs/reference-code.md §5, README recipe),
  true labels, clipped, the last iterate (``keep='max_loss'``: adversarial training takes the final point).
- ``PGD_REFERENCE_AT``: the reference code's adversarial-training attack exactly — ``PGD_TRAIN`` with the model's
  predicted labels, no clipping to [0, 1], and ART's "last success wins" restart rule (moot with 1 restart).
- ``PGD_EVAL``: evaluation PGD — 30 steps × 10 restarts (the reference code's unused ``evaluation=True`` path), step
  2.5·ε/30 (``step_size=None``; the reference would reuse the training step), per-point worst case over every
  iterate and restart (``keep='best'``).
- ``APGD_CE``, ``APGD_T``, ``FAB_T``, ``SQUARE``: AutoAttack's ``version='standard'`` settings for ℓ∞/ℓ2 (100
  iterations, 1 restart, 9 target classes; FAB-T with α_max 0.1, η 1.05, β 0.9; 5000 queries with p_init 0.8).
- ``FAB``: untargeted FAB with AutoAttack's ``version='plus'`` settings (100 iterations, 5 restarts).

- ``APGD_ART``: ART's AutoProjectedGradientDescent with ART's defaults (η⁰ = 0.1, 100 iterations, 5 restarts, CE,
  predicted labels) — what the reference code could have run.

Ensembles (for :func:`crobust.evaluation.robust_accuracy` and studies), each a tuple of ``(name, kwargs)`` pairs
with a human-readable description (:func:`describe`):

- ``'standard'``: AutoAttack's ``version='standard'`` — APGD-CE (100 iterations, 1 restart), APGD-T (100
  iterations, min(9, C − 1) targets, 1 restart each), FAB-T (100 iterations, min(9, C − 1) targets, 1 restart
  each), Square (5000 queries, p_init 0.8).
- ``'cheap'``: APGD-CE, APGD-T and Square with a stated smaller budget for small/smoke presets, FAB-T left out —
  APGD-CE 50 iterations, APGD-T 50 iterations × min(9, C − 1) targets, Square 1000 queries (about half the
  APGD gradient steps of ``standard`` and a fifth of its queries).
- ``'art'``: ART's APGD alone (``APGD_ART``), to report a headline under the weaker evaluation beside the real one.

ε is not part of any preset: it is always passed explicitly.
"""

from types import MappingProxyType

PGD_TRAIN = MappingProxyType(dict(n_iter=10, step_size=2 / 255, n_restarts=1, random_start=True, keep="max_loss"))
PGD_REFERENCE_AT = MappingProxyType(dict(n_iter=10, step_size=2 / 255, n_restarts=1, random_start=True,
                                         labels="predicted", clip=False, keep="last_success"))
PGD_EVAL = MappingProxyType(dict(n_iter=30, step_size=None, n_restarts=10, random_start=True, keep="best"))
APGD_CE = MappingProxyType(dict(loss="ce", n_iter=100, n_restarts=1, rho=0.75))
APGD_DLR = MappingProxyType(dict(loss="dlr", n_iter=100, n_restarts=1, rho=0.75))
APGD_T = MappingProxyType(dict(n_iter=100, n_target_classes=9, n_restarts=1, rho=0.75))
FAB = MappingProxyType(dict(n_iter=100, n_restarts=5, alpha_max=0.1, eta=1.05, beta=0.9))
FAB_T = MappingProxyType(dict(n_iter=100, n_target_classes=9, n_restarts=1, alpha_max=0.1, eta=1.05, beta=0.9))
SQUARE = MappingProxyType(dict(n_queries=5000, p_init=0.8, loss="margin", rescale_schedule=False))
APGD_ART = MappingProxyType(dict(eps_step=0.1, n_iter=100, n_restarts=5, loss="ce"))

ENSEMBLES = MappingProxyType({
    "standard": (("apgd-ce", dict(APGD_CE)), ("apgd-t", dict(APGD_T)), ("fab-t", dict(FAB_T)),
                 ("square", dict(SQUARE))),
    "cheap": (("apgd-ce", {**APGD_CE, "n_iter": 50}), ("apgd-t", {**APGD_T, "n_iter": 50}),
              ("square", {**SQUARE, "n_queries": 1000})),
    "art": (("apgd-art", dict(APGD_ART)),),
})

_LABELS = {"apgd-ce": "APGD-CE", "apgd-dlr": "APGD-DLR", "apgd-t": "APGD-T", "fab": "FAB", "fab-t": "FAB-T", "square": "Square", "pgd": "PGD",
           "fgsm": "FGSM", "fgm": "FGM", "apgd-art": "ART-APGD"}


def ensemble(name: str) -> tuple:
    """The named ensemble as ``((attack, {kwarg: value}), ...)`` (a fresh copy)."""
    from crobust._errors import check_choice

    check_choice("ensemble", name, tuple(ENSEMBLES))
    return tuple((a, dict(kw)) for a, kw in ENSEMBLES[name])


def describe(attacks, num_classes: int | None = None) -> str:
    """One line a report can print: each attack with its iterations, restarts, targets or queries.

    ``attacks`` is an ensemble name or a tuple of names / ``(name, kwargs)`` pairs (defaults filled in from the
    evaluation's registry; a named ensemble with APGD-T but no FAB-T, ``'cheap'``, says "(FAB-T left out)");
    with ``num_classes`` the APGD-T / FAB-T target count is the effective min(T, C − 1).
    """
    note = ""
    if isinstance(attacks, str) and attacks in ENSEMBLES:
        if any(a == "apgd-t" for a, _ in ENSEMBLES[attacks]) and not any(a == "fab-t" for a, _ in ENSEMBLES[attacks]):
            note = " (FAB-T left out)"
        attacks = ENSEMBLES[attacks]
    elif isinstance(attacks, str):
        attacks = (attacks,)
    defaults = {"apgd-ce": APGD_CE, "apgd-dlr": APGD_DLR, "apgd-t": APGD_T, "fab": FAB, "fab-t": FAB_T, "square": SQUARE,
                "pgd": PGD_EVAL,
                "apgd-art": APGD_ART}
    parts = []
    for item in attacks:
        name, overrides = (item, {}) if isinstance(item, str) else item
        kw = {**defaults.get(name, {}), **dict(overrides)}
        label = _LABELS.get(name, name)
        if name == "square":
            parts.append(f"{label} ({kw['n_queries']} queries, p_init {kw['p_init']})")
        elif name in ("fgsm", "fgm"):
            parts.append(f"{label} (1 step)")
        elif name == "apgd-t":
            targets = kw["n_target_classes"]
            if num_classes is not None:
                targets = min(targets, num_classes - 1)
            parts.append(f"{label} ({kw['n_iter']} iterations, {targets} target{'s' if targets != 1 else ''} × {kw['n_restarts']} restart"
                         f"{'s' if kw['n_restarts'] != 1 else ''})")
        elif name == "fab-t":
            targets = kw["n_target_classes"]
            if num_classes is not None:
                targets = min(targets, num_classes - 1)
            restarts = kw.get("n_restarts", 1)
            parts.append(f"{label} ({kw['n_iter']} iterations, {targets} target{'s' if targets != 1 else ''}"
                         + (f" × {restarts} restarts)" if restarts != 1 else ")"))
        elif name == "apgd-art":
            parts.append(f"{label} ({kw['n_iter']} iterations, {kw['n_restarts']} restarts, initial step "
                         f"{kw['eps_step']:g}, last iterate)")
        else:
            restarts = kw.get("n_restarts", 1)
            parts.append(f"{label} ({kw['n_iter']} iterations × {restarts} restart{'s' if restarts != 1 else ''})")
    return ", ".join(parts) + note


__all__ = ["PGD_TRAIN", "PGD_REFERENCE_AT", "PGD_EVAL", "APGD_CE", "APGD_DLR", "APGD_T", "FAB", "FAB_T", "SQUARE", "APGD_ART",
           "ENSEMBLES", "ensemble", "describe"]
