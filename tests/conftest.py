from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


def shared_path(*parts: str) -> Path:
    """Path under ../shared, or skip the test with the reason when it is absent."""
    p = SHARED.joinpath(*parts)
    if not p.exists():
        pytest.skip(f"{p} is absent: this test needs the read-only ../shared folder beside the checkout")
    return p


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test writes its hardware cache to a private folder."""
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path_factory.mktemp("cache")))


def digits_float_checkpoint(path: Path, epochs: float = 2, seed: int = 0) -> Path:
    """A float ``digits_cnn`` trained for ``epochs`` on the embedded digits data, saved as a fames checkpoint."""
    import torch

    from fames.data import get_loader
    from fames.models import create_model, save_checkpoint
    from fames.train import TrainConfig, train

    torch.manual_seed(seed)
    m = create_model("digits_cnn")
    train(m, get_loader("digits", "train", 64, augment=True, seed=seed),
          TrainConfig(epochs=epochs, lr=0.05, seed=seed), progress=False)
    return save_checkpoint(m, path, meta={"quant": None})


def digits_w4a4_model():  # type: ignore[no-untyped-def]
    """``digits_cnn`` trained for 3 epochs, quantized W4A4 signed (PTQ min-max on the first 1,024 training images)."""
    import torch

    from fames.data import get_loader
    from fames.models import create_model
    from fames.quant import calibrate_ptq, quantize
    from fames.train import TrainConfig, train

    torch.manual_seed(0)
    m = create_model("digits_cnn")
    train(m, get_loader("digits", "train", 64), TrainConfig(epochs=3, lr=0.05), progress=False)
    quantize(m, "W4A4")
    calibrate_ptq(m, get_loader("digits", "train", 256, shuffle=False), num_batches=4)
    return m
