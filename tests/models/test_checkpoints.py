"""The committed checkpoints load, and (slow) reproduce their manifest accuracy on JPEG CIFAR-10."""

import json
from pathlib import Path

import pytest

from fames.quant import qlayers
from fames.train import load_model
from tests.conftest import REPO, shared_path

MANIFEST = REPO / "checkpoints" / "manifest.json"
ENTRIES = json.loads(MANIFEST.read_text())["checkpoints"] if MANIFEST.is_file() else {}


@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_checkpoint_loads_with_its_quant_config(name):
    e = ENTRIES[name]
    m = load_model(e["arch"], REPO / "checkpoints" / name)
    if e["quant"]:
        ql = qlayers(m)
        assert ql and all(bool(q.act_quant.calibrated) for _, q in ql)
        assert {q.w_bits for _, q in ql} >= {e["quant"]["w_bits"]} or e["quant"]["first_last"] == "8bit"
    else:
        assert not qlayers(m)
    assert e["command"].startswith("fames train") and len(e["data_hash"]) == 16


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(ENTRIES))
def test_fames_eval_reproduces_manifest_accuracy(name, capsys):
    from fames.cli import main

    shared_path("data", "cifar10")
    assert main(["eval", "--checkpoint", str(Path(REPO / "checkpoints" / name)), "--dataset", "cifar10", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 10000
    assert res["accuracy"] == pytest.approx(ENTRIES[name]["accuracy"], abs=0.02)
