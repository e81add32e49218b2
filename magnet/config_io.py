"""Typed configs: dataclasses with the paper's defaults, YAML recipes, ``--set`` overrides.

The pattern is nanoGPT's: every tunable is a dataclass field whose default is the paper's value (or ours,
with the reason in a comment beside it; docs/method.md marks which). Each module that owns a concept defines
its own dataclass (``MagNetConfig`` in ``magnet.models.model_config``, ``TrainConfig`` in
``magnet.training.recipe``...); this module only turns YAML
and command-line text into those dataclasses and back, strictly:

- an unknown key is an error that names the file, the dotted key and the closest valid key (a typo in a
  recipe must never silently train with the default);
- every value is checked (and, where lossless, converted) against the field's type: ``int``, ``float``,
  ``bool``, ``str``, ``Path``, ``Literal[...]``, ``X | None``, ``tuple[int, ...]``, ``tuple[int, int]``,
  ``list[X]``, ``dict[str, X]`` and nested dataclasses;
- a value outside the field's declared domain (``magnet.domains``: ``optim.lr`` > 0, finite floats) is
  refused by the dataclass's ``__post_init__``; the error gets the dotted key and the source here;
- a ``ValueError`` raised by a dataclass's ``__post_init__`` (cross-field checks) becomes a ``ConfigError``
  naming the file and the section;
- a dataclass with a ``preset_defaults(data)`` classmethod gets the keys its section lacks from it (the
  model's ``variant``: ``model: {variant: tiny, sampler: bilinear}``).

PyYAML reads ``3e-5`` (no dot) as a string; float fields accept such numeric strings for that reason.

Overrides are ``key.sub=value`` strings (the CLI's ``--set``); the value is parsed as YAML, so ``--set
optim.lr=1e-4``, ``--set model.patches_per_layer=[3,3]`` and ``--set model.classifier_input_size=null`` all do
what they look like. Overrides apply to the file's keys before the defaults fill in, so ``--set
model.variant=magnet3`` swaps the preset under the recipe's own keys.
Checkpoints carry their config as a plain dict (``config_to_dict``) and rebuild it with
``config_from_dict``, with the same checks.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import os
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

import yaml

from magnet.atomic import atomic_write_text
from magnet.domains import DomainError
from magnet.errors import ConfigError

T = TypeVar("T")

__all__ = [
    "ConfigError",
    "config_from_dict",
    "config_to_dict",
    "config_to_yaml",
    "load_config",
    "save_config",
]


class _BadValue(Exception):
    """Internal: a value does not fit its field; carries the reason without the key."""


# --- reading ------------------------------------------------------------------------------------------


def load_config(cls: type[T], path: str | os.PathLike[str] | None, overrides: Sequence[str] = ()) -> T:
    """Read the YAML recipe ``path`` into dataclass ``cls`` and apply ``key.sub=value`` overrides.

    ``path=None`` starts from the dataclass defaults. Every problem is a one-line ``ConfigError`` naming
    the file (or the ``--set`` item) and the dotted key.
    """
    _require_dataclass(cls)
    data: dict[str, Any] = {}
    source = "<defaults>"
    if path is not None:
        source = str(path)
        data = _read_yaml_mapping(Path(path))
    cfg = config_from_dict(cls, data, source=source)
    if not overrides:
        return cfg
    # All overrides at once first: keys checked together (e.g. model.min_scale and model.max_scale) may
    # pass only as a set. If that fails, one at a time, so the error names the --set item that broke it.
    # They go onto the file's keys, not the resolved config, so that presets fill in after them; the
    # resolved config still tells a value from a section.
    merged, resolved = copy.deepcopy(data), config_to_dict(cfg)
    for item in overrides:
        resolved = _override_dict(resolved, item)
        merged = _override_dict(merged, item)
    try:
        return config_from_dict(cls, merged, source="--set " + " ".join(overrides))
    except ConfigError:
        partial = copy.deepcopy(data)
        for item in overrides:
            partial = _override_dict(partial, item)
            cfg = config_from_dict(cls, partial, source=f"--set {item}")
        return cfg


def config_from_dict(cls: type[T], data: Mapping[str, Any], *, source: str = "<dict>") -> T:
    """Build dataclass ``cls`` from a plain (nested) dict, with the same checks as ``load_config``."""
    _require_dataclass(cls)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    return typing.cast(T, _build_dataclass(cls, data, prefix="", source=source))


def apply_override(cfg: T, item: str) -> T:
    """Return a copy of ``cfg`` with one ``key.sub=value`` override applied (value parsed as YAML)."""
    data = _override_dict(config_to_dict(cfg), item)
    return typing.cast(T, config_from_dict(type(cfg), data, source=f"--set {item}"))


def _override_dict(data: dict[str, Any], item: str) -> dict[str, Any]:
    """``data`` (a plain nested dict, changed in place and returned) with one ``key.sub=value`` set."""
    source = f"--set {item}"
    key, sep, text = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"{source}: expected key=value, e.g. optim.lr=1e-4")
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: value is not valid YAML ({_yaml_reason(exc)})") from None
    parts = key.split(".")
    node: dict[str, Any] = data
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if part in node and child is not None and not isinstance(child, dict):
            where = ".".join(parts[: depth + 1])
            raise ConfigError(f"{source}: '{where}' is a value, not a section")
        if child is None:
            # Unknown section (reported by the validation below) or an Optional section now filled in.
            child = {}
            node[part] = child
        node = child
    last = parts[-1]
    if isinstance(value, dict) and isinstance(node.get(last), dict):
        node[last] = _deep_merge(node[last], value)
    else:
        node[last] = value
    return data


def _read_yaml_mapping(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise ConfigError(f"{path}: no such config file")
    if path.is_dir():
        raise ConfigError(f"{path}: is a directory, not a config file")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: invalid YAML ({_yaml_reason(exc)})") from None
    if data is None:  # an empty recipe means "all defaults"
        return {}
    if not isinstance(data, dict):
        kind = type(data).__name__
        raise ConfigError(f"{path}: expected a mapping of keys to values at the top, got {kind}")
    return data


def _yaml_reason(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return str(problem)


def _deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in new.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- validation ---------------------------------------------------------------------------------------


def _require_dataclass(cls: object) -> None:
    if not (isinstance(cls, type) and dataclasses.is_dataclass(cls)):
        raise TypeError(f"expected a dataclass type, got {cls!r}")


def _init_fields(cls: type) -> dict[str, dataclasses.Field[Any]]:
    return {f.name: f for f in dataclasses.fields(cls) if f.init}


def _build_dataclass(cls: type, data: Mapping[str, Any], *, prefix: str, source: str) -> object:
    fields = _init_fields(cls)
    hints = typing.get_type_hints(cls)
    for key in data:
        if not isinstance(key, str) or key not in fields:
            raise ConfigError(f"{source}: {_unknown_key_message(prefix, key, list(fields))}")
    preset_defaults = getattr(cls, "preset_defaults", None)
    if callable(preset_defaults):
        data = {**preset_defaults(data), **data}
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        dotted = f"{prefix}{name}"
        kwargs[name] = _coerce_field(value, hints[name], dotted, source)
    missing = [
        name
        for name, f in fields.items()
        if name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{source}: missing required key '{prefix}{missing[0]}'")
    try:
        return cls(**kwargs)
    except DomainError as exc:  # the dataclass's check_domains: name the key with its section
        raise ConfigError(f"{source}: {prefix}{exc}") from None
    except (ValueError, TypeError) as exc:
        section = f"section '{prefix[:-1]}'" if prefix else "config"
        raise ConfigError(f"{source}: {section}: {exc}") from None


def _unknown_key_message(prefix: str, key: object, valid: list[str]) -> str:
    message = f"unknown key '{prefix}{key}'"
    close = _closest(str(key), valid)
    if close is not None:
        return f"{message} (did you mean '{close}'?)"
    if valid:
        return f"{message} (valid keys here: {', '.join(valid)})"
    return f"{message} (this section takes no keys)"


def _closest(key: str, valid: list[str]) -> str | None:
    """The valid key a typo most likely meant, or None."""
    close = difflib.get_close_matches(key, valid, n=1, cutoff=0.6)
    if close:
        return close[0]
    # A misspelt start of a long key ("patchs" for "patches_per_layer"): compare with equal-length starts.
    starts = {v[: len(key) + 1]: v for v in valid}
    close = difflib.get_close_matches(key, list(starts), n=1, cutoff=0.75)
    return starts[close[0]] if close else None


def _coerce_field(value: Any, tp: Any, dotted: str, source: str) -> Any:
    try:
        return _coerce(value, tp, dotted, source)
    except _BadValue as exc:
        raise ConfigError(f"{source}: '{dotted}' {exc} (got {value!r})") from None


def _coerce(value: Any, tp: Any, dotted: str, source: str) -> Any:
    """Check ``value`` against type ``tp``; return it, converted where lossless. Raises ``_BadValue``."""
    if tp is Any or tp is object:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if not isinstance(value, Mapping):
            raise _BadValue("must be a section (a mapping of keys to values)")
        return _build_dataclass(tp, value, prefix=f"{dotted}.", source=source)
    origin = get_origin(tp)
    args = get_args(tp)
    if origin is typing.Union or origin is types.UnionType:
        return _coerce_union(value, args, dotted, source)
    if origin is Literal:
        for choice in args:
            # bool is an int in Python: True must not pass for Literal[1] and 1 not for Literal[True].
            if value == choice and type(value) is type(choice):
                return choice
        raise _BadValue(f"must be one of {', '.join(repr(a) for a in args)}")
    if origin in (tuple, list, Sequence):
        return _coerce_sequence(value, tp, origin, args, dotted, source)
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise _BadValue("must be a mapping")
        value_type = args[1] if len(args) == 2 else Any
        return {str(k): _coerce(v, value_type, f"{dotted}.{k}", source) for k, v in value.items()}
    return _coerce_scalar(value, tp)


def _coerce_union(value: Any, args: tuple[Any, ...], dotted: str, source: str) -> Any:
    if value is None:
        if type(None) in args:
            return None
        raise _BadValue("must not be null")
    reasons = []
    for option in args:
        if option is type(None):
            continue
        try:
            return _coerce(value, option, dotted, source)
        except _BadValue as exc:
            reasons.append(str(exc))
    raise _BadValue(" or ".join(reasons))


def _coerce_sequence(
    value: Any, tp: Any, origin: Any, args: tuple[Any, ...], dotted: str, source: str
) -> Any:
    if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
        raise _BadValue(f"must be a list ({_describe(tp)})")
    if origin is tuple and args and not (len(args) == 2 and args[1] is Ellipsis):
        if len(value) != len(args):
            raise _BadValue(f"must be a list of {len(args)} items ({_describe(tp)})")
        pairs = enumerate(zip(value, args, strict=True))
        items = [_coerce(v, a, f"{dotted}[{i}]", source) for i, (v, a) in pairs]
        return tuple(items)
    item_type = args[0] if args else Any
    try:
        items = [_coerce(v, item_type, f"{dotted}[{i}]", source) for i, v in enumerate(value)]
    except _BadValue as exc:
        raise _BadValue(f"must be a list ({_describe(tp)}): an item {exc}") from None
    return tuple(items) if origin is tuple else items


def _coerce_scalar(value: Any, tp: Any) -> Any:
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise _BadValue("must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise _BadValue("must be an integer")
        if isinstance(value, int):
            return value
        number = _as_number(value)
        if number is not None and float(number).is_integer():
            return int(number)  # 1e3 or 100.0 for an int field is unambiguous
        raise _BadValue("must be an integer")
    if tp is float:
        if isinstance(value, bool):
            raise _BadValue("must be a number")
        number = _as_number(value)
        if number is not None:
            return float(number)
        raise _BadValue("must be a number")
    if tp is str:
        if isinstance(value, str):
            return value
        # No silent str(): a YAML 1.10 would become "1.1". Quoting says what was meant.
        raise _BadValue("must be a string (quote it in YAML)")
    if tp is Path or (isinstance(tp, type) and issubclass(tp, os.PathLike)):
        if isinstance(value, (str, os.PathLike)):
            return Path(value)
        raise _BadValue("must be a path (a string)")
    raise TypeError(f"config field type {tp!r} is not supported by magnet.config_io")


def _as_number(value: Any) -> int | float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            return None
    return None


def _describe(tp: Any) -> str:
    text = str(tp).replace("typing.", "")
    return text.replace("<class '", "").replace("'>", "")


# --- writing ------------------------------------------------------------------------------------------


def config_to_dict(cfg: object) -> dict[str, Any]:
    """The config as plain YAML/JSON-safe Python (dicts, lists, str, int, float, bool, None)."""
    if not (dataclasses.is_dataclass(cfg) and not isinstance(cfg, type)):
        raise TypeError(f"expected a dataclass instance, got {cfg!r}")
    plain = _to_plain(cfg)
    assert isinstance(plain, dict)
    return plain


def _to_plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value) if f.init}
    if isinstance(value, Mapping):
        return {str(k): _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def config_to_yaml(cfg: object) -> str:
    """The resolved config as YAML text, in field order."""
    return yaml.safe_dump(config_to_dict(cfg), sort_keys=False, default_flow_style=False, allow_unicode=True)


def save_config(cfg: object, path: str | os.PathLike[str]) -> None:
    """Write the resolved config as YAML, atomically (a reader never sees half a file)."""
    header = "# Resolved magnet config: every key, defaults included. Load it with --config/load_config.\n"
    atomic_write_text(path, header + config_to_yaml(cfg))
