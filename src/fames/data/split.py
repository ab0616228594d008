"""A fixed split of a training set into the images a checkpoint trains on and the ones it never sees.

``fames train --holdout N`` trains on the complement of :func:`holdout_indices` and records ``{"n": N, "of":
len(train split), "seed": HOLDOUT_SEED}`` in the checkpoint; the target mode of ``fames run`` then draws its
validation split from those N images only, so that the energy budget is chosen on images the model was not
trained on.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from fames.data.registry import DatasetError

HOLDOUT_SEED = 20261202


def holdout_indices(n_total: int, n: int, seed: int = HOLDOUT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """``(held, rest)``: ``n`` indices of ``range(n_total)`` in a seeded random order (a prefix of ``held`` is again
    a random subset) and the other ``n_total - n`` in increasing order."""
    if not 0 < n < n_total:
        raise DatasetError(f"a held-out split of {n} images needs 0 < n < {n_total} (the training set size)")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(seed)).numpy()
    return perm[:n], np.sort(perm[n:])


def subset(dataset: Any, index: np.ndarray) -> Any:
    """The items ``index`` of ``dataset`` (its own ``subset`` when it has one, else a ``torch`` Subset)."""
    if hasattr(dataset, "subset"):
        return dataset.subset(index)
    return torch.utils.data.Subset(dataset, [int(i) for i in index])


def holdout_record(n_total: int, n: int) -> dict[str, Any]:
    """The checkpoint metadata of a held-out split (what :func:`held_out` reads back)."""
    holdout_indices(n_total, n)  # validates
    return {"n": int(n), "of": int(n_total), "seed": HOLDOUT_SEED}


def held_out(record: Any, n_total: int) -> tuple[np.ndarray, np.ndarray] | None:
    """``(held, rest)`` of a checkpoint's ``holdout`` metadata when it refers to a training set of ``n_total``
    images; None for no record. Raises :class:`DatasetError` when the record refers to another set size."""
    if not record:
        return None
    try:
        n, of, seed = int(record["n"]), int(record["of"]), int(record.get("seed", HOLDOUT_SEED))
    except (KeyError, TypeError, ValueError) as e:
        raise DatasetError(f"malformed checkpoint holdout record {record!r}: expected {{'n', 'of', 'seed'}}") from e
    if of != n_total:
        raise DatasetError(f"the checkpoint held out {n} of {of} training images, but this training split has "
                           f"{n_total}: use the dataset the checkpoint was trained on")
    return holdout_indices(of, n, seed)
