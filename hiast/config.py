"""Typed, validated configuration: YAML (safe_load) -> frozen dataclasses.

`build(cls, mapping, where)` turns a mapping into the dataclass `cls`, recursively. An unknown key is an
error that names its full path and suggests the closest known key; a value of the wrong type or out of
range is an error naming the key and what was expected. Dataclasses declare ranges in their fields'
metadata (`rng(low, high, ...)`), and cross-field checks in a `validate()` method.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import types
import typing
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the file and key."""


def rng(low=None, high=None, low_open: bool = False, high_open: bool = False, choices=None) -> dict:
    """Field metadata: the allowed range (or set of choices) of a value."""
    return {"low": low, "high": high, "low_open": low_open, "high_open": high_open, "choices": choices}


def field(default=dataclasses.MISSING, *, default_factory=dataclasses.MISSING, doc: str = "", **range_kw):
    metadata = {"doc": doc, **rng(**range_kw)}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def load_yaml(path: str | os.PathLike) -> dict:
    try:
        with open(path) as handle:
            data = yaml.safe_load(handle)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from err
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({err})") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level, got {type(data).__name__}")
    return data


def _describe(meta: dict) -> str:
    if meta.get("choices"):
        return f"one of {list(meta['choices'])}"
    low, high = meta.get("low"), meta.get("high")
    left = "(" if meta.get("low_open") else "["
    right = ")" if meta.get("high_open") else "]"
    return f"a value in {left}{'-inf' if low is None else low}, {'inf' if high is None else high}{right}"


def _check_range(value, meta: dict, where: str) -> None:
    if not meta:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise ConfigError(f"{where}: {value!r} is not allowed; expected {_describe(meta)}")
    low, high = meta.get("low"), meta.get("high")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        too_low = low is not None and (value <= low if meta.get("low_open") else value < low)
        too_high = high is not None and (value >= high if meta.get("high_open") else value > high)
        if too_low or too_high:
            raise ConfigError(f"{where}: {value!r} is out of range; expected {_describe(meta)}")


def _coerce(value, annotation, where: str):
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: {value!r} matches none of {args}")
    if dataclasses.is_dataclass(annotation):
        return build(annotation, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        if origin is tuple and args and args[-1] is not Ellipsis:
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {len(value)}")
            return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in enumerate(zip(value, args)))
        inner = args[0] if args else Any
        items = [_coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is tuple else items
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    if annotation is Path:
        if not isinstance(value, (str, Path)):
            raise ConfigError(f"{where}: expected a path, got {value!r}")
        return Path(value)
    return value


def build(cls, mapping, where: str = "config"):
    """Build dataclass `cls` from `mapping` (missing keys take defaults); validate types and ranges."""
    if mapping is None:
        mapping = {}
    if dataclasses.is_dataclass(mapping) and isinstance(mapping, cls):
        return mapping
    if not isinstance(mapping, dict):
        raise ConfigError(f"{where}: expected a mapping, got {mapping!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    for key in mapping:
        if key not in fields:
            close = difflib.get_close_matches(str(key), list(fields), n=1, cutoff=0.5)
            hint = f"; did you mean {close[0]!r}?" if close else f"; known keys: {sorted(fields)}"
            raise ConfigError(f"{where}.{key}: unknown key{hint}")
    values = {}
    for name, fld in fields.items():
        key_where = f"{where}.{name}"
        if name in mapping:
            value = _coerce(mapping[name], hints[name], key_where)
        elif fld.default is not dataclasses.MISSING:
            value = fld.default
        elif fld.default_factory is not dataclasses.MISSING:
            value = fld.default_factory()
        else:
            raise ConfigError(f"{key_where}: required key is missing")
        if value is not None:
            _check_range(value, fld.metadata, key_where)
        values[name] = value
    obj = cls(**values)
    validate = getattr(obj, "validate", None)
    if callable(validate):
        try:
            validate()
        except ConfigError as err:
            raise ConfigError(f"{where}.{err}") from None
    return obj


def to_dict(obj) -> dict:
    """A dataclass config as plain YAML-able data (tuples as lists, paths as strings)."""
    def plain(value):
        if dataclasses.is_dataclass(value):
            return {f.name: plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
        if isinstance(value, (list, tuple)):
            return [plain(v) for v in value]
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, Path):
            return str(value)
        return value
    return plain(obj)


def merge(base: dict, override: dict) -> dict:
    """Recursive dict merge: mappings merge key by key, anything else in `override` replaces."""
    out = dict(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out
