"""Datasets: ``get_dataset(name, split)``, ``get_loader(name, split, batch_size)``, ``dataset_hash``.

Registered: ``digits`` (scikit-learn 8x8, embedded default), ``cifar10`` (JPEG npz, pickle batches or
torchvision download), ``cifar100`` (pickle batches), ``imagefolder`` (class subfolders, Pillow).
Items are float32 ``(C, H, W)`` in [0, 1]; models normalize internally.
"""

from fames.data import cifar, digits, imagefolder  # noqa: F401 (register)
from fames.data.cifar import CIFAR10_CLASSES, decode_jpeg_npz
from fames.data.imagefolder import ImageFolderDataset
from fames.data.memory import Augment, BatchLoader, InMemoryImageDataset, random_crop_flip, stratified_indices
from fames.data.registry import (
    DatasetError,
    DatasetNotFoundError,
    dataset_hash,
    default_roots,
    get_dataset,
    get_loader,
    list_datasets,
    register_dataset,
)
from fames.data.split import HOLDOUT_SEED, held_out, holdout_indices, holdout_record, subset

__all__ = [
    "HOLDOUT_SEED",
    "CIFAR10_CLASSES",
    "Augment",
    "BatchLoader",
    "DatasetError",
    "DatasetNotFoundError",
    "ImageFolderDataset",
    "InMemoryImageDataset",
    "dataset_hash",
    "decode_jpeg_npz",
    "default_roots",
    "get_dataset",
    "get_loader",
    "held_out",
    "holdout_indices",
    "holdout_record",
    "list_datasets",
    "random_crop_flip",
    "register_dataset",
    "stratified_indices",
    "subset",
]
