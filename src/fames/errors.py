"""Exception types shared by every part of fames."""

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


def integer_fields(obj: object, *names: str) -> None:
    """Check that the fields ``names`` of the config ``obj`` hold integers (None allowed), converting numpy integers
    to ``int``; a float, bool or string is a :class:`ConfigError` naming the field (configs built in Python are not
    type-checked as YAML ones are)."""
    for name in names:
        v = getattr(obj, name)
        if v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise ConfigError(f"{type(obj).__name__}.{name} must be an integer, not {type(v).__name__} ({v!r:.40})")
        object.__setattr__(obj, name, int(v))


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
