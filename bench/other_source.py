"""Run the service from another checkout, so two versions run interleaved in one
benchmark: ``--add before@bench.other_source:TXINGEST_SOURCE=/path/to/checkout``
(a worktree of the older commit; its dependencies must match this venv's)."""

from __future__ import annotations

import os
import runpy
import sys


def main() -> None:
    source = os.environ.pop("TXINGEST_SOURCE")
    sys.path.insert(0, os.path.abspath(source))
    for name in [m for m in sys.modules if m == "app" or m.startswith("app.")]:
        del sys.modules[name]
    runpy.run_module("app", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
