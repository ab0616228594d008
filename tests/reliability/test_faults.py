"""Nothing lost, nothing stale: user folders are never replaced, interrupted swaps are repaired, tampered caches are
recomputed, a run folder is locked and never mixes two runs, and the CLI prints one line instead of a traceback."""

import json
import os
from pathlib import Path

import pytest
from filelock import FileLock

from fames.appmul.families import build_family
from fames.appmul.library import Library
from fames.cli import main
from fames.errors import FamesError
from fames.flow.config import RunConfig
from fames.flow.run import run
from fames.hw.cost import cost_appmul
from fames.hw.synthetic import default_synthetic_liberty
from fames.io import cache_dir
from tests.conftest import digits_float_checkpoint


def test_a_user_folder_given_as_out_is_refused_and_left_untouched(tmp_path, capsys):
    d = tmp_path / "d"
    d.mkdir()
    (d / "notes.txt").write_text("precious")
    assert main(["lib", "build", "--family", "exact", "--bits", "4", "4", "--out", str(d)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("fames: error:") and "--force" in err[0]
    assert (d / "notes.txt").read_text() == "precious" and sorted(os.listdir(d)) == ["notes.txt"]
    f = tmp_path / "file.txt"
    f.write_text("precious")
    assert main(["lib", "build", "--family", "exact", "--bits", "4", "4", "--out", str(f)]) == 2
    assert f.read_text() == "precious"
    # a fames library is extended (the designs it held stay); --force replaces anything
    lib = tmp_path / "lib"
    assert main(["lib", "build", "--family", "exact", "--bits", "4", "4", "--out", str(lib)]) == 0
    assert main(["lib", "build", "--family", "trunc", "--bits", "4", "4", "--out", str(lib)]) == 0
    names = Library.load(lib).names
    assert names[0] == "exact_4x4u" and len(names) > 1 and all(n.startswith("trunc") for n in names[1:])
    assert main(["lib", "build", "--family", "exact", "--bits", "4", "4", "--out", str(d), "--force"]) == 0
    assert Library.load(d).names == ["exact_4x4u"]


def test_a_crash_between_the_two_renames_is_repaired_on_the_next_open(tmp_path):
    path = tmp_path / "lib"
    Library(build_family("exact", 4, 4, False)).save(path)
    Library(build_family("trunc", 4, 4, False)).save(tmp_path / "new")
    # the state a kill between os.replace(path, old) and os.replace(tmp, path) leaves behind
    os.replace(path, tmp_path / ".lib.old.123")
    os.replace(tmp_path / "new", tmp_path / ".lib.abc.tmp")
    assert not path.exists()
    assert all(n.startswith("trunc") for n in Library.load(path).names)  # the complete new copy wins
    # without a complete new copy (killed while writing it), the old version comes back
    other = tmp_path / "other"
    Library(build_family("exact", 4, 4, False)).save(other)
    os.replace(other, tmp_path / ".other.old.456")
    (tmp_path / ".other.xyz.tmp").mkdir()  # half written: no completion marker
    assert Library.load(other).names == ["exact_4x4u"]


def test_a_tampered_cost_cache_entry_is_recomputed(tmp_path, monkeypatch):
    monkeypatch.setenv("FAMES_CACHE", str(tmp_path / "cache"))
    m = build_family("exact", 3, 3, False)[0]
    lib = default_synthetic_liberty()
    first = cost_appmul(m, lib, n_vectors=256)
    (entry,) = (cache_dir() / "hw").glob("*.json")
    data = json.loads(entry.read_text())
    data["data"]["pdp_fj"] *= 10  # an edited entry: every ratio would be 10x off
    entry.write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="damaged or was edited"):
        again = cost_appmul(m, lib, n_vectors=256)
    assert again.pdp_fj == pytest.approx(first.pdp_fj)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    return digits_float_checkpoint(tmp_path_factory.mktemp("ck") / "f.pt")


def _cfg(ck, out, **kw):
    base = dict(model="digits_cnn", checkpoint=str(ck), quant="W4A4", families=["trunc"], budget=[0.7],
                estimator={"samples": 32, "validate": False}, calibration=False, output=str(out))
    return RunConfig.from_dict(base | kw)


def test_a_run_folder_is_locked_refuses_user_files_and_never_mixes_runs(ckpt, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    with FileLock(str(out / ".fames-run.lock")), pytest.raises(FamesError, match="in use by another fames run"):
        run(_cfg(ckpt, out), progress=False)
    run(_cfg(ckpt, out, budget=[0.7, 0.5]), progress=False)
    assert (out / "model_R0.5.pt").is_file() and not (out / ".fames-run.pid").exists()  # (the holder's pid goes)
    r = run(_cfg(ckpt, out), progress=False)  # config B after A: A's extra budget files go
    assert not (out / "model_R0.5.pt").exists() and (out / "model_R0.7.pt").is_file()
    manifest = json.loads((out / "run.json").read_text())
    assert manifest["inputs"] == r.keys and "model_R0.5.pt" not in manifest["files"]
    user = tmp_path / "user"
    user.mkdir()
    (user / "report.md").write_text("my own report")
    with pytest.raises(FamesError, match="holds files fames did not write"):
        run(_cfg(ckpt, user), progress=False)
    assert (user / "report.md").read_text() == "my own report"
    (user / "run.json").write_text('{"experiment": {"name": "mine"}, "status": "COMPLETED"}')  # another tool's
    with pytest.raises(FamesError, match="holds files fames did not write"):
        run(_cfg(ckpt, user), progress=False)
    assert (user / "report.md").read_text() == "my own report"
    # files of a save interrupted before run.json was written (not listed there) go with the next run too
    (out / "model_R0.3.pt").write_bytes(b"half a save")
    run(_cfg(ckpt, out), progress=False)
    assert not (out / "model_R0.3.pt").exists()
    # a run whose input library is its own output library/ (rewritten with the candidates) is refused
    with pytest.raises(FamesError, match="this run's own output library"):
        run(_cfg(ckpt, out, library=str(out / "library")), progress=False)
    with pytest.raises(FamesError, match="is a run's result"):  # its calibrated model taken for the exact one
        run(_cfg(out / "model.pt", tmp_path / "again", quant=None), progress=False)
    # FamesResult.save keeps the same rules: it replaced a user's model.pt, and mixed two results' files
    (user / "model.pt").write_text("my own model")
    with pytest.raises(FamesError, match="holds files fames did not write"):
        r.save(user)
    assert (user / "model.pt").read_text() == "my own model"
    r.save(tmp_path / "saved", per_budget=True)
    assert (tmp_path / "saved" / "model_R0.7.pt").is_file()
    r.save(tmp_path / "saved")
    assert not (tmp_path / "saved" / "model_R0.7.pt").exists() and (tmp_path / "saved" / "model.pt").is_file()


def test_the_report_says_when_no_budget_is_within_the_bound(ckpt, tmp_path):
    r = run(_cfg(ckpt, tmp_path / "o", budget=[0.05, 0.3], max_accuracy_loss=0.0), progress=False)
    if r.within_bound:  # the mildest budget kept the accuracy: nothing to check on this model
        pytest.skip("R = 0.3 kept the exact accuracy")
    text = (tmp_path / "o" / "report.md").read_text()
    assert "No budget stayed within 0.0 point(s)" in text and "the most accurate one" in text
    best = max((row for row in r.rows if not row.infeasible), key=lambda row: row.accuracy)
    assert r.best.budget == best.budget


def test_cli_prints_one_line_for_an_internal_error_and_for_ctrl_c(tmp_path, capsys, monkeypatch):
    import fames.cli as cli

    def boom(args):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(cli, "cmd_lib_families", boom)
    parser = cli.build_parser
    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser(), "families", boom))
    assert main(["lib", "families"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "internal error: RuntimeError: kaboom" in err[0] and "traceback in" in err[0]
    path = err[0].split("traceback in ")[1].split(";")[0]
    assert "kaboom" in Path(path).read_text()

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "build_parser", lambda: _with(parser(), "families", interrupted))
    assert main(["lib", "families"]) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err


def _with(parser, sub, func):
    """``parser`` with ``fames lib <sub>`` calling ``func``."""
    lib = parser._subparsers._group_actions[0].choices["lib"]
    lib._subparsers._group_actions[0].choices[sub].set_defaults(func=func)
    return parser


def _report_runs(path):
    r = json.loads(path.read_text())
    return [{k: v for k, v in run.items() if not k.endswith("_s")} for run in r["runs"]]


def test_kill_9_then_resume_gives_the_same_report(ckpt, tmp_path):
    """A run killed with SIGKILL once its estimate is stored resumes to the report of an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    def config(out):
        cfg = tmp_path / f"{out}.yaml"
        cfg.write_text(json.dumps({"model": "digits_cnn", "checkpoint": str(ckpt), "quant": "W4A4",
                                   "families": ["trunc", "perf"], "budget": [0.8, 0.6],
                                   "estimator": {"samples": 64, "validate": False},
                                   "calibration": {"samples": 128, "epochs": 1}, "output": str(tmp_path / out)}))
        return cfg

    assert main(["run", str(config("whole"))]) == 0
    proc = subprocess.Popen([sys.executable, "-m", "fames.cli", "run", str(config("killed"))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    stages = tmp_path / "killed" / "stages"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not list(stages.glob("estimate-*.npz")):
        time.sleep(0.05)
    killed = proc.poll() is None
    if killed:
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert main(["run", str(config("killed"))]) == 0  # the stale lock of the killed process does not block
    assert _report_runs(tmp_path / "killed" / "report.json") == _report_runs(tmp_path / "whole" / "report.json")
    assert killed, "the run finished before it could be killed; the resume was not exercised"


def test_corrupt_or_missing_stage_files_are_recomputed(ckpt, tmp_path):
    out = tmp_path / "o"
    run(_cfg(ckpt, out), progress=False)
    before = _report_runs(out / "report.json")
    for f in (out / "stages").iterdir():
        if f.name.startswith("estimate-"):
            f.write_bytes(b"garbage")
        elif f.name.startswith("budget-") and f.suffix == ".json":
            f.write_text(f.read_text().replace("0.", "9."))  # an edited stage result
    (out / "model_R0.7.pt").unlink()
    with pytest.warns(UserWarning):
        run(_cfg(ckpt, out), progress=False)
    assert _report_runs(out / "report.json") == before and (out / "model_R0.7.pt").is_file()


def test_the_report_names_the_plots_it_wrote_and_a_command_that_reproduces_it(ckpt, tmp_path, capsys):
    import re

    out = tmp_path / "e"
    r = run(_cfg(ckpt, out, data={"dataset": "digits", "eval_images": 120}), progress=False)
    text = (out / "report.md").read_text()
    plots = re.findall(r"`(fig_\w+\.png)`", text)
    assert plots and all((out / p).is_file() for p in plots)  # fig_estimator.png was listed, never written
    command = re.search(r"`fames eval (.+?)`", text).group(1).split()
    assert "--eval-images" in command  # without it, the whole test split: another accuracy
    here = os.getcwd()
    try:
        os.chdir(out)
        assert main(["eval", *command]) == 0
    finally:
        os.chdir(here)
    assert f"accuracy {r.accuracy:.2f}%" in capsys.readouterr().out


def test_atomic_writes_make_files_and_folders_as_an_ordinary_write_would(tmp_path):
    """Reports, models and libraries were written private (0600 / 0700: mkstemp's and mkdtemp's modes)."""
    import os

    from fames.io import atomic_directory, atomic_write_text

    mask = os.umask(0o022)
    os.umask(mask)  # (read, as it stands)
    f = atomic_write_text(tmp_path / "report.md", "x")
    with atomic_directory(tmp_path / "lib") as d:
        (d / "a").write_text("y")
    assert f.stat().st_mode & 0o777 == 0o666 & ~mask and (tmp_path / "lib").stat().st_mode & 0o777 == 0o777 & ~mask


def test_a_full_disk_is_the_users_error_to_fix_not_an_internal_one(monkeypatch, capsys):
    import errno

    import fames.cli as cli

    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", "out/report.md")

    monkeypatch.setattr(cli, "cmd_lib_show", full)
    assert cli.main(["lib", "show", "somewhere"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device writing out/report.md: free some space" in err[0]
