"""Ray, the optional scale-out engine (``pip install 'fames[ray]'``): import it and connect, with a clear error.

``address``: ``"local"`` (a private Ray instance in this process), ``"auto"`` (the cluster a ``ray start --head`` on
this machine runs), or ``host:port`` / ``ray://host:port``. A host:port nobody answers on is refused after a short
TCP probe instead of letting ``ray.init`` retry for minutes.
"""

from __future__ import annotations

import socket
from typing import Any

from fames.errors import FamesError

PROBE_TIMEOUT_S = 5.0


def connect_ray(address: str, option: str = "--ray") -> Any:
    """The ``ray`` module, initialised for ``address`` (see the module docstring) unless it already is.

    Raises :class:`FamesError` naming ``option`` when Ray is not installed, the address is malformed, nothing
    answers there, or ``ray.init`` fails."""
    try:
        import ray
    except ImportError as e:
        raise FamesError(f"{option} needs Ray: pip install 'fames[ray]' (or pip install 'ray>=2')") from e
    if ray.is_initialized():
        return ray
    if address not in ("local", "auto"):
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if not host or not port.isdigit():
            raise FamesError(f"{option} {address!r}: give 'auto', 'local' or host:port (e.g. 10.0.0.5:6379)")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=PROBE_TIMEOUT_S).close()
        except OSError as e:
            raise FamesError(f"{option} {address}: no Ray cluster answers there ({e.strerror or e}); start one with "
                             "`ray start --head` and pass the address it prints, or 'auto' / 'local'") from None
    try:
        ray.init(address=None if address == "local" else address, include_dashboard=False, log_to_driver=False)
    except (ConnectionError, RuntimeError, ValueError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise FamesError(f"{option} {address}: cannot connect to Ray ({first}); start a cluster with `ray start "
                         "--head`, or pass 'local' for a private instance") from None
    return ray
