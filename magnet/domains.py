"""Domains of numeric settings, declared once next to the field and checked where values enter.

A learning rate of ``nan``, a batch size of ``0`` or ``epochs: 0`` is a mistake best refused when the
config is built, not minutes later where the value is first used (or never: a NaN learning rate trains
without complaint and saves NaN weights). So each config field says which numbers make sense for it, in
its annotation:

    lr: Annotated[float, POSITIVE] = 3e-5
    batch_size: Annotated[int, AtLeast(1)] = 16
    patches_per_layer: Annotated[tuple[int, ...], NON_EMPTY, Each(AtLeast(1))] = (2, 3, 3)

``check_domains(self)``, called from each config dataclass's ``__post_init__``, checks every field against
its declared domains, whether the config came from YAML, a ``--set``, a checkpoint or Python code. Every
``float`` field must also be finite unless it declares ``NON_FINITE_OK``. A violation is a one-line
``DomainError`` naming the key, the value and what is allowed (``lr=nan: must be a finite number > 0``);
``magnet.config_io`` prefixes the section (``optim.lr``) and the source. ``arg_type`` turns the same
domains into an ``argparse`` ``type=``, so command-line numbers are refused by the same rules.

Types are ``magnet.config_io``'s business; a value of the wrong kind fails here only as "must be an
integer ..." so that configs built in Python are covered too.
"""

from __future__ import annotations

import abc
import argparse
import dataclasses
import functools
import math
import types
import typing
from collections.abc import Callable, Sized
from dataclasses import dataclass
from typing import Annotated, Any, ClassVar, Literal, get_args, get_origin, get_type_hints

from magnet.errors import ConfigError

__all__ = [
    "FRACTION", "NON_EMPTY", "NON_FINITE_OK", "NON_NEGATIVE", "POSITIVE", "SEED", "Above", "AtLeast",
    "Domain", "DomainError", "Each", "Interval", "MultipleOf", "arg_type", "check_choices", "check_domains",
    "describe",
]


class Domain(abc.ABC):
    """A set of allowed values: ``allows(value)`` and ``text``, what is allowed in words ("> 0")."""

    @property
    @abc.abstractmethod
    def text(self) -> str: ...

    @abc.abstractmethod
    def allows(self, value: Any) -> bool: ...


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class AtLeast(Domain):
    """Numbers greater than or equal to ``low``."""

    low: float
    strict: ClassVar[bool] = False  # ``Above``: the bound itself is refused

    def allows(self, value: Any) -> bool:
        return _is_number(value) and (value > self.low if self.strict else value >= self.low)

    @property
    def text(self) -> str:
        return f"{'>' if self.strict else '>='} {_num(self.low)}"


@dataclass(frozen=True)
class Above(AtLeast):
    """Numbers strictly greater than ``low``."""

    strict: ClassVar[bool] = True


@dataclass(frozen=True)
class Interval(Domain):
    """Numbers between ``low`` and ``high``; each end is closed unless ``open_low`` / ``open_high``."""

    low: float
    high: float
    open_low: bool = False
    open_high: bool = False

    def allows(self, value: Any) -> bool:
        if not _is_number(value):
            return False
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    @property
    def text(self) -> str:
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{_num(self.low)}, {_num(self.high)}{right}"


@dataclass(frozen=True)
class MultipleOf(Domain):
    """Integers divisible by ``step`` (e.g. TIFF tile sides, multiples of 16)."""

    step: int

    def allows(self, value: Any) -> bool:
        return _is_number(value) and value % self.step == 0

    @property
    def text(self) -> str:
        return f"a multiple of {self.step}"


@dataclass(frozen=True)
class Each(Domain):
    """Sequences whose every item lies in ``item``."""

    item: Domain

    def allows(self, value: Any) -> bool:
        return isinstance(value, (list, tuple)) and all(self.item.allows(v) for v in value)

    @property
    def text(self) -> str:
        return f"every item {self.item.text}"


@dataclass(frozen=True)
class _NonEmpty(Domain):
    def allows(self, value: Any) -> bool:
        return isinstance(value, Sized) and len(value) > 0

    @property
    def text(self) -> str:
        return "with at least one item"


@dataclass(frozen=True)
class _Finite(Domain):
    def allows(self, value: Any) -> bool:
        return _is_number(value) and math.isfinite(value)

    @property
    def text(self) -> str:
        return "finite"


@dataclass(frozen=True)
class _NonFiniteOk(Domain):
    """A marker: this float field may hold inf or nan (no field needs it today)."""

    def allows(self, value: Any) -> bool:
        return _is_number(value)

    @property
    def text(self) -> str:
        return ""


POSITIVE = Above(0)
NON_NEGATIVE = AtLeast(0)
FRACTION = Interval(0, 1)
SEED = Interval(0, 2**32 - 1)  # what numpy and Lightning accept (Lightning replaces others silently by 0)
NON_EMPTY = _NonEmpty()
NON_FINITE_OK = _NonFiniteOk()
_FINITE = _Finite()


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)


class DomainError(ConfigError):
    """A value outside its field's domain; ``key``, ``value`` and ``allowed`` for callers that re-word it."""

    def __init__(self, key: str, value: Any, allowed: str) -> None:
        self.key, self.value, self.allowed = key, value, allowed
        super().__init__(f"{key}={show(value)}: must be {allowed}")


def show(value: Any) -> str:
    """A value as the user wrote it: ``nan``, ``0``, ``[2, 0]``, ``'x'``."""
    if isinstance(value, tuple):
        value = list(value)
    return repr(value)


# --- the declared domains of a dataclass -------------------------------------------------------------


@dataclass(frozen=True)
class _Spec:
    base: Any  # int, float, tuple[int, ...]: the annotated type
    domains: tuple[Domain, ...]
    alternatives: bool  # the field's type also admits non-numbers (``int | str``): those skip the check


def describe(base: Any, domains: tuple[Domain, ...]) -> str:
    """What ``domains`` allow, in words: "a finite number > 0", "an integer >= 1"."""
    finite = any(isinstance(d, _Finite) for d in domains)
    if base is int:
        noun = "an integer"
    elif base is float:
        noun = "a finite number" if finite else "a number"
    elif get_origin(base) in (tuple, list):
        noun = "a list of integers" if int in get_args(base) else "a list of numbers"
    else:
        noun = "a value"
    words = [d.text for d in domains if d.text and not isinstance(d, _Finite)]
    return " ".join([noun, ", ".join(words)]) if words else noun


def _spec(hint: Any) -> _Spec | None:
    """The declared domains of one field's type hint (``None``: nothing to check)."""
    alternatives = False
    if get_origin(hint) in (typing.Union, types.UnionType):
        members = [a for a in get_args(hint) if a is not type(None)]
        numeric = [a for a in members if _base(a) in (int, float) or get_origin(a) is Annotated]
        alternatives = len(members) > len(numeric)
        if len(numeric) != 1:
            return None
        hint = numeric[0]
    base: Any = hint
    declared: tuple[Domain, ...] = ()
    if get_origin(hint) is Annotated:
        base, *extras = get_args(hint)
        declared = tuple(d for d in extras if isinstance(d, Domain))
    if base is float and not any(isinstance(d, _NonFiniteOk) for d in declared):
        declared = (_FINITE, *declared)
    if not declared:
        return None
    return _Spec(base, declared, alternatives)


def _base(hint: Any) -> Any:
    return get_args(hint)[0] if get_origin(hint) is Annotated else hint


@functools.cache  # type hints are resolved once per config class, not per instance
def _specs(cls: type) -> dict[str, _Spec]:
    hints = typing.get_type_hints(cls, include_extras=True)
    found = {f.name: _spec(hints[f.name]) for f in dataclasses.fields(cls)}
    return {name: spec for name, spec in found.items() if spec is not None}


def _fits_kind(value: Any, base: Any) -> bool:
    if base is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if base is float:
        return _is_number(value)
    return True


def check_domains(config: object) -> None:
    """Refuse the first field of dataclass ``config`` outside its declared domain (``DomainError``)."""
    cls: Any = type(config)  # a class is hashable, which mypy cannot see through ``type[object]``
    for name, spec in _specs(cls).items():
        value = getattr(config, name)
        if value is None:
            continue
        if spec.alternatives and not _is_number(value):
            continue
        if not (_fits_kind(value, spec.base) and all(d.allows(value) for d in spec.domains)):
            raise DomainError(name, value, describe(spec.base, spec.domains))


def check_choices(config: object) -> None:
    """Every ``Literal``-typed field of dataclass ``config`` holds one of its values (a one-line
    ``ConfigError`` naming the key): for configs built in Python, which the YAML loader does not see."""
    for name, hint in get_type_hints(type(config)).items():
        if get_origin(hint) is Literal and getattr(config, name) not in get_args(hint):
            raise ConfigError(f"{name}={getattr(config, name)!r}: must be one of {', '.join(get_args(hint))}")


# --- the command line ---------------------------------------------------------------------------------


def arg_type(base: type[int] | type[float], *domains: Domain) -> Callable[[str], Any]:
    """An ``argparse`` ``type=`` that parses ``base`` and refuses values outside ``domains``.

    Floats must be finite. argparse reports the refusal as its usual one-line error naming the option.
    """
    declared = (_FINITE, *domains) if base is float else domains
    allowed = describe(base, declared)

    def parse(text: str) -> Any:
        try:
            value = base(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}") from None
        if not all(d.allows(value) for d in declared):
            raise argparse.ArgumentTypeError(f"must be {allowed}, got {text!r}")
        return value

    parse.__name__ = base.__name__  # argparse names the type in some messages
    return parse
