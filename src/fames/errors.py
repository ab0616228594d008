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
