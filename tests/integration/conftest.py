from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tools.fileserver import FileServer
from tools.proc import ChildProcess, app_process


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    server = await FileServer().start()
    yield server
    await server.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ChildProcess]]:
    """Make ``python -m app`` processes; every one still running at the end is killed
    by its pid."""
    made: list[ChildProcess] = []

    def make(env: dict[str, str], name: str = "pod-0") -> ChildProcess:
        made.append(app_process(env, tmp_path, name))
        return made[-1]

    yield make
    for process in made:
        process.kill()
    for process in made:
        print(f"--- log of {process.name} (last 3000 chars) ---")
        print(process.log_text()[-3000:])
