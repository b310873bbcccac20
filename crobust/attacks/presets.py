"""Named attack settings, as read-only mappings of keyword arguments.

Usage::

    from crobust.attacks import pgd, apgd, presets
    x_adv = pgd(logits_fn, x, y, key, eps=8/255, **presets.PGD_TRAIN)       # PGD-10, step 2/255
    x_adv = apgd(logits_fn, x, y, key, eps=8/255, **presets.APGD_CE)

- ``PGD_TRAIN``: training-time PGD — 10 steps of 2/255, one random start (REFERENCE_CODE.md §5, README recipe),
  true labels, clipped.
- ``PGD_REFERENCE_AT``: the reference code's adversarial-training attack exactly — ``PGD_TRAIN`` with the model's
  predicted labels, no clipping to [0, 1], and ART's "last success wins" restart rule (moot with 1 restart).
- ``PGD_EVAL``: evaluation PGD — 30 steps × 10 restarts (the reference code's unused ``evaluation=True`` path), step
  2.5·ε/30 (``step_size=None``; the reference would reuse the training step), worst case by max loss.
- ``APGD_CE``, ``APGD_T``, ``SQUARE``: AutoAttack's ``version='standard'`` settings for ℓ∞/ℓ2 (100 iterations,
  1 restart, 9 target classes, 5000 queries with p_init 0.8).

ε is not part of any preset: it is always passed explicitly.
"""

from types import MappingProxyType

PGD_TRAIN = MappingProxyType(dict(n_iter=10, step_size=2 / 255, n_restarts=1, random_start=True))
PGD_REFERENCE_AT = MappingProxyType(dict(n_iter=10, step_size=2 / 255, n_restarts=1, random_start=True,
                                         labels="predicted", clip=False, keep="last_success"))
PGD_EVAL = MappingProxyType(dict(n_iter=30, step_size=None, n_restarts=10, random_start=True, keep="max_loss"))
APGD_CE = MappingProxyType(dict(loss="ce", n_iter=100, n_restarts=1, rho=0.75))
APGD_DLR = MappingProxyType(dict(loss="dlr", n_iter=100, n_restarts=1, rho=0.75))
APGD_T = MappingProxyType(dict(n_iter=100, n_target_classes=9, n_restarts=1, rho=0.75))
SQUARE = MappingProxyType(dict(n_queries=5000, p_init=0.8, loss="margin", rescale_schedule=False))

__all__ = ["PGD_TRAIN", "PGD_REFERENCE_AT", "PGD_EVAL", "APGD_CE", "APGD_DLR", "APGD_T", "SQUARE"]
