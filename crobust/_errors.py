"""The one exception type for bad user input.

Library functions raise :class:`CrobustError` (a ``ValueError``) with a message that names the offending
argument and, where there is a finite set, the valid choices. Command-line entry points catch it, print the
message on one line prefixed with ``error:`` and exit with status 2 (see ``experiments/_cli.py``).
"""


class CrobustError(ValueError):
    """Bad input: an unknown name, an out-of-range value or missing data."""


def check_choice(name: str, value, choices) -> None:
    """Raise :class:`CrobustError` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise CrobustError(f"unknown {name} {value!r}; valid choices: {', '.join(map(str, choices))}")
