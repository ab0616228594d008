"""CIFAR-10 / CIFAR-100 as in-memory uint8 tensors.

Sources for CIFAR-10, tried in this order inside each candidate root:
  1. the JPEG re-encoded copy (``train_jpeg.npz`` / ``test_jpeg.npz``): decoded once with Pillow and cached
     as ``.npy`` under ``fames.io.cache_dir()/data/`` (keyed by the npz file's content);
  2. the standard python-pickle batches (``cifar-10-batches-py/`` or the batch files themselves);
  3. with ``download=True``: torchvision downloads the pickle batches (torchvision is optional).
Candidate roots: ``root=``, else ``$FAMES_DATA/cifar10``, ``$FAMES_DATA``, ``../shared/data/cifar10``.
"""

from __future__ import annotations

import hashlib
import io
import os
import pickle
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fames.data.memory import Augment, InMemoryImageDataset
from fames.data.registry import DatasetError, DatasetNotFoundError, default_roots, register_dataset
from fames.io import atomic_write_bytes, cache_dir, content_hash, read_checked_json, write_checked_json

__all__ = ["CIFAR10_CLASSES", "decode_jpeg_npz", "load_cifar_arrays"]

CIFAR10_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_MEMO: dict[tuple, tuple[torch.Tensor, torch.Tensor, str, list[str] | None]] = {}


def decode_jpeg_npz(path: str | Path, progress: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Decode a JPEG npz (``data``, ``offsets``, ``y``) to ``(uint8 (N, H, W, 3), int64 (N,))``."""
    from PIL import Image

    with np.load(path) as z:
        data, offsets, y = z["data"], z["offsets"], z["y"].astype(np.int64)
    n = len(offsets) - 1
    it: Any = range(n)
    if progress:
        from tqdm import tqdm

        it = tqdm(it, desc=f"decoding {Path(path).name}", unit="img", leave=False, mininterval=1.0)
    first = np.asarray(Image.open(io.BytesIO(data[offsets[0]:offsets[1]].tobytes())).convert("RGB"))
    out = np.empty((n, *first.shape), dtype=np.uint8)
    for i in it:
        img = Image.open(io.BytesIO(data[offsets[i]:offsets[i + 1]].tobytes())).convert("RGB")
        a = np.asarray(img)
        if a.shape != first.shape:
            raise DatasetError(f"{path}: image {i} has shape {a.shape}, expected {first.shape}")
        out[i] = a
    return out, y


def _jpeg_cached(path: Path) -> np.ndarray:
    key = content_hash(path.read_bytes())  # by content: a copy provisioned anew (new mtime) reuses its decode
    cache = cache_dir() / "data" / f"{path.stem}-{key}.npy"
    check = cache.with_suffix(".json")  # the decoded array's SHA-256: a changed pixel is not trusted
    if cache.is_file():
        data = cache.read_bytes()
        if (read_checked_json(check) or {}).get("sha256") == hashlib.sha256(data).hexdigest():
            return np.load(io.BytesIO(data))
        warnings.warn(f"decoded-image cache {cache} does not match its checksum (damaged, edited or older): "
                      "decoding again", stacklevel=3)
    x, _ = decode_jpeg_npz(path)
    buf = io.BytesIO()
    np.save(buf, x)
    atomic_write_bytes(cache, buf.getvalue())
    write_checked_json(check, {"sha256": hashlib.sha256(buf.getvalue()).hexdigest()})
    return x


def _unpickle(path: Path) -> dict:
    with open(path, "rb") as fh:
        return pickle.load(fh, encoding="bytes")


def _pickle_dir(root: Path, kind: str) -> Path | None:
    sub = "cifar-10-batches-py" if kind == "cifar10" else "cifar-100-python"
    marker = "test_batch" if kind == "cifar10" else "test"
    for d in (root / sub, root):
        if (d / marker).is_file():
            return d
    return None


def _pickle_files(kind: str, split: str) -> list[str]:
    if kind == "cifar10":
        return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    return [split]


def _read_pickles(d: Path, kind: str, split: str) -> tuple[np.ndarray, np.ndarray, list[str] | None]:
    if kind == "cifar10":
        label_key, names_file, names_key = b"labels", "batches.meta", b"label_names"
    else:
        label_key, names_file, names_key = b"fine_labels", "meta", b"fine_label_names"
    xs, ys = [], []
    for f in _pickle_files(kind, split):
        b = _unpickle(d / f)
        xs.append(np.asarray(b[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        ys.append(np.asarray(b[label_key], dtype=np.int64))
    names = None
    if (d / names_file).is_file():
        names = [n.decode() for n in _unpickle(d / names_file)[names_key]]
    return np.concatenate(xs), np.concatenate(ys), names


def _download(kind: str, root: Path) -> None:
    try:
        import torchvision  # noqa: F401  (optional; only for this path)
        from torchvision import datasets
    except ImportError as e:
        url = ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" if kind == "cifar10"
               else "https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz")
        raise DatasetError(
            f"download=True needs torchvision, which is not installed. Download {url}, extract it and pass "
            f"its folder with --data-root (or set FAMES_DATA)"
        ) from e
    cls = datasets.CIFAR10 if kind == "cifar10" else datasets.CIFAR100
    root.mkdir(parents=True, exist_ok=True)
    for train in (True, False):
        cls(str(root), train=train, download=True)


def load_cifar_arrays(
    kind: str, split: str, root: str | Path | None = None, download: bool = False
) -> tuple[torch.Tensor, torch.Tensor, str, list[str] | None]:
    """``(images uint8 (N, 3, 32, 32), labels (N,), source description, class names or None)``."""
    if root is not None:
        candidates = [Path(root)]
        if not Path(root).exists() and not download:
            raise DatasetNotFoundError(
                f"{kind} root {root} does not exist; pass an existing folder with --data-root (holding "
                f"{split}_jpeg.npz or the python pickle batches), or get_dataset(..., download=True) in Python"
            )
    else:
        candidates = default_roots(kind)
    for r in candidates:
        if kind == "cifar10" and (r / f"{split}_jpeg.npz").is_file():
            f = (r / f"{split}_jpeg.npz").resolve()
            st = f.stat()
            memo = ("jpeg", str(f), st.st_size, st.st_mtime_ns)
            if memo not in _MEMO:
                x = torch.from_numpy(_jpeg_cached(f)).permute(0, 3, 1, 2).contiguous()
                with np.load(f) as z:
                    y = torch.from_numpy(z["y"].astype(np.int64))
                _MEMO[memo] = (x, y, f"jpeg:{f}", None)
            return _MEMO[memo]
        d = _pickle_dir(r, kind)
        if d is not None:
            files = _pickle_files(kind, split)
            for f in files:
                if not (d / f).is_file():
                    raise DatasetNotFoundError(f"{d / f} is missing: the {kind} pickle batches in {d} are incomplete")
            stats = tuple((f, (d / f).stat().st_size, (d / f).stat().st_mtime_ns) for f in files)
            memo = ("pickle", kind, str(d.resolve()), split, stats)
            if memo not in _MEMO:
                xa, ya, names = _read_pickles(d, kind, split)
                _MEMO[memo] = (torch.from_numpy(xa), torch.from_numpy(ya), f"pickle:{d}", names)
            return _MEMO[memo]
    if download:
        target = Path(root) if root is not None else (
            Path(os.environ["FAMES_DATA"]) / kind if os.environ.get("FAMES_DATA") else cache_dir() / "data" / kind)
        _download(kind, target)
        return load_cifar_arrays(kind, split, target, download=False)
    tried = ", ".join(str(c) for c in candidates)
    want = f"{split}_jpeg.npz or cifar-10-batches-py/" if kind == "cifar10" else "cifar-100-python/"
    raise DatasetNotFoundError(
        f"{kind} {split} data not found (looked for {want} in: {tried}). Fix: pass --data-root DIR (root=), "
        f"set FAMES_DATA, or get_dataset(..., download=True) in Python (needs torchvision and internet)"
    )


_CIFAR_AUG = Augment(pad=4, flip=True)


@register_dataset("cifar10")
def cifar10(
    split: str, root: str | Path | None = None, augment: bool = False, download: bool = False, **_: Any
) -> InMemoryImageDataset:
    """CIFAR-10 ``(3, 32, 32)`` float32 in [0, 1]; augmentation: random crop 32 pad 4 + horizontal flip."""
    x, y, src, names = load_cifar_arrays("cifar10", split, root, download)
    return InMemoryImageDataset(x, y, 1.0 / 255.0, _CIFAR_AUG if augment else None, names or CIFAR10_CLASSES,
                                name="cifar10", split=split, source=src)


@register_dataset("cifar100")
def cifar100(
    split: str, root: str | Path | None = None, augment: bool = False, download: bool = False, **_: Any
) -> InMemoryImageDataset:
    """CIFAR-100 (fine labels) from the python pickle files; same format and augmentation as CIFAR-10."""
    x, y, src, names = load_cifar_arrays("cifar100", split, root, download)
    return InMemoryImageDataset(x, y, 1.0 / 255.0, _CIFAR_AUG if augment else None,
                                names or [str(i) for i in range(100)], name="cifar100", split=split, source=src)
