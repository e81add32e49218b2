"""Every JSON the package writes is strict JSON: a NaN or an infinity is written as ``null``.

Python's ``json`` writes ``NaN`` and ``Infinity`` by default, which is not JSON: strict readers (browsers'
``JSON.parse``, ``jq``, most other languages) reject the whole file. JSON's own word for "no number" is
``null``, and that is what a non-finite number means in our outputs: an AUROC that is undefined (one class
only), the probability of a slide that failed. So ``dumps`` writes every non-finite float as ``null`` and
then serialises with ``allow_nan=False`` (nothing non-finite can slip through another path). Where a
non-finite number says something went wrong, its producer records why next to it (a slide prediction's
``error``); this module does not guess reasons.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

__all__ = ["dumps", "finite_or_none"]


def finite_or_none(value: Any) -> Any:
    """``value`` with every non-finite float (numpy floats included) replaced by ``None``, recursively."""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, Mapping):
        return {key: finite_or_none(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_or_none(item) for item in value]
    return value


def dumps(value: Any, **options: Any) -> str:
    """``json.dumps(value, **options)``, strict: non-finite numbers become ``null`` (see the module doc)."""
    return json.dumps(finite_or_none(value), allow_nan=False, **options)
