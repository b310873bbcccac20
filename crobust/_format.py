"""One way to write a radius ε for people: the robustness community's notation (used by reports, records, plots).

Usage::

    from crobust._format import format_eps
    format_eps(8/255), format_eps(0.5), format_eps(0.2), format_eps(0)     # '8/255', '0.5', '0.2', '0'

Rule: a number with a short exact decimal form (at most 4 decimals: 0, 0.2, 0.5, 1, 0.125) is written as that
decimal; otherwise, when ε·255 is an integer k (to 1e-6), as RobustBench writes it, ``'k/255'`` (8/255, 16/255;
the fraction is not reduced, so the pixel count stays visible); otherwise the shortest decimal (``repr``-style
``:g``). The decimal comes first so that 0.2 = 51/255 reads '0.2', not '51/255'.
"""

from __future__ import annotations


def format_eps(eps: float) -> str:
    """ε as text: short decimal if exact (≤ 4 decimals), else ``'k/255'`` when ε·255 is an integer, else ``:g``."""
    eps = float(eps)
    if round(eps, 4) == eps:
        return f"{eps:g}"
    k = eps * 255.0
    if eps > 0 and abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    return f"{eps:g}"


__all__ = ["format_eps"]
