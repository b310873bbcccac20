"""How an ε is written everywhere (records, reports, figure labels): the robustness community's notation."""

from __future__ import annotations


def format_eps(eps: float) -> str:
    """ε as RobustBench writes it: a short decimal stays decimal (0.5 → ``'0.5'``, 0.2 → ``'0.2'``, 0 → ``'0'``);
    otherwise ``'k/255'`` (unreduced) when ε·255 is an integer (8/255 → ``'8/255'``, 2/255 → ``'2/255'``); else the
    shortest decimal (``'%g'``). "Short" means ε equals itself rounded to 3 significant digits."""
    eps = float(eps)
    if eps == float(f"{eps:.3g}"):
        return f"{eps:g}"
    k = eps * 255.0
    if abs(k - round(k)) < 1e-6:
        return f"{int(round(k))}/255"
    return f"{eps:g}"
