import io
import os
import pickle
import shutil

import numpy as np
import pytest
import torch

from fames.data import (
    Augment,
    DatasetError,
    DatasetNotFoundError,
    InMemoryImageDataset,
    dataset_hash,
    get_dataset,
    get_loader,
    list_datasets,
    random_crop_flip,
    stratified_indices,
)
from fames.errors import FamesError
from fames.io import cache_dir
from tests.conftest import shared_path


def test_registry():
    assert {"digits", "cifar10", "cifar100", "imagefolder"} <= set(list_datasets())
    with pytest.raises(DatasetError, match="unknown dataset 'mnist'"):
        get_dataset("mnist", "train")
    with pytest.raises(DatasetError, match="no split 'val'"):
        get_dataset("digits", "val")


def test_digits_split_and_values():
    tr, te = get_dataset("digits", "train"), get_dataset("digits", "test")
    assert (len(tr), len(te)) == (1437, 360)
    x, y = tr[0]
    assert x.dtype == torch.float32 and x.shape == (1, 8, 8) and isinstance(y, int)
    xs, ys = te.tensors()
    assert xs.min() == 0.0 and xs.max() == 1.0
    assert torch.equal(xs * 16, (xs * 16).round())  # pixel levels 0..16
    counts = torch.bincount(ys, minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified: 10% of each class
    assert dataset_hash("digits", "test") == dataset_hash("digits", "test") != dataset_hash("digits", "train")
    assert len(dataset_hash("digits", "test")) == 16


def test_loader_order_and_determinism():
    te = get_dataset("digits", "test")
    xs, ys = te.tensors()
    batches = list(get_loader("digits", "test", batch_size=100))
    assert [len(b[1]) for b in batches] == [100, 100, 100, 60]
    assert torch.equal(torch.cat([b[0] for b in batches]), xs) and torch.equal(torch.cat([b[1] for b in batches]), ys)
    a = torch.cat([y for _, y in get_loader("digits", "train", batch_size=64, seed=1)])
    b = torch.cat([y for _, y in get_loader("digits", "train", batch_size=64, seed=1)])
    c = torch.cat([y for _, y in get_loader("digits", "train", batch_size=64, seed=2)])
    assert torch.equal(a, b) and not torch.equal(a, c)  # shuffled train, reproducible by seed
    assert len(get_loader("digits", "train", batch_size=64, drop_last=True)) == 1437 // 64


def test_batched_crop_flip_takes_windows_of_the_padded_image():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(1, 256, (16, 3, 8, 8), dtype=torch.uint8)  # no zeros: padding is recognisable
    out = random_crop_flip(x, pad=2, flip=True, generator=g)
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    n_flipped = n_moved = 0
    for i in range(16):
        hits = [(dy, dx, f) for dy in range(5) for dx in range(5) for f in (False, True)
                if torch.equal(out[i], (lambda w, f: w.flip(2) if f else w)(padded[i, :, dy:dy + 8, dx:dx + 8], f))]
        assert hits, f"image {i} is not a window of its padded original"
        n_flipped += any(h[2] for h in hits)
        n_moved += any((h[0], h[1]) != (2, 2) for h in hits)
    assert 0 < n_flipped < 16 and n_moved > 8
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(random_crop_flip(x, 2, True, g1), random_crop_flip(x, 2, True, g2))


def test_augmented_loader_changes_images_but_not_labels():
    ds = InMemoryImageDataset(torch.randint(1, 255, (40, 3, 32, 32), dtype=torch.uint8), torch.arange(40) % 10,
                              augment=Augment(4, True))
    x, y = next(iter(get_loader(ds, "train", batch_size=40, shuffle=False, channels_last=True)))
    assert x.shape == (40, 3, 32, 32) and x.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y, ds.labels) and x.min() >= 0.0 and x.max() <= 1.0
    assert not torch.equal(x, ds.tensors()[0])
    assert torch.equal(ds.with_augment(None)[3][0], ds.images[3].float() / 255)


def test_stratified_indices():
    y = np.repeat(np.arange(10), 1000)  # class-major like the JPEG CIFAR-10
    idx = stratified_indices(y, 2000)
    assert len(idx) == 2000 and np.bincount(y[idx]).tolist() == [200] * 10
    assert np.array_equal(idx, np.arange(0, 10000, 5))
    with pytest.raises(FamesError, match="class 0 has 1000 items, fewer than the 1001"):
        stratified_indices(y, 10010)


def test_cifar10_jpeg(monkeypatch, tmp_path):
    shared_path("data", "cifar10", "test_jpeg.npz")
    import fames.data.cifar as cifar

    monkeypatch.setattr(cifar, "_MEMO", {})
    ds = get_dataset("cifar10", "test")
    assert len(ds) == 10000 and ds.images.shape == (10000, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert torch.bincount(ds.labels).tolist() == [1000] * 10 and ds.labels[0] == 0 and ds.labels[-1] == 9
    x, y = ds[1234]
    assert x.shape == (3, 32, 32) and x.min() >= 0 and x.max() <= 1 and y == 1
    cached = list((cache_dir() / "data").glob("test_jpeg-*.npy"))
    assert len(cached) == 1
    assert np.array_equal(np.load(cached[0]).transpose(0, 3, 1, 2), ds.images.numpy())
    monkeypatch.setattr(cifar, "_MEMO", {})  # second load comes from the .npy cache
    assert torch.equal(get_dataset("cifar10", "test").images, ds.images)
    assert ds.classes[0] == "airplane" and ds.num_classes == 10
    # a copy elsewhere with another mtime (as ../shared provisioned anew) reuses the decode: keyed by content
    copy = tmp_path / "cifar10" / "test_jpeg.npz"
    copy.parent.mkdir()
    shutil.copyfile(shared_path("data", "cifar10", "test_jpeg.npz"), copy)
    os.utime(copy, (1e9, 1e9))
    assert torch.equal(get_dataset("cifar10", "test", root=copy.parent).images, ds.images)
    assert list((cache_dir() / "data").glob("test_jpeg-*.npy")) == cached
    # a changed pixel in the decode cache was used as it was: it is decoded again now
    data = bytearray(cached[0].read_bytes())
    data[-100] ^= 0xFF
    cached[0].write_bytes(bytes(data))
    monkeypatch.setattr(cifar, "_MEMO", {})
    with pytest.warns(UserWarning, match="does not match its checksum"):
        assert torch.equal(get_dataset("cifar10", "test").images, ds.images)


def _write_fake_cifar10(root, n=4):
    d = root / "cifar-10-batches-py"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = list(rng.integers(0, 10, n))
        with open(d / name, "wb") as fh:
            pickle.dump({b"data": data, b"labels": labels}, fh)
    with open(d / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    return d


def test_cifar10_pickle_batches(tmp_path):
    d = _write_fake_cifar10(tmp_path)
    tr = get_dataset("cifar10", "train", root=tmp_path)
    te = get_dataset("cifar10", "test", root=d)  # the batch folder itself works too
    assert len(tr) == 20 and len(te) == 4 and tr.classes[3] == "c3"
    with open(d / "test_batch", "rb") as fh:
        raw = pickle.load(fh, encoding="bytes")
    # row layout: 1024 R, 1024 G, 1024 B, each row-major 32x32
    assert torch.equal(te.images[2, 1, 5, 7], torch.tensor(raw[b"data"][2, 1024 + 5 * 32 + 7]))
    assert te.labels.tolist() == [int(v) for v in raw[b"labels"]]
    assert dataset_hash("cifar10", "test", root=d) != dataset_hash("cifar10", "train", root=d)
    (d / "data_batch_3").unlink()
    with pytest.raises(DatasetNotFoundError, match="data_batch_3"):
        get_dataset("cifar10", "train", root=tmp_path / "cifar-10-batches-py")


def test_cifar100_pickle(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    for split, n in (("train", 6), ("test", 3)):
        with open(d / split, "wb") as fh:
            pickle.dump({b"data": np.full((n, 3072), 7, np.uint8), b"fine_labels": list(range(n)),
                         b"coarse_labels": [0] * n}, fh)
    ds = get_dataset("cifar100", "test", root=tmp_path)
    assert len(ds) == 3 and ds.labels.tolist() == [0, 1, 2] and ds.num_classes == 100
    assert torch.allclose(ds[0][0], torch.full((3, 32, 32), 7 / 255))


def test_missing_dataset_root_is_a_clear_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError, match=r"nowhere.*--data-root") as ei:
        get_dataset("cifar10", "test", root=missing)
    assert isinstance(ei.value, FamesError) and isinstance(ei.value, FileNotFoundError)
    with pytest.raises(DatasetNotFoundError, match=r"test_jpeg\.npz.*FAMES_DATA.*download"):
        get_dataset("cifar10", "test", root=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        get_dataset("imagefolder", "train")


def test_download_without_torchvision_explains(tmp_path):
    try:
        import torchvision  # noqa: F401

        pytest.skip("torchvision is installed; the no-torchvision message is not reachable")
    except ImportError:
        pass
    with pytest.raises(DatasetError, match=r"torchvision.*cifar-10-python\.tar\.gz"):
        get_dataset("cifar10", "test", root=tmp_path / "dl", download=True)


def test_imagefolder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    arrays = {}
    for split in ("train", "test"):
        for c in ("cat", "dog"):
            (tmp_path / split / c).mkdir(parents=True)
            for i in range(3):
                a = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
                buf = io.BytesIO()
                Image.fromarray(a).save(buf, format="PNG")
                (tmp_path / split / c / f"{i}.png").write_bytes(buf.getvalue())
                arrays[(split, c, i)] = a
    (tmp_path / "test" / "dog" / "notes.txt").write_text("not an image")
    ds = get_dataset("imagefolder", "test", root=tmp_path)
    assert len(ds) == 6 and ds.classes == ["cat", "dog"]
    x, y = ds[4]
    assert y == 1 and torch.allclose(x, torch.from_numpy(arrays[("test", "dog", 1)]).permute(2, 0, 1) / 255)
    mem = get_dataset("imagefolder", "train", root=tmp_path, in_memory=True, augment=True)
    assert isinstance(mem, InMemoryImageDataset) and mem.augment == Augment(1, True)
    xb, yb = next(iter(get_loader(mem, "train", batch_size=6)))
    assert xb.shape == (6, 3, 8, 8) and sorted(yb.tolist()) == [0, 0, 0, 1, 1, 1]
    gray = get_dataset("imagefolder", "test", root=tmp_path, channels=1, image_size=4)
    assert gray[0][0].shape == (1, 4, 4)
    # a run config and `fames eval` choose one channel too (a one-channel model could not use an image folder)
    from fames.flow.config import DataConfig
    from fames.flow.inputs import dataset_split

    assert dataset_split(DataConfig(dataset=f"imagefolder:{tmp_path}", channels=1), "test")[0][0].shape == (1, 8, 8)
    with pytest.raises(FamesError, match="channels applies to imagefolder"):
        dataset_split(DataConfig(dataset="digits", channels=1), "test")
    assert len(get_dataset("imagefolder", "any", root=tmp_path / "train")) == 6  # no split folder: root itself
    assert len(dataset_hash("imagefolder", "test", root=tmp_path)) == 16
    # "imagefolder:PATH", the spelling the command line documents, is the dataset with its folder
    spec = f"imagefolder:{tmp_path}"
    assert len(get_dataset(spec, "test")) == 6 and len(get_loader(spec, "test", 4).dataset) == 6
    with pytest.raises(FamesError, match="give one"):
        get_dataset(spec, "test", root=tmp_path / "train")
    # fames train builds the model with the dataset's classes and records them
    from fames.cli import main
    from fames.models import load_checkpoint_file

    ck = tmp_path / "two.pt"
    assert main(["train", "--model", "resnet8", "--dataset", spec, "--epochs", "1", "--batch-size", "6",
                 "--out", str(ck)]) == 0
    assert load_checkpoint_file(ck)[1]["num_classes"] == 2
    assert main(["train", "--model", "resnet8", "--init", "default", "--dataset", spec, "--epochs", "1",
                 "--out", str(tmp_path / "head.pt")]) == 2  # a 10-class model for 2 classes: refused, named


def test_imagefolder_of_mixed_sizes_is_brought_to_the_first_images_size(tmp_path):
    from PIL import Image

    for i, size in enumerate((12, 9, 12)):  # as photos from several sources are
        (tmp_path / "c").mkdir(exist_ok=True)
        Image.fromarray(np.full((size, size + 1, 3), 40 * i, dtype=np.uint8)).save(tmp_path / "c" / f"{i}.png")
    ds = get_dataset("imagefolder", "any", root=tmp_path)
    with pytest.warns(UserWarning, match=r"differ in size \(1.png is 9x10\): resized to 12x13"):
        shapes = {tuple(ds[i][0].shape) for i in range(3)}
    assert shapes == {(3, 12, 13)}  # a batch of them stacks (it was an internal error in the loader)
    xb, _ = next(iter(get_loader(ds, "test", batch_size=3)))
    assert xb.shape == (3, 3, 12, 13)


def test_an_unsplit_image_folder_is_named_once_as_train_and_test_alike(tmp_path):
    import warnings

    from PIL import Image

    (tmp_path / "c").mkdir()
    Image.fromarray(np.zeros((4, 4, 3), dtype=np.uint8)).save(tmp_path / "c" / "0.png")
    with pytest.warns(UserWarning, match="no test/ subfolder: .* measured on the training images"):
        get_dataset("imagefolder", "test", root=tmp_path)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # said once per folder, not at every load
        get_dataset("imagefolder", "train", root=tmp_path)
