"""The size rule for functions, checked: the service's under 40 lines, the tooling's
(chaos/, bench/, tools/) under 60. A long function is split into named steps."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit import source_tree

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {"app": 40, "chaos": 60, "bench": 60, "tools": 60}


def too_long(source: str, limit: int) -> list[tuple[str, int, int]]:
    """(name, first line, length) of each function or method in ``source`` longer than
    ``limit`` lines, decorators left out; nested functions count on their own too."""
    found = []
    for node in ast.walk(source_tree.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > limit:
                found.append((node.name, node.lineno, length))
    return found


@pytest.mark.parametrize("folder", sorted(LIMITS))
def test_no_function_is_over_its_folder_s_limit(folder):
    limit = LIMITS[folder]
    offenders = [f"{path.relative_to(ROOT)}:{line} {name} is {length} lines"
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for name, line, length in too_long(path.read_text(encoding="utf-8"), limit)]
    assert not offenders, f"over {limit} lines in {folder}/:\n" + "\n".join(offenders)


def test_the_check_counts_a_function_from_its_def_to_its_last_line():
    body = "\n".join(f"    x{i} = {i}" for i in range(5))
    source = f"@decorator\ndef five_and_def():\n{body}\n\n\nclass C:\n    def short(self):\n" \
             "        return 1\n"
    assert too_long(source, 5) == [("five_and_def", 2, 6)]
    assert too_long(source, 6) == []
