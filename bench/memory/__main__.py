"""``python -m bench.memory``: see bench/memory/run.py."""

import asyncio
import sys

import uvloop

from bench.memory.run import arguments, main

with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
    sys.exit(runner.run(main(arguments())))
