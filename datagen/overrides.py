"""`key=value` overrides of a stage's config dataclass: `--set` on every datagen command, and the
`key=value` arguments of `python -m train` (one implementation of the typing rules for both).

Keys are field names, dotted into nested configs; values are strings typed against the field's
annotation; every problem (unknown key, with the closest valid ones; a value of the wrong type; what
the config's own checks reject) is collected and raised once:

>>> from datagen.generate import GenerateConfig
>>> cfg = apply_overrides(GenerateConfig(), ["count=50", "llm.max_attempts=2", "checks.near_dup_threshold=0.5"])
>>> cfg.count, cfg.llm.max_attempts, cfg.checks.near_dup_threshold
(50, 2, 0.5)
>>> apply_overrides(GenerateConfig(), ["cont=5"])
Traceback (most recent call last):
...
datagen.overrides.OverrideError: --set cont=5: unknown key 'cont' (did you mean count?)
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any

from datagen.errors import UserError

_TRUE = {"true", "yes", "on", "1"}
_FALSE = {"false", "no", "off", "0"}
_NONE = {"null", "none", "~", ""}


class OverrideError(UserError):
    """One or more bad overrides; `problems` holds one line each, each naming the fix."""

    def __init__(self, problems: list[str]):
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def coerce(key: str, value: Any, typ: Any) -> Any:
    """`value` (from YAML or a `key=value` string) as type `typ`; ValueError says what was expected.

    >>> coerce("lr", "2e-4", float), coerce("types", "ISTJ,ENFP", tuple[str, ...]), coerce("x", "null", int | None)
    (0.0002, ('ISTJ', 'ENFP'), None)
    """
    optional = False
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        optional, typ = True, args[0]
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in _NONE):
        if optional:
            return None
        raise ValueError(f"{key} cannot be null; expected {getattr(typ, '__name__', typ)}")
    if typ is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise ValueError(f"{key}={value!r}: expected true or false")
    if typ is int:
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r}: expected an integer")
        if isinstance(value, int):
            return value
        try:
            return int(str(value).strip())
        except ValueError:
            raise ValueError(f"{key}={value!r}: expected an integer") from None
    if typ is float:
        if isinstance(value, bool):
            raise ValueError(f"{key}={value!r}: expected a number")
        try:
            return float(value)  # YAML reads 2e-4 as a string (YAML 1.1 wants 2.0e-4): accept both
        except (TypeError, ValueError):
            raise ValueError(f"{key}={value!r}: expected a number") from None
    if typ is str:
        if isinstance(value, (dict, list)):
            raise ValueError(f"{key}: expected a string, got a {type(value).__name__}")
        return str(value)
    if typ is Path:
        return Path(str(value))
    if typing.get_origin(typ) is tuple:
        item = typing.get_args(typ)[0]
        parts = value if isinstance(value, (list, tuple)) else [p for p in str(value).split(",") if p.strip()]
        return tuple(coerce(key, p.strip() if isinstance(p, str) else p, item) for p in parts)
    raise ValueError(f"{key} cannot be set from the command line")


def parse_overrides(items: list[str]) -> tuple[dict[str, str], list[str]]:
    """`["lora_r=8", "bf16=false"]` → `({"lora_r": "8", "bf16": "false"}, problems)`."""
    out: dict[str, str] = {}
    problems = []
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not sep or not key:
            problems.append(f"override {item!r}: write key=value, e.g. count=50")
            continue
        out[key] = value
    return out, problems


def settable(typ: Any) -> bool:
    """Whether `coerce` can make a value of this type from the command line."""
    if isinstance(typ, types.UnionType) or typing.get_origin(typ) is typing.Union:
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        return len(args) == 1 and settable(args[0])
    if typing.get_origin(typ) is tuple:
        return settable(typing.get_args(typ)[0])
    return typ in (bool, int, float, str, Path)


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every settable dotted key of a config dataclass (nested configs expanded).

    Fields of other types (e.g. a price, set with --price-in/--price-out) are left to their own options.
    """
    keys = []
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.name.startswith("_"):
            continue
        typ = hints[f.name]
        if dataclasses.is_dataclass(typ):
            keys += config_keys(typ, prefix + f.name + ".")
        elif settable(typ):
            keys.append(prefix + f.name)
    return keys


def unknown_key_problem(key: str, keys: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, keys, n=3)
    hint = f" (did you mean {' or '.join(close)}?)" if close else f"; valid keys: {', '.join(keys)}"
    return f"{where}: unknown key '{key}'{hint}"


def apply_overrides(cfg: Any, items: list[str]) -> Any:
    """A copy of the config dataclass `cfg` with the `--set key=value` overrides applied (nested keys dotted)."""
    where = "--set"
    values, problems = parse_overrides(items)
    keys = config_keys(type(cfg))
    grouped: dict[str, dict[str, Any]] = {}
    for key, value in values.items():
        label = f"{where} {key}={value}"
        if key not in keys:
            problems.append(unknown_key_problem(key, keys, label))
            continue
        head, _, rest = key.partition(".")
        grouped.setdefault(head, {})[rest] = value
    if problems:
        raise OverrideError(problems)
    return _replace(cfg, grouped, where, "")


def _replace(cfg: Any, grouped: dict[str, dict[str, Any]], where: str, prefix: str) -> Any:
    hints = typing.get_type_hints(type(cfg))
    changes: dict[str, Any] = {}
    problems: list[str] = []
    for name, sub in grouped.items():
        if "" in sub:  # a leaf of this config
            try:
                changes[name] = coerce(prefix + name, sub[""], hints[name])
            except ValueError as e:
                problems.append(f"{where} {e}")
        else:
            nested: dict[str, dict[str, Any]] = {}
            for rest, value in sub.items():
                head, _, tail = rest.partition(".")
                nested.setdefault(head, {})[tail] = value
            try:
                changes[name] = _replace(getattr(cfg, name), nested, where, prefix + name + ".")
            except OverrideError as e:
                problems += e.problems
    if problems:
        raise OverrideError(problems)
    try:
        return dataclasses.replace(cfg, **changes)
    except UserError as e:  # the config's own checks (ranges, choices) name the fix
        raise OverrideError([str(e)]) from None
