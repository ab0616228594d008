"""The output folder of a run (``fames run``, ``FamesResult.save``): whose it is, and what goes when a new result is
written there. A folder is a run's when its ``run.json`` says so (or it holds the ``stages/`` of a run interrupted
before its first save); anything else is refused unless ``force``. Every output file a result does not write again
(e.g. ``model_R0.5.pt`` of a budget no longer swept, or a file of a save cut short) is removed, so a folder never
mixes results."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from fames.errors import FamesError
from fames.io import atomic_write_json, remove_stale_scratch

MANIFEST = "run.json"  # what the last result in a folder read (content keys, with fames run) and wrote
FORMAT = "fames-run"


def is_output_file(name: str) -> bool:
    """A file name a result writes."""
    return name in ("report.json", "report.md", "assignment.json", "model.pt", "library", "hardware.json",
                    "hardware.npz", "hardware_tables") or name.startswith(("assignment_R", "model_R", "fig_"))


def check_output(out: Path, force: bool) -> list[str]:
    """The output files already in ``out`` (to go unless written again); refuse a file, or a folder fames did not
    write (unless ``force``)."""
    if out.exists() and not out.is_dir():
        raise FamesError(f"output {out} is a file; give a folder (new, or one of an earlier fames run)")
    if not out.is_dir() or all(p.name.startswith(".fames-run.") for p in out.iterdir()):
        return []
    manifest = out / MANIFEST
    try:
        ours = json.loads(manifest.read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):  # absent, or not fames' (another tool's run.json)
        ours = False
    if ours or (out / "stages").is_dir() and not manifest.exists():  # a run's, or one interrupted before its end
        return sorted(p.name for p in out.iterdir() if is_output_file(p.name))
    if force:
        return []
    raise FamesError(f"output folder {out} holds files fames did not write (no fames {MANIFEST}); choose a new or "
                     "empty folder, or pass --force (force=True) to write into it anyway")


def start_output(out: Path, previous: list[str]) -> None:
    """Before a result is written into ``out``: ``run.json`` says a save is under way and the ``previous`` result's
    files go, so that a save cut short (killed) leaves an incomplete folder, never one mixing two results; scratch
    files of writes killed earlier are cleared."""
    remove_stale_scratch(out)
    atomic_write_json(out / MANIFEST, {"format": FORMAT, "complete": False, "files": []})  # a first save too
    for name in previous:
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink(missing_ok=True)


def check_complete(folder: Path) -> None:
    """Refuse a run folder whose last save was cut short (its ``run.json`` says so)."""
    try:
        incomplete = json.loads((folder / MANIFEST).read_text()).get("complete") is False
    except (OSError, ValueError, AttributeError):
        return
    if incomplete:
        raise FamesError(f"{folder}: the last save into it was cut short (run.json), so its files are partial; run "
                         "it again (fames run resumes from its stages) or save the result again")


def finish_output(out: Path, previous: list[str], written: list[Path], record: dict[str, Any] | None = None) -> None:
    """Remove the ``previous`` output files not ``written`` again and write ``run.json`` (``record`` plus the files)."""
    names = sorted({p.relative_to(out).parts[0] for p in written})
    for name in set(previous) - set(names):
        if (out / name).is_dir():
            shutil.rmtree(out / name)
        else:
            (out / name).unlink(missing_ok=True)
    atomic_write_json(out / MANIFEST, {"format": FORMAT, **(record or {}), "files": names})
