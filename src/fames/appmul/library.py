"""A library of AppMuls on disk: ``index.json`` + ``luts.npz`` + ``verilog/<top>.v``.

``index.json`` holds ``{"format": "fames-appmul-library", "version": 1, "appmuls": [entry, ...]}`` where each
entry has ``name, a_bits, w_bits, a_signed, w_signed, top, structural, verilog (relative path or null), cost,
provenance``. ``luts.npz`` holds one int32 array per name. Saving is atomic: a failure leaves any previous
library untouched and never a half-written directory.
"""

from __future__ import annotations

import json
import shutil
import warnings
import zipfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from fames.appmul.core import AppMul, Cost
from fames.errors import AppMulError, ArgumentTypeError, FamesError, check_fields, expect
from fames.io import COMPLETE, atomic_directory, check_replaceable, npz_bytes, read_json, repair_directory

FORMAT = "fames-appmul-library"
VERSION = 1
_OWN_FILES = {"index.json", "luts.npz", "verilog", COMPLETE}  # what save writes; other files of a library stay


class Library:
    """An ordered collection of uniquely named AppMuls."""

    def __init__(self, appmuls: Iterable[AppMul] = ()) -> None:
        self._items: dict[str, AppMul] = {}
        if isinstance(appmuls, (str, bytes)) or not hasattr(appmuls, "__iter__"):
            raise ArgumentTypeError(f"Library(appmuls): give an iterable of AppMuls, not {type(appmuls).__name__}; "
                                    "load a folder with Library.load(path)")
        for m in appmuls:
            expect(m, AppMul, "Library: every item")
            self.add(m)

    def add(self, m: AppMul) -> None:
        if m.name in self._items:
            raise AppMulError(f"duplicate AppMul name {m.name!r}: names in a library must be unique")
        self._items[m.name] = m

    def replace(self, m: AppMul) -> None:
        """Put ``m`` in place of the AppMul of the same name (at its position), or add it."""
        expect(m, AppMul, "Library.replace")
        self._items[m.name] = m

    def remove(self, name: str) -> AppMul:
        """Take the AppMul ``name`` out of the library and return it."""
        return self._items.pop(name)

    def extend(self, ms: Iterable[AppMul]) -> None:
        for m in ms:
            self.add(m)

    def __iter__(self) -> Iterator[AppMul]:
        return iter(self._items.values())

    def __len__(self) -> int:
        return len(self._items)

    def __getitem__(self, name: str) -> AppMul:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"no AppMul named {name!r} in the library ({len(self)} entries)") from None

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def get(self, name: str, default: AppMul | None = None) -> AppMul | None:
        """The AppMul named ``name``, or ``default`` when the library has none of that name."""
        return self._items.get(name, default)

    @property
    def names(self) -> list[str]:
        return list(self._items)

    def select(self, a_bits: int, w_bits: int, a_signed: bool, w_signed: bool) -> list[AppMul]:
        """AppMuls whose widths and signedness equal the given ones."""
        key = (a_bits, w_bits, a_signed, w_signed)
        return [m for m in self if m.widths == key]

    # ------------------------------------------------------------------ disk
    def save(self, path: str | Path, force: bool = False) -> Path:
        """Write the library directory atomically; returns its path. An existing ``path`` is replaced only if it
        is a fames library (``force`` replaces anything); the files such a library holds besides the library itself
        (a synthesis' ``front-*.json``, your notes) are kept."""
        path = Path(path)
        entries = []
        tops: dict[str, str] = {}
        for m in self:
            vfile = None
            if m.verilog is not None:
                if m.top in tops:
                    raise AppMulError(
                        f"AppMuls {tops[m.top]!r} and {m.name!r} share the Verilog module name {m.top!r}; "
                        "rename one of them"
                    )
                tops[m.top] = m.name
                vfile = f"verilog/{m.top}.v"
            entries.append(
                {
                    "name": m.name,
                    "a_bits": int(m.a_bits),
                    "w_bits": int(m.w_bits),
                    "a_signed": bool(m.a_signed),
                    "w_signed": bool(m.w_signed),
                    "top": m.top,
                    "structural": bool(m.structural),
                    "verilog": vfile,
                    "cost": m.cost.to_dict() if m.cost is not None else None,
                    "provenance": m.provenance,
                }
            )
        with atomic_directory(path, is_library, force, kind="library") as tmp:
            (tmp / "verilog").mkdir()
            for m, e in zip(self, entries, strict=True):
                if e["verilog"]:
                    (tmp / e["verilog"]).write_text(m.verilog)
            (tmp / "luts.npz").write_bytes(npz_bytes({m.name: m.lut.astype(np.int32) for m in self}, compress=True))
            index = {"format": FORMAT, "version": VERSION, "appmuls": entries}
            (tmp / "index.json").write_text(json.dumps(index, indent=1) + "\n")
            if is_library(path):
                for extra in path.iterdir():
                    if extra.name not in _OWN_FILES:
                        copy = shutil.copytree if extra.is_dir() else shutil.copy2
                        copy(extra, tmp / extra.name)
        return path

    @classmethod
    def load(cls, path: str | Path) -> Library:
        """Read and validate a library directory; errors name the file and the problem."""
        path = Path(path)
        repair_directory(path)
        index_file, lut_file = path / "index.json", path / "luts.npz"
        if not path.is_dir():
            raise AppMulError(
                f"{path} is not a library directory; build one with `fames lib build` or `fames lib import-evoapprox`"
            )
        for f in (index_file, lut_file):
            if not f.is_file():
                raise AppMulError(f"{f} is missing: a library directory holds index.json and luts.npz")
        index = read_json(index_file, AppMulError)
        if not isinstance(index, dict) or index.get("format") != FORMAT or "appmuls" not in index:
            raise AppMulError(f"{index_file}: not a fames AppMul library index (format {FORMAT!r} expected)")
        try:
            luts = np.load(lut_file, allow_pickle=False)
            lut_keys = set(luts.files)
        except (zipfile.BadZipFile, ValueError, OSError) as e:
            raise AppMulError(f"{lut_file}: cannot be read as a numpy .npz archive ({e})") from None
        lib = cls()
        required = ("name", "a_bits", "w_bits", "a_signed", "w_signed")
        for k, e in enumerate(index["appmuls"]):
            missing = [r for r in required if r not in e]
            if missing:
                raise AppMulError(f"{index_file}: entry #{k} lacks the keys {missing}")
            name = e["name"]
            if name not in lut_keys:
                raise AppMulError(f"{lut_file}: no LUT for AppMul {name!r} listed in index.json")
            verilog = None
            if e.get("verilog"):
                vf = path / e["verilog"]
                if not vf.resolve().is_relative_to(path.resolve()):
                    raise AppMulError(f"{index_file}: the Verilog of AppMul {name!r} is given as {e['verilog']!r}, "
                                      "outside the library folder; a library's Verilog is verilog/<top>.v")
                if not vf.is_file():
                    raise AppMulError(f"{vf}: Verilog of AppMul {name!r} is missing; restore it, or remove the "
                                      f"entry's \"verilog\" key from {index_file} to keep {name!r} as a table only "
                                      "(its cost then needs its Verilog again), or its whole entry to drop it")
                verilog = vf.read_text()
            try:
                m = _entry_appmul(e, name, luts[name], lut_file, verilog)
            except AppMulError as err:
                raise AppMulError(f"{index_file}: {err}") from None
            if name in lib:
                raise AppMulError(f"{index_file}: duplicate AppMul name {name!r}")
            lib.add(m)
        return lib


def _entry_appmul(e: dict, name: str, lut: np.ndarray, lut_file: Path, verilog: str | None) -> AppMul:
    """The AppMul of one index.json entry."""
    return AppMul(
        name=name,
        a_bits=e["a_bits"],
        w_bits=e["w_bits"],
        a_signed=e["a_signed"],
        w_signed=e["w_signed"],
        lut=_checked_lut(lut, name, lut_file),
        verilog=verilog,
        top=e.get("top"),
        structural=bool(e.get("structural", verilog is not None)),
        cost=_entry_cost(e["cost"], name) if e.get("cost") else None,
        provenance=e.get("provenance") or {},
    )


def _entry_cost(d: object, name: str) -> Cost:
    """The cost record of one index.json entry, every field checked (a hand-edited ``"area_um2": "12.5"`` crashed
    ``fames lib show``)."""
    if not isinstance(d, dict):
        raise AppMulError(f"the cost of AppMul {name!r} is {type(d).__name__}, not a mapping of its figures")
    try:
        cost = Cost.from_dict(d)
        check_fields(cost)
    except (TypeError, FamesError) as e:
        raise AppMulError(f"the cost of AppMul {name!r} does not read: {e}; correct it, or remove its \"cost\" key "
                          "and cost the library again (fames lib cost)") from None
    return cost


def _checked_lut(arr: np.ndarray, name: str, where: Path) -> np.ndarray:
    if not np.issubdtype(arr.dtype, np.integer):
        raise AppMulError(f"{where}: LUT of {name!r} has dtype {arr.dtype}; an integer type is required")
    return arr


def is_library(path: Path) -> bool:
    """Whether ``path`` is a library folder fames wrote (its index names our format)."""
    try:
        return path.is_dir() and json.loads((path / "index.json").read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


@contextmanager
def editing(path: str | Path, force: bool = False) -> Iterator[Library]:
    """The library at ``path`` (an empty one when there is none) to change in place, saved when the block ends
    without error. Other fames processes editing it meanwhile wait (a lock file ``.NAME.lock`` beside it), so two
    commands adding designs at once both keep theirs. ``force`` replaces a ``path`` that is not a fames library."""
    from filelock import FileLock, Timeout

    path = Path(path)
    if not force and (path / "luts.npz").is_file() and not is_library(path):  # a library, damaged: say so
        try:
            Library.load(path)
        except AppMulError as e:
            raise AppMulError(f"{e}; repair or restore it: --force would replace the whole folder, its designs "
                              "included") from None
    check_replaceable(path, is_library, force, "library")  # before any work, not at the save
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(path.parent / f".{path.name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        warnings.warn(f"library {path} is being changed by another fames process: waiting for it", stacklevel=3)
        lock.acquire()
    try:
        lib = Library.load(path) if is_library(path) else Library()
        yield lib
        lib.save(path, force=force)
    finally:
        lock.release()


def load_library(path: str | Path) -> Library:
    """Load a library directory (see :class:`Library`)."""
    return Library.load(path)
