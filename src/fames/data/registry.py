"""Dataset registry: ``get_dataset(name, split)``, ``get_loader(...)``, ``dataset_hash(...)``."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from fames.data.memory import BatchLoader, InMemoryImageDataset
from fames.errors import FamesError

__all__ = [
    "DatasetError",
    "DatasetNotFoundError",
    "dataset_hash",
    "default_roots",
    "get_dataset",
    "get_loader",
    "list_datasets",
    "register_dataset",
]


class DatasetError(FamesError, ValueError):
    """Unknown dataset or split, or malformed dataset files."""


class DatasetNotFoundError(FamesError, FileNotFoundError):
    """The dataset's files are not where fames looked; the message names the paths and the fix."""


Builder = Callable[..., Dataset]
_DATASETS: dict[str, tuple[Builder, tuple[str, ...]]] = {}


def register_dataset(name: str, splits: tuple[str, ...] = ("train", "test")) -> Callable[[Builder], Builder]:
    """Decorator registering ``builder(split, root=None, augment=False, **kw) -> Dataset``."""

    def deco(fn: Builder) -> Builder:
        if name in _DATASETS:
            raise ValueError(f"dataset {name!r} registered twice")
        _DATASETS[name] = (fn, splits)
        return fn

    return deco


def list_datasets() -> list[str]:
    return sorted(_DATASETS)


def default_roots(name: str) -> list[Path]:
    """Where to look for dataset ``name`` when no root is given, in order.

    ``$FAMES_DATA/<name>``, ``$FAMES_DATA``, then ``../shared/data/<name>`` beside the repository and beside
    the working directory.
    """
    out: list[Path] = []
    env = os.environ.get("FAMES_DATA")
    if env:
        out += [Path(env) / name, Path(env)]
    repo = Path(__file__).resolve().parents[3]
    for base in (repo.parent, Path.cwd().parent, Path.cwd()):
        p = base / "shared" / "data" / name
        if p not in out:
            out.append(p)
    return out


def get_dataset(
    name: str, split: str, root: str | Path | None = None, augment: bool = False, **kw: Any
) -> Dataset:
    """Dataset ``name`` / ``split``; items are ``(float32 (C, H, W) in [0, 1], int label)``.

    ``augment=True`` enables the dataset's training augmentation (CIFAR: random crop 32 pad 4 + h-flip).
    Extra keywords go to the dataset builder (e.g. ``download=True`` for CIFAR-10). ``"name:PATH"`` (as
    ``imagefolder:PATH``) is ``name`` with ``root=PATH``.
    """
    if ":" in name and name.partition(":")[0] in _DATASETS:
        name, _, path = name.partition(":")
        if root is not None and Path(root) != Path(path):
            raise DatasetError(f"dataset {name}:{path} names its folder, and root= (--data-root) names another, "
                               f"{root}: give one")
        root = path
    if name not in _DATASETS:
        raise DatasetError(f"unknown dataset {name!r}; known datasets: {', '.join(list_datasets())}")
    fn, splits = _DATASETS[name]
    if splits and split not in splits:
        raise DatasetError(f"dataset {name!r} has no split {split!r}; choose one of {', '.join(splits)}")
    return fn(split, root=root, augment=augment, **kw)


def get_loader(
    name: str | Dataset,
    split: str = "test",
    batch_size: int = 128,
    *,
    root: str | Path | None = None,
    augment: bool = False,
    shuffle: bool | None = None,
    drop_last: bool = False,
    seed: int = 0,
    channels_last: bool = False,
    num_workers: int = 0,
    **kw: Any,
) -> BatchLoader | DataLoader:
    """Batches ``(x (B, C, H, W) float32 in [0, 1], y (B,))`` of a dataset (by name, or a Dataset object).

    ``shuffle`` defaults to True for the train split and False otherwise (evaluation order is the dataset
    order). In-memory datasets get the fast :class:`BatchLoader` (batched augmentation); others a seeded
    ``torch.utils.data.DataLoader``.
    """
    ds = get_dataset(name, split, root=root, augment=augment, **kw) if isinstance(name, str) else name
    if shuffle is None:
        shuffle = split == "train"
    if isinstance(ds, InMemoryImageDataset):
        return BatchLoader(ds, batch_size, shuffle=shuffle, drop_last=drop_last, seed=seed,
                           channels_last=channels_last)
    return DataLoader(ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
                      num_workers=num_workers, generator=torch.Generator().manual_seed(seed))


def dataset_hash(name: str, split: str, root: str | Path | None = None, **kw: Any) -> str:
    """Short content hash of the data of ``name`` / ``split`` (pixels and labels), for checkpoint manifests."""
    ds = get_dataset(name, split, root=root, augment=False, **kw)
    fn = getattr(ds, "content_hash", None)
    if fn is None:
        raise DatasetError(f"dataset {name!r} cannot compute a content hash")
    return fn()
