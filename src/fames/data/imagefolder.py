"""Any ImageFolder-style directory (``root/[split/]<class>/<image>``), read with Pillow (no torchvision)."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from fames.data.memory import Augment, InMemoryImageDataset, random_crop_flip
from fames.data.registry import DatasetError, DatasetNotFoundError, register_dataset
from fames.io import content_hash

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "find_images"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def find_images(root: Path) -> tuple[list[tuple[Path, int]], list[str]]:
    """``([(file, class_index), ...], class_names)``; classes are the sorted subfolder names."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    items = []
    for ci, c in enumerate(classes):
        for f in sorted((root / c).rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                items.append((f, ci))
    return items, classes


class ImageFolderDataset(Dataset):
    """Images decoded per item to float32 ``(C, H, W)`` in [0, 1] (RGB, or L for ``channels=1``).

    ``image_size=(H, W)`` resizes (bilinear); otherwise images keep their size, and a folder of mixed sizes is
    brought to the first image's (with a warning). ``augment`` applies random crop
    (zero padding) + horizontal flip per item.
    """

    def __init__(
        self,
        root: str | Path,
        image_size: tuple[int, int] | int | None = None,
        channels: int = 3,
        augment: Augment | None = None,
        split: str = "",
    ) -> None:
        self.root = Path(root)
        self.items, self.classes = find_images(self.root)
        if not self.items:
            raise DatasetError(f"no images under {self.root}: expected class subfolders holding image files "
                               f"({', '.join(IMAGE_EXTENSIONS)})")
        self.image_size = (image_size, image_size) if isinstance(image_size, int) else image_size
        if channels not in (1, 3):
            raise DatasetError(f"channels must be 1 or 3, not {channels}")
        self.channels = channels
        self.augment = augment if (augment is not None and augment.active) else None
        self.name, self.split, self.source = "imagefolder", split, str(self.root)
        self._hash: str | None = None
        self._size: tuple[int, int] | None = None
        self._warned = False

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def __len__(self) -> int:
        return len(self.items)

    def load_uint8(self, i: int) -> np.ndarray:
        """Image ``i`` as uint8 ``(C, H, W)``."""
        from PIL import Image

        with Image.open(self.items[i][0]) as im:
            im = im.convert("RGB" if self.channels == 3 else "L")
            size = self.image_size or self._first_size()
            if (im.height, im.width) != size:
                if self.image_size is None and not self._warned:
                    warnings.warn(f"images under {self.root} differ in size ({self.items[i][0].name} is "
                                  f"{im.height}x{im.width}): resized to {size[0]}x{size[1]}, the first image's; "
                                  "give image_size=(H, W) to choose", stacklevel=2)
                    self._warned = True
                im = im.resize((size[1], size[0]), Image.BILINEAR)
            a = np.asarray(im, dtype=np.uint8)
        return np.array(a.transpose(2, 0, 1) if a.ndim == 3 else a[None])  # writable copy

    def _first_size(self) -> tuple[int, int]:
        """``(H, W)`` of the first image (sorted order): the size a folder of mixed sizes is brought to."""
        if self._size is None:
            from PIL import Image

            with Image.open(self.items[0][0]) as im:
                self._size = (im.height, im.width)
        return self._size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = torch.from_numpy(self.load_uint8(i))
        if self.augment is not None:
            x = random_crop_flip(x[None], self.augment.pad, self.augment.flip)[0]
        return x.to(torch.float32).div_(255.0), self.items[i][1]

    def to_memory(self) -> InMemoryImageDataset:
        """Decode everything into an :class:`InMemoryImageDataset` (all images must share one size)."""
        arrs = [self.load_uint8(i) for i in range(len(self))]
        shapes = {a.shape for a in arrs}
        if len(shapes) != 1:
            raise DatasetError(f"images under {self.root} have different sizes {sorted(shapes)[:4]}; "
                               "pass image_size=(H, W) to resize them")
        return InMemoryImageDataset(np.stack(arrs), [c for _, c in self.items], 1.0 / 255.0, self.augment,
                                    self.classes, self.name, self.split, self.source)

    def content_hash(self) -> str:
        """Short hash of the relative file names, labels and file bytes."""
        if self._hash is None:
            parts: list[bytes | str] = [str(self.image_size), str(self.channels)]
            for f, c in self.items:
                parts += [f"{f.relative_to(self.root).as_posix()}:{c}", f.read_bytes()]
            self._hash = content_hash(*parts)
        return self._hash


_WARNED_UNSPLIT: set[str] = set()  # folders already warned about (once per process)


@register_dataset("imagefolder", splits=())
def imagefolder(
    split: str,
    root: str | Path | None = None,
    augment: bool = False,
    image_size: tuple[int, int] | int | None = None,
    channels: int = 3,
    in_memory: bool = False,
    **_: Any,
) -> Dataset:
    """``root/<split>/<class>/*`` if that folder exists, else ``root/<class>/*``; ``channels``: 3 (RGB) or 1
    (grayscale, for a one-channel model; ``data.channels`` of a run config, ``--channels`` on the command line).

    Augmentation: random crop with padding size//8 + horizontal flip. ``in_memory=True`` decodes all images
    once (fast batched loading).
    """
    if root is None:
        raise DatasetNotFoundError("the imagefolder dataset needs a folder: pass --data-root DIR (root=) with "
                                   "class subfolders (optionally inside train/ and test/)")
    root = Path(root)
    if not root.is_dir():
        raise DatasetNotFoundError(f"image folder {root} does not exist; pass an existing folder with --data-root")
    folder = root / split if split and (root / split).is_dir() else root
    if split in ("train", "test") and folder == root and str(root.resolve()) not in _WARNED_UNSPLIT:
        _WARNED_UNSPLIT.add(str(root.resolve()))
        warnings.warn(f"image folder {root} has no {split}/ subfolder: its {split} split is every image under it, the "
                      "same as every other split, so test accuracies would be measured on the training images; split "
                      f"it as {root}/train/<class>/ and {root}/test/<class>/", stacklevel=2)
    aug = None
    if augment:
        probe = ImageFolderDataset(folder, image_size, channels, None, split)
        h = probe.image_size[0] if probe.image_size else probe.load_uint8(0).shape[1]
        aug = Augment(pad=max(1, h // 8), flip=True)
    ds = ImageFolderDataset(folder, image_size, channels, aug, split)
    return ds.to_memory() if in_memory else ds
