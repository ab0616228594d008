"""Atomic file and directory writes and content hashing."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import io
import json
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from fames.errors import FamesError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` so that readers see either the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # as an ordinary write would make it (mkstemp's file is private: 0600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


@functools.cache
def _umask() -> int:
    """The process's file-creation mask (read once: setting it is the only way to read it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def npz_bytes(arrays: dict[str, np.ndarray], compress: bool = False) -> bytes:
    """The bytes of an ``.npz`` file holding ``arrays`` (what ``np.load`` reads back). Unlike ``np.savez(**arrays)``,
    any name works, also ``file`` (a parameter name of ``np.savez``)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED) as zf:
        for name, arr in arrays.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, np.asanyarray(arr), allow_pickle=False)
    return buf.getvalue()


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def write_section(path: str | os.PathLike, mark: str, body: str) -> Path:
    """Write ``body`` as the section between two ``mark`` lines of the text file ``path`` (atomically): replaced
    when the file has that section, appended otherwise; the rest of the file is kept."""
    p = Path(path)
    text = p.read_text(encoding="utf-8") if p.is_file() else ""
    section = f"{mark}\n\n{body.strip()}\n\n{mark}"
    if text.count(mark) >= 2:
        head, _, rest = text.partition(mark)
        text = head + section + rest.partition(mark)[2]
    else:
        text = text.rstrip() + ("\n\n" if text.strip() else "") + section + "\n"
    return atomic_write_text(p, text)


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


COMPLETE = ".fames-complete"  # marker written into a scratch directory once all of it is there


@contextlib.contextmanager
def atomic_directory(
    path: str | os.PathLike,
    replaceable: Callable[[Path], bool] | None = None,
    force: bool = False,
    kind: str = "folder",
) -> Iterator[Path]:
    """Yield a scratch directory that replaces ``path`` only if the block finishes without error.

    A failure leaves any previous ``path`` untouched and no half-written directory behind; a crash between the two
    renames of the swap is repaired by :func:`repair_directory` on the next open. An existing ``path`` is replaced
    only when ``replaceable(path)`` says fames wrote it (a ``kind`` of the same kind), or with ``force``.
    """
    path = Path(path)
    check_replaceable(path, replaceable, force, kind)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # (mkdtemp's folder is private: 0700)
    try:
        yield tmp
        (tmp / COMPLETE).touch()
        if path.exists():
            old = path.with_name(f".{path.name}.old.{os.getpid()}")
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def check_replaceable(
    path: str | os.PathLike, replaceable: Callable[[Path], bool] | None = None, force: bool = False, kind: str = "file"
) -> None:
    """Raise unless ``path`` is absent, is a fames ``kind`` (``replaceable(path)``), or ``force`` is given (after
    repairing an interrupted directory swap at ``path``)."""
    path = Path(path)
    repair_directory(path)
    if path.exists() and not force and (replaceable is None or not replaceable(path)):
        what = "a file" if path.is_file() else "a folder"
        raise FamesError(f"{path} exists and is {what} that is not a fames {kind}: not replacing it; choose another "
                         "path, or pass --force (force=True) to replace it")


def repair_directory(path: str | os.PathLike) -> None:
    """Finish an interrupted :func:`atomic_directory` swap: a missing ``path`` gets back its newest complete
    scratch copy, else the previous version it was about to replace; scratch that killed writers left goes."""
    path = Path(path)
    if not path.parent.is_dir():
        return
    if not path.exists():
        done = [t for t in path.parent.glob(f".{path.name}.*.tmp") if (t / COMPLETE).is_file()]
        olds = list(path.parent.glob(f".{path.name}.old.*"))
        for cands in (done, olds):
            if cands:
                os.replace(max(cands, key=lambda p: p.stat().st_mtime_ns), path)
                break
    remove_stale_scratch(path.parent, f"{path.name}.")


STALE_SCRATCH_S = 600.0  # scratch of an atomic write untouched this long was left by a killed process


def remove_stale_scratch(folder: str | os.PathLike, prefix: str = "") -> None:
    """Remove the scratch files and folders of atomic writes into ``folder`` (``.<prefix>*.tmp``, ``.<prefix>*.old.*``)
    that a killed process left (untouched for :data:`STALE_SCRATCH_S`; a live writer's are younger)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    now = time.time()
    for p in [*folder.glob(f".{prefix}*.tmp"), *folder.glob(f".{prefix}*.old.*")]:
        try:
            if now - p.stat().st_mtime > STALE_SCRATCH_S:
                shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
        except OSError:  # gone meanwhile
            continue


def read_json(path: str | os.PathLike, error: type[Exception] = ValueError) -> Any:
    """Parse a JSON file; a missing file or invalid JSON raises ``error`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise error(f"{p} not found")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise error(f"{p}: not valid JSON ({e})") from None


def content_hash(*parts: bytes | str, length: int = 16) -> str:
    """Hex SHA-256 of the concatenated parts (strings UTF-8 encoded, each length-prefixed)."""
    h = hashlib.sha256()
    for p in parts:
        b = p.encode("utf-8") if isinstance(p, str) else bytes(p)
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()[:length]


def cache_dir() -> Path:
    """Root of fames' on-disk cache: ``$FAMES_CACHE`` (``~`` expanded) or ``~/.cache/fames`` (without a home folder,
    one under the system's temporary folder)."""
    home = os.path.expanduser("~")
    default = os.path.join(home, ".cache", "fames") if home != "~" else os.path.join(
        tempfile.gettempdir(), f"fames-cache-{os.getuid() if hasattr(os, 'getuid') else 0}")
    root = Path(os.path.expanduser(os.environ.get("FAMES_CACHE") or default))
    if root.exists() and not root.is_dir():
        raise FamesError(f"FAMES_CACHE={root} is a file: point it at a folder (created when missing) or unset it")
    return root


def _checksum(name: str, obj: Any) -> str:
    """SHA-256 of a file's name (in a cache, its key) and its data's JSON text."""
    return hashlib.sha256(f"{name}\n{json.dumps(obj, sort_keys=True)}".encode()).hexdigest()


def write_checked_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` atomically with the SHA-256 of its JSON text and of the file's name, so that an edited or
    damaged file, or one copied under another name (another cache key), is detected."""
    return atomic_write_json(path, {"sha256": _checksum(Path(path).name, obj), "data": obj, "v": 2})


def write_cache_json(path: str | os.PathLike, obj: Any) -> None:
    """:func:`write_checked_json` for an entry of the cache: one that cannot be written (a read-only cache) is not
    kept, with a warning naming ``$FAMES_CACHE``, and the work goes on."""
    try:
        write_checked_json(path, obj)
    except OSError as e:
        import warnings

        warnings.warn(f"cannot write to the fames cache {cache_dir()} ({e.strerror or e}): results are not cached; "
                      "make it writable or point FAMES_CACHE at a writable folder", stacklevel=3)


def read_checked_json(path: str | os.PathLike) -> Any:
    """The value :func:`write_checked_json` wrote, or None when the file is missing, unreadable or was changed
    since (a warning names the file; the caller recomputes)."""
    p = Path(path)
    if not p.is_file():
        return None
    try:
        d = json.loads(p.read_text(encoding="utf-8"))
        if isinstance(d, dict) and d.get("v") != 2 and "data" in d or isinstance(d, dict) and "sha256" not in d \
                and "data" not in d:
            return None  # written by an older fames (without a checksum, or one without the name): recomputed quietly
        ok = _checksum(p.name, d["data"]) == d["sha256"]
    except (OSError, ValueError, TypeError, KeyError):
        ok = False
    if not ok:
        import warnings

        warnings.warn(f"{p} is damaged or was edited; recomputing it", stacklevel=2)
        return None
    return d["data"]


def read_config_file(path: str | os.PathLike, what: str) -> Any:
    """The data of a YAML config file; a missing, non-text or malformed file, and a key given twice in one mapping
    (YAML itself keeps the last silently), are a :class:`FamesError` naming ``what``, the file and the line."""
    import yaml

    class _Strict(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=True)
            if not isinstance(key, (str, int, float)):
                continue  # merge keys, complex keys: left to YAML
            if key in seen:
                raise FamesError(f"{path}: {what} gives {key!r} twice (lines {seen[key] + 1} and "
                                 f"{key_node.start_mark.line + 1}); keep one")
            seen[key] = key_node.start_mark.line
        return loader.construct_mapping(node, deep=True)

    _Strict.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    p = Path(path)
    if not p.is_file():
        raise FamesError(f"{what} {p} not found")
    try:
        return yaml.load(p.read_text(encoding="utf-8-sig"), Loader=_Strict)  # noqa: S506 - a SafeLoader
    except yaml.YAMLError as e:
        raise FamesError(f"{p} is not valid YAML: {str(e).splitlines()[0]}") from None
    except UnicodeDecodeError:
        raise FamesError(f"{p} is not a text file; a {what} is YAML text") from None
