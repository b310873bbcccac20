"""Study configurations as data: frozen dataclasses, named presets and ``key=value`` overrides.

A study defines ``Config`` (a frozen dataclass) and ``PRESETS = {'smoke': Config(...), 'small': ..., 'paper': ...}``.
:func:`resolve` picks a preset and applies ``--set key=value`` overrides, parsing each value with the field's
type: ``int``, ``float`` (also ``8/255``), ``bool`` (true/false/1/0/yes/no), ``str``, ``None`` (``none``) for
optional fields, and tuples (comma-separated, e.g. ``alphas=0,0.01,0.1``). An unknown preset or key, or a value
that does not parse, raises :class:`~crobust._errors.CrobustError` naming the valid choices.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from typing import Any, Mapping, Sequence

from crobust._errors import CrobustError, check_choice
from crobust._format import format_eps  # noqa: F401  (re-exported: the one ε formatter)


def parse_number(text: str) -> float:
    """'0.5' → 0.5, '8/255' → 0.031372…, '1e-3' → 0.001."""
    text = text.strip()
    try:
        if "/" in text:
            num, den = text.split("/", 1)
            return float(num) / float(den)
        return float(text)
    except (ValueError, ZeroDivisionError):
        raise CrobustError(f"not a number: {text!r}") from None


def _parse_bool(text: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off"):
        return False
    raise CrobustError(f"not a boolean: {text!r} (use true or false)")


def _parse(text: str, tp, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>"):
        non_none = [a for a in args if a is not type(None)]
        if text.strip().lower() == "none" and len(non_none) < len(args):
            return None
        return _parse(text, non_none[0], key)
    if origin in (tuple, Sequence) or tp is tuple:
        inner = args[0] if args else str
        items = [t for t in text.split(",") if t.strip()]
        return tuple(_parse(t, inner, key) for t in items)
    if tp is bool:
        return _parse_bool(text)
    if tp is int:
        try:
            return int(text)
        except ValueError:
            raise CrobustError(f"--set {key}: not an integer: {text!r}") from None
    if tp is float:
        try:
            return parse_number(text)
        except CrobustError as e:
            raise CrobustError(f"--set {key}: {e}") from None
    return text


def override(config, assignments: Sequence[str]):
    """Return ``config`` with ``key=value`` assignments applied (types from the dataclass fields)."""
    hints = typing.get_type_hints(type(config))
    names = [f.name for f in dataclasses.fields(config)]
    changes = {}
    for item in assignments:
        if "=" not in item:
            raise CrobustError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip()
        check_choice("--set key", key, names)
        changes[key] = _parse(value, hints[key], key)
    return dataclasses.replace(config, **changes)


def resolve(presets: Mapping[str, Any], preset: str, assignments: Sequence[str] = ()):
    """The preset named ``preset`` with ``assignments`` applied; validates with ``config.validate()`` if defined."""
    check_choice("preset", preset, tuple(presets))
    config = override(presets[preset], assignments)
    validate = getattr(config, "validate", None)
    if callable(validate):
        validate()
    return config


def to_dict(config) -> dict:
    """A JSON-able dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
