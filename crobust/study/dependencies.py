"""What a measure needs from another, declared rather than implied by the order a study lists its measures in.

Some measures read what another measure left in the population's shared cache (``Context.cache``): the
robust-accuracy measure keeps each member's worst-case adversarial examples at the headline ε (``x_adv/<norm>``),
its headline robust accuracy (``ra_headline/<norm>``) and its per-point robust flags over the ε grid
(``robust_flags/<norm>``); the representation-shift, alignment, gap-and-bound, weaker-evaluation and radii
measures read them. A measure states this with :func:`declare`::

    declare(measure, provides=("x_adv/linf", "ra_headline/linf"))
    declare(measure, requires=("x_adv/l2",))

and the runner runs the study's measures in :func:`order`: a stable topological order (a measure keeps its listed
place unless something it requires is listed after it), so the order in which a study lists its measures never
changes a result. A requirement that no listed measure provides, two measures providing the same thing, and a cycle
are each one clear error before any training.
"""

from __future__ import annotations

from typing import Callable, Iterable, Sequence

from crobust._errors import CrobustError


def declare(measure: Callable, *, provides: Iterable[str] = (), requires: Iterable[str] = ()) -> Callable:
    """Attach ``provides`` / ``requires`` (cache entries by name, e.g. ``'x_adv/l2'``) to ``measure``; returns it."""
    measure.provides = tuple(dict.fromkeys(provides))
    measure.requires = tuple(dict.fromkeys(requires))
    return measure


def provides(measure: Callable) -> tuple:
    return tuple(getattr(measure, "provides", ()))


def requires(measure: Callable) -> tuple:
    return tuple(getattr(measure, "requires", ()))


def name(measure: Callable) -> str:
    return getattr(measure, "__qualname__", "measure").split(".<locals>")[0]


def order(measures: Sequence[Callable]) -> list:
    """The measures in a stable topological order of their declarations (module docstring)."""
    measures = list(measures)
    provider: dict[str, int] = {}
    for i, m in enumerate(measures):
        for item in provides(m):
            if item in provider:
                raise CrobustError(f"measures {name(measures[provider[item]])} and {name(m)} both provide {item!r}: "
                                   f"list one of them")
            provider[item] = i
    needs: list[set[int]] = []
    for m in measures:
        deps = set()
        for item in requires(m):
            if item not in provider:
                what = item.split("/")[0]
                raise CrobustError(f"measure {name(m)} needs {item!r}, which no listed measure provides (the "
                                   f"{what!r} entries come from robust_accuracy with that norm): add it to the "
                                   f"study's measures")
            deps.add(provider[item])
        needs.append(deps)
    done: list[int] = []
    placed: set[int] = set()
    while len(done) < len(measures):
        ready = [i for i in range(len(measures)) if i not in placed and needs[i] <= placed]
        if not ready:
            stuck = [name(measures[i]) for i in range(len(measures)) if i not in placed]
            raise CrobustError(f"the measures {', '.join(stuck)} require each other in a cycle")
        done.append(ready[0])
        placed.add(ready[0])
    return [measures[i] for i in done]


__all__ = ["declare", "order", "provides", "requires"]
