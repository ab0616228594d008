"""Run Yosys commands with pyosys in a child process (Yosys exits the process on any error).

Usage: ``python _yosys_worker.py COMMANDS_FILE`` (one command per line), run in the scratch directory.
Self-contained on purpose: it does not import fames.
"""

import sys

from pyosys import libyosys as ys


def main() -> None:
    with open(sys.argv[1], encoding="utf-8") as fh:
        commands = [ln.strip() for ln in fh if ln.strip()]
    design = ys.Design()
    for cmd in commands:
        ys.run_pass(cmd, design)


if __name__ == "__main__":
    main()
