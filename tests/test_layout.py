"""The public surface: no module imports another module's private names, benchmarks included, and the CLI and the
top-level API load."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _private_imports(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(), str(path))
    bad = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("fames"):
            bad += [f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}.{a.name}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")]
        if isinstance(node, ast.ImportFrom) and any(p.startswith("_") and not p.startswith("__")
                                                    for p in (node.module or "").split(".")):
            bad.append(f"{path.relative_to(ROOT)}:{node.lineno}: {node.module}")
    return bad


@pytest.mark.parametrize("folder", ["src/fames", "bench"])
def test_no_private_names_cross_a_module(folder):
    files = sorted((ROOT / folder).rglob("*.py"))
    bad = [b for f in files for b in _private_imports(f)]
    assert not bad, "private names imported across modules:\n" + "\n".join(bad)


def test_cli_help_and_public_api():
    out = subprocess.run([sys.executable, "-m", "fames.cli", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "run" in out.stdout
    import fames

    for name in fames.__all__:
        assert getattr(fames, name) is not None
    with pytest.raises(AttributeError):
        fames.no_such_name  # noqa: B018


def test_every_command_line_option_says_what_it_does():
    import argparse

    from fames.cli import build_parser

    def undocumented(parser: argparse.ArgumentParser, path: str) -> list[str]:
        out = []
        for a in parser._actions:  # argparse keeps subcommands and options here
            if isinstance(a, argparse._SubParsersAction):
                for name, sub in a.choices.items():
                    out += undocumented(sub, f"{path} {name}")
            elif not a.help and a.dest != "help":
                out.append(f"{path} {'/'.join(a.option_strings) or a.dest}")
        return out

    assert undocumented(build_parser(), "fames") == []
