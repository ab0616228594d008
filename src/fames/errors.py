"""Exception types shared by every part of fames."""


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
