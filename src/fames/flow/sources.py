"""Where FAMES takes its images: any ``(x, y)`` data turned into a :class:`Samples` (seeded draws of training
images) or evaluation batches, with a content hash for the stage keys.

``data`` may be a DataLoader or any iterable of ``(x (B, ...), y (B,))`` batches, a pair of tensors
``(x (N, ...), y (N,))``, or a :class:`Samples` (e.g. :class:`DatasetSamples` over a registered dataset).
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Iterable, Iterator
from typing import Any, Protocol

import torch

from fames.errors import FamesError, expect_pair
from fames.train import ARRAYS, checked_batch


class Samples(Protocol):
    """Training images to draw from: ``draw(n, seed)`` returns ``(x (n, ...), y (n,))`` (the same for the same
    arguments); ``len()`` is how many there are."""

    def draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]: ...

    def __len__(self) -> int: ...


def _batches(data: Any, where: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, ARRAYS) for t in data):
        yield checked_batch(data[0], data[1], where)
        return
    if isinstance(data, torch.Tensor) or not isinstance(data, Iterable):
        raise FamesError(f"{where}: give a DataLoader (or iterable) of (x, y) batches or a pair of tensors (x, y), "
                         f"not {type(data).__name__}")
    for b in data:
        yield checked_batch(*expect_pair(b, where), where)


def _check_count(n: int, have: int, what: str) -> None:
    if n > have:
        raise FamesError(f"{n} samples requested but {what} holds only {have}; lower the estimator or calibration "
                         "'samples', or give more data")


class TensorSamples:
    """Samples held as tensors ``x (N, ...)``, ``y (N,)``; a draw is a seeded random subset."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = checked_batch(x, y, "data")
        if len(self.x) == 0:
            raise FamesError("data is empty: give at least one (x, y) sample")

    def __len__(self) -> int:
        return len(self.x)

    def draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        _check_count(n, len(self), "the data")
        idx = torch.randperm(len(self), generator=torch.Generator().manual_seed(seed))[:n]
        return self.x[idx], self.y[idx]


class DatasetSamples:
    """The train split of a registered dataset; a draw is the first batch of a seeded shuffled loader."""

    def __init__(self, dataset: Any, name: str = "dataset") -> None:
        self.dataset, self.name = dataset, name

    def __len__(self) -> int:
        return len(self.dataset)

    def draw(self, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        from fames.data import get_loader

        _check_count(n, len(self), f"the {self.name} train split")
        return next(iter(get_loader(self.dataset, "train", n, shuffle=True, seed=seed, channels_last=True)))


def holdout(
    samples: Samples, n: int, seed: int, record: Any = None
) -> tuple[Samples, tuple[torch.Tensor, torch.Tensor]]:
    """Split ``n`` images off ``samples`` (a seeded random choice): ``(the rest as Samples, (x (n, ...), y (n,)))``.
    Nothing drawn from the rest is ever among the ``n``. With a checkpoint's ``record`` of held-out training images
    (``fames train --holdout``, :func:`fames.data.held_out`) and ``samples`` over that training split, the ``n``
    come from those held-out images and the rest is what the checkpoint trained on."""
    if isinstance(samples, DatasetSamples) and record:
        from fames.data import held_out, subset

        held, rest = held_out(record, len(samples))
        if n > len(held):
            raise FamesError(f"search.validation_images={n} but the checkpoint holds out only {len(held)} training "
                             f"images: lower it or retrain with `fames train --holdout {n}`")
        return DatasetSamples(subset(samples.dataset, rest), samples.name), _all(subset(samples.dataset, held[:n]))
    if n >= len(samples):
        raise FamesError(f"search.validation_images={n} holds out at least all {len(samples)} training images given, "
                         f"leaving none to estimate and calibrate on; lower it (e.g. {max(1, len(samples) // 5)}, a "
                         "fifth) or give more data")
    perm = torch.randperm(len(samples), generator=torch.Generator().manual_seed(seed + 7919))
    val, rest = perm[:n], perm[n:]
    if isinstance(samples, TensorSamples):
        return TensorSamples(samples.x[rest], samples.y[rest]), (samples.x[val], samples.y[val])
    if isinstance(samples, DatasetSamples):
        from fames.data import subset

        return DatasetSamples(subset(samples.dataset, rest.numpy()), samples.name), _all(
            subset(samples.dataset, val.numpy()))
    x, y = samples.draw(len(samples), seed)  # any other Samples: materialize once
    return holdout(TensorSamples(x, y), n, seed)


def _all(dataset: Any) -> tuple[torch.Tensor, torch.Tensor]:
    from fames.data import get_loader

    return next(iter(get_loader(dataset, "test", len(dataset), shuffle=False, channels_last=True)))


def as_samples(data: Any, limit: int) -> Samples:
    """``data`` as :class:`Samples`; an iterable is read up to ``limit`` samples (all of a pair of tensors)."""
    if hasattr(data, "draw") and hasattr(data, "__len__"):
        return data
    sampler = getattr(data, "sampler", None)
    if isinstance(sampler, torch.utils.data.RandomSampler) and sampler.generator is None \
            and getattr(data, "generator", None) is None:
        warnings.warn("data: the loader shuffles with torch's global random state, so which samples fames reads "
                      "(and its result) depends on it; give the loader generator=torch.Generator().manual_seed(0) "
                      "for a repeatable run", stacklevel=3)
    xs, ys, n, cut = [], [], 0, False
    for x, y in _batches(data, "data"):
        xs.append(x)
        ys.append(y)
        n += len(x)
        if n >= limit and not isinstance(data, (tuple, list)):
            cut = True
            break
    if not xs:
        raise FamesError("data is empty: give at least one (x, y) batch")
    y = torch.cat(ys)
    if cut and len(labels := y.unique()) == 1:
        warnings.warn(f"data: the first {n} samples fames reads (estimate, calibration, held-out checks) all have "
                      f"label {int(labels[0])}: a loader sorted by class (as an image folder is)? Shuffle it "
                      "(DataLoader(..., shuffle=True, generator=torch.Generator().manual_seed(0)))", stacklevel=3)
    return TensorSamples(torch.cat(xs), y)


def eval_batches(data: Any, batch_size: int = 500) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Evaluation data as a list of ``(x, y)`` batches (a pair of tensors is cut into ``batch_size`` pieces)."""
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, ARRAYS) for t in data):
        x, y = checked_batch(data[0], data[1], "eval_data")
        return [(x[i : i + batch_size], y[i : i + batch_size]) for i in range(0, len(x), batch_size)]
    out = list(_batches(data, "eval_data"))
    if not out:
        raise FamesError("eval_data is empty: give at least one (x, y) batch")
    return out


def shared_images(batches: Iterable[tuple[torch.Tensor, torch.Tensor]], others: list[torch.Tensor]) -> int:
    """How many images of ``batches`` are also among the images ``others`` (tensors ``(n, ...)``), by content."""
    def keys(x: torch.Tensor) -> set[bytes]:
        flat = x.detach().float().contiguous().reshape(len(x), -1).numpy()
        return {hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in flat}

    seen = set().union(*(keys(t) for t in others))
    return sum(len(keys(x) & seen) for x, _ in batches)


def batches_hash(batches: Iterable[tuple[torch.Tensor, torch.Tensor]]) -> str:
    """Short SHA-256 of ``(x, y)`` batches as one dataset: the same samples in the same order give the same key
    whatever the batch size (or memory layout)."""
    hx, hy, n, shape = hashlib.sha256(), hashlib.sha256(), 0, ""
    for x, y in batches:
        x, y = x.detach().cpu().contiguous(), y.detach().cpu().contiguous()
        shape = f"{tuple(x.shape[1:])}{x.dtype}{y.dtype}"
        hx.update(x.numpy().tobytes() if x.dtype != torch.bfloat16 else x.float().numpy().tobytes())
        hy.update(y.numpy().tobytes())
        n += len(x)
    return hashlib.sha256(f"{n}{shape}".encode() + hx.digest() + hy.digest()).hexdigest()[:16]


def tensors_hash(*tensors: torch.Tensor) -> str:
    """Short SHA-256 of tensors' shapes, dtypes and bytes (stage keys)."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(f"{tuple(t.shape)}{t.dtype}".encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()[:16]
