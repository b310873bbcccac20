"""The premise for comparing classification decisions of two different programs exactly (imported as ``_margins``:
pytest puts tests/ on the path).

Two programs that compute the same logits in a different order (eager vs jitted, vmapped vs looped, chunked vs
whole, a population vs one member) differ by float32 rounding: for a K-term dot product at most ~K·6e-8 of the sum
of |terms|, ~1e-6 of max|z| for the small models of these tests. An argmax decision can then differ only on a point
whose top two logits are that close. Where a test asserts equal decisions, it first checks that every compared point
is at least ``rel`` · max|z| from such a tie (1e-4: two orders of magnitude above the rounding), so the equality it
asserts follows from the arithmetic and does not rest on this machine's rounding."""

import numpy as np

REL = 1e-4


def assert_far_from_ties(logits, rel: float = REL):
    """Every row of ``logits`` (..., C) has its two largest entries more than ``rel`` · max|logits| apart."""
    z = np.asarray(logits, np.float64)
    top = np.sort(z, axis=-1)[..., -2:]
    gap, scale = top[..., 1] - top[..., 0], max(np.max(np.abs(z)), 1e-30)
    assert np.min(gap) > rel * scale, f"a point's top-2 logit gap is {np.min(gap) / scale:.1e} of max|z|"


def assert_signs_far_from_zero(pre, terms, rel: float = REL):
    """Every entry of ``pre`` (a sum of ``terms`` along their last axis) is more than ``rel`` · Σ|terms| from 0, so
    its sign does not depend on the order of the sum."""
    pre, terms = np.asarray(pre, np.float64), np.asarray(terms, np.float64)
    assert np.all(np.abs(pre) > rel * np.sum(np.abs(terms), axis=-1)), "a sign is within rounding of 0"
