"""In-memory image datasets with batched (vectorized) augmentation, and a fast batch loader.

Images live as one ``uint8`` tensor ``(N, C, H, W)`` plus a scale (1/255, or 1/16 for digits); a batch is a
single gather + one float conversion, and random-crop/flip augmentation is done for the whole batch at once
with tensor indexing, so a CIFAR epoch is not limited by Python per-sample transforms.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from fames.errors import FamesError
from fames.io import content_hash

__all__ = ["Augment", "BatchLoader", "InMemoryImageDataset", "random_crop_flip", "stratified_indices"]


@dataclass(frozen=True)
class Augment:
    """Training augmentation: random crop of the original size after zero padding by ``pad``, optional h-flip."""

    pad: int = 4
    flip: bool = True

    @property
    def active(self) -> bool:
        return self.pad > 0 or self.flip


def random_crop_flip(
    x: torch.Tensor, pad: int, flip: bool, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Batched random crop (zero padding ``pad``) and horizontal flip of ``x`` ``(B, C, H, W)``, any dtype.

    Each image gets its own offsets and flip decision; done as one advanced-indexing gather.
    """
    b, c, h, w = x.shape
    if pad <= 0 and not flip:
        return x
    xp = F.pad(x, (pad, pad, pad, pad)) if pad > 0 else x
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=generator)
    rows = oy[:, None] + torch.arange(h)  # (B, H)
    cols = ox[:, None] + torch.arange(w)  # (B, W)
    if flip:
        f = torch.rand(b, generator=generator) < 0.5
        cols = torch.where(f[:, None], cols.flip(1), cols)
    bi = torch.arange(b)[:, None, None, None]
    ci = torch.arange(c)[None, :, None, None]
    return xp[bi, ci, rows[:, None, :, None], cols[:, None, None, :]]


class InMemoryImageDataset(Dataset):
    """Images ``(N, C, H, W)`` (uint8 or float) and labels ``(N,)``; items are float32 ``(C, H, W)`` in [0, 1].

    ``images * scale`` gives the [0, 1] values. ``augment`` (an :class:`Augment` or None) is applied per item in
    ``__getitem__`` and per batch in :meth:`get_batch` (used by :class:`BatchLoader`).
    """

    def __init__(
        self,
        images: torch.Tensor | np.ndarray,
        labels: torch.Tensor | np.ndarray | Sequence[int],
        scale: float = 1.0 / 255.0,
        augment: Augment | None = None,
        classes: Sequence[str] | None = None,
        name: str = "",
        split: str = "",
        source: str = "",
    ) -> None:
        self.images = torch.as_tensor(images)
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.long)
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise FamesError(f"images must be (N, C, H, W) with N == len(labels); got {tuple(self.images.shape)} "
                             f"and {len(self.labels)} labels")
        self.scale = float(scale)
        inv = 1.0 / self.scale if self.scale else 0.0
        self._div = round(inv) if inv and abs(inv - round(inv)) < 1e-9 else None  # x / 255 like ToTensor
        self.augment = augment if (augment is not None and augment.active) else None
        n_cls = int(self.labels.max()) + 1 if len(self.labels) else 0
        self.classes = list(classes) if classes is not None else [str(i) for i in range(n_cls)]
        self.name, self.split, self.source = name, split, source
        self._hash: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def __len__(self) -> int:
        return len(self.labels)

    def _to_float(self, x: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        if self._div is not None:
            return x.div_(self._div) if self._div != 1 else x
        return x.mul_(self.scale)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = self.images[i]
        if self.augment is not None:
            x = random_crop_flip(x[None], self.augment.pad, self.augment.flip)[0]
        return self._to_float(x), int(self.labels[i])

    def get_batch(
        self, index: torch.Tensor, generator: torch.Generator | None = None, augment: bool | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``(B, C, H, W)`` float32 in [0, 1] and labels ``(B,)`` for ``index``; batched augmentation."""
        x = self.images[index]
        aug = self.augment if augment is None or augment else None
        if aug is not None:
            x = random_crop_flip(x, aug.pad, aug.flip, generator)
        return self._to_float(x), self.labels[index]

    def subset(self, index: Sequence[int] | torch.Tensor | np.ndarray) -> InMemoryImageDataset:
        """A new dataset with the selected items (same scale, augmentation and class names)."""
        idx = torch.as_tensor(np.asarray(index), dtype=torch.long)
        return InMemoryImageDataset(self.images[idx], self.labels[idx], self.scale, self.augment, self.classes,
                                    self.name, self.split, self.source)

    def with_augment(self, augment: Augment | None) -> InMemoryImageDataset:
        """The same data (shared storage) with another augmentation setting."""
        d = InMemoryImageDataset(self.images, self.labels, self.scale, augment, self.classes, self.name,
                                 self.split, self.source)
        d._hash = self._hash
        return d

    def tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """All images ``(N, C, H, W)`` as float32 in [0, 1] (no augmentation) and labels ``(N,)``."""
        return self._to_float(self.images), self.labels

    def content_hash(self) -> str:
        """Short SHA-256 of the pixels, shape, scale and labels (augmentation not included)."""
        if self._hash is None:
            imgs = self.images.contiguous().numpy()
            self._hash = content_hash(str(tuple(imgs.shape)), str(imgs.dtype), repr(self.scale),
                                      imgs.tobytes(), self.labels.numpy().astype("<i8").tobytes())
        return self._hash

    def __repr__(self) -> str:
        return (f"InMemoryImageDataset(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"shape={self.input_shape}, classes={self.num_classes}, augment={self.augment})")


class BatchLoader:
    """Iterates ``(x (B, C, H, W) float32 in [0, 1], y (B,))`` over an :class:`InMemoryImageDataset`.

    Deterministic: with ``shuffle=False`` the order is the dataset order; otherwise a permutation drawn from
    a generator seeded with ``seed`` (each epoch draws a new one from the same stream).
    """

    def __init__(
        self,
        dataset: InMemoryImageDataset,
        batch_size: int = 128,
        shuffle: bool = False,
        drop_last: bool = False,
        seed: int = 0,
        channels_last: bool = False,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self.dataset = dataset
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.channels_last = channels_last
        self.generator = torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        for k in range(len(self)):
            x, y = self.dataset.get_batch(order[k * self.batch_size:(k + 1) * self.batch_size], self.generator)
            if self.channels_last and x.dim() == 4:
                x = x.contiguous(memory_format=torch.channels_last)
            yield x, y


def stratified_indices(labels: Sequence[int] | np.ndarray | torch.Tensor, n: int) -> np.ndarray:
    """``n`` indices with (nearly) equal counts per class, evenly spaced within each class, sorted.

    Deterministic; useful because some sources (e.g. the JPEG CIFAR-10) are stored class-major.
    """
    y = np.asarray(labels)
    classes = np.unique(y)
    per = [n // len(classes) + (1 if i < n % len(classes) else 0) for i in range(len(classes))]
    out = []
    for c, k in zip(classes, per, strict=True):
        idx = np.flatnonzero(y == c)
        if k > len(idx):
            raise FamesError(f"class {c} has {len(idx)} items, fewer than the {k} a class-stratified subset of {n} "
                             "needs; ask for fewer images")
        out.append(idx[np.floor(np.arange(k) * len(idx) / max(k, 1)).astype(int)])
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=int)
