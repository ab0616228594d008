"""Resumable stage results, each named by a content key of everything it depends on.

A stage file is written atomically, with a checksum (JSON ones inside, binary ones in a header); a file that cannot
be read or does not match its checksum (truncated, edited) is recomputed with a one-line warning, never trusted.
``Stages(None)`` computes everything and keeps nothing.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fames.io import atomic_write_bytes, npz_bytes, read_checked_json, write_checked_json

_MAGIC = b"fames-stage-1\n"  # binary stage files: this, the SHA-256 of the payload, the payload (npz or torch)


class Stages:
    """Stage files ``<root>/<name>-<key>.<ext>``; ``root=None`` disables caching."""

    def __init__(self, root: str | Path | None) -> None:
        self.root = None if root is None else Path(root)
        if self.root is not None:
            self.root.mkdir(parents=True, exist_ok=True)

    def path(self, name: str, key: str, ext: str) -> Path | None:
        return None if self.root is None else self.root / f"{name}-{key}.{ext}"

    def _load(self, p: Path | None, read: Callable[[io.BytesIO], Any]) -> Any:
        """What ``read`` makes of the stage file's payload, or None: absent, or (with a warning) damaged, edited or
        written without a checksum."""
        if p is None or not p.is_file():
            return None
        try:
            data = p.read_bytes()
            payload = data[len(_MAGIC) + 32:]
            if data[:len(_MAGIC)] != _MAGIC or hashlib.sha256(payload).digest() != data[len(_MAGIC):len(_MAGIC) + 32]:
                raise ValueError("checksum")
            return read(io.BytesIO(payload))
        except Exception as e:  # noqa: BLE001 - any unreadable stage file is recomputed
            why = "edited, damaged or of an older fames" if str(e) == "checksum" else f"unreadable, {type(e).__name__}"
            warnings.warn(f"stage file {p} does not match its checksum or cannot be read ({why}); recomputing it",
                          stacklevel=3)
            return None

    @staticmethod
    def _write(p: Path, payload: bytes) -> None:
        atomic_write_bytes(p, _MAGIC + hashlib.sha256(payload).digest() + payload)

    def load_json(self, name: str, key: str) -> Any:
        """The stored JSON value of stage ``name`` under ``key``, or None (absent, damaged or edited)."""
        p = self.path(name, key, "json")
        return None if p is None else read_checked_json(p)

    def save_json(self, name: str, key: str, val: Any) -> None:
        p = self.path(name, key, "json")
        if p is not None:
            write_checked_json(p, val)

    def json(self, name: str, key: str, fn: Callable[[], Any]) -> Any:
        """The JSON value of stage ``name`` under ``key``, computed by ``fn`` when absent."""
        val = self.load_json(name, key)
        if val is None:
            val = fn()
            self.save_json(name, key, val)
        return val

    def arrays(self, name: str, key: str, fn: Callable[[], dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
        """A dict of arrays (npz) of stage ``name`` under ``key``, computed by ``fn`` when absent."""
        p = self.path(name, key, "npz")

        def read(f: io.BytesIO) -> dict[str, np.ndarray]:
            with np.load(f) as z:
                return {k: z[k] for k in z.files}

        val = self._load(p, read)
        if val is None:
            val = fn()
            if p is not None:
                self._write(p, npz_bytes(val))
        return val

    def tensors(self, name: str, key: str) -> dict[str, torch.Tensor] | None:
        """A saved state dict of stage ``name`` under ``key``, or None."""
        return self._load(self.path(name, key, "pt"), lambda f: torch.load(f, map_location="cpu", weights_only=True))

    def save_tensors(self, name: str, key: str, state: dict[str, torch.Tensor]) -> None:
        p = self.path(name, key, "pt")
        if p is not None:
            buf = io.BytesIO()
            torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
            self._write(p, buf.getvalue())
