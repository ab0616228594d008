"""Exception types shared by every part of fames."""

import dataclasses
import functools
import typing
from typing import Any

import numpy as np


class FamesError(Exception):
    """Base class of the errors fames raises for bad input; the message names the problem and the fix."""


class AppMulError(FamesError, ValueError):
    """An approximate multiplier (or a library of them) is malformed."""


class HardwareError(FamesError, RuntimeError):
    """Synthesis, liberty or costing failed."""


class ConfigError(FamesError, ValueError):
    """A configuration value is out of range or inconsistent (a ValueError, so that pydantic lists it beside the
    other problems of the same config)."""


class ArgumentTypeError(FamesError, TypeError):
    """A public function got an argument of the wrong type."""


def expect(value: object, types: type | tuple[type, ...], what: str) -> None:
    """Raise :class:`ArgumentTypeError` naming ``what``, the expected type(s) and the type given."""
    ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in (types if isinstance(types, tuple)
                                                                                       else (types,)))
    if not ok:
        names = " or ".join(t.__name__ for t in (types if isinstance(types, tuple) else (types,)))
        raise ArgumentTypeError(f"{what} must be {names}, not {type(value).__name__} ({value!r:.60})")


def check_all(*checks: tuple[bool, str]) -> None:
    """Raise one :class:`ConfigError` listing the message of every ``(failed, message)`` check that failed (a
    config's problems at once, not the first only)."""
    problems = [msg for failed, msg in checks if failed]
    if problems:
        raise ConfigError("; ".join(problems))


def check_fields(obj: object) -> None:
    """Check every field of the config dataclass ``obj`` against its annotation, as a YAML config is checked
    (pydantic in strict mode: types, ranges, no NaN where refused; a string is not a bool), numpy scalars converted
    to Python ones first; all problems in one :class:`ConfigError` (configs built in Python are not validated
    otherwise: ``margin=nan`` ended a search at R = 1, ``stop_at_loss="no"`` read as true)."""
    from pydantic import ValidationError

    problems = []
    for name, adapter in _field_adapters(type(obj)).items():
        v = getattr(obj, name)
        if isinstance(v, (np.generic, tuple)):  # numpy scalars and tuples as the Python ones YAML gives
            v = v.item() if isinstance(v, np.generic) else list(v)
            object.__setattr__(obj, name, v)
        try:
            adapter.validate_python(v, strict=True)
        except ValidationError as e:
            problems += [f"{type(obj).__name__}.{name}={v!r:.40}: {err['msg']}" for err in e.errors()[:1]]
    if problems:
        raise ConfigError("; ".join(problems))


@functools.cache
def _field_adapters(cls: type) -> dict[str, Any]:
    from pydantic import TypeAdapter

    hints = typing.get_type_hints(cls, include_extras=True)
    return {f.name: TypeAdapter(hints[f.name]) for f in dataclasses.fields(cls)}


def expect_pair(batch: object, where: str) -> tuple[object, object]:
    """``(x, y)`` of a batch that is a tuple or list of at least two items; anything else (a dict of a
    Hugging Face-style loader, one tensor) is a :class:`FamesError` naming what came and how to adapt it."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2:
        return batch[0], batch[1]
    if isinstance(batch, dict):
        keys = list(batch)[:6]
        raise FamesError(f"{where}: batches are dicts (keys {keys}); fames takes (x, y) pairs: wrap the loader, "
                         f"e.g. ((b[{keys[0]!r}], b[{keys[-1]!r}]) for b in loader) with your input and label keys"
                         if keys else f"{where}: a batch is an empty dict; fames takes (x, y) pairs")
    raise FamesError(f"{where}: every batch must be an (x, y) pair, got {type(batch).__name__}")
