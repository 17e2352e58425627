"""Benchmarks of txingest: ``python -m bench.run --quick|--all`` (``make bench-quick``,
``make bench``); results in results/bench/latest.{json,md,png}."""

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
