"""Validation helpers for the dataclass configs of prompters, heads and backbones.

A config's ``__post_init__`` calls these; each failure is a :class:`ConfigError` that names the
config and the field, so ``lorsp train --prompter lorsp --factors 0`` prints one clear line.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from typing import Any

from lorsp_neuro.errors import LorspError


class ConfigError(LorspError, ValueError):
    """A config field has a value outside its domain (also a ``ValueError``, as PEFT's are)."""


def _where(config: Any, field: str) -> str:
    return f"{type(config).__qualname__}.{field}"


def require_int(config: Any, field: str, minimum: int = 1) -> None:
    """Reject a non-integer or an integer below ``minimum``."""
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{_where(config, field)} must be an integer >= {minimum}, got {value!r}")


def require_float(
    config: Any, field: str, *, positive: bool = False, nonnegative: bool = False
) -> None:
    """Reject a non-number, NaN or infinity, and (optionally) a value <= 0 or < 0."""
    value = getattr(config, field)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{_where(config, field)} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ConfigError(f"{_where(config, field)} must be > 0, got {value!r}")
    if nonnegative and value < 0:
        raise ConfigError(f"{_where(config, field)} must be >= 0, got {value!r}")


def require_choice(config: Any, field: str, choices: Iterable[str]) -> None:
    """Reject a value that is not one of ``choices``."""
    value = getattr(config, field)
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{_where(config, field)} must be one of {choices}, got {value!r}")


def require_band(config: Any, field: str, *, optional: bool = False) -> None:
    """Reject a firing-rate band that is not ``(low, high)`` with ``0 <= low <= high <= 1``."""
    value = getattr(config, field)
    if value is None and optional:
        return
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"{_where(config, field)} must be a pair (low, high) of rates, got {value!r}"
        ) from None
    if not 0.0 <= low <= high <= 1.0:
        raise ConfigError(
            f"{_where(config, field)} must satisfy 0 <= low <= high <= 1, got {value!r}"
        )
    object.__setattr__(config, field, (low, high))


def build_config(config_cls: type, owner: str, fields: dict[str, Any]):
    """Instantiate ``config_cls(**fields)``, naming ``owner`` and the known fields on a typo."""
    known = {f.name for f in dataclasses.fields(config_cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise ConfigError(
            f"{owner}: unknown config field(s) {unknown}; known fields: {sorted(known)}"
        )
    return config_cls(**fields)
