from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from tests.integration.harness import FileServer, ServiceProcess


@pytest.fixture
async def file_server() -> AsyncIterator[FileServer]:
    server = await FileServer().start()
    yield server
    await server.close()


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Callable[..., ServiceProcess]]:
    """Make service processes; every one still running at the end is killed by pid."""
    made: list[ServiceProcess] = []

    def make(env: dict[str, str], name: str = "pod-0") -> ServiceProcess:
        process = ServiceProcess(env, tmp_path, name)
        made.append(process)
        return process

    yield make
    for process in made:
        process.kill()
    for process in made:
        print(f"--- log of {process.log_path.stem} (last 3000 chars) ---")
        print(process.log()[-3000:])
