"""Entry point: ``python -m app`` (see ``--help``)."""

from __future__ import annotations

from app.ops.signals import catch_early

catch_early()  # before the imports below, which take a noticeable time

import asyncio  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import uvloop  # noqa: E402

from app.config import Settings, load_settings  # noqa: E402
from app.errors import ConfigError  # noqa: E402
from app.ops import log  # noqa: E402
from app.service import Service  # noqa: E402


async def serve(service: Service) -> int:
    asyncio.get_running_loop().set_exception_handler(log.loop_exceptions)
    service.install_signal_handlers()
    return await service.run()


def tune_gc() -> None:
    """Fewer, cheaper garbage collections (docs/benchmarks.md has the measurement).

    What is loaded at start lives as long as the process: freeze it out of every
    collection. Young collections every 50,000 allocations instead of 700: a big
    file makes millions of short-lived objects, and each collection walks the survivors.
    """
    gc.freeze()
    gc.set_threshold(50_000, 20, 10)


def load(argv: list[str]) -> Settings | None:
    """The settings, or None once the one line saying which is invalid is printed."""
    try:
        return load_settings(argv, os.environ)
    except ConfigError as exc:
        print(f"txingest: {exc}", file=sys.stderr)
        return None


def run(service: Service) -> int:
    """Run ``service`` on uvloop until it stops; its exit code."""
    log.setup(service.settings.log_level, service.settings.log_format)
    tune_gc()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(service))


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["redrive"]:  # docs/redrive.md
        from app.redrive.command import main as redrive
        return redrive(argv[1:])
    settings = load(argv)
    return 2 if settings is None else run(Service(settings))


if __name__ == "__main__":
    sys.exit(main())
