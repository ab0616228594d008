"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, no download): the embedded default dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from fames.data.memory import Augment, InMemoryImageDataset
from fames.data.registry import register_dataset

__all__ = ["DIGITS_SPLIT_SEED", "DIGITS_TEST_SIZE", "load_digits_arrays"]

DIGITS_TEST_SIZE = 360
DIGITS_SPLIT_SEED = 0
_CACHE: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def load_digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 1, 8, 8) with values 0..16, labels (N,))`` of the fixed stratified split.

    train: 1,437 images, test: 360 (stratified by class, ``random_state=0``).
    """
    if split not in _CACHE:
        from sklearn.datasets import load_digits
        from sklearn.model_selection import train_test_split

        d = load_digits()
        x = d.images.astype(np.uint8)[:, None]  # values 0..16 are integers
        y = d.target.astype(np.int64)
        tr, te = train_test_split(np.arange(len(y)), test_size=DIGITS_TEST_SIZE, stratify=y,
                                  random_state=DIGITS_SPLIT_SEED)
        tr, te = np.sort(tr), np.sort(te)
        _CACHE["train"] = (x[tr], y[tr])
        _CACHE["test"] = (x[te], y[te])
    return _CACHE[split]


@register_dataset("digits")
def digits(split: str, root: str | Path | None = None, augment: bool = False, **_: Any) -> InMemoryImageDataset:
    """8x8 digits as ``(1, 8, 8)`` float32 in [0, 1] (pixel / 16). Augmentation: 1-pixel random shift (no flip)."""
    x, y = load_digits_arrays(split)
    return InMemoryImageDataset(x, y, scale=1.0 / 16.0, augment=Augment(pad=1, flip=False) if augment else None,
                                classes=[str(i) for i in range(10)], name="digits", split=split,
                                source="sklearn.datasets.load_digits")
