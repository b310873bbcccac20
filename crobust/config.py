"""Configurations as data: nested frozen dataclasses, presets as deltas on a base, dotted ``key=value`` overrides.

A study's configuration is a frozen dataclass whose fields are *blocks* (frozen dataclasses themselves: data,
model, training, member grid, evaluation, measurement) or plain values. A preset is a delta on a base, written
with dotted keys (as big_vision's per-hardware configs)::

    BASE = StudyConfig(data=DataConfig("digits"), train=TrainConfig(lr=1e-3), grid=GridConfig(alpha=(0, 0.1)))
    PRESETS = {"small": BASE, "smoke": derive(BASE, {"data.n_train": 600, "train.max_steps": 150})}

On the command line ``--set train.lr=3e-4 --set grid.alpha=0,0.01`` (:func:`override`) parses each value with the
field's type: ``int``, ``float`` (also ``8/255``), ``bool`` (true/false/1/0/yes/no), ``str``, ``None``
(``none``) for optional fields, tuples (comma-separated). An optional block that is ``None`` is created with its
defaults when one of its fields is set, and ``block=none`` switches it off. An unknown key raises :class:`~crobust._errors.CrobustError` naming the
closest valid keys; :func:`validate` then calls ``validate()`` on every block (depth first) exactly once.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import typing
from typing import Any, Mapping, Sequence

from crobust._errors import CrobustError, check_choice
from crobust._format import format_eps


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


def _is_union(tp) -> bool:
    origin = typing.get_origin(tp)
    return origin is typing.Union or (origin is not None and str(origin) == "<class 'types.UnionType'>")


def _non_none(tp):
    """``X`` for ``Optional[X]`` / ``X | None``; ``tp`` otherwise."""
    if _is_union(tp):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return args[0]
    return tp


def _parse(text: str, tp, key: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if _is_union(tp):
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
    if dataclasses.is_dataclass(tp):
        raise CrobustError(f"--set {key}: {key} is a block; set one of its fields ({key}.<field>=...)")
    return text.strip()


def _hints(cls) -> dict:
    return typing.get_type_hints(cls)


def is_block(value) -> bool:
    """A nested configuration block: a dataclass instance."""
    return dataclasses.is_dataclass(value) and not isinstance(value, type)


def keys(config, prefix: str = "") -> list[str]:
    """Every settable dotted key of ``config`` (fields of ``None`` optional blocks included)."""
    out = []
    hints = _hints(type(config))
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        tp = _non_none(hints[f.name])
        if is_block(value) or (value is None and dataclasses.is_dataclass(tp)):
            out += keys(value if value is not None else tp(), f"{prefix}{f.name}.")
        else:
            out.append(prefix + f.name)
    return out


def _unknown_key(key: str, valid: Sequence[str]) -> CrobustError:
    close = difflib.get_close_matches(key, valid, n=3, cutoff=0.5)
    leaf = key.rsplit(".", 1)[-1]
    close += [k for k in valid if k.rsplit(".", 1)[-1] == leaf and k not in close][:3 - len(close)]
    hint = f"closest valid keys: {', '.join(close)}" if close else f"valid keys: {', '.join(valid)}"
    return CrobustError(f"unknown --set key {key!r}; {hint}")


def _set(config, path: Sequence[str], value, full_key: str, valid: Sequence[str]):
    names = [f.name for f in dataclasses.fields(config)]
    if path[0] not in names:
        raise _unknown_key(full_key, valid)
    name = path[0]
    if len(path) == 1:
        return dataclasses.replace(config, **{name: value})
    child = getattr(config, name)
    if child is None:
        tp = _non_none(_hints(type(config))[name])
        if not dataclasses.is_dataclass(tp):
            raise _unknown_key(full_key, valid)
        child = tp()
    if not is_block(child):
        raise _unknown_key(full_key, valid)
    return dataclasses.replace(config, **{name: _set(child, path[1:], value, full_key, valid)})


def _field_type(config, path: Sequence[str]):
    cls = type(config)
    for i, name in enumerate(path):
        tp = _hints(cls)[name]
        if i == len(path) - 1:
            return tp
        cls = _non_none(tp)


def _optional_block(config, path: Sequence[str]) -> bool:
    """Whether ``path`` names a field typed ``Optional[<dataclass>]`` (a block that may be switched off)."""
    try:
        tp = _field_type(config, path)
    except (KeyError, TypeError, AttributeError):
        return False
    return _is_union(tp) and type(None) in typing.get_args(tp) and dataclasses.is_dataclass(_non_none(tp))


def derive(config, delta: Mapping[str, Any]):
    """``config`` with the dotted-key values of ``delta`` set (already typed; a preset is a delta on a base)."""
    valid = keys(config)
    for key, value in delta.items():
        if key not in valid:
            raise _unknown_key(key, valid)
        config = _set(config, key.split("."), value, key, valid)
    return config


def override(config, assignments: Sequence[str]):
    """``config`` with ``key=value`` strings applied; keys are dotted paths into the blocks (see module doc)."""
    valid = keys(config)
    for item in assignments:
        if "=" not in item:
            raise CrobustError(f"--set expects key=value, got {item!r}")
        key, text = (s.strip() for s in item.split("=", 1))
        if text.lower() == "none" and _optional_block(config, key.split(".")):
            config = _set(config, key.split("."), None, key, valid)        # switch an optional block off
            continue
        if key not in valid:
            raise _unknown_key(key, valid)
        path = key.split(".")
        config = _set(config, path, _parse(text, _field_type(config, path), key), key, valid)
    return config


def validate(config, prefix: str = "") -> None:
    """Check that every number is finite (no NaN, no ±inf: a setting that reaches training or evaluation must have
    a value), then call ``validate()`` on every block that defines one (children first, then the block itself)."""
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if is_block(value):
            validate(value, f"{prefix}{f.name}.")
        else:
            _check_finite(f"{prefix}{f.name}", value)
    check = getattr(config, "validate", None)
    if callable(check):
        check()


def _check_finite(key: str, value) -> None:
    items = value if isinstance(value, (tuple, list)) else (value,)
    for v in items:
        if isinstance(v, float) and not math.isfinite(v):
            raise CrobustError(f"{key} must be a finite number, got {value!r}")


def resolve(presets: Mapping[str, Any], preset: str, assignments: Sequence[str] = ()):
    """The preset named ``preset`` with ``assignments`` applied, validated (:func:`validate`)."""
    check_choice("preset", preset, tuple(presets))
    config = override(presets[preset], assignments)
    validate(config)
    return config


def to_dict(config) -> dict:
    """A JSON-able nested dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))


def from_dict(template, values: Mapping):
    """The config of :func:`to_dict` ``values`` (e.g. a run's ``config.json``), built on ``template``'s classes:
    nested blocks are rebuilt as their fields' dataclasses (an optional block from ``None`` too), lists become
    tuples; refused unless ``to_dict`` of the result gives ``values`` back."""
    def build(tmpl, vals):
        hints = _hints(type(tmpl))
        out = {}
        for f in dataclasses.fields(tmpl):
            if f.name not in vals:
                continue
            v, cur, tp = vals[f.name], getattr(tmpl, f.name), _non_none(hints[f.name])
            if isinstance(v, Mapping) and (is_block(cur) or dataclasses.is_dataclass(tp)):
                out[f.name] = build(cur if is_block(cur) else tp(), v)
            else:
                out[f.name] = _tuples(v)
        return dataclasses.replace(tmpl, **out)

    config = build(template, values)
    if to_dict(config) != json.loads(json.dumps(dict(values))):
        raise CrobustError(f"cannot rebuild a {type(template).__name__} from these values (fields differ)")
    return config


def _tuples(v):
    return tuple(_tuples(x) for x in v) if isinstance(v, list) else v


__all__ = ["parse_number", "is_block", "keys", "derive", "override", "validate", "resolve", "to_dict", "from_dict",
           "format_eps"]
