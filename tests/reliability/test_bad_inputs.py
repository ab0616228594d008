"""Bad inputs given to the ``fames`` command line: every one must end with exit status 2 and ONE line
``fames: error: ...`` on stderr (no traceback, no "internal error"), and must leave every file that existed before
the call byte-identical (nothing changed, nothing deleted).

The table below lists each case as (id, prepare): ``prepare(tmp, assets)`` writes the case's files under ``tmp``
(the case's own folder, also its working directory, with ``$FAMES_CACHE`` at ``tmp/cache``) and returns argv.
Cases whose config would pass validation by mistake are kept small (digits, 16 estimation samples, no
calibration, one family, one budget) so that an unexpected success stays quick.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

from fames.cli import main

Prepare = Callable[[Path, "Assets"], list[str]]


# --------------------------------------------------------------------------- shared, valid inputs
@dataclass
class Assets:
    """Valid files made once per session; cases copy them into their own folder before damaging them."""

    root: Path

    def _make(self) -> None:
        import torch

        from fames.appmul.families import build_family
        from fames.appmul.library import Library
        from fames.models import create_model, save_checkpoint
        from fames.quant import quantize

        torch.manual_seed(0)
        save_checkpoint(create_model("digits_cnn"), self.root / "float.pt", meta={"quant": None})
        q = create_model("digits_cnn")
        quantize(q, "W4A4")
        save_checkpoint(q, self.root / "w4a4.pt", meta={"quant": "W4A4"})
        Library(build_family("exact", 2, 2, False)).save(self.root / "lib22")
        Library(build_family("exact", 4, 4, True)).save(self.root / "lib44s")  # fits the W4A4 checkpoint's layers
        old = os.environ.get("FAMES_CACHE")
        os.environ["FAMES_CACHE"] = str(self.root / "cache")
        try:
            from fames.hw.cost import cost_library
            from fames.hw.synthetic import default_synthetic_liberty

            ms = build_family("exact", 2, 2, False) + build_family("trunc", 2, 2, False)
            Library(cost_library(ms, default_synthetic_liberty(), progress=False)).save(self.root / "lib22c")
        finally:
            if old is None:
                os.environ.pop("FAMES_CACHE", None)
            else:
                os.environ["FAMES_CACHE"] = old
        luts = {"mul2u_AAA": np.outer(np.arange(4), np.arange(4)).astype(np.int64)}
        np.savez(self.root / "evo_luts.npz", **luts)

    def copy(self, name: str, dest: Path) -> Path:
        src = self.root / name
        if src.is_dir():
            shutil.copytree(src, dest)
        else:
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dest)
        return dest


@pytest.fixture(scope="session")
def assets(tmp_path_factory) -> Assets:
    a = Assets(tmp_path_factory.mktemp("bad-input-assets"))
    a._make()
    return a


@dataclass
class Case:
    id: str
    prepare: Prepare
    subprocess: bool = False  # run `python -m fames.cli` in a child process instead of main() in-process
    untouched_dirs: tuple[str, ...] = ()  # folders (relative to tmp) that must not gain or lose any entry
    own_cache: bool = False  # the case sets FAMES_CACHE itself (it tests the cache variable)
    notes: str = ""


CASES: list[Case] = []


def case(id: str, **kw) -> Callable[[Prepare], Prepare]:
    def deco(fn: Prepare) -> Prepare:
        CASES.append(Case(id, fn, **kw))
        return fn

    return deco


def add(id: str, argv: list[str] | Callable[[Path, Assets], list[str]], **kw) -> None:
    CASES.append(Case(id, argv if callable(argv) else (lambda tmp, a, _argv=argv: list(_argv)), **kw))


# --------------------------------------------------------------------------- file helpers
def write(p: Path, data: str | bytes) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, bytes):
        p.write_bytes(data)
    else:
        p.write_text(data)
    return p


def garbage(n: int = 4096, seed: int = 1) -> bytes:
    return np.random.default_rng(seed).integers(0, 256, n, dtype=np.uint8).tobytes()


def truncated(src: Path, dest: Path, n: int = 100) -> Path:
    return write(dest, src.read_bytes()[:n])


def user_folder(p: Path) -> Path:
    """A folder of the user's own files."""
    write(p / "notes.txt", "precious notes\n")
    write(p / "data" / "table.csv", "a,b\n1,2\n")
    return p


def lut_text(rows: list[tuple], header: str = "a w product") -> str:
    return f"# {header}\n" + "".join(" ".join(str(v) for v in r) + "\n" for r in rows)


def exact_rows(bits: int = 2) -> list[tuple[int, int, int]]:
    return [(a, w, a * w) for a in range(1 << bits) for w in range(1 << bits)]


# --------------------------------------------------------------------------- fames run CONFIG
def run_base(tmp: Path, a: Assets) -> dict:
    """A small config that is valid and quick: digits, float checkpoint + PTQ W4A4, trunc family, R = 0.7."""
    return {
        "model": "digits_cnn",
        "checkpoint": str(a.copy("float.pt", tmp / "float.pt")),
        "quant": "W4A4",
        "families": ["trunc"],
        "budget": 0.7,
        "estimator": {"samples": 16, "validate": False},
        "calibration": False,
        "output": str(tmp / "out"),
    }


def run_case(id: str, override: str | dict | None = None, raw: str | None = None, **kw) -> None:
    """``fames run`` on the base config updated by ``override`` (YAML text parsed as a mapping, or a dict; a
    callable ``override(tmp, assets) -> dict`` for paths), or on ``raw`` YAML text verbatim."""

    def prep(tmp: Path, a: Assets) -> list[str]:
        cfg_file = tmp / "config.yaml"
        if raw is not None:
            write(cfg_file, raw)
        else:
            cfg = run_base(tmp, a)
            upd = override(tmp, a) if callable(override) else override
            upd = yaml.safe_load(upd) if isinstance(upd, str) else (upd or {})
            for k, v in upd.items():
                if v is _DROP:
                    cfg.pop(k, None)
                else:
                    cfg[k] = v
            write(cfg_file, yaml.safe_dump(cfg, sort_keys=False))
        return ["run", str(cfg_file)]

    CASES.append(Case(id, prep, **kw))


_DROP = object()

# the YAML itself
run_case("run-malformed-yaml", raw="model: digits_cnn\nbudget: [0.7, 0.8\nestimator: {samples: 16\n", subprocess=True)
run_case("run-tab-indented-yaml", raw="estimator:\n\tsamples: 16\n")
run_case("run-top-level-list", raw="- model: digits_cnn\n- budget: 0.7\n")
run_case("run-top-level-scalar", raw="just a string\n")
run_case("run-binary-config", raw=garbage(512).decode("latin-1"))
run_case("run-duplicate-key", raw="model: digits_cnn\nbudget: 0.7\nestimator: {samples: 16}\nbudget: 0.5\n",
         notes="YAML keeps the last of two equal keys silently: named with both lines")
add("run-config-missing", ["run", "no_such_config.yaml"])
add("run-config-invalid-utf8", lambda tmp, a: ["run", str(write(tmp / "c.yaml", garbage()))])
add("plot-uncosted-library",
    lambda tmp, a: ["lib", "plot", str(a.copy("lib22", tmp / "lib")), "--out", str(tmp / "f.png")])
add("run-config-is-a-folder", lambda tmp, a: (tmp / "cfgdir").mkdir() or ["run", str(tmp / "cfgdir")])
# unknown keys
run_case("run-empty-config", raw="# nothing here yet\n", notes="fell back to every default: 'no checkpoint'")
run_case("run-no-families", "{families: []}", notes="ran, then every budget infeasible")
run_case("run-library-keyword-typo", "{library: generated}", notes="named the folder only, not the keywords")
run_case("run-quant-other-than-the-quantized-checkpoint",
         lambda tmp, a: {"checkpoint": str(a.copy("w4a4.pt", tmp / "w4a4.pt")), "quant": "W8A8"},
         notes="ran the checkpoint's W4A4 under a W8A8 label")
run_case("run-library-is-its-own-output", lambda tmp, a: {"library": str(tmp / "out" / "library")},
         notes="the run rewrote that library with its candidates only")
run_case("run-unknown-top-key", "{budgett: 0.5}")
run_case("run-unknown-estimator-key", "{estimator: {samples: 16, validate: false, sample: 8}}")
run_case("run-unknown-selection-key", "{selection: {granularty: filter}}")
run_case("run-unknown-calibration-key", "{calibration: {epoch: 2}}")
run_case("run-unknown-data-key", "{data: {datset: digits}}")
# budget
run_case("run-budget-0", "{budget: 0}")
run_case("run-budget-1.5", "{budget: 1.5}")
run_case("run-budget-negative", "{budget: -0.1}")
run_case("run-budget-string", "{budget: abc}")
run_case("run-budget-list-of-bool", "{budget: [true]}")
run_case("run-budget-empty-list", "{budget: []}")
run_case("run-budget-duplicate", "{budget: [0.7, 0.7]}")
run_case("run-budget-nan", "{budget: .nan}")
run_case("run-budget-inf", "{budget: .inf}")
run_case("run-budget-mapping", "{budget: {R: 0.7}}")
# max_accuracy_loss, seed
run_case("run-max-loss-string", "{max_accuracy_loss: lots}")
run_case("run-max-loss-negative", "{max_accuracy_loss: -1}")
run_case("run-max-loss-nan", "{max_accuracy_loss: .nan}")
run_case("run-seed-string", "{seed: abc}")
run_case("run-seed-float", "{seed: 1.5}")
# estimator
run_case("run-estimator-samples-0", "{estimator: {samples: 0, validate: false}}")
run_case("run-estimator-samples-string", "{estimator: {samples: abc, validate: false}}")
run_case("run-estimator-kind-nope", "{estimator: {kind: nope, samples: 16, validate: false}}")
run_case("run-estimator-kind-plus-median", "{estimator: {kind: taylor-rank1+median, samples: 16, validate: false}}")
run_case("run-estimator-curvature-diag", "{estimator: {curvature: diag, samples: 16, validate: false}}")
run_case("run-estimator-not-a-mapping", "{estimator: taylor-rank1}")
# selection
run_case("run-selection-granularity-channel", "{selection: {granularity: channel}}")
run_case("run-selection-compensation-yes", "{selection: {compensation: yes}}")
run_case("run-selection-compensation-auto-filter", "{selection: {compensation: auto, granularity: filter}}")
run_case("run-selection-energy-metric-joules", "{selection: {energy_metric: joules}}")
run_case("run-forward-estimator-with-kernel-granularity",
         "{estimator: {kind: taylor-rank1+forward, samples: 16, validate: false}, selection: {granularity: kernel}}")
# calibration
run_case("run-calibration-string-false", '{calibration: "false"}')
run_case("run-calibration-epochs-negative", "{calibration: {epochs: -1}}")
run_case("run-calibration-epochs-float", "{calibration: {epochs: 1.5}}")
run_case("run-calibration-quantile-step-0.7", "{calibration: {quantile_step: 0.7}}")
run_case("run-calibration-lr-string", "{calibration: {lr: fast}}")
# data
run_case("run-data-batch-size-0", "{data: {batch_size: 0}}")
run_case("run-data-eval-images-0", "{data: {eval_images: 0}}")
run_case("run-data-dataset-nope", "{data: {dataset: nope}}")
run_case("run-data-imagefolder-missing", lambda tmp, a: {"data": {"dataset": f"imagefolder:{tmp / 'no_images'}"}})
# model
run_case("run-model-nope", {"model": "nope", "checkpoint": None})
run_case("run-model-missing-package", {"model": "no_such_pkg.mod:f", "checkpoint": None})
run_case("run-model-missing-attribute", {"model": "os:nope", "checkpoint": None})
run_case("run-model-factory-not-a-module", {"model": "os:getcwd", "checkpoint": None})
# checkpoint
run_case("run-checkpoint-missing", lambda tmp, a: {"checkpoint": str(tmp / "missing.pt")})
run_case("run-checkpoint-truncated",
         lambda tmp, a: {"checkpoint": str(truncated(a.root / "float.pt", tmp / "trunc.pt"))})
run_case("run-checkpoint-garbage", lambda tmp, a: {"checkpoint": str(write(tmp / "garbage.pt", garbage()))})
run_case("run-checkpoint-text-file", lambda tmp, a: {"checkpoint": str(write(tmp / "notes.pt", "hello\n"))})
run_case("run-checkpoint-garbage-state-dict",
         lambda tmp, a: {"checkpoint": str(write(tmp / "weights.pth", garbage(seed=2)))})
# library, liberty
run_case("run-library-missing-dir", lambda tmp, a: {"library": str(tmp / "no_lib")})
run_case("run-library-not-a-library", lambda tmp, a: {"library": str(user_folder(tmp / "mylib"))},
         untouched_dirs=("mylib",))
run_case("run-liberty-missing", lambda tmp, a: {"liberty": str(tmp / "missing.lib")})
run_case("run-liberty-garbage", lambda tmp, a: {"liberty": str(write(tmp / "bad.lib", "library (x) { this is {{ not"))})
# output
run_case("run-output-is-a-file", lambda tmp, a: {"output": str(write(tmp / "out.txt", "my file\n"))})
run_case("run-output-user-folder", lambda tmp, a: {"output": str(user_folder(tmp / "results"))},
         untouched_dirs=("results",))
# quant
run_case("run-quant-W9A9", "{quant: W9A9}")
run_case("run-quant-bogus", "{quant: bogus}")
run_case("run-quant-missing-file", lambda tmp, a: {"quant": str(tmp / "q.yaml")})
# no quant for a float checkpoint: the run cannot quantize it
run_case("run-float-checkpoint-without-quant", {"quant": _DROP})


# --------------------------------------------------------------------------- fames eval
def _assignment(tmp: Path, layers: object, name: str = "assign.json") -> Path:
    return write(tmp / name, json.dumps({"format": "fames-assignment", "layers": layers}))


add("eval-checkpoint-missing", ["eval", "--checkpoint", "missing.pt"], subprocess=True)
add("eval-checkpoint-truncated",
    lambda tmp, a: ["eval", "--checkpoint", str(truncated(a.root / "w4a4.pt", tmp / "t.pt"))])
add("eval-checkpoint-garbage", lambda tmp, a: ["eval", "--checkpoint", str(write(tmp / "g.pt", garbage()))])
def _whole_model(p: Path) -> Path:
    import torch

    torch.save(torch.nn.Sequential(torch.nn.Linear(2, 2)), p)  # the model object, not its state_dict
    return p


add("eval-checkpoint-whole-pickled-model",
    lambda tmp, a: ["eval", "--model", "digits_cnn", "--checkpoint", str(_whole_model(tmp / "m.pt"))])
add("eval-checkpoint-text", lambda tmp, a: ["eval", "--checkpoint", str(write(tmp / "t.pt", "not a checkpoint\n"))])
add("eval-assignment-without-library",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")),
                    "--assignment", str(_assignment(tmp, {"conv1": "exact_2x2u"}))])
add("eval-assignment-missing-file",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(tmp / "nope.json"), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-not-json",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(write(tmp / "a.json", "conv1 = exact\n")), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-json-list",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(write(tmp / "a.json", "[1, 2, 3]")), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-layers-is-a-list",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, ["conv1"])), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-layer-value-a-number",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"conv1": 5})), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-filter-index-wrong-length",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"conv1": {"granularity": "filter", "appmuls": ["exact_4x4s"],
                                                    "index": [0, 0, 0]}})),
                    "--library", str(a.copy("lib44s", tmp / "lib"))],
    notes="index shorter than conv1's output channels")
add("eval-assignment-filter-index-out-of-range",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"linear": {"granularity": "filter", "appmuls": ["exact_4x4s"],
                                                     "index": [5] * 10}})),
                    "--library", str(a.copy("lib44s", tmp / "lib"))],
    notes="index 5 names an AppMul the list does not have")
add("eval-assignment-unknown-layer",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"fc9": "exact_2x2u"})), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-unknown-appmul",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"conv1": "mul_nope"})), "--library", str(a.copy("lib22", tmp / "lib"))])
add("eval-assignment-appmul-of-wrong-widths",
    lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")), "--assignment",
                    str(_assignment(tmp, {"conv1": "exact_2x2u"})), "--library", str(a.copy("lib22", tmp / "lib"))],
    notes="a 2x2 AppMul on a W4A4 layer")
add("eval-split-nope", lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")),
                                       "--split", "nope"])
add("eval-dataset-nope", lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")),
                                         "--dataset", "nope"])
add("eval-batch-size-0", lambda tmp, a: ["eval", "--checkpoint", str(a.copy("w4a4.pt", tmp / "q.pt")),
                                         "--batch-size", "0"])


# --------------------------------------------------------------------------- fames lib build
add("build-family-nope", ["lib", "build", "--family", "nope", "--bits", "4", "4", "--out", "lib"], subprocess=True)
add("build-bits-9-9", ["lib", "build", "--family", "exact", "--bits", "9", "9", "--out", "lib"])
add("build-bits-1-4", ["lib", "build", "--family", "exact", "--bits", "1", "4", "--out", "lib"])
add("build-bits-4-0", ["lib", "build", "--family", "exact", "--bits", "4", "0", "--out", "lib"])
add("build-bits-negative", ["lib", "build", "--family", "trunc", "--bits", "-4", "4", "--out", "lib"])
add("build-out-existing-file",
    lambda tmp, a: ["lib", "build", "--family", "exact", "--bits", "2", "2", "--out",
                    str(write(tmp / "lib.txt", "my file\n"))])
add("build-out-user-folder",
    lambda tmp, a: ["lib", "build", "--family", "exact", "--bits", "2", "2", "--out", str(user_folder(tmp / "u"))],
    untouched_dirs=("u",))


# --------------------------------------------------------------------------- fames lib import
def _import(tmp: Path, f: Path, *extra: str) -> list[str]:
    return ["lib", "import", str(f), *extra, "--out", str(tmp / "lib")]


GOOD_V = "module {n}(input [3:0] a, input [3:0] w, output [7:0] y);\n  assign y = a * w;\nendmodule\n"

add("import-missing-file", lambda tmp, a: _import(tmp, tmp / "missing.txt"))
add("import-binary-txt", lambda tmp, a: _import(tmp, write(tmp / "bin.txt", garbage())))
add("import-empty-lut", lambda tmp, a: _import(tmp, write(tmp / "empty.txt", "")))
add("import-lut-non-integer-product",
    lambda tmp, a: _import(tmp, write(tmp / "m.txt", lut_text(exact_rows()[:5] + [(1, 1, "one")] + exact_rows()[6:]))))
add("import-lut-missing-entry", lambda tmp, a: _import(tmp, write(tmp / "m.txt", lut_text(exact_rows()[:-1]))))
add("import-lut-duplicate-entry",
    lambda tmp, a: _import(tmp, write(tmp / "m.txt", lut_text(exact_rows() + [exact_rows()[3]]))))
add("import-lut-product-out-of-range",
    lambda tmp, a: _import(tmp, write(tmp / "m.txt", lut_text(exact_rows()[:-1] + [(3, 3, 999)])), "--bits", "2", "2"),
    notes="2x2 product must fit 4 bits")
add("import-lut-operand-out-of-range",
    lambda tmp, a: _import(tmp, write(tmp / "m.txt", lut_text(exact_rows() + [(7, 0, 0)])), "--bits", "2", "2"))
add("import-lut-only-two-columns", lambda tmp, a: _import(tmp, write(tmp / "m.txt", "0 0\n0 1\n")))
add("import-v-product-too-narrow",  # widths from the ports (no --bits), whose product cannot hold a 4x4 product
    lambda tmp, a: _import(tmp, write(tmp / "n.v", "module n(input [3:0] a, input [3:0] w, output [6:0] y);\n"
                                      "  assign y = a * w;\nendmodule\n")))
add("import-v-syntax-error",
    lambda tmp, a: _import(tmp, write(tmp / "bad.v", "module bad(input [3:0] a, input [3:0] w, output [7:0] y);\n"
                                      "  assign y = a * ;\nendmodul\n"), "--bits", "4", "4"))
add("import-v-wrong-ports",
    lambda tmp, a: _import(tmp, write(tmp / "p.v", "module p(input [3:0] x, input [3:0] z, input e, output [7:0] q);"
                                      "\n  assign q = e ? x * z : 0;\nendmodule\n"), "--bits", "4", "4"),
    notes="three inputs: ports cannot be detected, --ports is needed")
add("import-v-wrong-widths",
    lambda tmp, a: _import(tmp, write(tmp / "m4.v", GOOD_V.format(n="m4")), "--bits", "8", "8"))
add("import-v-top-not-found", lambda tmp, a: _import(tmp, write(tmp / "file.v", GOOD_V.format(n="one")
                                                                 + GOOD_V.format(n="two")), "--bits", "4", "4"),
    notes="two modules, neither named after the file: which one is the multiplier must be asked (--top)")
add("import-v-top-option-not-in-file", lambda tmp, a: _import(tmp, write(tmp / "m.v", GOOD_V.format(n="m")),
                                                              "--bits", "4", "4", "--top", "other"))
add("import-v-undriven-output",
    lambda tmp, a: _import(tmp, write(tmp / "u.v", "module u(input [3:0] a, input [3:0] w, output [7:0] y);\n"
                                      "endmodule\n"), "--bits", "4", "4"),
    notes="undriven product: a clear error is expected; rc 0 would be a silent import of a constant")
add("import-v-binary", lambda tmp, a: _import(tmp, write(tmp / "g.v", garbage()), "--bits", "4", "4"))
add("import-blif-garbage",
    lambda tmp, a: _import(tmp, write(tmp / "g.blif", "this is not blif\n.names a b\n11 1\n.end_of_nothing\n"),
                           "--bits", "4", "4"))
add("import-out-user-folder",
    lambda tmp, a: ["lib", "import", str(write(tmp / "m.txt", lut_text(exact_rows()))), "--out",
                    str(user_folder(tmp / "u"))],
    untouched_dirs=("u",))
add("import-out-existing-file",
    lambda tmp, a: ["lib", "import", str(write(tmp / "m.txt", lut_text(exact_rows()))), "--out",
                    str(write(tmp / "lib.json", "{}\n"))])


# --------------------------------------------------------------------------- fames lib import-evoapprox
EVO_HEADER = "name,lut_key,folder,bits_a,bits_b,signed,pwr_mW,area_um2,delay_ns\n"
EVO_ROW = "mul2u_AAA,mul2u_AAA,multiplers/2x2_unsigned,2,2,False,0.01,10.0,0.2\n"


def _evo_dir(tmp: Path, a: Assets, index: str | bytes, luts: str = "good") -> Path:
    d = tmp / "evo"
    write(d / "index.csv", index)
    if luts == "good":
        a.copy("evo_luts.npz", d / "luts.npz")
    elif luts == "truncated":
        truncated(a.root / "evo_luts.npz", d / "luts.npz", 100)
    return d


add("evo-src-missing", lambda tmp, a: ["lib", "import-evoapprox", "--src", str(tmp / "nope"), "--out", "lib"])
add("evo-src-is-a-file",
    lambda tmp, a: ["lib", "import-evoapprox", "--src", str(write(tmp / "index.csv", EVO_HEADER)), "--out", "lib"])
add("evo-truncated-npz",
    lambda tmp, a: ["lib", "import-evoapprox", "--src", str(_evo_dir(tmp, a, EVO_HEADER + EVO_ROW, "truncated")),
                    "--out", str(tmp / "lib")])
add("evo-garbage-index",
    lambda tmp, a: ["lib", "import-evoapprox", "--src", str(_evo_dir(tmp, a, "hello;world\nfoo bar baz\n")),
                    "--out", str(tmp / "lib")])
add("evo-index-non-numeric-bits",
    lambda tmp, a: ["lib", "import-evoapprox", "--src",
                    str(_evo_dir(tmp, a, EVO_HEADER + EVO_ROW.replace(",2,2,", ",two,2,"))), "--out", str(tmp / "lib")])
add("evo-index-lut-key-absent",
    lambda tmp, a: ["lib", "import-evoapprox", "--src",
                    str(_evo_dir(tmp, a, EVO_HEADER + EVO_ROW.replace("mul2u_AAA,mul2u_AAA", "mul2u_BBB,mul2u_BBB"))),
                    "--out", str(tmp / "lib")])


# --------------------------------------------------------------------------- fames lib cost / show / plot
def _damaged_lib(tmp: Path, a: Assets, how: str) -> Path:
    lib = a.copy("lib22", tmp / "lib")
    if how == "index-garbage":
        write(lib / "index.json", garbage(300))
    elif how == "index-wrong-format":
        idx = json.loads((lib / "index.json").read_text())
        idx["format"] = "something-else"
        write(lib / "index.json", json.dumps(idx))
    elif how == "index-entry-not-a-mapping":
        idx = json.loads((lib / "index.json").read_text())
        idx["appmuls"] = ["exact_2x2u"]
        write(lib / "index.json", json.dumps(idx))
    elif how == "luts-missing":
        (lib / "luts.npz").unlink()
    elif how == "luts-garbage":
        write(lib / "luts.npz", garbage(500))
    elif how == "lut-wrong-shape":
        np.savez(lib / "luts.npz", exact_2x2u=np.zeros((3, 3), dtype=np.int64))
    elif how == "a-bits-string":
        idx = json.loads((lib / "index.json").read_text())
        idx["appmuls"][0]["a_bits"] = "two"
        write(lib / "index.json", json.dumps(idx))
    elif how == "verilog-missing":
        shutil.rmtree(lib / "verilog")
    return lib


def _cost(tmp: Path, lib: Path, *extra: str) -> list[str]:
    return ["lib", "cost", str(lib), *(extra or ("--liberty", "synthetic"))]


add("cost-not-a-library", lambda tmp, a: _cost(tmp, user_folder(tmp / "u")), untouched_dirs=("u",))
add("cost-missing-dir", lambda tmp, a: _cost(tmp, tmp / "nope"))
for _how in ("index-garbage", "index-wrong-format", "index-entry-not-a-mapping", "luts-missing", "luts-garbage",
             "lut-wrong-shape", "a-bits-string", "verilog-missing"):
    add(f"cost-lib-{_how}", lambda tmp, a, _h=_how: _cost(tmp, _damaged_lib(tmp, a, _h)))
add("cost-liberty-missing",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", str(tmp / "missing.lib")))
add("cost-liberty-garbage",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty",
                         str(write(tmp / "bad.lib", "library (x) { cell (AND2) { area : banana ; } ")) ))
add("cost-adder-cells-without-a-full-adder",  # the synthetic liberty has no full-adder cell
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--adder-cells"))
add("cost-liberty-binary",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", str(write(tmp / "bin.lib", garbage()))))
add("cost-hold-0",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--hold", "0"))
add("cost-vectors-0",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--vectors", "0"))
add("cost-clock-ns-0",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--clock-ns", "0"))
add("cost-clock-ns-negative",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--clock-ns", "-1"))
add("cost-clock-ns-nan",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--clock-ns", "nan"))
add("cost-out-user-folder",
    lambda tmp, a: _cost(tmp, a.copy("lib22", tmp / "lib"), "--liberty", "synthetic", "--out",
                         str(user_folder(tmp / "u"))),
    untouched_dirs=("u",))

add("show-not-a-library", lambda tmp, a: ["lib", "show", str(user_folder(tmp / "u"))], untouched_dirs=("u",))
add("show-missing-dir", lambda tmp, a: ["lib", "show", str(tmp / "nope")])
add("show-a-file", lambda tmp, a: ["lib", "show", str(write(tmp / "f.txt", "x\n"))])
add("show-lib-index-garbage", lambda tmp, a: ["lib", "show", str(_damaged_lib(tmp, a, "index-garbage"))])
add("show-lib-lut-wrong-shape", lambda tmp, a: ["lib", "show", "--json", str(_damaged_lib(tmp, a, "lut-wrong-shape"))])
add("plot-not-a-library", lambda tmp, a: ["lib", "plot", str(user_folder(tmp / "u")), "--out", str(tmp / "p.png")],
    untouched_dirs=("u",))
add("plot-out-unknown-extension",
    lambda tmp, a: ["lib", "plot", str(a.copy("lib22c", tmp / "lib")), "--out", str(tmp / "x.unknownext")])
add("plot-out-existing-folder",
    lambda tmp, a: ["lib", "plot", str(a.copy("lib22c", tmp / "lib")), "--out", str(user_folder(tmp / "u"))],
    untouched_dirs=("u",))


# --------------------------------------------------------------------------- fames train
def _train(tmp: Path, *extra: str) -> list[str]:
    return ["train", "--model", "digits_cnn", "--dataset", "digits", "--out", str(tmp / "c.pt"), *extra]


add("train-epochs-negative", lambda tmp, a: _train(tmp, "--epochs", "-1"))
add("train-dataset-factory", ["train", "--model", "digits_cnn", "--dataset", "mymodels:digits_ds", "--out", "c.pt"],
    notes="a package.module:factory dataset (fames run and eval take one) said 'unknown dataset'")
add("train-epochs-0-float", lambda tmp, a: _train(tmp, "--epochs", "0"),
    notes="float training for 0 epochs saves the untrained init (for QAT, --epochs 0 = PTQ could be legitimate)")
add("train-epochs-nan", lambda tmp, a: _train(tmp, "--epochs", "nan"))
add("train-lr-negative", lambda tmp, a: _train(tmp, "--lr", "-1", "--epochs", "0.05"))
add("train-batch-size-0", lambda tmp, a: _train(tmp, "--batch-size", "0", "--epochs", "0.05"))
add("train-model-nope", lambda tmp, a: ["train", "--model", "nope", "--out", str(tmp / "c.pt"), "--epochs", "0.05"])
add("train-bits-W9A9", lambda tmp, a: _train(tmp, "--bits", "W9A9", "--epochs", "0.05"))
add("train-bits-missing-yaml", lambda tmp, a: _train(tmp, "--bits", str(tmp / "q.yaml"), "--epochs", "0.05"))
add("train-dataset-nope", lambda tmp, a: _train(tmp, "--dataset", "nope", "--epochs", "0.05"))
add("train-init-missing-pt", lambda tmp, a: _train(tmp, "--init", str(tmp / "missing.pt"), "--epochs", "0.05"))
add("train-init-missing-pth", lambda tmp, a: _train(tmp, "--init", str(tmp / "missing.pth"), "--epochs", "0.05"))
add("train-init-garbage", lambda tmp, a: _train(tmp, "--init", str(write(tmp / "g.pt", garbage())), "--epochs", "0.05"))
add("train-manifest-not-json",  # refused before training, not after it (the JSON error was an internal error)
    lambda tmp, a: _train(tmp, "--epochs", "0.05", "--manifest", str(write(tmp / "m.json", "{half"))))
add("train-manifest-not-a-manifest",
    lambda tmp, a: _train(tmp, "--epochs", "0.05", "--manifest", str(write(tmp / "m.json", "[1, 2]"))))
add("train-out-existing-checkpoint",
    lambda tmp, a: _train(a.copy("float.pt", tmp / "c.pt").parent, "--epochs", "0.05"))  # not replaced
add("train-out-existing-folder",
    lambda tmp, a: ["train", "--model", "digits_cnn", "--epochs", "0.05", "--out", str(user_folder(tmp / "u"))],
    untouched_dirs=("u",))


# --------------------------------------------------------------------------- $FAMES_CACHE
@case("cache-env-is-a-file", own_cache=True)
def _cache_file(tmp: Path, a: Assets) -> list[str]:
    os.environ["FAMES_CACHE"] = str(write(tmp / "cachefile", "not a folder\n"))  # restored by monkeypatch
    return ["lib", "cost", str(a.copy("lib22", tmp / "lib")), "--liberty", "synthetic"]


@case("cache-env-read-only-dir", own_cache=True)
def _cache_ro(tmp: Path, a: Assets) -> list[str]:
    if os.geteuid() == 0:
        pytest.skip("running as root: chmod 0o500 does not stop root from writing, so the case cannot be set up")
    ro = tmp / "ro-cache"
    ro.mkdir()
    ro.chmod(0o500)
    os.environ["FAMES_CACHE"] = str(ro)
    return ["lib", "cost", str(a.copy("lib22", tmp / "lib")), "--liberty", "synthetic"]


# --------------------------------------------------------------------------- fames hw write-liberty
add("write-liberty-over-user-file",
    lambda tmp, a: ["hw", "write-liberty", "--out", str(write(tmp / "mine.lib", "my own liberty\n"))],
    notes="honest expectation: refuse to overwrite a file fames did not write (there is no --force today)")
add("write-liberty-out-is-a-folder",
    lambda tmp, a: ["hw", "write-liberty", "--out", str(user_folder(tmp / "u"))], untouched_dirs=("u",))


# --------------------------------------------------------------------------- the checks
def snapshot(root: Path) -> dict[str, bytes]:
    out = {}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            if p.is_symlink() or not p.is_file():
                continue
            out[str(p.relative_to(root))] = p.read_bytes()
    return out


def _invoke(c: Case, argv: list[str], tmp: Path, capsys) -> tuple[int, str]:
    if c.subprocess:
        env = dict(os.environ, TMPDIR=str(tmp / "_systmp"))
        r = subprocess.run([sys.executable, "-m", "fames.cli", *argv], cwd=tmp, env=env, capture_output=True,
                           text=True, timeout=300)
        return r.returncode, r.stderr
    capsys.readouterr()
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse's own errors exit instead of returning
        rc = e.code if isinstance(e.code, int) else 1
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(c: Case, assets: Assets, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    if not c.own_cache:
        monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    else:
        monkeypatch.setenv("FAMES_CACHE", os.environ.get("FAMES_CACHE", ""))  # so the case's change is undone
    systmp = tmp_path / "_systmp"  # internal-error traceback files land here, not in the machine's /tmp
    systmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(systmp))
    argv = c.prepare(tmp_path, assets)
    before = snapshot(tmp_path)
    entries = {d: sorted(os.listdir(tmp_path / d)) for d in c.untouched_dirs}

    rc, err = _invoke(c, argv, tmp_path, capsys)
    print(f"exit {rc}; stderr: {err!r}")  # kept with the test's report (pytest -rA, --junitxml)

    after = snapshot(tmp_path)
    lines = err.strip().splitlines()
    problems = []
    if rc != 2:
        problems.append(f"exit {rc}")
    if "Traceback" in err:
        problems.append("traceback on stderr")
    if len(lines) != 1 or not lines[0].startswith("fames: error:"):
        problems.append(f"stderr has {len(lines)} line(s)")
    changed = sorted(p for p in before if p in after and after[p] != before[p])
    deleted = sorted(p for p in before if p not in after)
    if changed:
        problems.append(f"changed {changed}")
    if deleted:
        problems.append(f"deleted {deleted}")
    for d, names in entries.items():
        now = sorted(os.listdir(tmp_path / d)) if (tmp_path / d).is_dir() else None
        if now != names:
            problems.append(f"{d}/ now holds {now} (was {names})")
    if problems:
        first = lines[0][:200] if lines else "<empty>"
        last = lines[-1][:200] if len(lines) > 1 else ""
        pytest.fail(f"{'; '.join(problems)} | stderr first: {first!r}" + (f" | last: {last!r}" if last else ""),
                    pytrace=False)


def test_the_table_is_large_and_ids_are_unique() -> None:
    ids = [c.id for c in CASES]
    assert len(ids) >= 110 and len(set(ids)) == len(ids)


def test_plot_into_a_missing_folder_creates_it_or_refuses_in_one_line(assets, tmp_path, capsys, monkeypatch) -> None:
    """Decision: an --out in a folder that does not exist yet is not a bad input; fames may create the folder (as
    `lib build --out` does) or refuse with one line, but must not crash."""
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "new" / "sub" / "p.png"
    rc = main(["lib", "plot", str(assets.copy("lib22c", tmp_path / "lib")), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert (rc == 0 and out.is_file()) or (rc == 2 and len(err) == 1 and err[0].startswith("fames: error:")), (rc, err)
