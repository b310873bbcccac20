"""The one exception type for bad user input.

Library functions raise :class:`CrobustError` (a ``ValueError``) with a message that names the offending
argument and, where there is a finite set, the valid choices. Command-line entry points catch it, print the
message on one line prefixed with ``error:`` and exit with status 2 (see ``crobust/study/cli.py``).
"""


class CrobustError(ValueError):
    """Bad input: an unknown name, an out-of-range value or missing data."""


def check_choice(name: str, value, choices) -> None:
    """Raise :class:`CrobustError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise CrobustError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")


def check_ranks(name: str, ranks, *, allow_empty: bool = False) -> None:
    """Raise :class:`CrobustError` unless ``ranks`` (a rank grid, e.g. ``arms.ranks``) holds distinct integers ≥ 1,
    and at least one unless ``allow_empty``."""
    if (not ranks and not allow_empty) or any(int(r) != r or r < 1 for r in ranks) or len(set(ranks)) != len(ranks):
        raise CrobustError(f"{name} must be distinct integers >= 1, got {ranks}")
