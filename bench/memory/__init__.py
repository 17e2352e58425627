"""The memory benchmark, ``python -m bench.memory`` (``make bench-memory``): peak
resident memory of one service process per scenario.

run: the scenarios, start to verdict; data: the generated files; service: the service
under test, from any checkout; probe: what is watched while it runs (memory, loop lag,
group lag); report: the table and the JSON file.
"""
