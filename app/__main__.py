"""Entry point: ``python -m app`` (see ``--help``)."""

from __future__ import annotations

import asyncio
import os
import sys

import uvloop

from app import log
from app.config import load_settings
from app.errors import ConfigError
from app.service import Service


async def serve(service: Service) -> int:
    service.install_signal_handlers()
    return await service.run()


def main(argv: list[str] | None = None) -> int:
    try:
        settings = load_settings(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"txingest: {exc}", file=sys.stderr)
        return 2
    log.setup(settings.log_level, settings.log_format)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(serve(Service(settings)))


if __name__ == "__main__":
    sys.exit(main())
