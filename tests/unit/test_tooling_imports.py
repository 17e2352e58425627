"""The tooling (chaos/, bench/, tools/) uses only the service's public names: a private
name of app/ may change with no notice to anyone outside its module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.unit import source_tree

ROOT = Path(__file__).resolve().parents[2]


def private_app_imports(source: str) -> list[str]:
    """``from app... import _name`` and ``import app..._module`` in ``source``."""
    found = []
    for node in ast.walk(source_tree.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "app":
            found += [f"{node.module}.{a.name}" for a in node.names
                      if a.name.startswith("_") and not a.name.startswith("__")]
            found += [node.module or ""] if "._" in f".{node.module}" else []
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names
                      if a.name.split(".")[0] == "app" and "._" in a.name]
    return found


@pytest.mark.parametrize("folder", ["bench", "chaos", "tools"])
def test_tooling_imports_no_private_name_of_the_service(folder):
    offenders = [f"{path.relative_to(ROOT)}: {name}"
                 for path in sorted((ROOT / folder).rglob("*.py"))
                 for name in private_app_imports(path.read_text(encoding="utf-8"))]
    assert not offenders, "private names of app/ imported:\n" + "\n".join(offenders)


def test_the_check_sees_private_names_and_lets_public_ones_and_main_through():
    source = ("from app.kafka.committer import send_all, _send\nimport app._hidden\n"
              "from app import __main__ as service\nfrom other import _x\n")
    assert private_app_imports(source) == ["app.kafka.committer._send", "app._hidden"]
