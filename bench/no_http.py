"""The service with every download answered from memory, not over HTTP: what the
service costs apart from its downloads (and apart from the file server's CPU on the
same cores). ``--add no_http@bench.no_http:NO_HTTP_FILES=20000`` with the run's file
count (small files, the benchmark's seed); a diagnostic, in no scenario by default."""

from __future__ import annotations

import os
import runpy
from collections.abc import Callable

from app.files import fetch
from bench.workload import Spec, make_files


def main() -> None:
    count = int(os.environ.pop("NO_HTTP_FILES"))
    bodies = make_files(Spec(files=count, partitions=1, latency_ms=0)).bodies

    async def download(self: fetch.Downloader, url: str,
                       count: Callable[[bytes], None] | None = None,
                       on_response: fetch.OnResponse | None = None,
                       sink: fetch.Sink | None = None) -> bytes:
        body = bodies[int(url.rsplit("/", 1)[1])]  # bench.workload.url: <base>/f/<n>
        if count is not None:
            count(body)
        if sink is not None:
            sink.append(body)
            return sink.finish()
        return body

    fetch.Downloader.download = download  # type: ignore[method-assign]
    runpy.run_module("app", run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
